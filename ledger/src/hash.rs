//! blake3 hashes with a domain per type.
//!
//! Each kind of hashed value has its own [`Domain`]; the hash is
//! `blake3::keyed_hash(derive_key(domain context), bytes)`, so the bytes of one
//! type can never be taken for another's.

use std::fmt;
use std::sync::LazyLock;

use crate::error::Error;

/// A 32-byte blake3 hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

/// What a hash is of. Each variant has its own key, so the hashes of two
/// different kinds of value never collide by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A transaction's identity: the hash of its body.
    TxId,
    /// A block header.
    BlockHeader,
    /// A gossip batch's signed header.
    BatchHeader,
    /// A leaf of a transaction root: one transaction id.
    TxLeaf,
    /// An inner node of any Merkle tree.
    MerkleNode,
    /// The state key that picks a record's bucket.
    BucketIndex,
    /// The hash of one bucket of the state.
    Bucket,
    /// A whole genesis file.
    Genesis,
    /// The checksum in an address's human form.
    AddressChecksum,
    /// The key of the proof-of-work stamp for a chain.
    PowKey,
    /// A record entry, for the last-writer-wins tie-break.
    RecordEntry,
    /// The transcript that picks batch-verification coefficients.
    BatchVerify,
    /// Deterministic development keys.
    DevKey,
    /// One entry of the state, as its bucket hash covers it.
    StateEntry,
    /// A gossip message's id (the same on every node, for deduplication).
    GossipMessage,
    /// A statement a consensus engine signs, and the digests it commits to.
    Consensus,
    /// A commitment to a time-lock puzzle's answer (`timelock`).
    TimelockCommitment,
    /// The key a time-lock puzzle's answer opens (`timelock`).
    TimelockKey,
}

impl Domain {
    const ALL: [Domain; 18] = [
        Domain::TxId,
        Domain::BlockHeader,
        Domain::BatchHeader,
        Domain::TxLeaf,
        Domain::MerkleNode,
        Domain::BucketIndex,
        Domain::Bucket,
        Domain::Genesis,
        Domain::AddressChecksum,
        Domain::PowKey,
        Domain::RecordEntry,
        Domain::BatchVerify,
        Domain::DevKey,
        Domain::StateEntry,
        Domain::GossipMessage,
        Domain::Consensus,
        Domain::TimelockCommitment,
        Domain::TimelockKey,
    ];

    /// The blake3 `derive_key` context string. Changing one is a format break.
    pub const fn context(self) -> &'static str {
        match self {
            Domain::TxId => "pyralog 2026-11 transaction id",
            Domain::BlockHeader => "pyralog 2026-11 block header",
            Domain::BatchHeader => "pyralog 2026-11 batch header",
            Domain::TxLeaf => "pyralog 2026-11 transaction root leaf",
            Domain::MerkleNode => "pyralog 2026-11 merkle inner node",
            Domain::BucketIndex => "pyralog 2026-11 state bucket index",
            Domain::Bucket => "pyralog 2026-11 state bucket",
            Domain::Genesis => "pyralog 2026-11 genesis",
            Domain::AddressChecksum => "pyralog 2026-11 address checksum",
            Domain::PowKey => "pyralog 2026-11 proof of work key",
            Domain::RecordEntry => "pyralog 2026-11 record entry",
            Domain::BatchVerify => "pyralog 2026-11 batch verification coefficients",
            Domain::DevKey => "pyralog 2026-11 development key",
            Domain::StateEntry => "pyralog 2026-11 state entry",
            Domain::GossipMessage => "pyralog 2026-11 gossip message id",
            Domain::Consensus => "pyralog 2026-11 consensus statement",
            Domain::TimelockCommitment => "pyralog 2026-11 time-lock answer commitment",
            Domain::TimelockKey => "pyralog 2026-11 time-lock key",
        }
    }

    /// The 32-byte key of this domain.
    pub fn key(self) -> &'static [u8; 32] {
        static KEYS: LazyLock<Vec<[u8; 32]>> = LazyLock::new(|| {
            Domain::ALL
                .iter()
                .map(|d| blake3::derive_key(d.context(), b""))
                .collect()
        });
        &KEYS[self as usize]
    }

    /// A streaming hasher for this domain.
    pub fn hasher(self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(self.key())
    }
}

impl Hash {
    /// The all-zero hash, used as "no parent" and "empty".
    pub const ZERO: Hash = Hash([0; 32]);

    /// The hash of `bytes` in `domain`.
    pub fn of(domain: Domain, bytes: &[u8]) -> Hash {
        Hash(*blake3::keyed_hash(domain.key(), bytes).as_bytes())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Hash, Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| Error::BadHash(s.chars().take(80).collect()))?;
        Ok(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

impl crate::codec::Encode for Hash {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl crate::codec::Decode for Hash {
    const MIN_SIZE: usize = 32;
    fn decode(r: &mut crate::codec::Reader<'_>) -> Result<Self, Error> {
        Ok(Hash(r.array("hash")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_have_distinct_keys_in_declaration_order() {
        let keys: std::collections::BTreeSet<_> = Domain::ALL.iter().map(|d| *d.key()).collect();
        assert_eq!(keys.len(), Domain::ALL.len());
        for (i, d) in Domain::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "Domain::ALL must list variants in order");
        }
        assert_ne!(
            Hash::of(Domain::TxId, b"x"),
            Hash::of(Domain::BlockHeader, b"x")
        );
    }

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let h = Hash::of(Domain::TxId, b"abc");
        assert_eq!(Hash::from_hex(&h.to_hex()).ok(), Some(h));
        assert!(Hash::from_hex("zz").is_err());
        assert!(Hash::from_hex(&h.to_hex()[..62]).is_err());
    }
}
