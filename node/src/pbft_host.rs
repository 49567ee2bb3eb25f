//! The driver's half for the ordering engines, `pbft` and `pos` (the same
//! machinery; see [`Ordered`]): it persists the engine's records
//! before anything else it asked for, commits finalized blocks to the store
//! (with their certificates), relays transactions and consensus messages over
//! gossip, and serves and fetches blocks for replicas that are behind.

use std::collections::VecDeque;
use std::future::Future as _;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pyralog_consensus::Engine as _;
use pyralog_consensus::bft::{Member, ValidatorSet};
use pyralog_consensus::pbft::{
    CommittedBlock, Config, Effect, Input, Pbft, Record, Signed, committed_bytes, engine_data_of,
};
use pyralog_consensus::pos::{self, Pos};
use pyralog_ledger::block::{Certificate, VerifiedTx, Vote, verify_txs_memo};
use pyralog_ledger::codec::{Decode, Encode, Reader};
use pyralog_ledger::keys::KeyCache;
use pyralog_ledger::staking::BlockVotes;
use pyralog_ledger::{Address, Engine, Error, Hash, Keypair, Payload, Store, Transaction, TxBody};
use pyralog_p2p::fetch::{BLOCKS, FetchRequest, FetchResponse, MAX_RESPONSE};
use pyralog_p2p::network::MessageIdOf;
use pyralog_p2p::{NetCommand, NetEvent, PeerId, Topic, Verdict};

use pyralog_cluster::{Answers, Command as RaftCommand, Response};
use pyralog_consensus::bft::Statement;
use pyralog_consensus::intent::SigningHistory;

use crate::driver::{ApiError, Consensus, Driver, LOG_WRITE_LIMIT, halt, now_ms};
use crate::limit::PerSecond;

/// What the engine's last inputs asked for, waiting for [`Driver::flush_pbft`],
/// and the turns it proposed whose answers have not come yet.
pub(crate) struct Pending {
    /// Records to make durable before anything else.
    records: Vec<Vec<u8>>,
    /// Statements signed with the cluster's key among them: each intent
    /// commits through the cluster's log before anything is sent.
    intents: Vec<Statement>,
    /// Effects to carry out once they are.
    effects: Vec<Effect>,
    /// Verdicts on the gossip messages the inputs came from.
    reports: Vec<(MessageIdOf, PeerId, Verdict)>,
    /// Encoded transactions to relay to the other validators.
    relay: Vec<Vec<u8>>,
    /// How many relayed transactions each peer has sent this second.
    pub(crate) relay_limit: PerSecond<PeerId>,
    /// Turns proposed to the cluster's log and not yet answered, oldest
    /// first ([`Driver::flush_pbft`]).
    pub(crate) turns: VecDeque<InFlight>,
}

/// A turn whose entries are on their way through the cluster's log, with
/// what waits for them: nothing the turn asked for is carried out before
/// they commit. The driver goes on taking inputs meanwhile, and proposes the
/// next turn's entries behind these (the log keeps their order), so
/// consecutive turns share the log's flushes instead of waiting in line.
pub(crate) struct InFlight {
    /// The entries' answers, in order; `None` for a turn with nothing to
    /// write, which only keeps its place behind the turns before it.
    answers: Option<Answers>,
    /// Its committed blocks, one entry each and first, with the store's
    /// epoch when they were proposed (proof of stake orders nothing past an
    /// epoch's last block before it is executed, so that is the epoch before
    /// each).
    blocks: Vec<(CommittedBlock, Option<u64>)>,
    /// The statements of the turn's own entry, when it has one (after the
    /// blocks').
    statements: Option<Vec<Statement>>,
    /// What the turn's inputs asked for, carried out once it commits.
    effects: Vec<Effect>,
    /// Verdicts on the gossip messages the turn's inputs came from.
    reports: Vec<(MessageIdOf, PeerId, Verdict)>,
    /// Whether it signs anything (for the crash points around intents).
    signs: bool,
    /// When it was proposed.
    proposed: std::time::Instant,
}

/// Turns in flight at most; one more waits for the oldest to be answered.
const MAX_TURNS_IN_FLIGHT: usize = 4;

/// Relayed transactions taken from one peer per second at most
/// ([`crate::limit`]).
pub(crate) const RELAY_PER_PEER_PER_SEC: usize = 20_000;

impl Default for Pending {
    fn default() -> Self {
        Pending {
            records: Vec::new(),
            intents: Vec::new(),
            effects: Vec::new(),
            reports: Vec::new(),
            relay: Vec::new(),
            relay_limit: PerSecond::new(RELAY_PER_PEER_PER_SEC),
            turns: VecDeque::new(),
        }
    }
}

/// How often the engine's clock ticks.
pub(crate) const TICK: Duration = Duration::from_millis(5);
/// Transactions in one relay message at most (the topic's byte cap binds first).
const RELAY_TXS: usize = 4096;
/// Blocks asked for in one fetch.
const FETCH_BLOCKS: u64 = 64;

/// The genesis validators, each with one vote.
pub(crate) fn genesis_set(store: &Store) -> Result<ValidatorSet, Error> {
    let g = store.genesis();
    ValidatorSet::equal(g.validators.iter().map(|v| v.public_key)).map_err(|e| Error::Genesis {
        problems: vec![format!("validators: {e}")],
    })
}

/// The ordering engine a node runs: PBFT over the genesis validators, or
/// proof of stake (the same machinery, one instance per epoch, the set from
/// stake).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per node, boxed in `Consensus`
pub(crate) enum Ordered {
    /// `pbft`.
    Pbft(Pbft),
    /// `pos`.
    Pos(Pos),
}

impl Ordered {
    fn handle(&mut self, now_ms: u64, input: pos::Input) -> Vec<Effect> {
        match (self, input) {
            (Ordered::Pbft(p), pos::Input::Bft(i)) => p.handle(now_ms, i),
            // Evidence and epochs are proof of stake's.
            (Ordered::Pbft(_), _) => Vec::new(),
            (Ordered::Pos(p), i) => p.handle(now_ms, i),
        }
    }

    /// Transactions waiting in the pool.
    pub(crate) fn pool_len(&self) -> usize {
        match self {
            Ordered::Pbft(p) => p.pool_len(),
            Ordered::Pos(p) => p.bft().pool_len(),
        }
    }

    /// The pool's capacity.
    pub(crate) fn pool_capacity(&self) -> usize {
        match self {
            Ordered::Pbft(p) => p.pool_capacity(),
            Ordered::Pos(p) => p.bft().pool_capacity(),
        }
    }

    /// When the engine's next proposal is due ([`Pbft::proposal_due`]).
    fn proposal_due(&self) -> Option<u64> {
        match self {
            Ordered::Pbft(p) => p.proposal_due(),
            Ordered::Pos(p) => p.bft().proposal_due(),
        }
    }

    /// The current view (PBFT's; the round under proof of stake).
    pub(crate) fn view(&self) -> u64 {
        match self {
            Ordered::Pbft(p) => p.view(),
            Ordered::Pos(p) => p.bft().view(),
        }
    }

    /// Who leads the current view.
    pub(crate) fn leader(&self) -> Address {
        match self {
            Ordered::Pbft(p) => p.primary(p.view()),
            Ordered::Pos(p) => p.bft().primary(p.bft().view()),
        }
    }
}

/// The set of the epoch a pos store is in, with power from stake.
pub(crate) fn staked_set(store: &Store) -> Result<ValidatorSet, Error> {
    let members = store
        .staking()?
        .active
        .into_iter()
        .map(|p| Member {
            address: p.validator,
            power: p.power,
        })
        .collect();
    ValidatorSet::new(members)
        .map_err(|e| Error::Corrupt(format!("the epoch's validator set: {e}")))
}

/// The proposal digest of the stored block at `height` (zero for the genesis).
fn proposal_digest(store: &Store, height: u64) -> Result<Hash, Error> {
    if height == 0 {
        return Ok(Hash::ZERO);
    }
    let block = store
        .block(height)?
        .ok_or_else(|| Error::Corrupt(format!("block {height} is missing")))?;
    Ok(CommittedBlock::from_bytes(&committed_bytes(&block)?)?
        .proposal
        .digest())
}

/// The engine for a store whose genesis orders blocks (`pbft` or `pos`),
/// recovered from what it persisted. Under `pbft`, a node whose key is not a
/// genesis validator follows; under `pos` it keeps its key, since stake can
/// bring it into a later epoch's set.
///
/// `history` is the cluster's signing history: what the key signed is what
/// its intents say, over what the engine's records say (see
/// [`signed_as_committed`]).
pub(crate) fn engine(
    store: &Store,
    validator: Keypair,
    history: &SigningHistory,
) -> Result<Ordered, Error> {
    let g = store.genesis();
    let mut records = Vec::new();
    for bytes in store.engine_records()? {
        records.push(
            Record::from_bytes(&bytes)
                .map_err(|e| Error::Corrupt(format!("a consensus record: {e}")))?,
        );
    }
    let records = signed_as_committed(records, history);
    let cfg = Config {
        view_timeout_ms: g.params.block_time_ms.max(250) * 4,
        // One block in flight. Since clusters, every block costs each node
        // three rounds of its Raft log (two intents and the block) on top of
        // its commit and eight consensus messages, whatever its size; a
        // second block in flight doubled those rounds without finalizing
        // more. On the 4-node devnet one beat two on both latency (p50 38 ms
        // against 57 at 500 writes/s) and throughput (5,605 finalized/s
        // against 5,366), docs/BENCHMARKS.md, "PBFT".
        max_in_flight: 1,
        ..Config::default()
    };
    if g.engine == Engine::Pos {
        let epoch = store.staking()?.epoch;
        let length = g.params.epoch_length;
        let base = pos::epoch_span(epoch, length, Hash::ZERO).base;
        let height = store.tip().height;
        return Ok(Ordered::Pos(Pos::recover(
            g.chain_id.clone(),
            epoch,
            length,
            staked_set(store)?,
            proposal_digest(store, base)?,
            Some(validator),
            cfg,
            (height, proposal_digest(store, height)?),
            records,
        )));
    }
    let set = genesis_set(store)?;
    let key = set.contains(&validator.address()).then_some(validator);
    Ok(Ordered::Pbft(Pbft::recover(
        g.chain_id.clone(),
        set,
        key,
        cfg,
        store.tip().height,
        records,
    )))
}

/// The engine's `records`, followed by one `Signed` record per intent of the
/// cluster's signing history. A turn's records land even when the cluster
/// refused one of its intents (another leader had signed something else
/// there), so they can claim a statement that was never sent; replayed later,
/// the intent wins its slot, and the engine knows what its key really signed.
fn signed_as_committed(mut records: Vec<Record>, history: &SigningHistory) -> Vec<Record> {
    records.extend(history.statements().map(Record::Signed));
    records
}

/// Transactions relayed by another validator: a count, then each one.
fn decode_relayed(data: &[u8]) -> Result<Vec<Transaction>, Error> {
    let mut r = Reader::new(data);
    let txs: Vec<Transaction> = r.list(RELAY_TXS, "relayed transactions")?;
    r.finish()?;
    Ok(txs)
}

/// Checks relayed transactions' signatures, with the senders' keys kept
/// decompressed in `keys` (a relay carries the same few senders over and
/// over). One bad signature makes the whole message invalid, since the
/// relayer checked them before sending.
fn verify_relayed(txs: Vec<Transaction>, keys: &mut KeyCache) -> Result<Vec<VerifiedTx>, Error> {
    verify_txs_memo(txs, Some(keys))
}

/// What the log answered a turn's entries.
pub(crate) type TurnAnswer = Result<Vec<Response>, pyralog_cluster::Error>;

/// The oldest turn in flight's answer, once it comes (never, with none in
/// flight). Cancel-safe: the turn stays queued until this returns.
pub(crate) async fn next_answer(turns: &mut VecDeque<InFlight>) -> TurnAnswer {
    match turns.front_mut() {
        Some(InFlight {
            answers: Some(answers),
            ..
        }) => answers.as_mut().await,
        Some(_) => Ok(Vec::new()),
        None => std::future::pending().await,
    }
}

impl Driver {
    fn ordered(&mut self) -> Option<&mut Ordered> {
        match &mut self.engine {
            Consensus::Ordered(p) => Some(p),
            Consensus::Gossip(_) => None,
        }
    }

    /// Feeds one input. Its effects wait in [`Pending`] until
    /// [`Driver::flush_pbft`], so the records of every input the driver took
    /// in one turn are made durable by one commit. `gossip` is the message the
    /// input came from, to report a verdict on once its effects are out.
    pub(crate) fn feed_pbft(&mut self, input: Input, gossip: Option<(MessageIdOf, PeerId)>) {
        self.feed_ordered(pos::Input::Bft(input), gossip);
    }

    /// [`Driver::feed_pbft`] for any input of the ordering engine (proof of
    /// stake's evidence and epochs too).
    fn feed_ordered(&mut self, input: pos::Input, gossip: Option<(MessageIdOf, PeerId)>) {
        if !self.leading {
            // A follower runs no engine; it relays what is well signed.
            if let Some((id, from)) = gossip {
                let verdict = match &input {
                    pos::Input::Bft(Input::Message(m)) => {
                        let chain = &self.rules.genesis().chain_id;
                        let st = m.message.statement();
                        if st.verify(chain, &m.signer, &m.signature).is_ok() {
                            Verdict::Accept
                        } else {
                            Verdict::Reject
                        }
                    }
                    _ => Verdict::Ignore,
                };
                self.pending.reports.push((id, from, verdict));
            }
            return;
        }
        let Some(engine) = self.ordered() else {
            return;
        };
        let effects = engine.handle(now_ms(), input);
        let mut verdict = Verdict::Accept;
        for effect in effects {
            match effect {
                Effect::Persist(r) => {
                    if let Record::Signed(st) = &r {
                        self.pending.intents.push(*st);
                    }
                    self.pending.records.push(r.to_bytes());
                }
                Effect::Rejected { from, reason } => {
                    if reason.is_misbehaviour() {
                        tracing::warn!(%from, ?reason, "consensus message rejected");
                        verdict = Verdict::Reject;
                    } else {
                        tracing::debug!(%from, ?reason, "consensus message not for now");
                    }
                }
                other => self.pending.effects.push(other),
            }
        }
        if let Some((id, from)) = gossip {
            self.pending.reports.push((id, from, verdict));
        }
    }

    /// Brings the engine's next tick forward to when its next proposal is
    /// due, if that comes first: transactions that arrive with no block in
    /// flight then wait the batching delay, not the rest of a tick too
    /// ([`TICK`] is coarser than the delay).
    pub(crate) fn tick_when_due(&mut self) {
        let Some(due) = self.ordered().and_then(|e| e.proposal_due()) else {
            return;
        };
        let now = now_ms();
        // Due already: the engine proposed or could not; the regular tick.
        if due <= now {
            return;
        }
        let at = tokio::time::Instant::now() + Duration::from_millis(due - now);
        self.next_tick = self.next_tick.min(at);
    }

    /// Proposes the pending records, with the blocks committed and the
    /// intents of every statement about to go out, to the cluster's log as
    /// one turn, and keeps the turn's effects until the log answers
    /// ([`Driver::turn_answered`]): durable first, so nothing sent gets ahead
    /// of what it depends on. Transactions to relay go at once (they depend on
    /// nothing). Turns already answered are carried out first; with
    /// [`MAX_TURNS_IN_FLIGHT`] in flight, this waits for the oldest.
    pub(crate) fn flush_pbft(&mut self) {
        loop {
            self.take_answered();
            let p = &self.pending;
            if p.records.is_empty()
                && p.effects.is_empty()
                && p.reports.is_empty()
                && p.relay.is_empty()
            {
                return;
            }
            if self.pending.turns.len() >= MAX_TURNS_IN_FLIGHT {
                if let Some((turn, answer)) = self.wait_oldest() {
                    self.turn_answered(turn, answer);
                }
                continue;
            }
            let records = std::mem::take(&mut self.pending.records);
            let intents = std::mem::take(&mut self.pending.intents);
            let effects = std::mem::take(&mut self.pending.effects);
            let reports = std::mem::take(&mut self.pending.reports);
            let relay = std::mem::take(&mut self.pending.relay);
            self.relay(relay);
            let (commits, effects): (Vec<Effect>, Vec<Effect>) = effects
                .into_iter()
                .partition(|e| matches!(e, Effect::Commit(_)));
            // No signature leaves before its intent is committed: a leader
            // that takes over never signs against it (ADR 0010). Besides the
            // statements the engine persisted, every statement of ours about
            // to go out (checkpoints, view-changes, new-views too).
            let own = self.validator.address();
            let mut intents = intents;
            for effect in &effects {
                if let Effect::Broadcast(m) | Effect::Send { message: m, .. } = effect
                    && m.signer == own
                {
                    let st = m.message.statement();
                    if !intents.contains(&st) {
                        intents.push(st);
                    }
                }
            }
            let signs = !intents.is_empty();
            if signs {
                crate::fault::at(crate::fault::Point::BeforeIntent);
            }
            // Each block in an entry of its own, then the turn's records and
            // intents in one more: a block's entry may find the block
            // already applied (a previous leader's entry came first) and do
            // nothing, and records that rode in it would be lost.
            let mut entries = Vec::new();
            let mut blocks = Vec::new();
            for commit in commits {
                if let Effect::Commit(block) = commit {
                    entries.push(self.block_entry(&block));
                    blocks.push((block, self.epoch_of_store()));
                }
            }
            let from = self.engine_len;
            let appended = records.len() as u64;
            let statements = match self.turn_entry(from, records, intents.clone()) {
                Some(entry) => {
                    entries.push(entry);
                    self.engine_len = from + appended;
                    Some(intents)
                }
                None => None,
            };
            let answers = if entries.is_empty() {
                None
            } else {
                match self.propose(entries) {
                    Some(answers) => Some(answers),
                    None => return self.step_back(reports),
                }
            };
            self.pending.turns.push_back(InFlight {
                answers,
                blocks,
                statements,
                effects,
                reports,
                signs,
                proposed: std::time::Instant::now(),
            });
        }
    }

    /// Proposes `entries` to the cluster's log (their place in it is fixed
    /// when this returns) and gives the future of their answers, bounded by
    /// the log's write limit; `None` if this node no longer leads.
    fn propose(&mut self, entries: Vec<RaftCommand>) -> Option<Answers> {
        let member = std::sync::Arc::clone(&self.member);
        let proposed = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(async { member.propose_many_as_leader(entries).await })
        });
        match proposed {
            Ok(answers) => Some(Box::pin(async move {
                tokio::time::timeout(LOG_WRITE_LIMIT, answers)
                    .await
                    .unwrap_or_else(|_| {
                        Err(pyralog_cluster::Error::Raft(format!(
                            "not committed within {LOG_WRITE_LIMIT:?}"
                        )))
                    })
            })),
            Err(error) => {
                self.log_failed(error);
                None
            }
        }
    }

    /// Carries out, oldest first, the turns in flight that are answered
    /// already, without waiting.
    fn take_answered(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            let answer = match std::pin::pin!(next_answer(&mut self.pending.turns)).poll(&mut cx) {
                Poll::Ready(answer) => answer,
                Poll::Pending => return,
            };
            let Some(turn) = self.pending.turns.pop_front() else {
                return;
            };
            self.turn_answered(turn, answer);
        }
    }

    /// Waits for the oldest turn in flight to be answered; `None` when none
    /// is in flight.
    fn wait_oldest(&mut self) -> Option<(InFlight, TurnAnswer)> {
        if self.pending.turns.is_empty() {
            return None;
        }
        let turns = &mut self.pending.turns;
        let answer = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(next_answer(turns))
        });
        let turn = self.pending.turns.pop_front()?;
        Some((turn, answer))
    }

    /// Waits, at shutdown, for every turn in flight, carrying each out.
    pub(crate) fn finish_turns(&mut self) {
        self.flush_pbft();
        while let Some((turn, answer)) = self.wait_oldest() {
            self.turn_answered(turn, answer);
            self.flush_pbft();
        }
    }

    /// A turn's entries were answered (or failed): what its blocks' execution
    /// gives is fed back to the engine, its intents' refusals are noted,
    /// and then its effects are carried out and its messages judged. A failed
    /// write means this node no longer leads: the turn and every one after it
    /// are dropped.
    pub(crate) fn turn_answered(&mut self, turn: InFlight, answer: TurnAnswer) {
        if turn.answers.is_some() {
            self.count_log_write(turn.proposed);
        }
        let answers = match answer {
            Ok(answers) => answers,
            Err(error) => {
                self.log_failed(error);
                return self.step_back(turn.reports);
            }
        };
        let mut answers = answers.into_iter();
        for (block, epoch_before) in turn.blocks {
            let answer = answers.next().unwrap_or(Response::Done);
            let next = self.block_landed(&block, epoch_before, answer);
            self.feed_pbft(next, None);
        }
        let refused = match turn.statements {
            Some(statements) => {
                let answer = answers.next().unwrap_or(Response::Done);
                self.turn_landed(statements, answer)
            }
            None => Vec::new(),
        };
        if turn.signs {
            crate::fault::at(crate::fault::Point::AfterIntent);
        }
        for effect in turn.effects {
            match effect {
                Effect::Persist(_) | Effect::Rejected { .. } | Effect::Commit(_) => {}
                Effect::Broadcast(m) | Effect::Send { message: m, .. } => {
                    if refused.contains(&m.message.statement()) {
                        tracing::warn!(
                            height = m.message.statement().height,
                            "not sent: it conflicts with what this cluster signed before"
                        );
                    } else {
                        self.publish(&m);
                    }
                }
                Effect::Fetch { after, .. } => self.fetch_blocks(after),
                Effect::Evidence(ev) => {
                    self.metrics.equivocations += 1;
                    tracing::warn!(validator = %ev.validator, kind = ev.first.kind.name(), height = ev.first.height, "equivocation");
                    self.report_evidence(&ev);
                }
                Effect::ViewChanged { view } => {
                    self.metrics.view_changes += 1;
                    tracing::info!(view, "entered view");
                }
            }
        }
        if turn.signs {
            crate::fault::at(crate::fault::Point::AfterSend);
        }
        for (id, from, verdict) in turn.reports {
            self.report(id, from, verdict);
        }
    }

    /// Sends transactions to the other validators, as many to a message as
    /// fit under the topic's cap.
    fn relay(&mut self, txs: Vec<Vec<u8>>) {
        let cap = Topic::Transactions.max_bytes() - 16;
        let mut chunk: Vec<&[u8]> = Vec::new();
        let mut size = 0;
        for tx in &txs {
            if size + tx.len() + 4 > cap && !chunk.is_empty() {
                self.publish_txs(&chunk);
                chunk.clear();
                size = 0;
            }
            size += tx.len() + 4;
            chunk.push(tx);
        }
        if !chunk.is_empty() {
            self.publish_txs(&chunk);
        }
    }

    fn publish_txs(&mut self, txs: &[&[u8]]) {
        let mut data = Vec::with_capacity(txs.iter().map(|t| t.len() + 4).sum::<usize>() + 4);
        pyralog_ledger::codec::put_len(&mut data, txs.len());
        for t in txs {
            data.extend_from_slice(t);
        }
        self.net.command(NetCommand::Publish {
            topic: Topic::Transactions,
            data,
        });
    }

    /// Consensus messages go out stamped with the send time, so a resent
    /// message is a new gossip message rather than a duplicate gossipsub drops.
    fn publish(&mut self, m: &Signed) {
        let mut data = now_ms().to_le_bytes().to_vec();
        m.encode(&mut data);
        self.net.command(NetCommand::Publish {
            topic: Topic::Consensus,
            data,
        });
    }

    /// The log entry that executes and stores `block` at its sequence
    /// number (the ledger's height), so a block already there is known as
    /// such rather than stored a second time one height up.
    fn block_entry(&self, block: &CommittedBlock) -> RaftCommand {
        let certificate = Certificate {
            round: block.view,
            votes: block
                .commits
                .iter()
                .map(|v| Vote {
                    validator: v.validator,
                    signature: v.signature,
                })
                .collect(),
        };
        let p = &block.proposal;
        // Under proof of stake the proposal carries the commits agreed for the
        // block before: the votes rewards and downtime count.
        let votes = p.last_commit().map(|lc| BlockVotes {
            height: lc.height,
            signers: lc.commits.iter().map(|v| v.validator).collect(),
        });
        RaftCommand::Ordered(pyralog_cluster::Ordered {
            height: p.seq(),
            proposer: p.proposer(),
            timestamp_ms: p.timestamp_ms(),
            txs: p.txs().iter().map(|t| t.tx().clone()).collect(),
            engine_data: engine_data_of(block),
            certificate,
            records: Vec::new(),
            votes,
        })
    }

    /// What follows a block's entry applied: the counts, a new epoch's set
    /// (proof of stake), and the engine's next input.
    fn block_landed(
        &mut self,
        block: &CommittedBlock,
        epoch_before: Option<u64>,
        response: Response,
    ) -> Input {
        let p = &block.proposal;
        let seq = p.seq();
        let (state_root, failed) = match response {
            Response::Block {
                state_root, failed, ..
            } => (state_root, failed.len()),
            other => halt(
                "cannot commit a finalized block",
                format!("sequence {seq}: {other:?}"),
            ),
        };
        self.metrics.blocks_committed += 1;
        self.metrics.txs_committed += (p.txs().len() - failed) as u64;
        // The block that closed an epoch fixed the next one's set.
        if let Some(before) = epoch_before
            && let Some(after) = self.epoch_of_store()
            && after != before
        {
            let set = staked_set(&self.store());
            match set {
                Ok(validators) => {
                    tracing::info!(epoch = after, validators = validators.len(), "new epoch");
                    self.admission.set_validators(validators.clone());
                    self.feed_ordered(
                        pos::Input::NextEpoch {
                            epoch: after,
                            validators,
                        },
                        None,
                    );
                }
                Err(error) => halt("cannot read the next epoch's set", error),
            }
        }
        Input::Executed { seq, state_root }
    }

    /// The entry of a turn whose first record goes at `from`; `None` when it
    /// has nothing to say.
    fn turn_entry(
        &self,
        from: u64,
        records: Vec<Vec<u8>>,
        statements: Vec<Statement>,
    ) -> Option<RaftCommand> {
        (!records.is_empty() || !statements.is_empty()).then_some(RaftCommand::Turn {
            from,
            records,
            intents: statements,
        })
    }

    /// The statements a turn's applied entry refused. Where the engine log
    /// ends is read back rather than counted: the machine skips the part of
    /// a turn's records the log already holds, so a count could run ahead.
    fn turn_landed(&mut self, statements: Vec<Statement>, response: Response) -> Vec<Statement> {
        let answers = match response {
            Response::Turn(answers) if answers.len() == statements.len() => answers,
            other => halt("cannot persist consensus state", format!("{other:?}")),
        };
        let len = self.store().engine_records_len();
        // Turns proposed after this one may have landed too, or not yet.
        self.engine_len = match len {
            Ok(len) => self.engine_len.max(len),
            Err(error) => halt("cannot read the engine log", error),
        };
        let mut refused = Vec::new();
        for (st, answer) in statements.into_iter().zip(answers) {
            if let Some(why) = answer {
                tracing::warn!(height = st.height, round = st.round, %why, "signing refused");
                refused.push(st);
            }
        }
        refused
    }

    /// Gives up the turn after losing the lead: nothing the engine asked for
    /// is carried out (the new leader's engine decides), and the messages it
    /// came from are neither judged nor held against their senders.
    fn step_back(&mut self, reports: Vec<(MessageIdOf, PeerId, Verdict)>) {
        self.leading = false;
        let pending = std::mem::take(&mut self.pending);
        let held = pending.turns.into_iter().flat_map(|t| t.reports);
        for (id, from, _) in reports.into_iter().chain(pending.reports).chain(held) {
            self.report(id, from, Verdict::Ignore);
        }
    }

    /// The epoch a pos store is in (`None` under other engines).
    fn epoch_of_store(&self) -> Option<u64> {
        if self.rules.genesis().engine != Engine::Pos {
            return None;
        }
        match self.store().staking() {
            Ok(s) => Some(s.epoch),
            Err(error) => halt("cannot read the staking state", error),
        }
    }

    /// Turns equivocation evidence this node saw into an `Evidence`
    /// transaction signed by its validator key, taken and relayed like any
    /// other, so a proposer includes it and every replica slashes the
    /// offender when the block executes (the ledger refuses duplicates).
    fn report_evidence(&mut self, ev: &pyralog_ledger::evidence::Evidence) {
        let key = self.validator.clone();
        let sender = key.address();
        let nonce = match self.store().account(&sender) {
            Ok(a) => a.nonce,
            Err(error) => {
                tracing::warn!(%error, "cannot read this validator's account for evidence");
                return;
            }
        };
        let body = TxBody {
            chain_id: self.rules.genesis().chain_id.clone(),
            sender,
            nonce,
            epoch: self.current_epoch(),
            payload: Payload::Evidence {
                data: ev.to_bytes(),
            },
        };
        let bits = self.required_difficulty();
        let pow = self.rules.pow_key();
        let params = pyralog_ledger::pow::SolveParams {
            threads: 1,
            ..pyralog_ledger::pow::SolveParams::new(bits)
        };
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let Ok(stamp) = pyralog_ledger::pow::solve(pow, &body.id(), params, &cancel, &|_| {})
        else {
            tracing::warn!(bits, "no stamp found for an evidence transaction");
            return;
        };
        let tx = body.sign(&key, stamp);
        match verify_txs_memo(vec![tx], None).map(|mut v| v.pop()) {
            Ok(Some(tx)) => {
                if let Err(e) = self.submit_pbft(tx, true) {
                    tracing::warn!(code = e.code, error = %e.message, "evidence transaction not taken");
                }
            }
            _ => tracing::warn!("an evidence transaction failed its own signature check"),
        }
    }

    /// Asks a connected peer (in turn) for the blocks after `after`; whatever
    /// comes back is checked against its certificate by the engine.
    fn fetch_blocks(&mut self, after: u64) {
        let peers = self.net.connected();
        if peers.is_empty() {
            return;
        }
        let peer = peers[(self.fetches % peers.len() as u64) as usize];
        self.fetches += 1;
        self.net.command(NetCommand::Fetch {
            peer,
            request: FetchRequest {
                origin: BLOCKS,
                from_seq: after + 1,
                to_seq: after + FETCH_BLOCKS,
            },
        });
    }

    fn serve_blocks(&self, r: &FetchRequest) -> Result<FetchResponse, Error> {
        let mut out = FetchResponse::default();
        let mut bytes = 0;
        let last = r.to_seq.min(r.from_seq.saturating_add(FETCH_BLOCKS - 1));
        for height in r.from_seq..=last {
            let Some(block) = self.store().block(height)? else {
                break;
            };
            let encoded = committed_bytes(&block)?;
            bytes += encoded.len() + 4;
            if bytes > MAX_RESPONSE - 1024 {
                break;
            }
            out.batches.push(encoded);
        }
        Ok(out)
    }

    /// Admits a transaction for PBFT: the stateless checks and replay, then it
    /// goes to this node's pool and, if `relay`, to every other validator's.
    pub(crate) fn submit_pbft(&mut self, tx: VerifiedTx, relay: bool) -> Result<(), ApiError> {
        self.admit_ordered(&tx, relay)?;
        if relay {
            self.pending.relay.push(tx.tx().to_bytes());
        }
        self.feed_pbft(Input::Submit(tx), None);
        Ok(())
    }

    /// The checks [`Driver::submit_pbft`] makes before the pool.
    pub(crate) fn admit_ordered(&self, tx: &VerifiedTx, relay: bool) -> Result<(), ApiError> {
        self.rules
            .check_stateless(tx, self.current_epoch())
            .map_err(|e| ApiError::from_ledger(&e))
            // From a client of this node: the difficulty asked now applies.
            .and_then(|_| {
                if relay {
                    self.check_stamp_now(tx)
                } else {
                    Ok(())
                }
            })
            .and_then(|_| match self.store().tx_location(&tx.id()) {
                Ok(Some(_)) => Err(ApiError::bad(
                    "replayed",
                    "replayed transaction: it was already committed",
                )),
                Ok(None) => Ok(()),
                Err(e) => Err(ApiError::internal(e)),
            })
            .and_then(|_| self.check_evidence_tx(tx))
    }

    /// An `Evidence` transaction is judged when it arrives, as its block
    /// would judge it: evidence that is forged, not a conflict, from the
    /// future, expired or against a validator already tombstoned is refused
    /// here (and, relayed, costs the peer its score) rather than riding a
    /// block only to fail there.
    fn check_evidence_tx(&self, tx: &VerifiedTx) -> Result<(), ApiError> {
        let Payload::Evidence { data } = &tx.tx().body.payload else {
            return Ok(());
        };
        let refused = |e: &Error| ApiError {
            status: 400,
            code: "bad_evidence",
            message: format!("the evidence is refused: {e}"),
        };
        let evidence =
            pyralog_ledger::evidence::Evidence::from_bytes(data).map_err(|e| refused(&e))?;
        match self.store().check_evidence(&evidence) {
            Ok(()) => Ok(()),
            Err(e) if e.is_fatal() => Err(ApiError::internal(e)),
            Err(e) => Err(refused(&e)),
        }
    }

    pub(crate) fn pbft_network(&mut self, event: NetEvent) {
        match event {
            NetEvent::Gossip {
                topic: Topic::Consensus,
                from,
                id,
                data,
            } => {
                let decoded = data
                    .get(8..)
                    .ok_or(Error::UnexpectedEnd { what: "send time" })
                    .and_then(Signed::decode_wire);
                match decoded {
                    Ok(m) => self.feed_pbft(Input::Message(m), Some((id, from))),
                    Err(error) => {
                        tracing::warn!(%from, %error, "invalid consensus message");
                        self.reject_gossip(id, from);
                    }
                }
            }
            NetEvent::Gossip {
                topic: Topic::Transactions,
                from,
                id,
                data,
            } => {
                let verdict = match decode_relayed(&data).map(|txs| {
                    (
                        self.pending.relay_limit.allow(from, txs.len(), now_ms()),
                        txs,
                    )
                }) {
                    // Over its share this second: not forwarded, not held
                    // against it (a burst is not a fault), not taken, and
                    // its signatures not checked.
                    Ok((false, _)) => {
                        self.metrics.relays_limited += 1;
                        Verdict::Ignore
                    }
                    Ok((true, txs)) => match verify_relayed(txs, &mut self.keys) {
                        Ok(txs) => {
                            let mut verdict = Verdict::Accept;
                            for tx in txs {
                                match self.submit_pbft(tx, false) {
                                    Ok(()) => {}
                                    // Committed meanwhile, or too old now: not the relayer's fault.
                                    Err(e) if e.code == "replayed" || e.code == "expired" => {}
                                    Err(_) => verdict = Verdict::Reject,
                                }
                            }
                            verdict
                        }
                        Err(error) => {
                            tracing::warn!(%from, %error, "relayed transactions badly signed");
                            Verdict::Reject
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%from, %error, "invalid relayed transactions");
                        Verdict::Reject
                    }
                };
                self.pending.reports.push((id, from, verdict));
            }
            NetEvent::Gossip { from, id, .. } => {
                // Batches and digests belong to the gossip engine.
                self.report(id, from, Verdict::Ignore);
            }
            NetEvent::FetchRequest {
                request, channel, ..
            } => {
                let response = if request.origin == BLOCKS {
                    self.serve_blocks(&request).unwrap_or_default()
                } else {
                    FetchResponse::default()
                };
                self.net.command(NetCommand::Respond { channel, response });
            }
            NetEvent::FetchResponse { from, response } => {
                for bytes in response.batches {
                    match CommittedBlock::from_bytes(&bytes) {
                        Ok(block) => self.feed_pbft(
                            Input::Synced {
                                from: Address([0; 32]),
                                block,
                            },
                            None,
                        ),
                        Err(error) => {
                            tracing::warn!(%from, %error, "invalid block in a fetch response");
                            break;
                        }
                    }
                }
            }
            NetEvent::Connected(peer) => tracing::info!(%peer, "peer connected"),
            NetEvent::Disconnected(peer) => tracing::info!(%peer, "peer disconnected"),
            NetEvent::Listening(addr) => tracing::info!(%addr, "p2p listening"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyralog_ledger::codec::put_len;
    use pyralog_ledger::{Payload, devkit};

    fn tx(i: u64) -> Transaction {
        let chain = "relay-test".parse().expect("chain");
        let key = devkit::key(i);
        devkit::tx(
            &chain,
            &key,
            0,
            0,
            Payload::Transfer {
                to: devkit::key(i + 1).address(),
                amount: 1,
            },
            0,
        )
    }

    fn relay_message(txs: &[Transaction]) -> Vec<u8> {
        let mut data = Vec::new();
        put_len(&mut data, txs.len());
        for t in txs {
            data.extend(t.to_bytes());
        }
        data
    }

    #[test]
    fn the_signing_history_has_the_last_word_on_what_was_signed() {
        use pyralog_consensus::bft::Kind;
        let at = |digest: u8| Statement {
            kind: Kind::Prepare,
            round: 0,
            height: 5,
            digest: Hash([digest; 32]),
        };
        // The cluster committed 1 there; a later turn's records claim 2,
        // whose intent was refused.
        let mut history = SigningHistory::new();
        history.record(&at(1)).expect("the first intent");
        assert!(history.record(&at(2)).is_err(), "a conflicting intent");
        let records = vec![Record::Signed(at(1)), Record::Signed(at(2))];
        let last = signed_as_committed(records, &history)
            .into_iter()
            .rev()
            .find_map(|r| match r {
                Record::Signed(st) if (st.kind, st.round, st.height) == (Kind::Prepare, 0, 5) => {
                    Some(st.digest)
                }
                _ => None,
            });
        assert_eq!(last, Some(Hash([1; 32])));
    }

    /// A relay message decoded and checked, as a validator takes it.
    fn relayed(data: &[u8]) -> Result<Vec<VerifiedTx>, Error> {
        verify_relayed(decode_relayed(data)?, &mut KeyCache::new(8))
    }

    #[test]
    fn relayed_transactions_decode_and_verify() {
        let txs = [tx(1), tx(2), tx(3)];
        let got = relayed(&relay_message(&txs)).expect("valid");
        let ids: Vec<_> = got.iter().map(VerifiedTx::id).collect();
        assert_eq!(ids, txs.iter().map(Transaction::id).collect::<Vec<_>>());
    }

    #[test]
    fn a_bad_relay_message_is_refused() {
        // One forged signature spoils the message.
        let mut forged = tx(11);
        forged.signature.0[3] ^= 1;
        assert!(relayed(&relay_message(&[tx(10), forged])).is_err());
        // Trailing bytes, a truncated transaction, garbage, a count too large.
        let mut trailing = relay_message(&[tx(12)]);
        trailing.push(0);
        assert!(decode_relayed(&trailing).is_err());
        let whole = relay_message(&[tx(13)]);
        assert!(decode_relayed(&whole[..whole.len() - 1]).is_err());
        assert!(decode_relayed(b"\xff\xff\xff\xffgarbage").is_err());
        let mut many = Vec::new();
        put_len(&mut many, RELAY_TXS + 1);
        assert!(decode_relayed(&many).is_err());
        assert!(decode_relayed(&[]).is_err());
    }
}
