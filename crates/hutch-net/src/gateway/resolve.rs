//! How the gateway finds the real addresses of allowed names.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

/// A boxed resolution future.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves names for the gateway.
pub trait Resolver: Send + Sync {
    /// The addresses of `host` (a validated domain name) at `port`.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The host's resolver (`getaddrinfo` via tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A fixed name → addresses map (tests: a "fake internet" on loopback). An address with port
/// 0 takes the requested port; any other port replaces it (a test server on a random port
/// standing in for `:443`).
#[derive(Debug, Default, Clone)]
pub struct StaticResolver(pub HashMap<String, Vec<SocketAddr>>);

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        let found = self.0.get(host).map(|addrs| {
            addrs
                .iter()
                .map(|a| {
                    if a.port() == 0 {
                        SocketAddr::new(a.ip(), port)
                    } else {
                        *a
                    }
                })
                .collect::<Vec<_>>()
        });
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}
