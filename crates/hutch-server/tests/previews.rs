//! Preview URLs and port forwarding against real sandboxes (needs root and cgroups). Small
//! Python stdlib servers run inside the sandboxes: an HTTP server (files, a header echo, a body
//! hash) and a WebSocket echo server. Like `sandboxes.rs`, this test binary doubles as the
//! sandboxes' guest (`<exe> guest --listen-fd …`), hence its own `main`.

mod common;
#[path = "common/runner.rs"]
mod runner;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{TestServer, assert_error, eventually, json_of};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn main() {
    let all: &[(&str, runner::TestFn)] = runner::tests![
        preview_http_access_and_forwarding,
        preview_websocket_and_custom_domain,
        preview_errors_for_missing_and_stopped_sandboxes,
        preview_settings_survive_a_restart,
        port_connect_over_websocket,
    ];
    runner::main(all);
}

/// The servers run in the sandboxes: `app.py http PORT` (files from /tmp/www, `GET /headers`
/// echoes the request headers, `POST` answers the body's length and SHA-256, plain or chunked)
/// and `app.py ws PORT` (a WebSocket echo that reports the preview-token header it saw).
const APP: &str = r#"
import base64, hashlib, http.server, json, socket, sys, threading

mode, port = sys.argv[1], int(sys.argv[2])

class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def __init__(self, *a, **k):
        super().__init__(*a, directory="/tmp/www", **k)
    def log_message(self, *a):
        pass
    def reply(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "app=1; Path=/")
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/headers"):
            seen = {}
            for k, v in self.headers.items():
                seen.setdefault(k.lower(), []).append(v)
            self.reply({"path": self.path, "headers": seen})
        else:
            super().do_GET()
    def do_POST(self):
        h, n = hashlib.sha256(), 0
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        def take(left):
            nonlocal n
            while left > 0:
                b = self.rfile.read(min(left, 65536))
                if not b:
                    raise EOFError
                h.update(b); n += len(b); left -= len(b)
        if chunked:
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                take(size)
                self.rfile.readline()
        else:
            take(int(self.headers.get("Content-Length", "0")))
        self.reply({"len": n, "sha256": h.hexdigest(), "chunked": chunked, "path": self.path})

def ws(c):
    f = c.makefile("rb")
    f.readline()
    hdrs = {}
    while True:
        l = f.readline()
        if l in (b"\r\n", b"\n", b""):
            break
        k, v = l.decode().split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    acc = base64.b64encode(hashlib.sha1(
        (hdrs["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    seen = hdrs.get("x-hutch-preview-token", "none")
    c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Accept: %s\r\nX-Seen-Token: %s\r\n\r\n" % (acc, seen)).encode())
    while True:
        hdr = f.read(2)
        if len(hdr) < 2:
            break
        op, ln = hdr[0] & 0x0F, hdr[1] & 0x7F
        if ln == 126:
            ln = int.from_bytes(f.read(2), "big")
        elif ln == 127:
            ln = int.from_bytes(f.read(8), "big")
        mask = f.read(4) if hdr[1] & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(ln)))
        if op == 8:
            c.sendall(b"\x88\x00")
            break
        if op in (1, 2, 9):
            op = 10 if op == 9 else op
            n = len(data)
            head = bytes([0x80 | op])
            if n < 126:
                head += bytes([n])
            elif n < 65536:
                head += bytes([126]) + n.to_bytes(2, "big")
            else:
                head += bytes([127]) + n.to_bytes(8, "big")
            c.sendall(head + data)
    c.close()

if mode == "http":
    http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
else:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=ws, args=(c,), daemon=True).start()
"#;

const INDEX: &str = "hello from the preview\n";

fn guest_exe() -> Option<PathBuf> {
    Some(std::env::current_exe().unwrap())
}

async fn create(s: &TestServer, key: &str) -> String {
    let (st, sb) = s.post("/v1/sandboxes", key, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    sb["id"].as_str().unwrap().to_owned()
}

async fn put_file(s: &TestServer, key: &str, id: &str, path: &str, data: &str) {
    let resp = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path={path}"),
            Some(key),
        )
        .body(data.to_owned())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", json_of(resp).await);
}

/// Writes the app and starts it on `port` in `mode` (`http` or `ws`).
async fn start_app(s: &TestServer, key: &str, id: &str, mode: &str, port: u16) {
    put_file(s, key, id, "/tmp/app.py", APP).await;
    put_file(s, key, id, "/tmp/www/index.html", INDEX).await;
    let (st, p) = s
        .post(
            &format!("/v1/sandboxes/{id}/processes"),
            key,
            json!({ "cmd": ["python3", "/tmp/app.py", mode, port.to_string()] }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
}

/// `GET …/ports/{port}/preview`.
async fn preview_info(s: &TestServer, key: &str, id: &str, port: u16) -> Value {
    let (st, info) = s
        .get(&format!("/v1/sandboxes/{id}/ports/{port}/preview"), key)
        .await;
    assert_eq!(st, StatusCode::OK, "{info}");
    info
}

fn addr_of(s: &TestServer) -> SocketAddr {
    s.url.trim_start_matches("http://").parse().unwrap()
}

/// A client that resolves `host` to the test server and never follows redirects.
fn preview_client(s: &TestServer, host: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(host, addr_of(s))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn host_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    let authority = rest.split('/').next().unwrap();
    authority.split(':').next().unwrap().to_owned()
}

/// Waits until the app answers on the preview (with the token).
async fn wait_ready(client: &reqwest::Client, url: &str, token: &str) {
    eventually(
        "the app in the sandbox",
        Duration::from_secs(20),
        || async {
            let r = client
                .get(format!("{url}index.html"))
                .header("x-hutch-preview-token", token)
                .send()
                .await
                .ok()?;
            (r.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
}

fn sha_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

async fn preview_http_access_and_forwarding() {
    let s = TestServer::start(guest_exe()).await;
    let k = s.admin.clone();
    let id = create(&s, &k).await;
    start_app(&s, &k, &id, "http", 8000).await;

    let info = preview_info(&s, &k, &id, 8000).await;
    let port = addr_of(&s).port();
    let url = format!("http://8000-{id}.preview.localhost:{port}/");
    assert_eq!(info["url"], url.as_str(), "{info}");
    assert_eq!(info["public"], false);
    assert_eq!(info["sandbox_id"], id.as_str());
    let token = info["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hpt_") && token.len() > 40, "{token}");
    // Stable per sandbox: every port shares it.
    assert_eq!(
        preview_info(&s, &k, &id, 3000).await["token"],
        token.as_str()
    );
    let (st, body) = s
        .get(&format!("/v1/sandboxes/{id}/ports/0/preview"), &k)
        .await;
    assert_error(st, &body, 422, "invalid_argument");

    let c = preview_client(&s, &host_of(&url));
    wait_ready(&c, &url, &token).await;

    // No token: 401; a wrong one: 403; both as envelopes.
    let (st, body) = json_of(c.get(&url).send().await.unwrap()).await;
    assert_error(st, &body, 401, "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("preview token"),
        "{body}"
    );
    let (st, body) = json_of(
        c.get(&url)
            .header("x-hutch-preview-token", "hpt_wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 403, "forbidden");
    // An API key is no preview token.
    let (st, body) = json_of(c.get(&url).bearer_auth(&k).send().await.unwrap()).await;
    assert_error(st, &body, 401, "unauthorized");

    // The header.
    let r = c
        .get(format!("{url}index.html"))
        .header("x-hutch-preview-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), INDEX);

    // The query parameter: a cookie for this host and a redirect without the token.
    let r = c
        .get(format!("{url}index.html?a=1&hutch_preview_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers()["location"], "/index.html?a=1");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!("hutch_preview_token={token};")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let r = c
        .get(format!("{url}index.html?a=1&hutch_preview_token=hpt_bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The cookie.
    let r = c
        .get(format!("{url}index.html"))
        .header("cookie", format!("other=1; hutch_preview_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), INDEX);

    // What the app sees: its own host and cookies, never Hutch's tokens or keys.
    let r = c
        .get(format!("{url}headers?x=1"))
        .header("x-hutch-preview-token", &token)
        .header("cookie", format!("a=1; hutch_preview_token={token}; b=2"))
        .header("x-api-key", &k)
        .header("authorization", format!("Bearer {k}"))
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["set-cookie"], "app=1; Path=/");
    let seen: Value = r.json().await.unwrap();
    let text = seen.to_string();
    assert!(!text.contains(&token), "token leaked to the app: {text}");
    assert!(!text.contains(&k), "API key leaked to the app: {text}");
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/headers?x=1");
    assert_eq!(h["host"][0], format!("8000-{id}.preview.localhost:{port}"));
    assert_eq!(h["cookie"][0], "a=1; b=2");
    assert_eq!(h["x-custom"][0], "kept");
    assert!(
        h.get("authorization").is_none() && h.get("x-api-key").is_none(),
        "{h}"
    );

    // Request bodies stream through, with a length or chunked.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let want = sha_hex(&big);
    let r = c
        .post(format!("{url}upload"))
        .header("x-hutch-preview-token", &token)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["len"], big.len());
    assert_eq!(got["sha256"], want.as_str());
    assert_eq!(got["chunked"], false);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .post(format!("{url}upload"))
        .header("x-hutch-preview-token", &token)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["chunked"], true);
    assert_eq!(got["len"], big.len());
    assert_eq!(got["sha256"], want.as_str());

    // A port nobody listens on: 503 naming the port.
    let url_9 = format!("http://8001-{id}.preview.localhost:{port}/");
    let c9 = preview_client(&s, &host_of(&url_9));
    let (st, body) = json_of(
        c9.get(&url_9)
            .header("x-hutch-preview-token", &token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 503, "unavailable");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("8001"),
        "{body}"
    );

    // Public: no token needed; back to token-protected.
    let (st, acc) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/previews"),
            &k,
            Some(json!({ "public": true })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{acc}");
    assert_eq!(acc, json!({ "public": true }));
    let (_, acc) = s.get(&format!("/v1/sandboxes/{id}/previews"), &k).await;
    assert_eq!(acc["public"], true);
    assert_eq!(preview_info(&s, &k, &id, 8000).await["public"], true);
    let r = c.get(format!("{url}index.html")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), INDEX);
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/previews"),
            &k,
            Some(json!({ "public": "yes" })),
        )
        .await;
    assert_error(st, &body, 422, "invalid_argument");
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/previews"),
            &k,
            Some(json!({ "public": false })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = c.get(format!("{url}index.html")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Switching is recorded, without the token.
    let (_, events) = s
        .get(
            &format!("/v1/events?sandbox_id={id}&type=preview.access"),
            &k,
        )
        .await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{events}");
    assert_eq!(items[0]["data"]["public"], false);
    assert_eq!(items[1]["data"]["public"], true);
    let (_, all) = s
        .get(&format!("/v1/events?sandbox_id={id}&limit=500"), &k)
        .await;
    assert!(!all.to_string().contains(&token), "events leak the token");

    // Another team sees nothing.
    let (_, other) = s.team_key("other").await;
    for (m, p) in [
        (
            Method::GET,
            format!("/v1/sandboxes/{id}/ports/8000/preview"),
        ),
        (Method::GET, format!("/v1/sandboxes/{id}/previews")),
    ] {
        let (st, body) = s.call(m, &p, &other, None).await;
        assert_error(st, &body, 404, "not_found");
    }
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/previews"),
            &other,
            Some(json!({ "public": true })),
        )
        .await;
    assert_error(st, &body, 404, "not_found");

    // The API itself is untouched.
    let (st, _) = s.get("/healthz", &k).await;
    assert_eq!(st, StatusCode::OK);

    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}

async fn preview_websocket_and_custom_domain() {
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path().to_path_buf(), guest_exe());
    cfg.preview_domain = "apps.hutch.test".into();
    let s = TestServer::start_with(dir, cfg).await;
    let k = s.admin.clone();
    let id = create(&s, &k).await;
    start_app(&s, &k, &id, "ws", 8765).await;
    let info = preview_info(&s, &k, &id, 8765).await;
    let port = addr_of(&s).port();
    let url = info["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("http://8765-{id}.apps.hutch.test:{port}/"));
    let token = info["token"].as_str().unwrap().to_owned();
    let ws_url = format!("{}echo", url.replace("http://", "ws://"));

    // Without a token the upgrade is refused with the envelope.
    let tcp = tokio::net::TcpStream::connect(addr_of(&s)).await.unwrap();
    match tokio_tungstenite::client_async(ws_url.as_str(), tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        other => panic!("expected 401, got {other:?}"),
    }

    // With the token as a cookie (what a browser sends) from a page of the same sandbox (another
    // port), retrying until the app listens.
    let with_cookie = |origin: &str| {
        let mut req = ws_url.as_str().into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert(
            "cookie",
            format!("hutch_preview_token={token}").parse().unwrap(),
        );
        h.insert("origin", origin.parse().unwrap());
        req
    };
    let own_page = format!("http://3000-{id}.apps.hutch.test:{port}");
    let (mut ws, resp) = eventually(
        "a websocket through the preview",
        Duration::from_secs(20),
        || {
            let req = with_cookie(&own_page);
            let addr = addr_of(&s);
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
                tokio_tungstenite::client_async(req, tcp).await.ok()
            }
        },
    )
    .await;
    // Another sandbox's page cannot ride on the cookie (cross-site WebSocket hijacking).
    let tcp = tokio::net::TcpStream::connect(addr_of(&s)).await.unwrap();
    let foreign = with_cookie(&format!("http://8000-sb-other.apps.hutch.test:{port}"));
    match tokio_tungstenite::client_async(foreign, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert_eq!(resp.status().as_u16(), 101);
    assert_eq!(resp.headers()["x-seen-token"], "none");
    ws.send(Message::Text("hello through the preview".into()))
        .await
        .unwrap();
    let big = vec![7u8; 200_000];
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => got.push(m),
            Ok(Some(Ok(_))) => {}
            other => panic!("websocket ended: {other:?}"),
        }
    }
    assert_eq!(got[0], Message::Text("hello through the preview".into()));
    assert_eq!(got[1], Message::Binary(big.into()));
    let _ = ws.close(None).await;

    // The default domain is not a preview domain on this server.
    let c = preview_client(&s, &format!("8765-{id}.preview.localhost"));
    let (st, body) = json_of(
        c.get(format!("http://8765-{id}.preview.localhost:{port}/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");

    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}

async fn preview_errors_for_missing_and_stopped_sandboxes() {
    let s = TestServer::start(guest_exe()).await;
    let k = s.admin.clone();
    let id = create(&s, &k).await;
    start_app(&s, &k, &id, "http", 8000).await;
    let info = preview_info(&s, &k, &id, 8000).await;
    let url = info["url"].as_str().unwrap().to_owned();
    let token = info["token"].as_str().unwrap().to_owned();
    let port = addr_of(&s).port();
    let c = preview_client(&s, &host_of(&url));
    wait_ready(&c, &url, &token).await;

    // Unknown sandbox; a host under the domain that names no port.
    for host in [
        "8000-sb-doesnotexist.preview.localhost".to_owned(),
        format!("x-{id}.preview.localhost"),
        format!("a.b.8000-{id}.preview.localhost"),
    ] {
        let cx = preview_client(&s, &host);
        let (st, body) = json_of(
            cx.get(format!("http://{host}:{port}/"))
                .header("x-hutch-preview-token", &token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(st, &body, 404, "not_found");
    }

    // Paused: 503 saying so; resumed: served again.
    let (st, _) = s
        .post(&format!("/v1/sandboxes/{id}/pause"), &k, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let get = || {
        c.get(format!("{url}index.html"))
            .header("x-hutch-preview-token", &token)
            .send()
    };
    let (st, body) = json_of(get().await.unwrap()).await;
    assert_error(st, &body, 503, "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("paused"),
        "{body}"
    );
    let (st, body) = s
        .get(&format!("/v1/sandboxes/{id}/ports/8000/connect"), &k)
        .await;
    assert_error(st, &body, 409, "conflict");
    let (st, _) = s
        .post(&format!("/v1/sandboxes/{id}/resume"), &k, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = get().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Deleted: 404, even with the (formerly valid) token.
    let (st, _) = s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = json_of(get().await.unwrap()).await;
    assert_error(st, &body, 404, "not_found");
    let _ = s.stop().await;
}

async fn preview_settings_survive_a_restart() {
    let s = TestServer::start(guest_exe()).await;
    let k = s.admin.clone();
    let id = create(&s, &k).await;
    start_app(&s, &k, &id, "http", 8000).await;
    let token = preview_info(&s, &k, &id, 8000).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/previews"),
            &k,
            Some(json!({ "public": true })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, guest_exe()).await;
    let info = preview_info(&s, &k, &id, 8000).await;
    assert_eq!(info["public"], true);
    assert_eq!(
        info["token"],
        token.as_str(),
        "the token is stable across restarts"
    );
    let url = info["url"].as_str().unwrap().to_owned();
    let c = preview_client(&s, &host_of(&url));
    let r = eventually(
        "the public preview after a restart",
        Duration::from_secs(20),
        || async {
            let r = c.get(format!("{url}index.html")).send().await.ok()?;
            (r.status() == StatusCode::OK).then_some(r)
        },
    )
    .await;
    assert_eq!(r.text().await.unwrap(), INDEX);
    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}

/// `GET …/ports/{port}/connect`: raw TCP over WebSocket, as `hutch port-forward` uses it.
async fn port_connect_over_websocket() {
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
    let s = TestServer::start(guest_exe()).await;
    let k = s.admin.clone();
    let id = create(&s, &k).await;
    start_app(&s, &k, &id, "http", 8000).await;
    let ws_url = format!(
        "{}/v1/sandboxes/{id}/ports/8000/connect",
        s.url.replace("http://", "ws://")
    );
    let with_key = |url: &str, key: &str| {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        req
    };

    // No key: 401.
    match tokio_tungstenite::connect_async(ws_url.as_str()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    // Another team: 404.
    let (_, other) = s.team_key("other").await;
    match tokio_tungstenite::connect_async(with_key(&ws_url, &other)).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    // Nothing listening: 503 with the envelope.
    let closed = ws_url.replace("/8000/", "/8009/");
    match tokio_tungstenite::connect_async(with_key(&closed, &k)).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // Not a WebSocket: 400.
    let (st, body) = s
        .get(&format!("/v1/sandboxes/{id}/ports/8000/connect"), &k)
        .await;
    assert_error(st, &body, 400, "bad_request");

    // A whole HTTP exchange over the tunnel, ended by a half-close from our side.
    let (mut ws, _) = eventually("the port in the sandbox", Duration::from_secs(20), || {
        let req = with_key(&ws_url, &k);
        async move { tokio_tungstenite::connect_async(req).await.ok() }
    })
    .await;
    ws.send(Message::Binary(
        b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec()
            .into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(Vec::new().into())).await.unwrap();
    let mut response = Vec::new();
    let mut saw_eof = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b.is_empty() => saw_eof = true,
            Ok(Some(Ok(Message::Binary(b)))) => response.extend_from_slice(&b),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("websocket failed: {e}"),
            Err(_) => panic!(
                "no end of the exchange: {}",
                String::from_utf8_lossy(&response)
            ),
        }
    }
    let text = String::from_utf8_lossy(&response);
    assert!(saw_eof, "the app's end of stream was not passed on");
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "{text}"
    );
    assert!(text.ends_with(INDEX), "{text}");

    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}
