//! End-to-end tests with real sandboxes (needs root and cgroups). The test binary is also the
//! guest: the engine runs `<this exe> guest --listen-fd 3 --status-fd 4 --config-fd 5` as PID 1
//! of each sandbox, which `main` hands to `hutch_guest::serve`.

mod common;
#[path = "common/runner.rs"]
mod runner;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{TestServer, assert_error, eventually};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve_main(PathBuf::from(&args[2]));
        return;
    }
    let all: &[(&str, runner::TestFn)] = runner::tests![
        lifecycle_exec_files_pause_resume_delete,
        other_team_sees_404,
        list_filters_and_pagination,
        streamed_process_ndjson,
        reaper_kills_pauses_and_keepalive_extends,
        restart_keeps_sandbox_process_and_output,
        reconciler_notices_dead_sandbox,
        metrics_count_sandboxes,
        terminal_attach_over_websocket,
        kill_9_of_the_server_keeps_sandbox_process_and_output,
        team_sandbox_limit,
    ];
    runner::main(all);
}

/// `serve DATA_DIR`: a server in its own process (so a test can SIGKILL it). Prints its URL.
fn serve_main(data_dir: PathBuf) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let running = hutch_server::spawn(common::config(data_dir, guest_exe()))
            .await
            .unwrap();
        println!("URL {}", running.url());
        std::future::pending::<()>().await;
    });
}

/// Starts `serve DATA_DIR` in a child process; returns it and a client for it.
async fn child_server(dir: tempfile::TempDir) -> (std::process::Child, TestServer) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("serve")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines.next().expect("child printed its URL").unwrap();
            if let Some(url) = line.strip_prefix("URL ") {
                return url.to_owned();
            }
        }
    })
    .await
    .unwrap();
    let admin = std::fs::read_to_string(dir.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let s = TestServer {
        dir,
        running: None,
        url,
        admin,
        http: reqwest::Client::new(),
    };
    (child, s)
}

fn guest_exe() -> Option<PathBuf> {
    Some(std::env::current_exe().unwrap())
}

async fn server() -> TestServer {
    TestServer::start(guest_exe()).await
}

async fn create(s: &TestServer, key: &str, body: Value) -> Value {
    let (st, sb) = s.post("/v1/sandboxes", key, body).await;
    assert_eq!(st, StatusCode::CREATED, "{sb}");
    sb
}

async fn exec(s: &TestServer, key: &str, id: &str, command: &str) -> (StatusCode, Value) {
    s.post(
        &format!("/v1/sandboxes/{id}/exec"),
        key,
        json!({ "command": command }),
    )
    .await
}

async fn event_types(s: &TestServer, key: &str, id: &str) -> Vec<String> {
    let (st, page) = s
        .get(&format!("/v1/events?sandbox_id={id}&limit=500"), key)
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn lifecycle_exec_files_pause_resume_delete() {
    let s = server().await;
    let k = s.admin.clone();
    let sb = create(
        &s,
        &k,
        json!({ "env": { "MY_SECRET": "hunter2-value" }, "metadata": { "owner": "t" } }),
    )
    .await;
    let id = sb["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sb-") && id.len() == 15, "{id}");
    assert_eq!(sb["state"], "running");
    assert_eq!(sb["template"], "base");
    assert_eq!(sb["cpus"], 1.0);
    assert_eq!(sb["memory_mb"], 512);
    assert_eq!(sb["pids"], 512);
    assert_eq!(sb["timeout_s"], 300);
    assert!(sb.get("env").is_none(), "env is never returned");
    assert!(sb["expires_at"].is_string() && sb["started_at"].is_string());

    let (st, got) = s.get(&format!("/v1/sandboxes/{id}"), &k).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["id"], id.as_str());

    // Exec through the proxy.
    let (st, run) = exec(&s, &k, &id, "echo hi").await;
    assert_eq!(st, StatusCode::OK, "{run}");
    assert_eq!(run["stdout"], "hi\n");
    assert_eq!(run["exit_code"], 0);
    // The sandbox env reaches processes.
    let (_, run) = exec(&s, &k, &id, "printf %s \"$MY_SECRET\"").await;
    assert_eq!(run["stdout"], "hunter2-value");

    // Files through the proxy.
    let resp = s
        .req(
            Method::PUT,
            &format!("/v1/sandboxes/{id}/files?path=/tmp/hello.txt"),
            Some(&k),
        )
        .body("hello from the host\n")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=/tmp/hello.txt"),
            Some(&k),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "hello from the host\n");
    let (_, run) = exec(&s, &k, &id, "cat /tmp/hello.txt").await;
    assert_eq!(run["stdout"], "hello from the host\n");

    // Guest health through the proxy.
    let (st, health) = s.get(&format!("/v1/sandboxes/{id}/health"), &k).await;
    assert_eq!(st, StatusCode::OK, "{health}");

    // Pause / resume and their conflicts.
    let (st, p) = s
        .post(&format!("/v1/sandboxes/{id}/pause"), &k, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["state"], "paused");
    let (st, body) = s
        .post(&format!("/v1/sandboxes/{id}/pause"), &k, json!({}))
        .await;
    assert_error(st, &body, 409, "conflict");
    let (st, body) = exec(&s, &k, &id, "echo no").await;
    assert_error(st, &body, 409, "conflict");
    assert_eq!(body["error"]["message"], "sandbox is paused");
    let (st, r) = s
        .post(&format!("/v1/sandboxes/{id}/resume"), &k, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "running");
    let (st, body) = s
        .post(&format!("/v1/sandboxes/{id}/resume"), &k, json!({}))
        .await;
    assert_error(st, &body, 409, "conflict");
    let (_, run) = exec(&s, &k, &id, "echo back").await;
    assert_eq!(run["stdout"], "back\n");

    // Timeout changes.
    let (st, t) = s
        .post(
            &format!("/v1/sandboxes/{id}/timeout"),
            &k,
            json!({ "timeout_s": 600 }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["timeout_s"], 600);
    let (st, body) = s
        .post(
            &format!("/v1/sandboxes/{id}/timeout"),
            &k,
            json!({ "timeout_s": 99999 }),
        )
        .await;
    assert_error(st, &body, 422, "invalid_argument");

    // Delete: 204, then 404 everywhere.
    let (st, _) = s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = s.get(&format!("/v1/sandboxes/{id}"), &k).await;
    assert_error(st, &body, 404, "not_found");
    let (st, body) = s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    assert_error(st, &body, 404, "not_found");
    let (st, body) = exec(&s, &k, &id, "echo gone").await;
    assert_error(st, &body, 404, "not_found");
    let engine = s.running.as_ref().unwrap().state.engine().clone();
    let id2 = id.clone();
    assert!(
        tokio::task::spawn_blocking(move || engine.info(&id2))
            .await
            .unwrap()
            .is_err()
    );

    // Events, newest first, without secrets.
    let types = event_types(&s, &k, &id).await;
    for t in [
        "sandbox.created",
        "sandbox.started",
        "sandbox.exec",
        "sandbox.paused",
        "sandbox.resumed",
        "sandbox.killed",
    ] {
        assert!(types.contains(&t.to_string()), "{t} missing from {types:?}");
    }
    assert_eq!(types.first().map(String::as_str), Some("sandbox.killed"));
    assert_eq!(types.last().map(String::as_str), Some("sandbox.created"));
    let (_, all) = s
        .get(&format!("/v1/events?sandbox_id={id}&limit=500"), &k)
        .await;
    let text = all.to_string();
    assert!(!text.contains("hunter2"), "events leak env values: {text}");
    assert!(
        !text.contains("hello from the host"),
        "events leak data: {text}"
    );
    let (_, only) = s
        .get(&format!("/v1/events?sandbox_id={id}&type=sandbox.exec"), &k)
        .await;
    assert!(
        only["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "sandbox.exec")
    );
    let (_, page) = s
        .get(&format!("/v1/events?sandbox_id={id}&limit=2"), &k)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = s
        .get(
            &format!("/v1/events?sandbox_id={id}&limit=2&before={cursor}"),
            &k,
        )
        .await;
    assert!(page2["items"][0]["id"].as_i64().unwrap() < page["items"][1]["id"].as_i64().unwrap());
    let _ = s.stop().await;
}

async fn other_team_sees_404() {
    let s = server().await;
    let (_, k1) = s.team_key("one").await;
    let (_, k2) = s.team_key("two").await;
    let sb = create(&s, &k1, json!({})).await;
    let id = sb["id"].as_str().unwrap();
    for (m, p) in [
        (Method::GET, format!("/v1/sandboxes/{id}")),
        (Method::POST, format!("/v1/sandboxes/{id}/pause")),
        (Method::POST, format!("/v1/sandboxes/{id}/keepalive")),
        (Method::GET, format!("/v1/sandboxes/{id}/processes")),
        (Method::DELETE, format!("/v1/sandboxes/{id}")),
    ] {
        let (st, body) = s.call(m, &p, &k2, None).await;
        assert_error(st, &body, 404, "not_found");
    }
    let (st, body) = exec(&s, &k2, id, "echo x").await;
    assert_error(st, &body, 404, "not_found");
    let (_, list) = s.get("/v1/sandboxes", &k2).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let (_, events) = s.get("/v1/events", &k2).await;
    assert!(events["items"].as_array().unwrap().is_empty());
    // Still fine for its owner.
    let (_, run) = exec(&s, &k1, id, "echo mine").await;
    assert_eq!(run["stdout"], "mine\n");
    let (st, _) = s.delete(&format!("/v1/sandboxes/{id}"), &k1).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let _ = s.stop().await;
}

async fn list_filters_and_pagination() {
    let s = server().await;
    let (_, k) = s.team_key("lists").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let sb = create(&s, &k, json!({ "metadata": { "n": i.to_string(), "group": if i < 2 { "a" } else { "b" } }, "memory_mb": 64 })).await;
        ids.push(sb["id"].as_str().unwrap().to_owned());
    }
    let (_, all) = s.get("/v1/sandboxes", &k).await;
    let got: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()],
        "newest first"
    );
    let (_, a) = s.get("/v1/sandboxes?metadata.group=a", &k).await;
    assert_eq!(a["items"].as_array().unwrap().len(), 2);
    let (_, b) = s
        .get("/v1/sandboxes?metadata.group=b&metadata.n=2", &k)
        .await;
    assert_eq!(b["items"][0]["id"], ids[2].as_str());
    let (_, p1) = s.get("/v1/sandboxes?limit=2", &k).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = s
        .get(&format!("/v1/sandboxes?limit=2&cursor={cursor}"), &k)
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["items"][0]["id"], ids[0].as_str());
    assert!(p2.get("next_cursor").is_none());
    s.post(&format!("/v1/sandboxes/{}/pause", ids[1]), &k, json!({}))
        .await;
    let (_, paused) = s.get("/v1/sandboxes?state=paused", &k).await;
    assert_eq!(paused["items"].as_array().unwrap().len(), 1);
    let (_, both) = s.get("/v1/sandboxes?state=paused,running", &k).await;
    assert_eq!(both["items"].as_array().unwrap().len(), 3);
    let (_, templates) = s.get("/v1/templates", &k).await;
    let base = templates["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "base")
        .unwrap()
        .clone();
    assert_eq!(base["in_use"], 3);
    for id in &ids {
        s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    }
    let _ = s.stop().await;
}

async fn streamed_process_ndjson() {
    let s = server().await;
    let k = s.admin.clone();
    let id = create(&s, &k, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .req(
            Method::POST,
            &format!("/v1/sandboxes/{id}/processes?stream=ndjson"),
            Some(&k),
        )
        .json(&json!({ "command": "echo one; sleep 0.3; echo two >&2; exit 3", "tag": "job" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            lines.push(serde_json::from_slice::<Value>(&line).unwrap());
        }
    }
    assert_eq!(lines.first().unwrap()["type"], "start", "{lines:?}");
    let pid = lines[0]["id"].as_str().unwrap().to_owned();
    let out: String = lines
        .iter()
        .filter(|l| l["type"] == "stdout")
        .map(|l| l["data"].as_str().unwrap())
        .collect();
    let err: String = lines
        .iter()
        .filter(|l| l["type"] == "stderr")
        .map(|l| l["data"].as_str().unwrap())
        .collect();
    assert_eq!(out, "one\n");
    assert_eq!(err, "two\n");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "exit");
    assert_eq!(last["exit_code"], 3);

    // A background process (201) and its output afterwards.
    let (st, p) = s
        .post(
            &format!("/v1/sandboxes/{id}/processes"),
            &k,
            json!({ "command": "echo bg", "tag": "bg" }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let bg = p["id"].as_str().unwrap().to_owned();
    let (st, waited) = s
        .post(
            &format!("/v1/sandboxes/{id}/processes/{bg}/wait"),
            &k,
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{waited}");
    assert_eq!(waited["exit_code"], 0);

    // process.started events carry the id and tag only.
    let (_, events) = s
        .get(
            &format!("/v1/events?sandbox_id={id}&type=process.started"),
            &k,
        )
        .await;
    let items = events["items"].as_array().unwrap();
    let data: Vec<(String, String)> = items
        .iter()
        .map(|e| {
            (
                e["data"]["process_id"].as_str().unwrap_or("").to_owned(),
                e["data"]["tag"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    eventually("stream start event", Duration::from_secs(5), || {
        let s = &s;
        let k = &k;
        let id = &id;
        let pid = pid.clone();
        async move {
            let (_, events) = s
                .get(
                    &format!("/v1/events?sandbox_id={id}&type=process.started"),
                    k,
                )
                .await;
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["data"]["process_id"] == pid.as_str() && e["data"]["tag"] == "job")
                .then_some(())
        }
    })
    .await;
    assert!(data.contains(&(bg.clone(), "bg".to_owned())), "{data:?}");
    assert!(
        !events.to_string().contains("echo"),
        "argv must not be recorded: {events}"
    );
    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}

async fn state_of(s: &TestServer, k: &str, id: &str) -> String {
    let (_, sb) = s.get(&format!("/v1/sandboxes/{id}"), k).await;
    sb["state"].as_str().unwrap_or("?").to_owned()
}

async fn reaper_kills_pauses_and_keepalive_extends() {
    let s = server().await;
    let k = s.admin.clone();
    let kill = create(&s, &k, json!({ "timeout_s": 1 })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pause = create(&s, &k, json!({ "timeout_s": 1, "on_timeout": "pause" })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keep = create(&s, &k, json!({ "timeout_s": 2 })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Keep `keep` alive for ~4 s (twice its timeout) while the others expire.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let (st, sb) = s
            .post(&format!("/v1/sandboxes/{keep}/keepalive"), &k, json!({}))
            .await;
        assert_eq!(st, StatusCode::OK, "{sb}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(state_of(&s, &k, &keep).await, "running");
    eventually("kill on timeout", Duration::from_secs(10), || async {
        (state_of(&s, &k, &kill).await == "stopped").then_some(())
    })
    .await;
    eventually("pause on timeout", Duration::from_secs(10), || async {
        (state_of(&s, &k, &pause).await == "paused").then_some(())
    })
    .await;
    let (_, ev) = s
        .get(
            &format!("/v1/events?sandbox_id={kill}&type=sandbox.timed_out"),
            &k,
        )
        .await;
    assert_eq!(ev["items"][0]["data"]["action"], "kill");
    let (_, ev) = s
        .get(
            &format!("/v1/events?sandbox_id={pause}&type=sandbox.timed_out"),
            &k,
        )
        .await;
    assert_eq!(ev["items"][0]["data"]["action"], "pause");
    let (_, sb) = s.get(&format!("/v1/sandboxes/{kill}"), &k).await;
    assert_eq!(sb["reason"], "timed out");
    let (st, body) = exec(&s, &k, &kill, "echo x").await;
    assert_error(st, &body, 409, "conflict");
    // The paused one can be resumed and used.
    let (st, r) = s
        .post(&format!("/v1/sandboxes/{pause}/resume"), &k, json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let (_, run) = exec(&s, &k, &pause, "echo alive").await;
    assert_eq!(run["stdout"], "alive\n");
    // Once it stops responding to keepalives, `keep` expires too.
    eventually("keep expires", Duration::from_secs(10), || async {
        (state_of(&s, &k, &keep).await == "stopped").then_some(())
    })
    .await;
    for id in [&kill, &pause, &keep] {
        s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    }
    let _ = s.stop().await;
}

/// Wait for a process's first output (the guest buffers it), not a fixed time.
async fn wait_for_output(s: &TestServer, k: &str, id: &str, pid: &str) {
    eventually("first output", Duration::from_secs(10), || async {
        let (_, info) = s
            .get(&format!("/v1/sandboxes/{id}/processes/{pid}"), k)
            .await;
        (info["output_bytes"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
}

/// After a server restart: the sandbox and its process still run; returns the process output.
async fn surviving_output(s: &TestServer, k: &str, id: &str, pid: &str) -> String {
    assert_eq!(state_of(s, k, id).await, "running");
    let (st, info) = s
        .get(&format!("/v1/sandboxes/{id}/processes/{pid}"), k)
        .await;
    assert_eq!(st, StatusCode::OK, "{info}");
    assert_eq!(info["state"], "running");
    let resp = s
        .req(
            Method::GET,
            &format!("/v1/sandboxes/{id}/processes/{pid}/output"),
            Some(k),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

async fn restart_keeps_sandbox_process_and_output() {
    let s = server().await;
    let k = s.admin.clone();
    let id = create(&s, &k, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, p) = s
        .post(
            &format!("/v1/sandboxes/{id}/processes"),
            &k,
            json!({ "command": "echo before-restart; sleep 600", "tag": "long" }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    wait_for_output(&s, &k, &id, &pid).await;

    // Stop the server (its engine forgets everything in memory), then start a new one.
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, guest_exe()).await;
    let out = surviving_output(&s, &k, &id, &pid).await;
    assert!(out.contains("before-restart"), "{out}");
    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}

async fn reconciler_notices_dead_sandbox() {
    let s = server().await;
    let k = s.admin.clone();
    let id = create(&s, &k, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let engine = s.running.as_ref().unwrap().state.engine().clone();
    let id2 = id.clone();
    let info = tokio::task::spawn_blocking(move || engine.info(&id2))
        .await
        .unwrap()
        .unwrap();
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(info.pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    eventually("sandbox.exited", Duration::from_secs(15), || async {
        (state_of(&s, &k, &id).await == "stopped").then_some(())
    })
    .await;
    let types = event_types(&s, &k, &id).await;
    assert!(types.contains(&"sandbox.exited".to_owned()), "{types:?}");
    let _ = s.stop().await;
}

async fn metrics_count_sandboxes() {
    let s = server().await;
    let k = s.admin.clone();
    let id = create(&s, &k, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = s
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("hutch_sandboxes{state=\"running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hutch_sandbox_create_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/v1/sandboxes\",status=\"201\""),
        "{text}"
    );
    assert!(text.contains("hutch_egress_log_dropped 0"), "{text}");
    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}

async fn terminal_attach_over_websocket() {
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let s = server().await;
    let k = s.admin.clone();
    let id = create(&s, &k, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, t) = s
        .post(
            &format!("/v1/sandboxes/{id}/terminals"),
            &k,
            json!({ "name": "main", "cmd": ["/bin/sh"] }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");

    let url = format!(
        "{}/v1/sandboxes/{id}/terminals/main/attach",
        s.url.replace("http://", "ws://")
    );
    // Without a key the upgrade is refused.
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err()
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {k}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through the proxy");
    assert_eq!(resp.status().as_u16(), 101);
    ws.send(Message::Binary(b"echo ws-$((6*7))\n".to_vec().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("ws-42") {
        assert!(
            Instant::now() < deadline,
            "no echo: {}",
            String::from_utf8_lossy(&seen)
        );
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!("websocket ended: {other:?}"),
        }
    }
    let _ = ws.close(None).await;
    // The session outlives the connection.
    let (st, screen) = s
        .get(&format!("/v1/sandboxes/{id}/terminals/main/screen"), &k)
        .await;
    assert_eq!(st, StatusCode::OK, "{screen}");
    assert!(
        screen["text"].as_str().unwrap().contains("ws-42"),
        "{screen}"
    );
    s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    let _ = s.stop().await;
}

async fn kill_9_of_the_server_keeps_sandbox_process_and_output() {
    let (mut child, s) = child_server(tempfile::tempdir().unwrap()).await;
    let k = s.admin.clone();
    let id = create(&s, &k, json!({ "metadata": { "case": "kill9" } })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, p) = s
        .post(
            &format!("/v1/sandboxes/{id}/processes"),
            &k,
            json!({ "command": "echo before-kill; sleep 600" }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    wait_for_output(&s, &k, &id, &pid).await;

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (mut child, s) = child_server(s.stop().await).await;
    let out = surviving_output(&s, &k, &id, &pid).await;
    assert!(out.contains("before-kill"), "{out}");
    let (_, run) = exec(&s, &k, &id, "echo after-restart").await;
    assert_eq!(run["stdout"], "after-restart\n");
    let (st, _) = s.delete(&format!("/v1/sandboxes/{id}"), &k).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn team_sandbox_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path().to_path_buf(), guest_exe());
    cfg.max_sandboxes_per_team = 2;
    let s = TestServer::start_with(dir, cfg).await;
    let k = s.admin.clone();
    let a = create(&s, &k, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let _b = create(&s, &k, json!({})).await;
    let (st, body) = s.post("/v1/sandboxes", &k, json!({})).await;
    assert_error(st, &body, 429, "resource_exhausted");
    // Deleting one frees a slot.
    s.delete(&format!("/v1/sandboxes/{a}"), &k).await;
    let (st, body) = s.post("/v1/sandboxes", &k, json!({})).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    for sb in s.get("/v1/sandboxes", &k).await.1["items"]
        .as_array()
        .unwrap()
    {
        s.delete(&format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap()), &k)
            .await;
    }
    let _ = s.stop().await;
}
