//! # pyralog-ledger
//!
//! The data of Pyralog: what a transaction, a block and a batch are, their one
//! canonical byte form, the rules that apply them, and the durable,
//! Merkle-committed store they are applied to.
//!
//! # Layout
//!
//! - [`codec`]: the canonical encoding; strict, bounded decoding.
//! - [`hash`]: blake3 with a domain per type.
//! - [`keys`]: addresses, keypairs, and the one signature rule (single and batch).
//! - [`chain`]: chain ids, engines, hybrid logical clocks.
//! - [`tx`]: transactions and their payloads.
//! - [`pow`]: hashcash stamps: verify, and solve on every core.
//! - [`block`]: blocks, gossip batches, and their verified forms.
//! - [`state`]: accounts, records (last-writer-wins registers), validators.
//! - [`machine`]: the rules, as pure functions over a read-only state view.
//! - [`merkle`]: the bucketed state tree, proofs, bucket diffs.
//! - [`store`]: redb: one write transaction per block or batch.
//! - [`timelock`]: sealed values: the format, the answer's commitment, opening.
//! - [`evidence`]: signed consensus statements and equivocation evidence.
//! - [`staking`]: proof of stake: bonds, epochs, rewards, slashing, jail.
//! - [`genesis`]: `genesis.json`, its validation and the chain parameters.
//! - [`devkit`]: deterministic keys, devnet genesis, stamped transactions.
//!
//! # Invariants
//!
//! - Nothing here opens a socket, reads a clock or spawns a task; time comes in
//!   as arguments (`now_ms`). The stamp solver's scoped threads are the one
//!   exception, and they end before `pow::solve` returns.
//! - Only [`store`] imports redb.
//! - The state machine reads through [`machine::StateView`] and writes nothing
//!   itself; the store commits its writes in one transaction or not at all.
//! - Signatures are checked before a value becomes a `Verified*`; only verified
//!   values can be applied.

pub mod block;
pub mod chain;
pub mod codec;
pub mod devkit;
pub mod error;
pub mod evidence;
pub mod genesis;
pub mod hash;
pub mod keys;
pub mod machine;
pub mod merkle;
pub mod pow;
pub mod staking;
pub mod state;
pub mod store;
pub mod timelock;
pub mod tx;

pub use block::{
    Batch, Block, Certificate, Header, VerifiedBatch, VerifiedBlock, VerifiedTx, Vote,
};
pub use chain::{ChainId, Engine, Hlc};
pub use codec::{Decode, Encode};
pub use error::Error;
pub use genesis::{Genesis, GenesisFile, Params};
pub use hash::{Domain, Hash};
pub use keys::{Address, Keypair, Signature};
pub use machine::{Rules, StateView, Tip};
pub use pow::{PowKey, Stamp};
pub use state::{Account, RecordEntry, RecordEntryRef, StateKey};
pub use store::{MergeOutcome, Segments, Snapshot, Store};
pub use tx::{Payload, PutOp, Transaction, TxBody};
