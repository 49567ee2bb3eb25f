//! The envelope format for everything openraft defines (log entries, votes,
//! memberships, RPC messages): CBOR through serde, with a size cap checked
//! before decoding. Our own values inside the envelope (a [`crate::Command`])
//! carry their canonical bytes (ADR 0001), so a transaction or block crosses
//! Raft byte for byte.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Encodes `value`; refuses a result larger than `max` bytes.
pub fn encode<T: Serialize>(what: &'static str, value: &T, max: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| Error::Decode {
        what,
        reason: format!("encoding: {e}"),
    })?;
    if out.len() > max {
        return Err(Error::TooLarge {
            what,
            size: out.len(),
            max,
        });
    }
    Ok(out)
}

/// Decodes one `T` from `bytes`, which must be at most `max` bytes. The
/// decoder reads from the slice, so no length inside can make it allocate
/// more than the input holds.
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, Error> {
    if bytes.len() > max {
        return Err(Error::TooLarge {
            what,
            size: bytes.len(),
            max,
        });
    }
    ciborium::from_reader_with_buffer(bytes, &mut [0u8; 4096]).map_err(|e| Error::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Serde for a ledger [`pyralog_ledger::Hash`]: its 32 bytes.
pub mod hash {
    use pyralog_ledger::Hash;
    use serde::{Deserializer, Serializer};

    /// Writes the 32 bytes.
    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&h.0)
    }

    /// Reads exactly 32 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let bytes = serde_bytes_buf(d)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"32 bytes"))?;
        Ok(Hash(arr))
    }

    fn serde_bytes_buf<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                if v.len() > 32 {
                    return Err(E::invalid_length(v.len(), &"32 bytes"));
                }
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                self.visit_bytes(&v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Reads one CBOR byte string; with `arrays`, also serde's default form of
/// bytes, an array of integers (what files written before byte strings
/// hold). Everything else is refused.
pub(crate) struct ByteString {
    pub(crate) arrays: bool,
}

impl<'de> serde::de::Visitor<'de> for ByteString {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        if !self.arrays {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Seq,
                &self,
            ));
        }
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// Serde for a list of byte strings (`Vec<Vec<u8>>`): each a CBOR byte
/// string, not serde's default array of integers (a header per byte, about
/// twice the size and far slower). Reads either form, so files written
/// before this still load.
pub mod byte_strings {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct AsBytes<'a>(&'a [u8]);

    impl Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct Owned(Vec<u8>);

    impl<'de> Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Owned, D::Error> {
            d.deserialize_byte_buf(super::ByteString { arrays: true })
                .map(Owned)
        }
    }

    /// Writes each as a byte string.
    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(list.len()))?;
        for item in list {
            seq.serialize_element(&AsBytes(item))?;
        }
        seq.end()
    }

    /// Reads byte strings (or arrays of integers).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<Owned>::deserialize(d)?
            .into_iter()
            .map(|o| o.0)
            .collect())
    }
}

/// Serde for the answer to a signing intent, `Result<(), Refusal>`: the
/// refusal is `pyralog_consensus`'s, which knows nothing of serde, so it
/// travels as a mirror of itself (same variants, same fields).
pub mod intent_answer {
    use pyralog_consensus::intent::Refusal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    enum Wire {
        Conflict {
            kind: String,
            height: u64,
            round: u64,
            committed: String,
            requested: String,
        },
        BelowFloor {
            height: u64,
            floor: u64,
        },
        Full(usize),
    }

    /// Writes the answer.
    pub fn serialize<S: Serializer>(answer: &Result<(), Refusal>, s: S) -> Result<S::Ok, S::Error> {
        let wire = answer.as_ref().map_err(|r| match r.clone() {
            Refusal::Conflict {
                kind,
                height,
                round,
                committed,
                requested,
            } => Wire::Conflict {
                kind,
                height,
                round,
                committed,
                requested,
            },
            Refusal::BelowFloor { height, floor } => Wire::BelowFloor { height, floor },
            Refusal::Full(n) => Wire::Full(n),
        });
        wire.serialize(s)
    }

    /// Reads the answer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Result<(), Refusal>, D::Error> {
        let wire = Result::<(), Wire>::deserialize(d)?;
        Ok(wire.map_err(|w| match w {
            Wire::Conflict {
                kind,
                height,
                round,
                committed,
                requested,
            } => Refusal::Conflict {
                kind,
                height,
                round,
                committed,
                requested,
            },
            Wire::BelowFloor { height, floor } => Refusal::BelowFloor { height, floor },
            Wire::Full(n) => Refusal::Full(n),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Now {
        #[serde(with = "super::byte_strings")]
        list: Vec<Vec<u8>>,
    }

    /// The layout before: serde's default for `Vec<Vec<u8>>`.
    #[derive(Serialize, Deserialize)]
    struct Before {
        list: Vec<Vec<u8>>,
    }

    fn sample() -> Vec<Vec<u8>> {
        vec![(0..=255).collect(), Vec::new(), vec![7; 1000]]
    }

    #[test]
    fn byte_strings_cost_about_their_length_and_read_back() {
        let raw: usize = sample().iter().map(Vec::len).sum();
        let now = super::encode("t", &Now { list: sample() }, usize::MAX).expect("encode");
        let before = super::encode("t", &Before { list: sample() }, usize::MAX).expect("encode");
        assert!(now.len() < raw + 32, "{} bytes for {raw}", now.len());
        assert!(
            before.len() > raw + 200,
            "the old form was larger: {}",
            before.len()
        );
        let back: Now = super::decode("t", &now, usize::MAX).expect("decode");
        assert_eq!(back.list, sample());
    }

    #[test]
    fn byte_strings_read_the_older_array_form() {
        let before = super::encode("t", &Before { list: sample() }, usize::MAX).expect("encode");
        let back: Now = super::decode("t", &before, usize::MAX).expect("decode");
        assert_eq!(back.list, sample());
        // Text where bytes belong, or integers beyond a byte: refused, not
        // a panic.
        #[derive(Serialize)]
        struct Wrong<T> {
            list: Vec<T>,
        }
        for wrong in [
            super::encode("t", &Wrong { list: vec!["x"] }, usize::MAX),
            super::encode(
                "t",
                &Wrong {
                    list: vec![vec![256u32]],
                },
                usize::MAX,
            ),
        ] {
            let wrong = wrong.expect("encode");
            assert!(super::decode::<Now>("t", &wrong, usize::MAX).is_err());
        }
    }

    #[test]
    fn a_single_byte_string_on_the_wire_takes_no_array() {
        #[derive(Serialize)]
        struct Array {
            data: Vec<u8>,
        }
        #[derive(Serialize, Deserialize)]
        struct Wire {
            data: crate::network::Bytes,
        }
        let array = super::encode(
            "t",
            &Array {
                data: vec![1, 2, 3],
            },
            usize::MAX,
        )
        .expect("encode");
        assert!(super::decode::<Wire>("t", &array, usize::MAX).is_err());
        let wire = Wire {
            data: crate::network::Bytes(vec![1, 2, 3]),
        };
        let bytes = super::encode("t", &wire, usize::MAX).expect("encode");
        let back: Wire = super::decode("t", &bytes, usize::MAX).expect("decode");
        assert_eq!(back.data.0, vec![1, 2, 3]);
    }
}
