//! The keystore: `HOME/keys/NAME.json`, one file per key.
//!
//! # File format (version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "name": "alice",
//!   "address": "pyr…",
//!   "kdf": "argon2id",
//!   "kdf_params": { "m_cost": 19456, "t_cost": 2, "p_cost": 1 },
//!   "salt": "<16 bytes, hex>",
//!   "cipher": "chacha20poly1305",
//!   "nonce": "<12 bytes, hex>",
//!   "ciphertext": "<32-byte seed sealed, plus the 16-byte tag: 48 bytes, hex>"
//! }
//! ```
//!
//! The 32-byte key is argon2id (version 0x13) of the passphrase's UTF-8 bytes
//! with `salt` and `kdf_params` (`m_cost` in KiB). The secret seed is sealed
//! with ChaCha20-Poly1305 under that key and `nonce`, with the 32 raw bytes of
//! `address` as associated data: a file whose address was replaced by another
//! does not open, whatever the passphrase. Salt and nonce are fresh from the
//! operating system for every file. After opening, the seed's address is
//! checked against `address` once more.
//!
//! A key stored with [`Protection::Plaintext`] (`--insecure-plaintext`) has
//! `"kdf": "none"`, `"kdf_params": null`, empty `salt` and `nonce`,
//! `"cipher": "none"`, and the seed itself in hex as `ciphertext`.
//!
//! # Guarantees
//!
//! - Files are created with `create_new` and mode 0600, the directory with
//!   mode 0700; an existing file is never replaced.
//! - A file's `name` must match its file name, its `address` must parse (with
//!   checksum) and, for plaintext keys, match the seed.
//! - Reading is bounded: a key file over [`MAX_KEY_FILE_BYTES`] is refused, as
//!   are KDF parameters over [`KdfParams::MAX`], so a planted file cannot make
//!   the wallet allocate gigabytes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use pyralog_ledger::{Address, Keypair};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::error::Error;

/// The directory under the wallet home that holds the key files.
pub const KEYS_DIR: &str = "keys";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The largest key file read (a real one is about 500 bytes).
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// The largest secret-seed file `import` reads (a real one is 65 bytes).
pub const MAX_SECRET_FILE_BYTES: u64 = 4 * 1024;
/// The longest key name.
pub const MAX_NAME_LEN: usize = 64;

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const SEED_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// argon2id's cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_cost: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// OWASP's minimum recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    /// What [`Keystore::new`] writes.
    pub const OWASP: KdfParams = KdfParams {
        m_cost: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// The most a key file may ask for (1 GiB, 16 passes, 16 lanes); a file
    /// that asks for more is refused rather than obeyed.
    pub const MAX: KdfParams = KdfParams {
        m_cost: 1024 * 1024,
        t_cost: 16,
        p_cost: 16,
    };

    fn argon2(self) -> Result<Argon2<'static>, Error> {
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::Kdf(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// The 32-byte sealing key for `passphrase` and `salt`.
    fn derive(self, passphrase: &str, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
            .map_err(|e| Error::Kdf(e.to_string()))?;
        Ok(key)
    }
}

/// How a new key file protects its seed.
#[derive(Clone, Copy)]
pub enum Protection<'a> {
    /// Sealed under this passphrase.
    Passphrase(&'a str),
    /// Stored in plain hex (`--insecure-plaintext`, for devnets).
    Plaintext,
}

impl std::fmt::Debug for Protection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protection::Passphrase(_) => f.write_str("Passphrase(…)"),
            Protection::Plaintext => f.write_str("Plaintext"),
        }
    }
}

/// What can be said about a key without its passphrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// Its address, as the file records it. For an encrypted key it is
    /// authenticated only when the key is unlocked.
    pub address: Address,
    /// Whether the seed is sealed under a passphrase.
    pub encrypted: bool,
    /// The key file.
    pub path: PathBuf,
}

/// The keys in a keystore, and the files in it that could not be read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable keys, by name.
    pub keys: Vec<KeyInfo>,
    /// One error per `NAME.json` file that is not a readable key file.
    pub unreadable: Vec<Error>,
}

/// A key file as written, fields in the documented order. The plaintext
/// form's seed is in `ciphertext`, borrowed from a string zeroed on drop.
#[derive(serde::Serialize)]
struct KeyFileOut<'a> {
    version: u64,
    name: &'a str,
    address: String,
    kdf: &'static str,
    kdf_params: Option<KdfParams>,
    salt: String,
    cipher: &'static str,
    nonce: String,
    ciphertext: &'a str,
}

/// The secret part of a key file, as read.
enum Sealed {
    Plain(Zeroizing<[u8; SEED_LEN]>),
    Encrypted {
        kdf: KdfParams,
        salt: [u8; SALT_LEN],
        nonce: [u8; NONCE_LEN],
        ciphertext: [u8; SEED_LEN + TAG_LEN],
    },
}

/// A key file that was read and checked, still locked.
pub struct StoredKey {
    info: KeyInfo,
    sealed: Sealed,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// The key's name, address and file.
    pub fn info(&self) -> &KeyInfo {
        &self.info
    }

    /// Whether opening it needs a passphrase.
    pub fn is_encrypted(&self) -> bool {
        self.info.encrypted
    }

    /// The keypair. `passphrase` is ignored for a plaintext key. Errors with
    /// [`Error::WrongPassphrase`] when the seal does not open, which is also
    /// what any change to the salt, nonce, ciphertext, KDF parameters or
    /// address gives.
    pub fn unlock(&self, passphrase: &str) -> Result<Keypair, Error> {
        let wrong = || Error::WrongPassphrase {
            name: self.info.name.clone(),
            path: self.info.path.clone(),
        };
        let keypair = match &self.sealed {
            Sealed::Plain(seed) => Keypair::from_seed(seed),
            Sealed::Encrypted {
                kdf,
                salt,
                nonce,
                ciphertext,
            } => {
                let key = kdf.derive(passphrase, salt)?;
                let cipher = ChaCha20Poly1305::new(&Key::from(*key));
                let opened = Zeroizing::new(
                    cipher
                        .decrypt(
                            &Nonce::from(*nonce),
                            Payload {
                                msg: ciphertext,
                                aad: &self.info.address.0,
                            },
                        )
                        .map_err(|_| wrong())?,
                );
                let seed: Zeroizing<[u8; SEED_LEN]> =
                    Zeroizing::new(opened.as_slice().try_into().map_err(|_| wrong())?);
                Keypair::from_seed(&seed)
            }
        };
        // The AEAD already binds the address; this also covers plaintext keys
        // and a file sealed by something other than this code.
        if keypair.address() != self.info.address {
            return Err(Error::BadKeyField {
                path: self.info.path.clone(),
                field: "address",
                why: "does not match the secret key".to_owned(),
            });
        }
        Ok(keypair)
    }
}

/// A keystore directory, `HOME/keys/`.
#[derive(Clone, Debug)]
pub struct Keystore {
    dir: PathBuf,
    kdf: KdfParams,
}

impl Keystore {
    /// The keystore of the wallet home `home`; new keys use
    /// [`KdfParams::OWASP`]. Nothing is created until a key is added.
    pub fn new(home: &Path) -> Keystore {
        Keystore::with_kdf(home, KdfParams::OWASP)
    }

    /// The keystore of `home`, sealing new keys with `kdf` (tests use cheap
    /// parameters). Reading uses whatever each file records.
    pub fn with_kdf(home: &Path, kdf: KdfParams) -> Keystore {
        Keystore {
            dir: home.join(KEYS_DIR),
            kdf,
        }
    }

    /// The directory holding the key files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of key `name`, after checking the name.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, Error> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Whether a key called `name` exists.
    pub fn contains(&self, name: &str) -> Result<bool, Error> {
        let path = self.path_of(name)?;
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::Io {
                action: "inspect",
                path,
                source,
            }),
        }
    }

    /// Stores `keypair` as `name`. Refuses a name in use
    /// ([`Error::KeyExists`]); never replaces a file.
    pub fn add(
        &self,
        name: &str,
        keypair: &Keypair,
        protection: Protection<'_>,
    ) -> Result<KeyInfo, Error> {
        let path = self.path_of(name)?;
        if self.contains(name)? {
            return Err(Error::KeyExists {
                name: name.to_owned(),
                path,
            });
        }
        let address = keypair.address();
        let seed = Zeroizing::new(keypair.seed());
        // (kdf, kdf_params, salt, cipher, nonce, ciphertext): the sealed seed,
        // or the seed itself for a plaintext key.
        let (kdf, kdf_params, salt, cipher, nonce, ciphertext) = match protection {
            Protection::Plaintext => (
                "none",
                None,
                String::new(),
                "none",
                String::new(),
                Zeroizing::new(hex::encode(seed.as_slice())),
            ),
            Protection::Passphrase(passphrase) => {
                let mut salt = [0u8; SALT_LEN];
                let mut nonce = [0u8; NONCE_LEN];
                getrandom::fill(&mut salt).map_err(|e| Error::Randomness(e.to_string()))?;
                getrandom::fill(&mut nonce).map_err(|e| Error::Randomness(e.to_string()))?;
                let key = self.kdf.derive(passphrase, &salt)?;
                let sealed = ChaCha20Poly1305::new(&Key::from(*key))
                    .encrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: seed.as_slice(),
                            aad: &address.0,
                        },
                    )
                    .map_err(|_| Error::Encrypt)?;
                (
                    "argon2id",
                    Some(self.kdf),
                    hex::encode(salt),
                    "chacha20poly1305",
                    hex::encode(nonce),
                    Zeroizing::new(hex::encode(sealed)),
                )
            }
        };
        let file = KeyFileOut {
            version: FORMAT_VERSION,
            name,
            address: address.to_human(),
            kdf,
            kdf_params,
            salt,
            cipher,
            nonce,
            ciphertext: &ciphertext,
        };
        let mut text =
            Zeroizing::new(
                serde_json::to_string_pretty(&file).map_err(|e| Error::BadKeyFile {
                    path: path.clone(),
                    why: format!("cannot be written as JSON ({e})"),
                })?,
            );
        text.push('\n');
        drop(file);
        self.create_dir()?;
        write_new(&path, text.as_bytes()).map_err(|e| match e {
            WriteError::Exists => Error::KeyExists {
                name: name.to_owned(),
                path: path.clone(),
            },
            WriteError::Io(action, source) => Error::Io {
                action,
                path: path.clone(),
                source,
            },
        })?;
        // Make the new entry durable too (best effort: not every platform
        // lets a directory be opened and synced).
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(KeyInfo {
            name: name.to_owned(),
            address,
            encrypted: matches!(protection, Protection::Passphrase(_)),
            path,
        })
    }

    /// Reads and checks the file of key `name`, without unlocking it.
    pub fn get(&self, name: &str) -> Result<StoredKey, Error> {
        let path = self.path_of(name)?;
        let text = match read_bounded(&path, MAX_KEY_FILE_BYTES) {
            Ok(text) => text,
            Err(ReadError::Io(source)) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::UnknownKey {
                    name: name.to_owned(),
                    path,
                });
            }
            Err(ReadError::Io(source)) => {
                return Err(Error::Io {
                    action: "read",
                    path,
                    source,
                });
            }
            Err(ReadError::TooLarge) => {
                return Err(Error::BadKeyFile {
                    path,
                    why: format!("larger than {MAX_KEY_FILE_BYTES} bytes"),
                });
            }
        };
        parse_key_file(name, path, &text)
    }

    /// Every key, by name. A missing directory is an empty keystore; files
    /// that are not `NAME.json` for a valid name are ignored; `NAME.json`
    /// files that do not read are reported in [`Listing::unreadable`].
    pub fn list(&self) -> Result<Listing, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
            Err(source) => {
                return Err(Error::Io {
                    action: "read directory",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                action: "read directory",
                path: self.dir.clone(),
                source,
            })?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if check_name(name).is_ok() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        let mut listing = Listing::default();
        for name in names {
            match self.get(&name) {
                Ok(key) => listing.keys.push(key.info),
                Err(e) => listing.unreadable.push(e),
            }
        }
        Ok(listing)
    }

    fn create_dir(&self) -> Result<(), Error> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.dir).map_err(|source| Error::Io {
            action: "create directory",
            path: self.dir.clone(),
            source,
        })
    }
}

/// Checks a key name: 1 to [`MAX_NAME_LEN`] characters of `[A-Za-z0-9_-]`.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bad = |why| Error::BadName {
        name: name.chars().take(80).collect(),
        why,
    };
    if name.is_empty() {
        return Err(bad("a name has at least one character"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("a name has at most 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("a name uses only letters, digits, '_' and '-'"));
    }
    Ok(())
}

/// Reads a plain secret-seed file: 64 hex digits of the 32-byte seed,
/// surrounding whitespace allowed. This is what `pyralog-testnet genesis
/// --keys-dir` writes and what `pyralog keys export` prints.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<[u8; SEED_LEN]>, Error> {
    let bad = |why: String| Error::BadSecretFile {
        path: path.to_owned(),
        why,
    };
    let text = match read_bounded(path, MAX_SECRET_FILE_BYTES) {
        Ok(text) => text,
        Err(ReadError::Io(source)) => {
            return Err(Error::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
        Err(ReadError::TooLarge) => {
            return Err(bad(format!(
                "larger than {MAX_SECRET_FILE_BYTES} bytes; expected 64 hex digits of a secret seed"
            )));
        }
    };
    let hex_text = text.trim();
    if hex_text.len() != 2 * SEED_LEN {
        return Err(bad(format!(
            "expected 64 hex digits of a secret seed (as `pyralog-testnet genesis --keys-dir` \
             writes and `pyralog keys export` prints), found {} characters",
            hex_text.chars().count()
        )));
    }
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    hex::decode_to_slice(hex_text, seed.as_mut()).map_err(|_| {
        bad("expected 64 hex digits of a secret seed, found other characters".into())
    })?;
    Ok(seed)
}

enum ReadError {
    Io(std::io::Error),
    TooLarge,
}

/// Reads at most `limit` bytes of UTF-8 text, the buffer zeroed on drop.
fn read_bounded(path: &Path, limit: u64) -> Result<Zeroizing<String>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge);
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(e) => Err(ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e})"),
        ))),
    }
}

enum WriteError {
    Exists,
    Io(&'static str, std::io::Error),
}

/// Creates `path` (mode 0600, failing if it exists) holding `bytes`, synced.
/// A file left half-written is removed.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => WriteError::Exists,
        _ => WriteError::Io("create", e),
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(WriteError::Io("write", e));
    }
    Ok(())
}

fn parse_key_file(name: &str, path: PathBuf, text: &str) -> Result<StoredKey, Error> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::BadKeyFile {
        path: path.clone(),
        why: format!("not JSON ({e})"),
    })?;
    let Some(obj) = value.as_object() else {
        return Err(Error::BadKeyFile {
            path,
            why: "not a JSON object".to_owned(),
        });
    };
    let fields = Fields { obj, path: &path };

    let version = fields.u64("version")?;
    if version != FORMAT_VERSION {
        return Err(fields.bad(
            "version",
            format!("is {version}; this wallet reads version {FORMAT_VERSION}"),
        ));
    }
    let file_name = fields.str("name")?;
    if file_name != name {
        return Err(fields.bad(
            "name",
            format!("is {file_name:?} but the file is {name}.json"),
        ));
    }
    let address: Address = fields
        .str("address")?
        .parse()
        .map_err(|e| fields.bad("address", format!("is not an address ({e})")))?;
    let cipher = fields.str("cipher")?;
    let sealed = match cipher {
        "none" => {
            let seed = Zeroizing::new(fields.hex::<SEED_LEN>("ciphertext")?);
            if Keypair::from_seed(&seed).address() != address {
                return Err(fields.bad("address", "does not match the secret key".to_owned()));
            }
            Sealed::Plain(seed)
        }
        "chacha20poly1305" => {
            let kdf = fields.str("kdf")?;
            if kdf != "argon2id" {
                return Err(fields.bad(
                    "kdf",
                    format!("is {kdf:?}; a chacha20poly1305 key file uses \"argon2id\""),
                ));
            }
            let Some(params) = obj.get("kdf_params").and_then(Value::as_object) else {
                return Err(fields.bad("kdf_params", "is missing or not an object".to_owned()));
            };
            let params = Fields {
                obj: params,
                path: &path,
            };
            let kdf = KdfParams {
                m_cost: params.bounded("kdf_params.m_cost", "m_cost", KdfParams::MAX.m_cost)?,
                t_cost: params.bounded("kdf_params.t_cost", "t_cost", KdfParams::MAX.t_cost)?,
                p_cost: params.bounded("kdf_params.p_cost", "p_cost", KdfParams::MAX.p_cost)?,
            };
            kdf.argon2()
                .map_err(|e| fields.bad("kdf_params", format!("are not usable ({e})")))?;
            Sealed::Encrypted {
                kdf,
                salt: fields.hex("salt")?,
                nonce: fields.hex("nonce")?,
                ciphertext: fields.hex("ciphertext")?,
            }
        }
        other => {
            return Err(fields.bad(
                "cipher",
                format!("is {other:?}; expected \"chacha20poly1305\" or \"none\""),
            ));
        }
    };
    Ok(StoredKey {
        info: KeyInfo {
            name: name.to_owned(),
            address,
            encrypted: matches!(sealed, Sealed::Encrypted { .. }),
            path,
        },
        sealed,
    })
}

/// Field access with errors that name the field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, field: &'static str, why: String) -> Error {
        Error::BadKeyField {
            path: self.path.to_owned(),
            field,
            why,
        }
    }

    fn get(&self, field: &'static str) -> Result<&Value, Error> {
        self.obj
            .get(field)
            .ok_or_else(|| self.bad(field, "is missing".to_owned()))
    }

    fn str(&self, field: &'static str) -> Result<&str, Error> {
        self.get(field)?
            .as_str()
            .ok_or_else(|| self.bad(field, "is not a string".to_owned()))
    }

    fn u64(&self, field: &'static str) -> Result<u64, Error> {
        self.get(field)?
            .as_u64()
            .ok_or_else(|| self.bad(field, "is not a non-negative integer".to_owned()))
    }

    /// An integer from 1 to `max`; `key` is the name inside this object,
    /// `field` the full name reported.
    fn bounded(&self, field: &'static str, key: &'static str, max: u32) -> Result<u32, Error> {
        let value = self
            .obj
            .get(key)
            .ok_or_else(|| self.bad(field, "is missing".to_owned()))?
            .as_u64()
            .ok_or_else(|| self.bad(field, "is not a non-negative integer".to_owned()))?;
        match u32::try_from(value) {
            Ok(v) if (1..=max).contains(&v) => Ok(v),
            _ => Err(self.bad(field, format!("is {value}; this wallet accepts 1 to {max}"))),
        }
    }

    fn hex<const N: usize>(&self, field: &'static str) -> Result<[u8; N], Error> {
        let text = self.str(field)?;
        if text.len() != 2 * N {
            return Err(self.bad(
                field,
                format!("has {} hex digits; expected {}", text.len(), 2 * N),
            ));
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out)
            .map_err(|_| self.bad(field, "is not hex".to_owned()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Cheap argon2id parameters, so the tests take milliseconds.
    const FAST: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn store() -> (tempfile::TempDir, Keystore) {
        let home = tempfile::tempdir().expect("temp dir");
        let store = Keystore::with_kdf(home.path(), FAST);
        (home, store)
    }

    fn edit(path: &Path, field: &str, value: Value) {
        let text = std::fs::read_to_string(path).expect("read");
        let mut v: Value = serde_json::from_str(&text).expect("json");
        v[field] = value;
        std::fs::write(path, v.to_string()).expect("write");
    }

    #[test]
    fn encrypted_round_trip_gives_the_same_key() {
        let (_home, store) = store();
        let kp = Keypair::from_seed(&[9; 32]);
        let info = store
            .add("alice", &kp, Protection::Passphrase("correct horse"))
            .expect("add");
        assert_eq!(info.address, kp.address());
        assert!(info.encrypted);
        let stored = store.get("alice").expect("get");
        assert!(stored.is_encrypted());
        assert_eq!(stored.info(), &info);
        let opened = stored.unlock("correct horse").expect("unlock");
        assert_eq!(opened.seed(), kp.seed());

        let v: Value = serde_json::from_str(&std::fs::read_to_string(&info.path).expect("read"))
            .expect("json");
        assert_eq!(v["kdf"], "argon2id");
        assert_eq!(v["cipher"], "chacha20poly1305");
        assert_eq!(v["kdf_params"]["m_cost"], 64);
        assert_eq!(v["address"], kp.address().to_human());
        // The seed appears nowhere in the file.
        let text = std::fs::read_to_string(&info.path).expect("read");
        assert!(!text.contains(&hex::encode(kp.seed())));
    }

    #[test]
    fn the_default_parameters_are_owasps() {
        let store = Keystore::new(Path::new("/nonexistent"));
        assert_eq!(store.kdf, KdfParams::OWASP);
        assert_eq!(KdfParams::OWASP.m_cost, argon2::Params::DEFAULT_M_COST);
        assert_eq!(store.dir(), Path::new("/nonexistent/keys"));
    }

    #[test]
    fn a_wrong_passphrase_is_refused() {
        let (_home, store) = store();
        store
            .add(
                "k",
                &Keypair::from_seed(&[1; 32]),
                Protection::Passphrase("right"),
            )
            .expect("add");
        let err = store
            .get("k")
            .expect("get")
            .unlock("wrong")
            .expect_err("must fail");
        assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
        assert!(err.is_key_file_fault());
        assert!(
            err.to_string()
                .contains("wrong passphrase or corrupt key file")
        );
    }

    #[test]
    fn any_changed_byte_of_salt_nonce_or_ciphertext_is_refused() {
        let (_home, store) = store();
        let kp = Keypair::from_seed(&[2; 32]);
        let info = store
            .add("k", &kp, Protection::Passphrase("pw"))
            .expect("add");
        let original = std::fs::read_to_string(&info.path).expect("read");
        let v: Value = serde_json::from_str(&original).expect("json");
        for field in ["salt", "nonce", "ciphertext"] {
            let hex_text = v[field].as_str().expect("hex").to_owned();
            for i in [0, hex_text.len() / 2, hex_text.len() - 1] {
                let mut bytes = hex_text.clone().into_bytes();
                bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
                std::fs::write(&info.path, &original).expect("restore");
                edit(
                    &info.path,
                    field,
                    Value::String(String::from_utf8(bytes).expect("ascii")),
                );
                let err = store
                    .get("k")
                    .expect("get")
                    .unlock("pw")
                    .expect_err("tampered");
                assert!(
                    matches!(err, Error::WrongPassphrase { .. }),
                    "{field}[{i}]: {err}"
                );
            }
        }
        // Weaker KDF parameters give another key, so they don't open it either.
        std::fs::write(&info.path, &original).expect("restore");
        edit(
            &info.path,
            "kdf_params",
            json!({"m_cost": 64, "t_cost": 2, "p_cost": 1}),
        );
        let err = store
            .get("k")
            .expect("get")
            .unlock("pw")
            .expect_err("params");
        assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn a_swapped_address_is_refused_by_the_associated_data() {
        let (_home, store) = store();
        let info = store
            .add(
                "k",
                &Keypair::from_seed(&[3; 32]),
                Protection::Passphrase("pw"),
            )
            .expect("add");
        let other = Keypair::from_seed(&[4; 32]).address().to_human();
        edit(&info.path, "address", Value::String(other.clone()));
        let stored = store.get("k").expect("the file still parses");
        assert_eq!(stored.info().address.to_human(), other);
        let err = stored.unlock("pw").expect_err("swapped");
        assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn plaintext_round_trips_and_checks_its_address() {
        let (_home, store) = store();
        let kp = Keypair::from_seed(&[5; 32]);
        let info = store.add("dev", &kp, Protection::Plaintext).expect("add");
        assert!(!info.encrypted);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&info.path).expect("read"))
            .expect("json");
        assert_eq!(v["cipher"], "none");
        assert_eq!(v["ciphertext"], hex::encode(kp.seed()));
        let stored = store.get("dev").expect("get");
        assert!(!stored.is_encrypted());
        assert_eq!(stored.unlock("").expect("unlock").seed(), kp.seed());

        edit(
            &info.path,
            "address",
            Value::String(Keypair::from_seed(&[6; 32]).address().to_human()),
        );
        let err = store.get("dev").expect_err("swapped");
        assert!(
            matches!(
                err,
                Error::BadKeyField {
                    field: "address",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "alice", "Bob_2", "faucet-key", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "../x",
            "a/b",
            "a.json",
            "ünï",
            "x\n",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(Error::BadName { .. })),
                "{bad:?}"
            );
        }
        let (_home, store) = store();
        let err = store
            .add(
                "../escape",
                &Keypair::from_seed(&[1; 32]),
                Protection::Plaintext,
            )
            .expect_err("bad name");
        assert!(matches!(err, Error::BadName { .. }));
        assert!(matches!(store.get("a/b"), Err(Error::BadName { .. })));
    }

    #[test]
    fn an_existing_name_is_never_overwritten() {
        let (_home, store) = store();
        let first = store
            .add(
                "k",
                &Keypair::from_seed(&[1; 32]),
                Protection::Passphrase("pw"),
            )
            .expect("add");
        let before = std::fs::read(&first.path).expect("read");
        let err = store
            .add("k", &Keypair::from_seed(&[2; 32]), Protection::Plaintext)
            .expect_err("duplicate");
        assert!(matches!(err, Error::KeyExists { .. }), "{err}");
        assert_eq!(std::fs::read(&first.path).expect("read"), before);
        // The low-level write refuses too, whatever the check before it saw.
        assert!(matches!(
            write_new(&first.path, b"x"),
            Err(WriteError::Exists)
        ));
        assert_eq!(std::fs::read(&first.path).expect("read"), before);
    }

    #[cfg(unix)]
    #[test]
    fn files_are_0600_and_the_directory_0700() {
        use std::os::unix::fs::PermissionsExt;
        let (_home, store) = store();
        let info = store
            .add(
                "k",
                &Keypair::from_seed(&[1; 32]),
                Protection::Passphrase("pw"),
            )
            .expect("add");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&info.path), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
    }

    #[test]
    fn unknown_keys_and_bad_files_are_named() {
        let (_home, store) = store();
        assert!(matches!(store.get("nobody"), Err(Error::UnknownKey { .. })));
        assert!(store.list().expect("list").keys.is_empty());

        store
            .add(
                "ok",
                &Keypair::from_seed(&[1; 32]),
                Protection::Passphrase("pw"),
            )
            .expect("add");
        let path = store.path_of("broken").expect("path");
        std::fs::write(&path, "{not json").expect("write");
        assert!(matches!(store.get("broken"), Err(Error::BadKeyFile { .. })));

        let cases: [(&str, Value, &str); 7] = [
            ("cipher", json!("aes"), "cipher"),
            ("salt", json!("zz"), "salt"),
            ("nonce", json!("00"), "nonce"),
            ("address", json!("pyrNOPE"), "address"),
            ("name", json!("other"), "name"),
            ("version", json!(2), "version"),
            (
                "kdf_params",
                json!({"m_cost": 4_000_000_000u32, "t_cost": 1, "p_cost": 1}),
                "kdf_params.m_cost",
            ),
        ];
        let good = std::fs::read_to_string(store.path_of("ok").expect("path")).expect("read");
        for (field, value, named) in cases {
            std::fs::write(&path, good.replace("\"ok\"", "\"broken\"")).expect("write");
            edit(&path, field, value);
            match store.get("broken") {
                Err(Error::BadKeyField { field: f, .. }) => assert_eq!(f, named),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut v: Value = serde_json::from_str(&good).expect("json");
        v["name"] = json!("broken");
        if let Some(obj) = v.as_object_mut() {
            obj.remove("ciphertext");
        }
        std::fs::write(&path, v.to_string()).expect("write");
        let err = store.get("broken").expect_err("missing field");
        assert!(err.to_string().contains("`ciphertext` is missing"), "{err}");

        // A listing shows the good key and reports the bad file; other files
        // in the directory are none of its business.
        std::fs::write(store.dir().join("notes.txt"), "hello").expect("write");
        let listing = store.list().expect("list");
        assert_eq!(listing.keys.len(), 1);
        assert_eq!(listing.keys[0].name, "ok");
        assert_eq!(listing.unreadable.len(), 1);
    }

    #[test]
    fn oversized_key_files_are_refused_unread() {
        let (_home, store) = store();
        store
            .add("ok", &Keypair::from_seed(&[1; 32]), Protection::Plaintext)
            .expect("add");
        let path = store.path_of("big").expect("path");
        std::fs::write(&path, vec![b' '; MAX_KEY_FILE_BYTES as usize + 1]).expect("write");
        assert!(matches!(store.get("big"), Err(Error::BadKeyFile { .. })));
    }

    #[test]
    fn secret_files_in_the_testnet_format_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kp = Keypair::from_seed(&[7; 32]);
        let path = dir.path().join("faucet.key");
        // Exactly what `pyralog-testnet genesis` writes.
        std::fs::write(
            &path,
            format!("{}\n", pyralog_ledger::Hash(kp.seed()).to_hex()),
        )
        .expect("write");
        assert_eq!(*read_secret_file(&path).expect("read"), kp.seed());

        for bad in ["", "abc\n", &"g".repeat(64), &"0".repeat(66)] {
            std::fs::write(&path, bad).expect("write");
            assert!(
                matches!(read_secret_file(&path), Err(Error::BadSecretFile { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            read_secret_file(&dir.path().join("absent")),
            Err(Error::Io { .. })
        ));
    }
}
