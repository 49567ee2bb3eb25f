//! The checker on small histories whose verdict is known by hand.

use super::*;

type H = Vec<Operation<&'static str, u64>>;

fn at(key: &'static str, call: u64, ret: u64, op: Op<u64>) -> Operation<&'static str, u64> {
    Operation {
        client: call,
        key,
        op,
        call,
        ret: Some(ret),
    }
}

fn open(key: &'static str, call: u64, op: Op<u64>) -> Operation<&'static str, u64> {
    Operation {
        client: call,
        key,
        op,
        call,
        ret: None,
    }
}

fn w(v: u64) -> Op<u64> {
    Op::Write { value: v }
}

fn r(v: Option<u64>) -> Op<u64> {
    Op::Read { seen: v }
}

fn cas(expected: Option<u64>, new: u64, swapped: bool) -> Op<u64> {
    Op::Cas {
        expected,
        new,
        swapped,
    }
}

fn verdict(h: &H) -> Verdict<&'static str, u64> {
    check(h, DEFAULT_BUDGET)
}

fn passes(h: H) {
    let v = verdict(&h);
    assert!(v.is_linearizable(), "{v:?} for {h:?}");
}

fn fails_on(h: H, key: &str) -> Operation<&'static str, u64> {
    match verdict(&h) {
        Verdict::NotLinearizable {
            key: k, blocked, ..
        } => {
            assert_eq!(k, key);
            blocked
        }
        other => panic!("expected a violation on {key}, got {other:?} for {h:?}"),
    }
}

#[test]
fn an_empty_history_and_a_sequential_one_pass() {
    passes(Vec::new());
    passes(vec![
        at("k", 0, 1, r(None)),
        at("k", 2, 3, w(1)),
        at("k", 4, 5, r(Some(1))),
        at("k", 6, 7, cas(Some(1), 2, true)),
        at("k", 8, 9, cas(Some(1), 3, false)),
        at("k", 10, 11, r(Some(2))),
    ]);
}

#[test]
fn a_stale_read_is_rejected() {
    // The write was acknowledged before the read began.
    let blocked = fails_on(
        vec![
            at("k", 0, 1, w(1)),
            at("k", 2, 3, w(2)),
            at("k", 4, 5, r(Some(1))),
        ],
        "k",
    );
    assert_eq!(blocked.op, r(Some(1)));
    fails_on(vec![at("k", 0, 1, w(1)), at("k", 2, 3, r(None))], "k");
}

#[test]
fn a_lost_write_is_rejected() {
    // Both writes were acknowledged; later reads see the first, then nothing.
    fails_on(
        vec![
            at("k", 0, 1, w(1)),
            at("k", 2, 3, r(Some(1))),
            at("k", 4, 5, r(None)),
        ],
        "k",
    );
    // A value that nobody wrote.
    fails_on(vec![at("k", 0, 1, w(1)), at("k", 2, 3, r(Some(7)))], "k");
}

#[test]
fn a_cas_that_swaps_a_stale_value_is_rejected() {
    fails_on(
        vec![
            at("k", 0, 1, w(1)),
            at("k", 2, 3, w(2)),
            at("k", 4, 5, cas(Some(1), 3, true)),
        ],
        "k",
    );
    // Two CAS from the same value cannot both swap.
    fails_on(
        vec![
            at("k", 0, 1, w(1)),
            at("k", 2, 10, cas(Some(1), 2, true)),
            at("k", 3, 11, cas(Some(1), 3, true)),
        ],
        "k",
    );
}

#[test]
fn a_cas_that_refuses_the_current_value_is_rejected() {
    fails_on(
        vec![at("k", 0, 1, w(1)), at("k", 2, 3, cas(Some(1), 3, false))],
        "k",
    );
    fails_on(vec![at("k", 0, 1, cas(None, 3, false))], "k");
}

#[test]
fn concurrent_overlapping_operations_may_take_either_order() {
    // Two overlapping writes: later reads may agree on either, but not flip.
    passes(vec![
        at("k", 0, 10, w(1)),
        at("k", 1, 9, w(2)),
        at("k", 11, 12, r(Some(1))),
        at("k", 13, 14, r(Some(1))),
    ]);
    passes(vec![
        at("k", 0, 10, w(1)),
        at("k", 1, 9, w(2)),
        at("k", 11, 12, r(Some(2))),
    ]);
    fails_on(
        vec![
            at("k", 0, 10, w(1)),
            at("k", 1, 9, w(2)),
            at("k", 11, 12, r(Some(2))),
            at("k", 13, 14, r(Some(1))),
        ],
        "k",
    );
    // A read during a write sees the old or the new value; reads during it
    // that saw the new one forbid a later read of the old.
    passes(vec![
        at("k", 0, 1, w(1)),
        at("k", 2, 10, w(2)),
        at("k", 3, 4, r(Some(1))),
        at("k", 5, 6, r(Some(2))),
        at("k", 11, 12, r(Some(2))),
    ]);
    fails_on(
        vec![
            at("k", 0, 1, w(1)),
            at("k", 2, 10, w(2)),
            at("k", 3, 4, r(Some(2))),
            at("k", 5, 6, r(Some(1))),
        ],
        "k",
    );
    // Concurrent CAS: one swaps, the other sees the result and refuses.
    passes(vec![
        at("k", 0, 1, w(1)),
        at("k", 2, 10, cas(Some(1), 2, false)),
        at("k", 3, 9, cas(Some(1), 3, true)),
        at("k", 11, 12, r(Some(3))),
    ]);
    // An answer and a call at the same instant overlap.
    passes(vec![at("k", 0, 5, w(1)), at("k", 5, 6, r(None))]);
}

#[test]
fn an_unanswered_write_may_take_effect_late_or_never() {
    // Seen only long after its call, by a later client.
    passes(vec![
        open("k", 0, w(1)),
        at("k", 1, 2, r(None)),
        at("k", 3, 4, w(2)),
        at("k", 5, 6, r(Some(1))),
    ]);
    // Never seen at all.
    passes(vec![open("k", 0, w(1)), at("k", 1, 2, r(None))]);
    // But once seen it cannot be undone.
    fails_on(
        vec![
            open("k", 0, w(1)),
            at("k", 1, 2, r(Some(1))),
            at("k", 3, 4, r(None)),
        ],
        "k",
    );
    // And it cannot be seen before it was called.
    fails_on(vec![at("k", 0, 1, r(Some(1))), open("k", 2, w(1))], "k");
}

#[test]
fn an_unanswered_cas_may_swap_or_not_and_an_unanswered_read_is_ignored() {
    let base = || vec![at("k", 0, 1, w(1)), open("k", 2, cas(Some(1), 2, false))];
    let mut swapped = base();
    swapped.push(at("k", 3, 4, r(Some(2))));
    passes(swapped);
    let mut kept = base();
    kept.push(at("k", 3, 4, r(Some(1))));
    passes(kept);
    // An unanswered CAS whose expectation never held cannot have swapped.
    let mut wrong = base();
    wrong[1] = open("k", 2, cas(Some(5), 2, true));
    wrong.push(at("k", 3, 4, r(Some(2))));
    fails_on(wrong, "k");
    // A read without an answer constrains nothing, whatever it claims.
    passes(vec![at("k", 0, 1, w(1)), open("k", 2, r(Some(9)))]);
}

#[test]
fn keys_are_independent_and_the_violation_names_its_key() {
    passes(vec![
        at("a", 0, 10, w(1)),
        at("b", 1, 2, w(1)),
        at("b", 3, 4, r(Some(1))),
        at("a", 5, 6, r(None)),
        at("a", 11, 12, r(Some(1))),
    ]);
    let blocked = fails_on(
        vec![
            at("a", 0, 1, w(1)),
            at("a", 2, 3, r(Some(1))),
            at("b", 4, 5, w(2)),
            at("b", 6, 7, r(None)),
        ],
        "b",
    );
    assert_eq!(blocked.op, r(None));
}

#[test]
fn a_violation_reports_how_far_the_search_got() {
    let h = vec![
        at("k", 0, 1, w(1)),
        at("k", 2, 3, w(2)),
        at("k", 4, 5, r(Some(1))),
    ];
    match verdict(&h) {
        Verdict::NotLinearizable { deepest, of, .. } => {
            assert_eq!((deepest, of), (2, 3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_answer_before_its_call_is_malformed() {
    let mut h = vec![at("k", 0, 1, w(1)), at("k", 5, 6, r(Some(1)))];
    h[1].ret = Some(4);
    assert_eq!(verdict(&h), Verdict::Malformed { index: 1 });
}

#[test]
fn the_search_gives_up_when_its_budget_is_spent() {
    // Many concurrent writes and a read of a value nobody wrote: the search
    // must try every order before it can say no.
    let mut h: H = (0..12).map(|i| at("k", i, 100, w(i))).collect();
    h.push(at("k", 101, 102, r(Some(99))));
    match check(&h, 50) {
        Verdict::Undecided { key, steps } => {
            assert_eq!(key, "k");
            assert!(steps > 50);
        }
        other => panic!("{other:?}"),
    }
    // With the default budget memoization settles it.
    fails_on(h, "k");
}

#[test]
fn the_recorder_orders_answers_before_later_calls() {
    let rec: Recorder<&'static str, u64> = Recorder::default();
    let a = rec.invoke();
    rec.answered(a, 1, "k", w(1));
    let b = rec.invoke();
    let b_time = b.time();
    rec.answered(b, 2, "k", r(Some(1)));
    let c = rec.invoke();
    rec.unanswered(c, 3, "k", w(2));
    // A call that certainly had no effect is just dropped.
    drop(rec.invoke());
    let h = rec.history().expect("history");
    assert_eq!(h.len(), 3);
    assert!(h[0].ret.is_some_and(|r| r < b_time), "{h:?}");
    assert_eq!(h[2].ret, None);
    passes(h);
}

#[test]
fn a_recorder_past_its_cap_refuses_to_hand_out_a_history() {
    let rec: Recorder<&'static str, u64> = Recorder::with_cap(1);
    for v in 0..3 {
        let call = rec.invoke();
        rec.answered(call, 0, "k", w(v));
    }
    assert_eq!(rec.history(), Err(Overflow { cap: 1, dropped: 2 }));
}

/// A tiny seeded generator (SplitMix64), so the cross-check repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Linearizability by trying every order that respects real time (and, for
/// an operation without an answer, leaving it out or letting it swap or not).
fn brute_force(ops: &[Operation<&'static str, u64>]) -> bool {
    fn go(ops: &[&Operation<&'static str, u64>], left: &mut Vec<bool>, state: Option<u64>) -> bool {
        if ops
            .iter()
            .zip(left.iter())
            .all(|(o, l)| !*l || o.ret.is_none())
        {
            return true;
        }
        for i in 0..ops.len() {
            if !left[i] {
                continue;
            }
            let o = ops[i];
            let must_wait = ops
                .iter()
                .zip(left.iter())
                .any(|(p, l)| *l && p.ret.is_some_and(|r| r < o.call));
            if must_wait {
                continue;
            }
            let mut nexts = Vec::new();
            match (&o.op, o.ret.is_some()) {
                (Op::Read { seen }, _) if *seen == state => nexts.push(state),
                (Op::Read { .. }, _) => {}
                (Op::Write { value }, _) => nexts.push(Some(*value)),
                (Op::Cas { expected, new, .. }, false) => {
                    nexts.push(state);
                    if *expected == state {
                        nexts.push(Some(*new));
                    }
                }
                (
                    Op::Cas {
                        expected,
                        new,
                        swapped,
                    },
                    true,
                ) => match (*expected == state, swapped) {
                    (true, true) => nexts.push(Some(*new)),
                    (false, false) => nexts.push(state),
                    _ => {}
                },
            }
            for n in nexts {
                left[i] = false;
                let ok = go(ops, left, n);
                left[i] = true;
                if ok {
                    return true;
                }
            }
        }
        false
    }
    let ops: Vec<_> = ops
        .iter()
        .filter(|o| !(matches!(o.op, Op::Read { .. }) && o.ret.is_none()))
        .collect();
    go(&ops, &mut vec![true; ops.len()], None)
}

#[test]
fn the_checker_agrees_with_brute_force_on_random_small_histories() {
    let mut rng = Rng(5);
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        let n = 1 + rng.below(6);
        let h: H = (0..n)
            .map(|i| {
                let call = rng.below(12);
                let ret = (rng.below(8) > 0).then(|| call + rng.below(6));
                let v = |rng: &mut Rng| Some(rng.below(3)).filter(|v| *v > 0);
                let op = match rng.below(3) {
                    0 => Op::Read { seen: v(&mut rng) },
                    1 => Op::Write {
                        value: 1 + rng.below(2),
                    },
                    _ => Op::Cas {
                        expected: v(&mut rng),
                        new: 1 + rng.below(2),
                        swapped: rng.below(2) == 0,
                    },
                };
                Operation {
                    client: i,
                    key: "k",
                    op,
                    call,
                    ret,
                }
            })
            .collect();
        let expected = brute_force(&h);
        assert_eq!(verdict(&h).is_linearizable(), expected, "{h:?}");
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    // Both answers must be well represented for the comparison to mean much.
    assert!(yes > 500 && no > 500, "{yes} linearizable, {no} not");
}
