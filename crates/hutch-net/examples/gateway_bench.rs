//! Added latency of the gateway (HTTP proxy, DLP on) against a direct request, on loopback:
//! one keep-alive client connection, sequential requests, p50/p99 of each.
//!
//! `cargo run --release -p hutch-net --example gateway_bench [-- REQUESTS]`

use bytes::Bytes;
use http_body_util::Full;
use hutch_net::dlp::Scanner;
use hutch_net::gateway::{Gateway, GatewayConfig, Listener, StaticResolver};
use hutch_net::policy::{PolicyStore, StaticLookup};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn fake_server() -> Result<SocketAddr, Error> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Sequential requests on one connection; sorted latencies.
async fn run(addr: SocketAddr, request: &str, n: usize) -> Result<Vec<Duration>, Error> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut times = Vec::with_capacity(n);
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(request.as_bytes()).await?;
        let mut got = Vec::new();
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                return Err("connection closed".into());
            }
            got.extend_from_slice(&buf[..k]);
            if got.ends_with(b"\r\n\r\nok") {
                break;
            }
            if got.starts_with(b"HTTP/1.1 4") || got.starts_with(b"HTTP/1.1 5") {
                return Err(format!("request failed: {}", String::from_utf8_lossy(&got)).into());
            }
        }
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

fn pct(t: &[Duration], p: f64) -> f64 {
    t[((t.len() as f64 * p) as usize).min(t.len() - 1)].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let fake = fake_server().await?;
    let lo = "127.0.0.1".parse()?;
    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
        [(lo, "bench".to_string())].into_iter().collect(),
    ))));
    store.set(
        "bench",
        serde_json::from_str(r#"{"rules":[{"domain":"bench.test"}]}"#)?,
    )?;
    let resolver = StaticResolver(
        [("bench.test".to_string(), vec![fake])]
            .into_iter()
            .collect(),
    );
    let cfg = GatewayConfig {
        allow_upstream: vec!["127.0.0.1/32".parse()?],
        dlp: Some(Arc::new(Scanner::with_builtin(vec![])?)),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(store, Arc::new(resolver), cfg);
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = l.local_addr()?;
    tokio::spawn(gw.serve(l, Listener::Proxy));

    let direct_req = "GET /x?y=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\n\r\n";
    let proxied_req =
        "GET http://bench.test/x?y=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\n\r\n";
    run(fake, direct_req, 200).await?; // warm up
    run(proxy, proxied_req, 200).await?;
    let direct = run(fake, direct_req, n).await?;
    let via = run(proxy, proxied_req, n).await?;
    println!(
        "gateway http: direct p50 {:.0} µs p99 {:.0} µs; via gateway p50 {:.0} µs p99 {:.0} µs; added p50 {:.0} µs p99 {:.0} µs ({n} requests)",
        pct(&direct, 0.5),
        pct(&direct, 0.99),
        pct(&via, 0.5),
        pct(&via, 0.99),
        pct(&via, 0.5) - pct(&direct, 0.5),
        pct(&via, 0.99) - pct(&direct, 0.99)
    );
    Ok(())
}
