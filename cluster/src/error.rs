//! The crate's one error type.

use crate::types::NodeId;

/// What can go wrong in a cluster member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Raft log or state machine file failed: stop the member and restart
    /// it from disk.
    #[error("cluster storage: {0}")]
    Storage(String),
    /// A stored value does not decode: the file is damaged.
    #[error("cluster storage is corrupt: {0}")]
    Corrupt(String),
    /// The ledger refused or failed.
    #[error("ledger: {0}")]
    Ledger(#[from] pyralog_ledger::Error),
    /// A message or entry is larger than its cap.
    #[error("{what} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Bytes from a peer or a file do not decode.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A member could not be reached.
    #[error("member {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The cluster has no leader this member knows of (an election is under
    /// way, or this member is cut off).
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// A request that only the leader serves reached a member that is not it,
    /// and it may not be forwarded again.
    #[error("member {me} is not the leader (the leader is {leader:?})")]
    NotLeader {
        /// This member.
        me: NodeId,
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// Raft refused or failed an operation.
    #[error("raft: {0}")]
    Raft(String),
    /// A snapshot file is not one this member can install.
    #[error("snapshot refused: {0}")]
    BadSnapshot(String),
    /// A signing-history file was refused (see [`crate::intent`]).
    #[error("signing history refused: {0}")]
    History(String),
    /// Signing was refused because it would conflict with what the cluster's
    /// key already signed.
    #[error("signing refused: {0}")]
    SigningRefused(#[from] crate::intent::Refusal),
    /// A queue is full; the caller should back off.
    #[error("{0} is full")]
    Busy(&'static str),
    /// The operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl Error {
    /// Whether this error means the member's own storage is unusable (stop
    /// and recover), as opposed to a refused request or a peer's fault.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Storage(_) | Error::Corrupt(_) => true,
            Error::Ledger(e) => e.is_fatal(),
            _ => false,
        }
    }

    /// Whether the error is the sending peer's fault (bad bytes, oversized
    /// messages).
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, Error::TooLarge { .. } | Error::Decode { .. })
    }
}

macro_rules! storage_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}

storage_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    std::io::Error
);

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e.to_string())
    }
}
