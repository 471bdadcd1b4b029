//! Processes: spawning, output collection, exit tracking and the process table.

pub mod output;
pub mod routes;
pub mod spawn;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hutch_api::process::{ProcessInfo, ProcessState, StartProcess, StreamKind};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, watch};

use crate::error::GuestError;
use crate::reaper::{self, ExitStatus};
use crate::users::UserDb;
use output::{Cursor, ExitInfo, OUTPUT_CAPACITY, Output, incomplete_utf8_tail};
use spawn::{Detach, LaunchRequest};

/// How many exited processes are remembered (oldest forgotten first).
pub const MAX_EXITED: usize = 128;
/// How long output is still collected after the process exited while the pipes stay open
/// (held by a background grandchild), measured as idle time per read.
const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// Upper bound on collecting output after exit.
const DRAIN_MAX: Duration = Duration::from_secs(3);

/// One process started by the guest.
#[derive(Debug)]
pub struct ProcessEntry {
    /// Numeric part of the id.
    pub num: u64,
    /// OS pid (also its process group id).
    pub pid: i32,
    /// Argument vector.
    pub argv: Vec<String>,
    /// User tag.
    pub tag: Option<String>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    started: Instant,
    /// Combined output and exit.
    pub output: Arc<Output>,
    stdin: Arc<tokio::sync::Mutex<Option<pipe::Sender>>>,
    reaped: AtomicBool,
    timed_out: AtomicBool,
}

impl ProcessEntry {
    /// The public id (`p-N`).
    pub fn id(&self) -> String {
        format!("p-{}", self.num)
    }

    /// Wire description.
    pub fn info(&self) -> ProcessInfo {
        let exit = self.output.exit();
        ProcessInfo {
            id: self.id(),
            pid: self.pid,
            argv: self.argv.clone(),
            tag: self.tag.clone(),
            state: if exit.is_some() {
                ProcessState::Exited
            } else {
                ProcessState::Running
            },
            exit_code: exit.and_then(|e| e.status.code),
            signal: exit.and_then(|e| e.status.signal),
            timed_out: exit.map(|e| e.timed_out).unwrap_or(false),
            started_at: self.started_at,
            finished_at: exit.map(|e| e.finished_at),
            duration_ms: exit.map(|e| e.duration_ms),
            output_bytes: self.output.end(),
        }
    }

    /// True until the OS process was reaped.
    pub fn is_alive(&self) -> bool {
        !self.reaped.load(Ordering::SeqCst)
    }

    /// Signal the process group (409 once the process is gone).
    pub fn signal(&self, sig: Signal) -> Result<(), GuestError> {
        if !self.is_alive() {
            return Err(GuestError::Conflict(format!(
                "process {} has exited",
                self.id()
            )));
        }
        match killpg(Pid::from_raw(self.pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(GuestError::Internal(format!("kill failed: {e}"))),
        }
    }

    /// Write to stdin, optionally closing it afterwards.
    pub async fn write_stdin(&self, data: &[u8], close: bool) -> Result<(), GuestError> {
        if self.output.exit().is_some() || !self.is_alive() {
            return Err(GuestError::Conflict(format!(
                "process {} has exited",
                self.id()
            )));
        }
        let mut guard = self.stdin.lock().await;
        let Some(sender) = guard.as_mut() else {
            return Err(GuestError::Conflict(format!(
                "stdin of {} is closed",
                self.id()
            )));
        };
        if let Err(e) = sender.write_all(data).await {
            *guard = None;
            return Err(if e.kind() == std::io::ErrorKind::BrokenPipe {
                GuestError::Conflict(format!("stdin of {} is closed by the process", self.id()))
            } else {
                GuestError::Internal(format!("stdin write failed: {e}"))
            });
        }
        if close {
            *guard = None;
        }
        Ok(())
    }

    /// A reader of the output from `offset`.
    pub fn cursor(&self, offset: u64, follow: bool) -> Cursor {
        Cursor::new(self.output.clone(), offset, follow, false)
    }
}

type Table = Arc<Mutex<BTreeMap<u64, Arc<ProcessEntry>>>>;

/// All processes of a guest.
#[derive(Debug, Default)]
pub struct ProcessTable {
    next: AtomicU64,
    table: Table,
}

/// A started process, with the blocking consumer cursor when one was asked for.
pub struct Started {
    /// The process.
    pub entry: Arc<ProcessEntry>,
    /// Blocking consumer attached from offset 0 (for streaming starts and `exec`).
    pub consumer: Option<Cursor>,
}

impl ProcessTable {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ProcessEntry>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Look a process up by its `p-N` id.
    pub fn get(&self, id: &str) -> Result<Arc<ProcessEntry>, GuestError> {
        id.strip_prefix("p-")
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|n| self.lock().get(&n).cloned())
            .ok_or_else(|| GuestError::NotFound(format!("no such process: {id}")))
    }

    /// All processes, oldest first.
    pub fn list(&self) -> Vec<Arc<ProcessEntry>> {
        self.lock().values().cloned().collect()
    }

    /// Forget a process.
    pub fn remove(&self, num: u64) {
        self.lock().remove(&num);
    }

    /// Processes still running.
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|p| p.output.exit().is_none())
            .count()
    }

    /// Validate and start a process.
    pub async fn start(
        &self,
        req: StartProcess,
        base_env: &BTreeMap<String, String>,
        users: &UserDb,
        blocking_consumer: bool,
    ) -> Result<Started, GuestError> {
        let argv = match (req.cmd, req.command) {
            (Some(cmd), None) => cmd,
            (None, Some(command)) => vec!["/bin/sh".to_string(), "-c".to_string(), command],
            (Some(_), Some(_)) => {
                return Err(GuestError::invalid(
                    "cmd",
                    "give exactly one of cmd or command",
                ));
            }
            (None, None) => {
                return Err(GuestError::invalid(
                    "cmd",
                    "one of cmd or command is required",
                ));
            }
        };
        let launch = spawn::prepare(
            LaunchRequest {
                argv,
                base_env,
                env: &req.env,
                cwd: req.cwd.as_deref(),
                user: req.user.as_deref(),
                term: "xterm-256color",
            },
            users,
        )?;
        let mut cmd = spawn::command(&launch, Detach::ProcessGroup);
        let want_stdin = req.keep_stdin || req.stdin.is_some();
        cmd.stdin(if want_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());

        let reaper = reaper::global()?;
        let (mut child, exit_rx) = reaper
            .spawn(&mut cmd)
            .map_err(|e| spawn::spawn_error(e, &launch.program))?;
        let pid = child.id() as i32;
        let stdin = child.stdin.take().map(OwnedFd::from);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        drop(child);

        let num = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let output = Arc::new(Output::new(OUTPUT_CAPACITY, blocking_consumer));
        let stdin = match stdin.map(pipe::Sender::from_owned_fd).transpose() {
            Ok(s) => s,
            Err(e) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(GuestError::Internal(format!("stdin pipe: {e}")));
            }
        };
        let entry = Arc::new(ProcessEntry {
            num,
            pid,
            argv: launch.argv.clone(),
            tag: req.tag,
            started_at: Utc::now(),
            started: Instant::now(),
            output: output.clone(),
            stdin: Arc::new(tokio::sync::Mutex::new(stdin)),
            reaped: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
        });
        self.lock().insert(num, entry.clone());
        tracing::info!(id = %entry.id(), pid, argv = ?entry.argv, "process started");

        // Initial stdin: take the lock now so later writes queue behind it.
        let guard = entry.stdin.clone().lock_owned().await;
        let initial = req.stdin;
        let keep = req.keep_stdin;
        tokio::spawn(async move {
            let mut guard = guard;
            if let (Some(data), Some(s)) = (initial, guard.as_mut())
                && let Err(e) = s.write_all(data.as_bytes()).await
            {
                tracing::debug!(error = %e, "initial stdin write failed");
                *guard = None;
            }
            if !keep {
                *guard = None;
            }
        });

        let (drain_tx, drain_rx) = watch::channel(false);
        let mut pumps = Vec::new();
        for (fd, kind) in [(stdout, StreamKind::Stdout), (stderr, StreamKind::Stderr)] {
            let Some(fd) = fd else { continue };
            match pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => pumps.push(tokio::spawn(pump(
                    output.clone(),
                    rx,
                    kind,
                    drain_rx.clone(),
                ))),
                Err(e) => tracing::warn!(error = %e, "cannot watch output pipe"),
            }
        }
        let timeout = req.timeout_ms.map(Duration::from_millis);
        tokio::spawn(monitor(
            entry.clone(),
            self.table.clone(),
            exit_rx,
            timeout,
            pumps,
            drain_tx,
        ));

        let consumer = blocking_consumer.then(|| Cursor::new(output, 0, true, true));
        Ok(Started { entry, consumer })
    }

    /// SIGTERM every running process group; after `grace`, SIGKILL the rest.
    pub async fn terminate_all(&self, grace: Duration) {
        let running: Vec<_> = self.list().into_iter().filter(|p| p.is_alive()).collect();
        for p in &running {
            let _ = p.signal(Signal::SIGTERM);
        }
        let wait = futures::future::join_all(running.iter().map(|p| p.output.wait_exit()));
        if tokio::time::timeout(grace, wait).await.is_err() {
            for p in &running {
                let _ = p.signal(Signal::SIGKILL);
            }
        }
    }
}

/// Copy one pipe into the output buffer.
async fn pump(
    out: Arc<Output>,
    mut rx: pipe::Receiver,
    kind: StreamKind,
    mut drain: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        out.wait_for_space().await;
        let draining = *drain.borrow_and_update();
        let res = if draining {
            match tokio::time::timeout(DRAIN_IDLE, rx.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                r = rx.read(&mut buf) => r,
                _ = drain.changed() => continue,
            }
        };
        match res {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                let keep = incomplete_utf8_tail(&pending);
                let tail = pending.split_off(pending.len() - keep);
                out.push(kind, Bytes::from(std::mem::replace(&mut pending, tail)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "output pipe read failed");
                break;
            }
        }
    }
    out.push(kind, Bytes::from(pending));
}

/// Wait for the exit (enforcing the timeout), collect the remaining output, record the exit.
async fn monitor(
    entry: Arc<ProcessEntry>,
    table: Table,
    mut exit_rx: oneshot::Receiver<ExitStatus>,
    timeout: Option<Duration>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    drain_tx: watch::Sender<bool>,
) {
    let status = match timeout {
        Some(t) => match tokio::time::timeout(t, &mut exit_rx).await {
            Ok(r) => r,
            Err(_) => {
                tracing::info!(id = %entry.id(), "timeout passed, killing process group");
                entry.timed_out.store(true, Ordering::SeqCst);
                let _ = killpg(Pid::from_raw(entry.pid), Signal::SIGKILL);
                exit_rx.await
            }
        },
        None => exit_rx.await,
    };
    let status = status.unwrap_or_default();
    entry.reaped.store(true, Ordering::SeqCst);
    let _ = drain_tx.send(true);
    let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
    if tokio::time::timeout(DRAIN_MAX, futures::future::join_all(pumps))
        .await
        .is_err()
    {
        aborts.iter().for_each(|a| a.abort());
    }
    // Close stdin so nothing lingers.
    *entry.stdin.lock().await = None;
    let info = ExitInfo {
        status,
        timed_out: entry.timed_out.load(Ordering::SeqCst),
        finished_at: Utc::now(),
        duration_ms: entry.started.elapsed().as_millis() as u64,
    };
    entry.output.finish(info);
    tracing::info!(id = %entry.id(), code = ?status.code, signal = ?status.signal, "process exited");
    prune(&table);
}

/// Forget the oldest exited processes beyond [`MAX_EXITED`].
fn prune(table: &Table) {
    let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
    let exited: Vec<u64> = t
        .iter()
        .filter(|(_, p)| p.output.exit().is_some())
        .map(|(n, _)| *n)
        .collect();
    if exited.len() > MAX_EXITED {
        for n in &exited[..exited.len() - MAX_EXITED] {
            t.remove(n);
        }
    }
}

/// Parse a signal given as a name (with or without `SIG`) or a number.
pub fn parse_signal(s: &str) -> Result<Signal, GuestError> {
    let bad = || GuestError::invalid("signal", format!("unknown signal: {s}"));
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigint").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
