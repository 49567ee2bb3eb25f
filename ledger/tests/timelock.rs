//! The state machine's rules for sealed records and `TimelockReveal`, one test
//! per path (the style of `rules.rs`). The puzzles here are arbitrary bytes with
//! an answer made up to go with them: the ledger checks a reveal against the
//! commitment only, never by doing the squarings, so no arithmetic is needed.

mod common;

use common::{BITS, Net, net};
use pyralog_ledger::block::{Batch, VerifiedBatch};
use pyralog_ledger::timelock::{Puzzle, SealedValue};
use pyralog_ledger::{Encode, Engine, Error, Hlc, Payload, PutOp, devkit};

const ANSWER: [u8; 8] = [9, 8, 7, 6, 5, 4, 3, 2];

fn sealed(data: &[u8]) -> SealedValue {
    let puzzle = Puzzle {
        modulus: vec![0xe1, 0, 0, 0, 0, 0, 0, 0x35],
        base: vec![2],
        squarings: 1 << 30,
    };
    SealedValue::seal(puzzle, &ANSWER, data, [3; 12]).expect("seal")
}

fn reveal(n: &Net, answer: &[u8]) -> Payload {
    Payload::TimelockReveal {
        namespace: n.alice.address(),
        key: b"bid".to_vec(),
        answer: answer.to_vec(),
    }
}

/// A pbft net where alice has sealed "42" under `bid`.
fn net_with_sealed_bid() -> Net {
    let mut n = net(Engine::Pbft);
    let put = devkit::put_sealed(&n.alice, b"bid", &sealed(b"42"));
    n.apply(vec![n.tx(&n.alice, 0, put)]);
    n
}

#[test]
fn a_sealed_put_stores_the_sealed_bytes_until_a_reveal_opens_them() {
    let mut n = net_with_sealed_bid();
    let r = n
        .store
        .record(&n.alice.address(), b"bid")
        .expect("read")
        .expect("record");
    assert!(r.sealed);
    assert_eq!(r.value, Some(sealed(b"42").to_bytes()));
    assert_eq!(r.version, 1);

    // Bob reveals alice's record: anyone may, the answer being public work.
    let tx = n.tx(&n.bob, 0, reveal(&n, &ANSWER));
    let id = tx.id();
    n.apply(vec![tx]);
    let r = n
        .store
        .record(&n.alice.address(), b"bid")
        .expect("read")
        .expect("record");
    assert!(!r.sealed);
    assert_eq!(r.value.as_deref(), Some(&b"42"[..]));
    assert_eq!(r.version, 2);
    assert_eq!(r.order.tx, id, "the reveal is the record's last write");
    assert_eq!(n.store.account(&n.bob.address()).expect("read").nonce, 1);

    // Once revealed, it is a plain record: a second reveal has nothing to open.
    let again = n.tx(&n.bob, 1, reveal(&n, &ANSWER));
    assert_eq!(
        n.reject(vec![again]),
        Error::NotSealed {
            key: hex::encode(b"bid")
        }
    );
}

#[test]
fn a_reveal_whose_answer_does_not_match_the_commitment_is_refused() {
    let mut n = net_with_sealed_bid();
    let mut wrong = ANSWER;
    wrong[7] ^= 1;
    let err = n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &wrong))]);
    assert_eq!(err, Error::CommitmentMismatch);
    assert!(err.to_string().contains("commitment mismatch"), "{err}");
    let err = n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &ANSWER[..7]))]);
    assert_eq!(
        err,
        Error::AnswerLength {
            expected: 8,
            got: 7
        }
    );
}

#[test]
fn a_reveal_for_a_record_that_is_not_sealed_is_refused() {
    let mut n = net(Engine::Pbft);
    let err = n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &ANSWER))]);
    assert_eq!(
        err,
        Error::RecordNotFound {
            key: hex::encode(b"bid")
        }
    );
    n.apply(vec![n.tx(
        &n.alice,
        0,
        devkit::put(&n.alice, b"bid", b"42"),
    )]);
    let err = n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &ANSWER))]);
    assert_eq!(
        err,
        Error::NotSealed {
            key: hex::encode(b"bid")
        }
    );
    // Deleted after sealing: nothing left to reveal either.
    let mut n = net_with_sealed_bid();
    let delete = Payload::Delete {
        namespace: n.alice.address(),
        keys: vec![b"bid".to_vec()],
    };
    n.apply(vec![n.tx(&n.alice, 1, delete)]);
    assert!(matches!(
        n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &ANSWER))]),
        Error::RecordNotFound { .. }
    ));
}

#[test]
fn a_plain_overwrite_cancels_the_seal() {
    let mut n = net_with_sealed_bid();
    n.apply(vec![n.tx(&n.alice, 1, devkit::put(&n.alice, b"bid", b"7"))]);
    assert!(matches!(
        n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &ANSWER))]),
        Error::NotSealed { .. }
    ));
}

#[test]
fn a_sealed_value_that_does_not_decrypt_stays_sealed() {
    let mut n = net(Engine::Pbft);
    let mut bad = sealed(b"42");
    bad.ciphertext[0] ^= 1;
    n.apply(vec![n.tx(
        &n.alice,
        0,
        devkit::put_sealed(&n.alice, b"bid", &bad),
    )]);
    let err = n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &ANSWER))]);
    assert_eq!(err, Error::SealedDecrypt);
    assert!(!err.is_peer_fault(), "the revealer did nothing wrong");
}

#[test]
fn an_oversized_sealed_value_is_refused() {
    let mut n = net(Engine::Pbft);
    let max = n.store.genesis().params.limits.max_value_bytes;
    // Data at the limit fits as a plain value but not once sealed: a sealed
    // value counts at its sealed size.
    let big = sealed(&vec![1u8; max as usize]);
    let len = big.to_bytes().len() as u64;
    let err = n.reject(vec![n.tx(
        &n.alice,
        0,
        devkit::put_sealed(&n.alice, b"bid", &big),
    )]);
    assert_eq!(
        err,
        Error::OverLimit {
            what: "record value",
            len,
            max
        }
    );
}

#[test]
fn a_put_marked_sealed_must_hold_a_sealed_value() {
    let mut n = net(Engine::Pbft);
    let mut wrong_version = sealed(b"42").to_bytes();
    wrong_version[4] = 9;
    for (value, says) in [
        (b"just text".to_vec(), "not a sealed value"),
        (wrong_version, "format version 9"),
    ] {
        let put = Payload::Put {
            namespace: n.alice.address(),
            ops: vec![PutOp {
                key: b"bid".to_vec(),
                value,
                if_version: None,
                sealed: true,
            }],
        };
        let err = n.reject(vec![n.tx(&n.alice, 0, put)]);
        assert!(
            matches!(
                err,
                Error::NotSealedFormat { .. } | Error::UnsupportedVersion { version: 9, .. }
            ) && err.to_string().contains(says),
            "{err}"
        );
        assert!(err.is_peer_fault(), "{err}");
    }
}

#[test]
fn an_oversized_answer_is_refused_before_the_state_is_read() {
    let mut n = net(Engine::Pbft);
    let err = n.reject(vec![n.tx(&n.bob, 0, reveal(&n, &[1u8; 513]))]);
    assert!(
        matches!(
            err,
            Error::OverLimit {
                what: "time-lock answer",
                ..
            }
        ),
        "{err}"
    );
}

// --- gossip -----------------------------------------------------------------

const NOW: u64 = 1_800_000_000_000;

fn batch(n: &Net, seq: u64, payload: Payload, key: &pyralog_ledger::Keypair) -> VerifiedBatch {
    let epoch = n.store.genesis().gossip_epoch(NOW);
    let tx = devkit::tx(&n.chain, key, 0, epoch, payload, BITS);
    let origin = devkit::key(50);
    let b = Batch::seal(
        n.chain.clone(),
        &origin,
        seq,
        Hlc {
            wall_ms: NOW,
            logical: 0,
        },
        vec![tx],
    );
    VerifiedBatch::verify(b).expect("signatures")
}

#[test]
fn gossip_merges_sealed_puts_but_reveals_need_an_ordering_engine() {
    let mut n = net(Engine::Gossip);
    let put = devkit::put_sealed(&n.alice, b"bid", &sealed(b"42"));
    n.store
        .merge_batch(&batch(&n, 1, put, &n.alice.clone()), NOW)
        .expect("merge");
    let r = n
        .store
        .record(&n.alice.address(), b"bid")
        .expect("read")
        .expect("record");
    assert!(r.sealed);
    let err = n
        .store
        .merge_batch(&batch(&n, 2, reveal(&n, &ANSWER), &n.bob.clone()), NOW)
        .expect_err("reveal under gossip");
    assert_eq!(
        err.root_cause(),
        &Error::NeedsOrderingEngine {
            payload: "timelock-reveal"
        }
    );
}
