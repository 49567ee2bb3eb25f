//! Random operation sequences applied to the redb-backed store agree with a
//! plain in-memory model of the rules, across close and reopen.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use pyralog_ledger::{Address, Engine, Keypair, Payload, PutOp, Store, block, devkit};

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
    },
    Put {
        who: usize,
        key: u8,
        value: u8,
        cas: Option<u64>,
    },
    Delete {
        who: usize,
        key: u8,
    },
    /// Close the store and open it again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, 0..400u64).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        5 => (0..3usize, 0..4u8, any::<u8>(), prop::option::weighted(0.3, 0..3u64))
            .prop_map(|(who, key, value, cas)| Op::Put { who, key, value, cas }),
        2 => (0..3usize, 0..4u8).prop_map(|(who, key)| Op::Delete { who, key }),
        1 => Just(Op::Reopen),
    ]
}

/// The model: the rules written as plainly as possible.
#[derive(Default, Debug)]
struct Model {
    /// balance, nonce
    accounts: BTreeMap<Address, (u64, u64)>,
    /// value (None = tombstone), version
    records: BTreeMap<(Address, u8), (Option<u8>, u64)>,
}

impl Model {
    /// Applies `op` if the rules allow it; returns whether they did.
    fn apply(&mut self, keys: &[Keypair], op: &Op) -> bool {
        let ok = match *op {
            Op::Transfer { from, to, amount } => {
                let (a, b) = (keys[from].address(), keys[to].address());
                let bal = self.accounts.get(&a).map_or(0, |x| x.0);
                if amount == 0 || bal < amount {
                    return false;
                }
                self.accounts.entry(a).or_default().0 -= amount;
                self.accounts.entry(b).or_default().0 += amount;
                true
            }
            Op::Put {
                who,
                key,
                value,
                cas,
            } => {
                let a = keys[who].address();
                let version = self.records.get(&(a, key)).map_or(0, |r| r.1);
                if cas.is_some_and(|c| c != version) {
                    return false;
                }
                self.records.insert((a, key), (Some(value), version + 1));
                true
            }
            Op::Delete { who, key } => {
                let a = keys[who].address();
                match self.records.get(&(a, key)) {
                    Some((Some(_), v)) => {
                        let v = *v;
                        self.records.insert((a, key), (None, v + 1));
                        true
                    }
                    _ => return false,
                }
            }
            Op::Reopen => return false,
        };
        let who = match *op {
            Op::Transfer { from, .. } => from,
            Op::Put { who, .. } | Op::Delete { who, .. } => who,
            Op::Reopen => unreachable!(),
        };
        self.accounts.entry(keys[who].address()).or_default().1 += 1;
        ok
    }
}

fn payload(keys: &[Keypair], op: &Op) -> Option<(usize, Payload)> {
    Some(match *op {
        Op::Transfer { from, to, amount } => (
            from,
            Payload::Transfer {
                to: keys[to].address(),
                amount,
            },
        ),
        Op::Put {
            who,
            key,
            value,
            cas,
        } => (
            who,
            Payload::Put {
                namespace: keys[who].address(),
                ops: vec![PutOp {
                    key: vec![key],
                    value: vec![value],
                    if_version: cas,
                    sealed: false,
                }],
            },
        ),
        Op::Delete { who, key } => (
            who,
            Payload::Delete {
                namespace: keys[who].address(),
                keys: vec![vec![key]],
            },
        ),
        Op::Reopen => return None,
    })
}

fn check(store: &Store, model: &Model, keys: &[Keypair]) -> Result<(), TestCaseError> {
    for k in keys {
        let acc = store.account(&k.address()).expect("read");
        let (bal, nonce) = model
            .accounts
            .get(&k.address())
            .copied()
            .unwrap_or_default();
        prop_assert_eq!((acc.balance, acc.nonce), (bal, nonce));
        for key in 0..4u8 {
            let got = store
                .record(&k.address(), &[key])
                .expect("read")
                .map(|e| (e.value.map(|v| v[0]), e.version));
            prop_assert_eq!(got, model.records.get(&(k.address(), key)).copied());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..40), per_block in 1..4usize) {
        let mut params = common::params();
        params.bucket_bits = 8; // a small tree: fast, and a non-default bucket count
        let n = common::net_with(Engine::Pbft, params, 1000, 1000);
        let keys = vec![n.alice.clone(), n.bob.clone(), devkit::key(3)];
        let path = n.dir.path().join("ledger.redb");
        let proposer = n.proposer.address();
        let chain = n.chain.clone();
        let (_dir, mut store) = (n.dir, n.store);
        let mut model = Model::default();
        model.accounts.insert(keys[0].address(), (1000, 0));
        model.accounts.insert(keys[1].address(), (1000, 0));
        let mut nonces = [0u64; 3];
        let mut pending = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if let Some((who, p)) = payload(&keys, op) {
                let accepted = model.apply(&keys, op);
                let tx = devkit::tx(&chain, &keys[who], nonces[who], 0, p, common::BITS);
                if accepted {
                    nonces[who] += 1;
                }
                pending.push((tx, accepted));
            }
            let last = i + 1 == ops.len();
            if pending.len() >= per_block || matches!(op, Op::Reopen) || last {
                let txs: Vec<_> = pending.iter().map(|(t, _)| t.clone()).collect();
                let expected: Vec<_> = pending.drain(..).filter(|(_, ok)| *ok).map(|(t, _)| t.id()).collect();
                let verified = block::verify_txs(txs).expect("sigs");
                let ts = store.tip().timestamp_ms + 1;
                let (b, _) = store.propose_block(proposer, ts, verified).expect("propose");
                let included: Vec<_> = b.txs().iter().map(|t| t.id()).collect();
                prop_assert_eq!(&included, &expected, "the store and the model disagree on which transactions are valid");
                store.apply_block(&b).expect("apply");
                check(&store, &model, &keys)?;
            }
            if matches!(op, Op::Reopen) {
                let before = common::snapshot(&store);
                drop(store);
                store = Store::open_existing(&path).expect("reopen");
                prop_assert_eq!(common::snapshot(&store), before);
                check(&store, &model, &keys)?;
            }
        }
    }
}
