//! `pyralog-testnet`: local devnets, genesis files, load and benchmarks.
//!
//! Today it writes genesis files; `up` and `bench` arrive with the running
//! network (issue 3).

use std::io::Write;
use std::path::{Path, PathBuf};

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
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
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
                Output::Json => println!("{summary}"),
                Output::Text => {
                    println!(
                        "wrote {} ({} {}, {} validators)",
                        out.display(),
                        genesis.chain_id,
                        genesis.engine.name(),
                        validators
                    );
                    println!("genesis hash {}", genesis.hash());
                    println!("faucet {}", faucet.address());
                    match &keys_dir {
                        Some(d) => println!("secret keys in {}", d.display()),
                        None => println!("secret keys were not kept (no --keys-dir)"),
                    }
                }
            }
            Ok(())
        }
    }
}

/// Writes a secret seed as hex, readable by its owner only; refuses to overwrite.
fn write_secret(path: &Path, key: &Keypair) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (keys are never overwritten)",
            path.display()
        )
    })?;
    writeln!(f, "{}", pyralog_ledger::Hash(key.seed()).to_hex())?;
    Ok(())
}
