//! `pyralog-testnet genesis`, run as a user would, and the public genesis.

use std::process::Command;

use pyralog_ledger::Genesis;

fn testnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pyralog-testnet"))
}

#[test]
fn writes_a_valid_genesis_and_private_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("genesis.json");
    let keys = dir.path().join("keys");
    let run = testnet()
        .args([
            "genesis",
            "--validators",
            "4",
            "--engine",
            "pbft",
            "-o",
            "json",
            "--out",
        ])
        .arg(&out)
        .arg("--keys-dir")
        .arg(&keys)
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("one JSON document on stdout");
    let g = Genesis::load(&out).expect("the written genesis validates");
    assert_eq!(g.validators.len(), 4);
    assert_eq!(summary["genesis_hash"], g.hash().to_hex());
    assert_eq!(summary["engine"], "pbft");
    for name in ["validator-0.key", "validator-3.key", "faucet.key"] {
        let meta = std::fs::metadata(keys.join(name)).expect("key file");
        #[cfg(unix)]
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        let _ = meta;
    }
    // The faucet's key file holds the key of the funded account.
    let seed = std::fs::read_to_string(keys.join("faucet.key")).expect("read");
    let seed = pyralog_ledger::Hash::from_hex(seed.trim()).expect("hex seed");
    let faucet = pyralog_ledger::Keypair::from_seed(&seed.0).address();
    assert_eq!(g.accounts, vec![(faucet, 1_000_000_000_000)]);

    // Never overwrites a genesis or keys.
    let again = testnet()
        .args(["genesis", "--out"])
        .arg(&out)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; pass --force"));
    let again = testnet()
        .args(["genesis", "--force", "--out"])
        .arg(&out)
        .arg("--keys-dir")
        .arg(&keys)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("keys are never overwritten"));
}

#[test]
fn refuses_a_pbft_network_too_small_to_tolerate_a_fault() {
    let dir = tempfile::tempdir().expect("dir");
    let run = testnet()
        .args(["genesis", "--validators", "3", "--engine", "pbft", "--out"])
        .arg(dir.path().join("g.json"))
        .output()
        .expect("run");
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("pbft needs at least 4 validators"), "{err}");
    assert!(!dir.path().join("g.json").exists());
}

#[test]
fn the_public_testnet_genesis_is_valid_and_frozen() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../genesis.json");
    let g = Genesis::load(&path).expect("genesis.json validates");
    assert_eq!(g.chain_id.as_str(), "pyralog-testnet-2");
    assert_eq!(
        g.engine,
        pyralog_ledger::Engine::Pos,
        "the public testnet runs proof of stake"
    );
    assert_eq!(g.validators.len(), 4);
    // A change to the public genesis is a new network: update deliberately.
    assert_eq!(
        g.hash().to_hex(),
        "e7d2d7983f038f0aa80f948a9c2a870fddbea3f07a00213f6d8f669b46a9a42e"
    );
}
