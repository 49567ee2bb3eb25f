//! End-to-end proof of stake, on the user's path: four staked validator
//! processes finalize transfers; a new account gets funds; a new node starts
//! with its own validator key and joins by bootnode; the account registers it
//! and stakes; from the next epoch on it is in the set and proposes blocks;
//! unstaking takes it out at an epoch boundary and the stake comes back after
//! the unbonding period.

mod common;

use std::time::{Duration, Instant};

use pyralog_ledger::{Address, Keypair, Payload};
use pyralog_testnet::devnet::{Devnet, get, put, send, transfer};

/// Blocks per epoch: short, so the test crosses several.
const EPOCH: u64 = 12;
/// The stake the newcomer bonds (the genesis validators have 1,000 each).
const STAKE: u64 = 3_000;

fn height(rpc: &str) -> u64 {
    get(rpc, "/status")
        .ok()
        .and_then(|s| s["height"].as_u64())
        .unwrap_or(0)
}

fn balance(rpc: &str, who: &Address) -> u64 {
    get(rpc, &format!("/account/{who}"))
        .ok()
        .and_then(|a| a["balance"].as_u64())
        .unwrap_or(0)
}

/// The newcomer's line in `/validators`, if it is registered.
fn standing(rpc: &str, validator: &Address) -> Option<serde_json::Value> {
    get(rpc, "/validators")
        .ok()?
        .as_array()?
        .iter()
        .find(|v| v["address"].as_str() == Some(&validator.to_human()))
        .cloned()
}

/// Finalizes writes through node 0 until the chain is past `target`.
fn advance_past(net: &Devnet, target: u64, tag: &str) {
    let rpc = &net.nodes[0].rpc;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0u64;
    while height(rpc) <= target {
        assert!(
            Instant::now() < deadline,
            "stuck at height {} on the way past {target}",
            height(rpc)
        );
        put(rpc, &net.faucet, &format!("{tag}-{i}"), "tick", true).expect("a write");
        i += 1;
    }
}

/// The first height of the epoch after the one holding `h`.
fn next_epoch_start(h: u64) -> u64 {
    (h / EPOCH + 1) * EPOCH
}

fn ok(answer: (u16, serde_json::Value), what: &str) {
    assert_eq!(answer.0, 200, "{what}: {}", answer.1);
    assert_eq!(answer.1["status"], "final", "{what}: {}", answer.1);
}

#[test]
fn a_staker_joins_the_set_proposes_and_leaves_with_its_stake() {
    let net = common::up_with_epochs(pyralog_ledger::Engine::Pos, 4, 0, 4, EPOCH);
    let rpc = net.nodes[0].rpc.clone();

    // A new account gets funds.
    let operator = Keypair::generate().expect("key");
    ok(
        transfer(&rpc, &net.faucet, operator.address(), 10_000).expect("transfer"),
        "funding",
    );
    assert_eq!(balance(&rpc, &operator.address()), 10_000);

    // A new node, with its own validator key, joins by bootnode.
    let joiner = common::Joiner::start(&net, "newcomer");
    let (new_rpc, p2p, home) = (joiner.rpc.clone(), joiner.p2p.clone(), joiner.home.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&new_rpc, "/status").is_err() {
        assert!(Instant::now() < deadline, "the newcomer never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seed = std::fs::read_to_string(home.join("validator_key")).expect("validator key");
    let seed = pyralog_ledger::Hash::from_hex(seed.trim()).expect("hex seed");
    let validator = Keypair::from_seed(&seed.0).address();

    // The account registers it and stakes.
    ok(
        send(
            &rpc,
            &operator,
            Payload::RegisterValidator {
                validator_key: validator,
                p2p: p2p.clone(),
                moniker: "newcomer".into(),
            },
        )
        .expect("register"),
        "register",
    );
    ok(
        send(
            &rpc,
            &operator,
            Payload::Stake {
                validator,
                amount: STAKE,
            },
        )
        .expect("stake"),
        "stake",
    );
    let staked_at = height(&rpc);
    let line = standing(&rpc, &validator).expect("registered");
    assert_eq!(line["stake"], STAKE, "{line}");
    assert_eq!(
        line["power"], 0,
        "not in the set before the epoch ends: {line}"
    );

    // From the next epoch on it is in the set, with power from its stake.
    let joined = next_epoch_start(staked_at);
    advance_past(&net, joined, "in");
    let line = standing(&rpc, &validator).expect("registered");
    assert_eq!(line["power"], STAKE, "in the set: {line}");
    // ... and it proposes: with half the power, within a few dozen blocks.
    let mut proposed = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut checked = joined;
    while proposed.is_none() {
        assert!(
            Instant::now() < deadline,
            "the newcomer never proposed a block"
        );
        advance_past(&net, checked + 4, "propose");
        let top = height(&rpc);
        for h in checked..=top {
            let block = get(&rpc, &format!("/block/{h}")).expect("block");
            if block["proposer"].as_str() == Some(&validator.to_human()) {
                proposed = Some(h);
                break;
            }
        }
        checked = top + 1;
    }
    // The newcomer's own node follows the chain it helps make.
    let target = height(&rpc);
    let deadline = Instant::now() + Duration::from_secs(60);
    while height(&new_rpc) < target {
        assert!(Instant::now() < deadline, "the newcomer's node fell behind");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A validator that is not jailed cannot be unjailed; the answer says so.
    let (code, body) = send(&rpc, &operator, Payload::Unjail).expect("unjail");
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["code"], "refused", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not jailed")),
        "{body}"
    );

    // Unstaking takes it out at the next epoch boundary ...
    let before_unstake = balance(&rpc, &operator.address());
    ok(
        send(
            &rpc,
            &operator,
            Payload::Unstake {
                validator,
                amount: STAKE,
            },
        )
        .expect("unstake"),
        "unstake",
    );
    let unstaked_at = height(&rpc);
    let left = next_epoch_start(unstaked_at);
    advance_past(&net, left, "out");
    let line = standing(&rpc, &validator).expect("registered");
    assert_eq!(line["power"], 0, "out of the set: {line}");
    // Rewards may arrive meanwhile; the stake does not.
    let unbonding = balance(&rpc, &operator.address());
    assert!(
        unbonding < before_unstake + STAKE,
        "the stake is still unbonding: {before_unstake} before, {unbonding} now"
    );
    // ... and the stake comes back once the unbonding epochs have passed
    // (plus whatever rewards the operator earned meanwhile).
    // The devnet's genesis unbonds over two epochs.
    let unbonding_epochs = 2;
    let back = left + (unbonding_epochs + 1) * EPOCH;
    advance_past(&net, back, "unbond");
    let after = balance(&rpc, &operator.address());
    assert!(
        after >= before_unstake + STAKE,
        "the stake came back: {before_unstake} before, {after} after"
    );
    println!(
        "staked at height {staked_at}, in the set from {joined}, first proposal at {}, \
         unstaked at {unstaked_at}, out from {left}, balance {before_unstake} -> {after}",
        proposed.unwrap_or(0)
    );
    drop(joiner);
}

/// Equivocation by `key` at `height`: two prepares for different digests, or,
/// with `other_height`, the second for another height (no conflict at all).
fn evidence(
    chain: &pyralog_ledger::ChainId,
    key: &Keypair,
    height: u64,
    other_height: Option<u64>,
) -> pyralog_ledger::evidence::Evidence {
    use pyralog_ledger::evidence::{Evidence, Kind, Statement};
    let first = Statement {
        kind: Kind::Prepare,
        round: 0,
        height,
        digest: pyralog_ledger::Hash([1; 32]),
    };
    let second = Statement {
        height: other_height.unwrap_or(height),
        digest: pyralog_ledger::Hash([2; 32]),
        ..first
    };
    Evidence {
        validator: key.address(),
        first,
        first_sig: first.sign(chain, key),
        second,
        second_sig: second.sign(chain, key),
    }
}

fn gossip_rejected(rpc: &str) -> u64 {
    let mut r = ureq::get(&format!("{rpc}/metrics"))
        .call()
        .expect("metrics");
    r.body_mut()
        .read_to_string()
        .expect("text")
        .lines()
        .find_map(|l| l.strip_prefix("pyralog_gossip_rejected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn invalid_evidence_is_refused_at_the_rpc_and_on_gossip() {
    use pyralog_ledger::Encode;
    let net = common::up_with_epochs(pyralog_ledger::Engine::Pos, 4, 1, 4, 1_000);
    let rpc = net.nodes[0].rpc.clone();
    let (chain, epoch, bits) = pyralog_testnet::devnet::chain_now(&rpc).expect("chain");
    let seed = std::fs::read_to_string(net.dir.join("keys").join("validator-1.key")).expect("key");
    let culprit = Keypair::from_seed(&pyralog_ledger::Hash::from_hex(seed.trim()).expect("hex").0);
    let h = height(&rpc);
    let refused = |ev: &pyralog_ledger::evidence::Evidence, what: &str| {
        let (code, body) = send(
            &rpc,
            &net.faucet,
            Payload::Evidence {
                data: ev.to_bytes(),
            },
        )
        .expect("post");
        assert_eq!(code, 400, "{what}: {body}");
        assert_eq!(body["code"], "bad_evidence", "{what}: {body}");
    };

    // A tampered signature.
    let mut tampered = evidence(&chain, &culprit, h, None);
    tampered.second_sig.0[5] ^= 1;
    refused(&tampered, "a tampered signature");
    // Two votes for different heights: no conflict.
    refused(
        &evidence(&chain, &culprit, h, Some(h + 1)),
        "different heights",
    );
    // Real evidence is taken, and slashes once ...
    let real = evidence(&chain, &culprit, h, None);
    ok(
        send(
            &rpc,
            &net.faucet,
            Payload::Evidence {
                data: real.to_bytes(),
            },
        )
        .expect("post"),
        "real evidence",
    );
    let line = standing(&rpc, &culprit.address()).expect("a validator");
    assert_eq!(line["tombstoned"], true, "{line}");
    assert!(line["slashed"].as_u64() > Some(0), "{line}");
    // ... so the same evidence again is a duplicate.
    refused(&real, "a duplicate");

    // On gossip: a peer relays a transaction carrying forged evidence; the
    // node refuses it and the peer's message is rejected.
    let nonce = pyralog_testnet::devnet::nonce_of(&rpc, &net.faucet).expect("nonce");
    // A relay message of one transaction carrying forged evidence; `n` makes
    // each message distinct (gossipsub drops repeats).
    let relay = |n: u8| {
        let mut forged = evidence(&chain, &culprit, h, None);
        forged.second.digest.0[31] = n;
        forged.first_sig.0[0] ^= 1;
        let tx = pyralog_ledger::devkit::tx(
            &chain,
            &net.faucet,
            nonce,
            epoch,
            Payload::Evidence {
                data: forged.to_bytes(),
            },
            bits,
        );
        let mut data = Vec::new();
        pyralog_ledger::codec::put_len(&mut data, 1);
        tx.encode(&mut data);
        data
    };
    let status = get(&rpc, "/status").expect("status");
    let genesis = pyralog_ledger::Hash::from_hex(status["genesis_hash"].as_str().expect("genesis"))
        .expect("hash");
    let before = gossip_rejected(&rpc);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use pyralog_p2p::{Config, NetCommand, Network, Topic, Topics};
        let mut rogue = Network::new(Config {
            key: pyralog_p2p::NodeKey::generate_ed25519(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
            bootnodes: vec![net.nodes[0].p2p.parse().expect("addr")],
            topics: Topics::new(&chain, &genesis),
            banned: vec![],
            limits: Default::default(),
        })
        .expect("rogue");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut n = 0u8;
        loop {
            tokio::select! {
                _ = rogue.next_event() => {}
                _ = tick.tick() => {
                    // A distinct message each time (gossipsub drops repeats).
                    n = n.wrapping_add(1);
                    rogue.command(NetCommand::Publish { topic: Topic::Transactions, data: relay(n) });
                    if gossip_rejected(&rpc) > before { break; }
                }
                _ = tokio::time::sleep_until(deadline) => panic!("the node never rejected the forged evidence"),
            }
        }
    });
    // Nothing was slashed by it: the culprit's slash is the one real piece.
    let after = standing(&rpc, &culprit.address()).expect("a validator");
    assert_eq!(after["slashed"], line["slashed"], "{after}");
}
