//! The `pos` engine's exact effects: proposers by stake per height, votes by
//! power, epochs, evidence, and one test per refusal.

use std::sync::Arc;

use super::*;
use crate::bft::{Member, Statement};
use crate::pbft::{LastCommit, Message, Proposal, Proposers, Signed};
use pyralog_ledger::block::{VerifiedTx, verify_tx};
use pyralog_ledger::{Domain, devkit};

const NOW: u64 = 1_000_000;
const LENGTH: u64 = 4;

fn chain() -> ChainId {
    "pos-unit".parse().expect("chain id")
}

fn keys() -> Vec<Keypair> {
    (0..4).map(|i| devkit::key(40 + i)).collect()
}

fn addr(i: usize) -> Address {
    keys()[i].address()
}

fn index(a: &Address) -> usize {
    keys()
        .iter()
        .position(|k| k.address() == *a)
        .expect("a validator")
}

/// Powers 1, 2, 3, 4: any three hold a quorum (> 6.67 of 10) except {0, 1, 2}.
fn set() -> ValidatorSet {
    ValidatorSet::new(
        keys()
            .iter()
            .zip(1..)
            .map(|(k, power)| Member {
                address: k.address(),
                power,
            })
            .collect(),
    )
    .expect("set")
}

fn cfg() -> Config {
    Config {
        checkpoint_interval: 2,
        window: 8,
        max_in_flight: 2,
        view_timeout_ms: 100,
        retransmit_ms: 50,
        sync_ms: 50,
        batch_delay_ms: 0,
        max_block_txs: 2,
        ..Config::default()
    }
}

fn replica(i: usize) -> Pos {
    Pos::new(
        chain(),
        0,
        LENGTH,
        set(),
        Hash::ZERO,
        Some(keys()[i].clone()),
        cfg(),
    )
}

fn tx(n: u64) -> VerifiedTx {
    let k = devkit::key(100);
    let t = devkit::tx(
        &chain(),
        &k,
        n,
        0,
        devkit::put(&k, b"k", &n.to_le_bytes()),
        0,
    );
    verify_tx(t).expect("valid tx")
}

/// The drawn proposer of `seq` in view 0 after `parent`.
fn drawn(seq: u64, parent: &Hash) -> usize {
    let p = StakeWeighted {
        epoch_seed: Hash::ZERO,
    }
    .proposer(&set(), 0, seq, parent);
    index(&p)
}

fn pre_prepare(i: usize, seq: u64, txs: Vec<VerifiedTx>) -> (Arc<Proposal>, Signed) {
    let p = Arc::new(Proposal::new(seq, NOW, addr(i), txs));
    let m = Signed::sign(
        &chain(),
        &keys()[i],
        Message::PrePrepare {
            view: 0,
            proposal: p.clone(),
        },
    );
    (p, m)
}

fn message(r: &mut Pos, m: Signed) -> Vec<Effect> {
    r.handle(NOW, Input::Bft(pbft::Input::Message(m)))
}

fn rejected(effects: &[Effect]) -> Vec<Reject> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn evidence_of(effects: &[Effect]) -> Vec<Evidence> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Evidence(ev) => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

/// Delivers every broadcast among `rs` (and executes commits) until quiet;
/// returns the blocks each replica committed.
fn run(rs: &mut [Pos], mut queue: Vec<(usize, Effect)>) -> Vec<Vec<u64>> {
    let mut committed = vec![Vec::new(); rs.len()];
    while let Some((from, e)) = (!queue.is_empty()).then(|| queue.remove(0)) {
        match e {
            Effect::Broadcast(m) => {
                for (to, r) in rs.iter_mut().enumerate() {
                    if to != from {
                        for e in message(r, m.clone()) {
                            queue.push((to, e));
                        }
                    }
                }
            }
            Effect::Commit(b) => {
                let seq = b.proposal.seq();
                committed[from].push(seq);
                let executed = pbft::Input::Executed {
                    seq,
                    state_root: Hash::of(Domain::Consensus, &seq.to_le_bytes()),
                };
                for e in rs[from].handle(NOW, Input::Bft(executed)) {
                    queue.push((from, e));
                }
            }
            _ => {}
        }
    }
    committed
}

#[test]
fn epochs_span_their_heights_and_the_genesis_opens_the_first() {
    let z = Hash::ZERO;
    assert_eq!(
        epoch_span(0, 4, z),
        Span {
            base: 0,
            base_digest: z,
            limit: 3
        }
    );
    assert_eq!(
        epoch_span(1, 4, z),
        Span {
            base: 3,
            base_digest: z,
            limit: 7
        }
    );
    assert_eq!(epoch_span(5, 1, z).base, 4);
}

#[test]
fn the_drawn_proposer_proposes_and_the_others_only_pool() {
    let p = drawn(1, &Hash::ZERO);
    let mut r = replica(p);
    let t = tx(1);
    let effects = r.handle(NOW, Input::Bft(pbft::Input::Submit(t.clone())));
    let (_, m) = pre_prepare(p, 1, vec![t.clone()]);
    assert_eq!(
        effects,
        vec![
            Effect::Persist(Record::Signed(m.message.statement())),
            Effect::Broadcast(m),
        ]
    );
    let other = (p + 1) % 4;
    let mut r = replica(other);
    assert_eq!(r.handle(NOW, Input::Bft(pbft::Input::Submit(t))), vec![]);
    assert_eq!(r.bft().pool_len(), 1);
}

#[test]
fn a_pre_prepare_from_a_validator_not_drawn_is_refused() {
    let p = drawn(1, &Hash::ZERO);
    let wrong = (p + 1) % 4;
    let backup = (p + 2) % 4;
    let mut r = replica(backup);
    let (_, m) = pre_prepare(wrong, 1, vec![tx(1)]);
    assert_eq!(
        rejected(&message(&mut r, m)),
        vec![Reject::NotPrimary {
            view: 0,
            primary: addr(p)
        }]
    );
}

#[test]
fn a_pre_prepare_before_its_parent_waits_and_is_accepted_after_it() {
    let p1 = drawn(1, &Hash::ZERO);
    let (prop1, m1) = pre_prepare(p1, 1, vec![tx(1)]);
    let p2 = drawn(2, &prop1.digest());
    let (prop2, m2) = pre_prepare(p2, 2, vec![tx(2)]);
    let backup = (0..4).find(|i| *i != p1 && *i != p2).expect("a backup");
    let mut r = replica(backup);
    let early = message(&mut r, m2);
    assert_eq!(rejected(&early), vec![Reject::UnknownParent { seq: 2 }]);
    assert!(!Reject::UnknownParent { seq: 2 }.is_misbehaviour());
    let effects = message(&mut r, m1);
    // It prepares 1, then the one kept aside: 2.
    let prepares: Vec<(u64, Hash)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(Signed {
                message: Message::Prepare { seq, digest, .. },
                ..
            }) => Some((*seq, *digest)),
            _ => None,
        })
        .collect();
    assert_eq!(prepares, vec![(1, prop1.digest()), (2, prop2.digest())]);
}

#[test]
fn four_replicas_commit_by_power_and_stop_at_the_epochs_last_height() {
    let mut rs: Vec<Pos> = (0..4).map(replica).collect();
    let mut queue = Vec::new();
    for n in 0..12 {
        for (i, r) in rs.iter_mut().enumerate() {
            for e in r.handle(NOW, Input::Bft(pbft::Input::Submit(tx(n)))) {
                queue.push((i, e));
            }
        }
    }
    let mut committed = run(&mut rs, queue);
    // Keep proposing until the epoch is done.
    for _ in 0..10 {
        let mut queue = Vec::new();
        for (i, r) in rs.iter_mut().enumerate() {
            for e in r.handle(NOW, Input::Bft(pbft::Input::Tick)) {
                queue.push((i, e));
            }
        }
        for (i, c) in run(&mut rs, queue).into_iter().enumerate() {
            committed[i].extend(c);
        }
    }
    for c in &committed {
        assert_eq!(c, &vec![1, 2, 3], "heights 1..=3 are epoch 0");
    }
    for r in &rs {
        assert!(r.awaits_next_epoch());
        assert_eq!(r.bft().committed(), 3);
        // Waiting transactions stay; nothing is proposed past the epoch.
        assert!(r.bft().pool_len() > 0);
        assert!(!r.bft().is_changing_view());
    }
}

#[test]
fn the_next_epoch_starts_only_after_the_last_block_with_the_new_set() {
    let mut r = replica(0);
    let bigger = ValidatorSet::equal((0..7).map(|i| devkit::key(40 + i).address())).expect("set");
    // Too early: the epoch's last block is not delivered.
    assert_eq!(
        r.handle(
            NOW,
            Input::NextEpoch {
                epoch: 1,
                validators: bigger.clone()
            }
        ),
        vec![]
    );
    assert_eq!(r.epoch(), 0);
    // Deliver blocks 1..=3 by their certificates, as a replica that syncs.
    let mut rs: Vec<Pos> = (0..4).map(replica).collect();
    let mut queue = Vec::new();
    for n in 0..12 {
        for (i, x) in rs.iter_mut().enumerate() {
            for e in x.handle(NOW, Input::Bft(pbft::Input::Submit(tx(n)))) {
                queue.push((i, e));
            }
        }
    }
    run(&mut rs, queue);
    let r = &mut rs[0];
    assert!(r.awaits_next_epoch());
    let last = r.bft().last_digest().expect("digest");
    // A stale or skipping epoch number is ignored.
    for epoch in [0, 2] {
        let v = bigger.clone();
        assert_eq!(
            r.handle(
                NOW,
                Input::NextEpoch {
                    epoch,
                    validators: v
                }
            ),
            vec![]
        );
    }
    let effects = r.handle(
        NOW,
        Input::NextEpoch {
            epoch: 1,
            validators: bigger.clone(),
        },
    );
    assert_eq!(
        effects.first(),
        Some(&Effect::Persist(Record::View {
            view: 0,
            changing: false
        }))
    );
    assert_eq!(r.epoch(), 1);
    assert_eq!(r.bft().validators(), &bigger);
    assert_eq!(r.bft().span(), epoch_span(1, LENGTH, last));
    assert_eq!(r.bft().committed(), 3);
}

fn statement(kind: Kind, round: u64, height: u64, tag: &[u8]) -> Statement {
    Statement {
        kind,
        round,
        height,
        digest: Hash::of(Domain::Consensus, tag),
    }
}

fn equivocation(i: usize, kind: Kind) -> Evidence {
    let k = &keys()[i];
    let first = statement(kind, 0, 1, b"a");
    let second = statement(kind, 0, 1, b"b");
    Evidence {
        validator: k.address(),
        first,
        first_sig: first.sign(&chain(), k),
        second,
        second_sig: second.sign(&chain(), k),
    }
}

#[test]
fn an_equivocating_proposer_becomes_evidence_once() {
    let p = drawn(1, &Hash::ZERO);
    let backup = (p + 1) % 4;
    let mut r = replica(backup);
    let (_, a) = pre_prepare(p, 1, vec![tx(1)]);
    let (_, b) = pre_prepare(p, 1, vec![tx(2)]);
    let (_, c) = pre_prepare(p, 1, vec![tx(3)]);
    assert!(evidence_of(&message(&mut r, a.clone())).is_empty());
    let effects = message(&mut r, b.clone());
    let ev = evidence_of(&effects);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].validator, addr(p));
    assert_eq!(ev[0].first, a.message.statement());
    assert_eq!(ev[0].second, b.message.statement());
    assert_eq!(ev[0].verify(&chain()), Ok(()));
    assert_eq!(rejected(&effects), vec![Reject::Equivocation]);
    // A third proposal for the slot is refused, but not gossiped again.
    let effects = message(&mut r, c);
    assert!(evidence_of(&effects).is_empty());
    assert_eq!(rejected(&effects), vec![Reject::Equivocation]);
    // The same evidence heard from a peer is a duplicate: nothing.
    assert_eq!(r.handle(NOW, Input::Evidence(ev[0].clone())), vec![]);
}

#[test]
fn evidence_from_peers_is_checked_relayed_once_and_forgeries_refused() {
    let mut r = replica(0);
    let ev = equivocation(2, Kind::Prepare);
    assert_eq!(
        r.handle(NOW, Input::Evidence(ev.clone())),
        vec![Effect::Evidence(ev.clone())]
    );
    // A duplicate: nothing to relay.
    assert_eq!(r.handle(NOW, Input::Evidence(ev.clone())), vec![]);
    let bad = |e: Evidence, r: &mut Pos| {
        let effects = r.handle(NOW, Input::Evidence(e));
        assert!(
            matches!(
                effects.as_slice(),
                [Effect::Rejected {
                    reason: Reject::BadEvidence(_),
                    ..
                }]
            ),
            "{effects:?}"
        );
    };
    // A tampered signature.
    let mut tampered = equivocation(1, Kind::Commit);
    tampered.first_sig.0[0] ^= 1;
    bad(tampered, &mut r);
    // Two votes for different heights.
    let mut apart = equivocation(1, Kind::Commit);
    apart.second.height = 2;
    apart.second_sig = apart.second.sign(&chain(), &keys()[1]);
    bad(apart, &mut r);
    // Agreeing statements.
    let mut same = equivocation(1, Kind::Commit);
    same.second = same.first;
    same.second_sig = same.first_sig;
    bad(same, &mut r);
    // View-changes are not slashable.
    bad(equivocation(1, Kind::ViewChange), &mut r);
    // Another chain's.
    let mut other = equivocation(1, Kind::Commit);
    let elsewhere: ChainId = "elsewhere".parse().expect("chain");
    other.first_sig = other.first.sign(&elsewhere, &keys()[1]);
    other.second_sig = other.second.sign(&elsewhere, &keys()[1]);
    bad(other, &mut r);
    assert!(Reject::BadEvidence(String::new()).is_misbehaviour());
}

#[test]
fn a_prepare_from_the_proposer_counts_once() {
    // Replica `p` proposes; its own prepare (a Byzantine extra) must not add
    // its power twice towards the quorum.
    let p = drawn(1, &Hash::ZERO);
    let backup = (p + 1) % 4;
    let mut r = replica(backup);
    let (prop, m) = pre_prepare(p, 1, vec![tx(1)]);
    let _ = message(&mut r, m);
    let prepare = Signed::sign(
        &chain(),
        &keys()[p],
        Message::Prepare {
            view: 0,
            seq: 1,
            digest: prop.digest(),
        },
    );
    assert_eq!(
        rejected(&message(&mut r, prepare)),
        vec![Reject::PrepareFromPrimary]
    );
}

/// Runs `rs` with time advancing by `step` ms per round for `rounds` rounds,
/// dropping everything `mute` sends; returns each replica's committed blocks.
fn run_for(
    rs: &mut [Pos],
    mute: Option<usize>,
    start: u64,
    step: u64,
    rounds: u64,
) -> Vec<Vec<pbft::CommittedBlock>> {
    let mut committed = vec![Vec::new(); rs.len()];
    for round in 0..rounds {
        let now = start + round * step;
        let mut queue: Vec<(usize, Effect)> = Vec::new();
        for (i, r) in rs.iter_mut().enumerate() {
            for e in r.handle(now, Input::Bft(pbft::Input::Tick)) {
                queue.push((i, e));
            }
        }
        while let Some((from, e)) = (!queue.is_empty()).then(|| queue.remove(0)) {
            match e {
                Effect::Broadcast(m) | Effect::Send { message: m, .. } if Some(from) != mute => {
                    for (to, r) in rs.iter_mut().enumerate() {
                        if to != from {
                            for e in r.handle(now, Input::Bft(pbft::Input::Message(m.clone()))) {
                                queue.push((to, e));
                            }
                        }
                    }
                }
                Effect::Commit(b) => {
                    let seq = b.proposal.seq();
                    committed[from].push(b);
                    let executed = pbft::Input::Executed {
                        seq,
                        state_root: Hash::of(Domain::Consensus, &seq.to_le_bytes()),
                    };
                    for e in rs[from].handle(now, Input::Bft(executed)) {
                        queue.push((from, e));
                    }
                }
                _ => {}
            }
        }
    }
    committed
}

#[test]
fn after_a_view_change_the_leader_proposes_the_first_open_height() {
    // Equal power, so any three make a quorum. The drawn proposer of height 1
    // is silent: the others change view, and the new view's leader proposes
    // height 1 itself.
    let equal = ValidatorSet::equal(keys().iter().map(Keypair::address)).expect("set");
    let s = StakeWeighted {
        epoch_seed: Hash::ZERO,
    };
    let silent = index(&s.proposer(&equal, 0, 1, &Hash::ZERO));
    let mut rs: Vec<Pos> = (0..4)
        .map(|i| {
            Pos::new(
                chain(),
                0,
                LENGTH,
                equal.clone(),
                Hash::ZERO,
                Some(keys()[i].clone()),
                cfg(),
            )
        })
        .collect();
    for r in rs.iter_mut() {
        let _ = r.handle(NOW, Input::Bft(pbft::Input::Submit(tx(1))));
    }
    let committed = run_for(&mut rs, Some(silent), NOW, 20, 40);
    let leader = s.leader(&equal, 1);
    assert_ne!(leader, addr(silent), "round robin moves the leader on");
    for (i, c) in committed.iter().enumerate() {
        if i == silent {
            continue;
        }
        assert_eq!(c.len(), 1, "replica {i} commits height 1");
        assert_eq!(c[0].view, 1);
        assert_eq!(c[0].proposal.proposer(), leader);
    }
}

#[test]
fn a_key_outside_the_set_follows_without_voting() {
    let outsider = devkit::key(99);
    let mut r = Pos::new(chain(), 0, LENGTH, set(), Hash::ZERO, Some(outsider), cfg());
    let p = drawn(1, &Hash::ZERO);
    let (_, m) = pre_prepare(p, 1, vec![tx(1)]);
    let effects = message(&mut r, m);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Broadcast(_) | Effect::Persist(_))),
        "{effects:?}"
    );
}

#[test]
fn after_an_epoch_the_last_commit_is_resent_for_replicas_still_in_it() {
    let mut rs: Vec<Pos> = (0..4).map(replica).collect();
    let mut queue = Vec::new();
    for n in 0..12 {
        for (i, x) in rs.iter_mut().enumerate() {
            for e in x.handle(NOW, Input::Bft(pbft::Input::Submit(tx(n)))) {
                queue.push((i, e));
            }
        }
    }
    run(&mut rs, queue);
    let r = &mut rs[1];
    let last = r.bft().last_commit().expect("its commit for height 3");
    assert_eq!(last.message.statement().height, 3);
    let _ = r.handle(
        NOW,
        Input::NextEpoch {
            epoch: 1,
            validators: set(),
        },
    );
    let effects = r.handle(NOW + 50, Input::Bft(pbft::Input::Tick));
    assert!(effects.contains(&Effect::Broadcast(last)), "{effects:?}");
}

/// A replica that has delivered epoch 0 (heights 1..=3) and started epoch 1.
fn replica_in_epoch_one() -> Pos {
    let mut rs: Vec<Pos> = (0..4).map(replica).collect();
    let mut queue = Vec::new();
    for n in 0..12 {
        for (i, x) in rs.iter_mut().enumerate() {
            for e in x.handle(NOW, Input::Bft(pbft::Input::Submit(tx(n)))) {
                queue.push((i, e));
            }
        }
    }
    run(&mut rs, queue);
    let mut r = rs.swap_remove(0);
    let _ = r.handle(
        NOW,
        Input::NextEpoch {
            epoch: 1,
            validators: set(),
        },
    );
    assert_eq!(r.epoch(), 1);
    r
}

#[test]
fn a_view_change_from_the_previous_epoch_is_late_not_lying() {
    let mut r = replica_in_epoch_one();
    let vc = pbft::ViewChange {
        new_view: 1,
        checkpoint: pbft::CheckpointCert::default(),
        prepared: vec![],
    };
    let m = Signed::sign(&chain(), &keys()[1], Message::ViewChange(vc));
    let reasons = rejected(&message(&mut r, m));
    assert_eq!(
        reasons,
        vec![Reject::OutOfWindow {
            seq: 0,
            low: 3,
            high: 7
        }]
    );
    assert!(!reasons[0].is_misbehaviour());
}

#[test]
fn blocks_past_the_epoch_are_not_synced_until_the_next_set_is_known() {
    let mut rs: Vec<Pos> = (0..4).map(replica).collect();
    let mut queue = Vec::new();
    for n in 0..12 {
        for (i, x) in rs.iter_mut().enumerate() {
            for e in x.handle(NOW, Input::Bft(pbft::Input::Submit(tx(n)))) {
                queue.push((i, e));
            }
        }
    }
    run(&mut rs, queue);
    let r = &mut rs[0];
    assert!(r.awaits_next_epoch());
    // Height 4 belongs to epoch 1, certified by epoch 1's set: not now.
    let block = pbft::CommittedBlock {
        view: 0,
        proposal: Arc::new(Proposal::new(4, NOW, addr(1), vec![])),
        commits: vec![],
    };
    let synced = pbft::Input::Synced {
        from: addr(1),
        block,
    };
    assert_eq!(r.handle(NOW, Input::Bft(synced)), vec![]);
    assert_eq!(r.bft().committed(), 3);
}

fn commit_sig(i: usize, view: u64, height: u64, digest: Hash) -> crate::bft::VoteSig {
    let st = Statement {
        kind: Kind::Commit,
        round: view,
        height,
        digest,
    };
    crate::bft::VoteSig {
        validator: addr(i),
        signature: st.sign(&chain(), &keys()[i]),
    }
}

/// Like [`run`], returning the blocks replica 0 committed.
fn run_blocks(rs: &mut [Pos], mut queue: Vec<(usize, Effect)>) -> Vec<pbft::CommittedBlock> {
    let mut blocks = Vec::new();
    while let Some((from, e)) = (!queue.is_empty()).then(|| queue.remove(0)) {
        match e {
            Effect::Broadcast(m) => {
                for (to, r) in rs.iter_mut().enumerate() {
                    if to != from {
                        for e in message(r, m.clone()) {
                            queue.push((to, e));
                        }
                    }
                }
            }
            Effect::Commit(b) => {
                if from == 0 {
                    blocks.push(b.clone());
                }
                let executed = pbft::Input::Executed {
                    seq: b.proposal.seq(),
                    state_root: Hash::ZERO,
                };
                for e in rs[from].handle(NOW, Input::Bft(executed)) {
                    queue.push((from, e));
                }
            }
            _ => {}
        }
    }
    blocks
}

fn submit_all(rs: &mut [Pos], n: u64) -> Vec<(usize, Effect)> {
    let mut queue = Vec::new();
    for (i, x) in rs.iter_mut().enumerate() {
        for e in x.handle(NOW, Input::Bft(pbft::Input::Submit(tx(n)))) {
            queue.push((i, e));
        }
    }
    queue
}

#[test]
fn proposals_carry_the_commits_of_the_block_before_and_they_are_agreed() {
    let mut rs: Vec<Pos> = (0..4).map(replica).collect();
    // One block at a time, so each proposer has delivered the one before.
    let mut blocks = Vec::new();
    for n in 0..3 {
        let queue = submit_all(&mut rs, n);
        blocks.extend(run_blocks(&mut rs, queue));
    }
    assert_eq!(blocks.len(), 3);
    assert!(
        blocks[0].proposal.last_commit().is_none(),
        "nothing before 1"
    );
    for w in blocks.windows(2) {
        let lc = w[1].proposal.last_commit().unwrap_or_else(|| {
            panic!(
                "a last commit in {:?} (blocks {})",
                w[1].proposal.seq(),
                blocks.len()
            )
        });
        assert_eq!(lc.height, w[0].proposal.seq());
        // The commits the proposer held, a quorum at least; all four for
        // height 1 (height 2's late ones went with its checkpoint).
        assert!(lc.commits.len() >= 3);
        if lc.height == 1 {
            assert_eq!(lc.commits.len(), 4, "not only the quorum that committed it");
        }
        assert_eq!(lc.digest, blocks[lc.height as usize - 1].proposal.digest());
        assert_eq!(
            crate::bft::check_certificate(&chain(), &set(), &lc.statement(), &lc.commits),
            Ok(())
        );
    }
    // Stored and served as it was: the engine data keeps the last commit.
    let b = &blocks[2];
    let stored = pyralog_ledger::Block {
        header: pyralog_ledger::Header {
            chain_id: chain(),
            height: b.proposal.seq(),
            parent: Hash::ZERO,
            state_root: Hash::ZERO,
            tx_root: Hash::ZERO,
            proposer: b.proposal.proposer(),
            timestamp_ms: b.proposal.timestamp_ms(),
            engine_data: pbft::engine_data_of(b),
        },
        txs: b.proposal.txs().iter().map(|t| t.tx().clone()).collect(),
        certificate: pyralog_ledger::Certificate {
            round: b.view,
            votes: b
                .commits
                .iter()
                .map(|v| pyralog_ledger::Vote {
                    validator: v.validator,
                    signature: v.signature,
                })
                .collect(),
        },
    };
    let bytes = pbft::committed_bytes(&stored).expect("bytes");
    use pyralog_ledger::codec::Decode;
    assert_eq!(
        pbft::CommittedBlock::from_bytes(&bytes).expect("decodes"),
        b.clone()
    );
}

#[test]
fn a_bad_last_commit_is_refused() {
    let mut rs: Vec<Pos> = (0..4).map(replica).collect();
    let queue = submit_all(&mut rs, 0);
    run(&mut rs, queue);
    let r = &mut rs[0];
    assert_eq!(r.bft().committed(), 1);
    let d1 = r.bft().last_digest().expect("digest of 1");
    let p = drawn(2, &d1);
    let view = 0;
    let lc = |height: u64, digest: Hash, signers: &[usize]| {
        Arc::new(LastCommit {
            height,
            view,
            digest,
            commits: signers
                .iter()
                .map(|i| commit_sig(*i, view, height, digest))
                .collect(),
        })
    };
    let propose = |last: Arc<LastCommit>| {
        let prop = Arc::new(Proposal::with_last_commit(
            2,
            NOW,
            addr(p),
            vec![tx(1)],
            Some(last),
        ));
        Signed::sign(
            &chain(),
            &keys()[p],
            Message::PrePrepare {
                view,
                proposal: prop,
            },
        )
    };
    let backup = (p + 1) % 4;
    let mut cases = vec![
        // Not before this height.
        (
            lc(2, d1, &[0, 1, 2, 3]),
            Reject::BadProposal("a last commit outside the span before it"),
        ),
        // Another block at height 1.
        (
            lc(1, Hash::of(Domain::Consensus, b"x"), &[0, 1, 2, 3]),
            Reject::BadProposal("a last commit for another block"),
        ),
    ];
    // Too little power: validators 0 and 1 hold 3 of 10.
    cases.push((
        lc(1, d1, &[0, 1]),
        Reject::BadCertificate(crate::bft::CertError::NoQuorum {
            power: 3,
            needed: 7,
        }),
    ));
    for (last, reason) in cases {
        let effects = message(&mut rs[backup], propose(last));
        assert_eq!(rejected(&effects), vec![reason]);
    }
    // A valid one is accepted (a prepare follows).
    let effects = message(&mut rs[backup], propose(lc(1, d1, &[1, 2, 3])));
    assert!(rejected(&effects).is_empty(), "{effects:?}");
}

#[test]
fn a_restarted_replica_rebuilds_the_instance_of_its_epoch_not_its_predecessors() {
    // Epoch 1 holds heights 4..=7; checkpoints every 2.
    let cert = |signers: usize| pbft::CheckpointCert {
        seq: 4,
        state_root: Hash::of(Domain::Consensus, b"root 4"),
        votes: (0..signers)
            .map(|i| crate::bft::VoteSig {
                validator: addr(i),
                signature: pyralog_ledger::Signature([i as u8; 64]),
            })
            .collect(),
    };
    // Epoch 0's instance, behind, made checkpoint 4 stable from three
    // checkpoint messages; epoch 1's instance took it again from a new-view
    // with four signatures, then asked for view 1 and stopped.
    let records = vec![
        Record::Stable(cert(3)),
        EPOCH_MARK,
        Record::Stable(cert(4)),
        Record::View {
            view: 1,
            changing: true,
        },
    ];
    let mut r = Pos::recover(
        chain(),
        1,
        LENGTH,
        set(),
        Hash::ZERO,
        Some(keys()[0].clone()),
        cfg(),
        (4, Hash::of(Domain::Consensus, b"block 4")),
        records,
    );
    assert_eq!(r.bft().stable_checkpoint(), &cert(4));
    // The view change it resumes carries the checkpoint it had: the same
    // view-change it signed before, not a second one for view 1.
    let effects = r.handle(NOW, Input::Bft(pbft::Input::Tick));
    let resumed: Vec<&pbft::CheckpointCert> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(m) => match &m.message {
                Message::ViewChange(vc) if vc.new_view == 1 => Some(&vc.checkpoint),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(resumed, vec![&cert(4)], "{effects:?}");
}
