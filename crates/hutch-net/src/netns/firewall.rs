//! The optional host input filter (nftables): traffic from a sandbox pool may only reach the
//! gateway's ports on the host. Without it, isolation still holds for everything beyond the host
//! (no forwarding), but any host service listening on `0.0.0.0` is reachable from sandboxes.
//!
//! One table per pool (`inet hutch_<pool>`), replaced atomically: accept replies of connections
//! the host opened (ingress), accept TCP to the gateway ports and UDP 53 on pool addresses, drop
//! everything else from the pool, and never forward to or from it. Rules match on the source
//! pool, which strict reverse-path filtering on each host-side link makes unspoofable.

use super::Pool;
use crate::{Error, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// Whether [`super::NetworkManager`] installs the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirewallMode {
    /// Never.
    Off,
    /// If `nft` is installed and works; otherwise log the risk and go on.
    #[default]
    IfAvailable,
    /// Always: failing to install it fails the manager's start (fail closed).
    Required,
}

/// The filter's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// Whether to install it.
    pub mode: FirewallMode,
    /// TCP ports of the gateway that sandboxes may reach (e.g. 80, 443 and the proxy port).
    pub tcp_ports: Vec<u16>,
}

impl Default for FirewallConfig {
    fn default() -> FirewallConfig {
        FirewallConfig {
            mode: FirewallMode::IfAvailable,
            tcp_ports: vec![80, 443, 3128],
        }
    }
}

/// The table name for `pool`.
pub fn table_name(pool: Pool) -> String {
    format!("hutch_{}", pool.to_string().replace(['.', '/'], "_"))
}

fn script(pool: Pool, tcp_ports: &[u16]) -> String {
    let table = table_name(pool);
    let ports = if tcp_ports.is_empty() {
        String::new()
    } else {
        let list = tcp_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!("        ip saddr {pool} ip daddr {pool} tcp dport {{ {list} }} accept\n")
    };
    format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \x20   chain input {{\n\
         \x20       type filter hook input priority filter - 10; policy accept;\n\
         \x20       ip saddr {pool} ct state established,related accept\n\
         {ports}\
         \x20       ip saddr {pool} ip daddr {pool} udp dport 53 accept\n\
         \x20       ip saddr {pool} counter drop\n\
         \x20   }}\n\
         \x20   chain forward {{\n\
         \x20       type filter hook forward priority filter - 10; policy accept;\n\
         \x20       ip saddr {pool} drop\n\
         \x20       ip daddr {pool} drop\n\
         \x20   }}\n\
         }}\n"
    )
}

fn nft(stdin: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io {
            context: "run nft".into(),
            source: e,
        })?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).map_err(|e| Error::Io {
            context: "write to nft".into(),
            source: e,
        })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Io {
        context: "wait for nft".into(),
        source: e,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Firewall(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Install (or replace) the filter for `pool`.
pub fn install(pool: Pool, tcp_ports: &[u16]) -> Result<()> {
    nft(&script(pool, tcp_ports))
}

/// Remove the filter for `pool` (missing is fine).
pub fn remove(pool: Pool) -> Result<()> {
    let table = table_name(pool);
    nft(&format!("table inet {table}\ndelete table inet {table}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_shape() {
        let pool: Pool = "10.200.0.0/16".parse().expect("pool");
        let s = script(pool, &[80, 443]);
        assert!(s.contains("table inet hutch_10_200_0_0_16 {"), "{s}");
        assert!(
            s.contains(
                "ip saddr 10.200.0.0/16 ip daddr 10.200.0.0/16 tcp dport { 80, 443 } accept"
            ),
            "{s}"
        );
        assert!(s.contains("ip saddr 10.200.0.0/16 counter drop"), "{s}");
        assert!(!script(pool, &[]).contains("tcp dport"));
    }
}
