//! Per-source budgets renewed each second: relayed transactions per peer, and
//! transactions per client address on the RPC. Honest sources send what
//! their users sent; one pushing more than its budget is refused the rest of
//! the second, so no single source fills the pool however it stamps (the
//! pool's per-sender share then bounds each signer in turn).

use std::collections::HashMap;
use std::hash::Hash;

/// How many sources one second's budget tracks at most. A new source past it
/// is refused until the second turns: the map stays bounded whatever the
/// number of addresses an attacker has.
pub const MAX_SOURCES: usize = 65_536;

/// A budget of `per_sec` items per source, renewed each second.
#[derive(Debug)]
pub struct PerSecond<K> {
    per_sec: usize,
    second: u64,
    used: HashMap<K, usize>,
}

impl<K: Hash + Eq> PerSecond<K> {
    /// `per_sec` items per source each second (0: no limit).
    pub fn new(per_sec: usize) -> PerSecond<K> {
        PerSecond {
            per_sec,
            second: 0,
            used: HashMap::new(),
        }
    }

    /// Whether `source` may send `n` more items at `now_ms`; counts them if so.
    pub fn allow(&mut self, source: K, n: usize, now_ms: u64) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.used.clear();
        }
        if self.used.len() >= MAX_SOURCES && !self.used.contains_key(&source) {
            return false;
        }
        let used = self.used.entry(source).or_default();
        if used.saturating_add(n) > self.per_sec {
            return false;
        }
        *used += n;
        true
    }

    /// The budget per source and second (0: none).
    pub fn per_sec(&self) -> usize {
        self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_sends_its_share_per_second_and_no_more() {
        let mut limit = PerSecond::new(100);
        assert!(limit.allow('a', 90, 5_000));
        assert!(limit.allow('a', 10, 5_999));
        assert!(!limit.allow('a', 1, 5_999), "over its share");
        assert!(limit.allow('b', 100, 5_999), "another source has its own");
        assert!(limit.allow('a', 1, 6_000), "a new second, a new share");
        assert!(
            !limit.allow('a', 101, 6_001),
            "more than a second's share at once"
        );
        assert!(!limit.allow('c', usize::MAX, 6_001), "no overflow");
    }

    #[test]
    fn no_budget_means_no_limit() {
        let mut limit = PerSecond::new(0);
        assert!(limit.allow(1u32, usize::MAX, 0));
        assert!(limit.allow(1u32, usize::MAX, 0));
    }

    #[test]
    fn the_sources_tracked_are_bounded() {
        let mut limit = PerSecond::new(10);
        for i in 0..MAX_SOURCES as u32 {
            assert!(limit.allow(i, 1, 1_000));
        }
        assert!(
            !limit.allow(u32::MAX, 1, 1_000),
            "a new source past the bound waits"
        );
        assert!(limit.allow(7, 1, 1_000), "a tracked one keeps its budget");
        assert!(
            limit.allow(u32::MAX, 1, 2_000),
            "the next second starts over"
        );
    }
}
