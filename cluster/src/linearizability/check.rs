//! The search: Wing and Gong's, with Lowe's memoization, one key at a time.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

use super::history::{Op, Operation};

/// Steps the search may take over a whole history before it gives up with
/// [`Verdict::Undecided`] (deciding linearizability is NP-complete; a test
/// wants an answer in bounded time).
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Verdict<K, V> {
    /// Every key's operations can be put in an order that respects real time
    /// and gives the answers that were observed.
    Linearizable,
    /// The operations on `key` cannot be so ordered.
    NotLinearizable {
        /// The register.
        key: K,
        /// The operation that the longest attempt could not linearize before
        /// its answer (usually the read or CAS whose answer is wrong).
        blocked: Operation<K, V>,
        /// The most operations of `key` that any attempt linearized.
        deepest: usize,
        /// How many operations `key` has.
        of: usize,
    },
    /// The search on `key` ran out of its step budget.
    Undecided {
        /// The register.
        key: K,
        /// Steps taken in all.
        steps: u64,
    },
    /// The history itself is wrong: operation `index` answered before it was
    /// called.
    Malformed {
        /// Its position in the history.
        index: usize,
    },
}

impl<K, V> Verdict<K, V> {
    /// Whether the history passed.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Checks `history` against one register per key, each starting
/// unwritten, within `budget` steps.
pub fn check<K, V>(history: &[Operation<K, V>], budget: u64) -> Verdict<K, V>
where
    K: Ord + Clone,
    V: Clone + Eq + Hash,
{
    let mut by_key: BTreeMap<&K, Vec<&Operation<K, V>>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if op.ret.is_some_and(|r| r < op.call) {
            return Verdict::Malformed { index };
        }
        // A read without an answer observed nothing: it constrains nothing.
        if matches!(op.op, Op::Read { .. }) && op.ret.is_none() {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut steps = 0u64;
    for (key, ops) in by_key {
        match register(&ops, budget, &mut steps) {
            Search::Found => {}
            Search::Blocked { op, deepest } => {
                return Verdict::NotLinearizable {
                    key: key.clone(),
                    blocked: ops[op].clone(),
                    deepest,
                    of: ops.len(),
                };
            }
            Search::OutOfSteps => {
                return Verdict::Undecided {
                    key: key.clone(),
                    steps,
                };
            }
        }
    }
    Verdict::Linearizable
}

enum Search {
    Found,
    Blocked { op: usize, deepest: usize },
    OutOfSteps,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or an answer in the time-ordered list of events.
struct Node {
    op: usize,
    is_call: bool,
    /// The call's answer, or the answer's call.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The events of one register, doubly linked so a linearized operation can
/// be taken out and put back in constant time (Knuth's dancing links).
struct Events {
    nodes: Vec<Node>,
}

impl Events {
    fn new<K, V>(ops: &[&Operation<K, V>]) -> Events {
        // Sort key: finite times before the answers at infinity, then the
        // time, then calls before answers (an answer and a call at the same
        // instant overlap), then the operation for a stable order.
        let mut order: Vec<((bool, u64, bool, usize), bool)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push(((false, op.call, false, i), true));
            let ret = match op.ret {
                Some(r) => (false, r, true, i),
                None => (true, 0, true, i),
            };
            order.push((ret, false));
        }
        order.sort_unstable_by_key(|(k, _)| *k);
        let mut nodes = Vec::with_capacity(order.len() + 1);
        nodes.push(Node {
            op: NIL,
            is_call: false,
            partner: NIL,
            prev: NIL,
            next: if order.is_empty() { NIL } else { 1 },
        });
        let mut call_node = vec![NIL; ops.len()];
        let mut ret_node = vec![NIL; ops.len()];
        for (pos, ((_, _, _, op), is_call)) in order.iter().enumerate() {
            let at = pos + 1;
            if *is_call {
                call_node[*op] = at;
            } else {
                ret_node[*op] = at;
            }
            nodes.push(Node {
                op: *op,
                is_call: *is_call,
                partner: NIL,
                prev: pos,
                next: if at == order.len() { NIL } else { at + 1 },
            });
        }
        for (c, r) in call_node.iter().zip(&ret_node) {
            nodes[*c].partner = *r;
            nodes[*r].partner = *c;
        }
        Events { nodes }
    }

    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    fn unlink(&mut self, x: usize) {
        let (prev, next) = (self.nodes[x].prev, self.nodes[x].next);
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, x: usize) {
        let (prev, next) = (self.nodes[x].prev, self.nodes[x].next);
        self.nodes[prev].next = x;
        if next != NIL {
            self.nodes[next].prev = x;
        }
    }

    /// Takes a linearized operation (its call and answer) out of the list.
    fn lift(&mut self, call: usize) {
        let ret = self.nodes[call].partner;
        self.unlink(call);
        self.unlink(ret);
    }

    /// Puts it back, undoing [`Events::lift`] (in reverse order).
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].partner;
        self.relink(ret);
        self.relink(call);
    }
}

/// The register after `op`, if `op` may take effect on `state` with the
/// answer it got.
fn step<V: Clone + Eq>(state: &Option<V>, op: &Op<V>, answered: bool) -> Option<Option<V>> {
    match op {
        Op::Read { seen } => (state == seen).then(|| state.clone()),
        Op::Write { value } => Some(Some(value.clone())),
        Op::Cas {
            expected,
            new,
            swapped,
        } => {
            let holds = state == expected;
            if !answered {
                // Not swapping is what taking effect after everything else
                // gives, so only the swap needs trying here.
                return Some(if holds {
                    Some(new.clone())
                } else {
                    state.clone()
                });
            }
            match (holds, swapped) {
                (true, true) => Some(Some(new.clone())),
                (false, false) => Some(state.clone()),
                _ => None,
            }
        }
    }
}

fn register<K, V: Clone + Eq + Hash>(
    ops: &[&Operation<K, V>],
    budget: u64,
    steps: &mut u64,
) -> Search {
    let mut events = Events::new(ops);
    let mut state: Option<V> = None;
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, Option<V>)> = HashSet::new();
    // The calls linearized so far, with the register before each.
    let mut stack: Vec<(usize, Option<V>)> = Vec::new();
    let mut deepest = 0;
    // The answer the longest attempt could not get past, and that length.
    let mut stuck: Option<(usize, usize)> = None;
    let mut entry = events.first();
    while events.first() != NIL {
        *steps += 1;
        if *steps > budget {
            return Search::OutOfSteps;
        }
        if entry == NIL {
            // Unreachable: the list always ends with an answer, where the
            // walk stops. Kept as an answer rather than a panic.
            return Search::Blocked { op: 0, deepest };
        }
        let node = &events.nodes[entry];
        let i = node.op;
        if node.is_call {
            let op = ops[i];
            if let Some(after) = step(&state, &op.op, op.ret.is_some()) {
                linearized[i / 64] |= 1 << (i % 64);
                if seen.insert((linearized.clone(), after.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, after)));
                    deepest = deepest.max(stack.len());
                    events.lift(entry);
                    entry = events.first();
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = events.nodes[entry].next;
        } else {
            // The answer of an operation not linearized yet: undo the latest
            // choice and try the call after it.
            if stuck.is_none_or(|(depth, _)| stack.len() > depth) {
                stuck = Some((stack.len(), i));
            }
            let Some((call, before)) = stack.pop() else {
                let op = stuck.map_or(i, |(_, op)| op);
                return Search::Blocked { op, deepest };
            };
            let j = events.nodes[call].op;
            linearized[j / 64] &= !(1 << (j % 64));
            state = before;
            events.unlift(call);
            entry = events.nodes[call].next;
        }
    }
    Search::Found
}
