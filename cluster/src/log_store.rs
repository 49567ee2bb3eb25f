//! The Raft log and vote in redb.
//!
//! The member's cluster file (`raft.redb`, beside the ledger's file) holds the
//! log, the vote and the state machine's own tables (see [`crate::machine`]).
//!
//! Appends go to a writer thread of their own. `append` returns as soon as the
//! entries are queued and readable (they sit in memory until they are on
//! disk), and the writer calls openraft back once they are: so the leader's
//! fsync overlaps with replication instead of delaying it, and appends that
//! queue up while one commits share the next commit (group commit). Appends
//! commit with `Durability::Immediate` before openraft hears they are done: a
//! member never acknowledges an entry it could forget. Truncation, purges and
//! the vote go through the same queue, in order, and the caller waits for
//! them; the vote and purges are durable. The committed index is a hint to
//! openraft: it is kept in memory and written in the commit of the append
//! that holds its entry (or never, if none comes), not in a transaction of
//! its own.
//!
//! No redb transaction spans an `.await`: the writer thread and the state
//! machine's task share the file's single writer only between awaits.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// Raft's own small values: `vote`, `committed`, `purged`.
pub(crate) const RAFT_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
/// The log: index → CBOR of the entry.
pub(crate) const RAFT_LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");

/// The largest stored entry: a command at its cap plus openraft's envelope.
pub const MAX_ENTRY_BYTES: usize = crate::command::MAX_COMMAND_BYTES + (64 << 10);
/// The largest stored vote, log id or membership.
pub(crate) const MAX_META_BYTES: usize = 1 << 20;
/// Jobs waiting for the writer thread; a full queue makes `append` wait.
pub const WRITE_QUEUE: usize = 1024;
/// Appends the writer folds into one commit at most.
pub const GROUP_COMMIT: usize = 256;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

/// Opens (or creates) a member's cluster file and makes sure every table
/// exists, so readers never meet a missing one.
pub fn open_cluster_db(path: &Path) -> Result<Arc<Database>, Error> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(RAFT_META)?;
    txn.open_table(RAFT_LOG)?;
    crate::machine::create_tables(&txn)?;
    txn.commit()?;
    Ok(Arc::new(db))
}

/// Entries queued but not yet on disk, by index.
type Unflushed = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// The latest committed id openraft reported and the file does not hold yet.
type CommittedHint = Arc<Mutex<Option<Option<LogId>>>>;

/// Work for the writer thread in a transaction of its own.
type Work = Box<dyn FnOnce(&Database) -> Result<(), Error> + Send>;

/// A change to the log, for the writer thread, in submission order.
enum Job {
    /// Encoded entries to commit, then report through `callback`.
    Append {
        rows: Vec<(u64, LogId, Vec<u8>)>,
        callback: IOFlushed<TypeConfig>,
    },
    /// Anything else: run it in its own transaction and answer.
    Run {
        work: Work,
        done: oneshot::Sender<Result<(), Error>>,
    },
}

/// What every clone of a [`LogStore`] shares; dropping the last one stops
/// the writer thread and waits for it, so the file is closed afterwards.
struct Shared {
    db: Arc<Database>,
    unflushed: Unflushed,
    committed: CommittedHint,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The Raft log storage of one member.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<'_, &str, &[u8]>,
    key: &str,
) -> Result<Option<T>, Error> {
    let txn = db.begin_read()?;
    let t = txn.open_table(table)?;
    match t.get(key)? {
        Some(v) => crate::wire::decode("stored value", v.value(), MAX_META_BYTES)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{key}: {e}"))),
        None => Ok(None),
    }
}

fn lock(u: &Unflushed) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
    u.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_hint(h: &CommittedHint) -> std::sync::MutexGuard<'_, Option<Option<LogId>>> {
    h.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: runs jobs in order, folding consecutive appends into
/// one commit.
fn writer(
    db: Arc<Database>,
    unflushed: Unflushed,
    committed: CommittedHint,
    mut jobs: mpsc::Receiver<Job>,
) {
    let mut next = jobs.blocking_recv();
    while let Some(job) = next.take() {
        match job {
            Job::Run { work, done } => {
                let _ = done.send(work(&db));
            }
            Job::Append { rows, callback } => {
                let mut group = vec![(rows, callback)];
                while group.len() < GROUP_COMMIT {
                    match jobs.try_recv() {
                        Ok(Job::Append { rows, callback }) => group.push((rows, callback)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                // The hint goes with the entries it covers: on a leader it may
                // run ahead of its own log (a majority without it), and the
                // file must never say committed past what it holds.
                let last = group
                    .iter()
                    .flat_map(|(rows, _)| rows.iter())
                    .map(|(i, _, _)| *i)
                    .max()
                    .unwrap_or(0);
                let hint = {
                    let mut h = lock_hint(&committed);
                    match *h {
                        Some(c) if c.map_or(0, |l| l.index()) <= last => h.take(),
                        _ => None,
                    }
                };
                let result = commit_rows(&db, group.iter().flat_map(|(rows, _)| rows.iter()), hint);
                if result.is_ok() {
                    let mut u = lock(&unflushed);
                    for (i, id, _) in group.iter().flat_map(|(rows, _)| rows.iter()) {
                        if u.get(i).is_some_and(|e| e.log_id() == *id) {
                            u.remove(i);
                        }
                    }
                }
                for (_, callback) in group {
                    callback.io_completed(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::other(e.to_string())),
                    });
                }
            }
        }
        if next.is_none() {
            next = jobs.blocking_recv();
        }
    }
}

/// Commits `rows` to the log, and the committed hint if there is one.
fn commit_rows<'a>(
    db: &Database,
    rows: impl Iterator<Item = &'a (u64, LogId, Vec<u8>)>,
    committed: Option<Option<LogId>>,
) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut log = txn.open_table(RAFT_LOG)?;
        for (i, _, b) in rows {
            log.insert(*i, b.as_slice())?;
        }
    }
    if let Some(c) = committed {
        let bytes = crate::wire::encode("stored value", &c, MAX_META_BYTES)?;
        txn.open_table(RAFT_META)?
            .insert(COMMITTED, bytes.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

impl LogStore {
    /// The log storage in `db` (from [`open_cluster_db`]); starts its writer
    /// thread.
    pub fn new(db: Arc<Database>) -> Result<LogStore, Error> {
        let unflushed: Unflushed = Arc::default();
        let committed: CommittedHint = Arc::default();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (d, u, c) = (
            Arc::clone(&db),
            Arc::clone(&unflushed),
            Arc::clone(&committed),
        );
        let writer = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer(d, u, c, rx))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                db,
                unflushed,
                committed,
                jobs: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    fn db(&self) -> &Database {
        &self.shared.db
    }

    async fn submit(&self, job: Job) -> Result<(), Error> {
        let jobs = self
            .shared
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Storage("the log writer has stopped".into()))?;
        jobs.send(job)
            .await
            .map_err(|_| Error::Storage("the log writer has stopped".into()))
    }

    /// Runs `work` on the writer thread, after everything queued before it.
    async fn run(
        &self,
        work: impl FnOnce(&Database) -> Result<(), Error> + Send + 'static,
    ) -> Result<(), Error> {
        let (done, answer) = oneshot::channel();
        self.submit(Job::Run {
            work: Box::new(work),
            done,
        })
        .await?;
        answer
            .await
            .map_err(|_| Error::Storage("the log writer has stopped".into()))?
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durable: bool,
    ) -> Result<(), Error> {
        let bytes = crate::wire::encode("stored value", value, MAX_META_BYTES)?;
        self.run(move |db| {
            let mut txn = db.begin_write()?;
            if !durable {
                txn.set_durability(Durability::None)?;
            }
            txn.open_table(RAFT_META)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, Error> {
        if let Some((_, e)) = lock(&self.shared.unflushed).last_key_value() {
            return Ok(Some(e.log_id()));
        }
        let txn = self.db().begin_read()?;
        let log = txn.open_table(RAFT_LOG)?;
        match log.last()? {
            Some((_, v)) => Ok(Some(decode_entry(v.value())?.log_id())),
            None => Ok(None),
        }
    }

    fn read_range<RB: RangeBounds<u64> + Clone>(&self, range: RB) -> Result<Vec<Entry>, Error> {
        // The file's snapshot and the copy of the unflushed entries are taken
        // under one hold of the lock. The writer commits an entry before it
        // takes it out of the unflushed map (under the same lock), so each
        // entry is in one of the two. Taken apart, an entry committed and
        // dropped from the map between the two looks would be in neither,
        // and the range would have a hole (openraft's replication then sends
        // an append whose entries do not follow its `prev_log_id`).
        let (txn, unflushed) = {
            let u = lock(&self.shared.unflushed);
            let txn = self.db().begin_read()?;
            let copy: Vec<(u64, Entry)> = u
                .range(range.clone())
                .map(|(i, e)| (*i, e.clone()))
                .collect();
            (txn, copy)
        };
        let mut out = BTreeMap::new();
        let log = txn.open_table(RAFT_LOG)?;
        for row in log.range(range)? {
            let (k, v) = row?;
            out.insert(k.value(), decode_entry(v.value())?);
        }
        // Entries not yet on disk are newer than any the file holds at their
        // index.
        out.extend(unflushed);
        Ok(out.into_values().collect())
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, Error> {
    crate::wire::decode("log entry", bytes, MAX_ENTRY_BYTES)
        .map_err(|e| Error::Corrupt(format!("log entry: {e}")))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.read_range(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(get_meta(self.db(), RAFT_META, VOTE)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged: Option<LogId> = get_meta(self.db(), RAFT_META, PURGED)?;
        let last = self.last_entry_id()?.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        Ok(self.put_meta(VOTE, vote, true).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // A hint: openraft re-learns the committed index from the leader, so
        // it may reach the file late or not at all. It reaches it in the
        // transaction of the first append that holds its entry (see
        // `writer`), never ahead of the log.
        *lock_hint(&self.shared.committed) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(c) = *lock_hint(&self.shared.committed) {
            return Ok(c);
        }
        Ok(get_meta::<Option<LogId>>(self.db(), RAFT_META, COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut rows = Vec::with_capacity(entries.len());
        for e in &entries {
            match crate::wire::encode("log entry", e, MAX_ENTRY_BYTES) {
                Ok(bytes) => rows.push((e.index(), e.log_id(), bytes)),
                Err(err) => {
                    callback.io_completed(Err(io::Error::other(err.to_string())));
                    return Err(err.into());
                }
            }
        }
        {
            let mut u = lock(&self.shared.unflushed);
            for e in entries {
                u.insert(e.index(), e);
            }
        }
        Ok(self.submit(Job::Append { rows, callback }).await?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        lock(&self.shared.unflushed).retain(|i, _| *i < from);
        Ok(self
            .run(move |db| {
                let txn = db.begin_write()?;
                txn.open_table(RAFT_LOG)?.retain_in(from.., |_, _| false)?;
                txn.commit()?;
                Ok(())
            })
            .await?)
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        let bytes = crate::wire::encode("purged log id", &upto, MAX_META_BYTES)?;
        let last = upto.index();
        lock(&self.shared.unflushed).retain(|i, _| *i > last);
        Ok(self
            .run(move |db| {
                let txn = db.begin_write()?;
                txn.open_table(RAFT_LOG)?.retain_in(..=last, |_, _| false)?;
                txn.open_table(RAFT_META)?
                    .insert(PURGED, bytes.as_slice())?;
                txn.commit()?;
                Ok(())
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_damaged_entry_is_reported_as_corruption() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = open_cluster_db(&dir.path().join("raft.redb")).expect("open");
        {
            let txn = db.begin_write().expect("txn");
            txn.open_table(RAFT_LOG)
                .expect("table")
                .insert(1, b"\xff\xfe".as_slice())
                .expect("insert");
            txn.commit().expect("commit");
        }
        let mut store = LogStore::new(db).expect("store");
        let e = store.try_get_log_entries(0..5).await.expect_err("corrupt");
        assert!(e.to_string().contains("corrupt"), "{e}");
        let e = store.get_log_state().await.expect_err("corrupt");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_read_while_entries_reach_the_disk_has_no_holes() {
        // Entries move from memory to the file while a reader reads: every
        // read must still be the whole prefix appended so far.
        let dir = tempfile::tempdir().expect("tmp");
        let db = open_cluster_db(&dir.path().join("raft.redb")).expect("open");
        let mut store = LogStore::new(db).expect("store");
        let mut reader = store.clone();
        let total = 2000u64;
        let appender = tokio::spawn(async move {
            for i in 1..=total {
                let e = Entry::new_blank(openraft::testing::log_id::<TypeConfig>(1, 1, i));
                store.append([e], IOFlushed::noop()).await.expect("append");
            }
        });
        let mut reads = 0u64;
        loop {
            let got = reader.try_get_log_entries(1..).await.expect("read");
            let indexes: Vec<u64> = got.iter().map(|e| e.index()).collect();
            let expected: Vec<u64> = (1..=indexes.len() as u64).collect();
            assert_eq!(indexes, expected, "a hole after {reads} reads");
            reads += 1;
            if indexes.len() as u64 == total {
                break;
            }
            tokio::task::yield_now().await;
        }
        appender.await.expect("appender");
    }

    #[tokio::test]
    async fn the_committed_hint_reaches_the_file_with_its_entry() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("raft.redb");
        let id = |i| openraft::testing::log_id::<TypeConfig>(1, 1, i);
        let stored = |path: &Path| -> Option<LogId> {
            let db = open_cluster_db(path).expect("open");
            get_meta::<Option<LogId>>(&db, RAFT_META, COMMITTED)
                .expect("read")
                .flatten()
        };
        {
            let mut store = LogStore::new(open_cluster_db(&path).expect("open")).expect("store");
            let entries = (1..=3).map(|i| Entry::new_blank(id(i)));
            store
                .append(entries, IOFlushed::noop())
                .await
                .expect("append");
            // Committed past this member's log (a majority without it).
            store.save_committed(Some(id(5))).await.expect("hint");
            assert_eq!(store.read_committed().await.expect("read"), Some(id(5)));
            store
                .append([Entry::new_blank(id(4))], IOFlushed::noop())
                .await
                .expect("append");
        }
        assert_eq!(stored(&path), None, "written ahead of the log");
        {
            let mut store = LogStore::new(open_cluster_db(&path).expect("open")).expect("store");
            store.save_committed(Some(id(5))).await.expect("hint");
            store
                .append([Entry::new_blank(id(5))], IOFlushed::noop())
                .await
                .expect("append");
        }
        assert_eq!(stored(&path), Some(id(5)));
    }

    #[tokio::test]
    async fn the_log_and_vote_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("raft.redb");
        let vote = Vote::new_committed(3, 2);
        {
            let mut store = LogStore::new(open_cluster_db(&path).expect("open")).expect("store");
            let entries =
                (1..=3).map(|i| Entry::new_blank(openraft::testing::log_id::<TypeConfig>(3, 2, i)));
            store
                .append(entries, IOFlushed::noop())
                .await
                .expect("append");
            store.save_vote(&vote).await.expect("vote");
            store
                .purge(openraft::testing::log_id::<TypeConfig>(3, 2, 1))
                .await
                .expect("purge");
        }
        let mut store = LogStore::new(open_cluster_db(&path).expect("reopen")).expect("store");
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        let got = store.try_get_log_entries(0..10).await.expect("read");
        assert_eq!(
            got.iter().map(|e| e.index()).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }
}
