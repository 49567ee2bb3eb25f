//! Proof of stake's rules: registering validators, bonding and unbonding
//! stake, rewards, epochs, slashing, jail and tombstones.
//!
//! Everything here is state like any other: entries under [`StateKey`]s
//! (`Staking`, `Validator`, `ValidatorState`, `Bond`, `Unbonding`, `Operator`),
//! written through the block's [`Overlay`], so they are in the Merkle root and
//! in redb with the block that changed them. Only `pos` networks run these
//! rules; under `pbft` the staking payloads stay refused.
//!
//! # The life of stake
//!
//! - `Stake` moves coins from a balance into a bond with a validator at once;
//!   the validator's voting power follows only at the next epoch boundary.
//! - `Unstake` moves bonded coins into the validator's unbonding queue. They
//!   come back to the balance when the epoch `unbonding_epochs + 1` after the
//!   current one begins; until then a slash of the validator cuts them too.
//! - At the last block of epoch `e` (height `h` with `(h + 1) % epoch_length ==
//!   0`), the set of epoch `e + 1` is fixed: registered validators that are
//!   neither jailed nor tombstoned, with at least `min_validator_stake`, the top
//!   `max_validators` by stake (ties by key). The consensus engine reads it with
//!   [`active_set`].
//!
//! # Punishment
//!
//! - Equivocation ([`Evidence`] of two conflicting signed proposals or votes)
//!   slashes `slash_double_sign` of every bond and unbonding entry of the
//!   validator, jails it and tombstones it: it never validates again, and any
//!   further evidence against it is a duplicate.
//! - Downtime: over each window of `downtime_window` counted blocks, missing
//!   more than `downtime_max_missed` of them slashes `slash_downtime` and jails;
//!   `Unjail` by the validator's operator lifts it (effective at the next
//!   epoch boundary). Only blocks whose votes consensus agreed on are counted
//!   (see [`BlockVotes`]).
//!
//! Slashed coins are burned. Rewards are minted: `block_reward` per block, the
//! `proposer_share` to the proposer's operator, the rest to the operators of
//! the voters by power. All arithmetic is checked; a credit that would overflow
//! is not paid rather than wrapped.

use crate::codec::{Decode, Encode, Reader, put_u64};
use crate::error::Error;
use crate::evidence::{Evidence, Kind};
use crate::genesis::{Genesis, ppm};
use crate::keys::Address;
use crate::machine::{BlockContext, Overlay, Rules};
use crate::state::{Account, StateKey, ValidatorInfo};
use crate::tx::{Payload, caps};

/// The most validators in one epoch's set (the consensus core's bound).
pub const MAX_ACTIVE: usize = 1024;
/// The most registered validators.
pub const MAX_REGISTERED: usize = 4096;
/// The most accounts with a bond to one validator.
pub const MAX_DELEGATORS: usize = 256;
/// The most entries in one validator's unbonding queue.
pub const MAX_UNBONDING: usize = 256;
/// The longest moniker, in bytes.
pub const MAX_MONIKER: usize = 64;

const PPM: u128 = 1_000_000;

/// One validator of an epoch's set and its voting power (its stake when the
/// set was fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Power {
    /// The validator's key.
    pub validator: Address,
    /// Its voting power.
    pub power: u64,
}

/// The chain-wide staking entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StakingState {
    /// The current epoch.
    pub epoch: u64,
    /// Its validator set, by power (highest first), then key.
    pub active: Vec<Power>,
    /// Every registered validator, sorted by key.
    pub registered: Vec<Address>,
    /// The last height whose votes counted towards downtime.
    pub liveness_height: u64,
}

/// A validator's standing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ValidatorState {
    /// The account that registered it; receives its rewards and may unjail it.
    pub operator: Address,
    /// Out of the set until unjailed (downtime) or for good (tombstoned).
    pub jailed: bool,
    /// Punished for equivocation: never in a set again.
    pub tombstoned: bool,
    /// All stake slashed from it so far.
    pub slashed: u64,
    /// Blocks counted in the current downtime window.
    pub window_blocks: u64,
    /// Of those, the ones it did not vote for.
    pub window_missed: u64,
    /// Accounts with a bond to it, sorted.
    pub delegators: Vec<Address>,
}

/// One entry of an unbonding queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnbondEntry {
    /// Whose coins.
    pub delegator: Address,
    /// How many (after any slash).
    pub amount: u64,
    /// The epoch at whose start they return to the balance.
    pub release_epoch: u64,
}

/// A validator's unbonding queue, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Unbonding {
    /// The entries.
    pub entries: Vec<UnbondEntry>,
}

/// Who voted for a block, as consensus agreed on it. Every replica must pass
/// the same list for the same block: the `pos` engine carries it inside a
/// later proposal (`pbft::LastCommit`); a replica's own commit certificate is
/// not agreed (any quorum will do) and must not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockVotes {
    /// The height voted for.
    pub height: u64,
    /// The validators whose votes are in the agreed certificate.
    pub signers: Vec<Address>,
}

/// Where a validator stands, for queries (`GET /validators`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// In the current epoch's set.
    Active,
    /// Registered, not in the current set.
    Inactive,
    /// Jailed for downtime.
    Jailed,
    /// Tombstoned for equivocation.
    Tombstoned,
}

impl Status {
    /// The name users see.
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Jailed => "jailed",
            Status::Tombstoned => "tombstoned",
        }
    }
}

/// One validator as a query shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSummary {
    /// Registration and bonded stake.
    pub info: ValidatorInfo,
    /// Standing.
    pub state: ValidatorState,
    /// Voting power in the current epoch (0 outside the set).
    pub power: u64,
    /// Status.
    pub status: Status,
}

// ---- encodings ----

impl Encode for Power {
    fn encode(&self, out: &mut Vec<u8>) {
        self.validator.encode(out);
        put_u64(out, self.power);
    }
}

impl Decode for Power {
    const MIN_SIZE: usize = 40;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Power {
            validator: Address::decode(r)?,
            power: r.u64("power")?,
        })
    }
}

impl Encode for StakingState {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.epoch);
        crate::codec::put_list(out, &self.active);
        crate::codec::put_list(out, &self.registered);
        put_u64(out, self.liveness_height);
    }
}

impl Decode for StakingState {
    const MIN_SIZE: usize = 8 + 4 + 4 + 8;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(StakingState {
            epoch: r.u64("epoch")?,
            active: r.list(MAX_ACTIVE, "validator set")?,
            registered: r.list(MAX_REGISTERED, "registered validators")?,
            liveness_height: r.u64("liveness height")?,
        })
    }
}

impl Encode for ValidatorState {
    fn encode(&self, out: &mut Vec<u8>) {
        self.operator.encode(out);
        out.push(u8::from(self.jailed) | (u8::from(self.tombstoned) << 1));
        put_u64(out, self.slashed);
        put_u64(out, self.window_blocks);
        put_u64(out, self.window_missed);
        crate::codec::put_list(out, &self.delegators);
    }
}

impl Decode for ValidatorState {
    const MIN_SIZE: usize = 32 + 1 + 24 + 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let operator = Address::decode(r)?;
        let flags = r.u8("validator flags")?;
        if flags & !3 != 0 {
            return Err(Error::NonCanonical {
                what: "validator flags",
            });
        }
        Ok(ValidatorState {
            operator,
            jailed: flags & 1 != 0,
            tombstoned: flags & 2 != 0,
            slashed: r.u64("slashed")?,
            window_blocks: r.u64("window blocks")?,
            window_missed: r.u64("window missed")?,
            delegators: r.list(MAX_DELEGATORS, "delegators")?,
        })
    }
}

impl Encode for UnbondEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        self.delegator.encode(out);
        put_u64(out, self.amount);
        put_u64(out, self.release_epoch);
    }
}

impl Decode for UnbondEntry {
    const MIN_SIZE: usize = 48;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(UnbondEntry {
            delegator: Address::decode(r)?,
            amount: r.u64("amount")?,
            release_epoch: r.u64("release epoch")?,
        })
    }
}

impl Encode for Unbonding {
    fn encode(&self, out: &mut Vec<u8>) {
        crate::codec::put_list(out, &self.entries);
    }
}

impl Decode for Unbonding {
    const MIN_SIZE: usize = 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Unbonding {
            entries: r.list(MAX_UNBONDING, "unbonding entries")?,
        })
    }
}

/// A `u64` amount stored on its own (bonds).
struct Amount(u64);

impl Encode for Amount {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.0);
    }
}

impl Decode for Amount {
    const MIN_SIZE: usize = 8;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Amount(r.u64("amount")?))
    }
}

// ---- reading and writing through the overlay ----

fn get<T: Decode>(o: &Overlay<'_>, key: &StateKey, what: &str) -> Result<Option<T>, Error> {
    match o.raw(key)? {
        Some(bytes) => T::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("stored {what} does not decode: {e}"))),
        None => Ok(None),
    }
}

fn put<T: Encode>(o: &mut Overlay<'_>, key: StateKey, value: &T) {
    o.set_raw(key, value.to_bytes());
}

/// The chain-wide staking entry (empty before a `pos` genesis wrote it).
pub fn staking_state(o: &Overlay<'_>) -> Result<StakingState, Error> {
    Ok(get(o, &StateKey::Staking, "staking state")?.unwrap_or_default())
}

fn info(o: &Overlay<'_>, v: &Address) -> Result<ValidatorInfo, Error> {
    get(o, &StateKey::Validator(*v), "validator")?.ok_or_else(|| Error::UnknownValidator {
        validator: v.to_human(),
    })
}

fn standing(o: &Overlay<'_>, v: &Address) -> Result<ValidatorState, Error> {
    get(o, &StateKey::ValidatorState(*v), "validator state")?.ok_or_else(|| {
        Error::UnknownValidator {
            validator: v.to_human(),
        }
    })
}

/// What `delegator` has bonded to `validator`.
pub fn bond_of(o: &Overlay<'_>, delegator: &Address, validator: &Address) -> Result<u64, Error> {
    bond(o, delegator, validator)
}

/// A validator's unbonding queue (empty if it has none).
pub fn unbonding_of(o: &Overlay<'_>, validator: &Address) -> Result<Unbonding, Error> {
    unbonding(o, validator)
}

fn bond(o: &Overlay<'_>, delegator: &Address, validator: &Address) -> Result<u64, Error> {
    let key = StateKey::Bond {
        delegator: *delegator,
        validator: *validator,
    };
    Ok(get::<Amount>(o, &key, "bond")?.map_or(0, |a| a.0))
}

fn set_bond(o: &mut Overlay<'_>, delegator: Address, validator: Address, amount: u64) {
    put(
        o,
        StateKey::Bond {
            delegator,
            validator,
        },
        &Amount(amount),
    );
}

fn unbonding(o: &Overlay<'_>, v: &Address) -> Result<Unbonding, Error> {
    Ok(get(o, &StateKey::Unbonding(*v), "unbonding queue")?.unwrap_or_default())
}

/// The validator set of the current epoch, by power then key: what the
/// consensus engine votes with.
pub fn active_set(o: &Overlay<'_>) -> Result<Vec<Power>, Error> {
    Ok(staking_state(o)?.active)
}

/// Every registered validator with its standing, in key order.
pub fn summaries(o: &Overlay<'_>) -> Result<Vec<ValidatorSummary>, Error> {
    let st = staking_state(o)?;
    let mut out = Vec::with_capacity(st.registered.len());
    for v in &st.registered {
        let info = info(o, v)?;
        let state = standing(o, v)?;
        let power = st
            .active
            .iter()
            .find(|p| p.validator == *v)
            .map_or(0, |p| p.power);
        let status = if state.tombstoned {
            Status::Tombstoned
        } else if state.jailed {
            Status::Jailed
        } else if power > 0 {
            Status::Active
        } else {
            Status::Inactive
        };
        out.push(ValidatorSummary {
            info,
            state,
            power,
            status,
        });
    }
    Ok(out)
}

/// `amount × share` in parts per million, rounded up so that a nonzero share
/// of a nonzero amount always costs something, and never above `amount`.
fn cut(amount: u64, share_ppm: u32) -> u64 {
    let c = (u128::from(amount) * u128::from(share_ppm)).div_ceil(PPM);
    u64::try_from(c).unwrap_or(amount).min(amount)
}

// ---- genesis ----

/// The staking entries of a `pos` genesis: each genesis validator bonded to
/// itself (its key is its own operator), and the set of epoch 0.
pub(crate) fn genesis_writes(g: &Genesis, o: &mut Overlay<'_>) -> Result<(), Error> {
    let mut registered = Vec::with_capacity(g.validators.len());
    for v in &g.validators {
        let key = v.public_key;
        set_bond(o, key, key, v.stake);
        put(
            o,
            StateKey::ValidatorState(key),
            &ValidatorState {
                operator: key,
                delegators: vec![key],
                ..ValidatorState::default()
            },
        );
        put(o, StateKey::Operator(key), &key);
        registered.push(key);
    }
    registered.sort_unstable();
    let mut st = StakingState {
        epoch: 0,
        active: Vec::new(),
        registered,
        liveness_height: 0,
    };
    st.active = select(g, o, &st)?;
    put(o, StateKey::Staking, &st);
    Ok(())
}

/// The top `max_validators` eligible validators by stake (ties by key).
fn select(g: &Genesis, o: &Overlay<'_>, st: &StakingState) -> Result<Vec<Power>, Error> {
    let p = &g.params.staking;
    let mut eligible = Vec::new();
    for v in &st.registered {
        let s = standing(o, v)?;
        let stake = info(o, v)?.stake;
        if !s.jailed && !s.tombstoned && stake >= p.min_validator_stake {
            eligible.push(Power {
                validator: *v,
                power: stake,
            });
        }
    }
    eligible.sort_unstable_by(|a, b| b.power.cmp(&a.power).then(a.validator.cmp(&b.validator)));
    let k = usize::try_from(p.max_validators)
        .unwrap_or(MAX_ACTIVE)
        .min(MAX_ACTIVE);
    eligible.truncate(k);
    Ok(eligible)
}

// ---- transactions ----

/// Executes a staking payload of `sender` (whose account, nonce already
/// advanced, is `account`). Checks everything before writing anything.
pub(crate) fn execute(
    rules: &Rules,
    o: &mut Overlay<'_>,
    ctx: &BlockContext,
    sender: Address,
    mut account: Account,
    payload: &Payload,
) -> Result<(), Error> {
    let g = rules.genesis();
    match payload {
        Payload::RegisterValidator {
            validator_key,
            p2p,
            moniker,
        } => {
            validator_key
                .point()
                .map_err(|e| Error::BadRegistration(format!("validator key: {e}")))?;
            if !p2p.starts_with('/') || p2p.len() > caps::SHORT {
                return Err(Error::BadRegistration(format!(
                    "{p2p:?} is not a multiaddress such as /ip4/127.0.0.1/tcp/26656"
                )));
            }
            if moniker.is_empty()
                || moniker.len() > MAX_MONIKER
                || moniker.chars().any(char::is_control)
            {
                return Err(Error::BadRegistration(format!(
                    "the moniker must be 1 to {MAX_MONIKER} bytes without control characters"
                )));
            }
            if get::<ValidatorInfo>(o, &StateKey::Validator(*validator_key), "validator")?.is_some()
            {
                return Err(Error::ValidatorAlreadyRegistered {
                    validator: validator_key.to_human(),
                });
            }
            if let Some(v) = get::<Address>(o, &StateKey::Operator(sender), "operator")? {
                return Err(Error::AlreadyOperator {
                    account: sender.to_human(),
                    validator: v.to_human(),
                });
            }
            let mut st = staking_state(o)?;
            if st.registered.len() >= MAX_REGISTERED {
                return Err(Error::StakingFull {
                    what: "the validator registry",
                    max: MAX_REGISTERED,
                });
            }
            let at = st
                .registered
                .binary_search(validator_key)
                .unwrap_or_else(|i| i);
            st.registered.insert(at, *validator_key);
            put(
                o,
                StateKey::Validator(*validator_key),
                &ValidatorInfo {
                    id: moniker.clone(),
                    public_key: *validator_key,
                    stake: 0,
                    p2p: p2p.clone(),
                },
            );
            put(
                o,
                StateKey::ValidatorState(*validator_key),
                &ValidatorState {
                    operator: sender,
                    ..ValidatorState::default()
                },
            );
            put(o, StateKey::Operator(sender), validator_key);
            put(o, StateKey::Staking, &st);
            o.set_account(sender, account);
        }
        Payload::Stake { validator, amount } => {
            if *amount == 0 {
                return Err(Error::ZeroAmount);
            }
            let mut vi = info(o, validator)?;
            let mut vs = standing(o, validator)?;
            if vs.tombstoned {
                return Err(Error::ValidatorTombstoned {
                    validator: validator.to_human(),
                });
            }
            account.balance =
                account
                    .balance
                    .checked_sub(*amount)
                    .ok_or(Error::InsufficientBalance {
                        needed: *amount,
                        available: account.balance,
                    })?;
            account.stake = account
                .stake
                .checked_add(*amount)
                .ok_or(Error::Overflow("account stake"))?;
            vi.stake = vi
                .stake
                .checked_add(*amount)
                .ok_or(Error::Overflow("validator stake"))?;
            let b = bond(o, &sender, validator)?
                .checked_add(*amount)
                .ok_or(Error::Overflow("bond"))?;
            if let Err(at) = vs.delegators.binary_search(&sender) {
                if vs.delegators.len() >= MAX_DELEGATORS {
                    return Err(Error::StakingFull {
                        what: "the validator's delegator list",
                        max: MAX_DELEGATORS,
                    });
                }
                vs.delegators.insert(at, sender);
            }
            set_bond(o, sender, *validator, b);
            put(o, StateKey::Validator(*validator), &vi);
            put(o, StateKey::ValidatorState(*validator), &vs);
            o.set_account(sender, account);
        }
        Payload::Unstake { validator, amount } => {
            if *amount == 0 {
                return Err(Error::ZeroAmount);
            }
            let mut vi = info(o, validator)?;
            let mut vs = standing(o, validator)?;
            let bonded = bond(o, &sender, validator)?;
            let left = bonded.checked_sub(*amount).ok_or(Error::InsufficientBond {
                needed: *amount,
                bonded,
            })?;
            let mut queue = unbonding(o, validator)?;
            if queue.entries.len() >= MAX_UNBONDING {
                return Err(Error::StakingFull {
                    what: "the validator's unbonding queue",
                    max: MAX_UNBONDING,
                });
            }
            let release_epoch = rules
                .block_epoch(ctx.height)
                .checked_add(g.params.unbonding_epochs)
                .and_then(|e| e.checked_add(1))
                .ok_or(Error::Overflow("release epoch"))?;
            // The account's and validator's totals include this bond, so they
            // are at least `amount`; saturating keeps a corrupt store from
            // panicking.
            account.stake = account.stake.saturating_sub(*amount);
            vi.stake = vi.stake.saturating_sub(*amount);
            if left == 0
                && let Ok(at) = vs.delegators.binary_search(&sender)
            {
                vs.delegators.remove(at);
            }
            queue.entries.push(UnbondEntry {
                delegator: sender,
                amount: *amount,
                release_epoch,
            });
            set_bond(o, sender, *validator, left);
            put(o, StateKey::Validator(*validator), &vi);
            put(o, StateKey::ValidatorState(*validator), &vs);
            put(o, StateKey::Unbonding(*validator), &queue);
            o.set_account(sender, account);
        }
        Payload::Unjail => {
            let validator = get::<Address>(o, &StateKey::Operator(sender), "operator")?
                .ok_or_else(|| Error::NotAnOperator {
                    account: sender.to_human(),
                })?;
            let mut vs = standing(o, &validator)?;
            if vs.tombstoned {
                return Err(Error::ValidatorTombstoned {
                    validator: validator.to_human(),
                });
            }
            if !vs.jailed {
                return Err(Error::NotJailed {
                    validator: validator.to_human(),
                });
            }
            vs.jailed = false;
            vs.window_blocks = 0;
            vs.window_missed = 0;
            put(o, StateKey::ValidatorState(validator), &vs);
            o.set_account(sender, account);
        }
        Payload::Evidence { data } => {
            let ev = Evidence::from_bytes(data)?;
            check_evidence(rules, o, ctx, &ev)?;
            let share = ppm(g.params.slash_double_sign);
            slash(o, &ev.validator, share, true)?;
            o.set_account(sender, account);
        }
        other => {
            return Err(Error::PayloadNotSupported {
                payload: other.name(),
                arrives_with: "another piece of work",
            });
        }
    }
    Ok(())
}

/// Checks equivocation evidence against the chain: conflicting statements of a
/// slashable kind, both signatures valid on this chain, from a registered
/// validator not yet tombstoned, for a height that is reached and still
/// slashable. Anything else is refused and slashes nothing.
pub fn check_evidence(
    rules: &Rules,
    o: &Overlay<'_>,
    ctx: &BlockContext,
    ev: &Evidence,
) -> Result<(), Error> {
    let g = rules.genesis();
    let kind = ev.first.kind;
    if !matches!(kind, Kind::PrePrepare | Kind::Prepare | Kind::Commit) {
        return Err(Error::EvidenceNotSlashable { kind: kind.name() });
    }
    ev.verify(&g.chain_id)?;
    let height = ev.first.height;
    if height > ctx.height {
        return Err(Error::EvidenceFromFuture {
            height,
            current: ctx.height,
        });
    }
    let oldest_epoch = rules
        .block_epoch(ctx.height)
        .saturating_sub(g.params.staking.evidence_max_age_epochs);
    let oldest = oldest_epoch.saturating_mul(g.params.epoch_length.max(1));
    if height < oldest {
        return Err(Error::EvidenceExpired { height, oldest });
    }
    let vs = standing(o, &ev.validator)?;
    if vs.tombstoned {
        return Err(Error::EvidenceDuplicate {
            validator: ev.validator.to_human(),
        });
    }
    Ok(())
}

/// Cuts `share_ppm` of every bond and unbonding entry of `validator`, burns
/// it, and jails the validator (and tombstones it for equivocation). Returns
/// the amount burned.
fn slash(
    o: &mut Overlay<'_>,
    validator: &Address,
    share_ppm: u32,
    tombstone: bool,
) -> Result<u64, Error> {
    let mut vi = info(o, validator)?;
    let mut vs = standing(o, validator)?;
    let mut total: u64 = 0;
    let mut bonded_cut: u64 = 0;
    for d in vs.delegators.clone() {
        let b = bond(o, &d, validator)?;
        let c = cut(b, share_ppm);
        if c == 0 {
            continue;
        }
        let mut acc = o.account(&d)?;
        acc.stake = acc.stake.saturating_sub(c);
        o.set_account(d, acc);
        set_bond(o, d, *validator, b - c);
        bonded_cut = bonded_cut.saturating_add(c);
    }
    total = total.saturating_add(bonded_cut);
    let mut queue = unbonding(o, validator)?;
    if !queue.entries.is_empty() {
        for e in &mut queue.entries {
            let c = cut(e.amount, share_ppm);
            e.amount -= c;
            total = total.saturating_add(c);
        }
        put(o, StateKey::Unbonding(*validator), &queue);
    }
    vi.stake = vi.stake.saturating_sub(bonded_cut);
    vs.slashed = vs.slashed.saturating_add(total);
    vs.jailed = true;
    vs.tombstoned |= tombstone;
    vs.window_blocks = 0;
    vs.window_missed = 0;
    put(o, StateKey::Validator(*validator), &vi);
    put(o, StateKey::ValidatorState(*validator), &vs);
    Ok(total)
}

// ---- the end of a block ----

/// What every `pos` block does after its transactions: rewards, downtime
/// accounting (when `votes` are given), and, at the last block of an epoch,
/// matured unbondings and the next epoch's set. Errors only if the store is
/// broken.
pub(crate) fn end_block(
    rules: &Rules,
    o: &mut Overlay<'_>,
    ctx: &BlockContext,
    votes: Option<&BlockVotes>,
) -> Result<(), Error> {
    let g = rules.genesis();
    let mut st = staking_state(o)?;
    reward(g, o, &st, ctx, votes)?;
    if let Some(v) = votes
        && v.height > st.liveness_height
        && v.height <= ctx.height
        && rules.block_epoch(v.height) == st.epoch
    {
        count_liveness(g, o, &st, &v.signers)?;
        st.liveness_height = v.height;
    }
    let length = g.params.epoch_length.max(1);
    if ctx.height.checked_add(1).is_some_and(|h| h % length == 0) {
        let next = st.epoch.saturating_add(1);
        release_unbonded(o, &st, next)?;
        let set = select(g, o, &st)?;
        // An epoch never starts without validators: if every validator was
        // jailed, the old set keeps the chain alive until some are unjailed.
        if !set.is_empty() {
            st.active = set;
        }
        st.epoch = next;
    }
    put(o, StateKey::Staking, &st);
    Ok(())
}

fn credit_operator(o: &mut Overlay<'_>, validator: &Address, amount: u64) -> Result<(), Error> {
    if amount == 0 {
        return Ok(());
    }
    let operator = standing(o, validator)?.operator;
    let mut acc = o.account(&operator)?;
    if let Some(b) = acc.balance.checked_add(amount) {
        acc.balance = b;
        o.set_account(operator, acc);
    }
    Ok(())
}

/// Mints `block_reward`: `proposer_share` to the proposer, the rest to the
/// voters by power (every validator of the set when no agreed votes are
/// given); the remainder of the division goes to the proposer. A proposer
/// outside the set earns nothing, and its part is not minted.
fn reward(
    g: &Genesis,
    o: &mut Overlay<'_>,
    st: &StakingState,
    ctx: &BlockContext,
    votes: Option<&BlockVotes>,
) -> Result<(), Error> {
    let total = g.params.staking.block_reward;
    if total == 0 || st.active.is_empty() {
        return Ok(());
    }
    let proposer_part =
        u64::try_from(u128::from(total) * u128::from(ppm(g.params.staking.proposer_share)) / PPM)
            .unwrap_or(total);
    let voters_part = total - proposer_part;
    let voters: Vec<Power> = match votes {
        Some(v) => st
            .active
            .iter()
            .filter(|p| v.signers.contains(&p.validator))
            .copied()
            .collect(),
        None => st.active.clone(),
    };
    let power: u128 = voters.iter().map(|p| u128::from(p.power)).sum();
    let mut paid: u64 = 0;
    for p in &voters {
        let share = (u128::from(voters_part) * u128::from(p.power))
            .checked_div(power)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0);
        credit_operator(o, &p.validator, share)?;
        paid = paid.saturating_add(share);
    }
    if st.active.iter().any(|p| p.validator == ctx.proposer) {
        let rest = proposer_part.saturating_add(voters_part.saturating_sub(paid));
        credit_operator(o, &ctx.proposer, rest)?;
    }
    Ok(())
}

/// One more counted block for every unjailed validator of the set; at the end
/// of a validator's window, too many misses cost `slash_downtime` and jail.
fn count_liveness(
    g: &Genesis,
    o: &mut Overlay<'_>,
    st: &StakingState,
    signers: &[Address],
) -> Result<(), Error> {
    let window = g.params.downtime_window.max(1);
    let allowed = u128::from(ppm(g.params.staking.downtime_max_missed)) * u128::from(window);
    for p in &st.active {
        let mut vs = standing(o, &p.validator)?;
        if vs.jailed || vs.tombstoned {
            continue;
        }
        vs.window_blocks = vs.window_blocks.saturating_add(1);
        if !signers.contains(&p.validator) {
            vs.window_missed = vs.window_missed.saturating_add(1);
        }
        let full = vs.window_blocks >= window;
        let down = u128::from(vs.window_missed) * PPM > allowed;
        if full {
            vs.window_blocks = 0;
            vs.window_missed = 0;
        }
        put(o, StateKey::ValidatorState(p.validator), &vs);
        if full && down {
            slash(o, &p.validator, ppm(g.params.slash_downtime), false)?;
        }
    }
    Ok(())
}

/// Returns to their balances the unbonding entries that mature at `epoch`.
fn release_unbonded(o: &mut Overlay<'_>, st: &StakingState, epoch: u64) -> Result<(), Error> {
    for v in &st.registered {
        let mut queue = unbonding(o, v)?;
        if queue.entries.is_empty() {
            continue;
        }
        let before = queue.entries.len();
        let mut kept = Vec::with_capacity(before);
        for e in queue.entries {
            if e.release_epoch > epoch {
                kept.push(e);
                continue;
            }
            let mut acc = o.account(&e.delegator)?;
            match acc.balance.checked_add(e.amount) {
                Some(b) => {
                    acc.balance = b;
                    o.set_account(e.delegator, acc);
                }
                // Never wrapped: the entry waits for a later boundary.
                None => kept.push(e),
            }
        }
        if kept.len() != before {
            queue.entries = kept;
            put(o, StateKey::Unbonding(*v), &queue);
        }
    }
    Ok(())
}
