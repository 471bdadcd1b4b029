//! Prometheus metrics (`GET /metrics`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hutch_api::sandbox::SandboxState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// Labels of `hutch_sandboxes`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Sandbox state.
    pub state: String,
}

/// Labels of `hutch_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: String,
    /// Route template (`/v1/sandboxes/{id}`), or `unmatched`.
    pub route: String,
    /// Response status code.
    pub status: String,
}

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    sandboxes: Family<StateLabels, Gauge>,
    create_seconds: Histogram,
    http_requests: Family<HttpLabels, Counter>,
    egress_dropped: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hutch");
        let sandboxes = Family::<StateLabels, Gauge>::default();
        registry.register("sandboxes", "Sandboxes by state", sandboxes.clone());
        let create_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "sandbox_create_seconds",
            "Time to create a sandbox until its guest is ready",
            create_seconds.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            http_requests.clone(),
        );
        let egress_dropped = Gauge::default();
        registry.register(
            "egress_log_dropped",
            "Egress log entries dropped because the log's queue was full",
            egress_dropped.clone(),
        );
        Metrics {
            egress_dropped,
            registry: Arc::new(registry),
            sandboxes,
            create_seconds,
            http_requests,
        }
    }

    /// Records one sandbox creation's duration.
    pub fn observe_create(&self, seconds: f64) {
        self.create_seconds.observe(seconds);
    }

    /// Sets the per-state gauge (states absent from `counts` are set to 0).
    pub fn set_sandbox_counts(&self, counts: &std::collections::HashMap<SandboxState, u64>) {
        for s in [
            SandboxState::Starting,
            SandboxState::Running,
            SandboxState::Paused,
            SandboxState::Stopped,
            SandboxState::Error,
        ] {
            let n = counts.get(&s).copied().unwrap_or(0);
            self.sandboxes
                .get_or_create(&StateLabels {
                    state: s.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the number of egress log entries dropped so far.
    pub fn set_egress_dropped(&self, n: u64) {
        self.egress_dropped
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("could not encode metrics");
        }
        out
    }
}

/// Middleware counting requests by route template and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    state
        .metrics()
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .inc();
    tracing::debug!(elapsed_ms = start.elapsed().as_millis() as u64, "request");
    resp
}
