//! `genesis.json`: loading, validation, and the chain parameters.
//!
//! Loading happens in two steps. Parsing checks the shape (types, required
//! fields, no unknown fields) and names the field and line of the first problem.
//! Validation then checks the meaning and reports *every* problem it finds, one
//! line each, with the path of the field (`params.pow.min_difficulty: ...`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::chain::{ChainId, Engine};
use crate::codec::{Encode, put_bytes, put_len, put_u32, put_u64};
use crate::error::Error;
use crate::hash::{Domain, Hash};
use crate::keys::Address;
use crate::merkle::{DEFAULT_BUCKET_BITS, MAX_BUCKET_BITS};
use crate::pow::MAX_BITS;
use crate::state::ValidatorInfo;
use crate::tx::caps;

/// The most clock skew a chain may allow a gossip batch: beyond a minute, a
/// lying clock could win conflicts for too long.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// The most epochs a transaction may stay valid: the replay window.
pub const MAX_VALIDITY_EPOCHS: u64 = 16;

/// A genesis file as written on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// The network's name.
    pub chain_id: String,
    /// RFC 3339 time of the genesis, such as `2026-11-24T00:00:00Z`.
    pub genesis_time: String,
    /// `gossip`, `pbft` or `pos`.
    pub engine: Engine,
    /// Chain parameters.
    pub params: Params,
    /// Funded accounts.
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// The initial validators.
    #[serde(default)]
    pub validators: Vec<GenesisValidator>,
    /// Multiaddresses of nodes to dial first.
    #[serde(default)]
    pub bootnodes: Vec<String>,
}

/// A funded account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// The account's address (human form).
    pub address: String,
    /// Its starting balance.
    pub balance: u64,
}

/// An initial validator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// A short unique name.
    pub id: String,
    /// The cluster's validator key (address form).
    pub public_key: String,
    /// Its bonded stake.
    pub stake: u64,
    /// Its p2p multiaddress.
    pub p2p: String,
}

/// Chain parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Proof-of-work admission.
    pub pow: PowParams,
    /// The target time between blocks.
    pub block_time_ms: u64,
    /// Blocks per epoch (ordered engines); under `gossip` an epoch lasts
    /// `epoch_length × block_time_ms`.
    pub epoch_length: u64,
    /// Epochs that unbonding stake stays slashable.
    pub unbonding_epochs: u64,
    /// Share of stake slashed for double-signing, 0 to 1.
    pub slash_double_sign: f64,
    /// Share of stake slashed for downtime, 0 to 1.
    pub slash_downtime: f64,
    /// Blocks over which downtime is counted.
    pub downtime_window: u64,
    /// How far in the future a gossip batch's clock may be.
    pub max_clock_skew_ms: u64,
    /// Epochs after its own during which a transaction is valid.
    #[serde(default = "default_validity")]
    pub tx_validity_epochs: u64,
    /// Bucket bits of the state tree.
    #[serde(default = "default_bucket_bits")]
    pub bucket_bits: u32,
    /// Size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Proof of stake: the validator set's size, rewards, downtime and
    /// evidence rules (read only by `pos` networks).
    #[serde(default)]
    pub staking: StakingParams,
}

/// Proof-of-stake parameters (`params.staking`; every field has a default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StakingParams {
    /// The most validators in an epoch's set (the top K by stake).
    pub max_validators: u64,
    /// The least bonded stake that makes a validator eligible for the set.
    pub min_validator_stake: u64,
    /// Coins minted per block and paid to validators' operators.
    pub block_reward: u64,
    /// The proposer's part of the block reward, 0 to 1; the rest goes to the
    /// voters by power.
    pub proposer_share: f64,
    /// The share of a downtime window a validator may miss; missing more costs
    /// `slash_downtime` and jail.
    pub downtime_max_missed: f64,
    /// How many epochs back evidence may point; older evidence is expired. At
    /// most `unbonding_epochs`, so the stake it would slash is still bonded or
    /// unbonding.
    pub evidence_max_age_epochs: u64,
}

impl Default for StakingParams {
    fn default() -> Self {
        StakingParams {
            max_validators: 100,
            min_validator_stake: 1,
            block_reward: 10,
            proposer_share: 0.2,
            downtime_max_missed: 0.5,
            evidence_max_age_epochs: 1,
        }
    }
}

/// Proof-of-work admission parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowParams {
    /// The least difficulty any node may require, and what blocks must meet.
    pub min_difficulty: u32,
    /// The most difficulty a node may require.
    pub max_difficulty: u32,
    /// The mempool size at which required difficulty starts to rise.
    pub target_mempool: u64,
}

/// Size limits the state machine enforces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of one encoded transaction.
    pub max_tx_bytes: u64,
    /// Bytes of one record key.
    pub max_key_bytes: u64,
    /// Bytes of one record value.
    pub max_value_bytes: u64,
    /// Operations in one `Put` or `Delete`.
    pub max_ops_per_tx: u64,
    /// Transactions in one block or batch.
    pub max_txs_per_block: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tx_bytes: 64 * 1024,
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
            max_ops_per_tx: 64,
            max_txs_per_block: 20_000,
        }
    }
}

fn default_validity() -> u64 {
    2
}

fn default_bucket_bits() -> u32 {
    DEFAULT_BUCKET_BITS
}

/// A validated genesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Genesis {
    /// The network's name.
    pub chain_id: ChainId,
    /// Genesis time, Unix milliseconds.
    pub genesis_time_ms: u64,
    /// The engine.
    pub engine: Engine,
    /// Parameters, validated.
    pub params: Params,
    /// Funded accounts, in file order.
    pub accounts: Vec<(Address, u64)>,
    /// Initial validators, in file order.
    pub validators: Vec<ValidatorInfo>,
    /// Bootnodes.
    pub bootnodes: Vec<String>,
}

impl GenesisFile {
    /// Parses a genesis file's text.
    pub fn parse(text: &str) -> Result<GenesisFile, Error> {
        serde_json::from_str(text).map_err(|e| Error::GenesisJson(e.to_string()))
    }

    /// Checks every field's meaning; lists every problem found.
    pub fn validate(&self) -> Result<Genesis, Error> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, why: String| problems.push(format!("{field}: {why}"));

        let chain_id = self.chain_id.parse::<ChainId>().map_err(|e| e.to_string());
        if let Err(e) = &chain_id {
            bad("chain_id", e.clone());
        }
        let genesis_time_ms = match humantime::parse_rfc3339(&self.genesis_time) {
            Ok(t) => t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Err(e) => {
                bad(
                    "genesis_time",
                    format!("{e}: expected RFC 3339 such as 2026-11-24T00:00:00Z"),
                );
                0
            }
        };

        let p = &self.params;
        if p.pow.min_difficulty > p.pow.max_difficulty {
            bad(
                "params.pow.min_difficulty",
                format!(
                    "{} is above params.pow.max_difficulty ({})",
                    p.pow.min_difficulty, p.pow.max_difficulty
                ),
            );
        }
        if p.pow.max_difficulty > MAX_BITS {
            bad(
                "params.pow.max_difficulty",
                format!(
                    "{} is above the most a stamp can prove ({MAX_BITS})",
                    p.pow.max_difficulty
                ),
            );
        }
        if p.pow.target_mempool == 0 {
            bad("params.pow.target_mempool", "must be at least 1".into());
        }
        for (field, v) in [
            ("params.block_time_ms", p.block_time_ms),
            ("params.epoch_length", p.epoch_length),
            ("params.downtime_window", p.downtime_window),
        ] {
            if v == 0 {
                bad(field, "must be at least 1".into());
            }
        }
        for (field, v) in [
            ("params.slash_double_sign", p.slash_double_sign),
            ("params.slash_downtime", p.slash_downtime),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bad(field, format!("{v} is not a share between 0 and 1"));
            }
        }
        if p.max_clock_skew_ms > MAX_CLOCK_SKEW_MS {
            bad(
                "params.max_clock_skew_ms",
                format!(
                    "{} is above the most allowed ({MAX_CLOCK_SKEW_MS})",
                    p.max_clock_skew_ms
                ),
            );
        }
        if p.tx_validity_epochs == 0 || p.tx_validity_epochs > MAX_VALIDITY_EPOCHS {
            bad(
                "params.tx_validity_epochs",
                format!(
                    "{} is outside 1..={MAX_VALIDITY_EPOCHS}",
                    p.tx_validity_epochs
                ),
            );
        }
        if p.bucket_bits > MAX_BUCKET_BITS {
            bad(
                "params.bucket_bits",
                format!(
                    "{} is above the most allowed ({MAX_BUCKET_BITS})",
                    p.bucket_bits
                ),
            );
        }
        let l = &p.limits;
        for (field, v, cap) in [
            (
                "params.limits.max_key_bytes",
                l.max_key_bytes,
                caps::KEY as u64,
            ),
            (
                "params.limits.max_value_bytes",
                l.max_value_bytes,
                caps::VALUE as u64,
            ),
            (
                "params.limits.max_ops_per_tx",
                l.max_ops_per_tx,
                caps::OPS as u64,
            ),
            (
                "params.limits.max_tx_bytes",
                l.max_tx_bytes,
                2 * caps::VALUE as u64,
            ),
            (
                "params.limits.max_txs_per_block",
                l.max_txs_per_block,
                crate::block::caps::TXS as u64,
            ),
        ] {
            if v == 0 || v > cap {
                bad(field, format!("{v} is outside 1..={cap}"));
            }
        }

        let mut accounts = Vec::new();
        let mut seen = BTreeSet::new();
        let mut total: u64 = 0;
        for (i, a) in self.accounts.iter().enumerate() {
            match a.address.parse::<Address>() {
                Ok(addr) => {
                    if !seen.insert(addr) {
                        bad(
                            &format!("accounts[{i}].address"),
                            format!("{} is listed twice", a.address),
                        );
                    }
                    accounts.push((addr, a.balance));
                }
                Err(e) => bad(&format!("accounts[{i}].address"), e.to_string()),
            }
            match total.checked_add(a.balance) {
                Some(t) => total = t,
                None => bad(
                    &format!("accounts[{i}].balance"),
                    "the total supply overflows u64".into(),
                ),
            }
        }

        let mut validators = Vec::new();
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for (i, v) in self.validators.iter().enumerate() {
            let at = |f: &str| format!("validators[{i}].{f}");
            if v.id.is_empty() || v.id.len() > caps::SHORT {
                bad(&at("id"), "must be 1 to 256 bytes".into());
            } else if !ids.insert(v.id.clone()) {
                bad(&at("id"), format!("{:?} is used twice", v.id));
            }
            if v.stake == 0 {
                bad(&at("stake"), "must be at least 1".into());
            }
            if !v.p2p.starts_with('/') || v.p2p.len() > caps::SHORT {
                bad(
                    &at("p2p"),
                    format!(
                        "{:?} is not a multiaddress such as /ip4/127.0.0.1/tcp/26656",
                        v.p2p
                    ),
                );
            }
            match v.public_key.parse::<Address>() {
                Ok(key) => {
                    if !keys.insert(key) {
                        bad(&at("public_key"), "is used by another validator".into());
                    }
                    validators.push(ValidatorInfo {
                        id: v.id.clone(),
                        public_key: key,
                        stake: v.stake,
                        p2p: v.p2p.clone(),
                    });
                }
                Err(e) => bad(&at("public_key"), e.to_string()),
            }
        }
        if self.engine == Engine::Pbft && self.validators.len() < 4 {
            bad(
                "validators",
                format!(
                    "pbft needs at least 4 validators (3f+1 with f = 1); got {}",
                    self.validators.len()
                ),
            );
        }
        if self.engine == Engine::Pos {
            if self.validators.is_empty() {
                bad("validators", "pos needs at least one validator".into());
            }
            let s = &p.staking;
            if s.max_validators == 0 || s.max_validators > crate::staking::MAX_ACTIVE as u64 {
                bad(
                    "params.staking.max_validators",
                    format!(
                        "{} is outside 1..={}",
                        s.max_validators,
                        crate::staking::MAX_ACTIVE
                    ),
                );
            }
            if s.min_validator_stake == 0 {
                bad(
                    "params.staking.min_validator_stake",
                    "must be at least 1".into(),
                );
            }
            for (field, v) in [
                ("params.staking.proposer_share", s.proposer_share),
                ("params.staking.downtime_max_missed", s.downtime_max_missed),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    bad(field, format!("{v} is not a share between 0 and 1"));
                }
            }
            if p.unbonding_epochs == 0 {
                bad(
                    "params.unbonding_epochs",
                    "pos needs at least 1, so misbehaviour found late can still be slashed".into(),
                );
            }
            if s.evidence_max_age_epochs == 0 || s.evidence_max_age_epochs > p.unbonding_epochs {
                bad(
                    "params.staking.evidence_max_age_epochs",
                    format!(
                        "{} is outside 1..=params.unbonding_epochs ({}): older evidence could point at stake already returned",
                        s.evidence_max_age_epochs, p.unbonding_epochs
                    ),
                );
            }
            if self.validators.len() > crate::staking::MAX_REGISTERED {
                bad(
                    "validators",
                    format!(
                        "{} validators; at most {}",
                        self.validators.len(),
                        crate::staking::MAX_REGISTERED
                    ),
                );
            }
            for (i, v) in self.validators.iter().enumerate() {
                if v.stake > 0 && v.stake < s.min_validator_stake {
                    bad(
                        &format!("validators[{i}].stake"),
                        format!(
                            "{} is below params.staking.min_validator_stake ({})",
                            v.stake, s.min_validator_stake
                        ),
                    );
                }
            }
        }
        for (i, b) in self.bootnodes.iter().enumerate() {
            if !b.starts_with('/') {
                bad(
                    &format!("bootnodes[{i}]"),
                    format!("{b:?} is not a multiaddress"),
                );
            }
        }

        match chain_id {
            Ok(chain_id) if problems.is_empty() => Ok(Genesis {
                chain_id,
                genesis_time_ms,
                engine: self.engine,
                params: self.params.clone(),
                accounts,
                validators,
                bootnodes: self.bootnodes.clone(),
            }),
            _ => Err(Error::Genesis { problems }),
        }
    }
}

impl Genesis {
    /// Parses and validates genesis text.
    pub fn from_json(text: &str) -> Result<Genesis, Error> {
        GenesisFile::parse(text)?.validate()
    }

    /// Reads, parses and validates a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::GenesisJson(format!("cannot read {}: {e}", path.display())))?;
        Genesis::from_json(&text)
    }

    /// The genesis hash: of the canonical encoding of every validated field.
    /// It is the parent of block 1 and names the network's gossip topics.
    pub fn hash(&self) -> Hash {
        Hash::of(Domain::Genesis, &self.to_bytes())
    }

    /// The current epoch of a gossip network at wall time `ms`.
    pub fn gossip_epoch(&self, ms: u64) -> u64 {
        ms / self
            .params
            .epoch_length
            .saturating_mul(self.params.block_time_ms)
            .max(1)
    }
}

/// A share as parts per million, for the canonical encoding and for the
/// state machine's integer arithmetic.
pub(crate) fn ppm(share: f64) -> u32 {
    (share.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

impl Encode for Genesis {
    fn encode(&self, out: &mut Vec<u8>) {
        self.chain_id.encode(out);
        put_u64(out, self.genesis_time_ms);
        self.engine.encode(out);
        let p = &self.params;
        put_u32(out, p.pow.min_difficulty);
        put_u32(out, p.pow.max_difficulty);
        put_u64(out, p.pow.target_mempool);
        for v in [p.block_time_ms, p.epoch_length, p.unbonding_epochs] {
            put_u64(out, v);
        }
        put_u32(out, ppm(p.slash_double_sign));
        put_u32(out, ppm(p.slash_downtime));
        for v in [p.downtime_window, p.max_clock_skew_ms, p.tx_validity_epochs] {
            put_u64(out, v);
        }
        put_u32(out, p.bucket_bits);
        let l = &p.limits;
        for v in [
            l.max_tx_bytes,
            l.max_key_bytes,
            l.max_value_bytes,
            l.max_ops_per_tx,
            l.max_txs_per_block,
        ] {
            put_u64(out, v);
        }
        if self.engine == Engine::Pos {
            // Only pos reads these; other engines' genesis hashes are unchanged.
            let s = &p.staking;
            put_u64(out, s.max_validators);
            put_u64(out, s.min_validator_stake);
            put_u64(out, s.block_reward);
            put_u32(out, ppm(s.proposer_share));
            put_u32(out, ppm(s.downtime_max_missed));
            put_u64(out, s.evidence_max_age_epochs);
        }
        put_len(out, self.accounts.len());
        for (a, b) in &self.accounts {
            a.encode(out);
            put_u64(out, *b);
        }
        put_len(out, self.validators.len());
        for v in &self.validators {
            v.encode(out);
        }
        put_len(out, self.bootnodes.len());
        for b in &self.bootnodes {
            put_bytes(out, b.as_bytes());
        }
    }
}
