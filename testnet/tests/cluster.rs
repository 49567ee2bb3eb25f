//! Clusters of three nodes on loopback (issue 5), as real processes: writes
//! through a follower are acknowledged once the cluster's log holds them; the
//! leader dies by SIGKILL and another is elected with every acknowledged
//! write; a member down long enough that the log moved past it catches up
//! from a snapshot; members are added and removed while writes go on.

mod common;

use std::time::{Duration, Instant};

use pyralog_ledger::{Encode, Engine, Keypair, devkit};
use pyralog_testnet::devnet::{Devnet, agent, chain_now, get, put};
use serde_json::{Value, json};

fn cluster_of_three(slot: u16) -> common::Running {
    common::up_plan(Engine::Gossip, 1, 3, slot, 8, 0)
}

fn status(rpc: &str) -> Option<Value> {
    get(rpc, "/cluster").ok()
}

/// The index of the node among `alive` that leads, once one does.
fn leader(net: &Devnet, alive: &[usize], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        for &i in alive {
            if status(&net.nodes[i].rpc).is_some_and(|s| s["role"] == "leader") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader among {alive:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of `key` in `who`'s namespace on `rpc`, read at `level`.
fn read(rpc: &str, who: &Keypair, key: &str, level: &str) -> Option<String> {
    get(
        rpc,
        &format!("/kv/{}/{key}?consistency={level}", who.address()),
    )
    .ok()
    .and_then(|v| v["value"].as_str().map(str::to_owned))
}

/// Writes until the cluster acknowledges it (an election may be under way).
fn put_until(rpc: &str, who: &Keypair, key: &str, limit: Duration) -> bool {
    put_or_why(rpc, who, key, limit).is_ok()
}

/// [`put_until`], with the refusals when it never got through.
fn put_or_why(rpc: &str, who: &Keypair, key: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut why: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        match put(rpc, who, key, "v", true) {
            Ok(_) => return Ok(()),
            Err(e) => why.push(format!("{e:#}")),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    why.dedup();
    Err(why.join("; "))
}

/// Waits until `rpc` serves every key of `keys` locally.
fn holds_all(rpc: &str, who: &Keypair, keys: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
    for k in keys {
        while read(rpc, who, k, "none").as_deref() != Some("v") {
            assert!(Instant::now() < deadline, "{rpc} never got {k}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn writes_through_a_follower_survive_the_leaders_sigkill() {
    let mut net = cluster_of_three(0);
    let faucet = net.faucet.clone();
    let first = leader(&net, &[0, 1, 2], Duration::from_secs(30));
    let term = status(&net.nodes[first].rpc).expect("status")["term"]
        .as_u64()
        .expect("term");
    let follower = (first + 1) % 3;
    let mut acked = Vec::new();
    for i in 0..20 {
        let k = format!("a{i}");
        put(&net.nodes[follower].rpc, &faucet, &k, "v", true).expect("a write through a follower");
        acked.push(k);
    }
    // A linearizable read on the other follower sees the last of them.
    let other = (first + 2) % 3;
    assert_eq!(
        read(&net.nodes[other].rpc, &faucet, "a19", "linearizable").as_deref(),
        Some("v")
    );
    // `leader` reads are refused off the leader, with who leads.
    let refused = get(
        &net.nodes[other].rpc,
        &format!("/kv/{}/a19?consistency=leader", faucet.address()),
    )
    .expect_err("a leader read on a follower");
    assert!(refused.to_string().contains("not_leader"), "{refused}");

    net.kill(first).expect("SIGKILL the leader");
    let alive: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let second = leader(&net, &alive, Duration::from_secs(30));
    let new_term = status(&net.nodes[second].rpc).expect("status")["term"]
        .as_u64()
        .expect("term");
    assert!(
        new_term > term,
        "a new election: term {new_term} after {term}"
    );
    let via = alive[0];
    for i in 0..20 {
        let k = format!("b{i}");
        if put_until(&net.nodes[via].rpc, &faucet, &k, Duration::from_secs(20)) {
            acked.push(k);
        }
    }
    assert_eq!(
        acked.len(),
        40,
        "every write after the election acknowledged"
    );
    for &n in &alive {
        for k in &acked {
            assert_eq!(
                read(&net.nodes[n].rpc, &faucet, k, "linearizable").as_deref(),
                Some("v"),
                "{k} on node {n}"
            );
        }
    }
    // The old leader returns as a follower and catches up.
    net.restart(first).expect("restart");
    holds_all(
        &net.nodes[first].rpc,
        &faucet,
        &acked,
        Duration::from_secs(60),
    );
    assert_ne!(
        status(&net.nodes[first].rpc).expect("status")["role"],
        "leader",
        "the cluster had a leader with a newer term"
    );
}

#[test]
fn a_leader_restarted_alone_answers_and_leads_again_when_its_members_return() {
    // A leader whose election was committed takes the lead back when it
    // restarts (openraft restores it), but alone it cannot catch up with a
    // quorum. It must still answer its clients, not wait on the quorum.
    let mut net = cluster_of_three(5);
    let faucet = net.faucet.clone();
    let first = leader(&net, &[0, 1, 2], Duration::from_secs(30));
    put(&net.nodes[first].rpc, &faucet, "before", "v", true).expect("a write");
    for i in 0..3 {
        net.kill(i).expect("SIGKILL");
    }
    net.restart(first)
        .expect("the old leader answers on its own");
    for _ in 0..10 {
        get(&net.nodes[first].rpc, "/status").expect("status while alone");
        std::thread::sleep(Duration::from_millis(300));
    }
    for i in (0..3).filter(|i| *i != first) {
        net.restart(i).expect("restart");
    }
    if let Err(why) = put_or_why(
        &net.nodes[first].rpc,
        &faucet,
        "after",
        Duration::from_secs(60),
    ) {
        panic!("the cluster took no write again: {why}");
    }
    for k in ["before", "after"] {
        assert_eq!(
            read(&net.nodes[first].rpc, &faucet, k, "linearizable").as_deref(),
            Some("v"),
            "{k}"
        );
    }
}

/// `n` signed, stamped writes of `who`, as hex, keys `prefix0`...
fn bulk(rpc: &str, who: &Keypair, prefix: &str, n: usize) -> Vec<String> {
    let (chain, epoch, bits) = chain_now(rpc).expect("chain");
    (0..n)
        .map(|i| {
            let k = format!("{prefix}{i}");
            hex::encode(
                devkit::tx(
                    &chain,
                    who,
                    0,
                    epoch,
                    devkit::put(who, k.as_bytes(), b"v"),
                    bits.max(8),
                )
                .to_bytes(),
            )
        })
        .collect()
}

fn post_bulk(rpc: &str, txs: Vec<String>) -> usize {
    let mut r = agent()
        .post(&format!("{rpc}/tx"))
        .send_json(json!({ "txs": txs }))
        .expect("post");
    let v: Value = r.body_mut().read_json().expect("json");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["status"] == "pending")
        .count()
}

#[test]
fn a_member_behind_the_purged_log_catches_up_from_a_snapshot() {
    let mut net = cluster_of_three(1);
    let faucet = net.faucet.clone();
    // Snapshots every 100 entries (the default is far more than a test
    // writes); each member restarts with it, one at a time.
    for i in 0..3 {
        net.set_args(i, &["--snapshot-every", "100"]);
        net.restart(i).expect("restart");
        leader(&net, &[0, 1, 2], Duration::from_secs(30));
    }
    let lead = leader(&net, &[0, 1, 2], Duration::from_secs(30));
    let down = (lead + 1) % 3;
    let had = status(&net.nodes[down].rpc).expect("status")["applied"]
        .as_u64()
        .unwrap_or(0);
    net.kill(down).expect("SIGKILL a follower");
    // Writes until the leader's log no longer holds what the member lacks.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    let purged = loop {
        let txs = bulk(&net.nodes[lead].rpc, &faucet, &format!("s{round}-"), 20);
        assert_eq!(post_bulk(&net.nodes[lead].rpc, txs), 20, "a bulk refused");
        round += 1;
        let s = status(&net.nodes[lead].rpc).expect("status");
        if let Some(p) = s["purged"].as_u64().filter(|p| *p > had + 10) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never purged past {had}: {s}"
        );
        std::thread::sleep(Duration::from_millis(60));
    };
    let last = format!("s{}-19", round - 1);
    net.restart(down).expect("restart");
    // It can only have caught up from a snapshot: its log stopped before
    // what the leader purged.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(&net.nodes[down].rpc);
        if let Some(s) = &s
            && s["snapshot"].as_u64().is_some_and(|i| i >= purged)
            && read(&net.nodes[down].rpc, &faucet, &last, "none").as_deref() == Some("v")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_member_is_added_and_another_removed_while_writes_go_on() {
    let net = cluster_of_three(2);
    let faucet = net.faucet.clone();
    let lead = leader(&net, &[0, 1, 2], Duration::from_secs(30));
    let lead_rpc = net.nodes[lead].rpc.clone();
    // Writes go on through the leader from another thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, rpc, faucet) = (stop.clone(), lead_rpc.clone(), faucet.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = format!("w{i}");
                if put(&rpc, &faucet, &k, "v", true).is_ok() {
                    acked.push(k);
                }
                i += 1;
            }
            acked
        })
    };
    // A fourth node with the cluster's validator key, waiting to be added.
    let home = net.dir.join("node-0-3");
    let vkey = net.dir.join("keys").join("validator-0.key");
    let exe = env!("CARGO_BIN_EXE_pyralog-testnet");
    let init = std::process::Command::new(exe)
        .args(["node", "init", "--home", &home.to_string_lossy()])
        .args(["--genesis", &net.dir.join("genesis.json").to_string_lossy()])
        .args(["--validator-key", &vkey.to_string_lossy()])
        .output()
        .expect("init");
    assert!(init.status.success(), "{init:?}");
    let peer = String::from_utf8(
        std::process::Command::new(exe)
            .args(["node", "peer-id", "--home", &home.to_string_lossy()])
            .output()
            .expect("peer id")
            .stdout,
    )
    .expect("utf8");
    let (port, p2p) = common::spare_ports(&net);
    let addr = format!("{p2p}/p2p/{}", peer.trim());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["node", "start", "--home", &home.to_string_lossy()])
        .args(["--rpc", &format!("127.0.0.1:{port}"), "--p2p", &p2p])
        .args(["--cluster-id", "4", "--log-level", "warn"]);
    for n in &net.nodes {
        cmd.args(["--cluster-peer", &format!("{}={}", n.member, n.p2p)]);
        cmd.args(["--bootnode", &n.p2p]);
    }
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _fourth = Kill(
        cmd.stderr(std::process::Stdio::null())
            .spawn()
            .expect("start"),
    );
    let rpc4 = format!("http://127.0.0.1:{port}");
    pyralog_testnet::devnet::wait_up(&rpc4, Duration::from_secs(30)).expect("fourth node up");
    std::thread::sleep(Duration::from_millis(500));

    // Through the CLI, on a follower (it forwards to the leader).
    let follower = net.nodes[(lead + 1) % 3].rpc.clone();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(exe)
            .args(["node", "cluster", "--rpc", &follower])
            .args(args)
            .output()
            .expect("cluster command");
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice::<Value>(&out.stdout).expect("json")
    };
    let s = cli(&["add-learner", "4", &addr]);
    assert!(
        s["learners"]
            .as_array()
            .expect("learners")
            .contains(&json!(4)),
        "{s}"
    );
    let s = cli(&["promote", "4"]);
    assert!(
        s["voters"].as_array().expect("voters").contains(&json!(4)),
        "{s}"
    );
    // Remove a follower that is not the new member.
    let gone = (lead + 2) % 3;
    let gone_id = net.nodes[gone].member;
    let s = cli(&["remove", &gone_id.to_string()]);
    let voters = s["voters"].as_array().expect("voters").clone();
    assert!(!voters.contains(&json!(gone_id)), "{s}");
    assert_eq!(voters.len(), 3, "{s}");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(
        acked.len() >= 5,
        "only {} writes during the changes",
        acked.len()
    );
    // The new member holds every write acknowledged while it joined.
    holds_all(&rpc4, &faucet, &acked, Duration::from_secs(60));
    // A bad change is refused with a reason.
    let out = std::process::Command::new(exe)
        .args(["node", "cluster", "--rpc", &follower, "add-learner", "5"])
        .arg("/ip4/127.0.0.1/tcp/1")
        .output()
        .expect("cluster command");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/p2p/"),
        "{out:?}"
    );
}

/// A node's count of a Prometheus counter.
fn counter(rpc: &str, name: &str) -> u64 {
    let mut r = agent()
        .get(&format!("{rpc}/metrics"))
        .call()
        .expect("metrics");
    let text = r.body_mut().read_to_string().expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("pyralog_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {rpc}/metrics"))
}

#[test]
fn pbft_over_clusters_of_three_never_double_signs_when_leaders_die_mid_round() {
    // Four validators, each a cluster of three. Cluster 0's members are
    // armed to die (abort, as SIGKILL would) at one step each of their
    // second turn that signs as leader: before its intents commit, after
    // they commit but before anything is sent, after it is sent.
    let mut net = common::up_plan(Engine::Pbft, 4, 3, 3, 8, 0);
    let points = ["before-intent", "after-intent", "after-send"];
    for (i, point) in points.iter().enumerate() {
        net.set_env(
            i,
            &[
                ("PYRALOG_FAULT_CRASH", point),
                ("PYRALOG_FAULT_CRASH_AFTER", "2"),
            ],
        );
        net.restart(i).expect("restart armed");
    }
    let faucet = net.faucet.clone();
    let via = net.nodes[3].rpc.clone();
    let mut fired = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last_push = Instant::now();
    // An unarmed leader taken down, and since when.
    let mut down: Option<(usize, Instant)> = None;
    let mut n = 0;
    while fired.len() < points.len() && Instant::now() < deadline {
        // Keep rounds coming: writes through another cluster.
        let _ = put(&via, &faucet, &format!("k{n}"), "v", false);
        n += 1;
        // It stays down until another member leads (back at once, it would
        // lead again in its term, openraft restoring its committed vote).
        if let Some((l, since)) = down
            && ((0..3).any(|i| {
                i != l && status(&net.nodes[i].rpc).is_some_and(|s| s["role"] == "leader")
            }) || since.elapsed() > Duration::from_secs(5))
        {
            down = None;
            net.restart(l).expect("restart");
        }
        for (i, point) in points.iter().enumerate() {
            if down.is_some_and(|(l, _)| l == i) {
                continue;
            }
            if net.exited(i) {
                // It died where it was told to (or was killed below); it
                // comes back unarmed.
                if !net.env.get(i).is_none_or(Vec::is_empty) {
                    fired.insert(*point);
                }
                net.set_env(i, &[]);
                net.restart(i).expect("restart");
            }
        }
        // An unarmed leader makes way, so the armed members get to lead.
        if down.is_none() && last_push.elapsed() > Duration::from_secs(2) {
            last_push = Instant::now();
            if let Some(l) =
                (0..3).find(|i| status(&net.nodes[*i].rpc).is_some_and(|s| s["role"] == "leader"))
                && net.env.get(l).is_none_or(Vec::is_empty)
            {
                net.kill(l).expect("kill the unarmed leader");
                down = Some((l, Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fired.len(), points.len(), "leaders died at {fired:?} only");
    if let Some((l, _)) = down {
        net.restart(l).expect("restart");
    }
    // The cluster still signs for its validator: a write through it is final.
    let deadline = Instant::now() + Duration::from_secs(60);
    while put(&net.nodes[0].rpc, &faucet, "after", "v", true).is_err() {
        assert!(Instant::now() < deadline, "cluster 0 never finalized again");
        std::thread::sleep(Duration::from_millis(500));
    }
    // No node ever received two conflicting statements signed by one key.
    for node in &net.nodes {
        assert_eq!(
            counter(&node.rpc, "equivocations_seen_total"),
            0,
            "{} saw a validator double-sign",
            node.name
        );
    }
}
