//! The DNS filter each sandbox uses as its only resolver: A/AAAA answers for names its policy
//! allows, pointing at the gateway (so all traffic comes to the gateway); REFUSED for every
//! other name and every other record type (no TXT tunnels, no answers for
//! `<data>.allowed.com` when only `allowed.com` is allowed). Real addresses are resolved by the
//! gateway itself. Every query is logged.

use crate::dlp::Scanner;
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
#[derive(Debug, Clone)]
pub struct DnsFilter {
    store: Arc<PolicyStore>,
    /// Redacts secret-shaped labels from logged names.
    redactor: Option<Arc<Scanner>>,
}

impl DnsFilter {
    /// A filter answering from the policies in `store`.
    pub fn new(store: Arc<PolicyStore>) -> DnsFilter {
        let redactor = Scanner::with_builtin(Vec::new()).ok().map(Arc::new);
        DnsFilter { store, redactor }
    }

    /// The reply to `packet` from `peer`, answering allowed names with `gateway` (the address
    /// the query arrived at). `None` for packets that get no reply (unparseable, responses).
    pub fn answer(&self, peer: IpAddr, gateway: IpAddr, packet: &[u8]) -> Option<Vec<u8>> {
        let query = Message::from_vec(packet).ok()?;
        if query.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.add_queries(query.queries.iter().cloned());
        let code = self.decide(peer, gateway, &query, &mut reply);
        reply.metadata.response_code = code;
        reply.to_vec().ok()
    }

    fn decide(
        &self,
        peer: IpAddr,
        gateway: IpAddr,
        query: &Message,
        reply: &mut Message,
    ) -> ResponseCode {
        if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
            return ResponseCode::Refused;
        }
        let q = &query.queries[0];
        let name = q.name().to_ascii();
        let name = name.trim_end_matches('.');
        let qtype = q.query_type();
        let Some((sandbox, policy)) = self.store.for_peer(peer) else {
            tracing::warn!(%peer, qtype = %qtype, "dns query from unknown peer refused");
            return ResponseCode::Refused;
        };
        let rule = policy.allows_name(name);
        let shown = match &self.redactor {
            Some(r) => r.redact(name),
            None => "<withheld>".to_string(),
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
                ResponseCode::NoError
            }
            None => {
                tracing::info!(sandbox, name = %shown, qtype = %qtype, "dns refused");
                ResponseCode::Refused
            }
        }
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
