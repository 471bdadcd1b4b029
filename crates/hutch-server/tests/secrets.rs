//! `/v1/secrets` against a real server and SQLite file: metadata-only answers, team scoping,
//! validation, encryption at rest bound to team and name, the secrets key's life cycle, and a
//! leak test over every response, event and log line.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex, OnceLock};

use common::{TestServer, assert_error};
use hutch_server::secrets::SecretsKey;
use hutch_server::{AppState, ServerConfig};
use hutch_store::{Store, StoredSecret};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Every tracing line of this test binary (all levels, all crates).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .try_init()
            .expect("the test installs the only subscriber");
        buf
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn state(s: &TestServer) -> AppState {
    s.running.as_ref().unwrap().state.clone()
}

fn config_with_key(dir: &tempfile::TempDir, key: Option<SecretsKey>) -> ServerConfig {
    let mut cfg = common::config(dir.path().to_path_buf(), None);
    cfg.secrets_key = key;
    cfg
}

async fn put(s: &TestServer, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    s.call(Method::PUT, path, key, Some(body)).await
}

async fn team_events(s: &TestServer, key: &str) -> Vec<Value> {
    let (st, page) = s.get("/v1/events?limit=500", key).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn crud_is_metadata_only_and_team_scoped() {
    logs();
    let s = TestServer::start(None).await;
    let (_, key) = s.team_key("alpha").await;
    let (_, other) = s.team_key("beta").await;
    let st = state(&s);
    let mut changes = st.secrets().subscribe();
    let v0 = *changes.borrow_and_update();
    let value = "sk-crud-5f0c1e9a7b";

    let (code, body) = s
        .post(
            "/v1/secrets",
            &key,
            json!({ "name": "OPENAI_API_KEY", "value": value, "description": "prod" }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "OPENAI_API_KEY");
    assert_eq!(body["description"], "prod");
    assert!(body["created_at"].is_string() && body["updated_at"].is_string());
    assert!(body.get("value").is_none(), "{body}");
    assert!(changes.has_changed().unwrap());
    assert_eq!(*changes.borrow_and_update(), v0 + 1);

    // Same name again: 409, value not echoed.
    let (code, body) = s
        .post(
            "/v1/secrets",
            &key,
            json!({ "name": "OPENAI_API_KEY", "value": value }),
        )
        .await;
    assert_error(code, &body, 409, "already_exists");
    assert!(!body.to_string().contains(value));

    // The same name in another team is another secret.
    let (code, _) = s
        .post(
            "/v1/secrets",
            &other,
            json!({ "name": "OPENAI_API_KEY", "value": "beta-value-1" }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);

    let (code, list) = s.get("/v1/secrets", &key).await;
    assert_eq!(code, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["name"], "OPENAI_API_KEY");
    assert!(!list.to_string().contains(value));

    let (code, got) = s.get("/v1/secrets/OPENAI_API_KEY", &key).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(got["description"], "prod");
    assert!(got.get("value").is_none());

    // Server side: the value, per team.
    let revealed = st
        .secrets()
        .reveal(&team_of(&s, &key).await, "OPENAI_API_KEY")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revealed.as_str(), value);

    // Rotate: new value, description kept when omitted, cleared with "".
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (code, rotated) = put(
        &s,
        "/v1/secrets/OPENAI_API_KEY",
        &key,
        json!({ "value": "sk-rotated-1" }),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["description"], "prod");
    assert_eq!(rotated["created_at"], got["created_at"]);
    assert_ne!(rotated["updated_at"], got["updated_at"]);
    assert_eq!(*changes.borrow_and_update(), v0 + 3);
    let team = team_of(&s, &key).await;
    assert_eq!(
        st.secrets()
            .reveal(&team, "OPENAI_API_KEY")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "sk-rotated-1"
    );
    let (code, rotated) = put(
        &s,
        "/v1/secrets/OPENAI_API_KEY",
        &key,
        json!({ "value": "sk-rotated-2", "description": "" }),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(rotated.get("description").is_none(), "{rotated}");
    let (code, body) = put(&s, "/v1/secrets/MISSING", &key, json!({ "value": "x" })).await;
    assert_error(code, &body, 404, "not_found");

    // Another team's secret is a 404 for every route, and the owner's value is untouched.
    let beta_only = "BETA_ONLY";
    let (code, _) = s
        .post(
            "/v1/secrets",
            &other,
            json!({ "name": beta_only, "value": "beta-value-2" }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let path = format!("/v1/secrets/{beta_only}");
    let (code, body) = s.get(&path, &key).await;
    assert_error(code, &body, 404, "not_found");
    let (code, body) = put(&s, &path, &key, json!({ "value": "hijack" })).await;
    assert_error(code, &body, 404, "not_found");
    let (code, body) = s.delete(&path, &key).await;
    assert_error(code, &body, 404, "not_found");
    let (code, _) = s.get(&path, &other).await;
    assert_eq!(code, StatusCode::OK);
    let beta_team = team_of(&s, &other).await;
    assert_eq!(
        st.secrets()
            .reveal(&beta_team, beta_only)
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "beta-value-2"
    );
    assert!(
        st.secrets()
            .reveal(&team, beta_only)
            .await
            .unwrap()
            .is_none()
    );

    // Every value of every team, for the DLP scanner.
    let all = st.secrets().all_values().await.unwrap();
    let mut all: Vec<(String, String, Vec<u8>)> = all
        .into_iter()
        .map(|(t, n, v)| (t, n, v.to_vec()))
        .collect();
    all.sort();
    let mut want = vec![
        (
            team.clone(),
            "OPENAI_API_KEY".to_owned(),
            b"sk-rotated-2".to_vec(),
        ),
        (
            beta_team.clone(),
            "OPENAI_API_KEY".to_owned(),
            b"beta-value-1".to_vec(),
        ),
        (
            beta_team.clone(),
            beta_only.to_owned(),
            b"beta-value-2".to_vec(),
        ),
    ];
    want.sort();
    assert_eq!(all, want);

    // Delete.
    let (code, _) = s.delete("/v1/secrets/OPENAI_API_KEY", &key).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let (code, body) = s.get("/v1/secrets/OPENAI_API_KEY", &key).await;
    assert_error(code, &body, 404, "not_found");
    let (code, body) = s.delete("/v1/secrets/OPENAI_API_KEY", &key).await;
    assert_error(code, &body, 404, "not_found");
    assert!(
        st.secrets()
            .reveal(&team, "OPENAI_API_KEY")
            .await
            .unwrap()
            .is_none()
    );
    let (_, list) = s.get("/v1/secrets", &key).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    assert_eq!(*changes.borrow_and_update(), v0 + 6);

    // Events: name only, in the team that owns the secret, filterable by type.
    let events = team_events(&s, &key).await;
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("secret."))
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "secret.deleted",
            "secret.updated",
            "secret.updated",
            "secret.created"
        ]
    );
    for e in events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("secret."))
    {
        assert_eq!(e["data"], json!({ "name": "OPENAI_API_KEY" }), "{e}");
        assert!(e.get("sandbox_id").is_none());
    }
    let (code, page) = s.get("/v1/events?type=secret.created", &other).await;
    assert_eq!(code, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");

    // Unauthenticated: 401.
    let resp = s
        .req(Method::GET, "/v1/secrets", None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// The team id behind an API key (from the admin key listing).
async fn team_of(s: &TestServer, key: &str) -> String {
    let (_, keys) = s.get("/v1/keys", &s.admin).await;
    keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| key.starts_with(k["prefix"].as_str().unwrap()))
        .map(|k| k["team_id"].as_str().unwrap().to_owned())
        .unwrap()
}

#[tokio::test]
async fn validation_errors_are_structured_and_never_echo_the_value() {
    logs();
    let s = TestServer::start(None).await;
    let key = s.admin.clone();
    let value = "val-9d2c4b1e77";
    let bad_names = [
        "".to_owned(),
        ".hidden".to_owned(),
        "-flag".to_owned(),
        "has space".to_owned(),
        "sl/ash".to_owned(),
        "ünï".to_owned(),
        "a".repeat(129),
    ];
    for name in &bad_names {
        let (code, body) = s
            .post("/v1/secrets", &key, json!({ "name": name, "value": value }))
            .await;
        assert_error(code, &body, 422, "invalid_argument");
        assert_eq!(body["error"]["details"]["field"], "name", "{name}: {body}");
        assert!(!body.to_string().contains(value));
    }
    let (code, _) = s
        .post(
            "/v1/secrets",
            &key,
            json!({ "name": "a".repeat(128), "value": value }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    // Bad names in the path.
    for (m, body) in [
        (Method::GET, None),
        (Method::DELETE, None),
        (Method::PUT, Some(json!({ "value": value }))),
    ] {
        let (code, body) = s.call(m, "/v1/secrets/.hidden", &key, body).await;
        assert_error(code, &body, 422, "invalid_argument");
    }

    // Values: empty, 64 KiB (fine), one byte more.
    let (code, body) = s
        .post("/v1/secrets", &key, json!({ "name": "E", "value": "" }))
        .await;
    assert_error(code, &body, 422, "invalid_argument");
    assert_eq!(body["error"]["details"]["field"], "value");
    let max = "v".repeat(64 * 1024);
    let (code, _) = s
        .post("/v1/secrets", &key, json!({ "name": "BIG", "value": max }))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let over = "w".repeat(64 * 1024 + 1);
    let (code, body) = s
        .post(
            "/v1/secrets",
            &key,
            json!({ "name": "BIGGER", "value": over }),
        )
        .await;
    assert_error(code, &body, 422, "invalid_argument");
    assert_eq!(body["error"]["details"]["field"], "value");
    assert!(body.to_string().len() < 1000);
    let (code, body) = put(&s, "/v1/secrets/BIG", &key, json!({ "value": over })).await;
    assert_error(code, &body, 422, "invalid_argument");
    // Over the JSON body limit altogether.
    let huge = "h".repeat(2 << 20);
    let (code, body) = s
        .post(
            "/v1/secrets",
            &key,
            json!({ "name": "HUGE", "value": huge }),
        )
        .await;
    assert_error(code, &body, 413, "payload_too_large");

    // A description holding the value would publish it.
    let (code, body) = s
        .post(
            "/v1/secrets",
            &key,
            json!({ "name": "D", "value": value, "description": format!("key {value}") }),
        )
        .await;
    assert_error(code, &body, 422, "invalid_argument");
    assert_eq!(body["error"]["details"]["field"], "description");
    assert!(!body.to_string().contains(value));
    let (code, body) = s
        .post(
            "/v1/secrets",
            &key,
            json!({ "name": "D", "value": "x", "description": "d".repeat(1025) }),
        )
        .await;
    assert_error(code, &body, 422, "invalid_argument");

    // Malformed bodies: 400/422 with messages that quote nothing from the body.
    let raw = |body: String| {
        s.req(Method::POST, "/v1/secrets", Some(&key))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        (
            format!("{{\"name\":\"N\",\"value\":\"{value}\""),
            400,
            "bad_request",
        ),
        (
            format!("{{\"name\":\"N\",\"value\":\"{value}\",\"x\":1}}"),
            422,
            "invalid_argument",
        ),
        (
            format!("{{\"name\":\"N\",\"{value}\":1}}"),
            422,
            "invalid_argument",
        ),
        (
            "{\"name\":\"N\",\"value\":123456789}".to_owned(),
            422,
            "invalid_argument",
        ),
        (
            format!("{{\"name\":[\"{value}\"],\"value\":\"v\"}}"),
            422,
            "invalid_argument",
        ),
        ("{\"name\":\"N\"}".to_owned(), 422, "invalid_argument"),
        ("".to_owned(), 400, "bad_request"),
        (format!("[\"{value}\"]"), 422, "invalid_argument"),
    ];
    for (body, status, code) in cases {
        let resp = raw(body.clone()).await.unwrap();
        let (st, answer) = common::json_of(resp).await;
        assert_error(st, &answer, status, code);
        let text = answer.to_string();
        assert!(!text.contains(value), "{body} → {text}");
        assert!(!text.contains("123456789"), "{body} → {text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn values_are_encrypted_at_rest_and_bound_to_team_and_name() {
    logs();
    let s = TestServer::start(None).await;
    let (team_b, _) = s.team_key("b").await;
    let team_a = team_of(&s, &s.admin).await;
    let value = "at-rest-3e8a1f60c2d4";
    let (code, _) = s
        .post(
            "/v1/secrets",
            &s.admin,
            json!({ "name": "A", "value": value }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let st = state(&s);

    // The database (and its WAL) never holds the value.
    for file in ["hutch.db", "hutch.db-wal"] {
        let bytes = std::fs::read(s.dir.path().join(file)).unwrap_or_default();
        assert!(!contains(&bytes, value), "{file} holds the value");
    }

    // Rows are nonce + ciphertext (+16-byte tag), a fresh nonce per write.
    let row = st.store().get_secret(&team_a, "A").await.unwrap().unwrap();
    assert_eq!(row.nonce.len(), 12);
    assert_eq!(row.ciphertext.len(), value.len() + 16);
    let (code, _) = put(&s, "/v1/secrets/A", &s.admin, json!({ "value": value })).await;
    assert_eq!(code, StatusCode::OK);
    let row2 = st.store().get_secret(&team_a, "A").await.unwrap().unwrap();
    assert_ne!(row.nonce, row2.nonce);
    assert_ne!(row.ciphertext, row2.ciphertext);

    // A row copied to another team, or renamed, does not decrypt.
    let moved = StoredSecret {
        team_id: team_b.clone(),
        ..row2.clone()
    };
    st.store().insert_secret(&moved).await.unwrap();
    let renamed = StoredSecret {
        name: "B".into(),
        ..row2.clone()
    };
    st.store().insert_secret(&renamed).await.unwrap();
    for (team, name) in [(&team_b, "A"), (&team_a, "B")] {
        let err = st.secrets().reveal(team, name).await.unwrap_err().0;
        assert_eq!(err.status(), 500);
        assert!(
            err.message.contains("cannot be decrypted"),
            "{}",
            err.message
        );
        assert!(err.message.contains(name));
        assert!(!err.message.contains(value));
    }
    // The DLP feed fails as a whole rather than silently skipping a secret.
    assert!(st.secrets().all_values().await.is_err());
    let mut bad = st.secrets().unreadable().await.unwrap();
    bad.sort();
    let mut want = vec![
        (team_b.clone(), "A".to_owned()),
        (team_a.clone(), "B".to_owned()),
    ];
    want.sort();
    assert_eq!(bad, want);
    // A flipped bit in place fails too.
    let mut flipped = row2.clone();
    flipped.ciphertext[0] ^= 0x01;
    st.store().update_secret(&flipped).await.unwrap();
    assert!(st.secrets().reveal(&team_a, "A").await.is_err());
    st.store().update_secret(&row2).await.unwrap();
    assert_eq!(
        st.secrets()
            .reveal(&team_a, "A")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        value
    );
    s.stop().await;
}

#[tokio::test]
async fn secrets_key_file_and_env_key_life_cycle() {
    logs();
    // First start creates a private 32-byte key file.
    let s = TestServer::start(None).await;
    let key_file = s.dir.path().join("secrets.key");
    let meta = std::fs::metadata(&key_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 65);
    let file_key = std::fs::read_to_string(&key_file).unwrap();
    // Subkeys for other uses (the gateway's CA key): stable per label, distinct across labels,
    // and the label of secret values is not handed out.
    let ca_key = state(&s)
        .secrets()
        .derive_key("hutch/gateway/ca-key/v1")
        .unwrap();
    assert_ne!(ca_key, state(&s).secrets().derive_key("other").unwrap());
    assert!(
        state(&s)
            .secrets()
            .derive_key("hutch/secrets/values/v1")
            .is_err()
    );
    let (code, _) = s
        .post(
            "/v1/secrets",
            &s.admin,
            json!({ "name": "K", "value": "file-key-value" }),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let dir = s.stop().await;

    // Group/other access: refused.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = hutch_server::spawn(config_with_key(&dir, None))
        .await
        .err()
        .expect("a world-readable key file is refused")
        .to_string();
    assert!(err.contains("secrets.key") && err.contains("0644"), "{err}");
    assert!(!err.contains(file_key.trim()));
    // Wrong length: refused.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key_file, "abcd\n").unwrap();
    let err = hutch_server::spawn(config_with_key(&dir, None))
        .await
        .err()
        .expect("a short key file is refused")
        .to_string();
    assert!(err.contains("32 bytes"), "{err}");
    // Missing while encrypted secrets exist: refused (a new key could not read them).
    std::fs::remove_file(&key_file).unwrap();
    let err = hutch_server::spawn(config_with_key(&dir, None))
        .await
        .err()
        .expect("a missing key file is not silently replaced")
        .to_string();
    assert!(err.contains("missing"), "{err}");
    assert!(!key_file.exists());

    // Restored: the secret reads again.
    std::fs::write(&key_file, &file_key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = TestServer::start_in(dir, None).await;
    let team = team_of(&s, &s.admin).await;
    assert_eq!(
        state(&s)
            .secrets()
            .reveal(&team, "K")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "file-key-value"
    );
    assert_eq!(
        state(&s)
            .secrets()
            .derive_key("hutch/gateway/ca-key/v1")
            .unwrap(),
        ca_key
    );
    let dir = s.stop().await;

    // HUTCH_SECRETS_KEY (hex or base64) wins over the file: with the file's key it reads.
    let env = vec![("HUTCH_SECRETS_KEY".to_owned(), file_key.trim().to_owned())];
    let cfg = ServerConfig::load_with_env(
        None,
        env,
        hutch_server::ConfigOverrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(cfg.secrets_key.is_some());
    assert!(
        !format!("{cfg:?}").contains(file_key.trim()),
        "Debug redacts the key"
    );
    std::fs::remove_file(&key_file).unwrap();
    let s = TestServer::start_with(dir, cfg).await;
    assert!(!key_file.exists(), "no key file with an env key");
    assert_eq!(
        state(&s)
            .secrets()
            .reveal(&team, "K")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "file-key-value"
    );
    let dir = s.stop().await;
    let bad = vec![("HUTCH_SECRETS_KEY".to_owned(), "c2hvcnQ=".to_owned())];
    let err = ServerConfig::load_with_env(None, bad, Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HUTCH_SECRETS_KEY") && !err.contains("c2hvcnQ"),
        "{err}"
    );

    // The wrong key: the server starts, reports the secret by name, and never returns garbage.
    let wrong = SecretsKey::from_bytes([0x42; 32]);
    let cfg = config_with_key(&dir, Some(wrong));
    let s = TestServer::start_with(dir, cfg).await;
    let err = state(&s).secrets().reveal(&team, "K").await.unwrap_err().0;
    assert_eq!(err.status(), 500);
    assert!(
        err.message.contains("secret K cannot be decrypted"),
        "{}",
        err.message
    );
    assert_eq!(
        state(&s).secrets().unreadable().await.unwrap(),
        vec![(team.clone(), "K".to_owned())]
    );
    assert!(
        logs_text().lines().any(|l| l.contains("ERROR")
            && l.contains("secret cannot be decrypted")
            && l.contains("name=K")),
        "the start-up check logs the unreadable secret"
    );
    // Metadata still works, and the secret can be replaced.
    let (code, _) = s.get("/v1/secrets/K", &s.admin).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = put(&s, "/v1/secrets/K", &s.admin, json!({ "value": "new" })).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        state(&s)
            .secrets()
            .reveal(&team, "K")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        "new"
    );
    s.stop().await;
}

#[tokio::test]
async fn no_value_reaches_responses_events_or_logs() {
    let logs = logs();
    let s = TestServer::start(None).await;
    let (_, other) = s.team_key("leaky").await;
    let admin = s.admin.clone();
    let key = admin.as_str();
    let other = other.as_str();
    let v1 = "LEAKCANARY-1-b7f3e0d2a9c4";
    let v2 = "LEAKCANARY-2-5a8c1d3e7f90";
    let mut seen: Vec<String> = Vec::new();
    let record = |resp: reqwest::Response| async move {
        let mut text = format!("{:?}\n", resp.headers());
        text.push_str(&resp.text().await.unwrap());
        text
    };
    let send = |m: Method, path: &str, k: &str, body: Option<String>| {
        let mut b = s.req(m, path, Some(k));
        if let Some(body) = body {
            b = b.header("content-type", "application/json").body(body);
        }
        b.send()
    };
    let requests: Vec<(Method, &str, &str, Option<String>)> = vec![
        (
            Method::POST,
            "/v1/secrets",
            key,
            Some(json!({ "name": "LEAK", "value": v1, "description": "d" }).to_string()),
        ),
        (
            Method::POST,
            "/v1/secrets",
            key,
            Some(json!({ "name": "LEAK", "value": v1 }).to_string()),
        ),
        (
            Method::POST,
            "/v1/secrets",
            key,
            Some(json!({ "name": "bad name", "value": v1 }).to_string()),
        ),
        (
            Method::POST,
            "/v1/secrets",
            key,
            Some(json!({ "name": "LEAK2", "value": v1, "description": v1 }).to_string()),
        ),
        (
            Method::POST,
            "/v1/secrets",
            key,
            Some(format!("{{\"name\":\"LEAK3\",\"value\":\"{v1}\"")),
        ),
        (
            Method::POST,
            "/v1/secrets",
            key,
            Some(format!(
                "{{\"name\":\"LEAK3\",\"value\":\"{v1}\",\"{v1}\":1}}"
            )),
        ),
        (Method::GET, "/v1/secrets", key, None),
        (Method::GET, "/v1/secrets/LEAK", key, None),
        (
            Method::PUT,
            "/v1/secrets/LEAK",
            key,
            Some(json!({ "value": v2 }).to_string()),
        ),
        (
            Method::PUT,
            "/v1/secrets/LEAK",
            other,
            Some(json!({ "value": v1 }).to_string()),
        ),
        (
            Method::PUT,
            "/v1/secrets/NOPE",
            key,
            Some(json!({ "value": v1 }).to_string()),
        ),
        (
            Method::PUT,
            "/v1/secrets/LEAK",
            key,
            Some(format!("{{\"value\":\"{v1}\",\"nope\":true}}")),
        ),
        (Method::GET, "/v1/secrets/LEAK", other, None),
        (Method::DELETE, "/v1/secrets/LEAK", other, None),
        (Method::GET, "/v1/secrets", key, None),
        (Method::GET, "/v1/openapi.json", key, None),
        (Method::DELETE, "/v1/secrets/LEAK", key, None),
    ];
    for (m, path, k, body) in requests {
        let resp = send(m.clone(), path, k, body).await.unwrap();
        seen.push(format!("{m} {path}: {}", record(resp).await));
    }
    // Server-side reads do not log values either.
    let st = state(&s);
    let team = team_of(&s, key).await;
    let (code, _) = s
        .post("/v1/secrets", key, json!({ "name": "LEAK", "value": v2 }))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(
        st.secrets()
            .reveal(&team, "LEAK")
            .await
            .unwrap()
            .unwrap()
            .as_str(),
        v2
    );
    assert!(!st.secrets().all_values().await.unwrap().is_empty());
    let (code, _) = s.delete("/v1/secrets/LEAK", key).await;
    assert_eq!(code, StatusCode::NO_CONTENT);

    for k in [key, other] {
        seen.push(serde_json::to_string(&team_events(&s, k).await).unwrap());
    }
    let (_, metrics) =
        common::json_of(s.req(Method::GET, "/metrics", None).send().await.unwrap()).await;
    seen.push(metrics.to_string());

    for v in [v1, v2] {
        for text in &seen {
            assert!(!text.contains(v), "a response holds the value: {text}");
        }
        let log = logs.lock().unwrap();
        assert!(!log.is_empty());
        assert!(!contains(&log, v), "the logs hold the value");
        for file in ["hutch.db", "hutch.db-wal"] {
            let bytes = std::fs::read(s.dir.path().join(file)).unwrap_or_default();
            assert!(!contains(&bytes, v), "{file} holds the value");
        }
    }
    // The log did capture the requests (the grep looked at something).
    // The log did capture these requests, down to debug level (the grep looked at something).
    let text = logs_text();
    assert!(text.contains("secret changed"));
    assert!(text.contains("INSERT INTO secrets"));
    s.stop().await;
}

#[tokio::test]
async fn store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = hutch_store::SqliteStore::open(&dir.path().join("s.db"))
        .await
        .unwrap();
    let team = hutch_api::sandbox::Team {
        id: "t1".into(),
        name: "t".into(),
        created_at: chrono::Utc::now(),
    };
    store.create_team(&team).await.unwrap();
    let now =
        chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()).unwrap();
    let row = StoredSecret {
        team_id: "t1".into(),
        name: "N".into(),
        description: Some("d".into()),
        hosts: vec!["api.example.com".into()],
        nonce: vec![1; 12],
        ciphertext: vec![2; 20],
        created_at: now,
        updated_at: now,
    };
    store.insert_secret(&row).await.unwrap();
    assert!(matches!(
        store.insert_secret(&row).await,
        Err(hutch_store::Error::Conflict(_))
    ));
    // Unknown team: refused by the foreign key.
    let orphan = StoredSecret {
        team_id: "nope".into(),
        ..row.clone()
    };
    assert!(store.insert_secret(&orphan).await.is_err());
    assert_eq!(store.get_secret("t1", "N").await.unwrap().unwrap(), row);
    assert!(store.get_secret("t1", "M").await.unwrap().is_none());
    assert_eq!(store.count_secrets().await.unwrap(), 1);
    let updated = StoredSecret {
        description: None,
        nonce: vec![3; 12],
        ..row.clone()
    };
    assert!(store.update_secret(&updated).await.unwrap());
    assert_eq!(
        store.list_secrets(Some("t1")).await.unwrap(),
        vec![updated.clone()]
    );
    assert_eq!(store.list_secrets(None).await.unwrap().len(), 1);
    assert!(store.list_secrets(Some("t2")).await.unwrap().is_empty());
    assert!(
        !format!("{updated:?}").contains("[3, 3"),
        "Debug skips the ciphertext"
    );
    assert!(store.delete_secret("t1", "N").await.unwrap());
    assert!(!store.delete_secret("t1", "N").await.unwrap());
    assert!(!store.update_secret(&updated).await.unwrap());
    assert_eq!(store.count_secrets().await.unwrap(), 0);
}
