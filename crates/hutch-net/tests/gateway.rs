//! The gateway against a fake internet on loopback: an HTTP server and a TCP echo server
//! standing in for a TLS server (passthrough only needs bytes to flow). All traffic stays on
//! 127.0.0.1; `private.test` resolves to 127.0.0.2, which the gateway must refuse before
//! connecting (only 127.0.0.1/32 is allowed upstream by this test's configuration).

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hutch_net::dlp::{Action, Scanner, Secret};
use hutch_net::gateway::sni::build_client_hello;
use hutch_net::gateway::{Gateway, GatewayConfig, Listener, StaticResolver};
use hutch_net::policy::{Policy, PolicyStore, StaticLookup};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(5);

/// The fake internet's HTTP server: echoes what it received as the body.
async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let proxy_hdr = req.headers().contains_key("proxy-connection");
                    let line = format!(
                        "upstream saw {} {} host={host} proxy-connection={proxy_hdr}",
                        req.method(),
                        req.uri()
                    );
                    let len = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes().len())
                        .unwrap_or(0);
                    let body = if len > 0 {
                        format!("{line} body={len}")
                    } else {
                        line
                    };
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Stands in for a TLS server: echoes every byte.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

struct World {
    store: Arc<PolicyStore>,
    proxy: SocketAddr,
    http: SocketAddr,
    tls: SocketAddr,
    web: SocketAddr,
}

fn policy(json: &str) -> Policy {
    serde_json::from_str(json).expect("policy")
}

const POLICY: &str = r#"{"rules":[
    {"id":"allowed","domain":"allowed.test"},
    {"id":"echo","domain":"echo.test","ports":[443]},
    {"id":"api","domain":"api.test","methods":["GET"],"paths":["/v1/"]},
    {"id":"private","domain":"private.test"}
]}"#;

async fn world() -> World {
    world_with(None).await
}

async fn world_with(dlp: Option<Arc<Scanner>>) -> World {
    let web = http_server().await;
    let echo = echo_server().await;
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
        [(lo, "sb".to_string())].into_iter().collect(),
    ))));
    store.set("sb", policy(POLICY)).expect("set");
    let resolver = StaticResolver(
        [
            ("allowed.test".to_string(), vec![web]),
            ("api.test".to_string(), vec![web]),
            ("echo.test".to_string(), vec![echo]),
            (
                "private.test".to_string(),
                vec!["127.0.0.2:9".parse().expect("addr")],
            ),
        ]
        .into_iter()
        .collect(),
    );
    let cfg = GatewayConfig {
        allow_upstream: vec!["127.0.0.1/32".parse().expect("net")],
        dlp,
        max_scan_body: 64 * 1024,
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(store.clone(), Arc::new(resolver), cfg);
    let mut addrs = Vec::new();
    for kind in [
        Listener::Proxy,
        Listener::Http { port: 80 },
        Listener::Tls { port: 443 },
    ] {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(l.local_addr().expect("addr"));
        tokio::spawn(gw.clone().serve(l, kind));
    }
    World {
        store,
        proxy: addrs[0],
        http: addrs[1],
        tls: addrs[2],
        web,
    }
}

/// A raw HTTP/1.1 client connection.
struct Conn(TcpStream);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Send a request head; read the response head and (by content-length) body.
    async fn request(&mut self, head: &str) -> (u16, String, String) {
        self.0.write_all(head.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(T, self.0.read(&mut byte))
                .await
                .expect("response in time")
                .expect("read");
            assert!(
                n == 1,
                "connection closed mid-head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        tokio::time::timeout(T, self.0.read_exact(&mut body))
            .await
            .expect("body in time")
            .expect("body");
        (status, head, String::from_utf8_lossy(&body).to_string())
    }
}

async fn get(addr: SocketAddr, head: &str) -> (u16, String, String) {
    Conn::open(addr).await.request(head).await
}

fn reason(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-hutch-block-reason:")
                .then(|| l[21..].trim().to_string())
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn allowed_http_through_proxy_and_transparent() {
    let w = world().await;
    let (status, _, body) =
        get(w.proxy, "GET http://allowed.test/hello?q=1 HTTP/1.1\r\nHost: allowed.test\r\nProxy-Connection: keep-alive\r\n\r\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "upstream saw GET /hello?q=1 host=allowed.test proxy-connection=false"
    );
    let (status, _, body) = get(w.http, "GET /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "upstream saw GET /x host=allowed.test proxy-connection=false"
    );
    // Method and path rules.
    assert_eq!(
        get(
            w.proxy,
            "GET http://api.test/v1/models HTTP/1.1\r\nHost: api.test\r\n\r\n"
        )
        .await
        .0,
        200
    );
    let (status, head, _) = get(
        w.proxy,
        "POST http://api.test/v1/models HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        reason(&head).contains("method POST not allowed by rule api"),
        "{head}"
    );
    let (status, head, _) = get(
        w.proxy,
        "GET http://api.test/admin HTTP/1.1\r\nHost: api.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        reason(&head).contains("path not allowed by rule api"),
        "{head}"
    );
}

#[tokio::test]
async fn blocked_requests_get_403_with_reason() {
    let w = world().await;
    let (status, head, body) = get(
        w.proxy,
        "GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        reason(&head).contains("host evil.test is not in the sandbox's allowlist"),
        "{head}"
    );
    assert!(
        body.contains("Blocked by Hutch's egress policy") && body.contains("hutch approvals"),
        "{body}"
    );
    // Transparent listener: by Host header.
    let (status, head, _) = get(w.http, "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n").await;
    assert_eq!((status, reason(&head).contains("evil.test")), (403, true));
    // URL host and Host header disagree (spoofed Host).
    let (status, head, _) = get(
        w.proxy,
        "GET http://allowed.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        reason(&head).contains("Host header does not match"),
        "{head}"
    );
    // A port the listener does not stand for.
    let (status, _, _) = get(w.http, "GET / HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n").await;
    assert_eq!(status, 403);
    // Allowed name resolving to an address the operator did not allow: refused before connecting.
    let (status, head, _) = get(
        w.proxy,
        "GET http://private.test/ HTTP/1.1\r\nHost: private.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert!(reason(&head).contains("resolves to 127.0.0.2"), "{head}");
    // No Host at all.
    assert_eq!(get(w.http, "GET / HTTP/1.0\r\n\r\n").await.0, 403);
}

#[tokio::test]
async fn ip_literals_need_a_cidr_rule() {
    let w = world().await;
    let req = format!("GET http://{}/ HTTP/1.1\r\nHost: {}\r\n\r\n", w.web, w.web);
    let (status, head, _) = get(w.proxy, &req).await;
    assert_eq!(status, 403);
    assert!(
        reason(&head).contains("IP literal 127.0.0.1 is not allowed"),
        "{head}"
    );
    // IP literal in the URL, allowed name in Host: still refused.
    let req = format!(
        "GET http://{}/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        w.web
    );
    assert_eq!(get(w.proxy, &req).await.0, 403);
    // Disguised literal.
    assert_eq!(
        get(
            w.proxy,
            "GET http://2130706433/ HTTP/1.1\r\nHost: 2130706433\r\n\r\n"
        )
        .await
        .0,
        403
    );
    // An explicit CIDR rule allows it.
    let json = format!(
        r#"{{"rules":[{{"id":"lo","cidr":"127.0.0.1/32","ports":[{}]}}]}}"#,
        w.web.port()
    );
    w.store.set("sb", policy(&json)).expect("set");
    let req = format!(
        "GET http://{}/ok HTTP/1.1\r\nHost: {}\r\n\r\n",
        w.web, w.web
    );
    let (status, _, body) = get(w.proxy, &req).await;
    assert_eq!(status, 200, "{body}");
}

async fn connect_tunnel(proxy: SocketAddr, target: &str) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(T, s.read(&mut byte))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(n, 1);
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    if status != 200 {
        // Read the body so the reason can be checked.
        let mut rest = vec![0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut rest)).await;
    }
    (status, head, s)
}

/// Send `data` and read until `data.len()` bytes come back or the peer closes.
async fn exchange(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < data.len() {
        match tokio::time::timeout(T, s.read(&mut buf))
            .await
            .expect("in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[tokio::test]
async fn connect_checks_target_and_sni() {
    let w = world().await;
    // Allowed: CONNECT host = SNI; bytes flow both ways (the echo server plays TLS server).
    let (status, _, mut s) = connect_tunnel(w.proxy, "echo.test:443").await;
    assert_eq!(status, 200);
    let mut data = build_client_hello(Some("echo.test"), false, 16384);
    data.extend_from_slice(b"application data");
    assert_eq!(exchange(&mut s, &data).await, data);

    // SNI != CONNECT host: the tunnel is closed, nothing reaches upstream.
    let (status, _, mut s) = connect_tunnel(w.proxy, "echo.test:443").await;
    assert_eq!(status, 200);
    let data = build_client_hello(Some("evil.test"), false, 16384);
    assert!(exchange(&mut s, &data).await.is_empty());

    // Plain text inside a CONNECT tunnel to a name: refused.
    let (_, _, mut s) = connect_tunnel(w.proxy, "echo.test:443").await;
    assert!(
        exchange(&mut s, b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")
            .await
            .is_empty()
    );

    // Target not allowed, or port not allowed: 403 before any tunnel.
    let (status, head, _) = connect_tunnel(w.proxy, "evil.test:443").await;
    assert_eq!(status, 403);
    assert!(reason(&head).contains("evil.test"), "{head}");
    assert_eq!(connect_tunnel(w.proxy, "echo.test:22").await.0, 403);
    assert_eq!(connect_tunnel(w.proxy, "127.0.0.1:443").await.0, 403);
    // CONNECT on the transparent listener is refused.
    assert_eq!(connect_tunnel(w.http, "echo.test:443").await.0, 403);
}

#[tokio::test]
async fn transparent_tls_routes_by_sni() {
    let w = world().await;
    let mut s = TcpStream::connect(w.tls).await.expect("connect");
    let mut data = build_client_hello(Some("echo.test"), false, 200);
    data.extend_from_slice(b"more");
    assert_eq!(exchange(&mut s, &data).await, data);

    for hello in [
        build_client_hello(Some("evil.test"), false, 16384),
        build_client_hello(None, false, 16384),
        build_client_hello(Some("echo.test"), true, 16384),
        build_client_hello(Some("127.0.0.1"), false, 16384),
    ] {
        let mut s = TcpStream::connect(w.tls).await.expect("connect");
        let got = exchange(&mut s, &hello).await;
        assert_eq!(
            got,
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31],
            "expected an access_denied alert"
        );
    }
}

#[tokio::test]
async fn policy_updates_apply_to_the_next_request_on_an_open_connection() {
    let w = world().await;
    let mut c = Conn::open(w.proxy).await;
    let req = "GET http://allowed.test/1 HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
    assert_eq!(c.request(req).await.0, 200);
    let t = std::time::Instant::now();
    w.store
        .set("sb", policy(r#"{"rules":[{"domain":"other.test"}]}"#))
        .expect("set");
    let (status, head, _) = c.request(req).await;
    assert_eq!(status, 403, "{head}");
    assert!(t.elapsed() < Duration::from_millis(100));
    // And back: the same connection works again.
    w.store.set("sb", policy(POLICY)).expect("set");
    assert_eq!(c.request(req).await.0, 200);
    // A keep-alive connection cannot switch to another host either.
    assert_eq!(
        c.request("GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n")
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn sandbox_without_policy_is_denied() {
    let w = world().await;
    w.store.remove("sb");
    // Known peer without a policy: everything denied.
    assert_eq!(
        get(
            w.proxy,
            "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn dlp_blocks_secrets_in_plain_http() {
    use base64::Engine as _;
    let secret = "hutch-gw-test-Secret-9f8e7d";
    let scanner = Scanner::with_builtin(vec![Secret {
        name: "api".into(),
        value: secret.into(),
        action: Action::Block,
    }])
    .expect("scanner");
    let w = world_with(Some(Arc::new(scanner))).await;
    let post = |body: String, extra: &str| {
        format!(
            "POST http://allowed.test/upload HTTP/1.1\r\nHost: allowed.test\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Clean requests pass, bodies included.
    let (status, _, body) = get(w.proxy, &post("{\"hello\":\"world\"}".into(), "")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "upstream saw POST /upload host=allowed.test proxy-connection=false body=17"
        )
    );
    let token = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user:{secret}"));
    let cases = [
        (
            format!(
                "GET http://allowed.test/x?key={secret} HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
            ),
            "the URL",
            "secret:api",
        ),
        (
            format!("GET http://allowed.test/{token} HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
            "the URL",
            "github-pat",
        ),
        (
            format!(
                "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nX-Anything: {secret}\r\n\r\n"
            ),
            "header x-anything",
            "secret:api",
        ),
        (
            format!(
                "GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\nAuthorization: Basic {b64}\r\n\r\n"
            ),
            "header authorization",
            "secret:api",
        ),
        (
            post(format!("{{\"k\":\"{secret}\"}}"), ""),
            "the body",
            "secret:api",
        ),
        (
            post(format!("a=1&k={}", secret.replace('-', "%2D")), ""),
            "the body",
            "secret:api",
        ),
        (
            post(
                format!("--b\r\nContent-Disposition: form-data; name=f\r\n\r\n{token}\r\n--b--"),
                "",
            ),
            "the body",
            "github-pat",
        ),
    ];
    for (req, place, rule) in cases {
        let (status, head, _) = get(w.proxy, &req).await;
        assert_eq!(status, 403, "{req}");
        let r = reason(&head);
        assert!(r.contains(place) && r.contains(rule), "{req}: {r}");
        assert!(
            !head.contains(secret) && !head.contains(&token),
            "the 403 must not echo the secret"
        );
    }
    // Fail closed: compressed or oversized bodies.
    let (status, head, _) = get(w.proxy, &post("xxxx".into(), "Content-Encoding: gzip\r\n")).await;
    assert_eq!(status, 403);
    assert!(reason(&head).contains("compressed"), "{head}");
    let (status, head, _) = get(w.proxy, &post("y".repeat(100_000), "")).await;
    assert_eq!(status, 403);
    assert!(reason(&head).contains("over 65536 bytes"), "{head}");
}

#[tokio::test]
async fn plain_http_never_carries_injected_credentials() {
    use hutch_net::policy::Injection;
    let w = world().await;
    let real = "plain-real-Secret-31337";
    let placeholder = "hutch-placeholder-plain-0001";
    w.store
        .set_injections(
            "sb",
            vec![Injection {
                secret: "plain-token".into(),
                domain: "allowed.test".into(),
                path_prefix: Some("/v1/".into()),
                header: http::header::AUTHORIZATION,
                value: format!("Bearer {real}"),
                real: real.into(),
                placeholder: placeholder.into(),
            }],
        )
        .expect("injections");
    // Through the proxy and the transparent listener, with or without the placeholder: the
    // request the credential would be injected into is refused, nothing goes upstream.
    for (addr, req) in [
        (
            w.proxy,
            format!(
                "GET http://allowed.test/v1/x HTTP/1.1\r\nHost: allowed.test\r\nAuthorization: Bearer {placeholder}\r\n\r\n"
            ),
        ),
        (
            w.proxy,
            "GET http://allowed.test/v1/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n".to_string(),
        ),
        (
            w.http,
            format!(
                "POST /v1/chat HTTP/1.1\r\nHost: allowed.test\r\nAuthorization: Bearer {placeholder}\r\nContent-Length: 2\r\n\r\nhi"
            ),
        ),
    ] {
        let (status, head, body) = get(addr, &req).await;
        assert_eq!(status, 403, "{req}: {head}{body}");
        assert!(
            reason(&head).contains(
                "the credential for plain-token is only sent over HTTPS (never injected over plain HTTP)"
            ),
            "{head}"
        );
        assert!(!head.contains(real) && !body.contains(real), "{head}{body}");
        assert!(!body.starts_with("upstream saw"), "{body}");
    }
    // Outside the injection's path prefix nothing is injected: plain HTTP as usual.
    let (status, _, body) = get(
        w.proxy,
        "GET http://allowed.test/other HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn trace_and_track_are_refused() {
    let w = world().await;
    for (addr, req) in [
        (
            w.proxy,
            "TRACE http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        ),
        (
            w.proxy,
            "TRACK http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        ),
        (w.http, "TRACE /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
        (w.http, "trace /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
        (w.http, "TRACE / HTTP/1.1\r\nHost: hutch.internal\r\n\r\n"),
    ] {
        let (status, head, body) = get(addr, req).await;
        assert_eq!(status, 403, "{req}: {body}");
        assert!(
            reason(&head).contains("echoes the request"),
            "{req}: {head}"
        );
    }
    // Other methods still go through.
    let (status, _, body) = get(w.http, "OPTIONS /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n").await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "upstream saw OPTIONS /x host=allowed.test proxy-connection=false"
        )
    );
}

#[tokio::test]
async fn path_rules_refuse_dot_segments_and_encoded_slashes() {
    let w = world().await;
    // Rule `api` allows GET under /v1/ only; upstream would normalise each of these to /admin.
    for path in [
        "/v1/../admin",
        "/v1/%2e%2e/admin",
        "/v1/%2E%2E/admin",
        "/v1/.%2e/admin",
        "/v1/..%2fadmin",
        "/v1/..%2Fadmin",
        "/v1/..\\admin",
        "/v1/./../admin",
    ] {
        for (addr, req) in [
            (
                w.proxy,
                format!("GET http://api.test{path} HTTP/1.1\r\nHost: api.test\r\n\r\n"),
            ),
            (
                w.http,
                format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n"),
            ),
        ] {
            let (status, head, body) = get(addr, &req).await;
            assert_eq!(status, 403, "{req}: {body}");
            assert!(
                reason(&head).contains(
                    "ambiguous path (dot segments or encoded slashes) not allowed by rule api"
                ),
                "{req}: {head}"
            );
        }
    }
    assert_eq!(
        get(w.http, "GET /v1/models HTTP/1.1\r\nHost: api.test\r\n\r\n")
            .await
            .0,
        200
    );
}

/// A name resolving to one of the host's own (public-looking) addresses must not lead the
/// gateway to the host's services. The "host" is a network namespace this test makes, so the
/// gateway reads that namespace's interfaces: 192.88.99.7 and 2001:2::7 (neither in
/// `is_special`'s ranges) exist only there, on its loopback.
#[test]
fn upstream_on_the_host_itself_is_refused() {
    let ns = common::FakeSandbox::start("nettest-selfaddr");
    ns.run(&["ip", "link", "set", "lo", "up"]);
    ns.run(&["ip", "addr", "add", "192.88.99.7/32", "dev", "lo"]);
    ns.run(&["sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0"]);
    ns.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:2::7/128",
        "dev",
        "lo",
        "nodad",
    ]);
    ns.inside(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut servers = Vec::new();
            for ip in ["192.88.99.7", "2001:2::7"] {
                let l = TcpListener::bind((ip.parse::<IpAddr>().expect("ip"), 0))
                    .await
                    .expect("bind on the namespace's own address");
                let addr = l.local_addr().expect("addr");
                tokio::spawn(async move {
                    while let Ok((mut s, _)) = l.accept().await {
                        // Read the request head before answering (closing on unread bytes
                        // would reset the connection under the answer).
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n")
                            && matches!(s.read(&mut byte).await, Ok(1))
                        {
                            head.push(byte[0]);
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhost svc\n")
                            .await;
                    }
                });
                servers.push(addr);
            }
            let mapped: SocketAddr = format!("[::ffff:192.88.99.7]:{}", servers[0].port())
                .parse()
                .expect("mapped");
            let lo: IpAddr = "127.0.0.1".parse().expect("ip");
            let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
                [(lo, "sb".to_string())].into_iter().collect(),
            ))));
            store
                .set("sb", policy(r#"{"rules":[{"domain":"*.test"}]}"#))
                .expect("set");
            let resolver = Arc::new(StaticResolver(
                [
                    ("self4.test".to_string(), vec![servers[0]]),
                    ("self6.test".to_string(), vec![servers[1]]),
                    ("mapped.test".to_string(), vec![mapped]),
                ]
                .into_iter()
                .collect(),
            ));
            let proxy = |allow: Vec<ipnet::IpNet>| {
                let gw = Gateway::new(
                    store.clone(),
                    resolver.clone(),
                    GatewayConfig {
                        allow_upstream: allow,
                        ..GatewayConfig::default()
                    },
                );
                async move {
                    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    let addr = l.local_addr().expect("addr");
                    tokio::spawn(gw.serve(l, Listener::Proxy));
                    addr
                }
            };
            let ask = |proxy: SocketAddr, host: &'static str| async move {
                get(
                    proxy,
                    &format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                )
                .await
            };
            let strict = proxy(Vec::new()).await;
            for (host, ip) in [
                ("self4.test", "192.88.99.7"),
                ("self6.test", "2001:2::7"),
                ("mapped.test", "::ffff:192.88.99.7"),
            ] {
                let (status, head, body) = ask(strict, host).await;
                assert_eq!(status, 403, "{host}: {body}");
                assert!(
                    reason(&head)
                        .contains(&format!("resolves to {ip}, an address of the host itself")),
                    "{host}: {head}"
                );
            }
            // The operator may allow them explicitly.
            let open = proxy(vec![
                "192.88.99.7/32".parse().expect("net"),
                "2001:2::7/128".parse().expect("net"),
            ])
            .await;
            for host in ["self4.test", "self6.test"] {
                let (status, _, body) = ask(open, host).await;
                assert_eq!((status, body.as_str()), (200, "host svc\n"), "{host}");
            }
        });
    });
}

#[tokio::test]
async fn connections_per_listener_are_capped() {
    let web = http_server().await;
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
        [(lo, "sb".to_string())].into_iter().collect(),
    ))));
    store.set("sb", policy(POLICY)).expect("set");
    let resolver = StaticResolver(
        [("allowed.test".to_string(), vec![web])]
            .into_iter()
            .collect(),
    );
    let cfg = GatewayConfig {
        allow_upstream: vec!["127.0.0.1/32".parse().expect("net")],
        max_connections: 2,
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(store, Arc::new(resolver), cfg);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(gw.serve(l, Listener::Http { port: 80 }));
    // Two idle connections take both slots.
    let idle1 = TcpStream::connect(addr).await.expect("connect");
    let idle2 = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third is queued by the kernel but not served while they stay open...
    let mut third = TcpStream::connect(addr).await.expect("connect");
    third
        .write_all(b"GET /x HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap");
    // ...and is served as soon as one of them closes.
    drop(idle1);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served after a slot freed")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(idle2);
}
