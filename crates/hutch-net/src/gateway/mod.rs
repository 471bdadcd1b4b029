//! The egress gateway: the only thing a sandbox can talk to. It accepts plain HTTP (routed by
//! Host header), TLS (routed by the SNI in the ClientHello) and an HTTP proxy port
//! (absolute-form requests and CONNECT), checks each request or connection against the
//! sandbox's current policy, and connects upstream itself.
//!
//! TLS (on `:443` and inside CONNECT tunnels) is intercepted when the gateway has a CA
//! (`GatewayConfig::ca`): terminated with a minted certificate and served as HTTP, request by
//! request. Hosts matching a passthrough pattern (operator's or the sandbox policy's) are
//! spliced unread instead, unless the sandbox has a credential injected for them. Without a CA
//! all TLS is spliced.
//!
//! Checks: the destination is allowed; the names agree (absolute URL host = Host header,
//! CONNECT host = SNI); IP literals only through explicit CIDR rules; upstream addresses in
//! private, loopback, link-local, metadata and other special ranges, or assigned to one of the
//! host's own interfaces, refused unless the operator allows them
//! (`GatewayConfig::allow_upstream`); TRACE and TRACK refused (they echo the request, injected
//! credentials included, back to the sandbox); credentials only injected over HTTPS. Blocked
//! HTTP requests get a 403 whose `X-Hutch-Block-Reason` header and body say why.

mod egress;
mod http;
mod intercept;
mod internal;
mod resolve;
mod scan;
pub mod sni;
mod streams;
mod upstream;

pub(crate) use egress::now_ms;
pub use egress::{EgressKind, EgressRecord, EgressSink};
pub use intercept::system_roots;
pub use internal::{
    INTERNAL_HOST, INTERNAL_MAX_BODY, InternalFuture, InternalService, is_internal,
};
pub use resolve::{ResolveFuture, Resolver, StaticResolver, SystemResolver};

use crate::ca::Ca;
use crate::dlp::Scanner;
use crate::policy::{Decision, Host, Injections, PolicyStore, Request, is_special};
use intercept::Mode;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// How long the host's interface addresses are trusted before they are read again.
const HOST_ADDRS_TTL: Duration = Duration::from_secs(2);

/// Header carrying the reason of a block.
pub const BLOCK_HEADER: &str = "x-hutch-block-reason";

/// Gateway settings (operator-level, not per sandbox).
#[derive(Clone)]
pub struct GatewayConfig {
    /// Special upstream ranges (private, loopback, ...) the gateway may still connect to.
    pub allow_upstream: Vec<IpNet>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// How long a client may take to send its request head or ClientHello.
    pub client_timeout: Duration,
    /// DLP for requests the gateway can read (plain HTTP and intercepted HTTPS): URL, every
    /// header and the body. `None`: no scanning. Replace it later with [`Gateway::set_dlp`].
    pub dlp: Option<Arc<Scanner>>,
    /// Largest request body scanned; a larger one is blocked when DLP is on (fail closed), as
    /// is any compressed body.
    pub max_scan_body: usize,
    /// Most connections one listening socket serves at once; more wait in the kernel's accept
    /// queue. The server binds one set of listeners per sandbox, so this caps what one sandbox
    /// can hold open (and buffer: up to `max_scan_body` per connection).
    pub max_connections: usize,
    /// Where egress records go (one per request, tunnel and connection of a known sandbox).
    pub sink: Option<Arc<dyn EgressSink>>,
    /// What answers `http://hutch.internal/` (`None`: 404).
    pub internal: Option<Arc<dyn InternalService>>,
    /// The CA to intercept TLS with (`None`: TLS is passed through unread).
    pub ca: Option<Arc<Ca>>,
    /// Roots upstream certificates are verified against when intercepting (`None`: the
    /// system's roots).
    pub upstream_roots: Option<Arc<rustls::RootCertStore>>,
    /// Domain patterns (`*`, `*.suffix` or exact) whose TLS is never intercepted.
    pub passthrough: Vec<String>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("allow_upstream", &self.allow_upstream)
            .field("connect_timeout", &self.connect_timeout)
            .field("client_timeout", &self.client_timeout)
            .field("dlp", &self.dlp.is_some())
            .field("max_scan_body", &self.max_scan_body)
            .field("max_connections", &self.max_connections)
            .field("sink", &self.sink.is_some())
            .field("internal", &self.internal.is_some())
            .field("ca", &self.ca.is_some())
            .field(
                "upstream_roots",
                &self.upstream_roots.as_ref().map(|r| r.len()),
            )
            .field("passthrough", &self.passthrough)
            .finish()
    }
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            allow_upstream: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            client_timeout: Duration::from_secs(30),
            dlp: None,
            max_scan_body: 8 << 20,
            max_connections: 128,
            sink: None,
            internal: None,
            ca: None,
            upstream_roots: None,
            passthrough: Vec::new(),
        }
    }
}

/// What a listening socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Plain HTTP routed by Host header, for destination `port` (80 on the gateway's `:80`).
    Http {
        /// The destination port clients mean by connecting here.
        port: u16,
    },
    /// TLS routed by SNI, for destination `port` (443 on the gateway's `:443`).
    Tls {
        /// The destination port clients mean by connecting here.
        port: u16,
    },
    /// An HTTP proxy: absolute-form `http://` requests and CONNECT.
    Proxy,
}

/// A refused request or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// HTTP status to answer with (403 for policy, 502 for upstream failures).
    pub status: u16,
    /// Why.
    pub reason: String,
    /// Content type and body answering instead of the text page, for clients that only show
    /// a refusal in their own protocol (`git push`: see `gitgate`).
    pub(crate) answer: Option<(&'static str, bytes::Bytes)>,
}

impl Blocked {
    fn policy(reason: impl Into<String>) -> Blocked {
        Blocked {
            status: 403,
            reason: reason.into(),
            answer: None,
        }
    }
    fn upstream(reason: impl Into<String>) -> Blocked {
        Blocked {
            status: 502,
            reason: reason.into(),
            answer: None,
        }
    }
}

/// An allowed destination.
#[derive(Debug)]
pub(crate) struct Allowed {
    pub sandbox: String,
    pub rule: String,
    pub addrs: Vec<SocketAddr>,
}

/// The gateway. Share it in an `Arc`; run [`Gateway::serve`] once per listening socket.
pub struct Gateway {
    store: Arc<PolicyStore>,
    resolver: Arc<dyn Resolver>,
    /// The DLP scanner of the moment (also the redactor of what gets logged and recorded).
    dlp: RwLock<Option<Arc<Scanner>>>,
    /// Redacts with the built-in rules when there is no DLP scanner.
    builtin: Option<Arc<Scanner>>,
    /// TLS interception (when there is a CA).
    tls: Option<intercept::Tls>,
    /// Why interception failed to set up although a CA was given: all TLS is then refused.
    tls_error: Option<String>,
    /// The host's own addresses and when they were read (see [`Gateway::host_addresses`]).
    host_addrs: Mutex<Option<(Instant, Arc<HashSet<IpAddr>>)>>,
    cfg: GatewayConfig,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway reading policies from `store` and resolving names with `resolver`.
    pub fn new(
        store: Arc<PolicyStore>,
        resolver: Arc<dyn Resolver>,
        cfg: GatewayConfig,
    ) -> Arc<Gateway> {
        let builtin = Scanner::with_builtin(Vec::new()).ok().map(Arc::new);
        let (tls, tls_error) = match cfg.ca.clone() {
            None => (None, None),
            Some(ca) => match intercept::Tls::new(ca, cfg.upstream_roots.clone()) {
                Ok(t) => (Some(t), None),
                Err(e) => {
                    tracing::error!(error = %e, "TLS interception unavailable: TLS refused");
                    (None, Some(e))
                }
            },
        };
        Arc::new(Gateway {
            dlp: RwLock::new(cfg.dlp.clone()),
            builtin,
            tls,
            tls_error,
            host_addrs: Mutex::new(None),
            store,
            resolver,
            cfg,
        })
    }

    /// Replace the DLP scanner (when the registered secrets change); applies to the next
    /// request. `None` turns scanning off.
    pub fn set_dlp(&self, dlp: Option<Arc<Scanner>>) {
        *self.dlp.write().unwrap_or_else(|p| p.into_inner()) = dlp;
    }

    /// The DLP scanner of the moment.
    pub(crate) fn scanner(&self) -> Option<Arc<Scanner>> {
        self.dlp.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Accept connections on `listener` forever. Bind it to specific gateway addresses, never
    /// `0.0.0.0` (which would also expose it on the host's other interfaces).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, kind: Listener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.cfg.max_connections.max(1)));
        loop {
            // At the cap, stop accepting until a connection ends.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway accept");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match kind {
                    Listener::Http { port } => {
                        http::serve_conn(gw, stream, peer, http::Via::Http { port }).await
                    }
                    Listener::Proxy => http::serve_conn(gw, stream, peer, http::Via::Proxy).await,
                    Listener::Tls { port } => gw.serve_tls(stream, peer, port).await,
                }
            });
        }
    }

    /// Check a destination for the sandbox behind `peer` and resolve it.
    pub(crate) async fn authorize(
        &self,
        peer: IpAddr,
        host_raw: &str,
        port: u16,
        method: Option<&str>,
        path: Option<&str>,
    ) -> Result<Allowed, Blocked> {
        let Some((sandbox, policy)) = self.store.for_peer(peer) else {
            return Err(Blocked::policy(
                "connection does not come from a known sandbox",
            ));
        };
        let host = Host::parse(host_raw).map_err(Blocked::policy)?;
        let rule = match policy.check(&Request {
            host: &host,
            port,
            method,
            path,
        }) {
            Decision::Allow { rule } => rule,
            Decision::Deny { reason } => return Err(Blocked::policy(reason)),
        };
        let addrs = match &host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => self
                .resolver
                .resolve(name, port)
                .await
                .map_err(|e| Blocked::upstream(format!("cannot resolve {name}: {e}")))?,
        };
        if addrs.is_empty() {
            return Err(Blocked::upstream(format!("{host_raw} has no addresses")));
        }
        // Any special address refuses the whole name (DNS rebinding picks one at random).
        for a in &addrs {
            let ip = a.ip();
            if self.cfg.allow_upstream.iter().any(|n| n.contains(&ip)) {
                continue;
            }
            if is_special(ip) {
                return Err(Blocked::policy(format!(
                    "{host_raw} resolves to {ip}, a private, loopback, link-local or metadata address"
                )));
            }
            // A public address of the host's own (its internet-facing IPv4, a global IPv6)
            // would reach host services through the gateway. Mapped forms count too.
            if self.host_addresses()?.contains(&ip.to_canonical()) {
                return Err(Blocked::policy(format!(
                    "{host_raw} resolves to {ip}, an address of the host itself"
                )));
            }
        }
        Ok(Allowed {
            sandbox,
            rule,
            addrs,
        })
    }

    /// The host's interface addresses, read at most every [`HOST_ADDRS_TTL`] (addresses come
    /// and go, but a read per request would be wasteful). Unreadable: the connection is
    /// refused (fail closed).
    fn host_addresses(&self) -> Result<Arc<HashSet<IpAddr>>, Blocked> {
        let mut cached = self.host_addrs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, addrs)) = cached.as_ref()
            && at.elapsed() < HOST_ADDRS_TTL
        {
            return Ok(addrs.clone());
        }
        let addrs = Arc::new(crate::netns::host_addresses().map_err(|e| {
            tracing::error!(error = %e, "cannot list the host's addresses: upstream refused");
            Blocked::upstream(format!("cannot list the host's own addresses: {e}"))
        })?);
        *cached = Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }

    /// Check a connection whose requests will each be authorized later (intercepted TLS):
    /// destination and port only, nothing resolved yet.
    pub(crate) fn check_connection(
        &self,
        peer: IpAddr,
        host_raw: &str,
        port: u16,
    ) -> Result<Allowed, Blocked> {
        let Some((sandbox, policy)) = self.store.for_peer(peer) else {
            return Err(Blocked::policy(
                "connection does not come from a known sandbox",
            ));
        };
        let host = Host::parse(host_raw).map_err(Blocked::policy)?;
        match policy.check_connection(&host, port) {
            Decision::Allow { rule } => Ok(Allowed {
                sandbox,
                rule,
                addrs: Vec::new(),
            }),
            Decision::Deny { reason } => Err(Blocked::policy(reason)),
        }
    }

    /// How TLS from `peer` to the name `sni` is handled.
    pub(crate) fn tls_mode_for(&self, peer: IpAddr, sni: &str) -> Mode {
        match (self.store.for_peer(peer), Host::parse(sni)) {
            (Some((sandbox, policy)), Ok(Host::Name(name))) => {
                self.tls_mode(&sandbox, &policy, &name)
            }
            // Unknown peers are refused by the checks; IP literals need a CIDR rule and are
            // never intercepted (no name to certify).
            _ => Mode::Passthrough,
        }
    }

    /// Connect to the first reachable address.
    pub(crate) async fn connect(&self, addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
        use std::io::{Error, ErrorKind};
        let mut last = Error::new(ErrorKind::NotFound, "no address");
        for a in addrs {
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = Error::new(ErrorKind::TimedOut, "connect timed out"),
            }
        }
        Err(last)
    }

    pub(crate) fn max_scan_body(&self) -> usize {
        self.cfg.max_scan_body
    }

    /// `text` (a path, host name or reason) fit for a log line or an egress record.
    pub(crate) fn shown(&self, text: &str) -> String {
        match self.scanner().or_else(|| self.builtin.clone()) {
            Some(r) => r.redact(text),
            None => "<withheld>".to_string(),
        }
    }

    /// [`Gateway::shown`], also hiding a sandbox's injected credentials and placeholders.
    pub(crate) fn shown_for(&self, inj: Option<&Injections>, text: &str) -> String {
        let shown = self.shown(text);
        match inj {
            Some(i) => i.scanner.redact(&shown),
            None => shown,
        }
    }

    pub(crate) fn sink(&self) -> Option<&Arc<dyn EgressSink>> {
        self.cfg.sink.as_ref()
    }

    pub(crate) fn internal(&self) -> Option<&Arc<dyn InternalService>> {
        self.cfg.internal.as_ref()
    }

    pub(crate) fn store(&self) -> &PolicyStore {
        &self.store
    }

    pub(crate) fn client_timeout(&self) -> Duration {
        self.cfg.client_timeout
    }

    /// A record for traffic of `sandbox` (host and path redacted; the path loses its query).
    pub(crate) fn record_for(
        &self,
        inj: Option<&Injections>,
        kind: EgressKind,
        method: Option<&str>,
        host: &str,
        port: u16,
        path: Option<&str>,
    ) -> EgressRecord {
        EgressRecord {
            time_ms: egress::now_ms(),
            sandbox: String::new(),
            kind,
            method: method.map(str::to_string),
            host: self.shown_for(inj, host),
            port,
            path: path.map(|p| self.shown_for(inj, p.split('?').next().unwrap_or(p))),
            status: None,
            bytes_sent: 0,
            bytes_received: 0,
            allowed: false,
            rule: None,
            reason: None,
        }
    }

    /// Record a refusal of traffic from `peer` (nothing when the peer is no known sandbox).
    pub(crate) fn record_blocked(&self, peer: IpAddr, mut rec: EgressRecord, b: &Blocked) {
        let Some(sink) = self.sink() else { return };
        let Some(sandbox) = self.store.sandbox_for(peer) else {
            return;
        };
        rec.sandbox = sandbox;
        rec.allowed = false;
        rec.status = Some(b.status);
        rec.reason = Some(self.shown(&b.reason));
        sink.record(rec);
    }

    /// A transparent TLS connection: route by SNI, then intercept or splice.
    async fn serve_tls(self: Arc<Self>, mut client: TcpStream, peer: SocketAddr, port: u16) {
        let (hello_bytes, hello) = match sni::read_client_hello(
            &mut client,
            self.cfg.client_timeout,
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::info!(%peer, error = %e, "tls connection refused: no readable ClientHello");
                return;
            }
        };
        let sni = hello.sni.clone().unwrap_or_default();
        let mode = self.tls_mode_for(peer.ip(), &sni);
        let verdict = match (&hello.sni, hello.ech) {
            (_, true) => Err(Blocked::policy(
                "Encrypted Client Hello hides the destination",
            )),
            (None, _) => Err(Blocked::policy("TLS without SNI")),
            (Some(sni), false) if is_internal(sni) => Err(Blocked::policy(
                "hutch.internal is served over plain HTTP only",
            )),
            (Some(_), false) => match &mode {
                Mode::Refuse(reason) => Err(Blocked::policy(reason.clone())),
                Mode::Intercept => self.check_connection(peer.ip(), &sni, port),
                Mode::Passthrough => self.authorize(peer.ip(), &sni, port, None, None).await,
            },
        };
        let rec = self.record_for(None, EgressKind::Tls, None, &sni, port, None);
        let allowed = match verdict {
            Ok(a) => a,
            Err(b) => {
                tracing::info!(%peer, sni = %self.shown(&sni), port, reason = %self.shown(&b.reason), "tls blocked");
                self.record_blocked(peer.ip(), rec, &b);
                // TLS alert: fatal, access_denied.
                let _ = client
                    .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31])
                    .await;
                return;
            }
        };
        if mode == Mode::Intercept {
            tracing::debug!(sandbox = %allowed.sandbox, sni = %self.shown(&sni), port, "tls intercepted");
            let host = sni.trim_end_matches('.').to_ascii_lowercase();
            intercept::intercept(self, client, hello_bytes, peer, host, port).await;
            return;
        }
        tracing::info!(sandbox = %allowed.sandbox, sni = %self.shown(&sni), port, rule = %allowed.rule, "tls allowed");
        splice(&self, client, &allowed, &hello_bytes, rec).await;
    }
}

/// Connect upstream, replay `first` (bytes already read from the client) and copy both ways;
/// then send `rec` (completed with the byte counts) to the sink.
pub(crate) async fn splice<C>(
    gw: &Gateway,
    client: C,
    allowed: &Allowed,
    first: &[u8],
    mut rec: EgressRecord,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    rec.sandbox = allowed.sandbox.clone();
    rec.allowed = true;
    rec.rule = Some(allowed.rule.clone());
    let finish = |mut rec: EgressRecord, sent: u64, received: u64, reason: Option<String>| {
        if let Some(sink) = gw.sink() {
            rec.bytes_sent = sent;
            rec.bytes_received = received;
            rec.reason = reason.map(|r| gw.shown(&r));
            sink.record(rec);
        }
    };
    let mut upstream = match gw.connect(&allowed.addrs).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(sandbox = %allowed.sandbox, error = %e, "upstream connect failed");
            finish(rec, 0, 0, Some(format!("upstream connect: {e}")));
            return;
        }
    };
    if !first.is_empty()
        && let Err(e) = upstream.write_all(first).await
    {
        tracing::debug!(error = %e, "upstream write");
        finish(rec, 0, 0, Some(format!("upstream write: {e}")));
        return;
    }
    let mut client = streams::Counting::new(client);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed");
    }
    finish(rec, first.len() as u64 + client.read, client.written, None);
}
