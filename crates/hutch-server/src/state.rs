//! [`AppState`]: what every handler and background loop shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hutch_sandbox::Engine;
use hutch_store::Store;

use crate::auth::KeyHasher;
use crate::config::ServerConfig;
use crate::error::AppResult;
use crate::metrics::Metrics;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    hasher: KeyHasher,
    metrics: Metrics,
    network: Arc<crate::network::Network>,
    secrets: crate::secrets::Secrets,
    /// Last OOM-kill count seen per sandbox (for `sandbox.oom` events).
    oom_seen: Mutex<HashMap<String, u64>>,
}

impl AppState {
    /// Bundles the parts.
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        hasher: KeyHasher,
        metrics: Metrics,
        network: Arc<crate::network::Network>,
        secrets: crate::secrets::Secrets,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config,
                store,
                engine,
                hasher,
                metrics,
                network,
                secrets,
                oom_seen: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The sandbox engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The API key hasher.
    pub fn hasher(&self) -> &KeyHasher {
        &self.inner.hasher
    }

    /// The secrets vault: server-side access to team secret values.
    pub fn secrets(&self) -> &crate::secrets::Secrets {
        &self.inner.secrets
    }

    /// Sandbox networking.
    pub fn network(&self) -> &Arc<crate::network::Network> {
        &self.inner.network
    }

    /// The Prometheus metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Records the OOM-kill count of a sandbox; returns the previous one (`None` the first time).
    pub fn swap_oom_count(&self, id: &str, count: u64) -> Option<u64> {
        let mut seen = self
            .inner
            .oom_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        seen.insert(id.to_owned(), count)
    }

    /// Forgets the OOM-kill counts of sandboxes not in `live`.
    pub fn retain_oom_counts(&self, live: &dyn Fn(&str) -> bool) {
        let mut seen = self
            .inner
            .oom_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        seen.retain(|id, _| live(id));
    }

    /// Runs a (short, synchronous) engine call on the blocking pool.
    pub async fn blocking<T, F>(&self, f: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> hutch_sandbox::Result<T> + Send + 'static,
    {
        let engine = Arc::clone(&self.inner.engine);
        Ok(tokio::task::spawn_blocking(move || f(&engine)).await??)
    }
}
