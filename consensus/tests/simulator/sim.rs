//! The simulator's machinery, shared by the PBFT and pos runs: virtual time,
//! the seeded faulty network, the validators (honest and Byzantine, single
//! nodes or clusters) and, for pos, each validator's ledger state, executed
//! with the real rules.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};

use pyralog_consensus::Engine;
use pyralog_consensus::bft::{Evidence, Kind, Member, Statement, ValidatorSet};
use pyralog_consensus::intent::Slot;
use pyralog_consensus::pbft::{
    CommittedBlock, Config, Effect, Input, Message, Pbft, Proposal, Record, Signed,
};
use pyralog_consensus::pos::{self, Pos};
use pyralog_ledger::block::{VerifiedTx, verify_tx};
use pyralog_ledger::codec::Encode;
use pyralog_ledger::machine::{BlockContext, Overlay, StateView};
use pyralog_ledger::staking::{self, BlockVotes, ValidatorSummary};
use pyralog_ledger::{
    Address, ChainId, Domain, Engine as EngineKind, Error, Genesis, Hash, Keypair, Payload, Rules,
    StateKey, devkit,
};

use super::cluster::{Cluster, Point, signed_statements};

/// A small deterministic generator (splitmix64); the simulator's only source
/// of chance.
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Honest,
    /// Runs the real engine but sends nothing.
    Silent,
    /// Runs the real engine; replaces much of what it sends with garbage and
    /// tampers with the blocks it serves.
    Garbage,
    /// Runs the real engine; as primary, sends half the replicas another
    /// proposal, and votes for another digest towards half.
    Equivocator,
    /// A second instance with the key of another validator.
    Twin,
}

/// The fault mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mix {
    /// Delays, reordering, duplicates and drops.
    Network,
    /// The network faults and partitions that come and go.
    Partition,
    /// The network faults and an honest validator that crashes and restarts.
    Crash,
    /// Twins: two instances with one key.
    Twins,
    /// An equivocating primary.
    Equivocator,
    /// A silent validator.
    Silent,
    /// A validator that sends garbage.
    Garbage,
    /// Seven validators, two Byzantine of random kinds, with partitions.
    Mixed,
    /// The network faults, every validator a cluster whose leader is killed
    /// mid-step again and again (see `cluster.rs`).
    ClusterFailover,
    /// For the broken-quorum check: the network split in two halves.
    SplitBrain,
}

impl Mix {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mix::Network => "network",
            Mix::Partition => "partition",
            Mix::Crash => "crash",
            Mix::Twins => "twins",
            Mix::Equivocator => "equivocator",
            Mix::Silent => "silent",
            Mix::Garbage => "garbage",
            Mix::Mixed => "mixed",
            Mix::ClusterFailover => "cluster-failover",
            Mix::SplitBrain => "split-brain",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Mix> {
        [
            Mix::Network,
            Mix::Partition,
            Mix::Crash,
            Mix::Twins,
            Mix::Equivocator,
            Mix::Silent,
            Mix::Garbage,
            Mix::Mixed,
            Mix::ClusterFailover,
            Mix::SplitBrain,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

const FAULTS_END_MS: u64 = 8_000;
const RUN_END_MS: u64 = 22_000;
const TICK_MS: u64 = 20;
/// How late a tick brought forward to a proposal's due time may fire.
const DUE_LATE_MS: u64 = 5;
const SUBMIT_EVERY_MS: u64 = 400;
/// Transactions a client submits at a time.
const SUBMIT_BURST: u64 = 3;
/// Blocks every honest validator must commit after the faults heal.
const BLOCKS_AFTER_HEAL: u64 = 3;
/// Pos: blocks per epoch.
pub(crate) const EPOCH_LENGTH: u64 = 8;
/// Pos: evidence found this long before the end must have been executed.
const EVIDENCE_MARGIN_MS: u64 = 6_000;
/// Pos: when the newcomer registers and stakes, and when validator 0 unstakes
/// everything (so the set grows, then shrinks, at epoch boundaries).
const NEWCOMER_AT_MS: u64 = 1_500;
const LEAVER_AT_MS: u64 = 5_000;
/// Pos: when forged evidence against validator 1 is submitted (a tampered
/// signature, and two votes for different heights); it must slash nothing.
const FORGED_AT_MS: u64 = 3_000;
/// Pos: the slash for equivocation, in parts per million.
pub(crate) const SLASH_PPM: u64 = 100_000;
/// Pos: the slash for downtime, in parts per million.
pub(crate) const DOWNTIME_PPM: u64 = 10_000;
/// Pos: the downtime window, in counted blocks.
pub(crate) const DOWNTIME_WINDOW: u64 = 16;

/// Which engine a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// PBFT: equal power, round-robin primaries.
    Pbft,
    /// Proof of stake: power by stake, proposers drawn per height, epochs.
    Pos,
}

/// The engine a node runs.
#[derive(Debug)]
enum Replica {
    Pbft(Box<Pbft>),
    Pos(Box<Pos>),
}

impl Replica {
    fn handle(&mut self, now: u64, input: Input) -> Vec<Effect> {
        match self {
            Replica::Pbft(p) => p.handle(now, input),
            Replica::Pos(p) => p.handle(now, pos::Input::Bft(input)),
        }
    }

    fn view(&self) -> u64 {
        match self {
            Replica::Pbft(p) => p.view(),
            Replica::Pos(p) => p.bft().view(),
        }
    }

    fn is_changing_view(&self) -> bool {
        match self {
            Replica::Pbft(p) => p.is_changing_view(),
            Replica::Pos(p) => p.bft().is_changing_view(),
        }
    }

    fn proposal_due(&self) -> Option<u64> {
        match self {
            Replica::Pbft(p) => p.proposal_due(),
            Replica::Pos(p) => p.bft().proposal_due(),
        }
    }
}

/// The state a pos node's store would hold, in memory, executed with the
/// real ledger rules.
#[derive(Clone, Debug, Default)]
struct MemState(BTreeMap<StateKey, Vec<u8>>);

impl StateView for MemState {
    fn read(&self, key: &StateKey) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.get(key).cloned())
    }
}

/// The chain a pos run starts from.
struct PosWorld {
    rules: Rules,
    genesis_state: MemState,
}

/// The newcomer's key, the account that funds it, and the reporters'.
fn newcomer() -> Keypair {
    devkit::key(700)
}

fn whale() -> Keypair {
    devkit::key(701)
}

fn pos_genesis(keys: &[Keypair], stakes: &[u64]) -> Genesis {
    let mut p = devkit::devnet_params(0);
    p.epoch_length = EPOCH_LENGTH;
    p.unbonding_epochs = 1;
    p.tx_validity_epochs = 16;
    p.slash_double_sign = SLASH_PPM as f64 / 1e6;
    p.staking.min_validator_stake = 100;
    // Downtime: missing more than 90% of 16 counted blocks. A silent
    // validator misses them all; an honest one that crashed or sat in a
    // partition for a few seconds misses far fewer.
    p.downtime_window = DOWNTIME_WINDOW;
    p.staking.downtime_max_missed = 0.9;
    p.slash_downtime = DOWNTIME_PPM as f64 / 1e6;
    p.staking.evidence_max_age_epochs = 1;
    let vals: Vec<(&Keypair, String)> = keys
        .iter()
        .map(|k| (k, "/ip4/127.0.0.1/tcp/1".to_owned()))
        .collect();
    let mut file = devkit::genesis_file(
        "sim",
        EngineKind::Pos,
        p,
        &[(&whale(), 1_000_000_000)],
        &vals,
    );
    for (v, s) in file.validators.iter_mut().zip(stakes) {
        v.stake = *s;
    }
    file.validate().expect("a valid pos genesis")
}

/// The validator set a pos state holds for its current epoch.
fn set_of(state: &MemState) -> ValidatorSet {
    let active = staking::active_set(&Overlay::new(state)).expect("staking state");
    ValidatorSet::new(
        active
            .into_iter()
            .map(|p| Member {
                address: p.validator,
                power: p.power,
            })
            .collect(),
    )
    .expect("a set")
}

fn epoch_of(state: &MemState) -> u64 {
    staking::staking_state(&Overlay::new(state))
        .expect("staking state")
        .epoch
}

/// A signed, stamped transaction of `key` with `nonce` at `epoch`.
fn signed_tx(key: &Keypair, nonce: u64, epoch: u64, payload: Payload) -> VerifiedTx {
    verify_tx(devkit::tx(&chain(), key, nonce, epoch, payload, 0)).expect("valid")
}

fn chain() -> ChainId {
    "sim".parse().expect("chain id")
}

/// Signed transactions shared by every run (signing is the slow part).
fn txs() -> &'static [VerifiedTx] {
    static TXS: OnceLock<Vec<VerifiedTx>> = OnceLock::new();
    TXS.get_or_init(|| {
        let k = devkit::key(1000);
        (0..(RUN_END_MS / SUBMIT_EVERY_MS + 1) * SUBMIT_BURST)
            .map(|n| {
                let t = devkit::tx(
                    &chain(),
                    &k,
                    n,
                    0,
                    devkit::put(&k, b"k", &n.to_le_bytes()),
                    0,
                );
                verify_tx(t).expect("valid")
            })
            .collect()
    })
}

/// The engines' settings; `max_in_flight` varies with the seed (1 to 3), so
/// runs cover the node's one block in flight as well as several.
fn sim_config(max_in_flight: u64) -> Config {
    Config {
        checkpoint_interval: 4,
        window: 16,
        max_in_flight,
        max_block_txs: 8,
        batch_delay_ms: 40,
        view_timeout_ms: 400,
        max_view_timeout_ms: 3_200,
        retransmit_ms: 300,
        sync_ms: 300,
        ..Config::default()
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        bytes: Arc<Vec<u8>>,
    },
    Tick {
        node: usize,
    },
    /// A tick the host brings forward to when the engine's next proposal is
    /// due (as the node's driver does), between the regular ones.
    Due {
        node: usize,
        /// The engine's due time it was planned for.
        due: u64,
    },
    Submit {
        n: usize,
    },
    Crash {
        node: usize,
    },
    /// A pipelined host's oldest held steps are durable: carried out now.
    Written {
        node: usize,
    },
    Restart {
        node: usize,
    },
    /// A cluster's next leader takes over, unless the term moved on.
    Failover {
        node: usize,
        term: u64,
    },
    Partition {
        groups: Vec<u8>,
    },
    Heal,
    /// Pos: the newcomer registers and stakes, or validator 0 unstakes all.
    Staking {
        leave: bool,
    },
    /// Pos: forged evidence is submitted.
    Forged,
    FetchRequest {
        to: usize,
        from: usize,
        after: u64,
    },
    FetchResponse {
        to: usize,
        from: Address,
        blocks: Vec<CommittedBlock>,
    },
}

struct Node {
    key: Keypair,
    behaviour: Behaviour,
    engine: Replica,
    /// Pos: the state after the last executed block.
    state: Option<MemState>,
    up: bool,
    /// What the engine persisted (for a cluster: the committed records).
    disk: Vec<Record>,
    /// The cluster this node leads, if the validator is one.
    cluster: Option<Cluster>,
    /// The committed blocks, in order (the node's store).
    blocks: Vec<CommittedBlock>,
    /// The state root after the last block (a hash chain in the simulator).
    root: Hash,
    committed_at_heal: u64,
    /// When a [`Event::Due`] tick is planned for this node, if one is.
    due: Option<u64>,
    /// A pipelined host's steps on their way to its log, oldest first, each
    /// with when it is durable: the engine goes on taking inputs meanwhile,
    /// and nothing a step asked for is carried out before then.
    held: VecDeque<(u64, Vec<Effect>)>,
}

/// What a run found.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) digest: Hash,
    pub(crate) safety: Vec<String>,
    pub(crate) liveness: Vec<String>,
    pub(crate) commits: u64,
    pub(crate) view_changes: u64,
    pub(crate) rejections: u64,
    /// Pos: the validators honest nodes found equivocating (evidence emitted
    /// before the end's margin), by key.
    pub(crate) accused: BTreeSet<Address>,
    /// Pos: every validator's standing on each honest node at the end.
    pub(crate) standings: Vec<(usize, Vec<ValidatorSummary>)>,
    /// Pos: the keys of validators run honestly.
    pub(crate) honest_keys: BTreeSet<Address>,
    /// Pos: the keys of Byzantine validators (twins, equivocators, ...).
    pub(crate) byzantine_keys: BTreeSet<Address>,
    /// Pos: the highest epoch an honest node reached, and the sets it saw.
    pub(crate) epochs: u64,
    /// Pos: the distinct validator sets the honest nodes voted with.
    pub(crate) sets: BTreeSet<Vec<Address>>,
    /// Pos: evidence transactions honest nodes executed and refused, by the
    /// reason's root cause (forged: `bad signature`, `invalid proof`;
    /// duplicates: `duplicate evidence`).
    pub(crate) refused_evidence: BTreeMap<String, u64>,
    /// Honest validator keys that put two statements with one slot and
    /// different digests on the network (each a description).
    pub(crate) double_signs: Vec<String>,
    /// How many such pairs Byzantine keys put on the network.
    pub(crate) byzantine_double_signs: u64,
    /// Cluster leaders killed, by the kind of step and the point in it.
    pub(crate) kills: BTreeMap<(Kind, Point), u64>,
    /// Cluster leaders that took over.
    pub(crate) failovers: u64,
    /// Statements a cluster refused to sign (conflicting with an intent).
    pub(crate) refused_intents: u64,
    /// Steps a pipelined host held until they were durable (none unless the
    /// run's hosts pipeline).
    pub(crate) held_steps: u64,
}

pub(crate) struct Sim {
    rng: Rng,
    /// Proposals a primary keeps outstanding, for every engine of the run.
    in_flight: u64,
    /// The longest a pipelined host's step takes to be durable; zero when
    /// the run's hosts carry out each step before the next input (half the
    /// seeds each way, independently of `in_flight`).
    write_ms: u64,
    now: u64,
    queue: BTreeMap<(u64, u64), Event>,
    counter: u64,
    nodes: Vec<Node>,
    validators: ValidatorSet,
    groups: Option<Vec<u8>>,
    healed: bool,
    drop_per_mille: u64,
    dup_per_mille: u64,
    max_delay_ms: u64,
    /// The first block an honest node committed at each height.
    decided: BTreeMap<u64, (usize, Hash)>,
    trace: blake3::Hasher,
    outcome: Outcome,
    protocol: Protocol,
    world: Option<Arc<PosWorld>>,
    /// Pos: reporters used so far (each evidence transaction has its own).
    reporters: u64,
    /// Whether cluster hosts check signing intents (off only to show that
    /// the double-signing check would fail without them).
    intent_guard: bool,
    /// Every statement the network carried, by signer and slot: the first
    /// digest seen.
    carried: BTreeMap<(Address, Slot), Hash>,
    /// Second digests for a slot: (signer, statement, first digest).
    conflicts: Vec<(Address, Statement, Hash)>,
}

impl Sim {
    pub(crate) fn new(seed: u64, mix: Mix, protocol: Protocol, broken_quorum: bool) -> Sim {
        let mut rng = Rng(seed ^ 0x005E_ED0F_5EED);
        let in_flight = 1 + seed % 3;
        // As the node's driver does: a step's effects wait for its log write
        // while the engine takes the next inputs.
        let write_ms = if (seed / 3) % 2 == 1 { 4 } else { 0 };
        let n = if mix == Mix::Mixed { 7 } else { 4 };
        let keys: Vec<Keypair> = (0..n).map(|i| devkit::key(500 + i)).collect();
        let world = (protocol == Protocol::Pos).then(|| {
            // Stakes such that no Byzantine validator holds a third of the
            // power, before or after the set changes.
            let stakes: Vec<u64> = if mix == Mix::Mixed {
                vec![1000; n as usize]
            } else {
                vec![1000, 1100, 1200, 1300]
            };
            let genesis = pos_genesis(&keys, &stakes);
            let genesis_state = MemState(
                pyralog_ledger::store::genesis_state(&genesis)
                    .expect("genesis state")
                    .into_iter()
                    .collect(),
            );
            Arc::new(PosWorld {
                rules: Rules::new(genesis),
                genesis_state,
            })
        });
        let mut validators = match &world {
            Some(w) => set_of(&w.genesis_state),
            None => ValidatorSet::equal(keys.iter().map(Keypair::address)).expect("set"),
        };
        if broken_quorum {
            validators.break_quorum_rule();
        }
        let mut behaviours = vec![Behaviour::Honest; n as usize];
        // Under pos, validator 0 leaves the set mid-run: faults go elsewhere.
        let first = u64::from(protocol == Protocol::Pos);
        let pick = |rng: &mut Rng| (first + rng.below(n - first)) as usize;
        match mix {
            Mix::Twins | Mix::Equivocator | Mix::Silent | Mix::Garbage => {
                let b = match mix {
                    Mix::Twins => Behaviour::Twin,
                    Mix::Equivocator => Behaviour::Equivocator,
                    Mix::Silent => Behaviour::Silent,
                    _ => Behaviour::Garbage,
                };
                // The equivocator and twins matter most as the first primary.
                let at = if rng.chance(500) {
                    first as usize
                } else {
                    pick(&mut rng)
                };
                behaviours[at] = b;
            }
            Mix::Mixed => {
                let kinds = [
                    Behaviour::Twin,
                    Behaviour::Equivocator,
                    Behaviour::Silent,
                    Behaviour::Garbage,
                ];
                let a = pick(&mut rng);
                let mut b = pick(&mut rng);
                while b == a {
                    b = pick(&mut rng);
                }
                behaviours[a] = kinds[rng.below(4) as usize];
                behaviours[b] = kinds[rng.below(4) as usize];
            }
            _ => {}
        }
        let w = world.as_deref();
        let mut nodes: Vec<Node> = keys
            .iter()
            .zip(&behaviours)
            .map(|(k, b)| Node::new(k.clone(), *b, &validators, w, in_flight))
            .collect();
        // A twin is an extra node with the key of the validator marked Twin;
        // that validator itself runs honestly (the pair is the fault).
        if let Some(t) = behaviours.iter().position(|b| *b == Behaviour::Twin) {
            nodes.push(Node::new(
                keys[t].clone(),
                Behaviour::Twin,
                &validators,
                w,
                in_flight,
            ));
        }
        // Every validator a cluster; the newcomer stays a single node.
        if mix == Mix::ClusterFailover {
            for node in &mut nodes {
                node.cluster = Some(Cluster::new(&mut rng));
            }
        }
        // Pos: a node whose validator registers and stakes during the run.
        if world.is_some() {
            nodes.push(Node::new(
                newcomer(),
                Behaviour::Honest,
                &validators,
                w,
                in_flight,
            ));
        }
        let (drop, dup, delay) = match mix {
            Mix::SplitBrain => (0, 0, 20),
            _ => (rng.range(0, 150), rng.range(0, 80), rng.range(5, 120)),
        };
        let mut sim = Sim {
            rng,
            in_flight,
            write_ms,
            now: 0,
            queue: BTreeMap::new(),
            counter: 0,
            nodes,
            validators,
            groups: None,
            healed: false,
            drop_per_mille: drop,
            dup_per_mille: dup,
            max_delay_ms: delay,
            decided: BTreeMap::new(),
            trace: blake3::Hasher::new(),
            outcome: Outcome {
                digest: Hash::ZERO,
                safety: vec![],
                liveness: vec![],
                commits: 0,
                view_changes: 0,
                rejections: 0,
                accused: BTreeSet::new(),
                standings: Vec::new(),
                honest_keys: BTreeSet::new(),
                byzantine_keys: BTreeSet::new(),
                epochs: 0,
                sets: BTreeSet::new(),
                refused_evidence: BTreeMap::new(),
                double_signs: Vec::new(),
                byzantine_double_signs: 0,
                kills: BTreeMap::new(),
                failovers: 0,
                refused_intents: 0,
                held_steps: 0,
            },
            protocol,
            world,
            reporters: 0,
            intent_guard: true,
            carried: BTreeMap::new(),
            conflicts: Vec::new(),
        };
        sim.plan(mix);
        sim
    }

    /// Test only: cluster hosts sign without checking intents, as if the
    /// signing history did not exist.
    pub(crate) fn without_intent_guard(mut self) -> Sim {
        self.intent_guard = false;
        self
    }

    fn at(&mut self, t: u64, e: Event) {
        self.counter += 1;
        self.queue.insert((t, self.counter), e);
    }

    fn plan(&mut self, mix: Mix) {
        for node in 0..self.nodes.len() {
            let offset = self.rng.below(TICK_MS);
            self.at(offset, Event::Tick { node });
        }
        for n in 0..(RUN_END_MS / SUBMIT_EVERY_MS) as usize {
            self.at(n as u64 * SUBMIT_EVERY_MS + 1, Event::Submit { n });
        }
        let validators = self.validators.len();
        match mix {
            Mix::Partition | Mix::Mixed => {
                let mut t = self.rng.range(200, 2000);
                while t < FAULTS_END_MS {
                    let groups: Vec<u8> = (0..self.nodes.len())
                        .map(|_| self.rng.below(2) as u8)
                        .collect();
                    self.at(t, Event::Partition { groups });
                    let end = (t + self.rng.range(300, 3000)).min(FAULTS_END_MS);
                    self.at(end, Event::Heal);
                    t = end + self.rng.range(100, 2000);
                }
            }
            Mix::Crash => {
                let node = self.rng.below(validators as u64) as usize;
                let mut t = self.rng.range(100, 3000);
                while t < FAULTS_END_MS {
                    self.at(t, Event::Crash { node });
                    let back = (t + self.rng.range(100, 3000)).min(FAULTS_END_MS);
                    self.at(back, Event::Restart { node });
                    t = back + self.rng.range(200, 3000);
                }
            }
            Mix::ClusterFailover => {
                let Sim { rng, nodes, .. } = self;
                for c in nodes.iter_mut().filter_map(|n| n.cluster.as_mut()) {
                    let from = rng.range(100, 1500);
                    c.arm(rng, from);
                }
            }
            Mix::SplitBrain => {
                let groups = (0..self.nodes.len()).map(|i| (i >= 2) as u8).collect();
                self.at(0, Event::Partition { groups });
                self.at(FAULTS_END_MS, Event::Heal);
            }
            _ => {}
        }
        self.at(FAULTS_END_MS, Event::Heal);
        if self.protocol == Protocol::Pos {
            self.at(NEWCOMER_AT_MS, Event::Staking { leave: false });
            self.at(LEAVER_AT_MS, Event::Staking { leave: true });
            self.at(FORGED_AT_MS, Event::Forged);
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        match &self.groups {
            Some(g) => g[a] == g[b],
            None => true,
        }
    }

    /// Sends bytes from `from` to `to` through the network's faults.
    fn transmit(&mut self, from: usize, to: usize, bytes: Arc<Vec<u8>>) {
        if from == to || !self.connected(from, to) {
            return;
        }
        let faulty = !self.healed;
        if faulty && self.rng.chance(self.drop_per_mille) {
            return;
        }
        let copies = if faulty && self.rng.chance(self.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let max = if faulty { self.max_delay_ms } else { 10 };
            let t = self.now + self.rng.range(1, max);
            self.at(
                t,
                Event::Deliver {
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn nodes_of(&self, a: &Address) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].key.address() == *a)
            .collect()
    }

    pub(crate) fn run(mut self) -> Outcome {
        while let Some(((t, _), event)) = self.queue.pop_first() {
            if t > RUN_END_MS {
                break;
            }
            self.now = t;
            self.step(event);
        }
        self.check_liveness();
        for (i, n) in self.nodes.iter().enumerate() {
            match n.behaviour {
                Behaviour::Honest => {
                    self.outcome.honest_keys.insert(n.key.address());
                }
                _ => {
                    self.outcome.byzantine_keys.insert(n.key.address());
                }
            }
            if n.behaviour == Behaviour::Honest
                && let Some(state) = &n.state
            {
                let all = staking::summaries(&Overlay::new(state)).expect("summaries");
                self.outcome.standings.push((i, all));
            }
        }
        for (signer, st, first) in std::mem::take(&mut self.conflicts) {
            if self.outcome.byzantine_keys.contains(&signer) {
                self.outcome.byzantine_double_signs += 1;
            } else {
                self.outcome.double_signs.push(format!(
                    "{signer} signed {} at height {}, round {} for {first} and for {}",
                    st.kind.name(),
                    st.height,
                    st.round,
                    st.digest
                ));
            }
        }
        self.outcome.digest = Hash(*self.trace.finalize().as_bytes());
        self.outcome
    }

    fn log(&mut self, parts: &[&[u8]]) {
        self.trace.update(&self.now.to_le_bytes());
        for p in parts {
            self.trace.update(p);
        }
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Tick { node } => {
                self.at(self.now + TICK_MS, Event::Tick { node });
                if self.nodes[node].up {
                    self.input(node, Input::Tick);
                }
            }
            Event::Due { node, due } => {
                if self.nodes[node].due == Some(due) {
                    self.nodes[node].due = None;
                    if self.nodes[node].up {
                        self.input(node, Input::Tick);
                    }
                }
            }
            Event::Deliver { to, bytes } => {
                if !self.nodes[to].up {
                    return;
                }
                self.log(&[
                    b"deliver",
                    &(to as u64).to_le_bytes(),
                    &bytes[..bytes.len().min(64)],
                ]);
                match Signed::decode_wire(&bytes) {
                    Ok(m) => self.input(to, Input::Message(m)),
                    Err(_) => self.outcome.rejections += 1,
                }
            }
            Event::Submit { n } => {
                for i in 0..SUBMIT_BURST as usize {
                    let tx = txs()[n * SUBMIT_BURST as usize + i].clone();
                    self.submit_everywhere(tx);
                }
            }
            Event::Crash { node } => {
                self.log(&[b"crash", &(node as u64).to_le_bytes()]);
                self.nodes[node].up = false;
                // What was not durable yet is lost, and was never sent.
                self.nodes[node].held.clear();
            }
            Event::Written { node } => {
                while let Some((ready, _)) = self.nodes[node].held.front()
                    && *ready <= self.now
                {
                    let Some((_, effects)) = self.nodes[node].held.pop_front() else {
                        break;
                    };
                    if !self.nodes[node].up {
                        self.nodes[node].held.clear();
                        return;
                    }
                    self.outcome.held_steps += 1;
                    for next in self.carry_out(node, effects) {
                        self.input(node, next);
                    }
                }
            }
            Event::Restart { node } => {
                self.log(&[b"restart", &(node as u64).to_le_bytes()]);
                self.recover(node);
            }
            Event::Failover { node, term } => {
                let n = &mut self.nodes[node];
                let Some(c) = n.cluster.as_mut() else {
                    return;
                };
                if n.up || c.term != term {
                    return;
                }
                let leader = c.take_over();
                self.log(&[
                    b"failover",
                    &(node as u64).to_le_bytes(),
                    &term.to_le_bytes(),
                    &leader.to_le_bytes(),
                ]);
                self.outcome.failovers += 1;
                self.recover(node);
                if self.now < FAULTS_END_MS {
                    let from = self.now + self.rng.range(100, 2000);
                    let Sim { rng, nodes, .. } = self;
                    if let Some(c) = nodes[node].cluster.as_mut() {
                        c.arm(rng, from);
                    }
                }
            }
            Event::Partition { groups } => {
                self.log(&[b"partition", &groups]);
                self.groups = Some(groups);
            }
            Event::Heal => {
                self.groups = None;
                if self.now >= FAULTS_END_MS && !self.healed {
                    self.healed = true;
                    for node in 0..self.nodes.len() {
                        if !self.nodes[node].up {
                            self.step(Event::Restart { node });
                        }
                        self.nodes[node].committed_at_heal = self.nodes[node].blocks.len() as u64;
                    }
                }
            }
            Event::Forged => {
                self.log(&[b"forged"]);
                let key = self.nodes[1].key.clone();
                let st = |height: u64, tag: &[u8]| Statement {
                    kind: Kind::Prepare,
                    round: 0,
                    height,
                    digest: Hash::of(Domain::Consensus, tag),
                };
                let (a, b) = (st(2, b"a"), st(2, b"b"));
                let mut tampered = Evidence {
                    validator: key.address(),
                    first: a,
                    first_sig: a.sign(&chain(), &key),
                    second: b,
                    second_sig: b.sign(&chain(), &key),
                };
                tampered.second_sig.0[7] ^= 0x40;
                let c = st(3, b"b");
                let apart = Evidence {
                    second: c,
                    second_sig: c.sign(&chain(), &key),
                    ..tampered.clone()
                };
                let apart = Evidence {
                    first_sig: a.sign(&chain(), &key),
                    ..apart
                };
                for ev in [tampered, apart] {
                    self.reporters += 1;
                    let reporter = devkit::key(10_000 + self.reporters);
                    let tx = signed_tx(
                        &reporter,
                        0,
                        0,
                        Payload::Evidence {
                            data: ev.to_bytes(),
                        },
                    );
                    self.submit_everywhere(tx);
                }
            }
            Event::Staking { leave } => {
                self.log(&[b"staking", &[u8::from(leave)]]);
                let txs = if leave {
                    let v = self.nodes[0].key.clone();
                    let stake = if self.nodes[0].behaviour == Behaviour::Honest {
                        1000
                    } else {
                        return;
                    };
                    vec![signed_tx(
                        &v,
                        0,
                        0,
                        Payload::Unstake {
                            validator: v.address(),
                            amount: stake,
                        },
                    )]
                } else {
                    let key = newcomer().address();
                    vec![
                        signed_tx(
                            &whale(),
                            0,
                            0,
                            Payload::RegisterValidator {
                                validator_key: key,
                                p2p: "/ip4/127.0.0.1/tcp/2".into(),
                                moniker: "newcomer".into(),
                            },
                        ),
                        signed_tx(
                            &whale(),
                            1,
                            0,
                            Payload::Stake {
                                validator: key,
                                amount: 1200,
                            },
                        ),
                    ]
                };
                for tx in txs {
                    self.submit_everywhere(tx);
                }
            }
            Event::FetchRequest { to, from, after } => {
                if !self.nodes[to].up {
                    return;
                }
                let peer = &self.nodes[to];
                let mut blocks: Vec<CommittedBlock> = peer
                    .blocks
                    .iter()
                    .skip(after as usize)
                    .take(16)
                    .cloned()
                    .collect();
                if peer.behaviour == Behaviour::Garbage {
                    for b in &mut blocks {
                        b.commits.truncate(1);
                    }
                }
                let addr = peer.key.address();
                if self.connected(to, from) {
                    let t = self.now + self.rng.range(1, self.max_delay_ms.max(2));
                    self.at(
                        t,
                        Event::FetchResponse {
                            to: from,
                            from: addr,
                            blocks,
                        },
                    );
                }
            }
            Event::FetchResponse { to, from, blocks } => {
                if !self.nodes[to].up {
                    return;
                }
                for block in blocks {
                    self.input(to, Input::Synced { from, block });
                }
            }
        }
    }

    /// Starts a node's engine again from what it persisted (for a cluster:
    /// what its log committed) and the blocks its store holds.
    fn recover(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.held.clear();
        // As the node does: the records the log committed, then one `Signed`
        // per intent of the cluster's history (what the key really signed,
        // including what the last leader's lost records never said).
        let mut records = n.disk.clone();
        if let Some(c) = &n.cluster {
            records.extend(c.history.statements().map(Record::Signed));
        }
        n.engine = match &n.state {
            None => Replica::Pbft(Box::new(Pbft::recover(
                chain(),
                self.validators.clone(),
                Some(n.key.clone()),
                sim_config(self.in_flight),
                n.blocks.len() as u64,
                records,
            ))),
            Some(state) => {
                // What a restarted pos node reads from its store: the
                // epoch and set its state holds, the digest of the
                // block that opened the epoch, and its last block.
                let epoch = epoch_of(state);
                let span = pos::epoch_span(epoch, EPOCH_LENGTH, Hash::ZERO);
                let digest = |h: u64| {
                    h.checked_sub(1)
                        .and_then(|i| n.blocks.get(i as usize))
                        .map_or(Hash::ZERO, |b| b.proposal.digest())
                };
                let executed = n.blocks.len() as u64;
                Replica::Pos(Box::new(Pos::recover(
                    chain(),
                    epoch,
                    EPOCH_LENGTH,
                    set_of(state),
                    digest(span.base),
                    Some(n.key.clone()),
                    sim_config(self.in_flight),
                    (executed, digest(executed)),
                    records,
                )))
            }
        };
        n.up = true;
        let pending: Vec<VerifiedTx> = n
            .cluster
            .as_ref()
            .map(|c| c.pending.values().cloned().collect())
            .unwrap_or_default();
        for tx in pending {
            self.input(node, Input::Submit(tx));
        }
    }

    /// Gives a transaction to every node that is up (gossip, without faults).
    fn submit_everywhere(&mut self, tx: VerifiedTx) {
        for node in 0..self.nodes.len() {
            if self.nodes[node].up {
                if let Some(c) = self.nodes[node].cluster.as_mut() {
                    c.pending.insert(tx.id(), tx.clone());
                }
                self.input(node, Input::Submit(tx.clone()));
            }
        }
    }

    /// Pos: a node found equivocation. Its host gossips the evidence and
    /// submits it in a transaction of its own (here: a fresh reporter each
    /// time, so nonces never collide); the ledger slashes once.
    fn report(&mut self, node: usize, ev: Evidence) {
        if self.nodes[node].behaviour == Behaviour::Honest
            && self.now + EVIDENCE_MARGIN_MS <= RUN_END_MS
        {
            self.outcome.accused.insert(ev.validator);
        }
        let epoch = self.nodes[node].state.as_ref().map_or(0, epoch_of);
        self.reporters += 1;
        let reporter = devkit::key(10_000 + self.reporters);
        let tx = signed_tx(
            &reporter,
            0,
            epoch,
            Payload::Evidence {
                data: ev.to_bytes(),
            },
        );
        self.log(&[b"evidence", &ev.to_bytes()]);
        self.submit_everywhere(tx);
    }

    /// Pos: executes a committed block on the node's state with the real
    /// rules; after an epoch's last block, hands the engine the next set.
    fn execute(&mut self, node: usize, block: &CommittedBlock) {
        let Some(world) = self.world.clone() else {
            return;
        };
        let n = &mut self.nodes[node];
        let Some(state) = n.state.as_mut() else {
            return;
        };
        let before = epoch_of(state);
        let ctx = BlockContext {
            height: block.proposal.seq(),
            timestamp_ms: block.proposal.timestamp_ms(),
            proposer: block.proposal.proposer(),
        };
        let (writes, failed) = {
            // The commits the proposal carries: agreed, so they count.
            let votes = block.proposal.last_commit().map(|lc| BlockVotes {
                height: lc.height,
                signers: lc.commits.iter().map(|v| v.validator).collect(),
            });
            let (overlay, failed) = world
                .rules
                .execute_ordered_all(state, &ctx, block.proposal.txs(), votes.as_ref())
                .expect("in-memory state never fails");
            (overlay.into_writes(), failed)
        };
        if n.behaviour == Behaviour::Honest {
            for (id, e) in &failed {
                let evidence = block.proposal.txs().iter().any(|t| {
                    t.id() == *id && matches!(t.tx().body.payload, Payload::Evidence { .. })
                });
                if evidence {
                    let why = match e.root_cause() {
                        Error::BadSignature => "bad signature",
                        Error::BadProof(_) => "invalid proof",
                        Error::EvidenceDuplicate { .. } => "duplicate evidence",
                        _ => "other",
                    };
                    *self
                        .outcome
                        .refused_evidence
                        .entry(why.to_owned())
                        .or_default() += 1;
                }
            }
        }
        state.0.extend(writes);
        let epoch = epoch_of(state);
        if epoch != before {
            let validators = set_of(state);
            if n.behaviour == Behaviour::Honest {
                self.outcome.epochs = self.outcome.epochs.max(epoch);
                self.outcome
                    .sets
                    .insert(validators.members().iter().map(|m| m.address).collect());
            }
            self.log(&[b"epoch", &(node as u64).to_le_bytes(), &epoch.to_le_bytes()]);
            let Replica::Pos(engine) = &mut self.nodes[node].engine else {
                return;
            };
            let effects = engine.handle(self.now, pos::Input::NextEpoch { epoch, validators });
            for next in self.perform(node, effects) {
                self.input(node, next);
            }
        }
    }

    /// Feeds one input to a node's engine and carries out what it asks.
    fn input(&mut self, node: usize, input: Input) {
        let mut work = vec![input];
        while let Some(input) = work.pop() {
            if !self.nodes[node].up {
                // A cluster's leader died in the middle: the rest is lost.
                return;
            }
            let effects = self.nodes[node].engine.handle(self.now, input);
            work.extend(self.perform(node, effects));
        }
        // Ticked again when the next proposal is due (a later plan replaces
        // an earlier one), a little late as a host's timer is: without it,
        // twins fed alike would propose alike, at the same instant.
        if self.nodes[node].up
            && let Some(due) = self.nodes[node].engine.proposal_due()
            && due > self.now
            && self.nodes[node].due != Some(due)
        {
            self.nodes[node].due = Some(due);
            let late = self.rng.below(DUE_LATE_MS);
            self.at(due + late, Event::Due { node, due });
        }
    }

    /// Carries out one step's effects, in order; returns the inputs they
    /// feed back. A pipelined host holds them until the step is durable
    /// ([`Event::Written`]) and returns nothing now.
    fn perform(&mut self, node: usize, effects: Vec<Effect>) -> Vec<Input> {
        if self.write_ms > 0 && !effects.is_empty() {
            // Durable in the order taken, each a little later than the last.
            let after = self.now + self.rng.range(1, self.write_ms + 1);
            let n = &mut self.nodes[node];
            let ready = n.held.back().map_or(after, |(r, _)| after.max(*r));
            n.held.push_back((ready, effects));
            self.at(ready, Event::Written { node });
            return Vec::new();
        }
        self.carry_out(node, effects)
    }

    /// [`Sim::perform`] once the effects may be carried out. A cluster's
    /// leader goes through its host ([`Sim::cluster_step`]).
    fn carry_out(&mut self, node: usize, effects: Vec<Effect>) -> Vec<Input> {
        if self.nodes[node].cluster.is_some() {
            return self.cluster_step(node, effects);
        }
        effects
            .into_iter()
            .filter_map(|e| self.effect(node, e))
            .collect()
    }

    /// A cluster leader's host runs one step of its engine: it commits an
    /// intent for every statement the step would publish (refusing those
    /// that conflict with the history), hands the step's records to the log,
    /// then performs the rest in order, dropping every message that carries
    /// a refused statement. The leader dies where its armed kill says.
    fn cluster_step(&mut self, node: usize, effects: Vec<Effect>) -> Vec<Input> {
        let now = self.now;
        {
            let Sim { rng, nodes, .. } = self;
            let n = &mut nodes[node];
            if let Some(c) = n.cluster.as_mut() {
                n.disk.extend(c.committed(now));
                if c.kill.is_some_and(|k| now > k.until) && now < FAULTS_END_MS {
                    c.arm(rng, now);
                }
            }
        }
        let mut statements: Vec<Statement> = Vec::new();
        for e in &effects {
            match e {
                Effect::Persist(Record::Signed(st)) => statements.push(*st),
                Effect::Broadcast(m) | Effect::Send { message: m, .. } => {
                    statements.extend(signed_statements(m));
                }
                _ => {}
            }
        }
        let mut seen = BTreeSet::new();
        statements.retain(|st| seen.insert(*st));
        let mut refused = BTreeSet::new();
        for st in &statements {
            if self.kill_if_due(node, st.kind, Point::BeforeIntent) {
                return Vec::new();
            }
            if self.intent_guard
                && let Some(c) = self.nodes[node].cluster.as_mut()
                && c.history.record(st).is_err()
            {
                refused.insert(*st);
                self.outcome.refused_intents += 1;
                self.log(&[b"refused", &(node as u64).to_le_bytes(), &st.digest.0]);
            }
            if self.kill_if_due(node, st.kind, Point::BeforeSend) {
                return Vec::new();
            }
        }
        if let Some(c) = self.nodes[node].cluster.as_mut() {
            for e in &effects {
                if let Effect::Persist(r) = e {
                    c.persist(now, r.clone());
                }
            }
        }
        let mut next = Vec::new();
        for e in effects {
            let sent = match &e {
                Effect::Persist(_) => continue,
                Effect::Broadcast(m) | Effect::Send { message: m, .. } => {
                    if signed_statements(m).iter().any(|st| refused.contains(st)) {
                        continue;
                    }
                    Some(m.message.statement().kind)
                }
                _ => None,
            };
            next.extend(self.effect(node, e));
            if !self.nodes[node].up {
                return Vec::new();
            }
            if let Some(kind) = sent
                && self.kill_if_due(node, kind, Point::AfterSend)
            {
                return Vec::new();
            }
        }
        next
    }

    /// Kills a cluster's leader if its armed kill is due at `point` of a
    /// step that signs `kind`: the log keeps only what it committed, and the
    /// next leader takes over after an election.
    fn kill_if_due(&mut self, node: usize, kind: Kind, point: Point) -> bool {
        let now = self.now;
        let n = &mut self.nodes[node];
        let Some(c) = n.cluster.as_mut() else {
            return false;
        };
        if now >= FAULTS_END_MS || !c.kill.is_some_and(|k| k.due(now, kind, point)) {
            return false;
        }
        n.disk.extend(c.committed(now));
        c.kill();
        n.up = false;
        n.held.clear();
        let term = c.term;
        *self.outcome.kills.entry((kind, point)).or_default() += 1;
        self.log(&[
            b"kill",
            &(node as u64).to_le_bytes(),
            &[kind as u8, point as u8],
        ]);
        let back = now + Cluster::election_ms(&mut self.rng);
        self.at(back, Event::Failover { node, term });
        true
    }

    /// Notes the statements a message puts on the network under its
    /// signer's key, and every second digest for a slot.
    fn carry(&mut self, m: &Signed) {
        for st in signed_statements(m) {
            match self.carried.entry((m.signer, Slot::of(&st))) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(st.digest);
                }
                std::collections::btree_map::Entry::Occupied(e) => {
                    if *e.get() != st.digest {
                        self.conflicts.push((m.signer, st, *e.get()));
                    }
                }
            }
        }
    }

    fn effect(&mut self, node: usize, e: Effect) -> Option<Input> {
        match e {
            Effect::Persist(r) => {
                self.nodes[node].disk.push(r);
                None
            }
            Effect::Broadcast(m) => {
                if std::env::var_os("PYRALOG_SIM_TRACE").is_some() {
                    let st = m.message.statement();
                    println!(
                        "{} node {node} sends {} for view {} height {}",
                        self.now,
                        st.kind.name(),
                        st.round,
                        st.height
                    );
                }
                self.broadcast(node, m);
                None
            }
            Effect::Send { to, message } => {
                if self.nodes[node].behaviour != Behaviour::Silent {
                    self.carry(&message);
                    let bytes = Arc::new(message.to_bytes());
                    for n in self.nodes_of(&to) {
                        self.transmit(node, n, bytes.clone());
                    }
                }
                None
            }
            Effect::Commit(block) => {
                let seq = block.proposal.seq();
                let digest = block.proposal.digest();
                let n = &mut self.nodes[node];
                assert_eq!(
                    seq,
                    n.blocks.len() as u64 + 1,
                    "engine delivered out of order"
                );
                let mut h = Domain::Consensus.hasher();
                h.update(&n.root.0);
                h.update(&digest.0);
                n.root = Hash(*h.finalize().as_bytes());
                let root = n.root;
                let honest = n.behaviour == Behaviour::Honest;
                if let Some(c) = n.cluster.as_mut() {
                    for tx in block.proposal.txs() {
                        c.pending.remove(&tx.id());
                    }
                }
                n.blocks.push(block.clone());
                self.outcome.commits += 1;
                self.execute(node, &block);
                self.log(&[
                    b"commit",
                    &(node as u64).to_le_bytes(),
                    &seq.to_le_bytes(),
                    &digest.0,
                ]);
                if honest {
                    match self.decided.get(&seq) {
                        None => {
                            self.decided.insert(seq, (node, digest));
                        }
                        Some((other, d)) if *d != digest => {
                            self.outcome.safety.push(format!(
                                "height {seq}: node {other} committed {d:?}, node {node} committed {digest:?}"
                            ));
                        }
                        Some(_) => {}
                    }
                }
                Some(Input::Executed {
                    seq,
                    state_root: root,
                })
            }
            Effect::Fetch { from, after } => {
                for to in self.nodes_of(&from) {
                    if self.connected(node, to) {
                        let t = self.now + self.rng.range(1, self.max_delay_ms.max(2));
                        self.at(
                            t,
                            Event::FetchRequest {
                                to,
                                from: node,
                                after,
                            },
                        );
                    }
                }
                None
            }
            Effect::Rejected { from, reason } => {
                if std::env::var_os("PYRALOG_SIM_TRACE").is_some() {
                    println!("{} node {node} rejected {from}: {reason:?}", self.now);
                }
                self.outcome.rejections += 1;
                None
            }
            Effect::Evidence(ev) => {
                if self.protocol == Protocol::Pos {
                    self.report(node, ev);
                }
                None
            }
            Effect::ViewChanged { view } => {
                if std::env::var_os("PYRALOG_SIM_TRACE").is_some() {
                    println!("{} node {node} entered view {view}", self.now);
                }
                self.outcome.view_changes += 1;
                self.log(&[b"view", &(node as u64).to_le_bytes(), &view.to_le_bytes()]);
                None
            }
        }
    }

    fn broadcast(&mut self, node: usize, m: Signed) {
        let behaviour = self.nodes[node].behaviour;
        let others: Vec<usize> = (0..self.nodes.len()).filter(|i| *i != node).collect();
        match behaviour {
            Behaviour::Silent => {}
            Behaviour::Honest | Behaviour::Twin => {
                self.carry(&m);
                let bytes = Arc::new(m.to_bytes());
                for to in others {
                    self.transmit(node, to, bytes.clone());
                }
            }
            Behaviour::Equivocator => {
                let other = self.equivocate(node, &m);
                self.carry(&m);
                self.carry(&other);
                let a = Arc::new(m.to_bytes());
                let b = Arc::new(other.to_bytes());
                for (i, to) in others.into_iter().enumerate() {
                    let bytes = if i % 2 == 0 { a.clone() } else { b.clone() };
                    self.transmit(node, to, bytes);
                }
            }
            Behaviour::Garbage => {
                self.carry(&m);
                let good = m.to_bytes();
                for to in others {
                    let bytes = match self.rng.below(4) {
                        0 => good.clone(),
                        1 => {
                            let mut b = good.clone();
                            let i = self.rng.below(b.len() as u64) as usize;
                            b[i] ^= 1 << self.rng.below(8);
                            b
                        }
                        2 => good[..self.rng.below(good.len() as u64) as usize].to_vec(),
                        _ => (0..self.rng.range(0, 300))
                            .map(|_| self.rng.next() as u8)
                            .collect(),
                    };
                    self.transmit(node, to, Arc::new(bytes));
                }
            }
        }
    }

    /// The same message with another content, signed by the same key.
    fn equivocate(&mut self, node: usize, m: &Signed) -> Signed {
        let key = self.nodes[node].key.clone();
        let other = |seed: u64| Hash::of(Domain::Consensus, &seed.to_le_bytes());
        let message = match &m.message {
            Message::PrePrepare { view, proposal } => Message::PrePrepare {
                view: *view,
                proposal: Arc::new(Proposal::new(
                    proposal.seq(),
                    proposal.timestamp_ms() + 1,
                    proposal.proposer(),
                    proposal.txs().iter().rev().cloned().collect(),
                )),
            },
            Message::Prepare { view, seq, .. } => Message::Prepare {
                view: *view,
                seq: *seq,
                digest: other(self.rng.next()),
            },
            Message::Commit { view, seq, .. } => Message::Commit {
                view: *view,
                seq: *seq,
                digest: other(self.rng.next()),
            },
            Message::Checkpoint { seq, .. } => Message::Checkpoint {
                seq: *seq,
                state_root: other(self.rng.next()),
            },
            other_message => other_message.clone(),
        };
        Signed::sign(&chain(), &key, message)
    }

    fn check_liveness(&mut self) {
        let faulty = self
            .nodes
            .iter()
            .filter(|n| n.behaviour != Behaviour::Honest)
            .map(|n| n.key.address())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        // Liveness is promised only with at most f faulty validators.
        if faulty > (self.validators.len() as u64 - 1) / 3 {
            return;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.behaviour != Behaviour::Honest {
                continue;
            }
            let after = n.blocks.len() as u64 - n.committed_at_heal;
            if after < BLOCKS_AFTER_HEAL {
                self.outcome.liveness.push(format!(
                    "node {i} committed {after} blocks after the faults healed (height {}, view {}, changing {}{})",
                    n.blocks.len(),
                    n.engine.view(),
                    n.engine.is_changing_view(),
                    match &n.engine {
                        Replica::Pos(p) => format!(", epoch {}", p.epoch()),
                        Replica::Pbft(_) => String::new(),
                    },
                ));
            }
        }
    }
}

impl Node {
    fn new(
        key: Keypair,
        behaviour: Behaviour,
        validators: &ValidatorSet,
        world: Option<&PosWorld>,
        in_flight: u64,
    ) -> Node {
        let engine = match world {
            None => Replica::Pbft(Box::new(Pbft::new(
                chain(),
                validators.clone(),
                Some(key.clone()),
                sim_config(in_flight),
            ))),
            Some(_) => Replica::Pos(Box::new(Pos::new(
                chain(),
                0,
                EPOCH_LENGTH,
                validators.clone(),
                Hash::ZERO,
                Some(key.clone()),
                sim_config(in_flight),
            ))),
        };
        Node {
            engine,
            state: world.map(|w| w.genesis_state.clone()),
            key,
            behaviour,
            up: true,
            disk: Vec::new(),
            cluster: None,
            blocks: Vec::new(),
            root: Hash::ZERO,
            committed_at_heal: 0,
            due: None,
            held: VecDeque::new(),
        }
    }
}
