//! Transactions: body, payloads, the proof-of-work stamp and the signature.
//!
//! A transaction's identity is the hash of its body ([`TxBody::id`]); the
//! signature is over that id (see [`crate::keys`]) and the stamp is work over it
//! (see [`crate::pow`]). Neither the stamp nor the signature is part of the id,
//! so the id cannot be changed by anyone but the sender.

use crate::chain::ChainId;
use crate::codec::{Decode, Encode, Reader, put_bytes, put_list, put_u64};
use crate::error::Error;
use crate::hash::{Domain, Hash};
use crate::keys::{Address, Keypair, SigDomain, Signature};
use crate::pow::Stamp;

/// Hard caps of the decoder. The chain's parameters (`Limits`) set lower
/// policy limits that the state machine enforces; these only bound what a
/// decoder will read at all.
pub mod caps {
    /// Bytes in a record key.
    pub const KEY: usize = 1024;
    /// Bytes in a record value.
    pub const VALUE: usize = 1 << 20;
    /// Operations in one `Put` or `Delete`.
    pub const OPS: usize = 1024;
    /// Bytes of opaque payload data (evidence, reveals, addresses, monikers).
    pub const BLOB: usize = 64 * 1024;
    /// Bytes of a short string (p2p address, moniker).
    pub const SHORT: usize = 256;
}

/// The signed content of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxBody {
    /// The network this transaction is for.
    pub chain_id: ChainId,
    /// The account that signs and pays.
    pub sender: Address,
    /// The sender's next account nonce (ordered engines); ignored by `gossip`.
    pub nonce: u64,
    /// The epoch the transaction was made in. It is valid only within the chain's
    /// validity window after that epoch: this bounds replay under `gossip`, and
    /// keeps stamps from being stockpiled.
    pub epoch: u64,
    /// What the transaction does.
    pub payload: Payload,
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Move `amount` from the sender to `to`.
    Transfer {
        /// The receiver.
        to: Address,
        /// How much.
        amount: u64,
    },
    /// Write one or more records in `namespace`, atomically.
    Put {
        /// Whose records; must be the sender's own.
        namespace: Address,
        /// The writes, with distinct keys.
        ops: Vec<PutOp>,
    },
    /// Delete one or more records in `namespace`, atomically.
    Delete {
        /// Whose records; must be the sender's own.
        namespace: Address,
        /// The keys, distinct.
        keys: Vec<Vec<u8>>,
    },
    /// Register a cluster's validator key (rules arrive with proof of stake).
    RegisterValidator {
        /// The cluster's validator public key.
        validator_key: Address,
        /// Its p2p multiaddress.
        p2p: String,
        /// A display name.
        moniker: String,
    },
    /// Bond stake to a validator (rules arrive with proof of stake).
    Stake {
        /// The validator.
        validator: Address,
        /// How much.
        amount: u64,
    },
    /// Start unbonding stake (rules arrive with proof of stake).
    Unstake {
        /// The validator.
        validator: Address,
        /// How much.
        amount: u64,
    },
    /// Ask to leave jail (rules arrive with proof of stake).
    Unjail,
    /// Proof of a validator's misbehaviour, as the consensus engine encodes it
    /// (rules arrive with proof of stake).
    Evidence {
        /// The engine's encoding of the evidence.
        data: Vec<u8>,
    },
    /// The answer to the time-lock puzzle of a sealed record: if it matches the
    /// record's commitment, the record's value becomes the data it sealed.
    /// Anyone may post it (the answer is public work); it needs an ordering
    /// engine.
    TimelockReveal {
        /// Whose record.
        namespace: Address,
        /// Which record.
        key: Vec<u8>,
        /// The puzzle's answer, as wide as its modulus.
        answer: Vec<u8>,
    },
}

/// One write of a `Put`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOp {
    /// The record's key.
    pub key: Vec<u8>,
    /// The new value.
    pub value: Vec<u8>,
    /// Compare-and-set: the write happens only if the record's current version is
    /// this. `0` means the record was never written; a deleted record keeps its
    /// version, so versions only grow. Only ordering engines evaluate it.
    pub if_version: Option<u64>,
    /// Whether `value` is a sealed value ([`crate::timelock::SealedValue`]'s
    /// bytes): the record then stays sealed until a `TimelockReveal` posts its
    /// puzzle's answer.
    pub sealed: bool,
}

/// A complete transaction: body, stamp and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The signed content.
    pub body: TxBody,
    /// Proof of work over the body's id.
    pub stamp: Stamp,
    /// The sender's signature over the body's id.
    pub signature: Signature,
}

impl Payload {
    /// The payload's name as users see it.
    pub fn name(&self) -> &'static str {
        match self {
            Payload::Transfer { .. } => "transfer",
            Payload::Put { .. } => "put",
            Payload::Delete { .. } => "delete",
            Payload::RegisterValidator { .. } => "register-validator",
            Payload::Stake { .. } => "stake",
            Payload::Unstake { .. } => "unstake",
            Payload::Unjail => "unjail",
            Payload::Evidence { .. } => "evidence",
            Payload::TimelockReveal { .. } => "timelock-reveal",
        }
    }
}

/// Room made for a transaction's canonical bytes before encoding it: most
/// are a few hundred bytes, so one allocation instead of a string of grows.
const TX_BYTES_GUESS: usize = 512;

impl TxBody {
    /// The transaction's identity.
    pub fn id(&self) -> Hash {
        let mut out = Vec::with_capacity(TX_BYTES_GUESS);
        self.encode(&mut out);
        Hash::of(Domain::TxId, &out)
    }

    /// Stamps the body with `stamp` and signs it: the last step of building a
    /// transaction.
    pub fn sign(self, key: &Keypair, stamp: Stamp) -> Transaction {
        let signature = key.sign(SigDomain::Transaction, &self.id());
        Transaction {
            body: self,
            stamp,
            signature,
        }
    }
}

impl Transaction {
    /// The transaction's identity (the hash of its body).
    pub fn id(&self) -> Hash {
        self.body.id()
    }

    /// Its identity and its canonical bytes, the body encoded once for both.
    pub fn id_and_bytes(&self) -> (Hash, Vec<u8>) {
        let mut out = Vec::with_capacity(TX_BYTES_GUESS);
        self.body.encode(&mut out);
        let id = Hash::of(Domain::TxId, &out);
        self.stamp.encode(&mut out);
        self.signature.encode(&mut out);
        (id, out)
    }
}

impl Encode for TxBody {
    fn encode(&self, out: &mut Vec<u8>) {
        self.chain_id.encode(out);
        self.sender.encode(out);
        put_u64(out, self.nonce);
        put_u64(out, self.epoch);
        self.payload.encode(out);
    }
}

impl Decode for TxBody {
    const MIN_SIZE: usize = 4 + 32 + 8 + 8 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(TxBody {
            chain_id: ChainId::decode(r)?,
            sender: Address::decode(r)?,
            nonce: r.u64("nonce")?,
            epoch: r.u64("epoch")?,
            payload: Payload::decode(r)?,
        })
    }
}

impl Encode for Payload {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Transfer { to, amount } => {
                out.push(0);
                to.encode(out);
                put_u64(out, *amount);
            }
            Payload::Put { namespace, ops } => {
                out.push(1);
                namespace.encode(out);
                put_list(out, ops);
            }
            Payload::Delete { namespace, keys } => {
                out.push(2);
                namespace.encode(out);
                crate::codec::put_len(out, keys.len());
                for k in keys {
                    put_bytes(out, k);
                }
            }
            Payload::RegisterValidator {
                validator_key,
                p2p,
                moniker,
            } => {
                out.push(3);
                validator_key.encode(out);
                put_bytes(out, p2p.as_bytes());
                put_bytes(out, moniker.as_bytes());
            }
            Payload::Stake { validator, amount } => {
                out.push(4);
                validator.encode(out);
                put_u64(out, *amount);
            }
            Payload::Unstake { validator, amount } => {
                out.push(5);
                validator.encode(out);
                put_u64(out, *amount);
            }
            Payload::Unjail => out.push(6),
            Payload::Evidence { data } => {
                out.push(7);
                put_bytes(out, data);
            }
            Payload::TimelockReveal {
                namespace,
                key,
                answer,
            } => {
                out.push(8);
                namespace.encode(out);
                put_bytes(out, key);
                put_bytes(out, answer);
            }
        }
    }
}

impl Decode for Payload {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(match r.u8("payload tag")? {
            0 => Payload::Transfer {
                to: Address::decode(r)?,
                amount: r.u64("amount")?,
            },
            1 => Payload::Put {
                namespace: Address::decode(r)?,
                ops: r.list(caps::OPS, "put operations")?,
            },
            2 => {
                let namespace = Address::decode(r)?;
                let n = r.len(caps::OPS, 4, "delete keys")?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes(caps::KEY, "record key")?.to_vec());
                }
                Payload::Delete { namespace, keys }
            }
            3 => Payload::RegisterValidator {
                validator_key: Address::decode(r)?,
                p2p: r.string(caps::SHORT, "p2p address")?,
                moniker: r.string(caps::SHORT, "moniker")?,
            },
            4 => Payload::Stake {
                validator: Address::decode(r)?,
                amount: r.u64("amount")?,
            },
            5 => Payload::Unstake {
                validator: Address::decode(r)?,
                amount: r.u64("amount")?,
            },
            6 => Payload::Unjail,
            7 => Payload::Evidence {
                data: r.bytes(caps::BLOB, "evidence")?.to_vec(),
            },
            8 => Payload::TimelockReveal {
                namespace: Address::decode(r)?,
                key: r.bytes(caps::KEY, "record key")?.to_vec(),
                answer: r.bytes(caps::BLOB, "timelock answer")?.to_vec(),
            },
            tag => {
                return Err(Error::UnknownTag {
                    what: "payload",
                    tag,
                });
            }
        })
    }
}

/// `PutOp`'s flags byte: a compare-and-set version follows.
const PUT_HAS_VERSION: u8 = 1;
/// `PutOp`'s flags byte: the value is sealed.
const PUT_SEALED: u8 = 2;

// The byte after the value began as the tag of the `if_version` option (0 or 1).
// It is a flags byte: bit 0 says a version follows, bit 1 that the value is
// sealed. A plain write encodes exactly as it did before sealed values existed,
// so no frozen hash changed (ADR 0006); any other bit is non-canonical.
impl Encode for PutOp {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.key);
        put_bytes(out, &self.value);
        let mut flags = 0;
        if self.if_version.is_some() {
            flags |= PUT_HAS_VERSION;
        }
        if self.sealed {
            flags |= PUT_SEALED;
        }
        out.push(flags);
        if let Some(v) = self.if_version {
            put_u64(out, v);
        }
    }
}

impl Decode for PutOp {
    const MIN_SIZE: usize = 4 + 4 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let key = r.bytes(caps::KEY, "record key")?.to_vec();
        let value = r.bytes(caps::VALUE, "record value")?.to_vec();
        let flags = r.u8("put flags")?;
        if flags & !(PUT_HAS_VERSION | PUT_SEALED) != 0 {
            return Err(Error::NonCanonical { what: "put flags" });
        }
        let if_version = if flags & PUT_HAS_VERSION != 0 {
            Some(r.u64("version")?)
        } else {
            None
        };
        Ok(PutOp {
            key,
            value,
            if_version,
            sealed: flags & PUT_SEALED != 0,
        })
    }
}

impl Encode for Transaction {
    fn encode(&self, out: &mut Vec<u8>) {
        self.body.encode(out);
        self.stamp.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for Transaction {
    const MIN_SIZE: usize = TxBody::MIN_SIZE + Stamp::MIN_SIZE + Signature::MIN_SIZE;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Transaction {
            body: TxBody::decode(r)?,
            stamp: Stamp::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}
