//! Test-only misbehaviour (feature `fault-injection`): switches that make a
//! member break a promise on purpose, so a test can show that the checks
//! meant to catch that breach do catch it. The feature is on only for this
//! crate's own tests; every switch starts off.

use std::sync::atomic::{AtomicBool, Ordering};

/// The switches of one member.
#[derive(Debug, Default)]
pub struct Faults {
    stale_reads: AtomicBool,
}

impl Faults {
    /// While on, a `Consistency::Linearizable` read skips the read index and
    /// answers from this member's state as it is, however stale.
    pub fn serve_stale_reads(&self, on: bool) {
        self.stale_reads.store(on, Ordering::SeqCst);
    }

    /// Whether linearizable reads skip the read index.
    pub fn stale_reads(&self) -> bool {
        self.stale_reads.load(Ordering::SeqCst)
    }
}
