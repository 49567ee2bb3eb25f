//! An in-process transport for tests: members in one process call each
//! other's handlers directly, through the same encoding and caps as the real
//! transport. Links can be cut to make members unreachable, and calls
//! delayed by random amounts so that they overtake each other.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::Error;
use crate::member::Member;
use crate::types::NodeId;

/// The in-process network: who is registered, which members are cut off.
#[derive(Default)]
pub struct MemNet {
    members: Mutex<HashMap<NodeId, Weak<Member>>>,
    isolated: Mutex<BTreeSet<NodeId>>,
    /// The longest delay of a call, and the state of the generator that
    /// picks each one, if calls are delayed.
    jitter: Mutex<Option<(Duration, u64)>>,
    /// Per link (from, to): calls in flight now, and the most ever.
    flying: Mutex<HashMap<(NodeId, NodeId), (usize, usize)>>,
}

impl std::fmt::Debug for MemNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNet").finish_non_exhaustive()
    }
}

impl MemNet {
    /// An empty network.
    pub fn new() -> Arc<MemNet> {
        Arc::new(MemNet::default())
    }

    /// The transport member `from` sends with.
    pub fn transport(self: &Arc<Self>, from: NodeId) -> Arc<MemTransport> {
        Arc::new(MemTransport {
            net: Arc::clone(self),
            from,
        })
    }

    /// Makes `member` reachable under its id.
    pub fn register(&self, member: &Arc<Member>) {
        if let Ok(mut m) = self.members.lock() {
            m.insert(member.id(), Arc::downgrade(member));
        }
    }

    /// Delays every call by a random time below `max` (from a generator
    /// seeded with `seed`), or, with `None`, no longer.
    pub fn jitter(&self, max: Option<Duration>, seed: u64) {
        if let Ok(mut j) = self.jitter.lock() {
            *j = max.map(|m| (m, seed | 1));
        }
    }

    /// The most calls that were ever in flight at once from `from` to `to`.
    pub fn most_in_flight(&self, from: NodeId, to: NodeId) -> usize {
        self.flying
            .lock()
            .ok()
            .and_then(|f| f.get(&(from, to)).map(|(_, most)| *most))
            .unwrap_or(0)
    }

    fn count(&self, link: (NodeId, NodeId), up: bool) {
        if let Ok(mut f) = self.flying.lock() {
            let (now, most) = f.entry(link).or_default();
            if up {
                *now += 1;
                *most = (*most).max(*now);
            } else {
                *now = now.saturating_sub(1);
            }
        }
    }

    /// The next call's delay.
    fn delay(&self) -> Duration {
        let Ok(mut j) = self.jitter.lock() else {
            return Duration::ZERO;
        };
        let Some((max, state)) = j.as_mut() else {
            return Duration::ZERO;
        };
        // xorshift64
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(*state % nanos)
    }

    /// Cuts `id` off from every other member (both ways), or heals it.
    pub fn isolate(&self, id: NodeId, cut: bool) {
        if let Ok(mut s) = self.isolated.lock() {
            if cut {
                s.insert(id);
            } else {
                s.remove(&id);
            }
        }
    }

    fn target(&self, from: NodeId, to: NodeId) -> Result<Arc<Member>, Error> {
        let cut = self
            .isolated
            .lock()
            .map(|s| s.contains(&from) || s.contains(&to))
            .unwrap_or(true);
        if cut {
            return Err(Error::Unreachable(to, "the link is cut".into()));
        }
        self.members
            .lock()
            .ok()
            .and_then(|m| m.get(&to).and_then(Weak::upgrade))
            .ok_or_else(|| Error::Unreachable(to, "no such member is running".into()))
    }
}

/// One member's side of the [`MemNet`].
pub struct MemTransport {
    net: Arc<MemNet>,
    from: NodeId,
}

impl super::Transport for MemTransport {
    fn call(
        &self,
        to: NodeId,
        _addr: &str,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, Error>> {
        let delay = self.net.delay();
        let (net, from) = (Arc::clone(&self.net), self.from);
        net.count((from, to), true);
        Box::pin(async move {
            // Counted down however the call ends, dropped included.
            let _flying = Flying {
                net: Arc::clone(&net),
                link: (from, to),
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let target = net.target(from, to);
            let reply = target?.handle(from, &request).await;
            // A link cut while the call was in flight loses the reply.
            net.target(from, to)?;
            Ok(reply)
        })
    }
}

/// A call in flight on a link, for [`MemNet::most_in_flight`].
struct Flying {
    net: Arc<MemNet>,
    link: (NodeId, NodeId),
}

impl Drop for Flying {
    fn drop(&mut self) {
        self.net.count(self.link, false);
    }
}
