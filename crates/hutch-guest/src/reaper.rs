//! The one process-global child reaper.
//!
//! The guest may run as PID 1, so it must reap every child (including orphans re-parented to
//! it). A single reaper thread listens to `SIGCHLD` and loops `waitpid(-1, WNOHANG)`,
//! dispatching statuses to waiters registered by pid. Children are spawned while holding the
//! waiter-map lock, so a child can never be reaped before its waiter is registered, and
//! `std::process::Command::spawn`'s own `waitpid` after a failed `exec` cannot race the reaper.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::error::GuestError;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitStatus {
    /// Exit code when it exited normally.
    pub code: Option<i32>,
    /// Signal number when a signal killed it.
    pub signal: Option<i32>,
}

/// The process-global reaper.
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

static REAPER: OnceLock<Result<Reaper, String>> = OnceLock::new();

/// The reaper, started on first use (once per OS process).
pub fn global() -> Result<&'static Reaper, GuestError> {
    REAPER
        .get_or_init(start)
        .as_ref()
        .map_err(|e| GuestError::Internal(format!("child reaper unavailable: {e}")))
}

fn start() -> Result<Reaper, String> {
    if std::process::id() != 1 {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integer arguments and touches no
        // memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "PR_SET_CHILD_SUBREAPER failed");
        }
    }
    std::thread::Builder::new()
        .name("hutch-reaper".into())
        .stack_size(256 * 1024)
        .spawn(reaper_thread)
        .map_err(|e| e.to_string())?;
    Ok(Reaper {
        waiters: Mutex::new(HashMap::new()),
    })
}

fn reaper_thread() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build reaper runtime");
            return;
        }
    };
    rt.block_on(async {
        let mut sigchld =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGCHLD");
                    return;
                }
            };
        loop {
            // Reap first: children may have exited before the handler was installed.
            if let Ok(r) = global() {
                r.reap_all();
            }
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawn `cmd` and register a waiter for its exit status.
    pub fn spawn(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        let mut waiters = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Reap every child that has exited.
    fn reap_all(&self) {
        let mut waiters = self.lock();
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (
                    pid,
                    ExitStatus {
                        code: Some(code),
                        signal: None,
                    },
                ),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (
                    pid,
                    ExitStatus {
                        code: None,
                        signal: Some(sig as i32),
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            match waiters.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => tracing::debug!(pid = pid.as_raw(), "reaped orphan"),
            }
        }
    }
}
