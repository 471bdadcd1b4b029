//! The DNS filter over real UDP on loopback.

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hutch_net::dns::DnsFilter;
use hutch_net::policy::{Policy, PolicyStore, StaticLookup};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

async fn start() -> (Arc<PolicyStore>, std::net::SocketAddr) {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup(
        [(lo, "sb".to_string())].into_iter().collect(),
    ))));
    let policy: Policy =
        serde_json::from_str(r#"{"rules":[{"domain":"allowed.com"},{"domain":"*.example.com"}]}"#)
            .expect("policy");
    store.set("sb", policy).expect("set");
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(DnsFilter::new(store.clone()).serve(socket));
    (store, addr)
}

async fn ask(server: std::net::SocketAddr, name: &str, qtype: RecordType) -> Message {
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    client
        .send_to(&q.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("reply in time")
        .expect("recv");
    let reply = Message::from_vec(&buf[..n]).expect("decode");
    assert_eq!(reply.metadata.id, q.metadata.id);
    reply
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| {
            if let RData::A(a) = &r.data {
                Some(a.0)
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test]
async fn answers_allowed_names_with_the_gateway() {
    let (_store, server) = start().await;
    for name in [
        "allowed.com.",
        "ALLOWED.com.",
        "api.example.com.",
        "a.b.example.com.",
    ] {
        let r = ask(server, name, RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&r), vec![Ipv4Addr::LOCALHOST], "{name}");
    }
    // AAAA for an allowed name, gateway without IPv6: empty NOERROR.
    let r = ask(server, "allowed.com.", RecordType::AAAA).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
}

#[tokio::test]
async fn refuses_everything_else() {
    let (store, server) = start().await;
    for (name, qtype) in [
        ("evil.com.", RecordType::A),
        ("data.allowed.com.", RecordType::A),
        ("c2VjcmV0LXZhbHVl.allowed.com.", RecordType::A),
        ("example.com.", RecordType::A),
        ("allowed.com.", RecordType::TXT),
        ("allowed.com.", RecordType::MX),
        ("allowed.com.", RecordType::ANY),
        ("x.example.com.", RecordType::TXT),
        ("127.0.0.1.", RecordType::A),
    ] {
        let r = ask(server, name, qtype).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::Refused,
            "{name} {qtype}"
        );
        assert!(r.answers.is_empty(), "{name} {qtype}");
    }
    // Live update: the new policy applies to the next query.
    store
        .set(
            "sb",
            serde_json::from_str(r#"{"rules":[{"domain":"evil.com"}]}"#).expect("policy"),
        )
        .expect("set");
    assert_eq!(
        a_records(&ask(server, "evil.com.", RecordType::A).await),
        vec![Ipv4Addr::LOCALHOST]
    );
    assert_eq!(
        ask(server, "allowed.com.", RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::Refused
    );
}

#[tokio::test]
async fn unknown_peers_get_no_reply() {
    // Over real UDP: 127.0.0.2 is no sandbox (only 127.0.0.1 is). A reply, even REFUSED, would
    // let a spoofed source turn the host into a reflector.
    let (_store, server) = start().await;
    let stranger = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("allowed.com.").expect("name"),
        RecordType::A,
    ));
    let packet = q.to_vec().expect("enc");
    stranger.send_to(&packet, server).await.expect("send");
    let mut buf = vec![0u8; 4096];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stranger.recv(&mut buf))
            .await
            .is_err(),
        "an unknown peer got a reply"
    );
    // The filter is alive: the sandbox still gets its answer.
    assert_eq!(
        ask(server, "allowed.com.", RecordType::A)
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );

    let store = Arc::new(PolicyStore::new(Arc::new(StaticLookup::default())));
    let filter = DnsFilter::new(store);
    assert!(
        filter
            .answer(
                "127.0.0.1".parse().expect("ip"),
                "127.0.0.1".parse().expect("ip"),
                &packet
            )
            .is_none()
    );
    assert!(
        filter
            .answer(
                "127.0.0.1".parse().expect("ip"),
                "127.0.0.1".parse().expect("ip"),
                b"garbage"
            )
            .is_none()
    );
}
