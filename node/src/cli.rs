//! The `pyralog-node` command line, as a library so that `pyralog-testnet` can
//! run nodes as child processes of its own binary.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `println!` that ends the program quietly when stdout is closed (a pipe into
/// `head`, say) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

use crate::config::Config;
use crate::driver::{Driver, REQUEST_QUEUE};
use crate::home::Home;
use crate::rpc::{RpcState, router};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;

use pyralog_cluster::{Member, MemberConfig, NodeId};
use pyralog_ledger::{GenesisFile, Keypair};
use pyralog_p2p::{Multiaddr, PeerId, Topics};

/// The public testnet's genesis, used when `--genesis` is not given.
const PUBLIC_GENESIS: &str = include_str!("../../genesis.json");

/// The command line of `pyralog-node`.
#[derive(Parser, Debug)]
#[command(
    name = "pyralog-node",
    version,
    about = "The Pyralog daemon: one node of a Pyralog network"
)]
pub struct Cli {
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a home directory: config.toml, node_key, validator_key, data/.
    ///
    /// Refuses to overwrite existing keys.
    Init(InitArgs),
    /// Run the node until SIGINT or SIGTERM, then shut down cleanly.
    Start(StartArgs),
    /// Init (if needed) and start a node that joins a network through a bootnode.
    Join {
        #[command(flatten)]
        start: StartArgs,
        /// The network's genesis file.
        #[arg(long)]
        genesis: PathBuf,
    },
    /// Manage a running node's cluster (the Raft group of nodes that share
    /// one validator key) through any member's RPC.
    ///
    /// To grow a cluster: start the new node with the same validator key
    /// (`init --validator-key`), its own `--cluster-id` and the members as
    /// `--cluster-peer`; then `add-learner` it here and, once it has caught
    /// up, `promote` it.
    Cluster {
        /// A member's RPC.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        rpc: String,
        #[command(subcommand)]
        op: ClusterOp,
    },
    /// Print this node's p2p peer id.
    PeerId {
        /// The home directory.
        #[arg(long, default_value_os_t = default_home())]
        home: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterOp {
    /// Role, term, leader, voters, learners, applied and committed.
    Status,
    /// Add a member as a learner; waits until it has caught up with the log.
    AddLearner {
        /// Its id in the cluster.
        id: u64,
        /// Its p2p address, ending in /p2p/PEER_ID (`pyralog-node peer-id`).
        addr: String,
    },
    /// Make learners voters.
    Promote {
        /// Their ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Remove members (voters or learners).
    Remove {
        /// Their ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Write the cluster's signing history to a file (EIP-3076 in spirit),
    /// to move the validator key to another cluster without double-signing.
    ExportHistory {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a signing history written by `export-history`; refused whole if
    /// it is for another chain or key, or contradicts this cluster's history.
    ImportHistory {
        /// The file.
        file: PathBuf,
    },
}

/// Calls a member's cluster RPC and prints the answer.
fn cluster(rpc: &str, op: ClusterOp) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = |path: &str| format!("{}{path}", rpc.trim_end_matches('/'));
    let sent = match &op {
        ClusterOp::Status | ClusterOp::ExportHistory { .. } => {
            let path = if matches!(op, ClusterOp::Status) {
                "/cluster"
            } else {
                "/cluster/history"
            };
            agent.get(&url(path)).call()
        }
        ClusterOp::AddLearner { id, addr } => agent
            .post(&url("/cluster/learners"))
            .send_json(serde_json::json!({"id": id, "addr": addr})),
        ClusterOp::Promote { ids } => agent
            .post(&url("/cluster/voters"))
            .send_json(serde_json::json!({ "ids": ids })),
        ClusterOp::Remove { ids } => agent
            .post(&url("/cluster/remove"))
            .send_json(serde_json::json!({ "ids": ids })),
        ClusterOp::ImportHistory { file } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            agent
                .post(&url("/cluster/history"))
                .header("content-type", "application/json")
                .send(&bytes[..])
        }
    };
    let mut answer = sent.with_context(|| format!("node unreachable at {rpc}"))?;
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer
        .body_mut()
        .read_json()
        .with_context(|| format!("{rpc} did not answer JSON"))?;
    if status != 200 {
        bail!(
            "{} ({})",
            body["error"].as_str().unwrap_or("the node refused"),
            body["code"].as_str().unwrap_or("error")
        );
    }
    if let ClusterOp::ExportHistory { out } = &op {
        std::fs::write(out, serde_json::to_vec_pretty(&body)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
        outln!("wrote {}", out.display());
        return Ok(());
    }
    outln!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

#[derive(Args, Debug)]
struct InitArgs {
    /// The home directory.
    #[arg(long, default_value_os_t = default_home())]
    home: PathBuf,
    /// The network's genesis file (default: the public testnet's).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// A display name.
    #[arg(long, default_value = "pyralog-node")]
    moniker: String,
    /// Use this validator key file (hex seed) instead of a fresh key: every node
    /// of one cluster shares one validator key.
    #[arg(long)]
    validator_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct StartArgs {
    /// The home directory.
    #[arg(long, default_value_os_t = default_home())]
    home: PathBuf,
    /// Serve the RPC here (overrides config.toml).
    #[arg(long)]
    rpc: Option<SocketAddr>,
    /// Listen for peers here (repeatable; overrides config.toml's list).
    /// TCP, e.g. /ip4/0.0.0.0/tcp/26656, or QUIC, e.g.
    /// /ip4/0.0.0.0/udp/26656/quic-v1; give both to take either.
    #[arg(long)]
    p2p: Vec<Multiaddr>,
    /// Dial this node first (repeatable; adds to config.toml).
    #[arg(long = "bootnode")]
    bootnodes: Vec<Multiaddr>,
    /// Never talk to this peer (repeatable; adds to config.toml).
    #[arg(long = "ban")]
    banned: Vec<PeerId>,
    /// This node's id in its cluster (overrides config.toml; not 0).
    #[arg(long)]
    cluster_id: Option<u64>,
    /// A founding member of this node's cluster, `ID=MULTIADDR` with the
    /// address ending in /p2p/PEER_ID (repeatable; replaces config.toml's
    /// list). Every member of one cluster shares one validator key. A fresh
    /// node whose own id is listed founds the cluster with these members;
    /// one not listed waits for `pyralog-node cluster add-learner`.
    #[arg(long = "cluster-peer", value_name = "ID=MULTIADDR")]
    cluster_peers: Vec<String>,
    /// Log entries between two Raft snapshots (overrides config.toml).
    #[arg(long, value_name = "ENTRIES")]
    snapshot_every: Option<u64>,
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(
        || PathBuf::from(".pyralog"),
        |h| PathBuf::from(h).join(".pyralog"),
    )
}

/// Parses `args` (the first is the program name) and runs the node command,
/// exiting the process with a message and code 1 on error.
pub fn main_from<I, T>(args: I)
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // openraft narrates every election and membership change at info.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{},openraft=warn", cli.log_level))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => init(args),
        Command::Start(args) => start(args),
        Command::Join {
            start: args,
            genesis,
        } => {
            let home = Home::new(&args.home);
            if !home.is_initialized() {
                init(InitArgs {
                    home: args.home.clone(),
                    genesis: Some(genesis),
                    moniker: "pyralog-node".into(),
                    validator_key: None,
                })?;
            }
            if args.bootnodes.is_empty() {
                bail!("join needs --bootnode MULTIADDR");
            }
            start(args)
        }
        Command::Cluster { rpc, op } => cluster(&rpc, op),
        Command::PeerId { home } => {
            let key =
                pyralog_p2p::node_key_from_seed(Home::read_seed(&Home::new(home).node_key())?)?;
            outln!("{}", key.public().to_peer_id());
            Ok(())
        }
    }
}

fn init(args: InitArgs) -> Result<()> {
    let home = Home::new(&args.home);
    let genesis = match args.genesis {
        Some(p) => p,
        None => {
            std::fs::create_dir_all(&args.home)?;
            let p = args.home.join("genesis.public.json");
            std::fs::write(&p, PUBLIC_GENESIS)?;
            p
        }
    };
    let seed = args
        .validator_key
        .as_deref()
        .map(Home::read_seed)
        .transpose()?;
    home.init(&genesis, &args.moniker, seed)?;
    let validator = Keypair::from_seed(&Home::read_seed(&home.validator_key())?);
    let peer = pyralog_p2p::node_key_from_seed(Home::read_seed(&home.node_key())?)?
        .public()
        .to_peer_id();
    outln!("initialized {}", home.root().display());
    outln!("node id       {peer}");
    outln!("validator key {}", validator.address());
    Ok(())
}

fn start(args: StartArgs) -> Result<()> {
    let home = Home::new(&args.home);
    if !home.is_initialized() {
        bail!(
            "{} is not initialized: run `pyralog-node init --home {}` first",
            home.root().display(),
            home.root().display()
        );
    }
    let mut config = Config::load(&home.config())?;
    if let Some(rpc) = args.rpc {
        config.rpc.listen = rpc;
    }
    if !args.p2p.is_empty() {
        config.p2p.listen = args.p2p.iter().map(ToString::to_string).collect();
    }
    config
        .p2p
        .bootnodes
        .extend(args.bootnodes.iter().map(ToString::to_string));
    config
        .p2p
        .banned
        .extend(args.banned.iter().map(ToString::to_string));

    if let Some(id) = args.cluster_id {
        config.cluster.id = id;
    }
    if !args.cluster_peers.is_empty() {
        config.cluster.peers = args.cluster_peers.clone();
    }
    if let Some(n) = args.snapshot_every {
        config.cluster.snapshot_every = n;
    }
    let founders = cluster_peers(&config.cluster.peers)?;
    if config.cluster.id == 0 {
        bail!("the cluster id must not be 0 (set [cluster] id in config.toml or --cluster-id)");
    }

    let text = std::fs::read_to_string(home.genesis())
        .with_context(|| format!("cannot read {}", home.genesis().display()))?;
    let file = GenesisFile::parse(&text)?;
    let genesis = file.validate()?;
    let validator = Keypair::from_seed(&Home::read_seed(&home.validator_key())?);
    let node_key = pyralog_p2p::node_key_from_seed(Home::read_seed(&home.node_key())?)?;
    let peer_id = node_key.public().to_peer_id();

    let parse_all = |v: &[String], what: &str| -> Result<Vec<Multiaddr>> {
        v.iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("bad {what} multiaddress {s:?}"))
            })
            .collect()
    };
    let listen = parse_all(&config.p2p.listen, "p2p listen")?;
    let net_config = pyralog_p2p::Config {
        key: node_key,
        listen: listen.clone(),
        bootnodes: parse_all(&config.p2p.bootnodes, "bootnode")?,
        topics: Topics::new(&genesis.chain_id, &genesis.hash()),
        banned: config
            .p2p
            .banned
            .iter()
            .map(|s| {
                s.parse()
                    .with_context(|| format!("bad peer id {s:?} in the ban list"))
            })
            .collect::<Result<_>>()?,
        limits: pyralog_p2p::Limits::default(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let net = pyralog_p2p::Network::new(net_config)?.spawn();
        let member = start_member(
            &home,
            file,
            &config.cluster,
            &founders,
            &net,
            listen.first(),
            peer_id,
        )
        .await?;
        let validator_address = validator.address();
        let driver = Driver::new(
            std::sync::Arc::clone(&member),
            net,
            validator,
            config.gossip.engine(),
            config.moniker.clone(),
        )?;
        let (tx, rx) = tokio::sync::mpsc::channel(REQUEST_QUEUE);
        let state = RpcState {
            driver: tx,
            member: std::sync::Arc::clone(&member),
            validator: validator_address,
            min_difficulty: genesis.params.pow.min_difficulty,
            max_difficulty: genesis.params.pow.max_difficulty,
            keys: std::sync::Arc::new(std::sync::Mutex::new(pyralog_ledger::keys::KeyCache::new(
                crate::driver::KEY_CACHE,
            ))),
            pow: pyralog_ledger::PowKey::for_chain(&genesis.chain_id),
            chain: genesis.chain_id.clone(),
            sql_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(
                config.sql.max_concurrent.max(1),
            )),
            sql: config.sql.clone(),
            sql_cache: crate::query::sql_cache(&config.sql),
            client_txs: std::sync::Arc::new(std::sync::Mutex::new(crate::limit::PerSecond::new(
                config.rpc.client_txs_per_sec,
            ))),
        };
        let listener = tokio::net::TcpListener::bind(config.rpc.listen)
            .await
            .with_context(|| format!("cannot serve the RPC on {}", config.rpc.listen))?;
        tracing::info!(rpc = %config.rpc.listen, chain = %genesis.chain_id, "node started");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut stop_driver = stop_rx.clone();
        let driver_task = tokio::spawn(driver.run(rx, async move {
            let _ = stop_driver.changed().await;
        }));
        let mut stop_rpc = stop_rx;
        let service = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(async move {
            let _ = stop_rpc.changed().await;
        });
        let server_task = tokio::spawn(async move { server.await });
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = server_task.await;
        let _ = driver_task.await;
        if let Err(error) = member.shutdown().await {
            tracing::warn!(%error, "raft did not stop cleanly");
        }
        anyhow::Ok(())
    })
}

/// Parses `ID=MULTIADDR` cluster members.
fn cluster_peers(list: &[String]) -> Result<BTreeMap<NodeId, (Multiaddr, PeerId)>> {
    let mut out = BTreeMap::new();
    for item in list {
        let (id, addr) = item
            .split_once('=')
            .with_context(|| format!("cluster peer {item:?} is not ID=MULTIADDR"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("cluster peer {item:?}: {id:?} is not a member id"))?;
        if id == 0 {
            bail!("cluster peer {item:?}: member ids start at 1");
        }
        let addr: Multiaddr = addr
            .trim()
            .parse()
            .with_context(|| format!("cluster peer {item:?}: bad multiaddress"))?;
        let Some(peer) = pyralog_p2p::peer_of(&addr) else {
            bail!("cluster peer {item:?}: the address must end in /p2p/PEER_ID");
        };
        if out.insert(id, (addr.clone(), peer)).is_some() {
            bail!("cluster peer id {id} is listed twice");
        }
    }
    Ok(out)
}

/// Opens this node's cluster member (its Raft log beside the ledger), serves
/// the cluster's Raft calls over the swarm, and founds the cluster if this
/// node is fresh and a founder.
async fn start_member(
    home: &Home,
    genesis: GenesisFile,
    cluster: &crate::config::ClusterConfig,
    founders: &BTreeMap<NodeId, (Multiaddr, PeerId)>,
    net: &pyralog_p2p::NetHandle,
    listen: Option<&Multiaddr>,
    peer_id: PeerId,
) -> Result<std::sync::Arc<Member>> {
    use pyralog_cluster::network::p2p::{P2pTransport, serve};
    let data = home
        .ledger()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let commander = net.commander();
    let config =
        MemberConfig::new(cluster.id, data, genesis).with_snapshot_every(cluster.snapshot_every);
    let member = Member::start(
        config,
        std::sync::Arc::new(P2pTransport::new(commander.clone())),
    )
    .await
    .context("cannot open the ledger and the cluster's log")?;
    let peers: BTreeMap<PeerId, NodeId> = founders.iter().map(|(id, (_, p))| (*p, *id)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(pyralog_p2p::raft::INBOX);
    commander.command(pyralog_p2p::NetCommand::RaftServe(tx));
    tokio::spawn(serve(std::sync::Arc::clone(&member), peers, rx));
    let mut members = BTreeMap::new();
    if founders.is_empty() {
        // A cluster of one: nobody dials this address.
        let own = listen.map_or_else(String::new, |a| format!("{a}/p2p/{peer_id}"));
        members.insert(cluster.id, pyralog_cluster::MemberAddr { addr: own });
    } else if founders.contains_key(&cluster.id) {
        for (id, (addr, _)) in founders {
            members.insert(
                *id,
                pyralog_cluster::MemberAddr {
                    addr: addr.to_string(),
                },
            );
        }
    }
    if members.is_empty() {
        tracing::info!(
            id = cluster.id,
            "not a founder: waiting to be added to the cluster"
        );
    } else if member
        .found(members)
        .await
        .context("cannot found the cluster")?
    {
        tracing::info!(id = cluster.id, "founded the cluster");
    }
    Ok(member)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
