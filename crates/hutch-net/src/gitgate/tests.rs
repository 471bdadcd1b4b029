//! Push bodies built by real git: `git pack-objects --revs --thin --delta-base-offset`, as
//! `git push` runs it, behind the pkt-line command list `git push` sends.

use super::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const ZERO: &str = "0000000000000000000000000000000000000000";
const CAPS: &str = "report-status-v2 side-band-64k quiet object-format=sha1 agent=git/2";

// Secret-shaped tokens are assembled at run time so this file holds none.
fn aws_key() -> String {
    format!("{}{}", "AKIA", "Q3EGRTZ5XKP7MB4W")
}

fn github_token() -> String {
    format!("{}{}", "ghp_", "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4")
}

fn scanner() -> Scanner {
    let s = Scanner::with_builtin(Vec::new()).expect("scanner");
    // The tokens must be secrets to the scanner, or these tests prove nothing.
    assert!(Scanner::blocks(&s.scan(aws_key().as_bytes())));
    assert!(Scanner::blocks(&s.scan(github_token().as_bytes())));
    s
}

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let r = Repo {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn git_with_input(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new("git")
            .args(args)
            .current_dir(self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git (install it: scripts/deps.sh)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        let out = child.wait_with_output().expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn git(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.git_with_input(args, b""))
            .trim()
            .to_string()
    }

    fn write(&self, path: &str, contents: &str) {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(Path::new("."))).expect("mkdir");
        std::fs::write(p, contents).expect("write");
    }

    /// Commit everything; the new commit's id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// The body `git push` sends to update `main` from `old` (upstream has it) to `new`.
    fn push_body(&self, old: Option<&str>, new: &str) -> Vec<u8> {
        let mut body = pkt(&format!(
            "{} {new} refs/heads/main\0{CAPS}",
            old.unwrap_or(ZERO)
        ));
        body.extend_from_slice(b"0000");
        let revs = match old {
            Some(old) => format!("{new}\n^{old}\n"),
            None => format!("{new}\n"),
        };
        body.extend(self.git_with_input(
            &[
                "pack-objects",
                "--revs",
                "--stdout",
                "--thin",
                "--delta-base-offset",
                "-q",
            ],
            revs.as_bytes(),
        ));
        body
    }
}

fn pkt(s: &str) -> Vec<u8> {
    let mut v = format!("{:04x}", s.len() + 4).into_bytes();
    v.extend_from_slice(s.as_bytes());
    v
}

/// A source file long enough for git to store a change to it as a delta.
fn settings(extra: &str) -> String {
    let mut s = String::new();
    for i in 0..60 {
        s.push_str(&format!(
            "SETTING_{i} = \"value number {i} of the application\"\n"
        ));
        if i == 30 {
            s.push_str(extra);
        }
    }
    s
}

fn base_repo() -> (Repo, String) {
    let r = Repo::new();
    r.write("README.md", "# demo\n");
    r.write("src/app/settings.py", &settings(""));
    r.write("src/main.py", "print('hi')\n");
    let c = r.commit("init");
    (r, c)
}

fn inspect(body: &[u8]) -> Result<PushVerdict> {
    inspect_push(body, &scanner(), &Limits::default())
}

#[test]
fn clean_initial_push_passes() {
    let (r, c) = base_repo();
    let v = inspect(&r.push_body(None, &c)).expect("inspect");
    assert!(!v.blocked(), "{:?}", v.findings);
    assert_eq!(v.reason(), None);
    // commit, 3 trees, 3 blobs
    assert_eq!(v.objects, 7);
    assert_eq!(v.thin_deltas, 0);
    assert_eq!(v.commands.updates[0].name, "refs/heads/main");
}

#[test]
fn new_file_with_a_secret_is_named() {
    let (r, old) = base_repo();
    r.write(
        "config/deploy.env",
        &format!("AWS_ACCESS_KEY_ID={}\n", aws_key()),
    );
    let new = r.commit("add deploy config");
    let v = inspect(&r.push_body(Some(&old), &new)).expect("inspect");
    assert!(v.blocked());
    let f = v
        .findings
        .iter()
        .find(|f| f.rule_id == "aws-access-key-id")
        .expect("aws finding");
    assert!(
        matches!(&f.place, Place::File { path: Some(p), .. } if p == "config/deploy.env"),
        "{:?}",
        f.place
    );
    let reason = v.reason().expect("reason");
    assert!(
        reason.contains("aws-access-key-id") && reason.contains("config/deploy.env"),
        "{reason}"
    );
    assert!(
        !reason.contains(&aws_key()),
        "the refusal repeats the secret"
    );
}

#[test]
fn thin_delta_adding_a_secret_is_caught() {
    let (r, old) = base_repo();
    r.write(
        "src/app/settings.py",
        &settings(&format!("GITHUB_TOKEN = \"{}\"\n", github_token())),
    );
    let new = r.commit("tweak settings");
    let v = inspect(&r.push_body(Some(&old), &new)).expect("inspect");
    // The changed file travels as a delta on upstream's version: only its insert is here.
    assert!(v.thin_deltas >= 1, "git sent no thin delta: {v:?}");
    assert!(v.blocked(), "{v:?}");
    let f = v
        .findings
        .iter()
        .find(|f| f.rule_id == "github-pat")
        .expect("github-pat finding");
    let old_blob = r.git(&["rev-parse", &format!("{old}:src/app/settings.py")]);
    assert_eq!(f.place, Place::Change { base: old_blob });
    // The same change without the secret passes.
    let (r, old) = base_repo();
    r.write("src/app/settings.py", &settings("NEW_SETTING = 1\n"));
    let new = r.commit("tweak settings");
    let v = inspect(&r.push_body(Some(&old), &new)).expect("inspect");
    assert!(v.thin_deltas >= 1);
    assert!(!v.blocked(), "{:?}", v.findings);
}

#[test]
fn delta_within_the_pack_is_resolved_and_named() {
    // Two commits pushed together: the second version is a delta on the first, in the pack.
    let r = Repo::new();
    r.write("src/app/settings.py", &settings(""));
    r.commit("one");
    r.write(
        "src/app/settings.py",
        &settings(&format!("AWS = \"{}\"\n", aws_key())),
    );
    let new = r.commit("two");
    let body = r.push_body(None, &new);
    let v = inspect(&body).expect("inspect");
    assert_eq!(v.thin_deltas, 0);
    assert!(v.blocked());
    let f = &v.findings[0];
    assert_eq!(f.rule_id, "aws-access-key-id");
    let blob = r.git(&["rev-parse", &format!("{new}:src/app/settings.py")]);
    assert_eq!(
        f.place,
        Place::File {
            path: Some("src/app/settings.py".into()),
            oid: blob
        }
    );
    // The pack really held a delta (else this test tests nothing): the resolved size is
    // more than the inflated pack entries.
    let entries = pack::read(
        &body[PushCommands::parse(&body).expect("cmds").pack_offset..],
        &Limits::default(),
        &mut Budget::new(usize::MAX),
    )
    .expect("read");
    assert!(
        entries.iter().any(|e| e.kind.is_none()),
        "no delta in the pack"
    );
}

#[test]
fn secret_in_commit_message_and_file_name() {
    let (r, old) = base_repo();
    r.write(&format!("keys/{}.txt", aws_key()), "nothing here\n");
    let new = r.commit(&format!("token {}", github_token()));
    let v = inspect(&r.push_body(Some(&old), &new)).expect("inspect");
    let places: Vec<(&str, &Place)> = v
        .findings
        .iter()
        .map(|f| (f.rule_id.as_str(), &f.place))
        .collect();
    assert!(
        places.iter().any(|(r, p)| *r == "github-pat"
            && matches!(p, Place::Object { kind: Kind::Commit, oid } if *oid == new)),
        "{places:?}"
    );
    assert!(
        places.iter().any(|(r, p)| *r == "aws-access-key-id"
            && matches!(
                p,
                Place::Object {
                    kind: Kind::Tree,
                    ..
                }
            )),
        "{places:?}"
    );
    // The file itself is clean, and its secret-bearing path is not repeated anywhere.
    let reason = v.reason().expect("reason");
    assert!(
        !reason.contains(&aws_key()) && !reason.contains(&github_token()),
        "{reason}"
    );
}

#[test]
fn deletes_need_no_pack() {
    let body = [
        pkt(&format!("{} {ZERO} refs/heads/old\0{CAPS}", "a".repeat(40))),
        b"0000".to_vec(),
    ]
    .concat();
    let v = inspect(&body).expect("inspect");
    assert!(!v.blocked());
    assert_eq!(v.objects, 0);
    // An update that is not a delete must bring its pack.
    let body = [
        pkt(&format!("{ZERO} {} refs/heads/new\0{CAPS}", "a".repeat(40))),
        b"0000".to_vec(),
    ]
    .concat();
    assert!(inspect(&body).is_err());
}

#[test]
fn secret_in_ref_name_is_found() {
    let body = [
        pkt(&format!(
            "{} {ZERO} refs/heads/{}\0{CAPS}",
            "a".repeat(40),
            aws_key()
        )),
        b"0000".to_vec(),
    ]
    .concat();
    let v = inspect(&body).expect("inspect");
    assert!(v.blocked());
    assert_eq!(v.findings[0].place, Place::Commands);
}

#[test]
fn truncated_or_corrupt_packs_are_refused() {
    let (r, c) = base_repo();
    let body = r.push_body(None, &c);
    let pack_at = PushCommands::parse(&body).expect("cmds").pack_offset;
    // Every truncation inside the pack.
    for cut in (pack_at + 1..body.len()).step_by(7).chain([body.len() - 1]) {
        assert!(inspect(&body[..cut]).is_err(), "cut at {cut} accepted");
    }
    // Trailing bytes.
    let mut longer = body.clone();
    longer.extend_from_slice(b"x");
    assert!(inspect(&longer).is_err());
    // A flipped byte inside an object, with a recomputed trailer (so zlib, not the
    // checksum, must catch it).
    for at in [pack_at + 20, pack_at + 60, body.len() - 30] {
        let mut bad = body.clone();
        bad[at] ^= 0x55;
        let end = bad.len() - 20;
        let sum: [u8; 20] = Sha1::digest(&bad[pack_at..end]).into();
        bad[end..].copy_from_slice(&sum);
        assert!(inspect(&bad).is_err(), "corruption at {at} accepted");
    }
    // A flipped byte without a new trailer.
    let mut bad = body.clone();
    let n = bad.len();
    bad[n - 30] ^= 1;
    assert!(inspect(&bad).is_err());
}

#[test]
fn limits_are_enforced() {
    let (r, c) = base_repo();
    let body = r.push_body(None, &c);
    let s = scanner();
    let ok = inspect_push(&body, &s, &Limits::default()).expect("inspect");
    let err = |limits: Limits| match inspect_push(&body, &s, &limits) {
        Err(Error::GitPush(why)) => why,
        other => panic!("accepted over the limits: {other:?}"),
    };
    let why = err(Limits {
        max_objects: ok.objects - 1,
        ..Limits::default()
    });
    assert!(why.contains("objects"), "{why}");
    let why = err(Limits {
        max_object_size: 100,
        ..Limits::default()
    });
    assert!(why.contains("limit"), "{why}");
    let why = err(Limits {
        max_total_inflated: ok.inflated - 1,
        ..Limits::default()
    });
    assert!(why.contains("inflates"), "{why}");
}

#[test]
fn zip_bomb_is_refused_before_inflating() {
    // One blob of 80 MiB of zeros (over the 64 MiB object limit): 80 KiB compressed.
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    let size: usize = 80 << 20;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        z.write_all(&zeros).expect("compress");
    }
    let data = z.finish().expect("compress");
    let mut pack = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
    // Object header: type blob (3), size in 4 + 7k bits.
    let mut n = size >> 4;
    pack.push(0x80 | (3 << 4) | (size & 0x0f) as u8);
    while n > 0 {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        pack.push(if n > 0 { b | 0x80 } else { b });
    }
    pack.extend_from_slice(&data);
    let sum: [u8; 20] = Sha1::digest(&pack).into();
    pack.extend_from_slice(&sum);
    let body = [
        pkt(&format!(
            "{ZERO} {} refs/heads/main\0{CAPS}",
            "a".repeat(40)
        )),
        b"0000".to_vec(),
        pack,
    ]
    .concat();
    let t = std::time::Instant::now();
    let why = match inspect(&body) {
        Err(Error::GitPush(why)) => why,
        other => panic!("bomb accepted: {other:?}"),
    };
    assert!(why.contains("limit"), "{why}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn throughput() {
    // Source-like text: 400 files of ~20 KiB (8 MiB in all).
    let r = Repo::new();
    let mut seed: u64 = 42;
    let words = [
        "let", "fn", "value", "return", "self", "config", "=", "{", "}", "(x)", "0x1f", "match",
    ];
    for f in 0..400 {
        let mut text = String::with_capacity(21 << 10);
        while text.len() < 20 << 10 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(words[(seed >> 33) as usize % words.len()]);
            text.push(if seed.is_multiple_of(9) { '\n' } else { ' ' });
        }
        r.write(&format!("src/m{}/f{f}.rs", f % 20), &text);
    }
    let c = r.commit("big");
    let body = r.push_body(None, &c);
    let s = scanner();
    let t = std::time::Instant::now();
    let v = inspect_push(&body, &s, &Limits::default()).expect("inspect");
    let secs = t.elapsed().as_secs_f64();
    assert!(!v.blocked(), "{:?}", v.findings);
    println!(
        "inspect_push: {} objects, {:.1} MiB pack, {:.1} MiB inflated in {:.0} ms ({:.0} MiB/s inflated)",
        v.objects,
        body.len() as f64 / (1 << 20) as f64,
        v.inflated as f64 / (1 << 20) as f64,
        secs * 1e3,
        v.inflated as f64 / (1 << 20) as f64 / secs
    );
}
