//! One running cluster member: its Raft, its state machine, and what the
//! node asks of it.
//!
//! - **Writes** ([`Member::write`]) go to Raft on the leader. A follower
//!   forwards the command to the leader it knows ([`Rpc::Forward`]); the
//!   leader proposes it and answers once it is committed and applied. A
//!   forwarded command is never forwarded again: a leader that lost its
//!   place answers [`Reply::NotLeader`] and the origin retries, within
//!   [`WRITE_DEADLINE`]. Every command is idempotent when applied twice
//!   (see [`crate::machine`]), so a retry after an unknown outcome is safe.
//! - **Reads** ([`Member::read`]) take a [`Consistency`]: `None` reads this
//!   member's state; `Leader` reads only on a member that believes it is the
//!   leader; `Linearizable` uses Raft's read index (openraft's
//!   `get_read_linearizer` with `ReadPolicy::ReadIndex`, never a lease),
//!   on the leader or, from a follower, by asking the leader for the index
//!   and waiting until this member applied up to it.
//! - **Membership** ([`Member::add_learner`], [`Member::promote`],
//!   [`Member::remove`]) runs on the leader (forwarded like writes).
//! - **Signing** ([`Member::authorize_signing`]): the leader commits a
//!   signing intent before the engine signs (see [`crate::intent`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ReadPolicy;
use openraft::ServerState;
use openraft::raft::linearizable_read::Linearizer;
use openraft::type_config::async_runtime::WatchReceiver;
use pyralog_consensus::bft::Statement;
use pyralog_ledger::{GenesisFile, Store};
use tokio::sync::Mutex;

use crate::command::{Command, Response};
use crate::error::Error;
use crate::intent::{HistoryFile, Verdict};
use crate::ledger::Ledger;
use crate::log_store::{LogStore, open_cluster_db};
use crate::machine::{LedgerMachine, MachineView};
use crate::network::{Manage, Network, Reply, Rpc, Transport};
use crate::snapshot::{MAX_SNAPSHOT_BYTES, SnapshotFile};
use crate::types::{Member as MemberAddr, NodeId, Raft};

/// The answers to commands proposed together, in order
/// ([`Member::propose_many_as_leader`]).
pub type Answers =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Response>, Error>> + Send>>;

/// How long a write (with its forwarding and retries) may take, unless
/// [`MemberConfig::write_deadline`] says otherwise.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a forwarded call to the leader may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a linearizable read may wait for this member to catch up.
pub const READ_WAIT: Duration = Duration::from_secs(5);
/// Entries between two snapshots. A snapshot copies the whole ledger file
/// and every pending write, so it is taken rarely: at 5,000 it took an
/// eighth of the leader's CPU time under a steady write load
/// (docs/BENCHMARKS.md, "Clusters"). The log it lets a member purge is
/// small next to the ledger (a few hundred bytes per entry).
pub const SNAPSHOT_EVERY: u64 = 100_000;

/// How fresh a read must be (rqlite's levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// This member's state, however stale.
    None,
    /// Only on a member that believes it is the leader (no round trip; a
    /// deposed leader that does not know it yet may serve a stale read).
    Leader,
    /// Linearizable: Raft's read index.
    Linearizable,
}

impl std::str::FromStr for Consistency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "none" => Ok(Consistency::None),
            "leader" => Ok(Consistency::Leader),
            "linearizable" => Ok(Consistency::Linearizable),
            other => Err(Error::Decode {
                what: "consistency",
                reason: format!("{other:?} is not none, leader or linearizable"),
            }),
        }
    }
}

/// How to start a member.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// Its id in the cluster.
    pub id: NodeId,
    /// Its folder: `raft.redb`, `raft-log/`, `ledger.redb`, `snapshots/`.
    pub dir: PathBuf,
    /// The chain's genesis.
    pub genesis: GenesisFile,
    /// openraft's settings (timeouts, snapshot policy).
    pub raft: openraft::Config,
    /// How long a write may wait for a leader before it fails with
    /// [`Error::NoLeader`].
    pub write_deadline: Duration,
    /// Caps on pending writes (the same on every member).
    pub pending: crate::machine::PendingLimits,
}

impl MemberConfig {
    /// Settings for loopback and tests: elections in 150–300 ms, heartbeats
    /// every 50 ms, a snapshot every [`SNAPSHOT_EVERY`] entries.
    pub fn new(id: NodeId, dir: PathBuf, genesis: GenesisFile) -> MemberConfig {
        MemberConfig {
            id,
            dir,
            genesis,
            raft: openraft::Config {
                cluster_name: "pyralog".into(),
                election_timeout_min: 150,
                election_timeout_max: 300,
                heartbeat_interval: 50,
                max_payload_entries: 256,
                snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
                max_in_snapshot_log_to_keep: 1000,
                // A follower further behind than a snapshot's span gets the
                // snapshot instead of the log.
                replication_lag_threshold: SNAPSHOT_EVERY,
                // A member cut off and back must not depose a healthy leader
                // with the terms it inflated while away.
                enable_pre_vote: Some(true),
                ..Default::default()
            },
            write_deadline: WRITE_DEADLINE,
            pending: crate::machine::PendingLimits::default(),
        }
    }

    /// The same settings with a snapshot every `entries` log entries (at
    /// least 100); a follower further behind gets the snapshot.
    pub fn with_snapshot_every(mut self, entries: u64) -> MemberConfig {
        let entries = entries.max(100);
        self.raft.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(entries);
        self.raft.replication_lag_threshold = entries;
        self.raft.max_in_snapshot_log_to_keep =
            self.raft.max_in_snapshot_log_to_keep.min(entries / 5);
        self
    }
}

/// What `/status` shows of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// This member.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// Voters.
    pub voters: Vec<NodeId>,
    /// Learners.
    pub learners: Vec<NodeId>,
    /// The last applied index.
    pub applied: Option<u64>,
    /// The last committed index.
    pub committed: Option<u64>,
    /// The last index covered by this member's snapshot.
    pub snapshot: Option<u64>,
    /// The last index purged from this member's log: a member behind it
    /// can only catch up from a snapshot.
    pub purged: Option<u64>,
}

/// A snapshot being received.
struct Incoming {
    from: NodeId,
    transfer: u64,
    file: std::fs::File,
    path: PathBuf,
    written: u64,
}

/// A running member.
pub struct Member {
    id: NodeId,
    raft: Raft,
    view: MachineView,
    transport: Arc<dyn Transport>,
    incoming: Mutex<Option<Incoming>>,
    dir: PathBuf,
    write_deadline: Duration,
    /// The term in which this member, as leader, last caught up to the read
    /// index before signing (0: never).
    caught_up_term: AtomicU64,
    /// Misbehaviour a test switched on.
    #[cfg(feature = "fault-injection")]
    faults: crate::fault::Faults,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn raft_err(e: impl std::fmt::Display) -> Error {
    Error::Raft(e.to_string())
}

impl Member {
    /// Opens the member's files and starts its Raft. A fresh member does
    /// nothing until it is initialized ([`Member::initialize`]) or added to a
    /// cluster by its leader.
    pub async fn start(
        config: MemberConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Member>, Error> {
        std::fs::create_dir_all(&config.dir)?;
        let db = open_cluster_db(&config.dir.join("raft.redb"))?;
        let ledger = Ledger::open(&config.dir.join("ledger.redb"), &config.genesis)?;
        let machine = LedgerMachine::open(db.clone(), ledger, &config.dir.join("snapshots"))?
            .with_pending_limits(config.pending);
        let view = machine.view();
        let raft_config = Arc::new(config.raft.validate().map_err(raft_err)?);
        let raft = Raft::new(
            config.id,
            raft_config,
            Network::new(config.id, transport.clone()),
            LogStore::of_member(db, &config.dir.join("raft-log"), config.id)?,
            machine,
        )
        .await
        .map_err(raft_err)?;
        Ok(Arc::new(Member {
            id: config.id,
            raft,
            view,
            transport,
            incoming: Mutex::new(None),
            dir: config.dir,
            write_deadline: config.write_deadline,
            caught_up_term: AtomicU64::new(0),
            #[cfg(feature = "fault-injection")]
            faults: crate::fault::Faults::default(),
        }))
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The faults a test may switch on for this member.
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> &crate::fault::Faults {
        &self.faults
    }

    /// The openraft handle (for metrics and tests).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// What the state machine exposes: the ledger, the signing history, the
    /// pending writes.
    pub fn view(&self) -> &MachineView {
        &self.view
    }

    /// Makes this member the first of a new cluster with `members` as voters
    /// (a one-member cluster passes only itself).
    pub async fn initialize(&self, members: BTreeMap<NodeId, MemberAddr>) -> Result<(), Error> {
        self.raft.initialize(members).await.map_err(raft_err)
    }

    /// Founds a cluster with `members` as voters unless this member has
    /// been part of one before (its log or vote say so): `Ok(true)` if it
    /// founded it now, `Ok(false)` if there was nothing to do.
    pub async fn found(&self, members: BTreeMap<NodeId, MemberAddr>) -> Result<bool, Error> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(e) => match e.api_error() {
                Some(openraft::error::InitializeError::NotAllowed(_)) => Ok(false),
                _ => Err(raft_err(e)),
            },
        }
    }

    /// Stops Raft. The files stay; [`Member::start`] resumes from them.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.raft.shutdown().await.map_err(raft_err)
    }

    /// Whether this member believes it leads (the node runs the network
    /// engine only while it does).
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// The Raft term this member is in: a leader's term is the one it was
    /// elected in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.known_leader()
    }

    /// openraft's current metrics (applied, committed, snapshot, purged…).
    pub fn metrics(&self) -> openraft::RaftMetrics<crate::types::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The role, term, leader and members.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        Status {
            id: self.id,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            term: m.current_term,
            leader: m.current_leader,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            applied: m.last_applied.map(|l| l.index),
            committed: m.local_committed.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
        }
    }

    fn leader_addr(&self, leader: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config
            .membership()
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.addr.clone())
    }

    fn known_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Sends `rpc` to the leader; `Ok(None)` if no other member is known
    /// as leader right now.
    async fn to_leader(&self, rpc: &Rpc) -> Result<Option<Reply>, Error> {
        let Some(leader) = self.known_leader().filter(|l| *l != self.id) else {
            return Ok(None);
        };
        let addr = self
            .leader_addr(leader)
            .ok_or(Error::Unreachable(leader, "not in the membership".into()))?;
        crate::network::call(&*self.transport, leader, &addr, rpc, FORWARD_TIMEOUT)
            .await
            .map(Some)
    }

    /// Proposes `cmd` here if this member leads; otherwise says which member
    /// does.
    async fn propose_here(
        &self,
        cmd: Command,
    ) -> Result<Result<(u64, Response), Option<NodeId>>, Error> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(Ok((r.log_id.index, r.data))),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Ok(Err(f.leader_id)),
                None => Err(raft_err(e)),
            },
        }
    }

    /// Commits `cmd` only if this member leads (never forwarded): what the
    /// leader's own engine writes must not land in a log another leader
    /// now drives. [`Error::NotLeader`] otherwise.
    pub async fn write_as_leader(&self, cmd: Command) -> Result<Response, Error> {
        cmd.to_checked_bytes()?;
        match self.propose_here(cmd).await? {
            Ok((_, response)) => Ok(response),
            Err(leader) => Err(Error::NotLeader {
                me: self.id,
                leader,
            }),
        }
    }

    /// [`Member::write_as_leader`] for several commands: proposed together,
    /// so the log takes them in one flush and the machine applies them in
    /// this order; their answers, in the same order. Used where a leader's
    /// engine has more than one entry to make before it may go on (a block
    /// and the intents of what it signs next), so they cost one round of the
    /// log instead of one each.
    pub async fn write_many_as_leader(&self, cmds: Vec<Command>) -> Result<Vec<Response>, Error> {
        self.propose_many_as_leader(cmds).await?.await
    }

    /// [`Member::write_many_as_leader`] in two steps: proposes the commands
    /// (in the log's order once this returns, so what is proposed next comes
    /// after them) and gives the future of their answers. A caller can go on
    /// proposing while earlier commands are still on their way through the
    /// log; their answers come in the order proposed.
    pub async fn propose_many_as_leader(&self, cmds: Vec<Command>) -> Result<Answers, Error> {
        use futures::StreamExt;
        for cmd in &cmds {
            cmd.to_checked_bytes()?;
        }
        let n = cmds.len();
        let me = self.id;
        let mut results = self.raft.client_write_many(cmds).await.map_err(raft_err)?;
        Ok(Box::pin(async move {
            let mut answers = Vec::with_capacity(n);
            while let Some(result) = results.next().await {
                match result.map_err(raft_err)? {
                    Ok(written) => answers.push(written.response),
                    Err(openraft::error::ClientWriteError::ForwardToLeader(f)) => {
                        return Err(Error::NotLeader {
                            me,
                            leader: f.leader_id,
                        });
                    }
                    Err(e) => return Err(raft_err(e)),
                }
            }
            if answers.len() != n {
                return Err(Error::Raft(format!(
                    "{n} commands proposed, {} answered",
                    answers.len()
                )));
            }
            Ok(answers)
        }))
    }

    /// Commits `cmd` through the cluster and returns what applying it gave.
    /// Acknowledged only once Raft committed it and this member's leader
    /// applied it.
    pub async fn write(&self, cmd: Command) -> Result<Response, Error> {
        cmd.to_checked_bytes()?;
        let deadline = Instant::now() + self.write_deadline;
        loop {
            match self.propose_here(cmd.clone()).await? {
                Ok((_, response)) => return Ok(response),
                Err(_) => match self.to_leader(&Rpc::Forward(cmd.clone())).await {
                    Ok(Some(Reply::Written(_, response))) => return Ok(response),
                    Ok(Some(Reply::Failed(why))) => return Err(Error::Raft(why)),
                    // No leader yet, a leader that lost its place, or one
                    // unreachable: wait for the election and retry.
                    Ok(Some(_)) | Ok(None) | Err(_) => {}
                },
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads the ledger at `level`.
    pub async fn read<R>(
        &self,
        level: Consistency,
        f: impl FnOnce(&Store) -> R,
    ) -> Result<R, Error> {
        match level {
            Consistency::None => {}
            Consistency::Leader => {
                if !self.raft.is_leader() {
                    return Err(Error::NotLeader {
                        me: self.id,
                        leader: self.known_leader(),
                    });
                }
            }
            Consistency::Linearizable => {
                #[cfg(feature = "fault-injection")]
                let skip = self.faults.stale_reads();
                #[cfg(not(feature = "fault-injection"))]
                let skip = false;
                if !skip {
                    self.linearize().await?;
                }
            }
        }
        let store = self.view.ledger().read()?;
        Ok(f(&store))
    }

    /// Waits until this member, as leader, has applied every entry of its
    /// log as the log is now, not only up to the read index: a leader
    /// restored on restart (openraft keeps a committed vote) may hold entries
    /// of its term past the read index, which it commits later, ahead of
    /// anything it proposes next. What it builds from the state machine (the
    /// engine, the signing history) must have seen them.
    pub async fn catch_up_as_leader(&self) -> Result<(), Error> {
        let last = self.raft.metrics().borrow_watched().last_log_index;
        self.linearize().await?;
        self.raft
            .wait(Some(READ_WAIT))
            .applied_index_at_least(last, "a new leader applies its whole log")
            .await
            .map_err(|_| Error::Timeout("applying the new leader's log"))?;
        Ok(())
    }

    /// Waits until this member's state machine holds everything committed
    /// before the call (the read index).
    pub async fn linearize(&self) -> Result<(), Error> {
        let linearizer = match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(l) => l,
            Err(e) => {
                if e.forward_to_leader().is_none() {
                    return Err(raft_err(e));
                }
                match self.to_leader(&Rpc::ReadIndex).await? {
                    Some(Reply::ReadIndex(leader, read_log_id)) => {
                        Linearizer::new(leader, read_log_id, None)
                    }
                    Some(Reply::NotLeader(leader)) => {
                        return Err(Error::NotLeader {
                            me: self.id,
                            leader,
                        });
                    }
                    Some(Reply::Failed(why)) => return Err(Error::Raft(why)),
                    Some(other) => {
                        return Err(Error::Raft(format!(
                            "unexpected reply to read index: {other:?}"
                        )));
                    }
                    None => return Err(Error::NoLeader),
                }
            }
        };
        match linearizer
            .try_await_ready(&self.raft, Some(READ_WAIT))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Timeout("catching up to the read index")),
            Err(e) => Err(raft_err(e)),
        }
    }

    async fn manage(&self, op: Manage) -> Result<(), Error> {
        let here = match &op {
            Manage::AddLearner(id, node) => self
                .raft
                .add_learner(*id, node.clone(), true)
                .await
                .map(|_| ()),
            Manage::Promote(ids) => self
                .raft
                .change_membership(
                    openraft::ChangeMembers::AddVoterIds(
                        ids.iter().copied().collect::<BTreeSet<_>>(),
                    ),
                    false,
                )
                .await
                .map(|_| ()),
            Manage::Remove(ids) => {
                let set: BTreeSet<NodeId> = ids.iter().copied().collect();
                let voters: BTreeSet<NodeId> =
                    self.raft.voter_ids().filter(|v| set.contains(v)).collect();
                let r = if voters.is_empty() {
                    Ok(())
                } else {
                    self.raft
                        .change_membership(openraft::ChangeMembers::RemoveVoters(voters), false)
                        .await
                        .map(|_| ())
                };
                match r {
                    Ok(()) => self
                        .raft
                        .change_membership(openraft::ChangeMembers::RemoveNodes(set), false)
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                }
            }
        };
        match here {
            Ok(()) => Ok(()),
            Err(e) if e.forward_to_leader().is_some() => {
                match self.to_leader(&Rpc::Manage(op)).await? {
                    Some(Reply::Managed) => Ok(()),
                    Some(Reply::Failed(why)) => Err(Error::Raft(why)),
                    Some(Reply::NotLeader(leader)) => Err(Error::NotLeader {
                        me: self.id,
                        leader,
                    }),
                    Some(other) => Err(Error::Raft(format!(
                        "unexpected reply to a membership change: {other:?}"
                    ))),
                    None => Err(Error::NoLeader),
                }
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Adds `id` (reached at `member`) as a learner and waits until it has
    /// caught up with the log.
    pub async fn add_learner(&self, id: NodeId, member: MemberAddr) -> Result<(), Error> {
        self.manage(Manage::AddLearner(id, member)).await
    }

    /// Makes learners voters.
    pub async fn promote(&self, ids: &[NodeId]) -> Result<(), Error> {
        self.manage(Manage::Promote(ids.to_vec())).await
    }

    /// Removes members, voters or learners.
    pub async fn remove(&self, ids: &[NodeId]) -> Result<(), Error> {
        self.manage(Manage::Remove(ids.to_vec())).await
    }

    /// Asks whether the cluster's key may sign `statement`, and commits the
    /// intent through Raft if so. Call it on the leader, before signing; sign
    /// only on `Ok`. A new leader first catches up to everything committed
    /// (the read index), so it sees every intent its predecessors committed.
    pub async fn authorize_signing(&self, statement: Statement) -> Result<Verdict, Error> {
        if !self.raft.is_leader() {
            return Err(Error::NotLeader {
                me: self.id,
                leader: self.known_leader(),
            });
        }
        // Once per term: catch up to everything committed before this
        // leader's term (its predecessors' intents). Later intents of the
        // term are this leader's own, and it waits for each to apply.
        let term = self.term();
        if self.caught_up_term.load(Ordering::Acquire) != term {
            self.catch_up_as_leader().await?;
            self.caught_up_term.store(term, Ordering::Release);
        }
        let verdict = self.view.check_intent(&statement)?;
        if verdict == Verdict::Repeat {
            return Ok(verdict);
        }
        match self.propose_here(Command::Intent(statement)).await? {
            Ok((_, Response::Intent(Ok(())))) => Ok(Verdict::New),
            Ok((_, Response::Intent(Err(refusal)))) => Err(Error::SigningRefused(refusal)),
            Ok((_, other)) => Err(Error::Raft(format!(
                "unexpected answer to an intent: {other:?}"
            ))),
            Err(leader) => Err(Error::NotLeader {
                me: self.id,
                leader,
            }),
        }
    }

    /// The cluster's signing history as an interchange file for the
    /// validator key `validator` (the history as this member applied it;
    /// export from the leader after [`Member::linearize`] for the latest).
    pub fn export_history(
        &self,
        validator: &pyralog_ledger::Address,
    ) -> Result<crate::intent::Interchange, Error> {
        let (chain, genesis) = {
            let store = self.view.ledger().read()?;
            (store.genesis().chain_id.clone(), store.genesis().hash())
        };
        Ok(self.view.history()?.export(validator, &chain, &genesis))
    }

    /// Imports a signing-history file for `validator`: checks it against the
    /// cluster's history (refusing it whole on any problem, see
    /// [`crate::intent::SigningHistory::plan_import`]) and commits what it
    /// adds through Raft. Returns what was added.
    pub async fn import_history(
        &self,
        file: &crate::intent::Interchange,
        validator: &pyralog_ledger::Address,
    ) -> Result<crate::intent::ImportPlan, Error> {
        self.linearize().await?;
        let (chain, genesis) = {
            let store = self.view.ledger().read()?;
            (store.genesis().chain_id.clone(), store.genesis().hash())
        };
        let plan = self
            .view
            .history()?
            .plan_import(file, validator, &chain, &genesis)?;
        for cmd in plan.commands() {
            match self.write(cmd).await? {
                Response::Intent(Err(refusal)) => return Err(Error::SigningRefused(refusal)),
                Response::Intent(Ok(())) | Response::Done => {}
                other => {
                    return Err(Error::Raft(format!(
                        "unexpected answer to an import: {other:?}"
                    )));
                }
            }
        }
        Ok(plan)
    }

    /// Serves one request from member `from` (what a transport calls);
    /// returns the encoded reply. Never fails: an error becomes
    /// [`Reply::Failed`].
    pub async fn handle(&self, from: NodeId, request: &[u8]) -> Vec<u8> {
        let reply = match crate::wire::decode::<Rpc>("rpc", request, crate::network::MAX_RPC_BYTES)
        {
            Ok(rpc) => self.serve(from, rpc).await,
            Err(e) => Reply::Failed(e.to_string()),
        };
        crate::wire::encode("rpc reply", &reply, crate::network::MAX_RPC_BYTES).unwrap_or_else(
            |e| {
                crate::wire::encode("rpc reply", &Reply::Failed(e.to_string()), 4096)
                    .unwrap_or_default()
            },
        )
    }

    async fn serve(&self, from: NodeId, rpc: Rpc) -> Reply {
        match rpc {
            Rpc::Append(req) => match self.raft.append_entries(req).await {
                Ok(r) => Reply::Append(r),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::Vote(req) => match self.raft.vote(req).await {
                Ok(r) => Reply::Vote(r),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::PreVote(req) => match self.raft.pre_vote(req).await {
                Ok(r) => Reply::Vote(r),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::SnapshotChunk {
                transfer,
                offset,
                data,
                done,
            } => match self
                .receive_chunk(from, transfer, offset, &data.0, done)
                .await
            {
                Ok(r) => r,
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::Forward(cmd) => match self.propose_here(cmd).await {
                Ok(Ok((index, response))) => Reply::Written(index, response),
                Ok(Err(leader)) => Reply::NotLeader(leader),
                Err(e) => Reply::Failed(e.to_string()),
            },
            Rpc::Manage(op) => {
                if !self.raft.is_leader() {
                    return Reply::NotLeader(self.known_leader());
                }
                match self.manage(op).await {
                    Ok(()) => Reply::Managed,
                    Err(e) => Reply::Failed(e.to_string()),
                }
            }
            Rpc::ReadIndex => match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
                Ok(l) => Reply::ReadIndex(self.id, *l.read_log_id()),
                Err(e) => match e.forward_to_leader() {
                    Some(f) => Reply::NotLeader(f.leader_id),
                    None => Reply::Failed(e.to_string()),
                },
            },
        }
    }

    /// Stores a snapshot piece; on the last, installs the snapshot. One
    /// transfer at a time: a new transfer replaces an unfinished one.
    async fn receive_chunk(
        &self,
        from: NodeId,
        transfer: u64,
        offset: u64,
        data: &[u8],
        done: Option<(crate::types::Vote, crate::types::SnapshotMeta)>,
    ) -> Result<Reply, Error> {
        if data.len() > crate::network::SNAPSHOT_CHUNK {
            return Err(Error::TooLarge {
                what: "snapshot piece",
                size: data.len(),
                max: crate::network::SNAPSHOT_CHUNK,
            });
        }
        let mut guard = self.incoming.lock().await;
        let fresh = guard
            .as_ref()
            .is_none_or(|i| i.from != from || i.transfer != transfer);
        if fresh {
            if offset != 0 {
                return Err(Error::BadSnapshot(format!(
                    "a piece at offset {offset} of a transfer that did not start"
                )));
            }
            if let Some(old) = guard.take() {
                let _ = std::fs::remove_file(&old.path);
            }
            let dir = self.dir.join("snapshots");
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("incoming-{from}.bin"));
            let file = std::fs::File::create(&path)?;
            *guard = Some(Incoming {
                from,
                transfer,
                file,
                path,
                written: 0,
            });
        }
        let Some(inc) = guard.as_mut() else {
            return Err(Error::Storage("no snapshot transfer".into()));
        };
        if offset != inc.written {
            return Err(Error::BadSnapshot(format!(
                "a piece at offset {offset}, expected {}",
                inc.written
            )));
        }
        if inc.written + data.len() as u64 > MAX_SNAPSHOT_BYTES {
            return Err(Error::TooLarge {
                what: "snapshot",
                size: (inc.written + data.len() as u64) as usize,
                max: MAX_SNAPSHOT_BYTES as usize,
            });
        }
        inc.file.seek(SeekFrom::Start(offset))?;
        inc.file.write_all(data)?;
        inc.written += data.len() as u64;
        let Some((vote, meta)) = done else {
            return Ok(Reply::ChunkStored);
        };
        inc.file.sync_all()?;
        let path = inc.path.clone();
        *guard = None;
        drop(guard);
        let snapshot = openraft::storage::Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        };
        let r = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(raft_err)?;
        Ok(Reply::Installed(r))
    }
}
