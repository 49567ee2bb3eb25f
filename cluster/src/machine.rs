//! The state machine: the ledger, plus what the cluster itself must agree on
//! (pending writes, signing intents, membership).
//!
//! Applying an entry (see [`Command`]) is deterministic. Entries that change
//! the ledger commit to the ledger's own file; the cluster's part (pending
//! writes, intents, the last applied log id, the membership) goes to the
//! member's cluster file in one transaction per applied run of entries.
//! Neither fsyncs for itself: the Raft log holds every entry durably, so a
//! member that crashes applies again what came after its last durable
//! applied id.
//!
//! What makes that safe:
//!
//! - The ledger defers its fsyncs ([`Store::defer_fsync`]) and is synced at
//!   most [`LEDGER_SYNC_AFTER`] after its first unsynced commit, so a crash
//!   reopens it whole, as of its last sync.
//! - The machine commits the cluster file durably at least every
//!   [`CLUSTER_SYNC_AFTER`] while it applies (a vote and a snapshot do too).
//!   The applied id written there is never past what the ledger holds on
//!   disk: it is the last id applied when the ledger was last known synced,
//!   not the last applied.
//! - The Raft log (files of its own) is never purged past that id: openraft
//!   purges only below a snapshot, whose builder first claims the snapshot's
//!   applied id durably.
//! - Replay after a crash therefore finds the ledger exactly where that id
//!   left it, and the cluster tables possibly further on. Every change is
//!   idempotent for that reason: a batch already merged is `AlreadyMerged`,
//!   a block at or below the tip is checked against the stored one and
//!   skipped, engine records land by position, a pending write is added
//!   once (by id) at a place the log fixes and removed by id, an intent
//!   already recorded is recorded again as is.
//!
//! Snapshots are files ([`crate::snapshot`]) built from the ledger's file and
//! the cluster tables, and installed by swapping the ledger's file. They are
//! written on demand: what openraft's policy asks for every so many entries
//! is a mark (the state as of an applied id, made durable, so the log under
//! it may be purged), and the file is written only when a snapshot is asked
//! for, to send to a member that fell behind (or at a start), as of the
//! state then. A member that never needs one never copies its ledger.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use pyralog_ledger::block::{VerifiedBatch, VerifiedBlock, verify_txs_memo};
use pyralog_ledger::codec::Decode;
use pyralog_ledger::{Hash, MergeOutcome, Store, Transaction};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::command::{BatchOutcome, Command, Failed, Ordered, Response};
use crate::error::Error;
use crate::intent::{SigningHistory, Slot};
use crate::ledger::Ledger;
use crate::log_store::{MAX_META_BYTES, get_meta};
use crate::snapshot::{self, ClusterState, SnapshotFile};
use crate::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// `applied`, `membership`, `floor`, `snapshot`.
const SM_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sm_meta");
/// Pending writes, oldest first: [`PendingKey`] → transaction id ‖
/// canonical transaction bytes. The keys follow the log, so new writes land
/// at the table's end (a few pages per commit) instead of at random places
/// (a page each); the id beside each write rebuilds [`PendingIndex`] on
/// open without decoding it.
const SM_PENDING: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("sm_pending_fifo");
/// The layout before `sm_pending_fifo` (transaction id → canonical bytes);
/// its rows are moved on open.
const OLD_PENDING: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("sm_pending");
/// Signing intents: slot key → digest.
const SM_INTENTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("sm_intents");

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";
const FLOOR: &str = "floor";
const SNAPSHOT: &str = "snapshot";

/// The most writes that may wait for a batch or block.
pub const MAX_PENDING: usize = 100_000;
/// The most bytes of writes that may wait.
pub const MAX_PENDING_BYTES: usize = 256 << 20;

/// Caps on the writes that wait for a batch or block. Every member of a
/// cluster must use the same caps, or they would refuse different writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingLimits {
    /// Writes.
    pub count: usize,
    /// Bytes of writes.
    pub bytes: usize,
}

impl Default for PendingLimits {
    fn default() -> Self {
        PendingLimits {
            count: MAX_PENDING,
            bytes: MAX_PENDING_BYTES,
        }
    }
}
/// Entries applied in one cluster-file transaction at most.
pub const APPLY_CHUNK: usize = 1024;

/// How long the ledger may hold commits that are not on disk before the
/// state machine syncs it (after answering the run of entries that finds it
/// so; the next run claims it): what a crash makes the member apply again,
/// and what bounds the file's growth (redb reuses the pages a commit frees
/// only after a durable one).
///
/// Seconds, not milliseconds: redb keeps the pages of commits that are not
/// durable in memory and writes each page once at the durable one, however
/// often it changed since. The ledger's tables are keyed by hashes, so every
/// write dirties a page of its own; synced every 100 ms a node wrote about
/// 25 MB/s at 5,000 writes/s, synced every 2 s a quarter of that, and the
/// four nodes of a devnet stopped crowding each other's log fsyncs
/// (docs/BENCHMARKS.md, "The ledger synced every two seconds").
pub const LEDGER_SYNC_AFTER: Duration = Duration::from_secs(2);

/// How long the state machine's tables in the cluster file may go without a
/// durable commit while entries are applied. The Raft log has files of its
/// own, so nothing else makes them durable; what a crash loses of them is
/// applied again from the log.
///
/// A second, not 100 ms: each durable commit writes and syncs the pages
/// changed since the last (the pending table's change with every write) while
/// the members' log appends wait on the same disk. With 64 clients, 100 ms gave
/// 31,678-35,920 writes/s and a second 36,383-38,385 in the first round of four
/// pairs, the same in the second (docs/BENCHMARKS.md, "Clusters").
pub const CLUSTER_SYNC_AFTER: Duration = Duration::from_secs(1);

/// Where a pending write lies in its table: the index of the log entry that
/// brought it and its position in that entry, big-endian. A function of the
/// log alone, so applying an entry again (after a crash) puts a write where
/// it was; a snapshot's writes take index 0, before anything applied later.
type PendingKey = [u8; 12];

fn pending_key(index: u64, position: u32) -> PendingKey {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&index.to_be_bytes());
    key[8..].copy_from_slice(&position.to_be_bytes());
    key
}

/// A pending write as its table stores it: id ‖ transaction bytes.
fn pending_row(id: &Hash, tx: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(32 + tx.len());
    row.extend_from_slice(&id.0);
    row.extend_from_slice(tx);
    row
}

/// A pending row's id and transaction bytes.
fn split_pending_row(row: &[u8]) -> Result<(Hash, &[u8]), Error> {
    let (id, tx) = row.split_first_chunk::<32>().ok_or_else(|| {
        Error::Corrupt(format!(
            "a pending write of {} bytes, shorter than its id",
            row.len()
        ))
    })?;
    Ok((Hash(*id), tx))
}

/// Pending writes held in memory before they go to the table, at most (a
/// run of entries may take the count past it once).
///
/// A few hundred: each time they go, their inserts hold up the runs behind
/// them. With 64 clients, 4,096 gave a p99 of 7.4-8.8 ms, 1,024 4.5-5.1 and
/// 256 4.3-4.5, with the same throughput (docs/BENCHMARKS.md, "Clusters").
pub const UNWRITTEN_ROWS: usize = 256;
/// Bytes of them.
const UNWRITTEN_BYTES: usize = 1 << 20;

/// The pending writes by id: where each lies in the table and its size.
#[derive(Debug, Default)]
struct PendingIndex {
    slots: std::collections::HashMap<Hash, (PendingKey, usize)>,
    bytes: usize,
    /// Writes made pending by runs of entries that changed nothing else,
    /// not in the table yet, in key order: the next transaction of the
    /// cluster file writes them (see [`LedgerMachine::write_ops`]).
    unwritten: Unwritten,
}

/// Rows kept back from the pending table.
#[derive(Debug, Default)]
struct Unwritten {
    rows: Vec<(PendingKey, Vec<u8>)>,
    bytes: usize,
}

impl Unwritten {
    fn is_full(&self) -> bool {
        self.rows.len() >= UNWRITTEN_ROWS || self.bytes >= UNWRITTEN_BYTES
    }
}

impl PendingIndex {
    fn add(&mut self, id: Hash, key: PendingKey, size: usize) {
        if let Some((_, old)) = self.slots.insert(id, (key, size)) {
            self.bytes = self.bytes.saturating_sub(old);
        }
        self.bytes += size;
    }

    fn remove(&mut self, id: &Hash) -> Option<PendingKey> {
        let (key, size) = self.slots.remove(id)?;
        self.bytes = self.bytes.saturating_sub(size);
        Some(key)
    }
}

/// Moves the rows of the table's old layout (keyed by id) into the new one,
/// in the old order, once.
fn migrate_pending(db: &Database) -> Result<(), Error> {
    let old_exists = db
        .begin_read()?
        .list_tables()?
        .any(|t| redb::TableHandle::name(&t) == redb::TableHandle::name(&OLD_PENDING));
    if !old_exists {
        return Ok(());
    }
    let txn = db.begin_write()?;
    {
        let rows = {
            let old = txn.open_table(OLD_PENDING)?;
            let mut rows = Vec::new();
            for row in old.iter()? {
                let (k, v) = row?;
                let id: [u8; 32] = k
                    .value()
                    .try_into()
                    .map_err(|_| Error::Corrupt("a pending write's id".into()))?;
                rows.push((Hash(id), v.value().to_vec()));
            }
            rows
        };
        put_first(&mut txn.open_table(SM_PENDING)?, &rows)?;
    }
    txn.delete_table(OLD_PENDING)?;
    txn.commit()?;
    Ok(())
}

/// Puts `writes` (id, transaction bytes) in the pending table in this order,
/// before anything the log brings later (entry index 0), and returns their
/// index: how a snapshot's writes and the old layout's come in.
fn put_first(
    table: &mut redb::Table<'_, &[u8], &[u8]>,
    writes: &[(Hash, Vec<u8>)],
) -> Result<PendingIndex, Error> {
    let mut index = PendingIndex::default();
    for ((id, tx), position) in writes.iter().zip(0u32..) {
        let key = pending_key(0, position);
        table.insert(key.as_slice(), pending_row(id, tx).as_slice())?;
        index.add(*id, key, tx.len());
    }
    Ok(index)
}

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), Error> {
    txn.open_table(SM_META)?;
    txn.open_table(SM_PENDING)?;
    txn.open_table(SM_INTENTS)?;
    Ok(())
}

/// The current snapshot's metadata and file name (in the snapshot folder).
/// An empty name marks a snapshot not written yet: the state as of `meta`,
/// durable, to be written (as of the state then) when one is asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    file: String,
}

impl Current {
    fn is_written(&self) -> bool {
        !self.file.is_empty()
    }
}

/// What applying the log did that the node acts on: the leader's engine
/// takes new pending writes, and clients waiting on a member hear of their
/// writes reaching the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A write joined the pending set (the log entry's own copy, shared).
    Write(Arc<Transaction>),
    /// These transactions reached the ledger in a merged gossip batch.
    Batch(Vec<Hash>),
    /// These transactions reached the ledger in a finalized block; `failed`
    /// names those kept without effect, with the ledger's reason.
    Block {
        /// The block's transactions.
        ids: Vec<Hash>,
        /// Those that failed.
        failed: Vec<(Hash, pyralog_ledger::Error)>,
    },
}

/// The most applied events queued for the node; past it they are dropped and
/// [`MachineView::take_lagged`] says so (the node then rereads the state).
pub const APPLIED_QUEUE: usize = 65_536;

/// Where applied events go, if the node listens.
#[derive(Clone, Default)]
struct Events {
    tx: Arc<Mutex<Option<tokio::sync::mpsc::Sender<Applied>>>>,
    lagged: Arc<std::sync::atomic::AtomicBool>,
}

impl Events {
    fn send(&self, event: Applied) {
        let Ok(guard) = self.tx.lock() else { return };
        if let Some(tx) = guard.as_ref()
            && tx.try_send(event).is_err()
        {
            self.lagged
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// What the rest of the member reads of the state machine: the ledger, the
/// signing history, the pending writes.
#[derive(Clone)]
pub struct MachineView {
    db: Arc<Database>,
    ledger: Ledger,
    history: Arc<RwLock<SigningHistory>>,
    pending: Arc<RwLock<PendingIndex>>,
    events: Events,
}

impl std::fmt::Debug for MachineView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineView").finish_non_exhaustive()
    }
}

impl MachineView {
    /// Events of what is applied from now on (one listener; a new call
    /// replaces the last).
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<Applied> {
        let (tx, rx) = tokio::sync::mpsc::channel(APPLIED_QUEUE);
        if let Ok(mut guard) = self.events.tx.lock() {
            *guard = Some(tx);
        }
        rx
    }

    /// Whether events were dropped since the last call (the queue was full).
    pub fn take_lagged(&self) -> bool {
        self.events
            .lagged
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A copy of the signing history as applied so far.
    pub fn history(&self) -> Result<SigningHistory, Error> {
        self.history
            .read()
            .map(|h| h.clone())
            .map_err(|_| Error::Storage("the history lock is poisoned".into()))
    }

    /// Checks a statement against the applied signing history.
    pub fn check_intent(
        &self,
        s: &pyralog_consensus::bft::Statement,
    ) -> Result<crate::intent::Verdict, Error> {
        let h = self
            .history
            .read()
            .map_err(|_| Error::Storage("the history lock is poisoned".into()))?;
        Ok(h.check(s)?)
    }

    /// Whether a write is pending.
    pub fn is_pending(&self, id: &Hash) -> Result<bool, Error> {
        Ok(self.pending_index()?.slots.contains_key(id))
    }

    fn pending_index(&self) -> Result<std::sync::RwLockReadGuard<'_, PendingIndex>, Error> {
        self.pending
            .read()
            .map_err(|_| Error::Storage("the pending index's lock is poisoned".into()))
    }

    fn pending_index_mut(&self) -> Result<std::sync::RwLockWriteGuard<'_, PendingIndex>, Error> {
        self.pending
            .write()
            .map_err(|_| Error::Storage("the pending index's lock is poisoned".into()))
    }

    /// Up to `max` pending writes, oldest first (what the leader's engine
    /// seals into its next batch or proposal).
    pub fn pending(&self, max: usize) -> Result<Vec<Transaction>, Error> {
        // The table as of a moment when the rows kept back are these: the
        // machine writes them to the table, then forgets them under the
        // index's lock, so a row may be seen in both (once is taken), never
        // in neither.
        let (txn, unwritten) = {
            let index = self.pending_index()?;
            let txn = self.db.begin_read()?;
            let rows: Vec<(PendingKey, Vec<u8>)> =
                index.unwritten.rows.iter().take(max).cloned().collect();
            (txn, rows)
        };
        let decode = |row: &[u8]| -> Result<Transaction, Error> {
            let (_, tx) = split_pending_row(row)?;
            Transaction::from_bytes(tx).map_err(|e| Error::Corrupt(format!("pending write: {e}")))
        };
        let t = txn.open_table(SM_PENDING)?;
        let mut out = Vec::new();
        let mut last: Option<PendingKey> = None;
        for row in t.iter()?.take(max) {
            let (k, v) = row?;
            last = k.value().try_into().ok();
            out.push(decode(v.value())?);
        }
        // Kept-back rows come after every row of the table: their keys are
        // of entries applied since it was last written.
        for (key, row) in unwritten {
            if out.len() >= max {
                break;
            }
            if last.is_none_or(|l| key > l) {
                out.push(decode(&row)?);
            }
        }
        Ok(out)
    }

    /// How many writes are pending.
    pub fn pending_len(&self) -> Result<u64, Error> {
        Ok(self.pending_index()?.slots.len() as u64)
    }
}

/// The state machine of one member.
pub struct LedgerMachine {
    view: MachineView,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// The applied id and membership the cluster file may claim: the last
    /// ones applied when the ledger was known to be on disk.
    durable: Option<LogId>,
    durable_membership: StoredMembership,
    /// Since when the ledger has held commits not on disk.
    unsynced_since: Option<Instant>,
    /// When the cluster file last had a durable commit of this machine's.
    cluster_synced_at: Instant,
    /// The entry being applied: its index, for the keys of the writes it
    /// makes pending.
    applying: u64,
    /// While a run of entries that leaves the ledger alone is applied: which
    /// of its writes the ledger already holds, looked up in one read.
    in_ledger: Option<HashSet<Hash>>,
    /// With `in_ledger`: the run's writes' ids and bytes, in the order they
    /// come in it, encoded once for that lookup and taken by
    /// [`LedgerMachine::pend`] as it reaches each write.
    encoded: std::collections::VecDeque<(Hash, Vec<u8>)>,
    /// The applied id and membership id the cluster file's meta rows hold,
    /// once this machine wrote them (they are rewritten only when changed).
    meta_written: Option<(Option<LogId>, Option<LogId>)>,
    /// How many records the ledger's engine log holds.
    engine_len: u64,
    limits: PendingLimits,
    snapshot_dir: PathBuf,
    current: Arc<Mutex<Option<Current>>>,
    snapshot_seq: u64,
}

impl std::fmt::Debug for LedgerMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerMachine")
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

/// The answers of an applied run of entries, for their responders.
type Replies = Vec<(
    Option<openraft::storage::ApplyResponder<TypeConfig>>,
    Response,
)>;

/// Runs storage work that blocks (fsyncs, file copies) without stalling the
/// runtime's other tasks: on a multi-threaded runtime the worker hands its
/// other tasks off first; on a single-threaded one (unit tests) it just runs.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Whether applying `payload` may write the ledger (and fsync it).
fn touches_ledger(payload: &openraft::alias::EntryPayloadOf<TypeConfig>) -> bool {
    match payload {
        EntryPayload::Normal(cmd) => match cmd {
            Command::Write(_)
            | Command::Writes(_)
            | Command::Intent(_)
            | Command::PruneIntents { .. } => false,
            Command::Batch { .. }
            | Command::Batches { .. }
            | Command::Block(_)
            | Command::Ordered(_)
            | Command::Turn { .. }
            | Command::EngineRecords { .. } => true,
        },
        EntryPayload::Blank | EntryPayload::Membership(_) => false,
    }
}

/// One cluster-table change collected while applying, written at the end.
enum Op {
    AddPending(PendingKey, Vec<u8>),
    RemovePending(Vec<PendingKey>),
    Intent(Slot, Hash),
    Prune(Vec<Slot>, u64),
}

impl LedgerMachine {
    /// The state machine over the cluster file `db` and `ledger`; snapshots
    /// are kept in `snapshot_dir`.
    pub fn open(
        db: Arc<Database>,
        ledger: Ledger,
        snapshot_dir: &Path,
    ) -> Result<LedgerMachine, Error> {
        std::fs::create_dir_all(snapshot_dir)?;
        let applied = get_meta::<Option<LogId>>(&db, SM_META, APPLIED)?.flatten();
        let membership: StoredMembership = get_meta(&db, SM_META, MEMBERSHIP)?.unwrap_or_default();
        let floor = get_meta::<u64>(&db, SM_META, FLOOR)?.unwrap_or(0);
        let current = get_meta::<Current>(&db, SM_META, SNAPSHOT)?;
        let mut intents = BTreeMap::new();
        migrate_pending(&db)?;
        let mut pending = PendingIndex::default();
        {
            let txn = db.begin_read()?;
            for row in txn.open_table(SM_INTENTS)?.iter()? {
                let (k, v) = row?;
                let slot = Slot::from_key(k.value())
                    .ok_or_else(|| Error::Corrupt("a signing intent's key".into()))?;
                let digest: [u8; 32] = v
                    .value()
                    .try_into()
                    .map_err(|_| Error::Corrupt("a signing intent's digest".into()))?;
                intents.insert(slot, Hash(digest));
            }
            for row in txn.open_table(SM_PENDING)?.iter()? {
                let (k, v) = row?;
                let key: PendingKey = k
                    .value()
                    .try_into()
                    .map_err(|_| Error::Corrupt("a pending write's key".into()))?;
                let (id, tx) = split_pending_row(v.value())?;
                pending.add(id, key, tx.len());
            }
        }
        let engine_len = ledger.read()?.engine_records_len()?;
        Ok(LedgerMachine {
            view: MachineView {
                db,
                ledger,
                history: Arc::new(RwLock::new(SigningHistory::from_parts(intents, floor))),
                pending: Arc::new(RwLock::new(pending)),
                events: Events::default(),
            },
            durable: applied,
            durable_membership: membership.clone(),
            unsynced_since: None,
            cluster_synced_at: Instant::now(),
            applied,
            membership,
            applying: 0,
            in_ledger: None,
            encoded: std::collections::VecDeque::new(),
            meta_written: None,
            engine_len,
            limits: PendingLimits::default(),
            snapshot_dir: snapshot_dir.to_path_buf(),
            current: Arc::new(Mutex::new(current)),
            snapshot_seq: 0,
        })
    }

    /// The same machine with other caps on pending writes.
    pub fn with_pending_limits(mut self, limits: PendingLimits) -> LedgerMachine {
        self.limits = limits;
        self
    }

    /// What the rest of the member reads.
    pub fn view(&self) -> MachineView {
        self.view.clone()
    }

    fn history_mut(&self) -> Result<std::sync::RwLockWriteGuard<'_, SigningHistory>, Error> {
        self.view
            .history
            .write()
            .map_err(|_| Error::Storage("the history lock is poisoned".into()))
    }

    /// Applies one command; collects the cluster-table changes in `ops`.
    /// `Err` only for a failure of this member's storage.
    fn apply_command(&mut self, cmd: &Command, ops: &mut Vec<Op>) -> Result<Response, Error> {
        let refused = |e: pyralog_ledger::Error| -> Result<Response, Error> {
            if e.is_fatal() {
                Err(Error::Ledger(e))
            } else {
                Ok(Response::Refused {
                    reason: e.to_string(),
                })
            }
        };
        match cmd {
            Command::Write(tx) => self.pend(tx, 0, ops),
            Command::Writes(txs) => {
                let mut answers = Vec::with_capacity(txs.len());
                for (position, tx) in (0u32..).zip(txs) {
                    answers.push(match self.pend(tx, position, ops)? {
                        Response::Pending { .. } => None,
                        Response::Refused { reason } => Some(reason),
                        other => Some(format!("unexpected: {other:?}")),
                    });
                }
                Ok(Response::Writes(answers))
            }
            Command::Batch { batch, now_ms } => {
                // A group of one.
                let outcome = match self.apply_batches(std::slice::from_ref(batch), *now_ms, ops)? {
                    Response::Batches(mut outcomes) => outcomes.pop(),
                    _ => None,
                };
                Ok(match outcome {
                    Some(BatchOutcome::Merged(state_root)) => Response::Merged {
                        state_root,
                        already: false,
                    },
                    Some(BatchOutcome::Already) => Response::Merged {
                        state_root: self.view.ledger.read()?.state_root(),
                        already: true,
                    },
                    Some(BatchOutcome::Refused { reason, .. }) => Response::Refused { reason },
                    None => return Err(Error::Corrupt("a merge without an outcome".into())),
                })
            }
            Command::Batches { batches, now_ms } => self.apply_batches(batches, *now_ms, ops),
            Command::Block(block) => {
                let height = block.header.height;
                let ids: Vec<Hash> = block.txs.iter().map(Transaction::id).collect();
                if let Some(r) = self.already_applied(height, Some(block.header.hash()))? {
                    self.unpend(ids, ops)?;
                    return Ok(r);
                }
                let verified = match VerifiedBlock::verify(block.clone()) {
                    Ok(v) => v,
                    Err(e) => return refused(e),
                };
                let tip = {
                    let mut store = self.view.ledger.write()?;
                    store.apply_block(&verified)
                };
                match tip {
                    Ok(tip) => {
                        self.view.events.send(Applied::Block {
                            ids: ids.clone(),
                            failed: Vec::new(),
                        });
                        self.unpend(ids, ops)?;
                        Ok(Response::Block {
                            height: tip.height,
                            state_root: tip.state_root,
                            failed: Vec::new(),
                        })
                    }
                    Err(e) => refused(e),
                }
            }
            Command::Ordered(o) => self.apply_ordered(o, ops),
            Command::Intent(s) => {
                let result = self.history_mut()?.record(s);
                if matches!(result, Ok(crate::intent::Verdict::New)) {
                    ops.push(Op::Intent(Slot::of(s), s.digest));
                }
                Ok(Response::Intent(result.map(|_| ())))
            }
            Command::EngineRecords { from, records } => self.append_records(*from, records),
            Command::Turn {
                from,
                records,
                intents,
            } => {
                // The intents first: a refused one is answered, the others
                // are recorded; then the records, whatever they were.
                let mut answers = Vec::with_capacity(intents.len());
                for s in intents {
                    let result = self.history_mut()?.record(s);
                    if matches!(result, Ok(crate::intent::Verdict::New)) {
                        ops.push(Op::Intent(Slot::of(s), s.digest));
                    }
                    answers.push(result.err().map(|r| format!("{r:?}")));
                }
                match self.append_records(*from, records)? {
                    Response::Done => Ok(Response::Turn(answers)),
                    refused => Ok(refused),
                }
            }
            Command::PruneIntents { below } => {
                let mut h = self.history_mut()?;
                let gone = h.prune_below(*below);
                ops.push(Op::Prune(gone, h.floor()));
                Ok(Response::Done)
            }
        }
    }

    /// Merges several batches in one ledger commit; a refused one changes
    /// nothing and does not stop the others.
    fn apply_batches(
        &mut self,
        batches: &[pyralog_ledger::Batch],
        now_ms: u64,
        ops: &mut Vec<Op>,
    ) -> Result<Response, Error> {
        let refusal = |e: &pyralog_ledger::Error| BatchOutcome::Refused {
            reason: e.to_string(),
            peer_fault: e.is_peer_fault(),
        };
        let mut outcomes: Vec<Option<BatchOutcome>> = Vec::with_capacity(batches.len());
        let mut verified = Vec::with_capacity(batches.len());
        for batch in batches {
            match VerifiedBatch::verify_memo(batch.clone(), None) {
                Ok(v) => {
                    outcomes.push(None);
                    verified.push(v);
                }
                Err(e) if e.is_fatal() => return Err(Error::Ledger(e)),
                Err(e) => outcomes.push(Some(refusal(&e))),
            }
        }
        let merged = {
            let mut store = self.view.ledger.write()?;
            store.merge_batches(&verified, now_ms)?
        };
        let mut merged = verified.iter().zip(merged);
        let mut out = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            if let Some(refused) = outcome {
                out.push(refused);
                continue;
            }
            let Some((batch, result)) = merged.next() else {
                return Err(Error::Corrupt("a merge without an outcome".into()));
            };
            let ids: Vec<Hash> = batch.txs().iter().map(|t| t.id()).collect();
            out.push(match result {
                Ok(MergeOutcome::Merged { state_root }) => {
                    self.view.events.send(Applied::Batch(ids.clone()));
                    self.unpend(ids, ops)?;
                    BatchOutcome::Merged(state_root)
                }
                Ok(MergeOutcome::AlreadyMerged) => {
                    self.unpend(ids, ops)?;
                    BatchOutcome::Already
                }
                Err(e) if e.is_fatal() => return Err(Error::Ledger(e)),
                Err(e) => refusal(&e),
            });
        }
        Ok(Response::Batches(out))
    }

    /// Appends engine records at position `from` of the ledger's engine log;
    /// a group already there is skipped, one that would leave a gap refused.
    fn append_records(&mut self, from: u64, records: &[Vec<u8>]) -> Result<Response, Error> {
        let end = from.saturating_add(records.len() as u64);
        // Nothing to append leaves no gap, wherever its leader thought the
        // log ended (a turn of intents only, after a block that a previous
        // leader's entry had already applied).
        if records.is_empty() || end <= self.engine_len {
            return Ok(Response::Done);
        }
        if from > self.engine_len {
            return Ok(Response::Refused {
                reason: format!(
                    "engine records at {from} would leave a gap after {}",
                    self.engine_len
                ),
            });
        }
        let skip = (self.engine_len - from) as usize;
        self.view
            .ledger
            .write()?
            .append_engine_records(&records[skip..])?;
        self.engine_len = end;
        Ok(Response::Done)
    }

    /// Adds a client's write to the pending set (once), unless the set is
    /// full.
    fn pend(
        &mut self,
        tx: &Arc<Transaction>,
        position: u32,
        ops: &mut Vec<Op>,
    ) -> Result<Response, Error> {
        let (id, bytes) = match self.encoded.pop_front() {
            Some(encoded) => encoded,
            None => tx.id_and_bytes(),
        };
        debug_assert_eq!(id, tx.id(), "a run's writes taken out of order");
        // The index and the ledger are locked one after the other, never
        // one inside the other (readers take them in either order).
        let in_ledger = |id: &Hash| -> Result<bool, Error> {
            Ok(match &self.in_ledger {
                Some(found) => found.contains(id),
                None => self.view.ledger.read()?.tx_location(id)?.is_some(),
            })
        };
        if self.view.is_pending(&id)? || in_ledger(&id)? {
            // Resubmitted (a client retry, or a replay), or already in the
            // ledger (its batch or block came first): once only.
            return Ok(Response::Pending { id });
        }
        let mut index = self.view.pending_index_mut()?;
        if index.slots.len() >= self.limits.count || index.bytes + bytes.len() > self.limits.bytes {
            return Ok(Response::Refused {
                reason: format!(
                    "the cluster's pending writes are full ({} writes, {} bytes)",
                    index.slots.len(),
                    index.bytes
                ),
            });
        }
        let key = pending_key(self.applying, position);
        index.add(id, key, bytes.len());
        drop(index);
        ops.push(Op::AddPending(key, pending_row(&id, &bytes)));
        self.view.events.send(Applied::Write(Arc::clone(tx)));
        Ok(Response::Pending { id })
    }

    /// Forgets pending writes that a batch or block carried.
    fn unpend(&mut self, ids: Vec<Hash>, ops: &mut Vec<Op>) -> Result<(), Error> {
        let mut index = self.view.pending_index_mut()?;
        let keys: Vec<PendingKey> = ids.iter().filter_map(|id| index.remove(id)).collect();
        drop(index);
        if !keys.is_empty() {
            ops.push(Op::RemovePending(keys));
        }
        Ok(())
    }

    /// The block stored at `height`, if the ledger reached it.
    fn stored_block_at(&self, height: u64) -> Result<Option<pyralog_ledger::Block>, Error> {
        let store = self.view.ledger.read()?;
        if height > store.tip().height {
            return Ok(None);
        }
        Ok(store.block(height)?)
    }

    /// If the ledger is already at or past `height`, the answer for a block
    /// there (re-applied after a restart); a different block at that height
    /// is refused.
    fn already_applied(&self, height: u64, hash: Option<Hash>) -> Result<Option<Response>, Error> {
        let store = self.view.ledger.read()?;
        let tip = store.tip();
        if height > tip.height {
            return Ok(None);
        }
        let stored = store.block(height)?;
        Ok(Some(match (stored, hash) {
            (Some(b), Some(h)) if b.header.hash() != h => Response::Refused {
                reason: format!("height {height} already holds block {}", b.header.hash()),
            },
            (Some(b), _) => Response::Block {
                height,
                state_root: b.header.state_root,
                failed: Vec::new(),
            },
            (None, _) => Response::Refused {
                reason: format!("height {height} is at or below the tip {}", tip.height),
            },
        }))
    }

    fn apply_ordered(&mut self, o: &Ordered, ops: &mut Vec<Op>) -> Result<Response, Error> {
        let ids: Vec<Hash> = o.txs.iter().map(Transaction::id).collect();
        if let Some(stored) = self.stored_block_at(o.height)?
            && (stored.header.proposer != o.proposer
                || stored.header.engine_data != o.engine_data
                || !stored
                    .txs
                    .iter()
                    .map(Transaction::id)
                    .eq(ids.iter().copied()))
        {
            // Another slot already fills this height. Answering with that
            // block would tell whoever proposed this one that its
            // transactions were applied.
            return Ok(Response::Refused {
                reason: format!(
                    "height {} already holds another block ({})",
                    o.height,
                    stored.header.hash()
                ),
            });
        }
        if let Some(r) = self.already_applied(o.height, None)? {
            self.unpend(ids, ops)?;
            return Ok(r);
        }
        let tip_height = self.view.ledger.read()?.tip().height;
        if o.height != tip_height + 1 {
            return Ok(Response::Refused {
                reason: format!(
                    "ordered slot {} does not follow the tip {tip_height}",
                    o.height
                ),
            });
        }
        // The leader checked these signatures when it took them: its memo
        // saves a second check in the same process.
        let txs = match verify_txs_memo(o.txs.clone(), None) {
            Ok(t) => t,
            Err(e) if !e.is_fatal() => {
                return Ok(Response::Refused {
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let result = {
            let mut store = self.view.ledger.write()?;
            store.commit_ordered_with_votes(
                o.proposer,
                o.timestamp_ms,
                txs,
                o.engine_data.clone(),
                o.certificate.clone(),
                &o.records,
                o.votes.as_ref(),
            )
        };
        match result {
            Ok((tip, failed)) => {
                self.engine_len += o.records.len() as u64;
                let reasons = failed
                    .iter()
                    .map(|(id, e)| Failed {
                        id: *id,
                        reason: e.to_string(),
                    })
                    .collect();
                self.view.events.send(Applied::Block {
                    ids: ids.clone(),
                    failed,
                });
                self.unpend(ids, ops)?;
                Ok(Response::Block {
                    height: tip.height,
                    state_root: tip.state_root,
                    failed: reasons,
                })
            }
            Err(e) if !e.is_fatal() => Ok(Response::Refused {
                reason: e.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies a run of entries and writes the cluster tables once; returns
    /// the answers to send.
    fn apply_chunk(&mut self, chunk: Vec<EntryResponder<TypeConfig>>) -> Result<Replies, Error> {
        let mut ops = Vec::new();
        let mut replies = Vec::with_capacity(chunk.len());
        // Nothing in the run changes the ledger, so whether it holds a write
        // can be read for all of them at once.
        self.in_ledger = if chunk.iter().all(|(e, _)| !touches_ledger(&e.payload)) {
            self.encoded = chunk
                .iter()
                .flat_map(|(e, _)| match &e.payload {
                    EntryPayload::Normal(Command::Write(tx)) => std::slice::from_ref(tx),
                    EntryPayload::Normal(Command::Writes(txs)) => txs.as_slice(),
                    _ => &[],
                })
                .map(|tx| tx.id_and_bytes())
                .collect();
            let ids: Vec<Hash> = self.encoded.iter().map(|(id, _)| *id).collect();
            Some(self.view.ledger.read()?.applied_of(&ids)?)
        } else {
            None
        };
        let applied = self.apply_run(chunk, &mut ops, &mut replies);
        self.in_ledger = None;
        self.encoded.clear();
        applied?;
        self.write_or_keep(ops)?;
        Ok(replies)
    }

    /// Writes a run's changes, or keeps them back when they are new pending
    /// writes only (or nothing) and there is room: a lone write's answer then
    /// waits for no transaction of the cluster file, and a busy member writes
    /// its new pending writes a few hundred to a transaction instead of a
    /// run's worth. Nothing is lost by waiting: a crash loses the cluster file's
    /// commits that were not durable anyway, and the log holds every entry
    /// after the applied id the file claims (which waits too).
    fn write_or_keep(&mut self, ops: Vec<Op>) -> Result<(), Error> {
        if ops.iter().all(|op| matches!(op, Op::AddPending(..))) {
            let mut index = self.view.pending_index_mut()?;
            if !index.unwritten.is_full() {
                for op in ops {
                    if let Op::AddPending(key, row) = op {
                        index.unwritten.bytes += row.len();
                        index.unwritten.rows.push((key, row));
                    }
                }
                return Ok(());
            }
        }
        self.write_ops(ops, Durability::None)
    }

    /// [`LedgerMachine::apply_chunk`]'s entries, one by one.
    fn apply_run(
        &mut self,
        chunk: Vec<EntryResponder<TypeConfig>>,
        ops: &mut Vec<Op>,
        replies: &mut Replies,
    ) -> Result<(), Error> {
        for (entry, responder) in chunk {
            let log_id = entry.log_id();
            self.applying = log_id.index;
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(cmd) => self.apply_command(cmd, ops)?,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m.clone());
                    Response::Done
                }
            };
            self.applied = Some(log_id);
            replies.push((responder, response));
        }
        Ok(())
    }

    /// Commits the cluster tables durably, claiming the applied id the
    /// ledger allows.
    fn sync_cluster_file(&mut self) -> Result<(), Error> {
        self.write_ops(Vec::new(), Durability::Immediate)?;
        self.cluster_synced_at = Instant::now();
        Ok(())
    }

    /// Whether the cluster file has gone [`CLUSTER_SYNC_AFTER`] without a
    /// durable commit of this machine's.
    fn cluster_sync_due(&self) -> bool {
        self.cluster_synced_at.elapsed() >= CLUSTER_SYNC_AFTER
    }

    /// Whether the ledger has held unsynced commits for [`LEDGER_SYNC_AFTER`]
    /// ([`LedgerMachine::settle`] syncs it then).
    fn sync_due(&self) -> Result<bool, Error> {
        Ok(!self.view.ledger.read()?.is_synced()
            && self
                .unsynced_since
                .is_some_and(|since| since.elapsed() >= LEDGER_SYNC_AFTER))
    }

    /// Moves the applied id the cluster file may claim up to the last
    /// applied if the ledger is on disk, syncing it first when `force` or
    /// when it has held unsynced commits for [`LEDGER_SYNC_AFTER`].
    fn settle(&mut self, force: bool) -> Result<(), Error> {
        if !self.view.ledger.read()?.is_synced() {
            self.unsynced_since.get_or_insert_with(Instant::now);
            if !force && !self.sync_due()? {
                return Ok(());
            }
            // Under the read lock: queries and the driver's reads go on
            // while the ledger's pages reach the disk.
            self.view.ledger.read()?.sync()?;
        }
        self.unsynced_since = None;
        self.durable = self.applied;
        if self.durable_membership.log_id() != self.membership.log_id() {
            self.durable_membership = self.membership.clone();
        }
        Ok(())
    }

    /// Writes the pending writes kept back, the collected changes and the
    /// applied id the ledger allows (see the module docs) in one
    /// transaction.
    fn write_ops(&mut self, ops: Vec<Op>, durability: Durability) -> Result<(), Error> {
        let meta_now = (self.durable, *self.durable_membership.log_id());
        let meta_rows = if self.meta_written != Some(meta_now) {
            Some((
                crate::wire::encode("applied", &self.durable, MAX_META_BYTES)?,
                crate::wire::encode("membership", &self.durable_membership, MAX_META_BYTES)?,
            ))
        } else {
            None
        };
        let mut txn = self.view.db.begin_write()?;
        txn.set_durability(durability)?;
        let mut kept_back = false;
        {
            let mut pending = txn.open_table(SM_PENDING)?;
            let mut intents = txn.open_table(SM_INTENTS)?;
            let mut meta = txn.open_table(SM_META)?;
            // The writes kept back that these changes take out again (a batch
            // or block carried them) never reach the table.
            let mut gone = HashSet::new();
            {
                // Readers go on meanwhile; only this machine changes them.
                let index = self.view.pending_index()?;
                if !index.unwritten.rows.is_empty() {
                    kept_back = true;
                    let kept: HashSet<&PendingKey> =
                        index.unwritten.rows.iter().map(|(k, _)| k).collect();
                    for op in &ops {
                        if let Op::RemovePending(keys) = op {
                            gone.extend(keys.iter().filter(|k| kept.contains(k)).copied());
                        }
                    }
                }
                for (key, row) in &index.unwritten.rows {
                    if !gone.contains(key) {
                        pending.insert(key.as_slice(), row.as_slice())?;
                    }
                }
            }
            for op in ops {
                match op {
                    Op::AddPending(key, row) => {
                        pending.insert(key.as_slice(), row.as_slice())?;
                    }
                    Op::RemovePending(keys) => {
                        for key in keys.iter().filter(|k| !gone.contains(*k)) {
                            pending.remove(key.as_slice())?;
                        }
                    }
                    Op::Intent(slot, digest) => {
                        intents.insert(slot.key().as_slice(), digest.0.as_slice())?;
                    }
                    Op::Prune(slots, floor) => {
                        for s in slots {
                            intents.remove(s.key().as_slice())?;
                        }
                        let f = crate::wire::encode("floor", &floor, MAX_META_BYTES)?;
                        meta.insert(FLOOR, f.as_slice())?;
                    }
                }
            }
            if let Some((applied, membership)) = &meta_rows {
                meta.insert(APPLIED, applied.as_slice())?;
                meta.insert(MEMBERSHIP, membership.as_slice())?;
            }
        }
        txn.commit()?;
        if kept_back {
            // In the table now (a reader between the commit and this sees
            // them twice, and takes them once).
            self.view.pending_index_mut()?.unwritten = Unwritten::default();
        }
        self.meta_written = Some(meta_now);
        Ok(())
    }

    /// The cluster part of a snapshot, read from the cluster tables.
    fn cluster_state(&self) -> Result<ClusterState, Error> {
        let txn = self.view.db.begin_read()?;
        let mut intents = Vec::new();
        for row in txn.open_table(SM_INTENTS)?.iter()? {
            let (k, v) = row?;
            intents.push((k.value().to_vec(), v.value().to_vec()));
        }
        let mut pending = Vec::new();
        for row in txn.open_table(SM_PENDING)?.iter()? {
            let (_, v) = row?;
            pending.push(split_pending_row(v.value())?.1.to_vec());
        }
        let floor = self.history_mut()?.floor();
        Ok(ClusterState {
            applied: self.applied,
            membership: self.membership.clone(),
            floor,
            intents,
            pending,
            ledger_len: 0,
            ledger_hash: Vec::new(),
        })
    }

    /// Writes a snapshot of the current state (see [`crate::snapshot`]).
    fn make_snapshot(&mut self) -> Result<(SnapshotMeta, PathBuf), Error> {
        self.snapshot_seq += 1;
        let name = match &self.applied {
            Some(l) => format!("snap-{}-{}-{}.bin", l.leader_id, l.index, self.snapshot_seq),
            None => format!("snap-none-{}.bin", self.snapshot_seq),
        };
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.snapshot_dir.join(&name);
        // The ledger's file is copied as it is on disk: everything applied
        // must be there first, as the mark makes sure (and the pending writes
        // kept back are in their table after it). The only writer is this
        // machine, on this task, so the files stay between two commits while
        // they are read. The next durable commit of the cluster file (the
        // caller's) claims the snapshot's applied id.
        let meta = self.mark_snapshot()?;
        let state = self.cluster_state()?;
        snapshot::write(&path, state, self.view.ledger.path())?;
        Ok((meta, path))
    }

    /// What a snapshot of the state as of now is.
    fn snapshot_meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        }
    }

    /// Marks the state as of now as a snapshot, without writing one: syncs
    /// the ledger, so the applied id the cluster file claims reaches the last
    /// applied, and writes that claim, which the next durable commit (the
    /// builder's) makes durable. The log under it may then be purged.
    fn mark_snapshot(&mut self) -> Result<SnapshotMeta, Error> {
        self.settle(true)?;
        self.write_ops(Vec::new(), Durability::None)?;
        Ok(self.snapshot_meta())
    }

    /// Installs a checked snapshot file: the ledger first (a swap of its
    /// file), then the cluster tables.
    fn install(&mut self, meta: &SnapshotMeta, file: &SnapshotFile) -> Result<(), Error> {
        let (state, offset) = snapshot::read(&file.path)?;
        if state.applied != meta.last_log_id {
            return Err(Error::BadSnapshot(format!(
                "the file holds state up to {:?}, the metadata says {:?}",
                state.applied, meta.last_log_id
            )));
        }
        let mut intents = BTreeMap::new();
        for (k, v) in &state.intents {
            let slot = Slot::from_key(k)
                .ok_or_else(|| Error::BadSnapshot("a signing intent's key".into()))?;
            let d: [u8; 32] = v
                .as_slice()
                .try_into()
                .map_err(|_| Error::BadSnapshot("a signing intent's digest".into()))?;
            intents.insert(slot, Hash(d));
        }
        let mut pending = Vec::with_capacity(state.pending.len());
        for p in &state.pending {
            let tx = Transaction::from_bytes(p)
                .map_err(|e| Error::BadSnapshot(format!("a pending write: {e}")))?;
            pending.push((tx.id(), p.clone()));
        }
        // The ledger: extract beside the live file, open it, check it is of
        // our chain, then swap it in.
        let live = self.view.ledger.path().to_path_buf();
        let incoming = live.with_extension("incoming");
        snapshot::extract_ledger(&file.path, offset, &incoming)?;
        let mut new_store = match Store::open_existing(&incoming) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&incoming);
                return Err(Error::BadSnapshot(format!("its ledger does not open: {e}")));
            }
        };
        {
            let mut store = self.view.ledger.write()?;
            let (theirs, ours) = (new_store.genesis().hash(), store.genesis().hash());
            if theirs != ours {
                drop(new_store);
                let _ = std::fs::remove_file(&incoming);
                return Err(Error::BadSnapshot(format!(
                    "its ledger is of genesis {theirs}, this member's is {ours}"
                )));
            }
            new_store.defer_fsync(true);
            let old = std::mem::replace(&mut *store, new_store);
            drop(old);
            std::fs::rename(&incoming, &live)?;
            self.engine_len = store.engine_records_len()?;
        }
        // The cluster tables, durably: the log below this point may be
        // purged next.
        let applied = crate::wire::encode("applied", &state.applied, MAX_META_BYTES)?;
        let membership = crate::wire::encode("membership", &state.membership, MAX_META_BYTES)?;
        let floor = crate::wire::encode("floor", &state.floor, MAX_META_BYTES)?;
        let txn = self.view.db.begin_write()?;
        let index = {
            let mut t = txn.open_table(SM_PENDING)?;
            t.retain(|_, _| false)?;
            let index = put_first(&mut t, &pending)?;
            let mut t = txn.open_table(SM_INTENTS)?;
            t.retain(|_, _| false)?;
            for (slot, d) in &intents {
                t.insert(slot.key().as_slice(), d.0.as_slice())?;
            }
            let mut m = txn.open_table(SM_META)?;
            m.insert(APPLIED, applied.as_slice())?;
            m.insert(MEMBERSHIP, membership.as_slice())?;
            m.insert(FLOOR, floor.as_slice())?;
            index
        };
        txn.commit()?;
        // Written above as the snapshot has them: the next run writes its own.
        self.meta_written = None;
        self.unsynced_since = None;
        self.durable = state.applied;
        self.durable_membership = state.membership.clone();
        self.applied = state.applied;
        self.membership = state.membership;
        *self.view.pending_index_mut()? = index;
        *self.history_mut()? = SigningHistory::from_parts(intents, state.floor);
        Ok(())
    }

    fn set_current(&self, meta: SnapshotMeta, path: &Path) -> Result<(), Error> {
        set_current(
            &self.view.db,
            &self.current,
            &self.snapshot_dir,
            meta,
            Some(path),
        )
    }

    /// Writes the marked snapshot's file, as of the state now, and makes it
    /// the current one.
    fn write_marked_snapshot(&mut self) -> Result<(SnapshotMeta, PathBuf), Error> {
        let (meta, path) = self.make_snapshot()?;
        if let Err(e) = self.set_current(meta.clone(), &path) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok((meta, path))
    }
}

/// Records `path` (inside `dir`) as the current snapshot, or with `None` a
/// mark of one not written yet, durably, and deletes the previous one's
/// file.
fn set_current(
    db: &Database,
    current: &Mutex<Option<Current>>,
    dir: &Path,
    meta: SnapshotMeta,
    path: Option<&Path>,
) -> Result<(), Error> {
    let file = match path {
        Some(path) => path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::Storage(format!("snapshot path {}", path.display())))?
            .to_string(),
        None => String::new(),
    };
    let cur = Current { meta, file };
    let bytes = crate::wire::encode("snapshot meta", &cur, MAX_META_BYTES)?;
    let txn = db.begin_write()?;
    txn.open_table(SM_META)?
        .insert(SNAPSHOT, bytes.as_slice())?;
    txn.commit()?;
    let mut guard = current
        .lock()
        .map_err(|_| Error::Storage("the snapshot lock is poisoned".into()))?;
    if let Some(old) = guard.replace(cur)
        && old.is_written()
        && old.file != guard.as_ref().map_or("", |c| c.file.as_str())
    {
        let _ = std::fs::remove_file(dir.join(old.file));
    }
    Ok(())
}

/// Makes the snapshot the state machine marked when it was asked for a
/// builder the current one, durably; its file is written when a snapshot
/// is asked for (see the module docs).
///
/// The snapshot it hands back names the snapshot folder, not a file:
/// openraft keeps only the metadata of a snapshot it had built, and asks
/// [`RaftStateMachine::get_current_snapshot`] for one to send.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    current: Arc<Mutex<Option<Current>>>,
    dir: PathBuf,
    marked: Result<SnapshotMeta, String>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let meta = self.marked.clone().map_err(io::Error::other)?;
        // Durable, so the applied id the machine wrote when it marked the
        // snapshot (its own, which the ledger allows) is on disk before the
        // log below it may be purged.
        set_current(&self.db, &self.current, &self.dir, meta.clone(), None)?;
        Ok(openraft::storage::Snapshot {
            meta,
            snapshot: SnapshotFile {
                path: self.dir.clone(),
            },
        })
    }
}

impl Drop for LedgerMachine {
    /// A clean stop syncs the ledger and claims the last applied id durably,
    /// so the next start has nothing to apply again.
    fn drop(&mut self) {
        let done = self
            .settle(true)
            .and_then(|()| self.write_ops(Vec::new(), Durability::Immediate));
        if let Err(e) = done {
            tracing::warn!(error = %e, "the state machine's last sync failed; the next start applies the log's tail again");
        }
    }
}

impl RaftStateMachine<TypeConfig> for LedgerMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        loop {
            // Take what is ready, up to a chunk, then apply it without
            // awaiting, so no redb transaction spans a suspension point.
            let mut chunk = Vec::new();
            while chunk.len() < APPLY_CHUNK {
                match entries.next().await {
                    Some(item) => chunk.push(item?),
                    None => break,
                }
            }
            if chunk.is_empty() {
                return Ok(());
            }
            let last_chunk = chunk.len() < APPLY_CHUNK;
            // Only the ledger fsyncs while applying; a run that does not
            // touch it ends in one commit without an fsync, cheaper than
            // handing the runtime's worker over to another thread.
            let replies = if chunk.iter().any(|(e, _)| touches_ledger(&e.payload)) {
                blocking(|| self.apply_chunk(chunk))?
            } else {
                self.apply_chunk(chunk)?
            };
            for (responder, response) in replies {
                if let Some(r) = responder {
                    r.send(response);
                }
            }
            // After the answers: the entries that made a sync of the ledger
            // due do not wait for it (the Raft log holds them). What it lets
            // the cluster file claim is written with the next run.
            if self.sync_due()? {
                blocking(|| self.settle(false))?
            } else {
                self.settle(false)?
            }
            // Then, as due, the cluster file claims it durably (the log's
            // own files leave it to the machine).
            if self.cluster_sync_due() {
                blocking(|| self.sync_cluster_file())?;
            }
            if last_chunk {
                return Ok(());
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let marked = blocking(|| self.mark_snapshot()).map_err(|e| e.to_string());
        SnapshotBuilder {
            db: self.view.db.clone(),
            current: self.current.clone(),
            dir: self.snapshot_dir.clone(),
            marked,
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        blocking(|| self.install(meta, &snapshot))?;
        // Keep the installed file as the current snapshot, in our folder.
        let name = format!("installed-{}.bin", self.snapshot_seq + 1);
        self.snapshot_seq += 1;
        let kept = self.snapshot_dir.join(name);
        if snapshot.path != kept && std::fs::rename(&snapshot.path, &kept).is_err() {
            std::fs::copy(&snapshot.path, &kept)?;
        }
        self.set_current(meta.clone(), &kept)?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        let cur = self
            .current
            .lock()
            .map_err(|_| io::Error::other("the snapshot lock is poisoned"))?
            .clone();
        match cur {
            None => Ok(None),
            Some(c) if c.is_written() => Ok(Some(openraft::storage::Snapshot {
                meta: c.meta,
                snapshot: SnapshotFile {
                    path: self.snapshot_dir.join(c.file),
                },
            })),
            // Marked only: written now, as of the state now (at or past the
            // mark, so it covers whatever the log dropped under the mark).
            Some(_) => {
                let (meta, path) = blocking(|| self.write_marked_snapshot())?;
                Ok(Some(openraft::storage::Snapshot {
                    meta,
                    snapshot: SnapshotFile { path },
                }))
            }
        }
    }
}
