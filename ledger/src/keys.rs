//! Keys, addresses and signatures.
//!
//! An [`Address`] is an ed25519 public key. Its human form is `pyr` followed by
//! base58 of the key and a 4-byte blake3 checksum, so a mistyped address is
//! caught before anything is sent to it.
//!
//! # The signature rule
//!
//! A signature `(R, s)` by key `A` over message `M` is valid when `A` and `R`
//! decompress to curve points, `A` is not of small order ("weak": anyone can sign
//! for it), `s` is a canonical scalar, and the *cofactored* equation holds:
//! `[8](sB - kA - R) = 0` with `k = SHA-512(R ‖ A ‖ M) mod l`.
//!
//! [`verify`] evaluates exactly that. [`verify_many`] checks
//! `[8](Σ zᵢ(sᵢB - kᵢAᵢ - Rᵢ)) = 0` with 128-bit coefficients `zᵢ` derived from
//! every input: when every member is valid it always passes, and when one is
//! not it fails except with probability about 2^-128, so the two paths accept
//! the same set and every node agrees whichever it used. ed25519-dalek's own
//! `verify`/`verify_strict` and `verify_batch` are all cofactorless, which
//! makes a signature with a small-order component pass or fail depending on
//! the batch it lands in; that is why the rule is written here on
//! curve25519-dalek (see `docs/adr/0002-signature-rule.md`). Signing is plain
//! ed25519 (ed25519-dalek), whose signatures satisfy both equations.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha512};

use crate::codec::{Decode, Encode, Reader};
use crate::error::Error;
use crate::hash::{Domain, Hash};

/// The prefix of an address's human form.
pub const ADDRESS_PREFIX: &str = "pyr";

/// An account: the 32 bytes of an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The key as a curve point; errors if the bytes are not a point or the
    /// point is of small order.
    pub fn point(&self) -> Result<EdwardsPoint, Error> {
        let point = CompressedEdwardsY(self.0)
            .decompress()
            .ok_or(Error::InvalidPublicKey)?;
        if point.is_small_order() {
            return Err(Error::WeakPublicKey);
        }
        Ok(point)
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
            .point()
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

/// A signature taken apart for the equation: `(A, R, s, k)`.
struct Parsed {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// A bounded map in two generations of at most `capacity / 2` entries each:
/// when the young one fills, the old one is dropped and the young one takes
/// its place; an entry found in the old generation moves back to the young one.
#[derive(Debug)]
struct Generations<K, V> {
    young: std::collections::HashMap<K, V>,
    old: std::collections::HashMap<K, V>,
    half: usize,
}

impl<K: Copy + Eq + std::hash::Hash, V: Copy> Generations<K, V> {
    fn new(capacity: usize) -> Self {
        Generations {
            young: std::collections::HashMap::new(),
            old: std::collections::HashMap::new(),
            half: (capacity / 2).max(1),
        }
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    fn insert(&mut self, k: K, v: V) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(k, v);
    }

    /// The entry for `k` (an old one moves back to the young generation), or
    /// else `make()`'s, kept if there is one.
    fn get_or_make(&mut self, k: K, make: impl FnOnce() -> Option<V>) -> Option<V> {
        if let Some(v) = self.young.get(&k) {
            return Some(*v);
        }
        let v = match self.old.remove(&k) {
            Some(v) => v,
            None => make()?,
        };
        self.insert(k, v);
        Some(v)
    }

    /// The entry for `k`, without moving it.
    fn peek(&self, k: &K) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }
}

/// Decompressed keys of recent signers, so a recurring signer's key is
/// decompressed once (about a third of the cost of a batched check).
///
/// Bounded: two generations of at most `capacity / 2` keys each; when the young
/// generation fills, the old one is dropped and the young one takes its place, and
/// a key found in the old generation moves back to the young one. Only usable
/// (non-weak) keys are kept. The cache changes how fast a signature is checked,
/// never whether it passes: decompression is a pure function of the key's bytes.
#[derive(Debug)]
pub struct KeyCache(Generations<Address, EdwardsPoint>);

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(0)
    }
}

impl KeyCache {
    /// A cache of at most `capacity` keys.
    pub fn new(capacity: usize) -> KeyCache {
        KeyCache(Generations::new(capacity))
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn point(&mut self, a: &Address) -> Option<EdwardsPoint> {
        self.0.get_or_make(*a, || a.point().ok())
    }
}

/// Signatures known to be good: (digest, signature) pairs that passed a check,
/// at most `capacity` of them, kept in two generations like [`KeyCache`].
#[derive(Debug)]
pub struct SigMemo(Generations<Hash, Signature>);

impl SigMemo {
    /// A memo of at most `capacity` signatures.
    pub fn new(capacity: usize) -> SigMemo {
        SigMemo(Generations::new(capacity))
    }

    /// Whether `sig` on `digest` passed before.
    pub fn contains(&self, digest: &Hash, sig: &Signature) -> bool {
        self.0.peek(digest) == Some(sig)
    }

    /// Records that `sig` on `digest` passed.
    pub fn insert(&mut self, digest: Hash, sig: Signature) {
        self.0.insert(digest, sig);
    }

    /// How many signatures it holds (a digest in both generations counts twice).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn signer_point(cache: Option<&mut KeyCache>, signer: &Address) -> Option<EdwardsPoint> {
    match cache {
        Some(c) => c.point(signer),
        None => signer.point().ok(),
    }
}

fn parse(
    a: EdwardsPoint,
    domain: SigDomain,
    digest: &Hash,
    signer: &Address,
    sig: &Signature,
) -> Option<Parsed> {
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&sig.0[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&sig.0[32..]);
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let h: [u8; 64] = Sha512::new()
        .chain_update(r_bytes)
        .chain_update(signer.0)
        .chain_update(domain.message(digest))
        .finalize()
        .into();
    Some(Parsed {
        a,
        r,
        s,
        k: Scalar::from_bytes_mod_order_wide(&h),
    })
}

impl Parsed {
    /// `[8](sB - kA - R) = 0`.
    fn holds(&self) -> bool {
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&-self.k, &self.a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }
}

/// Checks one signature under the rule in this module's docs.
pub fn verify(
    domain: SigDomain,
    digest: &Hash,
    signer: &Address,
    signature: &Signature,
) -> Result<(), Error> {
    match signer
        .point()
        .ok()
        .and_then(|a| parse(a, domain, digest, signer, signature))
    {
        Some(p) if p.holds() => Ok(()),
        _ => Err(Error::BadSignature),
    }
}

/// Checks many signatures at once under the same rule as [`verify`]. On failure,
/// returns the index of the first item that fails on its own.
pub fn verify_many(domain: SigDomain, items: &[(Hash, Address, Signature)]) -> Result<(), usize> {
    verify_many_with(domain, items, None)
}

/// [`verify_many`], looking signers' keys up in `cache` first.
pub fn verify_many_with(
    domain: SigDomain,
    items: &[(Hash, Address, Signature)],
    mut cache: Option<&mut KeyCache>,
) -> Result<(), usize> {
    if items.is_empty() {
        return Ok(());
    }
    let mut parsed = Vec::with_capacity(items.len());
    // The coefficients come from a hash of every input, so no signer can
    // choose them (Fiat-Shamir), and the same batch always gets the same ones.
    let mut transcript = Domain::BatchVerify.hasher();
    for (i, (digest, signer, sig)) in items.iter().enumerate() {
        let a = signer_point(cache.as_deref_mut(), signer).ok_or(i)?;
        parsed.push(parse(a, domain, digest, signer, sig).ok_or(i)?);
        transcript.update(&digest.0);
        transcript.update(&signer.0);
        transcript.update(&sig.0);
    }
    if let [one] = parsed.as_slice() {
        // One signature: the direct equation is cheaper than a combination.
        return if one.holds() { Ok(()) } else { Err(0) };
    }
    let mut coefficients = transcript.finalize_xof();
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    let mut b_coefficient = Scalar::ZERO;
    scalars.push(Scalar::ZERO); // the basepoint's, filled in below
    points.push(ED25519_BASEPOINT_POINT);
    for p in &parsed {
        let mut z = [0u8; 16];
        coefficients.fill(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        b_coefficient += z * p.s;
        scalars.push(-z);
        points.push(p.r);
        scalars.push(-(z * p.k));
        points.push(p.a);
    }
    scalars[0] = b_coefficient;
    let sum = EdwardsPoint::vartime_multiscalar_mul(&scalars, &points);
    if sum.mul_by_cofactor().is_identity() {
        return Ok(());
    }
    // Find the culprit. The rule is the single check, so if none fails alone
    // (which the algebra rules out), the batch is valid by definition.
    match parsed.iter().position(|p| !p.holds()) {
        Some(i) => Err(i),
        None => Ok(()),
    }
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
            Address(identity).point(),
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

    /// A signature that is valid only under the cofactored equation: the key
    /// (`torsion_in_key`) or the nonce point carries a small-order component.
    fn torsion_signature(torsion_in_key: bool, msg_seed: u8) -> (Hash, Address, Signature) {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let a = Scalar::from(1_234_567u64 + u64::from(msg_seed));
        let r = Scalar::from(987_654_321u64 + u64::from(msg_seed));
        let t = EIGHT_TORSION[1];
        let (big_a, big_r) = if torsion_in_key {
            (a * ED25519_BASEPOINT_POINT + t, r * ED25519_BASEPOINT_POINT)
        } else {
            (a * ED25519_BASEPOINT_POINT, r * ED25519_BASEPOINT_POINT + t)
        };
        let signer = Address(big_a.compress().to_bytes());
        let r_bytes = big_r.compress().to_bytes();
        let digest = Hash::of(Domain::TxId, &[msg_seed]);
        let h: [u8; 64] = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(signer.0)
            .chain_update(SigDomain::Transaction.message(&digest))
            .finalize()
            .into();
        let s = r + Scalar::from_bytes_mod_order_wide(&h) * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(&s.to_bytes());
        (digest, signer, Signature(sig))
    }

    #[test]
    fn torsion_components_get_one_answer_on_every_path() {
        let honest: Vec<_> = (0..12u8)
            .map(|i| {
                let kp = Keypair::from_seed(&[i; 32]);
                let d = Hash::of(Domain::TxId, &[i, 1]);
                (d, kp.address(), kp.sign(SigDomain::Transaction, &d))
            })
            .collect();
        for seed in 0..16u8 {
            for in_key in [true, false] {
                let crafted = torsion_signature(in_key, seed);
                assert!(verify(SigDomain::Transaction, &crafted.0, &crafted.1, &crafted.2).is_ok());
                // In batches of every composition, it is accepted too.
                for n in 0..honest.len() {
                    let mut batch = honest[..n].to_vec();
                    batch.insert(n / 2, crafted);
                    assert_eq!(
                        verify_many(SigDomain::Transaction, &batch),
                        Ok(()),
                        "seed {seed} n {n}"
                    );
                }
                // And a tampered copy is refused on both paths.
                let mut bad = crafted;
                bad.2.0[40] ^= 1;
                assert!(verify(SigDomain::Transaction, &bad.0, &bad.1, &bad.2).is_err());
                let mut batch = honest.clone();
                batch.push(bad);
                assert_eq!(
                    verify_many(SigDomain::Transaction, &batch),
                    Err(honest.len())
                );
            }
        }
    }

    #[test]
    fn honest_signatures_agree_with_ed25519_dalek() {
        for i in 0..64u8 {
            let kp = Keypair::from_seed(&[i.wrapping_mul(37); 32]);
            let d = Hash::of(Domain::TxId, &[i]);
            let sig = kp.sign(SigDomain::Transaction, &d);
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&kp.address().0).expect("key");
            let dalek = vk.verify_strict(
                &SigDomain::Transaction.message(&d),
                &ed25519_dalek::Signature::from_bytes(&sig.0),
            );
            assert!(dalek.is_ok());
            assert!(verify(SigDomain::Transaction, &d, &kp.address(), &sig).is_ok());
            let mut bad = sig;
            bad.0[i as usize % 64] ^= 1 << (i % 8);
            assert!(verify(SigDomain::Transaction, &d, &kp.address(), &bad).is_err());
        }
    }

    #[test]
    fn non_canonical_scalars_are_refused() {
        let kp = Keypair::from_seed(&[5; 32]);
        let d = Hash::of(Domain::TxId, b"m");
        let mut sig = kp.sign(SigDomain::Transaction, &d);
        // s + l is the same scalar mod l but not its canonical encoding.
        let s =
            Scalar::from_canonical_bytes(sig.0[32..].try_into().expect("32")).expect("canonical");
        // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let mut l = [0u8; 32];
        hex::decode_to_slice(
            "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010",
            &mut l,
        )
        .expect("hex");
        let mut carry = 0u16;
        let mut sum = [0u8; 32];
        for i in 0..32 {
            let v = u16::from(s.to_bytes()[i]) + u16::from(l[i]) + carry;
            sum[i] = v as u8;
            carry = v >> 8;
        }
        sig.0[32..].copy_from_slice(&sum);
        assert!(verify(SigDomain::Transaction, &d, &kp.address(), &sig).is_err());
    }

    #[test]
    fn the_key_cache_is_bounded_and_changes_no_answer() {
        let mut cache = KeyCache::new(8);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for round in 0..3u8 {
            for i in 0..20u8 {
                let kp = Keypair::from_seed(&[i; 32]);
                let d = Hash::of(Domain::TxId, &[i, round]);
                let sig = kp.sign(SigDomain::Transaction, &d);
                let mut bad = sig;
                bad.0[3] ^= 1;
                let items = [(d, kp.address(), sig)];
                assert_eq!(
                    verify_many_with(SigDomain::Transaction, &items, Some(&mut cache)),
                    Ok(())
                );
                let items = [(d, kp.address(), bad)];
                assert_eq!(
                    verify_many_with(SigDomain::Transaction, &items, Some(&mut cache)),
                    Err(0)
                );
                let items = [(d, Address(identity), sig)];
                assert_eq!(
                    verify_many_with(SigDomain::Transaction, &items, Some(&mut cache)),
                    Err(0)
                );
                assert!(cache.len() <= 8, "{} keys cached", cache.len());
            }
        }
        assert!(!cache.is_empty());
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
