//! Gateway observation and control hooks (egress records, `hutch.internal`, swapping the DLP
//! scanner) and TLS interception with credential injection.

mod common;

use bytes::Bytes;
use common::FakeSandbox;
use http_body_util::{BodyExt, Full};
use hutch_net::ca::{self, Ca};
use hutch_net::dlp::{Action, Scanner, Secret};
use hutch_net::dns::DnsFilter;
use hutch_net::gateway::{
    EgressKind, EgressRecord, EgressSink, Gateway, GatewayConfig, InternalFuture, InternalService,
    Listener, StaticResolver,
};
use hutch_net::netns::{FirewallConfig, FirewallMode, NetConfig, NetworkManager};
use hutch_net::policy::{Injection, Policy, PolicyStore, StaticLookup};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(5);

/// Keeps every record.
#[derive(Default)]
struct Records(Mutex<Vec<EgressRecord>>);

impl EgressSink for Records {
    fn record(&self, rec: EgressRecord) {
        self.0.lock().expect("records").push(rec);
    }
}

impl Records {
    fn all(&self) -> Vec<EgressRecord> {
        self.0.lock().expect("records").clone()
    }

    /// Wait for the record matching `f` (records of streamed bodies arrive when they end).
    async fn wait(&self, f: impl Fn(&EgressRecord) -> bool) -> EgressRecord {
        for _ in 0..500 {
            if let Some(r) = self.all().into_iter().find(&f) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no such record in {:#?}", self.all());
    }
}

/// Answers with the sandbox id, method, URI and body it was given.
struct Echo;

impl InternalService for Echo {
    fn handle(&self, sandbox: String, req: http::Request<Bytes>) -> InternalFuture {
        Box::pin(async move {
            let text = format!(
                "internal: sandbox={sandbox} {} {} body={}",
                req.method(),
                req.uri(),
                String::from_utf8_lossy(req.body())
            );
            http::Response::new(Bytes::from(text))
        })
    }
}

/// The fake internet's plain HTTP server: answers with what it saw.
async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let line = format!("upstream saw {} {}", req.method(), req.uri());
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(line))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn policy(json: &str) -> Policy {
    serde_json::from_str(json).expect("policy")
}

/// One HTTP/1.1 request with `Connection: close`; status, head and body.
async fn request(addr: SocketAddr, req: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

#[tokio::test]
async fn records_internal_service_and_swappable_dlp() {
    let web = http_server().await;
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
        [(lo, "sb1".to_string())].into_iter().collect(),
    ))));
    store
        .set(
            "sb1",
            policy(r#"{"rules":[{"id":"web","domain":"allowed.test"},{"id":"all","domain":"*"}]}"#),
        )
        .expect("set");
    let records = Arc::new(Records::default());
    let resolver = StaticResolver(
        [("allowed.test".to_string(), vec![web])]
            .into_iter()
            .collect(),
    );
    let gw = Gateway::new(
        store.clone(),
        Arc::new(resolver),
        GatewayConfig {
            allow_upstream: vec!["127.0.0.1/32".parse().expect("net")],
            sink: Some(records.clone()),
            internal: Some(Arc::new(Echo)),
            ..GatewayConfig::default()
        },
    );
    let mut addrs = Vec::new();
    for kind in [Listener::Proxy, Listener::Http { port: 80 }] {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(l.local_addr().expect("addr"));
        tokio::spawn(gw.clone().serve(l, kind));
    }
    let (proxy, http) = (addrs[0], addrs[1]);

    // Allowed: recorded with the upstream status, the path without its query, byte counts.
    let (status, _, body) = request(
        proxy,
        "POST http://allowed.test/up?token=x HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream saw POST /up?token=x")
    );
    let r = records.wait(|r| r.path.as_deref() == Some("/up")).await;
    assert_eq!(
        (
            r.sandbox.as_str(),
            r.kind,
            r.method.as_deref(),
            r.host.as_str(),
            r.port
        ),
        ("sb1", EgressKind::Http, Some("POST"), "allowed.test", 80)
    );
    assert_eq!(
        (r.status, r.allowed, r.rule.as_deref()),
        (Some(200), true, Some("web"))
    );
    assert_eq!((r.bytes_sent, r.bytes_received), (5, body.len() as u64));

    // Denied: recorded with 403 and the reason.
    let (status, _, _) = request(
        http,
        "GET /x HTTP/1.1\r\nHost: denied.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502, "allowed by *, but no such host upstream");
    store
        .set(
            "sb1",
            policy(r#"{"rules":[{"id":"web","domain":"allowed.test"}]}"#),
        )
        .expect("set");
    let (status, _, _) = request(
        http,
        "GET /y HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let r = records.wait(|r| r.path.as_deref() == Some("/y")).await;
    assert_eq!((r.allowed, r.status), (false, Some(403)));
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|x| x.contains("denied.test")),
        "{r:?}"
    );

    // hutch.internal: served by the service on :80 and through the proxy, whatever the
    // policy, never recorded as egress.
    let before = records.all().len();
    let (status, _, body) = request(
        http,
        "POST /v1/ask?x=1 HTTP/1.1\r\nHost: hutch.internal\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "internal: sandbox=sb1 POST /v1/ask?x=1 body=hi")
    );
    let (status, _, body) = request(
        proxy,
        "GET http://hutch.internal/p HTTP/1.1\r\nHost: hutch.internal\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "internal: sandbox=sb1 GET /p body=")
    );
    // Bodies over 64 KiB are refused.
    let big = "x".repeat(70_000);
    let (status, _, _) = request(
        http,
        &format!(
            "POST / HTTP/1.1\r\nHost: hutch.internal\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        ),
    )
    .await;
    assert_eq!(status, 413);
    // CONNECT to it is refused.
    let (status, _, _) = request(
        proxy,
        "CONNECT hutch.internal:443 HTTP/1.1\r\nHost: hutch.internal:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        records.all()[before..]
            .iter()
            .all(|r| r.kind == EgressKind::Connect),
        "{:?}",
        &records.all()[before..]
    );

    // DLP swapped at run time: the next request is scanned with the new scanner.
    let secret = "swapped-in-Secret-0042";
    let req = format!(
        "GET http://allowed.test/?k={secret} HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(request(proxy, &req).await.0, 200);
    gw.set_dlp(Some(Arc::new(
        Scanner::with_builtin(vec![Secret {
            name: "swapped".into(),
            value: secret.into(),
            action: Action::Block,
        }])
        .expect("scanner"),
    )));
    let (status, head, _) = request(proxy, &req).await;
    assert_eq!(status, 403);
    assert!(
        head.contains("secret:swapped") && !head.contains(secret),
        "{head}"
    );
    // Records redact with the scanner of the moment.
    assert!(
        records
            .all()
            .iter()
            .all(|r| !format!("{r:?}").contains(secret)),
        "a record holds the secret"
    );
    gw.set_dlp(None);
    assert_eq!(request(proxy, &req).await.0, 200);

    // Unknown peers get no answer (no reflection) and are not recorded.
    let n = records.all().len();
    store.remove("sb1");
    let other = Arc::new(PolicyStore::new(Arc::new(StaticLookup::default())));
    let dns = DnsFilter::new(other).with_sink(records.clone());
    let q = dns_query("allowed.test.");
    assert!(dns.answer(lo, lo, &q).is_none());
    assert_eq!(records.all().len(), n);
}

fn dns_query(name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    q.to_vec().expect("encode")
}

#[test]
fn dns_answers_hutch_internal_and_records_queries() {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RData;
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    let gw: IpAddr = "10.1.2.1".parse().expect("ip");
    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
        [(lo, "sb1".to_string())].into_iter().collect(),
    ))));
    store
        .set("sb1", policy(r#"{"rules":[{"domain":"allowed.test"}]}"#))
        .expect("set");
    let records = Arc::new(Records::default());
    let dns = DnsFilter::new(store).with_sink(records.clone());
    let answer = |name: &str| {
        Message::from_vec(&dns.answer(lo, gw, &dns_query(name)).expect("reply")).expect("dec")
    };
    let r = answer("hutch.internal.");
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(matches!(&r.answers[0].data, RData::A(a) if IpAddr::V4(a.0) == gw));
    assert_eq!(
        answer("allowed.test.").metadata.response_code,
        ResponseCode::NoError
    );
    assert_eq!(
        answer("other.test.").metadata.response_code,
        ResponseCode::Refused
    );
    let recs = records.all();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (
            recs[0].kind,
            recs[0].host.as_str(),
            recs[0].allowed,
            recs[0].sandbox.as_str()
        ),
        (EgressKind::Dns, "allowed.test", true, "sb1")
    );
    assert_eq!(
        (recs[1].host.as_str(), recs[1].allowed),
        ("other.test", false)
    );
}

// ---------------------------------------------------------------------------------------------
// TLS interception, end to end: a sandbox (a process in a network namespace this test creates)
// talks HTTPS through the gateway on its veth's host side to a fake internet on the host's
// loopback (HTTPS with a test CA the gateway trusts through `upstream_roots`).
// ---------------------------------------------------------------------------------------------

const POOL: &str = "10.239.0.0/24";
const ID: &str = "nettest-intercept";
const REAL: &str = "sk-real-Secret-4f3e2d1c0b";
const PLACEHOLDER: &str = "hutch-placeholder-openai-0001";
const DB_SECRET: &str = "db-password-Secret-77aa";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The fake internet's certificates: a test CA and a leaf for the test names.
struct TestPki {
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

fn test_pki() -> TestPki {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Test upstream CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec![
        "api.test".to_string(),
        "other.test".to_string(),
        "pass.test".to_string(),
    ])
    .expect("params")
    .signed_by(&leaf_key, &*ca)
    .expect("leaf");
    TestPki {
        ca_der: ca.der().clone(),
        leaf_der: leaf.der().clone(),
        leaf_key: leaf_key.serialize_der(),
    }
}

/// An HTTPS server on loopback answering with what it saw (method, URI, Host, Authorization
/// and body length).
async fn https_server(cert: CertificateDer<'static>, key: Vec<u8>) -> SocketAddr {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string()
                    };
                    let line = format!(
                        "upstream saw {} {} host={} auth={}",
                        req.method(),
                        req.uri(),
                        header("host"),
                        header("authorization")
                    );
                    let len = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes().len())
                        .unwrap_or(0);
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                        "{line} body={len}"
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A rustls client (inside the sandbox) trusting `roots`.
fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).expect("root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

/// What an HTTPS exchange gave: status, head, body and the server's certificate.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
    cert: CertificateDer<'static>,
}

fn connect_retrying(addr: SocketAddr) -> std::net::TcpStream {
    // A fresh veth may still be coming up when the first SYN goes out.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_read_timeout(Some(T)).expect("timeout");
                return s;
            }
            Err(e) if std::time::Instant::now() > deadline => panic!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// TLS with `sni` over `tcp`, send `request` (with `Connection: close`), read the answer.
fn https_over(
    tcp: std::net::TcpStream,
    cfg: &Arc<rustls::ClientConfig>,
    sni: &str,
    request: &str,
) -> Result<Answer, String> {
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(cfg.clone(), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("handshake/write: {e}"))?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no peer certificate")?;
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
        cert: cert.into_owned(),
    })
}

/// CONNECT `target` through the proxy; the open tunnel.
fn tunnel(proxy: SocketAddr, target: &str) -> std::net::TcpStream {
    let mut s = connect_retrying(proxy);
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read"), 1, "proxy closed");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

fn dns_a(server: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.send_to(&dns_query(name), server).expect("send");
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).expect("dns reply");
    Message::from_vec(&buf[..n])
        .expect("dec")
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(x) => Some(x.0),
            _ => None,
        })
        .collect()
}

fn block_reason(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-hutch-block-reason:")
                .then(|| l[21..].trim().to_string())
        })
        .unwrap_or_default()
}

fn get(host: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

fn post(host: &str, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn sandbox_https_is_intercepted_checked_and_injected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = Arc::new(
        NetworkManager::new(NetConfig {
            pool: POOL.parse().expect("pool"),
            state_file: dir.path().join("net.json"),
            firewall: FirewallConfig {
                mode: FirewallMode::IfAvailable,
                tcp_ports: vec![80, 443, 3128],
            },
        })
        .expect("manager"),
    );
    let sb = FakeSandbox::start(ID);
    let net = mgr.setup_sandbox(ID, sb.pid()).expect("setup");
    let gw_ip = net.gateway;

    let hutch_ca = Arc::new(Ca::load_or_create(&dir.path().join("ca"), &[42u8; 32]).expect("ca"));
    let pki = test_pki();
    let store = Arc::new(PolicyStore::new(mgr.clone()));
    store
        .set(
            ID,
            policy(
                r#"{"rules":[
                    {"id":"api","domain":"api.test","methods":["GET","POST"],"paths":["/v1/"]},
                    {"id":"other","domain":"other.test"},
                    {"id":"pass","domain":"pass.test"},
                    {"id":"untrusted","domain":"untrusted.test"}
                ],"passthrough":["pass.test"]}"#,
            ),
        )
        .expect("policy");
    store
        .set_injections(
            ID,
            vec![Injection {
                secret: "openai".into(),
                domain: "api.test".into(),
                path_prefix: Some("/v1/".into()),
                header: http::header::AUTHORIZATION,
                value: format!("Bearer {REAL}"),
                real: REAL.into(),
                placeholder: PLACEHOLDER.into(),
            }],
        )
        .expect("injections");
    let records = Arc::new(Records::default());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let web = https_server(pki.leaf_der.clone(), pki.leaf_key.clone()).await;
        // A server whose certificate the gateway does not trust.
        let rogue = rcgen::generate_simple_self_signed(vec!["untrusted.test".to_string()])
            .expect("self-signed");
        let untrusted =
            https_server(rogue.cert.der().clone(), rogue.signing_key.serialize_der()).await;
        let resolver = StaticResolver(
            [
                ("api.test".to_string(), vec![web]),
                ("other.test".to_string(), vec![web]),
                ("pass.test".to_string(), vec![web]),
                ("untrusted.test".to_string(), vec![untrusted]),
            ]
            .into_iter()
            .collect(),
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).expect("root");
        let dlp = Scanner::with_builtin(vec![Secret {
            name: "db".into(),
            value: DB_SECRET.into(),
            action: Action::Block,
        }])
        .expect("scanner");
        let gw = Gateway::new(
            store.clone(),
            Arc::new(resolver),
            GatewayConfig {
                allow_upstream: vec!["127.0.0.1/32".parse().expect("net")],
                dlp: Some(Arc::new(dlp)),
                sink: Some(records.clone()),
                internal: Some(Arc::new(Echo)),
                ca: Some(hutch_ca.clone()),
                upstream_roots: Some(Arc::new(roots)),
                ..GatewayConfig::default()
            },
        );
        for (port, kind) in [
            (80, Listener::Http { port: 80 }),
            (443, Listener::Tls { port: 443 }),
            (3128, Listener::Proxy),
        ] {
            let l = TcpListener::bind((gw_ip, port))
                .await
                .expect("bind gateway");
            tokio::spawn(gw.clone().serve(l, kind));
        }
        let udp = tokio::net::UdpSocket::bind((gw_ip, 53))
            .await
            .expect("bind dns");
        tokio::spawn(
            DnsFilter::new(store.clone())
                .with_sink(records.clone())
                .serve(udp),
        );
    });

    let hutch_roots = client_config(&[hutch_ca.cert_der().clone()]);
    let both_roots = client_config(&[hutch_ca.cert_der().clone(), pki.ca_der.clone()]);
    let dns = SocketAddr::from((gw_ip, 53));
    let proxy = SocketAddr::from((gw_ip, 3128));
    let auth = format!("Authorization: Bearer {PLACEHOLDER}\r\n");
    sb.inside(|| {
        // HTTPS via DNS → :443, intercepted (the client trusts only the Hutch CA); the
        // credential is injected in place of the placeholder.
        let ips = dns_a(dns, "api.test.");
        assert_eq!(ips, vec![gw_ip]);
        let https = |sni: &str, req: &str| {
            https_over(
                connect_retrying(SocketAddr::from((ips[0], 443))),
                &hutch_roots,
                sni,
                req,
            )
        };
        let a = https("api.test", &get("api.test", "/v1/models?x=1", &auth)).expect("https");
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.body,
            format!("upstream saw GET /v1/models?x=1 host=api.test auth=Bearer {REAL} body=0")
        );

        // Through CONNECT on the proxy port too.
        let a = https_over(
            tunnel(proxy, "api.test:443"),
            &hutch_roots,
            "api.test",
            &post("api.test", "/v1/chat", "{\"q\":1}"),
        )
        .expect("https via connect");
        // Injected even where the sandbox sent no header at all.
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.body,
            format!("upstream saw POST /v1/chat host=api.test auth=Bearer {REAL} body=7")
        );

        // Refusals, each a 403 with its reason.
        let refused = |a: Answer, why: &str| {
            assert_eq!(a.status, 403, "{a:?}");
            let r = block_reason(&a.head);
            assert!(r.contains(why), "{why:?} not in {r:?}");
            assert!(
                !a.head.contains(REAL)
                    && !a.head.contains(PLACEHOLDER)
                    && !a.head.contains(DB_SECRET)
            );
        };
        refused(
            https("api.test", &get("other.test", "/v1/x", "")).expect("https"),
            "does not match the TLS server name",
        );
        refused(
            https(
                "api.test",
                &post("api.test", "/v1/x", &format!("pw={DB_SECRET}")),
            )
            .expect("https"),
            "the body carries a secret (DLP rule secret:db)",
        );
        refused(
            https(
                "api.test",
                "DELETE /v1/x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
            )
            .expect("https"),
            "method DELETE not allowed by rule api",
        );
        refused(
            https("api.test", &get("api.test", "/admin", "")).expect("https"),
            "path not allowed by rule api",
        );
        // The placeholder to another allowed host, the real value in a body, the placeholder
        // outside the injected header: exfiltration.
        refused(
            https("other.test", &get("other.test", "/", &auth)).expect("https"),
            "header authorization carries the secret openai",
        );
        refused(
            https("api.test", &post("api.test", "/v1/x", &format!("k={REAL}"))).expect("https"),
            "the body carries the secret openai",
        );
        refused(
            https(
                "api.test",
                &get("api.test", &format!("/v1/x?k={PLACEHOLDER}"), ""),
            )
            .expect("https"),
            "the URL carries the secret openai",
        );
        // Not under the injection's path prefix: the placeholder is not replaced, so refused.
        refused(
            https("api.test", &get("api.test", "/v2/x", &auth)).expect("https"),
            "path not allowed by rule api",
        );
        // Dot segments out of the rule's (and the injection's) prefix: refused.
        refused(
            https("api.test", &get("api.test", "/v1/%2e%2e/admin", &auth)).expect("https"),
            "ambiguous path (dot segments or encoded slashes) not allowed by rule api",
        );
        // TRACE would echo the injected credential back: refused even where the rule
        // allows any method.
        refused(
            https(
                "other.test",
                "TRACE / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
            )
            .expect("https"),
            "method TRACE is refused",
        );
        // Plain HTTP to a host with an injected credential: refused, never injected in
        // clear text (the sandbox asked for api.test on :80, DNS pointed it at the gateway).
        let mut s = connect_retrying(SocketAddr::from((gw_ip, 80)));
        s.write_all(get("api.test", "/v1/models", &auth).as_bytes())
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        assert!(
            block_reason(&out).contains("the credential for openai is only sent over HTTPS"),
            "{out}"
        );
        assert!(!out.contains(REAL), "{out}");

        // Upstream certificate not trusted: 502 with the reason.
        let a = https("untrusted.test", &get("untrusted.test", "/", "")).expect("https");
        assert_eq!(a.status, 502, "{a:?}");
        assert!(block_reason(&a.head).contains("certificate"), "{a:?}");

        // Passthrough: spliced, the client sees the upstream's own certificate.
        let a = https_over(
            connect_retrying(SocketAddr::from((gw_ip, 443))),
            &both_roots,
            "pass.test",
            &get("pass.test", "/anything", ""),
        )
        .expect("passthrough");
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(
            a.cert, pki.leaf_der,
            "passthrough must show the upstream's certificate"
        );
        // Intercepted hosts show a Hutch leaf instead.
        let a = https_over(
            connect_retrying(SocketAddr::from((gw_ip, 443))),
            &both_roots,
            "other.test",
            &get("other.test", "/", ""),
        )
        .expect("intercepted");
        assert_ne!(a.cert, pki.leaf_der);

        // A host with an injected credential is never passed through (its placeholder could
        // leave unread): pass.test is intercepted once it gets one.
        store
            .set_injections(
                ID,
                vec![Injection {
                    secret: "pass-token".into(),
                    domain: "pass.test".into(),
                    path_prefix: None,
                    header: http::header::AUTHORIZATION,
                    value: "Token pass-token-value-123".into(),
                    real: "pass-token-value-123".into(),
                    placeholder: "hutch-placeholder-pass-0002".into(),
                }],
            )
            .expect("injections");
        let a = https_over(
            connect_retrying(SocketAddr::from((gw_ip, 443))),
            &both_roots,
            "pass.test",
            &get("pass.test", "/", ""),
        )
        .expect("intercepted");
        assert_ne!(
            a.cert, pki.leaf_der,
            "a host with an injection must be intercepted"
        );
        assert_eq!(
            a.body,
            "upstream saw GET / host=pass.test auth=Token pass-token-value-123 body=0"
        );

        // TLS to hutch.internal is refused; plain HTTP to it is served, and DNS answers it.
        assert!(https("hutch.internal", &get("hutch.internal", "/", "")).is_err());
        assert_eq!(dns_a(dns, "hutch.internal."), vec![gw_ip]);
        let mut s = connect_retrying(SocketAddr::from((gw_ip, 80)));
        s.write_all(get("hutch.internal", "/v1/whoami", "").as_bytes())
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(
            out.ends_with(&format!("internal: sandbox={ID} GET /v1/whoami body=")),
            "{out}"
        );
    });

    // Records: intercepted requests as https with status and rule, refusals with 403 and
    // reason, passthrough as tls with byte counts; no record holds a secret or placeholder.
    let recs = rt.block_on(async {
        records
            .wait(|r| r.kind == EgressKind::Tls && r.host == "pass.test")
            .await;
        records.all()
    });
    let find = |f: &dyn Fn(&EgressRecord) -> bool| {
        recs.iter()
            .find(|r| f(r))
            .unwrap_or_else(|| panic!("no such record in {recs:#?}"))
    };
    let r = find(&|r| r.path.as_deref() == Some("/v1/models"));
    assert_eq!(
        (
            r.kind,
            r.method.as_deref(),
            r.host.as_str(),
            r.port,
            r.status,
            r.allowed,
            r.rule.as_deref()
        ),
        (
            EgressKind::Https,
            Some("GET"),
            "api.test",
            443,
            Some(200),
            true,
            Some("api")
        )
    );
    assert_eq!(r.sandbox, ID);
    assert!(r.bytes_received > 0);
    let r = find(&|r| r.method.as_deref() == Some("DELETE"));
    assert_eq!(
        (r.kind, r.allowed, r.status),
        (EgressKind::Https, false, Some(403))
    );
    assert!(
        r.reason
            .as_deref()
            .is_some_and(|x| x.contains("method DELETE"))
    );
    let r = find(&|r| r.kind == EgressKind::Tls && r.host == "pass.test");
    assert!(
        r.allowed && r.bytes_sent > 0 && r.bytes_received > 0,
        "{r:?}"
    );
    find(&|r| r.kind == EgressKind::Dns && r.host == "api.test" && r.allowed);
    let r = find(&|r| r.host == "untrusted.test");
    assert_eq!(r.status, Some(502));
    for r in &recs {
        let text = format!("{r:?}");
        assert!(
            !text.contains(REAL) && !text.contains(PLACEHOLDER) && !text.contains(DB_SECRET),
            "a record holds a secret: {text}"
        );
    }

    rt.shutdown_timeout(Duration::from_secs(1));
    mgr.teardown_sandbox(ID).expect("teardown");
    if mgr.firewall_active() {
        hutch_net::netns::firewall::remove(POOL.parse().expect("pool")).expect("remove filter");
    }
}

#[test]
fn ca_files_modes_reload_and_wrong_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = [9u8; 32];
    let first = Ca::load_or_create(dir.path(), &key).expect("create");
    let mode = |f: &str| {
        std::fs::metadata(dir.path().join(f))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(ca::KEY_FILE), 0o600);
    assert_eq!(mode(ca::CERT_FILE), 0o644);
    let key_file = std::fs::read(dir.path().join(ca::KEY_FILE)).expect("read");
    assert!(
        !key_file.windows(10).any(|w| w == b"PRIVATE KE"),
        "the key is stored encrypted"
    );
    let again = Ca::load_or_create(dir.path(), &key).expect("reload");
    assert_eq!(again.cert_pem(), first.cert_pem());
    assert!(first.cert_pem().contains("BEGIN CERTIFICATE"));
    let err = Ca::load_or_create(dir.path(), &[10u8; 32]).expect_err("wrong key must fail");
    assert!(err.to_string().contains("does not decrypt"), "{err}");
    // Nothing was replaced by the failed load.
    assert_eq!(
        std::fs::read(dir.path().join(ca::KEY_FILE)).expect("read"),
        key_file
    );
    // A leaf for a host chains to the CA: a client trusting only the CA accepts it.
    let t = std::time::Instant::now();
    let n = 200;
    for i in 0..n {
        first.mint(&format!("h{i}.example")).expect("mint");
    }
    println!(
        "leaf mint: {:.0} µs each",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}
