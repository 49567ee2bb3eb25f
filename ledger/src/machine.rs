//! The state machine: the rules of every transaction, an ordered block, and a
//! gossip batch, as pure functions over a read-only [`StateView`].
//!
//! Nothing here writes: execution collects its writes in an [`Overlay`], which
//! the store commits in one transaction (or drops). A transaction's handler
//! checks everything before it writes anything to the overlay, so a proposer can
//! skip a failing transaction and keep the rest; a block or batch with any
//! failing transaction fails as a whole.
//!
//! The order of checks is cheapest first: chain id, size, stamp, epoch window,
//! then the state (nonce, balance, versions). Signatures were checked before a
//! value became a [`VerifiedBlock`], [`VerifiedBatch`] or [`VerifiedTx`].

use std::collections::{BTreeMap, BTreeSet};

use crate::block::{VerifiedBatch, VerifiedBlock, VerifiedTx, tx_root_of_ids};
use crate::chain::{Engine, Hlc};
use crate::codec::{Decode, Encode};
use crate::error::Error;
use crate::genesis::Genesis;
use crate::hash::Hash;
use crate::keys::Address;
use crate::pow::PowKey;
use crate::state::{Account, RecordEntry, StateKey, WriteOrder};
use crate::timelock::{MAX_MODULUS_BYTES, SealedValue};
use crate::tx::{Payload, PutOp};

/// Read access to committed state.
pub trait StateView {
    /// The encoded entry under `key`, if any.
    fn read(&self, key: &StateKey) -> Result<Option<Vec<u8>>, Error>;
}

/// The last applied block (or the genesis, at height 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tip {
    /// Height of the last block; 0 at genesis.
    pub height: u64,
    /// Hash of the last block, or the genesis hash.
    pub hash: Hash,
    /// Its timestamp (the genesis time at genesis).
    pub timestamp_ms: u64,
    /// The state root after it.
    pub state_root: Hash,
}

impl Tip {
    /// The same tip with a new state root (a batch or an import changes the
    /// state without adding a block).
    pub fn with_root(self, state_root: Hash) -> Tip {
        Tip { state_root, ..self }
    }
}

/// Writes pending over a [`StateView`].
pub struct Overlay<'v> {
    view: &'v dyn StateView,
    accounts: BTreeMap<Address, Account>,
    records: BTreeMap<(Address, Vec<u8>), RecordEntry>,
    others: BTreeMap<StateKey, Vec<u8>>,
}

impl<'v> Overlay<'v> {
    /// No writes yet over `view`.
    pub fn new(view: &'v dyn StateView) -> Self {
        Overlay {
            view,
            accounts: BTreeMap::new(),
            records: BTreeMap::new(),
            others: BTreeMap::new(),
        }
    }

    /// An account as it stands with the pending writes (zero if absent).
    pub fn account(&self, a: &Address) -> Result<Account, Error> {
        if let Some(acc) = self.accounts.get(a) {
            return Ok(*acc);
        }
        match self.view.read(&StateKey::Account(*a))? {
            Some(bytes) => Account::from_bytes(&bytes).map_err(|e| corrupt("account", e)),
            None => Ok(Account::default()),
        }
    }

    /// A record as it stands with the pending writes.
    pub fn record(&self, ns: &Address, key: &[u8]) -> Result<Option<RecordEntry>, Error> {
        if let Some(e) = self.records.get(&(*ns, key.to_vec())) {
            return Ok(Some(e.clone()));
        }
        match self.view.read(&StateKey::Record(*ns, key.to_vec()))? {
            Some(bytes) => RecordEntry::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| corrupt("record", e)),
            None => Ok(None),
        }
    }

    /// Any other entry's bytes as they stand with the pending writes.
    pub fn raw(&self, key: &StateKey) -> Result<Option<Vec<u8>>, Error> {
        if let Some(v) = self.others.get(key) {
            return Ok(Some(v.clone()));
        }
        self.view.read(key)
    }

    /// A record that exists and is not deleted, or `RecordNotFound`.
    pub fn live_record(&self, ns: &Address, key: &[u8]) -> Result<RecordEntry, Error> {
        self.record(ns, key)?
            .filter(|e| !e.is_tombstone())
            .ok_or_else(|| Error::RecordNotFound {
                key: hex::encode(key),
            })
    }

    /// Sets an account.
    pub fn set_account(&mut self, a: Address, acc: Account) {
        self.accounts.insert(a, acc);
    }

    /// Sets a record entry.
    pub fn set_record(&mut self, ns: Address, key: Vec<u8>, entry: RecordEntry) {
        self.records.insert((ns, key), entry);
    }

    /// Sets any other entry, already encoded.
    pub fn set_raw(&mut self, key: StateKey, value: Vec<u8>) {
        self.others.insert(key, value);
    }

    /// The pending writes, encoded, in key order.
    pub fn into_writes(self) -> Vec<(StateKey, Vec<u8>)> {
        let mut out: Vec<(StateKey, Vec<u8>)> =
            Vec::with_capacity(self.accounts.len() + self.records.len() + self.others.len());
        out.extend(
            self.accounts
                .into_iter()
                .map(|(a, acc)| (StateKey::Account(a), acc.to_bytes())),
        );
        out.extend(
            self.records
                .into_iter()
                .map(|((a, k), e)| (StateKey::Record(a, k), e.to_bytes())),
        );
        out.extend(self.others);
        out
    }
}

fn corrupt(what: &str, e: Error) -> Error {
    Error::Corrupt(format!("stored {what} does not decode: {e}"))
}

/// The chain's rules, ready to apply.
#[derive(Clone, Debug)]
pub struct Rules {
    genesis: Genesis,
    pow_key: PowKey,
}

/// Where and when an ordered transaction executes.
#[derive(Clone, Copy, Debug)]
pub struct BlockContext {
    /// The block's height.
    pub height: u64,
    /// The block's timestamp.
    pub timestamp_ms: u64,
    /// The block's proposer.
    pub proposer: Address,
}

impl Rules {
    /// The rules of the chain `genesis` describes.
    pub fn new(genesis: Genesis) -> Rules {
        let pow_key = PowKey::for_chain(&genesis.chain_id);
        Rules { genesis, pow_key }
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The chain's stamp key.
    pub fn pow_key(&self) -> &PowKey {
        &self.pow_key
    }

    /// The epoch of an ordered chain at `height`.
    pub fn block_epoch(&self, height: u64) -> u64 {
        height / self.genesis.params.epoch_length.max(1)
    }

    /// Checks that need no state: chain, size, stamp, validity window, and the
    /// payload's own sizes. Returns the stamp's bits.
    pub fn check_stateless(&self, tx: &VerifiedTx, current_epoch: u64) -> Result<u32, Error> {
        let body = &tx.tx().body;
        let p = &self.genesis.params;
        if body.chain_id != self.genesis.chain_id {
            return Err(Error::WrongChain {
                expected: self.genesis.chain_id.to_string(),
                got: body.chain_id.to_string(),
            });
        }
        over_limit("transaction", tx.size() as u64, p.limits.max_tx_bytes)?;
        let bits = self
            .pow_key
            .check(&tx.id(), tx.tx().stamp, p.pow.min_difficulty)?;
        let window = p.tx_validity_epochs;
        if body.epoch > current_epoch || current_epoch - body.epoch > window {
            return Err(Error::EpochOutOfWindow {
                tx_epoch: body.epoch,
                current: current_epoch,
                window,
            });
        }
        match &body.payload {
            Payload::Put { namespace, ops } => {
                self.check_namespace(&body.sender, namespace)?;
                self.check_keys("put", ops.iter().map(|o| o.key.as_slice()))?;
                for op in ops {
                    // A sealed value counts at its sealed size: that is what
                    // the state holds until it is revealed.
                    over_limit(
                        "record value",
                        op.value.len() as u64,
                        p.limits.max_value_bytes,
                    )?;
                    if op.sealed {
                        SealedValue::from_bytes(&op.value)?;
                    }
                }
            }
            Payload::TimelockReveal { key, answer, .. } => {
                over_limit("record key", key.len() as u64, p.limits.max_key_bytes)?;
                over_limit(
                    "time-lock answer",
                    answer.len() as u64,
                    MAX_MODULUS_BYTES as u64,
                )?;
            }
            Payload::Delete { namespace, keys } => {
                self.check_namespace(&body.sender, namespace)?;
                self.check_keys("delete", keys.iter().map(Vec::as_slice))?;
            }
            _ => {}
        }
        Ok(bits)
    }

    fn check_namespace(&self, sender: &Address, namespace: &Address) -> Result<(), Error> {
        if sender != namespace {
            return Err(Error::ForeignNamespace {
                sender: sender.to_human(),
                namespace: namespace.to_human(),
            });
        }
        Ok(())
    }

    fn check_keys<'k>(
        &self,
        what: &'static str,
        keys: impl ExactSizeIterator<Item = &'k [u8]>,
    ) -> Result<(), Error> {
        let l = &self.genesis.params.limits;
        if keys.len() == 0 {
            return Err(Error::NoOperations(what));
        }
        over_limit("operations", keys.len() as u64, l.max_ops_per_tx)?;
        let mut seen = BTreeSet::new();
        for k in keys {
            over_limit("record key", k.len() as u64, l.max_key_bytes)?;
            if !seen.insert(k) {
                return Err(Error::DuplicateKey {
                    key: hex::encode(k),
                });
            }
        }
        Ok(())
    }

    /// Executes one transaction of an ordered block. On error the overlay is
    /// unchanged.
    pub fn execute_ordered(
        &self,
        overlay: &mut Overlay<'_>,
        ctx: &BlockContext,
        index: usize,
        tx: &VerifiedTx,
    ) -> Result<(), Error> {
        self.check_stateless(tx, self.block_epoch(ctx.height))?;
        let body = &tx.tx().body;
        let sender = body.sender;
        let mut account = overlay.account(&sender)?;
        if body.nonce != account.nonce {
            return Err(Error::BadNonce {
                expected: account.nonce,
                got: body.nonce,
            });
        }
        account.nonce = account
            .nonce
            .checked_add(1)
            .ok_or(Error::Overflow("nonce"))?;
        let order = WriteOrder {
            hlc: Hlc {
                wall_ms: ctx.timestamp_ms,
                logical: u32::try_from(index).map_err(|_| Error::Overflow("transaction index"))?,
            },
            origin: ctx.proposer,
            tx: tx.id(),
        };
        match &body.payload {
            Payload::Transfer { to, amount } => {
                if *amount == 0 {
                    return Err(Error::ZeroAmount);
                }
                account.balance =
                    account
                        .balance
                        .checked_sub(*amount)
                        .ok_or(Error::InsufficientBalance {
                            needed: *amount,
                            available: account.balance,
                        })?;
                if *to == sender {
                    // A transfer to oneself only spends the nonce.
                    account.balance += amount;
                    overlay.set_account(sender, account);
                } else {
                    let mut receiver = overlay.account(to)?;
                    receiver.balance = receiver
                        .balance
                        .checked_add(*amount)
                        .ok_or(Error::Overflow("receiver balance"))?;
                    overlay.set_account(sender, account);
                    overlay.set_account(*to, receiver);
                }
            }
            Payload::Put { namespace, ops } => {
                let mut writes = Vec::with_capacity(ops.len());
                for PutOp {
                    key,
                    value,
                    if_version,
                    sealed,
                } in ops
                {
                    let current = overlay.record(namespace, key)?.map_or(0, |e| e.version);
                    if let Some(expected) = if_version
                        && *expected != current
                    {
                        return Err(Error::CasMismatch {
                            key: hex::encode(key),
                            expected: *expected,
                            actual: current,
                        });
                    }
                    let version = current
                        .checked_add(1)
                        .ok_or(Error::Overflow("record version"))?;
                    writes.push(RecordWrite {
                        key: key.clone(),
                        value: Some(value.clone()),
                        sealed: *sealed,
                        version,
                    });
                }
                self.write_records(overlay, *namespace, order, writes);
                overlay.set_account(sender, account);
            }
            Payload::Delete { namespace, keys } => {
                let mut writes = Vec::with_capacity(keys.len());
                for key in keys {
                    let current = overlay.live_record(namespace, key)?;
                    let version = current
                        .version
                        .checked_add(1)
                        .ok_or(Error::Overflow("record version"))?;
                    writes.push(RecordWrite {
                        key: key.clone(),
                        value: None,
                        sealed: false,
                        version,
                    });
                }
                self.write_records(overlay, *namespace, order, writes);
                overlay.set_account(sender, account);
            }
            Payload::TimelockReveal {
                namespace,
                key,
                answer,
            } => {
                // Anyone may reveal: the answer is public work, and the only
                // value it can write is the one the owner sealed (ADR 0006).
                let current = overlay.live_record(namespace, key)?;
                let sealed = match (&current.value, current.sealed) {
                    (Some(bytes), true) => SealedValue::from_bytes(bytes)
                        .map_err(|e| corrupt("sealed record value", e))?,
                    _ => {
                        return Err(Error::NotSealed {
                            key: hex::encode(key),
                        });
                    }
                };
                // The commitment first (one blake3 hash), then the AEAD.
                let data = sealed.open(answer)?;
                let version = current
                    .version
                    .checked_add(1)
                    .ok_or(Error::Overflow("record version"))?;
                let write = RecordWrite {
                    key: key.clone(),
                    value: Some(data),
                    sealed: false,
                    version,
                };
                self.write_records(overlay, *namespace, order, vec![write]);
                overlay.set_account(sender, account);
            }
            staking @ (Payload::RegisterValidator { .. }
            | Payload::Stake { .. }
            | Payload::Unstake { .. }
            | Payload::Unjail
            | Payload::Evidence { .. }) => {
                if self.genesis.engine != Engine::Pos {
                    return Err(not_yet(staking));
                }
                crate::staking::execute(self, overlay, ctx, sender, account, staking)?;
            }
        }
        Ok(())
    }

    /// What a block does after its transactions: under `pos`, rewards,
    /// downtime accounting and epoch changes ([`crate::staking`]); nothing
    /// under other engines. `votes` must be agreed by consensus (see
    /// [`crate::staking::BlockVotes`]); `None` counts no downtime and shares
    /// the voters' reward over the whole set.
    pub fn end_block(
        &self,
        overlay: &mut Overlay<'_>,
        ctx: &BlockContext,
        votes: Option<&crate::staking::BlockVotes>,
    ) -> Result<(), Error> {
        if self.genesis.engine != Engine::Pos {
            return Ok(());
        }
        crate::staking::end_block(self, overlay, ctx, votes)
    }

    fn write_records(
        &self,
        overlay: &mut Overlay<'_>,
        namespace: Address,
        order: WriteOrder,
        writes: Vec<RecordWrite>,
    ) {
        for w in writes {
            overlay.set_record(
                namespace,
                w.key,
                RecordEntry {
                    value: w.value,
                    sealed: w.sealed,
                    version: w.version,
                    order,
                },
            );
        }
    }

    /// Checks a block's header against the tip and executes its transactions.
    /// The state root is checked by the store, after the writes.
    pub fn execute_block<'v>(
        &self,
        view: &'v dyn StateView,
        tip: &Tip,
        block: &VerifiedBlock,
    ) -> Result<Overlay<'v>, Error> {
        let h = block.header();
        self.check_header(tip, h)?;
        over_limit(
            "block transactions",
            block.txs().len() as u64,
            self.genesis.params.limits.max_txs_per_block,
        )?;
        let computed = tx_root_of_ids(block.txs().iter().map(VerifiedTx::id));
        if computed != h.tx_root {
            return Err(Error::TxRootMismatch {
                header: h.tx_root,
                computed,
            });
        }
        let ctx = BlockContext {
            height: h.height,
            timestamp_ms: h.timestamp_ms,
            proposer: h.proposer,
        };
        let mut overlay = Overlay::new(view);
        for (index, tx) in block.txs().iter().enumerate() {
            self.execute_ordered(&mut overlay, &ctx, index, tx)
                .map_err(|e| Error::InTransaction {
                    index,
                    source: Box::new(e),
                })?;
        }
        self.end_block(&mut overlay, &ctx, None)?;
        Ok(overlay)
    }

    /// The header checks that need only the tip.
    pub fn check_header(&self, tip: &Tip, h: &crate::block::Header) -> Result<(), Error> {
        if !self.genesis.engine.is_ordered() {
            return Err(Error::WrongEngine {
                engine: self.genesis.engine.name(),
                what: "blocks",
            });
        }
        if h.chain_id != self.genesis.chain_id {
            return Err(Error::WrongChain {
                expected: self.genesis.chain_id.to_string(),
                got: h.chain_id.to_string(),
            });
        }
        let expected = tip.height.checked_add(1).ok_or(Error::Overflow("height"))?;
        if h.height != expected {
            return Err(Error::WrongHeight {
                expected,
                got: h.height,
            });
        }
        if h.parent != tip.hash {
            return Err(Error::WrongParent {
                expected: tip.hash,
                got: h.parent,
            });
        }
        if h.timestamp_ms < tip.timestamp_ms {
            return Err(Error::TimestampBeforeParent {
                parent: tip.timestamp_ms,
                got: h.timestamp_ms,
            });
        }
        Ok(())
    }

    /// Executes candidate transactions for a new block, keeping those that pass
    /// (up to the block limit) and returning the others with their errors.
    pub fn execute_proposal<'v>(
        &self,
        view: &'v dyn StateView,
        ctx: &BlockContext,
        candidates: Vec<VerifiedTx>,
    ) -> (Overlay<'v>, Vec<VerifiedTx>, Vec<(Hash, Error)>) {
        let mut overlay = Overlay::new(view);
        let max = self.genesis.params.limits.max_txs_per_block as usize;
        let mut included = Vec::new();
        let mut rejected = Vec::new();
        for tx in candidates {
            if included.len() >= max {
                break;
            }
            match self.execute_ordered(&mut overlay, ctx, included.len(), &tx) {
                Ok(()) => included.push(tx),
                Err(e) => rejected.push((tx.id(), e)),
            }
        }
        if let Err(e) = self.end_block(&mut overlay, ctx, None) {
            // Only a broken store fails here; the block then cannot be built.
            rejected.push((Hash::ZERO, e));
        }
        (overlay, included, rejected)
    }

    /// Executes ordered transactions all of which stay in the block: each one
    /// that fails its rules is skipped (no effect) and returned with its error.
    /// Then the block's end ([`Rules::end_block`], with the agreed `votes`).
    /// Only a storage failure is an error.
    pub fn execute_ordered_all<'v>(
        &self,
        view: &'v dyn StateView,
        ctx: &BlockContext,
        txs: &[VerifiedTx],
        votes: Option<&crate::staking::BlockVotes>,
    ) -> Result<(Overlay<'v>, Vec<(Hash, Error)>), Error> {
        over_limit(
            "block transactions",
            txs.len() as u64,
            self.genesis.params.limits.max_txs_per_block,
        )?;
        let mut overlay = Overlay::new(view);
        let mut failed = Vec::new();
        for (index, tx) in txs.iter().enumerate() {
            // A failing transaction writes nothing: its handler checks all
            // before it writes (see the module docs).
            match self.execute_ordered(&mut overlay, ctx, index, tx) {
                Ok(()) => {}
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => failed.push((tx.id(), e)),
            }
        }
        self.end_block(&mut overlay, ctx, votes)?;
        Ok((overlay, failed))
    }

    /// Merges a gossip batch: every record write is a last-writer-wins register
    /// ordered by `(batch hlc, origin, tx id)`; any invalid transaction refuses
    /// the whole batch. Merging is commutative, associative and idempotent.
    pub fn merge_batch<'v>(
        &self,
        view: &'v dyn StateView,
        batch: &VerifiedBatch,
        now_ms: u64,
    ) -> Result<Overlay<'v>, Error> {
        let g = &self.genesis;
        if g.engine != Engine::Gossip {
            return Err(Error::WrongEngine {
                engine: g.engine.name(),
                what: "gossip batches",
            });
        }
        if *batch.chain_id() != g.chain_id {
            return Err(Error::WrongChain {
                expected: g.chain_id.to_string(),
                got: batch.chain_id().to_string(),
            });
        }
        if batch.hlc().wall_ms > now_ms.saturating_add(g.params.max_clock_skew_ms) {
            return Err(Error::BatchFromFuture {
                batch_ms: batch.hlc().wall_ms,
                now_ms,
                max_skew_ms: g.params.max_clock_skew_ms,
            });
        }
        over_limit(
            "batch transactions",
            batch.txs().len() as u64,
            g.params.limits.max_txs_per_block,
        )?;
        let epoch = g.gossip_epoch(batch.hlc().wall_ms);
        let mut overlay = Overlay::new(view);
        for (index, verified) in batch.txs().iter().enumerate() {
            let tx = verified.tx();
            let wrap = |e| Error::InTransaction {
                index,
                source: Box::new(e),
            };
            self.check_stateless(verified, epoch).map_err(wrap)?;
            let order = WriteOrder {
                hlc: batch.hlc(),
                origin: batch.origin(),
                tx: verified.id(),
            };
            let (namespace, writes): (&Address, RegisterWrites<'_>) = match &tx.body.payload {
                Payload::Put { namespace, ops } => {
                    if ops.iter().any(|o| o.if_version.is_some()) {
                        return Err(wrap(Error::NeedsOrderingEngine {
                            payload: "compare-and-set",
                        }));
                    }
                    (
                        namespace,
                        ops.iter()
                            .map(|o| (o.key.as_slice(), Some(o.value.as_slice()), o.sealed))
                            .collect(),
                    )
                }
                Payload::Delete { namespace, keys } => (
                    namespace,
                    keys.iter().map(|k| (k.as_slice(), None, false)).collect(),
                ),
                other => {
                    return Err(wrap(Error::NeedsOrderingEngine {
                        payload: other.name(),
                    }));
                }
            };
            for (key, value, sealed) in writes {
                let candidate = RecordEntry {
                    value: value.map(<[u8]>::to_vec),
                    sealed,
                    version: 0,
                    order,
                };
                let wins = match overlay.record(namespace, key).map_err(wrap)? {
                    Some(current) => candidate.wins_over(&current),
                    None => true,
                };
                if wins {
                    overlay.set_record(*namespace, key.to_vec(), candidate);
                }
            }
        }
        Ok(overlay)
    }
}

/// One record write of an ordered transaction, checked and ready.
struct RecordWrite {
    key: Vec<u8>,
    /// The value, or `None` for a tombstone.
    value: Option<Vec<u8>>,
    /// Whether the value is sealed.
    sealed: bool,
    version: u64,
}

/// The register writes of one gossip transaction: key, value or tombstone, and
/// whether the value is sealed.
type RegisterWrites<'a> = Vec<(&'a [u8], Option<&'a [u8]>, bool)>;

fn over_limit(what: &'static str, len: u64, max: u64) -> Result<(), Error> {
    if len > max {
        return Err(Error::OverLimit { what, len, max });
    }
    Ok(())
}

fn not_yet(payload: &Payload) -> Error {
    Error::PayloadNotSupported {
        payload: payload.name(),
        arrives_with: "a pos network (proof of stake, issue 6)",
    }
}
