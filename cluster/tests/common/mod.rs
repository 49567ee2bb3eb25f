//! Fixtures shared by the cluster's tests: a genesis, members' folders.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use pyralog_cluster::{Error, Ledger, LedgerMachine, LogStore, open_cluster_db};
use pyralog_ledger::{Engine, GenesisFile, Keypair, devkit};

/// The chain the tests run on.
pub const CHAIN: &str = "pyralog-cluster-test";

/// The cluster's validator key.
pub fn validator() -> Keypair {
    devkit::key(100)
}

/// A gossip genesis with a funded user and the cluster's validator.
pub fn genesis() -> GenesisFile {
    genesis_of(CHAIN)
}

/// A PBFT genesis (an ordering engine, so compare-and-set runs) with the
/// same funded user; the cluster's validator and three others.
pub fn pbft_genesis() -> GenesisFile {
    let mut params = devkit::devnet_params(2);
    params.epoch_length = 1_000_000;
    let others: Vec<Keypair> = (101..104).map(devkit::key).collect();
    let mut validators = vec![(validator(), "/ip4/127.0.0.1/tcp/1".to_owned())];
    for (i, k) in others.into_iter().enumerate() {
        validators.push((k, format!("/ip4/127.0.0.1/tcp/{}", i + 2)));
    }
    let refs: Vec<(&Keypair, String)> = validators.iter().map(|(k, a)| (k, a.clone())).collect();
    devkit::genesis_file(
        CHAIN,
        Engine::Pbft,
        params,
        &[(&devkit::key(1), 1_000_000)],
        &refs,
    )
}

/// An ordered slot at `height` proposed by the cluster's validator, holding
/// user 1's `Put` of `key` = `value` with `nonce`, as compare-and-set if
/// `if_version` is set; and the transaction's id.
pub fn ordered_put(
    height: u64,
    nonce: u64,
    key: &str,
    value: &[u8],
    if_version: Option<u64>,
) -> (Command, pyralog_ledger::Hash) {
    let chain: ChainId = CHAIN.parse().expect("chain");
    let alice = devkit::key(1);
    let payload = pyralog_ledger::Payload::Put {
        namespace: alice.address(),
        ops: vec![pyralog_ledger::PutOp {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            if_version,
            sealed: false,
        }],
    };
    let tx = devkit::tx(&chain, &alice, nonce, 0, payload, 2);
    let id = tx.id();
    let cmd = Command::Ordered(pyralog_cluster::Ordered {
        height,
        proposer: validator().address(),
        timestamp_ms: BASE_MS,
        txs: vec![tx],
        engine_data: Vec::new(),
        certificate: pyralog_ledger::Certificate {
            round: 0,
            votes: Vec::new(),
        },
        records: Vec::new(),
        votes: None,
    });
    (cmd, id)
}

/// The same genesis on another chain id.
pub fn genesis_of(chain: &str) -> GenesisFile {
    let mut params = devkit::devnet_params(2);
    params.epoch_length = 1_000_000;
    devkit::genesis_file(
        chain,
        Engine::Gossip,
        params,
        &[(&devkit::key(1), 1_000_000)],
        &[(&validator(), "/ip4/127.0.0.1/tcp/1".to_owned())],
    )
}

/// The log store and state machine of a member living in `dir`.
pub fn open_member(dir: &Path, genesis: &GenesisFile) -> Result<(LogStore, LedgerMachine), Error> {
    std::fs::create_dir_all(dir)?;
    let db = open_cluster_db(&dir.join("raft.redb"))?;
    let ledger = Ledger::open(&dir.join("ledger.redb"), genesis)?;
    let machine = LedgerMachine::open(Arc::clone(&db), ledger, &dir.join("snapshots"))?;
    Ok((LogStore::new(db, &dir.join("raft-log"))?, machine))
}

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pyralog_cluster::{Command, MemNet, Member, MemberConfig, NodeId};
use pyralog_ledger::{Batch, ChainId, Hlc};

/// The wall clock the fixtures' batches claim (fixed, so runs repeat).
pub const BASE_MS: u64 = 1_800_000_000_000;

/// A batch from the cluster's validator holding one `Put` of `key` = `value`
/// by user 1, numbered `seq`.
pub fn put_batch(seq: u64, key: &str, value: &str) -> Command {
    let g = genesis().validate().expect("genesis");
    let chain: ChainId = CHAIN.parse().expect("chain");
    let wall = BASE_MS + seq;
    let alice = devkit::key(1);
    let tx = devkit::tx(
        &chain,
        &alice,
        seq,
        g.gossip_epoch(wall),
        devkit::put(&alice, key.as_bytes(), value.as_bytes()),
        2,
    );
    let batch = Batch::seal(
        chain,
        &validator(),
        seq,
        Hlc {
            wall_ms: wall,
            logical: 0,
        },
        vec![tx],
    );
    Command::Batch {
        batch,
        now_ms: wall,
    }
}

/// A client write (user 1's `Put`), numbered `nonce`.
pub fn write(nonce: u64, key: &str) -> Command {
    let g = genesis().validate().expect("genesis");
    let chain: ChainId = CHAIN.parse().expect("chain");
    let alice = devkit::key(1);
    Command::Write(std::sync::Arc::new(devkit::tx(
        &chain,
        &alice,
        nonce,
        g.gossip_epoch(BASE_MS),
        devkit::put(&alice, key.as_bytes(), b"v"),
        2,
    )))
}

/// User 1's record `key` on `member`'s ledger (no consistency: local).
/// The engine records a member's or machine's ledger holds.
pub fn engine_records(view: &pyralog_cluster::MachineView) -> Vec<Vec<u8>> {
    view.ledger()
        .read()
        .expect("ledger")
        .engine_records()
        .expect("records")
}

pub fn record(member: &Member, key: &str) -> Option<Vec<u8>> {
    let store = member.view().ledger().read().expect("ledger");
    store
        .record(&devkit::key(1).address(), key.as_bytes())
        .expect("read")
        .and_then(|r| r.value)
}

/// A network and a folder holding several members.
pub struct Harness {
    pub genesis: GenesisFile,
    pub net: Arc<MemNet>,
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<NodeId, Arc<Member>>,
}

/// A member's address on the in-process network.
pub fn addr(id: NodeId) -> pyralog_cluster::types::Member {
    openraft::impls::BasicNode {
        addr: format!("mem://{id}"),
    }
}

impl Harness {
    /// An empty harness.
    pub fn new() -> Harness {
        Harness::on(genesis())
    }

    /// An empty harness whose members start from `genesis`.
    pub fn on(genesis: GenesisFile) -> Harness {
        Harness {
            genesis,
            net: MemNet::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            members: BTreeMap::new(),
        }
    }

    /// A harness with members `1..=n` started and initialized as voters.
    pub async fn cluster(n: u64) -> Harness {
        Harness::cluster_on(n, genesis()).await
    }

    /// A harness with members `1..=n` started from `genesis` and initialized
    /// as voters.
    pub async fn cluster_on(n: u64, genesis: GenesisFile) -> Harness {
        let mut h = Harness::on(genesis);
        for id in 1..=n {
            h.start(id).await;
        }
        let all = (1..=n).map(|i| (i, addr(i))).collect();
        h.members[&1].initialize(all).await.expect("initialize");
        h.leader(Duration::from_secs(10)).await;
        // A member reports itself a learner until the membership entry
        // reaches it: wait until every one knows it votes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while h
            .members
            .values()
            .any(|m| !matches!(m.status().role, "leader" | "follower"))
        {
            assert!(
                Instant::now() < deadline,
                "the members never all learned they vote"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h
    }

    /// Starts (or restarts from its folder) member `id`.
    pub async fn start(&mut self, id: NodeId) -> Arc<Member> {
        // A member just stopped may hold its files for a moment longer, while
        // openraft's tasks wind down and drop the state machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        let member = loop {
            let config = MemberConfig::new(
                id,
                self.dir.path().join(format!("m{id}")),
                self.genesis.clone(),
            );
            match Member::start(config, self.net.transport(id)).await {
                Ok(m) => break m,
                Err(e) if e.to_string().contains("already open") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("start: {e:?}"),
            }
        };
        self.net.register(&member);
        self.members.insert(id, Arc::clone(&member));
        member
    }

    /// Stops member `id` (its files stay).
    pub async fn stop(&mut self, id: NodeId) {
        if let Some(m) = self.members.remove(&id) {
            m.shutdown().await.expect("shutdown");
        }
    }

    /// The leader, once every running, connected member agrees on one.
    pub async fn leader(&self, within: Duration) -> Arc<Member> {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<NodeId> = self
                .members
                .values()
                .filter(|&m| m.status().role == "leader")
                .map(|m| m.id())
                .collect();
            if let [one] = leaders.as_slice() {
                return Arc::clone(&self.members[one]);
            }
            assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A member other than `not`.
    pub fn other(&self, not: NodeId) -> Arc<Member> {
        let (_, m) = self
            .members
            .iter()
            .find(|(id, _)| **id != not)
            .expect("another member");
        Arc::clone(m)
    }

    /// Waits until `member` applied at least `index`.
    pub async fn applied(&self, member: &Member, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while member.status().applied.unwrap_or(0) < index {
            assert!(
                Instant::now() < deadline,
                "member {} applied {:?}, waiting for {index}",
                member.id(),
                member.status().applied
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
