//! The `pos` engine: PBFT's three phases, view changes, checkpoints and state
//! transfer ([`crate::pbft`]), with the validator set weighted by stake,
//! proposers drawn by stake for every height ([`StakeWeighted`]), the set
//! changing only at epoch boundaries, and equivocation turned into evidence
//! for slashing.
//!
//! One [`Pbft`] instance orders one epoch: the heights after the block that
//! closed the previous epoch, up to the epoch's last ([`Span`]). When the host
//! has executed that last block, its state holds the next epoch's set (fixed by
//! `pyralog_ledger::staking` from stake), and the host hands it over with
//! [`Input::NextEpoch`]; the engine starts the next instance, carrying the
//! waiting transactions over. Nothing is ordered beyond an epoch's last height
//! until then, so every replica votes on every height with the same set.
//!
//! What the host does, beyond what [`crate::pbft`] describes:
//!
//! - executes a committed block with the votes its proposal carries
//!   (`Proposal::last_commit`, as `pyralog_ledger::staking::BlockVotes` to
//!   `Store::commit_ordered_with_votes`), and stores it with
//!   [`pbft::engine_data_of`] so [`pbft::committed_bytes`] serves it intact;
//! - after executing an epoch's last block, feeds [`Input::NextEpoch`] with the
//!   set its state now holds;
//! - on [`Effect::Evidence`], gossips the evidence and submits it in an
//!   `Evidence` transaction, so a proposer includes it and every replica
//!   slashes the offender when the block executes (the ledger refuses
//!   duplicate, expired and forged evidence);
//! - feeds evidence heard from peers as [`Input::Evidence`]: valid evidence
//!   not seen before comes back as [`Effect::Evidence`] (to relay and
//!   include), forged evidence as [`Effect::Rejected`], a duplicate as nothing.

use std::collections::{BTreeSet, VecDeque};

use pyralog_ledger::{Address, ChainId, Hash, Keypair};

use crate::bft::{Evidence, Kind, ValidatorSet};
use crate::engine::Engine;
use crate::pbft::{self, Config, Effect, Pbft, Record, Reject, Signed, Span, StakeWeighted};

/// The most evidence keys remembered, to relay each piece once.
pub const MAX_EVIDENCE_SEEN: usize = 4096;

/// What can happen to the engine.
#[derive(Clone, Debug)]
pub enum Input {
    /// Everything the PBFT machinery takes (transactions, messages, executed
    /// roots, fetched blocks, ticks).
    Bft(pbft::Input),
    /// Evidence heard from a peer or a client; checked here.
    Evidence(Evidence),
    /// The host executed the current epoch's last block: the next epoch's set.
    NextEpoch {
        /// The epoch that starts.
        epoch: u64,
        /// Its validators with their power.
        validators: ValidatorSet,
    },
}

/// The heights epoch `epoch` orders when epochs are `length` blocks long:
/// epoch `e` holds the heights `h` with `h / length == e` (the genesis, height
/// 0, opens epoch 0). `base_digest` is the proposal digest of the block
/// before the first (zero at genesis).
pub fn epoch_span(epoch: u64, length: u64, base_digest: Hash) -> Span {
    let length = length.max(1);
    let first = epoch.saturating_mul(length).max(1);
    Span {
        base: first - 1,
        base_digest,
        limit: epoch
            .saturating_add(1)
            .saturating_mul(length)
            .saturating_sub(1),
    }
}

/// One proof-of-stake replica.
#[derive(Debug)]
pub struct Pos {
    chain: ChainId,
    key: Option<Keypair>,
    cfg: Config,
    epoch_length: u64,
    epoch: u64,
    inner: Pbft<StakeWeighted>,
    seen: BTreeSet<(Address, Kind, u64, u64)>,
    seen_order: VecDeque<(Address, Kind, u64, u64)>,
    /// This replica's commit for the previous epoch's last block, resent
    /// every `retransmit_ms`: a replica still in that epoch learns from it
    /// that it is behind, and fetches the block that would move it on.
    heartbeat: Option<Signed>,
    last_heartbeat: u64,
}

impl Pos {
    /// A replica at the start of `epoch` (0 at genesis) with that epoch's
    /// `validators`; `base_digest` is the proposal digest of the block that
    /// closed the previous epoch (zero at genesis).
    pub fn new(
        chain: ChainId,
        epoch: u64,
        epoch_length: u64,
        validators: ValidatorSet,
        base_digest: Hash,
        key: Option<Keypair>,
        cfg: Config,
    ) -> Pos {
        let span = epoch_span(epoch, epoch_length, base_digest);
        let inner = Pbft::with_proposers(
            chain.clone(),
            validators,
            key.clone(),
            cfg.clone(),
            StakeWeighted {
                epoch_seed: base_digest,
            },
            span,
        );
        Pos {
            chain,
            key,
            cfg,
            epoch_length,
            epoch,
            inner,
            seen: BTreeSet::new(),
            seen_order: VecDeque::new(),
            heartbeat: None,
            last_heartbeat: 0,
        }
    }

    /// A replica restarted in `epoch`: `executed` is the last block its store
    /// holds and that block's proposal digest; `records` what the engine
    /// persisted, in order (those of earlier epochs are ignored: they are for
    /// heights at or below this epoch's base).
    #[allow(clippy::too_many_arguments)]
    pub fn recover(
        chain: ChainId,
        epoch: u64,
        epoch_length: u64,
        validators: ValidatorSet,
        base_digest: Hash,
        key: Option<Keypair>,
        cfg: Config,
        executed: (u64, Hash),
        records: impl IntoIterator<Item = Record>,
    ) -> Pos {
        let mut p = Pos::new(
            chain.clone(),
            epoch,
            epoch_length,
            validators.clone(),
            base_digest,
            key.clone(),
            cfg.clone(),
        );
        p.inner = Pbft::recover_with(
            chain,
            validators,
            key,
            cfg,
            StakeWeighted {
                epoch_seed: base_digest,
            },
            epoch_span(epoch, epoch_length, base_digest),
            executed,
            records_of_this_epoch(records),
        );
        p
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The PBFT machinery of the current epoch (view, committed height, set).
    pub fn bft(&self) -> &Pbft<StakeWeighted> {
        &self.inner
    }

    /// Whether the epoch's last block is delivered and the engine waits for
    /// the next epoch's set.
    pub fn awaits_next_epoch(&self) -> bool {
        self.inner.committed() >= self.inner.span().limit
    }

    /// Remembers evidence by its slot; false if it was seen before.
    fn first_sight(&mut self, ev: &Evidence) -> bool {
        let key = (ev.validator, ev.first.kind, ev.first.round, ev.first.height);
        if !self.seen.insert(key) {
            return false;
        }
        self.seen_order.push_back(key);
        if self.seen_order.len() > MAX_EVIDENCE_SEEN
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    fn on_evidence(&mut self, ev: Evidence, out: &mut Vec<Effect>) {
        let reject = |why: String| Effect::Rejected {
            from: ev.validator,
            reason: Reject::BadEvidence(why),
        };
        if !matches!(
            ev.first.kind,
            Kind::PrePrepare | Kind::Prepare | Kind::Commit
        ) {
            out.push(reject(format!(
                "two {} statements are not slashable",
                ev.first.kind.name()
            )));
            return;
        }
        if let Err(e) = ev.verify(&self.chain) {
            out.push(reject(e.to_string()));
            return;
        }
        if self.first_sight(&ev) {
            out.push(Effect::Evidence(ev));
        }
    }

    fn on_next_epoch(
        &mut self,
        now: u64,
        epoch: u64,
        validators: ValidatorSet,
        out: &mut Vec<Effect>,
    ) {
        if epoch != self.epoch + 1 || !self.awaits_next_epoch() {
            // Early or stale: the host asks again after the right block.
            return;
        }
        let span = self.inner.span();
        let base_digest = self.inner.last_digest().unwrap_or(Hash::ZERO);
        let waiting = self.inner.drain_pool();
        self.heartbeat = self.inner.last_commit();
        self.last_heartbeat = now;
        // A restarted replica reads the records of this epoch only: the view
        // starts again at 0.
        out.push(Effect::Persist(EPOCH_MARK));
        self.epoch = epoch;
        self.inner = Pbft::with_proposers(
            self.chain.clone(),
            validators,
            self.key.clone(),
            self.cfg.clone(),
            StakeWeighted {
                epoch_seed: base_digest,
            },
            epoch_span(epoch, self.epoch_length, base_digest),
        );
        debug_assert_eq!(self.inner.span().base, span.limit);
        for tx in waiting {
            out.extend(self.inner.handle(now, pbft::Input::Submit(tx)));
        }
        out.extend(self.inner.handle(now, pbft::Input::Tick));
    }
}

/// The records persisted since the current epoch's instance began (the
/// mark [`Pos::on_next_epoch`] persists; all of them in the first epoch):
/// the instance a restarted replica rebuilds is the one that ran, not its
/// predecessors too. An earlier epoch's instance, behind, may have made a
/// checkpoint stable past its own heights that this one then took again,
/// with other signatures, from a new-view; read from the start, the first
/// would win, and the replica would resume a view change with a checkpoint
/// other than the one it signed before, a second view-change for one view.
fn records_of_this_epoch(records: impl IntoIterator<Item = Record>) -> Vec<Record> {
    let mut records: Vec<Record> = records.into_iter().collect();
    if let Some(start) = records.iter().rposition(|r| *r == EPOCH_MARK) {
        records.drain(..start);
    }
    records
}

/// What a new epoch's instance persists first: view 0, not changing (a
/// view change never leads into view 0, so nothing else persists it).
const EPOCH_MARK: Record = Record::View {
    view: 0,
    changing: false,
};

impl Engine for Pos {
    type Input = Input;
    type Effect = Effect;

    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Bft(i) => {
                if matches!(i, pbft::Input::Tick)
                    && now_ms.saturating_sub(self.last_heartbeat) >= self.cfg.retransmit_ms
                    && let Some(m) = &self.heartbeat
                {
                    self.last_heartbeat = now_ms;
                    out.push(Effect::Broadcast(m.clone()));
                }
                for e in self.inner.handle(now_ms, i) {
                    match e {
                        // Gossip each piece once, whoever found it.
                        Effect::Evidence(ev) => {
                            if self.first_sight(&ev) {
                                out.push(Effect::Evidence(ev));
                            }
                        }
                        other => out.push(other),
                    }
                }
            }
            Input::Evidence(ev) => self.on_evidence(ev, &mut out),
            Input::NextEpoch { epoch, validators } => {
                self.on_next_epoch(now_ms, epoch, validators, &mut out)
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
