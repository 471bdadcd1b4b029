//! `hutch guest`: the in-sandbox daemon.
//!
//! It runs as PID 1 inside every sandbox (or standalone on any Linux box) and serves an HTTP
//! API on a Unix socket or TCP: processes (`/processes`, `/exec`), terminals (`/terminals`),
//! files (`/files`) and `/health`. Every request needs the guest token.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod files;
pub mod health;
pub mod ports;
pub mod process;
pub mod reaper;
pub mod routes;
pub mod state;
pub mod stream;
pub mod terminal;
pub mod users;

use std::future::IntoFuture;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

pub use config::GuestConfig;
pub use error::GuestError;
pub use routes::router;
pub use state::GuestState;

/// Where the guest listens.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket (inside a sandbox).
    Unix(tokio::net::UnixListener),
    /// TCP (standalone).
    Tcp(tokio::net::TcpListener),
}

/// How long children get between SIGTERM and SIGKILL on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serve until SIGTERM/SIGINT (then SIGTERM all children, wait up to 2s, exit). `ready` is
/// called once the server accepts requests.
pub async fn serve(
    listener: Listener,
    config: GuestConfig,
    ready: impl FnOnce() + Send,
) -> Result<(), GuestError> {
    // Start reaping at once: as PID 1 we inherit orphans from the first moment.
    reaper::global()?;
    if std::process::id() == 1
        && let Some(h) = config.hostname.as_deref().filter(|h| !h.is_empty())
        // The engine already set it (and took away the capability to change it).
        && nix::unistd::gethostname().ok().as_deref() != Some(std::ffi::OsStr::new(h))
        && let Err(e) = nix::unistd::sethostname(h)
    {
        tracing::warn!(error = %e, hostname = h, "cannot set hostname");
    }
    let state = GuestState::new(config);
    let app = router(state.clone());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    ready();
    tracing::info!("guest serving");
    let served = match listener {
        Listener::Unix(l) => {
            tokio::select! {
                r = axum::serve(l, app).into_future() => Some(r),
                _ = stop => None,
            }
        }
        Listener::Tcp(l) => {
            tokio::select! {
                r = axum::serve(l, app).into_future() => Some(r),
                _ = stop => None,
            }
        }
    };
    let pid1 = std::process::id() == 1;
    if pid1 {
        // As init, everything in the sandbox is ours to stop (kill(-1) spares PID 1).
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), Signal::SIGTERM);
    }
    state.shutdown(SHUTDOWN_GRACE).await;
    if pid1 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), Signal::SIGKILL);
    }
    match served {
        Some(r) => r.map_err(GuestError::from),
        None => Ok(()),
    }
}
