//! The wallet's errors.

use std::path::PathBuf;

/// Everything that can go wrong in the wallet library. Each message names the
/// key or file concerned, so it can be shown to a user as it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key file of that name.
    #[error("unknown key {name:?}: there is no {} (see `pyralog keys list`)", path.display())]
    UnknownKey {
        /// The key's name.
        name: String,
        /// Where its file would be.
        path: PathBuf,
    },
    /// A key of that name exists; key files are never overwritten.
    #[error("key {name:?} already exists ({}); keys are never overwritten, pick another name", path.display())]
    KeyExists {
        /// The key's name.
        name: String,
        /// Its file.
        path: PathBuf,
    },
    /// The AEAD tag did not verify: the passphrase is wrong, or the file's
    /// ciphertext, nonce, salt, KDF parameters or address were changed.
    #[error("wrong passphrase or corrupt key file for key {name:?} ({})", path.display())]
    WrongPassphrase {
        /// The key's name.
        name: String,
        /// Its file.
        path: PathBuf,
    },
    /// A key file is not a keystore file at all (not JSON, too large, ...).
    #[error("bad key file format in {}: {why}", path.display())]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// One field of a key file is missing or malformed.
    #[error("bad key file format in {}: field `{field}` {why}", path.display())]
    BadKeyField {
        /// The file.
        path: PathBuf,
        /// The field, as named in the file (`kdf_params.m_cost` for a nested one).
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// A key name outside 1-64 characters of `[A-Za-z0-9_-]`.
    #[error("bad key name {name:?}: {why}")]
    BadName {
        /// The name given (at most 80 characters of it).
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A file given to `keys import` is not a plain secret-seed file.
    #[error("bad secret key file {}: {why}", path.display())]
    BadSecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading or writing the file system failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The operating system gave no randomness for a salt or nonce.
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
    /// argon2id refused its parameters or failed.
    #[error("key derivation (argon2id) failed: {0}")]
    Kdf(String),
    /// Encryption failed (it cannot for a 32-byte seed; kept so no path panics).
    #[error("encryption failed")]
    Encrypt,
}

impl Error {
    /// Whether the error is about a key file's contents (as opposed to the
    /// user's input or the file system): a file that was edited, truncated or
    /// tampered with, or a passphrase that does not open it.
    pub fn is_key_file_fault(&self) -> bool {
        matches!(
            self,
            Error::WrongPassphrase { .. } | Error::BadKeyFile { .. } | Error::BadKeyField { .. }
        )
    }
}
