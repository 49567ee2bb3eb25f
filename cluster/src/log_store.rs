//! The Raft log and vote in redb.
//!
//! The member's cluster file (`raft.redb`, beside the ledger's file) holds the
//! log, the vote and the state machine's own tables (see [`crate::machine`]).
//! Appends, the vote and purges commit with `Durability::Immediate` (an
//! fsync) before openraft is told they are done: a member never acknowledges
//! an entry or a vote it could forget. The committed index is written
//! without an fsync: openraft treats it as a hint and re-derives it.
//!
//! Every redb transaction begins and commits without an `.await` in between,
//! so the log and the state machine (two tasks sharing the file) never hold
//! redb's single writer across a suspension point.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

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

/// The Raft log storage of one member.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
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

impl LogStore {
    /// The log storage in `db` (from [`open_cluster_db`]).
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), Error> {
        let bytes = crate::wire::encode("stored value", value, MAX_META_BYTES)?;
        let mut txn = self.db.begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)?;
        }
        txn.open_table(RAFT_META)?.insert(key, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, Error> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(RAFT_LOG)?;
        match log.last()? {
            Some((_, v)) => Ok(Some(decode_entry(v.value())?.log_id())),
            None => Ok(None),
        }
    }

    fn read_range<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, Error> {
        let txn = self.db.begin_read()?;
        let log = txn.open_table(RAFT_LOG)?;
        let mut out = Vec::new();
        for row in log.range(range)? {
            let (_, v) = row?;
            out.push(decode_entry(v.value())?);
        }
        Ok(out)
    }

    fn append_now(&self, entries: Vec<Entry>) -> Result<(), Error> {
        let mut rows = Vec::with_capacity(entries.len());
        for e in &entries {
            let bytes = crate::wire::encode("log entry", e, MAX_ENTRY_BYTES)?;
            rows.push((e.index(), bytes));
        }
        let txn = self.db.begin_write()?;
        {
            let mut log = txn.open_table(RAFT_LOG)?;
            for (i, b) in &rows {
                log.insert(*i, b.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn truncate_now(&self, last: Option<LogId>) -> Result<(), Error> {
        let from = last.map_or(0, |l| l.index() + 1);
        let txn = self.db.begin_write()?;
        {
            let mut log = txn.open_table(RAFT_LOG)?;
            log.retain_in(from.., |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn purge_now(&self, upto: LogId) -> Result<(), Error> {
        let bytes = crate::wire::encode("purged log id", &upto, MAX_META_BYTES)?;
        let txn = self.db.begin_write()?;
        {
            let mut log = txn.open_table(RAFT_LOG)?;
            log.retain_in(..=upto.index(), |_, _| false)?;
            txn.open_table(RAFT_META)?
                .insert(PURGED, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
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
        Ok(get_meta(&self.db, RAFT_META, VOTE)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged: Option<LogId> = get_meta(&self.db, RAFT_META, PURGED)?;
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
        Ok(self.put_meta(VOTE, vote, true)?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        Ok(self.put_meta(COMMITTED, &committed, false)?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(get_meta::<Option<LogId>>(&self.db, RAFT_META, COMMITTED)?.flatten())
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
        match self.append_now(entries.into_iter().collect()) {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::other(e.to_string())));
                Err(e.into())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        Ok(self.truncate_now(last_log_id)?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        Ok(self.purge_now(log_id)?)
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
        let mut store = LogStore::new(db);
        let e = store.try_get_log_entries(0..5).await.expect_err("corrupt");
        assert!(e.to_string().contains("corrupt"), "{e}");
        let e = store.get_log_state().await.expect_err("corrupt");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    #[tokio::test]
    async fn the_log_and_vote_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("raft.redb");
        let vote = Vote::new_committed(3, 2);
        {
            let mut store = LogStore::new(open_cluster_db(&path).expect("open"));
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
        let mut store = LogStore::new(open_cluster_db(&path).expect("reopen"));
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
