//! A `hutch server` child process for the CLI end-to-end tests, and the `hutch` commands aimed
//! at it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hutch");
pub const START_DEADLINE: Duration = Duration::from_secs(90);

/// A `hutch server` child process with its own data dir.
pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub key: String,
    pub dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub fn healthz(addr: &str) -> bool {
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
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

impl Server {
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// A server whose config file holds `toml` (e.g. a `[network]` table).
    pub fn start_with(toml: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("server log");
        let config = dir.path().join("hutch.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut child = Command::new(BIN)
            .args(["server", "--listen", &addr, "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("HUTCH_URL")
            .env_remove("HUTCH_API_KEY")
            .env_remove("HUTCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // A file, not the harness's stderr: processes the server starts may outlive it and
            // must not hold the test runner's pipes open.
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start hutch server");
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // `Admin API key: hk_…` (possibly followed by more words).
                if let Some((_, rest)) = line.split_once("Admin API key:")
                    && let Some(key) = rest.split_whitespace().next()
                {
                    let _ = tx.send(key.to_owned());
                }
            }
        });
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
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        server.key = match rx.recv_timeout(left) {
            Ok(k) => k,
            Err(_) => std::fs::read_to_string(data.join("admin.key"))
                .expect("no admin key printed or in admin.key")
                .trim()
                .to_owned(),
        };
        assert!(
            server.key.starts_with("hk_"),
            "unexpected admin key {:?}",
            server.key
        );
        server
    }

    /// A `hutch` command aimed at this server (through the environment), stdin closed.
    pub fn cmd(&self, args: &[&str]) -> Command {
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

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run hutch")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hutch {args:?} failed with {}\nstdout: {}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn create(&self, extra: &[&str]) -> String {
        let mut args = vec!["create"];
        args.extend_from_slice(extra);
        let id = self.ok(&args).trim().to_owned();
        assert!(
            !id.is_empty() && !id.contains(char::is_whitespace),
            "bad id {id:?}"
        );
        id
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.path("server.log")).unwrap_or_default();
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
            // SAFETY: plain kill(2) of our own child's pid; SIGTERM lets it shut down cleanly.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
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
