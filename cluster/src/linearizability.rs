//! A linearizability checker for a key-value store of registers with read,
//! write and compare-and-set, and a recorder for the histories that tests
//! feed it.
//!
//! A history is linearizable if every operation can be given one instant
//! between its call and its answer such that, taken in the order of those
//! instants, the answers are the ones a single register per key would give.
//! Keys are independent registers, so each key's sub-history is checked on
//! its own (linearizability is compositional: Herlihy and Wing, *locality*),
//! which keeps every search small.
//!
//! The search is Wing and Gong's (*Testing and verifying concurrent objects*,
//! 1993) with Lowe's memoization (*Testing for linearizability*, 2017): walk
//! the calls and answers in time order; linearize a pending call as soon as
//! the register allows it; on reaching the answer of an operation that is not
//! yet linearized, undo the latest choice and try the next call instead; and
//! never explore twice a configuration (the set of operations linearized,
//! the register's value) that was explored already. Porcupine and Knossos'
//! `wgl` use the same procedure.
//!
//! An operation whose outcome the client does not know (it timed out, or
//! failed in a way that leaves open whether it took effect) has no answer:
//! its answer is placed at infinity, so it may take effect at any point after
//! its call, or never (taking effect after everything else is the same as
//! never). An operation that certainly did not take effect is left out of
//! the history, and so is a read without an answer (it observed nothing).
//!
//! # Layout
//!
//! - `history`: what one operation did ([`Op`], [`Operation`]) and the
//!   thread-safe [`Recorder`] that stamps calls and answers.
//! - `check`: the search ([`check`]) and its [`Verdict`].

mod check;
mod history;
#[cfg(test)]
mod tests;

pub use check::{DEFAULT_BUDGET, Verdict, check};
pub use history::{Invocation, MAX_OPERATIONS, Op, Operation, Overflow, Recorder};
