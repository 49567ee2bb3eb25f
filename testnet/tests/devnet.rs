//! End-to-end: real node processes on loopback, driven like a user would.

mod common;

use common::Running;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pyralog_ledger::{ChainId, Decode, Encode, Keypair, Payload, PutOp, Stamp, TxBody, devkit};
use pyralog_testnet::devnet::{Devnet, get, post_tx};

fn devnet(clusters: usize, slot: u16) -> Running {
    common::up(pyralog_ledger::Engine::Gossip, clusters, slot, 8)
}

struct Ctx {
    chain: ChainId,
    epoch: u64,
}

fn ctx(net: &Devnet) -> Ctx {
    let s = get(&net.nodes[0].rpc, "/status").expect("status");
    Ctx {
        chain: s["chain_id"]
            .as_str()
            .expect("chain")
            .parse()
            .expect("chain"),
        epoch: s["epoch"].as_u64().expect("epoch"),
    }
}

fn put_tx(c: &Ctx, key: &Keypair, k: &str, v: &str) -> String {
    hex::encode(
        devkit::tx(
            &c.chain,
            key,
            0,
            c.epoch,
            devkit::put(key, k.as_bytes(), v.as_bytes()),
            8,
        )
        .to_bytes(),
    )
}

fn roots(net: &Devnet) -> Vec<String> {
    net.nodes
        .iter()
        .map(|n| {
            get(&n.rpc, "/status")
                .map(|s| s["state_root"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default()
        })
        .collect()
}

fn converge(net: &Devnet, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let r = roots(net);
        if !r[0].is_empty() && r.iter().all(|x| *x == r[0]) {
            // Stable for a moment: nothing more in flight.
            std::thread::sleep(Duration::from_millis(1500));
            if roots(net) == r {
                return r[0].clone();
            }
        }
        assert!(Instant::now() < deadline, "no convergence: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn value(net: &Devnet, node: usize, who: &Keypair, k: &str) -> Option<String> {
    get(&net.nodes[node].rpc, &format!("/kv/{}/{k}", who.address()))
        .ok()
        .and_then(|v| v["value"].as_str().map(str::to_owned))
}

#[test]
fn a_thousand_writes_over_four_nodes_converge() {
    let net = devnet(4, 0);
    let c = ctx(&net);
    for i in 0..1000 {
        let node = &net.nodes[i % 4];
        let (code, v) = post_tx(
            &node.rpc,
            &put_tx(&c, &net.faucet, &format!("k{i}"), &format!("v{i}")),
            false,
        )
        .expect("post");
        assert_eq!(code, 200, "{v}");
    }
    let root = converge(&net, Duration::from_secs(90));
    assert_eq!(root.len(), 64);
    for i in (0..1000).step_by(37) {
        assert_eq!(
            value(&net, 3, &net.faucet, &format!("k{i}")),
            Some(format!("v{i}")),
            "k{i} on node 3"
        );
    }
}

#[test]
fn a_killed_node_comes_back_with_every_acknowledged_write() {
    let mut net = devnet(3, 1);
    let c = ctx(&net);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..3 {
        for i in 0..40 {
            let node = i % 3;
            let k = format!("r{round}-{i}");
            if let Ok((200, _)) = post_tx(
                &net.nodes[node].rpc,
                &put_tx(&c, &net.faucet, &k, "v"),
                true,
            ) {
                acked.insert(k, "v".into());
            }
            if round == 1 && i == 10 {
                net.kill(1).expect("SIGKILL node 1");
            }
        }
        if round == 1 {
            net.restart(1).expect("restart node 1");
        }
    }
    assert!(
        acked.len() >= 100,
        "only {} writes acknowledged",
        acked.len()
    );
    converge(&net, Duration::from_secs(90));
    for (k, v) in &acked {
        for n in 0..3 {
            assert_eq!(
                value(&net, n, &net.faucet, k).as_ref(),
                Some(v),
                "{k} missing on node {n}"
            );
        }
    }
}

#[test]
fn a_partition_heals_to_the_last_writer() {
    let mut net = devnet(4, 2);
    let c = ctx(&net);
    net.restart_with_bans(&[vec![0, 1], vec![2, 3]])
        .expect("partition");
    let write = |node: usize, k: &str, v: &str| {
        let (code, body) =
            post_tx(&net.nodes[node].rpc, &put_tx(&c, &net.faucet, k, v), true).expect("post");
        assert_eq!(code, 200, "{body}");
    };
    write(0, "x", "left");
    std::thread::sleep(Duration::from_millis(20));
    write(2, "x", "right"); // later: wins
    write(3, "y", "right");
    std::thread::sleep(Duration::from_millis(20));
    write(1, "y", "left"); // later: wins
    write(0, "only-left", "1");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        value(&net, 3, &net.faucet, "only-left"),
        None,
        "the partition leaked"
    );
    assert_eq!(value(&net, 0, &net.faucet, "x").as_deref(), Some("left"));
    net.restart_with_bans(&[vec![0, 1, 2, 3]]).expect("heal");
    converge(&net, Duration::from_secs(90));
    for n in 0..4 {
        assert_eq!(
            value(&net, n, &net.faucet, "x").as_deref(),
            Some("right"),
            "x on node {n}"
        );
        assert_eq!(
            value(&net, n, &net.faucet, "y").as_deref(),
            Some("left"),
            "y on node {n}"
        );
        assert_eq!(
            value(&net, n, &net.faucet, "only-left").as_deref(),
            Some("1")
        );
    }
}

fn refused(net: &Devnet, tx_hex: &str, code: &str, words: &str) {
    let (status, v) = post_tx(&net.nodes[0].rpc, tx_hex, false).expect("post");
    assert!((400..500).contains(&status), "{status} {v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = v["error"].as_str().unwrap_or("");
    assert!(
        msg.contains(words),
        "{msg:?} should name the problem ({words:?})"
    );
}

#[test]
fn bad_inputs_get_a_4xx_naming_the_problem_and_the_node_keeps_serving() {
    let net = devnet(1, 3);
    let c = ctx(&net);
    let f = &net.faucet;
    let stranger = devkit::key(77);
    // Not a transaction.
    refused(&net, "00ff", "decode", "not a transaction");
    // A bad signature.
    let mut tx = devkit::tx(&c.chain, f, 0, c.epoch, devkit::put(f, b"k", b"v"), 8);
    tx.signature.0[3] ^= 1;
    refused(
        &net,
        &hex::encode(tx.to_bytes()),
        "bad_signature",
        "bad signature",
    );
    // Another chain's transaction.
    let other: ChainId = "pyralog-other".parse().expect("chain");
    let tx = devkit::tx(&other, f, 0, c.epoch, devkit::put(f, b"k", b"v"), 8);
    refused(
        &net,
        &hex::encode(tx.to_bytes()),
        "wrong_chain",
        "pyralog-other",
    );
    // A stamp below difficulty.
    let body = TxBody {
        chain_id: c.chain.clone(),
        sender: f.address(),
        nonce: 0,
        epoch: c.epoch,
        payload: devkit::put(f, b"weak", b"v"),
    };
    let key = pyralog_ledger::PowKey::for_chain(&c.chain);
    let weak = (0..)
        .map(|n| Stamp { nonce: n })
        .find(|s| key.bits(&body.id(), *s) < 8)
        .expect("weak");
    refused(
        &net,
        &hex::encode(body.sign(f, weak).to_bytes()),
        "stamp_too_weak",
        "below required difficulty 8",
    );
    // A write into another account's namespace.
    let payload = Payload::Put {
        namespace: stranger.address(),
        ops: vec![PutOp {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            if_version: None,
            sealed: false,
        }],
    };
    let tx = devkit::tx(&c.chain, f, 0, c.epoch, payload, 8);
    refused(
        &net,
        &hex::encode(tx.to_bytes()),
        "foreign_namespace",
        "may not write into the namespace",
    );
    // An oversize value.
    let tx = devkit::tx(
        &c.chain,
        f,
        0,
        c.epoch,
        devkit::put(f, b"big", &vec![1u8; 16 * 1024 + 1]),
        8,
    );
    refused(
        &net,
        &hex::encode(tx.to_bytes()),
        "too_large",
        "record value",
    );
    // A replayed transaction.
    let tx = put_tx(&c, f, "once", "v");
    let (status, _) = post_tx(&net.nodes[0].rpc, &tx, true).expect("post");
    assert_eq!(status, 200);
    refused(&net, &tx, "replayed", "replayed transaction");
    // A value transfer, which gossip cannot order.
    let tx = devkit::tx(
        &c.chain,
        f,
        0,
        c.epoch,
        Payload::Transfer {
            to: stranger.address(),
            amount: 1,
        },
        8,
    );
    refused(
        &net,
        &hex::encode(tx.to_bytes()),
        "unsupported",
        "needs an ordering engine",
    );
    // Still serving, and the good write is there.
    assert!(get(&net.nodes[0].rpc, "/status").is_ok());
    assert_eq!(value(&net, 0, f, "once").as_deref(), Some("v"));
    let metrics = get_text(&net.nodes[0].rpc, "/metrics");
    assert!(metrics.contains("pyralog_txs_rejected_total"), "{metrics}");
}

fn get_text(rpc: &str, path: &str) -> String {
    ureq::get(&format!("{rpc}{path}"))
        .call()
        .expect("get")
        .body_mut()
        .read_to_string()
        .expect("text")
}

#[test]
fn garbage_and_future_batches_from_a_peer_are_rejected() {
    use pyralog_ledger::{Batch, Hash, Hlc};
    use pyralog_p2p::{Config, NetCommand, Network, Topic, Topics};
    let net = devnet(1, 4);
    let s = get(&net.nodes[0].rpc, "/status").expect("status");
    let chain: ChainId = s["chain_id"]
        .as_str()
        .expect("chain")
        .parse()
        .expect("chain");
    let genesis = Hash::from_hex(s["genesis_hash"].as_str().expect("genesis")).expect("hash");
    let epoch = s["epoch"].as_u64().expect("epoch");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rejected_before = rejected(&net);
    rt.block_on(async {
        // The rogue comes over QUIC: a node takes peers on both transports.
        let quic = net.nodes[0].p2p.replace("/tcp/", "/udp/").replace("/p2p/", "/quic-v1/p2p/");
        let mut rogue = Network::new(Config {
            key: pyralog_p2p::NodeKey::generate_ed25519(),
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")],
            bootnodes: vec![quic.parse().expect("addr")],
            topics: Topics::new(&chain, &genesis),
            banned: vec![],
            limits: Default::default(),
        })
        .expect("rogue");
        let me = devkit::key(99);
        let future = Hlc { wall_ms: pyralog_node_now() + 3_600_000, logical: 0 };
        let tx = devkit::tx(&chain, &me, 0, epoch, devkit::put(&me, b"k", b"v"), 8);
        let batch = Batch::seal(chain.clone(), &me, 1, future, vec![tx]).to_bytes();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = rogue.next_event() => {}
                _ = tick.tick() => {
                    n += 1;
                    let mut garbage = b"garbage ".to_vec();
                    garbage.extend_from_slice(&n.to_le_bytes());
                    rogue.command(NetCommand::Publish { topic: Topic::Batches, data: garbage });
                    rogue.command(NetCommand::Publish { topic: Topic::Batches, data: batch.clone() });
                    if rejected(&net) >= rejected_before + 2 { break; }
                }
                _ = tokio::time::sleep_until(deadline) => panic!("the node never rejected the rogue's messages"),
            }
        }
    });
    assert!(
        get(&net.nodes[0].rpc, "/status").is_ok(),
        "the node keeps serving"
    );
    assert_eq!(
        value(&net, 0, &devkit::key(99), "k"),
        None,
        "the future batch was not merged"
    );
}

fn pyralog_node_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rejected(net: &Devnet) -> u64 {
    get_text(&net.nodes[0].rpc, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("pyralog_gossip_rejected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_bulk_post_answers_each_transaction_on_its_own() {
    let net = devnet(1, 5);
    let c = ctx(&net);
    let good = put_tx(&c, &net.faucet, "bulk-1", "v");
    let mut bad = devkit::tx(
        &c.chain,
        &net.faucet,
        0,
        c.epoch,
        devkit::put(&net.faucet, b"bulk-2", b"v"),
        8,
    );
    bad.signature.0[9] ^= 1;
    let body = serde_json::json!({"txs": [good, hex::encode(bad.to_bytes()), "zz", good]});
    let mut r = ureq::post(&format!("{}/tx", net.nodes[0].rpc))
        .send_json(&body)
        .expect("post");
    let v: serde_json::Value = r.body_mut().read_json().expect("json");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["status"], "pending", "{v}");
    assert_eq!(results[1]["code"], "bad_signature", "{v}");
    assert_eq!(results[2]["code"], "decode", "{v}");
    assert_eq!(results[3]["code"], "replayed", "{v}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while value(&net, 0, &net.faucet, "bulk-1").is_none() {
        assert!(Instant::now() < deadline, "the good one never committed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Too many in one request is refused as a whole.
    let many: Vec<String> = (0..1001).map(|_| "00".to_owned()).collect();
    let mut r = ureq::post(&format!("{}/tx", net.nodes[0].rpc))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(serde_json::json!({ "txs": many }))
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.body_mut().read_json().expect("json");
    assert_eq!(v["code"], "too_large");
}

#[test]
fn a_put_through_the_first_node_is_proven_by_the_last() {
    let net = devnet(4, 6);
    let c = ctx(&net);
    let (code, v) = post_tx(
        &net.nodes[0].rpc,
        &put_tx(&c, &net.faucet, "hello", "world"),
        true,
    )
    .expect("post");
    assert_eq!(code, 200, "{v}");
    let last = &net.nodes[3].rpc;
    let path = format!("/kv/{}/hello?proof=true", net.faucet.address());
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        if let Ok(r) = get(last, &path) {
            break r;
        }
        assert!(Instant::now() < deadline, "node 3 never got the write");
        std::thread::sleep(Duration::from_millis(50));
    };
    let root = pyralog_wallet::proof::check(&record, &net.faucet.address(), "hello")
        .expect("the proof verifies");
    assert_eq!(record["value"], "world");
    assert_eq!(Some(root.to_hex().as_str()), record["state_root"].as_str());
    // A tampered value is caught by the same check.
    let mut forged = record.clone();
    forged["value_hex"] = serde_json::json!(hex::encode(b"w0rld"));
    assert!(pyralog_wallet::proof::check(&forged, &net.faucet.address(), "hello").is_err());
    // And a proof for one key does not serve another.
    assert!(pyralog_wallet::proof::check(&record, &net.faucet.address(), "other").is_err());
}

#[test]
fn a_node_that_joins_late_catches_up_by_fetching() {
    let net = devnet(2, 7);
    let c = ctx(&net);
    for i in 0..20 {
        let (code, v) = post_tx(
            &net.nodes[i % 2].rpc,
            &put_tx(&c, &net.faucet, &format!("early-{i}"), "v"),
            true,
        )
        .expect("post");
        assert_eq!(code, 200, "{v}");
    }
    let joiner = common::Joiner::start(&net, "joiner");
    let rpc = joiner.rpc.clone();
    // The network's state once both nodes hold every write (a write committed
    // at node 1 may not have reached node 0 yet when the last answer comes).
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = loop {
        let roots: Vec<_> = (0..2)
            .map(|i| get(&net.nodes[i].rpc, "/status").expect("status")["state_root"].clone())
            .collect();
        if roots[0] == roots[1] {
            break roots[0].clone();
        }
        assert!(Instant::now() < deadline, "the two nodes never agreed");
        std::thread::sleep(Duration::from_millis(50));
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        if let Ok(s) = get(&rpc, "/status")
            && s["state_root"] == target
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(joiner);
    assert!(
        caught_up,
        "the joiner never reached the network's state root"
    );
}

/// When node `node` last heard validator `from` announce its difficulty
/// (ms since the epoch), if it has heard it at all.
fn last_heard(net: &Devnet, node: usize, from: &str) -> Option<u64> {
    let s = get(&net.nodes[node].rpc, "/status").ok()?;
    let asked = pyralog_node_now();
    s["pow_difficulty_peers"]
        .as_array()?
        .iter()
        .find(|p| p["validator"] == from)
        .and_then(|p| p["age_ms"].as_u64())
        .map(|age| asked.saturating_sub(age))
}

/// Waits until node `node` hears validator `from` say something after `since`.
fn await_heard(net: &Devnet, node: usize, from: &str, since: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_heard(net, node, from).is_none_or(|at| at <= since) {
        assert!(
            Instant::now() < deadline,
            "{what}: node {node} never heard {from} after {since}; it last heard it at {:?}",
            last_heard(net, node, from)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node killed and started again on the same identity is heard again in
/// both directions. Its peer may still hold a connection from the dead
/// process (QUIC sends nothing when a process dies), and gossipsub greets a
/// peer only on its first connection: without care the returning node never
/// learns its peer's subscriptions and never publishes to it.
#[test]
fn a_restarted_node_is_heard_again_both_ways() {
    let mut net = devnet(2, 8);
    // Node 1 dials node 0 over QUIC as well, so node 0 holds a QUIC
    // connection from it when it dies.
    let quic = net.nodes[0]
        .p2p
        .replace("/tcp/", "/udp/")
        .replacen("/p2p/", "/quic-v1/p2p/", 1);
    net.set_args(1, &["--bootnode", &quic]);
    net.restart(1).expect("start node 1 with a QUIC bootnode");
    let id = |i: usize| {
        get(&net.nodes[i].rpc, "/status").expect("status")["cluster_id"]
            .as_str()
            .expect("cluster id")
            .to_owned()
    };
    let (v0, v1) = (id(0), id(1));
    // Validators announce their difficulty every 2 s on gossip: hearing one
    // is hearing its gossip.
    let started = pyralog_node_now();
    await_heard(&net, 0, &v1, started, "before the kill");
    await_heard(&net, 1, &v0, started, "before the kill");

    net.kill(1).expect("SIGKILL node 1");
    net.restart(1).expect("restart node 1");
    let back = pyralog_node_now();
    await_heard(&net, 1, &v0, back, "after the restart");
    await_heard(&net, 0, &v1, back, "after the restart");
}

#[test]
fn a_second_submission_is_refused_while_the_first_hears_its_commit() {
    let net = devnet(1, 9);
    let c = ctx(&net);
    let rpc = net.nodes[0].rpc.clone();
    let tx = put_tx(&c, &net.faucet, "twice", "v");
    let id = pyralog_ledger::Transaction::from_bytes(&hex::decode(&tx).expect("hex"))
        .expect("a transaction")
        .id();
    let first = {
        let (rpc, tx) = (rpc.clone(), tx.clone());
        std::thread::spawn(move || post_tx(&rpc, &tx, true))
    };
    // Once the node holds it, the same bytes again, while the first post
    // still waits for the commit.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&rpc, &format!("/tx/{id}")).is_err() {
        assert!(Instant::now() < deadline, "the first post never arrived");
        std::thread::sleep(Duration::from_millis(2));
    }
    let (status, v) = post_tx(&rpc, &tx, false).expect("post again");
    assert_eq!((status, v["code"].as_str()), (400, Some("replayed")), "{v}");
    let (status, v) = first.join().expect("the first post").expect("post");
    assert_eq!(status, 200, "the first submission hears its commit: {v}");
    assert_eq!(value(&net, 0, &net.faucet, "twice").as_deref(), Some("v"));
}
