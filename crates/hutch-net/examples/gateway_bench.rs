//! Added latency of the gateway against direct requests, on loopback: one keep-alive client
//! connection, sequential requests, p50/p99 of each.
//!
//! - plain HTTP through the proxy port (DLP on);
//! - HTTPS intercepted on the TLS listener (DLP on; the gateway terminates TLS with a minted
//!   certificate and speaks TLS to the upstream) against HTTPS straight to the upstream; also
//!   the cost of a new connection (handshake and first request) both ways;
//! - minting a leaf certificate.
//!
//! `cargo run --release -p hutch-net --example gateway_bench [-- REQUESTS]`

use bytes::Bytes;
use http_body_util::Full;
use hutch_net::ca::Ca;
use hutch_net::dlp::Scanner;
use hutch_net::gateway::{Gateway, GatewayConfig, Listener, StaticResolver};
use hutch_net::policy::{PolicyStore, StaticLookup};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serve "ok" over plain TCP, or TLS with `tls`.
async fn fake_server(tls: Option<TlsAcceptor>) -> Result<SocketAddr, Error> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(s).await {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// One request on `s`, reading until the "ok" body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &str,
    buf: &mut [u8],
) -> Result<(), Error> {
    s.write_all(request.as_bytes()).await?;
    s.flush().await?;
    let mut got = Vec::new();
    loop {
        let k = s.read(buf).await?;
        if k == 0 {
            return Err("connection closed".into());
        }
        got.extend_from_slice(&buf[..k]);
        if got.ends_with(b"\r\n\r\nok") {
            return Ok(());
        }
        if got.starts_with(b"HTTP/1.1 4") || got.starts_with(b"HTTP/1.1 5") {
            return Err(format!("request failed: {}", String::from_utf8_lossy(&got)).into());
        }
    }
}

/// Sequential requests on one connection; sorted latencies.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &str,
    n: usize,
) -> Result<Vec<Duration>, Error> {
    let mut times = Vec::with_capacity(n);
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let t = Instant::now();
        exchange(s, request, &mut buf).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

async fn tls_connect(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    sni: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_string())?;
    Ok(TlsConnector::from(cfg.clone()).connect(name, tcp).await?)
}

/// New connections: TLS handshake plus one request each; sorted latencies.
async fn run_new(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    request: &str,
    n: usize,
) -> Result<Vec<Duration>, Error> {
    let mut times = Vec::with_capacity(n);
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let t = Instant::now();
        let mut s = tls_connect(addr, cfg, "tls.test").await?;
        exchange(&mut s, request, &mut buf).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

fn pct(t: &[Duration], p: f64) -> f64 {
    t[((t.len() as f64 * p) as usize).min(t.len() - 1)].as_secs_f64() * 1e6
}

fn report(what: &str, direct: &[Duration], via: &[Duration]) {
    println!(
        "{what}: direct p50 {:.0} µs p99 {:.0} µs; via gateway p50 {:.0} µs p99 {:.0} µs; added p50 {:.0} µs p99 {:.0} µs ({} samples)",
        pct(direct, 0.5),
        pct(direct, 0.99),
        pct(via, 0.5),
        pct(via, 0.99),
        pct(via, 0.5) - pct(direct, 0.5),
        pct(via, 0.99) - pct(direct, 0.99),
        via.len()
    );
}

/// A test CA and a certificate for `tls.test` signed by it.
fn upstream_pki() -> Result<(CertificateDer<'static>, TlsAcceptor), Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Bench upstream CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["tls.test".to_string()])?.signed_by(&key, &*ca)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    Ok((ca.der().clone(), TlsAcceptor::from(Arc::new(cfg))))
}

fn client_config(root: CertificateDer<'static>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root)?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile_dir()?;
    let ca = Arc::new(Ca::load_or_create(&dir, &[7u8; 32])?);
    let (upstream_ca, acceptor) = upstream_pki()?;
    let fake = fake_server(None).await?;
    let fake_tls = fake_server(Some(acceptor)).await?;

    let lo = "127.0.0.1".parse()?;
    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
        [(lo, "bench".to_string())].into_iter().collect(),
    ))));
    store.set(
        "bench",
        serde_json::from_str(r#"{"rules":[{"domain":"bench.test"},{"domain":"tls.test"}]}"#)?,
    )?;
    let resolver = StaticResolver(
        [
            ("bench.test".to_string(), vec![fake]),
            ("tls.test".to_string(), vec![fake_tls]),
        ]
        .into_iter()
        .collect(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(upstream_ca.clone())?;
    let cfg = GatewayConfig {
        allow_upstream: vec!["127.0.0.1/32".parse()?],
        dlp: Some(Arc::new(Scanner::with_builtin(vec![])?)),
        ca: Some(ca.clone()),
        upstream_roots: Some(Arc::new(roots)),
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(store, Arc::new(resolver), cfg);
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = l.local_addr()?;
    tokio::spawn(gw.clone().serve(l, Listener::Proxy));
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let tls_listener = l.local_addr()?;
    // The fake TLS server is on a random port: the listener stands for it (the resolver
    // gives its real port).
    tokio::spawn(gw.serve(l, Listener::Tls { port: 443 }));

    // Plain HTTP.
    let direct_req = "GET /x?y=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\n\r\n";
    let proxied_req =
        "GET http://bench.test/x?y=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\n\r\n";
    let mut d = TcpStream::connect(fake).await?;
    d.set_nodelay(true)?;
    let mut p = TcpStream::connect(proxy).await?;
    p.set_nodelay(true)?;
    run(&mut d, direct_req, 200).await?; // warm up
    run(&mut p, proxied_req, 200).await?;
    let direct = run(&mut d, direct_req, n).await?;
    let via = run(&mut p, proxied_req, n).await?;
    report("gateway http", &direct, &via);

    // HTTPS to `tls.test`, intercepted: the client trusts the Hutch CA through the gateway,
    // the upstream's CA when direct.
    let https_req = "GET /x?y=1 HTTP/1.1\r\nHost: tls.test\r\nUser-Agent: bench\r\n\r\n";
    let direct_cfg = client_config(upstream_ca)?;
    let via_cfg = client_config(ca.cert_der().clone())?;
    let mut d = tls_connect(fake_tls, &direct_cfg, "tls.test").await?;
    let mut v = tls_connect(tls_listener, &via_cfg, "tls.test").await?;
    run(&mut d, https_req, 200).await?;
    run(&mut v, https_req, 200).await?;
    let direct = run(&mut d, https_req, n).await?;
    let via = run(&mut v, https_req, n).await?;
    report("gateway https (intercepted, keep-alive)", &direct, &via);

    let m = (n / 10).max(50);
    let direct = run_new(fake_tls, &direct_cfg, https_req, m).await?;
    let via = run_new(tls_listener, &via_cfg, https_req, m).await?;
    report(
        "gateway https (new connection: handshake + request)",
        &direct,
        &via,
    );

    // Minting (uncached) and a cache hit.
    let k = 1000;
    let t = Instant::now();
    for i in 0..k {
        ca.mint(&format!("h{i}.bench.test"))?;
    }
    let mint = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    ca.leaf("cached.bench.test")?;
    let t = Instant::now();
    for _ in 0..k {
        ca.leaf("cached.bench.test")?;
    }
    let hit = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    println!("leaf certificate: mint {mint:.0} µs, cache hit {hit:.2} µs");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fresh private directory for the bench's CA.
fn tempfile_dir() -> Result<std::path::PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("hutch-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
