//! Time-lock puzzles end to end, with small moduli so the tests run in
//! milliseconds: seal then open, tampering, parameters refused before any
//! work, and resuming from a checkpoint.

use num_bigint::BigUint;
use pyralog_consensus::timelock::{
    self, Bounds, Checkpoint, SealParams, Solver, TimelockError, open, seal, solve,
};
use pyralog_ledger::timelock::{Puzzle, SealedValue};
use pyralog_ledger::{Decode, Encode, Error};

/// Small moduli allowed, explicitly: fast to seal, and no use for anything real.
const TEST: Bounds = Bounds {
    min_bits: 64,
    max_bits: 4096,
    min_squarings: 1,
    max_squarings: 1 << 40,
};

const STEP: u64 = 1000;

fn sealed(data: &[u8], bits: u32, squarings: u64) -> SealedValue {
    seal(data, SealParams { bits, squarings }, &TEST).expect("seal")
}

/// The answer by the book: `squarings` multiply-and-reduce steps.
fn naive_answer(p: &Puzzle) -> Vec<u8> {
    let n = BigUint::from_bytes_be(&p.modulus);
    let mut x = BigUint::from_bytes_be(&p.base);
    for _ in 0..p.squarings {
        x = &x * &x % &n;
    }
    let b = x.to_bytes_be();
    let mut out = vec![0u8; p.modulus.len() - b.len()];
    out.extend_from_slice(&b);
    out
}

#[test]
fn seal_then_open_gives_the_data_back() {
    for (bits, t) in [(64, 1), (128, 777), (256, 5000), (512, 2000)] {
        let s = sealed(b"sealed-bid: 42", bits, t);
        assert_eq!(
            BigUint::from_bytes_be(&s.puzzle.modulus).bits(),
            u64::from(bits)
        );
        assert_eq!(s.puzzle.squarings, t);
        // The file is the canonical encoding and reads back as itself.
        let file = s.to_bytes();
        let back = SealedValue::from_bytes(&file).expect("decode");
        assert_eq!(back, s);
        let mut calls = 0;
        let data = open(&back, &TEST, None, STEP, |solver| {
            calls += 1;
            assert!(solver.done() <= solver.total());
        })
        .expect("open");
        assert_eq!(data, b"sealed-bid: 42");
        assert_eq!(calls, t.div_ceil(STEP));
    }
}

#[test]
fn the_sealers_shortcut_and_the_sequential_squarings_agree() {
    let s = sealed(b"x", 128, 3001);
    let slow = naive_answer(&s.puzzle);
    for step in [1, 7, 1000, 5000] {
        let fast = solve(&s.puzzle, &TEST, None, step, |_| {}).expect("solve");
        assert_eq!(fast, slow, "step {step}");
    }
    s.check_answer(&slow)
        .expect("the commitment is to this answer");
}

/// Byte offsets in a sealed value's encoding (see `pyralog_ledger::timelock`).
struct Layout {
    modulus: usize,
    squarings: usize,
    commitment: usize,
    ciphertext: usize,
}

fn layout(s: &SealedValue) -> Layout {
    let modulus = 4 + 1 + 4;
    let squarings = modulus + s.puzzle.modulus.len() + 4 + s.puzzle.base.len();
    let commitment = squarings + 8;
    let ciphertext = commitment + 32 + 12 + 4;
    Layout {
        modulus,
        squarings,
        commitment,
        ciphertext,
    }
}

fn open_bytes(bytes: &[u8]) -> Result<Vec<u8>, TimelockError> {
    let s = SealedValue::from_bytes(bytes)?;
    open(&s, &TEST, None, STEP, |_| {})
}

fn ledger_error(r: Result<Vec<u8>, TimelockError>) -> Error {
    match r {
        Err(TimelockError::Ledger(e)) => e,
        other => panic!("expected a ledger error, got {other:?}"),
    }
}

#[test]
fn a_tampered_sealed_file_fails_to_open_with_a_clear_error() {
    let s = sealed(b"the data", 256, 3000);
    let good = s.to_bytes();
    let at = layout(&s);
    assert_eq!(open_bytes(&good).expect("untouched"), b"the data");

    let flip = |i: usize, bit: u8| {
        let mut b = good.clone();
        b[i] ^= bit;
        b
    };
    // Ciphertext: the commitment holds, the AEAD refuses.
    let e = ledger_error(open_bytes(&flip(at.ciphertext + 3, 1)));
    assert_eq!(e, Error::SealedDecrypt);
    assert!(e.to_string().contains("decryption failed"), "{e}");
    // The AEAD tag itself.
    let e = ledger_error(open_bytes(&flip(good.len() - 1, 0x80)));
    assert_eq!(e, Error::SealedDecrypt);
    // Commitment: the right answer no longer matches it.
    let e = ledger_error(open_bytes(&flip(at.commitment, 1)));
    assert_eq!(e, Error::CommitmentMismatch);
    assert!(e.to_string().contains("commitment mismatch"), "{e}");
    // The modulus (a middle byte: same size, still odd): another puzzle,
    // another answer, which the commitment refuses.
    let e = ledger_error(open_bytes(&flip(at.modulus + 10, 4)));
    assert_eq!(e, Error::CommitmentMismatch);
    // The squarings' low byte: one squaring more or fewer gives another answer.
    let e = ledger_error(open_bytes(&flip(at.squarings, 1)));
    assert_eq!(e, Error::CommitmentMismatch);
    // The squarings' high byte: beyond the bounds, refused before any work.
    assert!(matches!(
        open_bytes(&flip(at.squarings + 7, 0x40)),
        Err(TimelockError::Squarings { .. })
    ));
    // Magic, version, truncation: refused by the decoder.
    assert!(matches!(
        ledger_error(open_bytes(&flip(0, 1))),
        Error::NotSealedFormat { .. }
    ));
    assert!(matches!(
        ledger_error(open_bytes(&flip(4, 2))),
        Error::UnsupportedVersion { version: 3, .. }
    ));
    assert!(matches!(
        ledger_error(open_bytes(&good[..good.len() - 1])),
        Error::UnexpectedEnd { .. }
    ));
    // The lowest modulus byte: an even modulus is refused before any work.
    assert!(matches!(
        open_bytes(&flip(at.modulus + s.puzzle.modulus.len() - 1, 1)),
        Err(TimelockError::EvenModulus)
    ));
}

#[test]
fn bad_parameters_are_refused_before_any_work() {
    let params = |bits, squarings| SealParams { bits, squarings };
    let std = Bounds::STANDARD;
    // Modulus too small, too large, odd-sized.
    assert!(matches!(
        seal(b"x", params(512, 10), &std),
        Err(TimelockError::ModulusSize {
            bits: 512,
            min: 1024,
            ..
        })
    ));
    assert!(matches!(
        seal(b"x", params(8192, 10), &std),
        Err(TimelockError::ModulusSize { bits: 8192, .. })
    ));
    assert!(matches!(
        seal(b"x", params(1025, 10), &std),
        Err(TimelockError::OddModulusSize(1025))
    ));
    // No squarings, or too many. (At 4096 bits the primes alone would take
    // seconds: these return at once.)
    let e = seal(b"x", params(4096, 0), &std).expect_err("t = 0");
    assert!(matches!(e, TimelockError::Squarings { squarings: 0, .. }));
    assert!(e.to_string().contains("locks nothing"), "{e}");
    assert!(matches!(
        seal(b"x", params(4096, (1 << 40) + 1), &std),
        Err(TimelockError::Squarings { .. })
    ));
    // Bounds that are themselves wrong.
    let loose = Bounds {
        min_bits: 16,
        ..TEST
    };
    assert!(matches!(
        seal(b"x", params(64, 10), &loose),
        Err(TimelockError::BadBounds(_))
    ));

    // Opening: a puzzle demanding 2^45 squarings would run for a year; it is
    // refused at once (the test finishing is the proof).
    let mut s = sealed(b"x", 128, 10);
    s.puzzle.squarings = 1 << 45;
    assert!(matches!(
        open(&s, &TEST, None, STEP, |_| panic!("no work may start")),
        Err(TimelockError::Squarings { .. })
    ));
    // A small modulus is fine under the test bounds and refused under the
    // standard ones.
    let s = sealed(b"x", 128, 10);
    assert!(matches!(
        Solver::new(&s.puzzle, &std),
        Err(TimelockError::ModulusSize { bits: 128, .. })
    ));
}

#[test]
fn a_base_out_of_range_is_refused() {
    // N = (2^61 - 1)(2^31 - 1), two Mersenne primes: 92 bits.
    let p = (BigUint::from(1u32) << 61u32) - 1u32;
    let q = (BigUint::from(1u32) << 31u32) - 1u32;
    let n = &p * &q;
    let puzzle = |base: BigUint| Puzzle {
        modulus: n.to_bytes_be(),
        base: base.to_bytes_be(),
        squarings: 100,
    };
    assert!(Solver::new(&puzzle(BigUint::from(2u32)), &TEST).is_ok());
    for (base, says) in [
        (BigUint::from(1u32), "below 2"),
        (&n - 1u32, "above N - 2"),
        (n.clone(), "above N - 2"),
        (q.clone(), "shares a factor"),
    ] {
        let e = Solver::new(&puzzle(base), &TEST).expect_err("refused");
        assert!(matches!(e, TimelockError::BaseOutOfRange(_)), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn resuming_from_a_checkpoint_gives_the_same_answer() {
    let s = sealed(b"resume me", 256, 10_000);
    let straight = solve(&s.puzzle, &TEST, None, 10_000, |_| {}).expect("solve");

    let mut first = Solver::new(&s.puzzle, &TEST).expect("solver");
    first.step(3_333);
    first.step(1);
    // Saved to a side file and read back, as the CLI does.
    let saved = first.checkpoint().to_bytes();
    drop(first);
    let checkpoint = Checkpoint::from_bytes(&saved).expect("checkpoint");
    assert_eq!(checkpoint.done, 3_334);
    let mut calls = 0;
    let resumed = solve(&s.puzzle, &TEST, Some(&checkpoint), 1000, |_| calls += 1).expect("resume");
    assert_eq!(resumed, straight);
    assert_eq!(calls, 7, "only the remaining 6,666 squarings are done");
    assert_eq!(
        open(&s, &TEST, Some(&checkpoint), 1000, |_| {}).expect("open"),
        b"resume me"
    );

    // A finished checkpoint gives the answer with no more work.
    let mut done = Solver::resume(&s.puzzle, &TEST, &checkpoint).expect("resume");
    done.step(u64::MAX);
    assert!(done.is_finished());
    assert_eq!(done.step(5), 0);
    let end = done.checkpoint();
    assert_eq!(
        solve(&s.puzzle, &TEST, Some(&end), 1, |_| panic!(
            "nothing left to do"
        ))
        .expect("answer"),
        straight
    );
}

#[test]
fn a_checkpoint_of_another_puzzle_or_out_of_range_is_refused() {
    let s = sealed(b"x", 128, 1000);
    let other = sealed(b"x", 128, 1000);
    let mut solver = Solver::new(&s.puzzle, &TEST).expect("solver");
    solver.step(10);
    let good = solver.checkpoint();
    let refused = |c: &Checkpoint| match Solver::resume(&s.puzzle, &TEST, c) {
        Err(TimelockError::BadCheckpoint(why)) => why,
        other => panic!("expected BadCheckpoint, got {other:?}"),
    };
    let mut c = good.clone();
    c.puzzle = other.puzzle.clone();
    assert!(refused(&c).contains("another puzzle"));
    let mut c = good.clone();
    c.done = 1001;
    assert!(refused(&c).contains("1001 squarings of a puzzle of 1000"));
    let mut c = good.clone();
    c.value = s.puzzle.modulus.clone();
    assert!(refused(&c).contains("below the modulus"));
    let mut c = good.clone();
    c.value.pop();
    assert!(refused(&c).contains("below the modulus"));
    // And the side file's own framing.
    let mut bytes = good.to_bytes();
    bytes[4] = 7;
    assert!(matches!(
        Checkpoint::from_bytes(&bytes),
        Err(Error::UnsupportedVersion { version: 7, .. })
    ));
}

#[test]
fn a_calibration_puzzle_runs_under_the_standard_bounds() {
    let p = timelock::calibration_puzzle(2048, &Bounds::STANDARD).expect("puzzle");
    let mut solver = Solver::new(&p, &Bounds::STANDARD).expect("solver");
    assert_eq!(solver.step(100), 100);
    assert!(matches!(
        timelock::calibration_puzzle(100, &Bounds::STANDARD),
        Err(TimelockError::ModulusSize { .. })
    ));
}
