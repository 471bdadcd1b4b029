//! `hutch bench net`: what sandbox networking costs, against an in-process server with a fake
//! upstream on loopback: the time a network adds to create (mode `allowlist` vs `none`), and the
//! latency the gateway adds to an HTTP request (a fresh connection per request, from inside the
//! sandbox's network namespace through the gateway, vs the same request from the host straight
//! to the upstream). DLP throughput: `cargo run --release -p hutch-net --example dlp_bench`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use hutch_api::sandbox::Sandbox;
use hutch_server::{ConfigOverrides, ServerConfig};
use serde_json::{Value, json};

use super::stats::Samples;

#[derive(Args)]
pub struct NetBenchArgs {
    /// Creates per mode.
    #[arg(long, default_value_t = 100)]
    pub creates: usize,
    /// HTTP requests per path.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Address pool for the benchmark's sandboxes.
    #[arg(long, default_value = "10.251.0.0/20")]
    pub pool: String,
    /// Scratch data dir (removed afterwards).
    #[arg(long, default_value = "/var/tmp/hutch-bench-net")]
    pub data_dir: PathBuf,
}

pub fn run(a: NetBenchArgs) -> Result<()> {
    let _ = std::fs::remove_dir_all(&a.data_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(bench(&a));
    let _ = std::fs::remove_dir_all(&a.data_dir);
    result
}

/// A tiny HTTP/1.1 upstream on loopback answering `ok` and closing.
fn upstream() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    Ok(addr)
}

/// One request on a fresh connection; the time until the whole answer arrived.
fn fetch(addr: SocketAddr, host: &str) -> Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /bench HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    ensure!(
        out.starts_with(b"HTTP/1.1 200"),
        "answer: {}",
        String::from_utf8_lossy(&out)
    );
    Ok(t.elapsed())
}

async fn bench(a: &NetBenchArgs) -> Result<()> {
    let up = upstream()?;
    let overrides = ConfigOverrides {
        listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(a.data_dir.clone()),
        ..Default::default()
    };
    let mut config = ServerConfig::load(None, overrides).context("config")?;
    config.network.pool = a.pool.clone();
    config.network.allow_upstream = vec!["127.0.0.1/32".into()];
    config
        .network
        .hosts
        .insert("bench.test".into(), vec![up.to_string()]);
    let server = hutch_server::spawn(config).await.context("start server")?;
    let http = reqwest::Client::new();
    let key = server
        .admin_key
        .clone()
        .context("fresh data dir has an admin key")?;
    let base = server.url();
    println!(
        "hutch bench net: in-process server on {} ({} cores), upstream {up}",
        server.addr,
        std::thread::available_parallelism()?.get()
    );
    let create = |body: Value| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            let t = Instant::now();
            let r = http
                .post(format!("{base}/v1/sandboxes"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await?;
            ensure!(r.status().as_u16() == 201, "create: {}", r.text().await?);
            let sb: Sandbox = r.json().await?;
            Ok::<_, anyhow::Error>((t.elapsed(), sb.id))
        }
    };
    let delete = |id: String| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            http.delete(format!("{base}/v1/sandboxes/{id}"))
                .bearer_auth(&key)
                .send()
                .await?;
            Ok::<_, anyhow::Error>(())
        }
    };
    let networked = json!({ "network": { "mode": "allowlist", "allow": ["bench.test"] } });
    let mut none = Samples::new("create via /v1, network none");
    let mut net = Samples::new("create via /v1, network allowlist");
    // Each mode creates its sandboxes one after the other and deletes them all afterwards:
    // deleting a networked sandbox leaves the kernel tearing down its namespace and veth for a
    // while, which slows whatever cgroup work comes next; that churn cost is measured below
    // separately.
    for (samples, body) in [(&mut none, json!({})), (&mut net, networked.clone())] {
        let mut ids = Vec::new();
        for i in 0..a.creates + 5 {
            let (d, id) = create(body.clone()).await?;
            ids.push(id);
            if i >= 5 {
                samples.push(d);
            }
        }
        for id in ids {
            delete(id).await?;
        }
    }
    let mut churn = Samples::new("create+delete cycle, network allowlist");
    for _ in 0..a.creates / 2 {
        let t = Instant::now();
        let (_, id) = create(networked.clone()).await?;
        delete(id).await?;
        churn.push(t.elapsed());
    }
    println!("{}", none.line());
    println!("{}", net.line());
    println!(
        "    network setup adds p50 {:.3} ms to create",
        net.pct_ms(50.0) - none.pct_ms(50.0)
    );
    println!("{}", churn.line());

    // Gateway latency: from inside a sandbox's netns, through :80, vs host → upstream.
    let (_, id) = create(networked.clone()).await?;
    let info: Value = http
        .get(format!("{base}/v1/sandboxes/{id}/network"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let gw: std::net::IpAddr = info["gateway"].as_str().context("gateway")?.parse()?;
    let pid = server.state.engine().info(&id)?.pid;
    let n = a.requests;
    let through = tokio::task::spawn_blocking(move || -> Result<Samples> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        // SAFETY: setns on a namespace fd, on this thread only (which ends afterwards).
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let mut s = Samples::new("HTTP via gateway (sandbox -> :80 -> upstream)");
        for i in 0..n + 50 {
            let d = fetch(SocketAddr::new(gw, 80), "bench.test")?;
            if i >= 50 {
                s.push(d);
            }
        }
        Ok(s)
    })
    .await??;
    let direct = tokio::task::spawn_blocking(move || -> Result<Samples> {
        let mut s = Samples::new("HTTP direct (host -> upstream)");
        for i in 0..n + 50 {
            let d = fetch(up, "bench.test")?;
            if i >= 50 {
                s.push(d);
            }
        }
        Ok(s)
    })
    .await??;
    println!("{}", direct.line());
    println!("{}", through.line());
    println!(
        "    gateway adds p50 {:.3} ms, p99 {:.3} ms ({:.2}x direct at p50)",
        through.pct_ms(50.0) - direct.pct_ms(50.0),
        through.pct_ms(99.0) - direct.pct_ms(99.0),
        through.pct_ms(50.0) / direct.pct_ms(50.0)
    );
    delete(id).await?;
    server.stop().await;
    Ok(())
}
