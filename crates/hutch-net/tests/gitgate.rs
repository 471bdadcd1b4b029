//! The git gate end to end: a "sandbox" (a network namespace this test creates, with its veth
//! from `NetworkManager`) runs real `git push` through the gateway's proxy port, with DLP on,
//! to a real smart-HTTP git server: `git http-backend` behind a small CGI adapter on the
//! host's 127.0.0.1. Traffic only flows between the host and that namespace. Needs root and
//! git (`scripts/deps.sh`).

mod common;
use bytes::Bytes;
use common::FakeSandbox;
use http_body_util::{BodyExt, Full};
use hutch_net::dlp::Scanner;
use hutch_net::gateway::{Gateway, GatewayConfig, Listener, StaticResolver};
use hutch_net::netns::{FirewallConfig, FirewallMode, NetConfig, NetworkManager};
use hutch_net::policy::{Policy, PolicyStore};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const POOL: &str = "10.238.0.0/24";
const ID: &str = "nettest-gitgate";
const PROXY_PORT: u16 = 3128;
const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

// Secret-shaped tokens are assembled at run time so this file holds none.
fn aws_key() -> String {
    format!("{}{}", "AKIA", "Q3EGRTZ5XKP7MB4W")
}

fn github_token() -> String {
    format!("{}{}", "ghp_", "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4")
}

/// Serve one request with `git http-backend` (CGI): request → environment + stdin, its
/// output's CGI headers → the response.
async fn cgi(
    root: PathBuf,
    pushes: Arc<AtomicUsize>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header("content-type");
    let git_protocol = header("git-protocol");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if path.ends_with("/git-receive-pack") {
        pushes.fetch_add(1, Ordering::SeqCst);
    }
    let mut child = tokio::process::Command::new(HTTP_BACKEND)
        .env_clear()
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", &content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", &git_protocol)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git http-backend");
    let mut stdin = child.stdin.take().expect("stdin");
    // Written while the output is read: a large body could fill both pipes.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await.expect("http-backend output");
    let _ = writer.await;
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        let msg = format!("bad CGI output: {}", String::from_utf8_lossy(&out.stderr));
        let mut resp = hyper::Response::new(Full::new(Bytes::from(msg)));
        *resp.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        return resp;
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::copy_from_slice(&raw[end + sep..])));
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            *resp.status_mut() = hyper::StatusCode::from_u16(code).expect("status");
        } else if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

/// The git server on the host's loopback; counts receive-pack requests (pushes that reached it).
async fn git_server(root: PathBuf, pushes: Arc<AtomicUsize>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let root = root.clone();
            let pushes = pushes.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let root = root.clone();
                    let pushes = pushes.clone();
                    async move { Ok::<_, Infallible>(cgi(root, pushes, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// `git` in `dir`, isolated from the host's configuration.
fn git(dir: &Path, args: &[&str]) -> Output {
    git_cmd(Command::new("git"), dir, args)
}

fn git_cmd(mut cmd: Command, dir: &Path, args: &[&str]) -> Output {
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.invalid")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.invalid")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .expect("git (install it: scripts/deps.sh)")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

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

#[test]
fn git_push_through_the_gateway_is_checked_for_secrets() {
    assert!(
        Path::new(HTTP_BACKEND).exists(),
        "{HTTP_BACKEND} missing: install git (scripts/deps.sh)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = Arc::new(
        NetworkManager::new(NetConfig {
            pool: POOL.parse().expect("pool"),
            state_file: dir.path().join("net.json"),
            firewall: FirewallConfig {
                mode: FirewallMode::IfAvailable,
                tcp_ports: vec![PROXY_PORT],
            },
        })
        .expect("manager"),
    );
    let sb = FakeSandbox::start(ID);
    let net = mgr.setup_sandbox(ID, sb.pid()).expect("setup");

    // Upstream: a bare repository served by git http-backend.
    let root = dir.path().join("srv");
    std::fs::create_dir_all(&root).expect("mkdir");
    ok(git(
        &root,
        &["init", "-q", "--bare", "-b", "main", "repo.git"],
    ));
    let bare = root.join("repo.git");
    ok(git(&bare, &["config", "http.receivepack", "true"]));
    let upstream_main = || {
        let out = git(&bare, &["rev-parse", "--verify", "-q", "refs/heads/main"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Arc::new(PolicyStore::new(mgr.clone()));
    let policy: Policy =
        serde_json::from_str(r#"{"rules":[{"id":"git","domain":"git.test"}]}"#).expect("policy");
    store.set(ID, policy).expect("set");
    let pushes = Arc::new(AtomicUsize::new(0));
    let gw_ip = net.gateway;
    rt.block_on(async {
        let upstream = git_server(root.clone(), pushes.clone()).await;
        let resolver = StaticResolver(
            [("git.test".to_string(), vec![upstream])]
                .into_iter()
                .collect(),
        );
        let cfg = GatewayConfig {
            allow_upstream: vec!["127.0.0.1/32".parse().expect("net")],
            dlp: Some(Arc::new(
                Scanner::with_builtin(Vec::new()).expect("scanner"),
            )),
            ..GatewayConfig::default()
        };
        let gw = Gateway::new(store.clone(), Arc::new(resolver), cfg);
        let l = tokio::net::TcpListener::bind((gw_ip, PROXY_PORT))
            .await
            .expect("bind gateway");
        tokio::spawn(gw.serve(l, Listener::Proxy));
    });

    // The sandbox's repository (on the shared filesystem; only its pushes run in the netns).
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("src/app")).expect("mkdir");
    ok(git(&work, &["init", "-q", "-b", "main"]));
    let proxy = format!("http.proxy=http://{gw_ip}:{PROXY_PORT}");
    let push = || {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(sb.pid().to_string()).args(["-n", "git"]);
        git_cmd(
            cmd,
            &work,
            &["-c", &proxy, "push", "http://git.test/repo.git", "main"],
        )
    };
    let commit = |msg: &str| {
        ok(git(&work, &["add", "-A"]));
        ok(git(&work, &["commit", "-q", "-m", msg]));
        ok(git(&work, &["rev-parse", "HEAD"]))
    };

    // 1. A clean push arrives upstream.
    std::fs::write(work.join("README.md"), "# demo\n").expect("write");
    std::fs::write(work.join("src/app/settings.py"), settings("")).expect("write");
    let first = commit("init");
    let out = push();
    assert!(
        out.status.success(),
        "clean push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(upstream_main(), first);
    assert_eq!(pushes.load(Ordering::SeqCst), 1);

    // 2. A new file with an AWS key: refused before reaching upstream, naming rule and file.
    std::fs::create_dir_all(work.join("config")).expect("mkdir");
    std::fs::write(
        work.join("config/deploy.env"),
        format!("AWS_ACCESS_KEY_ID={}\n", aws_key()),
    )
    .expect("write");
    commit("add deploy config");
    let out = push();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("git push (new file with a secret):\n{stderr}");
    assert!(
        !out.status.success(),
        "push with a secret succeeded: {stderr}"
    );
    assert!(stderr.contains("[remote rejected]"), "{stderr}");
    assert!(stderr.contains("aws-access-key-id"), "{stderr}");
    assert!(stderr.contains("config/deploy.env"), "{stderr}");
    assert!(
        !stderr.contains(&aws_key()),
        "git output repeats the secret"
    );
    assert_eq!(upstream_main(), first);
    assert_eq!(
        pushes.load(Ordering::SeqCst),
        1,
        "the push reached upstream"
    );
    ok(git(&work, &["reset", "-q", "--hard", &first]));

    // 3. A change to an existing file (sent as a delta on upstream's version) adding a token.
    std::fs::write(
        work.join("src/app/settings.py"),
        settings(&format!("GITHUB_TOKEN = \"{}\"\n", github_token())),
    )
    .expect("write");
    commit("tweak settings");
    let out = push();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("git push (delta adding a secret):\n{stderr}");
    assert!(
        !out.status.success(),
        "push with a secret succeeded: {stderr}"
    );
    assert!(stderr.contains("[remote rejected]"), "{stderr}");
    assert!(stderr.contains("github-pat"), "{stderr}");
    // Only upstream knows the changed file's path: the refusal names upstream's version,
    // which the sandbox's clone maps to the path.
    let old_blob = ok(git(
        &work,
        &["rev-parse", &format!("{first}:src/app/settings.py")],
    ));
    assert!(stderr.contains(&old_blob), "{stderr}");
    let objects = ok(git(&work, &["rev-list", "--objects", "--all"]));
    assert!(
        objects.contains(&format!("{old_blob} src/app/settings.py")),
        "{objects}"
    );
    assert!(
        !stderr.contains(&github_token()),
        "git output repeats the secret"
    );
    assert_eq!(upstream_main(), first);
    assert_eq!(
        pushes.load(Ordering::SeqCst),
        1,
        "the push reached upstream"
    );
    ok(git(&work, &["reset", "-q", "--hard", &first]));

    // 4. The same change without the secret goes through.
    std::fs::write(
        work.join("src/app/settings.py"),
        settings("NEW_SETTING = 1\n"),
    )
    .expect("write");
    let second = commit("tweak settings");
    let out = push();
    assert!(
        out.status.success(),
        "clean push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(upstream_main(), second);
    assert_eq!(pushes.load(Ordering::SeqCst), 2);

    rt.shutdown_timeout(Duration::from_secs(1));
    mgr.teardown_sandbox(ID).expect("teardown");
    if mgr.firewall_active() {
        hutch_net::netns::firewall::remove(POOL.parse().expect("pool")).expect("remove filter");
    }
}
