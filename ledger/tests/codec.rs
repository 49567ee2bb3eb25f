//! The canonical encoding: round trips for every encoded type, strict decoding,
//! and frozen conformance hashes (a change to one is a deliberate format break).

use proptest::prelude::*;
use pyralog_ledger::block::{Batch, Block, Certificate, Header, Vote};
use pyralog_ledger::merkle::RecordProof;
use pyralog_ledger::state::{ValidatorInfo, WriteOrder};
use pyralog_ledger::store::TxLocation;
use pyralog_ledger::{
    Account, Address, ChainId, Decode, Domain, Encode, Error, Hash, Hlc, Keypair, Payload, PutOp,
    RecordEntry, Signature, Stamp, Tip, Transaction, TxBody,
};

// --- strategies ---------------------------------------------------------------

fn address() -> impl Strategy<Value = Address> {
    any::<[u8; 32]>().prop_map(Address)
}
fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}
fn signature() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}
fn chain() -> impl Strategy<Value = ChainId> {
    "[a-z0-9-]{1,48}".prop_map(|s| s.parse().expect("matches the alphabet"))
}
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}
fn short() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}
fn hlc() -> impl Strategy<Value = Hlc> {
    (any::<u64>(), any::<u32>()).prop_map(|(wall_ms, logical)| Hlc { wall_ms, logical })
}
fn put_op() -> impl Strategy<Value = PutOp> {
    (bytes(40), bytes(100), any::<Option<u64>>(), any::<bool>()).prop_map(
        |(key, value, if_version, sealed)| PutOp {
            key,
            value,
            if_version,
            sealed,
        },
    )
}
fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (address(), any::<u64>()).prop_map(|(to, amount)| Payload::Transfer { to, amount }),
        (address(), prop::collection::vec(put_op(), 0..5))
            .prop_map(|(namespace, ops)| Payload::Put { namespace, ops }),
        (address(), prop::collection::vec(bytes(20), 0..5))
            .prop_map(|(namespace, keys)| Payload::Delete { namespace, keys }),
        (address(), short(), short()).prop_map(|(validator_key, p2p, moniker)| {
            Payload::RegisterValidator {
                validator_key,
                p2p,
                moniker,
            }
        }),
        (address(), any::<u64>())
            .prop_map(|(validator, amount)| Payload::Stake { validator, amount }),
        (address(), any::<u64>())
            .prop_map(|(validator, amount)| Payload::Unstake { validator, amount }),
        Just(Payload::Unjail),
        bytes(100).prop_map(|data| Payload::Evidence { data }),
        (address(), bytes(20), bytes(64)).prop_map(|(namespace, key, answer)| {
            Payload::TimelockReveal {
                namespace,
                key,
                answer,
            }
        }),
    ]
}
fn body() -> impl Strategy<Value = TxBody> {
    (chain(), address(), any::<u64>(), any::<u64>(), payload()).prop_map(
        |(chain_id, sender, nonce, epoch, payload)| TxBody {
            chain_id,
            sender,
            nonce,
            epoch,
            payload,
        },
    )
}
fn transaction() -> impl Strategy<Value = Transaction> {
    (body(), any::<u64>(), signature()).prop_map(|(body, nonce, signature)| Transaction {
        body,
        stamp: Stamp { nonce },
        signature,
    })
}
fn header() -> impl Strategy<Value = Header> {
    (
        chain(),
        any::<u64>(),
        hash(),
        hash(),
        hash(),
        address(),
        any::<u64>(),
        bytes(50),
    )
        .prop_map(
            |(
                chain_id,
                height,
                parent,
                state_root,
                tx_root,
                proposer,
                timestamp_ms,
                engine_data,
            )| Header {
                chain_id,
                height,
                parent,
                state_root,
                tx_root,
                proposer,
                timestamp_ms,
                engine_data,
            },
        )
}
fn certificate() -> impl Strategy<Value = Certificate> {
    (
        any::<u64>(),
        prop::collection::vec((address(), signature()), 0..4),
    )
        .prop_map(|(round, votes)| Certificate {
            round,
            votes: votes
                .into_iter()
                .map(|(validator, signature)| Vote {
                    validator,
                    signature,
                })
                .collect(),
        })
}
fn block() -> impl Strategy<Value = Block> {
    (
        header(),
        prop::collection::vec(transaction(), 0..4),
        certificate(),
    )
        .prop_map(|(header, txs, certificate)| Block {
            header,
            txs,
            certificate,
        })
}
fn batch() -> impl Strategy<Value = Batch> {
    (
        chain(),
        address(),
        any::<u64>(),
        hlc(),
        prop::collection::vec(transaction(), 0..4),
        signature(),
    )
        .prop_map(|(chain_id, origin, seq, hlc, txs, signature)| Batch {
            chain_id,
            origin,
            seq,
            hlc,
            txs,
            signature,
        })
}
fn record_entry() -> impl Strategy<Value = RecordEntry> {
    (
        prop::option::of(bytes(100)),
        any::<bool>(),
        any::<u64>(),
        hlc(),
        address(),
        hash(),
    )
        .prop_map(|(value, sealed, version, hlc, origin, tx)| RecordEntry {
            // A tombstone is never sealed.
            sealed: sealed && value.is_some(),
            value,
            version,
            order: WriteOrder { hlc, origin, tx },
        })
}
fn proof() -> impl Strategy<Value = RecordProof> {
    (
        0u32..24,
        any::<u32>(),
        prop::collection::vec((bytes(60), bytes(60)), 0..5),
        prop::collection::vec(hash(), 0..24),
    )
        .prop_map(|(bucket_bits, bucket, entries, path)| RecordProof {
            bucket_bits,
            bucket,
            entries,
            path,
        })
}

fn round_trip<T: Encode + Decode + PartialEq + std::fmt::Debug>(
    v: &T,
) -> Result<(), TestCaseError> {
    let bytes = v.to_bytes();
    prop_assert_eq!(&T::from_bytes(&bytes).expect("decodes"), v);
    prop_assert_eq!(
        T::from_bytes(&bytes).expect("decodes").to_bytes(),
        bytes.clone()
    );
    // One byte more is refused, and so is every strict prefix.
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert_eq!(
        T::from_bytes(&longer).err(),
        Some(Error::TrailingBytes { count: 1 })
    );
    if !bytes.is_empty() {
        for cut in [0, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(
                T::from_bytes(&bytes[..cut]).is_err(),
                "prefix of {} bytes decoded",
                cut
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test] fn transactions_round_trip(v in transaction()) { round_trip(&v)?; }
    #[test] fn a_transactions_id_and_bytes_together_are_its_id_and_its_bytes(v in transaction()) {
        prop_assert_eq!(v.id_and_bytes(), (v.id(), v.to_bytes()));
    }
    #[test] fn payloads_round_trip(v in payload()) { round_trip(&v)?; }
    #[test] fn headers_round_trip(v in header()) { round_trip(&v)?; }
    #[test] fn blocks_round_trip(v in block()) { round_trip(&v)?; }
    #[test] fn batches_round_trip(v in batch()) { round_trip(&v)?; }
    #[test] fn certificates_round_trip(v in certificate()) { round_trip(&v)?; }
    #[test] fn record_entries_round_trip(v in record_entry()) { round_trip(&v)?; }
    /// The borrowed decoder reads what the owned one reads.
    #[test] fn record_entries_read_in_place_agree(v in record_entry(), extra: u8) {
        let bytes = v.to_bytes();
        let r = pyralog_ledger::RecordEntryRef::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(r.value, v.value.as_deref());
        prop_assert_eq!((r.sealed, r.version, r.order), (v.sealed, v.version, v.order));
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(pyralog_ledger::RecordEntryRef::from_bytes(&longer).is_err());
    }
    /// On any bytes (a valid encoding with one byte changed, cut short or
    /// grown, or noise), the borrowed decoder accepts exactly what the owned
    /// one accepts, and reads the same entry.
    #[test] fn record_entries_read_in_place_refuse_what_the_owned_decoder_refuses(
        v in record_entry(), at: prop::sample::Index, byte: u8, cut: prop::sample::Index, noise in bytes(200)
    ) {
        let good = v.to_bytes();
        let mut flipped = good.clone();
        let i = at.index(flipped.len());
        flipped[i] = byte;
        let short = good[..cut.index(good.len())].to_vec();
        let mut long = good.clone();
        long.extend_from_slice(&noise[..noise.len().min(3)]);
        for b in [good, flipped, short, long, noise] {
            let owned = RecordEntry::from_bytes(&b);
            let borrowed = pyralog_ledger::RecordEntryRef::from_bytes(&b);
            match (owned, borrowed) {
                (Ok(o), Ok(r)) => {
                    prop_assert_eq!(r.value, o.value.as_deref());
                    prop_assert_eq!((r.sealed, r.version, r.order), (o.sealed, o.version, o.order));
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (o, r) => prop_assert!(false, "owned {:?}, borrowed {:?}", o.map(|_| ()), r.map(|_| ())),
            }
        }
    }
    #[test] fn proofs_round_trip(v in proof()) { round_trip(&v)?; }
    #[test] fn hlcs_round_trip(v in hlc()) { round_trip(&v)?; }
    #[test] fn accounts_round_trip(balance: u64, nonce: u64, stake: u64) { round_trip(&Account { balance, nonce, stake })?; }
    #[test] fn validators_round_trip(id in short(), k in address(), stake: u64, p2p in short()) {
        round_trip(&ValidatorInfo { id, public_key: k, stake, p2p })?;
    }
    #[test] fn locations_round_trip(h: u64, i: u32, o in address(), seq: u64) {
        round_trip(&TxLocation::Block { height: h, index: i })?;
        round_trip(&TxLocation::Batch { origin: o, seq, index: i })?;
    }
    #[test] fn tips_round_trip(height: u64, h in hash(), t: u64, r in hash()) {
        round_trip(&Tip { height, hash: h, timestamp_ms: t, state_root: r })?;
    }

    /// Whatever bytes arrive, decoding returns; it never panics or over-allocates.
    #[test] fn arbitrary_bytes_never_panic(data in bytes(600)) {
        let _ = Transaction::from_bytes(&data);
        let _ = Block::from_bytes(&data);
        let _ = Batch::from_bytes(&data);
        let _ = RecordProof::from_bytes(&data);
        let _ = RecordEntry::from_bytes(&data);
        let _ = pyralog_ledger::RecordEntryRef::from_bytes(&data);
    }

    /// Flipping any byte of a valid encoding either fails or decodes to a
    /// different value, which re-encodes to exactly the flipped bytes.
    #[test] fn flipped_bytes_never_alias(v in transaction(), at: prop::sample::Index, bit in 0u8..8) {
        let mut bytes = v.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(other) = Transaction::from_bytes(&bytes) {
            prop_assert_ne!(&other, &v);
            prop_assert_eq!(other.to_bytes(), bytes);
        }
    }
}

fn sample_tx() -> Transaction {
    let k = Keypair::from_seed(&[1; 32]);
    TxBody {
        chain_id: "pyralog-test".parse().expect("chain"),
        sender: k.address(),
        nonce: 3,
        epoch: 0,
        payload: Payload::Put {
            namespace: k.address(),
            ops: vec![PutOp {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                if_version: Some(2),
                sealed: false,
            }],
        },
    }
    .sign(&k, Stamp { nonce: 9 })
}

#[test]
fn unknown_tags_are_refused() {
    let bytes = sample_tx().to_bytes();
    // The payload tag follows chain id (4 + 12), sender (32), nonce and epoch (16).
    let at = 4 + 12 + 32 + 16;
    assert_eq!(bytes[at], 1, "layout assumption");
    let mut b = bytes.clone();
    b[at] = 9;
    assert_eq!(
        Transaction::from_bytes(&b),
        Err(Error::UnknownTag {
            what: "payload",
            tag: 9
        })
    );
}

#[test]
fn non_canonical_put_flags_are_refused() {
    let bytes = sample_tx().to_bytes();
    // The put's flags byte (once the compare-and-set option tag) sits right
    // before its u64, 8 + 64 + 8 bytes from the end. Bit 0: a version follows;
    // bit 1: the value is sealed (ADR 0006); any other bit is refused.
    let at = bytes.len() - 8 - 64 - 8 - 1;
    assert_eq!(bytes[at], 1, "layout assumption");
    for flags in [4u8, 5, 0x80, 0xff] {
        let mut b = bytes.clone();
        b[at] = flags;
        assert_eq!(
            Transaction::from_bytes(&b),
            Err(Error::NonCanonical { what: "put flags" }),
            "flags {flags:#x}"
        );
    }
    let mut b = bytes.clone();
    b[at] = 3;
    let tx = Transaction::from_bytes(&b).expect("a sealed compare-and-set put decodes");
    match &tx.body.payload {
        Payload::Put { ops, .. } => assert!(ops[0].sealed && ops[0].if_version.is_some()),
        other => panic!("{other:?}"),
    }
    assert_eq!(tx.to_bytes(), b, "and encodes back to the same bytes");
}

#[test]
fn a_huge_length_prefix_is_refused_before_allocating() {
    // A block header followed by a transaction count of 100,000 and nothing else.
    let header = Header {
        chain_id: "pyralog-test".parse().expect("chain"),
        height: 1,
        parent: Hash::ZERO,
        state_root: Hash::ZERO,
        tx_root: Hash::ZERO,
        proposer: Address::default(),
        timestamp_ms: 0,
        engine_data: vec![],
    };
    let mut b = header.to_bytes();
    b.extend_from_slice(&100_000u32.to_le_bytes());
    assert_eq!(
        Block::from_bytes(&b),
        Err(Error::UnexpectedEnd {
            what: "transactions"
        })
    );
    let mut b = header.to_bytes();
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Block::from_bytes(&b),
        Err(Error::TooLong {
            what: "transactions",
            ..
        })
    ));
}

#[test]
fn over_size_fields_are_refused() {
    let mut b = Vec::new();
    let long = "a".repeat(49);
    b.extend_from_slice(&(long.len() as u32).to_le_bytes());
    b.extend_from_slice(long.as_bytes());
    assert!(matches!(
        ChainId::from_bytes(&b),
        Err(Error::TooLong {
            what: "chain id",
            ..
        })
    ));
    let mut b = Vec::new();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(b"A-b");
    assert!(matches!(ChainId::from_bytes(&b), Err(Error::BadChainId(_))));
}

// --- frozen conformance hashes ----------------------------------------------

/// A tiny deterministic generator, so the frozen values never depend on a
/// library's random streams.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn key(&mut self) -> Keypair {
        let mut s = [0u8; 32];
        s.copy_from_slice(&self.bytes(32));
        Keypair::from_seed(&s)
    }
}

fn seeded_tx(r: &mut SplitMix, chain: &ChainId) -> Transaction {
    let k = r.key();
    let other = r.key().address();
    let payload = match r.next() % 9 {
        0 => Payload::Transfer {
            to: other,
            amount: r.next(),
        },
        1 => Payload::Put {
            namespace: k.address(),
            ops: (0..1 + r.next() % 3)
                .map(|i| PutOp {
                    key: r.bytes(1 + i as usize),
                    value: r.bytes(10),
                    if_version: (i % 2 == 0).then_some(i),
                    sealed: false,
                })
                .collect(),
        },
        2 => Payload::Delete {
            namespace: k.address(),
            keys: vec![r.bytes(3), r.bytes(4)],
        },
        3 => Payload::RegisterValidator {
            validator_key: other,
            p2p: "/ip4/127.0.0.1/tcp/1".into(),
            moniker: "m".into(),
        },
        4 => Payload::Stake {
            validator: other,
            amount: r.next(),
        },
        5 => Payload::Unstake {
            validator: other,
            amount: r.next(),
        },
        6 => Payload::Unjail,
        7 => Payload::Evidence { data: r.bytes(20) },
        _ => Payload::TimelockReveal {
            namespace: other,
            key: r.bytes(5),
            answer: r.bytes(16),
        },
    };
    let body = TxBody {
        chain_id: chain.clone(),
        sender: k.address(),
        nonce: r.next(),
        epoch: r.next() % 100,
        payload,
    };
    body.sign(&k, Stamp { nonce: r.next() })
}

fn digest_of(items: impl IntoIterator<Item = Vec<u8>>) -> String {
    let mut h = blake3::Hasher::new();
    for item in items {
        h.update(&(item.len() as u64).to_le_bytes());
        h.update(&item);
    }
    h.finalize().to_hex().to_string()
}

#[test]
fn frozen_conformance_hashes() {
    let chain: ChainId = "pyralog-conformance".parse().expect("chain");
    let mut r = SplitMix(20_261_124);
    let txs: Vec<Transaction> = (0..64).map(|_| seeded_tx(&mut r, &chain)).collect();
    let block = Block {
        header: Header {
            chain_id: chain.clone(),
            height: 7,
            parent: Hash::of(Domain::BlockHeader, b"parent"),
            state_root: Hash::of(Domain::Bucket, b"state"),
            tx_root: pyralog_ledger::block::tx_root(&txs),
            proposer: r.key().address(),
            timestamp_ms: 1_800_000_000_000,
            engine_data: r.bytes(8),
        },
        txs: txs[..8].to_vec(),
        certificate: Certificate {
            round: 2,
            votes: (0..4)
                .map(|_| {
                    let k = r.key();
                    Vote {
                        validator: k.address(),
                        signature: k.sign(pyralog_ledger::keys::SigDomain::Consensus, &Hash::ZERO),
                    }
                })
                .collect(),
        },
    };
    let origin = r.key();
    let batch = Batch::seal(
        chain.clone(),
        &origin,
        5,
        Hlc {
            wall_ms: 1_800_000_000_000,
            logical: 3,
        },
        txs[8..16].to_vec(),
    );
    let entry = RecordEntry {
        value: Some(b"v".to_vec()),
        sealed: false,
        version: 4,
        order: WriteOrder {
            hlc: batch.hlc,
            origin: origin.address(),
            tx: txs[0].id(),
        },
    };

    let got = [
        ("transactions", digest_of(txs.iter().map(Encode::to_bytes))),
        (
            "transaction ids",
            digest_of(txs.iter().map(|t| t.id().0.to_vec())),
        ),
        (
            "block",
            digest_of([block.to_bytes(), block.hash().0.to_vec()]),
        ),
        (
            "batch",
            digest_of([batch.to_bytes(), batch.header_hash().0.to_vec()]),
        ),
        ("record entry", digest_of([entry.to_bytes()])),
        ("address", origin.address().to_human()),
        (
            "state values",
            digest_of([
                Account {
                    balance: r.next(),
                    nonce: r.next(),
                    stake: r.next(),
                }
                .to_bytes(),
                ValidatorInfo {
                    id: "validator-7".into(),
                    public_key: r.key().address(),
                    stake: r.next(),
                    p2p: "/ip4/127.0.0.1/tcp/26656".into(),
                }
                .to_bytes(),
                Tip {
                    height: 9,
                    hash: block.hash(),
                    timestamp_ms: 77,
                    state_root: Hash::ZERO,
                }
                .to_bytes(),
                TxLocation::Block {
                    height: 9,
                    index: 3,
                }
                .to_bytes(),
                TxLocation::Batch {
                    origin: origin.address(),
                    seq: 4,
                    index: 1,
                }
                .to_bytes(),
                RecordProof {
                    bucket_bits: 16,
                    bucket: 513,
                    entries: vec![(r.bytes(40), r.bytes(90)), (r.bytes(33), r.bytes(24))],
                    path: (0..16)
                        .map(|i| Hash::of(Domain::MerkleNode, &[i]))
                        .collect(),
                }
                .to_bytes(),
            ]),
        ),
    ];
    let frozen = [
        (
            "transactions",
            "7960024f7e5060413ab50ac9f5dde6fd91d9fe4cda851efc6369309c3efea3c7",
        ),
        (
            "transaction ids",
            "d3ad13b79c2793ceef0ad669b962ea3105742aa6f25701313c0a05188fbc11ee",
        ),
        (
            "block",
            "522909856e20d771737fb962d64bce828c1c63f0b9a6cf48e31ad597d9715046",
        ),
        (
            "batch",
            "8c898cb866779d0e5baebcaf083b607682a11dadba425247274de77e5bb05880",
        ),
        (
            "record entry",
            "0b2d91f46c8371334f672a5e64429c2fbb051b198d6ad360d32d0d532796c4ca",
        ),
        (
            "address",
            "pyr2RMWZhztQtkoFoYoi5AcHkWETvAusWoaU6V2QHQPQ8v5Dg6mYy",
        ),
        (
            "state values",
            "ecfee2dea9c38116216af9dde44948d21b9e42d15da189ae602d3fac7ba9b08f",
        ),
    ];
    for (name, g) in &got {
        println!("(\"{name}\", \"{g}\"),");
    }
    for ((name, g), (_, f)) in got.iter().zip(frozen) {
        assert_eq!(
            g, f,
            "the canonical form of {name} changed: if deliberate, update the frozen value and say so in the commit"
        );
    }
}

#[test]
fn a_verified_block_encodes_like_the_plain_block() {
    let tx = sample_tx();
    let block = Block {
        header: Header {
            chain_id: "pyralog-test".parse().expect("chain"),
            height: 1,
            parent: Hash::ZERO,
            state_root: Hash::ZERO,
            tx_root: pyralog_ledger::block::tx_root(std::slice::from_ref(&tx)),
            proposer: Address::default(),
            timestamp_ms: 5,
            engine_data: vec![1, 2],
        },
        txs: vec![tx.clone(), tx],
        certificate: Certificate::default(),
    };
    let verified = pyralog_ledger::VerifiedBlock::verify(block.clone()).expect("signatures");
    assert_eq!(verified.to_bytes(), block.to_bytes());
}
