//! The driver: the one task that owns the store, the engine and the swarm, and
//! connects them to the clock and the RPC.
//!
//! Every input goes through [`Driver::feed`], which hands it to the engine and
//! carries out the effects in order: merges go to the store (durably, before
//! anything is acknowledged or published), network effects to the swarm,
//! acknowledgements to waiting RPC calls. A gossip message's verdict comes from
//! what the store made of it: merged is `Accept`, provably invalid is `Reject`
//! (the sender's score drops), a duplicate is `Ignore`.

use std::collections::HashMap;
use std::sync::{Arc, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyralog_cluster::{Applied, BatchOutcome, Command as Raft, Ledger, Member, Response};

use pyralog_consensus::Engine as _;
use pyralog_consensus::gossip::{Digest, Effect, GossipEngine, Input, Rejection};
use pyralog_ledger::block::{VerifiedBatch, VerifiedTx};
use pyralog_ledger::codec::{Decode, Encode};
use pyralog_ledger::{Address, Batch, Engine, Error, Hash, Keypair, Payload, StateKey, Store};
use pyralog_p2p::fetch::{FetchRequest, FetchResponse, MAX_BATCHES, MAX_RESPONSE};
use pyralog_p2p::{NetCommand, NetEvent, NetHandle, PeerId, Topic, Verdict};
use tokio::sync::{mpsc, oneshot};

/// How many RPC requests may wait for the driver.
pub const REQUEST_QUEUE: usize = 4096;
/// How many senders' decompressed keys the driver keeps.
pub const KEY_CACHE: usize = 65_536;

/// An RPC error: an HTTP status, a stable code and a message naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code,
            message: message.into(),
        }
    }

    /// The error a ledger rejection becomes.
    pub fn from_ledger(e: &Error) -> ApiError {
        let code = match e.root_cause() {
            Error::BadSignature | Error::InvalidPublicKey | Error::WeakPublicKey => "bad_signature",
            Error::WrongChain { .. } => "wrong_chain",
            Error::StampTooWeak { .. } => "stamp_too_weak",
            Error::ForeignNamespace { .. } => "foreign_namespace",
            Error::OverLimit { .. } => "too_large",
            Error::EpochOutOfWindow { .. } => "expired",
            Error::NeedsOrderingEngine { .. } | Error::PayloadNotSupported { .. } => "unsupported",
            Error::NoOperations(_) | Error::DuplicateKey { .. } => "bad_request",
            Error::InsufficientBalance { .. } => "insufficient_balance",
            Error::BadNonce { .. } => "bad_nonce",
            Error::CasMismatch { .. } => "cas_mismatch",
            Error::Storage(_) | Error::Corrupt(_) => "internal",
            Error::UnexpectedEnd { .. }
            | Error::TrailingBytes { .. }
            | Error::UnknownTag { .. }
            | Error::NonCanonical { .. }
            | Error::TooLong { .. }
            | Error::InvalidUtf8 { .. } => "decode",
            // Every other rule the state machine applies (staking, sealed
            // records, ...): the message names which.
            _ => "refused",
        };
        let status = if e.is_fatal() { 500 } else { 400 };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    }

    /// A 500 for a failure that is the node's, not the caller's.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: 500,
            code: "internal",
            message: e.to_string(),
        }
    }
}

/// What the RPC asks of the driver.
#[derive(Debug)]
pub enum Request {
    /// The stamp difficulty required of a new transaction now.
    Difficulty(oneshot::Sender<crate::admission::Difficulty>),
    /// Admit a transaction; with `wait`, answer once it is committed.
    Submit {
        /// The transaction, signature checked (boxed: the queue holds many).
        tx: Box<VerifiedTx>,
        /// Wait for the commit.
        wait: bool,
        /// The answer: the status reached.
        reply: oneshot::Sender<Result<&'static str, ApiError>>,
    },
    /// Admit many transactions, answering each (no waiting).
    SubmitMany {
        /// The transactions, signatures checked.
        txs: Vec<VerifiedTx>,
        /// One answer per transaction, in order.
        reply: oneshot::Sender<Vec<Result<&'static str, ApiError>>>,
    },
    /// `/status`.
    Status(oneshot::Sender<serde_json::Value>),
    /// `/account/{address}`.
    Account(
        Address,
        oneshot::Sender<Result<serde_json::Value, ApiError>>,
    ),
    /// `/kv/{address}/{key}`.
    Record {
        /// Whose.
        address: Address,
        /// Which.
        key: Vec<u8>,
        /// With a proof.
        proof: bool,
        /// The answer (`None`: not found).
        reply: oneshot::Sender<Result<Option<serde_json::Value>, ApiError>>,
    },
    /// `/tx/{hash}`.
    Tx(
        Hash,
        oneshot::Sender<Result<Option<serde_json::Value>, ApiError>>,
    ),
    /// `/tx/{hash}?wait=commit|final`: told once the transaction is in a
    /// committed batch or block on this node (at once if it is already), or
    /// why it will not be watched.
    TxWatch(Hash, oneshot::Sender<Result<(), ApiError>>),
    /// `/metrics`.
    Metrics(oneshot::Sender<String>),
    /// `/block/{height}` (`None`: the latest).
    Block(
        Option<u64>,
        oneshot::Sender<Result<Option<serde_json::Value>, ApiError>>,
    ),
    /// `/validators`.
    Validators(oneshot::Sender<Result<serde_json::Value, ApiError>>),
    /// A read snapshot of the store (for `POST /query`, which reads it off
    /// this task).
    Snapshot(oneshot::Sender<Result<pyralog_ledger::Snapshot, ApiError>>),
}

#[derive(Default, Debug)]
pub(crate) struct Metrics {
    pub(crate) blocks_committed: u64,
    /// Relay messages ignored because their peer was over its share.
    pub(crate) relays_limited: u64,
    /// Batch messages ignored because their peer was over its share.
    batches_limited: u64,
    pub(crate) view_changes: u64,
    /// Conflicting signed statements from one validator seen (evidence).
    pub(crate) equivocations: u64,
    txs_accepted: u64,
    txs_rejected: u64,
    pub(crate) txs_committed: u64,
    batches_merged: u64,
    /// Commits that merged them (a turn's batches share one).
    merge_commits: u64,
    batches_refused: u64,
    pub(crate) gossip_rejected: u64,
    /// The driver's own writes through the cluster's log (turns, blocks,
    /// batches), and the time it waited for them, in microseconds.
    log_writes: u64,
    log_write_micros: u64,
}

/// The engine a node runs, as its genesis says.
pub(crate) enum Consensus {
    /// No order: batches and CRDT merge.
    Gossip(Box<GossipEngine<PeerId>>),
    /// PBFT or proof of stake: ordered, final blocks.
    Ordered(Box<crate::pbft_host::Ordered>),
}

/// The node's driver.
pub struct Driver {
    /// This node's cluster member: every ledger change goes through its log.
    pub(crate) member: Arc<Member>,
    /// The member's ledger, for reading.
    ledger: Ledger,
    /// The chain's rules (fixed by the genesis, so kept out of the lock).
    pub(crate) rules: pyralog_ledger::Rules,
    /// What the member's state machine applies.
    applied: mpsc::Receiver<Applied>,
    /// Whether this node leads its cluster and runs the engine.
    pub(crate) leading: bool,
    /// The gossip engine's settings (to rebuild it on taking the lead).
    gossip: pyralog_consensus::gossip::Config,
    /// Records in the ledger's engine log (where the next ones go).
    pub(crate) engine_len: u64,
    /// Writes this leader's engine took from its own clients, whose entry in
    /// the cluster's log it need not take again.
    own_writes: std::collections::HashSet<Hash>,
    pub(crate) engine: Consensus,
    pub(crate) net: NetHandle,
    pub(crate) waiters: HashMap<Hash, Vec<oneshot::Sender<Result<&'static str, ApiError>>>>,
    /// Readers waiting for a transaction to be committed
    /// ([`Request::TxWatch`]); at most [`MAX_WATCHED`] transactions.
    watchers: HashMap<Hash, Vec<oneshot::Sender<Result<(), ApiError>>>>,
    pub(crate) metrics: Metrics,
    pub(crate) fetches: u64,
    pub(crate) next_tick: tokio::time::Instant,
    node_id: String,
    cluster_id: Address,
    moniker: String,
    pub(crate) keys: pyralog_ledger::keys::KeyCache,
    /// The PBFT engine's effects and relays waiting for the end of the turn.
    pub(crate) pending: crate::pbft_host::Pending,
    /// The difficulty this node asks, and what validators announce.
    pub(crate) admission: crate::admission::Admission,
    /// Batch bytes each peer has gossiped this second.
    batch_budget: crate::limit::PerSecond<PeerId>,
    /// The cluster's validator key (it signs evidence transactions).
    pub(crate) validator: Keypair,
    /// Batches to merge at the end of the turn, with the gossip message each
    /// came in (to judge once merged).
    merges: Vec<(VerifiedBatch, GossipFrom)>,
    /// Clients' single writes admitted this turn, to go into the cluster's
    /// log together at its end ([`Driver::flush_submits`]).
    submits: Vec<Submitted>,
    /// Merges sent to the cluster's log and not answered yet.
    merging: usize,
    /// Their answers ([`Driver::merge_done`]).
    merged_tx: mpsc::Sender<MergeDone>,
    merged_rx: mpsc::Receiver<MergeDone>,
    /// Counts the times this node took its cluster's lead, so an answer to a
    /// merge sent under an earlier lead (and engine) is known.
    lead_term: u64,
    /// The Raft term the engine was built in: leading again in a later term
    /// (the lead went elsewhere and came back between two looks) means
    /// another leader may have written meanwhile, so the engine is rebuilt.
    engine_raft_term: u64,
    /// A new leader's catch-up with its cluster is under way, beside the
    /// loop (so reads, the network and the cluster's own RPCs go on while a
    /// quorum cannot be had).
    catching_up: bool,
    /// When a failed catch-up may be tried again.
    catch_up_after: tokio::time::Instant,
    caught_up_tx: mpsc::Sender<CaughtUp>,
    caught_up_rx: mpsc::Receiver<CaughtUp>,
}

/// A catch-up's answer: the Raft term it was started in, and whether this
/// member's state machine applied everything its log held
/// ([`Member::catch_up_as_leader`]).
type CaughtUp = (u64, Result<(), pyralog_cluster::Error>);

/// How long the driver waits for a write of its own through the cluster's
/// log (milliseconds when the cluster is well) before it steps back: a leader
/// cut off from its quorum then goes back to serving reads, and leads again
/// once it has caught up (whatever it wrote is then in the log or not).
pub(crate) const LOG_WRITE_LIMIT: Duration = Duration::from_secs(5);

/// How long a new leader waits before it tries to catch up again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(200);

/// A gossip message to judge once its batch is merged.
type GossipFrom = Option<(pyralog_p2p::network::MessageIdOf, PeerId)>;

/// The cluster's answer to a group of merges.
struct MergeDone {
    /// The lead they were sent under ([`Driver::lead_term`]).
    term: u64,
    /// Each batch's origin and seq, and the message it came in.
    batches: Vec<(Address, u64, GossipFrom)>,
    result: Result<Response, pyralog_cluster::Error>,
    started: std::time::Instant,
}

/// A client's write the driver admitted, waiting for the end of the turn.
struct Submitted {
    tx: pyralog_ledger::Transaction,
    /// Its encoded size.
    size: usize,
    /// Set when the client waits for the write to reach the ledger.
    applied: Option<oneshot::Receiver<Result<&'static str, ApiError>>>,
    reply: oneshot::Sender<Result<&'static str, ApiError>>,
}

/// Encoded bytes of clients' writes put in one log entry at most (well under
/// the entry cap, [`pyralog_cluster::command::MAX_COMMAND_BYTES`]).
const SUBMIT_ENTRY_BYTES: usize = pyralog_cluster::command::MAX_COMMAND_BYTES / 2;

/// The most gossip batches merged in one commit.
pub const MERGE_GROUP: usize = 64;

/// The most merge commits in the cluster's log at once. The driver goes on
/// taking writes and checking batches while they commit; those that queue
/// up meanwhile share the next one.
pub const MERGES_IN_FLIGHT: usize = 2;

/// How long a stopping node waits for its merges under way.
const SHUTDOWN_MERGES: Duration = Duration::from_secs(5);

/// Batch bytes taken from one peer per second at most, before any signature
/// is checked: far above an honest peer's share of the network's writes, and
/// what it misses, anti-entropy fetches later.
pub const BATCH_BYTES_PER_PEER_PER_SEC: usize = 32 << 20;

/// Transactions readers may wait on at once ([`Request::TxWatch`]).
pub const MAX_WATCHED: usize = 10_000;
/// Readers that may wait on one transaction.
pub const MAX_WATCHERS_EACH: usize = 64;
/// Why a reader may not wait on one more transaction, if it may not:
/// `watched` transactions are watched already, by `readers` for this one.
fn watch_refusal(watched: usize, readers: usize) -> Option<ApiError> {
    (readers >= MAX_WATCHERS_EACH || (readers == 0 && watched >= MAX_WATCHED)).then(|| ApiError {
        status: 503,
        code: "busy",
        message: "too many transactions watched; try again later".into(),
    })
}

/// Drops the senders of `waiting` whose receivers are gone, and the keys
/// left with none.
fn forget_closed<T>(waiting: &mut HashMap<Hash, Vec<oneshot::Sender<T>>>) {
    waiting.retain(|_, ws| {
        ws.retain(|w| !w.is_closed());
        !ws.is_empty()
    });
}

/// Network events or requests the driver takes in one turn at most.
const TURN: usize = 64;

/// Stops the node (exit code 2) after logging why: its storage failed, or
/// its cluster answered something that cannot be, so going on could lose or
/// corrupt data. A restart recovers from what is durable.
pub(crate) fn halt(why: &str, error: impl std::fmt::Display) -> ! {
    tracing::error!(%error, "{why}; stopping");
    std::process::exit(2)
}

/// Reads the ledger; a poisoned lock (a panic while applying) stops the node.
pub(crate) fn read_store(ledger: &Ledger) -> RwLockReadGuard<'_, Store> {
    match ledger.read() {
        Ok(store) => store,
        Err(error) => halt("the ledger cannot be read", error),
    }
}

/// The engine a store's genesis asks for, recovered from the ledger.
fn build_engine(
    store: &Store,
    history: &pyralog_consensus::intent::SigningHistory,
    validator: &Keypair,
    config: &pyralog_consensus::gossip::Config,
) -> Result<Consensus, Error> {
    let own = validator.address();
    Ok(match store.genesis().engine {
        Engine::Gossip => {
            let heads = store.batch_heads()?;
            let last_hlc = match heads.get(&own) {
                Some(seq) => store.batch(&own, *seq)?.map(|b| b.hlc).unwrap_or_default(),
                None => Default::default(),
            };
            Consensus::Gossip(Box::new(GossipEngine::new(
                config.clone(),
                store.genesis().chain_id.clone(),
                validator.clone(),
                store.state_root(),
                heads,
                last_hlc,
            )))
        }
        Engine::Pbft | Engine::Pos => Consensus::Ordered(Box::new(crate::pbft_host::engine(
            store,
            validator.clone(),
            history,
        )?)),
    })
}

/// The cluster's signing history as its state machine applied it.
fn signing_history(member: &Member) -> Result<pyralog_consensus::intent::SigningHistory, Error> {
    member
        .view()
        .history()
        .map_err(|e| Error::Corrupt(format!("the signing history: {e}")))
}

/// The cluster's pending writes are full: why a write was not taken.
fn pending_full(reason: String) -> ApiError {
    ApiError {
        status: 503,
        code: "pool_full",
        message: reason,
    }
}

/// Puts clients' writes in the cluster's log, in one entry (from any
/// member: a follower forwards it to the leader); per write, `None` once a
/// majority holds it, else why not.
async fn replicate_many(
    member: &Member,
    txs: Vec<pyralog_ledger::Transaction>,
) -> Result<Vec<Option<String>>, ApiError> {
    if txs.is_empty() {
        return Ok(Vec::new());
    }
    let n = txs.len();
    match member
        .write(Raft::Writes(
            txs.into_iter().map(std::sync::Arc::new).collect(),
        ))
        .await
    {
        Ok(Response::Writes(answers)) if answers.len() == n => Ok(answers),
        Ok(other) => Err(ApiError::internal(format!(
            "unexpected answer to writes: {other:?}"
        ))),
        Err(e) => Err(ApiError {
            status: 503,
            code: "no_leader",
            message: format!("the cluster cannot take writes now ({e}); retry"),
        }),
    }
}

/// Replicates a turn's single writes in one entry and answers their clients.
async fn answer_submits(member: Arc<Member>, group: Vec<Submitted>) {
    let (txs, clients): (Vec<_>, Vec<_>) = group
        .into_iter()
        .map(|s| (s.tx, (s.applied, s.reply)))
        .unzip();
    let refusals = match replicate_many(&member, txs).await {
        Ok(refusals) => refusals,
        Err(e) => {
            for (_, reply) in clients {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    for ((applied, reply), refusal) in clients.into_iter().zip(refusals) {
        match (refusal, applied) {
            (Some(reason), _) => {
                let _ = reply.send(Err(pending_full(reason)));
            }
            (None, None) => {
                let _ = reply.send(Ok("pending"));
            }
            // It waits for the ledger, on a task of its own so the others
            // are answered now.
            (None, Some(applied)) => {
                tokio::spawn(async move {
                    let answer = applied.await.unwrap_or(Err(ApiError::internal(
                        "the node stopped before the write committed",
                    )));
                    let _ = reply.send(answer);
                });
            }
        }
    }
}

/// The wall clock in Unix milliseconds (the node is where time enters).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Driver {
    /// A driver over a started cluster member and network. The engine runs
    /// only while the member leads its cluster.
    pub fn new(
        member: Arc<Member>,
        net: NetHandle,
        validator: Keypair,
        config: pyralog_consensus::gossip::Config,
        moniker: String,
    ) -> Result<Driver, Error> {
        let ledger = member.view().ledger().clone();
        let applied = member.view().subscribe();
        let history = signing_history(&member)?;
        let (engine, admission, engine_len, rules) = {
            let store = read_store(&ledger);
            (
                build_engine(&store, &history, &validator, &config)?,
                crate::admission::Admission::new(&store, &validator)?,
                store.engine_records_len()?,
                store.rules().clone(),
            )
        };
        let (merged_tx, merged_rx) = mpsc::channel(MERGES_IN_FLIGHT);
        let (caught_up_tx, caught_up_rx) = mpsc::channel(1);
        Ok(Driver {
            node_id: net.local_peer_id().to_string(),
            cluster_id: validator.address(),
            member,
            ledger,
            rules,
            applied,
            leading: false,
            gossip: config,
            engine_len,
            own_writes: Default::default(),
            engine,
            net,
            waiters: HashMap::new(),
            watchers: HashMap::new(),
            submits: Vec::new(),
            metrics: Metrics::default(),
            fetches: 0,
            next_tick: tokio::time::Instant::now(),
            moniker,
            keys: pyralog_ledger::keys::KeyCache::new(KEY_CACHE),
            pending: Default::default(),
            admission,
            batch_budget: crate::limit::PerSecond::new(BATCH_BYTES_PER_PEER_PER_SEC),
            merges: Vec::new(),
            merging: 0,
            merged_tx,
            merged_rx,
            lead_term: 0,
            engine_raft_term: 0,
            catching_up: false,
            catch_up_after: tokio::time::Instant::now(),
            caught_up_tx,
            caught_up_rx,
            validator,
        })
    }

    /// The ledger, for one read (let go before anything else touches the
    /// driver).
    pub(crate) fn store(&self) -> RwLockReadGuard<'_, Store> {
        read_store(&self.ledger)
    }

    pub(crate) fn count_log_write(&mut self, started: std::time::Instant) {
        self.metrics.log_writes += 1;
        self.metrics.log_write_micros += started.elapsed().as_micros() as u64;
    }

    /// A write of the driver's own through the log failed: a node whose
    /// storage failed halts, one that lost the lead steps back.
    pub(crate) fn log_failed(&mut self, error: pyralog_cluster::Error) {
        if error.is_fatal() {
            halt("storage failed", error);
        }
        tracing::warn!(%error, "a write through the cluster failed; stepping back");
        self.leading = false;
    }

    /// Takes or gives up the engine when leadership changed. A new leader
    /// first catches up with everything its cluster committed (a task of its
    /// own, [`Driver::caught_up`] takes the answer), then rebuilds the engine
    /// from the ledger and hands it the cluster's pending writes.
    fn follow_leadership(&mut self) {
        let leads = self.member.is_leader();
        let term = self.member.term();
        if self.leading && !leads {
            tracing::info!("no longer the cluster's leader: the engine stops");
            self.step_down();
        } else if self.leading && term != self.engine_raft_term {
            tracing::info!(
                term,
                "leading again in a later term: the engine restarts from the log"
            );
            self.step_down();
        }
        if !leads
            || self.leading
            || self.catching_up
            || tokio::time::Instant::now() < self.catch_up_after
        {
            return;
        }
        self.catching_up = true;
        let member = Arc::clone(&self.member);
        let answer = self.caught_up_tx.clone();
        tokio::spawn(async move {
            let result = member.catch_up_as_leader().await;
            let _ = answer.send((term, result)).await;
        });
    }

    /// The engine stops: what it was doing is the next leader's.
    fn step_down(&mut self) {
        self.leading = false;
        self.own_writes.clear();
        self.merges.clear();
        self.pending = Default::default();
    }

    /// A catch-up ended: if this node still leads in the term it started
    /// in, the engine is rebuilt from the ledger and runs.
    fn caught_up(&mut self, (term, result): CaughtUp) {
        self.catching_up = false;
        if let Err(error) = result {
            tracing::warn!(%error, "cannot catch up as the new leader yet");
            self.catch_up_after = tokio::time::Instant::now() + CATCH_UP_RETRY;
            return;
        }
        if !self.member.is_leader() || self.member.term() != term {
            // The lead moved meanwhile; the next look starts over.
            return;
        }
        let built = signing_history(&self.member).and_then(|history| {
            let store = read_store(&self.ledger);
            build_engine(&store, &history, &self.validator, &self.gossip)
                .and_then(|e| Ok((e, store.engine_records_len()?)))
        });
        match built {
            Ok((engine, len)) => {
                self.engine = engine;
                self.engine_len = len;
            }
            Err(error) => halt("cannot recover the engine", error),
        }
        tracing::info!(term, "leading the cluster: the engine runs");
        self.leading = true;
        self.engine_raft_term = term;
        self.lead_term += 1;
        self.next_tick = tokio::time::Instant::now();
        self.take_pending();
    }

    /// Hands the engine every write the cluster holds pending.
    fn take_pending(&mut self) {
        let txs = match self
            .member
            .view()
            .pending(pyralog_cluster::machine::MAX_PENDING)
        {
            Ok(t) => t,
            Err(error) => halt("cannot read the pending writes", error),
        };
        for tx in txs {
            self.take_write(std::sync::Arc::new(tx));
        }
    }

    /// A write the cluster committed: the leader's engine takes it.
    fn take_write(&mut self, tx: std::sync::Arc<pyralog_ledger::Transaction>) {
        if self.own_writes.remove(&tx.id()) || !self.leading {
            return;
        }
        match self.store().tx_location(&tx.id()) {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(error) => halt("the ledger cannot be read", error),
        }
        let tx = std::sync::Arc::unwrap_or_clone(tx);
        let verified = match pyralog_ledger::block::verify_txs_memo(vec![tx], Some(&mut self.keys))
        {
            Ok(mut v) => match v.pop() {
                Some(v) => v,
                None => return,
            },
            Err(error) => {
                tracing::warn!(%error, "a pending write does not verify");
                return;
            }
        };
        let id = verified.id();
        let refused = match self.engine {
            Consensus::Ordered(_) => self.submit_pbft(verified, true).err(),
            Consensus::Gossip(_) => self
                .feed_and_collect(Input::Submit(verified), None)
                .into_iter()
                .find(|(r, _)| *r == id)
                .map(|(_, e)| e),
        };
        if let Some(e) = refused
            && e.code != "replayed"
        {
            tracing::debug!(%id, code = e.code, "the engine did not take a pending write");
        }
    }

    /// Drops waiters nobody listens to any more: their client timed out, or
    /// the write never reached the cluster's log.
    fn forget_abandoned_waiters(&mut self) {
        forget_closed(&mut self.waiters);
        forget_closed(&mut self.watchers);
    }

    /// Tells `reply` once `id` is committed here; at once if it is.
    fn watch_tx(&mut self, id: Hash, reply: oneshot::Sender<Result<(), ApiError>>) {
        let location = self.store().tx_location(&id);
        match location {
            Ok(Some(_)) => {
                let _ = reply.send(Ok(()));
            }
            Ok(None) => {
                let readers = self.watchers.get(&id).map_or(0, Vec::len);
                if let Some(refusal) = watch_refusal(self.watchers.len(), readers) {
                    let _ = reply.send(Err(refusal));
                    return;
                }
                self.watchers.entry(id).or_default().push(reply);
            }
            Err(e) => {
                let _ = reply.send(Err(ApiError::internal(e)));
            }
        }
    }

    /// Tells the readers watching `id` that it is committed.
    fn watched(&mut self, id: &Hash) {
        for w in self.watchers.remove(id).unwrap_or_default() {
            let _ = w.send(Ok(()));
        }
    }

    /// Looks again for every watched transaction in the store (applied
    /// events were dropped: some may have been committed unseen).
    fn recheck_watchers(&mut self) {
        let ids: Vec<Hash> = self.watchers.keys().copied().collect();
        for id in ids {
            let location = self.store().tx_location(&id);
            if let Ok(Some(_)) = location {
                self.watched(&id);
            }
        }
    }

    /// What the member's state machine applied: new pending writes go to the
    /// engine (on the leader); clients waiting on this node hear of their
    /// writes.
    fn on_applied(&mut self, event: Applied) {
        match event {
            Applied::Write(tx) => self.take_write(tx),
            Applied::Batch(ids) => {
                for id in ids {
                    for w in self.waiters.remove(&id).unwrap_or_default() {
                        let _ = w.send(Ok("committed"));
                    }
                    self.watched(&id);
                }
            }
            Applied::Block { ids, failed } => {
                for id in ids {
                    let answer = match failed.iter().find(|(f, _)| *f == id) {
                        Some((_, e)) => Err(ApiError::from_ledger(e)),
                        None => Ok("final"),
                    };
                    for w in self.waiters.remove(&id).unwrap_or_default() {
                        let _ = w.send(answer.clone());
                    }
                    self.watched(&id);
                }
            }
        }
    }

    /// Runs until `shutdown` resolves, answering `requests` on the way.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut announce = tokio::time::interval(Duration::from_millis(
            pyralog_consensus::announce::ANNOUNCE_CHANGE_MS,
        ));
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // How soon a change of leader is noticed.
        let mut role = tokio::time::interval(Duration::from_millis(20));
        role.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.follow_leadership();
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(done) = self.caught_up_rx.recv() => self.caught_up(done),
                // The engine's own turns, answered by the log: what they
                // hold back goes out first.
                answer = crate::pbft_host::next_answer(&mut self.pending.turns),
                    if !self.pending.turns.is_empty() =>
                {
                    if let Some(turn) = self.pending.turns.pop_front() {
                        self.turn_answered(turn, answer);
                    }
                }
                _ = role.tick() => {}
                Some(done) = self.merged_rx.recv() => self.merge_done(done),
                Some(event) = self.applied.recv() => {
                    self.on_applied(event);
                    for _ in 1..TURN {
                        let Ok(event) = self.applied.try_recv() else { break };
                        self.on_applied(event);
                    }
                    if self.member.view().take_lagged() {
                        tracing::warn!("applied events were dropped; rereading the pending writes");
                        self.take_pending();
                        self.recheck_watchers();
                    }
                }
                _ = announce.tick() => {
                    self.announce_difficulty();
                    self.forget_abandoned_waiters();
                }
                _ = tokio::time::sleep_until(self.next_tick), if self.leading => {
                    if matches!(self.engine, Consensus::Ordered(_)) {
                        self.next_tick = tokio::time::Instant::now() + crate::pbft_host::TICK;
                        self.feed_pbft(pyralog_consensus::pbft::Input::Tick, None);
                    } else {
                        self.next_tick = tokio::time::Instant::now() + Duration::from_secs(1);
                        self.feed(Input::Tick, None);
                    }
                }
                // Consensus and gossip before new requests. Whatever else is
                // already queued joins the turn (below too), so its records
                // share one commit and its relays one message; the request
                // queue is bounded, so under load the clients wait.
                event = self.net.next_event() => {
                    self.network(event);
                    self.take_events(TURN - 1);
                }
                Some(req) = requests.recv() => {
                    self.request(req);
                    self.take_requests(&mut requests, TURN - 1);
                }
            }
            // Whatever turn this is, what waits of both the clients' requests
            // and the network joins it (up to a turn's worth each): the
            // order above only says which goes first. Requests taken only
            // when no event waited sat behind a steady stream of consensus
            // messages (3-10 ms more on a write's p50 at 3,500 writes/s).
            self.take_requests(&mut requests, TURN);
            self.take_events(TURN);
            // Clients' writes first: their entry is proposed while the
            // engine's own rounds below go on.
            self.flush_submits();
            self.flush_pbft();
            self.flush_gossip();
            if self.leading {
                self.tick_when_due();
            }
        }
        self.flush_submits();
        self.finish_turns();
        self.flush_gossip();
        // Merges under way finish (what they set off is left to anti-entropy
        // and the next start), unless the cluster has stopped answering.
        let until = tokio::time::Instant::now() + SHUTDOWN_MERGES;
        while self.merging > 0 {
            match tokio::time::timeout_at(until, self.merged_rx.recv()).await {
                Ok(Some(done)) => self.merge_done(done),
                _ => break,
            }
        }
        tracing::info!("driver stopped");
    }

    /// Takes up to `n` of the network's events already queued.
    fn take_events(&mut self, n: usize) {
        for _ in 0..n {
            let Some(event) = self.net.try_next_event() else {
                break;
            };
            self.network(event);
        }
    }

    /// Takes up to `n` of the clients' requests already queued.
    fn take_requests(&mut self, requests: &mut mpsc::Receiver<Request>, n: usize) {
        for _ in 0..n {
            let Ok(req) = requests.try_recv() else {
                break;
            };
            self.request(req);
        }
    }

    pub(crate) fn current_epoch(&self) -> u64 {
        match self.engine {
            Consensus::Gossip(_) => self.rules.genesis().gossip_epoch(now_ms()),
            Consensus::Ordered(_) => {
                let height = self.store().tip().height + 1;
                self.rules.block_epoch(height)
            }
        }
    }

    /// Feeds one input from the network or the clock and carries out its
    /// effects. `gossip` is the message the input came from, to report a
    /// verdict on.
    fn feed(
        &mut self,
        input: Input<PeerId>,
        gossip: Option<(pyralog_p2p::network::MessageIdOf, PeerId)>,
    ) {
        // Rejections concern clients' submissions, which never come this way.
        let _ = self.feed_and_collect(input, gossip);
    }

    /// [`Driver::feed`], returning the rejections no RPC call was waiting for
    /// (a submit that did not ask to wait learns its fate here).
    fn feed_and_collect(
        &mut self,
        input: Input<PeerId>,
        mut gossip: Option<(pyralog_p2p::network::MessageIdOf, PeerId)>,
    ) -> Vec<(Hash, ApiError)> {
        let mut unclaimed = Vec::new();
        let mut verdict = None;
        let is_batch = matches!(input, Input::Batch { .. });
        let effects = match &mut self.engine {
            Consensus::Gossip(engine) if self.leading => engine.handle(now_ms(), input),
            _ => Vec::new(),
        };
        for effect in effects {
            match effect {
                Effect::Merge(batch) => {
                    // Merged with the turn's others in one commit
                    // ([`Driver::flush_gossip`]), which then judges the
                    // message it came in.
                    self.merges.push((batch, gossip.take()));
                }
                Effect::Publish(batch) => self.net.command(NetCommand::Publish {
                    topic: Topic::Batches,
                    data: batch.to_bytes(),
                }),
                Effect::PublishDigest(d) => self.net.command(NetCommand::Publish {
                    topic: Topic::Digests,
                    data: d.to_bytes(),
                }),
                Effect::Fetch {
                    peer,
                    origin,
                    from_seq,
                    to_seq,
                } => self.net.command(NetCommand::Fetch {
                    peer,
                    request: FetchRequest {
                        origin,
                        from_seq,
                        to_seq,
                    },
                }),
                Effect::AlreadyHave { .. } => {
                    verdict.get_or_insert(Verdict::Ignore);
                }
                Effect::Committed { ids, .. } => {
                    // Waiting clients hear of it from the applied log
                    // ([`Driver::on_applied`]), on whichever member they asked.
                    self.metrics.txs_committed += ids.len() as u64;
                }
                Effect::Reject { id, reason } => {
                    let duplicate = matches!(reason, Rejection::Duplicate);
                    let err = match reason {
                        Rejection::PoolFull { capacity } => ApiError {
                            status: 503,
                            code: "pool_full",
                            message: format!(
                                "the mempool is full ({capacity} transactions); retry later"
                            ),
                        },
                        Rejection::Duplicate => ApiError::bad(
                            "replayed",
                            "replayed transaction: it is already waiting to be committed",
                        ),
                        Rejection::SenderFull { limit } => ApiError {
                            status: 429,
                            code: "sender_full",
                            message: format!(
                                "this sender already has {limit} transactions waiting; retry once some commit"
                            ),
                        },
                        Rejection::Evicted => ApiError {
                            status: 503,
                            code: "evicted",
                            message: "the mempool filled and better-stamped transactions took this one's place; resubmit with more work (GET /pow/difficulty)".into(),
                        },
                        Rejection::MergeFailed(e) => ApiError::from_ledger(&e),
                    };
                    if duplicate {
                        // The engine holds it already and it will commit:
                        // whoever waits on it hears so then. Only a second
                        // submission of it is refused.
                        unclaimed.push((id, err));
                        continue;
                    }
                    match self.waiters.remove(&id) {
                        Some(ws) => {
                            for w in ws {
                                let _ = w.send(Err(err.clone()));
                            }
                        }
                        None => unclaimed.push((id, err)),
                    }
                }
                Effect::SetTimer { at_ms } => {
                    let wait = Duration::from_millis(at_ms.saturating_sub(now_ms()));
                    self.next_tick = tokio::time::Instant::now() + wait;
                }
            }
        }
        if let Some((id, from)) = gossip {
            // A follower relays batches whose signatures it checked (the
            // leader merges them).
            let relayed = !self.leading && verdict.is_none() && is_batch;
            let verdict = if relayed {
                Verdict::Accept
            } else {
                verdict.unwrap_or(Verdict::Ignore)
            };
            self.report(id, from, verdict);
        }
        unclaimed
    }

    /// Tells the swarm what a gossip message turned out to be.
    pub(crate) fn report(
        &mut self,
        id: pyralog_p2p::network::MessageIdOf,
        from: PeerId,
        verdict: Verdict,
    ) {
        if verdict == Verdict::Reject {
            self.metrics.gossip_rejected += 1;
        }
        self.net.command(NetCommand::Report { id, from, verdict });
    }

    /// Sends the batches the turn's inputs produced to the cluster's log,
    /// [`MERGE_GROUP`] to a commit (one round for many peers' batches) and
    /// up to [`MERGES_IN_FLIGHT`] commits at a time, without waiting: each
    /// answer comes back as a [`MergeDone`] ([`Driver::merge_done`]).
    pub(crate) fn flush_gossip(&mut self) {
        while !self.merges.is_empty() && self.leading && self.merging < MERGES_IN_FLIGHT {
            let take = self.merges.len().min(MERGE_GROUP);
            let (sent, batches): (Vec<_>, Vec<_>) = self
                .merges
                .drain(..take)
                .map(|(b, from)| ((b.origin(), b.seq(), from), b.into_batch()))
                .unzip();
            let cmd = Raft::Batches {
                batches,
                now_ms: now_ms(),
            };
            let member = Arc::clone(&self.member);
            let answer = self.merged_tx.clone();
            let term = self.lead_term;
            self.merging += 1;
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = member.write_as_leader(cmd).await;
                // The driver holds the receiver while it runs, and at most
                // MERGES_IN_FLIGHT answers are ever owed.
                let _ = answer
                    .send(MergeDone {
                        term,
                        batches: sent,
                        result,
                        started,
                    })
                    .await;
            });
        }
    }

    /// The cluster merged (or refused) a group of batches: the engine hears
    /// each outcome and the messages they came in are judged: merged is
    /// `Accept`, provably invalid is `Reject`, anything else `Ignore`. What
    /// the outcomes set off (our own sealed batch, say) is merged in turn.
    fn merge_done(&mut self, done: MergeDone) {
        self.merging = self.merging.saturating_sub(1);
        self.count_log_write(done.started);
        // An engine rebuilt since never sent these.
        let current = done.term == self.lead_term && self.leading;
        let outcomes = match done.result {
            Ok(Response::Batches(outcomes)) if outcomes.len() == done.batches.len() => outcomes,
            Ok(other) => halt(
                "the cluster answered a merge strangely",
                format!("{other:?}"),
            ),
            // No longer the leader: the new one merges what gossip and
            // anti-entropy bring it. A failure under an earlier lead says
            // nothing of this one, unless the storage failed.
            Err(error) if current || error.is_fatal() => return self.log_failed(error),
            Err(_) => return,
        };
        self.metrics.merge_commits += 1;
        for ((origin, seq, report), outcome) in done.batches.into_iter().zip(outcomes) {
            let verdict = match outcome {
                BatchOutcome::Merged(_) | BatchOutcome::Already => {
                    self.metrics.batches_merged += 1;
                    if current {
                        let state_root = self.store().state_root();
                        self.feed(
                            Input::Merged {
                                origin,
                                seq,
                                state_root,
                            },
                            None,
                        );
                    }
                    Verdict::Accept
                }
                BatchOutcome::Refused { reason, peer_fault } => {
                    self.metrics.batches_refused += 1;
                    tracing::warn!(%origin, seq, %reason, "batch refused");
                    if current {
                        let error = Error::Refused(reason);
                        self.feed(Input::MergeFailed { origin, seq, error }, None);
                    }
                    if peer_fault {
                        Verdict::Reject
                    } else {
                        Verdict::Ignore
                    }
                }
            };
            if let Some((id, from)) = report {
                self.report(id, from, verdict);
            }
        }
    }

    fn network(&mut self, event: NetEvent) {
        if let NetEvent::Gossip {
            topic: Topic::Difficulty,
            from,
            id,
            data,
        } = event
        {
            return self.hear_difficulty(from, id, &data);
        }
        if matches!(self.engine, Consensus::Ordered(_)) {
            return self.pbft_network(event);
        }
        match event {
            NetEvent::Gossip {
                topic: Topic::Batches,
                from,
                id,
                data,
            } if !self.batch_budget.allow(from, data.len(), now_ms()) => {
                // Over its share this second: neither checked nor forwarded
                // nor held against it; anti-entropy fetches what it missed.
                self.metrics.batches_limited += 1;
                self.report(id, from, Verdict::Ignore);
            }
            NetEvent::Gossip {
                topic: Topic::Batches,
                from,
                id,
                data,
            } => match self.decode_batch(&data) {
                Ok(batch) => self.feed(
                    Input::Batch {
                        from: Some(from),
                        batch,
                    },
                    Some((id, from)),
                ),
                Err(error) => {
                    tracing::warn!(%from, %error, "invalid batch from the network");
                    self.reject_gossip(id, from);
                }
            },
            NetEvent::Gossip {
                topic: Topic::Digests,
                from,
                id,
                data,
            } => match Digest::from_bytes(&data) {
                Ok(digest) => {
                    self.report(id, from, Verdict::Accept);
                    self.feed(Input::Digest { from, digest }, None);
                }
                Err(error) => {
                    tracing::warn!(%from, %error, "invalid digest from the network");
                    self.reject_gossip(id, from);
                }
            },
            NetEvent::FetchRequest {
                request, channel, ..
            } => {
                let response = self.fetch(&request).unwrap_or_default();
                self.net.command(NetCommand::Respond { channel, response });
            }
            NetEvent::FetchResponse { from, response } => {
                for bytes in response.batches {
                    match self.decode_batch(&bytes) {
                        Ok(batch) => self.feed(
                            Input::Batch {
                                from: Some(from),
                                batch,
                            },
                            None,
                        ),
                        Err(error) => {
                            tracing::warn!(%from, %error, "invalid batch in a fetch response")
                        }
                    }
                }
            }
            NetEvent::Gossip { from, id, .. } => {
                // Consensus and relayed transactions belong to ordering engines.
                self.report(id, from, Verdict::Ignore);
            }
            NetEvent::Connected(peer) => tracing::info!(%peer, "peer connected"),
            NetEvent::Disconnected(peer) => tracing::info!(%peer, "peer disconnected"),
            NetEvent::Listening(addr) => tracing::info!(%addr, "p2p listening"),
        }
    }

    /// Reports a gossip message as provably invalid (its sender's score drops).
    pub(crate) fn reject_gossip(&mut self, id: pyralog_p2p::network::MessageIdOf, from: PeerId) {
        self.report(id, from, Verdict::Reject);
    }

    /// A batch from the wire: decoded strictly and every signature checked,
    /// into the process's memo: when the cluster's log applies the batch, its
    /// transactions are not checked a second time (that second check was a
    /// third of a gossip node's CPU under load).
    fn decode_batch(&mut self, bytes: &[u8]) -> Result<VerifiedBatch, Error> {
        VerifiedBatch::verify_memo(Batch::from_bytes(bytes)?, Some(&mut self.keys))
    }

    fn fetch(&self, r: &FetchRequest) -> Result<FetchResponse, Error> {
        let mut out = FetchResponse::default();
        let mut bytes = 0;
        let last = r
            .to_seq
            .min(r.from_seq.saturating_add(MAX_BATCHES as u64 - 1));
        for seq in r.from_seq..=last {
            let Some(batch) = self.store().batch(&r.origin, seq)? else {
                break;
            };
            let encoded = batch.to_bytes();
            bytes += encoded.len() + 4;
            if bytes > MAX_RESPONSE - 1024 {
                break;
            }
            out.batches.push(encoded);
        }
        Ok(out)
    }

    /// Puts the clients' single writes admitted this turn into the cluster's
    /// log, as few entries as their size allows, and answers each client
    /// once its write is held (or, if it waits, once it is in the ledger).
    fn flush_submits(&mut self) {
        let mut rest = std::mem::take(&mut self.submits);
        while !rest.is_empty() {
            let mut bytes = 0;
            let take = rest
                .iter()
                .position(|s| {
                    bytes += s.size;
                    bytes > SUBMIT_ENTRY_BYTES
                })
                .unwrap_or(rest.len())
                .max(1);
            let group: Vec<Submitted> = rest.drain(..take).collect();
            let member = Arc::clone(&self.member);
            tokio::spawn(answer_submits(member, group));
        }
    }

    fn request(&mut self, req: Request) {
        match req {
            Request::Submit { tx, wait, reply } => {
                let id = tx.id();
                let size = tx.size();
                let raw = tx.tx().clone();
                if let Err(e) = self.submit(*tx) {
                    let _ = reply.send(Err(e));
                    return;
                }
                // Acknowledged once the cluster's log holds it: a new leader
                // still has it. With `wait`, the answer comes when it reaches
                // the ledger ([`Driver::on_applied`]).
                let applied = wait.then(|| {
                    let (w, r) = oneshot::channel();
                    self.waiters.entry(id).or_default().push(w);
                    r
                });
                // The turn's writes share one log entry (one round of the
                // log and one apply for all), at the end of the turn.
                self.submits.push(Submitted {
                    tx: raw,
                    size,
                    applied,
                    reply,
                });
            }
            Request::SubmitMany { txs, reply } => {
                let mut answers: Vec<Result<&'static str, ApiError>> =
                    Vec::with_capacity(txs.len());
                let mut raws = Vec::new();
                for tx in txs {
                    let raw = tx.tx().clone();
                    match self.submit(tx) {
                        Ok(()) => {
                            raws.push((answers.len(), raw));
                            answers.push(Ok("pending"));
                        }
                        Err(e) => answers.push(Err(e)),
                    }
                }
                // One log entry for the whole request.
                let member = Arc::clone(&self.member);
                tokio::spawn(async move {
                    let (slots, txs): (Vec<usize>, Vec<_>) = raws.into_iter().unzip();
                    match replicate_many(&member, txs).await {
                        Ok(refusals) => {
                            for (i, refusal) in slots.into_iter().zip(refusals) {
                                if let Some(reason) = refusal {
                                    answers[i] = Err(pending_full(reason));
                                }
                            }
                        }
                        Err(e) => {
                            for i in slots {
                                answers[i] = Err(e.clone());
                            }
                        }
                    }
                    let _ = reply.send(answers);
                });
            }
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Difficulty(reply) => {
                let _ = reply.send(self.difficulty());
            }
            Request::Account(a, reply) => {
                let _ = reply.send(self.store().account(&a).map_err(ApiError::internal).map(|acc| {
                    serde_json::json!({"address": a.to_human(), "balance": acc.balance, "nonce": acc.nonce, "stake": acc.stake})
                }));
            }
            Request::Record {
                address,
                key,
                proof,
                reply,
            } => {
                let _ = reply.send(self.record(address, key, proof));
            }
            Request::Tx(id, reply) => {
                let _ = reply.send(self.tx(id));
            }
            Request::TxWatch(id, reply) => self.watch_tx(id, reply),
            Request::Metrics(reply) => {
                let _ = reply.send(self.metrics_text());
            }
            Request::Block(height, reply) => {
                let _ = reply.send(self.block_json(height));
            }
            Request::Validators(reply) => {
                let _ = reply.send(self.validators_json());
            }
            Request::Snapshot(reply) => {
                // Only queries ask: a snapshot with the state tree's segments,
                // so whole-state scans can reuse cached columns.
                let _ = reply.send(
                    self.store()
                        .scan_snapshot()
                        .map_err(|e| ApiError::from_ledger(&e)),
                );
            }
        }
    }

    /// Admits a transaction and hands it to the engine; an error is the reason
    /// it was not taken (by admission or by the engine).
    fn submit(&mut self, tx: VerifiedTx) -> Result<(), ApiError> {
        let id = tx.id();
        if !self.leading {
            // The leader's engine takes it once the cluster's log holds it.
            return match self.engine {
                Consensus::Ordered(_) => self.admit_ordered(&tx, true),
                Consensus::Gossip(_) => self.admit(&tx),
            };
        }
        self.own_writes.insert(id);
        if matches!(self.engine, Consensus::Ordered(_)) {
            return self.submit_pbft(tx, true);
        }
        if let Err(e) = self.admit(&tx) {
            self.metrics.txs_rejected += 1;
            return Err(e);
        }
        let refused = self.feed_and_collect(Input::Submit(tx), None);
        match refused.into_iter().find(|(r, _)| *r == id) {
            Some((_, e)) => {
                self.metrics.txs_rejected += 1;
                Err(e)
            }
            None => {
                self.metrics.txs_accepted += 1;
                Ok(())
            }
        }
    }

    /// The admission checks, cheapest first: chain, size, stamp, window,
    /// namespace (stateless), then what gossip can carry, then replay.
    fn admit(&self, tx: &VerifiedTx) -> Result<(), ApiError> {
        self.rules
            .check_stateless(tx, self.current_epoch())
            .map_err(|e| ApiError::from_ledger(&e))?;
        self.check_stamp_now(tx)?;
        match &tx.tx().body.payload {
            Payload::Put { ops, .. } if ops.iter().any(|o| o.if_version.is_some()) => {
                return Err(ApiError::from_ledger(&Error::NeedsOrderingEngine {
                    payload: "compare-and-set",
                }));
            }
            Payload::Put { .. } | Payload::Delete { .. } => {}
            other => {
                return Err(ApiError::from_ledger(&Error::NeedsOrderingEngine {
                    payload: other.name(),
                }));
            }
        }
        if self
            .store()
            .tx_location(&tx.id())
            .map_err(ApiError::internal)?
            .is_some()
        {
            return Err(ApiError::bad(
                "replayed",
                "replayed transaction: it was already committed",
            ));
        }
        Ok(())
    }

    fn status(&self) -> serde_json::Value {
        let cluster = self.member.status();
        let g = self.rules.genesis();
        // The height and the root from one read (let go before
        // `current_epoch` reads again).
        let (tip, state_root) = {
            let store = self.store();
            (store.tip(), store.state_root())
        };
        let (heads, pending) = match &self.engine {
            Consensus::Gossip(e) => (e.digest().heads, e.pending()),
            Consensus::Ordered(p) => (Default::default(), p.pool_len()),
        };
        serde_json::json!({
            "chain_id": g.chain_id.to_string(),
            "engine": g.engine.name(),
            "node_id": self.node_id,
            "moniker": self.moniker,
            "cluster_id": self.cluster_id.to_human(),
            "raft_role": cluster.role,
            "cluster": cluster,
            "height": tip.height,
            "batches": heads.values().sum::<u64>(),
            "state_root": state_root.to_hex(),
            "genesis_hash": g.hash().to_hex(),
            "peers": self.net.peers(),
            "syncing": false,
            "epoch": self.current_epoch(),
            "pending": pending,
            "view": match &self.engine {
                Consensus::Ordered(p) => serde_json::json!(p.view()),
                Consensus::Gossip(_) => serde_json::Value::Null,
            },
            "primary": match &self.engine {
                Consensus::Ordered(p) => serde_json::json!(p.leader().to_human()),
                Consensus::Gossip(_) => serde_json::Value::Null,
            },
            "pow_difficulty": self.required_difficulty(),
            "pow_difficulty_peers": self.peer_difficulties(),
            "listen": self.net.listeners().iter().map(|a| format!("{a}/p2p/{}", self.node_id)).collect::<Vec<_>>(),
        })
    }

    fn record(
        &self,
        address: Address,
        key: Vec<u8>,
        proof: bool,
    ) -> Result<Option<serde_json::Value>, ApiError> {
        // One read of the ledger for the record, its proof and the root the
        // proof is against: the state machine applies meanwhile.
        let store = self.store();
        let entry = store.record(&address, &key).map_err(ApiError::internal)?;
        let Some(entry) = entry.filter(|e| !e.is_tombstone()) else {
            return Ok(None);
        };
        let mut v = serde_json::json!({
            "address": address.to_human(),
            "key": String::from_utf8_lossy(&key),
            "value": entry.value.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()),
            "value_hex": entry.value.as_deref().map(hex::encode),
            "version": entry.version,
            "hlc": {"wall_ms": entry.order.hlc.wall_ms, "logical": entry.order.hlc.logical},
            "origin": entry.order.origin.to_human(),
            "tx": entry.order.tx.to_hex(),
        });
        if proof {
            let p = store
                .proof(&StateKey::Record(address, key))
                .map_err(ApiError::internal)?;
            v["proof"] = serde_json::Value::String(hex::encode(p.to_bytes()));
            v["state_root"] = serde_json::Value::String(store.state_root().to_hex());
        }
        Ok(Some(v))
    }

    fn tx(&self, id: Hash) -> Result<Option<serde_json::Value>, ApiError> {
        use pyralog_ledger::store::TxLocation;
        Ok(
            match self.store().tx_location(&id).map_err(ApiError::internal)? {
                Some(TxLocation::Batch { origin, seq, index }) => Some(serde_json::json!({
                    "hash": id.to_hex(), "status": "committed", "batch": {"origin": origin.to_human(), "seq": seq, "index": index}, "block": null,
                })),
                Some(TxLocation::Block { height, index }) => Some(serde_json::json!({
                    "hash": id.to_hex(), "status": "final", "block": {"height": height, "index": index},
                })),
                // Waiting here, or held in the cluster's pending writes.
                None if self.waiters.contains_key(&id)
                    || self.member.view().is_pending(&id).unwrap_or(false) =>
                {
                    Some(
                        serde_json::json!({"hash": id.to_hex(), "status": "pending", "block": null}),
                    )
                }
                None => None,
            },
        )
    }

    fn block_json(&self, height: Option<u64>) -> Result<Option<serde_json::Value>, ApiError> {
        let height = height.unwrap_or(self.store().tip().height);
        if height == 0 {
            return Ok(None);
        }
        let Some(b) = self.store().block(height).map_err(ApiError::internal)? else {
            return Ok(None);
        };
        let h = &b.header;
        Ok(Some(serde_json::json!({
            "height": h.height,
            "hash": h.hash().to_hex(),
            "parent": h.parent.to_hex(),
            "state_root": h.state_root.to_hex(),
            "tx_root": h.tx_root.to_hex(),
            "proposer": h.proposer.to_human(),
            "timestamp_ms": h.timestamp_ms,
            "txs": b.txs.iter().map(|t| t.id().to_hex()).collect::<Vec<_>>(),
            "certificate": {
                "round": b.certificate.round,
                "votes": b.certificate.votes.iter().map(|v| serde_json::json!({
                    "validator": v.validator.to_human(),
                    "signature": hex::encode(v.signature.0),
                })).collect::<Vec<_>>(),
            },
        })))
    }

    fn validators_json(&self) -> Result<serde_json::Value, ApiError> {
        let leader = match &self.engine {
            Consensus::Ordered(p) => Some(p.leader()),
            Consensus::Gossip(_) => None,
        };
        if self.rules.genesis().engine == Engine::Pos {
            // Every registered validator, with its stake and standing.
            let list = self.store().validators().map_err(ApiError::internal)?;
            return Ok(list
                .iter()
                .map(|v| {
                    let status = if leader == Some(v.info.public_key) {
                        "primary"
                    } else {
                        v.status.name()
                    };
                    serde_json::json!({
                        "id": v.info.id,
                        "address": v.info.public_key.to_human(),
                        "stake": v.info.stake,
                        "power": v.power,
                        "status": status,
                        "jailed": v.state.jailed,
                        "tombstoned": v.state.tombstoned,
                        "slashed": v.state.slashed,
                        "operator": v.state.operator.to_human(),
                        "p2p": v.info.p2p,
                    })
                })
                .collect());
        }
        let list: Vec<serde_json::Value> = self
            .store()
            .genesis()
            .validators
            .iter()
            .map(|v| {
                serde_json::json!({
                    "id": v.id,
                    "address": v.public_key.to_human(),
                    "stake": v.stake,
                    "power": 1,
                    "status": if leader == Some(v.public_key) { "primary" } else { "active" },
                    "jailed": false,
                    "slashed": false,
                })
            })
            .collect();
        Ok(serde_json::Value::Array(list))
    }

    fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP pyralog_{name} {help}\n# TYPE pyralog_{name} {kind}\npyralog_{name} {v}\n"
            ));
        };
        metric(
            "txs_accepted_total",
            "counter",
            "Transactions admitted by this node.",
            m.txs_accepted,
        );
        metric(
            "txs_rejected_total",
            "counter",
            "Transactions refused at admission.",
            m.txs_rejected,
        );
        metric(
            "relays_limited_total",
            "counter",
            "Relayed transaction messages ignored: their peer was over its share this second.",
            m.relays_limited,
        );
        metric(
            "pow_difficulty",
            "gauge",
            "Leading zero bits asked of a client's stamp now.",
            u64::from(self.required_difficulty()),
        );
        metric(
            "difficulty_announcements_heard_total",
            "counter",
            "Validators' difficulty announcements taken.",
            self.admission.heard,
        );
        metric(
            "difficulty_announcements_refused_total",
            "counter",
            "Difficulty announcements refused (stale, not a validator, forged, ...).",
            self.admission.refused,
        );
        metric(
            "batches_limited_total",
            "counter",
            "Gossiped batches ignored: their peer was over its share of bytes this second.",
            m.batches_limited,
        );
        metric(
            "net_commands_dropped_total",
            "counter",
            "Network commands dropped because the swarm task's queue was full.",
            self.net.dropped_commands(),
        );
        metric(
            "net_gossip_dropped_total",
            "counter",
            "Gossip messages ignored because the node was behind on the network's events.",
            self.net.dropped_gossip(),
        );
        metric(
            "txs_committed_total",
            "counter",
            "Own transactions committed in batches.",
            m.txs_committed,
        );
        metric(
            "batches_merged_total",
            "counter",
            "Batches merged into the store.",
            m.batches_merged,
        );
        metric(
            "merge_commits_total",
            "counter",
            "Store commits that merged batches (the batches of one turn share one).",
            m.merge_commits,
        );
        metric(
            "batches_refused_total",
            "counter",
            "Batches the store refused.",
            m.batches_refused,
        );
        metric(
            "driver_log_writes_total",
            "counter",
            "Writes the driver made through the cluster's log (engine turns with their blocks, gossip batches).",
            m.log_writes,
        );
        metric(
            "driver_log_write_microseconds_total",
            "counter",
            "Time from proposing those writes to taking their answers (the driver goes on meanwhile).",
            m.log_write_micros,
        );
        metric(
            "gossip_rejected_total",
            "counter",
            "Gossip messages rejected as invalid.",
            m.gossip_rejected,
        );
        metric(
            "blocks_committed_total",
            "counter",
            "Finalized blocks this node committed.",
            m.blocks_committed,
        );
        metric(
            "equivocations_seen_total",
            "counter",
            "Pairs of conflicting statements signed by one validator that this node received.",
            m.equivocations,
        );
        metric(
            "view_changes_total",
            "counter",
            "Views this node entered after the first.",
            m.view_changes,
        );
        metric(
            "peers",
            "gauge",
            "Connected peers.",
            self.net.peers() as u64,
        );
        metric(
            "mempool_pending",
            "gauge",
            "Transactions waiting to be sealed.",
            match &self.engine {
                Consensus::Gossip(e) => e.pending() as u64,
                Consensus::Ordered(p) => p.pool_len() as u64,
            },
        );
        metric(
            "state_batches",
            "gauge",
            "Batches merged, summed over origins.",
            match &self.engine {
                Consensus::Gossip(e) => e.digest().heads.values().sum(),
                Consensus::Ordered(_) => 0,
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_wait_on_transactions_within_both_caps() {
        assert!(watch_refusal(0, 0).is_none());
        assert!(watch_refusal(MAX_WATCHED - 1, 0).is_none());
        // Full: no new transaction, but another reader of a watched one.
        let full = watch_refusal(MAX_WATCHED, 0).expect("refused when full");
        assert_eq!((full.status, full.code), (503, "busy"));
        assert!(watch_refusal(MAX_WATCHED, 1).is_none());
        assert!(watch_refusal(MAX_WATCHED, MAX_WATCHERS_EACH - 1).is_none());
        // One transaction's readers are capped on their own.
        let crowded = watch_refusal(1, MAX_WATCHERS_EACH).expect("refused when crowded");
        assert_eq!(crowded.code, "busy");
    }
}
