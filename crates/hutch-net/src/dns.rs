//! The DNS filter each sandbox uses as its only resolver: A/AAAA answers for names its policy
//! allows, pointing at the gateway (so all traffic comes to the gateway); REFUSED for every
//! other name and every other record type (no TXT tunnels, no answers for
//! `<data>.allowed.com` when only `allowed.com` is allowed). Real addresses are resolved by the
//! gateway itself. `hutch.internal` answers with the gateway for every known sandbox, whatever
//! its policy. Every query is logged, and recorded to the egress sink if there is one. Packets
//! from peers that are no known sandbox get no reply at all.

use crate::dlp::Scanner;
use crate::gateway::{EgressKind, EgressRecord, EgressSink, is_internal};
use crate::policy::PolicyStore;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::UdpSocket;

/// TTL of answers: short, so policy changes reach clients' caches quickly.
const TTL: u32 = 5;

/// The DNS filter (UDP). One instance serves any number of sockets.
#[derive(Clone)]
pub struct DnsFilter {
    store: Arc<PolicyStore>,
    /// Redacts secret-shaped labels from logged names.
    redactor: Option<Arc<Scanner>>,
    sink: Option<Arc<dyn EgressSink>>,
}

impl std::fmt::Debug for DnsFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsFilter")
            .field("sink", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

/// What became of a query, for the record.
struct Outcome {
    code: ResponseCode,
    sandbox: Option<String>,
    name: String,
    rule: Option<String>,
    reason: Option<String>,
}

impl DnsFilter {
    /// A filter answering from the policies in `store`.
    pub fn new(store: Arc<PolicyStore>) -> DnsFilter {
        let redactor = Scanner::with_builtin(Vec::new()).ok().map(Arc::new);
        DnsFilter {
            store,
            redactor,
            sink: None,
        }
    }

    /// Record every query of a known sandbox (`kind: Dns`, the name redacted, `allowed` when
    /// answered) to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn EgressSink>) -> DnsFilter {
        self.sink = Some(sink);
        self
    }

    /// The reply to `packet` from `peer`, answering allowed names with `gateway` (the address
    /// the query arrived at). `None` for packets that get no reply (from a peer that is no
    /// known sandbox, unparseable, responses).
    pub fn answer(&self, peer: IpAddr, gateway: IpAddr, packet: &[u8]) -> Option<Vec<u8>> {
        // UDP sources are easily spoofed: answering strangers (even with REFUSED) would make
        // the host a reflector aimed at whoever the source names. Silence; debug level, as
        // such a flood would otherwise flood the log too.
        if self.store.sandbox_for(peer).is_none() {
            tracing::debug!(%peer, "dns packet from unknown peer dropped");
            return None;
        }
        let query = Message::from_vec(packet).ok()?;
        if query.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.add_queries(query.queries.iter().cloned());
        let out = self.decide(peer, gateway, &query, &mut reply);
        reply.metadata.response_code = out.code;
        let bytes = reply.to_vec().ok();
        if let (Some(sink), Some(sandbox)) = (&self.sink, out.sandbox) {
            sink.record(EgressRecord {
                time_ms: crate::gateway::now_ms(),
                sandbox,
                kind: EgressKind::Dns,
                method: None,
                host: out.name,
                port: 53,
                path: None,
                status: None,
                bytes_sent: packet.len() as u64,
                bytes_received: bytes.as_ref().map_or(0, |b| b.len() as u64),
                allowed: out.code == ResponseCode::NoError,
                rule: out.rule,
                reason: out.reason,
            });
        }
        bytes
    }

    fn decide(
        &self,
        peer: IpAddr,
        gateway: IpAddr,
        query: &Message,
        reply: &mut Message,
    ) -> Outcome {
        let sandbox = self.store.sandbox_for(peer);
        let mut out = Outcome {
            code: ResponseCode::Refused,
            sandbox: None,
            name: String::new(),
            rule: None,
            reason: None,
        };
        if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
            out.sandbox = sandbox;
            out.reason = Some("one standard query per message".to_string());
            return out;
        }
        let q = &query.queries[0];
        let name = q.name().to_ascii();
        let name = name.trim_end_matches('.');
        let qtype = q.query_type();
        let shown = match &self.redactor {
            Some(r) => r.redact(name),
            None => "<withheld>".to_string(),
        };
        out.name = shown.clone();
        let Some((sandbox, policy)) = self.store.for_peer(peer) else {
            // Only if the sandbox went away since `answer` looked it up.
            tracing::warn!(%peer, qtype = %qtype, "dns query from unknown peer refused");
            return out;
        };
        out.sandbox = Some(sandbox.clone());
        let internal = is_internal(name);
        let rule = if internal {
            Some(crate::gateway::INTERNAL_HOST.to_string())
        } else {
            policy.allows_name(name)
        };
        let answer = match (&rule, qtype, gateway) {
            (None, _, _) => None,
            _ if q.query_class() != DNSClass::IN => None,
            (Some(_), RecordType::A, IpAddr::V4(v4)) => Some(Some(RData::A(A(v4)))),
            (Some(_), RecordType::AAAA, IpAddr::V6(v6)) => Some(Some(RData::AAAA(AAAA(v6)))),
            // Allowed name, address family the gateway lacks: an empty answer.
            (Some(_), RecordType::A | RecordType::AAAA, _) => Some(None),
            _ => None,
        };
        match answer {
            Some(rdata) => {
                tracing::info!(sandbox, name = %shown, qtype = %qtype, rule = rule.as_deref(), "dns answered");
                if let Some(rdata) = rdata {
                    reply.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
                }
                reply.metadata.authoritative = true;
                out.code = ResponseCode::NoError;
                out.rule = rule;
            }
            None => {
                tracing::info!(sandbox, name = %shown, qtype = %qtype, "dns refused");
                out.reason = Some(match rule {
                    Some(_) => format!("record type {qtype} is not answered"),
                    None => format!("name {shown} is not in the sandbox's allowlist"),
                });
            }
        }
        // The control plane's own name is not egress: not recorded.
        if internal {
            out.sandbox = None;
        }
        out
    }

    /// Serve queries arriving on `socket` until it fails. Answers carry the socket's own
    /// address, so bind it to the gateway address (never to `0.0.0.0`).
    pub async fn serve(self, socket: UdpSocket) -> std::io::Result<()> {
        let local = socket.local_addr()?.ip();
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer): (usize, SocketAddr) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            };
            if let Some(reply) = self.answer(peer.ip(), local, &buf[..n])
                && let Err(e) = socket.send_to(&reply, peer).await
            {
                tracing::debug!(%peer, error = %e, "dns reply not sent");
            }
        }
    }
}
