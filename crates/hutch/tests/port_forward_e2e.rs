//! End-to-end test of `hutch port-forward` against a real `hutch server` and a real sandbox: a
//! Python HTTP server runs in the sandbox, the real binary forwards a local port to it, and an
//! HTTP client fetches files through that port.

mod cli_common;

use cli_common::{Server, free_port};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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
