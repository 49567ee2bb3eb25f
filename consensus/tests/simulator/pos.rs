//! The pos engine under the same faults and Byzantine validators as PBFT,
//! with the validator set changing between epochs, and with each node's
//! ledger executing the blocks: equivocators are slashed and tombstoned
//! exactly once, honest validators never.

use pyralog_consensus::bft::{Member, ValidatorSet};
use pyralog_consensus::pbft::{Proposal, Proposers, RoundRobin, StakeWeighted};
use pyralog_ledger::{Address, Hash, Keypair, devkit};

use super::sim::{DOWNTIME_PPM, SLASH_PPM, Sim};
use super::{Mix, Outcome, Protocol, cluster_sweep, seeds_per_mix, sweep_with};

/// Seeds per pos mix by default (see `PBFT_SEEDS`).
pub(crate) const POS_SEEDS: u64 = 8;
/// Seeds of the pos cluster-failover mix by default: twice as many, since
/// what it tests (issue 6) needs rare interleavings.
const POS_CLUSTER_SEEDS: u64 = 16;

/// Genesis stakes of the four validators of most mixes (the seven of the
/// mixed one have 1000 each); see `sim::Sim::new`.
fn genesis_stake(key: &Address) -> u64 {
    let four = [1000, 1100, 1200, 1300];
    (0..4)
        .find(|i| devkit::key(500 + i).address() == *key)
        .map_or(1000, |i| four[i as usize])
}

/// What every pos run must show on every honest node's ledger.
fn check_slashing(out: &Outcome, replay: &str, mix: Mix) {
    // The forged evidence was executed and refused (it never slashed: below).
    for why in ["bad signature", "invalid proof"] {
        assert!(
            out.refused_evidence.get(why).is_some_and(|n| *n > 0),
            "no forged evidence refused for {why}: {:?}\nreplay: {replay}",
            out.refused_evidence
        );
    }
    for accused in &out.accused {
        assert!(
            out.byzantine_keys.contains(accused),
            "an honest validator {accused} was accused\nreplay: {replay}"
        );
    }
    for (node, all) in &out.standings {
        for s in all {
            let key = s.info.public_key;
            let honest = !out.byzantine_keys.contains(&key);
            if honest {
                assert!(
                    s.state.slashed == 0 && !s.state.tombstoned && !s.state.jailed,
                    "honest validator {key} punished on node {node}: {s:?}\nreplay: {replay}"
                );
                continue;
            }
            if out.accused.contains(&key) {
                // Exactly one slash for equivocation: one cut of its stake,
                // rounded up (after a downtime slash, if one came first).
                let stake = if mix == Mix::Mixed {
                    1000
                } else {
                    genesis_stake(&key)
                };
                let cut = |amount: u64, ppm: u64| (amount * ppm).div_ceil(1_000_000);
                let once = cut(stake, SLASH_PPM);
                let down = cut(stake, DOWNTIME_PPM);
                let after_downtime = down + cut(stake - down, SLASH_PPM);
                assert!(
                    s.state.tombstoned
                        && (s.state.slashed == once || s.state.slashed == after_downtime)
                        && s.info.stake == stake - s.state.slashed,
                    "equivocator {key} on node {node}: slashed {} (expected once: {once}), tombstoned {}\nreplay: {replay}",
                    s.state.slashed,
                    s.state.tombstoned
                );
            } else {
                // Found late or by a Byzantine node only: still at most one
                // slash for equivocation (and one for downtime).
                assert!(
                    s.state.slashed <= stake_cut_bound(&key, mix),
                    "{s:?}\nreplay: {replay}"
                );
            }
        }
    }
}

/// The most a Byzantine validator may lose: one equivocation slash and one
/// downtime slash.
fn stake_cut_bound(key: &Address, mix: Mix) -> u64 {
    let stake = if mix == Mix::Mixed {
        1000
    } else {
        genesis_stake(key)
    };
    (stake * SLASH_PPM).div_ceil(1_000_000) + (stake * DOWNTIME_PPM).div_ceil(1_000_000)
}

/// The validator set must change at boundaries: the newcomer joins, and
/// validator 0 leaves when it ran honestly (it then unstakes).
fn check_set_changes(out: &Outcome, replay: &str) {
    let newcomer = devkit::key(700).address();
    let leaver = devkit::key(500).address();
    assert!(
        out.epochs >= 2,
        "only {} epochs\nreplay: {replay}",
        out.epochs
    );
    assert!(
        out.sets.iter().any(|s| s.contains(&newcomer)),
        "the newcomer never joined: {:?}\nreplay: {replay}",
        out.sets
    );
    if out.honest_keys.contains(&leaver) {
        assert!(
            out.sets
                .iter()
                .any(|s| s.contains(&newcomer) && !s.contains(&leaver)),
            "validator 0 never left\nreplay: {replay}"
        );
    }
}

/// Runs the pos sweep of `mix`; returns how many runs found an equivocator,
/// and how many duplicate evidence transactions the ledgers refused.
fn pos_sweep(mix: Mix) -> (u64, u64) {
    let mut caught = 0;
    let mut duplicates = 0;
    sweep_with(
        mix,
        Protocol::Pos,
        seeds_per_mix(POS_SEEDS),
        |out, replay| {
            check_slashing(out, replay, mix);
            check_set_changes(out, replay);
            caught += u64::from(!out.accused.is_empty());
            duplicates += out
                .refused_evidence
                .get("duplicate evidence")
                .copied()
                .unwrap_or(0);
        },
    );
    println!(
        "pos {}: equivocators caught in {caught} runs; {duplicates} duplicate evidence transactions refused",
        mix.name()
    );
    (caught, duplicates)
}

#[test]
fn pos_network_faults() {
    pos_sweep(Mix::Network);
}

#[test]
fn pos_partitions() {
    pos_sweep(Mix::Partition);
}

#[test]
fn pos_crash_and_restart() {
    pos_sweep(Mix::Crash);
}

#[test]
fn pos_twins_are_slashed_and_tombstoned_exactly_once() {
    let (caught, duplicates) = pos_sweep(Mix::Twins);
    // Every honest node that saw the pair reported it: the reports after the
    // first were refused as duplicates, and the checks above saw one slash.
    assert!(duplicates > 0, "no duplicate evidence was refused");
    assert!(
        caught * 2 > seeds_per_mix(POS_SEEDS),
        "twins caught in {caught} runs only"
    );
}

#[test]
fn pos_equivocating_proposer() {
    let (caught, _) = pos_sweep(Mix::Equivocator);
    assert!(caught > 0, "no equivocator caught");
}

/// A silent validator's commits are in no proposal's last commit: it misses
/// every counted block, and the ledger jails it for downtime with one small
/// slash (honest validators, checked in every run, are never jailed).
#[test]
fn pos_silent_validator_is_jailed_for_downtime() {
    let mut jailed = 0;
    sweep_with(
        Mix::Silent,
        Protocol::Pos,
        seeds_per_mix(POS_SEEDS),
        |out, replay| {
            check_slashing(out, replay, Mix::Silent);
            check_set_changes(out, replay);
            let Some((_, all)) = out.standings.first() else {
                return;
            };
            for s in all {
                if out.byzantine_keys.contains(&s.info.public_key) && s.state.jailed {
                    let stake = genesis_stake(&s.info.public_key);
                    let cut = (stake * DOWNTIME_PPM).div_ceil(1_000_000);
                    assert!(
                        !s.state.tombstoned && s.state.slashed == cut,
                        "downtime: {s:?}\nreplay: {replay}"
                    );
                    jailed += 1;
                }
            }
        },
    );
    println!("pos silent: jailed for downtime in {jailed} runs");
    assert!(
        jailed * 2 > seeds_per_mix(POS_SEEDS),
        "silent validator jailed in {jailed} runs only"
    );
}

#[test]
fn pos_garbage_sender() {
    pos_sweep(Mix::Garbage);
}

#[test]
fn pos_seven_validators_two_byzantine() {
    pos_sweep(Mix::Mixed);
}

/// Issue 6: every validator is a cluster whose leader is killed mid-step
/// again and again, while the set changes at epoch boundaries; no honest
/// validator is ever accused, slashed or jailed, and no key double-signs.
#[test]
fn pos_cluster_failover() {
    cluster_sweep(Protocol::Pos, POS_CLUSTER_SEEDS, |out, replay| {
        check_slashing(out, replay, Mix::ClusterFailover);
        check_set_changes(out, replay);
    });
}

/// Without the intent check, the same runs must get an honest validator
/// accused of equivocation (and slashed when the evidence lands in a block):
/// the slashing checks above can fail.
#[test]
fn pos_without_signing_intents_honest_validators_are_slashed() {
    let (mut accused, mut slashed) = (0, 0);
    for seed in 0..16u64 {
        let out = Sim::new(seed, Mix::ClusterFailover, Protocol::Pos, false)
            .without_intent_guard()
            .run();
        let honest = |key: &Address| !out.byzantine_keys.contains(key);
        accused += u64::from(out.accused.iter().any(honest));
        slashed += u64::from(out.standings.iter().any(|(_, all)| {
            all.iter()
                .any(|s| honest(&s.info.public_key) && s.state.slashed > 0 && s.state.tombstoned)
        }));
    }
    println!("without intents: honest validators accused in {accused} runs, slashed in {slashed}");
    assert!(
        slashed > 0,
        "no honest validator was slashed without intents"
    );
}

/// The chi-square statistic of `observed` counts against `shares` of `n`.
fn chi_square(observed: &[u64], shares: &[u64]) -> f64 {
    let total: u64 = shares.iter().sum();
    let n: u64 = observed.iter().sum();
    observed
        .iter()
        .zip(shares)
        .map(|(o, s)| {
            let expected = n as f64 * *s as f64 / total as f64;
            (*o as f64 - expected).powi(2) / expected
        })
        .sum()
}

/// Proposers over `rounds` heights chained as the engine chains them: each
/// height's draw is seeded by the previous proposal's digest, the height and
/// the round (one height in five needs a second round).
fn proposer_counts<P: Proposers>(p: &P, set: &ValidatorSet, rounds: u64) -> Vec<u64> {
    let mut counts = vec![0u64; set.len()];
    let mut parent = Hash::ZERO;
    for height in 1..=rounds {
        let round = u64::from(height % 5 == 0);
        let proposer = p.proposer(set, round, height, &parent);
        let i = set.index_of(&proposer).expect("a member");
        counts[i] += 1;
        parent = Proposal::new(height, height * 500, proposer, Vec::new()).digest();
    }
    counts
}

#[test]
fn proposals_match_stake_shares_over_ten_thousand_rounds() {
    let stakes = [1000u64, 2000, 3000, 4000, 10_000];
    let keys: Vec<Keypair> = (0..5).map(|i| devkit::key(800 + i)).collect();
    let set = ValidatorSet::new(
        keys.iter()
            .zip(stakes)
            .map(|(k, power)| Member {
                address: k.address(),
                power,
            })
            .collect(),
    )
    .expect("set");
    // 4 degrees of freedom; the critical value at p = 0.01.
    const CRITICAL: f64 = 13.277;
    let pos = StakeWeighted {
        epoch_seed: Hash::ZERO,
    };
    let counts = proposer_counts(&pos, &set, 10_000);
    let chi = chi_square(&counts, &stakes);
    println!("proposals {counts:?} for stakes {stakes:?}: chi-square {chi:.2}");
    assert!(
        chi < CRITICAL,
        "chi-square {chi:.2} >= {CRITICAL}: {counts:?}"
    );
    // The test has teeth: proposers that ignore stake fail it.
    let equal = proposer_counts(&RoundRobin, &set, 10_000);
    assert!(chi_square(&equal, &stakes) > CRITICAL);
}
