//! End to end on one host: a "sandbox" (a process in a network namespace this test creates)
//! gets its veth and address from `NetworkManager`; the DNS filter and the gateway listen on
//! its gateway address; the fake internet is an HTTP server on the host's 127.0.0.1. The
//! sandbox's side of the test runs on a thread that joins the namespace. Traffic only flows
//! between the host and that namespace. Needs root.

mod common;
use bytes::Bytes;
use common::FakeSandbox;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use http_body_util::Full;
use hutch_net::dns::DnsFilter;
use hutch_net::gateway::{Gateway, GatewayConfig, Listener, StaticResolver};
use hutch_net::netns::{FirewallConfig, FirewallMode, NetConfig, NetworkManager};
use hutch_net::policy::{Policy, PolicyStore};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn dns(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let s = UdpSocket::bind("0.0.0.0:0").expect("udp");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    s.send_to(&q.to_vec().expect("enc"), server).expect("send");
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).expect("dns reply");
    Message::from_vec(&buf[..n]).expect("dec")
}

fn http(addr: SocketAddr, host: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect gateway");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET /from-sandbox HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .expect("status");
    (status, out)
}

#[test]
fn sandbox_reaches_allowed_host_only_through_dns_and_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgr = Arc::new(
        NetworkManager::new(NetConfig {
            pool: "10.234.0.0/24".parse().expect("pool"),
            state_file: dir.path().join("net.json"),
            // With nft installed, the host filter is on too: only gateway ports 53 and 80.
            firewall: FirewallConfig {
                mode: FirewallMode::IfAvailable,
                tcp_ports: vec![80],
            },
        })
        .expect("manager"),
    );
    let sb = FakeSandbox::start("nettest-e2e");
    let t = Instant::now();
    let net = mgr.setup_sandbox("nettest-e2e", sb.pid()).expect("setup");
    println!(
        "sandbox network setup: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Arc::new(PolicyStore::new(mgr.clone()));
    let policy: Policy =
        serde_json::from_str(r#"{"rules":[{"id":"web","domain":"allowed.test"}]}"#)
            .expect("policy");
    store.set("nettest-e2e", policy).expect("set");
    let gw_ip = net.gateway;
    let fake = rt.block_on(async {
        // The fake internet, on the host's loopback.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let fake = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                            "fake internet: {}",
                            req.uri()
                        )))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        // DNS and gateway on the sandbox's gateway address only.
        let udp = tokio::net::UdpSocket::bind((gw_ip, 53))
            .await
            .expect("bind dns");
        tokio::spawn(DnsFilter::new(store.clone()).serve(udp));
        let resolver = StaticResolver(
            [("allowed.test".to_string(), vec![fake])]
                .into_iter()
                .collect(),
        );
        let cfg = GatewayConfig {
            allow_upstream: vec!["127.0.0.1/32".parse().expect("net")],
            ..GatewayConfig::default()
        };
        let gw = Gateway::new(store.clone(), Arc::new(resolver), cfg);
        let l = tokio::net::TcpListener::bind((gw_ip, 80))
            .await
            .expect("bind gateway");
        tokio::spawn(gw.serve(l, Listener::Http { port: 80 }));
        fake
    });

    let gw_dns = SocketAddr::from((gw_ip, 53));
    let gw_http = SocketAddr::from((gw_ip, 80));
    sb.inside(|| {
        // DNS: the allowed name resolves to the gateway; others are refused.
        let r = dns(gw_dns, "allowed.test.", RecordType::A);
        let ips: Vec<Ipv4Addr> = r
            .answers
            .iter()
            .filter_map(|a| {
                if let RData::A(x) = &a.data {
                    Some(x.0)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(ips, vec![gw_ip]);
        assert_eq!(
            dns(gw_dns, "evil.test.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::Refused
        );
        assert_eq!(
            dns(gw_dns, "x.allowed.test.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::Refused
        );
        assert_eq!(
            dns(gw_dns, "allowed.test.", RecordType::TXT)
                .metadata
                .response_code,
            ResponseCode::Refused
        );
        // HTTP through the gateway.
        let (status, body) = http(gw_http, "allowed.test");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("fake internet: /from-sandbox"), "{body}");
        let (status, body) = http(gw_http, "evil.test");
        assert_eq!(status, 403, "{body}");
        // The host's loopback (where the fake internet listens) is not reachable directly:
        // 127.0.0.1 in the sandbox is the sandbox's own loopback.
        assert!(TcpStream::connect_timeout(&fake, Duration::from_millis(500)).is_err());
    });

    rt.shutdown_timeout(Duration::from_secs(1));
    mgr.teardown_sandbox("nettest-e2e").expect("teardown");
    if mgr.firewall_active() {
        hutch_net::netns::firewall::remove("10.234.0.0/24".parse().expect("pool"))
            .expect("remove filter");
    }
}
