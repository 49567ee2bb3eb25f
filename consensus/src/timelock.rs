//! Time-lock puzzles after Rivest, Shamir and Wagner ("Time-lock puzzles and
//! timed-release crypto", MIT/LCS/TR-684, 1996): data that anyone can open, but
//! only after a set number of squarings done one after another.
//!
//! - [`seal`] picks two fresh primes `p`, `q` and `N = pq`, and computes the
//!   answer `a^(2^t) mod N` at once through `φ(N) = (p-1)(q-1)` (§2.1 of the
//!   paper: `e = 2^t mod φ(N)`, then `a^e mod N`). The data is encrypted under
//!   a key derived from the answer, and a blake3 commitment to the answer is
//!   recorded; `p`, `q` and `φ(N)` are then dropped.
//! - [`Solver`] does the `t` squarings without the factors, in steps the caller
//!   sizes, so a host can show progress and save a [`Checkpoint`] to resume
//!   from. [`solve`] and [`open`] run it to the end.
//!
//! The byte format, the commitment and the AEAD are `pyralog_ledger::timelock`'s,
//! because the state machine checks reveals with them. What lives here is the
//! number theory, which the ledger never needs.
//!
//! Every parameter is checked against [`Bounds`] before any work: modulus size,
//! number of squarings, base. Nothing here reads a clock: how many squarings a
//! delay is worth comes from the caller ([`squarings_for`]), who measures or
//! states a rate.

use std::time::Duration;

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};
use pyralog_ledger::codec::{Decode, Encode, Reader, put_bytes, put_u64};
use pyralog_ledger::timelock::{MAX_MODULUS_BYTES, NONCE_BYTES, Puzzle, SealedValue};

/// The modulus size `pyralog timelock seal` uses unless told otherwise.
pub const DEFAULT_BITS: u32 = 2048;
/// The smallest modulus any [`Bounds`] may allow: below this, primes of half
/// the size are too few to pick two at random.
pub const ABSOLUTE_MIN_BITS: u32 = 64;
/// The widest modulus the format holds.
pub const ABSOLUTE_MAX_BITS: u32 = (MAX_MODULUS_BYTES * 8) as u32;
/// The most squarings any [`Bounds`] may allow: about 3 years at a million
/// squarings a second.
pub const ABSOLUTE_MAX_SQUARINGS: u64 = 1 << 46;
/// The base [`seal`] uses, as the paper does.
pub const BASE: u32 = 2;

/// What a puzzle's parameters may be. [`Bounds::STANDARD`] is for real use;
/// tests widen `min_bits` explicitly to seal in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Fewest bits of the modulus.
    pub min_bits: u32,
    /// Most bits of the modulus.
    pub max_bits: u32,
    /// Fewest squarings (at least 1).
    pub min_squarings: u64,
    /// Most squarings.
    pub max_squarings: u64,
}

impl Bounds {
    /// 1024 to 4096-bit moduli (a 1024-bit modulus can still be factored by
    /// nobody in public, and 2048 is the default), 1 to 2^40 squarings (about
    /// a month at the measured 0.42M squarings/s here).
    pub const STANDARD: Bounds = Bounds {
        min_bits: 1024,
        max_bits: ABSOLUTE_MAX_BITS,
        min_squarings: 1,
        max_squarings: 1 << 40,
    };

    /// Refuses bounds that are themselves out of range.
    pub fn check(&self) -> Result<(), TimelockError> {
        let bad = |why: String| Err(TimelockError::BadBounds(why));
        if self.min_bits < ABSOLUTE_MIN_BITS || self.max_bits > ABSOLUTE_MAX_BITS {
            return bad(format!(
                "modulus bounds {}..={} bits must lie within {ABSOLUTE_MIN_BITS}..={ABSOLUTE_MAX_BITS}",
                self.min_bits, self.max_bits
            ));
        }
        if self.min_bits > self.max_bits || self.min_squarings > self.max_squarings {
            return bad("a lower bound is above its upper bound".into());
        }
        if self.min_squarings == 0 || self.max_squarings > ABSOLUTE_MAX_SQUARINGS {
            return bad(format!(
                "squaring bounds {}..={} must lie within 1..={ABSOLUTE_MAX_SQUARINGS}",
                self.min_squarings, self.max_squarings
            ));
        }
        Ok(())
    }

    fn check_bits(&self, bits: u64) -> Result<(), TimelockError> {
        if bits < u64::from(self.min_bits) || bits > u64::from(self.max_bits) {
            return Err(TimelockError::ModulusSize {
                bits,
                min: self.min_bits,
                max: self.max_bits,
            });
        }
        Ok(())
    }

    fn check_squarings(&self, squarings: u64) -> Result<(), TimelockError> {
        if squarings < self.min_squarings || squarings > self.max_squarings {
            return Err(TimelockError::Squarings {
                squarings,
                min: self.min_squarings,
                max: self.max_squarings,
            });
        }
        Ok(())
    }
}

/// What can go wrong with a puzzle. Parameter errors come before any work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimelockError {
    /// Bounds that are themselves out of range.
    #[error("bad puzzle bounds: {0}")]
    BadBounds(String),
    /// A modulus size outside the bounds.
    #[error("a modulus of {bits} bits is outside the allowed {min}..={max} bits")]
    ModulusSize {
        /// The size asked for, or found.
        bits: u64,
        /// The fewest allowed.
        min: u32,
        /// The most allowed.
        max: u32,
    },
    /// A modulus size that is not even (it is the product of two primes of
    /// half its size).
    #[error("the modulus size must be even (two primes of half the size); got {0} bits")]
    OddModulusSize(u32),
    /// A modulus that cannot be the product of two odd primes.
    #[error("the puzzle's modulus is even, so it is not a product of two odd primes")]
    EvenModulus,
    /// A number of squarings outside the bounds.
    #[error(
        "{squarings} squarings is outside the allowed {min}..={max}{}",
        if *squarings == 0 { " (a puzzle with no squarings locks nothing)" } else { "" }
    )]
    Squarings {
        /// The number asked for, or found.
        squarings: u64,
        /// The fewest allowed.
        min: u64,
        /// The most allowed.
        max: u64,
    },
    /// A base outside `2..=N-2`, or sharing a factor with `N`.
    #[error("the puzzle's base is out of range: {0}")]
    BaseOutOfRange(&'static str),
    /// A squaring rate of zero, or a delay too long to count.
    #[error("bad delay or rate: {0}")]
    BadRate(String),
    /// A checkpoint that does not belong to this puzzle, or is corrupt.
    #[error("bad checkpoint: {0}")]
    BadCheckpoint(String),
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
    /// The format, the commitment or the AEAD refused (a tampered or foreign
    /// file, a wrong answer).
    #[error(transparent)]
    Ledger(#[from] pyralog_ledger::Error),
}

/// What [`seal`] should make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealParams {
    /// Bits of the modulus; even.
    pub bits: u32,
    /// Sequential squarings an opener must do.
    pub squarings: u64,
}

/// The number of squarings that take `delay` at `rate` squarings a second,
/// rounded up.
pub fn squarings_for(delay: Duration, rate: u64) -> Result<u64, TimelockError> {
    if rate == 0 {
        return Err(TimelockError::BadRate(
            "the squaring rate must be at least 1 per second".into(),
        ));
    }
    let too_many = || {
        TimelockError::BadRate(format!(
            "{delay:?} at {rate}/s is too many squarings to count"
        ))
    };
    let nanos = delay
        .as_nanos()
        .checked_mul(u128::from(rate))
        .ok_or_else(too_many)?;
    u64::try_from(nanos.div_ceil(1_000_000_000)).map_err(|_| too_many())
}

/// Seals `data` so that opening it takes `params.squarings` sequential
/// squarings modulo a fresh `params.bits`-bit modulus. Checks the parameters
/// against `bounds` first.
pub fn seal(
    data: &[u8],
    params: SealParams,
    bounds: &Bounds,
) -> Result<SealedValue, TimelockError> {
    bounds.check()?;
    bounds.check_bits(u64::from(params.bits))?;
    if !params.bits.is_multiple_of(2) {
        return Err(TimelockError::OddModulusSize(params.bits));
    }
    bounds.check_squarings(params.squarings)?;
    let half = params.bits / 2;
    let p = random_prime(half)?;
    let q = loop {
        let q = random_prime(half)?;
        if q != p {
            break q;
        }
    };
    let n = &p * &q;
    let phi = (&p - 1u32) * (&q - 1u32);
    let base = BigUint::from(BASE);
    // §2.1: the sealer's shortcut. 2^t mod φ(N) is the exponent, since
    // a^φ(N) = 1 mod N for a prime to N.
    let exponent = BigUint::from(2u32).modpow(&BigUint::from(params.squarings), &phi);
    let answer = base.modpow(&exponent, &n);
    let puzzle = Puzzle {
        modulus: n.to_bytes_be(),
        base: base.to_bytes_be(),
        squarings: params.squarings,
    };
    let answer = to_width(&answer, puzzle.answer_len());
    let mut nonce = [0u8; NONCE_BYTES];
    random_bytes(&mut nonce)?;
    Ok(SealedValue::seal(puzzle, &answer, data, nonce)?)
}

/// Checks a puzzle's parameters against `bounds`: modulus size and parity,
/// number of squarings, base in `2..=N-2` and prime to `N`.
pub fn check_puzzle(puzzle: &Puzzle, bounds: &Bounds) -> Result<(), TimelockError> {
    bounds.check()?;
    let n = BigUint::from_bytes_be(&puzzle.modulus);
    bounds.check_bits(n.bits())?;
    if n.is_even() {
        return Err(TimelockError::EvenModulus);
    }
    bounds.check_squarings(puzzle.squarings)?;
    let base = BigUint::from_bytes_be(&puzzle.base);
    if base < BigUint::from(2u32) {
        return Err(TimelockError::BaseOutOfRange("it is below 2"));
    }
    if base > &n - 2u32 {
        return Err(TimelockError::BaseOutOfRange("it is above N - 2"));
    }
    if !base.gcd(&n).is_one() {
        return Err(TimelockError::BaseOutOfRange(
            "it shares a factor with N, which gives N's factors away",
        ));
    }
    Ok(())
}

/// A puzzle being solved: the squarings done so far and the value reached.
#[derive(Clone, Debug)]
pub struct Solver {
    puzzle: Puzzle,
    modulus: BigUint,
    done: u64,
    value: BigUint,
}

impl Solver {
    /// A solver at the start of `puzzle`, whose parameters are checked first.
    pub fn new(puzzle: &Puzzle, bounds: &Bounds) -> Result<Solver, TimelockError> {
        check_puzzle(puzzle, bounds)?;
        Ok(Solver {
            puzzle: puzzle.clone(),
            modulus: BigUint::from_bytes_be(&puzzle.modulus),
            done: 0,
            value: BigUint::from_bytes_be(&puzzle.base),
        })
    }

    /// A solver where `checkpoint` left `puzzle`: the checkpoint must be of
    /// this very puzzle, within it, and hold a value below the modulus.
    pub fn resume(
        puzzle: &Puzzle,
        bounds: &Bounds,
        checkpoint: &Checkpoint,
    ) -> Result<Solver, TimelockError> {
        let mut solver = Solver::new(puzzle, bounds)?;
        if checkpoint.puzzle != *puzzle {
            return Err(TimelockError::BadCheckpoint(
                "it belongs to another puzzle".into(),
            ));
        }
        if checkpoint.done > puzzle.squarings {
            return Err(TimelockError::BadCheckpoint(format!(
                "it claims {} squarings of a puzzle of {}",
                checkpoint.done, puzzle.squarings
            )));
        }
        let value = BigUint::from_bytes_be(&checkpoint.value);
        if checkpoint.value.len() != puzzle.answer_len() || value >= solver.modulus {
            return Err(TimelockError::BadCheckpoint(
                "its value is not a number below the modulus".into(),
            ));
        }
        solver.done = checkpoint.done;
        solver.value = value;
        Ok(solver)
    }

    /// Does up to `max` more squarings (fewer at the end) and returns how many
    /// it did.
    pub fn step(&mut self, max: u64) -> u64 {
        let n = max.min(self.remaining());
        if n == 0 {
            return 0;
        }
        // value^(2^n) mod N is n squarings in a row; num-bigint's modpow does
        // them in Montgomery form, faster than n multiply-and-reduce steps
        // (docs/BENCHMARKS.md compares the two).
        let exponent = BigUint::one() << n;
        self.value = self.value.modpow(&exponent, &self.modulus);
        self.done += n;
        n
    }

    /// Squarings done.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Squarings the puzzle needs in all.
    pub fn total(&self) -> u64 {
        self.puzzle.squarings
    }

    /// Squarings left.
    pub fn remaining(&self) -> u64 {
        self.puzzle.squarings - self.done
    }

    /// Whether every squaring is done.
    pub fn is_finished(&self) -> bool {
        self.remaining() == 0
    }

    /// The answer, once finished: as many big-endian bytes as the modulus has.
    pub fn answer(&self) -> Option<Vec<u8>> {
        self.is_finished()
            .then(|| to_width(&self.value, self.puzzle.answer_len()))
    }

    /// Where the solver is, to resume from later.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            puzzle: self.puzzle.clone(),
            done: self.done,
            value: to_width(&self.value, self.puzzle.answer_len()),
        }
    }
}

/// Runs `puzzle` to its answer, from `from` if given, calling `progress`
/// after every step of at most `step` squarings.
pub fn solve(
    puzzle: &Puzzle,
    bounds: &Bounds,
    from: Option<&Checkpoint>,
    step: u64,
    mut progress: impl FnMut(&Solver),
) -> Result<Vec<u8>, TimelockError> {
    let mut solver = match from {
        Some(c) => Solver::resume(puzzle, bounds, c)?,
        None => Solver::new(puzzle, bounds)?,
    };
    while !solver.is_finished() {
        solver.step(step.max(1));
        progress(&solver);
    }
    Ok(solver.answer().unwrap_or_default())
}

/// Opens `sealed` the slow way: solves its puzzle (see [`solve`]), checks the
/// answer against the commitment, and decrypts.
pub fn open(
    sealed: &SealedValue,
    bounds: &Bounds,
    from: Option<&Checkpoint>,
    step: u64,
    progress: impl FnMut(&Solver),
) -> Result<Vec<u8>, TimelockError> {
    let answer = solve(&sealed.puzzle, bounds, from, step, progress)?;
    Ok(sealed.open(&answer)?)
}

/// A puzzle for measuring the squaring rate at `bits`: a random odd modulus
/// of that size (not a product of two primes: the cost of a squaring does not
/// depend on it) and the most squarings `bounds` allow.
pub fn calibration_puzzle(bits: u32, bounds: &Bounds) -> Result<Puzzle, TimelockError> {
    bounds.check()?;
    bounds.check_bits(u64::from(bits))?;
    let n = random_odd(bits)?;
    Ok(Puzzle {
        modulus: n.to_bytes_be(),
        base: BigUint::from(BASE).to_bytes_be(),
        squarings: bounds.max_squarings,
    })
}

/// Where a [`Solver`] was: enough to resume without redoing the squarings.
///
/// Format: `"PYTC"`, version `1`, the puzzle (as in a sealed value), the
/// squarings done (`u64`), and the value reached (as wide as the modulus).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The puzzle being solved.
    pub puzzle: Puzzle,
    /// Squarings done.
    pub done: u64,
    /// `base^(2^done) mod N`, big-endian, as wide as the modulus.
    pub value: Vec<u8>,
}

/// The first bytes of a checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"PYTC";
/// The checkpoint format version this build writes and reads.
pub const CHECKPOINT_VERSION: u8 = 1;

impl Encode for Checkpoint {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&CHECKPOINT_MAGIC);
        out.push(CHECKPOINT_VERSION);
        self.puzzle.encode(out);
        put_u64(out, self.done);
        put_bytes(out, &self.value);
    }
}

impl Decode for Checkpoint {
    const MIN_SIZE: usize = 4 + 1 + Puzzle::MIN_SIZE + 8 + 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, pyralog_ledger::Error> {
        let what = "time-lock checkpoint";
        if r.array::<4>(what)? != CHECKPOINT_MAGIC {
            return Err(pyralog_ledger::Error::NonCanonical { what });
        }
        let version = r.u8(what)?;
        if version != CHECKPOINT_VERSION {
            return Err(pyralog_ledger::Error::UnsupportedVersion {
                what,
                version,
                supported: CHECKPOINT_VERSION,
            });
        }
        Ok(Checkpoint {
            puzzle: Puzzle::decode(r)?,
            done: r.u64("squarings done")?,
            value: r.bytes(MAX_MODULUS_BYTES, "checkpoint value")?.to_vec(),
        })
    }
}

// --- numbers -------------------------------------------------------------------

/// `x` as exactly `width` big-endian bytes (`x` fits: it is below the modulus).
fn to_width(x: &BigUint, width: usize) -> Vec<u8> {
    let bytes = x.to_bytes_be();
    let mut out = vec![0u8; width.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes);
    out
}

fn random_bytes(buf: &mut [u8]) -> Result<(), TimelockError> {
    getrandom::fill(buf).map_err(|e| TimelockError::Randomness(e.to_string()))
}

/// A random odd number of exactly `bits` bits whose top two bits are set, so
/// the product of two of them has exactly twice the bits.
fn random_odd(bits: u32) -> Result<BigUint, TimelockError> {
    let mut bytes = vec![0u8; bits.div_ceil(8) as usize];
    random_bytes(&mut bytes)?;
    let mut x = BigUint::from_bytes_be(&bytes);
    // Clear what lies above `bits`, then set the top two bits and the lowest.
    x &= (BigUint::one() << bits) - 1u32;
    x |= BigUint::from(3u32) << (bits - 2);
    x |= BigUint::one();
    Ok(x)
}

/// The odd primes below 2000, for trial division before Miller–Rabin.
fn small_primes() -> Vec<u32> {
    let limit = 2000usize;
    let mut composite = vec![false; limit];
    let mut out = Vec::new();
    for i in 3..limit {
        if !composite[i] && i % 2 == 1 {
            out.push(i as u32);
            for m in (i * i..limit).step_by(i) {
                composite[m] = true;
            }
        }
    }
    out
}

/// A random prime of exactly `bits` bits (top two bits set): an incremental
/// search from a random odd start, sieved by the small primes, each survivor
/// tested by Miller–Rabin with random bases.
fn random_prime(bits: u32) -> Result<BigUint, TimelockError> {
    let primes = small_primes();
    let rounds = miller_rabin_rounds(bits);
    loop {
        let start = random_odd(bits)?;
        let residues: Vec<u32> = primes
            .iter()
            .map(|&p| (&start % p).to_u32().unwrap_or(0))
            .collect();
        // Search start, start + 2, ... while the top bits stay as they were.
        'candidates: for delta in (0u32..1 << 16).step_by(2) {
            for (&p, &r) in primes.iter().zip(&residues) {
                // A multiple of a small prime (candidates are far above 2000,
                // since primes have at least ABSOLUTE_MIN_BITS / 2 bits).
                if (u64::from(r) + u64::from(delta)) % u64::from(p) == 0 {
                    continue 'candidates;
                }
            }
            let candidate = &start + delta;
            if candidate.bits() != u64::from(bits) {
                break;
            }
            if is_probable_prime(&candidate, rounds)? {
                return Ok(candidate);
            }
        }
    }
}

/// Miller–Rabin rounds for a random candidate of `bits` bits: for random
/// (not adversarial) candidates the error falls fast with size (Damgård,
/// Landrock and Pomerance 1993; FIPS 186-5 table B.1 asks 5 rounds at 1024
/// bits for 2^-100), and small sizes get many rounds since they cost nothing.
fn miller_rabin_rounds(bits: u32) -> u32 {
    match bits {
        1024.. => 6,
        512.. => 10,
        256.. => 20,
        _ => 40,
    }
}

/// Miller–Rabin with base 2 first (cheap and rejects most composites), then
/// `rounds` random bases.
fn is_probable_prime(n: &BigUint, rounds: u32) -> Result<bool, TimelockError> {
    let two = BigUint::from(2u32);
    if *n < BigUint::from(4u32) {
        return Ok(*n == two || *n == BigUint::from(3u32));
    }
    if n.is_even() {
        return Ok(false);
    }
    let n_minus_1 = n - 1u32;
    let s = n_minus_1.trailing_zeros().unwrap_or(0);
    let d = &n_minus_1 >> s;
    let witness = |a: &BigUint| -> bool {
        // true: `a` proves n composite.
        let mut x = a.modpow(&d, n);
        if x.is_one() || x == n_minus_1 {
            return false;
        }
        for _ in 1..s {
            x = &x * &x % n;
            if x == n_minus_1 {
                return false;
            }
        }
        true
    };
    if n > &BigUint::from(5u32) && witness(&two) {
        return Ok(false);
    }
    let width = n.to_bytes_be().len() + 8;
    let mut bytes = vec![0u8; width];
    let span = n - 3u32; // bases in 2..=n-2
    for _ in 0..rounds {
        if span.is_zero() {
            break;
        }
        random_bytes(&mut bytes)?;
        let a = BigUint::from_bytes_be(&bytes) % &span + 2u32;
        if witness(&a) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miller_rabin_knows_small_numbers() {
        let primes = small_primes();
        for n in 2u32..2000 {
            let expected = n == 2 || primes.contains(&n);
            assert_eq!(
                is_probable_prime(&BigUint::from(n), 20).expect("rng"),
                expected,
                "{n}"
            );
        }
        // Carmichael numbers fool Fermat, not Miller–Rabin.
        for c in [561u32, 1105, 1729, 2465, 2821, 6601, 8911, 41041, 825_265] {
            assert!(
                !is_probable_prime(&BigUint::from(c), 20).expect("rng"),
                "{c}"
            );
        }
        // 2^127 - 1 is prime; 2^127 + 1 is not.
        let m127 = (BigUint::one() << 127u32) - 1u32;
        assert!(is_probable_prime(&m127, 20).expect("rng"));
        assert!(!is_probable_prime(&(m127 + 2u32), 20).expect("rng"));
    }

    #[test]
    fn random_primes_have_exactly_the_bits_asked() {
        for bits in [32u32, 48, 64, 128] {
            let p = random_prime(bits).expect("prime");
            assert_eq!(p.bits(), u64::from(bits));
            assert!(is_probable_prime(&p, 40).expect("rng"));
        }
    }

    #[test]
    fn squarings_for_rounds_up_and_refuses_a_zero_rate() {
        assert_eq!(
            squarings_for(Duration::from_secs(30), 400_000).ok(),
            Some(12_000_000)
        );
        assert_eq!(squarings_for(Duration::from_nanos(1), 1).ok(), Some(1));
        assert_eq!(squarings_for(Duration::ZERO, 1).ok(), Some(0));
        assert!(matches!(
            squarings_for(Duration::from_secs(1), 0),
            Err(TimelockError::BadRate(_))
        ));
        assert!(matches!(
            squarings_for(Duration::MAX, u64::MAX),
            Err(TimelockError::BadRate(_))
        ));
    }
}
