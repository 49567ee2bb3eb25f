//! The `gossip` engine: no global order. A cluster seals the writes it accepted
//! into signed batches `(origin, seq, hlc, txs)`; every replica merges every batch
//! as last-writer-wins registers (ledger ADR 0004), so replicas converge whatever
//! order batches arrive in.
//!
//! The engine decides *what* happens; its host does it:
//!
//! - **Own batches.** Accepted transactions wait in a bounded pool. A batch is
//!   sealed when the pool holds `max_batch_txs`, or on the first tick after the
//!   oldest has waited `batch_interval_ms`. The host merges it into the store
//!   ([`Effect::Merge`]) and reports [`Input::Merged`]; only then is it published
//!   ([`Effect::Publish`]). One own batch is in flight at a time, so a crash
//!   between sealing and committing can never publish two batches under one seq.
//! - **Remote batches.** A batch not yet merged becomes [`Effect::Merge`]; one
//!   already merged or in flight becomes [`Effect::AlreadyHave`] (for gossipsub:
//!   `Ignore`). Per origin the engine tracks the contiguous prefix of merged
//!   seqs and a bounded set above it.
//! - **Anti-entropy.** Every `digest_interval_ms` the engine publishes a
//!   [`Digest`]: the state root and each origin's contiguous prefix. A peer whose
//!   digest is ahead for an origin is asked for the missing range
//!   ([`Effect::Fetch`]), at most `max_fetch` batches at a time.

use std::collections::{BTreeMap, BTreeSet};

use pyralog_ledger::block::{VerifiedBatch, VerifiedTx};
use pyralog_ledger::codec::{Decode, Encode, Reader, put_len, put_u64};
use pyralog_ledger::{Address, Batch, ChainId, Error, Hash, Hlc, Keypair, PowKey};

use crate::admission::{Admit, Mempool, sender_share};
use crate::engine::Engine;

/// The most origins a digest may list.
pub const MAX_DIGEST_ORIGINS: usize = 4096;

/// Tuning of the gossip engine; every queue it keeps is bounded by one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seal a batch when this many transactions wait.
    pub max_batch_txs: usize,
    /// Seal a batch when the oldest waiting transaction is this old.
    pub batch_interval_ms: u64,
    /// Publish a digest this often.
    pub digest_interval_ms: u64,
    /// The most transactions waiting to be sealed.
    pub max_pending: usize,
    /// The most batches asked of one peer for one origin at a time.
    pub max_fetch: u64,
    /// The most batches per origin held above its contiguous prefix.
    pub max_ahead: usize,
    /// The most fetches one digest may trigger.
    pub max_fetches_per_digest: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_batch_txs: 2000,
            // 15 ms since the Raft log's entries got files of their own: a
            // batch's round of the log got cheap enough that sealing sooner
            // pays (docs/BENCHMARKS.md, "A shorter batch interval").
            batch_interval_ms: 15,
            digest_interval_ms: 1000,
            max_pending: 50_000,
            max_fetch: 64,
            max_ahead: 1024,
            max_fetches_per_digest: 16,
        }
    }
}

/// What a replica has: its state root and, per origin, the highest seq up to
/// which it holds every batch.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Digest {
    /// When the replica sent it (its clock, Unix milliseconds): it makes every
    /// digest a distinct gossip message, so an unchanged state is still
    /// re-announced for peers that joined since.
    pub at_ms: u64,
    /// The replica's state root.
    pub state_root: Hash,
    /// Per origin, the contiguous prefix of merged batch seqs.
    pub heads: BTreeMap<Address, u64>,
}

/// Why a submitted transaction was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The pool of transactions waiting to be sealed is full.
    PoolFull {
        /// Its capacity.
        capacity: usize,
    },
    /// The same transaction is already waiting or was sealed.
    Duplicate,
    /// Its sender already has this many transactions waiting.
    SenderFull {
        /// The most one sender may have waiting.
        limit: usize,
    },
    /// It waited, and a transaction with a better stamp took its place in a
    /// full pool.
    Evicted,
    /// The store refused the batch it was sealed into.
    MergeFailed(Error),
}

/// What can happen to the gossip engine.
#[derive(Clone, Debug)]
pub enum Input<P> {
    /// A client's transaction that passed the host's admission checks.
    Submit(VerifiedTx),
    /// A batch from the network, signatures checked; `from` is the peer that
    /// sent it (for fetches) if known.
    Batch {
        /// The sender.
        from: Option<P>,
        /// The batch.
        batch: VerifiedBatch,
    },
    /// The host committed a batch the engine asked it to merge.
    Merged {
        /// The batch's origin.
        origin: Address,
        /// Its seq.
        seq: u64,
        /// The state root after it.
        state_root: Hash,
    },
    /// The host's store refused a batch the engine asked it to merge.
    MergeFailed {
        /// The batch's origin.
        origin: Address,
        /// Its seq.
        seq: u64,
        /// Why.
        error: Error,
    },
    /// A peer's digest.
    Digest {
        /// The peer.
        from: P,
        /// What it has.
        digest: Digest,
    },
    /// A timer the engine set has fired.
    Tick,
}

/// What the gossip engine asks its host to do.
#[derive(Clone, Debug)]
#[must_use]
pub enum Effect<P> {
    /// Merge this batch into the store, durably, then report
    /// [`Input::Merged`] (or [`Input::MergeFailed`]).
    Merge(VerifiedBatch),
    /// Gossip this batch of ours (it is merged locally already).
    Publish(Batch),
    /// A batch already merged or in flight: nothing to do (gossipsub: `Ignore`).
    AlreadyHave {
        /// Its origin.
        origin: Address,
        /// Its seq.
        seq: u64,
    },
    /// Tell the client its transaction was not taken.
    Reject {
        /// The transaction.
        id: Hash,
        /// Why.
        reason: Rejection,
    },
    /// The transactions of this own batch are durable: acknowledge them.
    Committed {
        /// The transactions.
        ids: Vec<Hash>,
        /// The batch's seq.
        seq: u64,
    },
    /// Gossip our digest.
    PublishDigest(Digest),
    /// Ask `peer` for `origin`'s batches `from_seq..=to_seq`; feed what comes
    /// back as [`Input::Batch`].
    Fetch {
        /// Whom to ask.
        peer: P,
        /// Whose batches.
        origin: Address,
        /// The first seq wanted.
        from_seq: u64,
        /// The last seq wanted.
        to_seq: u64,
    },
    /// Deliver [`Input::Tick`] at `at_ms` (replacing any earlier timer).
    SetTimer {
        /// When.
        at_ms: u64,
    },
}

/// Merged seqs of one origin: everything up to `contiguous`, and some above.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Head {
    contiguous: u64,
    above: BTreeSet<u64>,
}

impl Head {
    fn has(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.above.contains(&seq)
    }

    fn record(&mut self, seq: u64) {
        if seq <= self.contiguous {
            return;
        }
        self.above.insert(seq);
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }
}

/// The gossip engine of one cluster.
pub struct GossipEngine<P> {
    config: Config,
    chain_id: ChainId,
    key: Keypair,
    hlc: Hlc,
    next_seq: u64,
    pending: Mempool,
    pending_ids: BTreeSet<Hash>,
    oldest_pending_ms: Option<u64>,
    /// Our sealed batch awaiting `Merged`.
    sealing: Option<VerifiedBatch>,
    heads: BTreeMap<Address, Head>,
    in_flight: BTreeSet<(Address, u64)>,
    state_root: Hash,
    next_digest_ms: u64,
    _peer: std::marker::PhantomData<P>,
}

impl<P> std::fmt::Debug for GossipEngine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipEngine")
            .field("origin", &self.key.address())
            .field("next_seq", &self.next_seq)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<P: Clone> GossipEngine<P> {
    /// An engine for the cluster whose validator key is `key`, resuming from
    /// what the store holds: the state root, and per origin the contiguous
    /// prefix of merged seqs (our own included).
    pub fn new(
        config: Config,
        chain_id: ChainId,
        key: Keypair,
        state_root: Hash,
        heads: BTreeMap<Address, u64>,
        last_hlc: Hlc,
    ) -> Self {
        let next_seq = heads.get(&key.address()).copied().unwrap_or(0) + 1;
        let pending = Mempool::new(
            config.max_pending,
            sender_share(config.max_pending),
            PowKey::for_chain(&chain_id),
        );
        GossipEngine {
            config,
            chain_id,
            key,
            hlc: last_hlc,
            next_seq,
            pending,
            pending_ids: BTreeSet::new(),
            oldest_pending_ms: None,
            sealing: None,
            heads: heads
                .into_iter()
                .map(|(o, contiguous)| {
                    (
                        o,
                        Head {
                            contiguous,
                            above: BTreeSet::new(),
                        },
                    )
                })
                .collect(),
            in_flight: BTreeSet::new(),
            state_root,
            next_digest_ms: 0,
            _peer: std::marker::PhantomData,
        }
    }

    /// This cluster's origin address.
    pub fn origin(&self) -> Address {
        self.key.address()
    }

    /// Transactions waiting to be sealed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// How many transactions may wait at most.
    pub fn pending_capacity(&self) -> usize {
        self.config.max_pending
    }

    /// The digest this replica would publish now.
    pub fn digest(&self) -> Digest {
        Digest {
            at_ms: self.hlc.wall_ms,
            state_root: self.state_root,
            heads: self.heads.iter().map(|(o, h)| (*o, h.contiguous)).collect(),
        }
    }

    fn head(&self, origin: &Address) -> u64 {
        self.heads.get(origin).map_or(0, |h| h.contiguous)
    }

    fn submit(&mut self, now_ms: u64, tx: VerifiedTx) -> Vec<Effect<P>> {
        let id = tx.id();
        if self.pending_ids.contains(&id) {
            return vec![Effect::Reject {
                id,
                reason: Rejection::Duplicate,
            }];
        }
        let mut out = Vec::new();
        match self.pending.add(tx, now_ms) {
            Admit::Added | Admit::Duplicate => {}
            Admit::Evicted(lower) => {
                self.pending_ids.remove(&lower);
                out.push(Effect::Reject {
                    id: lower,
                    reason: Rejection::Evicted,
                });
            }
            Admit::Full { capacity } => {
                return vec![Effect::Reject {
                    id,
                    reason: Rejection::PoolFull { capacity },
                }];
            }
            Admit::SenderFull { limit } => {
                return vec![Effect::Reject {
                    id,
                    reason: Rejection::SenderFull { limit },
                }];
            }
        }
        self.pending_ids.insert(id);
        if self.oldest_pending_ms.is_none() {
            self.oldest_pending_ms = Some(now_ms);
            out.push(Effect::SetTimer {
                at_ms: now_ms + self.config.batch_interval_ms,
            });
        }
        if self.pending.len() >= self.config.max_batch_txs {
            out.extend(self.seal(now_ms));
        }
        out
    }

    /// Seals waiting transactions into our next batch, if none is in flight.
    fn seal(&mut self, now_ms: u64) -> Vec<Effect<P>> {
        if self.sealing.is_some() || self.pending.is_empty() {
            return Vec::new();
        }
        // Best stamps first; the gossip engine has no nonce order to keep.
        let txs: Vec<VerifiedTx> = self.pending.take(self.config.max_batch_txs, false);
        self.oldest_pending_ms = if self.pending.is_empty() {
            None
        } else {
            Some(now_ms)
        };
        self.hlc = self.hlc.tick(now_ms);
        let batch = VerifiedBatch::seal(
            self.chain_id.clone(),
            &self.key,
            self.next_seq,
            self.hlc,
            txs,
        );
        self.in_flight.insert((batch.origin(), batch.seq()));
        self.sealing = Some(batch.clone());
        vec![Effect::Merge(batch)]
    }

    fn receive(&mut self, batch: VerifiedBatch) -> Vec<Effect<P>> {
        let (origin, seq) = (batch.origin(), batch.seq());
        let head = self.heads.get(&origin);
        if head.is_some_and(|h| h.has(seq)) || self.in_flight.contains(&(origin, seq)) {
            return vec![Effect::AlreadyHave { origin, seq }];
        }
        let contiguous = head.map_or(0, |h| h.contiguous);
        let ahead = head.map_or(0, |h| h.above.len());
        if seq > contiguous + 1 && ahead >= self.config.max_ahead {
            // Too far ahead of what we hold for this origin: anti-entropy will
            // fetch it in order later.
            return vec![Effect::AlreadyHave { origin, seq }];
        }
        self.in_flight.insert((origin, seq));
        vec![Effect::Merge(batch)]
    }

    /// Our sealed batch, if `(origin, seq)` is it.
    fn take_sealing(&mut self, origin: Address, seq: u64) -> Option<VerifiedBatch> {
        self.sealing
            .take_if(|b| b.origin() == origin && b.seq() == seq)
    }

    fn merged(&mut self, origin: Address, seq: u64, state_root: Hash) -> Vec<Effect<P>> {
        self.in_flight.remove(&(origin, seq));
        self.heads.entry(origin).or_default().record(seq);
        self.state_root = state_root;
        let Some(batch) = self.take_sealing(origin, seq) else {
            return Vec::new();
        };
        self.next_seq += 1;
        let ids: Vec<Hash> = batch.txs().iter().map(VerifiedTx::id).collect();
        for id in &ids {
            self.pending_ids.remove(id);
        }
        vec![
            Effect::Committed { ids, seq },
            Effect::Publish(batch.into_batch()),
        ]
    }

    fn merge_failed(&mut self, origin: Address, seq: u64, error: Error) -> Vec<Effect<P>> {
        self.in_flight.remove(&(origin, seq));
        let Some(batch) = self.take_sealing(origin, seq) else {
            return Vec::new();
        };
        // Never published, so the seq is free to reuse.
        batch
            .txs()
            .iter()
            .map(|t| {
                self.pending_ids.remove(&t.id());
                Effect::Reject {
                    id: t.id(),
                    reason: Rejection::MergeFailed(error.clone()),
                }
            })
            .collect()
    }

    fn digest_from(&mut self, from: P, digest: Digest) -> Vec<Effect<P>> {
        let mut out = Vec::new();
        for (origin, theirs) in digest.heads.iter().take(MAX_DIGEST_ORIGINS) {
            if out.len() >= self.config.max_fetches_per_digest {
                break;
            }
            let ours = self.head(origin);
            if *theirs > ours {
                out.push(Effect::Fetch {
                    peer: from.clone(),
                    origin: *origin,
                    from_seq: ours + 1,
                    to_seq: (*theirs).min(ours + self.config.max_fetch),
                });
            }
        }
        out
    }

    fn tick(&mut self, now_ms: u64) -> Vec<Effect<P>> {
        let mut out = Vec::new();
        if self
            .oldest_pending_ms
            .is_some_and(|t| now_ms >= t + self.config.batch_interval_ms)
        {
            out.extend(self.seal(now_ms));
        }
        if now_ms >= self.next_digest_ms {
            self.next_digest_ms = now_ms + self.config.digest_interval_ms;
            out.push(Effect::PublishDigest(Digest {
                at_ms: now_ms,
                ..self.digest()
            }));
        }
        let mut next = self.next_digest_ms;
        if let Some(t) = self.oldest_pending_ms {
            next = next.min((t + self.config.batch_interval_ms).max(now_ms + 1));
        }
        out.push(Effect::SetTimer { at_ms: next });
        out
    }
}

impl<P: Clone> Engine for GossipEngine<P> {
    type Input = Input<P>;
    type Effect = Effect<P>;

    fn handle(&mut self, now_ms: u64, input: Input<P>) -> Vec<Effect<P>> {
        match input {
            Input::Submit(tx) => self.submit(now_ms, tx),
            Input::Batch { batch, .. } => self.receive(batch),
            Input::Merged {
                origin,
                seq,
                state_root,
            } => self.merged(origin, seq, state_root),
            Input::MergeFailed { origin, seq, error } => self.merge_failed(origin, seq, error),
            Input::Digest { from, digest } => self.digest_from(from, digest),
            Input::Tick => self.tick(now_ms),
        }
    }
}

impl Encode for Digest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.at_ms);
        self.state_root.encode(out);
        put_len(out, self.heads.len());
        for (origin, seq) in &self.heads {
            origin.encode(out);
            put_u64(out, *seq);
        }
    }
}

impl Decode for Digest {
    const MIN_SIZE: usize = 44;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let at_ms = r.u64("digest time")?;
        let state_root = Hash::decode(r)?;
        let n = r.len(MAX_DIGEST_ORIGINS, 40, "digest heads")?;
        let mut heads = BTreeMap::new();
        let mut last: Option<Address> = None;
        for _ in 0..n {
            let origin = Address::decode(r)?;
            // Strictly ascending: one encoding per digest.
            if last.is_some_and(|l| l >= origin) {
                return Err(Error::NonCanonical {
                    what: "digest heads order",
                });
            }
            last = Some(origin);
            heads.insert(origin, r.u64("digest head")?);
        }
        Ok(Digest {
            at_ms,
            state_root,
            heads,
        })
    }
}
