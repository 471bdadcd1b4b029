//! The egress gateway: the only thing a sandbox can talk to. It accepts plain HTTP (routed by
//! Host header), TLS (routed by the SNI in the ClientHello, passed through without
//! interception) and an HTTP proxy port (absolute-form requests and CONNECT), checks each
//! request or connection against the sandbox's current policy, and connects upstream itself.
//!
//! Checks: the destination is allowed; the names agree (absolute URL host = Host header,
//! CONNECT host = SNI); IP literals only through explicit CIDR rules; upstream addresses in
//! private, loopback, link-local, metadata and other special ranges refused unless the operator
//! allows them (`GatewayConfig::allow_upstream`). Blocked HTTP requests get a 403 whose
//! `X-Hutch-Block-Reason` header and body say why.

mod http;
mod resolve;
pub mod sni;

pub use resolve::{ResolveFuture, Resolver, StaticResolver, SystemResolver};

use crate::dlp::Scanner;
use crate::policy::{Decision, Host, PolicyStore, Request, is_special};
use ipnet::IpNet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Header carrying the reason of a block.
pub const BLOCK_HEADER: &str = "x-hutch-block-reason";

/// Gateway settings (operator-level, not per sandbox).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Special upstream ranges (private, loopback, ...) the gateway may still connect to.
    pub allow_upstream: Vec<IpNet>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// How long a client may take to send its request head or ClientHello.
    pub client_timeout: Duration,
    /// DLP for requests the gateway can read (plain HTTP; TLS needs interception, not built
    /// yet): URL, every header and the body. `None`: no scanning.
    pub dlp: Option<Arc<Scanner>>,
    /// Largest request body scanned; a larger one is blocked when DLP is on (fail closed), as
    /// is any compressed body.
    pub max_scan_body: usize,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            allow_upstream: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            client_timeout: Duration::from_secs(30),
            dlp: None,
            max_scan_body: 8 << 20,
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
}

impl Blocked {
    fn policy(reason: impl Into<String>) -> Blocked {
        Blocked {
            status: 403,
            reason: reason.into(),
        }
    }
    fn upstream(reason: impl Into<String>) -> Blocked {
        Blocked {
            status: 502,
            reason: reason.into(),
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
    /// Redacts secrets from what gets logged (the DLP scanner, or the built-in rules).
    redactor: Option<Arc<Scanner>>,
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
        let redactor = cfg
            .dlp
            .clone()
            .or_else(|| Scanner::with_builtin(Vec::new()).ok().map(Arc::new));
        Arc::new(Gateway {
            redactor,
            store,
            resolver,
            cfg,
        })
    }

    /// Accept connections on `listener` forever. Bind it to specific gateway addresses, never
    /// `0.0.0.0` (which would also expose it on the host's other interfaces).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, kind: Listener) {
        loop {
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
                match kind {
                    Listener::Http { port } => http::serve_conn(gw, stream, peer, Some(port)).await,
                    Listener::Proxy => http::serve_conn(gw, stream, peer, None).await,
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
            if is_special(ip) && !self.cfg.allow_upstream.iter().any(|n| n.contains(&ip)) {
                return Err(Blocked::policy(format!(
                    "{host_raw} resolves to {ip}, a private, loopback, link-local or metadata address"
                )));
            }
        }
        Ok(Allowed {
            sandbox,
            rule,
            addrs,
        })
    }

    /// Connect to the first reachable address.
    pub(crate) async fn connect(&self, addrs: &[SocketAddr]) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            }
        }
        Err(last)
    }

    pub(crate) fn dlp(&self) -> Option<(&Scanner, usize)> {
        self.cfg.dlp.as_deref().map(|s| (s, self.cfg.max_scan_body))
    }

    /// `text` (a path, host name or reason) fit for a log line.
    pub(crate) fn shown(&self, text: &str) -> String {
        match &self.redactor {
            Some(r) => r.redact(text),
            None => "<withheld>".to_string(),
        }
    }

    pub(crate) fn client_timeout(&self) -> Duration {
        self.cfg.client_timeout
    }

    /// A transparent TLS connection: route by SNI, then splice.
    async fn serve_tls(&self, mut client: TcpStream, peer: SocketAddr, port: u16) {
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
        let verdict = match (&hello.sni, hello.ech) {
            (_, true) => Err(Blocked::policy(
                "Encrypted Client Hello hides the destination",
            )),
            (None, _) => Err(Blocked::policy("TLS without SNI")),
            (Some(sni), false) => self.authorize(peer.ip(), sni, port, None, None).await,
        };
        let sni = hello.sni.as_deref().unwrap_or("");
        let allowed = match verdict {
            Ok(a) => a,
            Err(b) => {
                tracing::info!(%peer, sni = %self.shown(sni), port, reason = %self.shown(&b.reason), "tls blocked");
                // TLS alert: fatal, access_denied.
                let _ = client
                    .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31])
                    .await;
                return;
            }
        };
        tracing::info!(sandbox = %allowed.sandbox, sni = %self.shown(sni), port, rule = %allowed.rule, "tls allowed");
        splice(self, client, &allowed, &hello_bytes).await;
    }
}

/// Connect upstream, replay `first` (bytes already read from the client) and copy both ways.
pub(crate) async fn splice<C>(gw: &Gateway, mut client: C, allowed: &Allowed, first: &[u8])
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut upstream = match gw.connect(&allowed.addrs).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(sandbox = %allowed.sandbox, error = %e, "upstream connect failed");
            return;
        }
    };
    if !first.is_empty()
        && let Err(e) = upstream.write_all(first).await
    {
        tracing::debug!(error = %e, "upstream write");
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel closed");
    }
}
