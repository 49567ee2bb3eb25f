//! What an operation did, and the recorder that stamps calls and answers
//! with one logical clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The most operations a [`Recorder`] keeps unless told otherwise.
pub const MAX_OPERATIONS: usize = 1_000_000;

/// One operation on a register and the answer it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op<V> {
    /// A read that saw `seen` (`None`: the register was never written).
    Read {
        /// The value returned.
        seen: Option<V>,
    },
    /// A write of `value` (it always succeeds when it takes effect).
    Write {
        /// The value written.
        value: V,
    },
    /// Compare-and-set: if the register holds `expected`, replace it with
    /// `new`. `swapped` is the answer; it means nothing for an operation
    /// without an answer, which may or may not have swapped.
    Cas {
        /// The value the register must hold (`None`: never written).
        expected: Option<V>,
        /// The value it then holds.
        new: V,
        /// Whether the swap happened.
        swapped: bool,
    },
}

/// One operation of a history: which register, what, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<K, V> {
    /// Who issued it (for reports only; the check does not use it).
    pub client: u64,
    /// The register.
    pub key: K,
    /// The operation and its answer.
    pub op: Op<V>,
    /// When it was called (before the request left the client).
    pub call: u64,
    /// When its answer arrived (after), or `None` if it has none: it may then
    /// take effect at any time after `call`, or never.
    pub ret: Option<u64>,
}

/// A call's time, handed out by [`Recorder::invoke`]. Pass it back with the
/// outcome; drop it if the operation certainly did not take effect.
#[derive(Debug)]
#[must_use = "record the outcome, or drop the call if it certainly had no effect"]
pub struct Invocation(u64);

impl Invocation {
    /// The call's time.
    pub fn time(&self) -> u64 {
        self.0
    }
}

/// The recorder kept more operations than its cap: the history is
/// incomplete and must not be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the history holds more than {cap} operations; {dropped} were dropped")]
pub struct Overflow {
    /// The cap.
    pub cap: usize,
    /// How many operations did not fit.
    pub dropped: u64,
}

/// Records a history from many tasks at once. Times come from one counter
/// that every call and answer advances, so an answer recorded before a call
/// (in real time) always has the smaller time: the order the check relies on.
#[derive(Debug)]
pub struct Recorder<K, V> {
    clock: AtomicU64,
    cap: usize,
    dropped: AtomicU64,
    ops: Mutex<Vec<Operation<K, V>>>,
}

impl<K, V> Default for Recorder<K, V> {
    fn default() -> Self {
        Recorder::with_cap(MAX_OPERATIONS)
    }
}

impl<K, V> Recorder<K, V> {
    /// An empty recorder that keeps at most `cap` operations.
    pub fn with_cap(cap: usize) -> Recorder<K, V> {
        Recorder {
            clock: AtomicU64::new(0),
            cap,
            dropped: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Stamps a call. Take it just before the request leaves.
    pub fn invoke(&self) -> Invocation {
        Invocation(self.tick())
    }

    /// Records an operation that got its answer, stamped now.
    pub fn answered(&self, call: Invocation, client: u64, key: K, op: Op<V>) {
        let ret = self.tick();
        self.push(Operation {
            client,
            key,
            op,
            call: call.0,
            ret: Some(ret),
        });
    }

    /// Records an operation whose outcome is unknown (it may still take
    /// effect later).
    pub fn unanswered(&self, call: Invocation, client: u64, key: K, op: Op<V>) {
        self.push(Operation {
            client,
            key,
            op,
            call: call.0,
            ret: None,
        });
    }

    fn push(&self, op: Operation<K, V>) {
        // A panic elsewhere while holding the lock leaves the vector whole
        // (pushes do not panic halfway), so a poisoned lock is still usable.
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        if ops.len() < self.cap {
            ops.push(op);
        } else {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The operations recorded so far, in the order their outcomes were
    /// recorded; refused if any did not fit under the cap.
    pub fn history(&self) -> Result<Vec<Operation<K, V>>, Overflow>
    where
        K: Clone,
        V: Clone,
    {
        let dropped = self.dropped.load(Ordering::SeqCst);
        if dropped > 0 {
            return Err(Overflow {
                cap: self.cap,
                dropped,
            });
        }
        Ok(self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}
