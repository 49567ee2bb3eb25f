//! Keys, addresses and signatures.
//!
//! An [`Address`] is an ed25519 public key. Its human form is `pyr` followed by
//! base58 of the key and a 4-byte blake3 checksum, so a mistyped address is
//! caught before anything is sent to it.
//!
//! # The signature rule
//!
//! A signature is valid when the public key decompresses, is not of small order
//! ("weak"), and the *cofactored* ed25519 equation holds. Both paths evaluate
//! exactly this rule through `ed25519_dalek::verify_batch`: a single check is a
//! batch of one, whose transcript-derived coefficient is non-zero, so it accepts
//! exactly the cofactored-valid signatures; a larger batch accepts when every
//! member does (up to a 2^-128 chance). Every node therefore accepts the same set,
//! whichever path it used (see `docs/adr/0002-signature-rule.md`).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::codec::{Decode, Encode, Reader};
use crate::error::Error;
use crate::hash::{Domain, Hash};

/// The prefix of an address's human form.
pub const ADDRESS_PREFIX: &str = "pyr";

/// An account: the 32 bytes of an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The key as an ed25519 verifying key; errors if the bytes are not a point
    /// or the point is of small order.
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| Error::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(Error::WeakPublicKey);
        }
        Ok(key)
    }

    fn checksum(&self) -> [u8; 4] {
        let h = Hash::of(Domain::AddressChecksum, &self.0);
        [h.0[0], h.0[1], h.0[2], h.0[3]]
    }

    /// The human form: `pyr` + base58(key ‖ checksum).
    pub fn to_human(&self) -> String {
        let mut raw = Vec::with_capacity(36);
        raw.extend_from_slice(&self.0);
        raw.extend_from_slice(&self.checksum());
        format!("{ADDRESS_PREFIX}{}", bs58::encode(raw).into_string())
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses the human form and checks the checksum and the key.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadAddress {
            input: s.chars().take(80).collect(),
            why: why.to_owned(),
        };
        let body = s
            .strip_prefix(ADDRESS_PREFIX)
            .ok_or_else(|| bad("an address starts with 'pyr'"))?;
        let raw = bs58::decode(body)
            .into_vec()
            .map_err(|_| bad("not base58 after the 'pyr' prefix"))?;
        if raw.len() != 36 {
            return Err(bad("wrong length"));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[..32]);
        let address = Address(key);
        if raw[32..] != address.checksum() {
            return Err(bad("checksum mismatch: the address is mistyped"));
        }
        address
            .verifying_key()
            .map_err(|e| bad(&format!("not a usable ed25519 key ({e})")))?;
        Ok(address)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_human())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let human = self.to_human();
        write!(f, "Address({}…)", &human[..human.len().min(12)])
    }
}

impl Encode for Address {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for Address {
    const MIN_SIZE: usize = 32;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Address(r.array("address")?))
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl Encode for Signature {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for Signature {
    const MIN_SIZE: usize = 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Signature(r.array("signature")?))
    }
}

/// What a signature is over. The message signed is the 16-byte tag followed by a
/// 32-byte hash that already commits to the chain id, so a signature of one kind
/// of value, or from one chain, means nothing for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigDomain {
    /// A transaction: over its id.
    Transaction,
    /// A gossip batch: over its header hash.
    Batch,
    /// A consensus vote or proposal (defined by the engines).
    Consensus,
}

impl SigDomain {
    const fn tag(self) -> &'static [u8; 16] {
        match self {
            SigDomain::Transaction => b"pyralog/tx/v1\0\0\0",
            SigDomain::Batch => b"pyralog/batch/v1",
            SigDomain::Consensus => b"pyralog/vote/v1\0",
        }
    }

    /// The exact bytes signed for `digest`.
    pub fn message(self, digest: &Hash) -> [u8; 48] {
        let mut m = [0u8; 48];
        m[..16].copy_from_slice(self.tag());
        m[16..].copy_from_slice(&digest.0);
        m
    }
}

/// A secret ed25519 key and its address.
#[derive(Clone)]
pub struct Keypair {
    secret: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.address())
    }
}

impl Keypair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Keypair, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Randomness(e.to_string()))?;
        Ok(Keypair::from_seed(&seed))
    }

    /// The key whose 32-byte secret seed is `seed` (deterministic; for tests,
    /// devnets and key files).
    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        Keypair {
            secret: SigningKey::from_bytes(seed),
        }
    }

    /// The secret seed, for writing a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// This key's address.
    pub fn address(&self) -> Address {
        Address(self.secret.verifying_key().to_bytes())
    }

    /// Signs `digest` in `domain`.
    pub fn sign(&self, domain: SigDomain, digest: &Hash) -> Signature {
        Signature(self.secret.sign(&domain.message(digest)).to_bytes())
    }
}

/// Checks one signature under the rule in this module's docs.
pub fn verify(
    domain: SigDomain,
    digest: &Hash,
    signer: &Address,
    signature: &Signature,
) -> Result<(), Error> {
    verify_many(domain, &[(*digest, *signer, *signature)]).map_err(|_| Error::BadSignature)
}

/// Checks many signatures at once under the same rule as [`verify`]. On failure,
/// returns the index of the first item that fails on its own.
pub fn verify_many(domain: SigDomain, items: &[(Hash, Address, Signature)]) -> Result<(), usize> {
    if items.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(items.len());
    for (i, (_, signer, _)) in items.iter().enumerate() {
        keys.push(signer.verifying_key().map_err(|_| i)?);
    }
    let messages: Vec<[u8; 48]> = items.iter().map(|(d, _, _)| domain.message(d)).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(&s.0))
        .collect();
    if ed25519_dalek::verify_batch(&message_refs, &sigs, &keys).is_ok() {
        return Ok(());
    }
    if items.len() == 1 {
        return Err(0);
    }
    // Find the culprit, one batch of one at a time.
    for i in 0..items.len() {
        if ed25519_dalek::verify_batch(&message_refs[i..=i], &sigs[i..=i], &keys[i..=i]).is_err() {
            return Err(i);
        }
    }
    // Every item passed alone but the batch failed: only a 2^-128 event or a
    // library fault gets here. Refuse rather than guess.
    Err(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_human_form_round_trips_and_catches_typos() {
        let kp = Keypair::from_seed(&[7; 32]);
        let human = kp.address().to_human();
        assert!(human.starts_with("pyr"));
        assert_eq!(human.parse::<Address>().ok(), Some(kp.address()));
        // Change one character of the base58 body: the checksum catches it.
        let mut chars: Vec<char> = human.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(matches!(
            typo.parse::<Address>(),
            Err(Error::BadAddress { .. })
        ));
        assert!("xyz123".parse::<Address>().is_err());
        assert!("pyr0OIl".parse::<Address>().is_err());
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (y = 1) is of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            Address(identity).verifying_key(),
            Err(Error::WeakPublicKey)
        ));
        let weak = Address(identity);
        let kp = Keypair::from_seed(&[1; 32]);
        let d = Hash::of(Domain::TxId, b"m");
        assert!(
            verify(
                SigDomain::Transaction,
                &d,
                &weak,
                &kp.sign(SigDomain::Transaction, &d)
            )
            .is_err()
        );
    }

    #[test]
    fn signatures_are_domain_and_message_bound() {
        let kp = Keypair::from_seed(&[3; 32]);
        let d = Hash::of(Domain::TxId, b"m");
        let sig = kp.sign(SigDomain::Transaction, &d);
        assert!(verify(SigDomain::Transaction, &d, &kp.address(), &sig).is_ok());
        assert!(verify(SigDomain::Batch, &d, &kp.address(), &sig).is_err());
        let other = Hash::of(Domain::TxId, b"n");
        assert!(verify(SigDomain::Transaction, &other, &kp.address(), &sig).is_err());
        let stranger = Keypair::from_seed(&[4; 32]).address();
        assert!(verify(SigDomain::Transaction, &d, &stranger, &sig).is_err());
    }

    #[test]
    fn batch_agrees_with_single_and_names_the_culprit() {
        let items: Vec<_> = (0..40u8)
            .map(|i| {
                let kp = Keypair::from_seed(&[i; 32]);
                let d = Hash::of(Domain::TxId, &[i]);
                (d, kp.address(), kp.sign(SigDomain::Transaction, &d))
            })
            .collect();
        assert_eq!(verify_many(SigDomain::Transaction, &items), Ok(()));
        let mut bad = items.clone();
        bad[17].2.0[5] ^= 1;
        assert_eq!(verify_many(SigDomain::Transaction, &bad), Err(17));
        for (i, (d, a, s)) in bad.iter().enumerate() {
            assert_eq!(verify(SigDomain::Transaction, d, a, s).is_ok(), i != 17);
        }
    }
}
