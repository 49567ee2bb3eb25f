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
    /// Write a record into your own namespace, stamped and signed.
    ///
    /// The stamp's difficulty is the node's required difficulty unless
    /// --pow-bits asks for more (more work, served first). Prints the stamp's
    /// bits and the time it took.
    ///
    /// Example: pyralog put --from alice greeting "hello" --wait commit
    Put {
        /// The key that signs (and whose namespace is written).
        #[arg(long)]
        from: String,
        /// The record's key.
        key: String,
        /// The record's value.
        value: String,
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
            pow_bits,
            wait,
        } => {
            let signer = unlock(&store, &from)?;
            let payload = pyralog_ledger::devkit::put(&signer, key.as_bytes(), value.as_bytes());
            submit(&client, output, &signer, payload, pow_bits, wait)
        }
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
    match output {
        Output::Json => outln!("{record}"),
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
