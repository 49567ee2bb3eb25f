//! End-to-end: the stamp difficulty a node asks for rises with the load of its
//! pool, is announced on `/pow/difficulty`, binds the node's clients, and falls
//! back to the floor once the pool drains.

use std::time::{Duration, Instant};

use pyralog_ledger::{ChainId, Encode, Keypair, PowKey, Transaction, devkit};
use pyralog_testnet::devnet::{Devnet, Plan, get, post_tx};

const FLOOR: u32 = 8;

fn difficulty(net: &Devnet) -> u64 {
    get(&net.nodes[0].rpc, "/pow/difficulty").expect("difficulty")["difficulty"]
        .as_u64()
        .expect("a number")
}

/// A write stamped at the floor whose stamp happens to prove fewer than
/// `below` bits (a stamp solved at 8 bits may prove more by luck).
fn weak_write(chain: &ChainId, epoch: u64, seed: u64, below: u32) -> Transaction {
    let pow = PowKey::for_chain(chain);
    (seed..seed + 1000)
        .map(|i| {
            let key: Keypair = devkit::key(i);
            devkit::tx(chain, &key, 0, epoch, devkit::put(&key, b"k", b"v"), FLOOR)
        })
        .find(|t| pow.bits(&t.id(), t.stamp) < below)
        .expect("some stamp proves few bits")
}

#[test]
fn the_difficulty_follows_the_pool_and_binds_clients() {
    let tmp = tempfile::tempdir().expect("dir");
    let base = 10_000 + (std::process::id() % 200) as u16 * 100;
    let mut net = Devnet::up(
        &Plan {
            clusters: 1,
            engine: pyralog_ledger::Engine::Gossip,
            dir: tmp.path().to_path_buf(),
            base_port: base,
            min_difficulty: FLOOR,
            exe: env!("CARGO_BIN_EXE_pyralog-testnet").into(),
        },
        &|_| {},
    )
    .expect("devnet up");
    // A small pool that drains slowly, so a burst of writes fills it.
    net.stop_one(0);
    let config = net.nodes[0].home.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let tuned: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("max_pending") {
                "max_pending = 400".to_owned()
            } else if l.starts_with("batch_interval_ms") {
                "batch_interval_ms = 4000".to_owned()
            } else if l.starts_with("max_batch_txs") {
                "max_batch_txs = 10000".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&config, tuned.join("\n") + "\n").expect("write config");
    net.restart(0).expect("restart");
    let s = get(&net.nodes[0].rpc, "/status").expect("status");
    let chain: ChainId = s["chain_id"].as_str().expect("chain").parse().expect("id");
    let epoch = s["epoch"].as_u64().expect("epoch");
    // Let the writes that started the devnet seal first: a quiet node asks
    // for the floor.
    let deadline = Instant::now() + Duration::from_secs(20);
    while difficulty(&net) != u64::from(FLOOR) {
        assert!(Instant::now() < deadline, "never back at the floor");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 150 writes of 400 wait: past a quarter full, two more bits. They are
    // stamped for that already, since the price rises as they arrive.
    let rpc = net.nodes[0].rpc.clone();
    for i in 0..150u64 {
        let key = devkit::key(50_000 + i);
        let tx = devkit::tx(
            &chain,
            &key,
            0,
            epoch,
            devkit::put(&key, b"k", b"v"),
            FLOOR + 2,
        );
        let (code, body) = post_tx(&rpc, &hex::encode(tx.to_bytes()), false).expect("post");
        assert_eq!(code, 200, "{body}");
    }
    let raised = difficulty(&net);
    assert_eq!(
        raised,
        u64::from(FLOOR) + 2,
        "the announced difficulty rose"
    );
    let status = get(&rpc, "/status").expect("status");
    assert_eq!(status["pow_difficulty"].as_u64(), Some(raised));

    // A client's write below the announced difficulty is refused and says so;
    // one stamped at it is taken.
    let weak = weak_write(&chain, epoch, 60_000, raised as u32);
    let (code, body) = post_tx(&rpc, &hex::encode(weak.to_bytes()), false).expect("post");
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["code"], "stamp_too_weak", "{body}");
    let key = devkit::key(70_000);
    let strong = devkit::tx(
        &chain,
        &key,
        0,
        epoch,
        devkit::put(&key, b"k", b"v"),
        raised as u32,
    );
    let (code, body) = post_tx(&rpc, &hex::encode(strong.to_bytes()), false).expect("post");
    assert_eq!(code, 200, "{body}");

    // The batch seals, the pool drains, the floor is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while difficulty(&net) != u64::from(FLOOR) {
        assert!(Instant::now() < deadline, "the difficulty never fell back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = weak_write(&chain, epoch, 80_000, raised as u32);
    let (code, body) = post_tx(&rpc, &hex::encode(again.to_bytes()), false).expect("post");
    assert_eq!(code, 200, "at the floor again: {body}");
}
