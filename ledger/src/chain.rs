//! Chain identity, engines, and hybrid logical clocks.

use std::fmt;
use std::str::FromStr;

use crate::codec::{Decode, Encode, Reader, put_bytes, put_u32, put_u64};
use crate::error::Error;

/// The most bytes in a chain id.
pub const MAX_CHAIN_ID: usize = 48;

/// A network's name, such as `pyralog-testnet-1`: 1 to 48 characters of
/// lower-case ASCII letters, digits and `-`. Every signature and stamp is bound to
/// it, so a transaction from one network is worthless on another.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(String);

impl ChainId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ChainId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if s.is_empty() || s.len() > MAX_CHAIN_ID || !s.chars().all(ok_char) {
            return Err(Error::BadChainId(s.chars().take(80).collect()));
        }
        Ok(ChainId(s.to_owned()))
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", self.0)
    }
}

impl Encode for ChainId {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.0.as_bytes());
    }
}

impl Decode for ChainId {
    const MIN_SIZE: usize = 5;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let s = r.string(MAX_CHAIN_ID, "chain id")?;
        s.parse()
    }
}

/// How the network agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// No global order: clusters gossip signed batches and merge them as CRDTs.
    Gossip,
    /// PBFT over a fixed set of 3f+1 validators.
    Pbft,
    /// Stake-weighted BFT with a dynamic validator set.
    Pos,
}

impl Engine {
    /// Whether the engine totally orders transactions (so value transfers,
    /// nonces and compare-and-set are meaningful).
    pub fn is_ordered(self) -> bool {
        !matches!(self, Engine::Gossip)
    }

    /// The engine's name in `genesis.json`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Gossip => "gossip",
            Engine::Pbft => "pbft",
            Engine::Pos => "pos",
        }
    }
}

impl Encode for Engine {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

impl Decode for Engine {
    const MIN_SIZE: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        match r.u8("engine")? {
            0 => Ok(Engine::Gossip),
            1 => Ok(Engine::Pbft),
            2 => Ok(Engine::Pos),
            tag => Err(Error::UnknownTag {
                what: "engine",
                tag,
            }),
        }
    }
}

/// A hybrid logical clock reading: wall-clock milliseconds, then a counter that
/// orders events within one millisecond. Ordered by `(wall_ms, logical)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch, as the issuing clock saw them.
    pub wall_ms: u64,
    /// Tie-breaking counter within one millisecond.
    pub logical: u32,
}

impl Hlc {
    /// The reading for an event at wall time `now_ms` on a clock whose last
    /// reading was `self`: never goes backwards, and always moves forward.
    pub fn tick(self, now_ms: u64) -> Hlc {
        if now_ms > self.wall_ms {
            Hlc {
                wall_ms: now_ms,
                logical: 0,
            }
        } else {
            Hlc {
                wall_ms: self.wall_ms,
                logical: self.logical.saturating_add(1),
            }
        }
    }
}

impl Encode for Hlc {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.wall_ms);
        put_u32(out, self.logical);
    }
}

impl Decode for Hlc {
    const MIN_SIZE: usize = 12;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Hlc {
            wall_ms: r.u64("hlc wall time")?,
            logical: r.u32("hlc counter")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_accepts_only_its_alphabet() {
        assert!("pyralog-testnet-1".parse::<ChainId>().is_ok());
        for bad in ["", "Pyralog", "a b", "x".repeat(49).as_str(), "ü"] {
            assert!(bad.parse::<ChainId>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn hlc_never_goes_back() {
        let t = Hlc {
            wall_ms: 100,
            logical: 3,
        };
        assert_eq!(
            t.tick(50),
            Hlc {
                wall_ms: 100,
                logical: 4
            }
        );
        assert_eq!(
            t.tick(100),
            Hlc {
                wall_ms: 100,
                logical: 4
            }
        );
        assert_eq!(
            t.tick(101),
            Hlc {
                wall_ms: 101,
                logical: 0
            }
        );
    }
}
