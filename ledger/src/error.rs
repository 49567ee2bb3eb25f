//! The ledger's one error type.

use crate::hash::Hash;

/// Everything that can go wrong in the ledger, named after the condition.
///
/// [`Error::is_fatal`] says whether the node must stop (storage failed or is
/// corrupt); [`Error::is_peer_fault`] whether the input was provably invalid, so
/// whoever sent it can be penalised. Everything else is a valid-looking input
/// that the current state refuses (a spent nonce, a low balance).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- decoding -----------------------------------------------------------
    /// The input ended in the middle of a value.
    #[error("input ends inside {what}")]
    UnexpectedEnd {
        /// The field being read.
        what: &'static str,
    },
    /// A value was followed by more bytes.
    #[error("{count} trailing bytes after the value")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// An enum tag no variant has.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// The enum.
        what: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// A byte that has a canonical form but was not in it.
    #[error("non-canonical {what}")]
    NonCanonical {
        /// The field.
        what: &'static str,
    },
    /// A length above the field's maximum.
    #[error("{what} has {len} items or bytes; at most {max} allowed")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length read.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Text that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },

    // --- identities and signatures -------------------------------------------
    /// A malformed chain id.
    #[error("bad chain id {0:?}: use 1 to 48 characters of a-z, 0-9 and '-'")]
    BadChainId(String),
    /// A malformed hash.
    #[error("bad hash {0:?}: expected 64 hex digits")]
    BadHash(String),
    /// A malformed address.
    #[error("bad address {input:?}: {why}")]
    BadAddress {
        /// What was given.
        input: String,
        /// What is wrong.
        why: String,
    },
    /// 32 bytes that are not an ed25519 point.
    #[error("the public key is not a valid ed25519 point")]
    InvalidPublicKey,
    /// An ed25519 point of small order, which anyone can sign for.
    #[error("the public key is a weak (small-order) ed25519 point")]
    WeakPublicKey,
    /// A signature that does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),

    // --- transaction rules ---------------------------------------------------
    /// A transaction for another network.
    #[error("wrong chain: this is {expected}, the transaction is for {got}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The transaction's.
        got: String,
    },
    /// A stamp with too little work.
    #[error("stamp below required difficulty {required}: it proves {bits} bits")]
    StampTooWeak {
        /// Bits the stamp proves.
        bits: u32,
        /// Bits required.
        required: u32,
    },
    /// A nonce that is not the account's next one (a replay, or a gap).
    #[error("nonce {got} is not the account's next nonce {expected}{}", if got < expected { " (already used: a replay)" } else { "" })]
    BadNonce {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// A transaction outside its validity window.
    #[error(
        "transaction epoch {tx_epoch} is outside the window of the current epoch {current} ({window} epochs)"
    )]
    EpochOutOfWindow {
        /// The transaction's epoch.
        tx_epoch: u64,
        /// The current epoch.
        current: u64,
        /// Epochs a transaction stays valid.
        window: u64,
    },
    /// Not enough funds.
    #[error("insufficient balance: {needed} needed, {available} available")]
    InsufficientBalance {
        /// The amount.
        needed: u64,
        /// The balance.
        available: u64,
    },
    /// Arithmetic that would overflow.
    #[error("{0} would overflow")]
    Overflow(&'static str),
    /// A transfer of nothing.
    #[error("a transfer must move at least 1")]
    ZeroAmount,
    /// A write into a namespace other than the sender's.
    #[error("{sender} may not write into the namespace of {namespace}")]
    ForeignNamespace {
        /// The sender (human form).
        sender: String,
        /// The target namespace (human form).
        namespace: String,
    },
    /// A field over the chain's size limit.
    #[error("{what} is {len} bytes or items; the limit is {max}")]
    OverLimit {
        /// The field.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A `Put` or `Delete` with no operations.
    #[error("a {0} needs at least one key")]
    NoOperations(&'static str),
    /// One key twice in one transaction.
    #[error("key {key} appears twice in one transaction")]
    DuplicateKey {
        /// The key, hex.
        key: String,
    },
    /// A compare-and-set whose version did not match.
    #[error("compare-and-set failed for key {key}: expected version {expected}, found {actual}")]
    CasMismatch {
        /// The key, hex.
        key: String,
        /// The version asked for.
        expected: u64,
        /// The version found.
        actual: u64,
    },
    /// A delete of a record that does not exist.
    #[error("no record at key {key}")]
    RecordNotFound {
        /// The key, hex.
        key: String,
    },
    /// A payload whose rules have not been built yet.
    #[error("{payload} transactions are not supported yet: their rules arrive with {arrives_with}")]
    PayloadNotSupported {
        /// The payload.
        payload: &'static str,
        /// The piece of work that brings them.
        arrives_with: &'static str,
    },
    // --- proof of stake -----------------------------------------------------
    /// A staking transaction naming a key that is not a registered validator.
    #[error("{validator} is not a registered validator")]
    UnknownValidator {
        /// The key (human form).
        validator: String,
    },
    /// A second registration of one validator key.
    #[error("validator {validator} is already registered")]
    ValidatorAlreadyRegistered {
        /// The key (human form).
        validator: String,
    },
    /// An account that already operates a validator registers another.
    #[error("account {account} already operates validator {validator}; one validator per account")]
    AlreadyOperator {
        /// The account (human form).
        account: String,
        /// Its validator (human form).
        validator: String,
    },
    /// `Unjail` from an account that operates no validator.
    #[error("account {account} operates no validator")]
    NotAnOperator {
        /// The account (human form).
        account: String,
    },
    /// `Unjail` for a validator that is not in jail.
    #[error("validator {validator} is not jailed")]
    NotJailed {
        /// The key (human form).
        validator: String,
    },
    /// A validator removed for good after equivocation.
    #[error("validator {validator} is tombstoned for equivocation and can never validate again")]
    ValidatorTombstoned {
        /// The key (human form).
        validator: String,
    },
    /// An `Unstake` of more than is bonded.
    #[error("unstake of {needed}: only {bonded} is bonded to this validator")]
    InsufficientBond {
        /// The amount asked.
        needed: u64,
        /// The bond.
        bonded: u64,
    },
    /// A bounded staking list is full.
    #[error("{what} is full ({max}); try again after it drains")]
    StakingFull {
        /// The list.
        what: &'static str,
        /// Its bound.
        max: usize,
    },
    /// A `RegisterValidator` with a malformed field.
    #[error("bad validator registration: {0}")]
    BadRegistration(String),
    /// Evidence for a height further back than the chain keeps slashable.
    #[error(
        "evidence for height {height} is expired: the oldest height still slashable is {oldest}"
    )]
    EvidenceExpired {
        /// The evidence's height.
        height: u64,
        /// The oldest height accepted now.
        oldest: u64,
    },
    /// Evidence for a height the chain has not reached.
    #[error("evidence for height {height} is from the future: the chain is at {current}")]
    EvidenceFromFuture {
        /// The evidence's height.
        height: u64,
        /// The current height.
        current: u64,
    },
    /// Evidence against a validator already punished for equivocation.
    #[error("duplicate evidence: validator {validator} was already slashed and tombstoned")]
    EvidenceDuplicate {
        /// The key (human form).
        validator: String,
    },
    /// Conflicting statements of a kind that honest validators may re-sign
    /// differently (a view-change after a restart), so not slashable.
    #[error("two {kind} statements are not slashable evidence")]
    EvidenceNotSlashable {
        /// The statement kind.
        kind: &'static str,
    },
    /// A payload that needs a total order, under an engine that has none.
    #[error("{payload} needs an ordering engine (pbft or pos); this network runs gossip")]
    NeedsOrderingEngine {
        /// The payload or feature.
        payload: &'static str,
    },
    /// A transaction that failed inside a block or batch.
    #[error("transaction {index}: {source}")]
    InTransaction {
        /// Its index.
        index: usize,
        /// Why.
        source: Box<Error>,
    },

    // --- time-lock puzzles (sealed values) -----------------------------------
    /// Bytes that do not start with the sealed format's magic.
    #[error(
        "not a sealed value: {what} does not start with the sealed format's magic bytes \"PYTL\""
    )]
    NotSealedFormat {
        /// What was read (a file, a record value).
        what: &'static str,
    },
    /// A sealed value in a format version this build does not read.
    #[error("{what} is in format version {version}; this build reads version {supported}")]
    UnsupportedVersion {
        /// What was read.
        what: &'static str,
        /// The version found.
        version: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A reveal for a record that holds a plain value, or none.
    #[error("record {key} is not sealed: there is nothing to reveal")]
    NotSealed {
        /// The key, hex.
        key: String,
    },
    /// An answer of the wrong width for its puzzle.
    #[error(
        "the time-lock answer has {got} bytes; this puzzle's answers have {expected} (the modulus's width)"
    )]
    AnswerLength {
        /// The modulus's width in bytes.
        expected: usize,
        /// The answer's.
        got: usize,
    },
    /// An answer whose blake3 commitment is not the one the sealed value records.
    #[error(
        "commitment mismatch: the answer does not match the sealed value's commitment \
         (a wrong answer, or a sealed value whose modulus, base, squarings or commitment were altered)"
    )]
    CommitmentMismatch,
    /// The AEAD refused the ciphertext under the key the committed answer gives.
    #[error(
        "decryption failed (ChaCha20-Poly1305 tag mismatch): the sealed value's ciphertext, nonce \
         or header was altered, or it was sealed wrongly"
    )]
    SealedDecrypt,

    // --- blocks and batches --------------------------------------------------
    /// A block at the wrong height.
    #[error("block height {got} does not follow the tip; expected {expected}")]
    WrongHeight {
        /// The next height.
        expected: u64,
        /// The block's.
        got: u64,
    },
    /// A block that does not extend the tip.
    #[error("block parent {got} is not the tip {expected}")]
    WrongParent {
        /// The tip's hash.
        expected: Hash,
        /// The block's parent.
        got: Hash,
    },
    /// A block's timestamp before its parent's.
    #[error("block timestamp {got} is before its parent's {parent}")]
    TimestampBeforeParent {
        /// The parent's.
        parent: u64,
        /// The block's.
        got: u64,
    },
    /// A header whose transaction root does not match its transactions.
    #[error("transaction root mismatch: header says {header}, transactions give {computed}")]
    TxRootMismatch {
        /// The header's.
        header: Hash,
        /// The computed one.
        computed: Hash,
    },
    /// A header whose state root does not match the state after applying it.
    #[error("state root mismatch: header says {header}, applying gives {computed}")]
    StateRootMismatch {
        /// The header's.
        header: Hash,
        /// The computed one.
        computed: Hash,
    },
    /// A batch whose origin signature does not verify.
    #[error("bad batch signature")]
    BadBatchSignature,
    /// A batch stamped too far in the future.
    #[error("batch clock {batch_ms} ms is {} ms ahead of now ({now_ms}); at most {max_skew_ms} ms allowed", batch_ms.saturating_sub(*now_ms))]
    BatchFromFuture {
        /// The batch's clock.
        batch_ms: u64,
        /// This node's clock.
        now_ms: u64,
        /// The genesis bound.
        max_skew_ms: u64,
    },
    /// A block or batch under the wrong engine.
    #[error("this network runs {engine}; {what} belong to another engine")]
    WrongEngine {
        /// This network's engine.
        engine: &'static str,
        /// What arrived.
        what: &'static str,
    },
    /// A Merkle proof that proves nothing.
    #[error("invalid proof: {0}")]
    BadProof(String),

    // --- genesis -------------------------------------------------------------
    /// Genesis text that does not parse.
    #[error("genesis: {0}")]
    GenesisJson(String),
    /// Genesis fields with invalid values.
    #[error("genesis has {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Genesis {
        /// One line per problem: `field.path: what is wrong`.
        problems: Vec<String>,
    },

    /// A cluster's state machine refused a change for the reason given (the
    /// typed error stayed on the member that applied it).
    #[error("refused: {0}")]
    Refused(String),

    // --- storage -------------------------------------------------------------
    /// The storage engine failed. Fatal: restart and recover.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The store holds something it should not. Fatal.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// A store created for another network.
    #[error("the store belongs to chain {found}, not {expected}")]
    StoreMismatch {
        /// The genesis asked for.
        expected: String,
        /// The store's.
        found: String,
    },
}

impl Error {
    /// Whether the node must stop and recover from storage.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::Corrupt(_))
    }

    /// Whether the input was provably invalid, whatever the state: whoever sent
    /// it can be penalised. A stale nonce or a low balance is not a peer fault.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            Error::InTransaction { source, .. } => source.is_peer_fault(),
            Error::UnexpectedEnd { .. }
            | Error::TrailingBytes { .. }
            | Error::UnknownTag { .. }
            | Error::NonCanonical { .. }
            | Error::TooLong { .. }
            | Error::InvalidUtf8 { .. }
            | Error::BadChainId(_)
            | Error::InvalidPublicKey
            | Error::WeakPublicKey
            | Error::BadSignature
            | Error::BadBatchSignature
            | Error::WrongChain { .. }
            | Error::StampTooWeak { .. }
            | Error::ForeignNamespace { .. }
            | Error::OverLimit { .. }
            | Error::NoOperations(_)
            | Error::DuplicateKey { .. }
            | Error::ZeroAmount
            | Error::TxRootMismatch { .. }
            | Error::StateRootMismatch { .. }
            | Error::BatchFromFuture { .. }
            | Error::BadProof(_)
            | Error::BadRegistration(_)
            | Error::EvidenceNotSlashable { .. }
            | Error::NotSealedFormat { .. }
            | Error::UnsupportedVersion { .. } => true,
            _ => false,
        }
    }

    /// The innermost error, past `InTransaction` wrappers.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::InTransaction { source, .. } => source.root_cause(),
            e => e,
        }
    }
}
