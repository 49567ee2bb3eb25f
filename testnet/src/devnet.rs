//! `pyralog-testnet up`: a devnet of node processes on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use pyralog_ledger::{Encode, Engine, Keypair, devkit};
use serde_json::{Value, json};

/// One node of a devnet.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its name (`node-0`, ...).
    pub name: String,
    /// Its cluster's index.
    pub cluster: usize,
    /// Its id inside its cluster (1, 2, ...).
    pub member: u64,
    /// Its RPC URL.
    pub rpc: String,
    /// Its p2p multiaddress, with `/p2p/<peer id>`.
    pub p2p: String,
    /// Its home directory.
    pub home: PathBuf,
}

/// A running devnet; dropping it stops every process it started.
#[derive(Debug)]
pub struct Devnet {
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// The node processes, in node order.
    pub children: Vec<Option<Child>>,
    /// The devnet's directory.
    pub dir: PathBuf,
    /// The faucet's key.
    pub faucet: Keypair,
    /// The chain id.
    pub chain_id: String,
    /// The binary that runs the nodes.
    pub exe: PathBuf,
    /// The engine.
    pub engine: Engine,
    /// Per node, the peers it refuses (set by [`Devnet::restart_with_bans`]).
    pub banned: Vec<Vec<String>>,
    /// Per node, environment variables for its next start (tests' fault
    /// switches).
    pub env: Vec<Vec<(String, String)>>,
    /// Per node, more `pyralog-node start` flags for its next start.
    pub args: Vec<Vec<String>>,
}

/// How to lay a devnet out.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Clusters (one validator each).
    pub clusters: usize,
    /// Nodes in each cluster (one Raft group sharing the cluster's
    /// validator key).
    pub nodes_per_cluster: usize,
    /// The engine.
    pub engine: Engine,
    /// Where its files go.
    pub dir: PathBuf,
    /// The first port: RPC ports are `base + i`, p2p ports `base + 1000 + i`.
    pub base_port: u16,
    /// Stamp difficulty floor.
    pub min_difficulty: u32,
    /// The `pyralog-testnet` binary that runs the nodes (`pyralog-testnet node ...`).
    pub exe: PathBuf,
    /// Blocks per epoch (0: 10,000, or 1,000 under `pos`, where an epoch is
    /// when stake changes take effect).
    pub epoch_length: u64,
}

fn node_command(exe: &Path) -> Command {
    let mut c = Command::new(exe);
    c.arg("node");
    c
}

/// Runs `pyralog-node ARGS` as `pyralog-testnet node ARGS` and waits.
fn node_once(exe: &Path, args: &[&str]) -> Result<String> {
    let out = node_command(exe)
        .args(args)
        .output()
        .context("cannot run the node binary")?;
    if !out.status.success() {
        bail!(
            "pyralog-node {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Devnet {
    /// Lays out and starts the devnet; returns once every node answers and a
    /// write through the first node is readable on every node.
    pub fn up(plan: &Plan, log: &dyn Fn(&str)) -> Result<Devnet> {
        if plan.engine != Engine::Gossip && plan.clusters < 4 {
            bail!(
                "{} needs at least 4 validators (n = 3f+1 with f = 1); got --clusters {}",
                plan.engine.name(),
                plan.clusters
            );
        }
        if plan.clusters == 0 {
            bail!("--clusters must be at least 1");
        }
        if plan.nodes_per_cluster == 0 || plan.nodes_per_cluster > 7 {
            bail!(
                "--nodes-per-cluster must be 1 to 7; got {}",
                plan.nodes_per_cluster
            );
        }
        let per = plan.nodes_per_cluster;
        if plan.dir.join("devnet.json").exists() {
            bail!(
                "{} already holds a devnet; remove it or pass another --dir",
                plan.dir.display()
            );
        }
        let exe = plan.exe.clone();
        std::fs::create_dir_all(plan.dir.join("keys"))
            .with_context(|| format!("cannot create {}", plan.dir.display()))?;
        let dir = plan.dir.canonicalize()?;

        let validators: Vec<Keypair> = (0..plan.clusters)
            .map(|_| Keypair::generate())
            .collect::<Result<_, _>>()?;
        let faucet = Keypair::generate()?;
        let p2p_port = |i: usize| u32::from(plan.base_port) + 1000 + i as u32;
        let rpc_port = |i: usize| u32::from(plan.base_port) + i as u32;
        let vals: Vec<(&Keypair, String)> = validators
            .iter()
            .enumerate()
            .map(|(i, k)| (k, format!("/ip4/127.0.0.1/tcp/{}", p2p_port(i * per))))
            .collect();
        let chain_id = "pyralog-devnet";
        let mut params = devkit::devnet_params(plan.min_difficulty);
        // Epochs of ordered chains count blocks; PBFT's blocks come fast and
        // small when the load is light, so a devnet's epochs are long enough
        // that transactions signed a few minutes ago are still valid. Under
        // proof of stake an epoch is also when stake takes effect: shorter,
        // but not so short that a loaded devnet (hundreds of small blocks a
        // second) expires what a client signed a few seconds ago.
        params.epoch_length = match (plan.epoch_length, plan.engine) {
            (0, Engine::Pos) => 1_000,
            (0, _) => 10_000,
            (n, _) => n,
        };
        let mut file = devkit::genesis_file(
            chain_id,
            plan.engine,
            params,
            &[(&faucet, 1_000_000_000_000)],
            &vals,
        );
        file.genesis_time =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        file.validate()?;
        let genesis = dir.join("genesis.json");
        std::fs::write(&genesis, serde_json::to_string_pretty(&file)? + "\n")?;
        crate::write_secret(&dir.join("keys").join("faucet.key"), &faucet)?;

        let mut nodes = Vec::new();
        for (c, key) in validators.iter().enumerate() {
            let vkey = dir.join("keys").join(format!("validator-{c}.key"));
            crate::write_secret(&vkey, key)?;
            for m in 0..per {
                let i = c * per + m;
                let name = if per == 1 {
                    format!("node-{c}")
                } else {
                    format!("node-{c}-{m}")
                };
                let home = dir.join(&name);
                node_once(
                    &exe,
                    &[
                        "init",
                        "--home",
                        &home.to_string_lossy(),
                        "--genesis",
                        &genesis.to_string_lossy(),
                        "--moniker",
                        &name,
                        "--validator-key",
                        &vkey.to_string_lossy(),
                    ],
                )?;
                let peer = node_once(&exe, &["peer-id", "--home", &home.to_string_lossy()])?
                    .trim()
                    .to_owned();
                nodes.push(NodeSpec {
                    name,
                    cluster: c,
                    member: m as u64 + 1,
                    rpc: format!("http://127.0.0.1:{}", rpc_port(i)),
                    p2p: format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", p2p_port(i)),
                    home,
                });
            }
        }
        let mut net = Devnet {
            nodes,
            children: Vec::new(),
            dir: dir.clone(),
            faucet,
            chain_id: chain_id.into(),
            exe,
            engine: plan.engine,
            banned: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
        };
        for i in 0..net.nodes.len() {
            let child = net.spawn(i)?;
            net.children.push(Some(child));
        }
        log(&format!(
            "started {} nodes; waiting for the network to make progress",
            net.nodes.len()
        ));
        net.wait_ready(Duration::from_secs(60))?;
        net.write_json()?;
        Ok(net)
    }

    /// Starts node `i` (again).
    pub fn spawn(&self, i: usize) -> Result<Child> {
        let exe = self.exe.clone();
        let n = &self.nodes[i];
        let rpc = n.rpc.trim_start_matches("http://").to_owned();
        let p2p = n.p2p.split("/p2p/").next().unwrap_or_default().to_owned();
        // QUIC on the same port number as TCP (UDP's own port space).
        let quic = p2p.replace("/tcp/", "/udp/") + "/quic-v1";
        let mut cmd = node_command(&exe);
        cmd.args([
            "start",
            "--home",
            &n.home.to_string_lossy(),
            "--rpc",
            &rpc,
            "--p2p",
            &p2p,
            "--p2p",
            &quic,
            "--log-level",
            "warn",
        ]);
        for (j, other) in self.nodes.iter().enumerate() {
            if j != i {
                cmd.args(["--bootnode", &other.p2p]);
            }
        }
        for peer in self.banned.get(i).into_iter().flatten() {
            cmd.args(["--ban", peer]);
        }
        for (k, v) in self.env.get(i).into_iter().flatten() {
            cmd.env(k, v);
        }
        cmd.args(self.args.get(i).into_iter().flatten());
        // The members of its cluster, itself included (they found it
        // together).
        let members: Vec<&NodeSpec> = self
            .nodes
            .iter()
            .filter(|o| o.cluster == n.cluster)
            .collect();
        if members.len() > 1 {
            cmd.args(["--cluster-id", &n.member.to_string()]);
            for m in members {
                cmd.args(["--cluster-peer", &format!("{}={}", m.member, m.p2p)]);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", n.name)))?;
        cmd.stdout(Stdio::null()).stderr(log);
        cmd.spawn()
            .with_context(|| format!("cannot start {}", n.name))
    }

    fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        for n in &self.nodes {
            wait_up(&n.rpc, deadline.saturating_duration_since(Instant::now())).with_context(
                || {
                    format!(
                        "{} did not answer on {} (see {}.log)",
                        n.name, n.rpc, n.name
                    )
                },
            )?;
        }
        // Progress: a write through the first node reaches every node.
        let key = format!("devnet-ready-{}", std::process::id());
        put(&self.nodes[0].rpc, &self.faucet, &key, "ok", true)?;
        for n in &self.nodes {
            loop {
                if get(&n.rpc, &format!("/kv/{}/{key}", self.faucet.address())).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} never received the first write (see {}.log)",
                        n.name,
                        n.name
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// `devnet.json`.
    pub fn json(&self) -> Value {
        json!({
            "chain_id": self.chain_id,
            "engine": self.engine.name(),
            "genesis": self.dir.join("genesis.json"),
            "nodes": self.nodes.iter().map(|n| json!({"name": n.name, "cluster": n.cluster, "member": n.member, "rpc": n.rpc, "p2p": n.p2p, "home": n.home})).collect::<Vec<_>>(),
            "faucet": {"key_file": self.dir.join("keys").join("faucet.key"), "address": self.faucet.address().to_human()},
        })
    }

    fn write_json(&self) -> Result<()> {
        std::fs::write(
            self.dir.join("devnet.json"),
            serde_json::to_string_pretty(&self.json())? + "\n",
        )?;
        Ok(())
    }

    /// Starts node `i` again after a kill or stop.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        let child = self.spawn(i)?;
        self.children[i] = Some(child);
        wait_up(&self.nodes[i].rpc, Duration::from_secs(30))
    }

    /// Restarts every node so that nodes in different `groups` refuse each
    /// other (a partition); one group holding every node heals it.
    pub fn restart_with_bans(&mut self, groups: &[Vec<usize>]) -> Result<()> {
        let peer_of = |i: usize| {
            self.nodes[i]
                .p2p
                .rsplit("/p2p/")
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        self.banned = (0..self.nodes.len())
            .map(|i| {
                (0..self.nodes.len())
                    .filter(|j| *j != i && group_of(*j) != group_of(i))
                    .map(peer_of)
                    .collect()
            })
            .collect();
        for i in 0..self.nodes.len() {
            let _ = self.stop_one(i);
        }
        for i in 0..self.nodes.len() {
            let child = self.spawn(i)?;
            self.children[i] = Some(child);
        }
        for n in &self.nodes {
            wait_up(&n.rpc, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Stops node `i` cleanly (SIGTERM, then SIGKILL after a grace period).
    /// Whether it exited by itself within the grace period (true when it was
    /// not running).
    pub fn stop_one(&mut self, i: usize) -> bool {
        match self.children[i].take() {
            Some(mut child) => {
                terminate(&child);
                reap(&mut child, Instant::now() + STOP_GRACE)
            }
            None => true,
        }
    }

    /// Sets the environment of node `i` for its next start.
    pub fn set_env(&mut self, i: usize, vars: &[(&str, &str)]) {
        if self.env.len() < self.nodes.len() {
            self.env.resize(self.nodes.len(), Vec::new());
        }
        self.env[i] = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    /// Adds `pyralog-node start` flags to node `i`'s next starts.
    pub fn set_args(&mut self, i: usize, args: &[&str]) {
        if self.args.len() < self.nodes.len() {
            self.args.resize(self.nodes.len(), Vec::new());
        }
        self.args[i] = args.iter().map(|a| (*a).to_owned()).collect();
    }

    /// Whether node `i`'s process has ended (it is then forgotten, so
    /// [`Devnet::restart`] starts it afresh).
    pub fn exited(&mut self, i: usize) -> bool {
        let gone = match self.children[i].as_mut() {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        };
        if gone {
            self.children[i] = None;
        }
        gone
    }

    /// Stops node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.children[i].take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Stops every node: SIGTERM to all, then SIGKILL to any still running
    /// after the grace period.
    pub fn stop(&mut self) {
        for c in self.children.iter().flatten() {
            terminate(c);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in self.children.iter_mut() {
            if let Some(mut child) = c.take() {
                reap(&mut child, deadline);
            }
        }
    }
}

/// How long a node gets to shut down cleanly before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Waits for `child` to exit until `deadline`, then kills it if it has not;
/// whether it exited by itself.
fn reap(child: &mut Child, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn terminate(child: &Child) {
    #[cfg(unix)]
    {
        // SIGTERM: the node shuts down cleanly. (`kill` is the portable way
        // without unsafe code or another crate.)
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// An HTTP agent for talking to nodes (it keeps connections open).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Waits until the node at `rpc` answers `/status`.
pub fn wait_up(rpc: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while get(rpc, "/status").is_err() {
        if Instant::now() > deadline {
            bail!("{rpc} did not come up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `GET rpc+path`; errors on anything but 200.
pub fn get(rpc: &str, path: &str) -> Result<Value> {
    let mut r = agent().get(&format!("{rpc}{path}")).call()?;
    let status = r.status().as_u16();
    let v: Value = r.body_mut().read_json()?;
    if status != 200 {
        bail!("{rpc}{path}: {status} {v}");
    }
    Ok(v)
}

/// Posts a transaction's hex; returns the status code and the answer.
pub fn post_tx(rpc: &str, tx_hex: &str, wait: bool) -> Result<(u16, Value)> {
    post_tx_with(&agent(), rpc, tx_hex, wait)
}

/// [`post_tx`] through `agent`, reusing its connections.
pub fn post_tx_with(
    agent: &ureq::Agent,
    rpc: &str,
    tx_hex: &str,
    wait: bool,
) -> Result<(u16, Value)> {
    let path = if wait { "/tx?wait=commit" } else { "/tx" };
    let mut r = agent
        .post(&format!("{rpc}{path}"))
        .send_json(json!({ "tx": tx_hex }))?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_json()?))
}

/// What a client needs from a node to build a transaction: the chain id, the
/// current epoch and the stamp difficulty it requires.
pub fn chain_now(rpc: &str) -> Result<(pyralog_ledger::ChainId, u64, u32)> {
    let status = get(rpc, "/status")?;
    let chain = status["chain_id"]
        .as_str()
        .ok_or_else(|| anyhow!("{rpc}/status has no chain_id"))?
        .parse()?;
    let epoch = status["epoch"]
        .as_u64()
        .ok_or_else(|| anyhow!("{rpc}/status has no epoch"))?;
    let bits = status["pow_difficulty"].as_u64().unwrap_or(0) as u32;
    Ok((chain, epoch, bits))
}

/// The next nonce of `signer`'s account, as `rpc` sees it.
pub fn nonce_of(rpc: &str, signer: &Keypair) -> Result<u64> {
    let account = get(rpc, &format!("/account/{}", signer.address()))?;
    Ok(account["nonce"].as_u64().unwrap_or(0))
}

/// Builds, stamps and submits a transfer of `amount` from `signer` to `to`
/// through `rpc`, waiting until it is final.
pub fn transfer(
    rpc: &str,
    signer: &Keypair,
    to: pyralog_ledger::Address,
    amount: u64,
) -> Result<(u16, Value)> {
    send(
        rpc,
        signer,
        pyralog_ledger::Payload::Transfer { to, amount },
    )
}

/// Builds, stamps and submits `payload` from `signer` (its next nonce, the
/// node's epoch and difficulty) through `rpc`, waiting until it is committed.
pub fn send(rpc: &str, signer: &Keypair, payload: pyralog_ledger::Payload) -> Result<(u16, Value)> {
    let (chain, epoch, bits) = chain_now(rpc)?;
    let tx = devkit::tx(&chain, signer, nonce_of(rpc, signer)?, epoch, payload, bits);
    post_tx(rpc, &hex::encode(tx.to_bytes()), true)
}

/// Builds, stamps and submits a put of `key` = `value` by `signer` through `rpc`.
pub fn put(rpc: &str, signer: &Keypair, key: &str, value: &str, wait: bool) -> Result<Value> {
    let (chain, epoch, bits) = chain_now(rpc)?;
    let tx = devkit::tx(
        &chain,
        signer,
        nonce_of(rpc, signer)?,
        epoch,
        devkit::put(signer, key.as_bytes(), value.as_bytes()),
        bits,
    );
    let (code, v) = post_tx(rpc, &hex::encode(tx.to_bytes()), wait)?;
    if code != 200 {
        bail!("put refused: {code} {v}");
    }
    Ok(v)
}
