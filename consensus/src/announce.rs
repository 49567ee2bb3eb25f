//! Validators tell each other the stamp difficulty they ask of new writes, so
//! the network tightens its admission together instead of one node at a time.
//!
//! A spammer turned away by a loaded node would otherwise move to the next
//! one, still at the floor. Each validator therefore signs a small
//! [`Announcement`] of its current difficulty every few seconds and gossips it;
//! every node keeps the latest fresh word of each validator
//! ([`PeerDifficulty`]) and asks of its own clients the higher of its own
//! difficulty and the network's.
//!
//! The network's difficulty is the highest level that validators holding more
//! than a third of the voting power ask for, or more. With at most a third of
//! the power faulty, at least one honest validator asks that much, so a
//! faulty minority cannot raise the price for everyone; and the chain's
//! ceiling bounds it in any case.

use std::collections::BTreeMap;

use pyralog_ledger::codec::{Decode, Encode, Reader, put_u32, put_u64};
use pyralog_ledger::hash::Domain;
use pyralog_ledger::keys::{self, SigDomain};
use pyralog_ledger::{Address, ChainId, Error, Hash, Keypair, Signature};

use crate::bft::ValidatorSet;

/// How often a validator announces its difficulty when nothing changes.
pub const ANNOUNCE_EVERY_MS: u64 = 2_000;
/// The soonest a changed difficulty is announced again.
pub const ANNOUNCE_CHANGE_MS: u64 = 250;
/// How long an announcement counts after it was made.
pub const MAX_AGE_MS: u64 = 10_000;
/// The most bytes an announcement has on the wire.
pub const MAX_BYTES: usize = 256;

/// A validator's signed word on the difficulty it asks now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Who asks.
    pub validator: Address,
    /// The leading zero bits it asks of a new transaction's stamp.
    pub difficulty: u32,
    /// When (the validator's clock, Unix milliseconds).
    pub at_ms: u64,
    /// The validator's signature over the three fields and the chain.
    pub signature: Signature,
}

fn signing_hash(chain: &ChainId, validator: &Address, difficulty: u32, at_ms: u64) -> Hash {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"pow-difficulty");
    chain.encode(&mut out);
    validator.encode(&mut out);
    put_u32(&mut out, difficulty);
    put_u64(&mut out, at_ms);
    Hash::of(Domain::Consensus, &out)
}

impl Announcement {
    /// `key`'s announcement of `difficulty` at `at_ms` on `chain`.
    pub fn sign(chain: &ChainId, key: &Keypair, difficulty: u32, at_ms: u64) -> Announcement {
        let validator = key.address();
        let digest = signing_hash(chain, &validator, difficulty, at_ms);
        Announcement {
            validator,
            difficulty,
            at_ms,
            signature: key.sign(SigDomain::Consensus, &digest),
        }
    }

    /// Checks the signature.
    pub fn verify(&self, chain: &ChainId) -> Result<(), Error> {
        let digest = signing_hash(chain, &self.validator, self.difficulty, self.at_ms);
        keys::verify(
            SigDomain::Consensus,
            &digest,
            &self.validator,
            &self.signature,
        )
    }

    /// Decodes an announcement from the network, refusing oversized input.
    pub fn from_wire(bytes: &[u8]) -> Result<Announcement, Error> {
        if bytes.len() > MAX_BYTES {
            return Err(Error::TooLong {
                what: "difficulty announcement",
                len: bytes.len(),
                max: MAX_BYTES,
            });
        }
        Announcement::from_bytes(bytes)
    }
}

impl Encode for Announcement {
    fn encode(&self, out: &mut Vec<u8>) {
        self.validator.encode(out);
        put_u32(out, self.difficulty);
        put_u64(out, self.at_ms);
        self.signature.encode(out);
    }
}

impl Decode for Announcement {
    const MIN_SIZE: usize = 32 + 4 + 8 + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Announcement {
            validator: Address::decode(r)?,
            difficulty: r.u32("difficulty")?,
            at_ms: r.u64("announced at")?,
            signature: Signature::decode(r)?,
        })
    }
}

/// Why an announcement was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its signer is not a validator of the set in force.
    NotValidator,
    /// It asks for less than the chain's floor or more than its ceiling: no
    /// honest node does.
    OutOfBounds {
        /// What it asked.
        difficulty: u32,
    },
    /// It was made too long ago to count.
    Stale,
    /// It is stamped further ahead of this node's clock than the chain allows.
    FromTheFuture,
    /// This validator already said something as recent or more.
    NotNewer,
    /// The signature does not check.
    BadSignature,
}

impl Refusal {
    /// Whether the message proves its sender wrong (a gossip `Reject`, which
    /// costs the forwarding peer score) rather than merely useless (`Ignore`).
    pub fn is_provably_invalid(&self) -> bool {
        matches!(self, Refusal::OutOfBounds { .. } | Refusal::BadSignature)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotValidator => write!(f, "the announcer is not a validator"),
            Refusal::OutOfBounds { difficulty } => {
                write!(
                    f,
                    "a difficulty of {difficulty} bits is outside the chain's bounds"
                )
            }
            Refusal::Stale => write!(f, "the announcement is too old"),
            Refusal::FromTheFuture => write!(f, "the announcement is from the future"),
            Refusal::NotNewer => write!(f, "a newer announcement of this validator is known"),
            Refusal::BadSignature => write!(f, "the announcement's signature does not check"),
        }
    }
}

/// The latest fresh word of each validator, and the difficulty it adds up to.
#[derive(Clone, Debug)]
pub struct PeerDifficulty {
    chain: ChainId,
    floor: u32,
    ceiling: u32,
    max_skew_ms: u64,
    heard: BTreeMap<Address, (u32, u64)>,
}

impl PeerDifficulty {
    /// Nothing heard yet, on `chain` whose stamps ask `floor..=ceiling` bits,
    /// taking announcements at most `max_skew_ms` ahead of this node's clock.
    pub fn new(chain: ChainId, floor: u32, ceiling: u32, max_skew_ms: u64) -> PeerDifficulty {
        PeerDifficulty {
            chain,
            floor,
            ceiling: ceiling.max(floor),
            max_skew_ms,
            heard: BTreeMap::new(),
        }
    }

    /// Takes `a` if it is a fresh, signed word of a validator of `set`; the
    /// cheap checks come before the signature. At most one entry per member of
    /// `set` is kept, so the map is bounded by the set's size.
    pub fn hear(
        &mut self,
        set: &ValidatorSet,
        a: &Announcement,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if !set.contains(&a.validator) {
            return Err(Refusal::NotValidator);
        }
        if a.difficulty < self.floor || a.difficulty > self.ceiling {
            return Err(Refusal::OutOfBounds {
                difficulty: a.difficulty,
            });
        }
        if a.at_ms > now_ms.saturating_add(self.max_skew_ms) {
            return Err(Refusal::FromTheFuture);
        }
        if a.at_ms.saturating_add(MAX_AGE_MS) < now_ms {
            return Err(Refusal::Stale);
        }
        if let Some((_, at)) = self.heard.get(&a.validator)
            && *at >= a.at_ms
        {
            return Err(Refusal::NotNewer);
        }
        a.verify(&self.chain).map_err(|_| Refusal::BadSignature)?;
        self.heard.insert(a.validator, (a.difficulty, a.at_ms));
        Ok(())
    }

    /// Forgets validators that left `set`.
    pub fn retain_members(&mut self, set: &ValidatorSet) {
        self.heard.retain(|v, _| set.contains(v));
    }

    /// The difficulty to ask of a client now: the higher of `own` (this node's
    /// own, from its pool) and the highest level asked, or exceeded, by
    /// validators holding more than a third of `set`'s power, counting this
    /// node as `me` (when it is a validator) at `own`. Announcements older than
    /// [`MAX_AGE_MS`] no longer count.
    pub fn required(&self, set: &ValidatorSet, me: Option<&Address>, own: u32, now_ms: u64) -> u32 {
        let mut levels: Vec<(u32, u64)> = self
            .heard
            .iter()
            .filter(|(v, (_, at))| Some(*v) != me && at.saturating_add(MAX_AGE_MS) >= now_ms)
            .map(|(v, (d, _))| (*d, set.power_of(v)))
            .collect();
        if let Some(me) = me {
            levels.push((own, set.power_of(me)));
        }
        levels.sort_unstable_by_key(|l| std::cmp::Reverse(l.0));
        let needed = set.weak_quorum();
        let mut power = 0u64;
        let mut network = self.floor;
        for (difficulty, p) in levels {
            power = power.saturating_add(p);
            if power >= needed {
                network = difficulty;
                break;
            }
        }
        own.max(network).clamp(self.floor, self.ceiling)
    }

    /// What each validator said last, with its age at `now_ms` (for `/status`).
    pub fn heard(&self, now_ms: u64) -> impl Iterator<Item = (Address, u32, u64)> + '_ {
        self.heard
            .iter()
            .map(move |(v, (d, at))| (*v, *d, now_ms.saturating_sub(*at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> ChainId {
        "announce-test".parse().expect("chain id")
    }

    fn keys(n: u8) -> Vec<Keypair> {
        (1..=n).map(|i| Keypair::from_seed(&[i; 32])).collect()
    }

    fn set(keys: &[Keypair]) -> ValidatorSet {
        ValidatorSet::equal(keys.iter().map(Keypair::address)).expect("set")
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn an_announcement_round_trips_and_its_signature_checks() {
        let k = &keys(1)[0];
        let a = Announcement::sign(&chain(), k, 12, NOW);
        let back = Announcement::from_wire(&a.to_bytes()).expect("decode");
        assert_eq!(back, a);
        back.verify(&chain()).expect("signature");
        let other: ChainId = "another-chain".parse().expect("chain id");
        assert!(back.verify(&other).is_err(), "bound to its chain");
    }

    #[test]
    fn oversized_or_truncated_bytes_are_refused() {
        let k = &keys(1)[0];
        let bytes = Announcement::sign(&chain(), k, 12, NOW).to_bytes();
        assert!(Announcement::from_wire(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.resize(MAX_BYTES + 1, 0);
        assert!(matches!(
            Announcement::from_wire(&long),
            Err(Error::TooLong { .. })
        ));
        let mut trailing = bytes;
        trailing.push(0);
        assert!(
            Announcement::from_wire(&trailing).is_err(),
            "trailing bytes"
        );
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let ks = keys(5);
        let members = set(&ks[..4]);
        let mut heard = PeerDifficulty::new(chain(), 8, 20, 1_000);
        let c = chain();
        let outsider = Announcement::sign(&c, &ks[4], 10, NOW);
        assert_eq!(
            heard.hear(&members, &outsider, NOW),
            Err(Refusal::NotValidator)
        );
        let low = Announcement::sign(&c, &ks[0], 7, NOW);
        assert_eq!(
            heard.hear(&members, &low, NOW),
            Err(Refusal::OutOfBounds { difficulty: 7 })
        );
        let high = Announcement::sign(&c, &ks[0], 21, NOW);
        assert_eq!(
            heard.hear(&members, &high, NOW),
            Err(Refusal::OutOfBounds { difficulty: 21 })
        );
        let future = Announcement::sign(&c, &ks[0], 10, NOW + 1_001);
        assert_eq!(
            heard.hear(&members, &future, NOW),
            Err(Refusal::FromTheFuture)
        );
        let old = Announcement::sign(&c, &ks[0], 10, NOW - MAX_AGE_MS - 1);
        assert_eq!(heard.hear(&members, &old, NOW), Err(Refusal::Stale));
        let mut forged = Announcement::sign(&c, &ks[0], 10, NOW);
        forged.difficulty = 11;
        assert_eq!(
            heard.hear(&members, &forged, NOW),
            Err(Refusal::BadSignature)
        );
        let good = Announcement::sign(&c, &ks[0], 10, NOW);
        assert_eq!(heard.hear(&members, &good, NOW), Ok(()));
        assert_eq!(heard.hear(&members, &good, NOW), Err(Refusal::NotNewer));
        let earlier = Announcement::sign(&c, &ks[0], 12, NOW - 1);
        assert_eq!(heard.hear(&members, &earlier, NOW), Err(Refusal::NotNewer));
        assert!(Refusal::BadSignature.is_provably_invalid());
        assert!(Refusal::OutOfBounds { difficulty: 7 }.is_provably_invalid());
        assert!(!Refusal::Stale.is_provably_invalid());
        assert!(!Refusal::NotValidator.is_provably_invalid());
    }

    #[test]
    fn one_loud_validator_of_four_does_not_raise_the_price_but_two_do() {
        let ks = keys(4);
        let members = set(&ks);
        let me = ks[0].address();
        let c = chain();
        let mut heard = PeerDifficulty::new(c.clone(), 8, 20, 1_000);
        assert_eq!(heard.required(&members, Some(&me), 8, NOW), 8);
        // The own level always binds this node's clients.
        assert_eq!(heard.required(&members, Some(&me), 11, NOW), 11);
        // One of four (a quarter of the power) at 16: not enough.
        heard
            .hear(&members, &Announcement::sign(&c, &ks[1], 16, NOW), NOW)
            .expect("heard");
        assert_eq!(heard.required(&members, Some(&me), 8, NOW), 8);
        // A second at 12: half the power asks 12 or more.
        heard
            .hear(&members, &Announcement::sign(&c, &ks[2], 12, NOW), NOW)
            .expect("heard");
        assert_eq!(heard.required(&members, Some(&me), 8, NOW), 12);
        // This node itself at 14 joins the one at 16: 14.
        assert_eq!(heard.required(&members, Some(&me), 14, NOW), 14);
        // Words go stale and the price falls back.
        assert_eq!(
            heard.required(&members, Some(&me), 8, NOW + MAX_AGE_MS + 1),
            8
        );
    }

    #[test]
    fn a_node_that_is_no_validator_follows_the_validators() {
        let ks = keys(2);
        let members = set(&ks);
        let c = chain();
        let mut heard = PeerDifficulty::new(c.clone(), 8, 20, 1_000);
        // Two validators: more than a third is one of them.
        heard
            .hear(&members, &Announcement::sign(&c, &ks[1], 13, NOW), NOW)
            .expect("heard");
        assert_eq!(heard.required(&members, None, 8, NOW), 13);
        assert_eq!(
            heard.heard(NOW + 5).collect::<Vec<_>>(),
            vec![(ks[1].address(), 13, 5)]
        );
        heard.retain_members(&set(&ks[..1]));
        assert_eq!(
            heard.required(&members, None, 8, NOW),
            8,
            "a departed validator no longer counts"
        );
    }
}
