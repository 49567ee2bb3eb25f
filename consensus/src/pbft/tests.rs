//! Each handler's exact effects for its inputs, and one test per bad input.

use super::*;
use crate::bft::VoteSig;
use pyralog_ledger::block::verify_tx;
use pyralog_ledger::codec::{Decode, Encode};
use pyralog_ledger::devkit;

const NOW: u64 = 1_000_000;

fn chain() -> ChainId {
    "pbft-unit".parse().expect("chain id")
}

fn keys() -> Vec<Keypair> {
    (0..4).map(devkit::key).collect()
}

fn set() -> ValidatorSet {
    ValidatorSet::equal(keys().iter().map(Keypair::address)).expect("set")
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
        ..Config::default()
    }
}

fn replica(i: usize) -> Pbft {
    Pbft::new(chain(), set(), Some(keys()[i].clone()), cfg())
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

fn signed(i: usize, m: Message) -> Signed {
    Signed::sign(&chain(), &keys()[i], m)
}

fn addr(i: usize) -> Address {
    keys()[i].address()
}

/// The pre-prepare replica 0 (primary of view 0) makes for `txs` at `seq`.
fn pre_prepare(seq: u64, txs: Vec<VerifiedTx>) -> (Arc<Proposal>, Signed) {
    let p = Arc::new(Proposal::new(seq, NOW, addr(0), txs));
    let m = signed(
        0,
        Message::PrePrepare {
            view: 0,
            proposal: p.clone(),
        },
    );
    (p, m)
}

fn vote(i: usize, kind: Kind, view: u64, seq: u64, digest: Hash) -> Signed {
    let m = match kind {
        Kind::Prepare => Message::Prepare { view, seq, digest },
        Kind::Commit => Message::Commit { view, seq, digest },
        _ => unreachable!("only votes"),
    };
    signed(i, m)
}

fn feed(r: &mut Pbft, m: Signed) -> Vec<Effect> {
    r.handle(NOW, Input::Message(m))
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

#[test]
fn the_primary_proposes_a_submitted_transaction_persisting_before_it_sends() {
    let mut r = replica(0);
    let t = tx(1);
    let effects = r.handle(NOW, Input::Submit(t.clone()));
    let (p, m) = pre_prepare(1, vec![t]);
    assert_eq!(
        effects,
        vec![
            Effect::Persist(Record::Signed(m.message.statement())),
            Effect::Broadcast(m),
        ]
    );
    assert_eq!(p.seq(), 1);
}

/// The primary says when its batching delay will let it propose, so a host
/// can tick then; a backup, a full window or an empty pool say nothing.
#[test]
fn the_primary_says_when_its_next_proposal_is_due() {
    let cfg = Config {
        batch_delay_ms: 2,
        max_in_flight: 1,
        ..cfg()
    };
    let mut primary = Pbft::new(chain(), set(), Some(keys()[0].clone()), cfg.clone());
    assert_eq!(primary.proposal_due(), None, "nothing to propose");
    assert_eq!(primary.handle(NOW, Input::Submit(tx(1))), vec![]);
    assert_eq!(primary.proposal_due(), Some(NOW + 2));
    assert_eq!(primary.handle(NOW + 1, Input::Submit(tx(2))), vec![]);
    assert_eq!(primary.proposal_due(), Some(NOW + 2), "the oldest sets it");
    // Due: it proposes on the tick, and with one proposal in flight the next
    // is not due, however long the pool waits.
    let effects = primary.handle(NOW + 2, Input::Tick);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Broadcast(_))),
        "{effects:?}"
    );
    assert_eq!(primary.handle(NOW + 3, Input::Submit(tx(3))), vec![]);
    assert_eq!(primary.proposal_due(), None, "no room");

    let mut backup = Pbft::new(chain(), set(), Some(keys()[1].clone()), cfg);
    assert_eq!(backup.handle(NOW, Input::Submit(tx(1))), vec![]);
    assert_eq!(backup.proposal_due(), None, "a backup does not propose");
}

#[test]
fn a_backup_submit_only_pools_the_transaction() {
    let mut r = replica(1);
    assert_eq!(r.handle(NOW, Input::Submit(tx(1))), vec![]);
    assert_eq!(r.pool_len(), 1);
}

#[test]
fn a_backup_answers_a_pre_prepare_with_a_prepare() {
    let mut r = replica(1);
    let (p, m) = pre_prepare(1, vec![tx(1)]);
    let effects = feed(&mut r, m);
    let prepare = vote(1, Kind::Prepare, 0, 1, p.digest());
    assert_eq!(
        effects,
        vec![
            Effect::Persist(Record::Signed(prepare.message.statement())),
            Effect::Broadcast(prepare),
        ]
    );
}

#[test]
fn prepared_then_committed_in_the_three_phases() {
    let mut r = replica(1);
    let (p, m) = pre_prepare(1, vec![tx(1)]);
    let d = p.digest();
    let _ = feed(&mut r, m);
    // Pre-prepare (primary) + own prepare = 2 of a quorum of 3: not yet.
    assert_eq!(feed(&mut r, vote(2, Kind::Prepare, 0, 1, d)).len(), 3);
    // That third prepare made it prepared; check the exact effects.
    let mut r = replica(1);
    let _ = feed(&mut r, pre_prepare(1, vec![tx(1)]).1);
    let effects = feed(&mut r, vote(2, Kind::Prepare, 0, 1, d));
    let cert = PreparedCert {
        view: 0,
        proposal: p.clone(),
        pre_prepare: pre_prepare(1, vec![tx(1)]).1.signature,
        prepares: {
            let mut v = vec![
                VoteSig {
                    validator: addr(1),
                    signature: vote(1, Kind::Prepare, 0, 1, d).signature,
                },
                VoteSig {
                    validator: addr(2),
                    signature: vote(2, Kind::Prepare, 0, 1, d).signature,
                },
            ];
            v.sort_by_key(|s| s.validator);
            v
        },
    };
    let commit = vote(1, Kind::Commit, 0, 1, d);
    assert_eq!(
        effects,
        vec![
            Effect::Persist(Record::Prepared(cert)),
            Effect::Persist(Record::Signed(commit.message.statement())),
            Effect::Broadcast(commit.clone()),
        ]
    );
    // One more commit: 2 of 3.
    assert_eq!(feed(&mut r, vote(0, Kind::Commit, 0, 1, d)), vec![]);
    // The third: committed, handed to the host with the certificate.
    let effects = feed(&mut r, vote(3, Kind::Commit, 0, 1, d));
    let [Effect::Commit(block)] = effects.as_slice() else {
        panic!("expected one commit, got {effects:?}");
    };
    assert_eq!(block.proposal, p);
    assert_eq!(block.view, 0);
    assert_eq!(block.commits.len(), 3);
    assert_eq!(
        check_certificate(&chain(), &set(), &block.statement(), &block.commits),
        Ok(())
    );
    assert_eq!(r.committed(), 1);
}

#[test]
fn commits_are_handed_over_in_sequence_order() {
    let mut r = replica(1);
    let (p1, m1) = pre_prepare(1, vec![tx(1)]);
    let (p2, m2) = pre_prepare(2, vec![tx(2)]);
    let _ = feed(&mut r, m1);
    let _ = feed(&mut r, m2);
    // Seq 2 completes first: nothing is delivered yet.
    for i in [2, 3] {
        let _ = feed(&mut r, vote(i, Kind::Prepare, 0, 2, p2.digest()));
    }
    for i in [0, 2] {
        let e = feed(&mut r, vote(i, Kind::Commit, 0, 2, p2.digest()));
        assert!(!e.iter().any(|e| matches!(e, Effect::Commit(_))));
    }
    for i in [2, 3] {
        let _ = feed(&mut r, vote(i, Kind::Prepare, 0, 1, p1.digest()));
    }
    let _ = feed(&mut r, vote(0, Kind::Commit, 0, 1, p1.digest()));
    let effects = feed(&mut r, vote(2, Kind::Commit, 0, 1, p1.digest()));
    let seqs: Vec<u64> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Commit(b) => Some(b.proposal.seq()),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1, 2]);
}

#[test]
fn a_checkpoint_is_signed_after_execution_and_becomes_stable_with_a_quorum() {
    let mut r = replica(1);
    let root = Hash::of(pyralog_ledger::Domain::Consensus, b"root");
    // Seq 1 is not a checkpoint (interval 2).
    assert_eq!(
        r.handle(
            NOW,
            Input::Executed {
                seq: 1,
                state_root: root
            }
        ),
        vec![]
    );
    let effects = r.handle(
        NOW,
        Input::Executed {
            seq: 2,
            state_root: root,
        },
    );
    let mine = signed(
        1,
        Message::Checkpoint {
            seq: 2,
            state_root: root,
        },
    );
    assert_eq!(effects, vec![Effect::Broadcast(mine)]);
    assert_eq!(
        feed(
            &mut r,
            signed(
                2,
                Message::Checkpoint {
                    seq: 2,
                    state_root: root
                }
            )
        ),
        vec![]
    );
    let effects = feed(
        &mut r,
        signed(
            3,
            Message::Checkpoint {
                seq: 2,
                state_root: root,
            },
        ),
    );
    let [Effect::Persist(Record::Stable(cert))] = effects.as_slice() else {
        panic!("expected a stable checkpoint, got {effects:?}");
    };
    assert_eq!((cert.seq, cert.state_root, cert.votes.len()), (2, root, 3));
    assert_eq!(r.stable_checkpoint().seq, 2);
    // The window moved: seq 2 is now below it.
    let (_, m) = pre_prepare(2, vec![tx(9)]);
    assert!(matches!(
        rejected(&feed(&mut r, m))[..],
        [Reject::OutOfWindow { seq: 2, low: 2, .. }]
    ));
}

#[test]
fn a_stalled_backup_asks_for_a_new_view_and_the_new_primary_starts_it() {
    let mut r1 = replica(1);
    let _ = r1.handle(NOW, Input::Submit(tx(1)));
    // Before the timeout nothing happens.
    assert_eq!(r1.handle(NOW + 50, Input::Tick), vec![]);
    let effects = r1.handle(NOW + 100, Input::Tick);
    let vc = ViewChange {
        new_view: 1,
        checkpoint: CheckpointCert::default(),
        prepared: vec![],
    };
    let m = signed(1, Message::ViewChange(vc.clone()));
    assert_eq!(
        effects,
        vec![
            Effect::Persist(Record::View {
                view: 1,
                changing: true
            }),
            Effect::Persist(Record::Signed(m.message.statement())),
            Effect::Broadcast(m.clone()),
        ]
    );
    assert!(r1.is_changing_view());
    // Replica 1 is the primary of view 1: with view-changes from 2 and 3 it
    // has a quorum and announces the view.
    let _ = r1.handle(
        NOW + 100,
        Input::Message(signed(2, Message::ViewChange(vc.clone()))),
    );
    let effects = r1.handle(
        NOW + 100,
        Input::Message(signed(3, Message::ViewChange(vc))),
    );
    assert!(!r1.is_changing_view());
    assert_eq!(r1.view(), 1);
    let nv = effects.iter().find_map(|e| match e {
        Effect::Broadcast(Signed {
            message: Message::NewView(nv),
            ..
        }) => Some(nv.clone()),
        _ => None,
    });
    let nv = nv.expect("a new-view");
    assert_eq!(nv.view_changes.len(), 3);
    assert!(nv.reproposals.is_empty());
    assert!(effects.contains(&Effect::ViewChanged { view: 1 }));
    // A backup accepts it and enters view 1.
    let mut r2 = replica(2);
    let e = r2.handle(NOW + 100, Input::Message(signed(1, Message::NewView(nv))));
    assert!(rejected(&e).is_empty(), "{e:?}");
    assert_eq!((r2.view(), r2.is_changing_view()), (1, false));
}

#[test]
fn a_prepared_proposal_survives_the_view_change() {
    // Replica 2 prepared seq 1 in view 0; the new-view must re-propose it.
    let mut r2 = replica(2);
    let (p, m) = pre_prepare(1, vec![tx(1)]);
    let _ = feed(&mut r2, m);
    let _ = feed(&mut r2, vote(1, Kind::Prepare, 0, 1, p.digest()));
    let e = r2.handle(NOW + 10_000, Input::Tick);
    let vc2 = e
        .iter()
        .find_map(|e| match e {
            Effect::Broadcast(
                s @ Signed {
                    message: Message::ViewChange(_),
                    ..
                },
            ) => Some(s.clone()),
            _ => None,
        })
        .expect("view-change");
    let Message::ViewChange(vc) = &vc2.message else {
        unreachable!()
    };
    assert_eq!(vc.prepared.len(), 1);
    let mut r1 = replica(1);
    let _ = r1.handle(NOW + 10_000, Input::Submit(tx(5)));
    let _ = r1.handle(NOW + 10_000, Input::Tick);
    let _ = r1.handle(NOW + 10_000, Input::Message(vc2));
    let empty = ViewChange {
        new_view: 1,
        checkpoint: CheckpointCert::default(),
        prepared: vec![],
    };
    let e = r1.handle(
        NOW + 10_000,
        Input::Message(signed(3, Message::ViewChange(empty))),
    );
    let nv = e
        .iter()
        .find_map(|e| match e {
            Effect::Broadcast(Signed {
                message: Message::NewView(nv),
                ..
            }) => Some(nv.clone()),
            _ => None,
        })
        .expect("new-view");
    assert_eq!(nv.reproposals.len(), 1);
    assert_eq!(nv.reproposals[0].digest, p.digest());
}

// ---- bad input: each rejected, nothing else happens ----

#[test]
fn a_vote_from_a_non_validator_is_rejected() {
    let mut r = replica(1);
    let outsider = devkit::key(77);
    let m = Signed::sign(
        &chain(),
        &outsider,
        Message::Prepare {
            view: 0,
            seq: 1,
            digest: Hash::ZERO,
        },
    );
    assert_eq!(
        feed(&mut r, m),
        vec![Effect::Rejected {
            from: outsider.address(),
            reason: Reject::NotValidator
        }]
    );
}

#[test]
fn a_bad_signature_is_rejected() {
    let mut r = replica(1);
    let mut m = vote(2, Kind::Prepare, 0, 1, Hash::ZERO);
    m.signature.0[5] ^= 1;
    assert_eq!(
        feed(&mut r, m),
        vec![Effect::Rejected {
            from: addr(2),
            reason: Reject::BadSignature
        }]
    );
    // A signature moved onto another message fails the same way.
    let mut moved = vote(2, Kind::Commit, 0, 1, Hash::ZERO);
    moved.signature = vote(2, Kind::Prepare, 0, 1, Hash::ZERO).signature;
    assert_eq!(rejected(&feed(&mut r, moved)), vec![Reject::BadSignature]);
}

#[test]
fn a_vote_for_another_view_or_height_is_rejected() {
    let mut r = replica(1);
    assert_eq!(
        rejected(&feed(&mut r, vote(2, Kind::Prepare, 3, 1, Hash::ZERO))),
        vec![Reject::WrongView { got: 3, current: 0 }]
    );
    assert_eq!(
        rejected(&feed(&mut r, vote(2, Kind::Commit, 0, 9, Hash::ZERO))),
        vec![Reject::OutOfWindow {
            seq: 9,
            low: 0,
            high: 8
        }]
    );
    assert_eq!(
        rejected(&feed(&mut r, vote(2, Kind::Commit, 0, 0, Hash::ZERO))),
        vec![Reject::OutOfWindow {
            seq: 0,
            low: 0,
            high: 8
        }]
    );
}

#[test]
fn a_pre_prepare_from_a_non_primary_is_rejected() {
    let mut r = replica(1);
    let p = Arc::new(Proposal::new(1, NOW, addr(2), vec![tx(1)]));
    let m = signed(
        2,
        Message::PrePrepare {
            view: 0,
            proposal: p,
        },
    );
    assert_eq!(
        feed(&mut r, m),
        vec![Effect::Rejected {
            from: addr(2),
            reason: Reject::NotPrimary {
                view: 0,
                primary: addr(0)
            }
        }]
    );
    // And a prepare from the primary.
    assert_eq!(
        rejected(&feed(&mut r, vote(0, Kind::Prepare, 0, 1, Hash::ZERO))),
        vec![Reject::PrepareFromPrimary]
    );
}

#[test]
fn an_equivocating_primary_leaves_evidence() {
    let mut r = replica(1);
    let (_, m1) = pre_prepare(1, vec![tx(1)]);
    let (_, m2) = pre_prepare(1, vec![tx(2)]);
    let _ = feed(&mut r, m1);
    let effects = feed(&mut r, m2);
    let [Effect::Evidence(ev), Effect::Rejected { reason, .. }] = effects.as_slice() else {
        panic!("expected evidence and a rejection, got {effects:?}");
    };
    assert_eq!(*reason, Reject::Equivocation);
    assert_eq!(ev.validator, addr(0));
    assert_eq!(ev.verify(&chain()), Ok(()));
}

fn forged_view_change(prepares: Vec<VoteSig>, p: &Arc<Proposal>) -> ViewChange {
    ViewChange {
        new_view: 1,
        checkpoint: CheckpointCert::default(),
        prepared: vec![PreparedCert {
            view: 0,
            proposal: p.clone(),
            pre_prepare: pre_prepare(1, p.txs().to_vec()).1.signature,
            prepares,
        }],
    }
}

#[test]
fn a_view_change_with_a_forged_prepared_certificate_is_rejected() {
    let (p, _) = pre_prepare(1, vec![tx(1)]);
    let d = p.digest();
    let good = |i: usize| VoteSig {
        validator: addr(i),
        signature: vote(i, Kind::Prepare, 0, 1, d).signature,
    };
    // Too few prepares.
    let mut r = replica(1);
    let vc = forged_view_change(vec![good(2)], &p);
    let e = feed(&mut r, signed(3, Message::ViewChange(vc)));
    assert!(
        matches!(&rejected(&e)[..], [Reject::BadViewChange(why)] if why.contains("quorum")),
        "{e:?}"
    );
    // A forged prepare signature.
    let mut forged = good(3);
    forged.signature = good(2).signature;
    let vc = forged_view_change(vec![good(2), forged], &p);
    let e = feed(&mut r, signed(3, Message::ViewChange(vc)));
    assert!(
        matches!(&rejected(&e)[..], [Reject::BadViewChange(why)] if why.contains("does not verify")),
        "{e:?}"
    );
    // A pre-prepare signature that is not the primary's.
    let mut vc = forged_view_change(vec![good(2), good(3)], &p);
    vc.prepared[0].pre_prepare = vote(3, Kind::Prepare, 0, 1, d).signature;
    let e = feed(&mut r, signed(3, Message::ViewChange(vc)));
    assert!(
        matches!(&rejected(&e)[..], [Reject::BadViewChange(why)] if why.contains("primary")),
        "{e:?}"
    );
    // The genuine one is accepted.
    let vc = forged_view_change(vec![good(2), good(3)], &p);
    assert!(rejected(&feed(&mut r, signed(3, Message::ViewChange(vc)))).is_empty());
}

/// A new-view's statement sits at the checkpoint its view starts from:
/// under proof of stake views start again at 0 every epoch, and the
/// new-views of one view number in two epochs must not look like a conflict
/// (nor fall below a pruned signing history's floor).
#[test]
fn a_new_view_statement_sits_at_its_starting_checkpoint() {
    let vc = |seq: u64| ViewChange {
        new_view: 1,
        checkpoint: CheckpointCert {
            seq,
            ..CheckpointCert::default()
        },
        prepared: vec![],
    };
    let svc = |i: usize, seq: u64| SignedViewChange {
        signer: addr(i),
        view_change: vc(seq),
        signature: signed(i, Message::ViewChange(vc(seq))).signature,
    };
    let nv = |seqs: [u64; 3]| NewView {
        view: 1,
        view_changes: (1..=3).zip(seqs).map(|(i, s)| svc(i, s)).collect(),
        reproposals: vec![],
    };
    let a = Message::NewView(nv([8, 12, 8])).statement();
    assert_eq!((a.kind, a.round, a.height), (Kind::NewView, 1, 12));
    let b = Message::NewView(nv([16, 16, 20])).statement();
    assert_eq!((b.round, b.height), (1, 20));
    assert_ne!(a.digest, b.digest);
}

#[test]
fn a_new_view_with_too_few_view_changes_is_rejected() {
    let vc = ViewChange {
        new_view: 1,
        checkpoint: CheckpointCert::default(),
        prepared: vec![],
    };
    let svc = |i: usize| SignedViewChange {
        signer: addr(i),
        view_change: vc.clone(),
        signature: signed(i, Message::ViewChange(vc.clone())).signature,
    };
    let nv = NewView {
        view: 1,
        view_changes: vec![svc(1), svc(2)],
        reproposals: vec![],
    };
    let mut r = replica(2);
    assert_eq!(
        rejected(&feed(&mut r, signed(1, Message::NewView(nv)))),
        vec![Reject::TooFewViewChanges {
            power: 2,
            needed: 3
        }]
    );
    // The same view-change twice does not count twice.
    let nv = NewView {
        view: 1,
        view_changes: vec![svc(1), svc(2), svc(2)],
        reproposals: vec![],
    };
    assert!(matches!(
        rejected(&feed(&mut r, signed(1, Message::NewView(nv))))[..],
        [Reject::BadViewChange(_)]
    ));
    // From a replica that is not the new primary.
    let nv = NewView {
        view: 1,
        view_changes: vec![svc(1), svc(2), svc(3)],
        reproposals: vec![],
    };
    assert!(matches!(
        rejected(&feed(&mut r, signed(3, Message::NewView(nv.clone()))))[..],
        [Reject::NotPrimary { view: 1, .. }]
    ));
    // Claiming a pre-prepare its view-changes do not imply.
    let mut bad = nv.clone();
    bad.reproposals.push(Reproposal {
        seq: 1,
        digest: Hash::ZERO,
        signature: Signature([0; 64]),
    });
    assert_eq!(
        rejected(&feed(&mut r, signed(1, Message::NewView(bad)))),
        vec![Reject::NewViewMismatch]
    );
    assert_eq!(r.view(), 0);
    // The genuine one moves the replica.
    assert!(rejected(&feed(&mut r, signed(1, Message::NewView(nv)))).is_empty());
    assert_eq!(r.view(), 1);
}

#[test]
fn a_restarted_replica_does_not_sign_a_second_proposal_for_a_slot() {
    let mut r = replica(1);
    let (p, m) = pre_prepare(1, vec![tx(1)]);
    let persisted: Vec<Record> = feed(&mut r, m)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Persist(rec) => Some(rec),
            _ => None,
        })
        .collect();
    assert_eq!(persisted.len(), 1);
    let mut back = Pbft::recover(chain(), set(), Some(keys()[1].clone()), cfg(), 0, persisted);
    // An equivocating primary now offers another proposal at the same slot: the
    // restarted replica refuses to prepare it.
    let (q, m2) = pre_prepare(1, vec![tx(2)]);
    assert_ne!(p.digest(), q.digest());
    let e = feed(&mut back, m2);
    assert!(
        !e.iter().any(|e| matches!(e, Effect::Broadcast(_))),
        "signed a second prepare: {e:?}"
    );
}

#[test]
fn synced_blocks_need_a_valid_commit_certificate() {
    let (p, _) = pre_prepare(1, vec![tx(1)]);
    let d = p.digest();
    let sigs = |ids: &[usize]| -> Vec<VoteSig> {
        ids.iter()
            .map(|i| VoteSig {
                validator: addr(*i),
                signature: vote(*i, Kind::Commit, 0, 1, d).signature,
            })
            .collect()
    };
    let mut r = replica(3);
    let weak = CommittedBlock {
        view: 0,
        proposal: p.clone(),
        commits: sigs(&[0, 1]),
    };
    let e = r.handle(
        NOW,
        Input::Synced {
            from: addr(0),
            block: weak,
        },
    );
    assert!(matches!(
        rejected(&e)[..],
        [Reject::BadCertificate(CertError::NoQuorum { .. })]
    ));
    assert_eq!(r.committed(), 0);
    let good = CommittedBlock {
        view: 0,
        proposal: p,
        commits: sigs(&[0, 1, 2]),
    };
    let e = r.handle(
        NOW,
        Input::Synced {
            from: addr(0),
            block: good.clone(),
        },
    );
    assert_eq!(e, vec![Effect::Commit(good)]);
    assert_eq!(r.committed(), 1);
}

#[test]
fn messages_round_trip_through_their_bytes_and_garbage_never_panics() {
    let (p, m) = pre_prepare(1, vec![tx(1), tx(2)]);
    for msg in [
        m,
        vote(2, Kind::Commit, 4, 5, p.digest()),
        signed(
            1,
            Message::Checkpoint {
                seq: 16,
                state_root: p.digest(),
            },
        ),
    ] {
        let bytes = msg.to_bytes();
        assert_eq!(Signed::decode_wire(&bytes), Ok(msg.clone()));
        for cut in 0..bytes.len().min(200) {
            assert!(Signed::decode_wire(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Signed::decode_wire(&longer).is_err());
    }
    // A proposal whose transaction signature is broken does not decode.
    let (_, m) = pre_prepare(1, vec![tx(1)]);
    let mut bytes = m.to_bytes();
    let n = bytes.len();
    bytes[n - 64 - 10] ^= 1; // inside the last transaction's signature
    assert!(Signed::decode_wire(&bytes).is_err());
}

#[test]
fn records_round_trip_and_a_stored_block_serves_as_its_committed_block() {
    use pyralog_ledger::block::{Certificate, Header, Vote};
    let (p, m) = pre_prepare(1, vec![tx(1)]);
    for r in [
        Record::View {
            view: 3,
            changing: true,
        },
        Record::Signed(m.message.statement()),
        Record::Stable(CheckpointCert {
            seq: 2,
            state_root: p.digest(),
            votes: vec![],
        }),
    ] {
        assert_eq!(Record::from_bytes(&r.to_bytes()), Ok(r));
    }
    let committed = CommittedBlock {
        view: 2,
        proposal: p.clone(),
        commits: vec![VoteSig {
            validator: addr(1),
            signature: m.signature,
        }],
    };
    let block = pyralog_ledger::Block {
        header: Header {
            chain_id: chain(),
            height: 1,
            parent: Hash::ZERO,
            state_root: Hash::ZERO,
            tx_root: Hash::ZERO,
            proposer: addr(0),
            timestamp_ms: NOW + 5,
            engine_data: engine_data(2, NOW),
        },
        txs: p.txs().iter().map(|t| t.tx().clone()).collect(),
        certificate: Certificate {
            round: 2,
            votes: vec![Vote {
                validator: addr(1),
                signature: m.signature,
            }],
        },
    };
    let bytes = committed_bytes(&block).expect("pbft engine data");
    assert_eq!(CommittedBlock::from_bytes(&bytes), Ok(committed));
}

/// The view-changes a replica's effects broadcast, by the view they ask for.
fn views_asked(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(Signed {
                message: Message::ViewChange(vc),
                ..
            }) => Some(vc.new_view),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replica_restarted_while_changing_view_asks_for_that_view_again() {
    let records = vec![Record::View {
        view: 3,
        changing: true,
    }];
    let mut r = Pbft::recover(chain(), set(), Some(keys()[1].clone()), cfg(), 0, records);
    assert!(r.is_changing_view());
    assert_eq!(views_asked(&r.handle(NOW, Input::Tick)), vec![3]);
}

/// Its key signed another view-change for view 3 before the restart (one
/// whose prepared certificates its records no longer hold): a second one for
/// that view would be a conflicting statement, so it asks for view 4.
#[test]
fn a_replica_that_asked_for_its_view_otherwise_before_a_restart_asks_for_the_next() {
    let other = Statement {
        kind: Kind::ViewChange,
        round: 3,
        height: 0,
        digest: Hash([7; 32]),
    };
    let records = vec![
        Record::View {
            view: 3,
            changing: true,
        },
        Record::Signed(other),
    ];
    let mut r = Pbft::recover(chain(), set(), Some(keys()[1].clone()), cfg(), 0, records);
    let effects = r.handle(NOW, Input::Tick);
    assert_eq!(views_asked(&effects), vec![4]);
    assert!(effects.contains(&Effect::Persist(Record::View {
        view: 4,
        changing: true
    })));
    assert_eq!(r.view(), 4);
}

/// A cluster's new leader recovers from records that trail the old leader's
/// (still in view 0 here) and from the signing history, which says the key
/// asked for view 2: the replica is changing to view 2 and asks again with
/// the same view-change, not back in view 0 where it would time out into a
/// view-change for view 1 and 2 its cluster refuses.
#[test]
fn the_signing_history_of_a_view_change_puts_a_recovered_replica_in_that_view() {
    let vc = ViewChange {
        new_view: 2,
        checkpoint: CheckpointCert::default(),
        prepared: vec![],
    };
    let records = vec![
        Record::View {
            view: 0,
            changing: false,
        },
        Record::Signed(Message::ViewChange(vc).statement()),
    ];
    let mut r = Pbft::recover(chain(), set(), Some(keys()[1].clone()), cfg(), 0, records);
    assert!(r.is_changing_view());
    assert_eq!(r.view(), 2);
    assert_eq!(views_asked(&r.handle(NOW, Input::Tick)), vec![2]);
}

#[test]
fn a_pbft_pre_prepare_carrying_a_last_commit_is_refused() {
    let mut r = replica(1);
    let lc = Arc::new(LastCommit {
        height: 1,
        view: 0,
        digest: Hash::ZERO,
        commits: vec![],
    });
    let p = Arc::new(Proposal::with_last_commit(
        2,
        NOW,
        addr(0),
        vec![tx(1)],
        Some(lc),
    ));
    let m = signed(
        0,
        Message::PrePrepare {
            view: 0,
            proposal: p,
        },
    );
    assert_eq!(
        rejected(&feed(&mut r, m)),
        vec![Reject::BadProposal(
            "a last commit under round-robin proposers"
        )]
    );
}

#[test]
fn a_proposal_without_a_last_commit_encodes_as_before_and_one_with_it_round_trips() {
    // Without: the timestamp's high bit is clear and nothing follows the
    // transactions (PBFT's bytes are unchanged).
    let plain = Proposal::new(3, NOW, addr(0), vec![tx(1)]);
    let bytes = plain.to_bytes();
    assert_eq!(&bytes[8..16], &NOW.to_le_bytes());
    assert_eq!(Proposal::from_bytes(&bytes).as_ref(), Ok(&plain));
    // With: flagged, carried, and part of the digest.
    let lc = Arc::new(LastCommit {
        height: 2,
        view: 1,
        digest: Hash::of(pyralog_ledger::Domain::Consensus, b"block 2"),
        commits: vec![VoteSig {
            validator: addr(1),
            signature: Signature([3; 64]),
        }],
    });
    let carried = Proposal::with_last_commit(3, NOW, addr(0), vec![tx(1)], Some(lc.clone()));
    assert_ne!(carried.digest(), plain.digest());
    let bytes = carried.to_bytes();
    assert_eq!(bytes[15] & 0x80, 0x80);
    let back = Proposal::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, carried);
    assert_eq!(back.last_commit(), Some(&*lc));
    assert_eq!(back.timestamp_ms(), NOW);
}

#[test]
fn a_replica_left_behind_fetches_from_one_whose_view_change_starts_further_on() {
    // Replica 2 holds block 4 and its checkpoint is stable: it asks for view
    // 1 from there. Replica 0 never heard a commit or checkpoint past 0 (the
    // others moved on without it, as into the next epoch).
    let root = Hash::of(pyralog_ledger::Domain::Consensus, b"state at 4");
    let st = Statement {
        kind: Kind::Checkpoint,
        round: 0,
        height: 4,
        digest: root,
    };
    let checkpoint = CheckpointCert {
        seq: 4,
        state_root: root,
        votes: (1..4)
            .map(|i| VoteSig {
                validator: addr(i),
                signature: st.sign(&chain(), &keys()[i]),
            })
            .collect(),
    };
    let vc = ViewChange {
        new_view: 1,
        checkpoint,
        prepared: vec![],
    };
    let mut r0 = replica(0);
    let e = r0.handle(NOW, Input::Message(signed(2, Message::ViewChange(vc))));
    assert!(rejected(&e).is_empty(), "{e:?}");
    // No progress for `sync_ms`: it asks replica 2 for the blocks after its
    // own, which come back checked against their certificates.
    let effects = r0.handle(NOW + 50, Input::Tick);
    assert!(
        effects.contains(&Effect::Fetch {
            from: addr(2),
            after: 0
        }),
        "{effects:?}"
    );
}
