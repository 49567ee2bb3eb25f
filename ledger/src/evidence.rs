//! What validators sign, and proof that one of them signed two conflicting
//! things: the part of the consensus core the state machine needs too, so that
//! an `Evidence` transaction can be checked and slashed by every replica alike.
//!
//! A *statement* is `(kind, round, height, digest)` on one chain. Two
//! statements by one key with the same kind, round and height but different
//! digests are equivocation; the pair with both signatures is [`Evidence`],
//! checkable by anyone who knows the chain id. `pyralog-consensus` re-exports
//! these types from its `bft` module.

use crate::chain::ChainId;
use crate::codec::{Decode, Encode, Reader, put_u64};
use crate::error::Error;
use crate::hash::{Domain, Hash};
use crate::keys::{self, Address, Keypair, SigDomain, Signature};

/// The kinds of statement validators sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// PBFT: the primary assigns a proposal to a sequence number in a view.
    PrePrepare = 0,
    /// PBFT: a backup accepts the primary's assignment.
    Prepare = 1,
    /// PBFT: a replica has a prepared certificate for the assignment.
    Commit = 2,
    /// PBFT: the state root after a sequence number.
    Checkpoint = 3,
    /// PBFT: a replica's move to a new view (the digest is the message's hash).
    ViewChange = 4,
    /// PBFT: the new primary's start of its view (the digest is the message's hash).
    NewView = 5,
}

impl Kind {
    /// The kind with this tag, if any.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::PrePrepare,
            1 => Kind::Prepare,
            2 => Kind::Commit,
            3 => Kind::Checkpoint,
            4 => Kind::ViewChange,
            5 => Kind::NewView,
            _ => return None,
        })
    }

    /// A short name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PrePrepare => "pre-prepare",
            Kind::Prepare => "prepare",
            Kind::Commit => "commit",
            Kind::Checkpoint => "checkpoint",
            Kind::ViewChange => "view-change",
            Kind::NewView => "new-view",
        }
    }
}

/// What a validator signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Statement {
    /// What kind.
    pub kind: Kind,
    /// The round (PBFT's view).
    pub round: u64,
    /// The height (PBFT's sequence number).
    pub height: u64,
    /// What is being voted for.
    pub digest: Hash,
}

impl Statement {
    /// The hash signed for this statement on `chain`.
    pub fn signing_hash(&self, chain: &ChainId) -> Hash {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"statement");
        chain.encode(&mut out);
        self.encode(&mut out);
        Hash::of(Domain::Consensus, &out)
    }

    /// Signs the statement.
    pub fn sign(&self, chain: &ChainId, key: &Keypair) -> Signature {
        key.sign(SigDomain::Consensus, &self.signing_hash(chain))
    }

    /// Checks `signer`'s signature on the statement.
    pub fn verify(&self, chain: &ChainId, signer: &Address, sig: &Signature) -> Result<(), Error> {
        keys::verify(SigDomain::Consensus, &self.signing_hash(chain), signer, sig)
    }
}

impl Encode for Statement {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        put_u64(out, self.round);
        put_u64(out, self.height);
        self.digest.encode(out);
    }
}

impl Decode for Statement {
    const MIN_SIZE: usize = 1 + 8 + 8 + 32;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let tag = r.u8("statement kind")?;
        let kind = Kind::from_u8(tag).ok_or(Error::UnknownTag {
            what: "statement kind",
            tag,
        })?;
        Ok(Statement {
            kind,
            round: r.u64("round")?,
            height: r.u64("height")?,
            digest: Hash::decode(r)?,
        })
    }
}

/// Two statements by one validator with the same kind, round and height but
/// different digests. Checkable by anyone who knows the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The equivocating validator.
    pub validator: Address,
    /// The first statement seen.
    pub first: Statement,
    /// Its signature.
    pub first_sig: Signature,
    /// The conflicting statement.
    pub second: Statement,
    /// Its signature.
    pub second_sig: Signature,
}

impl Evidence {
    /// Whether this is real evidence: two valid signatures by the validator on
    /// conflicting statements.
    pub fn verify(&self, chain: &ChainId) -> Result<(), Error> {
        let (a, b) = (&self.first, &self.second);
        if a.kind != b.kind || a.round != b.round || a.height != b.height || a.digest == b.digest {
            return Err(Error::BadProof(
                "the two statements do not conflict".to_owned(),
            ));
        }
        a.verify(chain, &self.validator, &self.first_sig)?;
        b.verify(chain, &self.validator, &self.second_sig)
    }
}

impl Encode for Evidence {
    fn encode(&self, out: &mut Vec<u8>) {
        self.validator.encode(out);
        self.first.encode(out);
        self.first_sig.encode(out);
        self.second.encode(out);
        self.second_sig.encode(out);
    }
}

impl Decode for Evidence {
    const MIN_SIZE: usize = 32 + 2 * (Statement::MIN_SIZE + 64);
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Evidence {
            validator: Address::decode(r)?,
            first: Statement::decode(r)?,
            first_sig: Signature::decode(r)?,
            second: Statement::decode(r)?,
            second_sig: Signature::decode(r)?,
        })
    }
}
