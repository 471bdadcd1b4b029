//! Processes and exec against a real guest on a Unix socket.

mod common;

use std::time::{Duration, Instant};

use common::{Guest, Lines, code};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn exec_echo_exit_codes_and_stderr() {
    let g = Guest::start().await;
    let (st, v) = g.post("/exec", json!({"cmd": ["echo", "hello"]})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "hello\n");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["truncated"], false);
    assert!(v["id"].as_str().unwrap().starts_with("p-"));

    let (st, v) = g
        .post("/exec", json!({"command": "echo oops >&2; exit 3"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["stderr"], "oops\n");
    assert_eq!(v["stdout"], "");

    let (_, v) = g
        .post("/exec", json!({"cmd": ["cat"], "stdin": "from stdin"}))
        .await;
    assert_eq!(v["stdout"], "from stdin");
}

#[tokio::test]
async fn exec_env_cwd_and_user() {
    let g = Guest::start().await;
    let (st, v) = g
        .post(
            "/exec",
            json!({"command": "echo $FOO $HUTCH_TEST_ENV $TERM; pwd; echo $HOME", "env": {"FOO": "bar"}, "cwd": "/tmp"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "bar from-config xterm-256color\n/tmp\n/root\n");

    let (st, v) = g
        .post(
            "/exec",
            json!({"command": "id -u; id -g; echo $USER", "user": "nobody"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "65534\n65534\nnobody\n");

    let (_, v) = g
        .post("/exec", json!({"cmd": ["id", "-u"], "user": "1234:1234"}))
        .await;
    assert_eq!(v["stdout"], "1234\n");

    // Default cwd is root's home.
    let (_, v) = g.post("/exec", json!({"cmd": ["pwd"]})).await;
    assert_eq!(v["stdout"], "/root\n");
}

#[tokio::test]
async fn exec_validation_errors() {
    let g = Guest::start().await;
    let (st, v) = g
        .post("/exec", json!({"cmd": ["no-such-binary-xyz", "a"]}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(code(&v), "invalid_argument");
    assert_eq!(v["error"]["details"]["field"], "cmd");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-binary-xyz")
    );

    let (st, v) = g
        .post("/exec", json!({"cmd": ["true"], "cwd": "/no/such/dir"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["details"]["field"], "cwd");

    let (st, v) = g
        .post("/exec", json!({"cmd": ["true"], "user": "no-such-user"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["details"]["field"], "user");

    let (st, v) = g
        .post("/exec", json!({"cmd": ["true"], "command": "true"}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["details"]["field"], "cmd");

    let (st, _) = g.post("/exec", json!({})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    let (st, v) = g.raw(Method::POST, "/exec", "{not json").await.into_json();
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(code(&v), "bad_request");

    let (st, v) = g.post("/exec", json!({"cmd": ["true"], "bogus": 1})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("bogus"));

    let (st, v) = g
        .post("/exec?max_output=999999999", json!({"cmd": ["true"]}))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["details"]["field"], "max_output");

    let big = "x".repeat(2 * 1024 * 1024);
    let (st, v) = g.post("/exec", json!({"command": big})).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&v), "payload_too_large");
}

trait IntoJson {
    fn into_json(self) -> (StatusCode, Value);
}

impl IntoJson for (StatusCode, hyper::HeaderMap, bytes::Bytes) {
    fn into_json(self) -> (StatusCode, Value) {
        (self.0, serde_json::from_slice(&self.2).unwrap())
    }
}

#[tokio::test]
async fn exec_timeout_kills_the_group() {
    let g = Guest::start().await;
    let t = Instant::now();
    let (st, v) = g
        .post(
            "/exec",
            json!({"command": "sleep 100 & sleep 100; echo never", "timeout_ms": 300}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["signal"], 9);
    assert_eq!(v["stdout"], "");
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn exec_truncates_but_drains() {
    let g = Guest::start().await;
    let (st, v) = g
        .post(
            "/exec?max_output=1000",
            json!({"command": "head -c 100000 /dev/zero | tr '\\0' a; echo done >&2"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["truncated"], true);
    assert_eq!(v["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(v["stderr"], "done\n");
    assert_eq!(v["exit_code"], 0);

    // Far more than the 1 MiB buffer: the process still finishes and nothing is lost up to the limit.
    let (_, v) = g
        .post(
            "/exec",
            json!({"command": "head -c 3000000 /dev/zero | tr '\\0' b"}),
        )
        .await;
    assert_eq!(v["truncated"], true);
    assert_eq!(v["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(v["exit_code"], 0);
}

#[tokio::test]
async fn exec_returns_when_background_child_keeps_pipe_open() {
    let g = Guest::start().await;
    let t = Instant::now();
    let (_, v) = g
        .post("/exec", json!({"command": "sleep 20 & echo started"}))
        .await;
    assert_eq!(v["stdout"], "started\n");
    assert_eq!(v["exit_code"], 0);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
}

async fn output_text(g: &Guest, id: &str, offset: u64) -> (String, Vec<Value>) {
    let resp = g
        .stream(
            Method::GET,
            &format!("/processes/{id}/output?offset={offset}"),
            None,
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut lines = Lines::new(resp);
    let mut text = String::new();
    let mut events = Vec::new();
    while let Some(ev) = lines.next_json().await {
        if let Some(d) = ev["data"].as_str() {
            text.push_str(d);
        }
        events.push(ev);
    }
    (text, events)
}

#[tokio::test]
async fn background_process_stdin_output_wait_delete() {
    let g = Guest::start().await;
    let (st, info) = g
        .post(
            "/processes",
            json!({"cmd": ["cat"], "keep_stdin": true, "tag": "cat1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{info}");
    assert_eq!(info["state"], "running");
    assert_eq!(info["tag"], "cat1");
    let id = info["id"].as_str().unwrap().to_string();

    let (st, _) = g
        .post(
            &format!("/processes/{id}/stdin"),
            json!({"data": "hello\n"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (text, _) = output_text(&g, &id, 0).await;
        if text == "hello\n" {
            break;
        }
        assert!(Instant::now() < deadline, "output never arrived: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (st, list) = g.get("/processes?state=running&tag=cat1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = g.get("/processes?tag=other").await;
    assert!(list.as_array().unwrap().is_empty());

    let (st, v) = g
        .post(&format!("/processes/{id}/wait?timeout_ms=100"), json!({}))
        .await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(code(&v), "timeout");

    let (st, _) = g
        .post(
            &format!("/processes/{id}/stdin"),
            json!({"data": "world\n", "close": true}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, done) = g.post(&format!("/processes/{id}/wait"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(done["state"], "exited");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["output_bytes"], 12);

    // Resume from an offset: only the tail, then the exit.
    let (text, events) = output_text(&g, &id, 6).await;
    assert_eq!(text, "world\n");
    assert_eq!(events[0]["offset"], 6);
    assert_eq!(events.last().unwrap()["type"], "exit");

    let (st, v) = g
        .post(&format!("/processes/{id}/stdin"), json!({"data": "late"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, _) = g
        .post(
            &format!("/processes/{id}/signal"),
            json!({"signal": "TERM"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    let (_, list) = g.get("/processes?state=exited").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id.as_str())
    );

    let (st, _) = g
        .json(Method::DELETE, &format!("/processes/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = g.get(&format!("/processes/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
}

#[tokio::test]
async fn stdin_closed_is_conflict() {
    let g = Guest::start().await;
    let (_, info) = g.post("/processes", json!({"cmd": ["sleep", "100"]})).await;
    let id = info["id"].as_str().unwrap();
    let (st, _) = g
        .post(&format!("/processes/{id}/stdin"), json!({"data": "x"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = g
        .json(Method::DELETE, &format!("/processes/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn signals_reach_the_group() {
    let g = Guest::start().await;
    let (_, info) = g
        .post("/processes", json!({"command": "sleep 100 & wait"}))
        .await;
    let id = info["id"].as_str().unwrap();
    let (st, v) = g
        .post(
            &format!("/processes/{id}/signal"),
            json!({"signal": "BOGUS"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["details"]["field"], "signal");
    let (st, _) = g
        .post(
            &format!("/processes/{id}/signal"),
            json!({"signal": "SIGTERM"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, done) = g
        .post(&format!("/processes/{id}/wait?timeout_ms=30000"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(done["signal"], 15);
    assert!(done["duration_ms"].is_u64());

    let (_, info) = g.post("/processes", json!({"cmd": ["sleep", "100"]})).await;
    let id = info["id"].as_str().unwrap();
    let (st, _) = g
        .post(&format!("/processes/{id}/signal"), json!({"signal": "9"}))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, done) = g.post(&format!("/processes/{id}/wait"), json!({})).await;
    assert_eq!(done["signal"], 9);
}

#[tokio::test]
async fn delete_kills_running_process() {
    let g = Guest::start().await;
    let (_, info) = g
        .post(
            "/processes",
            json!({"cmd": ["sleep", "100"], "timeout_ms": 60000}),
        )
        .await;
    let id = info["id"].as_str().unwrap();
    let (st, _) = g
        .json(Method::DELETE, &format!("/processes/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = g.get(&format!("/processes/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = g.json(Method::DELETE, "/processes/p-9999", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = g.get("/processes/bogus").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ndjson_stream_start_output_exit() {
    let g = Guest::start().await;
    for (path, accept) in [
        ("/processes?stream=ndjson", None),
        ("/processes", Some("application/x-ndjson")),
    ] {
        let resp = g
            .stream(
                Method::POST,
                path,
                accept,
                Some(json!({"command": "echo a; echo b >&2; echo c; exit 4"})),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        let mut lines = Lines::new(resp);
        let mut events = Vec::new();
        while let Some(ev) = lines.next_json().await {
            events.push(ev);
        }
        assert_eq!(events[0]["type"], "start");
        assert!(events[0]["pid"].as_i64().unwrap() > 0);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "exit");
        assert_eq!(last["exit_code"], 4);
        let out: String = events
            .iter()
            .filter(|e| e["type"] == "stdout")
            .map(|e| e["data"].as_str().unwrap())
            .collect();
        let err: String = events
            .iter()
            .filter(|e| e["type"] == "stderr")
            .map(|e| e["data"].as_str().unwrap())
            .collect();
        assert_eq!(out, "a\nc\n");
        assert_eq!(err, "b\n");
        assert_eq!(events.iter().filter(|e| e["type"] == "exit").count(), 1);
    }
}

#[tokio::test]
async fn sse_stream() {
    let g = Guest::start().await;
    let resp = g
        .stream(
            Method::POST,
            "/processes",
            Some("text/event-stream"),
            Some(json!({"cmd": ["echo", "sse"]})),
        )
        .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut lines = Lines::new(resp);
    let mut events = Vec::new();
    while let Some(ev) = lines.next_sse().await {
        events.push(ev);
    }
    assert_eq!(events[0].0, "start");
    assert_eq!(events[1].0, "stdout");
    assert_eq!(events[1].1["data"], "sse\n");
    assert_eq!(events.last().unwrap().0, "exit");
}

#[tokio::test]
async fn streaming_client_gets_everything_with_backpressure() {
    let g = Guest::start().await;
    let total = 4_000_000u64;
    let resp = g
        .stream(
            Method::POST,
            "/processes?stream=ndjson",
            None,
            Some(json!({"command": format!("head -c {total} /dev/zero | tr '\\0' x")})),
        )
        .await;
    let mut lines = Lines::new(resp);
    let mut expected = 0u64;
    let mut exit = None;
    while let Some(ev) = lines.next_json().await {
        match ev["type"].as_str().unwrap() {
            "stdout" => {
                assert_eq!(
                    ev["offset"].as_u64().unwrap(),
                    expected,
                    "contiguous offsets"
                );
                expected += ev["data"].as_str().unwrap().len() as u64;
            }
            "gap" => panic!("a blocking consumer must never see a gap"),
            "exit" => exit = Some(ev),
            _ => {}
        }
    }
    assert_eq!(expected, total);
    assert_eq!(exit.unwrap()["exit_code"], 0);
}

#[tokio::test]
async fn output_gap_follow_and_errors() {
    let g = Guest::start().await;
    // Without a consumer, old output is dropped.
    let (_, info) = g
        .post(
            "/processes",
            json!({"command": "head -c 3000000 /dev/zero | tr '\\0' y"}),
        )
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let (_, done) = g.post(&format!("/processes/{id}/wait"), json!({})).await;
    assert_eq!(done["output_bytes"], 3_000_000);
    let (text, events) = output_text(&g, &id, 0).await;
    assert_eq!(events[0]["type"], "gap");
    let start = events[0]["offset"].as_u64().unwrap();
    assert_eq!(events[0]["skipped"].as_u64().unwrap(), start);
    assert_eq!(text.len() as u64, 3_000_000 - start);
    assert!(text.len() <= 1024 * 1024 + 64 * 1024);

    // Follow live output until the exit.
    let (_, info) = g
        .post(
            "/processes",
            json!({"command": "for i in 1 2 3; do echo line$i; sleep 0.1; done"}),
        )
        .await;
    let id = info["id"].as_str().unwrap();
    let resp = g
        .stream(
            Method::GET,
            &format!("/processes/{id}/output?follow=true&stream=sse"),
            None,
            None,
        )
        .await;
    let mut lines = Lines::new(resp);
    let mut text = String::new();
    let mut last = String::new();
    while let Some((event, data)) = lines.next_sse().await {
        if let Some(d) = data["data"].as_str() {
            text.push_str(d);
        }
        last = event;
    }
    assert_eq!(text, "line1\nline2\nline3\n");
    assert_eq!(last, "exit");

    let (st, _) = g.get("/processes/p-424242/output").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = g
        .get(&format!("/processes/{id}/output?offset=notanumber"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn many_concurrent_execs() {
    let g = std::sync::Arc::new(Guest::start().await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            let (_, v) = g
                .post(
                    "/exec",
                    json!({"cmd": ["sh", "-c", format!("echo {i}; exit {}", i % 5)]}),
                )
                .await;
            assert_eq!(v["stdout"], format!("{i}\n"));
            assert_eq!(v["exit_code"], i % 5);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
