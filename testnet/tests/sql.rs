//! End-to-end SQL: `pyralog query` against every node of a running PBFT
//! devnet, and the same query on two nodes at the same height gives the same
//! rows and the same state root.
//!
//! It runs the real wallet binary, `pyralog`, from the same target directory
//! (built by `cargo test --workspace`, or `cargo build -p pyralog-wallet`).

mod common;

use common::Running;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pyralog_ledger::{Keypair, devkit};
use pyralog_testnet::devnet::{get, transfer};
use serde_json::Value;

/// Port slot 9 (see `devnet.rs` for the scheme: ten ports per slot).
const SLOT: u16 = 9;

fn pbft_devnet() -> Running {
    common::up(pyralog_ledger::Engine::Pbft, 4, SLOT, 4)
}

fn wallet() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_pyralog-testnet"))
        .with_file_name(format!("pyralog{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} is missing: build the wallet (cargo build -p pyralog-wallet) or run cargo test --workspace",
        exe.display()
    );
    exe
}

fn pyralog(rpc: &str, args: &[&str]) -> Output {
    Command::new(wallet())
        .arg("--node")
        .arg(rpc)
        .args(args)
        .env_remove("PYRALOG_NODE")
        .output()
        .expect("run pyralog")
}

fn query_json(rpc: &str, sql: &str) -> Value {
    let out = pyralog(rpc, &["-o", "json", "query", sql]);
    assert!(
        out.status.success(),
        "pyralog query on {rpc}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn balance(rpc: &str, who: &Keypair) -> u64 {
    get(rpc, &format!("/account/{}", who.address()))
        .ok()
        .and_then(|a| a["balance"].as_u64())
        .unwrap_or(0)
}

#[test]
fn pyralog_query_answers_from_every_node_and_agrees_at_one_height() {
    let r = pbft_devnet();
    let net = &r.net;
    let alice = devkit::key(4242);
    let bob = devkit::key(4343);
    for (who, amount) in [(&alice, 500), (&bob, 300), (&alice, 25)] {
        let (code, answer) =
            transfer(&net.nodes[0].rpc, &net.faucet, who.address(), amount).expect("transfer");
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["status"], "final", "{answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while net.nodes.iter().any(|n| balance(&n.rpc, &alice) != 525) {
        assert!(Instant::now() < deadline, "the transfers reach every node");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every node answers, as a table on the wallet's default output.
    let sql = format!(
        "SELECT address, balance FROM accounts WHERE address IN ('{}', '{}') ORDER BY balance DESC",
        alice.address(),
        bob.address()
    );
    for n in &net.nodes {
        let out = pyralog(&n.rpc, &["query", &sql]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("address ") && lines[0].ends_with("| balance"),
            "{text}"
        );
        assert!(
            lines[2].starts_with(&alice.address().to_human()) && lines[2].ends_with("| 525"),
            "{text}"
        );
        assert!(
            lines[3].starts_with(&bob.address().to_human()) && lines[3].ends_with("| 300"),
            "{text}"
        );
        assert!(lines[4].starts_with("(2 rows; height "), "{text}");
    }

    // The same query on two nodes at the same height: the same rows and root.
    let q = "SELECT b.height, b.hash, b.state_root, count(t.hash) AS txs \
             FROM blocks b LEFT JOIN transactions t ON t.height = b.height \
             GROUP BY b.height, b.hash, b.state_root ORDER BY b.height";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (a, b) = (
            query_json(&net.nodes[1].rpc, q),
            query_json(&net.nodes[3].rpc, q),
        );
        if a["height"] == b["height"] {
            assert_eq!(a["state_root"], b["state_root"]);
            assert_eq!(a["rows"], b["rows"]);
            assert!(a["height"].as_u64().is_some_and(|h| h >= 1));
            let moved: u64 = a["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| r[3].as_u64().unwrap_or(0))
                .sum();
            // The three transfers, and the write the devnet makes when it starts.
            assert!(moved >= 3, "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "two nodes never at one height");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Whole-state scans go through each node's column cache: asked again,
    // a node answers from it, and still as another node does at that height.
    let q = "SELECT count(*), sum(balance), sum(stake) FROM accounts";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        query_json(&net.nodes[0].rpc, q);
        let (again, other) = (
            query_json(&net.nodes[0].rpc, q),
            query_json(&net.nodes[1].rpc, q),
        );
        if again["rows_cached"].as_u64() > Some(0) && again["height"] == other["height"] {
            assert_eq!(again["state_root"], other["state_root"]);
            assert_eq!(again["rows"], other["rows"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cached answer at a shared height: {again} {other}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let to_alice = query_json(
        &net.nodes[2].rpc,
        &format!(
            "SELECT count(*), sum(amount) FROM transactions WHERE kind = 'transfer' AND recipient = '{}'",
            alice.address()
        ),
    );
    assert_eq!(to_alice["rows"], serde_json::json!([[2, 525]]));

    // CSV and Arrow by flag; a write is refused with the node's reason.
    let out = pyralog(
        &net.nodes[2].rpc,
        &[
            "query",
            "--format",
            "csv",
            "SELECT id, stake FROM validators ORDER BY id",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).expect("utf-8");
    assert!(csv.starts_with("id,stake\r\n"), "{csv}");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let file = r.dir().join("answer.arrow");
    let out = pyralog(
        &net.nodes[2].rpc,
        &[
            "query",
            "--format",
            "arrow",
            "--out",
            file.to_str().expect("path"),
            "SELECT * FROM tip",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&file).expect("arrow file");
    assert_eq!(
        &bytes[..4],
        &[0xFF; 4],
        "an Arrow IPC stream begins with a continuation marker"
    );
    let out = pyralog(&net.nodes[0].rpc, &["query", "DELETE FROM accounts"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("read_only") && err.contains("read-only"),
        "{err}"
    );
    // The node still serves.
    assert_eq!(
        query_json(&net.nodes[0].rpc, "SELECT 1 AS one")["rows"],
        serde_json::json!([[1]])
    );
}
