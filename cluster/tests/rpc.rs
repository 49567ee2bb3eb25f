//! What a member refuses on its RPC surface, and a write that finds no
//! leader.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use pyralog_cluster::network::{Bytes, MAX_RPC_BYTES, Reply, Rpc, SNAPSHOT_CHUNK, fit};
use pyralog_cluster::types::Entry;
use pyralog_cluster::{Error, Member, MemberConfig, TypeConfig, wire};

async fn ask(m: &Member, rpc: &Rpc) -> Reply {
    let bytes = wire::encode("rpc", rpc, MAX_RPC_BYTES).expect("encode");
    let reply = m.handle(9, &bytes).await;
    wire::decode("reply", &reply, MAX_RPC_BYTES).expect("decode")
}

fn failed(r: Reply) -> String {
    match r {
        Reply::Failed(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_out_of_order_requests_are_refused() {
    let h = Harness::cluster(1).await;
    let m = h.leader(Duration::from_secs(10)).await;
    let reply = m.handle(9, b"\xff\x00garbage").await;
    let reply: Reply = wire::decode("reply", &reply, MAX_RPC_BYTES).expect("decode");
    assert!(failed(reply).contains("cannot decode"));
    // A snapshot piece of a transfer that never started.
    let why = failed(
        ask(
            &m,
            &Rpc::SnapshotChunk {
                transfer: 1,
                offset: 10,
                data: Bytes(vec![0; 10]),
                done: None,
            },
        )
        .await,
    );
    assert!(why.contains("did not start"), "{why}");
    // A piece over the cap.
    let why = failed(
        ask(
            &m,
            &Rpc::SnapshotChunk {
                transfer: 2,
                offset: 0,
                data: Bytes(vec![0; SNAPSHOT_CHUNK + 1]),
                done: None,
            },
        )
        .await,
    );
    assert!(why.contains("more than"), "{why}");
    // A gap in a transfer.
    let first = Rpc::SnapshotChunk {
        transfer: 3,
        offset: 0,
        data: Bytes(vec![0; 10]),
        done: None,
    };
    assert!(matches!(ask(&m, &first).await, Reply::ChunkStored));
    let why = failed(
        ask(
            &m,
            &Rpc::SnapshotChunk {
                transfer: 3,
                offset: 20,
                data: Bytes(vec![0; 10]),
                done: None,
            },
        )
        .await,
    );
    assert!(why.contains("expected 10"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_to_a_member_that_does_not_lead_says_so() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(Duration::from_secs(10)).await;
    let follower = h.other(leader.id());
    let r = ask(&follower, &Rpc::Forward(common::write(1, "x"))).await;
    assert!(
        matches!(r, Reply::NotLeader(Some(l)) if l == leader.id()),
        "{r:?}"
    );
    let r = ask(&follower, &Rpc::ReadIndex).await;
    assert!(
        matches!(r, Reply::NotLeader(Some(l)) if l == leader.id()),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_finds_no_leader_fails_after_its_deadline() {
    let h = Harness::new();
    let mut config = MemberConfig::new(1, h.dir.path().join("m1"), common::genesis());
    config.write_deadline = Duration::from_millis(500);
    let lonely = Member::start(config, h.net.transport(1))
        .await
        .expect("start");
    h.net.register(&lonely);
    // Never initialized: it knows no leader and no members.
    let t = Instant::now();
    let e = lonely
        .write(common::write(1, "x"))
        .await
        .expect_err("no leader");
    assert!(matches!(e, Error::NoLeader), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

fn entry(index: u64, size: usize) -> Entry {
    let mut cmd = common::write(index, "k");
    if let pyralog_cluster::Command::Write(tx) = &mut cmd {
        std::sync::Arc::make_mut(tx).body.payload =
            pyralog_ledger::devkit::put(&pyralog_ledger::devkit::key(1), b"k", &vec![1u8; size]);
    }
    Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), cmd)
}

#[test]
fn append_entries_are_trimmed_to_the_message_cap() {
    let mut req = AppendEntriesRequest::<TypeConfig> {
        vote: openraft::impls::Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: (1..=8).map(|i| entry(i, 10_000)).collect(),
        leader_commit: None,
    };
    let kept = fit(&mut req, 30_000).expect("fit");
    assert!(req.entries.len() < 8 && !req.entries.is_empty());
    assert_eq!(kept, req.entries.last().map(|e| e.log_id()));
    let size = wire::encode("rpc", &Rpc::Append(req.clone()), usize::MAX)
        .expect("encode")
        .len();
    assert!(size <= 30_000, "{size}");
    // Under the cap nothing is dropped.
    assert_eq!(fit(&mut req, usize::MAX).expect("fit"), None);
    // One entry always goes, however large.
    let mut one = AppendEntriesRequest::<TypeConfig> {
        vote: openraft::impls::Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![entry(1, 50_000)],
        leader_commit: None,
    };
    assert_eq!(fit(&mut one, 100).expect("fit"), None);
    assert_eq!(one.entries.len(), 1);
}

#[test]
fn the_envelope_refuses_what_is_over_its_cap() {
    let e = wire::encode("rpc", &Rpc::ReadIndex, 2).expect_err("cap");
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let bytes = wire::encode("rpc", &Rpc::ReadIndex, 1 << 10).expect("encode");
    let e = wire::decode::<Rpc>("rpc", &bytes, 2).expect_err("cap");
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}
