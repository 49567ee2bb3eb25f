//! Signing intents: the rule that keeps a cluster from double-signing.
//!
//! Before the leader signs a statement (a proposal or a vote) with the
//! cluster's validator key, it commits the statement as an *intent* through
//! Raft ([`crate::Command::Intent`]). Every member applies the same intents in
//! the same order to a [`SigningHistory`], so a member that becomes leader
//! knows everything the key may have signed, and refuses to sign a
//! statement that conflicts with one of them.
//!
//! The rule itself ([`SigningHistory`], [`Slot`], [`Verdict`], [`Refusal`])
//! is `pyralog_consensus::intent`, re-exported here: the consensus
//! simulator drives the very same code through leader failovers. What this
//! module adds is the cluster's side: the interchange file, and the
//! commands that carry an import through Raft.
//!
//! The history can be exported and imported as a JSON file in the spirit of
//! EIP-3076 (the Ethereum validator slashing-protection interchange format):
//! metadata binding it to one chain and genesis, then per validator key the
//! statements it signed, numbers as decimal strings, hashes as hex.
//!
//! Everything here is pure: no I/O, no clock.

use std::collections::BTreeMap;

use pyralog_consensus::bft::{Kind, Statement};
pub use pyralog_consensus::intent::{MAX_INTENTS, Refusal, SigningHistory, Slot, Verdict};
use pyralog_ledger::{Address, ChainId, Hash};
use serde::{Deserialize, Serialize};

/// The largest signing-history file accepted.
pub const MAX_FILE_BYTES: usize = 32 << 20;
/// The interchange format's name.
pub const FORMAT: &str = "pyralog-signing-history";
/// The interchange format's version.
pub const FORMAT_VERSION: &str = "1";

const KINDS: [Kind; 6] = [
    Kind::PrePrepare,
    Kind::Prepare,
    Kind::Commit,
    Kind::Checkpoint,
    Kind::ViewChange,
    Kind::NewView,
];

/// The extension that reads and writes a [`SigningHistory`] as an
/// interchange file.
pub trait HistoryFile {
    /// The history as an interchange file for `validator`.
    fn export(&self, validator: &Address, chain_id: &ChainId, genesis: &Hash) -> Interchange;

    /// Checks an interchange file against this history and works out what
    /// importing it means: the floor to raise to, and the statements to add.
    /// Nothing changes here; the caller commits the plan through Raft. The
    /// file is refused whole if it is for another chain, genesis or key, is
    /// malformed, contradicts itself, or contradicts this history.
    fn plan_import(
        &self,
        file: &Interchange,
        validator: &Address,
        chain_id: &ChainId,
        genesis: &Hash,
    ) -> Result<ImportPlan, crate::Error>;
}

impl HistoryFile for SigningHistory {
    fn export(&self, validator: &Address, chain_id: &ChainId, genesis: &Hash) -> Interchange {
        Interchange {
            metadata: Metadata {
                format: FORMAT.to_string(),
                interchange_format_version: FORMAT_VERSION.to_string(),
                chain_id: chain_id.to_string(),
                genesis_hash: genesis.to_hex(),
            },
            data: vec![ValidatorHistory {
                validator: validator.to_string(),
                floor: self.floor().to_string(),
                signed_statements: self
                    .iter()
                    .map(|(slot, digest)| SignedStatement {
                        kind: slot.kind.name().to_string(),
                        height: slot.height.to_string(),
                        round: slot.round.to_string(),
                        digest: digest.to_hex(),
                    })
                    .collect(),
            }],
        }
    }

    fn plan_import(
        &self,
        file: &Interchange,
        validator: &Address,
        chain_id: &ChainId,
        genesis: &Hash,
    ) -> Result<ImportPlan, crate::Error> {
        let bad = |m: String| crate::Error::History(m);
        if file.metadata.format != FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {FORMAT:?}",
                file.metadata.format
            )));
        }
        if file.metadata.interchange_format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {:?} is not supported (this node reads {FORMAT_VERSION:?})",
                file.metadata.interchange_format_version
            )));
        }
        if file.metadata.chain_id != chain_id.as_str() {
            return Err(bad(format!(
                "the file is for chain {:?}, this node is on {chain_id}",
                file.metadata.chain_id
            )));
        }
        if file.metadata.genesis_hash != genesis.to_hex() {
            return Err(bad(format!(
                "the file is for genesis {}, this node's is {genesis}",
                file.metadata.genesis_hash
            )));
        }
        let mut ours = file
            .data
            .iter()
            .filter(|v| v.validator == validator.to_string());
        let Some(entry) = ours.next() else {
            return Err(bad(format!("the file holds no history for {validator}")));
        };
        if ours.next().is_some() {
            return Err(bad(format!("the file lists {validator} twice")));
        }
        if entry.signed_statements.len() > MAX_INTENTS {
            return Err(bad(format!(
                "{} statements, more than the {MAX_INTENTS} a history holds",
                entry.signed_statements.len()
            )));
        }
        let floor = parse_u64("floor", &entry.floor)?;
        let mut seen: BTreeMap<Slot, Hash> = BTreeMap::new();
        let mut add = Vec::new();
        for (i, s) in entry.signed_statements.iter().enumerate() {
            let st = s.parse().map_err(|e| bad(format!("statement {i}: {e}")))?;
            let slot = Slot::of(&st);
            if let Some(d) = seen.insert(slot, st.digest)
                && d != st.digest
            {
                return Err(bad(format!(
                    "statement {i}: the file holds two digests for {} at height {}, round {}",
                    st.kind.name(),
                    st.height,
                    st.round
                )));
            }
            if st.height < floor.max(self.floor()) {
                // Below the floor the detail does not matter: nothing there
                // will be signed.
                continue;
            }
            match self.check(&st) {
                Ok(Verdict::New) => add.push(st),
                Ok(Verdict::Repeat) => {}
                Err(Refusal::Conflict { .. }) => {
                    return Err(bad(format!(
                        "statement {i} conflicts with this cluster's history: the key already intended another digest for {} at height {}, round {}",
                        st.kind.name(),
                        st.height,
                        st.round
                    )));
                }
                Err(e) => return Err(bad(format!("statement {i}: {e}"))),
            }
        }
        add.sort_by_key(Slot::of);
        add.dedup();
        if self.len() + add.len() > MAX_INTENTS {
            return Err(bad(format!(
                "importing would hold {} intents, more than {MAX_INTENTS}",
                self.len() + add.len()
            )));
        }
        Ok(ImportPlan {
            floor: (floor > self.floor()).then_some(floor),
            add,
        })
    }
}

/// What importing a signing-history file adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportPlan {
    /// A higher floor, if the file has one.
    pub floor: Option<u64>,
    /// Statements this history does not hold yet.
    pub add: Vec<Statement>,
}

impl ImportPlan {
    /// The commands that carry the plan through Raft.
    pub fn commands(&self) -> Vec<crate::Command> {
        let mut out = Vec::with_capacity(self.add.len() + 1);
        if let Some(f) = self.floor {
            out.push(crate::Command::PruneIntents { below: f });
        }
        out.extend(self.add.iter().copied().map(crate::Command::Intent));
        out
    }
}

/// A signing-history file (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interchange {
    /// What the file is and which chain it belongs to.
    pub metadata: Metadata,
    /// One history per validator key.
    pub data: Vec<ValidatorHistory>,
}

/// The file's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub interchange_format_version: String,
    /// The chain.
    pub chain_id: String,
    /// The genesis hash, hex.
    pub genesis_hash: String,
}

/// One key's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorHistory {
    /// The validator key (`pyr…` address).
    pub validator: String,
    /// The signing floor, a decimal string.
    pub floor: String,
    /// What it signed.
    pub signed_statements: Vec<SignedStatement>,
}

/// One signed statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedStatement {
    /// The kind's name (`pre-prepare`, `prepare`, `commit`, …).
    pub kind: String,
    /// The height, a decimal string.
    pub height: String,
    /// The round (view), a decimal string.
    pub round: String,
    /// The digest, 64 hex digits.
    pub digest: String,
}

impl SignedStatement {
    fn parse(&self) -> Result<Statement, String> {
        let kind = *KINDS
            .iter()
            .find(|k| k.name() == self.kind)
            .ok_or_else(|| format!("unknown kind {:?}", self.kind))?;
        let height = parse_u64("height", &self.height).map_err(|e| e.to_string())?;
        let round = parse_u64("round", &self.round).map_err(|e| e.to_string())?;
        let digest = Hash::from_hex(&self.digest).map_err(|_| {
            format!(
                "digest {:?} is not 64 hex digits",
                self.digest.chars().take(80).collect::<String>()
            )
        })?;
        Ok(Statement {
            kind,
            round,
            height,
            digest,
        })
    }
}

fn parse_u64(what: &str, s: &str) -> Result<u64, crate::Error> {
    // Decimal digits only: no sign, no spaces, no leading zeros but "0".
    let ok = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| crate::Error::History(format!("{what} {s:?} is not a decimal u64")))
}

impl Interchange {
    /// Parses a file's bytes, refusing more than [`MAX_FILE_BYTES`].
    pub fn from_json(bytes: &[u8]) -> Result<Interchange, crate::Error> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(crate::Error::TooLarge {
                what: "signing-history file",
                size: bytes.len(),
                max: MAX_FILE_BYTES,
            });
        }
        serde_json::from_slice(bytes)
            .map_err(|e| crate::Error::History(format!("not a signing-history file: {e}")))
    }

    /// The file's bytes (pretty JSON).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and vectors cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}
