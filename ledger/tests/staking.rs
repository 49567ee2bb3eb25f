//! Proof of stake's rules on a real store: registration, bonds, epochs,
//! unbonding, rewards, evidence, downtime, jail, and every refusal.

use proptest::prelude::*;
use pyralog_ledger::Decode;
use pyralog_ledger::block::{Certificate, VerifiedTx, verify_tx};
use pyralog_ledger::evidence::{Evidence, Kind, Statement};
use pyralog_ledger::genesis::{GenesisFile, Params};
use pyralog_ledger::staking::{
    BlockVotes, Power, StakingState, Status, UnbondEntry, Unbonding, ValidatorState,
};
use pyralog_ledger::{
    Address, ChainId, Domain, Encode, Engine, Error, Hash, Keypair, Payload, Store, devkit,
};

const EPOCH: u64 = 4;

struct Pos {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
    chain: ChainId,
    vals: Vec<Keypair>,
    alice: Keypair,
    nonces: std::collections::BTreeMap<Address, u64>,
}

fn params() -> Params {
    let mut p = devkit::devnet_params(0);
    p.epoch_length = EPOCH;
    p.unbonding_epochs = 1;
    p.downtime_window = 4;
    p.slash_double_sign = 0.1;
    p.slash_downtime = 0.01;
    p.tx_validity_epochs = 16;
    p.staking.block_reward = 100;
    p.staking.proposer_share = 0.2;
    p.staking.downtime_max_missed = 0.5;
    p.staking.min_validator_stake = 500;
    p.staking.evidence_max_age_epochs = 1;
    p
}

fn file_with(p: Params, stakes: &[u64]) -> (GenesisFile, Vec<Keypair>, Keypair) {
    let vals: Vec<Keypair> = (100..100 + stakes.len() as u64).map(devkit::key).collect();
    let alice = devkit::key(1);
    let pairs: Vec<(&Keypair, String)> = vals
        .iter()
        .enumerate()
        .map(|(i, k)| (k, format!("/ip4/127.0.0.1/tcp/{}", 26000 + i)))
        .collect();
    let mut file = devkit::genesis_file("pos-test", Engine::Pos, p, &[(&alice, 1_000_000)], &pairs);
    for (v, s) in file.validators.iter_mut().zip(stakes) {
        v.stake = *s;
    }
    (file, vals, alice)
}

fn net(stakes: &[u64]) -> Pos {
    net_with(params(), stakes)
}

fn net_with(p: Params, stakes: &[u64]) -> Pos {
    let (file, vals, alice) = file_with(p, stakes);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let store = Store::open(&path, &file).expect("open");
    Pos {
        _dir: dir,
        path,
        store,
        chain: "pos-test".parse().expect("chain"),
        vals,
        alice,
        nonces: Default::default(),
    }
}

impl Pos {
    fn tx(&mut self, key: &Keypair, payload: Payload) -> VerifiedTx {
        let nonce = self.nonces.entry(key.address()).or_default();
        let t = devkit::tx(&self.chain, key, *nonce, 0, payload, 0);
        *nonce += 1;
        verify_tx(t).expect("signed")
    }

    fn height(&self) -> u64 {
        self.store.tip().height
    }

    /// Commits a block of `txs` proposed by validator 0; returns the errors
    /// of the transactions that failed.
    fn block(&mut self, txs: Vec<VerifiedTx>) -> Vec<Error> {
        self.block_with(txs, None)
    }

    fn block_with(&mut self, txs: Vec<VerifiedTx>, votes: Option<&BlockVotes>) -> Vec<Error> {
        let proposer = self.vals[0].address();
        let ts = self.store.tip().timestamp_ms + 1000;
        let (_, failed) = self
            .store
            .commit_ordered_with_votes(
                proposer,
                ts,
                txs,
                vec![],
                Certificate::default(),
                &[],
                votes,
            )
            .expect("commit");
        // Every failed transaction is skipped; the nonce was not spent.
        failed.into_iter().map(|(_, e)| e).collect()
    }

    /// One transaction that must fail; returns its error and rewinds the
    /// local nonce.
    fn refuse(&mut self, key: &Keypair, payload: Payload) -> Error {
        let t = self.tx(key, payload);
        let mut errs = self.block(vec![t]);
        *self.nonces.entry(key.address()).or_default() -= 1;
        assert_eq!(errs.len(), 1, "the transaction must fail");
        errs.remove(0)
    }

    fn ok(&mut self, key: &Keypair, payload: Payload) {
        let t = self.tx(key, payload);
        let errs = self.block(vec![t]);
        assert!(errs.is_empty(), "{errs:?}");
    }

    /// Commits empty blocks until the tip is the first block of the next epoch.
    fn next_epoch(&mut self) {
        let epoch = self.store.staking().expect("staking").epoch;
        while self.store.staking().expect("staking").epoch == epoch {
            assert!(self.block(vec![]).is_empty());
        }
    }

    fn set(&self) -> Vec<Power> {
        self.store.staking().expect("staking").active
    }

    fn summary(&self, v: &Address) -> pyralog_ledger::staking::ValidatorSummary {
        self.store
            .validators()
            .expect("validators")
            .into_iter()
            .find(|s| s.info.public_key == *v)
            .expect("registered")
    }

    fn balance(&self, a: &Address) -> u64 {
        self.store.account(a).expect("account").balance
    }
}

fn power(v: &Keypair, p: u64) -> Power {
    Power {
        validator: v.address(),
        power: p,
    }
}

fn register(key: &Keypair) -> Payload {
    Payload::RegisterValidator {
        validator_key: key.address(),
        p2p: "/ip4/127.0.0.1/tcp/27000".into(),
        moniker: "newcomer".into(),
    }
}

fn stake(v: &Keypair, amount: u64) -> Payload {
    Payload::Stake {
        validator: v.address(),
        amount,
    }
}

fn unstake(v: &Keypair, amount: u64) -> Payload {
    Payload::Unstake {
        validator: v.address(),
        amount,
    }
}

fn equivocation(chain: &ChainId, key: &Keypair, kind: Kind, round: u64, height: u64) -> Evidence {
    let first = Statement {
        kind,
        round,
        height,
        digest: Hash::of(Domain::Consensus, b"one"),
    };
    let second = Statement {
        digest: Hash::of(Domain::Consensus, b"two"),
        ..first
    };
    Evidence {
        validator: key.address(),
        first,
        first_sig: first.sign(chain, key),
        second,
        second_sig: second.sign(chain, key),
    }
}

fn evidence(ev: &Evidence) -> Payload {
    Payload::Evidence {
        data: ev.to_bytes(),
    }
}

#[test]
fn the_genesis_set_is_the_genesis_validators_by_stake() {
    let n = net(&[1000, 3000, 2000, 1000]);
    let st = n.store.staking().expect("staking");
    assert_eq!(st.epoch, 0);
    let v = &n.vals;
    assert_eq!(
        st.active,
        vec![
            power(&v[1], 3000),
            power(&v[2], 2000),
            // Equal stakes: by key.
            if v[0].address() < v[3].address() {
                power(&v[0], 1000)
            } else {
                power(&v[3], 1000)
            },
            if v[0].address() < v[3].address() {
                power(&v[3], 1000)
            } else {
                power(&v[0], 1000)
            },
        ]
    );
    let s = n.summary(&v[1].address());
    assert_eq!(
        (s.info.stake, s.power, s.status),
        (3000, 3000, Status::Active)
    );
    assert_eq!(s.state.operator, v[1].address());
    assert_eq!(n.store.bond(&v[1].address(), &v[1].address()), Ok(3000));
}

#[test]
fn the_set_is_the_top_k_above_the_minimum() {
    let mut p = params();
    p.staking.max_validators = 2;
    let n = net_with(p, &[1000, 3000, 2000, 600]);
    assert_eq!(
        n.set(),
        vec![power(&n.vals[1], 3000), power(&n.vals[2], 2000)]
    );
    let s = n.summary(&n.vals[0].address());
    assert_eq!((s.power, s.status), (0, Status::Inactive));
}

#[test]
fn genesis_staking_parameters_are_validated_with_clear_errors() {
    let mut p = params();
    p.staking.max_validators = 0;
    p.staking.min_validator_stake = 0;
    p.staking.proposer_share = 1.5;
    p.staking.downtime_max_missed = -0.1;
    p.staking.evidence_max_age_epochs = 5;
    let (file, _, _) = file_with(p, &[1000]);
    let Err(Error::Genesis { problems }) = file.validate() else {
        panic!("must be refused");
    };
    for field in [
        "params.staking.max_validators",
        "params.staking.min_validator_stake",
        "params.staking.proposer_share",
        "params.staking.downtime_max_missed",
        "params.staking.evidence_max_age_epochs",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} not named in {problems:?}"
        );
    }
    let mut p = params();
    p.unbonding_epochs = 0;
    p.staking.min_validator_stake = 2000;
    let (file, _, _) = file_with(p, &[1000]);
    let Err(Error::Genesis { problems }) = file.validate() else {
        panic!("must be refused");
    };
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("params.unbonding_epochs"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("validators[0].stake"))
    );
    // The same parameters are not read, and not refused, under pbft.
    let mut p = params();
    p.staking.max_validators = 0;
    let (mut file, _, _) = file_with(p, &[1000, 1000, 1000, 1000]);
    file.engine = Engine::Pbft;
    assert!(file.validate().is_ok());
    // Staking params are optional in genesis.json.
    let json = serde_json::to_value(&file).expect("json");
    let mut obj = json.clone();
    obj["params"]
        .as_object_mut()
        .expect("params")
        .remove("staking");
    let parsed = GenesisFile::parse(&obj.to_string()).expect("parse");
    assert_eq!(parsed.params.staking, Default::default());
}

#[test]
fn a_new_validator_registers_stakes_and_joins_at_the_next_boundary_only() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let newcomer = devkit::key(200);
    let alice = n.alice.clone();
    n.ok(&alice, register(&newcomer));
    let s = n.summary(&newcomer.address());
    assert_eq!(s.info.id, "newcomer");
    assert_eq!(s.state.operator, alice.address());
    assert_eq!(s.status, Status::Inactive);
    n.ok(&alice, stake(&newcomer, 5000));
    assert_eq!(n.balance(&alice.address()), 1_000_000 - 5000);
    assert_eq!(n.store.account(&alice.address()).expect("acc").stake, 5000);
    assert_eq!(n.summary(&newcomer.address()).info.stake, 5000);
    // Not before the boundary.
    assert!(n.height() < EPOCH);
    assert_eq!(n.set().len(), 4);
    n.next_epoch();
    assert_eq!(n.height(), EPOCH - 1);
    assert_eq!(n.set()[0], power(&newcomer, 5000));
    assert_eq!(n.summary(&newcomer.address()).status, Status::Active);
}

#[test]
fn registration_refusals_name_the_problem() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let alice = n.alice.clone();
    let v0 = n.vals[0].clone();
    assert!(matches!(
        n.refuse(&alice, register(&v0)),
        Error::ValidatorAlreadyRegistered { .. }
    ));
    n.ok(&alice, register(&devkit::key(200)));
    assert!(matches!(
        n.refuse(&alice, register(&devkit::key(201))),
        Error::AlreadyOperator { .. }
    ));
    let bob = devkit::key(2);
    for bad in [
        Payload::RegisterValidator {
            validator_key: devkit::key(202).address(),
            p2p: "localhost:1".into(),
            moniker: "m".into(),
        },
        Payload::RegisterValidator {
            validator_key: devkit::key(202).address(),
            p2p: "/ip4/1.2.3.4/tcp/1".into(),
            moniker: String::new(),
        },
        Payload::RegisterValidator {
            validator_key: devkit::key(202).address(),
            p2p: "/ip4/1.2.3.4/tcp/1".into(),
            moniker: "x".repeat(65),
        },
        Payload::RegisterValidator {
            // The identity point: a weak key anyone can sign for.
            validator_key: Address({
                let mut a = [0u8; 32];
                a[0] = 1;
                a
            }),
            p2p: "/ip4/1.2.3.4/tcp/1".into(),
            moniker: "weak".into(),
        },
    ] {
        let e = n.refuse(&bob, bad);
        assert!(matches!(e, Error::BadRegistration(_)), "{e}");
        assert!(e.is_peer_fault());
    }
}

#[test]
fn stake_refusals_name_the_problem() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let alice = n.alice.clone();
    let v0 = n.vals[0].clone();
    assert_eq!(n.refuse(&alice, stake(&v0, 0)), Error::ZeroAmount);
    assert!(matches!(
        n.refuse(&alice, stake(&devkit::key(300), 1)),
        Error::UnknownValidator { .. }
    ));
    assert!(matches!(
        n.refuse(&alice, stake(&v0, 2_000_000)),
        Error::InsufficientBalance { .. }
    ));
    assert_eq!(n.refuse(&alice, unstake(&v0, 0)), Error::ZeroAmount);
    assert_eq!(
        n.refuse(&alice, unstake(&v0, 1)),
        Error::InsufficientBond {
            needed: 1,
            bonded: 0
        }
    );
    assert!(matches!(
        n.refuse(&alice, unstake(&devkit::key(300), 1)),
        Error::UnknownValidator { .. }
    ));
}

#[test]
fn unstaked_coins_stay_slashable_and_return_after_the_unbonding_epochs() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let alice = n.alice.clone();
    let v1 = n.vals[1].clone();
    n.ok(&alice, stake(&v1, 1000));
    n.next_epoch();
    assert!(n.set().contains(&power(&v1, 2000)));
    let before = n.balance(&alice.address());
    n.ok(&alice, unstake(&v1, 600));
    assert_eq!(n.store.bond(&alice.address(), &v1.address()), Ok(400));
    assert_eq!(n.summary(&v1.address()).info.stake, 1400);
    let q = n.store.unbonding(&v1.address()).expect("queue");
    // Unstaked in epoch 1, unbonding 1 epoch: back when epoch 3 begins.
    assert_eq!(q.entries.len(), 1);
    assert_eq!(q.entries[0].release_epoch, 3);
    n.next_epoch(); // into epoch 2: power falls, coins still unbonding
    assert!(n.set().contains(&power(&v1, 1400)));
    assert_eq!(n.balance(&alice.address()), before);
    assert_eq!(
        n.store.unbonding(&v1.address()).expect("q").entries.len(),
        1
    );
    // A slash now reaches the unbonding coins too.
    let ev = equivocation(&n.chain, &v1, Kind::Prepare, 0, n.height());
    let bob = devkit::key(2);
    n.ok(&bob, evidence(&ev));
    let q = n.store.unbonding(&v1.address()).expect("queue");
    assert_eq!(q.entries[0].amount, 540);
    assert_eq!(n.store.bond(&alice.address(), &v1.address()), Ok(360));
    n.next_epoch(); // into epoch 3: released
    assert_eq!(n.balance(&alice.address()), before + 540);
    assert!(
        n.store
            .unbonding(&v1.address())
            .expect("q")
            .entries
            .is_empty()
    );
    assert_eq!(n.store.account(&alice.address()).expect("acc").stake, 360);
}

#[test]
fn a_validator_that_unstakes_below_the_minimum_leaves_at_the_boundary() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let v3 = n.vals[3].clone();
    n.ok(&v3, unstake(&v3, 600));
    assert_eq!(n.set().len(), 4);
    n.next_epoch();
    assert_eq!(n.set().len(), 3);
    assert!(!n.set().iter().any(|p| p.validator == v3.address()));
}

#[test]
fn rewards_go_to_the_proposer_and_the_voters_by_power() {
    let mut n = net(&[1000, 3000, 2000, 2000]);
    let ops: Vec<u64> = n.vals.iter().map(|v| n.balance(&v.address())).collect();
    assert_eq!(ops, vec![0, 0, 0, 0]);
    // No agreed votes: the voters' 80 go to the whole set by power, the
    // proposer (validator 0) adds its 20 and the rounding.
    assert!(n.block(vec![]).is_empty());
    let got: Vec<u64> = n.vals.iter().map(|v| n.balance(&v.address())).collect();
    assert_eq!(got, vec![20 + 10, 30, 20, 20]);
    // Agreed votes of validators 0 and 1 only: 80 split 1:3.
    let votes = BlockVotes {
        height: n.height(),
        signers: vec![n.vals[0].address(), n.vals[1].address()],
    };
    assert!(n.block_with(vec![], Some(&votes)).is_empty());
    let got: Vec<u64> = n.vals.iter().map(|v| n.balance(&v.address())).collect();
    assert_eq!(got, vec![30 + 20 + 20, 30 + 60, 20, 20]);
}

#[test]
fn equivocation_slashes_jails_and_tombstones_exactly_once() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let alice = n.alice.clone();
    let bob = devkit::key(2);
    let v2 = n.vals[2].clone();
    n.ok(&alice, stake(&v2, 1000));
    let ev = equivocation(&n.chain, &v2, Kind::Commit, 3, n.height());
    n.ok(&bob, evidence(&ev));
    let s = n.summary(&v2.address());
    // 10% of 2000, from the self-bond and from alice's delegation alike.
    assert_eq!(s.info.stake, 1800);
    assert_eq!(s.state.slashed, 200);
    assert!(s.state.jailed && s.state.tombstoned);
    assert_eq!(s.status, Status::Tombstoned);
    assert_eq!(n.store.bond(&alice.address(), &v2.address()), Ok(900));
    assert_eq!(n.store.account(&alice.address()).expect("a").stake, 900);
    // The same evidence, or new evidence, is a duplicate: no second slash.
    assert!(matches!(
        n.refuse(&bob, evidence(&ev)),
        Error::EvidenceDuplicate { .. }
    ));
    let other = equivocation(&n.chain, &v2, Kind::Prepare, 4, n.height());
    assert!(matches!(
        n.refuse(&bob, evidence(&other)),
        Error::EvidenceDuplicate { .. }
    ));
    assert_eq!(n.summary(&v2.address()).state.slashed, 200);
    // Tombstoned: no new stake, no unjail, out of the set for good.
    assert!(matches!(
        n.refuse(&alice, stake(&v2, 1)),
        Error::ValidatorTombstoned { .. }
    ));
    assert!(matches!(
        n.refuse(&v2, Payload::Unjail),
        Error::ValidatorTombstoned { .. }
    ));
    n.next_epoch();
    assert!(!n.set().iter().any(|p| p.validator == v2.address()));
    // Honest validators were not touched.
    for v in [&n.vals[0], &n.vals[1], &n.vals[3]] {
        assert_eq!(n.summary(&v.address()).state.slashed, 0);
    }
}

#[test]
fn forged_mismatched_expired_future_and_unslashable_evidence_is_refused() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let bob = devkit::key(2);
    let v1 = n.vals[1].clone();
    for _ in 0..3 * EPOCH {
        assert!(n.block(vec![]).is_empty());
    }
    let h = n.height();
    // A tampered signature.
    let mut forged = equivocation(&n.chain, &v1, Kind::Prepare, 0, h);
    forged.second_sig.0[5] ^= 1;
    assert_eq!(n.refuse(&bob, evidence(&forged)), Error::BadSignature);
    // Signed by someone else.
    let mut foreign = equivocation(&n.chain, &n.vals[0].clone(), Kind::Prepare, 0, h);
    foreign.validator = v1.address();
    assert_eq!(n.refuse(&bob, evidence(&foreign)), Error::BadSignature);
    // Two votes for different heights do not conflict.
    let mut apart = equivocation(&n.chain, &v1, Kind::Prepare, 0, h);
    apart.second.height = h - 1;
    apart.second_sig = apart.second.sign(&n.chain, &v1);
    assert!(matches!(
        n.refuse(&bob, evidence(&apart)),
        Error::BadProof(_)
    ));
    // Another chain's signatures.
    let elsewhere = equivocation(&"other".parse().expect("chain"), &v1, Kind::Prepare, 0, h);
    assert_eq!(n.refuse(&bob, evidence(&elsewhere)), Error::BadSignature);
    // Too old: more than one epoch back.
    let old = equivocation(&n.chain, &v1, Kind::Prepare, 0, 1);
    assert!(matches!(
        n.refuse(&bob, evidence(&old)),
        Error::EvidenceExpired { height: 1, .. }
    ));
    // From the future.
    let future = equivocation(&n.chain, &v1, Kind::Prepare, 0, h + 100);
    assert!(matches!(
        n.refuse(&bob, evidence(&future)),
        Error::EvidenceFromFuture { .. }
    ));
    // View-changes may differ after an honest restart: not slashable.
    let vc = equivocation(&n.chain, &v1, Kind::ViewChange, 2, h);
    assert!(matches!(
        n.refuse(&bob, evidence(&vc)),
        Error::EvidenceNotSlashable { .. }
    ));
    // Not a validator at all.
    let stranger = equivocation(&n.chain, &devkit::key(300), Kind::Prepare, 0, n.height());
    let e = n.refuse(&bob, evidence(&stranger));
    assert!(matches!(e, Error::UnknownValidator { .. }), "{e}");
    // Bytes that are not evidence.
    let e = n.refuse(
        &bob,
        Payload::Evidence {
            data: vec![1, 2, 3],
        },
    );
    assert!(e.is_peer_fault(), "{e}");
    // Nothing was slashed.
    for v in &n.vals {
        let s = n.summary(&v.address());
        assert_eq!((s.state.slashed, s.state.jailed), (0, false));
    }
}

#[test]
fn downtime_costs_a_small_slash_and_jail_until_unjail() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let v3 = n.vals[3].clone();
    let others: Vec<Address> = n.vals[..3].iter().map(Keypair::address).collect();
    // Validator 3 misses 3 of the 4 counted blocks: more than half.
    for i in 0..4 {
        let mut signers = others.clone();
        if i == 0 {
            signers.push(v3.address());
        }
        let votes = BlockVotes {
            height: n.height() + 1,
            signers,
        };
        assert!(n.block_with(vec![], Some(&votes)).is_empty());
    }
    let s = n.summary(&v3.address());
    assert_eq!(s.state.slashed, 10);
    assert_eq!(s.info.stake, 990);
    assert!(s.state.jailed && !s.state.tombstoned);
    assert_eq!(s.status, Status::Jailed);
    // Validators that voted are untouched.
    for a in &others {
        assert_eq!(n.summary(a).state.slashed, 0);
    }
    // Out at the next boundary.
    assert!(n.set().iter().any(|p| p.validator == v3.address()));
    n.next_epoch();
    assert!(!n.set().iter().any(|p| p.validator == v3.address()));
    // Unjail: only its operator, only when jailed.
    let bob = devkit::key(2);
    assert!(matches!(
        n.refuse(&bob, Payload::Unjail),
        Error::NotAnOperator { .. }
    ));
    let v0 = n.vals[0].clone();
    assert!(matches!(
        n.refuse(&v0, Payload::Unjail),
        Error::NotJailed { .. }
    ));
    n.ok(&v3, Payload::Unjail);
    assert_eq!(n.summary(&v3.address()).status, Status::Inactive);
    n.next_epoch();
    assert!(n.set().contains(&power(&v3, 990)));
}

#[test]
fn votes_counted_once_per_height_and_only_within_the_epoch() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let v3 = n.vals[3].address();
    let others: Vec<Address> = n.vals[..3].iter().map(Keypair::address).collect();
    let votes = BlockVotes {
        height: 1,
        signers: others.clone(),
    };
    // The same height's votes passed four times count once.
    for _ in 0..3 {
        assert!(n.block_with(vec![], Some(&votes)).is_empty());
    }
    let s = n.summary(&v3);
    assert_eq!((s.state.window_blocks, s.state.window_missed), (1, 1));
}

#[test]
fn staking_state_is_in_the_root_and_survives_reopen() {
    let mut n = net(&[1000, 1000, 1000, 1000]);
    let alice = n.alice.clone();
    let root0 = n.store.state_root();
    n.ok(&alice, register(&devkit::key(200)));
    assert_ne!(n.store.state_root(), root0);
    n.ok(&alice, stake(&devkit::key(200), 700));
    n.ok(&alice, unstake(&devkit::key(200), 100));
    n.next_epoch();
    let (root, vals, st) = (
        n.store.state_root(),
        n.store.validators().expect("v"),
        n.store.staking().expect("s"),
    );
    let path = n.path.clone();
    drop(n.store);
    let reopened = Store::open_existing(&path).expect("reopen");
    assert_eq!(reopened.state_root(), root);
    assert_eq!(reopened.validators().expect("v"), vals);
    assert_eq!(reopened.staking().expect("s"), st);
    // The same blocks on a second store give the same root.
    let mut m = net(&[1000, 1000, 1000, 1000]);
    let alice = m.alice.clone();
    m.ok(&alice, register(&devkit::key(200)));
    m.ok(&alice, stake(&devkit::key(200), 700));
    m.ok(&alice, unstake(&devkit::key(200), 100));
    m.next_epoch();
    assert_eq!(m.store.state_root(), root);
}

#[test]
fn staking_payloads_stay_refused_under_pbft() {
    let (mut file, vals, alice) = file_with(params(), &[1000, 1000, 1000, 1000]);
    file.engine = Engine::Pbft;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("db"), &file).expect("open");
    assert_eq!(store.staking().expect("s"), Default::default());
    let chain: ChainId = "pos-test".parse().expect("chain");
    let t = verify_tx(devkit::tx(&chain, &alice, 0, 0, stake(&vals[0], 5), 0)).expect("tx");
    let (_, failed) = store
        .commit_ordered(
            vals[0].address(),
            1,
            vec![t],
            vec![],
            Certificate::default(),
            &[],
        )
        .expect("commit");
    assert!(matches!(
        failed[0].1,
        Error::PayloadNotSupported {
            payload: "stake",
            ..
        }
    ));
}

// --- formats ----------------------------------------------------------------

fn sample_state() -> (StakingState, ValidatorState, Unbonding) {
    let a = devkit::key(1).address();
    let b = devkit::key(2).address();
    (
        StakingState {
            epoch: 7,
            active: vec![
                Power {
                    validator: a,
                    power: 5000,
                },
                Power {
                    validator: b,
                    power: 10,
                },
            ],
            registered: vec![a, b],
            liveness_height: 55,
        },
        ValidatorState {
            operator: b,
            jailed: true,
            tombstoned: false,
            slashed: 12,
            window_blocks: 3,
            window_missed: 2,
            delegators: vec![a, b],
        },
        Unbonding {
            entries: vec![UnbondEntry {
                delegator: a,
                amount: 99,
                release_epoch: 9,
            }],
        },
    )
}

#[test]
fn staking_formats_and_the_pos_genesis_are_frozen() {
    let (st, vs, ub) = sample_state();
    let mut all = Vec::new();
    all.extend(st.to_bytes());
    all.extend(vs.to_bytes());
    all.extend(ub.to_bytes());
    let n = net(&[1000, 2000, 3000, 4000]);
    let got = [
        Hash::of(Domain::StateEntry, &all).to_hex(),
        n.store.genesis().hash().to_hex(),
        n.store.state_root().to_hex(),
    ];
    let frozen = [
        "96baa47b03dbd4b55bdca972295979464413c0cf8154f47d93265a65e1fbc312",
        "921d122f2551b831435e22d2b16653f60f9252ba906bad227b71f71df104a6e0",
        "78bd9ebbc35d3a7bd1ef7f22f8877ac217dafa9f049765bdbc66802c638c810a",
    ];
    assert_eq!(
        got.map(|g| g.to_string()),
        frozen.map(str::to_owned),
        "a staking format changed: if deliberate, update the frozen values and say so in the commit"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Staking entries decode strictly: random bytes never panic, and what
    /// decodes encodes back to the same bytes.
    #[test]
    fn staking_decoders_are_strict(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(v) = StakingState::from_bytes(&bytes) {
            prop_assert_eq!(v.to_bytes(), bytes.clone());
        }
        if let Ok(v) = ValidatorState::from_bytes(&bytes) {
            prop_assert_eq!(v.to_bytes(), bytes.clone());
        }
        if let Ok(v) = Unbonding::from_bytes(&bytes) {
            prop_assert_eq!(v.to_bytes(), bytes.clone());
        }
    }

    #[test]
    fn staking_entries_round_trip(epoch: u64, power: u64, slashed: u64, flags in 0u8..4, amount: u64) {
        let (mut st, mut vs, mut ub) = sample_state();
        st.epoch = epoch;
        st.active[0].power = power;
        vs.slashed = slashed;
        vs.jailed = flags & 1 != 0;
        vs.tombstoned = flags & 2 != 0;
        ub.entries[0].amount = amount;
        prop_assert_eq!(StakingState::from_bytes(&st.to_bytes()), Ok(st));
        prop_assert_eq!(ValidatorState::from_bytes(&vs.to_bytes()), Ok(vs));
        prop_assert_eq!(Unbonding::from_bytes(&ub.to_bytes()), Ok(ub));
    }
}
