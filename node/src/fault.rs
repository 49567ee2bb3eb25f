//! Test-only crash points (feature `fault-injection`, which only the
//! devnet's own tests turn on): a node told so by its environment dies on
//! the spot, as SIGKILL would, at a chosen step of signing, so a test can
//! check that its cluster's next leader never signs against what it did.
//!
//! `PYRALOG_FAULT_CRASH=before-intent|after-intent|after-send` names the
//! step; `PYRALOG_FAULT_CRASH_AFTER=N` (default 1) the how-manyth turn that
//! signs something dies there. Without the feature this module is empty and
//! the environment is never read.

/// A step of a turn that signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Point {
    /// The engine's records are in the cluster's log; its intents are not.
    BeforeIntent,
    /// The intents are committed; nothing is sent yet.
    AfterIntent,
    /// The signed messages went out.
    AfterSend,
}

#[cfg(feature = "fault-injection")]
mod armed {
    use super::Point;
    use std::sync::atomic::{AtomicU64, Ordering};

    static SEEN: AtomicU64 = AtomicU64::new(0);

    fn wanted() -> Option<(Point, u64)> {
        static WANTED: std::sync::OnceLock<Option<(Point, u64)>> = std::sync::OnceLock::new();
        *WANTED.get_or_init(|| {
            let point = match std::env::var("PYRALOG_FAULT_CRASH").ok()?.as_str() {
                "before-intent" => Point::BeforeIntent,
                "after-intent" => Point::AfterIntent,
                "after-send" => Point::AfterSend,
                _ => return None,
            };
            let after = std::env::var("PYRALOG_FAULT_CRASH_AFTER")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            Some((point, after))
        })
    }

    pub(crate) fn at(point: Point) {
        let Some((want, after)) = wanted() else {
            return;
        };
        if want != point {
            return;
        }
        if SEEN.fetch_add(1, Ordering::Relaxed) + 1 < after {
            return;
        }
        tracing::error!(?point, "fault injection: dying here");
        if point == Point::AfterSend {
            // Let the swarm's task put the messages on the wire first.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        std::process::abort();
    }
}

/// Dies here if the environment asks for it (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
pub(crate) fn at(point: Point) {
    armed::at(point);
}

/// Never dies: the feature is off.
#[cfg(not(feature = "fault-injection"))]
pub(crate) fn at(_point: Point) {}
