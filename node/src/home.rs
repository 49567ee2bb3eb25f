//! The home directory: `config.toml`, `genesis.json`, `node_key` (the libp2p
//! identity), `validator_key` (the cluster's ed25519 key), and `data/`.
//! Key files are hex seeds, readable by their owner only, never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pyralog_ledger::{Genesis, Hash, Keypair};

use crate::config::Config;

/// The files of a home directory.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `genesis.json`.
    pub fn genesis(&self) -> PathBuf {
        self.root.join("genesis.json")
    }
    /// `node_key`.
    pub fn node_key(&self) -> PathBuf {
        self.root.join("node_key")
    }
    /// `validator_key`.
    pub fn validator_key(&self) -> PathBuf {
        self.root.join("validator_key")
    }
    /// The ledger's redb file.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("data").join("ledger.redb")
    }

    /// Whether `init` has run here.
    pub fn is_initialized(&self) -> bool {
        self.config().exists() && self.node_key().exists() && self.validator_key().exists()
    }

    /// Creates the home: directories, keys, config, and a copy of the genesis.
    /// Refuses to overwrite existing keys. `validator_seed` lets every node of a
    /// cluster share one validator key.
    pub fn init(
        &self,
        genesis: &Path,
        moniker: &str,
        validator_seed: Option<[u8; 32]>,
    ) -> Result<()> {
        if self.node_key().exists() || self.validator_key().exists() {
            bail!(
                "{} already holds keys; refusing to overwrite them",
                self.root.display()
            );
        }
        // Check the genesis before writing anything.
        Genesis::load(genesis).with_context(|| format!("genesis {}", genesis.display()))?;
        std::fs::create_dir_all(self.root.join("data"))
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        restrict_dir(&self.root)?;
        write_secret(&self.node_key(), &Keypair::generate()?.seed())?;
        let validator = match validator_seed {
            Some(seed) => seed,
            None => Keypair::generate()?.seed(),
        };
        write_secret(&self.validator_key(), &validator)?;
        std::fs::copy(genesis, self.genesis())
            .with_context(|| format!("cannot copy {}", genesis.display()))?;
        Config::new(moniker).save(&self.config())
    }

    /// Reads a key file's seed.
    pub fn read_seed(path: &Path) -> Result<[u8; 32]> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let hash = Hash::from_hex(text.trim())
            .with_context(|| format!("{} is not a key file", path.display()))?;
        Ok(hash.0)
    }
}

/// Writes a secret seed as hex, readable by its owner only; never overwrites.
pub fn write_secret(path: &Path, seed: &[u8; 32]) -> Result<()> {
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
    writeln!(f, "{}", Hash(*seed).to_hex())?;
    Ok(())
}

fn restrict_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    let _ = path;
    Ok(())
}
