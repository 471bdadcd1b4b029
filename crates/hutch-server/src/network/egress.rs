//! The egress log: every request, connection and DNS query a sandbox makes through the gateway,
//! numbered, written to the store in batches off the request path, and broadcast live for SSE.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hutch_api::network::EgressEntry;
use hutch_store::Store;
use tokio::sync::{broadcast, mpsc};

/// Entries waiting for the writer; beyond this the gateway drops (and counts) them rather
/// than slow traffic down.
const QUEUE: usize = 16_384;
/// Largest batch per insert.
const BATCH: usize = 512;

/// The log's front: cheap, non-blocking [`EgressLog::record`].
#[derive(Debug)]
pub struct EgressLog {
    tx: mpsc::Sender<EgressEntry>,
    live: broadcast::Sender<EgressEntry>,
    dropped: AtomicU64,
}

impl EgressLog {
    /// Starts the writer on `runtime`.
    pub fn start(store: Arc<dyn Store>, runtime: &tokio::runtime::Handle) -> Arc<EgressLog> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (live, _) = broadcast::channel(1024);
        let log = Arc::new(EgressLog {
            tx,
            live: live.clone(),
            dropped: AtomicU64::new(0),
        });
        runtime.spawn(writer(store, rx, live));
        log
    }

    /// Queues an entry (its `seq` is assigned by the writer).
    pub fn record(&self, entry: EgressEntry) {
        if self.tx.try_send(entry).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "egress log queue full: entries dropped");
            }
        }
    }

    /// Entries as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<EgressEntry> {
        self.live.subscribe()
    }

    /// Entries dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<EgressEntry>,
    live: broadcast::Sender<EgressEntry>,
) {
    let mut next = loop {
        match store.max_egress_seq().await {
            Ok(m) => break m + 1,
            Err(e) => {
                tracing::warn!(error = %e, "egress log: reading the last seq");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        for e in batch.iter_mut() {
            e.seq = next;
            next += 1;
        }
        // A failing store must not lose the entries silently: retry a few times, then log.
        let mut attempt = 0;
        loop {
            match store.insert_egress(&batch).await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "egress log insert");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, lost = batch.len(), "egress log entries lost");
                    break;
                }
            }
        }
        for e in batch.drain(..) {
            let _ = live.send(e);
        }
    }
}

impl hutch_net::gateway::EgressSink for EgressLog {
    fn record(&self, rec: hutch_net::gateway::EgressRecord) {
        use hutch_net::gateway::EgressKind;
        let kind = match rec.kind {
            EgressKind::Http => "http",
            EgressKind::Https => "https",
            EgressKind::Tls => "tls",
            EgressKind::Connect => "connect",
            EgressKind::Dns => "dns",
        };
        let time = chrono::DateTime::from_timestamp_millis(i64::try_from(rec.time_ms).unwrap_or(0))
            .unwrap_or_else(chrono::Utc::now);
        EgressLog::record(
            self,
            EgressEntry {
                seq: 0,
                sandbox_id: rec.sandbox,
                time,
                kind: kind.into(),
                method: rec.method,
                host: rec.host,
                port: rec.port,
                path: rec.path,
                status: rec.status,
                bytes_sent: rec.bytes_sent,
                bytes_received: rec.bytes_received,
                decision: if rec.allowed { "allow" } else { "deny" }.into(),
                rule: rec.rule,
                reason: rec.reason,
            },
        );
    }
}
