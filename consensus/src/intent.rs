//! Signing intents: the rule that keeps one validator key from signing two
//! conflicting statements, even when the process holding the key changes.
//!
//! A validator may be run by several processes in turn (the members of a
//! cluster, one leader at a time; or one node restarted). Before a statement
//! is signed and sent, the process records it as an *intent* in a
//! [`SigningHistory`] that outlives it (a cluster commits the intent through
//! Raft, see `pyralog-cluster`'s `intent` module). Whoever holds the key next
//! starts from that history and refuses to sign a statement that conflicts
//! with one of its intents.
//!
//! Two statements conflict when they have the same kind, round (view) and
//! height and different digests: exactly what [`crate::bft::Votes`] turns
//! into [`crate::bft::Evidence`] and what proof of stake slashes. Signing the
//! very same statement again is allowed (it adds nothing a peer could use).
//! Below the *floor* the history has been pruned (or was imported without
//! detail), so nothing there may be signed at all.
//!
//! Everything here is pure: no I/O, no clock.

use std::collections::BTreeMap;

use pyralog_ledger::Hash;

use crate::bft::{Kind, Statement};

/// The most intents a history holds; the host prunes final heights long
/// before this.
pub const MAX_INTENTS: usize = 100_000;

/// Where a statement sits: at most one digest may ever be signed per slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The height (PBFT's sequence number).
    pub height: u64,
    /// The round (PBFT's view).
    pub round: u64,
    /// The kind of statement.
    pub kind: Kind,
}

impl Slot {
    /// The slot of a statement.
    pub fn of(s: &Statement) -> Slot {
        Slot {
            height: s.height,
            round: s.round,
            kind: s.kind,
        }
    }

    /// A fixed 17-byte key (height, round big-endian, kind), ordered like the
    /// slot; a store can keep intents under it.
    pub fn key(&self) -> [u8; 17] {
        let mut k = [0u8; 17];
        k[..8].copy_from_slice(&self.height.to_be_bytes());
        k[8..16].copy_from_slice(&self.round.to_be_bytes());
        k[16] = self.kind as u8;
        k
    }

    /// The slot a key names.
    pub fn from_key(k: &[u8]) -> Option<Slot> {
        if k.len() != 17 {
            return None;
        }
        let height = u64::from_be_bytes(k[..8].try_into().ok()?);
        let round = u64::from_be_bytes(k[8..16].try_into().ok()?);
        let kind = Kind::from_u8(k[16])?;
        Some(Slot {
            height,
            round,
            kind,
        })
    }
}

/// Why a statement may not be signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key already committed to another digest in this slot.
    #[error(
        "the cluster already intended to sign {kind} at height {height}, round {round} for {committed}, not {requested}"
    )]
    Conflict {
        /// The statement kind's name.
        kind: String,
        /// The height.
        height: u64,
        /// The round.
        round: u64,
        /// The digest already intended (hex).
        committed: String,
        /// The digest asked for (hex).
        requested: String,
    },
    /// The height is below the floor: what was signed there is no longer known.
    #[error("height {height} is below the signing floor {floor}")]
    BelowFloor {
        /// The height asked for.
        height: u64,
        /// The floor.
        floor: u64,
    },
    /// The history holds [`MAX_INTENTS`] intents; prune final heights first.
    #[error("the signing history is full ({0} intents); prune final heights")]
    Full(usize),
}

/// Whether a statement is new to the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Never intended before: commit the intent, then sign.
    New,
    /// This exact statement was intended before: it may be signed (again).
    Repeat,
}

/// What the cluster's key has intended to sign.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SigningHistory {
    intents: BTreeMap<Slot, Hash>,
    floor: u64,
}

impl SigningHistory {
    /// An empty history.
    pub fn new() -> SigningHistory {
        SigningHistory::default()
    }

    /// A history from stored parts.
    pub fn from_parts(intents: BTreeMap<Slot, Hash>, floor: u64) -> SigningHistory {
        SigningHistory { intents, floor }
    }

    /// The floor: no height below it may be signed.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// How many intents it holds.
    pub fn len(&self) -> usize {
        self.intents.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty()
    }

    /// The digest intended in `slot`, if any.
    pub fn get(&self, slot: &Slot) -> Option<Hash> {
        self.intents.get(slot).copied()
    }

    /// Every intent, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&Slot, &Hash)> {
        self.intents.iter()
    }

    /// Every intent as the statement it stands for, in slot order.
    pub fn statements(&self) -> impl Iterator<Item = Statement> + '_ {
        self.intents.iter().map(|(slot, digest)| Statement {
            kind: slot.kind,
            round: slot.round,
            height: slot.height,
            digest: *digest,
        })
    }

    /// Whether `s` may be signed, without changing anything.
    pub fn check(&self, s: &Statement) -> Result<Verdict, Refusal> {
        if s.height < self.floor {
            return Err(Refusal::BelowFloor {
                height: s.height,
                floor: self.floor,
            });
        }
        match self.intents.get(&Slot::of(s)) {
            Some(d) if *d == s.digest => Ok(Verdict::Repeat),
            Some(d) => Err(Refusal::Conflict {
                kind: s.kind.name().to_string(),
                height: s.height,
                round: s.round,
                committed: d.to_hex(),
                requested: s.digest.to_hex(),
            }),
            None if self.intents.len() >= MAX_INTENTS => Err(Refusal::Full(self.intents.len())),
            None => Ok(Verdict::New),
        }
    }

    /// Records `s` if it may be signed (what applying an intent does).
    pub fn record(&mut self, s: &Statement) -> Result<Verdict, Refusal> {
        let verdict = self.check(s)?;
        if verdict == Verdict::New {
            self.intents.insert(Slot::of(s), s.digest);
        }
        Ok(verdict)
    }

    /// Forgets intents below `height` and raises the floor to it (never
    /// lowers it). Returns the slots removed.
    pub fn prune_below(&mut self, height: u64) -> Vec<Slot> {
        if height <= self.floor {
            return Vec::new();
        }
        self.floor = height;
        let keep = self.intents.split_off(&Slot {
            height,
            round: 0,
            kind: Kind::PrePrepare,
        });
        let gone = std::mem::replace(&mut self.intents, keep);
        gone.into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(kind: Kind, height: u64, round: u64, tag: u8) -> Statement {
        Statement {
            kind,
            round,
            height,
            digest: Hash([tag; 32]),
        }
    }

    #[test]
    fn one_digest_per_slot() {
        let mut h = SigningHistory::new();
        assert_eq!(h.record(&st(Kind::Prepare, 4, 1, 1)), Ok(Verdict::New));
        assert_eq!(h.record(&st(Kind::Prepare, 4, 1, 1)), Ok(Verdict::Repeat));
        assert!(matches!(
            h.check(&st(Kind::Prepare, 4, 1, 2)),
            Err(Refusal::Conflict {
                height: 4,
                round: 1,
                ..
            })
        ));
        // A refused statement leaves the history as it was.
        assert!(h.record(&st(Kind::Prepare, 4, 1, 2)).is_err());
        assert_eq!(
            h.get(&Slot::of(&st(Kind::Prepare, 4, 1, 0))),
            Some(Hash([1; 32]))
        );
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn pruning_raises_the_floor_and_keeps_what_is_above() {
        let mut h = SigningHistory::new();
        for height in [2, 5, 9] {
            h.record(&st(Kind::Commit, height, 0, 1)).expect("record");
        }
        assert_eq!(h.prune_below(5).len(), 1);
        assert_eq!(h.floor(), 5);
        assert_eq!(h.check(&st(Kind::Commit, 5, 0, 1)), Ok(Verdict::Repeat));
        assert_eq!(
            h.check(&st(Kind::Commit, 4, 0, 1)),
            Err(Refusal::BelowFloor {
                height: 4,
                floor: 5
            })
        );
        assert!(h.prune_below(3).is_empty());
        assert_eq!(h.floor(), 5);
    }

    #[test]
    fn a_slot_key_names_its_slot_and_sorts_like_it() {
        let a = Slot::of(&st(Kind::NewView, 3, 7, 0));
        let b = Slot::of(&st(Kind::PrePrepare, 3, 8, 0));
        assert_eq!(Slot::from_key(&a.key()), Some(a));
        assert!(a < b && a.key() < b.key());
        assert_eq!(Slot::from_key(&a.key()[..16]), None);
        let mut bad = a.key();
        bad[16] = 6;
        assert_eq!(Slot::from_key(&bad), None);
    }
}
