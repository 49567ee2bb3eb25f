//! End-to-end PBFT: four validator processes on loopback finalize transfers;
//! with one killed they go on; with the primary killed they change view and go
//! on; with two killed they stop without forking, and resume when one returns,
//! which catches up.

mod common;

use common::Running;
use std::time::{Duration, Instant};

use pyralog_ledger::{Encode, Keypair, Payload, devkit};
use pyralog_testnet::devnet::{Devnet, chain_now, get, nonce_of, post_tx, transfer};

fn pbft_devnet(slot: u16) -> Running {
    common::up(pyralog_ledger::Engine::Pbft, 4, slot, 4)
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn balance(rpc: &str, who: &Keypair) -> u64 {
    get(rpc, &format!("/account/{}", who.address()))
        .ok()
        .and_then(|a| a["balance"].as_u64())
        .unwrap_or(0)
}

fn height(rpc: &str) -> Option<u64> {
    get(rpc, "/status").ok().and_then(|s| s["height"].as_u64())
}

fn block_hash(rpc: &str, h: u64) -> Option<String> {
    get(rpc, &format!("/block/{h}"))
        .ok()
        .and_then(|b| b["hash"].as_str().map(str::to_owned))
}

/// Every block up to the lowest height among `nodes` is the same everywhere.
fn assert_no_fork(net: &Devnet, nodes: &[usize]) {
    let top = nodes
        .iter()
        .filter_map(|i| height(&net.nodes[*i].rpc))
        .min()
        .expect("heights");
    for h in 1..=top {
        let hashes: std::collections::BTreeSet<Option<String>> = nodes
            .iter()
            .map(|i| block_hash(&net.nodes[*i].rpc, h))
            .collect();
        assert_eq!(hashes.len(), 1, "fork at height {h}: {hashes:?}");
    }
}

/// A final transfer of `amount` to `to` through node `via`; then every node in
/// `nodes` shows the new balance.
fn pay(net: &Devnet, via: usize, to: &Keypair, amount: u64, nodes: &[usize]) {
    let before = balance(&net.nodes[via].rpc, to);
    let (code, answer) = transfer(&net.nodes[via].rpc, &net.faucet, to.address(), amount)
        .expect("transfer submitted");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "final", "{answer}");
    let hash = answer["hash"].as_str().expect("the transfer's hash");
    for i in nodes {
        // Every node answers a reader waiting for the transfer once it is
        // final there (at once if it is already).
        let seen = get(&net.nodes[*i].rpc, &format!("/tx/{hash}?wait=final"))
            .expect("waited for the transfer");
        assert_eq!(seen["status"], "final", "node {i}: {seen}");
        assert!(
            seen["block"]["height"].as_u64().is_some(),
            "node {i}: {seen}"
        );
        wait_until(Duration::from_secs(30), "the balance on every node", || {
            balance(&net.nodes[*i].rpc, to) == before + amount
        });
    }
}

fn primary_index(net: &Devnet, alive: &[usize]) -> usize {
    let primary = get(&net.nodes[alive[0]].rpc, "/status").expect("status")["primary"]
        .as_str()
        .expect("a primary")
        .to_owned();
    (0..net.nodes.len())
        .find(|i| {
            get(&net.nodes[*i].rpc, "/status")
                .map(|s| s["cluster_id"] == primary.as_str())
                .unwrap_or(false)
        })
        .expect("the primary is one of the nodes")
}

#[test]
fn four_validators_finalize_through_crashes_and_view_changes() {
    let mut r = pbft_devnet(8);
    let net = &mut r.net;
    let alice = devkit::key(4242);
    let all = [0, 1, 2, 3];

    // Finalized transfers, the same blocks everywhere, with certificates.
    pay(net, 1, &alice, 1000, &all);
    let latest = get(&net.nodes[2].rpc, "/block/latest").expect("latest block");
    assert!(
        latest["certificate"]["votes"]
            .as_array()
            .expect("votes")
            .len()
            >= 3
    );
    assert_eq!(
        get(&net.nodes[0].rpc, "/validators")
            .expect("validators")
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    assert_no_fork(net, &all);
    // A wait the node does not know is refused, not waited on.
    let zero = "00".repeat(32);
    let refused =
        get(&net.nodes[0].rpc, &format!("/tx/{zero}?wait=soon")).expect_err("an unknown wait");
    assert!(refused.to_string().contains("400"), "{refused}");

    // One validator down (not the primary), stopped cleanly this time: it
    // exits by itself on SIGTERM, its turns in flight answered. Still final.
    let p = primary_index(net, &all);
    let down = (p + 1) % 4;
    assert!(
        net.stop_one(down),
        "a validator did not exit on SIGTERM within the grace period"
    );
    let alive: Vec<usize> = all.iter().copied().filter(|i| *i != down).collect();
    pay(net, alive[0], &alice, 10, &alive);
    net.restart(down).expect("restart");
    wait_until(
        Duration::from_secs(60),
        "the restarted node to catch up",
        || balance(&net.nodes[down].rpc, &alice) == 1010,
    );

    // The primary down: the others change view and go on.
    let p = primary_index(net, &all);
    net.kill(p).expect("kill the primary");
    let alive: Vec<usize> = all.iter().copied().filter(|i| *i != p).collect();
    pay(net, alive[0], &alice, 20, &alive);
    let view = get(&net.nodes[alive[0]].rpc, "/status").expect("status")["view"]
        .as_u64()
        .expect("view");
    assert!(view > 0, "finalized without a view change");
    net.restart(p).expect("restart");
    wait_until(
        Duration::from_secs(60),
        "the old primary to catch up",
        || balance(&net.nodes[p].rpc, &alice) == 1030,
    );
    assert_no_fork(net, &all);

    // Two down: no quorum, nothing is finalized, nothing forks.
    let (a, b) = (1, 2);
    net.kill(a).expect("kill");
    net.kill(b).expect("kill");
    let (chain, epoch, bits) = chain_now(&net.nodes[0].rpc).expect("chain");
    let tx = devkit::tx(
        &chain,
        &net.faucet,
        nonce_of(&net.nodes[0].rpc, &net.faucet).expect("nonce"),
        epoch,
        Payload::Transfer {
            to: alice.address(),
            amount: 5,
        },
        bits,
    );
    let (code, answer) =
        post_tx(&net.nodes[0].rpc, &hex::encode(tx.to_bytes()), false).expect("post");
    assert_eq!(code, 200, "{answer}");
    let stuck = height(&net.nodes[0].rpc).expect("height");
    std::thread::sleep(Duration::from_secs(4));
    for i in [0, 3] {
        assert_eq!(
            height(&net.nodes[i].rpc),
            Some(stuck),
            "a block without a quorum"
        );
        assert_eq!(balance(&net.nodes[i].rpc, &alice), 1030);
    }
    assert_no_fork(net, &[0, 3]);

    // One returns: the transfer is finalized and the returned node catches up.
    net.restart(a).expect("restart");
    for i in [0, 3, a] {
        wait_until(
            Duration::from_secs(90),
            "progress after a quorum returns",
            || balance(&net.nodes[i].rpc, &alice) == 1035,
        );
    }
    assert_no_fork(net, &[0, 3, a]);
}
