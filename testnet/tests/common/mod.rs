//! What the end-to-end tests share: a devnet of real node processes in a
//! temporary directory, on a port range of its own.
#![allow(dead_code, unreachable_pub)]

use pyralog_ledger::Engine;
use pyralog_testnet::devnet::{Devnet, Plan};

/// A devnet and its directory; the devnet (its processes) goes first on drop.
pub struct Running {
    pub net: Devnet,
    _dir: tempfile::TempDir,
}

impl Running {
    /// The devnet's directory, removed with it.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl std::ops::Deref for Running {
    type Target = Devnet;
    fn deref(&self) -> &Devnet {
        &self.net
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Devnet {
        &mut self.net
    }
}

/// Starts `clusters` single-node clusters running `engine`, stamps at `floor`
/// bits. Each test in a binary takes its own `slot`, so parallel tests never
/// collide: RPC ports at base.., p2p at base + 1000.., all below Linux's
/// ephemeral range (32768 and up), where outgoing connections could take a
/// port first. Test binaries run one after another.
pub fn up(engine: Engine, clusters: usize, slot: u16, floor: u32) -> Running {
    up_with_epochs(engine, clusters, slot, floor, 0)
}

/// [`up`] with `epoch_length` blocks per epoch (0: the devnet's default).
pub fn up_with_epochs(
    engine: Engine,
    clusters: usize,
    slot: u16,
    floor: u32,
    epoch_length: u64,
) -> Running {
    up_plan(engine, clusters, 1, slot, floor, epoch_length)
}

/// A devnet whose clusters have `per` nodes each.
pub fn up_plan(
    engine: Engine,
    clusters: usize,
    per: usize,
    slot: u16,
    floor: u32,
    epoch_length: u64,
) -> Running {
    let mut tmp = tempfile::tempdir().expect("dir");
    if std::env::var_os("PYRALOG_TEST_KEEP").is_some() {
        // Debugging a failure: the nodes' homes and logs stay.
        tmp.disable_cleanup(true);
        eprintln!("devnet in {}", tmp.path().display());
    }
    let base = 10_000 + (std::process::id() % 200) as u16 * 100 + slot * 10;
    Devnet::up(
        &Plan {
            clusters,
            nodes_per_cluster: per,
            engine,
            dir: tmp.path().to_path_buf(),
            base_port: base,
            min_difficulty: floor,
            exe: env!("CARGO_BIN_EXE_pyralog-testnet").into(),
            epoch_length,
        },
        &|_| {},
    )
    .map(|net| Running { net, _dir: tmp })
    .expect("devnet up")
}

/// A node started outside the devnet with `pyralog-node join`, bootstrapping
/// from the devnet's first node; killed when dropped, pass or fail.
pub struct Joiner {
    child: std::process::Child,
    /// Its RPC, `http://127.0.0.1:PORT`.
    pub rpc: String,
    /// Where it listens for peers (`/ip4/127.0.0.1/tcp/PORT+1000`).
    pub p2p: String,
    /// Its home directory.
    pub home: std::path::PathBuf,
}

/// Ports for one more node beside a devnet: its RPC port, five above the
/// last devnet node's, and a p2p address a thousand above that.
pub fn spare_ports(net: &Devnet) -> (u16, String) {
    let last = net.nodes.last().expect("a devnet node");
    let port = last
        .rpc
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port")
        + 5;
    (port, format!("/ip4/127.0.0.1/tcp/{}", port + 1000))
}

impl Joiner {
    /// Starts a node named `name` in the devnet's directory, on
    /// [`spare_ports`].
    pub fn start(net: &Devnet, name: &str) -> Joiner {
        let home = net.dir.join(name);
        let (port, p2p) = spare_ports(net);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pyralog-testnet"))
            .args(["node", "join", "--home", &home.to_string_lossy()])
            .args(["--genesis", &net.dir.join("genesis.json").to_string_lossy()])
            .args(["--bootnode", &net.nodes[0].p2p])
            .args(["--rpc", &format!("127.0.0.1:{port}"), "--p2p", &p2p])
            .args(["--log-level", "warn"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("join");
        Joiner {
            child,
            rpc: format!("http://127.0.0.1:{port}"),
            p2p,
            home,
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
