//! Gateway observation and control hooks (egress records, `hutch.internal`, swapping the DLP
//! scanner) and TLS interception with credential injection.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hutch_net::dlp::{Action, Scanner, Secret};
use hutch_net::dns::DnsFilter;
use hutch_net::gateway::{
    EgressKind, EgressRecord, EgressSink, Gateway, GatewayConfig, InternalFuture, InternalService,
    Listener, StaticResolver,
};
use hutch_net::policy::{Policy, PolicyStore, StaticLookup};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
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
    assert_eq!((status, body.as_str()), (200, "upstream saw POST /up?token=x"));
    let r = records.wait(|r| r.path.as_deref() == Some("/up")).await;
    assert_eq!(
        (r.sandbox.as_str(), r.kind, r.method.as_deref(), r.host.as_str(), r.port),
        ("sb1", EgressKind::Http, Some("POST"), "allowed.test", 80)
    );
    assert_eq!((r.status, r.allowed, r.rule.as_deref()), (Some(200), true, Some("web")));
    assert_eq!((r.bytes_sent, r.bytes_received), (5, body.len() as u64));

    // Denied: recorded with 403 and the reason.
    let (status, _, _) = request(
        http,
        "GET /x HTTP/1.1\r\nHost: denied.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502, "allowed by *, but no such host upstream");
    store
        .set("sb1", policy(r#"{"rules":[{"id":"web","domain":"allowed.test"}]}"#))
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
        r.reason.as_deref().is_some_and(|x| x.contains("denied.test")),
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
    assert_eq!((status, body.as_str()), (200, "internal: sandbox=sb1 GET /p body="));
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
    assert!(head.contains("secret:swapped") && !head.contains(secret), "{head}");
    // Records redact with the scanner of the moment.
    assert!(
        records.all().iter().all(|r| !format!("{r:?}").contains(secret)),
        "a record holds the secret"
    );
    gw.set_dlp(None);
    assert_eq!(request(proxy, &req).await.0, 200);

    // Unknown peers are not recorded.
    let n = records.all().len();
    store.remove("sb1");
    let other = Arc::new(PolicyStore::new(Arc::new(StaticLookup::default())));
    let dns = DnsFilter::new(other).with_sink(records.clone());
    let q = dns_query("allowed.test.");
    assert!(dns.answer(lo, lo, &q).is_some());
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
    assert_eq!(answer("allowed.test.").metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer("other.test.").metadata.response_code, ResponseCode::Refused);
    let recs = records.all();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (recs[0].kind, recs[0].host.as_str(), recs[0].allowed, recs[0].sandbox.as_str()),
        (EgressKind::Dns, "allowed.test", true, "sb1")
    );
    assert_eq!((recs[1].host.as_str(), recs[1].allowed), ("other.test", false));
}
