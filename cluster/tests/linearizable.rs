//! Linearizability of a cluster under failures (issue 5), in one process:
//! clients read, write and compare-and-set a few keys while leaders are
//! stopped and restarted and members are cut off and healed; the recorded
//! history must pass the checker
//! ([`pyralog_cluster::linearizability`]). A test-only switch that serves
//! "linearizable" reads without the read index must make it fail.
//!
//! # How the operations map onto the cluster
//!
//! The chain runs an ordering engine (PBFT's genesis), because only ordering
//! engines execute compare-and-set (a `Put` with `if_version`). Every write
//! and compare-and-set is one `Command::Ordered` slot holding one `Put` by
//! the key's owner, as the PBFT host will propose them:
//!
//! - The client reads the tip, the owner's nonce and the key's version from
//!   one member's state in one look (`Consistency::None`: it is only a
//!   guess), and proposes the slot at `tip + 1` with that nonce. A slot
//!   applies only at its own height, so a slot (and every retry of it by
//!   `Member::write`) takes effect at most once, and only at that height.
//! - The answer says what happened: `Response::Block` at that height means
//!   this slot's block was applied (a slot at a height that holds another
//!   block is refused); a refusal means it never took effect (the client
//!   then tries a new slot). A compare-and-set whose version no longer
//!   matches is kept in its block without effect and listed in `failed`.
//! - Compare-and-set compares versions, and the model compares values; they
//!   agree because every value written is unique, so each version of a key
//!   has exactly one value. The client sends the version of the value it
//!   last saw (which may be stale, so some swaps fail).
//! - A request without an answer (timed out, or the member stopped) leaves
//!   the operation open, answered at infinity. After the run, the block at
//!   its height tells whether it ever took effect: if another block holds
//!   that height, the operation never happened and leaves the history.
//! - Reads are `Member::read(Consistency::Linearizable, ..)` on any member,
//!   followers included.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::{Harness, ordered_put, pbft_genesis};
use pyralog_cluster::linearizability::{self, Op, Operation, Recorder, Verdict};
use pyralog_cluster::{Consistency, Member, NodeId, Response};
use pyralog_ledger::{Address, Hash, devkit};

type Key = &'static str;
type Rec = Recorder<Key, u64>;

/// The registers.
const KEYS: [Key; 3] = ["x", "y", "z"];
/// Concurrent clients.
const CLIENTS: u64 = 4;
/// How long the clients and the faults run.
const RUN: Duration = Duration::from_secs(8);
/// One request's time limit.
const ATTEMPT: Duration = Duration::from_secs(2);
/// A write's time limit over all its attempts.
const OP_DEADLINE: Duration = Duration::from_secs(4);
/// Elections, restarts, catching up.
const WAIT: Duration = Duration::from_secs(20);

/// SplitMix64: a seeded generator, so a run's choices repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The owner of every key (user 1).
fn owner() -> Address {
    devkit::key(1).address()
}

fn decode(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("every value written is 8 bytes"))
}

/// The running members, shared by the clients and the fault schedule.
#[derive(Clone, Default)]
struct Members(Arc<RwLock<BTreeMap<NodeId, Arc<Member>>>>);

impl Members {
    fn of(h: &Harness) -> Members {
        let m = Members::default();
        for member in h.members.values() {
            m.set(member);
        }
        m
    }

    fn set(&self, m: &Arc<Member>) {
        self.0
            .write()
            .expect("members")
            .insert(m.id(), Arc::clone(m));
    }

    fn remove(&self, id: NodeId) {
        self.0.write().expect("members").remove(&id);
    }

    fn all(&self) -> Vec<Arc<Member>> {
        self.0.read().expect("members").values().cloned().collect()
    }

    /// Any running member.
    fn any(&self, rng: &mut Rng) -> Option<Arc<Member>> {
        let all = self.all();
        all.get(rng.below(all.len() as u64) as usize).cloned()
    }

    /// A member that believes it leads, else any.
    fn leader_first(&self, rng: &mut Rng) -> Option<Arc<Member>> {
        let leaders: Vec<_> = self.all().into_iter().filter(|m| m.is_leader()).collect();
        match leaders.get(rng.below(leaders.len() as u64) as usize) {
            Some(l) => Some(Arc::clone(l)),
            None => self.any(rng),
        }
    }
}

/// A slot proposed without an answer: it may apply later, at `height` only.
struct Unresolved {
    call: u64,
    height: u64,
    tx: Hash,
}

/// A client of the key-value store on the cluster.
struct Client {
    id: u64,
    rec: Arc<Rec>,
    members: Members,
    rng: Rng,
    /// The value and version of each key this client last saw.
    known: BTreeMap<Key, (Option<u64>, u64)>,
    written: u64,
    unresolved: Arc<Mutex<Vec<Unresolved>>>,
}

impl Client {
    fn new(
        id: u64,
        rec: &Arc<Rec>,
        members: &Members,
        unresolved: &Arc<Mutex<Vec<Unresolved>>>,
    ) -> Client {
        Client {
            id,
            rec: Arc::clone(rec),
            members: members.clone(),
            rng: Rng(id),
            known: BTreeMap::new(),
            written: 0,
            unresolved: Arc::clone(unresolved),
        }
    }

    /// A linearizable read of `key` on `m`; what it saw, if it was answered.
    async fn read(&mut self, m: &Member, key: Key) -> Option<Option<u64>> {
        let call = self.rec.invoke();
        let read = m.read(Consistency::Linearizable, |s| {
            s.record(&owner(), key.as_bytes())
        });
        match tokio::time::timeout(ATTEMPT, read).await {
            Ok(Ok(Ok(entry))) => {
                let seen = entry.as_ref().and_then(|e| e.value.as_deref()).map(decode);
                let version = entry.map_or(0, |e| e.version);
                self.rec.answered(call, self.id, key, Op::Read { seen });
                self.known.insert(key, (seen, version));
                Some(seen)
            }
            Ok(Ok(Err(e))) => panic!("the ledger failed a read: {e}"),
            // Refused or timed out: the read observed nothing.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Writes a new unique value to `key`, or, with `cas`, swaps it for the
    /// value this client last saw. Proposes through `on`, or through a
    /// member that believes it leads. Returns the operation as recorded
    /// (`None`: it certainly had no effect and is not in the history).
    async fn put(&mut self, key: Key, cas: bool, on: Option<&Arc<Member>>) -> Option<Op<u64>> {
        self.written += 1;
        let value = self.id * 1_000_000 + self.written;
        let (expected, expected_version) = self.known.get(key).copied().unwrap_or((None, 0));
        let op = |swapped| {
            if cas {
                Op::Cas {
                    expected,
                    new: value,
                    swapped,
                }
            } else {
                Op::Write { value }
            }
        };
        let call = self.rec.invoke();
        let deadline = Instant::now() + OP_DEADLINE;
        while Instant::now() < deadline {
            let m = match on {
                Some(m) => Some(Arc::clone(m)),
                None => self.members.leader_first(&mut self.rng),
            };
            let Some(m) = m else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // One look at this member's state: the tip the slot must follow,
            // the owner's nonce there, the key's version there.
            let look = m
                .read(Consistency::None, |s| -> Result<_, pyralog_ledger::Error> {
                    let version = s.record(&owner(), key.as_bytes())?.map_or(0, |e| e.version);
                    Ok((s.tip().height, s.account(&owner())?.nonce, version))
                })
                .await;
            let Ok(Ok((tip, nonce, version))) = look else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let height = tip + 1;
            let if_version = cas.then_some(expected_version);
            let (cmd, tx) = ordered_put(height, nonce, key, &value.to_be_bytes(), if_version);
            match tokio::time::timeout(ATTEMPT, m.write(cmd)).await {
                Ok(Ok(Response::Block {
                    height: applied,
                    failed,
                    ..
                })) if applied == height => {
                    if let Some(f) = failed.iter().find(|f| f.id == tx) {
                        if cas && f.reason.contains("compare-and-set") {
                            let op = op(false);
                            self.rec.answered(call, self.id, key, op.clone());
                            return Some(op);
                        }
                        // Any other failure left no effect either: retry.
                        continue;
                    }
                    // Applied at `height`, on the state this member showed at
                    // `tip` (the chain has one state there). A replayed slot
                    // is answered without its failures, so a CAS whose
                    // version did not match there stays open rather than
                    // being taken for a swap.
                    if !cas || expected_version == version {
                        let op = op(true);
                        self.rec.answered(call, self.id, key, op.clone());
                        self.known.insert(key, (Some(value), version + 1));
                        return Some(op);
                    }
                    self.rec.unanswered(call, self.id, key, op(false));
                    return Some(op(false));
                }
                // Never applied (another block holds the height, or the
                // member was behind): nothing happened; try a new slot.
                Ok(Ok(Response::Refused { .. })) => continue,
                Ok(Ok(other)) => panic!("unexpected answer to slot {height}: {other:?}"),
                Ok(Err(_)) | Err(_) => {
                    let time = call.time();
                    self.rec.unanswered(call, self.id, key, op(false));
                    self.unresolved
                        .lock()
                        .expect("unresolved")
                        .push(Unresolved {
                            call: time,
                            height,
                            tx,
                        });
                    return Some(op(false));
                }
            }
        }
        // Every attempt was refused: the operation had no effect.
        drop(call);
        None
    }

    /// Random operations on random keys and members until `until`.
    async fn run(mut self, until: Instant) {
        while Instant::now() < until {
            let key = KEYS[self.rng.below(KEYS.len() as u64) as usize];
            match self.rng.below(4) {
                0 | 1 => {
                    if let Some(m) = self.members.any(&mut self.rng) {
                        self.read(&m, key).await;
                    }
                }
                2 => {
                    self.put(key, false, None).await;
                }
                _ => {
                    self.put(key, true, None).await;
                }
            }
        }
    }
}

/// The member that believes it leads, if exactly one does.
fn leader_of(h: &Harness) -> Option<NodeId> {
    let leaders: Vec<NodeId> = h
        .members
        .values()
        .filter(|m| m.is_leader())
        .map(|m| m.id())
        .collect();
    match leaders.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Stops member `id`, waits until nothing holds it (its files are then
/// closed), and starts it again from its files. It stays cut off while down
/// so no call reaches the stopped instance.
async fn kill_and_restart(h: &mut Harness, members: &Members, id: NodeId, down: Duration) {
    members.remove(id);
    h.net.isolate(id, true);
    let old = Arc::downgrade(&h.members[&id]);
    h.stop(id).await;
    tokio::time::sleep(down).await;
    let deadline = Instant::now() + WAIT;
    while old.strong_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "member {id} is still held after it stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = h.start(id).await;
    h.net.isolate(id, false);
    members.set(&m);
}

/// The fault schedule: in turn, stop and restart the leader, cut the leader
/// off, cut a follower off; a calm moment between faults.
async fn faults(h: &mut Harness, members: &Members, until: Instant) -> (u32, u32) {
    let (mut kills, mut cuts) = (0, 0);
    let mut round = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(leader) = leader_of(h) else {
            continue;
        };
        match round % 3 {
            0 => {
                kill_and_restart(h, members, leader, Duration::from_millis(800)).await;
                kills += 1;
            }
            1 => {
                h.net.isolate(leader, true);
                tokio::time::sleep(Duration::from_millis(1000)).await;
                h.net.isolate(leader, false);
                cuts += 1;
            }
            _ => {
                let follower = h.other(leader).id();
                h.net.isolate(follower, true);
                tokio::time::sleep(Duration::from_millis(1000)).await;
                h.net.isolate(follower, false);
                cuts += 1;
            }
        }
        round += 1;
    }
    (kills, cuts)
}

/// Drops the open operations whose slot's height holds another block: they
/// never took effect and never will.
async fn resolve(
    h: &Harness,
    history: &mut Vec<Operation<Key, u64>>,
    open: Vec<Unresolved>,
) -> usize {
    let leader = h.leader(WAIT).await;
    let mut dropped = Vec::new();
    for u in open {
        let block = leader
            .read(Consistency::Linearizable, |s| s.block(u.height))
            .await
            .expect("a read after the faults")
            .expect("the ledger");
        if let Some(b) = block
            && !b.txs.iter().any(|t| t.id() == u.tx)
        {
            dropped.push(u.call);
        }
    }
    history.retain(|o| o.ret.is_some() || !dropped.contains(&o.call));
    dropped.len()
}

#[derive(Debug, Default)]
struct Counts {
    reads: usize,
    writes: usize,
    swaps: usize,
    refusals: usize,
    open: usize,
}

fn count(history: &[Operation<Key, u64>]) -> Counts {
    let mut c = Counts::default();
    for o in history {
        match (&o.op, o.ret.is_some()) {
            (_, false) => c.open += 1,
            (Op::Read { .. }, true) => c.reads += 1,
            (Op::Write { .. }, true) => c.writes += 1,
            (Op::Cas { swapped: true, .. }, true) => c.swaps += 1,
            (Op::Cas { swapped: false, .. }, true) => c.refusals += 1,
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stay_linearizable_while_leaders_die_and_partitions_come_and_go() {
    let started = Instant::now();
    let mut h = Harness::cluster_on(3, pbft_genesis()).await;
    let members = Members::of(&h);
    let rec = Arc::new(Rec::default());
    let unresolved = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + RUN;
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|id| tokio::spawn(Client::new(id, &rec, &members, &unresolved).run(until)))
        .collect();
    let (kills, cuts) = faults(&mut h, &members, until).await;
    for c in clients {
        c.await.expect("a client panicked");
    }
    for id in h.members.keys().copied().collect::<Vec<_>>() {
        h.net.isolate(id, false);
    }
    let mut history = rec.history().expect("the history fits");
    let open = std::mem::take(&mut *unresolved.lock().expect("unresolved"));
    let never = resolve(&h, &mut history, open).await;
    let counts = count(&history);
    let checking = Instant::now();
    let verdict = linearizability::check(&history, linearizability::DEFAULT_BUDGET);
    eprintln!(
        "{counts:?}, {never} open slots never applied, {kills} leaders stopped, {cuts} cuts; \
         checked in {:?}, {:?} in all",
        checking.elapsed(),
        started.elapsed()
    );
    assert!(verdict.is_linearizable(), "{verdict:?}");
    // The history must have exercised something.
    assert!(kills >= 1 && cuts >= 2, "{kills} kills, {cuts} cuts");
    // A quiet run here gives a few hundred reads and over a hundred writes;
    // the floors leave room for a loaded machine.
    assert!(counts.reads >= 60, "{counts:?}");
    assert!(counts.writes >= 20, "{counts:?}");
    assert!(counts.swaps >= 8, "{counts:?}");
    assert!(counts.refusals >= 5, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_skip_the_read_index_are_caught_by_the_checker() {
    let h = Harness::cluster_on(3, pbft_genesis()).await;
    let members = Members::of(&h);
    let rec = Arc::new(Rec::default());
    let unresolved = Arc::new(Mutex::new(Vec::new()));
    let mut client = Client::new(1, &rec, &members, &unresolved);
    let leader = h.leader(WAIT).await;
    let follower = h.other(leader.id());
    // A first value that every member has.
    let first = client.put("x", false, Some(&leader)).await;
    assert!(matches!(first, Some(Op::Write { .. })), "{first:?}");
    h.applied(&follower, leader.status().applied.expect("applied"), WAIT)
        .await;
    let Some(Op::Write { value: first }) = first else {
        unreachable!()
    };
    assert_eq!(client.read(&follower, "x").await, Some(Some(first)));
    // Cut the follower off; the majority moves on.
    h.net.isolate(follower.id(), true);
    let second = client.put("x", false, Some(&leader)).await;
    assert!(matches!(second, Some(Op::Write { .. })), "{second:?}");
    // With the read index, the cut-off follower cannot answer at all, and
    // the history stays linearizable.
    assert_eq!(client.read(&follower, "x").await, None);
    let before = rec.history().expect("history");
    assert!(
        linearizability::check(&before, linearizability::DEFAULT_BUDGET).is_linearizable(),
        "{before:?}"
    );
    // Without it, the follower answers from its stale state...
    follower.faults().serve_stale_reads(true);
    let stale = client.read(&follower, "x").await;
    assert_eq!(stale, Some(Some(first)), "the switch must serve the read");
    // ...and the checker rejects the history, on that read.
    let history = rec.history().expect("history");
    match linearizability::check(&history, linearizability::DEFAULT_BUDGET) {
        Verdict::NotLinearizable { key, blocked, .. } => {
            assert_eq!(key, "x");
            assert_eq!(blocked.op, Op::Read { seen: Some(first) });
        }
        other => panic!("the stale read went unnoticed: {other:?} for {history:?}"),
    }
}
