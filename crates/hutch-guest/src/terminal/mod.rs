//! Terminals: named PTY sessions (like tmux for an agent) that outlive client connections.
//!
//! A reader task always drains the PTY master, feeding a `vt100` parser (for screen captures)
//! and a broadcast channel (for attached WebSocket clients; a lagging client skips ahead).

pub mod attach;
pub mod keys;
pub mod routes;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hutch_api::terminal::{CreateTerminal, TerminalInfo, TerminalScreen};
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, watch};

use crate::error::GuestError;
use crate::process::spawn::{self, Detach, LaunchRequest};
use crate::reaper::{self, ExitStatus};
use crate::users::UserDb;

/// Lines of scrollback kept per terminal.
pub const SCROLLBACK: usize = 1000;
/// Largest accepted terminal dimension.
pub const MAX_DIM: u16 = 1000;
/// Most terminal sessions at once.
pub const MAX_TERMINALS: usize = 256;

/// One PTY session.
pub struct Session {
    /// Session name.
    pub name: String,
    /// Pid of the program (also its session and process group id).
    pub pid: i32,
    /// Program and arguments.
    pub cmd: Vec<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    master: AsyncFd<OwnedFd>,
    parser: Mutex<vt100::Parser>,
    output: broadcast::Sender<Bytes>,
    exit: watch::Sender<Option<ExitStatus>>,
    /// True once the program exited and its final output was read.
    done: watch::Sender<bool>,
    write_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Session {
    fn parser(&self) -> MutexGuard<'_, vt100::Parser> {
        self.parser.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// False once the program exited.
    pub fn alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Wire description.
    pub fn info(&self) -> TerminalInfo {
        let (rows, cols) = self.parser().screen().size();
        let exit = *self.exit.borrow();
        TerminalInfo {
            name: self.name.clone(),
            pid: self.pid,
            cmd: self.cmd.clone(),
            cols,
            rows,
            created_at: self.created_at,
            alive: exit.is_none(),
            exit_code: exit.and_then(|e| e.code.or(e.signal.map(|s| 128 + s))),
        }
    }

    /// What the screen shows, with up to `scrollback` lines that scrolled off.
    pub fn screen(&self, scrollback: usize) -> TerminalScreen {
        let mut parser = self.parser();
        let (rows, cols) = parser.screen().size();
        let mut lines = Vec::new();
        if scrollback > 0 {
            parser.set_scrollback(usize::MAX);
            let avail = parser.screen().scrollback();
            parser.set_scrollback(0);
            let want = scrollback.min(avail);
            let tall = usize::from(rows) + avail;
            if want > 0 && tall <= usize::from(u16::MAX) {
                // vt100 0.15 can only scroll the view back by at most the screen height, so
                // grow the screen (blank rows are added at the bottom) to see the whole
                // scrollback at once, then shrink it back, which drops those blank rows.
                parser.set_size(tall as u16, cols);
                parser.set_scrollback(avail);
                lines = parser
                    .screen()
                    .rows(0, cols)
                    .skip(avail - want)
                    .take(want)
                    .map(|r| r.trim_end().to_string())
                    .collect();
                parser.set_scrollback(0);
                parser.set_size(rows, cols);
            }
        }
        let screen = parser.screen();
        let text = screen
            .rows(0, cols)
            .map(|r| r.trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let (cursor_row, cursor_col) = screen.cursor_position();
        TerminalScreen {
            name: self.name.clone(),
            text,
            scrollback: lines,
            cursor_row,
            cursor_col,
            cols,
            rows,
            alive: self.alive(),
        }
    }

    /// Whether the program asked for application cursor keys.
    pub fn application_cursor(&self) -> bool {
        self.parser().screen().application_cursor()
    }

    /// A replay of the current screen plus a subscription to everything after it.
    pub fn snapshot_and_subscribe(&self) -> (Vec<u8>, broadcast::Receiver<Bytes>) {
        let parser = self.parser();
        (
            parser.screen().contents_formatted(),
            self.output.subscribe(),
        )
    }

    /// Notified when the program exited and its output was drained.
    pub fn done(&self) -> watch::Receiver<bool> {
        self.done.subscribe()
    }

    /// Write raw input (409 once the program exited).
    pub async fn write(&self, data: &[u8]) -> Result<(), GuestError> {
        if !self.alive() {
            return Err(GuestError::Conflict(format!(
                "terminal {} has exited",
                self.name
            )));
        }
        let _guard = self.write_lock.lock().await;
        let mut off = 0;
        let fut = async {
            while off < data.len() {
                let mut ready = self.master.writable().await?;
                match ready.try_io(|fd| {
                    nix::unistd::write(fd.get_ref(), &data[off..]).map_err(std::io::Error::from)
                }) {
                    Ok(Ok(n)) => off += n,
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(30), fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if !self.alive() || e.raw_os_error() == Some(libc::EIO) => Err(
                GuestError::Conflict(format!("terminal {} has exited", self.name)),
            ),
            Ok(Err(e)) => Err(GuestError::Internal(format!("terminal write failed: {e}"))),
            Err(_) => Err(GuestError::Timeout(format!(
                "terminal {} is not reading input",
                self.name
            ))),
        }
    }

    /// Change the window size (the kernel sends SIGWINCH to the foreground group).
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), GuestError> {
        check_size(cols, rows)?;
        set_winsize(self.master.get_ref(), cols, rows)
            .map_err(|e| GuestError::Internal(format!("resize failed: {e}")))?;
        self.parser().set_size(rows, cols);
        Ok(())
    }

    /// Signal the session's process group.
    pub fn signal(&self, sig: Signal) {
        if self.alive() {
            let _ = killpg(Pid::from_raw(self.pid), sig);
        }
    }

    /// Wait for the program to exit.
    pub async fn wait_exit(&self) {
        let mut rx = self.exit.subscribe();
        let _ = rx.wait_for(|e| e.is_some()).await;
    }
}

/// Validate a size (1..=1000 each).
pub fn check_size(cols: u16, rows: u16) -> Result<(), GuestError> {
    if cols == 0 || cols > MAX_DIM {
        return Err(GuestError::invalid(
            "cols",
            format!("cols must be 1..={MAX_DIM}"),
        ));
    }
    if rows == 0 || rows > MAX_DIM {
        return Err(GuestError::invalid(
            "rows",
            format!("rows must be 1..={MAX_DIM}"),
        ));
    }
    Ok(())
}

fn set_winsize(fd: &OwnedFd, cols: u16, rows: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc != 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Open a PTY pair (both ends close-on-exec), returning (master, slave).
fn open_pty(cols: u16, rows: u16) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let slave_path = nix::pty::ptsname_r(&master)?;
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid open descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)?;
    set_winsize(&master, cols, rows)?;
    let flags =
        OFlag::from_bits_truncate(nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::F_GETFL)?);
    nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    Ok((master, OwnedFd::from(slave)))
}

/// Validate a session name.
pub fn check_name(name: &str) -> Result<(), GuestError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(GuestError::invalid(
            "name",
            "name must match [A-Za-z0-9_.-]{1,64}",
        ))
    }
}

/// Shells that understand `-l`.
fn is_login_shell(program: &str) -> bool {
    let base = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    matches!(
        base,
        "sh" | "bash" | "zsh" | "dash" | "ash" | "ksh" | "mksh" | "fish" | "yash"
    )
}

/// All terminal sessions of a guest.
#[derive(Debug, Default)]
pub struct TerminalTable {
    next: AtomicU64,
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
}

impl TerminalTable {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// All sessions by name.
    pub fn list(&self) -> Vec<Arc<Session>> {
        self.lock().values().cloned().collect()
    }

    /// A session by name.
    pub fn get(&self, name: &str) -> Result<Arc<Session>, GuestError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| GuestError::NotFound(format!("no such terminal: {name}")))
    }

    /// Remove a session: SIGHUP its group, then SIGKILL if still alive after a grace period.
    pub fn remove(&self, name: &str) -> Result<(), GuestError> {
        let session = self
            .lock()
            .remove(name)
            .ok_or_else(|| GuestError::NotFound(format!("no such terminal: {name}")))?;
        if session.alive() {
            session.signal(Signal::SIGHUP);
            session.signal(Signal::SIGCONT);
            tokio::spawn(async move {
                if tokio::time::timeout(Duration::from_secs(1), session.wait_exit())
                    .await
                    .is_err()
                {
                    session.signal(Signal::SIGKILL);
                }
            });
        }
        Ok(())
    }

    /// Start a session.
    pub async fn create(
        &self,
        req: CreateTerminal,
        base_env: &BTreeMap<String, String>,
        users: &UserDb,
    ) -> Result<Arc<Session>, GuestError> {
        check_size(req.cols, req.rows)?;
        let name = match req.name {
            Some(n) => {
                check_name(&n)?;
                n
            }
            None => loop {
                let n = format!("t-{}", self.next.fetch_add(1, Ordering::SeqCst) + 1);
                if !self.lock().contains_key(&n) {
                    break n;
                }
            },
        };
        {
            let map = self.lock();
            if map.contains_key(&name) {
                return Err(GuestError::AlreadyExists(format!(
                    "terminal {name} already exists"
                )));
            }
            if map.len() >= MAX_TERMINALS {
                return Err(GuestError::Conflict(format!(
                    "too many terminals (max {MAX_TERMINALS})"
                )));
            }
        }
        let argv = match req.cmd {
            Some(cmd) if !cmd.is_empty() => cmd,
            Some(_) => return Err(GuestError::invalid("cmd", "cmd must not be empty")),
            None => {
                let user = users.resolve(req.user.as_deref())?;
                let shell = if Path::new(&user.shell).is_file() {
                    user.shell
                } else {
                    "/bin/sh".into()
                };
                if is_login_shell(&shell) {
                    vec![shell, "-l".into()]
                } else {
                    vec![shell]
                }
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
        let (master, slave) = open_pty(req.cols, req.rows)
            .map_err(|e| GuestError::Internal(format!("openpty: {e}")))?;
        let mut cmd = spawn::command(&launch, Detach::Session);
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| GuestError::Internal(format!("dup: {e}")))
        };
        cmd.stdin(Stdio::from(dup(&slave)?));
        cmd.stdout(Stdio::from(dup(&slave)?));
        cmd.stderr(Stdio::from(slave));
        let (child, exit_rx) = reaper::global()?
            .spawn(&mut cmd)
            .map_err(|e| spawn::spawn_error(e, &launch.program))?;
        drop(cmd); // closes our copies of the slave
        let pid = child.id() as i32;
        drop(child);
        // SAFETY: `master` is an owned, open descriptor; AsyncFd owns it from now on and
        // `OwnedFd::as_raw_fd` always returns that same descriptor.
        let master = match unsafe { AsyncFd::register(master) } {
            Ok(m) => m,
            Err(e) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(GuestError::Internal(format!("pty registration: {e}")));
            }
        };
        let session = Arc::new(Session {
            name: name.clone(),
            pid,
            cmd: launch.argv.clone(),
            created_at: Utc::now(),
            master,
            parser: Mutex::new(vt100::Parser::new(req.rows, req.cols, SCROLLBACK)),
            output: broadcast::channel(256).0,
            exit: watch::Sender::new(None),
            done: watch::Sender::new(false),
            write_lock: tokio::sync::Mutex::new(()),
        });
        {
            let mut map = self.lock();
            if map.contains_key(&name) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(GuestError::AlreadyExists(format!(
                    "terminal {name} already exists"
                )));
            }
            map.insert(name.clone(), session.clone());
        }
        tracing::info!(%name, pid, cmd = ?session.cmd, "terminal started");
        let reader = tokio::spawn(read_pty(session.clone()));
        let s = session.clone();
        tokio::spawn(async move {
            let status = exit_rx.await.unwrap_or_default();
            s.exit.send_replace(Some(status));
            // Let the reader drain what the program wrote last (a background job may keep the
            // PTY open, so do not wait for EOF forever).
            let _ = tokio::time::timeout(Duration::from_millis(300), reader).await;
            s.done.send_replace(true);
            tracing::info!(name = %s.name, code = ?status.code, signal = ?status.signal, "terminal exited");
        });
        Ok(session)
    }

    /// SIGTERM every live session; SIGKILL what is left after `grace`.
    pub async fn terminate_all(&self, grace: Duration) {
        let live: Vec<_> = self.list().into_iter().filter(|s| s.alive()).collect();
        for s in &live {
            s.signal(Signal::SIGHUP);
            s.signal(Signal::SIGTERM);
        }
        let wait = futures::future::join_all(live.iter().map(|s| s.wait_exit()));
        if tokio::time::timeout(grace, wait).await.is_err() {
            for s in &live {
                s.signal(Signal::SIGKILL);
            }
        }
    }
}

/// Drain the PTY into the parser and the broadcast channel until EOF/EIO.
async fn read_pty(session: Arc<Session>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut ready = match session.master.readable().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "pty readiness failed");
                return;
            }
        };
        let res = ready.try_io(|fd| {
            nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buf).map_err(std::io::Error::from)
        });
        match res {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                let mut parser = session.parser();
                parser.process(&data);
                let _ = session.output.send(data);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: every slave descriptor is closed (the program and its children are gone).
            Ok(Err(_)) => return,
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes() {
        assert!(check_name("dev-1.x_y").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_size(80, 24).is_ok());
        assert!(check_size(0, 24).is_err());
        assert!(check_size(80, 1001).is_err());
        assert!(is_login_shell("/bin/bash"));
        assert!(!is_login_shell("/usr/bin/python3"));
    }
}
