//! Egress records: one per HTTP request, tunnel, passthrough connection and DNS query of a known
//! sandbox, handed to an [`EgressSink`] (the server queues and stores them).

use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Receives egress records. `record` is called on the gateway's request path: it must not
/// block (queue and return).
pub trait EgressSink: Send + Sync {
    /// Take one record.
    fn record(&self, rec: EgressRecord);
}

/// What kind of traffic a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressKind {
    /// A plain HTTP request (`:80` or the proxy port).
    Http,
    /// An HTTPS request the gateway intercepted (method, path and status are real).
    Https,
    /// A TLS connection passed through by SNI, unread.
    Tls,
    /// A CONNECT tunnel passed through unread.
    Connect,
    /// A DNS query.
    Dns,
}

/// One request, connection or query. Host, path and reason are redacted (no secrets); the
/// path never carries the query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRecord {
    /// When it started, Unix milliseconds.
    pub time_ms: u64,
    /// The sandbox's id.
    pub sandbox: String,
    /// What it was.
    pub kind: EgressKind,
    /// HTTP method, when visible.
    pub method: Option<String>,
    /// Destination host (or queried name).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// URL path without the query, when visible.
    pub path: Option<String>,
    /// HTTP status answered (the upstream's, or the gateway's 403/502/413).
    pub status: Option<u16>,
    /// Bytes the sandbox sent (request body, or tunnel bytes upstream).
    pub bytes_sent: u64,
    /// Bytes the sandbox received (response body, or tunnel bytes back).
    pub bytes_received: u64,
    /// Whether the policy let it through.
    pub allowed: bool,
    /// The rule that allowed it.
    pub rule: Option<String>,
    /// Why it was refused (or why the upstream failed).
    pub reason: Option<String>,
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A record finished when the response body is done: counts bytes both ways while the body
/// streams, and sends the record when dropped (end of stream, or the client went away).
pub(crate) struct Pending {
    sink: Arc<dyn EgressSink>,
    rec: Option<EgressRecord>,
    pub sent: Arc<AtomicU64>,
    pub received: Arc<AtomicU64>,
}

impl Pending {
    pub fn new(sink: Arc<dyn EgressSink>, rec: EgressRecord) -> Pending {
        Pending {
            sink,
            rec: Some(rec),
            sent: Arc::new(AtomicU64::new(0)),
            received: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Pending {
    /// The HTTP status answered.
    pub fn set_status(&mut self, status: u16) {
        if let Some(rec) = &mut self.rec {
            rec.status = Some(status);
        }
    }

    /// Why it failed (already redacted).
    pub fn set_reason(&mut self, reason: String) {
        if let Some(rec) = &mut self.rec {
            rec.reason = Some(reason);
        }
    }

    /// Count `n` bytes received by the sandbox.
    pub fn count_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut rec) = self.rec.take() {
            rec.bytes_sent = self.sent.load(Ordering::Relaxed);
            rec.bytes_received = self.received.load(Ordering::Relaxed);
            self.sink.record(rec);
        }
    }
}
