//! `pyralog`: the Pyralog wallet: keys, writes, reads with proofs, status.
//!
//! This file owns the terminal: arguments, passphrase prompts and printing.
//! Keys are kept by [`pyralog_wallet::keystore`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use pyralog_ledger::Keypair;
use pyralog_wallet::keystore::{self, KeyInfo, Keystore, Protection};
use pyralog_wallet::timelock as tl;
use serde_json::json;
use zeroize::Zeroizing;

/// The environment variable a passphrase is read from before prompting.
const PASSPHRASE_ENV: &str = "PYRALOG_PASSPHRASE";

#[derive(Parser, Debug)]
#[command(
    name = "pyralog",
    version,
    about = "Pyralog wallet: keys, transactions, queries",
    long_about = "Pyralog wallet: keys, transactions, queries.\n\n\
        Keys live in HOME/keys/, one file per key, sealed under a passphrase \
        (argon2id + ChaCha20-Poly1305). The passphrase is read from \
        PYRALOG_PASSPHRASE if it is set, and otherwise prompted for on the terminal."
)]
struct Cli {
    /// The wallet's home directory; keys live in HOME/keys/ [default: ~/.pyralog].
    #[arg(long, global = true, env = "PYRALOG_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// The node's RPC address, for commands that talk to a node.
    #[arg(
        long,
        global = true,
        env = "PYRALOG_NODE",
        value_name = "URL",
        default_value = "http://127.0.0.1:7070"
    )]
    node: String,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum QueryFormat {
    Table,
    Json,
    Csv,
    Arrow,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, show, import and export keys.
    ///
    /// Each key is one file, HOME/keys/NAME.json, readable by its owner only,
    /// with the secret seed sealed under a passphrase. Set PYRALOG_PASSPHRASE
    /// to give the passphrase without a prompt (scripts, CI).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show the node's status (GET /status).
    Status,
    /// Show an account's balance, nonce and stake.
    ///
    /// Example: pyralog balance alice   (a key name or an address)
    Balance {
        /// An address, or the name of a key in this wallet.
        who: String,
    },
    /// Move funds to another address (needs an ordering engine, e.g. pbft).
    ///
    /// The transaction takes the sender's next nonce from the node, is stamped
    /// at the node's required difficulty and signed. With --wait final the
    /// command returns once the block holding it is final (or says why the
    /// transfer failed, e.g. an insufficient balance).
    ///
    /// Example: pyralog transfer --from alice --to pyr2Qd... --amount 100 --wait final
    Transfer {
        /// The key that pays.
        #[arg(long)]
        from: String,
        /// Who receives: an address, or the name of a key in this wallet.
        #[arg(long)]
        to: String,
        /// How much.
        #[arg(long)]
        amount: u64,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the transfer is final.
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
    /// Register a cluster's validator key, so stake can be bonded to it
    /// (proof-of-stake networks).
    #[command(subcommand)]
    Validator(ValidatorCommand),
    /// Bond stake to a validator: yours (self-bond) or another's (delegation).
    ///
    /// The coins leave the balance at once; the validator's voting power
    /// follows at the next epoch boundary.
    ///
    /// Example: pyralog stake --from alice --validator pyr3Fv... --amount 5000 --wait final
    Stake {
        /// The key that bonds (and pays).
        #[arg(long)]
        from: String,
        /// The validator: its key's address, or the name of a key in this wallet.
        #[arg(long)]
        validator: String,
        /// How much.
        #[arg(long)]
        amount: u64,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the transaction is final.
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
    /// Start unbonding stake from a validator.
    ///
    /// The coins come back after the unbonding period (counted in epochs);
    /// until then a slash of the validator still cuts them.
    ///
    /// Example: pyralog unstake --from alice --validator pyr3Fv... --amount 1000
    Unstake {
        /// The key that bonded.
        #[arg(long)]
        from: String,
        /// The validator: its key's address, or the name of a key in this wallet.
        #[arg(long)]
        validator: String,
        /// How much.
        #[arg(long)]
        amount: u64,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the transaction is final.
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
    /// Ask for your validator to leave jail after a downtime slash (effective
    /// at the next epoch boundary). Sent by the account that registered it.
    ///
    /// Example: pyralog unjail --from alice
    Unjail {
        /// The validator's operator (the key that registered it).
        #[arg(long)]
        from: String,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the transaction is final.
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
    /// The validator set: addresses, stakes, and which one leads.
    Validators,
    /// SQL over the node's state, read from one snapshot.
    ///
    /// Tables: accounts, records, validators, blocks, transactions, batches,
    /// tip. Read-only (SELECT, WITH, VALUES, EXPLAIN) and bounded by the
    /// node's limits on time, rows and memory. Prints a table, then the height
    /// and state root the answer was read at; -o json prints the node's JSON
    /// answer.
    Query {
        /// The query, e.g. "SELECT address, balance FROM accounts ORDER BY balance DESC LIMIT 10".
        sql: String,
        /// How to print the answer (arrow: the node's Arrow IPC stream, unchanged).
        #[arg(long, value_enum)]
        format: Option<QueryFormat>,
        /// Write the answer to FILE instead of stdout (needed for arrow on a terminal).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write a record into your own namespace, stamped and signed.
    ///
    /// The stamp's difficulty is the node's required difficulty unless
    /// --pow-bits asks for more (more work, served first). Prints the stamp's
    /// bits and the time it took.
    ///
    /// With --sealed-for, the value is sealed in a time-lock puzzle first (see
    /// `pyralog timelock seal --help`): the record holds the sealed bytes, which
    /// anyone can fetch and open after about that long of sequential work; a
    /// TimelockReveal (`pyralog timelock reveal`) then makes the plain value
    /// the record's, on networks with an ordering engine.
    ///
    /// Example: pyralog put --from alice greeting "hello" --wait commit
    ///
    /// Example: pyralog put --from alice bid --sealed-for 1h "42"
    Put {
        /// The key that signs (and whose namespace is written).
        #[arg(long)]
        from: String,
        /// The record's key.
        key: String,
        /// The record's value.
        value: String,
        /// Seal the value for about this long (30s, 10m, 2h, 1day) of
        /// sequential squarings.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        sealed_for: Option<std::time::Duration>,
        /// With --sealed-for: the squarings per second the delay is computed
        /// for [default: measured on this machine].
        #[arg(long, value_name = "SQUARINGS_PER_SEC", requires = "sealed_for")]
        rate: Option<u64>,
        /// With --sealed-for: bits of the puzzle's modulus.
        #[arg(long, default_value_t = pyralog_consensus::timelock::DEFAULT_BITS, requires = "sealed_for")]
        bits: u32,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the write is committed (or finalized, where the engine finalizes).
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
    /// Read a record; with --proof, verify its Merkle proof locally.
    ///
    /// Example: pyralog get pyr2Qd... greeting --proof
    Get {
        /// Whose record: an address or a key name.
        address: String,
        /// The record's key.
        key: String,
        /// Fetch a Merkle proof and check it against the state root here.
        #[arg(long)]
        proof: bool,
    },
    /// Proof of work: this machine's stamping rate.
    #[command(subcommand)]
    Pow(PowCommand),
    /// Time-lock puzzles: seal data that anyone can open, but only after a
    /// set amount of sequential work.
    ///
    /// A puzzle (Rivest, Shamir and Wagner, 1996) is a modulus N = pq and a
    /// number t: its answer 2^(2^t) mod N takes t squarings one after another,
    /// which more cores do not speed up, unless you know p and q. Sealing knows
    /// them and takes milliseconds; opening takes the t squarings.
    #[command(subcommand)]
    Timelock(TimelockCommand),
    /// Delete a record from your own namespace.
    ///
    /// Example: pyralog delete --from alice greeting
    Delete {
        /// The key that signs.
        #[arg(long)]
        from: String,
        /// The record's key.
        key: String,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the delete is committed.
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
}

/// Validator commands.
#[derive(Subcommand, Debug)]
enum ValidatorCommand {
    /// Register a cluster's validator key, with your account as its operator.
    ///
    /// FILE is the cluster's `validator_key` (64 hex digits of its seed, in
    /// the node's home directory); only its public key is sent. When the node
    /// at --node is that cluster, its p2p address and moniker are the
    /// defaults.
    ///
    /// Example: pyralog validator register --from alice --validator-key ~/.pyralog-node/validator_key
    Register {
        /// The operator: the account that registers (and may unjail) it.
        #[arg(long)]
        from: String,
        /// The cluster's validator key file.
        #[arg(long, value_name = "FILE")]
        validator_key: PathBuf,
        /// Where peers reach it, e.g. /ip4/203.0.113.7/tcp/26656.
        #[arg(long, value_name = "MULTIADDR")]
        p2p: Option<String>,
        /// A display name (1 to 64 bytes).
        #[arg(long)]
        moniker: Option<String>,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the registration is final.
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
}

/// Proof-of-work commands.
#[derive(Subcommand, Debug)]
enum PowCommand {
    /// Measure this machine's stamping rate on every core and show the
    /// expected time to stamp at each difficulty.
    ///
    /// Example: pyralog pow bench --seconds 2
    Bench {
        /// How long to measure.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
}

/// Time-lock commands.
#[derive(Subcommand, Debug)]
enum TimelockCommand {
    /// Seal a file so that opening it takes about DELAY of sequential work.
    ///
    /// The number of squarings is DELAY times the rate: this machine's, as
    /// measured for half a second, unless --rate states one. The delay holds
    /// for a solver as fast as that rate; faster hardware opens sooner (GMP is
    /// about 1.7x num-bigint, dedicated hardware 20x or more), so for a
    /// deadline against a determined opener, state a higher --rate.
    ///
    /// The output file holds the puzzle (N, the base, t), a blake3 commitment
    /// to its answer, and the data encrypted with ChaCha20-Poly1305 under a key
    /// derived from the answer. p and q are not kept.
    ///
    /// Example: pyralog timelock seal --delay 30s --in bid.txt --out bid.sealed
    Seal {
        /// How long opening should take: 30s, 10m, 2h, 1day...
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: std::time::Duration,
        /// The file to seal (at most 1 MiB).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the sealed file.
        #[arg(long = "out", value_name = "FILE")]
        out: PathBuf,
        /// Squarings per second the delay is computed for [default: measured
        /// on this machine].
        #[arg(long, value_name = "SQUARINGS_PER_SEC")]
        rate: Option<u64>,
        /// Bits of the modulus: even, 1024 to 4096.
        #[arg(long, default_value_t = pyralog_consensus::timelock::DEFAULT_BITS)]
        bits: u32,
    },
    /// Open a sealed file by doing its squarings, with a progress bar.
    ///
    /// Progress is saved every 5 s to FILE.progress; run the same command
    /// again after an interruption and it resumes from there. The side file is
    /// removed once the data is out. The answer is checked against the file's
    /// commitment, then the data is decrypted: a tampered file fails with
    /// "commitment mismatch" or "decryption failed".
    ///
    /// Example: pyralog timelock open --in bid.sealed --out bid.txt
    Open {
        /// The sealed file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the data [default: stdout].
        #[arg(long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        /// Start from scratch even if a progress file exists (and overwrite it).
        #[arg(long)]
        restart: bool,
    },
    /// Solve a sealed record's puzzle and post the answer (TimelockReveal), so
    /// the node serves its plain value.
    ///
    /// Anyone may reveal any sealed record: the answer is public work and the
    /// only value it can write is the one the owner sealed. Needs an ordering
    /// engine (pbft, pos); a gossip network refuses reveals.
    ///
    /// Example: pyralog timelock reveal --from bob pyr2Qd... bid
    Reveal {
        /// The key that signs and stamps the reveal.
        #[arg(long)]
        from: String,
        /// Whose record: an address or a key name.
        address: String,
        /// The record's key.
        key: String,
        /// Stamp with at least this many bits of work.
        #[arg(long)]
        pow_bits: Option<u32>,
        /// Wait until the reveal is committed.
        #[arg(long, value_enum)]
        wait: Option<Wait>,
    },
    /// Measure squaring rates here: num-bigint's plain multiply-and-reduce and
    /// the puzzle solver's, in one run, with the sealing time and the
    /// squarings a delay takes.
    ///
    /// Example: pyralog timelock bench --seconds 4
    Bench {
        /// How long to measure each rate.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Bits of the modulus.
        #[arg(long, default_value_t = pyralog_consensus::timelock::DEFAULT_BITS)]
        bits: u32,
    },
}

/// How long a write waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Wait {
    /// Until the node's cluster committed it.
    Commit,
    /// Until the network finalized it.
    Final,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Generate a new key and store it as NAME.
    ///
    /// The key comes from the operating system's randomness. You are asked for
    /// a passphrase twice (or it is read from PYRALOG_PASSPHRASE); forget it
    /// and the key is lost, so back it up with `pyralog keys export NAME`.
    /// An existing key is never overwritten.
    ///
    /// Example: pyralog keys new alice
    New {
        /// The key's name: 1-64 letters, digits, '_' or '-'.
        name: String,
        /// Store the key UNENCRYPTED, with no passphrase. For throwaway devnet
        /// keys only: anyone who can read the file controls the account.
        #[arg(long)]
        insecure_plaintext: bool,
    },
    /// List the keys in HOME/keys/ with their addresses.
    ///
    /// No passphrase is needed: addresses are stored beside the sealed seed.
    List,
    /// Show one key's address, whether it is encrypted, and its file.
    ///
    /// No passphrase is needed. The address shown is the one the file records;
    /// it is authenticated whenever the key is unlocked (export, signing).
    ///
    /// Example: pyralog keys show alice
    Show {
        /// The key's name.
        name: String,
    },
    /// Store an existing secret key, read from FILE, as NAME.
    ///
    /// FILE holds the 32-byte secret seed as 64 hex digits (whitespace around
    /// them is fine): the format of `pyralog keys export` and of the faucet and
    /// validator key files `pyralog-testnet` writes. The key is then sealed
    /// like `keys new` seals a fresh one.
    ///
    /// Example: pyralog keys import faucet devnet/keys/faucet.key
    Import {
        /// The name to store the key under: 1-64 letters, digits, '_' or '-'.
        name: String,
        /// The file holding the secret seed in hex.
        file: PathBuf,
        /// Store the key UNENCRYPTED, with no passphrase. For throwaway devnet
        /// keys only: anyone who can read the file controls the account.
        #[arg(long)]
        insecure_plaintext: bool,
    },
    /// Print a key's SECRET seed as 64 hex digits.
    ///
    /// Anyone who sees the output controls the account: use it to back a key
    /// up or to move it to another wallet (`pyralog keys import NAME FILE`),
    /// never paste it anywhere you do not trust. Asks for the passphrase once.
    ///
    /// Example: pyralog keys export alice > alice.key
    Export {
        /// The key's name.
        name: String,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    // `node` is for the commands that talk to a node (balance, transfer, ...),
    // which arrive with the RPC.
    let Cli {
        home,
        node,
        output,
        command,
    } = cli;
    let home = match home {
        Some(home) => home,
        None => default_home()?,
    };
    let store = Keystore::new(&home);
    let client = pyralog_wallet::client::Client::new(&node);
    match command {
        Command::Keys(keys) => run_keys(&store, output, keys),
        Command::Status => {
            let status = client
                .get("/status")?
                .ok_or_else(|| anyhow!("the node at {node} has no /status"))?;
            match output {
                Output::Json => outln!("{status}"),
                Output::Text => outln!("{}", serde_json::to_string_pretty(&status)?),
            }
            Ok(())
        }
        Command::Balance { who } => {
            let address = resolve(&store, &who)?;
            let account = client
                .get(&format!("/account/{address}"))?
                .ok_or_else(|| anyhow!("the node at {node} has no /account"))?;
            match output {
                Output::Json => outln!("{account}"),
                Output::Text => outln!(
                    "{address}: balance {} nonce {} stake {}",
                    account["balance"],
                    account["nonce"],
                    account["stake"]
                ),
            }
            Ok(())
        }
        Command::Put {
            from,
            key,
            value,
            sealed_for,
            rate,
            bits,
            pow_bits,
            wait,
        } => {
            let signer = unlock(&store, &from)?;
            let payload = match sealed_for {
                None => pyralog_ledger::devkit::put(&signer, key.as_bytes(), value.as_bytes()),
                Some(delay) => {
                    let sealed = tl::seal(value.as_bytes(), delay, rate, bits)?;
                    eprintln!("{}", seal_summary(&sealed, delay));
                    pyralog_ledger::devkit::put_sealed(&signer, key.as_bytes(), &sealed.value)
                }
            };
            submit(&client, output, &signer, payload, pow_bits, wait)
        }
        Command::Transfer {
            from,
            to,
            amount,
            pow_bits,
            wait,
        } => {
            if amount == 0 {
                bail!("--amount must be at least 1");
            }
            let to = resolve(&store, &to)?;
            let signer = unlock(&store, &from)?;
            let payload = pyralog_ledger::Payload::Transfer { to, amount };
            submit(&client, output, &signer, payload, pow_bits, wait)
        }
        Command::Validator(ValidatorCommand::Register {
            from,
            validator_key,
            p2p,
            moniker,
            pow_bits,
            wait,
        }) => {
            let seed = keystore::read_secret_file(&validator_key)?;
            let validator = Keypair::from_seed(&seed).address();
            let signer = unlock(&store, &from)?;
            // The node we talk to may be that very cluster: then it knows its
            // own address and name.
            let status = client.get("/status")?.unwrap_or_default();
            let same_cluster = status["cluster_id"].as_str() == Some(&validator.to_human());
            let p2p = match p2p {
                Some(p) => p,
                None if same_cluster => status["listen"]
                    .as_array()
                    .and_then(|l| l.first())
                    .and_then(|a| a.as_str())
                    .map(|a| a.split("/p2p/").next().unwrap_or(a).to_owned())
                    .ok_or_else(|| anyhow!("the node does not say where it listens; give --p2p"))?,
                None => bail!(
                    "the node at {node} is not the cluster of {}; give --p2p MULTIADDR (where peers reach it)",
                    validator_key.display()
                ),
            };
            let moniker = match moniker {
                Some(m) => m,
                None if same_cluster => status["moniker"].as_str().unwrap_or(&from).to_owned(),
                None => from.clone(),
            };
            let payload = pyralog_ledger::Payload::RegisterValidator {
                validator_key: validator,
                p2p,
                moniker,
            };
            submit(&client, output, &signer, payload, pow_bits, wait)
        }
        Command::Stake {
            from,
            validator,
            amount,
            pow_bits,
            wait,
        } => {
            let (signer, validator) = bond_parties(&store, &from, &validator, amount)?;
            let payload = pyralog_ledger::Payload::Stake { validator, amount };
            submit(&client, output, &signer, payload, pow_bits, wait)
        }
        Command::Unstake {
            from,
            validator,
            amount,
            pow_bits,
            wait,
        } => {
            let (signer, validator) = bond_parties(&store, &from, &validator, amount)?;
            let payload = pyralog_ledger::Payload::Unstake { validator, amount };
            submit(&client, output, &signer, payload, pow_bits, wait)
        }
        Command::Unjail {
            from,
            pow_bits,
            wait,
        } => {
            let signer = unlock(&store, &from)?;
            submit(
                &client,
                output,
                &signer,
                pyralog_ledger::Payload::Unjail,
                pow_bits,
                wait,
            )
        }
        Command::Validators => {
            let list = client
                .get("/validators")?
                .ok_or_else(|| anyhow!("the node at {node} has no /validators"))?;
            match output {
                Output::Json => outln!("{list}"),
                Output::Text => {
                    for v in list.as_array().into_iter().flatten() {
                        // Proof of stake also says who is jailed or slashed.
                        let mut standing = String::new();
                        if v["tombstoned"] == true {
                            standing.push_str(" tombstoned");
                        } else if v["jailed"] == true {
                            standing.push_str(" jailed");
                        }
                        if let Some(slashed) = v["slashed"].as_u64().filter(|s| *s > 0) {
                            standing.push_str(&format!(" slashed {slashed}"));
                        }
                        outln!(
                            "{} {} stake {} power {} {}{standing}",
                            v["id"].as_str().unwrap_or("?"),
                            v["address"].as_str().unwrap_or("?"),
                            v["stake"],
                            v["power"],
                            v["status"].as_str().unwrap_or("?"),
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Query { sql, format, out } => query(&client, output, &sql, format, out.as_deref()),
        Command::Timelock(command) => run_timelock(&store, &client, output, command),
        Command::Delete {
            from,
            key,
            pow_bits,
            wait,
        } => {
            let signer = unlock(&store, &from)?;
            let payload = pyralog_ledger::Payload::Delete {
                namespace: signer.address(),
                keys: vec![key.into_bytes()],
            };
            submit(&client, output, &signer, payload, pow_bits, wait)
        }
        Command::Pow(PowCommand::Bench { seconds }) => pow_bench(output, seconds),
        Command::Get {
            address,
            key,
            proof,
        } => get(&client, output, &resolve(&store, &address)?, &key, proof),
    }
}

/// An address given as such, or the address of a key in this wallet.
/// The unlocked key that bonds and the validator it bonds to, for `stake`
/// and `unstake`.
fn bond_parties(
    store: &Keystore,
    from: &str,
    validator: &str,
    amount: u64,
) -> Result<(Keypair, pyralog_ledger::Address)> {
    if amount == 0 {
        bail!("--amount must be at least 1");
    }
    let validator = resolve(store, validator)?;
    Ok((unlock(store, from)?, validator))
}

fn resolve(store: &Keystore, who: &str) -> Result<pyralog_ledger::Address> {
    if who.starts_with(pyralog_ledger::keys::ADDRESS_PREFIX) && who.len() > 40 {
        return Ok(who.parse()?);
    }
    match store.get(who) {
        Ok(key) => Ok(key.info().address),
        Err(e) => Err(anyhow!(
            "{who:?} is neither an address nor a key in this wallet ({e})"
        )),
    }
}

/// A key of this wallet, unlocked.
fn unlock(store: &Keystore, name: &str) -> Result<Keypair> {
    let key = store.get(name)?;
    let passphrase = if key.is_encrypted() {
        passphrase(name, Ask::Once)?
    } else {
        Zeroizing::new(String::new())
    };
    Ok(key.unlock(&passphrase)?)
}

/// Builds, stamps, signs and submits a transaction.
fn submit(
    client: &pyralog_wallet::client::Client,
    output: Output,
    signer: &Keypair,
    payload: pyralog_ledger::Payload,
    pow_bits: Option<u32>,
    wait: Option<Wait>,
) -> Result<()> {
    let status = client
        .get("/status")?
        .ok_or_else(|| anyhow!("the node has no /status"))?;
    let chain: pyralog_ledger::ChainId = status["chain_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the node's status has no chain_id"))?
        .parse()?;
    let epoch = status["epoch"]
        .as_u64()
        .ok_or_else(|| anyhow!("the node's status has no epoch"))?;
    let required = client
        .get("/pow/difficulty")?
        .and_then(|d| d["difficulty"].as_u64())
        .ok_or_else(|| anyhow!("the node does not say its required difficulty"))?
        as u32;
    let account = client
        .get(&format!("/account/{}", signer.address()))?
        .unwrap_or_default();
    let nonce = account["nonce"].as_u64().unwrap_or(0);
    let bits = pow_bits.unwrap_or(required).max(required);
    let body = pyralog_ledger::TxBody {
        chain_id: chain,
        sender: signer.address(),
        nonce,
        epoch,
        payload,
    };
    let started = std::time::Instant::now();
    let stamp = pyralog_wallet::stamp::solve(&body, bits)?;
    let took = started.elapsed();
    let tx = body.sign(signer, stamp);
    let path = match wait {
        None => "/tx".to_owned(),
        Some(Wait::Commit) => "/tx?wait=commit".to_owned(),
        Some(Wait::Final) => "/tx?wait=final".to_owned(),
    };
    let answer = client.post(
        &path,
        &json!({ "tx": hex::encode(pyralog_ledger::Encode::to_bytes(&tx)) }),
    )?;
    match output {
        Output::Json => outln!(
            "{}",
            json!({"hash": answer["hash"], "status": answer["status"], "pow_bits": bits, "pow_ms": took.as_millis() as u64})
        ),
        Output::Text => {
            outln!("stamped with {bits} bits in {:.3}s", took.as_secs_f64());
            outln!(
                "{} {}",
                answer["status"].as_str().unwrap_or("?"),
                answer["hash"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// Measures stamping on every core: the real solver, searching for a stamp it
/// will not find, for about `seconds`.
fn pow_bench(output: Output, seconds: f64) -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    if !(0.01..=600.0).contains(&seconds) {
        bail!("--seconds must be between 0.01 and 600");
    }
    let chain: pyralog_ledger::ChainId = "pyralog-pow-bench".parse()?;
    let key = pyralog_ledger::pow::PowKey::for_chain(&chain);
    let id = pyralog_ledger::Hash::of(pyralog_ledger::Domain::TxId, b"pow bench");
    let cancel = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let params = pyralog_ledger::pow::SolveParams::new(pyralog_ledger::pow::MAX_BITS);
    let _ = pyralog_ledger::pow::solve(&key, &id, params, &cancel, &|n| {
        done.fetch_max(n, Ordering::Relaxed);
        if started.elapsed().as_secs_f64() >= seconds {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let table: Vec<(u32, f64)> = (8..=28)
        .step_by(2)
        .map(|bits| (bits, pyralog_ledger::pow::expected_attempts(bits) / rate))
        .collect();
    match output {
        Output::Json => outln!(
            "{}",
            json!({
                "hashes_per_sec": rate,
                "cores": cores,
                "expected_seconds": table.iter().map(|(b, t)| json!({"bits": b, "seconds": t})).collect::<Vec<_>>(),
            })
        ),
        Output::Text => {
            outln!("{:.2} M hashes/s on {cores} cores", rate / 1e6);
            for (bits, t) in table {
                outln!("  {bits:>2} bits  ~{}", human_seconds(t));
            }
        }
    }
    Ok(())
}

fn human_seconds(t: f64) -> String {
    if t < 1e-3 {
        format!("{:.0} us", t * 1e6)
    } else if t < 1.0 {
        format!("{:.1} ms", t * 1e3)
    } else {
        format!("{t:.1} s")
    }
}

fn run_timelock(
    store: &Keystore,
    client: &pyralog_wallet::client::Client,
    output: Output,
    command: TimelockCommand,
) -> Result<()> {
    match command {
        TimelockCommand::Seal {
            delay,
            input,
            out,
            rate,
            bits,
        } => {
            let data = std::fs::read(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let max = pyralog_ledger::tx::caps::VALUE;
            if data.len() > max {
                bail!(
                    "{} has {} bytes; at most {max} can be sealed",
                    input.display(),
                    data.len()
                );
            }
            let sealed = tl::seal(&data, delay, rate, bits)?;
            let bytes = pyralog_ledger::Encode::to_bytes(&sealed.value);
            tl::write_atomically(&out, &bytes)?;
            match output {
                Output::Json => outln!(
                    "{}",
                    json!({
                        "out": path_string(&out),
                        "bytes": bytes.len(),
                        "data_bytes": data.len(),
                        "bits": bits,
                        "squarings": sealed.value.puzzle.squarings,
                        "rate": sealed.rate.per_sec,
                        "rate_measured": sealed.rate.measured,
                        "delay_seconds": delay.as_secs_f64(),
                        "seal_ms": sealed.took.as_secs_f64() * 1e3,
                        "commitment": sealed.value.commitment.to_hex(),
                    })
                ),
                Output::Text => {
                    outln!("{}", seal_summary(&sealed, delay));
                    outln!("wrote {} ({} bytes)", out.display(), bytes.len());
                }
            }
            Ok(())
        }
        TimelockCommand::Open {
            input,
            out,
            restart,
        } => {
            let sealed = tl::read_sealed(&input)?;
            let progress = tl::checkpoint_path(&input);
            if restart && progress.exists() {
                std::fs::remove_file(&progress)
                    .with_context(|| format!("cannot remove {}", progress.display()))?;
            }
            let solved = tl::solve(&sealed.puzzle, Some(&progress))?;
            let data = tl::open_with(&sealed, &solved, Some(&progress))?;
            if progress.exists() {
                std::fs::remove_file(&progress)
                    .with_context(|| format!("cannot remove {}", progress.display()))?;
            }
            if let Some(path) = &out {
                tl::write_atomically(path, &data)?;
            }
            let summary = format!(
                "opened {}: {} squarings{}, {} in {:.2} s ({:.0}/s)",
                input.display(),
                sealed.puzzle.squarings,
                if solved.resumed_at > 0 {
                    format!(" (resumed at {})", solved.resumed_at)
                } else {
                    String::new()
                },
                solved.squarings,
                solved.took.as_secs_f64(),
                solved.rate(),
            );
            match (output, &out) {
                (Output::Json, _) => outln!(
                    "{}",
                    json!({
                        "in": path_string(&input),
                        "out": out.as_deref().map(path_string),
                        "data_hex": if out.is_none() { Some(hex::encode(&data)) } else { None },
                        "data_bytes": data.len(),
                        "squarings": sealed.puzzle.squarings,
                        "resumed_at": solved.resumed_at,
                        "seconds": solved.took.as_secs_f64(),
                        "rate": solved.rate(),
                    })
                ),
                (Output::Text, Some(path)) => {
                    outln!("{summary}");
                    outln!("wrote {} ({} bytes)", path.display(), data.len());
                }
                (Output::Text, None) => {
                    eprintln!("{summary}");
                    use std::io::Write as _;
                    let mut stdout = std::io::stdout().lock();
                    if stdout
                        .write_all(&data)
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        std::process::exit(0);
                    }
                }
            }
            Ok(())
        }
        TimelockCommand::Reveal {
            from,
            address,
            key,
            pow_bits,
            wait,
        } => {
            let owner = resolve(store, &address)?;
            let Some(record) = client.get(&format!("/kv/{owner}/{key}"))? else {
                bail!("no record {key:?} in the namespace of {owner}");
            };
            let bytes = record["value_hex"]
                .as_str()
                .map(hex::decode)
                .transpose()
                .map_err(|_| anyhow!("the node's value_hex is not hex"))?
                .ok_or_else(|| anyhow!("record {key:?} has no value"))?;
            let sealed =
                <pyralog_ledger::timelock::SealedValue as pyralog_ledger::Decode>::from_bytes(
                    &bytes,
                )
                .with_context(|| {
                    format!("record {key:?} of {owner} does not hold a sealed value")
                })?;
            let signer = unlock(store, &from)?;
            let solved = tl::solve(&sealed.puzzle, None)?;
            sealed.check_answer(&solved.answer)?;
            eprintln!(
                "solved {} squarings in {:.2} s; posting the answer",
                sealed.puzzle.squarings,
                solved.took.as_secs_f64()
            );
            let payload = pyralog_ledger::Payload::TimelockReveal {
                namespace: owner,
                key: key.into_bytes(),
                answer: solved.answer,
            };
            submit(client, output, &signer, payload, pow_bits, wait)
        }
        TimelockCommand::Bench { seconds, bits } => timelock_bench(output, seconds, bits),
    }
}

/// One line on what sealing made.
fn seal_summary(sealed: &tl::Sealed, delay: std::time::Duration) -> String {
    format!(
        "sealed {} bytes for ~{} = {} squarings of a {}-bit modulus at {} squarings/s ({}), in {:.0} ms",
        sealed.value.data_len(),
        humantime::format_duration(delay),
        sealed.value.puzzle.squarings,
        sealed.value.puzzle.modulus.len() * 8,
        sealed.rate.per_sec,
        if sealed.rate.measured {
            "measured here"
        } else {
            "stated"
        },
        sealed.took.as_secs_f64() * 1e3,
    )
}

/// Raw num-bigint squaring against the solver, sealing cost, and what a
/// minute and an hour come to.
fn timelock_bench(output: Output, seconds: f64, bits: u32) -> Result<()> {
    if !(0.1..=600.0).contains(&seconds) {
        bail!("--seconds must be between 0.1 and 600");
    }
    let how_long = std::time::Duration::from_secs_f64(seconds);
    let raw = tl::measure_raw_rate(bits, how_long)?;
    let solver = tl::measure_rate(bits, how_long)?;
    // Sealing: fresh primes each time, so take the median of a few.
    let mut seal_ms: Vec<f64> = (0..5)
        .map(|_| {
            tl::seal(
                &[0u8; 1024],
                std::time::Duration::from_secs(60),
                Some(solver as u64),
                bits,
            )
            .map(|s| s.took.as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    seal_ms.sort_by(f64::total_cmp);
    let (min, median, max) = (seal_ms[0], seal_ms[2], seal_ms[4]);
    let t = |secs: f64, factor: f64| (secs * solver * factor).ceil() as u64;
    match output {
        Output::Json => outln!(
            "{}",
            json!({
                "bits": bits,
                "raw_squarings_per_sec": raw,
                "solver_squarings_per_sec": solver,
                "solver_over_raw": solver / raw,
                "seal_ms": {"min": min, "median": median, "max": max},
                "squarings_1min": t(60.0, 1.0),
                "squarings_1h": t(3600.0, 1.0),
                "squarings_1min_20x": t(60.0, 20.0),
                "squarings_1h_20x": t(3600.0, 20.0),
            })
        ),
        Output::Text => {
            outln!("{bits}-bit modulus, one core, {seconds} s per measurement");
            outln!("  num-bigint x*x mod N  {:>7.3} M squarings/s", raw / 1e6);
            outln!(
                "  puzzle solver         {:>7.3} M squarings/s ({:.2}x raw)",
                solver / 1e6,
                solver / raw
            );
            outln!("  seal (primes, phi)    {median:>7.0} ms, median of 5 ({min:.0}..{max:.0})");
            outln!(
                "  t for 1 min / 1 h     {} / {} (here); {} / {} (a solver 20x faster)",
                t(60.0, 1.0),
                t(3600.0, 1.0),
                t(60.0, 20.0),
                t(3600.0, 20.0)
            );
        }
    }
    Ok(())
}

/// Reads a record and, with `proof`, checks it against the state root locally.
fn get(
    client: &pyralog_wallet::client::Client,
    output: Output,
    address: &pyralog_ledger::Address,
    key: &str,
    proof: bool,
) -> Result<()> {
    let path = format!(
        "/kv/{address}/{key}{}",
        if proof { "?proof=true" } else { "" }
    );
    let Some(mut record) = client.get(&path)? else {
        bail!("no record {key:?} in the namespace of {address}");
    };
    if proof {
        let verified = pyralog_wallet::proof::check(&record, address, key)?;
        record["proof_verified"] = json!(true);
        record["proof_root"] = json!(verified.to_hex());
    }
    // A sealed record's value is a sealed value's bytes until someone reveals it.
    let sealed = record["value_hex"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| {
            <pyralog_ledger::timelock::SealedValue as pyralog_ledger::Decode>::from_bytes(&b).ok()
        });
    if let Some(s) = &sealed {
        record["sealed"] = json!({
            "squarings": s.puzzle.squarings,
            "modulus_bits": s.puzzle.modulus.len() * 8,
            "commitment": s.commitment.to_hex(),
        });
    }
    match output {
        Output::Json => outln!("{record}"),
        Output::Text if sealed.is_some() => {
            let s = sealed.as_ref().map_or(0, |s| s.puzzle.squarings);
            outln!("(sealed: a time-lock puzzle of {s} squarings)");
            eprintln!(
                "open it with `pyralog timelock reveal --from NAME {address} {key}` (posts the \
                 answer), or save value_hex (-o json) to a file and `pyralog timelock open` it"
            );
        }
        Output::Text => {
            outln!("{}", record["value"].as_str().unwrap_or(""));
            eprintln!(
                "version {} origin {} hlc {}",
                record["version"],
                record["origin"].as_str().unwrap_or("?"),
                record["hlc"]["wall_ms"]
            );
            if proof {
                eprintln!(
                    "proof verified against state root {}",
                    record["proof_root"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}

fn default_home() -> Result<PathBuf> {
    std::env::home_dir()
        .filter(|h| !h.as_os_str().is_empty())
        .map(|h| h.join(".pyralog"))
        .ok_or_else(|| {
            anyhow!("cannot find your home directory; pass --home DIR or set PYRALOG_HOME")
        })
}

fn run_keys(store: &Keystore, output: Output, command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::New {
            name,
            insecure_plaintext,
        } => {
            refuse_existing(store, &name)?;
            let keypair = Keypair::generate().context("cannot generate a key")?;
            let info = add(store, &name, &keypair, insecure_plaintext)?;
            print_added(output, &info, "created");
        }
        KeysCommand::Import {
            name,
            file,
            insecure_plaintext,
        } => {
            refuse_existing(store, &name)?;
            let seed = keystore::read_secret_file(&file)?;
            let keypair = Keypair::from_seed(&seed);
            let info = add(store, &name, &keypair, insecure_plaintext)?;
            print_added(output, &info, "imported");
        }
        KeysCommand::List => {
            let listing = store.list()?;
            for e in &listing.unreadable {
                eprintln!("warning: skipped {e}");
            }
            match output {
                Output::Json => {
                    let keys: Vec<_> = listing.keys.iter().map(key_json).collect();
                    outln!("{}", serde_json::Value::Array(keys));
                }
                Output::Text if listing.keys.is_empty() => {
                    outln!(
                        "no keys in {} (create one with `pyralog keys new NAME`)",
                        store.dir().display()
                    );
                }
                Output::Text => {
                    let width = listing.keys.iter().map(|k| k.name.len()).max().unwrap_or(4);
                    outln!("{:<width$}  {:<48}  ENCRYPTED", "NAME", "ADDRESS");
                    for k in &listing.keys {
                        outln!(
                            "{:<width$}  {:<48}  {}",
                            k.name,
                            k.address.to_human(),
                            if k.encrypted { "yes" } else { "NO (plaintext)" }
                        );
                    }
                }
            }
        }
        KeysCommand::Show { name } => {
            let key = store.get(&name)?;
            let info = key.info();
            match output {
                Output::Json => outln!("{}", key_json(info)),
                Output::Text => {
                    outln!("name:      {}", info.name);
                    outln!("address:   {}", info.address);
                    outln!(
                        "encrypted: {}",
                        if info.encrypted {
                            "yes (argon2id, chacha20poly1305)"
                        } else {
                            "NO (stored in plaintext)"
                        }
                    );
                    outln!("file:      {}", info.path.display());
                }
            }
        }
        KeysCommand::Export { name } => {
            let key = store.get(&name)?;
            let passphrase = if key.is_encrypted() {
                passphrase(&name, Ask::Once)?
            } else {
                Zeroizing::new(String::new())
            };
            let keypair = key.unlock(&passphrase)?;
            let seed = Zeroizing::new(hex::encode(keypair.seed()));
            match output {
                Output::Json => outln!(
                    "{}",
                    json!({
                        "name": name,
                        "address": keypair.address().to_human(),
                        "seed": seed.as_str(),
                    })
                ),
                Output::Text => {
                    eprintln!(
                        "warning: below is the SECRET key of {name} ({}); anyone who sees it \
                         controls the account",
                        keypair.address()
                    );
                    outln!("{}", seed.as_str());
                }
            }
        }
    }
    Ok(())
}

/// Fails early, before any prompt, if `name` is bad or taken.
fn refuse_existing(store: &Keystore, name: &str) -> Result<()> {
    if store.contains(name)? {
        return Err(pyralog_wallet::Error::KeyExists {
            name: name.to_owned(),
            path: store.path_of(name)?,
        }
        .into());
    }
    Ok(())
}

fn add(store: &Keystore, name: &str, keypair: &Keypair, plaintext: bool) -> Result<KeyInfo> {
    if plaintext {
        let info = store.add(name, keypair, Protection::Plaintext)?;
        eprintln!(
            "warning: key {name} is stored UNENCRYPTED in {} (--insecure-plaintext); anyone \
             who can read that file controls {}. Use this for devnets only.",
            info.path.display(),
            info.address
        );
        return Ok(info);
    }
    let passphrase = passphrase(name, Ask::Twice)?;
    if passphrase.is_empty() {
        bail!(
            "the passphrase is empty; choose one, or pass --insecure-plaintext to store the \
             key unencrypted (devnets only)"
        );
    }
    Ok(store.add(name, keypair, Protection::Passphrase(&passphrase))?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// To unlock a key.
    Once,
    /// To seal a new key: asked twice, and the two must match.
    Twice,
}

/// The passphrase from PYRALOG_PASSPHRASE, or else from a terminal prompt.
fn passphrase(name: &str, ask: Ask) -> Result<Zeroizing<String>> {
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
        return value
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"));
    }
    if !std::io::stdin().is_terminal() {
        let alternative = match ask {
            Ask::Twice => {
                ", or pass --insecure-plaintext to store the key unencrypted (devnets only)"
            }
            Ask::Once => "",
        };
        bail!(
            "a passphrase is needed for key {name} but stdin is not a terminal, so it cannot be \
             prompted for; set {PASSPHRASE_ENV}{alternative}"
        );
    }
    let prompt = match ask {
        Ask::Once => format!("Passphrase for key {name}: "),
        Ask::Twice => format!("New passphrase for key {name}: "),
    };
    let first =
        Zeroizing::new(rpassword::prompt_password(prompt).context("cannot read the passphrase")?);
    if ask == Ask::Twice {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat the passphrase: ")
                .context("cannot read the passphrase")?,
        );
        if *first != *second {
            bail!("the two passphrases differ; nothing was stored");
        }
    }
    Ok(first)
}

fn key_json(info: &KeyInfo) -> serde_json::Value {
    json!({
        "name": info.name,
        "address": info.address.to_human(),
        "encrypted": info.encrypted,
        "file": path_string(&info.path),
    })
}

fn path_string(path: &Path) -> String {
    path.display().to_string()
}

fn print_added(output: Output, info: &KeyInfo, verb: &str) {
    match output {
        Output::Json => outln!("{}", key_json(info)),
        Output::Text => {
            outln!(
                "{verb} key {} ({}) in {}",
                info.name,
                if info.encrypted {
                    "encrypted"
                } else {
                    "UNENCRYPTED"
                },
                info.path.display()
            );
            outln!("address: {}", info.address);
        }
    }
}

/// `pyralog query`: JSON from the node, printed as asked; Arrow passed through.
fn query(
    client: &pyralog_wallet::client::Client,
    output: Output,
    sql: &str,
    format: Option<QueryFormat>,
    out: Option<&Path>,
) -> Result<()> {
    let format = match (format, output) {
        (Some(f), _) => f,
        (None, Output::Json) => QueryFormat::Json,
        (None, Output::Text) => QueryFormat::Table,
    };
    let body = json!({ "sql": sql });
    let bytes = match format {
        QueryFormat::Arrow => {
            if out.is_none() && std::io::stdout().is_terminal() {
                bail!("an Arrow IPC stream is binary: write it with --out FILE or pipe stdout");
            }
            client.post_raw("/query", &body, "application/vnd.apache.arrow.stream")?
        }
        _ => {
            // Read raw: an answer may be far larger than a JSON reply's usual cap.
            let raw = client.post_raw("/query", &body, "application/json")?;
            let answer: serde_json::Value =
                serde_json::from_slice(&raw).context("the node's answer to /query is not JSON")?;
            let text = match format {
                QueryFormat::Json => answer.to_string(),
                QueryFormat::Csv => pyralog_wallet::render::csv(&answer),
                _ => pyralog_wallet::render::table(&answer),
            };
            let mut text = text.into_bytes();
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text
        }
    };
    match out {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                std::process::exit(0);
            }
            Ok(())
        }
    }
}
