//! Snapshot files: built from one member, installed into another, and every
//! way a bad file is refused (leaving the member as it was).

mod common;

use std::path::Path;

use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use pyralog_cluster::snapshot::SnapshotFile;
use pyralog_cluster::types::{Entry, LogId, SnapshotMeta};
use pyralog_cluster::{Command, LedgerMachine};

fn log_id(index: u64) -> LogId {
    openraft::testing::log_id::<pyralog_cluster::TypeConfig>(1, 1, index)
}

async fn apply(sm: &mut LedgerMachine, cmds: Vec<Command>) {
    apply_from(sm, 0, cmds).await;
}

fn record(sm: &LedgerMachine, key: &str) -> Option<Vec<u8>> {
    let view = sm.view();
    let store = view.ledger().read().expect("ledger");
    store
        .record(&pyralog_ledger::devkit::key(1).address(), key.as_bytes())
        .expect("read")
        .and_then(|r| r.value)
}

/// Applies `cmds` after what the machine applied, numbered on from `after`.
async fn apply_from(sm: &mut LedgerMachine, after: u64, cmds: Vec<Command>) {
    let entries: Vec<Result<EntryResponder<_>, std::io::Error>> = cmds
        .into_iter()
        .enumerate()
        .map(|(i, c)| Ok((Entry::new_normal(log_id(after + i as u64 + 1), c), None)))
        .collect();
    sm.apply(futures::stream::iter(entries))
        .await
        .expect("apply");
}

/// Asks for a snapshot, as openraft's policy does: a mark.
async fn mark(sm: &mut LedgerMachine) -> SnapshotMeta {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build")
        .meta
}

/// Asks for the current snapshot, as openraft does to send one.
async fn current(
    sm: &mut LedgerMachine,
) -> openraft::alias::SnapshotOf<pyralog_cluster::TypeConfig, SnapshotFile> {
    sm.get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot")
}

/// The files in a member's snapshot folder.
fn snapshot_files(member: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(member.join("snapshots"))
        .expect("snapshot folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A machine with two batches and a pending write applied, and a snapshot
/// of it, as openraft takes one to send: built, then asked for.
async fn source(dir: &Path) -> (LedgerMachine, SnapshotMeta, SnapshotFile) {
    let (_, mut sm) = common::open_member(dir, &common::genesis()).expect("open");
    apply(
        &mut sm,
        vec![
            common::put_batch(1, "a", "1"),
            common::put_batch(2, "b", "2"),
            common::write(77, "c"),
        ],
    )
    .await;
    let built = mark(&mut sm).await;
    let snap = current(&mut sm).await;
    assert_eq!(snap.meta, built);
    (sm, snap.meta, snap.snapshot)
}

#[tokio::test]
async fn a_built_snapshot_is_a_mark_written_when_asked_for_as_of_then() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("a");
    let (_, mut sm) = common::open_member(&a, &common::genesis()).expect("open");
    apply(&mut sm, vec![common::put_batch(1, "a", "1")]).await;
    assert_eq!(mark(&mut sm).await.last_log_id, Some(log_id(1)));
    assert!(
        snapshot_files(&a).is_empty(),
        "building copied the state: {:?}",
        snapshot_files(&a)
    );
    // The mark outlives a restart, and the log under it may be purged: the
    // applied id it names is durable.
    drop(sm);
    let (_, mut sm) = common::open_member(&a, &common::genesis()).expect("reopen");
    assert_eq!(sm.applied_state().await.expect("state").0, Some(log_id(1)));
    apply_from(&mut sm, 1, vec![common::put_batch(2, "b", "2")]).await;
    // Asked for, it is written as of the state now, past the mark.
    let snap = current(&mut sm).await;
    assert_eq!(snap.meta.last_log_id, Some(log_id(2)));
    assert_eq!(snapshot_files(&a).len(), 1, "{:?}", snapshot_files(&a));
    // Asked again, the same file, though more was applied since.
    apply_from(&mut sm, 2, vec![common::put_batch(3, "c", "3")]).await;
    let again = current(&mut sm).await;
    assert_eq!(again.meta, snap.meta);
    assert_eq!(again.snapshot, snap.snapshot);
    let (_, mut dst) =
        common::open_member(&dir.path().join("b"), &common::genesis()).expect("open");
    dst.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    assert_eq!(record(&dst, "b"), Some(b"2".to_vec()));
    assert_eq!(record(&dst, "c"), None);
    // A new mark replaces the written file; the next ask writes another.
    mark(&mut sm).await;
    assert!(snapshot_files(&a).is_empty(), "{:?}", snapshot_files(&a));
    assert_eq!(current(&mut sm).await.meta.last_log_id, Some(log_id(3)));
}

#[tokio::test]
async fn a_snapshot_installs_the_ledger_and_the_cluster_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let (src, meta, file) = source(&dir.path().join("a")).await;
    let (_, mut dst) =
        common::open_member(&dir.path().join("b"), &common::genesis()).expect("open");
    dst.install_snapshot(&meta, file).await.expect("install");
    assert_eq!(record(&dst, "a"), Some(b"1".to_vec()));
    assert_eq!(record(&dst, "b"), Some(b"2".to_vec()));
    assert_eq!(dst.view().pending_len().expect("pending"), 1);
    // The pending write is known by id too, as on the member it came from.
    let Command::Write(pending) = common::write(77, "c") else {
        unreachable!("a write")
    };
    assert!(dst.view().is_pending(&pending.id()).expect("index"));
    assert_eq!(
        dst.view().pending(10).expect("pending"),
        src.view().pending(10).expect("pending")
    );
    let (applied, _) = dst.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(3)));
    let root = |sm: &LedgerMachine| sm.view().ledger().read().expect("ledger").state_root();
    assert_eq!(root(&dst), root(&src));
    // The installed state survives a restart.
    drop(dst);
    let (_, dst) = common::open_member(&dir.path().join("b"), &common::genesis()).expect("reopen");
    assert_eq!(record(&dst, "b"), Some(b"2".to_vec()));
    assert_eq!(dst.view().pending_len().expect("pending"), 1);
}

/// Installs `mutate`d copy of a good snapshot into a fresh member and
/// returns the error; checks the member is unchanged.
async fn refused(mutate: impl FnOnce(&mut Vec<u8>, &mut SnapshotMeta)) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, mut meta, file) = source(&dir.path().join("a")).await;
    let mut bytes = std::fs::read(&file.path).expect("read");
    mutate(&mut bytes, &mut meta);
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, &bytes).expect("write");
    let (_, mut dst) =
        common::open_member(&dir.path().join("b"), &common::genesis()).expect("open");
    apply(&mut dst, vec![common::put_batch(9, "mine", "x")]).await;
    let e = dst
        .install_snapshot(&meta, SnapshotFile { path: bad })
        .await
        .expect_err("a bad snapshot must be refused");
    assert_eq!(
        record(&dst, "mine"),
        Some(b"x".to_vec()),
        "the member changed"
    );
    assert_eq!(record(&dst, "a"), None, "the member changed");
    e.to_string()
}

#[tokio::test]
async fn a_file_with_a_wrong_magic_is_refused() {
    let e = refused(|b, _| b[0] = b'X').await;
    assert!(e.contains("magic"), "{e}");
}

#[tokio::test]
async fn a_truncated_file_is_refused() {
    let e = refused(|b, _| b.truncate(b.len() - 100)).await;
    assert!(e.contains("bytes"), "{e}");
    let e = refused(|b, _| b.truncate(10)).await;
    assert!(e.contains("header"), "{e}");
}

#[tokio::test]
async fn a_damaged_ledger_part_is_refused() {
    let e = refused(|b, _| {
        let n = b.len();
        b[n - 5000] ^= 0xff;
    })
    .await;
    assert!(e.contains("hash"), "{e}");
}

#[tokio::test]
async fn a_state_section_that_does_not_fit_is_refused() {
    let e = refused(|b, _| b[8..12].copy_from_slice(&u32::MAX.to_le_bytes())).await;
    assert!(e.contains("does not fit"), "{e}");
}

#[tokio::test]
async fn metadata_that_disagrees_with_the_file_is_refused() {
    let e = refused(|_, m| m.last_log_id = Some(log_id(99))).await;
    assert!(e.contains("metadata"), "{e}");
}

#[tokio::test]
async fn a_snapshot_of_another_chain_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, meta, file) = source(&dir.path().join("a")).await;
    let other = common::genesis_of("pyralog-other-chain");
    let (_, mut dst) = common::open_member(&dir.path().join("b"), &other).expect("open");
    let e = dst
        .install_snapshot(&meta, file)
        .await
        .expect_err("other chain");
    assert!(e.to_string().contains("genesis"), "{e}");
    let chain = dst
        .view()
        .ledger()
        .read()
        .expect("ledger")
        .genesis()
        .chain_id
        .clone();
    assert_eq!(chain.as_str(), "pyralog-other-chain");
}
