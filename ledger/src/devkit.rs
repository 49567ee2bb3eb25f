//! Building blocks for devnets, tests and benchmarks: deterministic keys, a
//! devnet genesis, and stamped, signed transactions in one call.
//!
//! Nothing here is weaker than the real path: transactions are stamped with the
//! real solver and signed with the real keys.

use std::sync::atomic::AtomicBool;

use crate::chain::{ChainId, Engine};
use crate::genesis::{GenesisAccount, GenesisFile, GenesisValidator, Limits, Params, PowParams};
use crate::hash::{Domain, Hash};
use crate::keys::Keypair;
use crate::pow::{self, PowKey, SolveParams, Stamp};
use crate::tx::{Payload, PutOp, Transaction, TxBody};

/// A deterministic key for `seed`; for devnets and tests only.
pub fn key(seed: u64) -> Keypair {
    let h = Hash::of(Domain::DevKey, &seed.to_le_bytes());
    Keypair::from_seed(&h.0)
}

/// Devnet parameters: low stamp difficulty, fast blocks.
pub fn devnet_params(min_difficulty: u32) -> Params {
    Params {
        pow: PowParams {
            min_difficulty,
            max_difficulty: 24,
            target_mempool: 10_000,
        },
        block_time_ms: 500,
        epoch_length: 100,
        unbonding_epochs: 2,
        slash_double_sign: 0.05,
        slash_downtime: 0.001,
        downtime_window: 100,
        max_clock_skew_ms: 2_000,
        tx_validity_epochs: 2,
        bucket_bits: crate::merkle::DEFAULT_BUCKET_BITS,
        limits: Limits::default(),
        staking: crate::genesis::StakingParams::default(),
    }
}

/// A genesis for `engine` with funded `accounts` and validators from `validators`
/// (key, p2p address), each with stake 1000.
pub fn genesis_file(
    chain_id: &str,
    engine: Engine,
    params: Params,
    accounts: &[(&Keypair, u64)],
    validators: &[(&Keypair, String)],
) -> GenesisFile {
    GenesisFile {
        chain_id: chain_id.to_owned(),
        genesis_time: "2026-11-24T00:00:00Z".to_owned(),
        engine,
        params,
        accounts: accounts
            .iter()
            .map(|(k, balance)| GenesisAccount {
                address: k.address().to_human(),
                balance: *balance,
            })
            .collect(),
        validators: validators
            .iter()
            .enumerate()
            .map(|(i, (k, p2p))| GenesisValidator {
                id: format!("validator-{i}"),
                public_key: k.address().to_human(),
                stake: 1000,
                p2p: p2p.clone(),
            })
            .collect(),
        bootnodes: Vec::new(),
    }
}

/// Solves a stamp of at least `bits` for `body` on one thread.
pub fn stamp(body: &TxBody, bits: u32) -> Stamp {
    let key = PowKey::for_chain(&body.chain_id);
    let params = SolveParams {
        threads: 1,
        ..SolveParams::new(bits)
    };
    // The nonce space is 2^64; a devkit stamp is a few bits.
    pow::solve(&key, &body.id(), params, &AtomicBool::new(false), &|_| {}).unwrap_or_default()
}

/// A stamped, signed transaction.
pub fn tx(
    chain: &ChainId,
    key: &Keypair,
    nonce: u64,
    epoch: u64,
    payload: Payload,
    bits: u32,
) -> Transaction {
    let body = TxBody {
        chain_id: chain.clone(),
        sender: key.address(),
        nonce,
        epoch,
        payload,
    };
    let s = stamp(&body, bits);
    body.sign(key, s)
}

/// A `Put` of one key into the sender's own namespace.
pub fn put(key: &Keypair, k: &[u8], v: &[u8]) -> Payload {
    Payload::Put {
        namespace: key.address(),
        ops: vec![PutOp {
            key: k.to_vec(),
            value: v.to_vec(),
            if_version: None,
            sealed: false,
        }],
    }
}

/// A `Put` of one sealed value into the sender's own namespace.
pub fn put_sealed(key: &Keypair, k: &[u8], sealed: &crate::timelock::SealedValue) -> Payload {
    Payload::Put {
        namespace: key.address(),
        ops: vec![PutOp {
            key: k.to_vec(),
            value: crate::codec::Encode::to_bytes(sealed),
            if_version: None,
            sealed: true,
        }],
    }
}
