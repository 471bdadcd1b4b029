//! `[network]` settings of `hutch server`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Sandbox networking and the egress gateway (TOML table `[network]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Address pool for sandbox links, one /30 per networked sandbox (default `10.200.0.0/16`).
    pub pool: String,
    /// Host input filter (nftables): `if_available` (default), `required` (fail closed) or `off`.
    pub firewall: String,
    /// The gateway's HTTP proxy port in each sandbox (`HTTP_PROXY`), default 3128.
    pub proxy_port: u16,
    /// Scan outbound requests for secrets (default on).
    pub dlp: bool,
    /// Intercept TLS with the installation's CA (default on): needed for DLP, method/path rules
    /// and credential injection on HTTPS.
    pub intercept_tls: bool,
    /// Domains never intercepted, for every sandbox.
    pub passthrough: Vec<String>,
    /// Special upstream ranges (private, loopback, ...) the gateway may still connect to.
    pub allow_upstream: Vec<String>,
    /// Extra CA certificates (PEM files) the gateway trusts for upstream TLS.
    pub upstream_ca_files: Vec<PathBuf>,
    /// Fixed name → addresses (`"203.0.113.7"`, or `"127.0.0.1:8443"` to also replace the
    /// port) for the gateway's resolver, consulted before the system resolver.
    pub hosts: BTreeMap<String, Vec<String>>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            pool: "10.200.0.0/16".into(),
            firewall: "if_available".into(),
            proxy_port: 3128,
            dlp: true,
            intercept_tls: true,
            passthrough: Vec::new(),
            allow_upstream: Vec::new(),
            upstream_ca_files: Vec::new(),
            hosts: BTreeMap::new(),
        }
    }
}
