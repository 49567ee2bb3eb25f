//! What the Raft log carries ([`Command`]) and what applying it answers
//! ([`Response`]).
//!
//! A command is encoded with the ledger's canonical codec (ADR 0001): one byte
//! form, a strict decoder with a cap on every length. Transactions, blocks and
//! batches inside it keep the exact bytes that were signed. Inside openraft's
//! serde envelope a command travels as one CBOR byte string holding those
//! canonical bytes, so the envelope never re-encodes a ledger value.
//!
//! Membership changes are not a [`Command`]: openraft carries them in its own
//! `EntryPayload::Membership`, and the state machine records them (see
//! [`crate::machine`]).

use std::fmt;
use std::sync::Arc;

use pyralog_consensus::bft::Statement;
use pyralog_ledger::codec::{Decode, Encode, Reader, put_bytes, put_list, put_u64};
use pyralog_ledger::staking::BlockVotes;
use pyralog_ledger::{Address, Batch, Block, Certificate, Hash, Transaction};
use serde::{Deserialize, Serialize};

/// The largest encoded command (a block at the ledger's caps fits; anything
/// larger is refused before it reaches the log).
pub const MAX_COMMAND_BYTES: usize = 32 << 20;
/// Engine records in one [`Ordered`] command.
pub const MAX_RECORDS: usize = 1024;
/// Writes in one [`Command::Writes`].
pub const MAX_WRITES: usize = 4096;
/// Batches in one [`Command::Batches`].
pub const MAX_BATCHES: usize = 256;
/// Signers named in one [`Ordered`] command's votes.
pub const MAX_SIGNERS: usize = 4096;
/// Bytes in one engine record.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A change to the cluster's replicated state. Each variant says what
/// applying it does; applying is deterministic, so every member that applies
/// the same log reaches the same state and gives the same [`Response`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A client's write that the leader admitted (signature, stamp and rules
    /// checked). Applying it adds it to the cluster's pending writes, which
    /// survive a change of leader; it reaches the ledger with the batch or
    /// block that includes it. Answer: [`Response::Pending`].
    ///
    /// Shared, as in [`Command::Writes`]: an entry is copied for every
    /// follower it is sent to and for the state machine, and a copy of a
    /// transaction is several allocations.
    Write(Arc<Transaction>),
    /// Many clients' writes in one entry (a bulk submission), each taken as
    /// [`Command::Write`] would. Answer: [`Response::Writes`].
    Writes(Vec<Arc<Transaction>>),
    /// A gossip batch to merge: another cluster's, or this cluster's own
    /// (sealed by the leader from pending writes, which it then removes).
    /// `now_ms` is the leader's clock when it proposed the merge, so the
    /// skew check gives the same verdict on every member. Answer:
    /// [`Response::Merged`] or [`Response::Refused`].
    Batch {
        /// The batch, signed by its origin.
        batch: Batch,
        /// The leader's clock at proposal, in Unix milliseconds.
        now_ms: u64,
    },
    /// Several gossip batches merged in one ledger commit (one fsync for
    /// all), each judged on its own as [`Command::Batch`] would be. Answer:
    /// [`Response::Batches`], one outcome per batch in order.
    Batches {
        /// The batches, each signed by its origin.
        batches: Vec<Batch>,
        /// The leader's clock at proposal, in Unix milliseconds.
        now_ms: u64,
    },
    /// A finalized block, with its certificate, received whole (block sync):
    /// checked and applied with `Store::apply_block`. Answer:
    /// [`Response::Block`] or [`Response::Refused`].
    Block(Block),
    /// A PBFT slot the network committed, to execute in order
    /// (`Store::commit_ordered`). Answer: [`Response::Block`] or
    /// [`Response::Refused`]. A slot at a height the ledger already holds is
    /// answered as that block if it is the same slot (same proposer, engine
    /// data and transactions: a replay), and refused otherwise.
    Ordered(Ordered),
    /// The leader's intent to sign `statement` with the cluster's validator
    /// key (see [`crate::intent`]). Answer: [`Response::Intent`].
    Intent(Statement),
    /// One turn of the leader's engine: the intents to sign its statements
    /// and the records it persisted, in one entry (one round of the log
    /// instead of one per statement). Each intent is judged as
    /// [`Command::Intent`] would be; the records land as
    /// [`Command::EngineRecords`] would. Answer: [`Response::Turn`], or
    /// [`Response::Refused`] if the records would leave a gap.
    Turn {
        /// Where the first record goes.
        from: u64,
        /// The records.
        records: Vec<Vec<u8>>,
        /// The statements to sign.
        intents: Vec<Statement>,
    },
    /// Forget signing intents below `height` (they are final), raising the
    /// floor below which nothing may be signed. Answer: [`Response::Done`].
    PruneIntents {
        /// The new floor.
        below: u64,
    },
    /// Records the consensus engine persisted outside a block (what it
    /// prepared, its view), to land at position `from` of the ledger's
    /// engine log. A group already there is skipped, so a replay appends
    /// nothing twice; a group that would leave a gap is refused. Answer:
    /// [`Response::Done`] or [`Response::Refused`].
    EngineRecords {
        /// Where the first record goes.
        from: u64,
        /// The records.
        records: Vec<Vec<u8>>,
    },
}

/// A PBFT slot, as the engine hands it to the host once it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ordered {
    /// The height it fills (the tip's height + 1 when applied).
    pub height: u64,
    /// The primary that proposed it.
    pub proposer: Address,
    /// The proposal's timestamp.
    pub timestamp_ms: u64,
    /// The ordered transactions.
    pub txs: Vec<Transaction>,
    /// The engine's header data (view, timestamp).
    pub engine_data: Vec<u8>,
    /// The commit certificate.
    pub certificate: Certificate,
    /// Engine records persisted with the block, and lost with it if the
    /// height turns out to be filled already. The node sends none here
    /// since 2026-12-07 (its records go in a [`Command::Turn`], which says
    /// where they start); entries written before still carry some, and
    /// apply as they did.
    pub records: Vec<Vec<u8>>,
    /// Under proof of stake, the votes agreed for the block before (what
    /// rewards and downtime count); `None` under PBFT.
    pub votes: Option<BlockVotes>,
}

/// What applying a command gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry, or a command with nothing to report.
    Done,
    /// The write is committed by the cluster and waits for a batch or block.
    Pending {
        /// The transaction id.
        #[serde(with = "crate::wire::hash")]
        id: Hash,
    },
    /// A batch was merged (or had been already).
    Merged {
        /// The state root after.
        #[serde(with = "crate::wire::hash")]
        state_root: Hash,
        /// Whether it had been merged before.
        already: bool,
    },
    /// A block was applied (or had been already).
    Block {
        /// Its height.
        height: u64,
        /// The state root after.
        #[serde(with = "crate::wire::hash")]
        state_root: Hash,
        /// Transactions kept in the block without effect, with the reason.
        failed: Vec<Failed>,
    },
    /// A signing intent was recorded, or refused because it conflicts with
    /// one already committed.
    Intent(#[serde(with = "crate::wire::intent_answer")] Result<(), crate::intent::Refusal>),
    /// What each batch of a [`Command::Batches`] came to, in order.
    Batches(Vec<BatchOutcome>),
    /// Per write of a [`Command::Writes`], in order: `None` if it is
    /// pending, else why it was refused.
    Writes(Vec<Option<String>>),
    /// Per intent of a [`Command::Turn`], in order: `None` if the key may
    /// sign it, else why not (it conflicts with what was signed before).
    Turn(Vec<Option<String>>),
    /// The command was refused by the ledger's rules; nothing changed. Every
    /// member refuses it the same way.
    Refused {
        /// Why.
        reason: String,
    },
}

/// What one batch of a [`Command::Batches`] came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOutcome {
    /// Merged now; the state root after it.
    Merged(#[serde(with = "crate::wire::hash")] Hash),
    /// Merged before.
    Already,
    /// Refused by the ledger's rules.
    Refused {
        /// Why.
        reason: String,
        /// Whether the batch was provably invalid (its sender is to blame).
        peer_fault: bool,
    },
}

/// A transaction that a block kept without effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    /// Its id.
    #[serde(with = "crate::wire::hash")]
    pub id: Hash,
    /// Why it had no effect.
    pub reason: String,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write(tx) => write!(f, "write {}", tx.id()),
            Command::Batch { batch, .. } => write!(f, "batch {}#{}", batch.origin, batch.seq),
            Command::Batches { batches, .. } => write!(f, "{} batches", batches.len()),
            Command::Writes(txs) => write!(f, "{} writes", txs.len()),
            Command::Turn {
                records, intents, ..
            } => write!(
                f,
                "turn: {} records, {} intents",
                records.len(),
                intents.len()
            ),
            Command::Block(b) => write!(f, "block {}", b.header.height),
            Command::Ordered(o) => write!(f, "ordered {}", o.height),
            Command::Intent(s) => write!(
                f,
                "intent {} h{} r{} {}",
                s.kind.name(),
                s.height,
                s.round,
                s.digest
            ),
            Command::PruneIntents { below } => write!(f, "prune intents below {below}"),
            Command::EngineRecords { from, records } => {
                write!(f, "{} engine records at {from}", records.len())
            }
        }
    }
}

impl Encode for Ordered {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.height);
        self.proposer.encode(out);
        put_u64(out, self.timestamp_ms);
        put_list(out, &self.txs);
        put_bytes(out, &self.engine_data);
        self.certificate.encode(out);
        pyralog_ledger::codec::put_len(out, self.records.len());
        for r in &self.records {
            put_bytes(out, r);
        }
        match &self.votes {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_u64(out, v.height);
                put_list(out, &v.signers);
            }
        }
    }
}

impl Decode for Ordered {
    const MIN_SIZE: usize = 8 + 32 + 8 + 4 + 4 + 12 + 4 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, pyralog_ledger::Error> {
        let height = r.u64("height")?;
        let proposer = Address::decode(r)?;
        let timestamp_ms = r.u64("timestamp")?;
        let txs = r.list(pyralog_ledger::block::caps::TXS, "ordered txs")?;
        let engine_data = r
            .bytes(pyralog_ledger::block::caps::ENGINE_DATA, "engine data")?
            .to_vec();
        let certificate = Certificate::decode(r)?;
        let n = r.len(MAX_RECORDS, 4, "engine records")?;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            records.push(r.bytes(MAX_RECORD_BYTES, "engine record")?.to_vec());
        }
        let votes = if r.bool("votes flag")? {
            Some(BlockVotes {
                height: r.u64("votes height")?,
                signers: r.list(MAX_SIGNERS, "vote signers")?,
            })
        } else {
            None
        };
        Ok(Ordered {
            height,
            proposer,
            timestamp_ms,
            txs,
            engine_data,
            certificate,
            records,
            votes,
        })
    }
}

impl Encode for Command {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Command::Write(tx) => {
                out.push(0);
                tx.encode(out);
            }
            Command::Batch { batch, now_ms } => {
                out.push(1);
                batch.encode(out);
                put_u64(out, *now_ms);
            }
            Command::Block(block) => {
                out.push(2);
                block.encode(out);
            }
            Command::Ordered(o) => {
                out.push(3);
                o.encode(out);
            }
            Command::Intent(s) => {
                out.push(4);
                s.encode(out);
            }
            Command::PruneIntents { below } => {
                out.push(5);
                put_u64(out, *below);
            }
            Command::Writes(txs) => {
                out.push(8);
                put_list(out, txs);
            }
            Command::Turn {
                from,
                records,
                intents,
            } => {
                out.push(9);
                put_records(out, *from, records);
                put_list(out, intents);
            }
            Command::Batches { batches, now_ms } => {
                out.push(7);
                put_list(out, batches);
                put_u64(out, *now_ms);
            }
            Command::EngineRecords { from, records } => {
                out.push(6);
                put_records(out, *from, records);
            }
        }
    }
}

/// Engine records at a position, as `Turn` and `EngineRecords` carry them:
/// the position, then the records as a list of byte strings.
fn put_records(out: &mut Vec<u8>, from: u64, records: &[Vec<u8>]) {
    put_u64(out, from);
    pyralog_ledger::codec::put_len(out, records.len());
    for r in records {
        put_bytes(out, r);
    }
}

/// Reads what [`put_records`] wrote.
fn read_records(r: &mut Reader<'_>) -> Result<(u64, Vec<Vec<u8>>), pyralog_ledger::Error> {
    let from = r.u64("from")?;
    let n = r.len(MAX_RECORDS, 4, "engine records")?;
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        records.push(r.bytes(MAX_RECORD_BYTES, "engine record")?.to_vec());
    }
    Ok((from, records))
}

impl Decode for Command {
    const MIN_SIZE: usize = 9;
    fn decode(r: &mut Reader<'_>) -> Result<Self, pyralog_ledger::Error> {
        Ok(match r.u8("command")? {
            0 => Command::Write(Arc::new(Transaction::decode(r)?)),
            1 => Command::Batch {
                batch: Batch::decode(r)?,
                now_ms: r.u64("now")?,
            },
            2 => Command::Block(Block::decode(r)?),
            8 => Command::Writes(
                r.list::<Transaction>(MAX_WRITES, "writes")?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            ),
            9 => {
                let (from, records) = read_records(r)?;
                Command::Turn {
                    from,
                    records,
                    intents: r.list(MAX_RECORDS, "intents")?,
                }
            }
            7 => Command::Batches {
                batches: r.list(MAX_BATCHES, "batches")?,
                now_ms: r.u64("now")?,
            },
            3 => Command::Ordered(Ordered::decode(r)?),
            4 => Command::Intent(Statement::decode(r)?),
            5 => Command::PruneIntents {
                below: r.u64("below")?,
            },
            6 => {
                let (from, records) = read_records(r)?;
                Command::EngineRecords { from, records }
            }
            tag => {
                return Err(pyralog_ledger::Error::UnknownTag {
                    what: "command",
                    tag,
                });
            }
        })
    }
}

impl Command {
    /// The canonical bytes, refused above [`MAX_COMMAND_BYTES`].
    pub fn to_checked_bytes(&self) -> Result<Vec<u8>, crate::Error> {
        // Room for one write's bytes at once; larger commands grow from it.
        let mut bytes = Vec::with_capacity(512);
        self.encode(&mut bytes);
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(crate::Error::TooLarge {
                what: "command",
                size: bytes.len(),
                max: MAX_COMMAND_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Decodes canonical bytes, refusing more than [`MAX_COMMAND_BYTES`].
    pub fn from_checked_bytes(bytes: &[u8]) -> Result<Command, crate::Error> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(crate::Error::TooLarge {
                what: "command",
                size: bytes.len(),
                max: MAX_COMMAND_BYTES,
            });
        }
        Command::from_bytes(bytes).map_err(|e| crate::Error::Decode {
            what: "command",
            reason: e.to_string(),
        })
    }
}

impl Serialize for Command {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = self.to_checked_bytes().map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command's canonical bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Command, E> {
                Command::from_checked_bytes(v).map_err(E::custom)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Command, E> {
                self.visit_bytes(&v)
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyralog_consensus::bft::Kind;

    fn intent() -> Command {
        Command::Intent(Statement {
            kind: Kind::Prepare,
            round: 2,
            height: 7,
            digest: Hash([9; 32]),
        })
    }

    fn write_tx(n: u64) -> Transaction {
        let key = pyralog_ledger::devkit::key(n);
        let chain: pyralog_ledger::ChainId = "command-test".parse().expect("chain");
        pyralog_ledger::devkit::tx(
            &chain,
            &key,
            0,
            0,
            pyralog_ledger::devkit::put(&key, b"k", b"v"),
            0,
        )
    }

    #[test]
    fn round_trips_through_the_envelope() {
        for c in [
            intent(),
            Command::PruneIntents { below: 5 },
            Command::EngineRecords {
                from: 3,
                records: vec![vec![1, 2], Vec::new()],
            },
            Command::Writes(vec![Arc::new(write_tx(1)), Arc::new(write_tx(2))]),
            Command::Write(Arc::new(write_tx(3))),
            Command::Turn {
                from: 4,
                records: vec![vec![3]],
                intents: vec![match intent() {
                    Command::Intent(s) => s,
                    _ => unreachable!("intent() is an intent"),
                }],
            },
            Command::Batches {
                batches: Vec::new(),
                now_ms: 9,
            },
        ] {
            let bytes = crate::wire::encode("command", &c, 1 << 20).expect("encode");
            let back: Command = crate::wire::decode("command", &bytes, 1 << 20).expect("decode");
            assert_eq!(back, c);
            assert_eq!(Command::from_bytes(&c.to_bytes()).expect("canonical"), c);
        }
    }

    #[test]
    fn intent_answers_round_trip_through_the_envelope() {
        use crate::intent::Refusal;
        for r in [
            Response::Intent(Ok(())),
            Response::Intent(Err(Refusal::Conflict {
                kind: "prepare".into(),
                height: 7,
                round: 2,
                committed: Hash([1; 32]).to_hex(),
                requested: Hash([2; 32]).to_hex(),
            })),
            Response::Intent(Err(Refusal::BelowFloor {
                height: 3,
                floor: 5,
            })),
            Response::Intent(Err(Refusal::Full(9))),
        ] {
            let bytes = crate::wire::encode("response", &r, 1 << 20).expect("encode");
            let back: Response = crate::wire::decode("response", &bytes, 1 << 20).expect("decode");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn a_large_command_crosses_the_envelope() {
        // Larger than the decoder's scratch buffer, so it arrives in pieces.
        let c = Command::Ordered(Ordered {
            height: 1,
            proposer: pyralog_ledger::devkit::key(1).address(),
            timestamp_ms: 5,
            txs: Vec::new(),
            engine_data: vec![1; 100],
            certificate: Certificate {
                round: 0,
                votes: Vec::new(),
            },
            records: vec![vec![7; 100_000]],
            votes: Some(BlockVotes {
                height: 0,
                signers: vec![pyralog_ledger::devkit::key(2).address()],
            }),
        });
        let bytes = crate::wire::encode("command", &c, 1 << 20).expect("encode");
        let back: Command = crate::wire::decode("command", &bytes, 1 << 20).expect("decode");
        assert_eq!(back, c);
    }

    #[test]
    fn refuses_unknown_tag_and_trailing_bytes() {
        let mut bytes = intent().to_bytes();
        bytes[0] = 42;
        assert!(matches!(
            Command::from_checked_bytes(&bytes),
            Err(crate::Error::Decode { .. })
        ));
        let mut bytes = intent().to_bytes();
        bytes.push(0);
        assert!(Command::from_checked_bytes(&bytes).is_err());
    }

    #[test]
    fn refuses_oversized_commands() {
        let bytes = vec![5u8; MAX_COMMAND_BYTES + 1];
        assert!(matches!(
            Command::from_checked_bytes(&bytes),
            Err(crate::Error::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_a_byte_string_longer_than_the_input() {
        // A CBOR byte string that claims 2^32 bytes but carries 3.
        let bytes = [0x5a, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let r: Result<Command, _> = crate::wire::decode("command", &bytes, 1 << 20);
        assert!(matches!(r, Err(crate::Error::Decode { .. })));
    }
}
