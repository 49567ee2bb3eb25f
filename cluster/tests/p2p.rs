//! Three members over real libp2p swarms on loopback: Raft RPCs, a write
//! forwarded from a follower, and a peer outside the cluster refused.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pyralog_cluster::network::p2p::{P2pTransport, serve};
use pyralog_cluster::network::{Reply, Rpc, Transport};
use pyralog_cluster::{Member, MemberConfig, NodeId, Response};
use pyralog_p2p::{Commander, Config, Limits, NetCommand, NetEvent, Network, PeerId, Topics};
use tokio::sync::mpsc;

struct Swarm {
    commander: Commander,
    addr: String,
    peer: PeerId,
}

/// Starts a swarm on a loopback port and keeps its events drained.
async fn swarm(seed: u8) -> Swarm {
    let g = common::genesis().validate().expect("genesis");
    let key = pyralog_p2p::node_key_from_seed([seed; 32]).expect("key");
    let net = Network::new(Config {
        key,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootnodes: Vec::new(),
        topics: Topics::new(&g.chain_id, &g.hash()),
        banned: Vec::new(),
        limits: Limits::default(),
    })
    .expect("network");
    let mut handle = net.spawn();
    let peer = handle.local_peer_id();
    let listen = loop {
        if let NetEvent::Listening(a) = handle.next_event().await {
            break a;
        }
    };
    let commander = handle.commander();
    tokio::spawn(async move {
        loop {
            let _ = handle.next_event().await;
        }
    });
    Swarm {
        commander,
        addr: format!("{listen}/p2p/{peer}"),
        peer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_replicates_over_libp2p_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut swarms = BTreeMap::new();
    for id in 1..=3u64 {
        swarms.insert(id, swarm(id as u8).await);
    }
    let peers: BTreeMap<PeerId, NodeId> = swarms.iter().map(|(id, s)| (s.peer, *id)).collect();
    let mut members: BTreeMap<NodeId, Arc<Member>> = BTreeMap::new();
    for (id, s) in &swarms {
        let config = MemberConfig::new(*id, dir.path().join(format!("m{id}")), common::genesis());
        let member = Member::start(config, Arc::new(P2pTransport::new(s.commander.clone())))
            .await
            .expect("start");
        let (tx, rx) = mpsc::channel(pyralog_p2p::raft::INBOX);
        s.commander.command(NetCommand::RaftServe(tx));
        tokio::spawn(serve(Arc::clone(&member), peers.clone(), rx));
        members.insert(*id, member);
    }
    let all = swarms
        .iter()
        .map(|(id, s)| {
            (
                *id,
                openraft::impls::BasicNode {
                    addr: s.addr.clone(),
                },
            )
        })
        .collect();
    members[&1].initialize(all).await.expect("initialize");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(l) = members.values().find(|m| m.status().role == "leader") {
            break Arc::clone(l);
        }
        assert!(std::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = members
        .values()
        .find(|m| m.id() != leader.id())
        .map(Arc::clone)
        .expect("follower");
    for seq in 1..=5 {
        let r = follower
            .write(common::put_batch(seq, &format!("p{seq}"), "v"))
            .await
            .expect("forwarded write over libp2p");
        assert!(matches!(r, Response::Merged { .. }), "{r:?}");
    }
    let index = leader.status().committed.expect("committed");
    for m in members.values() {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while m.status().applied.unwrap_or(0) < index {
            assert!(
                std::time::Instant::now() < deadline,
                "member {} behind",
                m.id()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for seq in 1..=5 {
            assert_eq!(common::record(m, &format!("p{seq}")), Some(b"v".to_vec()));
        }
    }
    // A peer that is not in the cluster is answered with a refusal.
    let stranger = swarm(99).await;
    let transport = P2pTransport::new(stranger.commander.clone());
    let bytes = pyralog_cluster::wire::encode("rpc", &Rpc::ReadIndex, 1 << 20).expect("encode");
    let reply = transport
        .call(1, &swarms[&1].addr, bytes)
        .await
        .expect("an answer");
    let reply: Reply = pyralog_cluster::wire::decode("reply", &reply, 1 << 20).expect("decode");
    assert!(
        matches!(&reply, Reply::Failed(why) if why.contains("not a member")),
        "{reply:?}"
    );
    // Addresses without a peer id are refused before anything is sent.
    let e = transport
        .call(1, "/ip4/127.0.0.1/tcp/1", Vec::new())
        .await
        .expect_err("no peer id");
    assert!(e.to_string().contains("/p2p/"), "{e}");
}
