//! End-to-end: the stamp difficulty a node asks for rises with the load of its
//! pool, is announced on `/pow/difficulty` and to the other validators (whose
//! clients then pay it too), binds the node's clients, and falls back to the
//! floor once the pool drains.

mod common;

use common::Running;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyralog_ledger::{ChainId, Encode, Keypair, PowKey, Transaction, devkit};
use pyralog_testnet::devnet::{Devnet, agent, get, post_tx};

const FLOOR: u32 = 8;

fn difficulty(net: &Devnet) -> u64 {
    difficulty_of(net, 0)
}

fn difficulty_of(net: &Devnet, node: usize) -> u64 {
    get(&net.nodes[node].rpc, "/pow/difficulty").expect("difficulty")["difficulty"]
        .as_u64()
        .expect("a number")
}

/// Waits until `node` asks for `bits`.
fn await_difficulty(net: &Devnet, node: usize, bits: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while difficulty_of(net, node) != bits {
        assert!(
            Instant::now() < deadline,
            "{what}: node {node} never asked {bits} bits; now {:?}",
            net.nodes
                .iter()
                .map(|n| (
                    get(&n.rpc, "/pow/difficulty").ok(),
                    get(&n.rpc, "/status")
                        .ok()
                        .map(|s| s["pow_difficulty_peers"].clone())
                ))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A write of one record by the key of `seed`, stamped at `bits`.
fn write(chain: &ChainId, epoch: u64, seed: u64, bits: u32) -> Transaction {
    let key: Keypair = devkit::key(seed);
    devkit::tx(chain, &key, 0, epoch, devkit::put(&key, b"k", b"v"), bits)
}

/// A write stamped at the floor whose stamp happens to prove fewer than
/// `below` bits (a stamp solved at 8 bits may prove more by luck).
fn weak_write(chain: &ChainId, epoch: u64, seed: u64, below: u32) -> Transaction {
    let pow = PowKey::for_chain(chain);
    (seed..seed + 1000)
        .map(|i| write(chain, epoch, i, FLOOR))
        .find(|t| pow.bits(&t.id(), t.stamp) < below)
        .expect("some stamp proves few bits")
}

/// Stops node `i`, rewrites each line of its `config.toml` through `edit`,
/// and starts it again.
fn retune(net: &mut Running, i: usize, edit: &dyn Fn(&str) -> String) {
    net.stop_one(i);
    let config = net.nodes[i].home.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let tuned: Vec<String> = text.lines().map(edit).collect();
    std::fs::write(&config, tuned.join("\n") + "\n").expect("write config");
    net.restart(i).expect("restart");
}

/// A gossip devnet whose nodes keep a pool of 400 and seal a batch every
/// `interval_ms` (never sooner), so load shows in the pool.
fn small_pool_devnet(clusters: usize, slot: u16, interval_ms: u64) -> Running {
    let mut net = common::up(pyralog_ledger::Engine::Gossip, clusters, slot, FLOOR);
    for i in 0..clusters {
        retune(&mut net, i, &|l: &str| {
            if l.starts_with("max_pending") {
                "max_pending = 400".to_owned()
            } else if l.starts_with("batch_interval_ms") {
                format!("batch_interval_ms = {interval_ms}")
            } else if l.starts_with("max_batch_txs") {
                "max_batch_txs = 10000".to_owned()
            } else {
                l.to_owned()
            }
        });
    }
    net
}

#[test]
fn one_client_posts_its_share_per_second_and_no_more() {
    let mut net = common::up(pyralog_ledger::Engine::Gossip, 1, 2, FLOOR);
    retune(&mut net, 0, &|l: &str| {
        if l.starts_with("client_txs_per_sec") {
            "client_txs_per_sec = 100".to_owned()
        } else {
            l.to_owned()
        }
    });
    let rpc = net.nodes[0].rpc.clone();
    let s = get(&rpc, "/status").expect("status");
    let chain: ChainId = s["chain_id"].as_str().expect("chain").parse().expect("id");
    let epoch = s["epoch"].as_u64().expect("epoch");
    let hexes = |from: u64, n: u64| -> Vec<String> {
        (from..from + n)
            .map(|i| hex::encode(write(&chain, epoch, i, FLOOR).to_bytes()))
            .collect()
    };
    let bulk = |txs: Vec<String>| -> (u16, serde_json::Value) {
        let mut r = agent()
            .post(&format!("{rpc}/tx"))
            .send_json(serde_json::json!({ "txs": txs }))
            .expect("post");
        let code = r.status().as_u16();
        (code, r.body_mut().read_json().expect("json"))
    };
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis()
            / 1000
    };
    // The budget renews each second; an attempt that straddled a turn of the
    // second proves nothing and is made again, from the top of the next one.
    let mut attempt = 0u64;
    loop {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_millis();
        std::thread::sleep(Duration::from_millis(1000 - u64::from(ms)));
        let start = second();
        let base = 100_000 + attempt * 1_000;
        let (within, within_body) = bulk(hexes(base, 80));
        let (past, past_body) = bulk(hexes(base + 100, 30));
        let one = hex::encode(write(&chain, epoch, base + 200, FLOOR).to_bytes());
        let (last, last_body) = post_tx(&rpc, &one, false).expect("post");
        if second() != start && attempt < 3 {
            attempt += 1;
            continue;
        }
        assert_eq!(within, 200, "within the budget: {within_body}");
        assert_eq!(past, 429, "past the budget: {past_body}");
        assert_eq!(past_body["code"], "rate_limited", "{past_body}");
        assert_eq!(last, 200, "what was refused is not counted: {last_body}");
        break;
    }
    // The next second renews it.
    std::thread::sleep(Duration::from_millis(1100));
    let (code, body) = bulk(hexes(200_000, 90));
    assert_eq!(code, 200, "a new second: {body}");
}

#[test]
fn the_difficulty_follows_the_pool_and_binds_clients() {
    // Two validators: one is more than a third of the power, so the word of
    // the loaded one raises the other's price as well.
    let net = small_pool_devnet(2, 0, 6000);
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
        let tx = write(&chain, epoch, 50_000 + i, FLOOR + 2);
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
    let strong = write(&chain, epoch, 70_000, raised as u32);
    let (code, body) = post_tx(&rpc, &hex::encode(strong.to_bytes()), false).expect("post");
    assert_eq!(code, 200, "{body}");

    // The other validator heard the announcement: its clients pay the raised
    // price though its own pool is empty, and it says why.
    await_difficulty(&net, 1, raised, "the announcement");
    let other = get(&net.nodes[1].rpc, "/pow/difficulty").expect("difficulty");
    assert_eq!(other["local"].as_u64(), Some(u64::from(FLOOR)), "{other}");
    let weak = weak_write(&chain, epoch, 90_000, raised as u32);
    let (code, body) =
        post_tx(&net.nodes[1].rpc, &hex::encode(weak.to_bytes()), false).expect("post");
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["code"], "stamp_too_weak", "{body}");
    let peers = get(&net.nodes[1].rpc, "/status").expect("status")["pow_difficulty_peers"].clone();
    let loud = status["cluster_id"].as_str().expect("cluster id");
    assert!(
        peers
            .as_array()
            .expect("a list")
            .iter()
            .any(|p| p["validator"] == loud && p["difficulty"].as_u64() == Some(raised)),
        "{peers}"
    );

    // The batch seals, the pool drains, the floor is back, at both.
    await_difficulty(&net, 0, u64::from(FLOOR), "the drain");
    await_difficulty(&net, 1, u64::from(FLOOR), "the next announcement");
    let again = weak_write(&chain, epoch, 80_000, raised as u32);
    let (code, body) = post_tx(&rpc, &hex::encode(again.to_bytes()), false).expect("post");
    assert_eq!(code, 200, "at the floor again: {body}");
}

/// Resident memory of a process, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn a_flood_raises_the_price_and_honest_writes_still_commit() {
    let net = small_pool_devnet(2, 1, 500);
    let rpc = net.nodes[0].rpc.clone();
    let s = get(&rpc, "/status").expect("status");
    let chain: ChainId = s["chain_id"].as_str().expect("chain").parse().expect("id");
    let epoch = s["epoch"].as_u64().expect("epoch");
    let pids: Vec<u32> = net.children.iter().flatten().map(|c| c.id()).collect();
    let rss_before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    // The spammer: four threads of floor-stamped writes, as fast as answers come.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, taken) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let spammers: Vec<_> = (0..4u64)
        .map(|t| {
            let (stop, sent, taken, rpc, chain) = (
                stop.clone(),
                sent.clone(),
                taken.clone(),
                rpc.clone(),
                chain.clone(),
            );
            std::thread::spawn(move || {
                let agent = pyralog_testnet::devnet::agent();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tx = write(&chain, epoch, 1_000_000 * (t + 1) + i, FLOOR);
                    i += 1;
                    let hex = hex::encode(tx.to_bytes());
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Ok((200, _)) =
                        pyralog_testnet::devnet::post_tx_with(&agent, &rpc, &hex, false)
                    {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // The announced difficulty and every node's memory, sampled as it goes.
    let monitor = {
        let (stop, rpc, pids) = (stop.clone(), rpc.clone(), pids.clone());
        std::thread::spawn(move || {
            let mut highest = 0;
            let mut peak = vec![0u64; pids.len()];
            while !stop.load(Ordering::Relaxed) {
                if let Some(d) = get(&rpc, "/pow/difficulty")
                    .ok()
                    .and_then(|v| v["difficulty"].as_u64())
                {
                    highest = highest.max(d);
                }
                for (p, pid) in peak.iter_mut().zip(&pids) {
                    *p = (*p).max(rss_kib(*pid));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (highest, peak)
        })
    };

    // The honest client: reads the announced difficulty, stamps at it, waits
    // for the commit. If the price rose between the read and the post, it
    // reads it again and stamps afresh, as a wallet does.
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut restamped = 0;
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(8) {
        let seed = 5_000_000 + n;
        n += 1;
        let t = Instant::now();
        loop {
            let d = difficulty(&net);
            let tx = write(&chain, epoch, seed, d as u32);
            let (code, body) = post_tx(&rpc, &hex::encode(tx.to_bytes()), true).expect("post");
            if code == 400 && body["code"] == "stamp_too_weak" && restamped < 100 {
                restamped += 1;
                continue;
            }
            assert_eq!(
                code, 200,
                "an honest write at the announced {d} bits: {body}"
            );
            break;
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    let (highest, rss_peak) = monitor.join().expect("monitor");
    for s in spammers {
        s.join().expect("spammer");
    }
    latencies.sort_by(f64::total_cmp);
    let (sent, taken) = (sent.load(Ordering::Relaxed), taken.load(Ordering::Relaxed));
    eprintln!(
        "flood: {sent} spam writes sent, {taken} taken; difficulty up to {highest} bits (floor {FLOOR}); \
         {} honest writes all committed ({restamped} restamped), latency p50 {:.0} ms, p99 {:.0} ms; \
         node RSS before {:?} KiB, peak {:?} KiB",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        rss_before,
        rss_peak,
    );
    assert!(
        highest > u64::from(FLOOR),
        "the flood raised the difficulty"
    );
    assert!(taken < sent, "some spam was refused at the door");
    assert!(!latencies.is_empty());
    // Bounded memory: the pool holds 400 writes; a node that kept everything
    // the spammer sent would grow with it.
    for (peak, before) in rss_peak.iter().zip(&rss_before) {
        assert!(
            *peak < before + 256 * 1024,
            "a node grew by more than 256 MiB under the flood: {before} -> {peak} KiB"
        );
    }
    // The flood over, the price falls back to the floor.
    let deadline = Instant::now() + Duration::from_secs(30);
    while difficulty(&net) != u64::from(FLOOR) {
        assert!(Instant::now() < deadline, "the difficulty never fell back");
        std::thread::sleep(Duration::from_millis(100));
    }
}
