//! Per-sandbox cgroups on v1 (one directory per controller) and v2 (one unified directory).
//!
//! The engine only needs a handful of operations: create with limits, add a process, freeze and
//! thaw, read usage, kill everything, remove. Both hierarchies are plain files, so this is written
//! directly against cgroupfs rather than through a library.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// v1 controllers a sandbox gets a directory in. `cpuacct` may be co-mounted with `cpu`.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer", "devices"];
const CPU_PERIOD_US: u64 = 100_000;

/// Resource limits applied to a sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
}

/// Which cgroup hierarchy the host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Pure v2 at `/sys/fs/cgroup`.
    V2,
    /// v1 controllers under `/sys/fs/cgroup/<controller>` (hybrid hosts included).
    V1 { controllers: Vec<(String, PathBuf)> },
}

impl Hierarchy {
    /// Inspect the host.
    pub fn detect() -> Result<Hierarchy> {
        if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            return Ok(Hierarchy::V2);
        }
        let mut controllers = Vec::new();
        let mut seen = Vec::<PathBuf>::new();
        for name in V1_CONTROLLERS {
            let path = Path::new(CGROUP_ROOT).join(name);
            // cpu and cpuacct are often one hierarchy reached by two links: keep one directory.
            let Ok(real) = fs::canonicalize(&path) else {
                continue;
            };
            if seen.contains(&real) {
                continue;
            }
            seen.push(real.clone());
            controllers.push((name.to_string(), real));
        }
        for required in ["memory", "pids", "freezer"] {
            if !controllers.iter().any(|(n, _)| n == required) {
                return Err(Error::Cgroup {
                    path: format!("{CGROUP_ROOT}/{required}"),
                    source: io::Error::new(
                        ErrorKind::NotFound,
                        "required cgroup v1 controller is not mounted",
                    ),
                });
            }
        }
        Ok(Hierarchy::V1 { controllers })
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::V2)
    }

    /// Prepare the parent group (`hutch`) that holds every sandbox's group.
    pub fn init_parent(&self, parent: &str) -> Result<()> {
        match self {
            Hierarchy::V2 => {
                let root = Path::new(CGROUP_ROOT);
                let dir = root.join(parent);
                mkdir(&dir)?;
                // Controllers must be enabled top-down for the sandbox groups to get them.
                for ctl in ["+memory", "+cpu", "+pids"] {
                    write(&root.join("cgroup.subtree_control"), ctl)?;
                    write(&dir.join("cgroup.subtree_control"), ctl)?;
                }
                Ok(())
            }
            Hierarchy::V1 { controllers } => {
                for (_, base) in controllers {
                    mkdir(&base.join(parent))?;
                }
                Ok(())
            }
        }
    }

    /// Remove the parent group if no sandbox group is left in it (best effort).
    pub fn remove_parent(&self, parent: &str) {
        let dirs: Vec<PathBuf> = match self {
            Hierarchy::V2 => vec![Path::new(CGROUP_ROOT).join(parent)],
            Hierarchy::V1 { controllers } => {
                controllers.iter().map(|(_, b)| b.join(parent)).collect()
            }
        };
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
    }

    /// The group of one sandbox (not created).
    pub fn group(&self, parent: &str, id: &str) -> Cgroup {
        let rel = format!("{parent}/{id}");
        let dirs = match self {
            Hierarchy::V2 => vec![("unified".to_string(), Path::new(CGROUP_ROOT).join(&rel))],
            Hierarchy::V1 { controllers } => controllers
                .iter()
                .map(|(n, b)| (n.clone(), b.join(&rel)))
                .collect(),
        };
        Cgroup {
            v2: self.is_v2(),
            dirs,
        }
    }

    /// Names of the sandbox groups that exist under the parent (to find leftovers).
    pub fn children(&self, parent: &str) -> Vec<String> {
        let base = match self {
            Hierarchy::V2 => Path::new(CGROUP_ROOT).join(parent),
            Hierarchy::V1 { controllers } => match controllers.iter().find(|(n, _)| n == "pids") {
                Some((_, b)) => b.join(parent),
                None => return Vec::new(),
            },
        };
        let Ok(rd) = fs::read_dir(base) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }
}

/// One sandbox's cgroup: a directory per v1 controller, or one v2 directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    v2: bool,
    dirs: Vec<(String, PathBuf)>,
}

/// Usage read from the cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_us: u64,
    pub pids: u64,
    pub oom_kills: u64,
}

impl Cgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(|(_, p)| p.as_path());
        }
        self.dirs
            .iter()
            .find(|(n, _)| n == controller)
            .map(|(_, p)| p.as_path())
    }

    /// Create the directories and apply limits.
    pub fn create(&self, limits: &Limits) -> Result<()> {
        for (_, dir) in &self.dirs {
            mkdir(dir)?;
        }
        self.apply(limits)
    }

    /// Apply (or change) limits.
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        let mem = self.dir("memory").ok_or_else(|| missing("memory"))?;
        let cpu = self.dir("cpu");
        let pids = self.dir("pids").ok_or_else(|| missing("pids"))?;
        if self.v2 {
            let m = limits
                .memory_bytes
                .map_or("max".to_string(), |b| b.to_string());
            write(&mem.join("memory.max"), &m)?;
            // No swap for sandboxes: the memory limit is the limit.
            let _ = write(&mem.join("memory.swap.max"), "0");
            if let Some(cpu) = cpu {
                let q = limits
                    .cpus
                    .map_or("max".to_string(), |c| quota_us(c).to_string());
                write(&cpu.join("cpu.max"), &format!("{q} {CPU_PERIOD_US}"))?;
            }
            let p = limits.pids.map_or("max".to_string(), |p| p.to_string());
            write(&pids.join("pids.max"), &p)?;
        } else {
            let m = limits
                .memory_bytes
                .map_or("-1".to_string(), |b| b.to_string());
            write(&mem.join("memory.limit_in_bytes"), &m)?;
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &m)?;
            }
            if let Some(cpu) = cpu {
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                let q = limits
                    .cpus
                    .map_or("-1".to_string(), |c| quota_us(c).to_string());
                write(&cpu.join("cpu.cfs_quota_us"), &q)?;
            }
            let p = limits.pids.map_or("max".to_string(), |p| p.to_string());
            write(&pids.join("pids.max"), &p)?;
            if let Some(dev) = self.dir("devices") {
                // Defence in depth next to dropping CAP_MKNOD: only the nodes Hutch puts in /dev.
                write(&dev.join("devices.deny"), "a")?;
                for rule in DEVICE_ALLOW {
                    write(&dev.join("devices.allow"), rule)?;
                }
            }
        }
        Ok(())
    }

    /// Move a process into every directory of the group.
    pub fn add(&self, pid: i32) -> Result<()> {
        let pid = pid.to_string();
        for (_, dir) in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// Freeze (`true`) or thaw every process, waiting until the kernel reports the new state.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        if self.v2 {
            let dir = self.dir("unified").ok_or_else(|| missing("unified"))?;
            write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            loop {
                let events = read(&dir.join("cgroup.events"))?;
                if events.lines().any(|l| l.trim() == want) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(timeout(dir, "freeze"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            let dir = self.dir("freezer").ok_or_else(|| missing("freezer"))?;
            let want = if frozen { "FROZEN" } else { "THAWED" };
            loop {
                // v1 may stay in FREEZING if a task is busy: writing again retries the freeze.
                write(&dir.join("freezer.state"), want)?;
                if read(&dir.join("freezer.state"))?.trim() == want {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(timeout(dir, "freeze"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Whether the group is frozen.
    pub fn is_frozen(&self) -> bool {
        if self.v2 {
            self.dir("unified")
                .and_then(|d| read(&d.join("cgroup.events")).ok())
                .is_some_and(|e| e.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            self.dir("freezer")
                .and_then(|d| read(&d.join("freezer.state")).ok())
                .is_some_and(|s| s.trim() == "FROZEN")
        }
    }

    /// Pids in the group.
    pub fn procs(&self) -> Vec<i32> {
        let Some(dir) = self.dir("pids") else {
            return Vec::new();
        };
        read(&dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILL every process in the group and wait until it is empty. When the caller has just
    /// killed the sandbox's PID 1, the kernel is already tearing down its pid namespace: give
    /// that a short grace period before signalling anything by pid.
    pub fn kill_all(&self) -> Result<()> {
        let grace = Instant::now() + Duration::from_millis(50);
        while Instant::now() < grace {
            if self.procs().is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let v2_kill = self.v2
            && self
                .dir("unified")
                .is_some_and(|d| d.join("cgroup.kill").exists());
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            if v2_kill {
                if let Some(d) = self.dir("unified") {
                    write(&d.join("cgroup.kill"), "1")?;
                }
            } else {
                // Frozen, nothing can fork and no listed pid can exit and be reused by another
                // process before our signal lands; thawing then lets the killed tasks die.
                let frozen = self.set_frozen(true).is_ok();
                for pid in self.procs() {
                    // SAFETY: kill(2) with a pid read from our own (frozen) cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if frozen || self.is_frozen() {
                    let _ = self.set_frozen(false);
                }
            }
            if Instant::now() > deadline {
                return Err(timeout(self.dirs[0].1.as_path(), "kill"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(())
    }

    /// Remove the directories (the group must be empty). Missing directories are fine.
    pub fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, dir) in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    // Exiting tasks can linger for a moment after the kill.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_micros(500))
                    }
                    Err(source) => {
                        return Err(Error::Cgroup {
                            path: dir.display().to_string(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Current usage and OOM-kill count.
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        let num = |p: PathBuf| read(&p).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let key = |p: PathBuf, k: &str| {
            read(&p).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()))
            })
        };
        if self.v2 {
            if let Some(d) = self.dir("unified") {
                u.memory_bytes = num(d.join("memory.current")).unwrap_or(0);
                u.memory_limit_bytes = num(d.join("memory.max"));
                u.cpu_usage_us = key(d.join("cpu.stat"), "usage_usec ").unwrap_or(0);
                u.pids = num(d.join("pids.current")).unwrap_or(0);
                u.oom_kills = key(d.join("memory.events"), "oom_kill ").unwrap_or(0);
            }
        } else {
            if let Some(d) = self.dir("memory") {
                u.memory_bytes = num(d.join("memory.usage_in_bytes")).unwrap_or(0);
                u.memory_limit_bytes =
                    num(d.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
                u.oom_kills = key(d.join("memory.oom_control"), "oom_kill ").unwrap_or(0);
            }
            if let Some(d) = self.dir("cpuacct") {
                u.cpu_usage_us = num(d.join("cpuacct.usage")).unwrap_or(0) / 1000;
            }
            if let Some(d) = self.dir("pids") {
                u.pids = num(d.join("pids.current")).unwrap_or(0);
            }
        }
        u
    }
}

/// Device nodes a sandbox may use (v1 devices controller): the ones Hutch creates in `/dev`.
const DEVICE_ALLOW: &[&str] = &[
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts
];

fn quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

fn missing(controller: &str) -> Error {
    Error::Cgroup {
        path: controller.to_string(),
        source: io::Error::new(ErrorKind::NotFound, "controller not available"),
    }
}

fn timeout(dir: &Path, what: &str) -> Error {
    Error::Cgroup {
        path: dir.display().to_string(),
        source: io::Error::new(
            ErrorKind::TimedOut,
            format!("{what} did not finish in time"),
        ),
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Cgroup {
            path: dir.display().to_string(),
            source,
        }),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| Error::Cgroup {
        path: path.display().to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Cgroup {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_fractional_with_a_floor() {
        assert_eq!(quota_us(1.0), 100_000);
        assert_eq!(quota_us(0.5), 50_000);
        assert_eq!(quota_us(2.25), 225_000);
        assert_eq!(quota_us(0.001), 1000);
    }

    #[test]
    fn detects_this_host() {
        let h = Hierarchy::detect().expect("cgroups available");
        if let Hierarchy::V1 { controllers } = &h {
            assert!(controllers.iter().any(|(n, _)| n == "memory"));
        }
    }
}
