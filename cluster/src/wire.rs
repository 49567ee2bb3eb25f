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
