//! On-disk record of a running sandbox, so a restarted host process can find and reattach it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// Written at `<data>/sandboxes/<id>/state.json` (0600: it holds the guest token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SandboxRecord {
    pub id: String,
    pub template: String,
    pub pid: i32,
    /// `/proc/<pid>/stat` start time, to tell our PID 1 from a process that reused its pid.
    pub start_time: u64,
    pub created_at: DateTime<Utc>,
    pub token: String,
}

impl SandboxRecord {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join("state.json.tmp");
        let data = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .ctx(|| "encode state".into())?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .ctx(|| format!("write {}", tmp.display()))?;
        f.write_all(&data)
            .ctx(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &path).ctx(|| format!("rename {}", path.display()))
    }

    pub fn load(dir: &Path) -> Option<SandboxRecord> {
        let data = fs::read(Self::path(dir)).ok()?;
        serde_json::from_slice(&data).ok()
    }
}

/// Start time (clock ticks since boot) of a live process, or None if it does not exist or has
/// exited (a zombie waiting to be reaped is not a running sandbox).
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) may contain spaces and parens: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); start time is field 22.
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert!(start_time(i32::MAX).is_none());
    }

    #[test]
    fn record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let r = SandboxRecord {
            id: "sb-1".into(),
            template: "base".into(),
            pid: 42,
            start_time: 7,
            created_at: Utc::now(),
            token: "t".into(),
        };
        r.save(dir.path()).unwrap();
        let back = SandboxRecord::load(dir.path()).unwrap();
        assert_eq!(back.pid, 42);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(SandboxRecord::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
