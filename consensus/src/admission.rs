//! How much work a node asks of a new transaction: the stamp difficulty rises
//! with the load of the node's pool and falls back as it drains.
//!
//! The rule is a pure function of the pool's fill, so every node applies the
//! same one and a test can pin it: nothing extra while the pool is below an
//! eighth full, then one more bit each time its fill doubles (an eighth, a
//! quarter, a half, full), never below the chain's floor or above its ceiling.
//! One bit doubles the expected cost of a stamp, so a full pool asks sixteen
//! times the floor's work of each new write; a spammer pays for the pressure
//! it makes, and the honest client who reads the announced difficulty pays the
//! same price once.
//!
//! [`Mempool`] is the pool both engines keep: more work buys priority. It
//! serves the transactions whose stamps prove the most bits first (the oldest
//! first among equals), evicts the lowest when it is full and a better one
//! arrives, and holds at most a share of itself from any one sender, so no
//! single source fills it whatever its stamps.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use pyralog_ledger::block::VerifiedTx;
use pyralog_ledger::{Address, Hash, PowKey};

/// The difficulty, in leading zero bits, a node requires of a new
/// transaction's stamp when its pool holds `load` of `capacity`.
pub fn required_bits(floor: u32, ceiling: u32, load: usize, capacity: usize) -> u32 {
    let ceiling = ceiling.max(floor);
    if capacity == 0 {
        return ceiling;
    }
    // Steps of doubling above an eighth: load*8/capacity in [1,2) -> 1,
    // [2,4) -> 2, [4,8) -> 3, [8,..) -> 4.
    let eighths = (load as u128 * 8) / capacity as u128;
    let extra = if eighths == 0 {
        0
    } else {
        (128 - eighths.leading_zeros()).min(4)
    };
    floor.saturating_add(extra).min(ceiling)
}

/// How many of a pool of `capacity` one sender may hold: a sixteenth, but
/// never fewer than 64 (or the whole of a smaller pool), so a busy honest
/// account is not starved by the rule that stops a flood.
pub fn sender_share(capacity: usize) -> usize {
    (capacity / 16).max(64).min(capacity.max(1))
}

/// What [`Mempool::add`] did with a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// It waits in the pool.
    Added,
    /// It waits in the pool, and this lower one made room for it.
    Evicted(Hash),
    /// It was already waiting.
    Duplicate,
    /// The pool is full of transactions at least as good.
    Full {
        /// The pool's capacity.
        capacity: usize,
    },
    /// Its sender already has its share of the pool waiting.
    SenderFull {
        /// The most one sender may have waiting.
        limit: usize,
    },
}

#[derive(Debug)]
struct Entry {
    tx: VerifiedTx,
    bits: u32,
    seq: u64,
}

/// Transactions waiting for a batch or a block, best stamps first.
#[derive(Debug)]
pub struct Mempool {
    capacity: usize,
    per_sender: usize,
    pow: PowKey,
    next: u64,
    /// (more bits first, then arrival) → id.
    order: BTreeMap<(Reverse<u32>, u64), Hash>,
    entries: BTreeMap<Hash, Entry>,
    /// Arrival → arrival time, for the oldest.
    arrivals: BTreeMap<u64, u64>,
    /// Per sender: nonce → how many of its transactions with it wait.
    senders: BTreeMap<Address, BTreeMap<u64, usize>>,
}

impl Mempool {
    /// A pool of at most `capacity` transactions, at most `per_sender` of them
    /// from one sender, ranking stamps with `pow`.
    pub fn new(capacity: usize, per_sender: usize, pow: PowKey) -> Mempool {
        Mempool {
            capacity: capacity.max(1),
            per_sender: per_sender.max(1),
            pow,
            next: 0,
            order: BTreeMap::new(),
            entries: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            senders: BTreeMap::new(),
        }
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` waits.
    pub fn contains(&self, id: &Hash) -> bool {
        self.entries.contains_key(id)
    }

    /// When the transaction that has waited longest arrived.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.arrivals.first_key_value().map(|(_, t)| *t)
    }

    /// Offers a transaction that arrived at `now_ms`.
    pub fn add(&mut self, tx: VerifiedTx, now_ms: u64) -> Admit {
        let id = tx.id();
        if self.entries.contains_key(&id) {
            return Admit::Duplicate;
        }
        let sender = tx.tx().body.sender;
        let mine: usize = self.senders.get(&sender).map_or(0, |n| n.values().sum());
        if mine >= self.per_sender {
            // A sender at its share takes no one's place; a full pool is
            // the news when both hold.
            if self.entries.len() >= self.capacity {
                return Admit::Full {
                    capacity: self.capacity,
                };
            }
            return Admit::SenderFull {
                limit: self.per_sender,
            };
        }
        let bits = self.pow.bits(&id, tx.tx().stamp);
        let mut evicted = None;
        if self.entries.len() >= self.capacity {
            match self.order.last_key_value() {
                Some((&(Reverse(lowest), _), &victim)) if lowest < bits => {
                    self.remove(&victim);
                    evicted = Some(victim);
                }
                _ => {
                    return Admit::Full {
                        capacity: self.capacity,
                    };
                }
            }
        }
        self.next += 1;
        let seq = self.next;
        self.order.insert((Reverse(bits), seq), id);
        self.arrivals.insert(seq, now_ms);
        *self
            .senders
            .entry(sender)
            .or_default()
            .entry(tx.tx().body.nonce)
            .or_default() += 1;
        self.entries.insert(id, Entry { tx, bits, seq });
        match evicted {
            Some(v) => Admit::Evicted(v),
            None => Admit::Added,
        }
    }

    /// Takes out the transaction `id`, if it waits.
    pub fn remove(&mut self, id: &Hash) -> Option<VerifiedTx> {
        let e = self.entries.remove(id)?;
        self.order.remove(&(Reverse(e.bits), e.seq));
        self.arrivals.remove(&e.seq);
        let sender = e.tx.tx().body.sender;
        if let Some(nonces) = self.senders.get_mut(&sender) {
            let nonce = e.tx.tx().body.nonce;
            if let Some(n) = nonces.get_mut(&nonce) {
                *n -= 1;
                if *n == 0 {
                    nonces.remove(&nonce);
                }
            }
            if nonces.is_empty() {
                self.senders.remove(&sender);
            }
        }
        Some(e.tx)
    }

    /// Takes up to `n` transactions from the top. With `nonce_order` (an
    /// engine that executes in order), a sender's transaction is taken only
    /// when none of its with a lower nonce still waits, so a well-stamped later
    /// nonce never overtakes the earlier one it depends on; one skipped for
    /// that is looked at again (a few passes at most) once the earlier is out.
    pub fn take(&mut self, n: usize, nonce_order: bool) -> Vec<VerifiedTx> {
        const PASSES: usize = 4;
        let mut out = Vec::new();
        for _ in 0..PASSES {
            let before = out.len();
            let candidates: Vec<Hash> = self.order.values().copied().collect();
            for id in candidates {
                if out.len() >= n {
                    return out;
                }
                if nonce_order && !self.is_next_nonce(&id) {
                    continue;
                }
                out.extend(self.remove(&id));
            }
            if !nonce_order || out.len() == before {
                break;
            }
        }
        out
    }

    /// Whether `id` holds its sender's lowest waiting nonce.
    fn is_next_nonce(&self, id: &Hash) -> bool {
        let Some(e) = self.entries.get(id) else {
            return false;
        };
        let body = &e.tx.tx().body;
        self.senders
            .get(&body.sender)
            .and_then(|m| m.keys().next())
            .is_none_or(|lowest| *lowest >= body.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::{Admit, Mempool, required_bits};
    use pyralog_ledger::block::{VerifiedTx, verify_tx};
    use pyralog_ledger::{ChainId, Hash, Payload, PowKey, devkit};

    fn chain() -> ChainId {
        "admission".parse().expect("chain")
    }

    /// A transfer from key `who` at `nonce`, stamped at `bits` or more.
    fn tx(who: u64, nonce: u64, bits: u32) -> VerifiedTx {
        let key = devkit::key(who);
        let t = devkit::tx(
            &chain(),
            &key,
            nonce,
            0,
            Payload::Transfer {
                to: devkit::key(9999).address(),
                amount: 1,
            },
            bits,
        );
        verify_tx(t).expect("signed")
    }

    fn bits(t: &VerifiedTx) -> u32 {
        PowKey::for_chain(&chain()).bits(&t.id(), t.tx().stamp)
    }

    fn pool(capacity: usize, per_sender: usize) -> Mempool {
        Mempool::new(capacity, per_sender, PowKey::for_chain(&chain()))
    }

    #[test]
    fn more_work_is_served_first_then_the_oldest() {
        let txs: Vec<VerifiedTx> = (0..40).map(|i| tx(100 + i, 0, 0)).collect();
        let mut p = pool(100, 10);
        for (i, t) in txs.iter().enumerate() {
            assert_eq!(p.add(t.clone(), i as u64), Admit::Added);
        }
        assert_eq!(p.oldest_ms(), Some(0));
        let mut expected: Vec<(u32, usize)> =
            txs.iter().enumerate().map(|(i, t)| (bits(t), i)).collect();
        expected.sort_by_key(|(b, i)| (std::cmp::Reverse(*b), *i));
        let taken = p.take(40, false);
        let got: Vec<Hash> = taken.iter().map(VerifiedTx::id).collect();
        let want: Vec<Hash> = expected.iter().map(|(_, i)| txs[*i].id()).collect();
        assert_eq!(got, want);
        assert!(p.is_empty());
        assert_eq!(p.oldest_ms(), None);
    }

    #[test]
    fn a_full_pool_evicts_its_lowest_for_a_better_one_only() {
        let mut p = pool(4, 10);
        let low: Vec<VerifiedTx> = (0..4).map(|i| tx(200 + i, 0, 0)).collect();
        for t in &low {
            assert_eq!(p.add(t.clone(), 1), Admit::Added);
        }
        let weakest = low
            .iter()
            .enumerate()
            .min_by_key(|(i, t)| (bits(t), std::cmp::Reverse(*i)))
            .map(|(_, t)| t.id())
            .expect("some");
        // No better than the lowest: refused.
        let floor = bits(low.iter().find(|t| t.id() == weakest).expect("it"));
        let equal = (300..400)
            .map(|i| tx(i, 0, 0))
            .find(|t| bits(t) <= floor)
            .expect("a weak stamp");
        assert_eq!(p.add(equal, 2), Admit::Full { capacity: 4 });
        // Better: the lowest goes.
        let strong = tx(400, 0, 12);
        assert_eq!(p.add(strong.clone(), 3), Admit::Evicted(weakest));
        assert_eq!(p.len(), 4);
        assert!(!p.contains(&weakest));
        assert_eq!(p.take(1, false)[0].id(), strong.id());
    }

    #[test]
    fn one_sender_gets_its_share_and_no_more() {
        let mut p = pool(100, 2);
        assert_eq!(p.add(tx(500, 0, 0), 0), Admit::Added);
        assert_eq!(p.add(tx(500, 1, 0), 0), Admit::Added);
        assert_eq!(p.add(tx(500, 2, 0), 0), Admit::SenderFull { limit: 2 });
        assert_eq!(p.add(tx(501, 0, 0), 0), Admit::Added);
        let again = tx(501, 0, 0);
        assert_eq!(p.add(again, 0), Admit::Duplicate);
        // Once one is out, the sender has room again.
        let first = tx(500, 0, 0);
        assert!(p.remove(&first.id()).is_some());
        assert_eq!(p.add(tx(500, 2, 0), 0), Admit::Added);
    }

    #[test]
    fn a_later_nonce_never_overtakes_an_earlier_one() {
        // The later nonce has the better stamp.
        let seed = (600..800)
            .find(|s| bits(&tx(*s, 0, 0)) < 12)
            .expect("a weak stamp");
        let early = tx(seed, 0, 0);
        let late = tx(seed, 1, 12);
        let mut p = pool(100, 10);
        p.add(late.clone(), 0);
        p.add(early.clone(), 1);
        let one = p.take(1, true);
        assert_eq!(one[0].id(), early.id(), "nonce 0 first");
        p.add(early.clone(), 2);
        let both = p.take(2, true);
        let ids: Vec<Hash> = both.iter().map(VerifiedTx::id).collect();
        assert_eq!(ids, vec![early.id(), late.id()]);
        // Without the rule (an engine with no nonce order) the stamp decides.
        p.add(early.clone(), 3);
        p.add(late.clone(), 4);
        assert_eq!(p.take(1, false)[0].id(), late.id());
    }

    #[test]
    fn a_sender_may_hold_a_sixteenth_but_at_least_64() {
        use super::sender_share;
        assert_eq!(sender_share(50_000), 3125);
        assert_eq!(sender_share(400), 64);
        assert_eq!(sender_share(5), 5);
        assert_eq!(sender_share(0), 1);
    }

    #[test]
    fn the_floor_holds_while_the_pool_is_light() {
        assert_eq!(required_bits(8, 24, 0, 1000), 8);
        assert_eq!(required_bits(8, 24, 124, 1000), 8);
    }

    #[test]
    fn each_doubling_past_an_eighth_adds_a_bit() {
        assert_eq!(required_bits(8, 24, 125, 1000), 9);
        assert_eq!(required_bits(8, 24, 249, 1000), 9);
        assert_eq!(required_bits(8, 24, 250, 1000), 10);
        assert_eq!(required_bits(8, 24, 500, 1000), 11);
        assert_eq!(required_bits(8, 24, 999, 1000), 11);
        assert_eq!(required_bits(8, 24, 1000, 1000), 12);
        assert_eq!(required_bits(8, 24, 50_000, 1000), 12, "four bits at most");
    }

    #[test]
    fn the_ceiling_binds_and_a_bad_ceiling_is_the_floor() {
        assert_eq!(required_bits(8, 10, 1000, 1000), 10);
        assert_eq!(required_bits(8, 4, 1000, 1000), 8);
        assert_eq!(required_bits(8, 24, 1, 0), 24, "no room at all: the most");
    }

    #[test]
    fn it_never_falls_as_load_grows() {
        let mut last = 0;
        for load in 0..=2000 {
            let b = required_bits(3, 30, load, 1000);
            assert!(b >= last, "load {load}");
            last = b;
        }
    }
}
