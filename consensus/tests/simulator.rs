//! The deterministic simulator: the real PBFT engine under virtual time, on a
//! seeded network that delays, drops, duplicates, reorders and partitions
//! messages, with validators that crash and restart from what they persisted,
//! and Byzantine validators built from the real engine (twins, an equivocating
//! primary, a silent validator, one that sends garbage).
//!
//! Every run checks:
//! - **safety**: no two honest validators commit different blocks at one height;
//! - **liveness**: after the faults heal (with at most f faulty), every honest
//!   validator keeps committing;
//! - **determinism**: a seed run twice gives the same event digest.
//!
//! A failing run prints the command that replays it. A longer run:
//! `PYRALOG_SIM_SEEDS=2000 cargo test --release -p pyralog-consensus --test simulator`
//! (seeds per fault mix; the default is 63, about 500 runs in all).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use pyralog_consensus::Engine;
use pyralog_consensus::bft::ValidatorSet;
use pyralog_consensus::pbft::{
    CommittedBlock, Config, Effect, Input, Message, Pbft, Proposal, Record, Signed,
};
use pyralog_ledger::block::{VerifiedTx, verify_tx};
use pyralog_ledger::codec::Encode;
use pyralog_ledger::{Address, ChainId, Domain, Hash, Keypair, devkit};

/// A small deterministic generator (splitmix64); the simulator's only source
/// of chance.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
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
enum Mix {
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
    /// For the broken-quorum check: the network split in two halves.
    SplitBrain,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Network => "network",
            Mix::Partition => "partition",
            Mix::Crash => "crash",
            Mix::Twins => "twins",
            Mix::Equivocator => "equivocator",
            Mix::Silent => "silent",
            Mix::Garbage => "garbage",
            Mix::Mixed => "mixed",
            Mix::SplitBrain => "split-brain",
        }
    }

    fn parse(s: &str) -> Option<Mix> {
        [
            Mix::Network,
            Mix::Partition,
            Mix::Crash,
            Mix::Twins,
            Mix::Equivocator,
            Mix::Silent,
            Mix::Garbage,
            Mix::Mixed,
            Mix::SplitBrain,
        ]
        .into_iter()
        .find(|m| m.name() == s)
    }
}

const FAULTS_END_MS: u64 = 8_000;
const RUN_END_MS: u64 = 22_000;
const TICK_MS: u64 = 20;
const SUBMIT_EVERY_MS: u64 = 400;
/// Transactions a client submits at a time.
const SUBMIT_BURST: u64 = 3;
/// Blocks every honest validator must commit after the faults heal.
const BLOCKS_AFTER_HEAL: u64 = 3;

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

fn sim_config() -> Config {
    Config {
        checkpoint_interval: 4,
        window: 16,
        max_in_flight: 3,
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
    Submit {
        n: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition {
        groups: Vec<u8>,
    },
    Heal,
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
    engine: Pbft,
    up: bool,
    /// What the engine persisted.
    disk: Vec<Record>,
    /// The committed blocks, in order (the node's store).
    blocks: Vec<CommittedBlock>,
    /// The state root after the last block (a hash chain in the simulator).
    root: Hash,
    committed_at_heal: u64,
}

/// What a run found.
#[derive(Debug)]
struct Outcome {
    digest: Hash,
    safety: Vec<String>,
    liveness: Vec<String>,
    commits: u64,
    view_changes: u64,
    rejections: u64,
}

struct Sim {
    rng: Rng,
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
}

impl Sim {
    fn new(seed: u64, mix: Mix, broken_quorum: bool) -> Sim {
        let mut rng = Rng(seed ^ 0x005E_ED0F_5EED);
        let n = if mix == Mix::Mixed { 7 } else { 4 };
        let keys: Vec<Keypair> = (0..n).map(|i| devkit::key(500 + i)).collect();
        let mut validators = ValidatorSet::equal(keys.iter().map(Keypair::address)).expect("set");
        if broken_quorum {
            validators.break_quorum_rule();
        }
        let mut behaviours = vec![Behaviour::Honest; n as usize];
        let pick = |rng: &mut Rng| rng.below(n) as usize;
        match mix {
            Mix::Twins | Mix::Equivocator | Mix::Silent | Mix::Garbage => {
                let b = match mix {
                    Mix::Twins => Behaviour::Twin,
                    Mix::Equivocator => Behaviour::Equivocator,
                    Mix::Silent => Behaviour::Silent,
                    _ => Behaviour::Garbage,
                };
                // The equivocator and twins matter most as the first primary.
                let at = if rng.chance(500) { 0 } else { pick(&mut rng) };
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
        let mut nodes: Vec<Node> = keys
            .iter()
            .zip(&behaviours)
            .map(|(k, b)| Node::new(k.clone(), *b, &validators))
            .collect();
        // A twin is an extra node with the key of the validator marked Twin;
        // that validator itself runs honestly (the pair is the fault).
        if let Some(t) = behaviours.iter().position(|b| *b == Behaviour::Twin) {
            nodes.push(Node::new(keys[t].clone(), Behaviour::Twin, &validators));
        }
        let (drop, dup, delay) = match mix {
            Mix::SplitBrain => (0, 0, 20),
            _ => (rng.range(0, 150), rng.range(0, 80), rng.range(5, 120)),
        };
        let mut sim = Sim {
            rng,
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
            },
        };
        sim.plan(mix);
        sim
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
            Mix::SplitBrain => {
                let groups = (0..self.nodes.len()).map(|i| (i >= 2) as u8).collect();
                self.at(0, Event::Partition { groups });
                self.at(FAULTS_END_MS, Event::Heal);
            }
            _ => {}
        }
        self.at(FAULTS_END_MS, Event::Heal);
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

    fn run(mut self) -> Outcome {
        while let Some(((t, _), event)) = self.queue.pop_first() {
            if t > RUN_END_MS {
                break;
            }
            self.now = t;
            self.step(event);
        }
        self.check_liveness();
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
                    for node in 0..self.nodes.len() {
                        if self.nodes[node].up {
                            self.input(node, Input::Submit(tx.clone()));
                        }
                    }
                }
            }
            Event::Crash { node } => {
                self.log(&[b"crash", &(node as u64).to_le_bytes()]);
                self.nodes[node].up = false;
            }
            Event::Restart { node } => {
                self.log(&[b"restart", &(node as u64).to_le_bytes()]);
                let n = &mut self.nodes[node];
                n.engine = Pbft::recover(
                    chain(),
                    self.validators.clone(),
                    Some(n.key.clone()),
                    sim_config(),
                    n.blocks.len() as u64,
                    n.disk.clone(),
                );
                n.up = true;
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

    /// Feeds one input to a node's engine and carries out what it asks.
    fn input(&mut self, node: usize, input: Input) {
        let mut work = vec![input];
        while let Some(input) = work.pop() {
            let effects = self.nodes[node].engine.handle(self.now, input);
            for e in effects {
                if let Some(next) = self.effect(node, e) {
                    work.push(next);
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
                self.broadcast(node, m);
                None
            }
            Effect::Send { to, message } => {
                if self.nodes[node].behaviour != Behaviour::Silent {
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
                n.blocks.push(block);
                self.outcome.commits += 1;
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
            Effect::Evidence(_) => None,
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
                let bytes = Arc::new(m.to_bytes());
                for to in others {
                    self.transmit(node, to, bytes.clone());
                }
            }
            Behaviour::Equivocator => {
                let other = self.equivocate(node, &m);
                let a = Arc::new(m.to_bytes());
                let b = Arc::new(other.to_bytes());
                for (i, to) in others.into_iter().enumerate() {
                    let bytes = if i % 2 == 0 { a.clone() } else { b.clone() };
                    self.transmit(node, to, bytes);
                }
            }
            Behaviour::Garbage => {
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
                    "node {i} committed {after} blocks after the faults healed (height {}, view {}, changing {})",
                    n.blocks.len(),
                    n.engine.view(),
                    n.engine.is_changing_view(),
                ));
            }
        }
    }
}

impl Node {
    fn new(key: Keypair, behaviour: Behaviour, validators: &ValidatorSet) -> Node {
        Node {
            engine: Pbft::new(chain(), validators.clone(), Some(key.clone()), sim_config()),
            key,
            behaviour,
            up: true,
            disk: Vec::new(),
            blocks: Vec::new(),
            root: Hash::ZERO,
            committed_at_heal: 0,
        }
    }
}

fn replay_command(seed: u64, mix: Mix) -> String {
    format!(
        "PYRALOG_SIM_SEED={seed} PYRALOG_SIM_MIX={} cargo test -p pyralog-consensus --test simulator replay -- --ignored --nocapture",
        mix.name()
    )
}

fn seeds_per_mix() -> u64 {
    std::env::var("PYRALOG_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(63)
}

/// Runs `seeds` seeds of `mix`, checking safety and liveness on every run and
/// determinism on every eighth.
fn sweep(mix: Mix) {
    let mut totals = (0u64, 0u64, 0u64);
    for seed in 0..seeds_per_mix() {
        let seed = seed.wrapping_mul(7919).wrapping_add(mix as u64 * 1_000_003);
        let out = Sim::new(seed, mix, false).run();
        let replay = replay_command(seed, mix);
        assert!(
            out.safety.is_empty(),
            "safety violated: {:?}\nreplay: {replay}",
            out.safety
        );
        assert!(
            out.liveness.is_empty(),
            "liveness violated: {:?}\nreplay: {replay}",
            out.liveness
        );
        assert!(out.commits > 0, "nothing committed\nreplay: {replay}");
        if seed % 8 == 0 {
            let again = Sim::new(seed, mix, false).run();
            assert_eq!(
                out.digest, again.digest,
                "two runs of one seed differ\nreplay: {replay}"
            );
        }
        totals.0 += out.commits;
        totals.1 += out.view_changes;
        totals.2 += out.rejections;
    }
    println!(
        "{}: {} seeds, {} commits, {} view entries, {} rejections",
        mix.name(),
        seeds_per_mix(),
        totals.0,
        totals.1,
        totals.2
    );
}

#[test]
fn network_faults() {
    sweep(Mix::Network);
}

#[test]
fn partitions() {
    sweep(Mix::Partition);
}

#[test]
fn crash_and_restart() {
    sweep(Mix::Crash);
}

#[test]
fn twins() {
    sweep(Mix::Twins);
}

#[test]
fn equivocating_primary() {
    sweep(Mix::Equivocator);
}

#[test]
fn silent_validator() {
    sweep(Mix::Silent);
}

#[test]
fn garbage_sender() {
    sweep(Mix::Garbage);
}

#[test]
fn seven_validators_two_byzantine() {
    sweep(Mix::Mixed);
}

/// The simulator must catch a broken quorum rule: with quorums of 2f instead
/// of 2f+1, a split network commits two different blocks at one height.
#[test]
fn a_broken_quorum_rule_is_caught() {
    let violations = (0..20u64)
        .filter(|seed| {
            !Sim::new(*seed, Mix::SplitBrain, true)
                .run()
                .safety
                .is_empty()
        })
        .count();
    assert!(violations > 0, "no seed caught the 2f quorum");
    // The same runs with the correct rule are safe.
    for seed in 0..20u64 {
        let out = Sim::new(seed, Mix::SplitBrain, false).run();
        assert!(out.safety.is_empty(), "{:?}", out.safety);
    }
}

/// Replays one run: `PYRALOG_SIM_SEED=N PYRALOG_SIM_MIX=NAME`.
#[test]
#[ignore = "replays the seed named in the environment"]
fn replay() {
    let seed: u64 = std::env::var("PYRALOG_SIM_SEED")
        .expect("set PYRALOG_SIM_SEED")
        .parse()
        .expect("a number");
    let mix = std::env::var("PYRALOG_SIM_MIX")
        .ok()
        .and_then(|m| Mix::parse(&m))
        .expect("set PYRALOG_SIM_MIX to a mix name");
    let out = Sim::new(seed, mix, false).run();
    println!("{out:#?}");
    assert!(out.safety.is_empty() && out.liveness.is_empty());
}
