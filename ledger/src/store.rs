//! Durable state on redb: accounts, records, validators, blocks, batches and
//! transaction locations.
//!
//! Every apply — a block, a batch, the genesis — is one redb write transaction:
//! state writes, the new tip, the block or batch and its index entries all commit
//! together or not at all (redb commits with `Durability::Immediate`, an fsync).
//! Reopening after a crash gives the state of the last commit, never a mix.
//!
//! A store whose changes are also kept durably elsewhere (a cluster member's,
//! whose Raft log holds every entry it applies) can defer its fsyncs
//! ([`Store::defer_fsync`]): each commit is then whole but reaches the disk
//! only with the next [`Store::sync`], and a crash reopens the state of the
//! last sync, never a mix. The owner re-applies what came after it.
//!
//! The state root is computed in memory before anything is written: the store
//! keeps every bucket's `(key digest, entry digest)` list and the tree over the
//! bucket hashes (rebuilt from the state table at open, and checked against the
//! stored tip). A block whose state root does not match is refused before a write
//! transaction is even begun, so a rejected block changes nothing.
//!
//! This module is the only one that imports redb.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::block::{
    Block, Certificate, Header, VerifiedBatch, VerifiedBlock, VerifiedTx, tx_root_of_ids,
};
use crate::codec::{Decode, Encode, Reader, put_u32, put_u64};
use crate::error::Error;
use crate::genesis::{Genesis, GenesisFile};
use crate::hash::Hash;
use crate::keys::Address;
use crate::machine::{BlockContext, Overlay, Rules, StateView, Tip};
use crate::merkle::{
    BucketDigests, BucketEntries, RecordProof, StateTree, TreeDelta, bucket_hash, bucket_of,
    bucket_of_digest, entry_digest, key_digest, upsert_digest,
};
use crate::state::{Account, RecordEntry, StateKey};

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Key: bucket (u32, big-endian) ‖ state key bytes.
const STATE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("state");
const BLOCKS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("blocks");
/// Key: transaction id; value: a [`TxLocation`].
const TX_INDEX: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("tx_index");
/// Where each block transaction is: key, the first 16 bytes of its id; value,
/// (height, index). Fixed-width rows are about twice as dense as
/// [`TX_INDEX`]'s, and a block's ids land on random leaves, so density is what
/// sets the pages a block dirties (docs/BENCHMARKS.md, "Block apply"). Two ids
/// sharing 128 bits would take ~2^64 hashes to find, and would only misplace
/// the later one's lookup.
const BLOCK_TX_INDEX: TableDefinition<'_, [u8; 16], (u64, u32)> =
    TableDefinition::new("block_tx_index");
/// Key: origin ‖ seq (big-endian); value: the batch.
const BATCHES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("batches");
/// Key: origin; value: the highest seq merged from it.
const ORIGINS: TableDefinition<'_, &[u8], u64> = TableDefinition::new("origins");

/// The consensus engine's durable records (what it signed, prepared, …), in
/// the order it persisted them.
const ENGINE_LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("engine_log");
const META_GENESIS: &str = "genesis_json";
const META_TIP: &str = "tip";

macro_rules! storage_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}

storage_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Where a transaction was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxLocation {
    /// In a block.
    Block {
        /// The block's height.
        height: u64,
        /// The transaction's index in it.
        index: u32,
    },
    /// In a gossip batch.
    Batch {
        /// The batch's origin.
        origin: Address,
        /// The batch's seq.
        seq: u64,
        /// The transaction's index in it.
        index: u32,
    },
}

impl Encode for TxLocation {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            TxLocation::Block { height, index } => {
                out.push(0);
                put_u64(out, *height);
                put_u32(out, *index);
            }
            TxLocation::Batch { origin, seq, index } => {
                out.push(1);
                origin.encode(out);
                put_u64(out, *seq);
                put_u32(out, *index);
            }
        }
    }
}

impl Decode for TxLocation {
    const MIN_SIZE: usize = 13;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        match r.u8("location")? {
            0 => Ok(TxLocation::Block {
                height: r.u64("height")?,
                index: r.u32("index")?,
            }),
            1 => Ok(TxLocation::Batch {
                origin: Address::decode(r)?,
                seq: r.u64("seq")?,
                index: r.u32("index")?,
            }),
            tag => Err(Error::UnknownTag {
                what: "location",
                tag,
            }),
        }
    }
}

impl Encode for Tip {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.height);
        self.hash.encode(out);
        put_u64(out, self.timestamp_ms);
        self.state_root.encode(out);
    }
}

impl Decode for Tip {
    const MIN_SIZE: usize = 80;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Tip {
            height: r.u64("height")?,
            hash: Hash::decode(r)?,
            timestamp_ms: r.u64("timestamp")?,
            state_root: Hash::decode(r)?,
        })
    }
}

/// What merging a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The batch was new and its writes were merged.
    Merged {
        /// The state root after.
        state_root: Hash,
    },
    /// This exact batch was merged before; nothing changed.
    AlreadyMerged,
}

/// The ledger's durable store.
pub struct Store {
    db: Database,
    /// Commits skip the fsync (see the module docs).
    deferred: bool,
    /// A commit since the last fsync is not on disk yet.
    unsynced: AtomicBool,
    rules: Rules,
    tip: Tip,
    tree: StateTree,
    /// Every bucket's `(key digest, entry digest)` list, sorted.
    buckets: Vec<BucketDigests>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("tip", &self.tip)
            .finish_non_exhaustive()
    }
}

/// Reads state through a redb table.
struct TableView<'t, T> {
    table: &'t T,
    bits: u32,
}

impl<T: ReadableTable<&'static [u8], &'static [u8]>> StateView for TableView<'_, T> {
    fn read(&self, key: &StateKey) -> Result<Option<Vec<u8>>, Error> {
        let k = stored_key(self.bits, &key.to_bytes());
        Ok(self.table.get(k.as_slice())?.map(|v| v.value().to_vec()))
    }
}

/// The state with a group's earlier writes laid over it.
struct Layer<'v> {
    base: &'v dyn StateView,
    writes: BTreeMap<StateKey, Vec<u8>>,
}

impl StateView for Layer<'_> {
    fn read(&self, key: &StateKey) -> Result<Option<Vec<u8>>, Error> {
        match self.writes.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None => self.base.read(key),
        }
    }
}

fn stored_key(bits: u32, key_bytes: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key_bytes.len());
    k.extend_from_slice(&bucket_of(key_bytes, bits).to_be_bytes());
    k.extend_from_slice(key_bytes);
    k
}

/// A state change worked out in memory: the writes, the buckets they change,
/// and the tree after them.
struct Pending {
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    buckets: Vec<(u32, BucketDigests)>,
    tree: TreeDelta,
}

impl Store {
    /// Opens the store at `path`, creating it from `genesis` if it does not exist.
    /// An existing store must have been created from the same genesis.
    pub fn open(path: &Path, genesis_file: &GenesisFile) -> Result<Store, Error> {
        let genesis = genesis_file.validate()?;
        let fresh = !path.exists();
        let db = Database::create(path)?;
        if fresh || Self::read_meta(&db, META_TIP)?.is_none() {
            return Self::init(db, genesis_file, genesis);
        }
        let store = Self::load(db)?;
        if store.genesis().hash() != genesis.hash() {
            return Err(Error::StoreMismatch {
                expected: format!("{} ({})", genesis.chain_id, genesis.hash()),
                found: format!("{} ({})", store.genesis().chain_id, store.genesis().hash()),
            });
        }
        Ok(store)
    }

    /// Opens an existing store, with the genesis it was created from.
    pub fn open_existing(path: &Path) -> Result<Store, Error> {
        if !path.exists() {
            return Err(Error::Storage(format!("no store at {}", path.display())));
        }
        Self::load(Database::create(path)?)
    }

    fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let txn = db.begin_read()?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    fn load(db: Database) -> Result<Store, Error> {
        let text = Self::read_meta(&db, META_GENESIS)?
            .ok_or_else(|| Error::Corrupt("no genesis in the store".into()))?;
        let text =
            String::from_utf8(text).map_err(|_| Error::Corrupt("genesis is not UTF-8".into()))?;
        let genesis = Genesis::from_json(&text)
            .map_err(|e| Error::Corrupt(format!("stored genesis: {e}")))?;
        let tip_bytes =
            Self::read_meta(&db, META_TIP)?.ok_or_else(|| Error::Corrupt("no tip".into()))?;
        let tip = Tip::from_bytes(&tip_bytes).map_err(|e| Error::Corrupt(format!("tip: {e}")))?;
        let bits = genesis.params.bucket_bits;
        let mut buckets: Vec<BucketDigests> = vec![Vec::new(); 1usize << bits];
        {
            let txn = db.begin_read()?;
            let table = txn.open_table(STATE)?;
            for row in table.iter()? {
                let (k, v) = row?;
                let k = k.value();
                let digest = key_digest(&k[4..]);
                let b = bucket_of_digest(&digest, bits);
                if k[..4] != b.to_be_bytes() {
                    return Err(Error::Corrupt(
                        "a state entry is stored under the wrong bucket".into(),
                    ));
                }
                buckets[b as usize].push((digest, entry_digest(v.value())));
            }
        }
        let mut leaves = Vec::with_capacity(buckets.len());
        for list in &mut buckets {
            list.sort_unstable();
            leaves.push(bucket_hash(list));
        }
        let tree = StateTree::new(bits, leaves)?;
        if tree.root() != tip.state_root {
            return Err(Error::Corrupt(format!(
                "bucket hashes give root {}, the tip says {}",
                tree.root(),
                tip.state_root
            )));
        }
        Ok(Store {
            db,
            deferred: false,
            unsynced: AtomicBool::new(false),
            rules: Rules::new(genesis),
            tip,
            tree,
            buckets,
        })
    }

    fn init(db: Database, file: &GenesisFile, genesis: Genesis) -> Result<Store, Error> {
        let bits = genesis.params.bucket_bits;
        let mut store = Store {
            db,
            deferred: false,
            unsynced: AtomicBool::new(false),
            tip: Tip {
                height: 0,
                hash: genesis.hash(),
                timestamp_ms: genesis.genesis_time_ms,
                state_root: Hash::ZERO,
            },
            tree: StateTree::empty(bits)?,
            buckets: vec![Vec::new(); 1usize << bits],
            rules: Rules::new(genesis.clone()),
        };
        let json = serde_json::to_string(file).map_err(|e| Error::GenesisJson(e.to_string()))?;
        let writes = genesis_state(&genesis)?;
        let tip = store.tip;
        store.commit(writes, None, |txn, root| {
            // Create every table now, so readers never meet a missing one.
            txn.open_table(BLOCKS)?;
            txn.open_table(TX_INDEX)?;
            txn.open_table(BLOCK_TX_INDEX)?;
            txn.open_table(BATCHES)?;
            txn.open_table(ORIGINS)?;
            txn.open_table(META)?
                .insert(META_GENESIS, json.as_bytes())?;
            write_tip(txn, tip.with_root(root))
        })?;
        Ok(store)
    }

    /// The chain's rules (and its genesis).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The genesis the store was created from.
    pub fn genesis(&self) -> &Genesis {
        self.rules.genesis()
    }

    /// The last applied block.
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// The current state root.
    pub fn state_root(&self) -> Hash {
        self.tip.state_root
    }

    /// The state's bucket tree.
    pub fn tree(&self) -> &StateTree {
        &self.tree
    }

    fn read_state(&self, key: &StateKey) -> Result<Option<Vec<u8>>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STATE)?;
        TableView {
            table: &table,
            bits: self.tree.bits(),
        }
        .read(key)
    }

    /// Runs `f` over a read-only overlay of the committed state.
    fn with_overlay<T>(
        &self,
        f: impl FnOnce(&Overlay<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STATE)?;
        let view = TableView {
            table: &table,
            bits: self.tree.bits(),
        };
        f(&Overlay::new(&view))
    }

    /// Proof of stake's chain-wide entry: the epoch and its validator set
    /// (empty on networks that are not `pos`).
    pub fn staking(&self) -> Result<crate::staking::StakingState, Error> {
        self.with_overlay(crate::staking::staking_state)
    }

    /// Whether `evidence` would be taken in the next block (`pos`): the
    /// checks [`crate::staking::check_evidence`] makes, against the state now.
    /// Admission runs it, so forged, expired, future or duplicate evidence is
    /// refused before it travels.
    pub fn check_evidence(&self, evidence: &crate::evidence::Evidence) -> Result<(), Error> {
        let ctx = BlockContext {
            height: self.tip.height + 1,
            timestamp_ms: self.tip.timestamp_ms,
            proposer: Address([0; 32]),
        };
        self.with_overlay(|o| crate::staking::check_evidence(&self.rules, o, &ctx, evidence))
    }

    /// Every registered validator with stake, power and standing (`pos`).
    pub fn validators(&self) -> Result<Vec<crate::staking::ValidatorSummary>, Error> {
        self.with_overlay(crate::staking::summaries)
    }

    /// What `delegator` has bonded to `validator`.
    pub fn bond(&self, delegator: &Address, validator: &Address) -> Result<u64, Error> {
        self.with_overlay(|o| crate::staking::bond_of(o, delegator, validator))
    }

    /// A validator's unbonding queue.
    pub fn unbonding(&self, validator: &Address) -> Result<crate::staking::Unbonding, Error> {
        self.with_overlay(|o| crate::staking::unbonding_of(o, validator))
    }

    /// An account (zero if it was never touched).
    pub fn account(&self, a: &Address) -> Result<Account, Error> {
        match self.read_state(&StateKey::Account(*a))? {
            Some(b) => Account::from_bytes(&b).map_err(|e| Error::Corrupt(e.to_string())),
            None => Ok(Account::default()),
        }
    }

    /// A record's entry, tombstones included.
    pub fn record(&self, ns: &Address, key: &[u8]) -> Result<Option<RecordEntry>, Error> {
        match self.read_state(&StateKey::Record(*ns, key.to_vec()))? {
            Some(b) => RecordEntry::from_bytes(&b)
                .map(Some)
                .map_err(|e| Error::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    /// A proof of `key`'s entry, or of its absence, under the current root.
    pub fn proof(&self, key: &StateKey) -> Result<RecordProof, Error> {
        let bits = self.tree.bits();
        let bucket = bucket_of(&key.to_bytes(), bits);
        Ok(RecordProof {
            bucket_bits: bits,
            bucket,
            entries: self.bucket_entries(bucket)?,
            path: self.tree.path(bucket),
        })
    }

    /// Every `(state key, entry)` of a bucket, in key-digest order (the order
    /// its hash covers them in).
    pub fn bucket_entries(&self, bucket: u32) -> Result<BucketEntries, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STATE)?;
        let mut entries = scan_bucket(&table, bucket)?;
        entries.sort_by_cached_key(|(k, _)| key_digest(k));
        Ok(entries)
    }

    /// Every entry of the state, decoded, in stored order (for tests, export and
    /// audits; it reads everything).
    pub fn entries(&self) -> Result<Vec<(StateKey, Vec<u8>)>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STATE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let key = StateKey::from_key_bytes(&k.value()[4..])
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            out.push((key, v.value().to_vec()));
        }
        Ok(out)
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        match table.get(height)? {
            Some(b) => Block::from_bytes(b.value())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("block {height}: {e}"))),
            None => Ok(None),
        }
    }

    /// Where a transaction was applied.
    pub fn tx_location(&self, id: &Hash) -> Result<Option<TxLocation>, Error> {
        read_tx_location(&self.db.begin_read()?, id)
    }

    /// Which of `ids` were applied (in one read transaction, where
    /// [`Store::tx_location`] takes one each): the ids found, in no order.
    pub fn applied_of(&self, ids: &[Hash]) -> Result<std::collections::HashSet<Hash>, Error> {
        let mut found = std::collections::HashSet::new();
        if ids.is_empty() {
            return Ok(found);
        }
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCK_TX_INDEX)?;
        let others = txn.open_table(TX_INDEX)?;
        for id in ids {
            if blocks.get(id_prefix(id))?.is_some() || others.get(id.0.as_slice())?.is_some() {
                found.insert(*id);
            }
        }
        Ok(found)
    }

    /// The highest batch seq merged from `origin` (0 if none).
    pub fn highest_seq(&self, origin: &Address) -> Result<u64, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ORIGINS)?;
        Ok(table.get(origin.0.as_slice())?.map_or(0, |v| v.value()))
    }

    /// Per origin, the contiguous prefix of batch seqs this store holds (from
    /// 1 up to the first gap), read from the stored batches.
    pub fn batch_heads(&self) -> Result<BTreeMap<Address, u64>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BATCHES)?;
        let mut heads: BTreeMap<Address, u64> = BTreeMap::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let k = k.value();
            if k.len() != 40 {
                return Err(Error::Corrupt("batch key is not origin ‖ seq".into()));
            }
            let mut origin = [0u8; 32];
            origin.copy_from_slice(&k[..32]);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[32..]);
            let seq = u64::from_be_bytes(seq);
            let head = heads.entry(Address(origin)).or_insert(0);
            // Keys come in (origin, seq) order, so the prefix grows one by one.
            if seq == *head + 1 {
                *head = seq;
            }
        }
        heads.retain(|_, h| *h > 0);
        Ok(heads)
    }

    /// A merged batch.
    pub fn batch(&self, origin: &Address, seq: u64) -> Result<Option<crate::block::Batch>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BATCHES)?;
        match table.get(batch_key(origin, seq).as_slice())? {
            Some(v) => crate::block::Batch::from_bytes(v.value())
                .map(Some)
                .map_err(|e| Error::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    /// A consistent, read-only view of the whole store as of the last commit:
    /// state, blocks, batches and the transaction index, with the tip (height
    /// and state root) that commit wrote. Later commits do not show through it.
    /// It holds a redb read transaction, so pages it reads are not reused
    /// while it lives: keep it for one query, not for ever.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        let txn = self.db.begin_read()?;
        let tip = {
            let meta = txn.open_table(META)?;
            let bytes = meta
                .get(META_TIP)?
                .ok_or_else(|| Error::Corrupt("no tip".into()))?;
            Tip::from_bytes(bytes.value()).map_err(|e| Error::Corrupt(format!("tip: {e}")))?
        };
        Ok(Snapshot {
            txn,
            tip,
            bits: self.tree.bits(),
            chain_id: self.genesis().chain_id.clone(),
            engine: self.genesis().engine,
            segments: None,
        })
    }

    /// A snapshot for whole-state scans: a [`Snapshot`] that also carries
    /// [`Segments`], the state tree's nodes at the level where each covers
    /// about [`SEGMENT_ROWS`] entries. A node's hash commits to every entry
    /// under it, so a copy of a segment's rows made at one snapshot is known
    /// to be current at another whenever the two hashes agree. Costs a pass
    /// over the bucket lists and a copy of one tree layer (at most 2^bits
    /// hashes); plain reads use [`Store::snapshot`].
    pub fn scan_snapshot(&self) -> Result<Snapshot, Error> {
        let mut snapshot = self.snapshot()?;
        let entries: usize = self.buckets.iter().map(Vec::len).sum();
        let bits = self.tree.bits();
        let wanted = (entries / SEGMENT_ROWS).max(1).next_power_of_two();
        let count_bits = wanted.trailing_zeros().min(bits);
        let level = bits - count_bits;
        snapshot.segments = Some(Segments {
            level,
            hashes: self.tree.layer(level as usize).to_vec(),
        });
        Ok(snapshot)
    }

    /// Applies a finalized block: checks the header against the tip, executes
    /// every transaction, checks the state root, and commits it all at once.
    /// On any error nothing changes.
    pub fn apply_block(&mut self, block: &VerifiedBlock) -> Result<Tip, Error> {
        let tip = self.tip;
        let bits = self.tree.bits();
        let header = block.header().clone();
        let writes = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(STATE)?;
            let view = TableView {
                table: &table,
                bits,
            };
            self.rules.execute_block(&view, &tip, block)?.into_writes()
        };
        let encoded = block.to_bytes();
        self.commit(writes, Some(header.state_root), |txn, root| {
            write_block_rows(txn, &header, &encoded, block.txs(), root)
        })
    }

    /// Commits an ordered block whose transactions consensus fixed before
    /// execution (PBFT orders, then executes): every transaction is kept in the
    /// block, in order; one that fails its rules has no effect and is returned
    /// with its error. The header's parent, state root and transaction root
    /// are computed here; its timestamp is `timestamp_ms` but never before the
    /// parent's. `records` are appended to the engine log in the same
    /// transaction, which saves the engine a commit (and an fsync) of its own.
    pub fn commit_ordered(
        &mut self,
        proposer: Address,
        timestamp_ms: u64,
        txs: Vec<VerifiedTx>,
        engine_data: Vec<u8>,
        certificate: Certificate,
        records: &[Vec<u8>],
    ) -> Result<(Tip, Vec<(Hash, Error)>), Error> {
        self.commit_ordered_with_votes(
            proposer,
            timestamp_ms,
            txs,
            engine_data,
            certificate,
            records,
            None,
        )
    }

    /// [`Store::commit_ordered`] with the votes consensus agreed on for some
    /// block (under `pos`, they count towards rewards and downtime; see
    /// [`crate::staking::BlockVotes`]).
    #[allow(clippy::too_many_arguments)]
    pub fn commit_ordered_with_votes(
        &mut self,
        proposer: Address,
        timestamp_ms: u64,
        txs: Vec<VerifiedTx>,
        engine_data: Vec<u8>,
        certificate: Certificate,
        records: &[Vec<u8>],
        votes: Option<&crate::staking::BlockVotes>,
    ) -> Result<(Tip, Vec<(Hash, Error)>), Error> {
        let tip = self.tip;
        let ctx = BlockContext {
            height: tip.height + 1,
            timestamp_ms: timestamp_ms.max(tip.timestamp_ms),
            proposer,
        };
        let header = Header {
            chain_id: self.genesis().chain_id.clone(),
            height: ctx.height,
            parent: tip.hash,
            state_root: Hash::ZERO,
            tx_root: tx_root_of_ids(txs.iter().map(VerifiedTx::id)),
            proposer,
            timestamp_ms: ctx.timestamp_ms,
            engine_data,
        };
        self.rules.check_header(&tip, &header)?;
        let (writes, failed) = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(STATE)?;
            let view = TableView {
                table: &table,
                bits: self.tree.bits(),
            };
            let (overlay, failed) = self.rules.execute_ordered_all(&view, &ctx, &txs, votes)?;
            (overlay.into_writes(), failed)
        };
        let tip = self.commit(writes, None, |txn, root| {
            let block = VerifiedBlock::from_parts(
                Header {
                    state_root: root,
                    ..header
                },
                txs,
                certificate,
            );
            append_records(txn, records)?;
            write_block_rows(txn, block.header(), &block.to_bytes(), block.txs(), root)
        })?;
        Ok((tip, failed))
    }

    /// Appends the consensus engine's records in one transaction.
    pub fn append_engine_records(&mut self, records: &[Vec<u8>]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write()?;
        append_records(&txn, records)?;
        self.finish(txn)
    }

    /// From now on, commits skip the fsync when `on`: readers of this store
    /// see each at once, whole, but it reaches the disk only with the next
    /// [`Store::sync`]. A crash before then reopens the store as it was at
    /// the last sync, so this is for an owner that holds every change
    /// durably elsewhere and applies again what came after it (a cluster
    /// member, whose Raft log has them).
    pub fn defer_fsync(&mut self, on: bool) {
        self.deferred = on;
    }

    /// Whether every commit so far is on disk.
    pub fn is_synced(&self) -> bool {
        !self.unsynced.load(Ordering::Acquire)
    }

    /// Makes every commit so far durable (an empty commit with an fsync).
    /// Takes `&self`, so a holder of the store's lock can sync while readers
    /// go on: redb runs it as a write transaction of its own, and only a
    /// writer (`&mut self`) can add commits to sync.
    pub fn sync(&self) -> Result<(), Error> {
        self.db.begin_write()?.commit()?;
        self.unsynced.store(false, Ordering::Release);
        Ok(())
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, Error> {
        let mut txn = self.db.begin_write()?;
        if self.deferred {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| Error::Storage(e.to_string()))?;
        }
        Ok(txn)
    }

    /// Commits `txn`, durably unless fsyncs are deferred; a durable commit
    /// also makes every deferred one before it durable.
    fn finish(&mut self, txn: redb::WriteTransaction) -> Result<(), Error> {
        txn.commit()?;
        self.unsynced.store(self.deferred, Ordering::Release);
        Ok(())
    }

    /// How many records the consensus engine has appended (without reading
    /// them).
    pub fn engine_records_len(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read()?;
        match txn.open_table(ENGINE_LOG) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The consensus engine's records, in the order they were appended.
    pub fn engine_records(&self) -> Result<Vec<Vec<u8>>, Error> {
        let txn = self.db.begin_read()?;
        let log = match txn.open_table(ENGINE_LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in log.iter()? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Builds the next block from candidate transactions: executes them against
    /// the tip, keeps those that pass, and fills in the roots. Nothing is
    /// committed. Returns the block and the rejected transactions with reasons.
    pub fn propose_block(
        &self,
        proposer: Address,
        timestamp_ms: u64,
        candidates: Vec<VerifiedTx>,
    ) -> Result<(VerifiedBlock, Vec<(Hash, Error)>), Error> {
        let tip = self.tip;
        let ctx = BlockContext {
            height: tip.height + 1,
            timestamp_ms: timestamp_ms.max(tip.timestamp_ms),
            proposer,
        };
        let mut header = Header {
            chain_id: self.genesis().chain_id.clone(),
            height: ctx.height,
            parent: tip.hash,
            state_root: Hash::ZERO,
            tx_root: Hash::ZERO,
            proposer,
            timestamp_ms: ctx.timestamp_ms,
            engine_data: Vec::new(),
        };
        self.rules.check_header(&tip, &header)?;
        let (writes, included, rejected) = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(STATE)?;
            let view = TableView {
                table: &table,
                bits: self.tree.bits(),
            };
            let (overlay, included, rejected) =
                self.rules.execute_proposal(&view, &ctx, candidates);
            (overlay.into_writes(), included, rejected)
        };
        header.tx_root = tx_root_of_ids(included.iter().map(VerifiedTx::id));
        header.state_root = self.root_after(writes)?;
        Ok((
            VerifiedBlock::from_parts(header, included, Certificate::default()),
            rejected,
        ))
    }

    /// The state root after `writes`, computed in memory; nothing is written.
    pub fn root_after(&self, writes: Vec<(StateKey, Vec<u8>)>) -> Result<Hash, Error> {
        Ok(self.prepare(writes)?.tree.root())
    }

    /// Merges a gossip batch (see [`Rules::merge_batch`]) and stores it for
    /// peers that ask. `now_ms` is this node's clock, for the skew bound.
    pub fn merge_batch(
        &mut self,
        batch: &VerifiedBatch,
        now_ms: u64,
    ) -> Result<MergeOutcome, Error> {
        let mut outcomes = self.merge_batches(std::slice::from_ref(batch), now_ms)?;
        outcomes
            .pop()
            .unwrap_or(Err(Error::Corrupt("a merge without an outcome".into())))
    }

    /// Merges several gossip batches in one commit (one fsync for all), each
    /// judged on its own as [`Store::merge_batch`] would: a refused batch
    /// changes nothing and does not stop the others. One outcome per batch,
    /// in order; the outer error is storage failing, when nothing is merged.
    /// Merge is commutative, so the state is the one merging them one at a
    /// time in any order gives.
    pub fn merge_batches(
        &mut self,
        batches: &[VerifiedBatch],
        now_ms: u64,
    ) -> Result<Vec<Result<MergeOutcome, Error>>, Error> {
        let bits = self.tree.bits();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut merged: Vec<&VerifiedBatch> = Vec::with_capacity(batches.len());
        let group_writes = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(STATE)?;
            let view = TableView {
                table: &table,
                bits,
            };
            // Each batch is judged over the state with the group's earlier
            // batches merged, as if they had been committed one by one.
            let mut layer = Layer {
                base: &view,
                writes: BTreeMap::new(),
            };
            for batch in batches {
                let header = batch.header_hash();
                let seen_in_group = merged.iter().any(|m| {
                    m.origin() == batch.origin()
                        && m.seq() == batch.seq()
                        && m.header_hash() == header
                });
                let stored = self.batch(&batch.origin(), batch.seq())?;
                if seen_in_group || stored.is_some_and(|b| b.header_hash() == header) {
                    outcomes.push(Ok(MergeOutcome::AlreadyMerged));
                    continue;
                }
                match self.rules.merge_batch(&layer, batch, now_ms) {
                    Ok(overlay) => {
                        let writes = overlay.into_writes();
                        layer.writes.extend(writes);
                        merged.push(batch);
                        // The root is known once the group commits.
                        outcomes.push(Ok(MergeOutcome::Merged {
                            state_root: Hash::ZERO,
                        }));
                    }
                    Err(e) if e.is_fatal() => return Err(e),
                    Err(e) => outcomes.push(Err(e)),
                }
            }
            layer.writes
        };
        if merged.is_empty() {
            return Ok(outcomes);
        }
        let tip = self.tip;
        let writes: Vec<(StateKey, Vec<u8>)> = group_writes.into_iter().collect();
        let tip = self.commit(writes, None, |txn, root| {
            let mut batches_table = txn.open_table(BATCHES)?;
            let mut index = txn.open_table(TX_INDEX)?;
            let mut origins = txn.open_table(ORIGINS)?;
            for batch in &merged {
                let (origin, seq) = (batch.origin(), batch.seq());
                let key = batch_key(&origin, seq);
                // Two different batches under one (origin, seq) mean the
                // origin equivocated; both are merged, and the smaller header
                // hash is kept so every replica keeps the same one.
                let keep = match batches_table.get(key.as_slice())? {
                    Some(old) => crate::block::Batch::from_bytes(old.value())
                        .map(|b| b.header_hash() > batch.header_hash())
                        .unwrap_or(true),
                    None => true,
                };
                if keep {
                    let encoded = batch.to_bytes();
                    batches_table.insert(key.as_slice(), encoded.as_slice())?;
                }
                for (i, t) in batch.txs().iter().enumerate() {
                    let id = t.id();
                    if index.get(id.0.as_slice())?.is_none() {
                        let loc = TxLocation::Batch {
                            origin,
                            seq,
                            index: i as u32,
                        };
                        index.insert(id.0.as_slice(), loc.to_bytes().as_slice())?;
                    }
                }
                let highest = origins.get(origin.0.as_slice())?.map_or(0, |v| v.value());
                origins.insert(origin.0.as_slice(), highest.max(seq))?;
            }
            drop((batches_table, index, origins));
            write_tip(txn, tip.with_root(root))
        })?;
        for outcome in &mut outcomes {
            if let Ok(MergeOutcome::Merged { state_root }) = outcome {
                *state_root = tip.state_root;
            }
        }
        Ok(outcomes)
    }

    /// Writes state entries as given, outside the rules, and returns the new
    /// state root. This is for installing state fetched from peers (state sync)
    /// and bulk loads in benchmarks: the caller must check the returned root
    /// against a root certified by the network before trusting the result.
    pub fn import_entries(&mut self, entries: Vec<(StateKey, Vec<u8>)>) -> Result<Hash, Error> {
        let tip = self.tip;
        let tip = self.commit(entries, None, |txn, root| {
            write_tip(txn, tip.with_root(root))
        })?;
        Ok(tip.state_root)
    }

    /// Works out a change in memory: encodes the keys, updates the touched
    /// buckets' digest lists and the tree.
    fn prepare(&self, writes: Vec<(StateKey, Vec<u8>)>) -> Result<Pending, Error> {
        let bits = self.tree.bits();
        let mut touched: BTreeMap<u32, BucketDigests> = BTreeMap::new();
        let mut rows = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            let kb = key.to_bytes();
            let digest = key_digest(&kb);
            let b = bucket_of_digest(&digest, bits);
            let list = touched
                .entry(b)
                .or_insert_with(|| self.buckets[b as usize].clone());
            upsert_digest(list, digest, entry_digest(&value));
            let mut stored = Vec::with_capacity(4 + kb.len());
            stored.extend_from_slice(&b.to_be_bytes());
            stored.extend_from_slice(&kb);
            rows.push((stored, value));
        }
        let updates: Vec<(u32, Hash)> = touched.iter().map(|(b, l)| (*b, bucket_hash(l))).collect();
        Ok(Pending {
            writes: rows,
            tree: self.tree.delta(&updates)?,
            buckets: touched.into_iter().collect(),
        })
    }

    /// Computes the new root in memory, checks it against `expected_root`, then
    /// writes the state rows and whatever `extra` adds in one redb transaction,
    /// commits, and installs the new buckets and tree.
    fn commit(
        &mut self,
        writes: Vec<(StateKey, Vec<u8>)>,
        expected_root: Option<Hash>,
        extra: impl FnOnce(&redb::WriteTransaction, Hash) -> Result<Tip, Error>,
    ) -> Result<Tip, Error> {
        let pending = self.prepare(writes)?;
        let root = pending.tree.root();
        if let Some(expected) = expected_root
            && expected != root
        {
            return Err(Error::StateRootMismatch {
                header: expected,
                computed: root,
            });
        }
        let mut rows = pending.writes;
        // In key order, so the B-tree is written front to back.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let txn = self.begin_write()?;
        {
            let mut state = txn.open_table(STATE)?;
            for (k, v) in &rows {
                state.insert(k.as_slice(), v.as_slice())?;
            }
        }
        let tip = extra(&txn, root)?;
        self.finish(txn)?;
        for (b, list) in pending.buckets {
            self.buckets[b as usize] = list;
        }
        self.tree.apply(pending.tree);
        self.tip = tip;
        Ok(tip)
    }
}

/// The state a genesis starts with, as `(key, encoded entry)` writes: funded
/// accounts, validators with their stake, and under `pos` the staking entries.
/// A store commits these at creation; an in-memory replica (the simulator)
/// can start from them too.
pub fn genesis_state(genesis: &Genesis) -> Result<Vec<(StateKey, Vec<u8>)>, Error> {
    let empty = EmptyView;
    let mut overlay = Overlay::new(&empty);
    for (addr, balance) in &genesis.accounts {
        let mut acc = overlay.account(addr)?;
        acc.balance = *balance;
        overlay.set_account(*addr, acc);
    }
    for v in &genesis.validators {
        let mut acc = overlay.account(&v.public_key)?;
        acc.stake = acc
            .stake
            .checked_add(v.stake)
            .ok_or(Error::Overflow("stake"))?;
        overlay.set_account(v.public_key, acc);
        overlay.set_raw(StateKey::Validator(v.public_key), v.to_bytes());
    }
    if genesis.engine == crate::chain::Engine::Pos {
        crate::staking::genesis_writes(genesis, &mut overlay)?;
    }
    Ok(overlay.into_writes())
}

/// Stores a block, indexes its transactions and moves the tip to it; `root`
/// is the state root after it.
fn write_block_rows(
    txn: &redb::WriteTransaction,
    header: &Header,
    encoded: &[u8],
    txs: &[VerifiedTx],
    root: Hash,
) -> Result<Tip, Error> {
    txn.open_table(BLOCKS)?.insert(header.height, encoded)?;
    // In id order, so the index's B-tree is written front to back.
    let mut ids: Vec<([u8; 16], u32)> = txs
        .iter()
        .enumerate()
        .map(|(i, t)| (id_prefix(&t.id()), i as u32))
        .collect();
    ids.sort_unstable();
    let mut index = txn.open_table(BLOCK_TX_INDEX)?;
    for (id, i) in &ids {
        index.insert(id, (header.height, *i))?;
    }
    write_tip(
        txn,
        Tip {
            height: header.height,
            hash: header.hash(),
            timestamp_ms: header.timestamp_ms,
            state_root: root,
        },
    )
}

/// The stored-key range of buckets `first..end`: stored keys start with
/// their bucket as 4 big-endian bytes. Buckets stop below 2^MAX_BUCKET_BITS,
/// far below 2^32, so the bounds always fit.
fn buckets_range(first: u64, end: u64) -> ([u8; 4], [u8; 4]) {
    let key = |b: u64| u32::try_from(b).unwrap_or(u32::MAX).to_be_bytes();
    (key(first), key(end))
}

fn scan_bucket(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bucket: u32,
) -> Result<BucketEntries, Error> {
    let (lo, hi) = buckets_range(u64::from(bucket), u64::from(bucket) + 1);
    let mut out = Vec::new();
    for row in table.range(lo.as_slice()..hi.as_slice())? {
        let (k, v) = row?;
        out.push((k.value()[4..].to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// Appends to the engine log, after what it holds.
fn append_records(txn: &redb::WriteTransaction, records: &[Vec<u8>]) -> Result<(), Error> {
    if records.is_empty() {
        return Ok(());
    }
    let mut log = txn.open_table(ENGINE_LOG)?;
    let first = log.last()?.map_or(0, |(k, _)| k.value() + 1);
    for (key, r) in (first..).zip(records) {
        log.insert(key, r.as_slice())?;
    }
    Ok(())
}

/// Where a transaction was applied: in a block ([`BLOCK_TX_INDEX`]) or a
/// batch ([`TX_INDEX`]).
fn read_tx_location(txn: &redb::ReadTransaction, id: &Hash) -> Result<Option<TxLocation>, Error> {
    if let Some(v) = txn.open_table(BLOCK_TX_INDEX)?.get(id_prefix(id))? {
        let (height, index) = v.value();
        return Ok(Some(TxLocation::Block { height, index }));
    }
    match txn.open_table(TX_INDEX)?.get(id.0.as_slice())? {
        Some(v) => TxLocation::from_bytes(v.value())
            .map(Some)
            .map_err(|e| Error::Corrupt(e.to_string())),
        None => Ok(None),
    }
}

/// A block transaction's key in [`BLOCK_TX_INDEX`].
fn id_prefix(id: &Hash) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(&id.0[..16]);
    k
}

/// Records the new tip in the transaction that makes it the tip.
fn write_tip(txn: &redb::WriteTransaction, tip: Tip) -> Result<Tip, Error> {
    txn.open_table(META)?
        .insert(META_TIP, tip.to_bytes().as_slice())?;
    Ok(tip)
}

fn batch_key(origin: &Address, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&origin.0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

struct EmptyView;

impl StateView for EmptyView {
    fn read(&self, _: &StateKey) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }
}

/// A consistent, read-only view of the store as of one commit (see
/// [`Store::snapshot`]). Every read through it, and through the scans it
/// makes, sees that commit and nothing later.
pub struct Snapshot {
    txn: redb::ReadTransaction,
    tip: Tip,
    bits: u32,
    chain_id: crate::chain::ChainId,
    engine: crate::chain::Engine,
    segments: Option<Segments>,
}

/// About how many state entries one scan segment holds (see
/// [`Store::scan_snapshot`]).
pub const SEGMENT_ROWS: usize = 4096;

/// The state split into contiguous runs of buckets (segments), each with the
/// state tree's hash over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segments {
    /// Each segment is `2^level` buckets: segment `i` holds buckets
    /// `i << level .. (i + 1) << level`.
    pub level: u32,
    /// The tree node over each segment, in bucket order.
    pub hashes: Vec<Hash>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("tip", &self.tip)
            .finish_non_exhaustive()
    }
}

/// A stored row as a scan hands it out: borrowed for the callback only.
type RowVisitor<'f> = dyn FnMut(&[u8], &[u8]) -> Result<(), Error> + 'f;

impl Snapshot {
    /// The tip this snapshot was taken at: its height and state root.
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// The chain the store belongs to.
    pub fn chain_id(&self) -> &crate::chain::ChainId {
        &self.chain_id
    }

    /// The chain's consensus engine.
    pub fn engine(&self) -> crate::chain::Engine {
        self.engine
    }

    /// One state entry's stored bytes, if present.
    pub fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, Error> {
        let table = self.txn.open_table(STATE)?;
        let k = stored_key(self.bits, &key.to_bytes());
        Ok(table.get(k.as_slice())?.map(|v| v.value().to_vec()))
    }

    /// A scan of every state entry, in stored (bucket) order. Rows are handed
    /// out by [`StateScan::visit`].
    pub fn scan_state(&self) -> Result<StateScan, Error> {
        let table = self.txn.open_table(STATE)?;
        Ok(StateScan {
            range: table.range::<&[u8]>(..)?,
        })
    }

    /// The segments of a snapshot from [`Store::scan_snapshot`]; `None` for
    /// a plain one.
    pub fn segments(&self) -> Option<&Segments> {
        self.segments.as_ref()
    }

    /// A scan of one segment's entries (see [`Snapshot::segments`]), in
    /// stored order; an empty scan past the last segment.
    pub fn scan_segment(&self, segment: u32) -> Result<StateScan, Error> {
        let level = self.segments.as_ref().map_or(self.bits, |s| s.level);
        let (lo, hi) = buckets_range(
            u64::from(segment) << level,
            (u64::from(segment) + 1) << level,
        );
        let table = self.txn.open_table(STATE)?;
        Ok(StateScan {
            range: table.range::<&[u8]>(lo.as_slice()..hi.as_slice())?,
        })
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, Error> {
        let table = self.txn.open_table(BLOCKS)?;
        match table.get(height)? {
            Some(b) => Block::from_bytes(b.value())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("block {height}: {e}"))),
            None => Ok(None),
        }
    }

    /// The blocks with heights in `from..=to`, in height order.
    pub fn blocks(&self, from: u64, to: u64) -> Result<BlockScan, Error> {
        let table = self.txn.open_table(BLOCKS)?;
        Ok(BlockScan {
            range: table.range(from..=to.max(from))?,
            empty: to < from,
        })
    }

    /// Where a transaction was applied.
    pub fn tx_location(&self, id: &Hash) -> Result<Option<TxLocation>, Error> {
        read_tx_location(&self.txn, id)
    }

    /// The merged batch `(origin, seq)`.
    pub fn batch(&self, origin: &Address, seq: u64) -> Result<Option<crate::block::Batch>, Error> {
        let table = self.txn.open_table(BATCHES)?;
        match table.get(batch_key(origin, seq).as_slice())? {
            Some(v) => crate::block::Batch::from_bytes(v.value())
                .map(Some)
                .map_err(|e| Error::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    /// The merged batches, in (origin, seq) order; with `origin`, only that
    /// origin's (a key-prefix range, so the others are never read).
    pub fn batches(&self, origin: Option<&Address>) -> Result<BatchScan, Error> {
        let table = self.txn.open_table(BATCHES)?;
        let range = match origin {
            Some(o) => {
                let lo = batch_key(o, 0);
                let hi = batch_key(o, u64::MAX);
                table.range(lo.as_slice()..=hi.as_slice())?
            }
            None => table.range::<&[u8]>(..)?,
        };
        Ok(BatchScan { range })
    }
}

/// A scan over the state table (see [`Snapshot::scan_state`]).
pub struct StateScan {
    range: redb::Range<'static, &'static [u8], &'static [u8]>,
}

impl std::fmt::Debug for StateScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateScan").finish_non_exhaustive()
    }
}

impl StateScan {
    /// Hands up to `max` rows to `f` as `(state key bytes, entry bytes)`: the
    /// key in [`StateKey::to_bytes`] form (kind byte, address, record key), the
    /// entry as stored (decode it with `Account`, `RecordEntry` or
    /// `ValidatorInfo`). Nothing is copied. Returns how many rows it handed
    /// out; fewer than `max` means the scan is done. An error from `f` stops
    /// the scan and is returned.
    pub fn visit(&mut self, max: usize, f: &mut RowVisitor<'_>) -> Result<usize, Error> {
        let mut n = 0;
        while n < max {
            let Some(row) = self.range.next() else { break };
            let (k, v) = row?;
            let k = k.value();
            if k.len() < 4 {
                return Err(Error::Corrupt("a state key without its bucket".into()));
            }
            f(&k[4..], v.value())?;
            n += 1;
        }
        Ok(n)
    }
}

/// A scan over stored blocks (see [`Snapshot::blocks`]).
pub struct BlockScan {
    range: redb::Range<'static, u64, &'static [u8]>,
    empty: bool,
}

impl std::fmt::Debug for BlockScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockScan").finish_non_exhaustive()
    }
}

impl Iterator for BlockScan {
    type Item = Result<Block, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.empty {
            return None;
        }
        let row = self.range.next()?;
        Some(row.map_err(Error::from).and_then(|(h, b)| {
            let height = h.value();
            Block::from_bytes(b.value()).map_err(|e| Error::Corrupt(format!("block {height}: {e}")))
        }))
    }
}

/// A scan over merged batches (see [`Snapshot::batches`]).
pub struct BatchScan {
    range: redb::Range<'static, &'static [u8], &'static [u8]>,
}

impl std::fmt::Debug for BatchScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchScan").finish_non_exhaustive()
    }
}

impl Iterator for BatchScan {
    type Item = Result<crate::block::Batch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = self.range.next()?;
        Some(row.map_err(Error::from).and_then(|(_, b)| {
            crate::block::Batch::from_bytes(b.value()).map_err(|e| Error::Corrupt(e.to_string()))
        }))
    }
}
