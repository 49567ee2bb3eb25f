//! `config.toml`.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The node's configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A display name.
    pub moniker: String,
    /// The HTTP RPC.
    pub rpc: RpcConfig,
    /// The p2p network.
    pub p2p: P2pConfig,
    /// The gossip engine's tuning.
    #[serde(default)]
    pub gossip: GossipConfig,
    /// Limits on SQL queries (`POST /query`).
    #[serde(default)]
    pub sql: SqlConfig,
    /// This node's place in its cluster (a Raft group sharing one validator
    /// key).
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// This node's place in its cluster. A cluster of one (the default) needs
/// nothing here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This member's id in the cluster (unique within it, not 0).
    pub id: u64,
    /// The cluster's founding members, `ID=MULTIADDR` (the multiaddress ends
    /// in `/p2p/PEER_ID`). A fresh node whose own id is listed (or a node
    /// with an empty list, a cluster of one) founds the cluster with these
    /// members; a node not listed waits to be added (`pyralog-node cluster
    /// add-learner`). Members answer Raft calls only from these peers and
    /// from the current membership.
    pub peers: Vec<String>,
    /// Log entries between two snapshots (each copies the ledger's file); a
    /// member further behind catches up from a snapshot.
    pub snapshot_every: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            id: 1,
            peers: Vec::new(),
            snapshot_every: pyralog_cluster::member::SNAPSHOT_EVERY,
        }
    }
}

/// Limits on SQL queries. Each query reads one snapshot off the driver's
/// task; exceeding a limit ends it with an error naming the limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Wall-clock time a query may run, in milliseconds.
    pub timeout_ms: u64,
    /// Rows an answer may have.
    pub max_rows: usize,
    /// Memory a query's operators may hold, and separately its answer, in bytes.
    pub max_memory_bytes: usize,
    /// Queries running at once; one more is refused with 503 (busy).
    pub max_concurrent: usize,
    /// Bytes of Arrow columns kept between queries: whole-state scans keep
    /// the columns of each segment of the state tree and reuse them while
    /// the segment's hash is unchanged (0 keeps none).
    pub cache_bytes: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout_ms: 10_000,
            max_rows: 100_000,
            max_memory_bytes: 256 * 1024 * 1024,
            max_concurrent: 2,
            cache_bytes: 128 * 1024 * 1024,
        }
    }
}

/// The HTTP RPC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Transactions one client address may post per second (0: no limit).
    /// More are refused with 429 `rate_limited` for the rest of the second.
    #[serde(default = "default_client_txs_per_sec")]
    pub client_txs_per_sec: usize,
}

/// Generous enough for a benchmark from one host; a public node sets less.
fn default_client_txs_per_sec() -> usize {
    20_000
}

/// The p2p network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pConfig {
    /// Multiaddresses to listen on.
    pub listen: Vec<String>,
    /// Multiaddresses to dial first (`/p2p/<peer id>` suffix recommended).
    #[serde(default)]
    pub bootnodes: Vec<String>,
    /// Peer ids never to talk to.
    #[serde(default)]
    pub banned: Vec<String>,
}

/// The gossip engine's tuning (see `pyralog_consensus::gossip::Config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Seal a batch at this many transactions.
    pub max_batch_txs: usize,
    /// Seal a batch when the oldest transaction waited this long.
    pub batch_interval_ms: u64,
    /// Publish a digest this often.
    pub digest_interval_ms: u64,
    /// The most transactions waiting to be sealed (the mempool bound).
    pub max_pending: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        let c = pyralog_consensus::gossip::Config::default();
        GossipConfig {
            max_batch_txs: c.max_batch_txs,
            batch_interval_ms: c.batch_interval_ms,
            digest_interval_ms: c.digest_interval_ms,
            max_pending: c.max_pending,
        }
    }
}

impl GossipConfig {
    /// The engine's configuration.
    pub fn engine(&self) -> pyralog_consensus::gossip::Config {
        pyralog_consensus::gossip::Config {
            max_batch_txs: self.max_batch_txs.max(1),
            batch_interval_ms: self.batch_interval_ms.max(1),
            digest_interval_ms: self.digest_interval_ms.max(1),
            max_pending: self.max_pending.max(1),
            ..Default::default()
        }
    }
}

impl Config {
    /// A configuration for a new node.
    pub fn new(moniker: &str) -> Config {
        Config {
            moniker: moniker.to_owned(),
            rpc: RpcConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
                client_txs_per_sec: default_client_txs_per_sec(),
            },
            p2p: P2pConfig {
                listen: vec![
                    "/ip4/127.0.0.1/tcp/26656".into(),
                    "/ip4/127.0.0.1/udp/26656/quic-v1".into(),
                ],
                bootnodes: Vec::new(),
                banned: Vec::new(),
            },
            gossip: GossipConfig::default(),
            sql: SqlConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid configuration", path.display()))
    }

    /// Writes the configuration file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).context("cannot serialise the configuration")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}
