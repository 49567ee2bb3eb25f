//! The Byzantine-fault-tolerant core every voting engine shares: validator sets
//! with voting power, signed statements, quorum counting at more than two thirds
//! of the power, and vote bookkeeping that keeps equivocation as evidence.
//!
//! A *statement* is what a validator signs: `(kind, round, height, digest)` on
//! one chain. PBFT's pre-prepare, prepare, commit, checkpoint, view-change and
//! new-view are all statements (the round is PBFT's view, the height its sequence
//! number); proof of stake's proposals and votes will be too. Two statements by one
//! key with the same kind, round and height but different digests are
//! equivocation, and the pair is self-contained [`Evidence`] anyone can check.

use std::collections::BTreeMap;

use pyralog_ledger::codec::{Decode, Encode, Reader};
use pyralog_ledger::keys::{self, SigDomain};
use pyralog_ledger::{Address, ChainId, Error, Hash, Signature};

pub use pyralog_ledger::evidence::{Evidence, Kind, Statement};

/// The most validators a set may have.
pub const MAX_VALIDATORS: usize = 1024;

/// The most voting power one validator may have: small enough that the sum
/// over a full set, times four, fits in a `u64`.
pub const MAX_POWER: u64 = u64::MAX / (4 * MAX_VALIDATORS as u64);

/// One validator and its voting power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its key.
    pub address: Address,
    /// Its voting power (1 each under PBFT; its stake under proof of stake).
    pub power: u64,
}

/// Why a validator set could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetError {
    /// No validators.
    Empty,
    /// More than [`MAX_VALIDATORS`].
    TooMany(usize),
    /// A key listed twice.
    Duplicate(Address),
    /// A validator with no power.
    ZeroPower(Address),
    /// A validator with more than [`MAX_POWER`].
    TooMuchPower(Address),
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetError::Empty => write!(f, "a validator set needs at least one validator"),
            SetError::TooMany(n) => write!(f, "{n} validators; at most {MAX_VALIDATORS}"),
            SetError::Duplicate(a) => write!(f, "validator {a} is listed twice"),
            SetError::ZeroPower(a) => write!(f, "validator {a} has no voting power"),
            SetError::TooMuchPower(a) => {
                write!(f, "validator {a} has more than {MAX_POWER} voting power")
            }
        }
    }
}

impl std::error::Error for SetError {}

/// A fixed set of validators, in a fixed order (the order picks proposers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    members: Vec<Member>,
    index: BTreeMap<Address, usize>,
    total: u64,
    #[cfg(feature = "fault-injection")]
    broken_quorum: bool,
}

impl ValidatorSet {
    /// A set from its members, in proposer order.
    pub fn new(members: Vec<Member>) -> Result<ValidatorSet, SetError> {
        if members.is_empty() {
            return Err(SetError::Empty);
        }
        if members.len() > MAX_VALIDATORS {
            return Err(SetError::TooMany(members.len()));
        }
        let mut index = BTreeMap::new();
        let mut total: u64 = 0;
        for (i, m) in members.iter().enumerate() {
            if m.power == 0 {
                return Err(SetError::ZeroPower(m.address));
            }
            if m.power > MAX_POWER {
                return Err(SetError::TooMuchPower(m.address));
            }
            if index.insert(m.address, i).is_some() {
                return Err(SetError::Duplicate(m.address));
            }
            // Bounded above, so neither this sum nor 3 × total overflows.
            total += m.power;
        }
        Ok(ValidatorSet {
            members,
            index,
            total,
            #[cfg(feature = "fault-injection")]
            broken_quorum: false,
        })
    }

    /// `n` validators of power 1 each (PBFT).
    pub fn equal(addresses: impl IntoIterator<Item = Address>) -> Result<ValidatorSet, SetError> {
        ValidatorSet::new(
            addresses
                .into_iter()
                .map(|address| Member { address, power: 1 })
                .collect(),
        )
    }

    /// How many validators.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never true: a set has at least one validator.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members, in proposer order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The position of `address` in the set.
    pub fn index_of(&self, address: &Address) -> Option<usize> {
        self.index.get(address).copied()
    }

    /// Whether `address` is a validator.
    pub fn contains(&self, address: &Address) -> bool {
        self.index.contains_key(address)
    }

    /// The voting power of `address` (0 for a non-validator).
    pub fn power_of(&self, address: &Address) -> u64 {
        self.index_of(address).map_or(0, |i| self.members[i].power)
    }

    /// The sum of all voting power.
    pub fn total_power(&self) -> u64 {
        self.total
    }

    /// The least power that is more than two thirds of the total: any two such
    /// quorums share more than a third, so at least one honest validator when at
    /// most a third of the power is faulty.
    pub fn quorum(&self) -> u64 {
        #[cfg(feature = "fault-injection")]
        if self.broken_quorum {
            // Two thirds rounded down: 2f for n = 3f+1. Deliberately wrong.
            return (self.total * 2 / 3).max(1);
        }
        self.total * 2 / 3 + 1
    }

    /// The least power that is more than a third: at least one honest validator
    /// is among any group this strong.
    pub fn weak_quorum(&self) -> u64 {
        self.total / 3 + 1
    }

    /// The member a uniform 64-bit `draw` lands on when each member owns a
    /// share of the draws proportional to its power: the draw is scaled to
    /// `[0, total)` (exactly, in 128 bits) and the members' powers are laid
    /// end to end in set order.
    pub fn weighted(&self, draw: u64) -> &Member {
        let target = ((u128::from(draw) * u128::from(self.total)) >> 64) as u64;
        let mut end = 0u64;
        for m in &self.members {
            end += m.power;
            if target < end {
                return m;
            }
        }
        // Unreachable: target < total = the sum of the powers.
        &self.members[self.members.len() - 1]
    }

    /// The round-robin proposer of `round`.
    pub fn round_robin(&self, round: u64) -> &Member {
        &self.members[(round % self.members.len() as u64) as usize]
    }

    /// The summed power of distinct validators among `signers`; unknown keys
    /// count nothing.
    pub fn power_of_all<'a>(&self, signers: impl IntoIterator<Item = &'a Address>) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        signers
            .into_iter()
            .filter(|a| seen.insert(**a))
            .map(|a| self.power_of(a))
            .sum()
    }

    /// Test-only: counts a quorum at two thirds rounded down, which is unsafe.
    /// The simulator uses it to show that it catches a broken quorum rule.
    #[cfg(feature = "fault-injection")]
    pub fn break_quorum_rule(&mut self) {
        self.broken_quorum = true;
    }
}

/// One validator's signature on a statement whose other fields are known from
/// context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteSig {
    /// The validator.
    pub validator: Address,
    /// Its signature.
    pub signature: Signature,
}

impl Encode for VoteSig {
    fn encode(&self, out: &mut Vec<u8>) {
        self.validator.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for VoteSig {
    const MIN_SIZE: usize = 32 + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(VoteSig {
            validator: Address::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

/// What recording a vote found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A new vote.
    New,
    /// The same vote again.
    Duplicate,
    /// The validator already voted for another digest here; the new vote is not
    /// counted.
    Equivocation(Box<Evidence>),
}

/// Votes of one kind, per `(round, height)`: who voted for what, and the power
/// behind each digest. Every entry is a statement whose signature was checked.
#[derive(Clone, Debug, Default)]
pub struct Votes {
    slots: BTreeMap<(u64, u64), Slot>,
}

#[derive(Clone, Debug, Default)]
struct Slot {
    by_voter: BTreeMap<Address, (Hash, Signature)>,
    power: BTreeMap<Hash, u64>,
}

impl Votes {
    /// No votes.
    pub fn new() -> Votes {
        Votes::default()
    }

    /// Records `validator`'s signed `statement` (already verified); `power` is
    /// its voting power.
    pub fn record(
        &mut self,
        statement: &Statement,
        validator: Address,
        signature: Signature,
        power: u64,
    ) -> Recorded {
        let slot = self
            .slots
            .entry((statement.round, statement.height))
            .or_default();
        if let Some((digest, sig)) = slot.by_voter.get(&validator) {
            if *digest == statement.digest {
                return Recorded::Duplicate;
            }
            return Recorded::Equivocation(Box::new(Evidence {
                validator,
                first: Statement {
                    digest: *digest,
                    ..*statement
                },
                first_sig: *sig,
                second: *statement,
                second_sig: signature,
            }));
        }
        slot.by_voter
            .insert(validator, (statement.digest, signature));
        *slot.power.entry(statement.digest).or_default() += power;
        Recorded::New
    }

    /// The power behind `digest` at `(round, height)`.
    pub fn power(&self, round: u64, height: u64, digest: &Hash) -> u64 {
        self.slots
            .get(&(round, height))
            .and_then(|s| s.power.get(digest))
            .copied()
            .unwrap_or(0)
    }

    /// The signatures for `digest` at `(round, height)`, in validator order.
    pub fn signatures(&self, round: u64, height: u64, digest: &Hash) -> Vec<VoteSig> {
        self.slots
            .get(&(round, height))
            .map(|s| {
                s.by_voter
                    .iter()
                    .filter(|(_, (d, _))| d == digest)
                    .map(|(v, (_, sig))| VoteSig {
                        validator: *v,
                        signature: *sig,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `validator` voted at `(round, height)`, and for what.
    pub fn vote_of(&self, round: u64, height: u64, validator: &Address) -> Option<Hash> {
        self.slots
            .get(&(round, height))
            .and_then(|s| s.by_voter.get(validator))
            .map(|(d, _)| *d)
    }

    /// Forgets every height at or below `height`.
    pub fn prune_heights_through(&mut self, height: u64) {
        self.slots.retain(|(_, h), _| *h > height);
    }

    /// Forgets every round below `round`.
    pub fn prune_rounds_below(&mut self, round: u64) {
        self.slots.retain(|(r, _), _| *r >= round);
    }

    /// How many `(round, height)` slots are held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no votes are held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Checks a certificate: distinct validators, each signature valid on the
/// statement, and their power at least a quorum.
pub fn check_certificate(
    chain: &ChainId,
    validators: &ValidatorSet,
    statement: &Statement,
    sigs: &[VoteSig],
) -> Result<(), CertError> {
    let power = signed_power(chain, validators, statement, sigs)?;
    if power < validators.quorum() {
        return Err(CertError::NoQuorum {
            power,
            needed: validators.quorum(),
        });
    }
    Ok(())
}

/// The power behind signatures on one statement: distinct validators, each
/// signature valid. Whether that is enough is the caller's rule.
pub fn signed_power(
    chain: &ChainId,
    validators: &ValidatorSet,
    statement: &Statement,
    sigs: &[VoteSig],
) -> Result<u64, CertError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut power = 0u64;
    let mut items = Vec::with_capacity(sigs.len());
    for s in sigs {
        if !validators.contains(&s.validator) {
            return Err(CertError::NotValidator(s.validator));
        }
        if !seen.insert(s.validator) {
            return Err(CertError::DuplicateSigner(s.validator));
        }
        power += validators.power_of(&s.validator);
        items.push((statement.signing_hash(chain), s.validator, s.signature));
    }
    keys::verify_many(SigDomain::Consensus, &items)
        .map_err(|i| CertError::BadSignature(items[i].1))?;
    Ok(power)
}

/// Why a certificate was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertError {
    /// A signer is not a validator.
    NotValidator(Address),
    /// A signer appears twice.
    DuplicateSigner(Address),
    /// A signature does not verify.
    BadSignature(Address),
    /// The signers' power is short of a quorum.
    NoQuorum {
        /// Their power.
        power: u64,
        /// A quorum.
        needed: u64,
    },
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertError::NotValidator(a) => write!(f, "signer {a} is not a validator"),
            CertError::DuplicateSigner(a) => write!(f, "signer {a} appears twice"),
            CertError::BadSignature(a) => write!(f, "the signature of {a} does not verify"),
            CertError::NoQuorum { power, needed } => {
                write!(f, "signers hold power {power}; a quorum needs {needed}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyralog_ledger::hash::Domain;
    use pyralog_ledger::{Keypair, devkit};

    fn set(n: u64) -> (Vec<Keypair>, ValidatorSet) {
        let keys: Vec<Keypair> = (0..n).map(devkit::key).collect();
        let set = ValidatorSet::equal(keys.iter().map(Keypair::address)).expect("set");
        (keys, set)
    }

    #[test]
    fn quorum_is_more_than_two_thirds_and_weak_quorum_more_than_a_third() {
        for (n, q, w) in [
            (1, 1, 1),
            (3, 3, 2),
            (4, 3, 2),
            (5, 4, 2),
            (7, 5, 3),
            (10, 7, 4),
        ] {
            let (_, s) = set(n);
            assert_eq!((s.quorum(), s.weak_quorum()), (q, w), "n = {n}");
            // Two quorums always overlap in more than a third.
            assert!(2 * s.quorum() > s.total_power() + s.total_power() / 3);
        }
        let weighted = ValidatorSet::new(vec![
            Member {
                address: devkit::key(0).address(),
                power: 70,
            },
            Member {
                address: devkit::key(1).address(),
                power: 30,
            },
        ])
        .expect("set");
        assert_eq!(weighted.quorum(), 67);
    }

    #[test]
    fn a_weighted_draw_lands_on_each_member_in_proportion_to_its_power() {
        let (a, b) = (devkit::key(0).address(), devkit::key(1).address());
        let s = ValidatorSet::new(vec![
            Member {
                address: a,
                power: 1,
            },
            Member {
                address: b,
                power: 3,
            },
        ])
        .expect("set");
        // The draws are cut into [0, 1/4) for a and [1/4, 1) for b.
        assert_eq!(s.weighted(0).address, a);
        assert_eq!(s.weighted((1 << 62) - 1).address, a);
        assert_eq!(s.weighted(1 << 62).address, b);
        assert_eq!(s.weighted(u64::MAX).address, b);
    }

    #[test]
    fn sets_refuse_empty_duplicate_and_powerless_members() {
        assert_eq!(ValidatorSet::new(vec![]), Err(SetError::Empty));
        let a = devkit::key(0).address();
        assert_eq!(ValidatorSet::equal([a, a]), Err(SetError::Duplicate(a)));
        assert_eq!(
            ValidatorSet::new(vec![Member {
                address: a,
                power: 0
            }]),
            Err(SetError::ZeroPower(a))
        );
        assert_eq!(
            ValidatorSet::new(vec![Member {
                address: a,
                power: MAX_POWER + 1
            }]),
            Err(SetError::TooMuchPower(a))
        );
    }

    #[test]
    fn a_second_vote_for_another_digest_is_kept_as_checkable_evidence() {
        let chain: ChainId = "bft-test".parse().expect("chain");
        let key = devkit::key(3);
        let s1 = Statement {
            kind: Kind::Prepare,
            round: 2,
            height: 9,
            digest: Hash::of(Domain::Consensus, b"a"),
        };
        let s2 = Statement {
            digest: Hash::of(Domain::Consensus, b"b"),
            ..s1
        };
        let mut votes = Votes::new();
        let sig1 = s1.sign(&chain, &key);
        assert_eq!(votes.record(&s1, key.address(), sig1, 1), Recorded::New);
        assert_eq!(
            votes.record(&s1, key.address(), sig1, 1),
            Recorded::Duplicate
        );
        let Recorded::Equivocation(ev) = votes.record(&s2, key.address(), s2.sign(&chain, &key), 1)
        else {
            panic!("expected equivocation");
        };
        assert_eq!(ev.verify(&chain), Ok(()));
        assert_eq!(Evidence::from_bytes(&ev.to_bytes()).as_ref(), Ok(&*ev));
        // The conflicting vote was not counted.
        assert_eq!(votes.power(2, 9, &s1.digest), 1);
        assert_eq!(votes.power(2, 9, &s2.digest), 0);
        // Evidence on another chain, or of agreeing statements, is not evidence.
        assert!(ev.verify(&"other".parse().expect("chain")).is_err());
        let same = Evidence {
            second: ev.first,
            second_sig: ev.first_sig,
            ..(*ev).clone()
        };
        assert!(same.verify(&chain).is_err());
    }

    #[test]
    fn certificates_need_distinct_validators_valid_signatures_and_a_quorum() {
        let chain: ChainId = "bft-test".parse().expect("chain");
        let (keys, set) = set(4);
        let st = Statement {
            kind: Kind::Commit,
            round: 0,
            height: 1,
            digest: Hash::of(Domain::Consensus, b"block"),
        };
        let sig = |k: &Keypair| VoteSig {
            validator: k.address(),
            signature: st.sign(&chain, k),
        };
        let three: Vec<VoteSig> = keys[..3].iter().map(sig).collect();
        assert_eq!(check_certificate(&chain, &set, &st, &three), Ok(()));
        assert_eq!(
            check_certificate(&chain, &set, &st, &three[..2]),
            Err(CertError::NoQuorum {
                power: 2,
                needed: 3
            })
        );
        let dup = vec![three[0], three[1], three[0]];
        assert_eq!(
            check_certificate(&chain, &set, &st, &dup),
            Err(CertError::DuplicateSigner(three[0].validator))
        );
        let outsider = devkit::key(99);
        let mut with_outsider = three[..2].to_vec();
        with_outsider.push(sig(&outsider));
        assert_eq!(
            check_certificate(&chain, &set, &st, &with_outsider),
            Err(CertError::NotValidator(outsider.address()))
        );
        let mut forged = three.clone();
        forged[2].signature = forged[1].signature;
        assert_eq!(
            check_certificate(&chain, &set, &st, &forged),
            Err(CertError::BadSignature(forged[2].validator))
        );
    }
}
