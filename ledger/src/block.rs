//! Blocks (ordered engines) and batches (gossip), and their verified forms.
//!
//! A [`VerifiedBlock`] or [`VerifiedBatch`] can only be made by checking every
//! signature it carries, in one batch verification; the state machine takes only
//! verified values, so no path applies an unchecked signature.

use crate::chain::{ChainId, Hlc};
use crate::codec::{Decode, Encode, Reader, put_bytes, put_len, put_list, put_u64};
use crate::error::Error;
use crate::hash::{Domain, Hash};
use crate::keys::{self, Address, Keypair, SigDomain, Signature};
use crate::merkle;
use crate::pow::Stamp;
use crate::tx::Transaction;

/// Decoder caps for blocks and batches.
pub mod caps {
    /// Transactions in one block or batch.
    pub const TXS: usize = 100_000;
    /// Votes in one certificate.
    pub const VOTES: usize = 4096;
    /// Bytes of engine-specific header data.
    pub const ENGINE_DATA: usize = 4096;
}

/// A block header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The network.
    pub chain_id: ChainId,
    /// 1 for the first block after genesis.
    pub height: u64,
    /// The previous block's hash (the genesis hash for height 1).
    pub parent: Hash,
    /// The state root after applying this block.
    pub state_root: Hash,
    /// The Merkle root of the block's transaction ids.
    pub tx_root: Hash,
    /// The validator that proposed the block.
    pub proposer: Address,
    /// The proposer's clock, in Unix milliseconds; never before the parent's.
    pub timestamp_ms: u64,
    /// Data the consensus engine attaches (round, view, …).
    pub engine_data: Vec<u8>,
}

/// One validator's signature in a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// The validator.
    pub validator: Address,
    /// Its signature, in the engine's format.
    pub signature: Signature,
}

/// The votes that finalized a block. The engine defines what was signed and
/// checks the quorum; the ledger stores it with the block.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Certificate {
    /// The round or view in which the block was finalized.
    pub round: u64,
    /// The votes.
    pub votes: Vec<Vote>,
}

/// A block: header, transactions and the certificate that finalized it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// The transactions, in order.
    pub txs: Vec<Transaction>,
    /// The finalizing votes (empty until finalized).
    pub certificate: Certificate,
}

/// A gossip batch: transactions a cluster accepted, signed by that cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The network.
    pub chain_id: ChainId,
    /// The cluster that made it (its validator key).
    pub origin: Address,
    /// The origin's sequence number for it, from 1.
    pub seq: u64,
    /// The origin's hybrid logical clock when it was sealed.
    pub hlc: Hlc,
    /// The transactions.
    pub txs: Vec<Transaction>,
    /// The origin's signature over [`Batch::header_hash`].
    pub signature: Signature,
}

impl Header {
    /// The block's hash.
    pub fn hash(&self) -> Hash {
        Hash::of(Domain::BlockHeader, &self.to_bytes())
    }
}

impl Block {
    /// The block's hash (its header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }
}

/// A batch's signed hash from its header fields (`txs` ignored) and its
/// transaction ids.
fn batch_header_hash(b: &Batch, ids: impl Iterator<Item = Hash>) -> Hash {
    let mut out = Vec::with_capacity(128);
    b.chain_id.encode(&mut out);
    b.origin.encode(&mut out);
    put_u64(&mut out, b.seq);
    b.hlc.encode(&mut out);
    tx_root_of_ids(ids).encode(&mut out);
    Hash::of(Domain::BatchHeader, &out)
}

/// The Merkle root of a list of transaction ids.
pub fn tx_root(txs: &[Transaction]) -> Hash {
    tx_root_of_ids(txs.iter().map(Transaction::id))
}

/// The Merkle root of transaction ids, in order.
pub fn tx_root_of_ids(ids: impl Iterator<Item = Hash>) -> Hash {
    let leaves: Vec<Hash> = ids.map(|id| Hash::of(Domain::TxLeaf, &id.0)).collect();
    merkle::root_of(&leaves)
}

impl Batch {
    /// The hash the origin signs: chain, origin, seq, hlc and the transaction root.
    pub fn header_hash(&self) -> Hash {
        batch_header_hash(self, self.txs.iter().map(Transaction::id))
    }

    /// Builds and signs a batch.
    pub fn seal(
        chain_id: ChainId,
        origin: &Keypair,
        seq: u64,
        hlc: Hlc,
        txs: Vec<Transaction>,
    ) -> Batch {
        let mut batch = Batch {
            chain_id,
            origin: origin.address(),
            seq,
            hlc,
            txs,
            signature: Signature([0; 64]),
        };
        batch.signature = origin.sign(SigDomain::Batch, &batch.header_hash());
        batch
    }
}

/// A transaction whose signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx {
    tx: Transaction,
    id: Hash,
    size: usize,
}

impl VerifiedTx {
    /// The transaction.
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }
    /// Its id, computed once.
    pub fn id(&self) -> Hash {
        self.id
    }
    /// Its encoded size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// Gives the transaction back.
    pub fn into_inner(self) -> Transaction {
        self.tx
    }
}

/// Checks one transaction's signature.
pub fn verify_tx(tx: Transaction) -> Result<VerifiedTx, Error> {
    let mut v = verify_txs(vec![tx]).map_err(|e| e.root_cause().clone())?;
    v.pop().ok_or(Error::BadSignature)
}

/// Checks every transaction's signature in one batch. On failure, names the
/// index of the first bad one.
pub fn verify_txs(txs: Vec<Transaction>) -> Result<Vec<VerifiedTx>, Error> {
    verify_txs_with(txs, None)
}

/// [`verify_txs`], with a cache of senders' decompressed keys.
pub fn verify_txs_with(
    txs: Vec<Transaction>,
    cache: Option<&mut keys::KeyCache>,
) -> Result<Vec<VerifiedTx>, Error> {
    verify_txs_inner(txs, cache, None)
}

/// [`verify_txs_with`], skipping the signatures this process has already
/// checked. A node meets each transaction several times (from its client or a
/// relay, then in a proposal, then perhaps in a fetched block); only the first
/// costs a signature check. The memo holds (transaction id, signature) pairs
/// that passed, so a different signature on the same body is checked afresh.
/// It changes how fast a transaction passes, never whether it does.
pub fn verify_txs_memo(
    txs: Vec<Transaction>,
    cache: Option<&mut keys::KeyCache>,
) -> Result<Vec<VerifiedTx>, Error> {
    verify_txs_inner(txs, cache, Some(&CHECKED))
}

/// Signatures checked in this process, for [`verify_txs_memo`].
static CHECKED: std::sync::LazyLock<std::sync::Mutex<keys::SigMemo>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(keys::SigMemo::new(1 << 17)));

fn verify_txs_inner(
    txs: Vec<Transaction>,
    cache: Option<&mut keys::KeyCache>,
    memo: Option<&std::sync::Mutex<keys::SigMemo>>,
) -> Result<Vec<VerifiedTx>, Error> {
    let mut items: Vec<(Hash, Address, Signature)> = Vec::with_capacity(txs.len());
    let mut sizes = Vec::with_capacity(txs.len());
    for t in &txs {
        let body = t.body.to_bytes();
        items.push((Hash::of(Domain::TxId, &body), t.body.sender, t.signature));
        sizes.push(body.len() + Stamp::MIN_SIZE + Signature::MIN_SIZE);
    }
    let unchecked: Vec<usize> = match memo {
        Some(m) => {
            let m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (0..items.len())
                .filter(|&i| !m.contains(&items[i].0, &items[i].2))
                .collect()
        }
        None => (0..items.len()).collect(),
    };
    let to_check: Vec<(Hash, Address, Signature)> = unchecked.iter().map(|&i| items[i]).collect();
    keys::verify_many_with(SigDomain::Transaction, &to_check, cache).map_err(|k| {
        Error::InTransaction {
            index: unchecked.get(k).copied().unwrap_or(k),
            source: Box::new(Error::BadSignature),
        }
    })?;
    if let Some(m) = memo {
        let mut m = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, _, sig) in &to_check {
            m.insert(*id, *sig);
        }
    }
    Ok(txs
        .into_iter()
        .zip(items)
        .zip(sizes)
        .map(|((tx, (id, _, _)), size)| VerifiedTx { tx, id, size })
        .collect())
}

/// A block whose transaction signatures have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedBlock {
    header: Header,
    txs: Vec<VerifiedTx>,
    certificate: Certificate,
}

impl VerifiedBlock {
    /// Checks every transaction signature of `block`.
    pub fn verify(block: Block) -> Result<VerifiedBlock, Error> {
        Ok(VerifiedBlock {
            header: block.header,
            txs: verify_txs(block.txs)?,
            certificate: block.certificate,
        })
    }

    /// Assembles a block from transactions already verified.
    pub fn from_parts(header: Header, txs: Vec<VerifiedTx>, certificate: Certificate) -> Self {
        VerifiedBlock {
            header,
            txs,
            certificate,
        }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The verified transactions.
    pub fn txs(&self) -> &[VerifiedTx] {
        &self.txs
    }

    /// The block's canonical bytes (the same as `to_block().to_bytes()`,
    /// without copying the transactions).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(256 + self.txs.iter().map(VerifiedTx::size).sum::<usize>());
        self.header.encode(&mut out);
        crate::codec::put_len(&mut out, self.txs.len());
        for t in &self.txs {
            t.tx.encode(&mut out);
        }
        self.certificate.encode(&mut out);
        out
    }

    /// The plain block.
    pub fn to_block(&self) -> Block {
        Block {
            header: self.header.clone(),
            txs: self.txs.iter().map(|t| t.tx.clone()).collect(),
            certificate: self.certificate.clone(),
        }
    }
}

/// A batch whose origin signature and transaction signatures have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedBatch {
    /// The batch without its transactions (they are in `txs`).
    meta: Batch,
    txs: Vec<VerifiedTx>,
    header_hash: Hash,
}

impl VerifiedBatch {
    /// Checks the origin's signature and every transaction's.
    pub fn verify(batch: Batch) -> Result<VerifiedBatch, Error> {
        VerifiedBatch::verify_with(batch, None)
    }

    /// [`VerifiedBatch::verify`], with a cache of senders' decompressed keys.
    pub fn verify_with(
        batch: Batch,
        cache: Option<&mut keys::KeyCache>,
    ) -> Result<VerifiedBatch, Error> {
        VerifiedBatch::verify_inner(batch, cache, false)
    }

    /// [`VerifiedBatch::verify_with`], skipping the transaction signatures
    /// this process has already checked ([`verify_txs_memo`]): a cluster's
    /// leader checks a batch when it arrives and again when its log applies it.
    pub fn verify_memo(
        batch: Batch,
        cache: Option<&mut keys::KeyCache>,
    ) -> Result<VerifiedBatch, Error> {
        VerifiedBatch::verify_inner(batch, cache, true)
    }

    fn verify_inner(
        mut batch: Batch,
        cache: Option<&mut keys::KeyCache>,
        memo: bool,
    ) -> Result<VerifiedBatch, Error> {
        let header_hash = batch.header_hash();
        keys::verify(
            SigDomain::Batch,
            &header_hash,
            &batch.origin,
            &batch.signature,
        )
        .map_err(|_| Error::BadBatchSignature)?;
        let txs = std::mem::take(&mut batch.txs);
        let txs = if memo {
            verify_txs_memo(txs, cache)?
        } else {
            verify_txs_with(txs, cache)?
        };
        Ok(VerifiedBatch {
            meta: batch,
            txs,
            header_hash,
        })
    }

    /// Seals transactions already verified into a batch signed by `origin`
    /// (no signature is checked again).
    pub fn seal(
        chain_id: ChainId,
        origin: &Keypair,
        seq: u64,
        hlc: Hlc,
        txs: Vec<VerifiedTx>,
    ) -> VerifiedBatch {
        let mut meta = Batch {
            chain_id,
            origin: origin.address(),
            seq,
            hlc,
            txs: Vec::new(),
            signature: Signature([0; 64]),
        };
        let header_hash = batch_header_hash(&meta, txs.iter().map(VerifiedTx::id));
        meta.signature = origin.sign(SigDomain::Batch, &header_hash);
        VerifiedBatch {
            meta,
            txs,
            header_hash,
        }
    }

    /// The chain it claims.
    pub fn chain_id(&self) -> &ChainId {
        &self.meta.chain_id
    }
    /// The cluster that made it.
    pub fn origin(&self) -> Address {
        self.meta.origin
    }
    /// The origin's sequence number.
    pub fn seq(&self) -> u64 {
        self.meta.seq
    }
    /// The origin's clock.
    pub fn hlc(&self) -> Hlc {
        self.meta.hlc
    }
    /// The verified transactions.
    pub fn txs(&self) -> &[VerifiedTx] {
        &self.txs
    }
    /// The signed header hash.
    pub fn header_hash(&self) -> Hash {
        self.header_hash
    }
    /// The plain batch.
    pub fn to_batch(&self) -> Batch {
        Batch {
            txs: self.txs.iter().map(|t| t.tx.clone()).collect(),
            ..self.meta.clone()
        }
    }
    /// The plain batch, without copying its transactions.
    pub fn into_batch(self) -> Batch {
        Batch {
            txs: self.txs.into_iter().map(|t| t.tx).collect(),
            ..self.meta
        }
    }
}

/// The bytes of its plain batch ([`VerifiedBatch::to_batch`]), written
/// without copying the transactions into one first.
impl Encode for VerifiedBatch {
    fn encode(&self, out: &mut Vec<u8>) {
        put_batch(out, &self.meta, self.txs.iter().map(|t| &t.tx));
    }
}

/// A batch's canonical bytes: `meta`'s header fields and signature around
/// `txs` (its own transactions, or a verified batch's).
fn put_batch<'a>(
    out: &mut Vec<u8>,
    meta: &Batch,
    txs: impl ExactSizeIterator<Item = &'a Transaction>,
) {
    meta.chain_id.encode(out);
    meta.origin.encode(out);
    put_u64(out, meta.seq);
    meta.hlc.encode(out);
    put_len(out, txs.len());
    for t in txs {
        t.encode(out);
    }
    meta.signature.encode(out);
}

impl Encode for Header {
    fn encode(&self, out: &mut Vec<u8>) {
        self.chain_id.encode(out);
        put_u64(out, self.height);
        self.parent.encode(out);
        self.state_root.encode(out);
        self.tx_root.encode(out);
        self.proposer.encode(out);
        put_u64(out, self.timestamp_ms);
        put_bytes(out, &self.engine_data);
    }
}

impl Decode for Header {
    const MIN_SIZE: usize = ChainId::MIN_SIZE + 8 + 32 * 4 + 8 + 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Header {
            chain_id: ChainId::decode(r)?,
            height: r.u64("height")?,
            parent: Hash::decode(r)?,
            state_root: Hash::decode(r)?,
            tx_root: Hash::decode(r)?,
            proposer: Address::decode(r)?,
            timestamp_ms: r.u64("timestamp")?,
            engine_data: r.bytes(caps::ENGINE_DATA, "engine data")?.to_vec(),
        })
    }
}

impl Encode for Vote {
    fn encode(&self, out: &mut Vec<u8>) {
        self.validator.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for Vote {
    const MIN_SIZE: usize = 96;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Vote {
            validator: Address::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

impl Encode for Certificate {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.round);
        put_list(out, &self.votes);
    }
}

impl Decode for Certificate {
    const MIN_SIZE: usize = 12;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Certificate {
            round: r.u64("round")?,
            votes: r.list(caps::VOTES, "votes")?,
        })
    }
}

impl Encode for Block {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        put_list(out, &self.txs);
        self.certificate.encode(out);
    }
}

impl Decode for Block {
    const MIN_SIZE: usize = Header::MIN_SIZE + 4 + Certificate::MIN_SIZE;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Block {
            header: Header::decode(r)?,
            txs: r.list(caps::TXS, "transactions")?,
            certificate: Certificate::decode(r)?,
        })
    }
}

impl Encode for Batch {
    fn encode(&self, out: &mut Vec<u8>) {
        put_batch(out, self, self.txs.iter());
    }
}

impl Decode for Batch {
    const MIN_SIZE: usize = ChainId::MIN_SIZE + 32 + 8 + 12 + 4 + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Batch {
            chain_id: ChainId::decode(r)?,
            origin: Address::decode(r)?,
            seq: r.u64("batch seq")?,
            hlc: Hlc::decode(r)?,
            txs: r.list(caps::TXS, "transactions")?,
            signature: Signature::decode(r)?,
        })
    }
}
