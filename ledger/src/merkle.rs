//! The state commitment: a bucketed Merkle tree over blake3.
//!
//! A state key's *digest* is `Hash::of(BucketIndex, key bytes)`; its top `bits`
//! bits pick one of `2^bits` buckets. A bucket's hash covers its entries as
//! `(key digest, entry digest)` pairs in ascending key-digest order, so a bucket
//! can be rehashed from 64 bytes per entry kept in memory, without reading the
//! entries back from disk. The bucket hashes are the leaves of a binary tree whose
//! inner nodes are `keyed_hash(node key, left ‖ right)`; leaves and inner nodes are
//! hashed in different domains, so a node can never pass for a leaf.
//!
//! [`StateTree`] keeps every layer; a change is worked out as a [`TreeDelta`]
//! (the nodes on the paths above changed buckets) and installed in place. Its shape and hashing are exactly rs_merkle's with [`NodeHasher`]
//! (`2^bits` leaves, so no node is ever unpaired), and its paths verify with
//! `rs_merkle::MerkleProof`, which is how [`RecordProof::verify`] checks them.

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
            Some(right) => node(&Hash(*left), &Hash(*right)).0,
            // rs_merkle promotes an unpaired node; leaves and nodes are in
            // different domains, so this cannot make two lists share a root.
            None => *left,
        }
    }
}

/// An inner node over two children.
fn node(left: &Hash, right: &Hash) -> Hash {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(&left.0);
    both[32..].copy_from_slice(&right.0);
    Hash::of(Domain::MerkleNode, &both)
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

/// The digest of a state key: it orders the key in its bucket and picks the bucket.
pub fn key_digest(key_bytes: &[u8]) -> Hash {
    Hash::of(Domain::BucketIndex, key_bytes)
}

/// The digest of a state entry, as its bucket hash covers it.
pub fn entry_digest(entry_bytes: &[u8]) -> Hash {
    Hash::of(Domain::StateEntry, entry_bytes)
}

/// The bucket a key digest falls in under `bits` bucket bits.
pub fn bucket_of_digest(digest: &Hash, bits: u32) -> u32 {
    let top = u32::from_be_bytes([digest.0[0], digest.0[1], digest.0[2], digest.0[3]]);
    if bits == 0 { 0 } else { top >> (32 - bits) }
}

/// The bucket of a state key under `bits` bucket bits.
pub fn bucket_of(key_bytes: &[u8], bits: u32) -> u32 {
    bucket_of_digest(&key_digest(key_bytes), bits)
}

/// A bucket's contents as its hash sees them: `(key digest, entry digest)` in
/// ascending key-digest order.
pub type BucketDigests = Vec<(Hash, Hash)>;

/// The hash of a bucket from its `(key digest, entry digest)` pairs, which must
/// be in strictly ascending key-digest order.
pub fn bucket_hash(digests: &[(Hash, Hash)]) -> Hash {
    let mut h = Domain::Bucket.hasher();
    for (k, e) in digests {
        h.update(&k.0);
        h.update(&e.0);
    }
    Hash(*h.finalize().as_bytes())
}

/// Sets `key`'s entry digest in a bucket's sorted list.
pub fn upsert_digest(list: &mut BucketDigests, key: Hash, entry: Hash) {
    match list.binary_search_by(|(k, _)| k.cmp(&key)) {
        Ok(i) => list[i].1 = entry,
        Err(i) => list.insert(i, (key, entry)),
    }
}

/// The hash of a bucket with no entries.
pub fn empty_bucket_hash() -> Hash {
    static EMPTY: LazyLock<Hash> = LazyLock::new(|| bucket_hash(&[]));
    *EMPTY
}

/// The bucket hashes of a state and every layer of the tree over them.
#[derive(Clone)]
pub struct StateTree {
    bits: u32,
    /// `layers[0]` are the bucket hashes; the last layer is the root alone.
    layers: Vec<Vec<Hash>>,
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
        let mut layers = vec![leaves];
        while let Some(below) = layers.last().filter(|l| l.len() > 1) {
            let above = below.chunks(2).map(|p| node(&p[0], &p[1])).collect();
            layers.push(above);
        }
        Ok(StateTree { bits, layers })
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
        self.layers
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// Every bucket hash, in bucket order.
    pub fn leaves(&self) -> &[Hash] {
        &self.layers[0]
    }

    /// The nodes `level` layers above the buckets (0: the buckets, `bits`:
    /// the root alone); node `i` covers buckets `i << level .. (i + 1) << level`.
    /// Past the root, the root.
    pub fn layer(&self, level: usize) -> &[Hash] {
        &self.layers[level.min(self.layers.len() - 1)]
    }

    /// The tree with some buckets' hashes replaced; only the paths above them
    /// are rehashed.
    pub fn with_updates(&self, updates: &[(u32, Hash)]) -> Result<StateTree, Error> {
        let mut next = self.clone();
        next.apply(self.delta(updates)?);
        Ok(next)
    }

    /// The nodes that change when some buckets' hashes are replaced, without
    /// touching the tree: only the paths above the changed buckets are hashed.
    pub fn delta(&self, updates: &[(u32, Hash)]) -> Result<TreeDelta, Error> {
        let mut level: Vec<(usize, Hash)> = Vec::with_capacity(updates.len());
        for &(b, h) in updates {
            if b as usize >= self.layers[0].len() {
                return Err(Error::Corrupt(format!("bucket {b} out of range")));
            }
            level.push((b as usize, h));
        }
        // A bucket given twice takes its last hash, as if applied in order.
        level.sort_by_key(|(i, _)| *i);
        level.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        let mut levels = vec![level];
        for depth in 1..self.layers.len() {
            let below = &self.layers[depth - 1];
            let changed = &levels[depth - 1];
            // The changed children are sorted, so a parent's changed children are
            // adjacent in `changed`.
            let child = |i: usize, k: &mut usize| -> Hash {
                while *k < changed.len() && changed[*k].0 < i {
                    *k += 1;
                }
                match changed.get(*k) {
                    Some((j, h)) if *j == i => *h,
                    _ => below[i],
                }
            };
            let mut parents: Vec<(usize, Hash)> = Vec::with_capacity(changed.len() / 2 + 1);
            let mut k = 0;
            let mut last = usize::MAX;
            for &(i, _) in changed {
                let p = i / 2;
                if p == last {
                    continue;
                }
                last = p;
                let left = child(2 * p, &mut k);
                let right = child(2 * p + 1, &mut k);
                parents.push((p, node(&left, &right)));
            }
            levels.push(parents);
        }
        let root = levels
            .last()
            .and_then(|l| l.first())
            .map_or_else(|| self.root(), |(_, h)| *h);
        Ok(TreeDelta { levels, root })
    }

    /// Installs a delta made by [`StateTree::delta`] on this tree.
    pub fn apply(&mut self, delta: TreeDelta) {
        for (layer, changed) in self.layers.iter_mut().zip(delta.levels) {
            for (i, h) in changed {
                layer[i] = h;
            }
        }
    }

    /// The buckets whose hashes differ between two trees of the same shape, in
    /// order. Trees of different shapes differ everywhere.
    pub fn diff(&self, other: &StateTree) -> Vec<u32> {
        if self.bits != other.bits {
            return (0..(1u32 << self.bits.max(other.bits))).collect();
        }
        self.leaves()
            .iter()
            .zip(other.leaves())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// The Merkle path of one bucket: its sibling at every level, bottom up.
    pub fn path(&self, bucket: u32) -> Vec<Hash> {
        let mut i = bucket as usize;
        let mut out = Vec::with_capacity(self.bits as usize);
        for layer in &self.layers[..self.layers.len() - 1] {
            out.push(layer[i ^ 1]);
            i /= 2;
        }
        out
    }
}

/// The nodes of a [`StateTree`] that a change replaces, level by level, and the
/// root it gives.
#[derive(Clone, Debug)]
pub struct TreeDelta {
    levels: Vec<Vec<(usize, Hash)>>,
    root: Hash,
}

impl TreeDelta {
    /// The root of the tree with the change applied.
    pub fn root(&self) -> Hash {
        self.root
    }
}

/// The entries of one bucket: `(state key bytes, entry bytes)`.
pub type BucketEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// A proof that a state key holds a given entry, or nothing, under a state root:
/// every entry of the key's bucket, in key-digest order, plus the bucket's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProof {
    /// Bucket bits of the state.
    pub bucket_bits: u32,
    /// The key's bucket.
    pub bucket: u32,
    /// Every `(state key bytes, entry bytes)` in the bucket, in ascending order of
    /// key digest.
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
        let digests: BucketDigests = self
            .entries
            .iter()
            .map(|(k, v)| (key_digest(k), entry_digest(v)))
            .collect();
        if digests
            .iter()
            .any(|(k, _)| bucket_of_digest(k, self.bucket_bits) != self.bucket)
        {
            return Err(bad("an entry does not belong to the proven bucket"));
        }
        if digests.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(bad("bucket entries out of order"));
        }
        let leaf = bucket_hash(&digests);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_updates_match_a_rebuild_and_rs_merkle() {
        for bits in [0u32, 1, 3, 8] {
            let leaves: Vec<Hash> = (0..1u32 << bits)
                .map(|i| Hash::of(Domain::Bucket, &i.to_le_bytes()))
                .collect();
            let tree = StateTree::new(bits, leaves.clone()).expect("tree");
            assert_eq!(
                tree.root(),
                root_of(&leaves),
                "same shape and hashing as rs_merkle"
            );
            let updates: Vec<(u32, Hash)> = (0..1u32 << bits)
                .step_by(3)
                .map(|b| (b, Hash::of(Domain::Bucket, &[b as u8, 9])))
                .collect();
            let mut rebuilt = leaves.clone();
            for (b, h) in &updates {
                rebuilt[*b as usize] = *h;
            }
            let updated = tree.with_updates(&updates).expect("update");
            assert_eq!(
                updated.root(),
                StateTree::new(bits, rebuilt).expect("tree").root()
            );
            assert_eq!(tree.root(), root_of(&leaves), "the original is untouched");
        }
    }

    #[test]
    fn a_bucket_updated_twice_takes_its_last_hash() {
        let tree = StateTree::empty(4).expect("tree");
        let (a, b) = (Hash([1; 32]), Hash([2; 32]));
        let twice = tree
            .with_updates(&[(3, a), (5, a), (3, b)])
            .expect("update");
        let once = tree.with_updates(&[(5, a), (3, b)]).expect("update");
        assert_eq!(twice.root(), once.root());
        assert_eq!(twice.leaves()[3], b);
        assert_eq!(tree.delta(&[]).expect("delta").root(), tree.root());
    }

    #[test]
    fn upsert_keeps_the_list_sorted() {
        let mut list = BucketDigests::new();
        for i in [5u8, 1, 9, 1, 3] {
            upsert_digest(&mut list, Hash([i; 32]), Hash([i + 100; 32]));
        }
        let keys: Vec<u8> = list.iter().map(|(k, _)| k.0[0]).collect();
        assert_eq!(keys, vec![1, 3, 5, 9]);
    }
}
