//! The state machine's refusals: each is deterministic (every member refuses
//! alike), changes nothing, and still advances the applied log id.

mod common;

use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use pyralog_cluster::types::{Entry, LogId};
use pyralog_cluster::{Command, LedgerMachine, Ordered, PendingLimits, Response};
use pyralog_ledger::{Certificate, devkit};

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<pyralog_cluster::TypeConfig>(1, 1, index)
}

/// Applies `cmds` after `applied` entries and returns nothing; responses are
/// read back through `pending_len`, records and history instead (the
/// responder is openraft's).
async fn apply(sm: &mut LedgerMachine, first: u64, cmds: Vec<Command>) {
    let entries: Vec<Result<EntryResponder<_>, std::io::Error>> = cmds
        .into_iter()
        .enumerate()
        .map(|(i, c)| Ok((Entry::new_normal(log_id(first + i as u64), c), None)))
        .collect();
    sm.apply(futures::stream::iter(entries))
        .await
        .expect("apply");
}

fn machine(dir: &std::path::Path) -> LedgerMachine {
    common::open_member(dir, &common::genesis())
        .expect("open")
        .1
}

#[tokio::test]
async fn writes_beyond_the_pending_caps_are_refused_and_duplicates_count_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = machine(dir.path()).with_pending_limits(PendingLimits {
        count: 2,
        bytes: 1 << 20,
    });
    apply(
        &mut sm,
        1,
        vec![
            common::write(1, "a"),
            common::write(1, "a"),
            common::write(2, "b"),
            common::write(3, "c"),
        ],
    )
    .await;
    assert_eq!(sm.view().pending_len().expect("pending"), 2);
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(4)));
    // A batch that includes a pending write frees its place.
    apply(&mut sm, 5, vec![common::put_batch(1, "a", "v")]).await;
    let mut sm = sm.with_pending_limits(PendingLimits {
        count: 2,
        bytes: 1 << 20,
    });
    apply(&mut sm, 6, vec![common::write(3, "c")]).await;
    assert_eq!(sm.view().pending_len().expect("pending"), 2);
}

#[tokio::test]
async fn a_byte_cap_refuses_a_write_that_would_cross_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = machine(dir.path()).with_pending_limits(PendingLimits {
        count: 100,
        bytes: 10,
    });
    apply(&mut sm, 1, vec![common::write(1, "a")]).await;
    assert_eq!(sm.view().pending_len().expect("pending"), 0);
}

fn ordered(height: u64, txs: Vec<pyralog_ledger::Transaction>) -> Command {
    Command::Ordered(Ordered {
        height,
        proposer: common::validator().address(),
        timestamp_ms: common::BASE_MS,
        txs,
        engine_data: Vec::new(),
        certificate: Certificate {
            round: 0,
            votes: Vec::new(),
        },
        records: Vec::new(),
        votes: None,
    })
}

/// The refusal a one-member cluster gives `cmd` (through Raft, as in
/// production), after checking the ledger did not change.
async fn refusal(cmd: Command) -> String {
    let h = common::Harness::cluster(1).await;
    let m = h.leader(std::time::Duration::from_secs(10)).await;
    let root = m.view().ledger().read().expect("ledger").state_root();
    let r = m.write(cmd).await.expect("committed");
    assert_eq!(
        m.view().ledger().read().expect("ledger").state_root(),
        root,
        "a refused command changed the ledger"
    );
    match r {
        Response::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_slot_that_does_not_follow_the_tip_is_refused() {
    let r = refusal(ordered(5, Vec::new())).await;
    assert!(r.contains("does not follow"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_slot_with_a_forged_transaction_is_refused() {
    let chain = common::CHAIN.parse().expect("chain");
    let alice = devkit::key(1);
    let mut tx = devkit::tx(&chain, &alice, 1, 0, devkit::put(&alice, b"k", b"v"), 2);
    tx.body.nonce = 2;
    let r = refusal(ordered(1, vec![tx])).await;
    assert!(!r.is_empty(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_at_or_below_the_tip_is_refused() {
    let g = common::genesis().validate().expect("genesis");
    let block = pyralog_ledger::Block {
        header: pyralog_ledger::Header {
            chain_id: g.chain_id.clone(),
            height: 0,
            parent: g.hash(),
            state_root: pyralog_ledger::Hash::ZERO,
            tx_root: pyralog_ledger::Hash::ZERO,
            proposer: common::validator().address(),
            timestamp_ms: 0,
            engine_data: Vec::new(),
        },
        txs: Vec::new(),
        certificate: Certificate {
            round: 0,
            votes: Vec::new(),
        },
    };
    let r = refusal(Command::Block(block)).await;
    assert!(r.contains("tip"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_signature_is_refused() {
    let mut cmd = common::put_batch(1, "k", "v");
    if let Command::Batch { batch, .. } = &mut cmd {
        batch.hlc.logical = 7;
    }
    let r = refusal(cmd).await;
    assert!(!r.is_empty(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_from_the_far_future_is_refused() {
    let mut cmd = common::put_batch(1, "k", "v");
    if let Command::Batch { now_ms, .. } = &mut cmd {
        *now_ms = 0;
    }
    let r = refusal(cmd).await;
    assert!(
        r.contains("future") || r.contains("skew") || r.contains("clock"),
        "{r}"
    );
}

#[tokio::test]
async fn a_reopened_machine_keeps_applied_state_pending_writes_and_intents() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let mut sm = machine(dir.path());
        let intent = pyralog_consensus::bft::Statement {
            kind: pyralog_consensus::bft::Kind::Prepare,
            round: 0,
            height: 3,
            digest: pyralog_ledger::Hash([1; 32]),
        };
        apply(
            &mut sm,
            1,
            vec![
                common::write(1, "a"),
                Command::Intent(intent),
                common::put_batch(2, "b", "v"),
            ],
        )
        .await;
    }
    let mut sm = machine(dir.path());
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(3)));
    assert_eq!(sm.view().pending_len().expect("pending"), 1);
    assert_eq!(sm.view().history().expect("history").len(), 1);
    let view = sm.view();
    let store = view.ledger().read().expect("ledger");
    assert!(
        store
            .record(&devkit::key(1).address(), b"b")
            .expect("read")
            .is_some()
    );
}

#[tokio::test]
async fn engine_records_land_once_at_their_position() {
    let dir = tempfile::tempdir().expect("tmp");
    let rec = |b: u8| vec![b; 3];
    {
        let mut sm = machine(dir.path());
        apply(
            &mut sm,
            1,
            vec![
                Command::EngineRecords {
                    from: 0,
                    records: vec![rec(1), rec(2)],
                },
                // A replay of the same group adds nothing.
                Command::EngineRecords {
                    from: 0,
                    records: vec![rec(1), rec(2)],
                },
                // An overlapping group adds only its tail.
                Command::EngineRecords {
                    from: 1,
                    records: vec![rec(2), rec(3)],
                },
            ],
        )
        .await;
        let got = common::engine_records(&sm.view());
        assert_eq!(got, vec![rec(1), rec(2), rec(3)]);
    }
    // After a reopen the position is known again.
    let mut sm = machine(dir.path());
    apply(
        &mut sm,
        4,
        vec![Command::EngineRecords {
            from: 3,
            records: vec![rec(4)],
        }],
    )
    .await;
    let got = common::engine_records(&sm.view());
    assert_eq!(got.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_records_that_would_leave_a_gap_are_refused() {
    let r = refusal(Command::EngineRecords {
        from: 5,
        records: vec![vec![1]],
    })
    .await;
    assert!(r.contains("gap"), "{r}");
}

/// A turn with no records appends nothing, so wherever its leader thought
/// the engine log ended it leaves no gap: a new leader's turn after a block
/// an earlier leader's entry had already applied counted that block's records
/// twice, and the refusal stopped the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_without_records_leaves_no_gap_wherever_it_starts() {
    let h = common::Harness::cluster(1).await;
    let m = h.leader(std::time::Duration::from_secs(10)).await;
    let turn = |from, records| Command::Turn {
        from,
        records,
        intents: Vec::new(),
    };
    let r = m.write(turn(3, Vec::new())).await.expect("committed");
    assert!(matches!(r, Response::Turn(ref a) if a.is_empty()), "{r:?}");
    // With records, the same place is still a gap.
    match m.write(turn(3, vec![vec![1]])).await.expect("committed") {
        Response::Refused { reason } => assert!(reason.contains("gap"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let len = m
        .view()
        .ledger()
        .read()
        .expect("ledger")
        .engine_records_len();
    assert_eq!(len, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_slot_at_a_filled_height_is_answered_as_a_replay_or_refused() {
    let h = common::Harness::cluster_on(1, common::pbft_genesis()).await;
    let m = h.leader(std::time::Duration::from_secs(10)).await;
    let (first, _) = common::ordered_put(1, 0, "k", b"a", None);
    let r = m.write(first.clone()).await.expect("committed");
    assert!(
        matches!(r, Response::Block { height: 1, ref failed, .. } if failed.is_empty()),
        "{r:?}"
    );
    let root = m.view().ledger().read().expect("ledger").state_root();
    // The same slot again (a retry, a replay) answers as the stored block.
    let again = m.write(first).await.expect("committed");
    assert!(
        matches!(again, Response::Block { height: 1, .. }),
        "{again:?}"
    );
    // Another slot at that height is refused and changes nothing.
    let (other, _) = common::ordered_put(1, 0, "k", b"b", None);
    match m.write(other).await.expect("committed") {
        Response::Refused { reason } => assert!(reason.contains("another block"), "{reason}"),
        r => panic!("expected a refusal, got {r:?}"),
    }
    assert_eq!(m.view().ledger().read().expect("ledger").state_root(), root);
    // A compare-and-set on a stale version runs, and fails, inside its block.
    let (stale, id) = common::ordered_put(2, 1, "k", b"c", Some(0));
    match m.write(stale).await.expect("committed") {
        Response::Block {
            height: 2, failed, ..
        } => {
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert_eq!(failed[0].id, id);
        }
        r => panic!("{r:?}"),
    }
}

/// The member's files as a crash would leave them: raw copies, taken while
/// the machine is open (its non-durable commits are not in them), opened as
/// a machine of their own.
fn crash_image(dir: &std::path::Path, into: &std::path::Path) -> LedgerMachine {
    for f in ["raft.redb", "ledger.redb"] {
        std::fs::copy(dir.join(f), into.join(f)).expect("copy");
    }
    machine(into)
}

/// What a crash would leave of `sm`'s cluster file now: the log's next
/// durable commit (a vote) makes every commit the machine made durable.
async fn image_after_a_vote(
    log: &mut pyralog_cluster::LogStore,
    dir: &std::path::Path,
    into: &std::path::Path,
) -> LedgerMachine {
    log.save_vote(&openraft::impls::Vote::new_committed(2, 1))
        .await
        .expect("vote");
    crash_image(dir, into)
}

/// Re-applies what openraft would after a crash: every entry past the
/// image's applied id.
async fn recover(sm: &mut LedgerMachine, entries: &[Command]) {
    let (applied, _) = sm.applied_state().await.expect("state");
    let next = applied.map_or(1, |l| l.index + 1);
    let rest: Vec<Command> = entries[(next - 1) as usize..].to_vec();
    apply(sm, next, rest).await;
}

/// What a machine holds that a crash must not change: the applied id, the
/// ledger's state root and tip, the engine's records, the pending writes,
/// the signing history.
#[derive(Debug, PartialEq)]
struct Held {
    applied: Option<LogId>,
    root: pyralog_ledger::Hash,
    tip: u64,
    records: Vec<Vec<u8>>,
    pending: Vec<pyralog_ledger::Hash>,
    intents: usize,
    floor: u64,
}

async fn held(sm: &mut LedgerMachine) -> Held {
    let (applied, _) = sm.applied_state().await.expect("state");
    let view = sm.view();
    let (root, tip) = {
        let store = view.ledger().read().expect("ledger");
        (store.state_root(), store.tip().height)
    };
    let mut pending: Vec<_> = view
        .pending(usize::MAX)
        .expect("pending")
        .iter()
        .map(|t| t.id())
        .collect();
    pending.sort();
    let history = view.history().expect("history");
    Held {
        applied,
        root,
        tip,
        records: common::engine_records(&sm.view()),
        pending,
        intents: history.len(),
        floor: history.floor(),
    }
}

fn intent(height: u64) -> Command {
    Command::Intent(pyralog_consensus::bft::Statement {
        kind: pyralog_consensus::bft::Kind::Prepare,
        round: 0,
        height,
        digest: pyralog_ledger::Hash([height as u8; 32]),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_log_commits_loses_nothing_the_ledger_had_not_synced() {
    let rec = |b: u8| vec![b; 3];
    let entries = vec![
        common::write(1, "a"),
        common::write(2, "b"),
        Command::EngineRecords {
            from: 0,
            records: vec![rec(1), rec(2)],
        },
        // Merges write 1, which leaves the pending set.
        common::put_batch(1, "a", "v"),
        intent(3),
        common::write(3, "c"),
        common::put_batch(2, "b", "v"),
        Command::EngineRecords {
            from: 2,
            records: vec![rec(3)],
        },
        // Forgets the intent at height 3 (so applying it again is refused).
        Command::PruneIntents { below: 4 },
        common::put_batch(3, "c", "x"),
        intent(5),
    ];
    let reference = tempfile::tempdir().expect("tmp");
    let mut whole = machine(reference.path());
    apply(&mut whole, 1, entries.clone()).await;
    let want = held(&mut whole).await;
    assert_eq!(want.records.len(), 3);
    assert_eq!((want.intents, want.floor), (1, 4));

    for cut in 1..=entries.len() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut log, mut sm) = common::open_member(dir.path(), &common::genesis()).expect("open");
        apply(&mut sm, 1, entries[..cut].to_vec()).await;
        // The log writer's next durable commit (a vote here, an append
        // alike) makes the whole cluster file durable, the state machine's
        // tables and applied id included.
        let image = tempfile::tempdir().expect("tmp");
        let mut crashed = image_after_a_vote(&mut log, dir.path(), image.path()).await;
        recover(&mut crashed, &entries).await;
        assert_eq!(
            held(&mut crashed).await,
            want,
            "a crash after {cut} entries"
        );
        drop(sm);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_records_without_an_fsync_are_whole_after_a_crash() {
    let dir = tempfile::tempdir().expect("tmp");
    let rec = |b: u8| vec![b; 3];
    let entries = vec![
        Command::EngineRecords {
            from: 0,
            records: vec![rec(1), rec(2)],
        },
        Command::EngineRecords {
            from: 2,
            records: vec![rec(3)],
        },
        Command::EngineRecords {
            from: 3,
            records: vec![rec(4)],
        },
    ];
    let all = vec![rec(1), rec(2), rec(3), rec(4)];
    let mut sm = machine(dir.path());
    apply(&mut sm, 1, entries[..2].to_vec()).await;

    // A crash now: the records never reached the ledger's disk, and the
    // applied id did not either, so they are applied again, once.
    let image = tempfile::tempdir().expect("tmp");
    let mut crashed = crash_image(dir.path(), image.path());
    assert_eq!(
        common::engine_records(&crashed.view()).len(),
        0,
        "the records waited for a sync"
    );
    recover(&mut crashed, &entries).await;
    assert_eq!(common::engine_records(&crashed.view()), all);

    // A snapshot syncs the ledger, and its recording makes the applied id
    // durable. An entry applied between the snapshot's making and its
    // recording is past the snapshot and not on the ledger's disk: the
    // recording must not claim it.
    let builder = sm.get_snapshot_builder().await;
    apply(&mut sm, 3, entries[2..].to_vec()).await;
    let mut builder = builder;
    builder.build_snapshot().await.expect("build");
    let image = tempfile::tempdir().expect("tmp");
    let mut crashed = crash_image(dir.path(), image.path());
    let (applied, _) = crashed.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(2)), "the snapshot's applied id");
    assert_eq!(common::engine_records(&crashed.view()).len(), 3);
    recover(&mut crashed, &entries).await;
    assert_eq!(common::engine_records(&crashed.view()), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_nothing_to_apply_again() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let mut sm = machine(dir.path());
        apply(&mut sm, 1, vec![common::put_batch(1, "a", "v"), intent(2)]).await;
    }
    // Raw copies after the drop: what is there is on disk.
    let image = tempfile::tempdir().expect("tmp");
    let mut sm = crash_image(dir.path(), image.path());
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(2)));
    let store = sm.view().ledger().clone();
    assert!(
        store
            .read()
            .expect("ledger")
            .record(&devkit::key(1).address(), b"a")
            .expect("read")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_synced_once_it_has_waited_long_enough() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut log, mut sm) = common::open_member(dir.path(), &common::genesis()).expect("open");
    apply(&mut sm, 1, vec![common::put_batch(1, "a", "v")]).await;
    let unsynced = sm.view().ledger().read().expect("ledger").is_synced();
    assert!(!unsynced, "a merge alone does not wait for the disk");
    tokio::time::sleep(pyralog_cluster::LEDGER_SYNC_AFTER + std::time::Duration::from_millis(20))
        .await;
    // The next run of entries, even one that leaves the ledger alone, finds
    // the ledger waiting too long and syncs it, once its answers are sent.
    apply(&mut sm, 2, vec![common::write(2, "b")]).await;
    assert!(sm.view().ledger().read().expect("ledger").is_synced());
    // So the cluster file claims it: that wait made its durable commit due
    // too, which comes after the ledger's sync. The run after it, a write
    // kept back, writes nothing.
    apply(&mut sm, 3, vec![common::write(3, "c")]).await;
    let image = tempfile::tempdir().expect("tmp");
    let mut crashed = image_after_a_vote(&mut log, dir.path(), image.path()).await;
    let (applied, _) = crashed.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(2)), "the synced run is claimed");
    assert!(
        crashed
            .view()
            .ledger()
            .read()
            .expect("ledger")
            .record(&devkit::key(1).address(), b"a")
            .expect("read")
            .is_some()
    );
    drop(sm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machine_makes_the_cluster_file_durable_on_its_own() {
    // The log has files of its own, so nothing else commits the cluster file
    // durably while entries are applied: the machine does, every
    // CLUSTER_SYNC_AFTER at least.
    let dir = tempfile::tempdir().expect("tmp");
    let (_log, mut sm) = common::open_member(dir.path(), &common::genesis()).expect("open");
    apply(&mut sm, 1, vec![common::write(1, "a")]).await;
    let image = tempfile::tempdir().expect("tmp");
    let mut early = crash_image(dir.path(), image.path());
    let (applied, _) = early.applied_state().await.expect("state");
    assert_eq!(
        applied, None,
        "durable before its time: the test shows nothing"
    );
    drop(early);
    tokio::time::sleep(pyralog_cluster::CLUSTER_SYNC_AFTER + std::time::Duration::from_millis(20))
        .await;
    // The run after the wait answers, then commits the file durably: the
    // ledger was never out of date, so it claims itself.
    apply(&mut sm, 2, vec![common::write(2, "b")]).await;
    let image = tempfile::tempdir().expect("tmp");
    let mut crashed = crash_image(dir.path(), image.path());
    let (applied, _) = crashed.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(2)), "the run is claimed");
    assert_eq!(crashed.view().pending_len().expect("pending"), 2);
    drop(sm);
}

/// The ids of the pending writes, in the order the machine gives them.
fn pending_ids(sm: &LedgerMachine) -> Vec<pyralog_ledger::Hash> {
    sm.view()
        .pending(usize::MAX)
        .expect("pending")
        .iter()
        .map(|tx| tx.id())
        .collect()
}

fn write_tx(cmd: Command) -> pyralog_ledger::Transaction {
    match cmd {
        Command::Write(tx) => Arc::unwrap_or_clone(tx),
        other => panic!("not a write: {other:?}"),
    }
}

#[tokio::test]
async fn pending_writes_come_out_in_the_order_the_log_brought_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = machine(dir.path());
    let txs: Vec<_> = (1..=6)
        .map(|n| write_tx(common::write(n, &format!("k{n}"))))
        .collect();
    let ids: Vec<_> = txs.iter().map(|t| t.id()).collect();
    let mut by_id = ids.clone();
    by_id.sort();
    assert_ne!(
        by_id, ids,
        "the fixture's ids happen to be sorted; pick others"
    );
    // One alone, then three in one entry, then two more alone.
    apply(
        &mut sm,
        1,
        vec![
            Command::Write(Arc::new(txs[0].clone())),
            Command::Writes(txs[1..4].iter().cloned().map(Arc::new).collect()),
            Command::Write(Arc::new(txs[4].clone())),
            Command::Write(Arc::new(txs[5].clone())),
        ],
    )
    .await;
    assert_eq!(pending_ids(&sm), ids);
    assert!(
        ids.iter()
            .all(|id| sm.view().is_pending(id).expect("index"))
    );
    // Reopened: the same writes, in the same order, still known by id.
    drop(sm);
    let mut sm = machine(dir.path());
    assert_eq!(pending_ids(&sm), ids);
    assert!(sm.view().is_pending(&ids[2]).expect("index"));
    // Carried by a batch: gone from the order and from the index.
    apply(&mut sm, 5, vec![common::put_batch(2, "k2", "v")]).await;
    assert!(!sm.view().is_pending(&ids[1]).expect("index"));
    let mut left = ids.clone();
    left.remove(1);
    assert_eq!(pending_ids(&sm), left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pending_writes_wait_in_memory_for_the_next_write_of_the_cluster_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut log, mut sm) = common::open_member(dir.path(), &common::genesis()).expect("open");
    let writes: Vec<Command> = (1..=4)
        .map(|n| common::write(n, &format!("k{n}")))
        .collect();
    let ids: Vec<_> = writes.iter().map(|w| write_tx(w.clone()).id()).collect();
    apply(&mut sm, 1, vec![intent(1)]).await;
    apply(&mut sm, 2, vec![writes[0].clone()]).await;
    apply(&mut sm, 3, vec![writes[1].clone()]).await;
    // Answered and readable, but in no transaction of the file yet: a crash
    // now applies them again from the log, as the claimed id says.
    assert_eq!(pending_ids(&sm), ids[..2]);
    assert_eq!(sm.view().pending_len().expect("len"), 2);
    let image = tempfile::tempdir().expect("tmp");
    let mut crashed = image_after_a_vote(&mut log, dir.path(), image.path()).await;
    assert_eq!(crashed.view().pending_len().expect("len"), 0);
    let (applied, _) = crashed.applied_state().await.expect("state");
    assert!(
        applied.is_none_or(|a| a.index < 2),
        "the file claims entries whose writes it lacks: {applied:?}"
    );
    drop(crashed);

    // An entry that changes more than the pending set writes them first;
    // here the batch that carries write 2 takes it out again.
    apply(&mut sm, 4, vec![common::put_batch(2, "k2", "v")]).await;
    apply(&mut sm, 5, vec![writes[2].clone()]).await;
    apply(&mut sm, 6, vec![writes[3].clone()]).await;
    // Read back: the table's, then those kept back, in the log's order.
    let left = vec![ids[0], ids[2], ids[3]];
    assert_eq!(pending_ids(&sm), left);
    let first: Vec<_> = sm
        .view()
        .pending(2)
        .expect("pending")
        .iter()
        .map(|t| t.id())
        .collect();
    assert_eq!(first, left[..2]);
    assert_eq!(sm.view().pending_len().expect("len"), 3);
    assert!(!sm.view().is_pending(&ids[1]).expect("index"));
    let image = tempfile::tempdir().expect("tmp");
    let mut crashed = image_after_a_vote(&mut log, dir.path(), image.path()).await;
    assert_eq!(pending_ids(&crashed), vec![ids[0]]);
    let (applied, _) = crashed.applied_state().await.expect("state");
    assert!(applied.is_some_and(|a| a.index < 5), "{applied:?}");
    drop(crashed);

    // A clean stop writes them all.
    drop(sm);
    drop(log);
    let sm = machine(dir.path());
    assert_eq!(pending_ids(&sm), left);
}

#[tokio::test]
async fn a_run_finds_the_writes_kept_back_full_and_writes_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let (mut log, mut sm) = common::open_member(dir.path(), &common::genesis()).expect("open");
    let rows = pyralog_cluster::machine::UNWRITTEN_ROWS as u64;
    let txs: Vec<_> = (1..=rows)
        .map(|n| Arc::new(write_tx(common::write(n, "k"))))
        .collect();
    // An entry of the cap's size is kept whole (the cap is checked before a
    // run is kept); the next run finds it full and writes it all.
    apply(&mut sm, 1, vec![Command::Writes(txs)]).await;
    let image = tempfile::tempdir().expect("tmp");
    let crashed = image_after_a_vote(&mut log, dir.path(), image.path()).await;
    assert_eq!(crashed.view().pending_len().expect("len"), 0);
    drop(crashed);
    apply(&mut sm, 2, vec![common::write(rows + 1, "k")]).await;
    let image = tempfile::tempdir().expect("tmp");
    let crashed = image_after_a_vote(&mut log, dir.path(), image.path()).await;
    assert_eq!(crashed.view().pending_len().expect("len"), rows + 1);
    assert_eq!(sm.view().pending_len().expect("len"), rows + 1);
}

#[tokio::test]
async fn a_cluster_file_with_pending_writes_keyed_by_id_is_moved_on_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let txs: Vec<_> = (1..=3)
        .map(|n| write_tx(common::write(n, &format!("k{n}"))))
        .collect();
    {
        // The layout before `sm_pending_fifo`: id → transaction bytes.
        let db = pyralog_cluster::open_cluster_db(&dir.path().join("raft.redb")).expect("db");
        let old: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("sm_pending");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(old).expect("table");
            for tx in &txs {
                use pyralog_ledger::codec::Encode;
                t.insert(tx.id().0.as_slice(), tx.to_bytes().as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let sm = machine(dir.path());
    assert_eq!(sm.view().pending_len().expect("len"), 3);
    let mut expected: Vec<_> = txs.iter().map(|t| t.id()).collect();
    expected.sort(); // the old table's order
    assert_eq!(pending_ids(&sm), expected);
    assert!(
        txs.iter()
            .all(|t| sm.view().is_pending(&t.id()).expect("index"))
    );
    drop(sm);
    // Moved once: the old table is gone, the writes are still there.
    let sm = machine(dir.path());
    assert_eq!(pending_ids(&sm), expected);
    drop(sm);
    let db = redb::Database::open(dir.path().join("raft.redb")).expect("db");
    let names: Vec<String> = {
        use redb::{ReadableDatabase, TableHandle};
        db.begin_read()
            .expect("read")
            .list_tables()
            .expect("tables")
            .map(|t| t.name().to_string())
            .collect()
    };
    assert!(!names.iter().any(|n| n == "sm_pending"), "{names:?}");
}

fn batch_tx(cmd: &Command) -> pyralog_ledger::Transaction {
    match cmd {
        Command::Batch { batch, .. } => batch.txs[0].clone(),
        other => panic!("not a batch: {other:?}"),
    }
}

#[tokio::test]
async fn a_write_the_ledger_already_holds_is_not_pended_alone_in_a_run_or_after_its_batch() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sm = machine(dir.path());
    let merged = common::put_batch(1, "a", "v");
    apply(&mut sm, 1, vec![merged.clone()]).await;
    // A run of writes alone, looked up in the ledger together: the one the
    // batch carried is not pended, alone or among others.
    apply(
        &mut sm,
        2,
        vec![
            Command::Write(Arc::new(batch_tx(&merged))),
            common::write(5, "x"),
            Command::Writes(vec![
                Arc::new(write_tx(common::write(6, "y"))),
                Arc::new(batch_tx(&merged)),
            ]),
        ],
    )
    .await;
    assert_eq!(
        pending_ids(&sm),
        vec![
            write_tx(common::write(5, "x")).id(),
            write_tx(common::write(6, "y")).id()
        ]
    );
    // A run where the batch comes first, then its write: looked up one by
    // one, after the batch.
    let later = common::put_batch(2, "b", "v");
    apply(
        &mut sm,
        5,
        vec![
            common::write(7, "z"),
            later.clone(),
            Command::Write(Arc::new(batch_tx(&later))),
        ],
    )
    .await;
    assert_eq!(pending_ids(&sm).len(), 3);
    assert!(!pending_ids(&sm).contains(&batch_tx(&later).id()));
}
