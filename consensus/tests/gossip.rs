//! The gossip engine: the exact effects of each input, its bounds, and two
//! replicas driven through real stores converging.

use std::collections::BTreeMap;

use pyralog_consensus::Engine;
use pyralog_consensus::gossip::{Config, Digest, Effect, GossipEngine, Input};
use pyralog_ledger::block::{VerifiedBatch, VerifiedTx, verify_tx};
use pyralog_ledger::{Address, Decode, Encode, Engine as Kind, Error, Hash, Hlc, Store, devkit};

const T0: u64 = 1_800_000_000_000;
type Peer = u8;

fn chain() -> pyralog_ledger::ChainId {
    "pyralog-test".parse().expect("chain")
}

fn config() -> Config {
    Config {
        max_batch_txs: 3,
        batch_interval_ms: 50,
        digest_interval_ms: 1000,
        max_pending: 5,
        max_fetch: 4,
        max_ahead: 2,
        max_fetches_per_digest: 2,
    }
}

fn engine(seed: u64) -> GossipEngine<Peer> {
    GossipEngine::new(
        config(),
        chain(),
        devkit::key(seed),
        Hash::ZERO,
        BTreeMap::new(),
        Hlc::default(),
    )
}

fn put(n: u8) -> VerifiedTx {
    let k = devkit::key(1);
    let epoch = T0 / 50_000;
    verify_tx(devkit::tx(
        &chain(),
        &k,
        0,
        epoch,
        devkit::put(&k, &[n], &[n]),
        6,
    ))
    .expect("sig")
}

/// A comparable summary of an effect.
fn s(e: &Effect<Peer>) -> String {
    match e {
        Effect::Merge(b) => format!(
            "merge {}#{} ({} txs)",
            short(&b.origin()),
            b.seq(),
            b.txs().len()
        ),
        Effect::Publish(b) => format!(
            "publish {}#{} ({} txs)",
            short(&b.origin),
            b.seq,
            b.txs.len()
        ),
        Effect::AlreadyHave { origin, seq } => format!("have {}#{seq}", short(origin)),
        Effect::Reject { reason, .. } => format!("reject {reason:?}"),
        Effect::Committed { ids, seq } => format!("committed #{seq} ({} txs)", ids.len()),
        Effect::PublishDigest(d) => format!("digest {:?}", d.heads.values().collect::<Vec<_>>()),
        Effect::Fetch {
            peer,
            origin,
            from_seq,
            to_seq,
        } => format!("fetch {peer} {}#{from_seq}..={to_seq}", short(origin)),
        Effect::SetTimer { at_ms } => format!("timer +{}", at_ms - T0),
    }
}

fn short(a: &Address) -> String {
    a.to_human()[3..7].to_owned()
}

fn run(e: &mut GossipEngine<Peer>, now: u64, input: Input<Peer>) -> Vec<String> {
    e.handle(now, input).iter().map(s).collect()
}

fn me(e: &GossipEngine<Peer>) -> String {
    short(&e.origin())
}

#[test]
fn a_quiet_pool_seals_after_the_interval_and_publishes_after_commit() {
    let mut e = engine(10);
    let o = me(&e);
    assert_eq!(run(&mut e, T0, Input::Submit(put(1))), vec!["timer +50"]);
    assert_eq!(
        run(&mut e, T0 + 10, Input::Submit(put(2))),
        Vec::<String>::new()
    );
    // Before the interval: only the digest and the timer.
    assert_eq!(
        run(&mut e, T0 + 20, Input::Tick),
        vec!["digest []".to_owned(), "timer +50".to_owned()]
    );
    assert_eq!(
        run(&mut e, T0 + 50, Input::Tick),
        vec![format!("merge {o}#1 (2 txs)"), "timer +1020".to_owned()]
    );
    // Published only once the host says the batch is durable.
    let own = e.origin();
    let done = run(
        &mut e,
        T0 + 60,
        Input::Merged {
            origin: own,
            seq: 1,
            state_root: Hash([7; 32]),
        },
    );
    assert_eq!(
        done,
        vec![
            "committed #1 (2 txs)".to_owned(),
            format!("publish {o}#1 (2 txs)")
        ]
    );
    assert_eq!(e.digest().heads.get(&e.origin()), Some(&1));
    assert_eq!(e.digest().state_root, Hash([7; 32]));
}

#[test]
fn a_full_pool_seals_at_once_but_one_own_batch_is_in_flight_at_a_time() {
    let mut e = engine(10);
    let o = me(&e);
    run(&mut e, T0, Input::Submit(put(1)));
    run(&mut e, T0, Input::Submit(put(2)));
    assert_eq!(
        run(&mut e, T0, Input::Submit(put(3))),
        vec![format!("merge {o}#1 (3 txs)")]
    );
    // The next three wait: batch 1 is not committed yet.
    assert_eq!(run(&mut e, T0, Input::Submit(put(4))), vec!["timer +50"]);
    run(&mut e, T0, Input::Submit(put(5)));
    assert_eq!(run(&mut e, T0, Input::Submit(put(6))), Vec::<String>::new());
    assert_eq!(e.pending(), 3);
    let own = e.origin();
    run(
        &mut e,
        T0 + 1,
        Input::Merged {
            origin: own,
            seq: 1,
            state_root: Hash::ZERO,
        },
    );
    let tick = run(&mut e, T0 + 60, Input::Tick);
    assert_eq!(tick[0], format!("merge {o}#2 (3 txs)"));
}

#[test]
fn the_pool_is_bounded_and_refuses_duplicates() {
    let mut e = engine(10);
    let mut cfg = config();
    cfg.max_batch_txs = 100;
    let mut e2: GossipEngine<Peer> = GossipEngine::new(
        cfg,
        chain(),
        devkit::key(11),
        Hash::ZERO,
        BTreeMap::new(),
        Hlc::default(),
    );
    for n in 0..5 {
        run(&mut e2, T0, Input::Submit(put(n)));
    }
    assert_eq!(
        run(&mut e2, T0, Input::Submit(put(9))),
        vec!["reject PoolFull { capacity: 5 }"]
    );
    run(&mut e, T0, Input::Submit(put(1)));
    assert_eq!(
        run(&mut e, T0, Input::Submit(put(1))),
        vec!["reject Duplicate"]
    );
}

#[test]
fn a_refused_own_batch_rejects_its_transactions_and_frees_its_seq() {
    let mut e = engine(10);
    let o = me(&e);
    for n in 1..=3 {
        run(&mut e, T0, Input::Submit(put(n)));
    }
    let own = e.origin();
    let failed = run(
        &mut e,
        T0,
        Input::MergeFailed {
            origin: own,
            seq: 1,
            error: Error::BadSignature,
        },
    );
    assert_eq!(failed, vec!["reject MergeFailed(BadSignature)"; 3]);
    for n in 4..=6 {
        run(&mut e, T0 + 1, Input::Submit(put(n)));
    }
    assert_eq!(e.pending(), 0, "sealed again");
    let own = e.origin();
    let again = run(
        &mut e,
        T0 + 2,
        Input::Merged {
            origin: own,
            seq: 1,
            state_root: Hash::ZERO,
        },
    );
    assert_eq!(
        again,
        vec![
            "committed #1 (3 txs)".to_owned(),
            format!("publish {o}#1 (3 txs)")
        ]
    );
}

fn remote(seed: u64, seq: u64) -> VerifiedBatch {
    VerifiedBatch::seal(
        chain(),
        &devkit::key(seed),
        seq,
        Hlc {
            wall_ms: T0,
            logical: seq as u32,
        },
        vec![put(seq as u8)],
    )
}

#[test]
fn remote_batches_merge_once_and_out_of_order_within_bounds() {
    let mut e = engine(10);
    let r = short(&devkit::key(20).address());
    let b1 = remote(20, 1);
    assert_eq!(
        run(
            &mut e,
            T0,
            Input::Batch {
                from: Some(1),
                batch: b1.clone()
            }
        ),
        vec![format!("merge {r}#1 (1 txs)")]
    );
    assert_eq!(
        run(
            &mut e,
            T0,
            Input::Batch {
                from: Some(2),
                batch: b1.clone()
            }
        ),
        vec![format!("have {r}#1")]
    );
    run(
        &mut e,
        T0,
        Input::Merged {
            origin: b1.origin(),
            seq: 1,
            state_root: Hash::ZERO,
        },
    );
    assert_eq!(
        run(
            &mut e,
            T0,
            Input::Batch {
                from: None,
                batch: b1
            }
        ),
        vec![format!("have {r}#1")]
    );
    // 3 and 4 may run ahead of 2 (max_ahead = 2); 5 may not until 2 lands.
    for seq in [3, 4] {
        let b = remote(20, seq);
        assert_eq!(
            run(
                &mut e,
                T0,
                Input::Batch {
                    from: None,
                    batch: b.clone()
                }
            ),
            vec![format!("merge {r}#{seq} (1 txs)")]
        );
        run(
            &mut e,
            T0,
            Input::Merged {
                origin: b.origin(),
                seq,
                state_root: Hash::ZERO,
            },
        );
    }
    assert_eq!(e.digest().heads.get(&devkit::key(20).address()), Some(&1));
    assert_eq!(
        run(
            &mut e,
            T0,
            Input::Batch {
                from: None,
                batch: remote(20, 5)
            }
        ),
        vec![format!("have {r}#5")]
    );
    run(
        &mut e,
        T0,
        Input::Batch {
            from: None,
            batch: remote(20, 2),
        },
    );
    run(
        &mut e,
        T0,
        Input::Merged {
            origin: devkit::key(20).address(),
            seq: 2,
            state_root: Hash::ZERO,
        },
    );
    assert_eq!(
        e.digest().heads.get(&devkit::key(20).address()),
        Some(&4),
        "the prefix closes over 3 and 4"
    );
}

#[test]
fn a_peer_ahead_is_asked_for_what_is_missing_within_bounds() {
    let mut e = engine(10);
    let (a, b, c) = (
        devkit::key(20).address(),
        devkit::key(21).address(),
        devkit::key(22).address(),
    );
    let mut heads = BTreeMap::new();
    heads.insert(a, 10);
    heads.insert(b, 2);
    heads.insert(c, 1);
    run(
        &mut e,
        T0,
        Input::Batch {
            from: None,
            batch: remote(21, 1),
        },
    );
    run(
        &mut e,
        T0,
        Input::Merged {
            origin: b,
            seq: 1,
            state_root: Hash::ZERO,
        },
    );
    // Ours: a 0, b 1, c 0. Every origin is ahead; the first two in address
    // order are fetched (max_fetches_per_digest = 2), each at most max_fetch = 4.
    let ours: BTreeMap<Address, u64> = [(a, 0), (b, 1), (c, 0)].into_iter().collect();
    let want: Vec<String> = heads
        .iter()
        .take(2)
        .map(|(o, theirs)| {
            format!(
                "fetch 3 {}#{}..={}",
                short(o),
                ours[o] + 1,
                (*theirs).min(ours[o] + 4)
            )
        })
        .collect();
    let fetches = run(
        &mut e,
        T0,
        Input::Digest {
            from: 3,
            digest: Digest {
                at_ms: 0,
                state_root: Hash::ZERO,
                heads,
            },
        },
    );
    assert_eq!(fetches, want);
    // A peer behind or level gets nothing.
    let behind = Digest {
        at_ms: 0,
        state_root: Hash::ZERO,
        heads: [(b, 1)].into_iter().collect(),
    };
    assert!(
        run(
            &mut e,
            T0,
            Input::Digest {
                from: 4,
                digest: behind
            }
        )
        .is_empty()
    );
}

#[test]
fn an_engine_resumes_its_seq_from_the_store() {
    let key = devkit::key(10);
    let heads = [(key.address(), 41)].into_iter().collect();
    let mut e: GossipEngine<Peer> = GossipEngine::new(
        config(),
        chain(),
        key,
        Hash::ZERO,
        heads,
        Hlc {
            wall_ms: T0 + 99,
            logical: 0,
        },
    );
    let o = me(&e);
    for n in 1..=3 {
        run(&mut e, T0, Input::Submit(put(n)));
    }
    let own = e.origin();
    let done = run(
        &mut e,
        T0,
        Input::Merged {
            origin: own,
            seq: 42,
            state_root: Hash::ZERO,
        },
    );
    assert_eq!(done[1], format!("publish {o}#42 (3 txs)"));
}

#[test]
fn digests_have_one_strict_wire_form() {
    let d = Digest {
        at_ms: 77,
        state_root: Hash([3; 32]),
        heads: (1..5u8)
            .map(|i| (Address([i; 32]), u64::from(i) * 7))
            .collect(),
    };
    let bytes = d.to_bytes();
    assert_eq!(Digest::from_bytes(&bytes).expect("decode"), d);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Digest::from_bytes(&longer).is_err());
    // Swap the first two origins: same content, non-canonical order.
    let mut swapped = bytes.clone();
    let (a, b) = (44, 44 + 40);
    let first: Vec<u8> = swapped[a..a + 40].to_vec();
    let second: Vec<u8> = swapped[b..b + 40].to_vec();
    swapped[a..a + 40].copy_from_slice(&second);
    swapped[b..b + 40].copy_from_slice(&first);
    assert_eq!(
        Digest::from_bytes(&swapped),
        Err(Error::NonCanonical {
            what: "digest heads order"
        })
    );
}

// --- two replicas through real stores ---------------------------------------

struct Replica {
    _dir: tempfile::TempDir,
    store: Store,
    engine: GossipEngine<Peer>,
    outbox: Vec<Effect<Peer>>,
}

fn replica(seed: u64, file: &pyralog_ledger::GenesisFile) -> Replica {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(&dir.path().join("s.redb"), file).expect("store");
    let engine = GossipEngine::new(
        config(),
        chain(),
        devkit::key(seed),
        store.state_root(),
        BTreeMap::new(),
        Hlc::default(),
    );
    Replica {
        _dir: dir,
        store,
        engine,
        outbox: Vec::new(),
    }
}

impl Replica {
    /// Feeds an input, carries out store effects at once, keeps network effects.
    fn feed(&mut self, now: u64, input: Input<Peer>) {
        let mut queue = vec![input];
        while let Some(i) = queue.pop() {
            for effect in self.engine.handle(now, i) {
                match effect {
                    Effect::Merge(b) => match self.store.merge_batch(&b, now) {
                        Ok(_) => queue.push(Input::Merged {
                            origin: b.origin(),
                            seq: b.seq(),
                            state_root: self.store.state_root(),
                        }),
                        Err(error) => queue.push(Input::MergeFailed {
                            origin: b.origin(),
                            seq: b.seq(),
                            error,
                        }),
                    },
                    other => self.outbox.push(other),
                }
            }
        }
    }
}

#[test]
fn two_replicas_converge_through_publish_digest_and_fetch() {
    let mut params = devkit::devnet_params(6);
    params.bucket_bits = 8;
    let writer = devkit::key(1);
    let file = devkit::genesis_file("pyralog-test", Kind::Gossip, params, &[(&writer, 0)], &[]);
    let mut a = replica(10, &file);
    let mut b = replica(11, &file);
    let epoch = T0 / 50_000;
    // A accepts six writes; B accepts three, one of them to a key A writes too.
    for n in 0..6u8 {
        let tx = verify_tx(devkit::tx(
            &chain(),
            &writer,
            0,
            epoch,
            devkit::put(&writer, &[n], b"from a"),
            6,
        ))
        .expect("sig");
        a.feed(T0 + u64::from(n), Input::Submit(tx));
    }
    for n in 5..8u8 {
        let tx = verify_tx(devkit::tx(
            &chain(),
            &writer,
            0,
            epoch,
            devkit::put(&writer, &[n], b"from b"),
            6,
        ))
        .expect("sig");
        b.feed(T0 + 10 + u64::from(n), Input::Submit(tx));
    }
    b.feed(T0 + 100, Input::Tick);
    // B hears A's first batch only by gossip; the second is lost.
    let published: Vec<_> = a
        .outbox
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(x) => Some(x.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(published.len(), 2);
    let first = VerifiedBatch::verify(published[0].clone()).expect("sig");
    b.feed(
        T0 + 200,
        Input::Batch {
            from: Some(0),
            batch: first,
        },
    );
    assert_ne!(a.store.state_root(), b.store.state_root());
    // A's digest reaches B; B fetches what it lacks from A's store.
    let digest = a.engine.digest();
    b.outbox.clear();
    b.feed(T0 + 300, Input::Digest { from: 0, digest });
    let fetches: Vec<_> = b
        .outbox
        .iter()
        .filter_map(|e| match e {
            Effect::Fetch {
                origin,
                from_seq,
                to_seq,
                ..
            } => Some((*origin, *from_seq, *to_seq)),
            _ => None,
        })
        .collect();
    assert_eq!(fetches, vec![(a.engine.origin(), 2, 2)]);
    for (origin, from, to) in fetches {
        for seq in from..=to {
            let batch = a
                .store
                .batch(&origin, seq)
                .expect("read")
                .expect("A stores its batches");
            b.feed(
                T0 + 400,
                Input::Batch {
                    from: Some(0),
                    batch: VerifiedBatch::verify(batch).expect("sig"),
                },
            );
        }
    }
    // And A hears B's batch.
    let b_batches: Vec<_> = (1..=b.store.highest_seq(&b.engine.origin()).expect("read"))
        .map(|s| {
            b.store
                .batch(&b.engine.origin(), s)
                .expect("read")
                .expect("stored")
        })
        .collect();
    assert_eq!(b_batches.len(), 1);
    for batch in b_batches {
        a.feed(
            T0 + 500,
            Input::Batch {
                from: Some(1),
                batch: VerifiedBatch::verify(batch).expect("sig"),
            },
        );
    }
    assert_eq!(
        a.store.state_root(),
        b.store.state_root(),
        "replicas converge"
    );
    assert_eq!(a.engine.digest().heads, b.engine.digest().heads);
    // Key 5 was written on both; the later clock wins on both.
    let ra = a
        .store
        .record(&writer.address(), &[5])
        .expect("read")
        .expect("record");
    let rb = b
        .store
        .record(&writer.address(), &[5])
        .expect("read")
        .expect("record");
    assert_eq!(ra, rb);
}
