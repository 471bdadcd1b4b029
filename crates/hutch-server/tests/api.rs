//! API tests that need no running sandbox: auth, keys, teams, errors, validation, OpenAPI, metrics.

mod common;

use std::collections::BTreeSet;

use common::{TestServer, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn first_start_creates_admin_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start(None).await;
    let file = s.dir.path().join("admin.key");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), s.admin);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = s.dir.path().join("server.secret");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(s.admin.starts_with("hk_"));
    // The key is not stored in plaintext anywhere in the database.
    let db = std::fs::read(s.dir.path().join("hutch.db")).unwrap();
    let wal = std::fs::read(s.dir.path().join("hutch.db-wal")).unwrap_or_default();
    let needle = s.admin.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));
    assert!(!wal.windows(needle.len()).any(|w| w == needle));

    // A restart keeps the key and creates no new one.
    let dir = s.stop().await;
    let admin_before = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let s = TestServer::start_in(dir, None).await;
    assert!(s.running.as_ref().unwrap().admin_key.is_none());
    assert_eq!(s.admin, admin_before.trim());
    let (st, _) = s.get("/v1/sandboxes", &s.admin).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn auth_none_bad_revoked_forbidden() {
    let s = TestServer::start(None).await;
    // No key.
    let (st, body) = common::json_of(
        s.req(Method::GET, "/v1/sandboxes", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 401, "unauthorized");
    // Bad key.
    let (st, body) = s.get("/v1/sandboxes", "hk_nope").await;
    assert_error(st, &body, 401, "unauthorized");
    let (st, body) = s.get("/v1/sandboxes", "garbage").await;
    assert_error(st, &body, 401, "unauthorized");
    // X-API-Key works too.
    let resp = s
        .req(Method::GET, "/v1/sandboxes", None)
        .header("x-api-key", &s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A non-admin key: 403 on admin routes.
    let (team, key) = s.team_key("t1").await;
    for (m, p) in [(Method::GET, "/v1/keys"), (Method::GET, "/v1/teams")] {
        let (st, body) = s.call(m, p, &key, None).await;
        assert_error(st, &body, 403, "forbidden");
    }
    let (st, body) = s.post("/v1/teams", &key, json!({ "name": "x" })).await;
    assert_error(st, &body, 403, "forbidden");
    let (st, body) = s.post("/v1/keys", &key, json!({ "name": "x" })).await;
    assert_error(st, &body, 403, "forbidden");
    let (st, _) = s.get("/v1/sandboxes", &key).await;
    assert_eq!(st, StatusCode::OK);

    // Listing keys shows metadata, never secrets.
    let (st, keys) = s.get(&format!("/v1/keys?team_id={team}"), &s.admin).await;
    assert_eq!(st, StatusCode::OK);
    let items = keys["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("key").is_none());
    assert_eq!(items[0]["prefix"], &key[..8]);
    let key_id = items[0]["id"].as_str().unwrap().to_owned();

    // Revoke: 401 at once.
    let (st, _) = s.delete(&format!("/v1/keys/{key_id}"), &s.admin).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = s.get("/v1/sandboxes", &key).await;
    assert_error(st, &body, 401, "unauthorized");
    let (st, body) = s.delete("/v1/keys/key-doesnotexist", &s.admin).await;
    assert_error(st, &body, 404, "not_found");
}

#[tokio::test]
async fn keys_and_teams_admin_routes() {
    let s = TestServer::start(None).await;
    let (st, body) = s.post("/v1/teams", &s.admin, json!({ "name": "" })).await;
    assert_error(st, &body, 422, "invalid_argument");
    assert_eq!(body["error"]["details"]["field"], "name");
    let (st, team) = s
        .post("/v1/teams", &s.admin, json!({ "name": "research" }))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, teams) = s.get("/v1/teams", &s.admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(teams["items"].as_array().unwrap().len(), 2);
    let (st, body) = s
        .post(
            "/v1/keys",
            &s.admin,
            json!({ "name": "x", "team_id": "team-missing" }),
        )
        .await;
    assert_error(st, &body, 422, "invalid_argument");
    assert_eq!(body["error"]["details"]["field"], "team_id");
    let (st, created) = s
        .post(
            "/v1/keys",
            &s.admin,
            json!({ "name": "ops", "team_id": team["id"], "admin": true }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(created["admin"], true);
    assert_eq!(created["team_id"], team["id"]);
    let new_admin = created["key"].as_str().unwrap();
    let (st, _) = s.get("/v1/teams", new_admin).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn error_envelopes_for_bad_input() {
    let s = TestServer::start(None).await;
    // Unknown route: 404 envelope (even without a key).
    let (st, body) =
        common::json_of(s.req(Method::GET, "/v1/nope", None).send().await.unwrap()).await;
    assert_error(st, &body, 404, "not_found");
    // Wrong method: 405 envelope.
    let (st, body) = common::json_of(
        s.req(Method::PATCH, "/v1/sandboxes", Some(&s.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st.as_u16(), 405, "{body}");
    assert!(body["error"]["message"].is_string());
    // Bad JSON: 400.
    let resp = s
        .req(Method::POST, "/v1/sandboxes", Some(&s.admin))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (st, body) = common::json_of(resp).await;
    assert_error(st, &body, 400, "bad_request");
    // Unknown field: 422 naming it.
    let (st, body) = s
        .post("/v1/sandboxes", &s.admin, json!({ "cpuz": 1 }))
        .await;
    assert_error(st, &body, 422, "invalid_argument");
    assert_eq!(body["error"]["details"]["field"], "cpuz");
    // Oversize JSON: 413.
    let big = "x".repeat(2 << 20);
    let (st, body) = s
        .post(
            "/v1/sandboxes",
            &s.admin,
            json!({ "metadata": { "a": big } }),
        )
        .await;
    assert_error(st, &body, 413, "payload_too_large");
    // Bad query.
    let (st, body) = s.get("/v1/sandboxes?limit=0", &s.admin).await;
    assert_error(st, &body, 422, "invalid_argument");
    let (st, body) = s.get("/v1/sandboxes?cursor=abc", &s.admin).await;
    assert_error(st, &body, 422, "invalid_argument");
    let (st, body) = s.get("/v1/sandboxes?state=flying", &s.admin).await;
    assert_error(st, &body, 422, "invalid_argument");
    let (st, body) = s.get("/v1/events?type=nope", &s.admin).await;
    assert_error(st, &body, 422, "invalid_argument");
    // Unknown sandbox: 404 on every sandbox route, including proxied ones.
    for (m, p) in [
        (Method::GET, "/v1/sandboxes/sb-000000000000"),
        (Method::DELETE, "/v1/sandboxes/sb-000000000000"),
        (Method::POST, "/v1/sandboxes/sb-000000000000/pause"),
        (Method::POST, "/v1/sandboxes/sb-000000000000/keepalive"),
        (
            Method::GET,
            "/v1/sandboxes/sb-000000000000/files?path=/etc/hostname",
        ),
        (Method::POST, "/v1/sandboxes/sb-000000000000/exec"),
    ] {
        let (st, body) = s.call(m, p, &s.admin, None).await;
        assert_error(st, &body, 404, "not_found");
    }
}

#[tokio::test]
async fn create_validation_422() {
    let s = TestServer::start(None).await;
    let cases = [
        (json!({ "cpus": 0.001 }), "cpus"),
        (json!({ "cpus": 65 }), "cpus"),
        (json!({ "memory_mb": 8 }), "memory_mb"),
        (json!({ "memory_mb": 70000 }), "memory_mb"),
        (json!({ "pids": 4 }), "pids"),
        (json!({ "timeout_s": 0 }), "timeout_s"),
        (json!({ "timeout_s": 3601 }), "timeout_s"),
        (json!({ "env": { "1BAD": "x" } }), "env"),
        (json!({ "env": { "A-B": "x" } }), "env"),
        (json!({ "network": { "mode": "open" } }), "network"),
        (json!({ "template": "does-not-exist" }), "template"),
    ];
    for (body, field) in cases {
        let (st, resp) = s.post("/v1/sandboxes", &s.admin, body.clone()).await;
        assert_error(st, &resp, 422, "invalid_argument");
        assert_eq!(resp["error"]["details"]["field"], field, "{body} → {resp}");
    }
    let metadata: serde_json::Map<String, serde_json::Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (st, resp) = s
        .post("/v1/sandboxes", &s.admin, json!({ "metadata": metadata }))
        .await;
    assert_error(st, &resp, 422, "invalid_argument");
    assert_eq!(resp["error"]["details"]["field"], "metadata");
    // A secret env value is never echoed in errors.
    let (_, resp) = s
        .post(
            "/v1/sandboxes",
            &s.admin,
            json!({ "env": { "TOKEN": "sup3r\u{0}secret" } }),
        )
        .await;
    assert!(!resp.to_string().contains("sup3r"), "{resp}");
}

#[tokio::test]
async fn openapi_contract_matches_router() {
    let routes: BTreeSet<(String, String)> = hutch_server::route_list().into_iter().collect();
    let documented: BTreeSet<(String, String)> = hutch_server::openapi::documented_routes()
        .into_iter()
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes without OpenAPI docs: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "documented routes the router lacks: {missing:?}"
    );
    assert!(routes.len() >= 50, "{}", routes.len());

    // Served over HTTP without auth, and it is OpenAPI 3.1.
    let s = TestServer::start(None).await;
    let (st, doc) = common::json_of(
        s.req(Method::GET, "/v1/openapi.json", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for schema in [
        "Sandbox",
        "CreateSandbox",
        "ErrorBody",
        "Event",
        "StartProcess",
        "ProcessEvent",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }
    let served: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    assert_eq!(served, routes);
    // Operation ids are unique (SDK generators need that).
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            }
        }
    }

    // The docs page is self-contained.
    let resp = s.req(Method::GET, "/docs", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains("/v1/openapi.json"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the docs page loads nothing remote"
    );
}

#[tokio::test]
async fn ops_routes_and_metrics() {
    let s = TestServer::start(None).await;
    for p in ["/healthz", "/readyz"] {
        let resp = s.req(Method::GET, p, None).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{p}");
    }
    let _ = s.get("/v1/sandboxes", &s.admin).await;
    let _ = s.get("/v1/sandboxes/sb-000000000000", &s.admin).await;
    let resp = s.req(Method::GET, "/metrics", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("hutch_sandboxes{state=\"running\"}"),
        "{text}"
    );
    assert!(text.contains("hutch_sandbox_create_seconds"), "{text}");
    assert!(
        text.contains(
            "hutch_http_requests_total{method=\"GET\",route=\"/v1/sandboxes/{id}\",status=\"404\"}"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn templates_list_and_admin_only_import() {
    let s = TestServer::start(None).await;
    let (st, list) = s.get("/v1/templates", &s.admin).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "base")
    );
    let (_, key) = s.team_key("t").await;
    let resp = s
        .req(Method::POST, "/v1/templates?name=x", Some(&key))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = s
        .req(Method::POST, "/v1/templates?name=Bad!", Some(&s.admin))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = s
        .req(Method::POST, "/v1/templates?name=base", Some(&s.admin))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let (st, body) = s.delete("/v1/templates/base", &s.admin).await;
    assert_error(st, &body, 409, "conflict");
    let (st, body) = s.delete("/v1/templates/nope", &s.admin).await;
    assert_error(st, &body, 404, "not_found");

    // Import a tiny tar, streamed.
    let mut tar = Vec::new();
    {
        let mut b = TarBuilder::default();
        b.file("etc/hello.txt", b"hello\n");
        tar = b.finish(tar);
    }
    let resp = s
        .req(Method::POST, "/v1/templates?name=tiny", Some(&s.admin))
        .body(tar)
        .send()
        .await
        .unwrap();
    let (st, body) = common::json_of(resp).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "tiny");
    let (st, _) = s.delete("/v1/templates/tiny", &s.admin).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// A minimal ustar writer (enough for a test template).
#[derive(Default)]
struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    fn file(&mut self, path: &str, data: &[u8]) {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    fn finish(mut self, _: Vec<u8>) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}
