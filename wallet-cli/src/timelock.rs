//! Time-lock puzzles from the command line: measuring this machine's squaring
//! rate, sealing, and solving with a progress bar and a checkpoint side file
//! that a later run resumes from.
//!
//! The puzzle itself is `pyralog_consensus::timelock`; the sealed format is
//! `pyralog_ledger::timelock`. What is here is the clock and the files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use num_bigint::BigUint;
use pyralog_consensus::timelock::{self, Bounds, Checkpoint, SealParams, Solver};
use pyralog_ledger::timelock::{Puzzle, SealedValue};
use pyralog_ledger::{Decode, Encode};

/// Squarings per step of the solver: about 70 ms at 2048 bits here, so the
/// progress bar moves smoothly and a step's cost is invisible.
pub const STEP: u64 = 1 << 15;
/// How often `open` saves its checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// How long sealing measures the squaring rate when none is stated.
pub const CALIBRATION: Duration = Duration::from_millis(500);

/// A squaring rate and where it came from.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Squarings per second.
    pub per_sec: u64,
    /// Measured on this machine (`true`) or stated with `--rate` (`false`).
    pub measured: bool,
}

/// Measures the solver's squaring rate at `bits` on this machine for about
/// `how_long`: the real solver, on a throwaway modulus of that size.
pub fn measure_rate(bits: u32, how_long: Duration) -> Result<f64> {
    let puzzle = timelock::calibration_puzzle(bits, &Bounds::STANDARD)?;
    let mut solver = Solver::new(&puzzle, &Bounds::STANDARD)?;
    solver.step(256); // warm up
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < how_long {
        done += solver.step(STEP);
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Measures num-bigint's plain squaring, `x = x * x mod N`, at `bits` for
/// about `how_long`: the baseline the solver is compared with.
pub fn measure_raw_rate(bits: u32, how_long: Duration) -> Result<f64> {
    let puzzle = timelock::calibration_puzzle(bits, &Bounds::STANDARD)?;
    let n = BigUint::from_bytes_be(&puzzle.modulus);
    let mut x = BigUint::from(3u32);
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < how_long {
        for _ in 0..256 {
            x = &x * &x % &n;
        }
        done += 256;
    }
    std::hint::black_box(&x);
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// The rate to seal with: `stated`, or else measured for [`CALIBRATION`].
pub fn rate(stated: Option<u64>, bits: u32) -> Result<Rate> {
    match stated {
        Some(0) => bail!("--rate must be at least 1 squaring per second"),
        Some(per_sec) => Ok(Rate {
            per_sec,
            measured: false,
        }),
        None => Ok(Rate {
            per_sec: (measure_rate(bits, CALIBRATION)? as u64).max(1),
            measured: true,
        }),
    }
}

/// What sealing made.
#[derive(Debug)]
pub struct Sealed {
    /// The sealed value (a file's or a record's bytes).
    pub value: SealedValue,
    /// The rate the squarings were calibrated to.
    pub rate: Rate,
    /// How long sealing took (primes, the shortcut, encryption), without the
    /// calibration.
    pub took: Duration,
}

/// Seals `data` for about `delay` at `rate` (or this machine's measured rate)
/// with a `bits`-bit modulus; every parameter is checked before any work.
pub fn seal(data: &[u8], delay: Duration, rate_stated: Option<u64>, bits: u32) -> Result<Sealed> {
    // Check what can be checked without the rate first, so a bad --bits fails
    // before the calibration runs.
    timelock::calibration_puzzle(bits, &Bounds::STANDARD)?;
    let rate = rate(rate_stated, bits)?;
    let squarings = timelock::squarings_for(delay, rate.per_sec)?;
    let started = Instant::now();
    let value = timelock::seal(data, SealParams { bits, squarings }, &Bounds::STANDARD)?;
    Ok(Sealed {
        value,
        rate,
        took: started.elapsed(),
    })
}

/// Reads and decodes a sealed file.
pub fn read_sealed(path: &Path) -> Result<SealedValue> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    SealedValue::from_bytes(&bytes)
        .with_context(|| format!("{} is not a readable sealed file", path.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash
/// never leaves half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Where `open` keeps its progress for the sealed file `input`.
pub fn checkpoint_path(input: &Path) -> PathBuf {
    let mut p = input.as_os_str().to_owned();
    p.push(".progress");
    PathBuf::from(p)
}

/// How a solve went.
#[derive(Debug)]
pub struct Solved {
    /// The puzzle's answer.
    pub answer: Vec<u8>,
    /// Squarings that a checkpoint had already done.
    pub resumed_at: u64,
    /// Squarings done by this run.
    pub squarings: u64,
    /// How long this run took.
    pub took: Duration,
}

impl Solved {
    /// This run's squarings per second.
    pub fn rate(&self) -> f64 {
        self.squarings as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// Solves `puzzle`, resuming from the checkpoint file if there is one and
/// saving progress to it every [`CHECKPOINT_EVERY`]; a progress bar shows on a
/// terminal. The checkpoint stays in place: the caller removes it once the
/// answer proved right.
pub fn solve(puzzle: &Puzzle, checkpoint_file: Option<&Path>) -> Result<Solved> {
    let bounds = Bounds::STANDARD;
    let mut solver = match checkpoint_file.filter(|p| p.exists()) {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Checkpoint::from_bytes(&bytes)
                .map_err(anyhow::Error::from)
                .and_then(|c| Ok(Solver::resume(puzzle, &bounds, &c)?))
                .with_context(|| {
                    format!(
                        "cannot resume from {} (delete it to start over)",
                        path.display()
                    )
                })?
        }
        None => Solver::new(puzzle, &bounds)?,
    };
    let resumed_at = solver.done();
    let show = std::io::stderr().is_terminal() && std::io::stdout().is_terminal();
    let bar = if show {
        let bar = ProgressBar::new(solver.total());
        bar.set_style(
            ProgressStyle::with_template(
                "opening {bar:30} {human_pos}/{human_len} squarings ({per_sec}, ~{eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(resumed_at);
        bar.reset_eta();
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut saved = Instant::now();
    while !solver.is_finished() {
        solver.step(STEP);
        bar.set_position(solver.done());
        if let Some(path) = checkpoint_file
            && saved.elapsed() >= CHECKPOINT_EVERY
        {
            write_atomically(path, &solver.checkpoint().to_bytes())?;
            saved = Instant::now();
        }
    }
    bar.finish_and_clear();
    let took = started.elapsed();
    let answer = solver
        .answer()
        .ok_or_else(|| anyhow!("the solver stopped before the end"))?;
    Ok(Solved {
        answer,
        resumed_at,
        squarings: solver.done() - resumed_at,
        took,
    })
}

/// Opens `sealed` with a solved answer; when the answer came partly from a
/// checkpoint, a mismatch says the checkpoint may be the culprit.
pub fn open_with(
    sealed: &SealedValue,
    solved: &Solved,
    checkpoint: Option<&Path>,
) -> Result<Vec<u8>> {
    sealed.open(&solved.answer).map_err(|e| {
        let hint = match checkpoint {
            Some(path) if solved.resumed_at > 0 => format!(
                "; this run resumed from {} at {} squarings: if that file was altered, delete it \
                 and open again from the start",
                path.display(),
                solved.resumed_at
            ),
            _ => String::new(),
        };
        anyhow!("{e}{hint}")
    })
}
