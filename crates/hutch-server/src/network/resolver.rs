//! The gateway's resolver: the operator's fixed `network.hosts`, then the system resolver.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use hutch_net::gateway::{ResolveFuture, Resolver, SystemResolver};

/// A fixed entry: an address, optionally with a port that replaces the requested one.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ip: IpAddr,
    port: Option<u16>,
}

/// `hosts` first (exact names), then `getaddrinfo`.
#[derive(Debug)]
pub struct HostsThenSystem {
    hosts: HashMap<String, Vec<Entry>>,
}

impl HostsThenSystem {
    /// A resolver with these fixed entries (`"203.0.113.7"` or `"127.0.0.1:8443"`).
    pub fn new(hosts: &BTreeMap<String, Vec<String>>) -> Result<Self, String> {
        let mut out = HashMap::new();
        for (name, addrs) in hosts {
            let mut entries = Vec::new();
            for a in addrs {
                let e = if let Ok(ip) = a.parse::<IpAddr>() {
                    Entry { ip, port: None }
                } else if let Ok(sa) = a.parse::<SocketAddr>() {
                    Entry {
                        ip: sa.ip(),
                        port: Some(sa.port()),
                    }
                } else {
                    return Err(format!("network.hosts.{name}: bad address {a:?}"));
                };
                entries.push(e);
            }
            out.insert(name.trim_end_matches('.').to_ascii_lowercase(), entries);
        }
        Ok(HostsThenSystem { hosts: out })
    }
}

impl Resolver for HostsThenSystem {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        match self.hosts.get(host) {
            Some(entries) => {
                let addrs = entries
                    .iter()
                    .map(|e| SocketAddr::new(e.ip, e.port.unwrap_or(port)))
                    .collect();
                Box::pin(async move { Ok(addrs) })
            }
            None => SystemResolver.resolve(host, port),
        }
    }
}
