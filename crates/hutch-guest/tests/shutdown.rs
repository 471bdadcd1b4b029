//! SIGTERM stops the guest and terminates its children. Runs alone in its own test binary
//! because it signals the test process.

mod common;

use std::time::Duration;

use common::{Guest, TOKEN};
use hutch_guest::{GuestConfig, Listener};
use hyper::StatusCode;
use serde_json::json;

#[tokio::test]
async fn sigterm_terminates_children_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("g.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(hutch_guest::serve(
        Listener::Unix(listener),
        GuestConfig {
            token: TOKEN.into(),
            ..Default::default()
        },
        move || {
            let _ = tx.send(());
        },
    ));
    rx.await.unwrap();
    let g = Guest {
        dir,
        socket,
        _task: tokio::spawn(async {}),
    };
    let (st, info) = g
        .post(
            "/processes",
            json!({"command": "trap 'exit 7' TERM; while :; do sleep 0.05; done"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let pid = info["pid"].as_i64().unwrap() as i32;
    // Give the shell a moment to install its trap: poll until it runs a child.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .is_ok_and(|c| !c.trim().is_empty())
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve returned");
    res.unwrap().unwrap();
    // The child got SIGTERM (and is gone).
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err());
}
