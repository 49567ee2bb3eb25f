//! The snapshot file: what a member that fell behind receives instead of the
//! log it missed.
//!
//! Layout: the 8-byte magic `PYRSNAP1`, a `u32` (little-endian) length, the
//! cluster state ([`ClusterState`], CBOR, at most [`MAX_STATE_BYTES`]), then
//! the ledger's redb file, byte for byte, to the end. The cluster state names
//! the ledger part's length and blake3 hash, so a truncated or damaged file is
//! refused before anything is installed.
//!
//! The ledger part is a copy of the store's file taken while the state
//! machine holds the ledger's lock: redb commits with an fsync, so between
//! two commits the file is one consistent state (the copy opens as a store
//! that was not closed, which redb recovers on open).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::types::{LogId, StoredMembership};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"PYRSNAP1";
/// The largest cluster-state section.
pub const MAX_STATE_BYTES: usize = 512 << 20;
/// The largest snapshot file a member accepts.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 30;

/// A snapshot, as openraft hands it around: a file on the member's disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Where it is.
    pub path: std::path::PathBuf,
}

/// The state machine's own state, as a snapshot carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The last entry the snapshot includes.
    pub applied: Option<LogId>,
    /// The membership as of `applied`.
    pub membership: StoredMembership,
    /// The signing floor.
    pub floor: u64,
    /// Signing intents: (slot key, digest).
    pub intents: Vec<(Vec<u8>, Vec<u8>)>,
    /// Pending writes: canonical transaction bytes, oldest first.
    #[serde(with = "crate::wire::byte_strings")]
    pub pending: Vec<Vec<u8>>,
    /// The ledger part's length.
    pub ledger_len: u64,
    /// The ledger part's blake3 hash.
    pub ledger_hash: Vec<u8>,
}

/// Writes a snapshot file at `out` from `state` and the ledger file at
/// `ledger` (whose length and hash it fills in).
pub fn write(out: &Path, mut state: ClusterState, ledger: &Path) -> Result<(), Error> {
    let (len, hash) = hash_file(ledger)?;
    state.ledger_len = len;
    state.ledger_hash = hash.to_vec();
    let head = crate::wire::encode("snapshot state", &state, MAX_STATE_BYTES)?;
    let tmp = out.with_extension("tmp");
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(MAGIC)?;
        w.write_all(&(head.len() as u32).to_le_bytes())?;
        w.write_all(&head)?;
        let mut r = BufReader::new(File::open(ledger)?);
        std::io::copy(&mut r, &mut w)?;
        w.into_inner()
            .map_err(|e| Error::Storage(e.to_string()))?
            .sync_all()?;
    }
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// Reads and checks a snapshot file: its header, its state, and the ledger
/// part's length and hash. Returns the state and the ledger part's offset.
pub fn read(path: &Path) -> Result<(ClusterState, u64), Error> {
    let bad = |m: String| Error::BadSnapshot(m);
    let mut f = File::open(path)?;
    let total = f.metadata()?.len();
    if total > MAX_SNAPSHOT_BYTES {
        return Err(bad(format!(
            "{total} bytes, more than the {MAX_SNAPSHOT_BYTES} accepted"
        )));
    }
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .map_err(|_| bad("shorter than its header".into()))?;
    if &magic != MAGIC {
        return Err(bad("not a snapshot file (bad magic)".into()));
    }
    let mut len = [0u8; 4];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than its header".into()))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_STATE_BYTES || len as u64 > total.saturating_sub(12) {
        return Err(bad(format!("a state section of {len} bytes does not fit")));
    }
    let mut head = vec![0u8; len];
    f.read_exact(&mut head)
        .map_err(|_| bad("the state section is cut short".into()))?;
    let state: ClusterState = crate::wire::decode("snapshot state", &head, MAX_STATE_BYTES)
        .map_err(|e| bad(e.to_string()))?;
    let offset = 12 + len as u64;
    if total - offset != state.ledger_len {
        return Err(bad(format!(
            "the ledger part is {} bytes, the header says {}",
            total - offset,
            state.ledger_len
        )));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut f, &mut hasher)?;
    if hasher.finalize().as_bytes().as_slice() != state.ledger_hash.as_slice() {
        return Err(bad("the ledger part does not match its hash".into()));
    }
    Ok((state, offset))
}

/// Copies the ledger part of a checked snapshot file to `out`.
pub fn extract_ledger(path: &Path, offset: u64, out: &Path) -> Result<(), Error> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut w = BufWriter::new(File::create(out)?);
    std::io::copy(&mut f, &mut w)?;
    w.into_inner()
        .map_err(|e| Error::Storage(e.to_string()))?
        .sync_all()?;
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), Error> {
    let mut f = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let len = std::io::copy(&mut f, &mut hasher)?;
    Ok((len, *hasher.finalize().as_bytes()))
}
