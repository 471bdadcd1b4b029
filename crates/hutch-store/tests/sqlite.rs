//! SqliteStore against a real SQLite file.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use hutch_api::sandbox::{ApiKey, NetworkSpec, OnTimeout, SandboxState, Team};
use hutch_store::{
    Error, EventFilter, NewEvent, SandboxFilter, SandboxRecord, SqliteStore, Store, StoredKey,
};

async fn open() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hutch.db"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

fn team(id: &str) -> Team {
    Team {
        id: id.into(),
        name: format!("team {id}"),
        created_at: Utc::now(),
    }
}

fn sandbox(id: &str, team: &str, meta: &[(&str, &str)]) -> SandboxRecord {
    SandboxRecord {
        seq: 0,
        id: id.into(),
        team_id: team.into(),
        template: "base".into(),
        state: SandboxState::Starting,
        cpus: 1.0,
        memory_mb: 512,
        pids: 512,
        timeout_s: 300,
        on_timeout: OnTimeout::Kill,
        env: BTreeMap::from([("SECRET".to_string(), "s3cr3t".to_string())]),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        network: NetworkSpec::default(),
        created_at: Utc::now(),
        started_at: None,
        expires_at: None,
        reason: None,
    }
}

#[tokio::test]
async fn teams_and_keys() {
    let (_dir, store) = open().await;
    store.ping().await.unwrap();
    store.create_team(&team("t1")).await.unwrap();
    assert!(matches!(
        store.create_team(&team("t1")).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.list_teams().await.unwrap().len(), 1);
    assert_eq!(store.get_team("t1").await.unwrap().unwrap().name, "team t1");
    assert!(store.get_team("nope").await.unwrap().is_none());

    let key = ApiKey {
        id: "key-1".into(),
        name: "admin".into(),
        team_id: "t1".into(),
        admin: true,
        prefix: "hk_abcde".into(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    store
        .create_key(&StoredKey {
            key: key.clone(),
            hash: "h1".into(),
        })
        .await
        .unwrap();
    // Foreign key: unknown team is refused.
    let mut bad = key.clone();
    bad.id = "key-2".into();
    bad.team_id = "missing".into();
    assert!(
        store
            .create_key(&StoredKey {
                key: bad,
                hash: "h2".into()
            })
            .await
            .is_err()
    );

    let found = store.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(found.id, "key-1");
    assert!(found.admin);
    assert!(store.key_by_hash("zz").await.unwrap().is_none());
    assert_eq!(store.count_keys().await.unwrap(), 1);
    assert_eq!(store.list_keys(Some("t1")).await.unwrap().len(), 1);
    assert_eq!(store.list_keys(Some("t2")).await.unwrap().len(), 0);
    assert!(store.revoke_key("key-1", Utc::now()).await.unwrap());
    assert!(!store.revoke_key("key-1", Utc::now()).await.unwrap());
    assert!(
        store
            .key_by_hash("h1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(
        store
            .get_key("key-1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
}

#[tokio::test]
async fn sandboxes_crud_filters_and_cursor() {
    let (_dir, store) = open().await;
    store.create_team(&team("t1")).await.unwrap();
    store.create_team(&team("t2")).await.unwrap();
    for i in 0..5 {
        let meta: &[(&str, &str)] = if i % 2 == 0 {
            &[("env", "prod")]
        } else {
            &[("env", "dev")]
        };
        store
            .insert_sandbox(&sandbox(&format!("sb-{i}"), "t1", meta))
            .await
            .unwrap();
    }
    store
        .insert_sandbox(&sandbox("sb-other", "t2", &[]))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_sandbox(&sandbox("sb-0", "t1", &[])).await,
        Err(Error::Conflict(_))
    ));

    let got = store.get_sandbox("sb-0").await.unwrap().unwrap();
    assert_eq!(got.env["SECRET"], "s3cr3t");
    assert_eq!(got.metadata["env"], "prod");
    let api = serde_json::to_string(&got.to_api()).unwrap();
    assert!(!api.contains("s3cr3t"));

    let t1 = SandboxFilter {
        team_id: Some("t1".into()),
        ..Default::default()
    };
    let all = store.list_sandboxes(&t1).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["sb-4", "sb-3", "sb-2", "sb-1", "sb-0"]
    );

    // Pagination by seq.
    let page1 = store
        .list_sandboxes(&SandboxFilter {
            limit: Some(2),
            ..t1.clone()
        })
        .await
        .unwrap();
    assert_eq!(page1.len(), 2);
    let page2 = store
        .list_sandboxes(&SandboxFilter {
            limit: Some(2),
            before_seq: Some(page1[1].seq),
            ..t1.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["sb-2", "sb-1"]
    );

    // Metadata filter.
    let prod = store
        .list_sandboxes(&SandboxFilter {
            metadata: vec![("env".into(), "prod".into())],
            ..t1.clone()
        })
        .await
        .unwrap();
    assert_eq!(prod.len(), 3);

    // State transitions are compare-and-set.
    let now = Utc::now();
    assert!(
        store
            .mark_sandbox_running("sb-0", now, now - Duration::seconds(1))
            .await
            .unwrap()
    );
    assert!(!store.mark_sandbox_running("sb-0", now, now).await.unwrap());
    assert!(
        store
            .set_sandbox_state(
                "sb-1",
                &[SandboxState::Starting],
                SandboxState::Error,
                Some("boom")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_sandbox_state("sb-1", &[SandboxState::Running], SandboxState::Paused, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .get_sandbox("sb-1")
            .await
            .unwrap()
            .unwrap()
            .reason
            .as_deref(),
        Some("boom")
    );
    let running = store
        .list_sandboxes(&SandboxFilter {
            states: vec![SandboxState::Running],
            ..t1.clone()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);

    // Expiry.
    let expired = store.expired_sandboxes(Utc::now()).await.unwrap();
    assert_eq!(
        expired.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["sb-0"]
    );
    // Expiring is compare-and-set on the expiry too.
    assert!(
        !store
            .expire_sandbox(
                "sb-0",
                now - Duration::seconds(10),
                SandboxState::Paused,
                "timed out"
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_sandbox_expiry("sb-0", 60, Some(Utc::now() + Duration::seconds(60)))
            .await
            .unwrap()
    );
    assert!(
        store
            .expired_sandboxes(Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .expire_sandbox("sb-0", Utc::now(), SandboxState::Stopped, "timed out")
            .await
            .unwrap()
    );
    assert!(
        store
            .expire_sandbox(
                "sb-0",
                Utc::now() + Duration::seconds(61),
                SandboxState::Paused,
                "timed out"
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_sandbox("sb-0").await.unwrap().unwrap().state,
        SandboxState::Paused
    );
    assert!(
        store
            .set_sandbox_state("sb-0", &[], SandboxState::Running, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_sandbox("sb-0").await.unwrap().unwrap().timeout_s,
        60
    );

    let counts = store.count_sandboxes_by_state().await.unwrap();
    assert_eq!(counts[&SandboxState::Running], 1);
    assert_eq!(counts[&SandboxState::Error], 1);
    assert_eq!(counts[&SandboxState::Starting], 4);
    assert_eq!(store.template_usage().await.unwrap()["base"], 5);

    // Soft delete.
    assert!(store.delete_sandbox("sb-0", Utc::now()).await.unwrap());
    assert!(!store.delete_sandbox("sb-0", Utc::now()).await.unwrap());
    assert!(store.get_sandbox("sb-0").await.unwrap().is_none());
    assert_eq!(store.list_sandboxes(&t1).await.unwrap().len(), 4);
}

#[tokio::test]
async fn events_newest_first_with_filters() {
    let (_dir, store) = open().await;
    for i in 0..6 {
        let ev = NewEvent {
            team_id: Some(if i < 5 { "t1" } else { "t2" }.into()),
            sandbox_id: Some(format!("sb-{}", i % 2)),
            kind: if i % 3 == 0 {
                "sandbox.created"
            } else {
                "sandbox.started"
            }
            .into(),
            time: Utc::now(),
            data: serde_json::json!({ "i": i }),
        };
        store.insert_event(&ev).await.unwrap();
    }
    let t1 = EventFilter {
        team_id: Some("t1".into()),
        ..Default::default()
    };
    let all = store.list_events(&t1).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all[0].data["i"], 4);
    let sb0 = store
        .list_events(&EventFilter {
            sandbox_id: Some("sb-0".into()),
            ..t1.clone()
        })
        .await
        .unwrap();
    assert_eq!(sb0.len(), 3);
    let created = store
        .list_events(&EventFilter {
            kind: Some("sandbox.created".into()),
            ..t1.clone()
        })
        .await
        .unwrap();
    assert_eq!(created.len(), 2);
    let page = store
        .list_events(&EventFilter {
            before: Some(all[1].id),
            limit: Some(2),
            ..t1.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [all[2].id, all[3].id]
    );
}

#[tokio::test]
async fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hutch.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_team(&team("t1")).await.unwrap();
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.list_teams().await.unwrap().len(), 1);
}
