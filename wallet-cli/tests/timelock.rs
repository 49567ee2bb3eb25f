//! `pyralog timelock ...`, run as the real binary: seal, open, resume, tamper,
//! and parameters refused before any work. Puzzles here are 1024-bit with a
//! stated rate, so each test takes well under a second.

use std::path::Path;
use std::process::{Command, Output};

use pyralog_consensus::timelock::{Bounds, Solver};
use pyralog_ledger::timelock::SealedValue;
use pyralog_ledger::{Decode, Encode};
use serde_json::Value;

fn pyralog(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyralog"))
        .current_dir(dir)
        .env("PYRALOG_HOME", dir.join("home"))
        .args(args)
        .output()
        .expect("run pyralog")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// Seals "the data" for 1 s at 20,000 squarings/s: t = 20,000.
fn seal(dir: &Path) -> Value {
    std::fs::write(dir.join("data.txt"), b"the data").expect("write");
    let out = ok(pyralog(
        dir,
        &[
            "-o",
            "json",
            "timelock",
            "seal",
            "--delay",
            "1s",
            "--rate",
            "20000",
            "--bits",
            "1024",
            "--in",
            "data.txt",
            "--out",
            "data.sealed",
        ],
    ));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn seal_then_open_round_trips_through_files() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let sealed = seal(d);
    assert_eq!(sealed["squarings"], 20_000);
    assert_eq!(sealed["rate_measured"], false);
    assert_eq!(sealed["bits"], 1024);
    // To a file.
    ok(pyralog(
        d,
        &[
            "timelock",
            "open",
            "--in",
            "data.sealed",
            "--out",
            "back.txt",
        ],
    ));
    assert_eq!(
        std::fs::read(d.join("back.txt")).expect("read"),
        b"the data"
    );
    // To stdout, raw.
    let out = ok(pyralog(d, &["timelock", "open", "--in", "data.sealed"]));
    assert_eq!(out.stdout, b"the data");
    assert!(
        !d.join("data.sealed.progress").exists(),
        "side file removed"
    );
}

#[test]
fn open_resumes_from_the_progress_file() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    seal(d);
    // Leave a checkpoint part way, as an interrupted run would.
    let sealed = SealedValue::from_bytes(&std::fs::read(d.join("data.sealed")).expect("read"))
        .expect("decode");
    let bounds = Bounds::STANDARD;
    let mut solver = Solver::new(&sealed.puzzle, &bounds).expect("solver");
    solver.step(12_345);
    std::fs::write(
        d.join("data.sealed.progress"),
        solver.checkpoint().to_bytes(),
    )
    .expect("write");
    let out = ok(pyralog(
        d,
        &["-o", "json", "timelock", "open", "--in", "data.sealed"],
    ));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["resumed_at"], 12_345);
    assert_eq!(v["data_hex"], hex::encode(b"the data"));

    // A corrupt checkpoint is named, with what to do about it.
    std::fs::write(d.join("data.sealed.progress"), b"garbage").expect("write");
    let err = fails(pyralog(d, &["timelock", "open", "--in", "data.sealed"]));
    assert!(
        err.contains("cannot resume from data.sealed.progress (delete it"),
        "{err}"
    );
    ok(pyralog(
        d,
        &["timelock", "open", "--in", "data.sealed", "--restart"],
    ));
}

#[test]
fn a_tampered_file_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    seal(d);
    let good = std::fs::read(d.join("data.sealed")).expect("read");
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(d.join("bad.sealed"), &bad).expect("write");
    let err = fails(pyralog(d, &["timelock", "open", "--in", "bad.sealed"]));
    assert!(err.contains("decryption failed"), "{err}");
    // The commitment: 4 + 1 + (4 + 128) + (4 + 1) + 8 bytes in.
    let mut bad = good.clone();
    bad[150] ^= 1;
    std::fs::write(d.join("bad.sealed"), &bad).expect("write");
    let err = fails(pyralog(d, &["timelock", "open", "--in", "bad.sealed"]));
    assert!(err.contains("commitment mismatch"), "{err}");
    std::fs::write(d.join("bad.sealed"), b"hello").expect("write");
    let err = fails(pyralog(d, &["timelock", "open", "--in", "bad.sealed"]));
    assert!(err.contains("not a sealed value"), "{err}");
}

#[test]
fn bad_parameters_are_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    std::fs::write(d.join("data.txt"), b"x").expect("write");
    let run = |extra: &[&str]| {
        let mut args = vec!["timelock", "seal", "--in", "data.txt", "--out", "o.sealed"];
        args.extend_from_slice(extra);
        fails(pyralog(d, &args))
    };
    assert!(run(&["--delay", "0s"]).contains("locks nothing"));
    assert!(run(&["--delay", "1s", "--bits", "512"]).contains("outside the allowed 1024..=4096"));
    assert!(run(&["--delay", "1s", "--bits", "8192"]).contains("outside the allowed"));
    assert!(run(&["--delay", "1s", "--bits", "2047"]).contains("must be even"));
    assert!(run(&["--delay", "100years", "--rate", "1000000"]).contains("outside the allowed"));
    assert!(run(&["--delay", "1s", "--rate", "0"]).contains("at least 1"));
    assert!(!d.join("o.sealed").exists());
}
