//! Real network namespaces: each test starts a process in a new network namespace (the
//! "sandbox"), gives it a network and checks links, addresses, routes and teardown. Traffic
//! only goes between the host and namespaces these tests create. Needs root.

mod common;
use common::FakeSandbox;
use hutch_net::netns::{
    FirewallConfig, FirewallMode, NetConfig, NetworkManager, Pool, host_ifname,
};
use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn host_link_exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", ifname])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ip")
        .success()
}

fn manager(dir: &tempfile::TempDir, pool: &str) -> NetworkManager {
    manager_with(
        dir,
        pool,
        FirewallConfig {
            mode: FirewallMode::Off,
            tcp_ports: vec![],
        },
    )
}

fn manager_with(dir: &tempfile::TempDir, pool: &str, firewall: FirewallConfig) -> NetworkManager {
    let cfg = NetConfig {
        pool: pool.parse::<Pool>().expect("pool"),
        state_file: dir.path().join("net.json"),
        firewall,
    };
    NetworkManager::new(cfg).expect("manager")
}

/// Removes a pool's nftables table on drop (even when the test fails).
struct TableGuard(Pool);

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = hutch_net::netns::firewall::remove(self.0);
    }
}

fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Connect from inside the sandbox's namespace (a thread that joins it).
/// Whether a TCP connection from inside the sandbox gets through within one second.
fn connect_from(sb: &FakeSandbox, addr: std::net::SocketAddr) -> bool {
    sb.inside(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

/// Whether a connection gets through, retrying for a while: a fresh veth may still be coming
/// up (carrier, ARP) when the first SYN goes out.
fn reachable_from(sb: &FakeSandbox, addr: std::net::SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect_from(sb, addr) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn firewall_limits_sandboxes_to_gateway_ports() {
    if !nft_available() {
        println!(
            "skipped: nft is not installed (the filter is optional; FirewallMode::Required fails closed)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = NetConfig {
            pool: "10.236.0.0/24".parse().expect("pool"),
            state_file: dir.path().join("net.json"),
            firewall: FirewallConfig {
                mode: FirewallMode::Required,
                tcp_ports: vec![80],
            },
        };
        assert!(
            NetworkManager::new(cfg).is_err(),
            "Required must fail without nft"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pool: Pool = "10.235.0.0/24".parse().expect("pool");
    let _guard = TableGuard(pool);
    let sb = FakeSandbox::start("nettest-fw");
    let fw = FirewallConfig {
        mode: FirewallMode::Required,
        tcp_ports: vec![18080],
    };
    let mgr = manager_with(&dir, "10.235.0.0/24", fw);
    assert!(mgr.firewall_active());
    let net = mgr.setup_sandbox("nettest-fw", sb.pid()).expect("setup");
    // Host services on the gateway address: one on an allowed port, one not.
    let open = TcpListener::bind((net.gateway, 18080)).expect("bind allowed port");
    let other = TcpListener::bind((net.gateway, 0)).expect("bind other port");
    let other_addr = other.local_addr().expect("addr");
    assert!(
        reachable_from(&sb, open.local_addr().expect("addr")),
        "gateway port must be reachable"
    );
    assert!(
        !connect_from(&sb, other_addr),
        "other host ports must be filtered"
    );
    // Without the filter the other port is reachable: the risk the filter closes.
    hutch_net::netns::firewall::remove(pool).expect("remove table");
    assert!(reachable_from(&sb, other_addr));
    mgr.teardown_sandbox("nettest-fw").expect("teardown");
}

#[test]
fn veth_addresses_route_and_teardown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = manager(&dir, "10.231.0.0/24");
    let sb = FakeSandbox::start("nettest-a");
    let net = mgr.setup_sandbox("nettest-a", sb.pid()).expect("setup");
    assert_eq!(net.host_ifname, "hv-nettest-a");
    assert_eq!(net.gateway.to_string(), "10.231.0.1");
    assert_eq!(net.address.to_string(), "10.231.0.2");

    // Inside: eth0 with the /30, a default route via the gateway, no IPv6 address at all.
    let addr = sb.run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.231.0.2/30"), "{addr}");
    let routes = sb.run(&["ip", "-4", "route"]);
    assert!(
        routes.contains("default via 10.231.0.1 dev eth0"),
        "{routes}"
    );
    let links = sb.run(&["ip", "-o", "link"]);
    assert!(
        links.contains("eth0@") && links.contains("state UP"),
        "{links}"
    );
    let v6 = sb.run(&["ip", "-6", "-o", "addr"]);
    assert!(!v6.contains("eth0"), "eth0 must have no IPv6 address: {v6}");

    // Host side: the gateway address, no forwarding, strict reverse-path filter.
    let host = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "hv-nettest-a"])
        .output()
        .expect("ip");
    assert!(String::from_utf8_lossy(&host.stdout).contains("10.231.0.1/30"));
    let sysctl = |k: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/hv-nettest-a/{k}")).expect(k)
    };
    assert_eq!(sysctl("forwarding").trim(), "0");
    assert_eq!(sysctl("rp_filter").trim(), "1");

    // The sandbox reaches a listener on the gateway address.
    let listener = TcpListener::bind((net.gateway, 0)).expect("bind gateway");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        "exec 3<>/dev/tcp/{}/{port}; echo hello-from-sandbox >&3",
        net.gateway
    );
    sb.run(&["bash", "-c", &script]);
    let (mut conn, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip().to_string(), "10.231.0.2");
    let mut got = String::new();
    conn.read_to_string(&mut got).expect("read");
    assert_eq!(got, "hello-from-sandbox\n");
    assert_eq!(
        mgr.by_address(net.address).map(|n| n.id),
        Some("nettest-a".to_string())
    );

    // Teardown removes the link (both ends) and frees the block.
    mgr.teardown_sandbox("nettest-a").expect("teardown");
    assert!(!host_link_exists("hv-nettest-a"));
    let links = sb.run(&["ip", "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    assert!(mgr.get("nettest-a").is_none());
    mgr.teardown_sandbox("nettest-a")
        .expect("teardown is idempotent");
}

#[test]
fn allocations_survive_restart_and_failures_clean_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sb1 = FakeSandbox::start("nettest-b1");
    let sb2 = FakeSandbox::start("nettest-b2");
    {
        let mgr = manager(&dir, "10.232.0.0/24");
        mgr.setup_sandbox("nettest-b1", sb1.pid())
            .expect("setup b1");
    }
    // A new manager (host process restart) does not reuse b1's block.
    let mgr = manager(&dir, "10.232.0.0/24");
    let n2 = mgr
        .setup_sandbox("nettest-b2", sb2.pid())
        .expect("setup b2");
    assert_eq!(n2.address.to_string(), "10.232.0.6");
    assert_eq!(mgr.list().len(), 2);
    // A dead pid: create fails, nothing is left behind.
    let err = mgr
        .setup_sandbox("nettest-b3", i32::MAX)
        .expect_err("no such pid");
    assert!(err.to_string().contains("/proc/"), "{err}");
    assert!(mgr.get("nettest-b3").is_none());
    assert!(!host_link_exists(&host_ifname("nettest-b3")));
    // The host's own namespace (a sandbox that never got one) is refused.
    let err = mgr
        .setup_sandbox("nettest-b4", std::process::id() as i32)
        .expect_err("host netns");
    assert!(
        err.to_string().contains("host's network namespace"),
        "{err}"
    );
    assert!(!host_link_exists(&host_ifname("nettest-b4")) && mgr.get("nettest-b4").is_none());
    // The sandbox dies first (as on destroy): teardown still cleans up.
    drop(sb1);
    mgr.teardown_sandbox("nettest-b1").expect("teardown b1");
    mgr.teardown_sandbox("nettest-b2").expect("teardown b2");
    assert!(!host_link_exists("hv-nettest-b1") && !host_link_exists("hv-nettest-b2"));
    assert!(mgr.list().is_empty());
}

#[test]
fn setup_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = manager(&dir, "10.233.0.0/24");
    let n = 20;
    let sandboxes: Vec<(String, FakeSandbox)> = (0..n)
        .map(|i| {
            let id = format!("nettest-t{i}");
            let sb = FakeSandbox::start(&id);
            (id, sb)
        })
        .collect();
    let mut times = Vec::new();
    for (id, sb) in &sandboxes {
        let t = Instant::now();
        mgr.setup_sandbox(id, sb.pid()).expect("setup");
        times.push(t.elapsed());
    }
    let t = Instant::now();
    for (id, _) in &sandboxes {
        mgr.teardown_sandbox(id).expect("teardown");
    }
    let teardown = t.elapsed() / n;
    times.sort();
    println!(
        "netns setup: p50 {:.2} ms, max {:.2} ms; teardown avg {:.2} ms ({n} sandboxes)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        teardown.as_secs_f64() * 1e3
    );
    assert!(
        times[times.len() / 2] < Duration::from_millis(100),
        "setup too slow: {times:?}"
    );
}

/// A network namespace held only by an fd, made on a throw-away thread (as the engine's pool
/// does); the link is removed on drop.
struct NsFd {
    fd: std::os::fd::OwnedFd,
    ifname: String,
}

impl Drop for NsFd {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.ifname])
            .stderr(Stdio::null())
            .status();
    }
}

impl NsFd {
    fn new(id: &str) -> NsFd {
        let fd = std::thread::spawn(|| {
            // SAFETY: unshare on this throw-away thread only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            std::os::fd::OwnedFd::from(
                std::fs::File::open("/proc/thread-self/ns/net").expect("open netns"),
            )
        })
        .join()
        .expect("thread");
        NsFd {
            fd,
            ifname: host_ifname(id),
        }
    }

    /// Run `ip ARGS` inside the namespace (from a thread that joins it; the child inherits it).
    fn ip(&self, args: &[&str]) -> String {
        use std::os::fd::AsRawFd;
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: joins a namespace on this scoped thread only.
                assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0, "setns");
                let out = Command::new("ip").args(args).output().expect("ip");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .join()
            .expect("thread")
        })
    }
}

#[test]
fn hook_configures_the_namespace_it_is_given() {
    use hutch_sandbox::NetworkHook;
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = manager(&dir, "10.237.0.0/24");
    let ns = NsFd::new("nettest-h");
    // The pid is the test process itself, still in the host namespace (as PID 1 can be while
    // it joins a pooled namespace): the hook must use the fd, never /proc/<pid>/ns/net.
    NetworkHook::setup(&mgr, "nettest-h", std::process::id() as i32, ns.fd.as_fd()).expect("setup");
    let addr = ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.237.0.2/30"), "{addr}");
    assert!(
        ns.ip(&["-4", "route"])
            .contains("default via 10.237.0.1 dev eth0")
    );
    NetworkHook::teardown(&mgr, "nettest-h").expect("teardown");
    assert!(!host_link_exists("hv-nettest-h"));
    assert!(!ns.ip(&["-o", "link"]).contains("eth0"));
    // The host namespace given as the sandbox's is refused, through the hook too.
    let host = std::fs::File::open("/proc/self/ns/net").expect("own netns");
    assert!(NetworkHook::setup(&mgr, "nettest-h2", 1, host.as_fd()).is_err());
    assert!(!host_link_exists(&host_ifname("nettest-h2")));
}
