//! Preparing a child: environment, user, working directory, executable lookup, and the
//! `pre_exec` set-up (process group or session, credentials).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::GuestError;
use crate::users::{User, UserDb};

/// Default `PATH` for processes started by the guest.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to start, before validation.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    /// Program and arguments (non-empty).
    pub argv: Vec<String>,
    /// The sandbox-wide environment (from the guest config).
    pub base_env: &'a BTreeMap<String, String>,
    /// Request-specific environment, applied last.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory (absolute); default the user's home, else `/`.
    pub cwd: Option<&'a str>,
    /// User spec; default root.
    pub user: Option<&'a str>,
    /// Value of `TERM`.
    pub term: &'a str,
}

/// A validated launch: everything needed to build a [`Command`].
#[derive(Debug, Clone)]
pub struct Launch {
    /// Resolved executable path.
    pub program: PathBuf,
    /// Argument vector (argv[0] as given).
    pub argv: Vec<String>,
    /// Full environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Credentials.
    pub user: User,
}

/// How the child detaches from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// `setpgid(0, 0)`: its own process group.
    ProcessGroup,
    /// `setsid()` + `TIOCSCTTY` on fd 0: a new session with the PTY on stdin as its terminal.
    Session,
}

/// Validate a launch request: user, cwd and executable are checked before forking.
pub fn prepare(req: LaunchRequest<'_>, users: &UserDb) -> Result<Launch, GuestError> {
    let Some(argv0) = req.argv.first() else {
        return Err(GuestError::invalid("cmd", "cmd must not be empty"));
    };
    if argv0.is_empty() {
        return Err(GuestError::invalid("cmd", "cmd[0] must not be empty"));
    }
    let user = users.resolve(req.user)?;
    let my_uid = nix::unistd::geteuid().as_raw();
    if my_uid != 0 && user.uid != my_uid {
        return Err(GuestError::invalid(
            "user",
            format!("cannot run as {} without root privileges", user.name),
        ));
    }

    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("TERM".to_string(), req.term.to_string());
    env.insert("LANG".to_string(), "C.UTF-8".to_string());
    for (k, v) in req.base_env {
        env.insert(k.clone(), v.clone());
    }
    env.insert("HOME".to_string(), user.home.clone());
    env.insert("USER".to_string(), user.name.clone());
    env.insert("LOGNAME".to_string(), user.name.clone());
    env.insert("SHELL".to_string(), user.shell.clone());
    for (k, v) in req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(GuestError::invalid(
                "env",
                format!("invalid environment variable: {k:?}"),
            ));
        }
        env.insert(k.clone(), v.clone());
    }

    let cwd = match req.cwd {
        Some(c) => {
            let p = Path::new(c);
            if !p.is_absolute() {
                return Err(GuestError::invalid(
                    "cwd",
                    format!("cwd must be absolute: {c}"),
                ));
            }
            if !p.is_dir() {
                return Err(GuestError::invalid(
                    "cwd",
                    format!("no such directory: {c}"),
                ));
            }
            p.to_path_buf()
        }
        None => {
            let home = Path::new(&user.home);
            if home.is_absolute() && home.is_dir() {
                home.to_path_buf()
            } else {
                PathBuf::from("/")
            }
        }
    };

    let path_var = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
    let program = resolve_program(argv0, path_var, &cwd)?;
    Ok(Launch {
        program,
        argv: req.argv,
        env,
        cwd,
        user,
    })
}

/// Find `name` like `execvp` would, using `path_var`; relative names with a slash are
/// resolved against `cwd`.
pub fn resolve_program(name: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, GuestError> {
    if name.contains('/') {
        let p = cwd.join(name);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(GuestError::invalid(
                "cmd",
                format!("executable not found: {name}"),
            ))
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = cwd.join(dir).join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(GuestError::invalid(
        "cmd",
        format!("executable not found: {name}"),
    ))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Build the [`Command`] for a validated launch (stdio is left to the caller).
pub fn command(launch: &Launch, detach: Detach) -> Command {
    let mut cmd = Command::new(&launch.program);
    if let Some(a0) = launch.argv.first() {
        cmd.arg0(a0);
    }
    cmd.args(launch.argv.iter().skip(1));
    cmd.env_clear();
    cmd.envs(&launch.env);
    cmd.current_dir(&launch.cwd);
    let switch_user = nix::unistd::geteuid().is_root();
    let uid = launch.user.uid as libc::uid_t;
    let gid = launch.user.gid as libc::gid_t;
    let groups: Vec<libc::gid_t> = launch
        .user
        .groups
        .iter()
        .map(|g| *g as libc::gid_t)
        .collect();
    let hook = move || -> std::io::Result<()> {
        // Only async-signal-safe calls here: this runs between fork and exec.
        // SAFETY: plain syscalls on integers and on `groups`, which is owned by the closure
        // and stays alive and unmodified for the duration of the call.
        unsafe {
            // Nothing of the guest's but stdio reaches a workload (its listener least of all),
            // whatever flags those fds were created with.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            match detach {
                Detach::ProcessGroup => {
                    if libc::setpgid(0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Detach::Session => {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            if switch_user {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setgid(gid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: the hook only performs async-signal-safe syscalls and does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
    cmd
}

/// Map a spawn failure to a client error where it is the client's fault.
pub fn spawn_error(err: std::io::Error, program: &Path) -> GuestError {
    match err.kind() {
        std::io::ErrorKind::NotFound => GuestError::invalid(
            "cmd",
            format!("executable not found: {}", program.display()),
        ),
        std::io::ErrorKind::PermissionDenied => {
            GuestError::invalid("cmd", format!("permission denied: {}", program.display()))
        }
        _ => GuestError::Internal(format!("failed to start {}: {err}", program.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_in_path() {
        let p = resolve_program("sh", DEFAULT_PATH, Path::new("/")).unwrap();
        assert!(p.ends_with("sh"));
        let e =
            resolve_program("definitely-not-here-xyz", DEFAULT_PATH, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("definitely-not-here-xyz"));
        assert!(resolve_program("/bin/sh", "", Path::new("/")).is_ok());
        assert!(resolve_program("/etc/passwd", "", Path::new("/")).is_err());
    }

    #[test]
    fn prepare_validates() {
        let base = BTreeMap::new();
        let env = BTreeMap::from([("FOO".to_string(), "bar".to_string())]);
        let users = UserDb::default();
        let req = |argv: &[&str], cwd: Option<&'static str>| LaunchRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            base_env: &base,
            env: &env,
            cwd,
            user: None,
            term: "xterm",
        };
        let l = prepare(req(&["sh", "-c", "true"], None), &users).unwrap();
        assert_eq!(l.env.get("FOO").map(String::as_str), Some("bar"));
        assert!(l.env.contains_key("PATH"));
        let e = prepare(req(&["sh"], Some("/nonexistent-dir")), &users).unwrap_err();
        assert!(matches!(e, GuestError::Invalid { ref field, .. } if field == "cwd"));
        let e = prepare(req(&["sh"], Some("relative")), &users).unwrap_err();
        assert!(matches!(e, GuestError::Invalid { ref field, .. } if field == "cwd"));
        let e = prepare(req(&[], None), &users).unwrap_err();
        assert!(matches!(e, GuestError::Invalid { ref field, .. } if field == "cmd"));
    }
}
