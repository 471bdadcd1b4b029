//! A small harness for tests with real sandboxes: the test binary is also the guest (the engine
//! runs `<this exe> guest --listen-fd 3 --status-fd 4 --config-fd 5` as PID 1 of each sandbox),
//! and the async tests run concurrently on one multi-threaded runtime.
#![allow(dead_code)]

use std::future::Future;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::time::{Duration, Instant};

/// One test.
pub type TestFn = fn() -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// `[(name, fn)]` from async fn names.
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), (|| Box::pin($name())) as runner::TestFn)),*]
    };
}
pub(crate) use tests;

/// Runs the guest when asked to, else the selected tests (libtest-like output and exit code).
pub fn main(all: &[(&str, TestFn)]) {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("guest") {
        guest_main(&args[2..]);
        return;
    }

    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in all {
            println!("{name}: test");
        }
        return;
    }
    let selected: Vec<_> = all
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("\nrunning {} tests", selected.len());
    let results: Vec<(&str, Result<(), String>, Duration)> = rt.block_on(async {
        let mut handles = Vec::new();
        for (name, f) in selected {
            let start = Instant::now();
            let h = tokio::spawn(f());
            handles.push((*name, h, start));
        }
        let mut out = Vec::new();
        for (name, h, start) in handles {
            let r = h.await.map_err(|e| {
                let p = e.into_panic();
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            });
            out.push((name, r, start.elapsed()));
        }
        out
    });
    let mut failed = 0;
    for (name, r, took) in &results {
        match r {
            Ok(()) => println!("test {name} ... ok ({:.1}s)", took.as_secs_f64()),
            Err(msg) => {
                failed += 1;
                println!("test {name} ... FAILED\n    {msg}");
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        results.len() - failed
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

/// `guest --listen-fd N --status-fd N --config-fd N`, as the engine launches it.
pub fn guest_main(args: &[String]) {
    let flag = |name: &str| -> i32 {
        let i = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("missing {name}"));
        args[i + 1].parse().unwrap()
    };
    let (listen_fd, status_fd, config_fd) = (
        flag("--listen-fd"),
        flag("--status-fd"),
        flag("--config-fd"),
    );
    // SAFETY: the engine hands us these fds for our exclusive use.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(config_fd) });
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    let config: hutch_guest::GuestConfig = serde_json::from_slice(&buf).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // SAFETY: as above.
        let std_l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(listen_fd) };
        std_l.set_nonblocking(true).unwrap();
        let listener =
            hutch_guest::Listener::Unix(tokio::net::UnixListener::from_std(std_l).unwrap());
        let ready = move || {
            // SAFETY: as above.
            let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(status_fd) });
            let _ = std::io::Write::write_all(&mut f, b"R");
        };
        hutch_guest::serve(listener, config, ready).await.unwrap();
    });
}
