//! End-to-end tests of the CLI against a real server: each test starts
//! `hutch server --listen 127.0.0.1:PORT --data-dir DIR`, waits for `/healthz`, takes the admin key
//! it prints (`Admin API key: hk_…`), and drives the `hutch` binary like a user would.

mod cli_common;

use cli_common::{Server, free_port};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_exits_with_the_command_code_and_streams_output() {
    let s = Server::start();
    let out = s.run(&[
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("to-out"),
        "stdout: {}",
        stdout_of(&out)
    );
    assert!(
        stderr_of(&out).contains("to-err"),
        "stderr: {}",
        stderr_of(&out)
    );
    // --rm deleted the sandbox.
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["ls", "--json"])).expect("ls json");
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");

    // Without --rm the sandbox stays and its id goes to stderr.
    let out = s.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let id = stderr_of(&out).trim().to_owned();
    let info: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", &id])).expect("inspect json");
    assert_eq!(info["id"], id.as_str());
    s.ok(&["rm", &id]);
}

#[test]
fn ls_json_table_and_filters() {
    let s = Server::start();
    let a = s.create(&["--metadata", "team=red"]);
    let b = s.create(&["--metadata", "team=blue", "--env", "X=1"]);
    let all: serde_json::Value = serde_json::from_str(&s.ok(&["ls", "--json"])).expect("json");
    let ids: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{ids:?}"
    );
    let red: serde_json::Value =
        serde_json::from_str(&s.ok(&["ls", "--json", "--metadata", "team=red"])).expect("json");
    let red_ids: Vec<&str> = red
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(red_ids, vec![a.as_str()]);
    let table = s.ok(&["ls", "--all"]);
    let header = table.lines().next().unwrap_or_default();
    for col in ["ID", "TEMPLATE", "STATE", "CREATED", "EXPIRES"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains(&a) && table.contains("running"), "{table}");
    let quiet = s.ok(&["ls", "-q"]);
    assert_eq!(quiet.lines().count(), 2, "{quiet}");

    s.ok(&["pause", &a]);
    let paused: serde_json::Value =
        serde_json::from_str(&s.ok(&["ls", "--json", "--state", "paused"])).expect("json");
    assert_eq!(paused.as_array().map(Vec::len), Some(1), "{paused}");
    s.ok(&["resume", &a]);
    s.ok(&["keepalive", &a]);
    s.ok(&["rm", &a, &b]);
    // -f ignores missing sandboxes; without it, rm fails.
    s.ok(&["rm", "-f", &a]);
    let out = s.run(&["rm", &a]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn exec_streams_output_live_and_exits_with_the_code() {
    let s = Server::start();
    let id = s.create(&[]);
    let out = s.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; done; echo oops >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "line1\nline2\nline3\n");
    assert!(stderr_of(&out).contains("oops"));

    // Output arrives while the command still runs.
    let mut child = s
        .cmd(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo first; sleep 4; echo second",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let started = Instant::now();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("read first line");
    assert_eq!(line, "first\n");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "first line came only after {:?}",
        started.elapsed()
    );
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("read rest");
    assert_eq!(rest, "second\n");
    assert!(child.wait().expect("wait").success());

    // -i forwards stdin and closes it at EOF.
    let mut child = s
        .cmd(&["exec", "-i", &id, "--", "sh", "-c", "tr a-z A-Z; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\nworld\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("exec -i output");
    assert!(out.status.success(), "stderr: {}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "HELLO\nWORLD\ndone\n");

    // --env, --cwd.
    let out = s.ok(&[
        "exec",
        "--env",
        "GREETING=hey",
        "--cwd",
        "/tmp",
        &id,
        "--",
        "sh",
        "-c",
        "echo $GREETING; pwd",
    ]);
    assert_eq!(out, "hey\n/tmp\n");
}

#[test]
fn cp_round_trips_files_and_directories() {
    let s = Server::start();
    let id = s.create(&[]);

    // A file, host → sandbox → host, keeping content and mode.
    let local = s.path("data.bin");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &content).expect("write");
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    s.ok(&[
        "cp",
        local.to_str().expect("utf8"),
        &format!("{id}:/tmp/data.bin"),
    ]);
    assert_eq!(
        s.ok(&["exec", &id, "--", "sh", "-c", "wc -c < /tmp/data.bin"])
            .trim(),
        "200000"
    );
    let back = s.path("back.bin");
    s.ok(&[
        "cp",
        &format!("{id}:/tmp/data.bin"),
        back.to_str().expect("utf8"),
    ]);
    assert_eq!(std::fs::read(&back).expect("read back"), content);
    assert_eq!(
        std::fs::metadata(&back).expect("stat").permissions().mode() & 0o777,
        0o750
    );

    // A file onto an existing directory lands inside it.
    s.ok(&["exec", &id, "--", "mkdir", "-p", "/tmp/inbox"]);
    s.ok(&[
        "cp",
        local.to_str().expect("utf8"),
        &format!("{id}:/tmp/inbox"),
    ]);
    assert_eq!(
        s.ok(&["exec", &id, "--", "sh", "-c", "wc -c < /tmp/inbox/data.bin"])
            .trim(),
        "200000"
    );
    // `-` prints a file.
    s.ok(&["exec", &id, "--", "sh", "-c", "echo printed > /tmp/p.txt"]);
    assert_eq!(s.ok(&["cp", &format!("{id}:/tmp/p.txt"), "-"]), "printed\n");

    // A directory, host → existing sandbox directory: lands at /tmp/tree.
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
    std::fs::write(tree.join("top.txt"), "top\n").expect("write");
    std::fs::write(tree.join("sub/deeper/leaf.txt"), "leaf\n").expect("write");
    std::os::unix::fs::symlink("top.txt", tree.join("link")).expect("symlink");
    s.ok(&["cp", tree.to_str().expect("utf8"), &format!("{id}:/tmp")]);
    assert_eq!(
        s.ok(&["exec", &id, "--", "cat", "/tmp/tree/sub/deeper/leaf.txt"]),
        "leaf\n"
    );
    assert_eq!(
        s.ok(&["exec", &id, "--", "readlink", "/tmp/tree/link"]),
        "top.txt\n"
    );
    // … onto a missing path: it takes that name.
    s.ok(&[
        "cp",
        tree.to_str().expect("utf8"),
        &format!("{id}:/tmp/renamed"),
    ]);
    assert_eq!(
        s.ok(&["exec", &id, "--", "cat", "/tmp/renamed/top.txt"]),
        "top\n"
    );

    // Sandbox → host: onto a missing path, then into an existing directory.
    let out1 = s.path("out1");
    s.ok(&[
        "cp",
        &format!("{id}:/tmp/tree"),
        out1.to_str().expect("utf8"),
    ]);
    assert_eq!(
        std::fs::read_to_string(out1.join("sub/deeper/leaf.txt")).expect("leaf"),
        "leaf\n"
    );
    assert_eq!(
        std::fs::read_link(out1.join("link")).expect("link"),
        Path::new("top.txt")
    );
    let existing = s.path("existing");
    std::fs::create_dir(&existing).expect("mkdir");
    s.ok(&[
        "cp",
        &format!("{id}:/tmp/tree"),
        existing.to_str().expect("utf8"),
    ]);
    assert_eq!(
        std::fs::read_to_string(existing.join("tree/top.txt")).expect("top"),
        "top\n"
    );

    // Errors: a missing source.
    let out = s.run(&[
        "cp",
        &format!("{id}:/nope/missing"),
        out1.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).starts_with("hutch: "),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn errors_exit_non_zero_with_the_server_message() {
    let s = Server::start();
    let out = s.run(&["inspect", "sb-does-not-exist"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.starts_with("hutch: ") && err.contains("not found"),
        "{err}"
    );

    let out = s.run(&["exec", "sb-does-not-exist", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).starts_with("hutch: "),
        "{}",
        stderr_of(&out)
    );

    let out = s
        .cmd(&["ls"])
        .env("HUTCH_API_KEY", "hk_wrong")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).starts_with("hutch: "),
        "{}",
        stderr_of(&out)
    );

    let out = s.run(&["create", "--template", "no-such-template"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("template"), "{}", stderr_of(&out));

    let out = s
        .cmd(&["ls"])
        .env("HUTCH_URL", format!("http://127.0.0.1:{}", free_port()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("cannot reach"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn login_saves_the_config_file() {
    let s = Server::start();
    let home = s.path("home");
    std::fs::create_dir(&home).expect("mkdir");
    let out = s
        .cmd(&["login", "--url", &s.url])
        .env_remove("HUTCH_URL")
        .env_remove("HUTCH_API_KEY")
        .env("HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .expect("stdin")
                .write_all(format!("{}\n", s.key).as_bytes())?;
            c.wait_with_output()
        })
        .expect("login");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let file = home.join(".config/hutch/config.toml");
    let meta = std::fs::metadata(&file).expect("config written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Now plain commands work without the environment.
    let out = s
        .cmd(&["ls", "--json"])
        .env_remove("HUTCH_URL")
        .env_remove("HUTCH_API_KEY")
        .env("HOME", &home)
        .output()
        .expect("ls");
    assert!(out.status.success(), "{}", stderr_of(&out));
    // A bad key is refused and not saved.
    let out = s
        .cmd(&["login", "--key", "hk_bad"])
        .env("HOME", &home)
        .output()
        .expect("login");
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&file).expect("config");
    assert!(text.contains(&s.key), "{text}");
}

#[test]
fn terminals_templates_keys_and_events() {
    let s = Server::start();
    let id = s.create(&[]);

    s.ok(&["terminal", "create", &id, "--name", "t1", "--", "sh"]);
    assert!(s.ok(&["terminal", "ls", &id]).contains("t1"));
    s.ok(&[
        "terminal",
        "send",
        &id,
        "t1",
        "echo abc$((1+2))",
        "--key",
        "Enter",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let screen = s.ok(&["terminal", "capture", &id, "t1"]);
        if screen.contains("abc3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "screen never showed abc3:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.ok(&["terminal", "rm", &id, "t1"]);

    assert!(s.ok(&["template", "ls"]).contains("base"));
    // Import from a directory (archived on the fly) and from a tar file.
    let rootfs = s.path("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::fs::write(rootfs.join("etc/hello"), "hi\n").expect("write");
    s.ok(&[
        "template",
        "import",
        "tiny-dir",
        rootfs.to_str().expect("utf8"),
    ]);
    let tar_path = s.path("rootfs.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).expect("create tar"));
    builder.append_dir_all(".", &rootfs).expect("tar");
    builder.into_inner().expect("finish tar");
    s.ok(&[
        "template",
        "import",
        "tiny-tar",
        tar_path.to_str().expect("utf8"),
    ]);
    let templates = s.ok(&["template", "ls"]);
    assert!(
        templates.contains("tiny-dir") && templates.contains("tiny-tar"),
        "{templates}"
    );
    s.ok(&["template", "rm", "tiny-dir"]);
    s.ok(&["template", "rm", "tiny-tar"]);
    assert!(!s.ok(&["template", "ls"]).contains("tiny-"));

    let key = s.ok(&["keys", "create", "ci-key"]).trim().to_owned();
    assert!(key.starts_with("hk_"), "{key}");
    assert!(s.ok(&["keys", "ls"]).contains("ci-key"));
    let keys: serde_json::Value =
        serde_json::from_str(&s.ok(&["keys", "ls", "--json"])).expect("json");
    let key_id = keys
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["name"] == "ci-key")
        .and_then(|k| k["id"].as_str())
        .expect("key listed")
        .to_owned();
    assert!(
        s.cmd(&["ls"])
            .env("HUTCH_API_KEY", &key)
            .output()
            .expect("ls")
            .status
            .success()
    );
    s.ok(&["keys", "revoke", &key_id]);
    assert_eq!(
        s.cmd(&["ls"])
            .env("HUTCH_API_KEY", &key)
            .output()
            .expect("ls")
            .status
            .code(),
        Some(1)
    );

    let events: serde_json::Value =
        serde_json::from_str(&s.ok(&["events", "--sandbox", &id, "--json"])).expect("events json");
    assert!(events.as_array().is_some_and(|e| !e.is_empty()), "{events}");
    assert!(s.ok(&["events", "--limit", "5"]).starts_with("ID"));
}

/// Runs `hutch exec -it` on a real PTY, types into it, and collects everything it prints.
fn drive_pty(s: &Server, args: &[&str], script: &[(&str, Duration)]) -> (ExitStatus, String) {
    use nix::pty::{Winsize, openpty};
    let ws = Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&ws), None).expect("openpty");
    let mut cmd = s.cmd(args);
    cmd.stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stderr(Stdio::from(pty.slave.try_clone().expect("dup")));
    let mut child = cmd.spawn().expect("spawn hutch");
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().expect("dup master");
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = output.clone();
    let reader_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break, // EIO once every slave fd is closed.
                Ok(n) => sink.lock().expect("lock").extend_from_slice(&buf[..n]),
            }
        }
    });
    for (text, pause) in script {
        std::thread::sleep(*pause);
        master
            .write_all(text.as_bytes())
            .expect("type into the pty");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = String::from_utf8_lossy(&output.lock().expect("lock")).into_owned();
            panic!("hutch exec -it did not exit; output so far:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(master);
    // The reader ends at EIO; do not hang if something still holds the slave.
    let wait_until = Instant::now() + Duration::from_secs(5);
    while !reader_thread.is_finished() && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = String::from_utf8_lossy(&output.lock().expect("lock")).into_owned();
    (status, out)
}

#[test]
fn exec_it_runs_in_a_real_pty() {
    let s = Server::start();
    let id = s.create(&[]);
    let (status, out) = drive_pty(
        &s,
        &["exec", "-it", &id, "--", "sh"],
        &[
            ("echo hi-from-pty\r", Duration::from_millis(1500)),
            ("echo $((40+2))-pty-ok\r", Duration::from_millis(300)),
            ("exit\r", Duration::from_millis(500)),
        ],
    );
    assert_eq!(status.code(), Some(0), "output:\n{out}");
    assert!(out.contains("hi-from-pty"), "output:\n{out}");
    assert!(out.contains("42-pty-ok"), "output:\n{out}");

    // The program's exit code comes back; the session is deleted afterwards.
    let (status, out) = drive_pty(&s, &["exec", "-it", &id, "--", "sh", "-c", "exit 7"], &[]);
    assert_eq!(status.code(), Some(7), "output:\n{out}");
    let terms = s.ok(&["terminal", "ls", &id, "--json"]);
    let terms: serde_json::Value = serde_json::from_str(&terms).expect("json");
    assert_eq!(terms.as_array().map(Vec::len), Some(0), "{terms}");
}

#[test]
fn shell_and_terminal_attach_on_a_real_pty() {
    let s = Server::start();
    let id = s.create(&[]);

    // `shell` starts the login shell in a terminal session.
    let (status, out) = drive_pty(
        &s,
        &["shell", &id],
        &[
            ("echo $((6*7))-from-shell\r", Duration::from_millis(1500)),
            ("exit\r", Duration::from_millis(500)),
        ],
    );
    assert_eq!(status.code(), Some(0), "output:\n{out}");
    assert!(out.contains("42-from-shell"), "output:\n{out}");

    // `terminal attach` shows a detached session and leaves it running on Ctrl-].
    s.ok(&["terminal", "create", &id, "--name", "bg", "--", "sh"]);
    let (status, out) = drive_pty(
        &s,
        &["terminal", "attach", &id, "bg"],
        &[
            ("echo $((2+3))-attached\r", Duration::from_millis(1500)),
            ("\x1d", Duration::from_millis(700)),
        ],
    );
    assert_eq!(status.code(), Some(0), "output:\n{out}");
    assert!(out.contains("5-attached"), "output:\n{out}");
    assert!(
        s.ok(&["terminal", "capture", &id, "bg"])
            .contains("5-attached")
    );
    let terms: serde_json::Value =
        serde_json::from_str(&s.ok(&["terminal", "ls", &id, "--json"])).expect("json");
    assert_eq!(terms[0]["alive"], true, "{terms}");

    // `run -it --rm` runs in a PTY in a fresh sandbox and removes it.
    let (status, out) = drive_pty(
        &s,
        &[
            "run",
            "-it",
            "--rm",
            "--",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && exit 5; exit 1",
        ],
        &[],
    );
    // Exit code 5 only if the program's stdin and stdout are a terminal inside the sandbox.
    // (Not its printed output: what a program that exits at once writes can be lost between
    // the PTYs when it all closes within a few milliseconds.)
    assert_eq!(status.code(), Some(5), "status {status:?}, output:\n{out}");
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["ls", "--json"])).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

/// A plain HTTP server on loopback answering `fake <path>` (the "internet" for network tests).
fn fake_upstream() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let body = format!("fake {path}");
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

#[test]
fn network_allowlist_egress_and_access_requests() {
    let up = fake_upstream();
    let pool = format!("10.223.{}.0/24", free_port() % 250);
    let s = Server::start_with(&format!(
        "[network]\npool = \"{pool}\"\nallow_upstream = [\"127.0.0.1/32\"]\n\
         [network.hosts]\n\"api.fake.test\" = [\"{up}\"]\n\"more.fake.test\" = [\"{up}\"]\n"
    ));
    let id = s.create(&["--allow", "api.fake.test"]);
    let fetch = |url: &str| {
        let code = format!(
            "import urllib.request as u\ntry:\n    print(u.urlopen('{url}', timeout=10).read().decode())\nexcept Exception as e:\n    print('blocked', getattr(e, 'code', e))"
        );
        s.ok(&["exec", &id, "--", "python3", "-c", &code])
    };
    assert_eq!(fetch("http://api.fake.test/hi").trim(), "fake /hi");
    assert_eq!(fetch("http://more.fake.test/x").trim(), "blocked 403");
    // The egress log shows both, with their decisions.
    let log = s.ok(&["egress", &id]);
    assert!(
        log.contains("api.fake.test") && log.contains("allow"),
        "{log}"
    );
    assert!(
        log.contains("more.fake.test") && log.contains("deny"),
        "{log}"
    );
    // The agent asks for access from inside with the helper command and waits for the answer.
    let waiter = s
        .cmd(&[
            "exec",
            &id,
            "--",
            "/.hutch/hutch",
            "request-access",
            "more.fake.test",
            "--reason",
            "docs for the task",
            "--wait",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn request-access");
    let deadline = Instant::now() + Duration::from_secs(30);
    let request_id = loop {
        let out = s.ok(&["approvals", "ls"]);
        if let Some(id) = out.split_whitespace().find(|w| w.starts_with("ar-")) {
            assert!(out.contains("docs for the task"), "{out}");
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no access request appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    s.ok(&["approvals", "approve", &request_id, "--note", "fine"]);
    let out = waiter.wait_with_output().expect("request-access finished");
    assert!(
        out.status.success(),
        "{}{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    assert!(stdout_of(&out).contains("approved"), "{}", stdout_of(&out));
    assert_eq!(fetch("http://more.fake.test/now").trim(), "fake /now");
    // The operator can also set the allowlist directly; it applies at once.
    s.ok(&["network", "allow", &id, "api.fake.test"]);
    assert_eq!(fetch("http://more.fake.test/again").trim(), "blocked 403");
    let shown = s.ok(&["network", "show", &id]);
    assert!(shown.contains("\"gateway\""), "{shown}");
}
