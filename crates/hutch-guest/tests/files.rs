//! Files against a real guest on a Unix socket.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Guest, Lines, code};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

fn q(p: &str) -> String {
    p.replace('%', "%25")
        .replace(' ', "%20")
        .replace('&', "%26")
}

#[tokio::test]
async fn write_read_ranges_and_stat() {
    let g = Guest::start().await;
    let p = g.path("a/b/hello.txt");
    let (st, _, body) = g
        .raw(
            Method::PUT,
            &format!("/files?path={}&mode=0640", q(&p)),
            "hello world",
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body:?}");
    let info: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(info["kind"], "file");
    assert_eq!(info["size"], 11);
    assert_eq!(info["mode"], 0o640);
    assert_eq!(info["name"], "hello.txt");

    let (st, h, body) = g
        .raw(Method::GET, &format!("/files?path={}", q(&p)), Bytes::new())
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(&body[..], b"hello world");
    let (_, _, body) = g
        .raw(
            Method::GET,
            &format!("/files?path={}&offset=6&length=3", q(&p)),
            Bytes::new(),
        )
        .await;
    assert_eq!(&body[..], b"wor");
    let (_, _, body) = g
        .raw(
            Method::GET,
            &format!("/files?path={}&offset=6", q(&p)),
            Bytes::new(),
        )
        .await;
    assert_eq!(&body[..], b"world");
    let (_, _, body) = g
        .raw(
            Method::GET,
            &format!("/files?path={}&offset=100", q(&p)),
            Bytes::new(),
        )
        .await;
    assert!(body.is_empty());

    // Replace keeps the mode unless given.
    let (st, _, _) = g
        .raw(Method::PUT, &format!("/files?path={}", q(&p)), "v2")
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, info) = g.get(&format!("/files/stat?path={}", q(&p))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(info["size"], 2);
    assert_eq!(info["mode"], 0o640);
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(g.path("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    std::os::unix::fs::symlink("hello.txt", g.path("a/b/link")).unwrap();
    let (_, info) = g
        .get(&format!("/files/stat?path={}", q(&g.path("a/b/link"))))
        .await;
    assert_eq!(info["kind"], "symlink");
    assert_eq!(info["link_target"], "hello.txt");

    // Errors.
    let (st, v) = g
        .get(&format!("/files?path={}", q(&g.path("missing"))))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
    let (st, v) = g.get(&format!("/files?path={}", q(&g.path("a")))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (st, v) = g.get("/files?path=relative/x").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["details"]["field"], "path");
    let (st, _) = g
        .get(&format!("/files/stat?path={}", q(&g.path("missing"))))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = g
        .raw(Method::PUT, &format!("/files?path={}&mode=999", q(&p)), "x")
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _, _) = g
        .raw(
            Method::PUT,
            &format!("/files?path={}", q(&g.path("a"))),
            "x",
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn upload_too_large_is_413() {
    let g = Guest::start().await;
    let p = g.path("big");
    let req = Guest::request(Method::PUT, &format!("/files?path={}", q(&p)))
        .header("content-length", (2u64 << 30).to_string())
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = g.send(req).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!std::path::Path::new(&p).exists());
}

#[tokio::test]
async fn list_mkdir_move_remove() {
    let g = Guest::start().await;
    let root = g.path("tree");
    let (st, info) = g
        .post(
            "/files/mkdir",
            json!({"path": format!("{root}/x/y/z"), "mode": 0o700}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{info}");
    assert_eq!(info["kind"], "dir");
    assert_eq!(info["mode"], 0o700);
    // mkdir -p on an existing directory is fine.
    let (st, _) = g
        .post("/files/mkdir", json!({"path": format!("{root}/x")}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    std::fs::write(format!("{root}/x/f1"), "1").unwrap();
    std::fs::write(format!("{root}/top"), "t").unwrap();
    let (st, v) = g
        .post("/files/mkdir", json!({"path": format!("{root}/top")}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");

    let (st, list) = g.get(&format!("/files/list?path={}", q(&root))).await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["top", "x"]);
    assert_eq!(list["truncated"], false);
    let (_, list) = g
        .get(&format!("/files/list?path={}&depth=3", q(&root)))
        .await;
    let paths: Vec<String> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert!(paths.contains(&format!("{root}/x/y/z")));
    let (st, _) = g
        .get(&format!("/files/list?path={}&depth=0", q(&root)))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = g
        .get(&format!("/files/list?path={}&depth=11", q(&root)))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = g
        .get(&format!("/files/list?path={}", q(&g.path("nope"))))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Move: conflict without overwrite, then with it.
    let (st, v) = g
        .post(
            "/files/move",
            json!({"from": format!("{root}/x/f1"), "to": format!("{root}/top")}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, v) = g
        .post(
            "/files/move",
            json!({"from": format!("{root}/x/f1"), "to": format!("{root}/top"), "overwrite": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["path"], format!("{root}/top"));
    assert_eq!(std::fs::read_to_string(format!("{root}/top")).unwrap(), "1");
    let (st, _) = g
        .post(
            "/files/move",
            json!({"from": format!("{root}/top"), "to": format!("{root}/new/dir/top2")}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = g
        .post(
            "/files/move",
            json!({"from": format!("{root}/missing"), "to": format!("{root}/m2")}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = g
        .post(
            "/files/move",
            json!({"from": "rel", "to": format!("{root}/m2")}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    // Remove.
    let (st, v) = g
        .json(
            Method::DELETE,
            &format!("/files?path={}", q(&format!("{root}/x"))),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, _) = g
        .json(
            Method::DELETE,
            &format!("/files?path={}&recursive=true", q(&format!("{root}/x"))),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(!std::path::Path::new(&format!("{root}/x")).exists());
    let (st, _) = g
        .json(
            Method::DELETE,
            &format!("/files?path={}", q(&format!("{root}/new/dir/top2"))),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = g
        .json(
            Method::DELETE,
            &format!("/files?path={}", q(&format!("{root}/nope"))),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = g
        .json(Method::DELETE, "/files?path=/&recursive=true", None)
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn archive_round_trip() {
    let g = Guest::start().await;
    let src = g.path("src");
    std::fs::create_dir_all(format!("{src}/sub/deeper")).unwrap();
    std::fs::write(format!("{src}/a.txt"), "alpha").unwrap();
    std::fs::write(format!("{src}/sub/deeper/b.bin"), vec![7u8; 300_000]).unwrap();
    let (st, h, tar) = g
        .raw(
            Method::GET,
            &format!("/files/archive?path={}", q(&src)),
            Bytes::new(),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-type"], "application/x-tar");
    assert!(tar.len() > 300_000);

    let dst = g.path("dst/inner");
    let (st, _, body) = g
        .raw(
            Method::PUT,
            &format!("/files/archive?path={}", q(&dst)),
            tar,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body:?}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["entries"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(
        std::fs::read_to_string(format!("{dst}/a.txt")).unwrap(),
        "alpha"
    );
    assert_eq!(
        std::fs::read(format!("{dst}/sub/deeper/b.bin")).unwrap(),
        vec![7u8; 300_000]
    );

    let (st, _, _) = g
        .raw(
            Method::GET,
            &format!("/files/archive?path={}", q(&g.path("none"))),
            Bytes::new(),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = g
        .raw(
            Method::PUT,
            &format!("/files/archive?path={}", q(&dst)),
            "definitely not a tar file at all, not even close.".repeat(20),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn watch_reports_changes() {
    let g = Guest::start().await;
    let dir = g.path("watched");
    std::fs::create_dir_all(format!("{dir}/existing")).unwrap();
    let resp = g
        .stream(
            Method::GET,
            &format!("/files/watch?path={}&recursive=true", q(&dir)),
            None,
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut lines = Lines::new(resp);
    // The watch is established before the response starts.
    std::fs::write(format!("{dir}/new.txt"), "x").unwrap();
    std::fs::write(format!("{dir}/existing/inner.txt"), "y").unwrap();
    std::fs::create_dir(format!("{dir}/later")).unwrap();
    let mut seen: Vec<(String, String)> = Vec::new();
    let want_late = format!("{dir}/later/late.txt");
    let mut wrote_late = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|(k, p)| k == "create" && p == &want_late) {
        let (event, data) = tokio::time::timeout_at(deadline, lines.next_sse())
            .await
            .expect("events")
            .unwrap();
        assert_eq!(event, data["kind"]);
        seen.push((event, data["path"].as_str().unwrap().to_string()));
        if !wrote_late
            && seen
                .iter()
                .any(|(k, p)| k == "create" && p == &format!("{dir}/later"))
        {
            // The new directory is watched once its create event was handled.
            wrote_late = true;
            std::fs::write(&want_late, "z").unwrap();
        }
    }
    assert!(
        seen.contains(&("create".into(), format!("{dir}/new.txt"))),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("create".into(), format!("{dir}/existing/inner.txt"))),
        "{seen:?}"
    );

    let (st, _) = g
        .get(&format!("/files/watch?path={}", q(&g.path("missing"))))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}
