//! Validators run as clusters: three replicas of the engine share one
//! validator key and one replicated log (Raft, in the node); only the leader
//! runs the engine, and it is killed at chosen points of its steps.
//!
//! What the log holds, and when:
//!
//! - **Signing intents**, committed one by one before anything of the step is
//!   sent (`Member::authorize_signing` in the node). Every statement the
//!   leader is about to publish under the key is one: the statements the
//!   engine persisted as `Record::Signed`, and every statement a message it
//!   broadcasts or sends carries (its own, and for a new-view the
//!   re-proposals' pre-prepares). A statement that conflicts with the
//!   committed history is refused, and every message carrying it is dropped.
//! - **Engine records**, batched by the host and committed a little later
//!   (`lag_ms` after they were persisted, in order): what a new leader
//!   recovers the engine from is a prefix of what the old leader persisted,
//!   and may miss what it signed and sent last.
//! - Committed blocks go through the log at once (`Command::Ordered`), and
//!   so do clients' transactions (`Command::Write`): they stay pending in
//!   the cluster until a block includes them, and a new leader's engine
//!   gets them back.
//!
//! The leader is killed, during the faults, at one of three points of a step
//! that signs a statement of a chosen kind ([`Point`]). Another replica takes
//! over after an election delay: its engine recovers from the committed
//! records and blocks, and the cluster keeps its committed intents. With the
//! intent guard switched off (`Sim::without_intent_guard`), the same runs
//! must put conflicting statements of one key on the network.

use std::collections::{BTreeMap, VecDeque};

use pyralog_consensus::bft::{Kind, Statement};
use pyralog_consensus::intent::SigningHistory;
use pyralog_consensus::pbft::{Message, Record, Signed};
use pyralog_ledger::Hash;
use pyralog_ledger::block::VerifiedTx;

use super::sim::Rng;

/// Replicas in a cluster (the leader and two followers).
pub(crate) const REPLICAS: u64 = 3;
/// The shortest and longest time without a leader after a kill.
const ELECTION_MS: (u64, u64) = (150, 700);
/// The shortest and longest lag of the engine records behind the leader.
const LAG_MS: (u64, u64) = (1, 120);
/// How long an armed kill waits for its kind of step before another kind is
/// picked.
const ARMED_FOR_MS: u64 = 1_500;
/// Every kind of statement a kill can aim at, with how often (relative)
/// each is picked: pre-prepares most
/// (a primary that re-proposes is the classic double-signer), view-changes
/// and new-views more than their share (they come only with trouble, and a
/// new-view only from the view's primary).
pub(crate) const AIM: [(Kind, u64); 6] = [
    (Kind::PrePrepare, 3),
    (Kind::Prepare, 1),
    (Kind::Commit, 1),
    (Kind::Checkpoint, 1),
    (Kind::ViewChange, 2),
    (Kind::NewView, 3),
];

/// Where in a step the leader dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Point {
    /// Before the intent commits: the intent and the step's records are
    /// lost, nothing of the step is sent.
    BeforeIntent,
    /// After the intent commits, before the message is sent.
    BeforeSend,
    /// Right after the message is sent; the rest of the step is lost.
    AfterSend,
}

impl Point {
    pub(crate) const ALL: [Point; 3] = [Point::BeforeIntent, Point::BeforeSend, Point::AfterSend];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Point::BeforeIntent => "before the intent commits",
            Point::BeforeSend => "after the intent commits, before sending",
            Point::AfterSend => "after sending",
        }
    }
}

/// The next kill: the first step from `from` on that signs a statement of
/// `kind`, at `point`; if none comes by `until`, another is armed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kill {
    pub(crate) from: u64,
    pub(crate) until: u64,
    pub(crate) kind: Kind,
    pub(crate) point: Point,
}

impl Kill {
    /// Whether the kill is due now at `point` of a step that signs `kind`.
    pub(crate) fn due(&self, now: u64, kind: Kind, point: Point) -> bool {
        now >= self.from && now <= self.until && kind == self.kind && point == self.point
    }
}

/// One validator's cluster, beside the node that stands for its leader.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The replica leading now (for the trace; any replica recovers alike).
    pub(crate) leader: u64,
    /// Leaderships so far: a takeover scheduled for an older term is stale.
    pub(crate) term: u64,
    /// The committed intents.
    pub(crate) history: SigningHistory,
    /// Records the leader persisted that are not committed yet, with the
    /// time they commit (non-decreasing: the committed ones are a prefix).
    pub(crate) uncommitted: VecDeque<(u64, Record)>,
    /// How far the engine records trail the leader.
    pub(crate) lag_ms: u64,
    /// The next kill, while the faults last.
    pub(crate) kill: Option<Kill>,
    /// Transactions the cluster accepted that no committed block holds yet.
    pub(crate) pending: BTreeMap<Hash, VerifiedTx>,
}

impl Cluster {
    pub(crate) fn new(rng: &mut Rng) -> Cluster {
        Cluster {
            leader: 0,
            term: 0,
            history: SigningHistory::new(),
            uncommitted: VecDeque::new(),
            lag_ms: LAG_MS.0 + rng.below(LAG_MS.1 - LAG_MS.0 + 1),
            kill: None,
            pending: BTreeMap::new(),
        }
    }

    /// Arms the next kill at a kind and point the seed picks, from `from` on.
    pub(crate) fn arm(&mut self, rng: &mut Rng, from: u64) {
        let mut draw = rng.below(AIM.iter().map(|(_, w)| w).sum());
        let mut kind = Kind::PrePrepare;
        for (k, weight) in AIM {
            if draw < weight {
                kind = k;
                break;
            }
            draw -= weight;
        }
        self.kill = Some(Kill {
            from,
            until: from + ARMED_FOR_MS,
            kind,
            point: Point::ALL[rng.below(Point::ALL.len() as u64) as usize],
        });
    }

    /// Persists a record through the log: it commits `lag_ms` from `now`.
    pub(crate) fn persist(&mut self, now: u64, record: Record) {
        let at = self
            .uncommitted
            .back()
            .map_or(0, |(t, _)| *t)
            .max(now + self.lag_ms);
        self.uncommitted.push_back((at, record));
    }

    /// The records committed by `now`, in order, taken off the queue.
    pub(crate) fn committed(&mut self, now: u64) -> Vec<Record> {
        let mut out = Vec::new();
        while self.uncommitted.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, r)) = self.uncommitted.pop_front() {
                out.push(r);
            }
        }
        out
    }

    /// The leader died: what was not committed is gone.
    pub(crate) fn kill(&mut self) {
        self.uncommitted.clear();
        self.kill = None;
        self.term += 1;
    }

    /// A new leader takes over; returns the term it leads.
    pub(crate) fn take_over(&mut self) -> u64 {
        self.leader = (self.leader + 1) % REPLICAS;
        self.term
    }

    /// An election delay.
    pub(crate) fn election_ms(rng: &mut Rng) -> u64 {
        ELECTION_MS.0 + rng.below(ELECTION_MS.1 - ELECTION_MS.0 + 1)
    }
}

/// Every statement signed by `m.signer` that `m` puts on the network fresh:
/// its own, and for a new-view the pre-prepares of its re-proposals. (The
/// certificates messages embed carry signatures that were sent before.)
pub(crate) fn signed_statements(m: &Signed) -> Vec<Statement> {
    let mut out = vec![m.message.statement()];
    if let Message::NewView(nv) = &m.message {
        out.extend(nv.reproposals.iter().map(|r| Statement {
            kind: Kind::PrePrepare,
            round: nv.view,
            height: r.seq,
            digest: r.digest,
        }));
    }
    out
}
