//! Signing intents: the pure rule, the interchange file and its rejections,
//! and the rule at work in a cluster that loses its leader.

mod common;

use std::time::Duration;

use common::Harness;
use pyralog_cluster::intent::{
    FORMAT, HistoryFile, Interchange, MAX_FILE_BYTES, Refusal, SigningHistory, Slot, Verdict,
};
use pyralog_cluster::{Command, Error};
use pyralog_consensus::bft::{Kind, Statement};
use pyralog_ledger::{ChainId, Hash, devkit};

fn st(kind: Kind, height: u64, round: u64, d: u8) -> Statement {
    Statement {
        kind,
        round,
        height,
        digest: Hash([d; 32]),
    }
}

fn chain() -> ChainId {
    common::CHAIN.parse().expect("chain")
}

fn genesis_hash() -> Hash {
    common::genesis().validate().expect("genesis").hash()
}

#[test]
fn a_new_statement_is_allowed_and_recorded() {
    let mut h = SigningHistory::new();
    let s = st(Kind::Prepare, 5, 0, 1);
    assert_eq!(h.check(&s), Ok(Verdict::New));
    assert_eq!(h.record(&s), Ok(Verdict::New));
    assert_eq!(h.get(&Slot::of(&s)), Some(s.digest));
    assert_eq!(h.len(), 1);
}

#[test]
fn the_same_statement_again_is_a_repeat_not_a_conflict() {
    let mut h = SigningHistory::new();
    let s = st(Kind::Commit, 5, 1, 1);
    h.record(&s).expect("first");
    assert_eq!(h.record(&s), Ok(Verdict::Repeat));
    assert_eq!(h.len(), 1);
}

#[test]
fn another_digest_in_the_same_slot_is_refused() {
    let mut h = SigningHistory::new();
    h.record(&st(Kind::PrePrepare, 5, 2, 1)).expect("first");
    let e = h
        .record(&st(Kind::PrePrepare, 5, 2, 2))
        .expect_err("conflict");
    assert!(
        matches!(
            e,
            Refusal::Conflict {
                height: 5,
                round: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("pre-prepare"), "{e}");
    // Other kinds, rounds and heights are other slots.
    assert_eq!(h.record(&st(Kind::Prepare, 5, 2, 2)), Ok(Verdict::New));
    assert_eq!(h.record(&st(Kind::PrePrepare, 5, 3, 2)), Ok(Verdict::New));
    assert_eq!(h.record(&st(Kind::PrePrepare, 6, 2, 2)), Ok(Verdict::New));
}

#[test]
fn nothing_below_the_floor_may_be_signed() {
    let mut h = SigningHistory::new();
    h.record(&st(Kind::Prepare, 3, 0, 1)).expect("record");
    h.record(&st(Kind::Prepare, 9, 0, 1)).expect("record");
    let gone = h.prune_below(5);
    assert_eq!(gone.len(), 1);
    assert_eq!(h.floor(), 5);
    let e = h
        .check(&st(Kind::Prepare, 3, 0, 1))
        .expect_err("below floor");
    assert_eq!(
        e,
        Refusal::BelowFloor {
            height: 3,
            floor: 5
        }
    );
    // The floor never goes down.
    assert!(h.prune_below(2).is_empty());
    assert_eq!(h.floor(), 5);
    assert_eq!(h.check(&st(Kind::Prepare, 9, 0, 1)), Ok(Verdict::Repeat));
}

#[test]
fn slot_keys_round_trip_and_refuse_garbage() {
    let s = Slot::of(&st(Kind::ViewChange, 7, 3, 0));
    assert_eq!(Slot::from_key(&s.key()), Some(s));
    assert_eq!(Slot::from_key(&[0; 16]), None);
    let mut k = s.key();
    k[16] = 99;
    assert_eq!(Slot::from_key(&k), None);
}

fn history() -> SigningHistory {
    let mut h = SigningHistory::new();
    h.record(&st(Kind::PrePrepare, 10, 0, 1)).expect("record");
    h.record(&st(Kind::Prepare, 10, 0, 1)).expect("record");
    h.record(&st(Kind::Commit, 10, 0, 1)).expect("record");
    h.prune_below(4);
    h
}

fn exported() -> Interchange {
    history().export(&common::validator().address(), &chain(), &genesis_hash())
}

#[test]
fn an_export_imports_into_an_empty_history() {
    let file = exported();
    let bytes = file.to_json();
    let text = String::from_utf8(bytes.clone()).expect("utf8");
    assert!(
        text.contains(FORMAT) && text.contains("\"height\": \"10\""),
        "{text}"
    );
    let parsed = Interchange::from_json(&bytes).expect("parse");
    assert_eq!(parsed, file);
    let plan = SigningHistory::new()
        .plan_import(
            &parsed,
            &common::validator().address(),
            &chain(),
            &genesis_hash(),
        )
        .expect("plan");
    assert_eq!(plan.floor, Some(4));
    assert_eq!(plan.add.len(), 3);
    // Applying the plan's commands gives the same history.
    let mut h = SigningHistory::new();
    for c in plan.commands() {
        match c {
            Command::PruneIntents { below } => {
                h.prune_below(below);
            }
            Command::Intent(s) => {
                h.record(&s).expect("record");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(h, history());
    // Importing it again adds nothing.
    let again = h
        .plan_import(
            &parsed,
            &common::validator().address(),
            &chain(),
            &genesis_hash(),
        )
        .expect("plan");
    assert!(again.add.is_empty() && again.floor.is_none(), "{again:?}");
}

fn refused(file: &Interchange, into: &SigningHistory) -> String {
    match into.plan_import(
        file,
        &common::validator().address(),
        &chain(),
        &genesis_hash(),
    ) {
        Err(Error::History(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_import_that_contradicts_the_history_is_refused_whole() {
    let mut ours = SigningHistory::new();
    ours.record(&st(Kind::Commit, 10, 0, 2)).expect("record");
    let m = refused(&exported(), &ours);
    assert!(m.contains("conflicts"), "{m}");
}

#[test]
fn a_file_that_contradicts_itself_is_refused() {
    let mut file = exported();
    let mut twin = file.data[0].signed_statements[0].clone();
    twin.digest = "ee".repeat(32);
    file.data[0].signed_statements.push(twin);
    let m = refused(&file, &SigningHistory::new());
    assert!(m.contains("two digests"), "{m}");
}

#[test]
fn a_file_for_another_chain_genesis_key_or_format_is_refused() {
    let mut f = exported();
    f.metadata.chain_id = "other-chain".into();
    assert!(refused(&f, &SigningHistory::new()).contains("chain"));
    let mut f = exported();
    f.metadata.genesis_hash = "00".repeat(32);
    assert!(refused(&f, &SigningHistory::new()).contains("genesis"));
    let mut f = exported();
    f.data[0].validator = devkit::key(7).address().to_string();
    assert!(refused(&f, &SigningHistory::new()).contains("no history"));
    let mut f = exported();
    f.data.push(f.data[0].clone());
    assert!(refused(&f, &SigningHistory::new()).contains("twice"));
    let mut f = exported();
    f.metadata.interchange_format_version = "2".into();
    assert!(refused(&f, &SigningHistory::new()).contains("version"));
    let mut f = exported();
    f.metadata.format = "eip-3076".into();
    assert!(refused(&f, &SigningHistory::new()).contains("format"));
}

#[test]
fn malformed_fields_are_refused_with_their_name() {
    type Breaker = fn(&mut Interchange);
    let cases: [(&str, Breaker); 6] = [
        ("height", |f| {
            f.data[0].signed_statements[0].height = "-1".into()
        }),
        ("height", |f| {
            f.data[0].signed_statements[0].height = "010".into()
        }),
        ("round", |f| {
            f.data[0].signed_statements[0].round = "99999999999999999999999".into()
        }),
        ("kind", |f| {
            f.data[0].signed_statements[0].kind = "vote".into()
        }),
        ("digest", |f| {
            f.data[0].signed_statements[0].digest = "zz".into()
        }),
        ("floor", |f| f.data[0].floor = "".into()),
    ];
    for (field, break_it) in cases {
        let mut f = exported();
        break_it(&mut f);
        let m = refused(&f, &SigningHistory::new());
        assert!(m.contains(field), "{field}: {m}");
    }
}

#[test]
fn files_that_are_not_histories_are_refused() {
    assert!(matches!(
        Interchange::from_json(b"{}"),
        Err(Error::History(_))
    ));
    assert!(matches!(
        Interchange::from_json(b"\xff"),
        Err(Error::History(_))
    ));
    let mut extra = serde_json::to_value(exported()).expect("json");
    extra["metadata"]["surprise"] = serde_json::json!(1);
    let bytes = serde_json::to_vec(&extra).expect("json");
    assert!(matches!(
        Interchange::from_json(&bytes),
        Err(Error::History(_))
    ));
    let big = vec![b' '; MAX_FILE_BYTES + 1];
    assert!(matches!(
        Interchange::from_json(&big),
        Err(Error::TooLarge { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_refuses_what_conflicts_with_its_predecessors_intents() {
    let mut h = Harness::cluster(3).await;
    let old = h.leader(Duration::from_secs(10)).await;
    let first = st(Kind::Prepare, 1, 0, 1);
    assert_eq!(
        old.authorize_signing(first).await.expect("authorized"),
        Verdict::New
    );
    assert_eq!(
        old.authorize_signing(first).await.expect("repeat"),
        Verdict::Repeat
    );
    let e = old
        .authorize_signing(st(Kind::Prepare, 1, 0, 2))
        .await
        .expect_err("conflict");
    assert!(
        matches!(e, Error::SigningRefused(Refusal::Conflict { .. })),
        "{e}"
    );
    // A follower does not sign.
    let follower = h.other(old.id());
    assert!(matches!(
        follower.authorize_signing(st(Kind::Commit, 1, 0, 1)).await,
        Err(Error::NotLeader { .. })
    ));
    // The leader dies right after its intent committed (before or after it
    // signed: either way the intent is in the log).
    let old_id = old.id();
    drop(old);
    h.stop(old_id).await;
    let new = h.leader(Duration::from_secs(10)).await;
    let e = new
        .authorize_signing(st(Kind::Prepare, 1, 0, 3))
        .await
        .expect_err("the new leader must not sign a conflicting prepare");
    assert!(
        matches!(e, Error::SigningRefused(Refusal::Conflict { .. })),
        "{e}"
    );
    assert_eq!(
        new.authorize_signing(first).await.expect("repeat"),
        Verdict::Repeat
    );
    assert_eq!(
        new.authorize_signing(st(Kind::Commit, 1, 0, 1))
            .await
            .expect("new"),
        Verdict::New
    );
    // Every member holds the same history, and it exports.
    let index = new.status().committed.expect("committed");
    for m in h.members.values() {
        h.applied(m, index, Duration::from_secs(10)).await;
        let hist = m.view().history().expect("history");
        assert_eq!(hist.len(), 2, "member {}", m.id());
    }
    // Pruning through Raft raises the floor on every member.
    new.write(Command::PruneIntents { below: 2 })
        .await
        .expect("prune");
    let e = new
        .authorize_signing(st(Kind::Commit, 1, 5, 9))
        .await
        .expect_err("below the floor");
    assert!(
        matches!(e, Error::SigningRefused(Refusal::BelowFloor { .. })),
        "{e}"
    );
}

#[test]
fn a_full_history_refuses_new_statements_but_not_repeats() {
    let mut h = SigningHistory::new();
    for i in 0..pyralog_cluster::intent::MAX_INTENTS as u64 {
        h.record(&st(Kind::Prepare, i, 0, 1)).expect("record");
    }
    let e = h
        .record(&st(Kind::Prepare, u64::MAX, 0, 1))
        .expect_err("full");
    assert!(matches!(e, Refusal::Full(_)), "{e}");
    assert_eq!(h.record(&st(Kind::Prepare, 5, 0, 1)), Ok(Verdict::Repeat));
    // Pruning makes room.
    h.prune_below(10);
    assert_eq!(
        h.record(&st(Kind::Prepare, u64::MAX, 0, 1)),
        Ok(Verdict::New)
    );
}

#[test]
fn a_file_with_more_statements_than_a_history_holds_is_refused() {
    let mut f = exported();
    let one = f.data[0].signed_statements[0].clone();
    f.data[0].signed_statements = vec![one; pyralog_cluster::intent::MAX_INTENTS + 1];
    let m = refused(&f, &SigningHistory::new());
    assert!(m.contains("more than"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_moves_between_clusters_and_a_contradicting_one_is_refused() {
    let a = Harness::cluster(1).await;
    let la = a.leader(Duration::from_secs(10)).await;
    la.authorize_signing(st(Kind::Prepare, 7, 0, 1))
        .await
        .expect("sign");
    la.authorize_signing(st(Kind::Commit, 7, 0, 1))
        .await
        .expect("sign");
    let file = la
        .export_history(&common::validator().address())
        .expect("export");
    let bytes = file.to_json();

    let b = Harness::cluster(3).await;
    let lb = b.leader(Duration::from_secs(10)).await;
    // B's key already signed another prepare at height 7: the file contradicts it.
    lb.authorize_signing(st(Kind::Prepare, 7, 0, 2))
        .await
        .expect("sign");
    let parsed = Interchange::from_json(&bytes).expect("parse");
    let e = lb
        .import_history(&parsed, &common::validator().address())
        .await
        .expect_err("contradiction");
    assert!(matches!(e, Error::History(_)), "{e}");
    assert_eq!(
        lb.view().history().expect("history").len(),
        1,
        "a refused import changed nothing"
    );

    // A fresh cluster takes it, through any member, and then refuses to sign
    // against it.
    let c = Harness::cluster(3).await;
    let lc = c.leader(Duration::from_secs(10)).await;
    let plan = c
        .other(lc.id())
        .import_history(&parsed, &common::validator().address())
        .await
        .expect("import");
    assert_eq!(plan.add.len(), 2);
    let e = lc
        .authorize_signing(st(Kind::Commit, 7, 0, 3))
        .await
        .expect_err("conflict with the imported history");
    assert!(
        matches!(e, Error::SigningRefused(Refusal::Conflict { .. })),
        "{e}"
    );
}
