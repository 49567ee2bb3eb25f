//! Checking a record's Merkle proof, as the node sent it, locally.

use anyhow::{Result, anyhow, bail};
use pyralog_ledger::merkle::RecordProof;
use pyralog_ledger::{Address, Decode, Hash, RecordEntry, StateKey};
use serde_json::Value;

/// Checks that the proof in `record` shows `address`'s record `key` holding the
/// value the record claims, under the state root it names. Returns that root.
///
/// The root itself is the node's word; what this proves is that the value is
/// the one committed under that root (a client that trusts a root from
/// elsewhere, such as a quorum certificate, compares it).
pub fn check(record: &Value, address: &Address, key: &str) -> Result<Hash> {
    let root = Hash::from_hex(
        record["state_root"]
            .as_str()
            .ok_or_else(|| anyhow!("the answer has no state_root"))?,
    )?;
    let bytes = hex::decode(
        record["proof"]
            .as_str()
            .ok_or_else(|| anyhow!("the answer has no proof"))?,
    )
    .map_err(|_| anyhow!("the proof is not hex"))?;
    let proof = RecordProof::from_bytes(&bytes)?;
    let state_key = StateKey::Record(*address, key.as_bytes().to_vec());
    let entry = proof
        .verify(&root, &state_key)?
        .ok_or_else(|| anyhow!("the proof shows no record {key:?}, yet the node returned one"))?;
    let entry = RecordEntry::from_bytes(entry)?;
    let claimed = record["value_hex"]
        .as_str()
        .map(hex::decode)
        .transpose()
        .map_err(|_| anyhow!("value_hex is not hex"))?;
    if entry.value != claimed {
        bail!("the proven value differs from the value the node returned");
    }
    Ok(root)
}
