//! `pyralog query` refusals that need no node (the devnet test in
//! `testnet/tests/sql.rs` covers the answers).

use std::process::Command;

#[test]
fn an_unreachable_node_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_pyralog"))
        .args(["--node", "http://127.0.0.1:9", "query", "SELECT 1"])
        .env_remove("PYRALOG_NODE")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node unreachable at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unknown_format_is_refused_by_the_parser() {
    let out = Command::new(env!("CARGO_BIN_EXE_pyralog"))
        .args(["query", "--format", "xml", "SELECT 1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("xml"));
}
