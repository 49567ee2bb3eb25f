//! PBFT's wire: proposals, the signed messages of the three phases, checkpoints,
//! view changes and new views, their certificates, and their canonical bytes.
//!
//! Every message is one signed [`Statement`](crate::bft::Statement); the
//! statement is derived from the message, so a signature cannot be moved to a
//! message that says something else. Decoding a proposal checks its
//! transactions' signatures, so a decoded message never carries an unsigned
//! transaction.

use std::sync::Arc;

use pyralog_ledger::block::{VerifiedTx, tx_root_of_ids, verify_txs_memo};
use pyralog_ledger::codec::{Decode, Encode, Reader, put_len, put_list, put_u64};
use pyralog_ledger::hash::Domain;
use pyralog_ledger::{Address, ChainId, Error, Hash, Keypair, Signature, Transaction};

use crate::bft::{Kind, Statement, VoteSig};

/// Bounds on what one message may hold; a decoder refuses more before it
/// allocates.
pub mod caps {
    /// Transactions in one proposal.
    pub const PROPOSAL_TXS: usize = 10_000;
    /// Signatures in one certificate.
    pub const SIGS: usize = crate::bft::MAX_VALIDATORS;
    /// Prepared certificates in one view-change (the watermark window bounds it).
    pub const PREPARED: usize = 1024;
    /// View-changes in one new-view.
    pub const VIEW_CHANGES: usize = crate::bft::MAX_VALIDATORS;
    /// Bytes of one encoded message.
    pub const MESSAGE_BYTES: usize = 64 << 20;
}

/// A block's contents as the primary proposes it: ordered transactions for one
/// sequence number. The state root and parent are not part of it: blocks are
/// ordered first and executed after they commit (Castro and Liskov §4.2), so
/// proposals can be in flight for several sequence numbers at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    seq: u64,
    timestamp_ms: u64,
    proposer: Address,
    txs: Vec<VerifiedTx>,
    last_commit: Option<Arc<LastCommit>>,
    digest: Hash,
}

/// The high bit of a proposal's encoded timestamp: a [`LastCommit`] follows
/// its transactions. A proposal without one encodes exactly as before
/// `LastCommit` existed, so PBFT's bytes and digests did not change.
const HAS_LAST_COMMIT: u64 = 1 << 63;

/// The commit signatures of an earlier block that a proof-of-stake proposer
/// carries in its proposal, so every replica agrees on who voted for that
/// block (the ledger's rewards and downtime count them; see
/// `pyralog_ledger::staking::BlockVotes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastCommit {
    /// The block's height.
    pub height: u64,
    /// The view its commits were signed in.
    pub view: u64,
    /// Its proposal digest.
    pub digest: Hash,
    /// The commit signatures the proposer held, a quorum at least.
    pub commits: Vec<VoteSig>,
}

impl LastCommit {
    /// The statement the commits sign.
    pub fn statement(&self) -> Statement {
        Statement {
            kind: Kind::Commit,
            round: self.view,
            height: self.height,
            digest: self.digest,
        }
    }
}

impl Encode for LastCommit {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.height);
        put_u64(out, self.view);
        self.digest.encode(out);
        put_list(out, &self.commits);
    }
}

impl Decode for LastCommit {
    const MIN_SIZE: usize = 8 + 8 + 32 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(LastCommit {
            height: r.u64("last commit height")?,
            view: r.u64("last commit view")?,
            digest: Hash::decode(r)?,
            commits: r.list(caps::SIGS, "last commit signatures")?,
        })
    }
}

impl Proposal {
    /// A proposal; its digest is computed here.
    pub fn new(seq: u64, timestamp_ms: u64, proposer: Address, txs: Vec<VerifiedTx>) -> Proposal {
        Proposal::with_last_commit(seq, timestamp_ms, proposer, txs, None)
    }

    /// A proposal that carries an earlier block's commit signatures (proof of
    /// stake). The timestamp is capped below 2^63 (its high bit is a flag).
    pub fn with_last_commit(
        seq: u64,
        timestamp_ms: u64,
        proposer: Address,
        txs: Vec<VerifiedTx>,
        last_commit: Option<Arc<LastCommit>>,
    ) -> Proposal {
        let timestamp_ms = timestamp_ms.min(HAS_LAST_COMMIT - 1);
        let tx_root = tx_root_of_ids(txs.iter().map(VerifiedTx::id));
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(b"pbft proposal");
        put_u64(&mut out, seq);
        put_u64(&mut out, timestamp_ms);
        proposer.encode(&mut out);
        tx_root.encode(&mut out);
        if let Some(lc) = &last_commit {
            lc.encode(&mut out);
        }
        let digest = Hash::of(Domain::Consensus, &out);
        Proposal {
            seq,
            timestamp_ms,
            proposer,
            txs,
            last_commit,
            digest,
        }
    }

    /// The earlier block's commits it carries, if any.
    pub fn last_commit(&self) -> Option<&LastCommit> {
        self.last_commit.as_deref()
    }

    /// The empty proposal a new primary assigns to a sequence number no
    /// replica prepared (the paper's "null request").
    pub fn null(seq: u64, proposer: Address) -> Proposal {
        Proposal::new(seq, 0, proposer, Vec::new())
    }

    /// The sequence number (the block height).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The proposer's clock when it proposed (0 for a null proposal).
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The primary that proposed it.
    pub fn proposer(&self) -> Address {
        self.proposer
    }

    /// The transactions, in order.
    pub fn txs(&self) -> &[VerifiedTx] {
        &self.txs
    }

    /// What replicas vote on: sequence number, time, proposer and transaction root.
    pub fn digest(&self) -> Hash {
        self.digest
    }
}

impl Encode for Proposal {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_proposal(
            out,
            self.seq,
            self.timestamp_ms,
            &self.proposer,
            self.txs.iter().map(VerifiedTx::tx),
            self.last_commit(),
        );
    }
}

/// A proposal's bytes from its parts, for [`Proposal`] and for a stored block
/// served without checking its signatures again ([`committed_bytes`]).
fn encode_proposal<'a>(
    out: &mut Vec<u8>,
    seq: u64,
    timestamp_ms: u64,
    proposer: &Address,
    txs: impl ExactSizeIterator<Item = &'a Transaction>,
    last_commit: Option<&LastCommit>,
) {
    put_u64(out, seq);
    let flag = if last_commit.is_some() {
        HAS_LAST_COMMIT
    } else {
        0
    };
    put_u64(out, timestamp_ms | flag);
    proposer.encode(out);
    put_len(out, txs.len());
    for t in txs {
        t.encode(out);
    }
    if let Some(lc) = last_commit {
        lc.encode(out);
    }
}

impl Decode for Proposal {
    const MIN_SIZE: usize = 8 + 8 + 32 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let seq = r.u64("seq")?;
        let stamped = r.u64("timestamp")?;
        let proposer = Address::decode(r)?;
        let txs: Vec<Transaction> = r.list(caps::PROPOSAL_TXS, "proposal transactions")?;
        let last_commit = if stamped & HAS_LAST_COMMIT != 0 {
            Some(Arc::new(LastCommit::decode(r)?))
        } else {
            None
        };
        Ok(Proposal::with_last_commit(
            seq,
            stamped & !HAS_LAST_COMMIT,
            proposer,
            verify_txs_memo(txs, None)?,
            last_commit,
        ))
    }
}

/// Quorum of signatures on a checkpoint: the state root after `seq` is stable.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckpointCert {
    /// The sequence number; 0 is the genesis, which needs no signatures.
    pub seq: u64,
    /// The state root after it.
    pub state_root: Hash,
    /// The signatures.
    pub votes: Vec<VoteSig>,
}

impl CheckpointCert {
    /// The statement its votes sign.
    pub fn statement(&self) -> Statement {
        Statement {
            kind: Kind::Checkpoint,
            round: 0,
            height: self.seq,
            digest: self.state_root,
        }
    }
}

/// Proof that a proposal was prepared in a view: the primary's pre-prepare and
/// prepares from other replicas, together a quorum (the paper's P set entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedCert {
    /// The view.
    pub view: u64,
    /// The proposal (its seq is the sequence number).
    pub proposal: Arc<Proposal>,
    /// The primary's signature on the pre-prepare.
    pub pre_prepare: Signature,
    /// The backups' prepares.
    pub prepares: Vec<VoteSig>,
}

impl PreparedCert {
    /// The statement of the primary's pre-prepare.
    pub fn pre_prepare_statement(&self) -> Statement {
        Statement {
            kind: Kind::PrePrepare,
            round: self.view,
            height: self.proposal.seq(),
            digest: self.proposal.digest(),
        }
    }

    /// The statement the prepares sign.
    pub fn prepare_statement(&self) -> Statement {
        Statement {
            kind: Kind::Prepare,
            ..self.pre_prepare_statement()
        }
    }
}

/// A replica's request to move to `new_view`, with what it knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    /// The view it moves to.
    pub new_view: u64,
    /// Its last stable checkpoint.
    pub checkpoint: CheckpointCert,
    /// Its prepared certificates above the checkpoint, the latest per seq.
    pub prepared: Vec<PreparedCert>,
}

impl ViewChange {
    /// The hash its statement signs.
    pub fn hash(&self) -> Hash {
        let mut out = b"pbft view-change".to_vec();
        self.encode(&mut out);
        Hash::of(Domain::Consensus, &out)
    }
}

/// A view-change with its sender's signature, as carried in a new-view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedViewChange {
    /// The replica.
    pub signer: Address,
    /// Its view-change.
    pub view_change: ViewChange,
    /// Its signature.
    pub signature: Signature,
}

/// The new primary's pre-prepare for one sequence number in a new-view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reproposal {
    /// The sequence number.
    pub seq: u64,
    /// The proposal's digest (a null proposal's if none was prepared).
    pub digest: Hash,
    /// The new primary's signature on the pre-prepare for it.
    pub signature: Signature,
}

/// The new primary's announcement of its view: the quorum of view-changes that
/// justifies it and the pre-prepares computed from them (the paper's V and O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewView {
    /// The view.
    pub view: u64,
    /// The view-changes.
    pub view_changes: Vec<SignedViewChange>,
    /// The pre-prepares, by ascending seq.
    pub reproposals: Vec<Reproposal>,
}

impl NewView {
    /// The sequence number of the checkpoint the view starts from (the
    /// highest its view-changes carry): the height of its statement. Proof
    /// of stake numbers views afresh in every epoch, and an epoch's
    /// checkpoints lie in its own span, so new-views for one view number in
    /// two epochs are two slots, not a conflict.
    pub fn checkpoint_seq(&self) -> u64 {
        self.view_changes
            .iter()
            .map(|s| s.view_change.checkpoint.seq)
            .max()
            .unwrap_or(0)
    }

    /// The hash its statement signs.
    pub fn hash(&self) -> Hash {
        let mut out = b"pbft new-view".to_vec();
        self.encode(&mut out);
        Hash::of(Domain::Consensus, &out)
    }
}

/// A PBFT message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The primary assigns `proposal` to its seq in `view` (§4.2).
    PrePrepare {
        /// The view.
        view: u64,
        /// The proposal.
        proposal: Arc<Proposal>,
    },
    /// A backup accepted the pre-prepare (§4.2).
    Prepare {
        /// The view.
        view: u64,
        /// The sequence number.
        seq: u64,
        /// The proposal's digest.
        digest: Hash,
    },
    /// A replica is prepared (§4.2).
    Commit {
        /// The view.
        view: u64,
        /// The sequence number.
        seq: u64,
        /// The proposal's digest.
        digest: Hash,
    },
    /// The state root after a checkpoint's seq (§4.3).
    Checkpoint {
        /// The sequence number.
        seq: u64,
        /// The state root.
        state_root: Hash,
    },
    /// A move to a new view (§4.4).
    ViewChange(ViewChange),
    /// A new primary's view (§4.4).
    NewView(NewView),
}

impl Message {
    /// The statement a signature on this message signs.
    pub fn statement(&self) -> Statement {
        match self {
            Message::PrePrepare { view, proposal } => Statement {
                kind: Kind::PrePrepare,
                round: *view,
                height: proposal.seq(),
                digest: proposal.digest(),
            },
            Message::Prepare { view, seq, digest } => Statement {
                kind: Kind::Prepare,
                round: *view,
                height: *seq,
                digest: *digest,
            },
            Message::Commit { view, seq, digest } => Statement {
                kind: Kind::Commit,
                round: *view,
                height: *seq,
                digest: *digest,
            },
            Message::Checkpoint { seq, state_root } => Statement {
                kind: Kind::Checkpoint,
                round: 0,
                height: *seq,
                digest: *state_root,
            },
            Message::ViewChange(vc) => Statement {
                kind: Kind::ViewChange,
                round: vc.new_view,
                height: vc.checkpoint.seq,
                digest: vc.hash(),
            },
            Message::NewView(nv) => Statement {
                kind: Kind::NewView,
                round: nv.view,
                height: nv.checkpoint_seq(),
                digest: nv.hash(),
            },
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        self.statement().kind.name()
    }
}

/// A message with its sender's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The validator that sent it.
    pub signer: Address,
    /// The message.
    pub message: Message,
    /// The signature on [`Message::statement`].
    pub signature: Signature,
}

impl Signed {
    /// Signs `message` as `key`.
    pub fn sign(chain: &ChainId, key: &Keypair, message: Message) -> Signed {
        let signature = message.statement().sign(chain, key);
        Signed {
            signer: key.address(),
            message,
            signature,
        }
    }

    /// Decodes a message from the network, refusing anything over
    /// [`caps::MESSAGE_BYTES`]. Transaction signatures are checked here;
    /// statement signatures by the engine.
    pub fn decode_wire(bytes: &[u8]) -> Result<Signed, Error> {
        if bytes.len() > caps::MESSAGE_BYTES {
            return Err(Error::TooLong {
                what: "pbft message",
                len: bytes.len(),
                max: caps::MESSAGE_BYTES,
            });
        }
        Signed::from_bytes(bytes)
    }
}

/// A committed block as replicas store and serve it: the proposal, the view it
/// committed in and a quorum of commit signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBlock {
    /// The view of the commit certificate.
    pub view: u64,
    /// The proposal.
    pub proposal: Arc<Proposal>,
    /// The commit signatures.
    pub commits: Vec<VoteSig>,
}

impl CommittedBlock {
    /// The statement the commits sign.
    pub fn statement(&self) -> Statement {
        Statement {
            kind: Kind::Commit,
            round: self.view,
            height: self.proposal.seq(),
            digest: self.proposal.digest(),
        }
    }
}

// ---- canonical bytes ----

impl Encode for CheckpointCert {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.seq);
        self.state_root.encode(out);
        put_list(out, &self.votes);
    }
}

impl Decode for CheckpointCert {
    const MIN_SIZE: usize = 8 + 32 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(CheckpointCert {
            seq: r.u64("seq")?,
            state_root: Hash::decode(r)?,
            votes: r.list(caps::SIGS, "checkpoint votes")?,
        })
    }
}

impl Encode for PreparedCert {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.view);
        self.proposal.encode(out);
        self.pre_prepare.encode(out);
        put_list(out, &self.prepares);
    }
}

impl Decode for PreparedCert {
    const MIN_SIZE: usize = 8 + Proposal::MIN_SIZE + 64 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(PreparedCert {
            view: r.u64("view")?,
            proposal: Arc::new(Proposal::decode(r)?),
            pre_prepare: Signature::decode(r)?,
            prepares: r.list(caps::SIGS, "prepares")?,
        })
    }
}

impl Encode for ViewChange {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.new_view);
        self.checkpoint.encode(out);
        put_list(out, &self.prepared);
    }
}

impl Decode for ViewChange {
    const MIN_SIZE: usize = 8 + CheckpointCert::MIN_SIZE + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(ViewChange {
            new_view: r.u64("new view")?,
            checkpoint: CheckpointCert::decode(r)?,
            prepared: r.list(caps::PREPARED, "prepared certificates")?,
        })
    }
}

impl Encode for SignedViewChange {
    fn encode(&self, out: &mut Vec<u8>) {
        self.signer.encode(out);
        self.view_change.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for SignedViewChange {
    const MIN_SIZE: usize = 32 + ViewChange::MIN_SIZE + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(SignedViewChange {
            signer: Address::decode(r)?,
            view_change: ViewChange::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

impl Encode for Reproposal {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.seq);
        self.digest.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for Reproposal {
    const MIN_SIZE: usize = 8 + 32 + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Reproposal {
            seq: r.u64("seq")?,
            digest: Hash::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

impl Encode for NewView {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.view);
        put_list(out, &self.view_changes);
        put_list(out, &self.reproposals);
    }
}

impl Decode for NewView {
    const MIN_SIZE: usize = 8 + 1 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(NewView {
            view: r.u64("view")?,
            view_changes: r.list(caps::VIEW_CHANGES, "view-changes")?,
            reproposals: r.list(caps::PREPARED, "reproposals")?,
        })
    }
}

impl Encode for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::PrePrepare { view, proposal } => {
                out.push(0);
                put_u64(out, *view);
                proposal.encode(out);
            }
            Message::Prepare { view, seq, digest } => {
                out.push(1);
                put_u64(out, *view);
                put_u64(out, *seq);
                digest.encode(out);
            }
            Message::Commit { view, seq, digest } => {
                out.push(2);
                put_u64(out, *view);
                put_u64(out, *seq);
                digest.encode(out);
            }
            Message::Checkpoint { seq, state_root } => {
                out.push(3);
                put_u64(out, *seq);
                state_root.encode(out);
            }
            Message::ViewChange(vc) => {
                out.push(4);
                vc.encode(out);
            }
            Message::NewView(nv) => {
                out.push(5);
                nv.encode(out);
            }
        }
    }
}

impl Decode for Message {
    const MIN_SIZE: usize = 1 + 8 + 32;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let tag = r.u8("pbft message")?;
        Ok(match tag {
            0 => Message::PrePrepare {
                view: r.u64("view")?,
                proposal: Arc::new(Proposal::decode(r)?),
            },
            1 => Message::Prepare {
                view: r.u64("view")?,
                seq: r.u64("seq")?,
                digest: Hash::decode(r)?,
            },
            2 => Message::Commit {
                view: r.u64("view")?,
                seq: r.u64("seq")?,
                digest: Hash::decode(r)?,
            },
            3 => Message::Checkpoint {
                seq: r.u64("seq")?,
                state_root: Hash::decode(r)?,
            },
            4 => Message::ViewChange(ViewChange::decode(r)?),
            5 => Message::NewView(NewView::decode(r)?),
            tag => {
                return Err(Error::UnknownTag {
                    what: "pbft message",
                    tag,
                });
            }
        })
    }
}

impl Encode for Signed {
    fn encode(&self, out: &mut Vec<u8>) {
        self.signer.encode(out);
        self.message.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for Signed {
    const MIN_SIZE: usize = 32 + Message::MIN_SIZE + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Signed {
            signer: Address::decode(r)?,
            message: Message::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

impl Encode for CommittedBlock {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.view);
        self.proposal.encode(out);
        put_list(out, &self.commits);
    }
}

impl Decode for CommittedBlock {
    const MIN_SIZE: usize = 8 + Proposal::MIN_SIZE + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(CommittedBlock {
            view: r.u64("view")?,
            proposal: Arc::new(Proposal::decode(r)?),
            commits: r.list(caps::SIGS, "commits")?,
        })
    }
}

/// What the ledger keeps in a PBFT block header's `engine_data`: the view of the
/// commit certificate and the proposal's own timestamp (the header's may be
/// raised to the parent's), so the block can be served as a [`CommittedBlock`].
pub fn engine_data(view: u64, proposal_timestamp_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_u64(&mut out, view);
    put_u64(&mut out, proposal_timestamp_ms);
    out
}

/// [`engine_data`] for a committed block whose proposal may carry a
/// [`LastCommit`] (proof of stake): the same two numbers, then the last commit
/// if there is one, so [`committed_bytes`] can serve the block as it was.
pub fn engine_data_of(block: &CommittedBlock) -> Vec<u8> {
    let p = &block.proposal;
    let mut out = engine_data(block.view, p.timestamp_ms());
    if let Some(lc) = p.last_commit() {
        lc.encode(&mut out);
    }
    out
}

/// The bytes of the [`CommittedBlock`] a stored PBFT block stands for, without
/// checking its signatures again (the receiver checks them).
pub fn committed_bytes(block: &pyralog_ledger::Block) -> Result<Vec<u8>, Error> {
    let mut r = Reader::new(&block.header.engine_data);
    let view = r.u64("view")?;
    let timestamp_ms = r.u64("proposal timestamp")?;
    let last_commit = if r.remaining() > 0 {
        Some(LastCommit::decode(&mut r)?)
    } else {
        None
    };
    r.finish()?;
    let mut out = Vec::new();
    put_u64(&mut out, view);
    encode_proposal(
        &mut out,
        block.header.height,
        timestamp_ms,
        &block.header.proposer,
        block.txs.iter(),
        last_commit.as_ref(),
    );
    put_len(&mut out, block.certificate.votes.len());
    for v in &block.certificate.votes {
        v.validator.encode(&mut out);
        v.signature.encode(&mut out);
    }
    Ok(out)
}
