//! # pyralog-wallet
//!
//! The library behind the `pyralog` command: keys today; transactions and
//! queries against a node arrive with the RPC.
//!
//! # Layout
//!
//! - [`keystore`]: the key directory `HOME/keys/`, one passphrase-encrypted
//!   file per key (argon2id + ChaCha20-Poly1305), and the plain key-file format
//!   `pyralog-testnet` writes.
//! - [`error`]: this crate's one error type.
//! - [`timelock`]: time-lock puzzles: rate measurement, sealing, solving with a
//!   progress bar and a resumable checkpoint file.
//! - [`render`]: a `POST /query` answer as a text table or CSV.
//! - `src/main.rs`: the `pyralog` binary (clap), prompting and printing only.
//!
//! # Invariants
//!
//! - Nothing here overwrites a key file, and no key file or key directory is
//!   created readable by anyone but its owner.
//! - No secret is written anywhere but a key file and, when asked to, stdout
//!   (`keys export`); secrets in memory are zeroed when dropped.
//! - Nothing here prompts or prints: the binary owns the terminal.

pub mod error;
pub mod keystore;

pub use error::Error;
pub use keystore::{KdfParams, KeyInfo, Keystore, Listing, Protection, StoredKey};

pub mod client;
pub mod proof;
pub mod render;
pub mod stamp;
pub mod timelock;
