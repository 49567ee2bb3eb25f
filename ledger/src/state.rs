//! What the state holds: accounts, records and validators, and their keys.
//!
//! Every entry lives under a [`StateKey`]; its bytes pick its Merkle bucket
//! (see [`crate::merkle`]). Records are last-writer-wins registers: a write
//! replaces the current entry only if its [`WriteOrder`] is greater, deletes leave
//! tombstones, so merging the same writes in any order gives the same state.

use std::cmp::Ordering;

use crate::chain::Hlc;
use crate::codec::{Decode, Encode, Reader, put_bytes, put_u64};
use crate::error::Error;
use crate::hash::Hash;
use crate::keys::Address;
use crate::tx::caps;

/// The address part of [`StateKey::Staking`]'s bytes (no account has it).
const STAKING_ADDRESS: Address = Address([0; 32]);

/// Where an entry lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    /// An account's balance, nonce and stake.
    Account(Address),
    /// A record in an account's namespace.
    Record(Address, Vec<u8>),
    /// A validator's registration.
    Validator(Address),
    /// Proof of stake's chain-wide entry: the epoch, its validator set, the
    /// registered validators ([`crate::staking::StakingState`]).
    Staking,
    /// A validator's standing: operator, jail, slashes, downtime window,
    /// delegators ([`crate::staking::ValidatorState`]).
    ValidatorState(Address),
    /// What `delegator` has bonded to `validator` (a `u64`).
    Bond {
        /// The account that bonded.
        delegator: Address,
        /// The validator.
        validator: Address,
    },
    /// A validator's unbonding queue ([`crate::staking::Unbonding`]).
    Unbonding(Address),
    /// The validator an account operates (its key, 32 bytes).
    Operator(Address),
}

impl StateKey {
    /// The key's canonical bytes: a kind byte, the address, then the record key.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (kind, addr, rest): (u8, &Address, &[u8]) = match self {
            StateKey::Account(a) => (0, a, &[]),
            StateKey::Record(a, k) => (1, a, k),
            StateKey::Validator(a) => (2, a, &[]),
            StateKey::Staking => (3, &STAKING_ADDRESS, &[]),
            StateKey::ValidatorState(a) => (4, a, &[]),
            StateKey::Bond {
                delegator,
                validator,
            } => (5, delegator, &validator.0),
            StateKey::Unbonding(a) => (6, a, &[]),
            StateKey::Operator(a) => (7, a, &[]),
        };
        let mut out = Vec::with_capacity(33 + rest.len());
        out.push(kind);
        out.extend_from_slice(&addr.0);
        out.extend_from_slice(rest);
        out
    }

    /// Reads a key back from [`StateKey::to_bytes`].
    pub fn from_key_bytes(bytes: &[u8]) -> Result<StateKey, Error> {
        if bytes.len() < 33 {
            return Err(Error::UnexpectedEnd { what: "state key" });
        }
        let mut a = [0u8; 32];
        a.copy_from_slice(&bytes[1..33]);
        let rest = &bytes[33..];
        match (bytes[0], rest.is_empty()) {
            (0, true) => Ok(StateKey::Account(Address(a))),
            (1, _) if rest.len() <= caps::KEY => Ok(StateKey::Record(Address(a), rest.to_vec())),
            (2, true) => Ok(StateKey::Validator(Address(a))),
            (3, true) if a == STAKING_ADDRESS.0 => Ok(StateKey::Staking),
            (4, true) => Ok(StateKey::ValidatorState(Address(a))),
            (5, false) if rest.len() == 32 => {
                let mut v = [0u8; 32];
                v.copy_from_slice(rest);
                Ok(StateKey::Bond {
                    delegator: Address(a),
                    validator: Address(v),
                })
            }
            (6, true) => Ok(StateKey::Unbonding(Address(a))),
            (7, true) => Ok(StateKey::Operator(Address(a))),
            (tag, _) => Err(Error::UnknownTag {
                what: "state key",
                tag,
            }),
        }
    }
}

/// An account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Account {
    /// Spendable funds.
    pub balance: u64,
    /// The nonce the account's next transaction must carry (ordered engines).
    pub nonce: u64,
    /// Funds bonded to validators.
    pub stake: u64,
}

/// The order of two writes of one record: hybrid logical clock, then origin, then
/// transaction id. Total, so every replica picks the same winner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteOrder {
    /// When it was written.
    pub hlc: Hlc,
    /// The cluster (gossip) or proposer (ordered) that wrote it.
    pub origin: Address,
    /// The transaction that wrote it.
    pub tx: Hash,
}

/// A record's current entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordEntry {
    /// The value, or `None` for a tombstone left by a delete.
    pub value: Option<Vec<u8>>,
    /// Whether `value` holds a sealed value's bytes
    /// ([`crate::timelock::SealedValue`]) that no `TimelockReveal` has opened
    /// yet. Meaningful only with a value: a tombstone is never sealed.
    pub sealed: bool,
    /// How many times the record has been written under an ordering engine; `0`
    /// under `gossip`, where writes have no total order (see [`WriteOrder`]).
    pub version: u64,
    /// Which write this is.
    pub order: WriteOrder,
}

impl RecordEntry {
    /// Whether this entry is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Last-writer-wins: whether `self` replaces `current`.
    pub fn wins_over(&self, current: &RecordEntry) -> bool {
        match self.order.cmp(&current.order) {
            Ordering::Greater => true,
            Ordering::Less => false,
            // One write seen twice, or a Byzantine origin reusing an order: the
            // larger encoding wins, so the choice does not depend on arrival.
            Ordering::Equal => self.to_bytes() > current.to_bytes(),
        }
    }
}

/// A validator's registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorInfo {
    /// A short unique name.
    pub id: String,
    /// The cluster's validator key.
    pub public_key: Address,
    /// Bonded stake.
    pub stake: u64,
    /// Its p2p multiaddress.
    pub p2p: String,
}

impl Encode for Account {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.balance);
        put_u64(out, self.nonce);
        put_u64(out, self.stake);
    }
}

impl Decode for Account {
    const MIN_SIZE: usize = 24;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Account {
            balance: r.u64("balance")?,
            nonce: r.u64("nonce")?,
            stake: r.u64("stake")?,
        })
    }
}

impl Encode for WriteOrder {
    fn encode(&self, out: &mut Vec<u8>) {
        self.hlc.encode(out);
        self.origin.encode(out);
        self.tx.encode(out);
    }
}

impl Decode for WriteOrder {
    const MIN_SIZE: usize = Hlc::MIN_SIZE + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(WriteOrder {
            hlc: Hlc::decode(r)?,
            origin: Address::decode(r)?,
            tx: Hash::decode(r)?,
        })
    }
}

/// `RecordEntry`'s value tags: a tombstone, a plain value, a sealed value. The
/// first two are the tags of the `Option` the value began as, so an entry
/// without a sealed value encodes as it did before sealed values existed
/// (ADR 0006).
const TOMBSTONE: u8 = 0;
const PLAIN: u8 = 1;
const SEALED: u8 = 2;

impl Encode for RecordEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        match &self.value {
            None => out.push(TOMBSTONE),
            Some(v) => {
                out.push(if self.sealed { SEALED } else { PLAIN });
                put_bytes(out, v);
            }
        }
        put_u64(out, self.version);
        self.order.encode(out);
    }
}

impl Decode for RecordEntry {
    const MIN_SIZE: usize = 1 + 8 + WriteOrder::MIN_SIZE;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let e = RecordEntryRef::decode_from(r)?;
        Ok(RecordEntry {
            value: e.value.map(<[u8]>::to_vec),
            sealed: e.sealed,
            version: e.version,
            order: e.order,
        })
    }
}

/// A [`RecordEntry`] read in place: the value borrows the stored bytes
/// instead of being copied (for scans that read many entries, such as SQL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordEntryRef<'a> {
    /// The value, or `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Whether `value` is a sealed value's bytes (see [`RecordEntry::sealed`]).
    pub sealed: bool,
    /// See [`RecordEntry::version`].
    pub version: u64,
    /// Which write this is.
    pub order: WriteOrder,
}

impl<'a> RecordEntryRef<'a> {
    /// Decodes an entry's canonical bytes exactly as [`RecordEntry`]'s
    /// decoder does (the same checks, trailing bytes refused), without copying.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<RecordEntryRef<'a>, Error> {
        if let Some(e) = Self::well_formed(bytes) {
            return Ok(e);
        }
        // Not well formed: the field-by-field reader names what is wrong.
        let mut r = Reader::new(bytes);
        let e = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(e)
    }

    /// The entry if `bytes` are exactly one well-formed encoding, read at
    /// fixed offsets after the value (the layout is the tag, the value as
    /// a `u32` length and its bytes, then 84 bytes: version, HLC wall time
    /// and counter, origin, transaction). Scans decode millions of these;
    /// this is the same check as the reader's, with one length test.
    fn well_formed(bytes: &'a [u8]) -> Option<RecordEntryRef<'a>> {
        let (&tag, rest) = bytes.split_first()?;
        let (value, sealed, rest) = match tag {
            TOMBSTONE => (None, false, rest),
            PLAIN | SEALED => {
                let (len, rest) = rest.split_first_chunk::<4>()?;
                let len = u32::from_le_bytes(*len) as usize;
                if len > caps::VALUE {
                    return None;
                }
                let (value, rest) = rest.split_at_checked(len)?;
                (Some(value), tag == SEALED, rest)
            }
            _ => return None,
        };
        let tail: &[u8; 84] = rest.try_into().ok()?;
        let (version, tail) = tail.split_first_chunk::<8>()?;
        let (wall, tail) = tail.split_first_chunk::<8>()?;
        let (logical, tail) = tail.split_first_chunk::<4>()?;
        let (origin, tx) = tail.split_first_chunk::<32>()?;
        Some(RecordEntryRef {
            value,
            sealed,
            version: u64::from_le_bytes(*version),
            order: WriteOrder {
                hlc: Hlc {
                    wall_ms: u64::from_le_bytes(*wall),
                    logical: u32::from_le_bytes(*logical),
                },
                origin: Address(*origin),
                tx: Hash(tx.try_into().ok()?),
            },
        })
    }

    fn decode_from(r: &mut Reader<'a>) -> Result<RecordEntryRef<'a>, Error> {
        let (value, sealed) = match r.u8("record value")? {
            TOMBSTONE => (None, false),
            tag @ (PLAIN | SEALED) => (Some(r.bytes(caps::VALUE, "record value")?), tag == SEALED),
            _ => {
                return Err(Error::NonCanonical {
                    what: "record value",
                });
            }
        };
        Ok(RecordEntryRef {
            value,
            sealed,
            version: r.u64("version")?,
            order: WriteOrder::decode(r)?,
        })
    }
}

impl Encode for ValidatorInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.id.as_bytes());
        self.public_key.encode(out);
        put_u64(out, self.stake);
        put_bytes(out, self.p2p.as_bytes());
    }
}

impl Decode for ValidatorInfo {
    const MIN_SIZE: usize = 4 + 32 + 8 + 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(ValidatorInfo {
            id: r.string(caps::SHORT, "validator id")?,
            public_key: Address::decode(r)?,
            stake: r.u64("stake")?,
            p2p: r.string(caps::SHORT, "p2p address")?,
        })
    }
}
