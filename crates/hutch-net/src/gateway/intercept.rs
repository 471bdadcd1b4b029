//! TLS interception: the gateway terminates a sandbox's TLS with a certificate minted by the
//! installation's CA for the SNI, serves the HTTP inside like plain HTTP (so every request gets
//! the policy's method and path checks, DLP, credential injection and a record), and speaks
//! TLS to the upstream itself, verifying its certificate.

use super::http::{self, Via};
use super::streams::Rewind;
use super::{Blocked, Gateway};
use crate::ca::Ca;
use crate::policy::Policy;
use rustls::client::ClientConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, pki_types::ServerName};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The only protocol spoken inside intercepted TLS.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The TLS configurations of an intercepting gateway.
pub(crate) struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Tls {
    /// Configurations for terminating with `ca`'s leaves and verifying upstreams against
    /// `roots` (`None`: the system's roots, else the Mozilla set).
    pub fn new(ca: Arc<Ca>, roots: Option<Arc<RootCertStore>>) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS server: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Leaves(ca)));
        server.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let roots = roots.unwrap_or_else(|| Arc::new(system_roots()));
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The host's trusted roots, or the Mozilla set when it has none.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "system root certificates");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no system root certificates: using the built-in Mozilla set");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// Answers each ClientHello with the leaf for its SNI.
#[derive(Debug)]
struct Leaves(Arc<Ca>);

impl ResolvesServerCert for Leaves {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.0.leaf(name) {
            Ok(leaf) => Some(leaf),
            Err(e) => {
                tracing::warn!(error = %e, "no certificate for an intercepted host");
                None
            }
        }
    }
}

/// What to do with TLS to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Terminate it and serve the HTTP inside.
    Intercept,
    /// Pass it through unread.
    Passthrough,
    /// Refuse it.
    Refuse(String),
}

impl Gateway {
    /// How TLS from `sandbox` (with `policy`) to the domain name `host` is handled: intercepted
    /// when the gateway has a CA, unless a passthrough pattern matches; always intercepted
    /// (or refused without a CA) when the sandbox has a credential for the host, which cannot
    /// be injected, nor its placeholder kept from leaking, in unread traffic.
    pub(crate) fn tls_mode(&self, sandbox: &str, policy: &Policy, host: &str) -> Mode {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let injected = self
            .store()
            .injections(sandbox)
            .is_some_and(|i| i.list.iter().any(|inj| inj.matches_host(&host)));
        if let Some(e) = &self.tls_error {
            return Mode::Refuse(format!("TLS interception is unavailable: {e}"));
        }
        match (&self.tls, injected) {
            (None, true) => Mode::Refuse(format!(
                "{host} gets an injected credential, which needs TLS interception (no CA configured)"
            )),
            (None, false) => Mode::Passthrough,
            (Some(_), true) => Mode::Intercept,
            (Some(_), false) => {
                let global = self
                    .cfg
                    .passthrough
                    .iter()
                    .any(|p| crate::policy::domain_matches(p, &host));
                if global || policy.passes_through(&host) {
                    Mode::Passthrough
                } else {
                    Mode::Intercept
                }
            }
        }
    }

    /// TLS to the upstream `host` over `tcp`, its certificate verified for `host`.
    pub(crate) async fn tls_connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, Blocked> {
        let Some(tls) = &self.tls else {
            return Err(Blocked::upstream("no TLS client configured"));
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| Blocked::upstream(format!("upstream TLS name {host}: {e}")))?;
        let connect = TlsConnector::from(tls.client.clone()).connect(name, tcp);
        match tokio::time::timeout(self.cfg.connect_timeout, connect).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Blocked::upstream(format!("upstream TLS with {host}: {e}"))),
            Err(_) => Err(Blocked::upstream(format!(
                "upstream TLS with {host}: handshake timed out"
            ))),
        }
    }
}

/// Terminate the client's TLS (whose ClientHello, already read, is `hello`) for `host:port`
/// and serve the HTTP inside. Boxed: CONNECT handling runs it, and the HTTP it serves handles
/// CONNECT, so the future types would otherwise contain themselves.
pub(crate) fn intercept<S>(
    gw: Arc<Gateway>,
    client: S,
    hello: Vec<u8>,
    peer: SocketAddr,
    host: String,
    port: u16,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(serve_intercepted(gw, client, hello, peer, host, port))
}

async fn serve_intercepted<S>(
    gw: Arc<Gateway>,
    client: S,
    hello: Vec<u8>,
    peer: SocketAddr,
    host: String,
    port: u16,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = &gw.tls else {
        return;
    };
    let accept = TlsAcceptor::from(tls.server.clone()).accept(Rewind::new(hello, client));
    let stream = match tokio::time::timeout(gw.client_timeout(), accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%peer, host = %gw.shown(&host), error = %e, "intercepted TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, host = %gw.shown(&host), "intercepted TLS handshake timed out");
            return;
        }
    };
    http::serve_conn(gw, stream, peer, Via::Tls { host, port }).await;
}
