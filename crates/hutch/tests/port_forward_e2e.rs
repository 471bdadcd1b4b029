//! End-to-end test of `hutch port-forward` against a real `hutch server` and a real sandbox: a
//! Python HTTP server runs in the sandbox, the real binary forwards a local port to it, and an
//! HTTP client fetches files through that port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hutch");
const START_DEADLINE: Duration = Duration::from_secs(90);

/// A `hutch server` child process with its own data dir.
struct Server {
    child: Option<Child>,
    url: String,
    key: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn healthz(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let child = Command::new(BIN)
            .args(["server", "--listen", &addr, "--data-dir"])
            .arg(&data)
            .env_remove("HUTCH_URL")
            .env_remove("HUTCH_API_KEY")
            .env_remove("HUTCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A file: processes the server starts may outlive it and must not hold our pipes.
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start hutch server");
        let mut server = Server {
            child: Some(child),
            url: format!("http://{addr}"),
            key: String::new(),
            dir,
        };
        let deadline = Instant::now() + START_DEADLINE;
        while !healthz(&addr) {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                panic!("hutch server exited early: {status}\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "hutch server did not answer /healthz in time\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.key = std::fs::read_to_string(data.join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_owned();
        server
    }

    /// A `hutch` command aimed at this server (through the environment), stdin closed.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("HUTCH_URL", &self.url)
            .env("HUTCH_API_KEY", &self.key)
            .env("HOME", self.dir.path())
            .env_remove("HUTCH_CLI_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run hutch");
        assert!(
            out.status.success(),
            "hutch {args:?} failed with {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        format!("--- server log ---\n{text}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Sandboxes outlive a stopped server: delete what the test left behind.
            if let Ok(out) = self.cmd(&["ls", "-q", "--all"]).output() {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids.iter().map(String::as_str));
                    let _ = self
                        .cmd(&args)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
            signal(&child, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) of our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// A running `hutch port-forward` and the local addresses it printed.
struct Forward {
    child: Child,
    addrs: Vec<SocketAddr>,
    stderr_path: std::path::PathBuf,
}

impl Forward {
    fn start(s: &Server, args: &[&str], n: usize) -> Forward {
        let stderr_path = s.dir.path().join(format!("pf-{}.err", free_port()));
        let err = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut all = vec!["port-forward"];
        all.extend_from_slice(args);
        let mut child = s
            .cmd(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start hutch port-forward");
        let stdout = child.stdout.take().expect("stdout");
        let lines = read_lines(stdout, n);
        let addrs = lines
            .iter()
            .map(|l| {
                // `Forwarding 127.0.0.1:PORT -> ID:REMOTE`
                let rest = l
                    .strip_prefix("Forwarding ")
                    .unwrap_or_else(|| panic!("unexpected line {l:?}"));
                rest.split(" -> ").next().unwrap().parse().unwrap()
            })
            .collect();
        Forward {
            child,
            addrs,
            stderr_path,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `n` lines of a child's stdout (panics after 30 s).
fn read_lines(stdout: ChildStdout, n: usize) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("port-forward printed its addresses")
        })
        .collect()
}

async fn api(s: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut rb = reqwest::Client::new()
        .request(method, format!("{}{path}", s.url))
        .bearer_auth(&s.key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_server_in_the_sandbox() {
    let s = Server::start();
    let id = s.ok(&["create"]).trim().to_owned();
    // Files to serve: a small page and 2 MiB of patterned bytes.
    s.ok(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo hello-port-forward > /tmp/www/index.html && \
         head -c 2097152 /dev/urandom > /tmp/www/big.bin && sha256sum /tmp/www/big.bin",
    ]);
    let want_sum = s
        .ok(&["exec", &id, "--", "sha256sum", "/tmp/www/big.bin"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    api(
        &s,
        reqwest::Method::POST,
        &format!("/v1/sandboxes/{id}/processes"),
        Some(json!({
            "cmd": ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1",
                    "--directory", "/tmp/www"],
        })),
    )
    .await;

    let fwd = Forward::start(&s, &[&id, "0:8000", "0:8009"], 2);
    let (web, closed) = (fwd.addrs[0], fwd.addrs[1]);
    assert!(web.ip().is_loopback() && web.port() != 0, "{web}");

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        match http.get(format!("http://{web}/index.html")).send().await {
            Ok(r) if r.status().is_success() => break r.text().await.unwrap(),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no answer through the forward: {other:?}\n{}",
                    fwd.stderr()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(page, "hello-port-forward\n");

    // Several connections at once, each with a large body intact.
    let gets = (0..4).map(|_| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://{web}/big.bin"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap()
        }
    });
    for body in futures::future::join_all(gets).await {
        assert_eq!(body.len(), 2 * 1024 * 1024);
        assert_eq!(sha256_hex(&body), want_sum);
    }

    // Nothing listens on 8009: the local connection closes and the CLI says why.
    assert!(http.get(format!("http://{closed}/")).send().await.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fwd.stderr().contains("nothing is listening on port 8009") {
        assert!(
            Instant::now() < deadline,
            "stderr: {}\n{}",
            fwd.stderr(),
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ctrl-C stops it cleanly.
    let mut fwd = fwd;
    signal(&fwd.child, libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = fwd.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "port-forward ignored SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}\n{}", fwd.stderr());
    assert!(
        TcpStream::connect(web).is_err(),
        "still listening after Ctrl-C"
    );

    // A missing sandbox fails up front with the server's message.
    let out = s
        .cmd(&["port-forward", "sb-doesnotexist", "0:8000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    // Bad port specs are usage errors.
    let out = s.cmd(&["port-forward", &id, "8000:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn sha256_hex(data: &[u8]) -> String {
    // `sha256sum` inside the sandbox is the reference; compute the same on this side.
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
