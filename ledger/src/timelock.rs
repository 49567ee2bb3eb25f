//! Sealed values: the byte format a time-lock puzzle's output takes, the
//! commitment to the puzzle's answer, and opening a sealed value once the answer
//! is known (see `docs/adr/0006-timelock.md`).
//!
//! A puzzle (Rivest, Shamir and Wagner, "Time-lock puzzles and timed-release
//! crypto", 1996) is a modulus `N = pq`, a base `a` and a number of squarings
//! `t`; its answer is `a^(2^t) mod N`. Whoever knows `p` and `q` computes it at
//! once; anyone else needs `t` squarings one after another. The arithmetic lives
//! in `pyralog-consensus` (`timelock`); this module only needs the answer's
//! bytes, so the state machine checks a reveal with one blake3 hash whatever `t`
//! is, and decrypts with one AEAD call.
//!
//! # Format (version 1)
//!
//! A [`SealedValue`] is, in the canonical encoding of [`crate::codec`]:
//!
//! ```text
//! magic      4 bytes  "PYTL"
//! version    u8       1
//! modulus    bytes    N, big-endian, no leading zero byte, at most 512 bytes
//! base       bytes    a, big-endian, no leading zero byte, no wider than N
//! squarings  u64      t
//! commitment 32 bytes blake3 in Domain::TimelockCommitment of (the puzzle's
//!                     encoding: modulus, base, squarings) ‖ answer
//! nonce      12 bytes the ChaCha20-Poly1305 nonce
//! ciphertext bytes    ChaCha20-Poly1305 of the data, with everything above as
//!                     associated data; at least the 16-byte tag
//! ```
//!
//! The answer is written as exactly as many big-endian bytes as the modulus has.
//! The key is blake3 in `Domain::TimelockKey` of `commitment ‖ answer`. A sealed
//! file (`pyralog timelock seal`) and a sealed record value (`pyralog put
//! --sealed-for`) are the same bytes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::codec::{Decode, Encode, Reader, put_bytes, put_u64};
use crate::error::Error;
use crate::hash::{Domain, Hash};
use crate::tx::caps;

/// The first bytes of every sealed value.
pub const MAGIC: [u8; 4] = *b"PYTL";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The widest modulus the format holds: 4096 bits.
pub const MAX_MODULUS_BYTES: usize = 512;
/// Bytes of the AEAD nonce.
pub const NONCE_BYTES: usize = 12;
/// Bytes of the AEAD tag at the end of the ciphertext.
pub const TAG_BYTES: usize = 16;

/// A puzzle's public parameters: anyone holding them can find the answer by
/// doing `squarings` squarings modulo `modulus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Puzzle {
    /// `N`, big-endian, without leading zero bytes.
    pub modulus: Vec<u8>,
    /// `a`, big-endian, without leading zero bytes.
    pub base: Vec<u8>,
    /// `t`.
    pub squarings: u64,
}

/// Data encrypted under the answer of a time-lock puzzle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue {
    /// The puzzle whose answer opens it.
    pub puzzle: Puzzle,
    /// The blake3 commitment to the answer (see [`commitment`]).
    pub commitment: Hash,
    /// The AEAD nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// The encrypted data followed by the AEAD tag.
    pub ciphertext: Vec<u8>,
}

/// The commitment to `answer` as the answer of `puzzle`: it binds the modulus,
/// the base and the number of squarings as well as the answer, so a sealed
/// value whose puzzle was altered fails the check like a wrong answer does.
pub fn commitment(puzzle: &Puzzle, answer: &[u8]) -> Hash {
    let mut h = Domain::TimelockCommitment.hasher();
    h.update(&puzzle.to_bytes());
    h.update(answer);
    Hash(*h.finalize().as_bytes())
}

/// The 32-byte AEAD key that `answer` gives, for a puzzle with `commitment`.
fn key(commitment: &Hash, answer: &[u8]) -> Key {
    let mut h = Domain::TimelockKey.hasher();
    h.update(&commitment.0);
    h.update(answer);
    Key::from(*h.finalize().as_bytes())
}

impl Puzzle {
    /// Bytes of the modulus, which is also the width of an answer.
    pub fn answer_len(&self) -> usize {
        self.modulus.len()
    }

    /// Refuses an answer of the wrong width.
    pub fn check_answer_len(&self, answer: &[u8]) -> Result<(), Error> {
        if answer.len() != self.answer_len() {
            return Err(Error::AnswerLength {
                expected: self.answer_len(),
                got: answer.len(),
            });
        }
        Ok(())
    }
}

impl SealedValue {
    /// Encrypts `data` under the key `answer` gives. The caller computed
    /// `answer` as `puzzle`'s answer (quickly, knowing the factors) and chose a
    /// fresh `nonce`.
    pub fn seal(
        puzzle: Puzzle,
        answer: &[u8],
        data: &[u8],
        nonce: [u8; NONCE_BYTES],
    ) -> Result<SealedValue, Error> {
        puzzle.check_answer_len(answer)?;
        let commitment = commitment(&puzzle, answer);
        let mut sealed = SealedValue {
            puzzle,
            commitment,
            nonce,
            ciphertext: Vec::new(),
        };
        let aad = sealed.header_bytes();
        sealed.ciphertext = ChaCha20Poly1305::new(&key(&commitment, answer))
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: data,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::SealedDecrypt)?;
        Ok(sealed)
    }

    /// Checks `answer` against the commitment: one blake3 hash, whatever the
    /// number of squarings.
    pub fn check_answer(&self, answer: &[u8]) -> Result<(), Error> {
        self.puzzle.check_answer_len(answer)?;
        if commitment(&self.puzzle, answer) != self.commitment {
            return Err(Error::CommitmentMismatch);
        }
        Ok(())
    }

    /// The data, given the puzzle's answer. A wrong answer is
    /// [`Error::CommitmentMismatch`]; a ciphertext that does not authenticate
    /// under the committed answer is [`Error::SealedDecrypt`].
    pub fn open(&self, answer: &[u8]) -> Result<Vec<u8>, Error> {
        self.check_answer(answer)?;
        ChaCha20Poly1305::new(&key(&self.commitment, answer))
            .decrypt(
                &Nonce::from(self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: &self.header_bytes(),
                },
            )
            .map_err(|_| Error::SealedDecrypt)
    }

    /// Bytes of data the ciphertext holds.
    pub fn data_len(&self) -> usize {
        self.ciphertext.len().saturating_sub(TAG_BYTES)
    }

    /// The encoding of everything but the ciphertext: the AEAD's associated data.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.puzzle.modulus.len() * 2);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        self.puzzle.encode(&mut out);
        self.commitment.encode(&mut out);
        out.extend_from_slice(&self.nonce);
        out
    }
}

/// Reads a big-endian unsigned integer with no leading zero byte.
fn minimal_uint<'a>(r: &mut Reader<'a>, max: usize, what: &'static str) -> Result<&'a [u8], Error> {
    let bytes = r.bytes(max, what)?;
    match bytes.first() {
        None | Some(0) => Err(Error::NonCanonical { what }),
        Some(_) => Ok(bytes),
    }
}

impl Encode for Puzzle {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.modulus);
        put_bytes(out, &self.base);
        put_u64(out, self.squarings);
    }
}

impl Decode for Puzzle {
    const MIN_SIZE: usize = 4 + 1 + 4 + 1 + 8;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let modulus = minimal_uint(r, MAX_MODULUS_BYTES, "puzzle modulus")?.to_vec();
        let base = minimal_uint(r, modulus.len(), "puzzle base")?.to_vec();
        Ok(Puzzle {
            modulus,
            base,
            squarings: r.u64("puzzle squarings")?,
        })
    }
}

impl Encode for SealedValue {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header_bytes());
        put_bytes(out, &self.ciphertext);
    }
}

impl Decode for SealedValue {
    const MIN_SIZE: usize = 4 + 1 + Puzzle::MIN_SIZE + 32 + NONCE_BYTES + 4 + TAG_BYTES;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let what = "sealed value";
        if r.remaining() < MAGIC.len() || r.array::<4>(what)? != MAGIC {
            return Err(Error::NotSealedFormat { what });
        }
        let version = r.u8("sealed format version")?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what,
                version,
                supported: FORMAT_VERSION,
            });
        }
        let puzzle = Puzzle::decode(r)?;
        let commitment = Hash::decode(r)?;
        let nonce = r.array("sealed nonce")?;
        let ciphertext = r.bytes(caps::VALUE, "sealed ciphertext")?;
        if ciphertext.len() < TAG_BYTES {
            return Err(Error::UnexpectedEnd {
                what: "sealed ciphertext (shorter than the AEAD tag)",
            });
        }
        Ok(SealedValue {
            puzzle,
            commitment,
            nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puzzle() -> Puzzle {
        Puzzle {
            modulus: vec![0xc3, 0x11, 0x05],
            base: vec![2],
            squarings: 1000,
        }
    }

    const ANSWER: [u8; 3] = [0x01, 0x02, 0x03];

    #[test]
    fn seal_then_open_with_the_answer() {
        let s = SealedValue::seal(puzzle(), &ANSWER, b"bid: 42", [7; 12]).expect("seal");
        assert_eq!(s.data_len(), 7);
        let back = SealedValue::from_bytes(&s.to_bytes()).expect("decode");
        assert_eq!(back, s);
        assert_eq!(back.open(&ANSWER).expect("open"), b"bid: 42");
    }

    #[test]
    fn wrong_answers_and_tampering_are_named() {
        let s = SealedValue::seal(puzzle(), &ANSWER, b"data", [7; 12]).expect("seal");
        assert_eq!(s.open(&[1, 2, 4]), Err(Error::CommitmentMismatch));
        assert_eq!(
            s.open(&[1, 2]),
            Err(Error::AnswerLength {
                expected: 3,
                got: 2
            })
        );
        let mut t = s.clone();
        t.puzzle.squarings += 1;
        assert_eq!(t.open(&ANSWER), Err(Error::CommitmentMismatch));
        let mut t = s.clone();
        t.ciphertext[0] ^= 1;
        assert_eq!(t.open(&ANSWER), Err(Error::SealedDecrypt));
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert_eq!(t.open(&ANSWER), Err(Error::SealedDecrypt));
    }

    #[test]
    fn the_decoder_is_strict() {
        let s = SealedValue::seal(puzzle(), &ANSWER, b"data", [7; 12]).expect("seal");
        let bytes = s.to_bytes();
        let mut b = bytes.clone();
        b[0] = b'X';
        assert!(matches!(
            SealedValue::from_bytes(&b),
            Err(Error::NotSealedFormat { .. })
        ));
        let mut b = bytes.clone();
        b[4] = 2;
        assert!(matches!(
            SealedValue::from_bytes(&b),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
        // A leading zero in the modulus is another encoding of the same number.
        let mut p = puzzle();
        p.modulus.insert(0, 0);
        let mut t = s.clone();
        t.puzzle = p;
        assert_eq!(
            SealedValue::from_bytes(&t.to_bytes()),
            Err(Error::NonCanonical {
                what: "puzzle modulus"
            })
        );
        // A base wider than the modulus.
        let mut t = s.clone();
        t.puzzle.base = vec![1, 2, 3, 4];
        assert!(matches!(
            SealedValue::from_bytes(&t.to_bytes()),
            Err(Error::TooLong { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(SealedValue::from_bytes(&bytes[..cut]).is_err());
        }
        assert!(matches!(
            SealedValue::from_bytes(b"hi"),
            Err(Error::NotSealedFormat { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SealedValue::from_bytes(&longer).is_err());
    }
}
