//! The `pbft` engine: Practical Byzantine Fault Tolerance (Castro and Liskov,
//! OSDI 1999) over n = 3f+1 validators, as a pure state machine.
//!
//! Section numbers below refer to that paper. What the host does:
//!
//! - feeds every message from the network ([`Input::Message`]), every
//!   transaction its admission accepted ([`Input::Submit`]), a [`Input::Tick`]
//!   every few milliseconds, and, after it executed a committed block, the state
//!   root ([`Input::Executed`]);
//! - performs the effects in order: [`Effect::Persist`] before anything after
//!   it is sent (so a restarted replica never signs two different things for one
//!   slot), [`Effect::Broadcast`] to every validator, [`Effect::Commit`] (execute
//!   and store the block, in sequence order), [`Effect::Fetch`] (ask a peer for
//!   committed blocks with their certificates and feed them back as
//!   [`Input::Synced`]).
//!
//! Blocks are ordered, then executed (§4.2): a proposal fixes the transactions,
//! the proposer and a timestamp; the state root follows from executing it after
//! it commits. That is what lets several sequence numbers be in flight at once.
//! Checkpoints (§4.3) then sign the state roots every `checkpoint_interval`
//! blocks.

mod messages;
mod proposers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pyralog_ledger::block::VerifiedTx;
use pyralog_ledger::{Address, ChainId, Hash, Keypair, PowKey, Signature};

pub use messages::{
    CheckpointCert, CommittedBlock, LastCommit, Message, NewView, PreparedCert, Proposal,
    Reproposal, Signed, SignedViewChange, ViewChange, caps, committed_bytes, engine_data,
    engine_data_of,
};
pub use proposers::{Proposers, RoundRobin, StakeWeighted, draw};
use pyralog_ledger::Error;
use pyralog_ledger::codec::{Decode, Encode, Reader, put_u64};

use crate::admission::{Admit, Mempool, sender_share};
use crate::bft::{
    CertError, Evidence, Kind, Recorded, Statement, ValidatorSet, Votes, check_certificate,
    signed_power,
};
use crate::engine::Engine;

/// Tuning of the PBFT engine; every queue it keeps is bounded by one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A checkpoint every this many blocks (the paper's K).
    pub checkpoint_interval: u64,
    /// Sequence numbers accepted above the stable checkpoint (the paper's L =
    /// H − h); a multiple of the checkpoint interval.
    pub window: u64,
    /// The most proposals the primary has in flight (assigned, not committed).
    pub max_in_flight: u64,
    /// The most transactions in one proposal.
    pub max_block_txs: usize,
    /// The primary proposes once the oldest waiting transaction has waited
    /// this long (or a full block waits), so blocks batch under load.
    pub batch_delay_ms: u64,
    /// The most transactions waiting in the pool.
    pub max_pool: usize,
    /// How long a replica waits for progress before it asks for a new view;
    /// doubles with each view that fails in a row.
    pub view_timeout_ms: u64,
    /// The ceiling of that doubling.
    pub max_view_timeout_ms: u64,
    /// How often a replica resends its messages for what has not committed.
    pub retransmit_ms: u64,
    /// How long a replica without progress waits before fetching blocks from a
    /// peer that is ahead.
    pub sync_ms: u64,
    /// How far ahead of this replica's clock a proposal's timestamp may be.
    pub max_clock_skew_ms: u64,
    /// The furthest view ahead of the current one a view-change is kept for.
    pub max_view_jump: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checkpoint_interval: 16,
            window: 64,
            max_in_flight: 4,
            max_block_txs: 2000,
            batch_delay_ms: 2,
            max_pool: 50_000,
            view_timeout_ms: 2000,
            max_view_timeout_ms: 32_000,
            retransmit_ms: 1000,
            sync_ms: 1000,
            max_clock_skew_ms: 10_000,
            max_view_jump: 10_000,
        }
    }
}

/// What can happen to the engine.
#[derive(Clone, Debug)]
pub enum Input {
    /// A client's transaction that passed the host's admission checks.
    Submit(VerifiedTx),
    /// A decoded message from the network (its statement signature is checked
    /// here).
    Message(Signed),
    /// The host executed the block at `seq`; the state root after it.
    Executed {
        /// The sequence number.
        seq: u64,
        /// The state root after it.
        state_root: Hash,
    },
    /// A committed block fetched from a peer (its certificate is checked here).
    Synced {
        /// The peer it came from.
        from: Address,
        /// The block.
        block: CommittedBlock,
    },
    /// Time has passed.
    Tick,
}

/// What the engine asks its host to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Effect {
    /// Make this record durable before performing any later effect.
    Persist(Record),
    /// Send to every validator.
    Broadcast(Signed),
    /// Send to one validator.
    Send {
        /// The validator.
        to: Address,
        /// The message.
        message: Signed,
    },
    /// Execute and store this block; it is the next in sequence.
    Commit(CommittedBlock),
    /// Ask `from` for the committed blocks after `after`.
    Fetch {
        /// The peer.
        from: Address,
        /// The last sequence number this replica has.
        after: u64,
    },
    /// A message was refused; `reason` says whether the sender misbehaved.
    Rejected {
        /// The validator (or claimed validator) that sent it.
        from: Address,
        /// Why.
        reason: Reject,
    },
    /// Proof that a validator signed two conflicting statements.
    Evidence(Evidence),
    /// The replica entered a new view.
    ViewChanged {
        /// The view.
        view: u64,
    },
}

/// What a replica persists so that, restarted, it neither contradicts what it
/// signed nor forgets what it prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The current view, and whether the replica is changing to it.
    View {
        /// The view.
        view: u64,
        /// Still waiting for its new-view.
        changing: bool,
    },
    /// A statement this replica signed.
    Signed(Statement),
    /// A prepared certificate this replica holds.
    Prepared(PreparedCert),
    /// A stable checkpoint.
    Stable(CheckpointCert),
}

impl Encode for Record {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::View { view, changing } => {
                out.push(0);
                put_u64(out, *view);
                out.push(u8::from(*changing));
            }
            Record::Signed(st) => {
                out.push(1);
                st.encode(out);
            }
            Record::Prepared(cert) => {
                out.push(2);
                cert.encode(out);
            }
            Record::Stable(cert) => {
                out.push(3);
                cert.encode(out);
            }
        }
    }
}

impl Decode for Record {
    const MIN_SIZE: usize = 2;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(match r.u8("pbft record")? {
            0 => Record::View {
                view: r.u64("view")?,
                changing: r.bool("changing")?,
            },
            1 => Record::Signed(Statement::decode(r)?),
            2 => Record::Prepared(PreparedCert::decode(r)?),
            3 => Record::Stable(CheckpointCert::decode(r)?),
            tag => {
                return Err(Error::UnknownTag {
                    what: "pbft record",
                    tag,
                });
            }
        })
    }
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The signer is not a validator.
    NotValidator,
    /// The signature does not verify.
    BadSignature,
    /// A message for a view this replica is not in.
    WrongView {
        /// The message's view.
        got: u64,
        /// This replica's.
        current: u64,
    },
    /// A sequence number outside the watermarks.
    OutOfWindow {
        /// The message's.
        seq: u64,
        /// The low watermark (exclusive).
        low: u64,
        /// The high watermark (inclusive).
        high: u64,
    },
    /// A message only the view's primary may send.
    NotPrimary {
        /// The view.
        view: u64,
        /// Its primary.
        primary: Address,
    },
    /// The primary does not send prepares (its pre-prepare stands for one).
    PrepareFromPrimary,
    /// A proposal that breaks a rule.
    BadProposal(&'static str),
    /// A second, different statement for one slot.
    Equivocation,
    /// A certificate that does not hold.
    BadCertificate(CertError),
    /// A view-change that does not hold up.
    BadViewChange(String),
    /// A new-view without a quorum of view-changes.
    TooFewViewChanges {
        /// Their power.
        power: u64,
        /// A quorum.
        needed: u64,
    },
    /// A new-view whose pre-prepares are not the ones its view-changes imply.
    NewViewMismatch,
    /// A pre-prepare whose proposer depends on a previous block this replica
    /// does not know yet (per-height proposers); kept aside or resent later.
    UnknownParent {
        /// The pre-prepare's sequence number.
        seq: u64,
    },
    /// Evidence that does not hold up (proof of stake).
    BadEvidence(String),
}

impl Reject {
    /// Whether the message shows its sender broke the protocol (as opposed to
    /// being late or ahead, which honest replicas are too).
    pub fn is_misbehaviour(&self) -> bool {
        !matches!(
            self,
            Reject::WrongView { .. } | Reject::OutOfWindow { .. } | Reject::UnknownParent { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Normal,
    Changing,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    /// The pre-prepare accepted: its view, proposal, signature and signer (the
    /// view's leader, or the sequence number's proposer).
    accepted: Option<(u64, Arc<Proposal>, Signature, Address)>,
    /// The latest prepared certificate.
    prepared: Option<PreparedCert>,
    /// This replica's commit certificate.
    committed: Option<CommittedBlock>,
}

/// Transactions waiting to be proposed, best stamps first (a sender's in nonce
/// order), and those in proposals that have not committed.
#[derive(Debug)]
struct Pool {
    waiting: Mempool,
    in_flight: BTreeMap<Hash, VerifiedTx>,
}

impl Pool {
    fn new(capacity: usize, pow: PowKey) -> Pool {
        Pool {
            waiting: Mempool::new(capacity, sender_share(capacity), pow),
            in_flight: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }

    fn add(&mut self, tx: VerifiedTx, now: u64) -> bool {
        if self.in_flight.contains_key(&tx.id()) {
            return false;
        }
        matches!(self.waiting.add(tx, now), Admit::Added | Admit::Evicted(_))
    }

    /// When the oldest waiting transaction arrived.
    fn oldest(&self) -> Option<u64> {
        self.waiting.oldest_ms()
    }

    fn take(&mut self, n: usize) -> Vec<VerifiedTx> {
        let out = self.waiting.take(n, true);
        for tx in &out {
            self.in_flight.insert(tx.id(), tx.clone());
        }
        out
    }

    fn remove(&mut self, id: &Hash) {
        self.waiting.remove(id);
        self.in_flight.remove(id);
    }

    /// Moves a transaction another validator proposed from the queue to the
    /// in-flight set, so it is not proposed twice.
    fn claim(&mut self, id: &Hash) {
        if let Some(tx) = self.waiting.remove(id) {
            self.in_flight.insert(*id, tx);
        }
    }

    /// Everything held, waiting or in flight.
    fn drain(&mut self) -> Vec<VerifiedTx> {
        let mut out: Vec<VerifiedTx> = std::mem::take(&mut self.in_flight).into_values().collect();
        out.extend(self.waiting.take(usize::MAX, true));
        out
    }

    /// Puts transactions of proposals that will not commit back in the queue.
    fn requeue_in_flight(&mut self, now: u64) {
        for (_, tx) in std::mem::take(&mut self.in_flight) {
            self.add(tx, now);
        }
    }
}

/// The sequence numbers one engine instance orders: `base + 1 ..= limit`.
/// PBFT orders from genesis without end; proof of stake runs one instance per
/// epoch, from the block that closed the previous epoch to the epoch's last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The block before the first one (0: the genesis).
    pub base: u64,
    /// The proposal digest of block `base` (zero at genesis).
    pub base_digest: Hash,
    /// The last sequence number.
    pub limit: u64,
}

impl Span {
    /// From the genesis, without end.
    pub const GENESIS: Span = Span {
        base: 0,
        base_digest: Hash::ZERO,
        limit: u64::MAX,
    };
}

/// The most pre-prepares kept aside until their parent is known.
pub const MAX_EARLY: usize = 64;

/// One PBFT replica. `P` picks the proposers: [`RoundRobin`] is PBFT,
/// [`StakeWeighted`] is proof of stake.
#[derive(Debug)]
pub struct Pbft<P: Proposers = RoundRobin> {
    chain: ChainId,
    validators: ValidatorSet,
    proposers: P,
    span: Span,
    /// Proposal digests of delivered blocks at or above the low watermark.
    digests: BTreeMap<u64, Hash>,
    /// Pre-prepares that arrived before their parent (per-height proposers).
    early: BTreeMap<(u64, u64), (Address, Arc<Proposal>, Signature)>,
    /// Per-height proposers: the first height the new-view of the current
    /// view left open; its leader proposes it, so every view with an honest
    /// leader orders at least one block (0: none).
    first_fresh: u64,
    /// The last block delivered, whose commits a per-height proposer carries
    /// in its next proposal (its slot may be pruned by a checkpoint).
    delivered: Option<CommittedBlock>,
    key: Option<Keypair>,
    cfg: Config,
    view: u64,
    status: Status,
    low: u64,
    stable: CheckpointCert,
    slots: BTreeMap<u64, Slot>,
    prepares: Votes,
    commits: Votes,
    checkpoints: Votes,
    committed: u64,
    executed: u64,
    next_seq: u64,
    signed: BTreeMap<(Kind, u64, u64), Hash>,
    view_changes: BTreeMap<u64, BTreeMap<Address, SignedViewChange>>,
    outbox: BTreeMap<(Kind, u64, u64), Signed>,
    /// The new-view this replica sent as primary of the current view, for
    /// replicas that missed it.
    new_view: Option<Signed>,
    pool: Pool,
    deadline: Option<u64>,
    timeout: u64,
    last_retransmit: u64,
    last_progress: u64,
    last_fetch: u64,
    ahead: BTreeMap<Address, u64>,
    /// Per validator, the highest view its prepares and commits were in.
    views_seen: BTreeMap<Address, u64>,
    fetches: u64,
    /// Restarted while changing view: ask for that view again.
    resume_view_change: bool,
}

impl Pbft<RoundRobin> {
    /// A PBFT replica at genesis. `key` is this replica's validator key, or
    /// `None` for a node that only follows.
    pub fn new(
        chain: ChainId,
        validators: ValidatorSet,
        key: Option<Keypair>,
        cfg: Config,
    ) -> Pbft {
        Pbft::with_proposers(chain, validators, key, cfg, RoundRobin, Span::GENESIS)
    }

    /// A PBFT replica restarted: `executed` is the last block its store holds,
    /// and `records` what it persisted, in the order it persisted them.
    pub fn recover(
        chain: ChainId,
        validators: ValidatorSet,
        key: Option<Keypair>,
        cfg: Config,
        executed: u64,
        records: impl IntoIterator<Item = Record>,
    ) -> Pbft {
        Pbft::recover_with(
            chain,
            validators,
            key,
            cfg,
            RoundRobin,
            Span::GENESIS,
            (executed, Hash::ZERO),
            records,
        )
    }
}

impl<P: Proposers> Pbft<P> {
    /// A replica that orders `span` with `proposers`, starting right after
    /// its base.
    pub fn with_proposers(
        chain: ChainId,
        validators: ValidatorSet,
        key: Option<Keypair>,
        cfg: Config,
        proposers: P,
        span: Span,
    ) -> Pbft<P> {
        let timeout = cfg.view_timeout_ms;
        let pool = Pool::new(cfg.max_pool, PowKey::for_chain(&chain));
        Pbft {
            chain,
            validators,
            proposers,
            span,
            digests: BTreeMap::from([(span.base, span.base_digest)]),
            early: BTreeMap::new(),
            first_fresh: 0,
            delivered: None,
            key,
            cfg,
            view: 0,
            status: Status::Normal,
            low: span.base,
            stable: CheckpointCert {
                seq: span.base,
                ..CheckpointCert::default()
            },
            slots: BTreeMap::new(),
            prepares: Votes::new(),
            commits: Votes::new(),
            checkpoints: Votes::new(),
            committed: span.base,
            executed: span.base,
            next_seq: span.base,
            signed: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            outbox: BTreeMap::new(),
            new_view: None,
            pool,
            deadline: None,
            timeout,
            last_retransmit: 0,
            last_progress: 0,
            last_fetch: 0,
            ahead: BTreeMap::new(),
            views_seen: BTreeMap::new(),
            fetches: 0,
            resume_view_change: false,
        }
    }

    /// A replica restarted: `executed` is the last block its store holds with
    /// its proposal digest, and `records` what it persisted since `span`
    /// began, in the order it persisted them.
    #[allow(clippy::too_many_arguments)]
    pub fn recover_with(
        chain: ChainId,
        validators: ValidatorSet,
        key: Option<Keypair>,
        cfg: Config,
        proposers: P,
        span: Span,
        executed: (u64, Hash),
        records: impl IntoIterator<Item = Record>,
    ) -> Pbft<P> {
        let mut p = Pbft::with_proposers(chain, validators, key, cfg, proposers, span);
        let (executed, last_digest) = executed;
        let executed = executed.max(span.base);
        p.committed = executed;
        p.executed = executed;
        p.digests.insert(executed, last_digest);
        for r in records {
            match r {
                Record::View { view, changing } => {
                    p.view = view;
                    p.status = if changing {
                        Status::Changing
                    } else {
                        Status::Normal
                    };
                }
                Record::Signed(st) => {
                    p.signed.insert((st.kind, st.round, st.height), st.digest);
                }
                Record::Prepared(cert) => {
                    let slot = p.slots.entry(cert.proposal.seq()).or_default();
                    if slot.prepared.as_ref().is_none_or(|c| c.view <= cert.view) {
                        slot.prepared = Some(cert);
                    }
                }
                Record::Stable(cert) => {
                    if cert.seq > p.low {
                        p.low = cert.seq;
                        p.stable = cert;
                    }
                }
            }
        }
        let (low, base) = (p.low, p.span.base);
        p.slots.retain(|s, _| *s > low);
        // A view-change's height is its checkpoint's, at or below `low`;
        // those of this span are kept (the span's base: an epoch's first).
        p.signed
            .retain(|(k, _, h), _| *h > low || *h == 0 || (*k == Kind::ViewChange && *h >= base));
        // A view-change signed for a later view than the records say (its
        // record did not reach this process, only the signing history did):
        // the key left its view, so the replica is changing to that one.
        let asked = p
            .signed
            .keys()
            .filter(|(k, _, _)| *k == Kind::ViewChange)
            .map(|(_, r, _)| *r)
            .max();
        if let Some(asked) = asked
            && asked > p.view
        {
            p.view = asked;
            p.status = Status::Changing;
        }
        p.resume_view_change = p.status == Status::Changing;
        let view = p.view;
        p.next_seq = p
            .signed
            .keys()
            .filter(|(k, v, _)| *k == Kind::PrePrepare && *v == view)
            .map(|(_, _, h)| *h)
            .max()
            .unwrap_or(0)
            .max(p.committed)
            .max(p.low);
        p
    }

    /// The current view (the target view while changing).
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Whether the replica is waiting for a new-view.
    pub fn is_changing_view(&self) -> bool {
        self.status == Status::Changing
    }

    /// The last sequence number handed to the host to execute.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The stable checkpoint (the low watermark).
    pub fn stable_checkpoint(&self) -> &CheckpointCert {
        &self.stable
    }

    /// The leader of `view`: PBFT's primary, which proposes every sequence
    /// number of its view; under per-height proposers, the validator that
    /// runs the change into `view`.
    pub fn primary(&self, view: u64) -> Address {
        self.proposers.leader(&self.validators, view)
    }

    /// The proposal digest of the block before `seq` as this replica knows it
    /// in `view`: the pre-prepare it accepted in this view, or the block it
    /// delivered.
    fn parent_digest(&self, view: u64, seq: u64) -> Option<Hash> {
        let prev = seq.checked_sub(1)?;
        if let Some(slot) = self.slots.get(&prev) {
            if let Some(c) = &slot.committed {
                return Some(c.proposal.digest());
            }
            if let Some((v, p, _, _)) = &slot.accepted
                && *v == view
            {
                return Some(p.digest());
            }
        }
        self.digests.get(&prev).copied()
    }

    /// Who may propose `seq` in `view`, if this replica knows the parent.
    fn proposer_of(&self, view: u64, seq: u64) -> Option<Address> {
        if !P::PER_HEIGHT || (view == self.view && seq == self.first_fresh) {
            return Some(self.primary(view));
        }
        let parent = self.parent_digest(view, seq)?;
        Some(
            self.proposers
                .proposer(&self.validators, view, seq, &parent),
        )
    }

    /// The commit this replica signed for its last delivered block, if it
    /// still holds it (a heartbeat for replicas that are behind).
    pub fn last_commit(&self) -> Option<Signed> {
        self.outbox
            .iter()
            .rev()
            .find(|((k, _, h), _)| *k == Kind::Commit && *h == self.committed)
            .map(|(_, m)| m.clone())
    }

    /// The proposal digest of the last delivered block, if known.
    pub fn last_digest(&self) -> Option<Hash> {
        self.digests.get(&self.committed).copied()
    }

    /// The sequence numbers this instance orders.
    pub fn span(&self) -> Span {
        self.span
    }

    /// Takes every transaction the pool holds (for the next epoch's instance).
    pub fn drain_pool(&mut self) -> Vec<VerifiedTx> {
        self.pool.drain()
    }

    /// The validator set.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// When this replica will propose next if no other input comes first:
    /// the moment its pool's oldest transaction will have waited
    /// `batch_delay_ms` (ms, on the clock the inputs carry), if it is the
    /// proposer of the next sequence number and there is room for it. A host
    /// that ticks at coarser steps ticks then too, so a transaction does not
    /// wait out a whole tick on top of the batching delay.
    pub fn proposal_due(&self) -> Option<u64> {
        let me = self.me()?;
        let (view, seq) = (self.view, self.next_seq + 1);
        if self.status != Status::Normal
            || !self.has_room()
            || (P::PER_HEIGHT && self.accepted_in(view, seq))
            || self.proposer_of(view, seq) != Some(me)
        {
            return None;
        }
        Some(self.pool.oldest()? + self.cfg.batch_delay_ms)
    }

    /// Transactions waiting or in flight.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// How many transactions the pool holds at most.
    pub fn pool_capacity(&self) -> usize {
        self.cfg.max_pool
    }

    fn me(&self) -> Option<Address> {
        self.key.as_ref().map(Keypair::address)
    }

    fn is_primary(&self) -> bool {
        self.me() == Some(self.primary(self.view))
    }

    fn high(&self) -> u64 {
        self.low
            .saturating_add(self.cfg.window)
            .min(self.span.limit)
    }

    // ---- signing ----

    /// Signs `message` unless this replica already signed something else for
    /// its slot; persists the statement first.
    fn sign(&mut self, message: Message, out: &mut Vec<Effect>) -> Option<Signed> {
        let key = self.key.as_ref()?;
        if !self.validators.contains(&key.address()) {
            // A key outside this set (a proof-of-stake validator waiting for
            // its epoch) follows without voting.
            return None;
        }
        let st = message.statement();
        if matches!(
            st.kind,
            Kind::PrePrepare | Kind::Prepare | Kind::Commit | Kind::ViewChange
        ) {
            let slot = (st.kind, st.round, st.height);
            match self.signed.get(&slot) {
                Some(d) if *d != st.digest => return None,
                Some(_) => {}
                None => {
                    self.signed.insert(slot, st.digest);
                    out.push(Effect::Persist(Record::Signed(st)));
                }
            }
        }
        Some(Signed::sign(&self.chain, key, message))
    }

    fn send(&mut self, signed: Signed, out: &mut Vec<Effect>) {
        let st = signed.message.statement();
        self.outbox
            .insert((st.kind, st.round, st.height), signed.clone());
        out.push(Effect::Broadcast(signed));
    }

    // ---- inputs ----

    fn on_submit(&mut self, now: u64, tx: VerifiedTx) {
        // A full pool keeps the better stamps (admission::Mempool).
        self.pool.add(tx, now);
    }

    fn on_message(&mut self, now: u64, m: Signed, out: &mut Vec<Effect>) {
        let from = m.signer;
        let reject = |reason| Effect::Rejected { from, reason };
        if !self.validators.contains(&from) {
            out.push(reject(Reject::NotValidator));
            return;
        }
        let st = m.message.statement();
        if st.verify(&self.chain, &from, &m.signature).is_err() {
            out.push(reject(Reject::BadSignature));
            return;
        }
        // What the sender holds at least: its commits and checkpoints, and
        // the checkpoint its view-changes and new-views start from (a
        // replica left behind when the others moved on to the next epoch
        // hears nothing else from them). A hint of whom to fetch from only:
        // what comes back is checked against its certificates.
        if matches!(
            st.kind,
            Kind::Commit | Kind::Checkpoint | Kind::ViewChange | Kind::NewView
        ) {
            let seen = self.ahead.entry(from).or_default();
            *seen = (*seen).max(st.height);
        }
        // Views are numbered per instance: a vote for a height outside this
        // instance's span (the previous epoch's) says nothing about ours.
        if matches!(st.kind, Kind::Prepare | Kind::Commit)
            && st.height > self.span.base
            && st.height <= self.span.limit
        {
            let seen = self.views_seen.entry(from).or_default();
            *seen = (*seen).max(st.round);
        }
        let result = match m.message {
            Message::PrePrepare { view, proposal } => {
                self.on_pre_prepare(now, from, view, proposal, m.signature, out)
            }
            Message::Prepare { view, seq, digest } => {
                self.on_prepare(now, from, view, seq, digest, m.signature, out)
            }
            Message::Commit { view, seq, digest } => {
                self.on_commit(now, from, view, seq, digest, m.signature, out)
            }
            Message::Checkpoint { seq, state_root } => {
                self.on_checkpoint(from, seq, state_root, m.signature, out)
            }
            Message::ViewChange(vc) => self.on_view_change(now, from, vc, m.signature, out),
            Message::NewView(nv) => self.on_new_view(now, from, nv, out),
        };
        if let Err(reason) = result {
            out.push(reject(reason));
        }
    }

    fn check_normal(&self, view: u64) -> Result<(), Reject> {
        if self.status != Status::Normal || view != self.view {
            return Err(Reject::WrongView {
                got: view,
                current: self.view,
            });
        }
        Ok(())
    }

    fn check_window(&self, seq: u64) -> Result<(), Reject> {
        if seq <= self.low || seq > self.high() {
            return Err(Reject::OutOfWindow {
                seq,
                low: self.low,
                high: self.high(),
            });
        }
        Ok(())
    }

    /// Records a vote; equivocation becomes evidence and a rejection.
    fn record(
        votes: &mut Votes,
        st: &Statement,
        from: Address,
        sig: Signature,
        power: u64,
        out: &mut Vec<Effect>,
    ) -> Result<bool, Reject> {
        match votes.record(st, from, sig, power) {
            Recorded::New => Ok(true),
            Recorded::Duplicate => Ok(false),
            Recorded::Equivocation(ev) => {
                out.push(Effect::Evidence(*ev));
                Err(Reject::Equivocation)
            }
        }
    }

    /// §4.2: a backup accepts a pre-prepare if it is in the view, signed by the
    /// view's primary, in the window, and no other proposal was accepted for
    /// this view and sequence number; then it multicasts a prepare.
    fn on_pre_prepare(
        &mut self,
        now: u64,
        from: Address,
        view: u64,
        proposal: Arc<Proposal>,
        sig: Signature,
        out: &mut Vec<Effect>,
    ) -> Result<(), Reject> {
        self.check_normal(view)?;
        let seq = proposal.seq();
        self.check_window(seq)?;
        let Some(primary) = self.proposer_of(view, seq) else {
            // Per-height proposers: the parent is not known yet. Keep the
            // pre-prepare aside (bounded); it is tried again once it is.
            if self.early.len() < MAX_EARLY || self.early.contains_key(&(view, seq)) {
                self.early.insert((view, seq), (from, proposal, sig));
            }
            return Err(Reject::UnknownParent { seq });
        };
        if from != primary {
            return Err(Reject::NotPrimary { view, primary });
        }
        if proposal.proposer() != from {
            return Err(Reject::BadProposal("the proposer field is not the signer"));
        }
        if let Some(lc) = proposal.last_commit() {
            self.check_last_commit(seq, lc)?;
        }
        if proposal.txs().len() > self.cfg.max_block_txs {
            return Err(Reject::BadProposal("too many transactions"));
        }
        if proposal.timestamp_ms() > now.saturating_add(self.cfg.max_clock_skew_ms) {
            return Err(Reject::BadProposal("timestamp in the future"));
        }
        self.accept(view, proposal, sig, from, out)
    }

    /// A proposal's [`LastCommit`] (per-height proposers only): an earlier
    /// height of this span, a quorum of valid commit signatures, and the
    /// digest this replica delivered there if it did.
    fn check_last_commit(&self, seq: u64, lc: &LastCommit) -> Result<(), Reject> {
        if !P::PER_HEIGHT {
            return Err(Reject::BadProposal(
                "a last commit under round-robin proposers",
            ));
        }
        if lc.height <= self.span.base || lc.height >= seq {
            return Err(Reject::BadProposal(
                "a last commit outside the span before it",
            ));
        }
        if let Some(d) = self.digests.get(&lc.height)
            && *d != lc.digest
        {
            return Err(Reject::BadProposal("a last commit for another block"));
        }
        check_certificate(&self.chain, &self.validators, &lc.statement(), &lc.commits)
            .map_err(Reject::BadCertificate)
    }

    /// The commits this replica holds for its last delivered block, to carry
    /// in its next proposal (per-height proposers): all it has received, not
    /// only the quorum that committed it, so voters are not left out.
    fn last_commit_to_carry(&self) -> Option<Arc<LastCommit>> {
        let height = self.committed;
        if height <= self.span.base {
            return None;
        }
        let block = self
            .delivered
            .as_ref()
            .filter(|b| b.proposal.seq() == height)?;
        let digest = block.proposal.digest();
        let mut commits = self.commits.signatures(block.view, height, &digest);
        if commits.len() < block.commits.len() {
            commits.clone_from(&block.commits);
        }
        Some(Arc::new(LastCommit {
            height,
            view: block.view,
            digest,
            commits,
        }))
    }

    /// Per-height proposers: pre-prepares kept aside whose parent is now known.
    fn retry_early(&mut self, now: u64, out: &mut Vec<Effect>) {
        if !P::PER_HEIGHT {
            return;
        }
        let view = self.view;
        loop {
            let ready: Vec<(u64, u64)> = self
                .early
                .keys()
                .filter(|(v, s)| *v == view && self.parent_digest(*v, *s).is_some())
                .copied()
                .collect();
            if ready.is_empty() {
                break;
            }
            for key in ready {
                if let Some((from, proposal, sig)) = self.early.remove(&key)
                    && let Err(reason) = self.on_pre_prepare(now, from, view, proposal, sig, out)
                {
                    out.push(Effect::Rejected { from, reason });
                }
            }
        }
        let low = self.low;
        self.early.retain(|(v, s), _| *v >= view && *s > low);
    }

    /// Accepts a pre-prepare (from the primary, or from a new-view) and
    /// prepares it.
    fn accept(
        &mut self,
        view: u64,
        proposal: Arc<Proposal>,
        sig: Signature,
        signer: Address,
        out: &mut Vec<Effect>,
    ) -> Result<(), Reject> {
        let seq = proposal.seq();
        let digest = proposal.digest();
        let slot = self.slots.entry(seq).or_default();
        if let Some(c) = &slot.committed
            && c.proposal.digest() != digest
        {
            return Err(Reject::BadProposal("conflicts with a committed proposal"));
        }
        if let Some((v, p, first_sig, first_signer)) = &slot.accepted
            && *v == view
            && (*first_signer == signer || p.digest() == digest)
        {
            if p.digest() == digest {
                return Ok(());
            }
            let first = Statement {
                kind: Kind::PrePrepare,
                round: view,
                height: seq,
                digest: p.digest(),
            };
            out.push(Effect::Evidence(Evidence {
                validator: signer,
                first,
                first_sig: *first_sig,
                second: Statement { digest, ..first },
                second_sig: sig,
            }));
            return Err(Reject::Equivocation);
        }
        if let Some((v, _, _, _)) = &slot.accepted
            && *v == view
        {
            // Another signer for a slot already taken in this view (a leader's
            // re-proposal against a proposer's): the first stands.
            return Err(Reject::BadProposal("the slot is taken in this view"));
        }
        if P::PER_HEIGHT {
            for tx in proposal.txs() {
                self.pool.claim(&tx.id());
            }
            self.next_seq = self.next_seq.max(seq);
        }
        let slot = self.slots.entry(seq).or_default();
        slot.accepted = Some((view, proposal, sig, signer));
        if self.me() != Some(signer)
            && let Some(m) = self.sign(Message::Prepare { view, seq, digest }, out)
        {
            let power = self.validators.power_of(&m.signer);
            let st = m.message.statement();
            let _ = Self::record(&mut self.prepares, &st, m.signer, m.signature, power, out);
            self.send(m, out);
        }
        self.check_prepared(seq, out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_prepare(
        &mut self,
        now: u64,
        from: Address,
        view: u64,
        seq: u64,
        digest: Hash,
        sig: Signature,
        out: &mut Vec<Effect>,
    ) -> Result<(), Reject> {
        self.check_normal(view)?;
        self.check_window(seq)?;
        let signer = match self.slots.get(&seq).and_then(|s| s.accepted.as_ref()) {
            Some((v, _, _, signer)) if *v == view => Some(*signer),
            _ if !P::PER_HEIGHT => Some(self.primary(view)),
            _ => None,
        };
        if signer == Some(from) {
            return Err(Reject::PrepareFromPrimary);
        }
        let st = Statement {
            kind: Kind::Prepare,
            round: view,
            height: seq,
            digest,
        };
        let power = self.validators.power_of(&from);
        if Self::record(&mut self.prepares, &st, from, sig, power, out)? {
            self.check_prepared(seq, out);
            self.deliver_ready(now, out);
        }
        Ok(())
    }

    /// §4.2 prepared(m, v, n, i): the pre-prepare and prepares from other
    /// replicas, together a quorum. Then the replica multicasts a commit.
    fn check_prepared(&mut self, seq: u64, out: &mut Vec<Effect>) {
        let view = self.view;
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        let Some((v, proposal, pre_sig, signer)) = &slot.accepted else {
            return;
        };
        if *v != view || slot.prepared.as_ref().is_some_and(|c| c.view == view) {
            return;
        }
        let digest = proposal.digest();
        // The pre-prepare stands for its signer's prepare; a prepare it sent
        // as well (per-height proposers learn the signer late) is not counted.
        let own = if self.prepares.vote_of(view, seq, signer) == Some(digest) {
            self.validators.power_of(signer)
        } else {
            0
        };
        let power =
            self.prepares.power(view, seq, &digest) - own + self.validators.power_of(signer);
        if power < self.validators.quorum() {
            return;
        }
        let signer = *signer;
        let cert = PreparedCert {
            view,
            proposal: proposal.clone(),
            pre_prepare: *pre_sig,
            prepares: self
                .prepares
                .signatures(view, seq, &digest)
                .into_iter()
                .filter(|s| s.validator != signer)
                .collect(),
        };
        out.push(Effect::Persist(Record::Prepared(cert.clone())));
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.prepared = Some(cert);
        }
        if let Some(m) = self.sign(Message::Commit { view, seq, digest }, out) {
            let power = self.validators.power_of(&m.signer);
            let st = m.message.statement();
            let _ = Self::record(&mut self.commits, &st, m.signer, m.signature, power, out);
            self.send(m, out);
        }
        self.check_committed(seq);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_commit(
        &mut self,
        now: u64,
        from: Address,
        view: u64,
        seq: u64,
        digest: Hash,
        sig: Signature,
        out: &mut Vec<Effect>,
    ) -> Result<(), Reject> {
        self.check_normal(view)?;
        self.check_window(seq)?;
        let st = Statement {
            kind: Kind::Commit,
            round: view,
            height: seq,
            digest,
        };
        let power = self.validators.power_of(&from);
        if Self::record(&mut self.commits, &st, from, sig, power, out)? {
            self.check_committed(seq);
            self.deliver_ready(now, out);
        }
        Ok(())
    }

    /// §4.2 committed-local(m, v, n, i): prepared, and commits from a quorum.
    fn check_committed(&mut self, seq: u64) {
        let view = self.view;
        let quorum = self.validators.quorum();
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        if slot.committed.is_some() {
            return;
        }
        let Some(cert) = slot.prepared.as_ref().filter(|c| c.view == view) else {
            return;
        };
        let digest = cert.proposal.digest();
        if self.commits.power(view, seq, &digest) < quorum {
            return;
        }
        slot.committed = Some(CommittedBlock {
            view,
            proposal: cert.proposal.clone(),
            commits: self.commits.signatures(view, seq, &digest),
        });
    }

    /// Hands committed blocks to the host in sequence order.
    fn deliver_ready(&mut self, now: u64, out: &mut Vec<Effect>) {
        while let Some(block) = self
            .slots
            .get(&(self.committed + 1))
            .and_then(|s| s.committed.clone())
        {
            self.deliver(now, block, out);
        }
    }

    fn deliver(&mut self, now: u64, block: CommittedBlock, out: &mut Vec<Effect>) {
        self.committed = block.proposal.seq();
        self.digests.insert(self.committed, block.proposal.digest());
        if P::PER_HEIGHT {
            self.delivered = Some(block.clone());
        }
        self.next_seq = self.next_seq.max(self.committed);
        for tx in block.proposal.txs() {
            self.pool.remove(&tx.id());
        }
        self.last_progress = now;
        self.timeout = self.cfg.view_timeout_ms;
        self.deadline = None;
        out.push(Effect::Commit(block));
    }

    /// §4.3: after executing a checkpoint's block, a replica multicasts the
    /// state root.
    fn on_executed(&mut self, seq: u64, state_root: Hash, out: &mut Vec<Effect>) {
        self.executed = self.executed.max(seq);
        if !seq.is_multiple_of(self.cfg.checkpoint_interval) || seq <= self.low {
            return;
        }
        if let Some(m) = self.sign(Message::Checkpoint { seq, state_root }, out) {
            let power = self.validators.power_of(&m.signer);
            let st = m.message.statement();
            let _ = Self::record(
                &mut self.checkpoints,
                &st,
                m.signer,
                m.signature,
                power,
                out,
            );
            self.send(m, out);
        }
        self.check_stable(seq, state_root, out);
    }

    fn on_checkpoint(
        &mut self,
        from: Address,
        seq: u64,
        state_root: Hash,
        sig: Signature,
        out: &mut Vec<Effect>,
    ) -> Result<(), Reject> {
        if seq <= self.low {
            return Ok(());
        }
        if !seq.is_multiple_of(self.cfg.checkpoint_interval) {
            return Err(Reject::OutOfWindow {
                seq,
                low: self.low,
                high: self.high(),
            });
        }
        if seq > self.high().saturating_add(self.cfg.window) {
            // Far ahead: this replica is behind; it fetches (see `maybe_fetch`)
            // rather than keep votes it cannot use yet.
            return Ok(());
        }
        let st = Statement {
            kind: Kind::Checkpoint,
            round: 0,
            height: seq,
            digest: state_root,
        };
        let power = self.validators.power_of(&from);
        if Self::record(&mut self.checkpoints, &st, from, sig, power, out)? {
            self.check_stable(seq, state_root, out);
        }
        Ok(())
    }

    /// §4.3: a checkpoint with a quorum of signatures is stable; the log below
    /// it is discarded and the watermarks move up.
    fn check_stable(&mut self, seq: u64, state_root: Hash, out: &mut Vec<Effect>) {
        if seq <= self.low || self.checkpoints.power(0, seq, &state_root) < self.validators.quorum()
        {
            return;
        }
        let cert = CheckpointCert {
            seq,
            state_root,
            votes: self.checkpoints.signatures(0, seq, &state_root),
        };
        out.push(Effect::Persist(Record::Stable(cert.clone())));
        self.set_stable(cert);
    }

    fn set_stable(&mut self, cert: CheckpointCert) {
        let seq = cert.seq;
        self.low = seq;
        self.stable = cert;
        self.slots.retain(|s, _| *s > seq);
        self.prepares.prune_heights_through(seq);
        self.commits.prune_heights_through(seq);
        self.checkpoints.prune_heights_through(seq);
        let view = self.view;
        self.signed
            .retain(|(k, r, h), _| *h > seq || (*k == Kind::ViewChange && *r >= view));
        self.outbox
            .retain(|(k, _, h), _| *h > seq || matches!(k, Kind::ViewChange | Kind::NewView));
        self.next_seq = self.next_seq.max(seq);
        // Keep the digest at the watermark: the next block's proposer hangs on it.
        let keep = seq.min(self.committed);
        self.digests.retain(|s, _| *s >= keep);
    }

    fn on_synced(&mut self, now: u64, from: Address, block: CommittedBlock, out: &mut Vec<Effect>) {
        if block.proposal.seq() != self.committed + 1 || block.proposal.seq() > self.span.limit {
            return;
        }
        if let Err(e) = check_certificate(
            &self.chain,
            &self.validators,
            &block.statement(),
            &block.commits,
        ) {
            out.push(Effect::Rejected {
                from,
                reason: Reject::BadCertificate(e),
            });
            return;
        }
        let seq = block.proposal.seq();
        self.slots.entry(seq).or_default().committed = Some(block.clone());
        self.deliver(now, block, out);
        self.deliver_ready(now, out);
    }

    // ---- view changes (§4.4) ----

    /// Moves to `target` and multicasts a view-change with this replica's
    /// stable checkpoint and prepared certificates above it.
    fn start_view_change(&mut self, now: u64, target: u64, out: &mut Vec<Effect>) {
        let mut vc = ViewChange {
            new_view: target,
            checkpoint: self.stable.clone(),
            prepared: self
                .slots
                .values()
                .filter_map(|s| s.prepared.clone())
                .collect(),
        };
        while self.asked_otherwise(&vc) {
            // This key already asked for that view with another view-change
            // (before a restart, or as another leader of its cluster, whose
            // records did not all reach this one): asking again differently
            // would be a second statement for one slot, so it asks for the
            // next view.
            vc.new_view += 1;
        }
        let target = vc.new_view;
        self.view = target;
        self.status = Status::Changing;
        // §4.5.2: the timer for the next view starts only once a quorum has
        // asked for this one, so a lone replica cannot race ahead.
        self.deadline = None;
        self.timeout = (self.timeout.saturating_mul(2)).min(self.cfg.max_view_timeout_ms);
        out.push(Effect::Persist(Record::View {
            view: target,
            changing: true,
        }));
        self.outbox.clear();
        if let Some(m) = self.sign(Message::ViewChange(vc.clone()), out) {
            self.view_changes.entry(target).or_default().insert(
                m.signer,
                SignedViewChange {
                    signer: m.signer,
                    view_change: vc,
                    signature: m.signature,
                },
            );
            self.send(m, out);
        }
        self.view_changes.retain(|v, _| *v >= target);
        self.arm_view_change_timer(now);
        self.try_new_view(now, out);
    }

    /// Whether this key signed a view-change for `vc`'s view other than
    /// `vc`.
    fn asked_otherwise(&self, vc: &ViewChange) -> bool {
        let slot = (Kind::ViewChange, vc.new_view, vc.checkpoint.seq);
        self.signed.get(&slot).is_some_and(|d| *d != vc.hash())
    }

    fn arm_view_change_timer(&mut self, now: u64) {
        if self.status == Status::Changing
            && self.deadline.is_none()
            && self.view_changes.get(&self.view).is_some_and(|by| {
                self.validators.power_of_all(by.keys()) >= self.validators.quorum()
            })
        {
            self.deadline = Some(now.saturating_add(self.timeout));
        }
    }

    /// Checks a view-change's certificates: its checkpoint, and each prepared
    /// certificate (in the window above it, from an earlier view, with the
    /// primary's pre-prepare and enough prepares).
    fn check_view_change(&self, vc: &ViewChange) -> Result<(), Reject> {
        let cp = &vc.checkpoint;
        if cp.seq < self.span.base {
            // From a replica still in an earlier epoch: late, not lying.
            return Err(Reject::OutOfWindow {
                seq: cp.seq,
                low: self.low,
                high: self.high(),
            });
        } else if cp.seq == self.span.base {
            // The genesis, or the start of an epoch: agreed, so unsigned.
            if cp.state_root != Hash::ZERO || !cp.votes.is_empty() {
                return Err(Reject::BadViewChange(
                    "the starting checkpoint carries no votes".into(),
                ));
            }
        } else {
            check_certificate(&self.chain, &self.validators, &cp.statement(), &cp.votes)
                .map_err(|e| Reject::BadViewChange(format!("checkpoint: {e}")))?;
        }
        let mut seqs = BTreeSet::new();
        for p in &vc.prepared {
            let seq = p.proposal.seq();
            if seq <= cp.seq || seq > cp.seq.saturating_add(self.cfg.window) {
                return Err(Reject::BadViewChange(format!(
                    "prepared seq {seq} outside the window above checkpoint {}",
                    cp.seq
                )));
            }
            if !seqs.insert(seq) {
                return Err(Reject::BadViewChange(format!("seq {seq} listed twice")));
            }
            if p.view >= vc.new_view {
                return Err(Reject::BadViewChange(format!(
                    "prepared in view {} is not before view {}",
                    p.view, vc.new_view
                )));
            }
            self.check_prepared_cert(p)
                .map_err(|e| Reject::BadViewChange(format!("prepared seq {seq}: {e}")))?;
        }
        Ok(())
    }

    fn check_prepared_cert(&self, p: &PreparedCert) -> Result<(), String> {
        let leader = self.primary(p.view);
        let st = p.pre_prepare_statement();
        // Per-height proposers: the pre-prepare is the view leader's (a
        // re-proposal) or the proposal's own proposer's. Which proposer was
        // due depends on a parent the checker may not know; the prepares of
        // the quorum below are what vouch that it was checked.
        let primary = if st.verify(&self.chain, &leader, &p.pre_prepare).is_ok() {
            leader
        } else if P::PER_HEIGHT
            && self.validators.contains(&p.proposal.proposer())
            && st
                .verify(&self.chain, &p.proposal.proposer(), &p.pre_prepare)
                .is_ok()
        {
            p.proposal.proposer()
        } else {
            return Err("the pre-prepare is not the primary's".to_owned());
        };
        // The proposer may be an earlier view's primary: a new-view carries
        // prepared proposals over, and the new primary's pre-prepare is what
        // assigns them in its view.
        if p.prepares.iter().any(|s| s.validator == primary) {
            return Err("a prepare from the primary".to_owned());
        }
        let power = self.validators.power_of(&primary)
            + signed_power(
                &self.chain,
                &self.validators,
                &p.prepare_statement(),
                &p.prepares,
            )
            .map_err(|e| format!("prepares: {e}"))?;
        if power < self.validators.quorum() {
            return Err(format!(
                "prepares hold power {power}; a quorum needs {}",
                self.validators.quorum()
            ));
        }
        Ok(())
    }

    fn on_view_change(
        &mut self,
        now: u64,
        from: Address,
        vc: ViewChange,
        sig: Signature,
        out: &mut Vec<Effect>,
    ) -> Result<(), Reject> {
        let current = self.view;
        let stale = match self.status {
            Status::Normal => vc.new_view <= current,
            Status::Changing => vc.new_view < current,
        };
        if stale {
            // A replica still asking for the view this primary started has
            // missed its new-view: send it again, to that replica only.
            if vc.new_view == current
                && let Some(nv) = &self.new_view
            {
                out.push(Effect::Send {
                    to: from,
                    message: nv.clone(),
                });
            }
            return Ok(());
        }
        if vc.new_view > current.saturating_add(self.cfg.max_view_jump) {
            return Err(Reject::WrongView {
                got: vc.new_view,
                current,
            });
        }
        self.check_view_change(&vc)?;
        let new_view = vc.new_view;
        self.view_changes.entry(new_view).or_default().insert(
            from,
            SignedViewChange {
                signer: from,
                view_change: vc,
                signature: sig,
            },
        );
        // Liveness (§4.5.2): when more than a third of the power asks for views
        // above ours, join the smallest of them.
        let mut highest: BTreeMap<Address, u64> = BTreeMap::new();
        for (v, by) in self.view_changes.range(current + 1..) {
            for a in by.keys() {
                highest.insert(*a, *v);
            }
        }
        if self.validators.power_of_all(highest.keys()) >= self.validators.weak_quorum()
            && let Some(smallest) = highest.values().min().copied()
            && (smallest > current || (self.status == Status::Normal && smallest == current))
        {
            self.start_view_change(now, smallest, out);
            return Ok(());
        }
        self.arm_view_change_timer(now);
        self.try_new_view(now, out);
        Ok(())
    }

    /// The new-view computation (§4.4): the highest stable checkpoint among the
    /// view-changes, and for every seq above it up to the highest prepared one,
    /// the proposal prepared in the latest view, or a null proposal.
    fn reproposals(
        &self,
        view: u64,
        vcs: &[SignedViewChange],
    ) -> (CheckpointCert, Vec<Arc<Proposal>>) {
        let cp = vcs
            .iter()
            .map(|s| &s.view_change.checkpoint)
            .max_by_key(|c| c.seq)
            .cloned()
            .unwrap_or_default();
        let mut best: BTreeMap<u64, &PreparedCert> = BTreeMap::new();
        for p in vcs.iter().flat_map(|s| &s.view_change.prepared) {
            let seq = p.proposal.seq();
            if seq <= cp.seq {
                continue;
            }
            if best.get(&seq).is_none_or(|b| b.view < p.view) {
                best.insert(seq, p);
            }
        }
        let max = best.keys().next_back().copied().unwrap_or(cp.seq);
        let primary = self.primary(view);
        let proposals = (cp.seq + 1..=max)
            .map(|seq| match best.get(&seq) {
                Some(p) => p.proposal.clone(),
                None => Arc::new(Proposal::null(seq, primary)),
            })
            .collect();
        (cp, proposals)
    }

    /// The new primary, once it holds a quorum of view-changes for its view,
    /// multicasts the new-view and enters the view.
    fn try_new_view(&mut self, now: u64, out: &mut Vec<Effect>) {
        if self.status != Status::Changing || !self.is_primary() {
            return;
        }
        let view = self.view;
        let Some(by) = self.view_changes.get(&view) else {
            return;
        };
        if self.validators.power_of_all(by.keys()) < self.validators.quorum() {
            return;
        }
        let vcs: Vec<SignedViewChange> = by.values().cloned().collect();
        let (cp, proposals) = self.reproposals(view, &vcs);
        let Some(key) = self.key.clone() else {
            return;
        };
        let mut reproposals = Vec::with_capacity(proposals.len());
        let mut accepted = Vec::with_capacity(proposals.len());
        for p in proposals {
            let pre = Message::PrePrepare {
                view,
                proposal: p.clone(),
            };
            let Some(m) = self.sign(pre, out) else {
                // Already signed another proposal here in this view (before a
                // restart): the view cannot start cleanly; wait for the next.
                return;
            };
            reproposals.push(Reproposal {
                seq: p.seq(),
                digest: p.digest(),
                signature: m.signature,
            });
            accepted.push((p, m.signature));
        }
        let nv = NewView {
            view,
            view_changes: vcs,
            reproposals,
        };
        let m = Signed::sign(&self.chain, &key, Message::NewView(nv));
        self.enter_view(now, view, cp, accepted, out);
        self.new_view = Some(m.clone());
        out.push(Effect::Broadcast(m));
    }

    fn on_new_view(
        &mut self,
        now: u64,
        from: Address,
        nv: NewView,
        out: &mut Vec<Effect>,
    ) -> Result<(), Reject> {
        let current = self.view;
        let stale = match self.status {
            Status::Normal => nv.view <= current,
            Status::Changing => nv.view < current,
        };
        if stale {
            return Ok(());
        }
        if nv.view > current.saturating_add(self.cfg.max_view_jump) {
            return Err(Reject::WrongView {
                got: nv.view,
                current,
            });
        }
        let primary = self.primary(nv.view);
        if from != primary {
            return Err(Reject::NotPrimary {
                view: nv.view,
                primary,
            });
        }
        let mut signers = BTreeSet::new();
        for s in &nv.view_changes {
            if s.view_change.new_view != nv.view {
                return Err(Reject::BadViewChange(format!(
                    "a view-change for view {} in the new-view of {}",
                    s.view_change.new_view, nv.view
                )));
            }
            if !self.validators.contains(&s.signer) || !signers.insert(s.signer) {
                return Err(Reject::BadViewChange(format!(
                    "view-change by {} is not from a distinct validator",
                    s.signer
                )));
            }
            Message::ViewChange(s.view_change.clone())
                .statement()
                .verify(&self.chain, &s.signer, &s.signature)
                .map_err(|_| {
                    Reject::BadViewChange(format!("the signature of {} does not verify", s.signer))
                })?;
            self.check_view_change(&s.view_change)?;
        }
        let power = self.validators.power_of_all(signers.iter());
        if power < self.validators.quorum() {
            return Err(Reject::TooFewViewChanges {
                power,
                needed: self.validators.quorum(),
            });
        }
        let (cp, proposals) = self.reproposals(nv.view, &nv.view_changes);
        if proposals.len() != nv.reproposals.len() {
            return Err(Reject::NewViewMismatch);
        }
        let mut accepted = Vec::with_capacity(proposals.len());
        for (p, r) in proposals.into_iter().zip(&nv.reproposals) {
            if p.seq() != r.seq || p.digest() != r.digest {
                return Err(Reject::NewViewMismatch);
            }
            let st = Message::PrePrepare {
                view: nv.view,
                proposal: p.clone(),
            }
            .statement();
            st.verify(&self.chain, &from, &r.signature)
                .map_err(|_| Reject::BadSignature)?;
            accepted.push((p, r.signature));
        }
        self.enter_view(now, nv.view, cp, accepted, out);
        Ok(())
    }

    fn enter_view(
        &mut self,
        now: u64,
        view: u64,
        cp: CheckpointCert,
        accepted: Vec<(Arc<Proposal>, Signature)>,
        out: &mut Vec<Effect>,
    ) {
        let cp_seq = cp.seq;
        self.view = view;
        self.status = Status::Normal;
        out.push(Effect::Persist(Record::View {
            view,
            changing: false,
        }));
        out.push(Effect::ViewChanged { view });
        self.outbox.clear();
        self.new_view = None;
        if cp.seq > self.low {
            out.push(Effect::Persist(Record::Stable(cp.clone())));
            self.set_stable(cp);
        }
        self.pool.requeue_in_flight(now);
        let mut top = self.low.max(self.committed);
        // What every replica of the view computes alike: past the checkpoint
        // and the re-proposals, not past its own commits.
        let reproposed = accepted.iter().map(|(p, _)| p.seq()).max().unwrap_or(0);
        self.first_fresh = reproposed.max(cp_seq).saturating_add(1);
        for (p, sig) in accepted {
            for tx in p.txs() {
                self.pool.remove(&tx.id());
            }
            top = top.max(p.seq());
            if p.seq() > self.low {
                // The new-view was checked as a whole; these are the leader's.
                let leader = self.primary(view);
                let _ = self.accept(view, p, sig, leader, out);
            }
        }
        self.next_seq = top;
        self.view_changes.retain(|v, _| *v > view);
        self.prepares.prune_rounds_below(view);
        self.commits.prune_rounds_below(view);
        self.deadline = None;
        self.arm_deadline(now);
        self.deliver_ready(now, out);
        self.retry_early(now, out);
    }

    // ---- time ----

    fn has_outstanding(&self) -> bool {
        if self.committed >= self.span.limit {
            // The span is done: nothing to wait for until the host moves on.
            return false;
        }
        self.pool.len() > 0
            || self
                .slots
                .range(self.committed + 1..)
                .any(|(_, s)| s.accepted.is_some())
    }

    fn arm_deadline(&mut self, now: u64) {
        if self.status == Status::Changing {
            return;
        }
        if !self.has_outstanding() {
            self.deadline = None;
        } else if self.deadline.is_none() {
            self.deadline = Some(now.saturating_add(self.timeout));
        }
    }

    fn on_tick(&mut self, now: u64, out: &mut Vec<Effect>) {
        if now.saturating_sub(self.last_retransmit) >= self.cfg.retransmit_ms {
            self.last_retransmit = now;
            // Only what may still matter: messages for uncommitted slots, the
            // latest checkpoint, the view-change or new-view.
            let committed = self.committed;
            let resend: Vec<Signed> = self
                .outbox
                .iter()
                .filter(|((k, _, h), _)| {
                    matches!(k, Kind::ViewChange | Kind::NewView | Kind::Checkpoint)
                        // The latest commit doubles as a heartbeat: a replica
                        // that restarted learns from it that it is behind.
                        || (*k == Kind::Commit && *h == committed)
                        || *h > committed
                        || self.slots.get(h).is_some_and(|s| s.committed.is_none())
                })
                .map(|(_, m)| m.clone())
                .collect();
            out.extend(resend.into_iter().map(Effect::Broadcast));
        }
        if std::mem::take(&mut self.resume_view_change) {
            let view = self.view;
            self.start_view_change(now, view, out);
        }
        if let Some(d) = self.deadline
            && now >= d
            && self.me().is_some()
        {
            let target = self.view + 1;
            self.start_view_change(now, target, out);
        }
        self.maybe_fetch(now, out);
        self.maybe_follow_view(now, out);
    }

    /// A replica left behind in an old view (it was down while the others
    /// changed view) joins the view that more than a third of the power is
    /// voting in, by asking for it; that view's primary answers with its
    /// new-view.
    fn maybe_follow_view(&mut self, now: u64, out: &mut Vec<Effect>) {
        if self.status != Status::Normal || self.me().is_none() {
            return;
        }
        let mut views: Vec<(u64, u64)> = self
            .views_seen
            .iter()
            .filter(|(a, v)| **v > self.view && Some(**a) != self.me())
            .map(|(a, v)| (*v, self.validators.power_of(a)))
            .collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        let mut power = 0;
        for (view, p) in views {
            power += p;
            if power >= self.validators.weak_quorum() {
                self.start_view_change(now, view, out);
                return;
            }
        }
    }

    /// State transfer: a replica that has made no progress for a while, while
    /// some validator has shown a higher sequence number, asks one of them
    /// (in turn) for the blocks it misses.
    fn maybe_fetch(&mut self, now: u64, out: &mut Vec<Effect>) {
        if now.saturating_sub(self.last_progress) < self.cfg.sync_ms
            || now.saturating_sub(self.last_fetch) < self.cfg.sync_ms
        {
            return;
        }
        let me = self.me();
        let ahead: Vec<Address> = self
            .ahead
            .iter()
            .filter(|(a, s)| **s > self.committed && Some(**a) != me)
            .map(|(a, _)| *a)
            .collect();
        if ahead.is_empty() {
            return;
        }
        let from = ahead[(self.fetches % ahead.len() as u64) as usize];
        self.fetches += 1;
        self.last_fetch = now;
        out.push(Effect::Fetch {
            from,
            after: self.committed,
        });
    }

    /// Whether this replica accepted a pre-prepare for `seq` in `view`.
    fn accepted_in(&self, view: u64, seq: u64) -> bool {
        self.slots
            .get(&seq)
            .is_some_and(|s| s.accepted.as_ref().is_some_and(|(v, ..)| *v == view))
    }

    /// Whether another proposal fits: fewer than `max_in_flight` outstanding,
    /// and room in the window.
    fn has_room(&self) -> bool {
        self.next_seq < self.committed + self.cfg.max_in_flight && self.next_seq < self.high()
    }

    /// Whether the pool holds a block's worth at `now`: a full block, or its
    /// oldest transaction has waited `batch_delay_ms`.
    fn batch_ready(&self, now: u64) -> bool {
        self.pool.waiting.len() >= self.cfg.max_block_txs
            || self
                .pool
                .oldest()
                .is_some_and(|t| now.saturating_sub(t) >= self.cfg.batch_delay_ms)
    }

    /// The primary proposes while it has transactions, room in the window and
    /// fewer than `max_in_flight` proposals outstanding.
    fn propose(&mut self, now: u64, out: &mut Vec<Effect>) {
        if P::PER_HEIGHT {
            self.propose_own_heights(now, out);
            return;
        }
        if self.status != Status::Normal || !self.is_primary() {
            return;
        }
        let Some(me) = self.me() else {
            return;
        };
        let view = self.view;
        while self.has_room() && self.batch_ready(now) {
            let seq = self.next_seq + 1;
            let txs = self.pool.take(self.cfg.max_block_txs);
            let proposal = Arc::new(Proposal::new(seq, now, me, txs));
            let Some(m) = self.sign(
                Message::PrePrepare {
                    view,
                    proposal: proposal.clone(),
                },
                out,
            ) else {
                // Signed another proposal for this slot before a restart.
                self.next_seq = seq;
                self.pool.requeue_in_flight(now);
                continue;
            };
            self.next_seq = seq;
            let sig = m.signature;
            self.send(m, out);
            let _ = self.accept(view, proposal, sig, me, out);
        }
        self.deliver_ready(now, out);
    }

    /// Per-height proposers: this replica proposes the next sequence number
    /// when the draw from its parent names it, under the same limits as a
    /// PBFT primary (in flight, window, batching).
    fn propose_own_heights(&mut self, now: u64, out: &mut Vec<Effect>) {
        if self.status != Status::Normal {
            return;
        }
        let Some(me) = self.me() else {
            return;
        };
        let view = self.view;
        while self.has_room() && self.batch_ready(now) {
            let seq = self.next_seq + 1;
            if self.proposer_of(view, seq) != Some(me) || self.accepted_in(view, seq) {
                break;
            }
            let txs = self.pool.take(self.cfg.max_block_txs);
            let last = self.last_commit_to_carry();
            let proposal = Arc::new(Proposal::with_last_commit(seq, now, me, txs, last));
            let pre = Message::PrePrepare {
                view,
                proposal: proposal.clone(),
            };
            let Some(m) = self.sign(pre, out) else {
                // Signed another proposal for this slot before a restart.
                self.pool.requeue_in_flight(now);
                break;
            };
            let sig = m.signature;
            self.send(m, out);
            let _ = self.accept(view, proposal, sig, me, out);
        }
        self.deliver_ready(now, out);
        self.retry_early(now, out);
    }
}

impl<P: Proposers> Engine for Pbft<P> {
    type Input = Input;
    type Effect = Effect;

    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.last_progress == 0 {
            self.last_progress = now_ms;
        }
        match input {
            Input::Submit(tx) => self.on_submit(now_ms, tx),
            Input::Message(m) => self.on_message(now_ms, m, &mut out),
            Input::Executed { seq, state_root } => self.on_executed(seq, state_root, &mut out),
            Input::Synced { from, block } => self.on_synced(now_ms, from, block, &mut out),
            Input::Tick => self.on_tick(now_ms, &mut out),
        }
        self.propose(now_ms, &mut out);
        self.arm_deadline(now_ms);
        out
    }
}

#[cfg(test)]
mod tests;
