//! Auth, health, error envelopes, and the router used in-process.

mod common;

use axum::body::Body;
use bytes::Bytes;
use common::{Guest, TOKEN, code};
use http_body_util::{BodyExt, Full};
use hutch_guest::{GuestConfig, GuestState, router};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

#[tokio::test]
async fn auth_is_required() {
    let g = Guest::start().await;
    let send = |auth: Option<(&'static str, String)>| {
        let mut b = Request::builder()
            .method(Method::GET)
            .uri("http://guest/health");
        if let Some((h, v)) = auth {
            b = b.header(h, v);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    for auth in [
        None,
        Some(("x-hutch-token", "wrong".to_string())),
        Some(("authorization", "Bearer nope".to_string())),
        Some(("authorization", format!("Basic {TOKEN}"))),
    ] {
        let resp = g.send(send(auth)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let v: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(code(&v), "unauthorized");
    }
    let resp = g
        .send(send(Some(("authorization", format!("Bearer {TOKEN}")))))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = g
        .send(send(Some(("x-hutch-token", TOKEN.to_string()))))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Unknown routes need the token too.
    let req = Request::builder()
        .uri("http://guest/nope")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(g.send(req).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_reports_usage() {
    let g = Guest::start().await;
    let (st, v) = g.get("/health").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert!(v["processes"].as_u64().unwrap() >= 1);
    assert_eq!(v["terminals"], 0);
    assert!(v["uptime_ms"].is_u64());
    assert!(v["version"].is_string());
}

#[tokio::test]
async fn unknown_routes_are_enveloped() {
    let g = Guest::start().await;
    let (st, v) = g.get("/does/not/exist").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
    let (st, v) = g.json(Method::PATCH, "/processes", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
    let (st, v) = g.get("/processes?state=sleeping").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(code(&v), "bad_request");
}

#[tokio::test]
async fn router_works_in_process() {
    let app = router(GuestState::new(GuestConfig {
        token: "t".into(),
        ..Default::default()
    }));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/exec")
        .header("x-hutch-token", "t")
        .body(Body::from(json!({"cmd": ["echo", "oneshot"]}).to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["stdout"], "oneshot\n");

    let req = Request::builder()
        .uri("/processes")
        .header("x-hutch-token", "t")
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["state"], "exited");
}
