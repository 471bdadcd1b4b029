//! Sandbox networking in the control plane: the per-sandbox veth (through `hutch-net`'s
//! [`NetworkManager`], installed as the engine's network hook), the gateway and DNS listeners
//! bound on each networked sandbox's gateway address, the live policy of every sandbox, and the
//! files and environment a networked sandbox starts with.
//!
//! Shape: a sandbox in mode `allowlist` gets `eth0` with a /30 from the pool; the host side of
//! the link is its only route and DNS server, and Hutch's gateway (HTTP :80, TLS :443, proxy
//! :3128) and DNS filter (:53) listen there. Nothing is forwarded.

pub mod config;
mod credentials;
pub mod dlp;
pub mod egress;
pub mod internal;
mod lifecycle;
mod resolver;

pub use lifecycle::{apply, assign_placeholders, attach, prepare_create, restore};

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hutch_api::network::{AllowRule, NetworkSpec};
use hutch_net::dlp::Scanner;
use hutch_net::dns::DnsFilter;
use hutch_net::gateway::{Gateway, GatewayConfig, Listener};
use hutch_net::netns::{FirewallConfig, FirewallMode, NetConfig, NetworkManager, Pool, SandboxNet};
use hutch_net::policy::{Policy, PolicyStore, Rule, StaticLookup};
use hutch_sandbox::SeedFile;

pub use config::NetworkConfig;

use crate::error::{AppError, AppResult, Error};

/// HKDF label of the key that seals the gateway CA's private key.
pub const CA_KEY_LABEL: &str = "hutch/gateway/ca-key/v1";

/// Modes a sandbox's network can be in.
pub const MODES: &[&str] = &["none", "allowlist"];

/// Where the Hutch CA goes in a sandbox.
pub const SANDBOX_CA_PATH: &str = "/etc/hutch/ca.crt";
/// The system CA bundle a sandbox's TLS clients read (with the Hutch CA appended).
pub const SANDBOX_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Sandbox networking: shared by the engine hook, the handlers and the background loops.
pub struct Network {
    manager: Result<Arc<NetworkManager>, String>,
    policies: Arc<PolicyStore>,
    gateway: Arc<Gateway>,
    dns: DnsFilter,
    listeners: Mutex<HashMap<String, Listeners>>,
    runtime: tokio::runtime::Handle,
    proxy_port: u16,
    ca_pem: Option<String>,
    /// Why the CA required for interception is missing (networking refused meanwhile).
    ca_error: Option<String>,
    /// Serialises changes to one sandbox's network spec (PUT, approvals).
    spec_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    egress: Arc<egress::EgressLog>,
    decisions: internal::Decisions,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").finish_non_exhaustive()
    }
}

/// The listener tasks of one sandbox. Each task holds a guard that reports when the task (and
/// with it the listening socket) is gone, so a teardown can wait for the address to be free.
struct Listeners {
    tasks: Vec<tokio::task::AbortHandle>,
    gone: std::sync::mpsc::Receiver<()>,
}

struct GoneGuard(std::sync::mpsc::Sender<()>);

impl Drop for GoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// What a networked sandbox starts with.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Environment added to every process (proxy and CA variables).
    pub env: BTreeMap<String, String>,
    /// Files written into its root filesystem.
    pub files: Vec<SeedFile>,
}

impl Network {
    /// Sets up the address pool, the host filter and the gateway. When the host cannot do
    /// sandbox networking (no netlink, no permission), the server still starts and networked
    /// creates fail with a clear error — unless the filter is `required`.
    pub fn new(
        cfg: &NetworkConfig,
        data_dir: &Path,
        runtime: tokio::runtime::Handle,
        store: Arc<dyn hutch_store::Store>,
        ca_key: Option<&[u8; 32]>,
    ) -> Result<Arc<Network>, Error> {
        let bad = |message: String| Error::Config { message };
        let pool: Pool = cfg
            .pool
            .parse()
            .map_err(|e| bad(format!("network.pool: {e}")))?;
        let mode = match cfg.firewall.as_str() {
            "if_available" => FirewallMode::IfAvailable,
            "required" => FirewallMode::Required,
            "off" => FirewallMode::Off,
            other => {
                return Err(bad(format!(
                    "network.firewall: {other:?} is not one of if_available, required, off"
                )));
            }
        };
        let allow_upstream = cfg
            .allow_upstream
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|_| bad(format!("network.allow_upstream: bad CIDR {c:?}")))
            })
            .collect::<Result<Vec<ipnet::IpNet>, Error>>()?;
        let net_cfg = NetConfig {
            pool,
            state_file: data_dir.join("net.json"),
            firewall: FirewallConfig {
                mode,
                tcp_ports: vec![80, 443, cfg.proxy_port],
            },
        };
        let manager = match NetworkManager::new(net_cfg) {
            Ok(m) => Ok(Arc::new(m)),
            Err(e) if mode == FirewallMode::Required => {
                return Err(bad(format!("sandbox networking: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, "sandbox networking unavailable: only network mode \"none\" works");
                Err(e.to_string())
            }
        };
        let lookup: Arc<dyn hutch_net::policy::SandboxLookup> = match &manager {
            Ok(m) => m.clone(),
            Err(_) => Arc::new(StaticLookup::default()),
        };
        let policies = Arc::new(PolicyStore::new(lookup));
        let dlp = if cfg.dlp {
            Some(Arc::new(
                Scanner::with_builtin(Vec::new()).map_err(|e| bad(format!("DLP rules: {e}")))?,
            ))
        } else {
            None
        };
        let egress = egress::EgressLog::start(store.clone(), &runtime);
        let decisions = internal::Decisions::new();
        let internal = Arc::new(internal::Internal::new(
            store,
            policies.clone(),
            decisions.clone(),
        ));
        // The installation's CA: created once, its key sealed with a key derived from the
        // secrets key. A CA that cannot be loaded (e.g. the secrets key changed) must not silently turn
        // interception off: the server starts, but no sandbox gets a network until it is fixed.
        let (ca, ca_error) = match (cfg.intercept_tls, ca_key) {
            (true, Some(key)) => match hutch_net::ca::Ca::load_or_create(data_dir, key) {
                Ok(ca) => (Some(Arc::new(ca)), None),
                Err(e) => {
                    tracing::error!(error = %e, "gateway CA unavailable: networked sandboxes are refused");
                    (
                        None,
                        Some(format!(
                            "the gateway's TLS interception CA cannot be loaded: {e}"
                        )),
                    )
                }
            },
            _ => (None, None),
        };
        let upstream_roots = if cfg.upstream_ca_files.is_empty() {
            None
        } else {
            Some(Arc::new(
                upstream_roots(&cfg.upstream_ca_files).map_err(bad)?,
            ))
        };
        let gateway = Gateway::new(
            policies.clone(),
            Arc::new(resolver::HostsThenSystem::new(&cfg.hosts).map_err(bad)?),
            GatewayConfig {
                allow_upstream,
                dlp,
                sink: Some(egress.clone()),
                internal: Some(Arc::new(internal::Service(internal))),
                ca: ca.clone(),
                upstream_roots,
                passthrough: cfg.passthrough.clone(),
                ..GatewayConfig::default()
            },
        );
        let dns = DnsFilter::new(policies.clone()).with_sink(egress.clone());
        Ok(Arc::new(Network {
            egress,
            decisions,
            manager,
            policies,
            gateway,
            dns,
            listeners: Mutex::new(HashMap::new()),
            runtime,
            proxy_port: cfg.proxy_port,
            ca_pem: ca.map(|c| c.cert_pem().to_owned()),
            ca_error,
            spec_locks: Mutex::new(HashMap::new()),
        }))
    }

    /// The network manager, or why there is none.
    pub fn manager(&self) -> Result<&Arc<NetworkManager>, String> {
        self.manager.as_ref().map_err(|e| e.clone())
    }

    /// The live policies.
    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// The egress log.
    pub fn egress(&self) -> &Arc<egress::EgressLog> {
        &self.egress
    }

    /// Announces access-request decisions to waiting agents.
    pub fn decisions(&self) -> &internal::Decisions {
        &self.decisions
    }

    /// The gateway.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Whether sandboxes get the installation's CA (TLS interception is on).
    pub fn has_ca(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// A sandbox's link, if it has one.
    pub fn link(&self, id: &str) -> Option<SandboxNet> {
        self.manager.as_ref().ok().and_then(|m| m.get(id))
    }

    /// The lock serialising read-modify-write changes of sandbox `id`'s network spec.
    pub fn spec_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.spec_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Reserves `id`'s addresses and returns the environment and files it starts with.
    pub fn prepare(&self, id: &str, template_bundle: Option<Vec<u8>>) -> AppResult<Prepared> {
        if let Some(why) = &self.ca_error {
            return Err(AppError::unavailable(why.clone()));
        }
        let mgr = self.manager().map_err(|why| {
            AppError::unavailable(format!(
                "sandbox networking is not available on this host: {why}"
            ))
        })?;
        let net = mgr
            .reserve(id)
            .map_err(|e| AppError::unavailable(format!("no sandbox address: {e}")))?;
        let gw = net.gateway;
        let proxy = format!("http://{gw}:{}", self.proxy_port);
        let mut env = BTreeMap::new();
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.insert(k.to_owned(), proxy.clone());
        }
        for k in ["NO_PROXY", "no_proxy"] {
            env.insert(k.to_owned(), "localhost,127.0.0.1,::1".to_owned());
        }
        let mut files = vec![
            SeedFile {
                path: PathBuf::from("/etc/resolv.conf"),
                contents: format!("nameserver {gw}\noptions ndots:0 attempts:2 timeout:2\n")
                    .into_bytes(),
                mode: 0o644,
            },
            SeedFile {
                path: PathBuf::from("/etc/hosts"),
                contents: format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{}\t{id}\n{gw}\thutch.internal\n",
                    net.address
                )
                .into_bytes(),
                mode: 0o644,
            },
        ];
        if let Some(ca) = &self.ca_pem {
            let mut bundle = template_bundle.unwrap_or_default();
            if !bundle.is_empty() && !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
            bundle.extend_from_slice(ca.as_bytes());
            files.push(SeedFile {
                path: PathBuf::from(SANDBOX_BUNDLE_PATH),
                contents: bundle,
                mode: 0o644,
            });
            files.push(SeedFile {
                path: PathBuf::from(SANDBOX_CA_PATH),
                contents: ca.clone().into_bytes(),
                mode: 0o644,
            });
            env.insert("SSL_CERT_FILE".into(), SANDBOX_BUNDLE_PATH.into());
            env.insert("REQUESTS_CA_BUNDLE".into(), SANDBOX_BUNDLE_PATH.into());
            env.insert("CURL_CA_BUNDLE".into(), SANDBOX_BUNDLE_PATH.into());
            env.insert("GIT_SSL_CAINFO".into(), SANDBOX_BUNDLE_PATH.into());
            env.insert("NODE_EXTRA_CA_CERTS".into(), SANDBOX_CA_PATH.into());
        }
        Ok(Prepared { env, files })
    }

    /// [`Network::forget`] off the async runtime (it waits for listeners and does netlink I/O).
    pub async fn forget_blocking(self: &Arc<Self>, id: &str) {
        let (network, id) = (self.clone(), id.to_owned());
        if let Err(e) = tokio::task::spawn_blocking(move || network.forget(&id)).await {
            tracing::warn!(error = %e, "network teardown panicked");
        }
    }

    /// Forgets a sandbox: listeners, policy, link and addresses. Idempotent.
    pub fn forget(&self, id: &str) {
        self.stop_listeners(id);
        self.policies.remove(id);
        if let Ok(mgr) = &self.manager
            && let Err(e) = mgr.teardown_sandbox(id)
        {
            tracing::warn!(sandbox = id, error = %e, "network teardown");
        }
    }

    /// [`Network::forget`] for a sandbox whose processes are gone (its namespace is going away
    /// with its link): the link is deleted in the background.
    pub fn forget_dead(&self, id: &str) {
        self.stop_listeners(id);
        self.policies.remove(id);
        if let Ok(mgr) = &self.manager
            && let Err(e) = mgr.release_dead_sandbox(id)
        {
            tracing::warn!(sandbox = id, error = %e, "network release");
        }
    }

    /// Gives the running sandbox whose PID 1 is `pid` its link and listeners.
    pub fn attach(&self, id: &str, pid: i32) -> Result<(), String> {
        if let Some(why) = &self.ca_error {
            return Err(why.clone());
        }
        let mgr = self.manager()?;
        let net = mgr.setup_sandbox(id, pid).map_err(|e| e.to_string())?;
        self.listen(&net).map_err(|e| e.to_string())
    }

    /// Binds the gateway and DNS on `net`'s gateway address.
    fn listen(&self, net: &SandboxNet) -> std::io::Result<()> {
        let _rt = self.runtime.enter();
        let gw = IpAddr::V4(net.gateway);
        let tcp = |port: u16| -> std::io::Result<tokio::net::TcpListener> {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.set_reuseaddr(true)?;
            s.bind(SocketAddr::new(gw, port))?;
            s.listen(1024)
        };
        let http = tcp(80)?;
        let tls = tcp(443)?;
        let proxy = tcp(self.proxy_port)?;
        let udp = std::net::UdpSocket::bind(SocketAddr::new(gw, 53))?;
        udp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let (tx, gone) = std::sync::mpsc::channel();
        let mut tasks = Vec::new();
        for (listener, kind) in [
            (http, Listener::Http { port: 80 }),
            (tls, Listener::Tls { port: 443 }),
            (proxy, Listener::Proxy),
        ] {
            let guard = GoneGuard(tx.clone());
            let gw = self.gateway.clone();
            tasks.push(
                self.runtime
                    .spawn(async move {
                        let _guard = guard;
                        gw.serve(listener, kind).await;
                    })
                    .abort_handle(),
            );
        }
        let guard = GoneGuard(tx);
        let dns = self.dns.clone();
        let id = net.id.clone();
        tasks.push(
            self.runtime
                .spawn(async move {
                    let _guard = guard;
                    if let Err(e) = dns.serve(udp).await {
                        tracing::warn!(sandbox = %id, error = %e, "dns listener stopped");
                    }
                })
                .abort_handle(),
        );
        let old = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(net.id.clone(), Listeners { tasks, gone });
        if let Some(old) = old {
            stop(old);
        }
        Ok(())
    }

    fn stop_listeners(&self, id: &str) {
        let old = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(old) = old {
            stop(old);
        }
    }

    /// After a restart: listeners for the links of live sandboxes, cleanup for the rest.
    pub fn reattach(&self, live: &dyn Fn(&str) -> bool) {
        let Ok(mgr) = &self.manager else {
            return;
        };
        for net in mgr.list() {
            if live(&net.id) && self.ca_error.is_some() {
                // Without the CA, TLS could only be spliced unscanned: keep the sandbox offline.
                tracing::error!(sandbox = %net.id, "no gateway for this sandbox until the CA loads");
            } else if live(&net.id) {
                if let Err(e) = self.listen(&net) {
                    tracing::warn!(sandbox = %net.id, error = %e, "gateway listeners after restart");
                }
            } else if let Err(e) = mgr.teardown_sandbox(&net.id) {
                tracing::warn!(sandbox = %net.id, error = %e, "stale sandbox network");
            }
        }
    }
}

/// The system roots plus the operator's extra CA files, for upstream TLS.
fn upstream_roots(files: &[PathBuf]) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = hutch_net::gateway::system_roots();
    for f in files {
        let bad =
            |e: &dyn std::fmt::Display| format!("network.upstream_ca_files: {}: {e}", f.display());
        let pem = std::fs::read(f).map_err(|e| bad(&e))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"holds no certificate"));
        }
    }
    Ok(roots)
}

/// Aborts the tasks and waits (briefly) until their sockets are closed, so the addresses can
/// be bound again by the next sandbox that gets them.
fn stop(l: Listeners) {
    for t in &l.tasks {
        t.abort();
    }
    for _ in 0..l.tasks.len() {
        if l.gone.recv_timeout(Duration::from_secs(2)).is_err() {
            tracing::warn!("a gateway listener did not stop in time");
            break;
        }
    }
}

/// The engine's network hook: links from the manager, then the listeners.
pub struct Hook(pub Arc<Network>);

impl hutch_sandbox::NetworkHook for Hook {
    fn setup(&self, id: &str, _pid: i32, netns: BorrowedFd<'_>) -> hutch_sandbox::Result<()> {
        let fail = |step: &str, e: String| hutch_sandbox::Error::Setup {
            step: step.into(),
            source: std::io::Error::other(e),
        };
        let mgr = self.0.manager().map_err(|e| fail("network", e))?;
        let net = mgr
            .setup_netns(id, netns)
            .map_err(|e| fail("network", e.to_string()))?;
        let started = std::time::Instant::now();
        let r = self
            .0
            .listen(&net)
            .map_err(|e| fail("gateway listeners", e.to_string()));
        tracing::debug!(
            sandbox = id,
            elapsed_us = started.elapsed().as_micros() as u64,
            "gateway listeners bound"
        );
        r
    }

    fn teardown(&self, id: &str) -> hutch_sandbox::Result<()> {
        // The engine calls this after the sandbox's processes are killed and reaped.
        self.0.forget_dead(id);
        Ok(())
    }
}

/// Whether `pattern` (exact, `*.x` or `*`) covers `narrow` (exact or `*.x`).
pub fn covers(pattern: &str, narrow: &str) -> bool {
    if pattern == "*" || pattern == narrow {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let bare = narrow.strip_prefix("*.").unwrap_or(narrow);
            bare.ends_with(&format!(".{suffix}"))
        }
        None => false,
    }
}

/// The `hutch-net` policy for a spec (the caller validated the mode).
pub fn policy_of(spec: &NetworkSpec) -> Result<Policy, String> {
    let mut rules = Vec::with_capacity(spec.allow.len());
    for (i, r) in spec.allow.iter().enumerate() {
        rules.push(match r {
            AllowRule::Domain(d) => Rule {
                domain: Some(d.trim().to_owned()),
                ..Rule::default()
            },
            AllowRule::Rule(r) => Rule {
                id: r.id.clone(),
                domain: r.domain.clone(),
                cidr: match &r.cidr {
                    Some(c) => Some(
                        c.parse()
                            .map_err(|_| format!("allow[{i}]: bad CIDR {c:?}"))?,
                    ),
                    None => None,
                },
                ports: r.ports.clone(),
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                paths: r.paths.clone(),
            },
        });
    }
    let policy = Policy {
        rules,
        passthrough: spec
            .passthrough
            .iter()
            .map(|p| p.trim().to_owned())
            .collect(),
    };
    policy.validate()?;
    Ok(policy)
}

/// Checks a spec: mode, rules, credential bindings. Returns the policy.
pub fn validate(spec: &NetworkSpec) -> AppResult<Policy> {
    if !MODES.contains(&spec.mode.as_str()) {
        return Err(AppError::invalid(
            "network",
            format!("mode must be one of {}", MODES.join(", ")),
        ));
    }
    if spec.mode == "none" && (!spec.allow.is_empty() || !spec.credentials.is_empty()) {
        return Err(AppError::invalid(
            "network",
            "mode \"none\" takes no allow rules or credentials (use mode \"allowlist\")",
        ));
    }
    if spec.allow.len() > 256 {
        return Err(AppError::invalid("network", "at most 256 allow rules"));
    }
    policy_of(spec).map_err(|m| AppError::invalid("network", m))
}
