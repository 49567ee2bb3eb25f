//! Who proposes: the one thing PBFT and proof of stake order differently.
//!
//! PBFT (§4.1) names one primary per view, round robin, and it proposes every
//! sequence number of its view. Proof of stake names a proposer per sequence
//! number, drawn by stake from the previous block's digest, the height and the
//! round (the view), so proposals spread over the set in proportion to stake
//! and no one can know far ahead who proposes. In both, one *leader* per view
//! runs the view change: it sends the new-view and re-proposes what was
//! prepared (§4.4). Leaders go round robin in both; under proof of stake the
//! leader also proposes the first height its new-view leaves open, so a view
//! with an honest leader always orders a block, however the draws fall.

use pyralog_ledger::codec::put_u64;
use pyralog_ledger::{Address, Domain, Hash};

use crate::bft::ValidatorSet;

/// How an engine picks its proposers.
pub trait Proposers: Clone + std::fmt::Debug {
    /// Whether each sequence number has its own proposer (`true`), or the
    /// view's leader proposes them all (`false`, classic PBFT).
    const PER_HEIGHT: bool;

    /// The validator that starts `view`: it sends the new-view and signs the
    /// re-proposals in it.
    fn leader(&self, set: &ValidatorSet, view: u64) -> Address;

    /// The validator that proposes `seq` in `view`, after the block whose
    /// proposal digest is `parent`.
    fn proposer(&self, set: &ValidatorSet, view: u64, seq: u64, parent: &Hash) -> Address;
}

/// PBFT's primaries: validator `view mod n` leads the view and proposes every
/// sequence number in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundRobin;

impl Proposers for RoundRobin {
    const PER_HEIGHT: bool = false;

    fn leader(&self, set: &ValidatorSet, view: u64) -> Address {
        set.round_robin(view).address
    }

    fn proposer(&self, set: &ValidatorSet, view: u64, _seq: u64, _parent: &Hash) -> Address {
        self.leader(set, view)
    }
}

/// Proof of stake's proposers: a draw weighted by voting power, seeded by the
/// previous block's digest, the height and the round; view leaders in turn,
/// from an offset drawn from the epoch's seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StakeWeighted {
    /// The epoch's seed (the digest of the block that closed the previous
    /// epoch), so leaders differ from epoch to epoch.
    pub epoch_seed: Hash,
}

impl Proposers for StakeWeighted {
    const PER_HEIGHT: bool = true;

    fn leader(&self, set: &ValidatorSet, view: u64) -> Address {
        // Round robin from an offset the epoch's seed picks: a faulty leader
        // can stall at most one view in n, as in PBFT (a draw per view could
        // pick the same faulty validator many views in a row).
        let offset = draw(b"pos leader", &self.epoch_seed, 0, 0);
        set.round_robin(offset.wrapping_add(view)).address
    }

    fn proposer(&self, set: &ValidatorSet, view: u64, seq: u64, parent: &Hash) -> Address {
        set.weighted(draw(b"pos proposer", parent, seq, view))
            .address
    }
}

/// A uniform 64-bit draw from a hash of its inputs.
pub fn draw(tag: &[u8], seed: &Hash, height: u64, round: u64) -> u64 {
    let mut bytes = Vec::with_capacity(tag.len() + 48);
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(&seed.0);
    put_u64(&mut bytes, height);
    put_u64(&mut bytes, round);
    let h = Hash::of(Domain::Consensus, &bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.0[..8]);
    u64::from_le_bytes(first)
}
