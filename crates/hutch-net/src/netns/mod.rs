//! Per-sandbox networking: a veth pair into the sandbox's network namespace, one /30 from the
//! pool, and a default route to the host side, which is the sandbox's only gateway.
//!
//! Isolation does not rest on a firewall: the host does not forward for sandboxes (per-interface
//! `forwarding=0` on the host side, which the kernel checks on input even when the host's global
//! `ip_forward` is on, e.g. because Docker set it), IPv6 is disabled on both ends (no link-local
//! path to the host), and reverse-path filtering drops packets with another sandbox's source.
//! So a sandbox can only reach addresses that are *local to the host*.
//!
//! Risk: without the optional nftables input filter ([`firewall`]), any host service listening
//! on `0.0.0.0`/`[::]` is reachable from every sandbox with networking (through the gateway
//! address or any other host address). Hutch's gateway therefore binds the specific gateway
//! addresses, and operators should bind other services to specific addresses (or use the
//! filter: `FirewallMode::Required`) on hosts that run networked sandboxes.

pub mod firewall;
mod netlink;
mod pool;

pub use firewall::{FirewallConfig, FirewallMode};
pub use pool::Pool;

use crate::error::IoContext;
use crate::{Error, Result};
use netlink::Netlink;
use pool::Allocator;
use std::collections::HashSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// Name of the interface inside the sandbox.
pub const SANDBOX_IFNAME: &str = "eth0";
/// Prefix length of each sandbox's link.
pub const LINK_PREFIX: u8 = 30;

/// Configuration of [`NetworkManager`].
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Address pool, one /30 per sandbox (default `10.200.0.0/16`).
    pub pool: Pool,
    /// File holding the allocation table (e.g. `<data>/net.json`).
    pub state_file: PathBuf,
    /// The host input filter (nftables).
    pub firewall: FirewallConfig,
}

impl NetConfig {
    /// The default pool with the allocation table at `state_file`.
    pub fn new(state_file: impl Into<PathBuf>) -> NetConfig {
        NetConfig {
            pool: Pool::default(),
            state_file: state_file.into(),
            firewall: FirewallConfig::default(),
        }
    }
}

/// One sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SandboxNet {
    /// The sandbox id.
    pub id: String,
    /// Host-side interface (`hv-…`).
    pub host_ifname: String,
    /// The gateway: the host side's address, the sandbox's default route and DNS server.
    pub gateway: Ipv4Addr,
    /// The sandbox's address on `eth0`.
    pub address: Ipv4Addr,
}

/// Creates and removes sandbox networks. Implements [`hutch_sandbox::NetworkHook`].
#[derive(Debug)]
pub struct NetworkManager {
    alloc: Mutex<Allocator>,
    firewall: bool,
}

impl NetworkManager {
    /// Open the allocation table. Links of sandboxes that no longer exist are removed by
    /// [`NetworkManager::teardown_sandbox`] (the engine's destroy and recover call it).
    pub fn new(cfg: NetConfig) -> Result<NetworkManager> {
        if let Some(dir) = cfg.state_file.parent() {
            fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        }
        let alloc = Allocator::open(cfg.pool, &cfg.state_file)?;
        let firewall = match cfg.firewall.mode {
            FirewallMode::Off => false,
            mode => match firewall::install(cfg.pool, &cfg.firewall.tcp_ports) {
                Ok(()) => true,
                Err(e) if mode == FirewallMode::Required => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, pool = %cfg.pool,
                        "no host input filter: sandboxes can reach any host service listening on 0.0.0.0");
                    false
                }
            },
        };
        Ok(NetworkManager {
            alloc: Mutex::new(alloc),
            firewall,
        })
    }

    /// Whether the host input filter is installed.
    pub fn firewall_active(&self) -> bool {
        self.firewall
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.alloc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool addresses come from.
    pub fn pool(&self) -> Pool {
        self.table().pool()
    }

    /// The network of sandbox `id`, if it has one.
    pub fn get(&self, id: &str) -> Option<SandboxNet> {
        let t = self.table();
        t.get(id).map(|a| net_of(t.pool(), id, a))
    }

    /// The sandbox whose address is `addr` (how the gateway and DNS tell who is asking).
    pub fn by_address(&self, addr: Ipv4Addr) -> Option<SandboxNet> {
        let t = self.table();
        t.iter()
            .map(|(id, a)| net_of(t.pool(), id, a))
            .find(|n| n.address == addr)
    }

    /// Every allocated sandbox network.
    pub fn list(&self) -> Vec<SandboxNet> {
        let t = self.table();
        t.iter().map(|(id, a)| net_of(t.pool(), id, a)).collect()
    }

    /// Allocate sandbox `id`'s addresses ahead of [`NetworkManager::setup_netns`] (which then
    /// uses them), so files naming the gateway can be written before the sandbox starts.
    /// Idempotent. Released by [`NetworkManager::teardown_sandbox`].
    pub fn reserve(&self, id: &str) -> Result<SandboxNet> {
        let host = host_ipv4_addresses();
        let mut t = self.table();
        let pool = t.pool();
        // Blocks whose addresses are already on the host (a link not gone yet, another Hutch
        // with the same pool) would route replies to the wrong link: skip them.
        let a = t.allocate_avoiding(id, &host_ifname(id), &|i| {
            let (gw, addr) = pool.block(i);
            host.contains(&gw) || host.contains(&addr)
        })?;
        Ok(net_of(t.pool(), id, &a))
    }

    /// Give the sandbox whose PID 1 is `pid` its network. On error nothing is left behind.
    pub fn setup_sandbox(&self, id: &str, pid: i32) -> Result<SandboxNet> {
        let ns_path = format!("/proc/{pid}/ns/net");
        let ns: OwnedFd = fs::File::open(&ns_path)
            .ctx(|| format!("open {ns_path}"))?
            .into();
        self.setup_netns(id, ns.as_fd())
    }

    /// Give sandbox `id` its network inside the network namespace `ns` (e.g. a namespace
    /// prepared before the sandbox's processes exist). Refuses the host's own namespace. On
    /// error nothing is left behind.
    pub fn setup_netns(&self, id: &str, ns: BorrowedFd<'_>) -> Result<SandboxNet> {
        let started = Instant::now();
        if same_ns(ns, "/proc/self/ns/net")? {
            return Err(Error::Invalid {
                field: "network namespace",
                message: format!("sandbox {id} is in the host's network namespace"),
            });
        }
        // Usually reserved already (the server does it before the sandbox starts).
        let reserved = self.get(id);
        let net = match reserved {
            Some(net) => net,
            None => self.reserve(id)?,
        };
        match configure(&net, ns) {
            Ok(()) => {
                tracing::info!(sandbox = id, address = %net.address, gateway = %net.gateway,
                    elapsed_us = started.elapsed().as_micros() as u64, "sandbox network up");
                Ok(net)
            }
            Err(e) => {
                if let Err(e2) = Netlink::open().and_then(|nl| nl.del_link(&net.host_ifname)) {
                    tracing::warn!(sandbox = id, error = %e2, "removing half-made link");
                }
                if let Err(e2) = self.table().release(id) {
                    tracing::warn!(sandbox = id, error = %e2, "releasing address");
                }
                Err(e)
            }
        }
    }

    /// Remove sandbox `id`'s link and free its addresses. Idempotent.
    pub fn teardown_sandbox(&self, id: &str) -> Result<()> {
        // Every link comes from an allocation (made first, persisted): none, nothing to remove.
        let Some(ifname) = self.table().get(id).map(|a| a.ifname.clone()) else {
            return Ok(());
        };
        Netlink::open()
            .and_then(|nl| nl.del_link(&ifname))
            .ctx(|| format!("delete link {ifname}"))?;
        self.table().release(id)?;
        Ok(())
    }

    /// Free the addresses of a sandbox whose processes are gone, removing its link in the
    /// background. The kernel destroys the veth with the sandbox's namespace anyway, and
    /// deleting it synchronously costs 15-30 ms (an RCU grace period under the RTNL lock) on
    /// every delete. Until the link is gone its addresses stay on the host, and allocation
    /// skips blocks whose addresses are on the host, so nothing is handed out twice.
    pub fn release_dead_sandbox(&self, id: &str) -> Result<()> {
        let Some(old) = self.table().release(id)? else {
            return Ok(());
        };
        let ifname = old.ifname;
        std::thread::spawn(move || {
            if let Err(e) = Netlink::open().and_then(|nl| nl.del_link(&ifname)) {
                tracing::debug!(link = %ifname, error = %e, "deleting a dead sandbox's link");
            }
        });
        Ok(())
    }
}

impl hutch_sandbox::NetworkHook for NetworkManager {
    fn setup(&self, id: &str, _pid: i32, netns: BorrowedFd<'_>) -> hutch_sandbox::Result<()> {
        self.setup_netns(id, netns).map(drop).map_err(to_engine)
    }

    fn teardown(&self, id: &str) -> hutch_sandbox::Result<()> {
        self.teardown_sandbox(id).map_err(to_engine)
    }
}

fn to_engine(e: Error) -> hutch_sandbox::Error {
    hutch_sandbox::Error::Setup {
        step: "network".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn net_of(pool: Pool, id: &str, a: &pool::Alloc) -> SandboxNet {
    let (gateway, address) = pool.block(a.index);
    SandboxNet {
        id: id.to_string(),
        host_ifname: a.ifname.clone(),
        gateway,
        address,
    }
}

/// The host-side interface name for sandbox `id` (at most 15 bytes): `hv-<id>` for short ids,
/// else `hv-<first 6>-<5 hex of a hash of the id>`.
pub fn host_ifname(id: &str) -> String {
    let clean: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if clean.len() <= 12 && clean == id {
        return format!("hv-{clean}");
    }
    // FNV-1a: stable across versions and processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let head: String = clean.chars().take(6).collect();
    format!("hv-{head}-{:05x}", h & 0xf_ffff)
}

/// Whether `ns` is the namespace at `path`.
fn same_ns(ns: BorrowedFd<'_>, path: &str) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = fs::File::from(ns.try_clone_to_owned().ctx(|| "dup netns fd".into())?)
        .metadata()
        .ctx(|| "stat netns".into())?;
    let ours = fs::metadata(path).ctx(|| format!("stat {path}"))?;
    Ok(theirs.dev() == ours.dev() && theirs.ino() == ours.ino())
}

/// Create and configure the veth pair for `net` into the namespace `ns`.
fn configure(net: &SandboxNet, ns: BorrowedFd<'_>) -> Result<()> {
    let nl = Netlink::open().ctx(|| "netlink socket".into())?;
    let host = &net.host_ifname;
    // A link left by a crash between setup and teardown would make the create fail.
    nl.del_link(host).ctx(|| format!("delete stale {host}"))?;
    nl.add_veth(host, SANDBOX_IFNAME, ns.as_raw_fd())
        .ctx(|| format!("create veth {host}"))?;
    // Before the link goes up: no IPv6 (no link-local path), no forwarding, strict rp_filter.
    sysctl_if_present(&format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1")?;
    sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/forwarding"), "0")?;
    sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/rp_filter"), "1")?;
    let index = nl.link_index(host).ctx(|| format!("find {host}"))?;
    nl.add_addr(index, net.gateway, LINK_PREFIX)
        .ctx(|| format!("address {host}"))?;
    nl.set_up(index).ctx(|| format!("up {host}"))?;
    // The sandbox side, from a thread that joins the sandbox's network namespace (setns of a
    // network namespace only affects the calling thread; this one ends right after).
    let (address, gateway) = (net.address, net.gateway);
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // SAFETY: setns on a valid namespace fd; affects only this short-lived thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::Io {
                    context: "setns".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            sysctl_if_present(
                &format!("/proc/sys/net/ipv6/conf/{SANDBOX_IFNAME}/disable_ipv6"),
                "1",
            )?;
            let nl = Netlink::open().ctx(|| "netlink socket in sandbox".into())?;
            let index = nl.link_index(SANDBOX_IFNAME).ctx(|| "find eth0".into())?;
            nl.add_addr(index, address, LINK_PREFIX)
                .ctx(|| "address eth0".into())?;
            nl.set_up(index).ctx(|| "up eth0".into())?;
            nl.add_default_route(index, gateway)
                .ctx(|| "default route".into())?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Invalid {
                field: "network setup",
                message: "thread panicked".into(),
            })
        })
    })
}

/// The addresses (IPv4 and IPv6) on the interfaces of the calling thread's network namespace:
/// the host's own, for callers in the host's namespace. Read fresh on every call.
pub fn host_addresses() -> std::io::Result<HashSet<IpAddr>> {
    let mut out = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says how to read it.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.insert(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The host's IPv4 addresses, for keeping sandbox blocks off them (empty if they cannot be
/// read: the allocator then only avoids its own blocks).
fn host_ipv4_addresses() -> HashSet<Ipv4Addr> {
    let all = host_addresses().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list the host's addresses");
        HashSet::new()
    });
    all.into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

fn sysctl(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).ctx(|| format!("write {path}"))
}

fn sysctl_if_present(path: &str, value: &str) -> Result<()> {
    match fs::write(path, value) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.ctx(|| format!("write {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_include_loopback() {
        let all = host_addresses().expect("getifaddrs");
        assert!(all.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{all:?}");
        // ::1 exists unless IPv6 is off on lo.
        let v6_off = fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
            .map_or(true, |v| v.trim() == "1");
        assert!(
            v6_off || all.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)),
            "{all:?}"
        );
        assert!(host_ipv4_addresses().contains(&Ipv4Addr::LOCALHOST));
    }
}
