//! `GET /health`: uptime, process count and cgroup resource usage.

use axum::Json;
use axum::extract::State;
use hutch_api::health::GuestHealth;

use crate::state::GuestState;

/// `GET /health`.
pub async fn health(State(state): State<GuestState>) -> Json<GuestHealth> {
    let usage = tokio::task::spawn_blocking(|| (count_processes(), CgroupUsage::read()))
        .await
        .unwrap_or_default();
    let (processes, cg) = usage;
    Json(GuestHealth {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_ms: state.uptime().as_millis() as u64,
        processes,
        terminals: state.terminals().len() as u64,
        memory_bytes: cg.memory_bytes,
        memory_limit_bytes: cg.memory_limit_bytes,
        cpu_usage_us: cg.cpu_usage_us,
    })
}

/// Processes visible in `/proc`.
pub fn count_processes() -> u64 {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count() as u64
        })
        .unwrap_or(0)
}

/// Resource usage of the current cgroup (v2, else v1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Memory in use.
    pub memory_bytes: Option<u64>,
    /// Memory limit (`None` when unlimited or unknown).
    pub memory_limit_bytes: Option<u64>,
    /// CPU time used, in microseconds.
    pub cpu_usage_us: Option<u64>,
}

impl CgroupUsage {
    /// Read from `/sys/fs/cgroup`.
    pub fn read() -> Self {
        Self::read_from(std::path::Path::new("/sys/fs/cgroup"))
    }

    /// Read from a cgroup filesystem mounted at `root`.
    pub fn read_from(root: &std::path::Path) -> Self {
        let num = |p: &str| -> Option<u64> {
            std::fs::read_to_string(root.join(p))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let v2_cpu = || -> Option<u64> {
            let stat = std::fs::read_to_string(root.join("cpu.stat")).ok()?;
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
        };
        let memory_bytes = num("memory.current").or_else(|| num("memory/memory.usage_in_bytes"));
        // v2 says "max" when unlimited; v1 reports a huge number.
        let memory_limit_bytes = num("memory.max")
            .or_else(|| num("memory/memory.limit_in_bytes"))
            .filter(|l| *l < (1u64 << 62));
        let cpu_usage_us = v2_cpu().or_else(|| num("cpuacct/cpuacct.usage").map(|ns| ns / 1000));
        CgroupUsage {
            memory_bytes,
            memory_limit_bytes,
            cpu_usage_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_and_v1() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.current"), "1234\n").unwrap();
        std::fs::write(d.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(d.path().join("cpu.stat"), "usage_usec 77\nuser_usec 1\n").unwrap();
        let u = CgroupUsage::read_from(d.path());
        assert_eq!(
            u,
            CgroupUsage {
                memory_bytes: Some(1234),
                memory_limit_bytes: None,
                cpu_usage_us: Some(77)
            }
        );

        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("memory")).unwrap();
        std::fs::create_dir_all(d.path().join("cpuacct")).unwrap();
        std::fs::write(d.path().join("memory/memory.usage_in_bytes"), "10").unwrap();
        std::fs::write(d.path().join("memory/memory.limit_in_bytes"), "2048").unwrap();
        std::fs::write(d.path().join("cpuacct/cpuacct.usage"), "5000").unwrap();
        let u = CgroupUsage::read_from(d.path());
        assert_eq!(
            u,
            CgroupUsage {
                memory_bytes: Some(10),
                memory_limit_bytes: Some(2048),
                cpu_usage_us: Some(5)
            }
        );

        let d = tempfile::tempdir().unwrap();
        assert_eq!(CgroupUsage::read_from(d.path()), CgroupUsage::default());
    }

    #[test]
    fn counts_processes() {
        assert!(count_processes() >= 1);
    }
}
