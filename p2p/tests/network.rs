//! Two real swarms on loopback: gossip with validation, scoring, fetch, bans.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use pyralog_ledger::{Address, Hash};
use pyralog_p2p::fetch::{FetchRequest, FetchResponse};
use pyralog_p2p::{Config, Multiaddr, NetCommand, NetEvent, Network, Topic, Topics, Verdict};

fn topics() -> Topics {
    Topics::new(&"pyralog-test".parse().expect("chain"), &Hash([9; 32]))
}

fn net(bootnodes: Vec<Multiaddr>) -> Network {
    net_on("/ip4/127.0.0.1/tcp/0", bootnodes)
}

fn net_on(listen: &str, bootnodes: Vec<Multiaddr>) -> Network {
    Network::new(Config {
        key: Keypair::generate_ed25519(),
        listen: vec![listen.parse().expect("addr")],
        bootnodes,
        topics: topics(),
        banned: vec![],
        limits: Default::default(),
    })
    .expect("network")
}

async fn listening(n: &mut Network) -> Multiaddr {
    loop {
        if let NetEvent::Listening(a) = n.next_event().await {
            return a;
        }
    }
}

/// Runs both swarms until `b` yields an event `want` accepts, publishing from
/// `a` now and then (gossipsub needs the subscriptions exchanged first).
async fn until<T>(
    a: &mut Network,
    b: &mut Network,
    publish: Option<(Topic, Vec<u8>)>,
    mut want: impl FnMut(NetEvent, &mut Network) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tokio::select! {
            _ = a.next_event() => {}
            e = b.next_event() => if let Some(t) = want(e, b) { return t; },
            _ = tick.tick() => {
                if let Some((topic, data)) = &publish {
                    a.command(NetCommand::Publish { topic: *topic, data: data.clone() });
                }
            }
            _ = tokio::time::sleep_until(deadline) => panic!("timed out"),
        }
    }
}

/// Publishes `data` on the batches topic from `a` until `b` receives it;
/// `b` accepts it. Who `b` heard it from, and what.
async fn accepted_batch(
    a: &mut Network,
    b: &mut Network,
    data: &[u8],
) -> (libp2p::PeerId, Vec<u8>) {
    until(
        a,
        b,
        Some((Topic::Batches, data.to_vec())),
        |e, b| match e {
            NetEvent::Gossip {
                topic: Topic::Batches,
                from,
                id,
                data,
            } => {
                b.command(NetCommand::Report {
                    id,
                    from,
                    verdict: Verdict::Accept,
                });
                Some((from, data))
            }
            _ => None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_works_over_quic() {
    let mut a = net_on("/ip4/127.0.0.1/udp/0/quic-v1", vec![]);
    let addr = listening(&mut a).await;
    assert!(
        addr.iter().any(|p| matches!(p, Protocol::QuicV1)),
        "listening on {addr}"
    );
    let addr = addr.with(Protocol::P2p(a.local_peer_id()));
    // b listens on TCP only and dials a's QUIC address.
    let mut b = net(vec![addr]);
    let a_id = a.local_peer_id();
    let data = b"a batch over quic".to_vec();
    assert_eq!(accepted_batch(&mut a, &mut b, &data).await, (a_id, data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_is_validated_scored_fetched_and_banned() {
    let mut a = net(vec![]);
    let addr = listening(&mut a)
        .await
        .with(Protocol::P2p(a.local_peer_id()));
    let mut b = net(vec![addr]);
    let a_id = a.local_peer_id();

    // A message reaches b undecided; b accepts it.
    let data = b"a valid batch".to_vec();
    assert_eq!(accepted_batch(&mut a, &mut b, &data).await, (a_id, data));

    // Garbage: b rejects it, and a's score at b drops below zero.
    let before = b.peer_score(&a_id).unwrap_or(0.0);
    until(
        &mut a,
        &mut b,
        Some((Topic::Digests, b"garbage".to_vec())),
        |e, b| match e {
            NetEvent::Gossip { from, id, .. } => {
                b.command(NetCommand::Report {
                    id,
                    from,
                    verdict: Verdict::Reject,
                });
                Some(())
            }
            _ => None,
        },
    )
    .await;
    let after = b.peer_score(&a_id).expect("a has a score at b");
    assert!(after < before && after < 0.0, "score {before} -> {after}");

    // Fetch: b asks a, a answers.
    let request = FetchRequest {
        origin: Address([1; 32]),
        from_seq: 1,
        to_seq: 2,
    };
    b.command(NetCommand::Fetch {
        peer: a_id,
        request: request.clone(),
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let response = loop {
        tokio::select! {
            e = a.next_event() => if let NetEvent::FetchRequest { request: r, channel, .. } = e {
                assert_eq!(r, request);
                a.command(NetCommand::Respond { channel, response: FetchResponse { batches: vec![vec![7, 7]] } });
            },
            e = b.next_event() => if let NetEvent::FetchResponse { from, response } = e {
                assert_eq!(from, a_id);
                break response;
            },
            _ = tokio::time::sleep_until(deadline) => panic!("fetch timed out"),
        }
    };
    assert_eq!(response.batches, vec![vec![7, 7]]);

    // Ban: b drops a and stays disconnected.
    b.command(NetCommand::Ban(a_id));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.peers() > 0 {
        tokio::select! {
            _ = a.next_event() => {}
            _ = b.next_event() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("ban did not disconnect"),
        }
    }
    assert_eq!(b.peers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_are_capped() {
    let mut a = Network::new(Config {
        key: Keypair::generate_ed25519(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootnodes: vec![],
        topics: topics(),
        banned: vec![],
        limits: pyralog_p2p::Limits {
            inbound: 1,
            ..Default::default()
        },
    })
    .expect("network");
    let addr = listening(&mut a)
        .await
        .with(Protocol::P2p(a.local_peer_id()));
    let mut b = net(vec![addr.clone()]);
    let mut c = net(vec![addr]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = a.next_event() => {}
            _ = b.next_event() => {}
            _ = c.next_event() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    assert_eq!(a.peers(), 1, "the second inbound peer is refused");
    assert_eq!(b.peers() + c.peers(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_taking_gossip_still_moves_its_other_traffic() {
    let mut a = net(vec![]);
    let addr = listening(&mut a)
        .await
        .with(Protocol::P2p(a.local_peer_id()));
    let mut b = net(vec![addr]);
    // Connected and subscribed both ways.
    accepted_batch(&mut b, &mut a, b"first").await;
    accepted_batch(&mut a, &mut b, b"second").await;
    // From here on a's node never takes an event (it is stuck elsewhere)
    // while b floods it with gossip.
    let a = a.spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut n = 0u64;
    while a.dropped_gossip() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} messages sent, none ignored"
        );
        for _ in 0..100 {
            n += 1;
            b.command(NetCommand::Publish {
                topic: Topic::Batches,
                data: n.to_le_bytes().to_vec(),
            });
        }
        let pause = tokio::time::Instant::now() + Duration::from_millis(20);
        while tokio::time::timeout_at(pause, b.next_event()).await.is_ok() {}
    }
    // a's swarm still runs: what a publishes reaches b.
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            e = b.next_event() => match e {
                NetEvent::Gossip { topic: Topic::Transactions, data, .. } if data == b"still here" => break,
                _ => {}
            },
            _ = tick.tick() => a.command(NetCommand::Publish {
                topic: Topic::Transactions,
                data: b"still here".to_vec(),
            }),
            _ = tokio::time::sleep_until(deadline) => panic!("a's swarm stopped with its event queue"),
        }
    }
}

/// Raft's streams ask the swarm to reach a member before they open one; the
/// answer comes once the member is connected, not when the dial starts (a
/// stream asked for while the connection is being set up could wait on a
/// dial the swarm never makes), and a dial that fails says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_answers_once_the_peer_is_connected_or_cannot_be() {
    let (mut a, mut b) = (net(vec![]), net(vec![]));
    let b_addr = listening(&mut b).await;
    let b_peer = b.local_peer_id();
    let b_addr = b_addr.with(Protocol::P2p(b_peer));

    let (done, mut reached) = tokio::sync::oneshot::channel();
    a.command(NetCommand::Reach {
        peer: b_peer,
        addr: b_addr.clone(),
        done,
    });
    // Asked twice while dialling: both hear.
    let (done, mut again) = tokio::sync::oneshot::channel();
    a.command(NetCommand::Reach {
        peer: b_peer,
        addr: b_addr.clone(),
        done,
    });
    assert!(reached.try_recv().is_err(), "answered before connecting");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            e = a.next_event() => if matches!(e, NetEvent::Connected(p) if p == b_peer) { break },
            _ = b.next_event() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("never connected"),
        }
    }
    assert_eq!(reached.try_recv().expect("told once connected"), Ok(()));
    assert_eq!(again.try_recv().expect("told once connected"), Ok(()));

    // Connected already: told at once.
    let (done, mut reached) = tokio::sync::oneshot::channel();
    a.command(NetCommand::Reach {
        peer: b_peer,
        addr: b_addr,
        done,
    });
    assert_eq!(reached.try_recv().expect("told at once"), Ok(()));

    // Nobody behind the address: told why once the dial fails.
    let nobody = libp2p::PeerId::random();
    let nowhere: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{nobody}")
        .parse()
        .expect("addr");
    let (done, mut reached) = tokio::sync::oneshot::channel();
    a.command(NetCommand::Reach {
        peer: nobody,
        addr: nowhere,
        done,
    });
    let why = loop {
        // A failed dial yields no event of the node's: look now and then.
        tokio::select! {
            _ = a.next_event() => {}
            _ = b.next_event() => {}
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = tokio::time::sleep_until(deadline) => panic!("never told"),
        }
        if let Ok(how) = reached.try_recv() {
            break how.expect_err("nobody there");
        }
    };
    assert!(why.contains(&nobody.to_string()), "{why}");
}
