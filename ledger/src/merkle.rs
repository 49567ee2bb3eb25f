//! The state commitment: a bucketed Merkle tree over blake3.
//!
//! State keys hash into `2^bits` buckets. A bucket's hash covers its entries in
//! key order; an rs_merkle tree over the bucket hashes gives the state root.
//! Leaves (bucket hashes) and inner nodes are hashed in different domains, so a
//! node can never pass for a leaf. The same structure gives proofs of presence and
//! absence ([`RecordProof`]) and the list of buckets two states differ in
//! ([`StateTree::diff`]).

use std::sync::LazyLock;

use rs_merkle::{MerkleProof, MerkleTree};

use crate::codec::{Decode, Encode, Reader, put_bytes, put_len, put_list, put_u32};
use crate::error::Error;
use crate::hash::{Domain, Hash};
use crate::state::StateKey;

/// The default number of bucket bits (65,536 buckets).
pub const DEFAULT_BUCKET_BITS: u32 = 16;
/// The most bucket bits a chain may choose.
pub const MAX_BUCKET_BITS: u32 = 24;

/// rs_merkle's view of our hashing: inner nodes are `keyed_hash(node key, l ‖ r)`.
#[derive(Clone, Debug)]
pub struct NodeHasher;

impl rs_merkle::Hasher for NodeHasher {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        Hash::of(Domain::MerkleNode, data).0
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(right) => {
                let mut both = [0u8; 64];
                both[..32].copy_from_slice(left);
                both[32..].copy_from_slice(right);
                Hash::of(Domain::MerkleNode, &both).0
            }
            // rs_merkle promotes an unpaired node; leaves and nodes are in
            // different domains, so this cannot make two lists share a root.
            None => *left,
        }
    }
}

/// The Merkle root of `leaves` (already hashed in their own domain); the zero
/// hash for no leaves.
pub fn root_of(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::ZERO;
    }
    let raw: Vec<[u8; 32]> = leaves.iter().map(|h| h.0).collect();
    Hash(
        MerkleTree::<NodeHasher>::from_leaves(&raw)
            .root()
            .unwrap_or_default(),
    )
}

/// The bucket of a state key under `bits` bucket bits.
pub fn bucket_of(key_bytes: &[u8], bits: u32) -> u32 {
    let h = Hash::of(Domain::BucketIndex, key_bytes);
    let top = u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]]);
    if bits == 0 { 0 } else { top >> (32 - bits) }
}

/// Hashes a bucket's entries as they stream by, in strictly ascending key
/// order: each as `len(key) ‖ key ‖ len(entry) ‖ entry`, lengths as u32 LE.
pub struct BucketHasher(blake3::Hasher);

impl BucketHasher {
    /// A hasher for an empty bucket.
    pub fn new() -> Self {
        BucketHasher(Domain::Bucket.hasher())
    }

    /// Adds the next entry.
    pub fn add(&mut self, key: &[u8], entry: &[u8]) {
        self.0.update(&(key.len() as u32).to_le_bytes());
        self.0.update(key);
        self.0.update(&(entry.len() as u32).to_le_bytes());
        self.0.update(entry);
    }

    /// The bucket's hash.
    pub fn finish(&self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

impl Default for BucketHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The hash of one bucket from its entries, which must come in strictly
/// ascending key order.
pub fn bucket_hash<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Hash {
    let mut h = BucketHasher::new();
    for (k, v) in entries {
        h.add(k, v);
    }
    h.finish()
}

/// The hash of a bucket with no entries.
pub fn empty_bucket_hash() -> Hash {
    static EMPTY: LazyLock<Hash> = LazyLock::new(|| bucket_hash([]));
    *EMPTY
}

/// The bucket hashes of a state and the tree over them.
#[derive(Clone)]
pub struct StateTree {
    bits: u32,
    leaves: Vec<Hash>,
    tree: MerkleTree<NodeHasher>,
}

impl std::fmt::Debug for StateTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateTree(bits={}, root={})", self.bits, self.root())
    }
}

impl StateTree {
    /// A tree over `leaves`, one per bucket (`2^bits` of them).
    pub fn new(bits: u32, leaves: Vec<Hash>) -> Result<StateTree, Error> {
        if bits > MAX_BUCKET_BITS || leaves.len() != 1usize << bits {
            return Err(Error::Corrupt(format!(
                "{} bucket hashes for {bits} bucket bits",
                leaves.len()
            )));
        }
        let raw: Vec<[u8; 32]> = leaves.iter().map(|h| h.0).collect();
        let tree = MerkleTree::from_leaves(&raw);
        Ok(StateTree { bits, leaves, tree })
    }

    /// The tree of an empty state.
    pub fn empty(bits: u32) -> Result<StateTree, Error> {
        StateTree::new(
            bits,
            vec![empty_bucket_hash(); 1usize << bits.min(MAX_BUCKET_BITS)],
        )
    }

    /// Bucket bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The state root.
    pub fn root(&self) -> Hash {
        Hash(self.tree.root().unwrap_or_default())
    }

    /// Every bucket hash, in bucket order.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    /// The tree with some buckets' hashes replaced.
    pub fn with_updates(&self, updates: &[(u32, Hash)]) -> Result<StateTree, Error> {
        let mut leaves = self.leaves.clone();
        for &(b, h) in updates {
            let slot = leaves
                .get_mut(b as usize)
                .ok_or_else(|| Error::Corrupt(format!("bucket {b} out of range")))?;
            *slot = h;
        }
        StateTree::new(self.bits, leaves)
    }

    /// The buckets whose hashes differ between two trees of the same shape, in
    /// order. Trees of different shapes differ everywhere.
    pub fn diff(&self, other: &StateTree) -> Vec<u32> {
        if self.bits != other.bits {
            return (0..(1u32 << self.bits.max(other.bits))).collect();
        }
        self.leaves
            .iter()
            .zip(&other.leaves)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// The Merkle path of one bucket.
    pub fn path(&self, bucket: u32) -> Vec<Hash> {
        self.tree
            .proof(&[bucket as usize])
            .proof_hashes()
            .iter()
            .map(|h| Hash(*h))
            .collect()
    }
}

/// The entries of one bucket: `(state key bytes, entry bytes)` in key order.
pub type BucketEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// A proof that a state key holds a given entry, or nothing, under a state root:
/// every entry of the key's bucket plus the bucket's Merkle path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProof {
    /// Bucket bits of the state.
    pub bucket_bits: u32,
    /// The key's bucket.
    pub bucket: u32,
    /// Every `(state key bytes, entry bytes)` in the bucket, in key order.
    pub entries: BucketEntries,
    /// The bucket's Merkle path.
    pub path: Vec<Hash>,
}

/// Decoder caps for proofs.
const PROOF_ENTRIES: usize = 1 << 16;

impl RecordProof {
    /// Checks the proof against `root` for `key`. Returns the key's entry bytes if
    /// present, `None` if the proof shows it absent, and an error if the proof is
    /// not a proof of either under `root`.
    pub fn verify(&self, root: &Hash, key: &StateKey) -> Result<Option<&[u8]>, Error> {
        let bad = |why: &str| Error::BadProof(why.to_owned());
        if self.bucket_bits > MAX_BUCKET_BITS || self.bucket >= (1u32 << self.bucket_bits) {
            return Err(bad("bucket out of range"));
        }
        let key_bytes = key.to_bytes();
        if bucket_of(&key_bytes, self.bucket_bits) != self.bucket {
            return Err(bad("the key does not belong to the proven bucket"));
        }
        for w in self.entries.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(bad("bucket entries out of order"));
            }
        }
        if self
            .entries
            .iter()
            .any(|(k, _)| bucket_of(k, self.bucket_bits) != self.bucket)
        {
            return Err(bad("an entry does not belong to the proven bucket"));
        }
        let leaf = bucket_hash(
            self.entries
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
        let path: Vec<[u8; 32]> = self.path.iter().map(|h| h.0).collect();
        let ok = MerkleProof::<NodeHasher>::new(path).verify(
            root.0,
            &[self.bucket as usize],
            &[leaf.0],
            1usize << self.bucket_bits,
        );
        if !ok {
            return Err(bad("the Merkle path does not lead to the state root"));
        }
        Ok(self
            .entries
            .iter()
            .find(|(k, _)| *k == key_bytes)
            .map(|(_, v)| v.as_slice()))
    }

    /// The proof's size in bytes, encoded.
    pub fn encoded_len(&self) -> usize {
        self.to_bytes().len()
    }
}

impl Encode for RecordProof {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.bucket_bits);
        put_u32(out, self.bucket);
        put_len(out, self.entries.len());
        for (k, v) in &self.entries {
            put_bytes(out, k);
            put_bytes(out, v);
        }
        put_list(out, &self.path);
    }
}

impl Decode for RecordProof {
    const MIN_SIZE: usize = 16;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let bucket_bits = r.u32("bucket bits")?;
        let bucket = r.u32("bucket")?;
        let n = r.len(PROOF_ENTRIES, 8, "proof entries")?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let k = r.bytes(crate::tx::caps::KEY + 33, "state key")?.to_vec();
            let v = r
                .bytes(crate::tx::caps::VALUE + 256, "state entry")?
                .to_vec();
            entries.push((k, v));
        }
        let path = r.list(MAX_BUCKET_BITS as usize, "merkle path")?;
        Ok(RecordProof {
            bucket_bits,
            bucket,
            entries,
            path,
        })
    }
}
