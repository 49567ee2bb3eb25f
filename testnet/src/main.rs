//! `pyralog-testnet`: local devnets, genesis files, load and benchmarks.

use pyralog_testnet::{devnet, write_secret};

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

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use pyralog_ledger::genesis::GenesisFile;
use pyralog_ledger::{Engine, Keypair, devkit};

#[derive(Parser, Debug)]
#[command(
    name = "pyralog-testnet",
    version,
    about = "Pyralog devnets, genesis files, load and benchmarks"
)]
struct Cli {
    /// Print one JSON document on stdout instead of text.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local devnet: every node its own process on loopback.
    ///
    /// Generates a genesis and keys, starts the nodes, waits until a write
    /// through the first node is readable on every node, writes DIR/devnet.json,
    /// prints where things are, and runs until Ctrl-C, then stops every process
    /// it started.
    Up {
        /// How many clusters (validators).
        #[arg(long, default_value_t = 4)]
        clusters: usize,
        /// Nodes per cluster: each cluster is a Raft group whose nodes share
        /// its validator key; the leader runs the engine, and a write to any
        /// node is forwarded to it.
        #[arg(long, default_value_t = 1)]
        nodes_per_cluster: usize,
        /// How the network agrees.
        #[arg(long, value_enum, default_value_t = EngineArg::Pos)]
        engine: EngineArg,
        /// Where the devnet's files go.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// RPC ports are BASE, BASE+1, ...; p2p ports BASE+1000, ...
        #[arg(long, default_value_t = 7070)]
        base_port: u16,
    },
    /// Run a devnet and a load against it, and print the figures.
    ///
    /// Prints accepted writes/s, the time until every node holds a write (p50,
    /// p99), the stamping cost (client side, excluded from the rate), and this
    /// machine's signature and hashing rates measured in the same run. Build
    /// with --release for meaningful figures.
    Bench {
        /// How the network agrees.
        #[arg(long, value_enum, default_value_t = EngineArg::Gossip)]
        engine: EngineArg,
        /// How many clusters.
        #[arg(long, default_value_t = 4)]
        clusters: usize,
        /// Writes to send.
        #[arg(long, default_value_t = 40_000)]
        txs: usize,
        /// Stop sending after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Client threads.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Transactions per request: 1 posts each alone, more uses the bulk
        /// form of POST /tx ({"txs": [...]}).
        #[arg(long, default_value_t = 1)]
        bulk: usize,
        /// Offer this many writes per second (an open loop: write i is sent
        /// at i/RATE seconds, however slowly answers come back). Without it,
        /// each client sends as fast as it gets answers. Use enough --clients
        /// that RATE × the answer time stays below their number.
        #[arg(long)]
        rate: Option<f64>,
        /// RPC ports are BASE, BASE+1, ...; p2p ports BASE+1000, ...
        #[arg(long, default_value_t = 27070)]
        base_port: u16,
    },
    /// Run a node (what `up` starts for each node; the same as `pyralog-node`).
    #[command(hide = true, disable_help_flag = true)]
    Node {
        /// The `pyralog-node` arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Write a genesis file with fresh validator keys and a funded faucet.
    ///
    /// The validators' and the faucet's secret keys go to --keys-dir (files
    /// readable by their owner only); without it they are not kept, which is
    /// what a public genesis whose keys are held elsewhere wants.
    Genesis {
        /// How many validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// How the network agrees.
        #[arg(long, value_enum, default_value_t = EngineArg::Gossip)]
        engine: EngineArg,
        /// Where to write the genesis file.
        #[arg(long)]
        out: PathBuf,
        /// The network's name.
        #[arg(long, default_value = "pyralog-devnet")]
        chain_id: String,
        /// Where to write the secret keys (validator-N.key, faucet.key).
        #[arg(long)]
        keys_dir: Option<PathBuf>,
        /// The faucet's starting balance.
        #[arg(long, default_value_t = 1_000_000_000_000)]
        faucet_balance: u64,
        /// Base TCP port of the validators' p2p addresses on 127.0.0.1.
        #[arg(long, default_value_t = 26656)]
        base_port: u16,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineArg {
    Gossip,
    Pbft,
    Pos,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Gossip => Engine::Gossip,
            EngineArg::Pbft => Engine::Pbft,
            EngineArg::Pos => Engine::Pos,
        }
    }
}

fn main() {
    // `node ...` runs the node itself, with the node's own command line.
    let mut args = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|a| a == "node") {
        let program = args.next().unwrap_or_default();
        pyralog_node::cli::main_from(std::iter::once(program).chain(args.skip(1)));
        return;
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node { .. } => unreachable!("handled in main"),
        Command::Bench {
            engine,
            clusters,
            txs,
            duration,
            clients,
            bulk,
            rate,
            base_port,
        } => {
            let tmp = std::env::temp_dir().join(format!("pyralog-bench-{}", std::process::id()));
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let plan = devnet::Plan {
                clusters,
                nodes_per_cluster: 1,
                engine: engine.into(),
                dir: tmp.clone(),
                base_port,
                min_difficulty: 8,
                exe,
                epoch_length: 0,
            };
            let quiet = cli.output == Output::Json;
            let log = |m: &str| {
                if !quiet {
                    eprintln!("{m}");
                }
            };
            let net = devnet::Devnet::up(&plan, &log)?;
            let load = pyralog_testnet::bench::Load {
                txs,
                clients: clients.max(1),
                sample_every: (txs / 200).max(1),
                duration: duration.map(std::time::Duration::from_secs),
                bulk,
                rate,
                until_final: Engine::from(engine).is_ordered(),
            };
            let report = pyralog_testnet::bench::run(&net, &load, &log);
            drop(net);
            let _ = std::fs::remove_dir_all(&tmp);
            let report = report?;
            match cli.output {
                Output::Json => outln!("{}", report.json()),
                Output::Text => outln!("{}", report.text(Engine::from(engine).name(), clusters)),
            }
            Ok(())
        }
        Command::Up {
            clusters,
            nodes_per_cluster,
            engine,
            dir,
            base_port,
        } => {
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let plan = devnet::Plan {
                clusters,
                nodes_per_cluster,
                engine: engine.into(),
                dir,
                base_port,
                min_difficulty: 8,
                exe,
                epoch_length: 0,
            };
            let quiet = cli.output == Output::Json;
            let mut net = devnet::Devnet::up(&plan, &|m| {
                if !quiet {
                    eprintln!("{m}")
                }
            })?;
            match cli.output {
                Output::Json => outln!("{}", net.json()),
                Output::Text => {
                    outln!("devnet {} is up: {} nodes", net.chain_id, net.nodes.len());
                    for n in &net.nodes {
                        outln!(
                            "  {}  rpc {}  p2p {}  home {}",
                            n.name,
                            n.rpc,
                            n.p2p,
                            n.home.display()
                        );
                    }
                    outln!("devnet.json: {}", net.dir.join("devnet.json").display());
                    outln!(
                        "faucet: {} (key file {})",
                        net.faucet.address(),
                        net.dir.join("keys/faucet.key").display()
                    );
                    outln!();
                    outln!("try:");
                    outln!(
                        "  pyralog keys import faucet {} --insecure-plaintext",
                        net.dir.join("keys/faucet.key").display()
                    );
                    outln!(
                        "  pyralog --node {} put --from faucet hello world --wait commit",
                        net.nodes[0].rpc
                    );
                    outln!(
                        "  pyralog --node {} get faucet hello --proof",
                        net.nodes[net.nodes.len() - 1].rpc
                    );
                    outln!();
                    outln!("Ctrl-C stops the devnet.");
                }
            }
            let stop = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            stop.block_on(async {
                // Ctrl-C or SIGTERM: either way every node is stopped below.
                #[cfg(unix)]
                if let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    return;
                }
                let _ = tokio::signal::ctrl_c().await;
            });
            eprintln!("stopping {} nodes", net.nodes.len());
            net.stop();
            Ok(())
        }
        Command::Genesis {
            validators,
            engine,
            out,
            chain_id,
            keys_dir,
            faucet_balance,
            base_port,
            force,
        } => {
            if validators == 0 {
                bail!("--validators must be at least 1");
            }
            if out.exists() && !force {
                bail!("{} exists; pass --force to replace it", out.display());
            }
            let keys: Vec<Keypair> = (0..validators)
                .map(|_| Keypair::generate())
                .collect::<Result<_, _>>()?;
            let faucet = Keypair::generate()?;
            let vals: Vec<(&Keypair, String)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    (
                        k,
                        format!("/ip4/127.0.0.1/tcp/{}", u32::from(base_port) + i as u32),
                    )
                })
                .collect();
            let mut file: GenesisFile = devkit::genesis_file(
                &chain_id,
                engine.into(),
                devkit::devnet_params(8),
                &[(&faucet, faucet_balance)],
                &vals,
            );
            file.genesis_time =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let genesis = file
                .validate()
                .context("the generated genesis is invalid")?;
            let text = serde_json::to_string_pretty(&file)? + "\n";
            std::fs::write(&out, text)
                .with_context(|| format!("cannot write {}", out.display()))?;
            if let Some(dir) = &keys_dir {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                for (i, k) in keys.iter().enumerate() {
                    write_secret(&dir.join(format!("validator-{i}.key")), k)?;
                }
                write_secret(&dir.join("faucet.key"), &faucet)?;
            }
            let summary = serde_json::json!({
                "genesis": out,
                "chain_id": genesis.chain_id.to_string(),
                "engine": genesis.engine.name(),
                "genesis_hash": genesis.hash().to_hex(),
                "validators": keys.iter().map(|k| k.address().to_human()).collect::<Vec<_>>(),
                "faucet": faucet.address().to_human(),
                "keys_dir": keys_dir,
            });
            match cli.output {
                Output::Json => outln!("{summary}"),
                Output::Text => {
                    outln!(
                        "wrote {} ({} {}, {} validators)",
                        out.display(),
                        genesis.chain_id,
                        genesis.engine.name(),
                        validators
                    );
                    outln!("genesis hash {}", genesis.hash());
                    outln!("faucet {}", faucet.address());
                    match &keys_dir {
                        Some(d) => outln!("secret keys in {}", d.display()),
                        None => outln!("secret keys were not kept (no --keys-dir)"),
                    }
                }
            }
            Ok(())
        }
    }
}
