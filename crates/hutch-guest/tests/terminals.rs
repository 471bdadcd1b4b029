//! Terminals (real PTYs) against a real guest on a Unix socket.

mod common;

use std::time::{Duration, Instant};

use common::{Guest, TOKEN, code};
use futures::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Wait until a child of `ppid` runs `comm` (a real readiness signal for "the shell started it").
async fn wait_child(ppid: i64, comm: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = &stat[open + 1..close];
            let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
            if name == comm && rest.get(1).and_then(|p| p.parse::<i64>().ok()) == Some(ppid) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{comm} never started under {ppid}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_dead(g: &Guest, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, info) = g.get(&format!("/terminals/{name}")).await;
        if info["alive"] == false {
            return;
        }
        assert!(Instant::now() < deadline, "terminal {name} never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shell_echo_redraw_and_ctrl_c() {
    let g = Guest::start().await;
    let (st, info) = g
        .post(
            "/terminals",
            json!({"name": "main", "cols": 80, "rows": 24}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{info}");
    assert_eq!(info["alive"], true);
    assert_eq!(info["cols"], 80);
    assert!(info["cmd"][0].as_str().unwrap().ends_with("sh"), "{info}");
    let pid = info["pid"].as_i64().unwrap();

    let (st, _) = g
        .post(
            "/terminals/main/input",
            json!({"text": "echo hel''lo", "keys": ["Enter"]}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    g.wait_screen("main", |t| t.contains("hello")).await;

    // A full-screen redraw replaces the old content.
    let (st, _) = g
        .post(
            "/terminals/main/input",
            json!({"text": "printf '\\033[2J\\033[HRE''DRAWN\\n'", "keys": ["Enter"]}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let v = g
        .wait_screen("main", |t| t.lines().next() == Some("REDRAWN"))
        .await;
    assert!(!v["text"].as_str().unwrap().lines().any(|l| l == "hello"));

    // C-c interrupts a foreground sleep.
    g.post(
        "/terminals/main/input",
        json!({"text": "sleep 100", "keys": ["Enter"]}),
    )
    .await;
    wait_child(pid, "sleep").await;
    let (st, _) = g
        .post("/terminals/main/input", json!({"keys": ["C-c"]}))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    g.post(
        "/terminals/main/input",
        json!({"text": "echo after-$((40+2))", "keys": ["Enter"]}),
    )
    .await;
    g.wait_screen("main", |t| t.contains("after-42")).await;

    let (st, v) = g
        .post(
            "/terminals/main/input",
            json!({"keys": ["Enter", "Hyperspace"]}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Hyperspace")
    );

    let (_, list) = g.get("/terminals").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let (st, _) = g.json(Method::DELETE, "/terminals/main", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = g.get("/terminals/main").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
    let (st, _) = g.json(Method::DELETE, "/terminals/main", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn exited_terminal_keeps_screen_and_rejects_input() {
    let g = Guest::start().await;
    let (st, _) = g
        .post(
            "/terminals",
            json!({"name": "short", "cmd": ["sh", "-c", "echo bye; exit 3"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    wait_dead(&g, "short").await;
    let (_, info) = g.get("/terminals/short").await;
    assert_eq!(info["exit_code"], 3);
    let v = g.wait_screen("short", |t| t.contains("bye")).await;
    assert_eq!(v["alive"], false);
    let (st, v) = g.post("/terminals/short/input", json!({"text": "x"})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "conflict");
}

#[tokio::test]
async fn create_errors() {
    let g = Guest::start().await;
    let (st, _) = g
        .post(
            "/terminals",
            json!({"name": "dup", "cmd": ["sleep", "100"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = g
        .post(
            "/terminals",
            json!({"name": "dup", "cmd": ["sleep", "100"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(code(&v), "already_exists");
    let (st, v) = g.post("/terminals", json!({"name": "bad name!"})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["details"]["field"], "name");
    let (st, v) = g
        .post("/terminals", json!({"cmd": ["no-such-shell-xyz"]}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["details"]["field"], "cmd");
    let (st, _) = g.post("/terminals", json!({"cols": 0})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = g.post("/terminals/nope/input", json!({"text": "x"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = g.get("/terminals/nope/screen").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Generated names.
    let (st, info) = g.post("/terminals", json!({"cmd": ["sleep", "100"]})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(info["name"].as_str().unwrap().starts_with("t-"));
    for t in ["dup", info["name"].as_str().unwrap()] {
        let (st, _) = g
            .json(Method::DELETE, &format!("/terminals/{t}"), None)
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn resize_and_scrollback() {
    let g = Guest::start().await;
    let (_, info) = g
        .post(
            "/terminals",
            json!({"name": "rs", "cmd": ["/bin/sh"], "cols": 60, "rows": 10}),
        )
        .await;
    assert_eq!(info["rows"], 10);
    let (st, info) = g
        .post("/terminals/rs/resize", json!({"cols": 100, "rows": 30}))
        .await;
    assert_eq!(st, StatusCode::OK, "{info}");
    assert_eq!(info["cols"], 100);
    g.post(
        "/terminals/rs/input",
        json!({"text": "stty size", "keys": ["Enter"]}),
    )
    .await;
    let v = g
        .wait_screen("rs", |t| t.lines().any(|l| l.ends_with("30 100")))
        .await;
    assert_eq!(v["cols"], 100);
    assert_eq!(v["rows"], 30);
    let (st, v) = g
        .post("/terminals/rs/resize", json!({"cols": 0, "rows": 30}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, _) = g
        .post("/terminals/rs/resize", json!({"cols": 80, "rows": 1001}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    g.post("/terminals/rs/resize", json!({"cols": 40, "rows": 5}))
        .await;
    g.post(
        "/terminals/rs/input",
        json!({"text": "seq 1 100; echo END-$((1+1))", "keys": ["Enter"]}),
    )
    .await;
    g.wait_screen("rs", |t| t.contains("END-2")).await;
    let (_, v) = g.get("/terminals/rs/screen?scrollback=1000").await;
    let sb: Vec<&str> = v["scrollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let pos1 = sb
        .iter()
        .position(|l| *l == "1")
        .unwrap_or_else(|| panic!("line 1 not in scrollback: {v}"));
    assert_eq!(sb[pos1 + 49], "50", "{sb:?}");
    let (_, v) = g.get("/terminals/rs/screen?scrollback=3").await;
    assert_eq!(v["scrollback"].as_array().unwrap().len(), 3);
    g.json(Method::DELETE, "/terminals/rs", None).await;
}

async fn ws_connect(
    g: &Guest,
    name: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::UnixStream> {
    let stream = tokio::net::UnixStream::connect(&g.socket).await.unwrap();
    let mut req = format!("ws://guest/terminals/{name}/attach")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-hutch-token", TOKEN.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// Read binary frames until the accumulated output contains `needle`.
async fn read_until(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>,
    needle: &str,
) -> String {
    let mut acc = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if String::from_utf8_lossy(&acc).contains(needle) {
            return String::from_utf8_lossy(&acc).into_owned();
        }
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "never saw {needle:?} in {:?}",
                    String::from_utf8_lossy(&acc)
                )
            })
            .expect("socket ended")
            .unwrap();
        if let Message::Binary(b) = msg {
            acc.extend_from_slice(&b);
        }
    }
}

#[tokio::test]
async fn websocket_attach() {
    let g = Guest::start().await;
    let (st, _) = g
        .post("/terminals", json!({"name": "ws", "cmd": ["/bin/sh"]}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    g.post(
        "/terminals/ws/input",
        json!({"text": "echo before-$((1+1))", "keys": ["Enter"]}),
    )
    .await;
    g.wait_screen("ws", |t| t.contains("before-2")).await;

    let mut a = ws_connect(&g, "ws").await;
    // The replay of the current screen comes first.
    let first = read_until(&mut a, "before-2").await;
    assert!(first.contains("before-2"));
    let mut b = ws_connect(&g, "ws").await;
    read_until(&mut b, "before-2").await;

    a.send(Message::text(
        json!({"type": "input", "data": "echo via-$((2+3))\r"}).to_string(),
    ))
    .await
    .unwrap();
    read_until(&mut a, "via-5").await;
    read_until(&mut b, "via-5").await;

    a.send(Message::text(
        json!({"type": "resize", "cols": 90, "rows": 20}).to_string(),
    ))
    .await
    .unwrap();
    a.send(Message::binary(b"stty size\r".to_vec()))
        .await
        .unwrap();
    read_until(&mut a, "20 90").await;

    // Closing one client leaves the session running.
    b.close(None).await.unwrap();
    drop(b);
    let (_, info) = g.get("/terminals/ws").await;
    assert_eq!(info["alive"], true);

    // Program exit closes the socket.
    a.send(Message::binary(b"exit\r".to_vec())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, a.next())
            .await
            .expect("no close frame")
        {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
        }
    }
    wait_dead(&g, "ws").await;

    // Attaching to an unknown terminal is a 404 before the upgrade.
    let (st, _) = g.get("/terminals/nope/attach").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // A plain GET (no upgrade) is a 400 envelope.
    let (st, v) = g.get("/terminals/ws/attach").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}
