//! The deterministic simulator: the real PBFT and pos engines under virtual
//! time, on a
//! seeded network that delays, drops, duplicates, reorders and partitions
//! messages, with validators that crash and restart from what they persisted,
//! and Byzantine validators built from the real engine (twins, an equivocating
//! primary, a silent validator, one that sends garbage).
//!
//! Every run checks:
//! - **safety**: no two honest validators commit different blocks at one height;
//! - **liveness**: after the faults heal (with at most f faulty), every honest
//!   validator keeps committing;
//! - **determinism**: a seed run twice gives the same event digest.
//!
//! Pos runs (`pos.rs`) add, on each node's ledger state executed with the real
//! rules: the validator set changes at epoch boundaries (a newcomer registers
//! and stakes, validator 0 unstakes), every equivocating validator found is
//! slashed and tombstoned exactly once, and no honest validator is slashed,
//! also not by forged evidence submitted mid-run (a tampered signature, two
//! votes for different heights).
//!
//! A failing run prints the command that replays it. A longer run:
//! `PYRALOG_SIM_SEEDS=2000 cargo test --release -p pyralog-consensus --test simulator`
//! (seeds per fault mix; the default is 63 for PBFT and 8 for pos).
//!
//! # Layout
//!
//! - `sim.rs`: the machinery (network, events, nodes, Byzantine behaviours,
//!   the pos ledger state).
//! - `main.rs`: the PBFT sweeps and the replay entry point.
//! - `pos.rs`: the pos sweeps, slashing checks, and the proposer-share test.

mod pos;
mod sim;

use sim::{Mix, Outcome, Protocol, Sim};

fn replay_command(seed: u64, mix: Mix, protocol: Protocol) -> String {
    let name = match protocol {
        Protocol::Pbft => "pbft",
        Protocol::Pos => "pos",
    };
    format!(
        "PYRALOG_SIM_SEED={seed} PYRALOG_SIM_MIX={} PYRALOG_SIM_ENGINE={name} cargo test -p pyralog-consensus --test simulator replay -- --ignored --nocapture",
        mix.name()
    )
}

fn seeds_per_mix(default: u64) -> u64 {
    std::env::var("PYRALOG_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `seeds` seeds of `mix`, checking safety and liveness on every run and
/// determinism on every eighth; `check` adds the protocol's own checks.
fn sweep_with(mix: Mix, protocol: Protocol, seeds: u64, mut check: impl FnMut(&Outcome, &str)) {
    let mut totals = (0u64, 0u64, 0u64);
    for seed in 0..seeds {
        let seed = seed.wrapping_mul(7919).wrapping_add(mix as u64 * 1_000_003);
        let out = Sim::new(seed, mix, protocol, false).run();
        let replay = replay_command(seed, mix, protocol);
        assert!(
            out.safety.is_empty(),
            "safety violated: {:?}\nreplay: {replay}",
            out.safety
        );
        assert!(
            out.liveness.is_empty(),
            "liveness violated: {:?}\nreplay: {replay}",
            out.liveness
        );
        assert!(out.commits > 0, "nothing committed\nreplay: {replay}");
        check(&out, &replay);
        if seed % 8 == 0 {
            let again = Sim::new(seed, mix, protocol, false).run();
            assert_eq!(
                out.digest, again.digest,
                "two runs of one seed differ\nreplay: {replay}"
            );
        }
        totals.0 += out.commits;
        totals.1 += out.view_changes;
        totals.2 += out.rejections;
    }
    println!(
        "{:?} {}: {} seeds, {} commits, {} view entries, {} rejections",
        protocol,
        mix.name(),
        seeds,
        totals.0,
        totals.1,
        totals.2
    );
}

/// Seeds per PBFT mix by default (the pos mixes run `pos::POS_SEEDS`): 63 for
/// each of the eight mixes makes 504 per `cargo test` (issue 4).
const PBFT_SEEDS: u64 = 63;

fn sweep(mix: Mix) {
    sweep_with(mix, Protocol::Pbft, seeds_per_mix(PBFT_SEEDS), |_, _| {});
}

#[test]
fn network_faults() {
    sweep(Mix::Network);
}

#[test]
fn partitions() {
    sweep(Mix::Partition);
}

#[test]
fn crash_and_restart() {
    sweep(Mix::Crash);
}

#[test]
fn twins() {
    sweep(Mix::Twins);
}

#[test]
fn equivocating_primary() {
    sweep(Mix::Equivocator);
}

#[test]
fn silent_validator() {
    sweep(Mix::Silent);
}

#[test]
fn garbage_sender() {
    sweep(Mix::Garbage);
}

#[test]
fn seven_validators_two_byzantine() {
    sweep(Mix::Mixed);
}

/// The simulator must catch a broken quorum rule: with quorums of 2f instead
/// of 2f+1, a split network commits two different blocks at one height.
#[test]
fn a_broken_quorum_rule_is_caught() {
    let violations = (0..20u64)
        .filter(|seed| {
            !Sim::new(*seed, Mix::SplitBrain, Protocol::Pbft, true)
                .run()
                .safety
                .is_empty()
        })
        .count();
    assert!(violations > 0, "no seed caught the 2f quorum");
    // The same runs with the correct rule are safe.
    for seed in 0..20u64 {
        let out = Sim::new(seed, Mix::SplitBrain, Protocol::Pbft, false).run();
        assert!(out.safety.is_empty(), "{:?}", out.safety);
    }
}

/// Replays one run: `PYRALOG_SIM_SEED=N PYRALOG_SIM_MIX=NAME`
/// (`PYRALOG_SIM_ENGINE=pos` for a pos run).
#[test]
#[ignore = "replays the seed named in the environment"]
fn replay() {
    let seed: u64 = std::env::var("PYRALOG_SIM_SEED")
        .expect("set PYRALOG_SIM_SEED")
        .parse()
        .expect("a number");
    let mix = std::env::var("PYRALOG_SIM_MIX")
        .ok()
        .and_then(|m| Mix::parse(&m))
        .expect("set PYRALOG_SIM_MIX to a mix name");
    let protocol = match std::env::var("PYRALOG_SIM_ENGINE").as_deref() {
        Ok("pos") => Protocol::Pos,
        _ => Protocol::Pbft,
    };
    let out = Sim::new(seed, mix, protocol, false).run();
    println!("{out:#?}");
    assert!(out.safety.is_empty() && out.liveness.is_empty());
}
