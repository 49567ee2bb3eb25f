//! Three members over the in-process network: replication, forwarding,
//! failover, snapshots, membership changes, linearizable reads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Harness, addr, put_batch, record, write};
use pyralog_cluster::{Consistency, Error, Response};

const WAIT: Duration = Duration::from_secs(20);

fn last_index(h: &Harness) -> u64 {
    h.members
        .values()
        .filter_map(|m| m.status().committed)
        .max()
        .unwrap_or(0)
}

/// Every member's ledger has the same state root.
fn assert_one_state_root(h: &Harness) {
    let roots: Vec<_> = h
        .members
        .values()
        .map(|m| m.view().ledger().read().expect("ledger").state_root())
        .collect();
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_leader_commit_on_every_member() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    for seq in 1..=10 {
        let r = leader
            .write(put_batch(seq, &format!("k{seq}"), "v"))
            .await
            .expect("write");
        assert!(
            matches!(r, Response::Merged { already: false, .. }),
            "{r:?}"
        );
    }
    let r = leader.write(write(500, "pending")).await.expect("write");
    let Response::Pending { id } = r else {
        panic!("{r:?}")
    };
    let index = last_index(&h);
    for m in h.members.values() {
        h.applied(m, index, WAIT).await;
        for seq in 1..=10 {
            assert_eq!(record(m, &format!("k{seq}")), Some(b"v".to_vec()));
        }
        assert!(m.view().is_pending(&id).expect("pending"));
    }
    assert_one_state_root(&h);
    // Applying the same batch again changes nothing.
    let again = leader.write(put_batch(1, "k1", "v")).await.expect("write");
    assert!(
        matches!(again, Response::Merged { already: true, .. }),
        "{again:?}"
    );
}

/// The leader keeps several appends on the wire to a follower at once
/// (`network::stream`); RPCs that overtake each other must not matter. With
/// two appends carrying entries in flight together, the later arriving first
/// is a conflict that is not one, which openraft treats as a follower losing
/// its log (a panic in a debug build, a stuck follower otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_everywhere_while_rpcs_overtake_each_other() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    h.net.jitter(Some(Duration::from_millis(4)), 0x5eed);
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let leader = Arc::clone(&leader);
            tokio::spawn(async move {
                for i in 0..12u64 {
                    let seq = 1 + w * 12 + i;
                    leader
                        .write(put_batch(seq, &format!("j{seq}"), "v"))
                        .await
                        .expect("write");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    h.net.jitter(None, 0);
    assert_eq!(h.leader(WAIT).await.id(), leader.id(), "the leader changed");
    // Two calls to one follower at once is what can overtake: an append and
    // a commit-only one, or a heartbeat.
    let overlapped = h
        .members
        .keys()
        .filter(|&&id| id != leader.id())
        .map(|&id| h.net.most_in_flight(leader.id(), id))
        .max()
        .unwrap_or(0);
    assert!(
        overlapped >= 2,
        "calls to a follower never overlapped ({overlapped})"
    );
    let index = last_index(&h);
    for m in h.members.values() {
        h.applied(m, index, WAIT).await;
        for seq in 1..=96 {
            assert_eq!(record(m, &format!("j{seq}")), Some(b"v".to_vec()), "j{seq}");
        }
    }
    assert_one_state_root(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_written_together_apply_in_order_and_answer_each() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    let answers = leader
        .write_many_as_leader(vec![
            put_batch(1, "k1", "v"),
            put_batch(1, "k1", "v"),
            write(500, "pending"),
            put_batch(2, "k2", "v"),
        ])
        .await
        .expect("written");
    // In order: the second copy of batch 1 finds the first applied.
    assert!(
        matches!(
            answers.as_slice(),
            [
                Response::Merged { already: false, .. },
                Response::Merged { already: true, .. },
                Response::Pending { .. },
                Response::Merged { already: false, .. },
            ]
        ),
        "{answers:?}"
    );
    let index = last_index(&h);
    for m in h.members.values() {
        h.applied(m, index, WAIT).await;
        assert_eq!(record(m, "k1"), Some(b"v".to_vec()));
        assert_eq!(record(m, "k2"), Some(b"v".to_vec()));
    }
    // Only the leader writes this way; a follower does not forward.
    let follower = h.other(leader.id());
    let refused = follower
        .write_many_as_leader(vec![put_batch(3, "k3", "v")])
        .await
        .expect_err("a follower");
    assert!(matches!(refused, Error::NotLeader { .. }), "{refused}");
    assert_eq!(record(&leader, "k3"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_proposed_before_the_last_is_answered_land_in_the_order_proposed() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    let turn = |from: u64, records: &[&str]| pyralog_cluster::Command::Turn {
        from,
        records: records.iter().map(|r| r.as_bytes().to_vec()).collect(),
        intents: Vec::new(),
    };
    // Three turns proposed one after another without waiting, each starting
    // where the one before ends: proposed out of order, a turn would leave a
    // gap in the engine log and be refused.
    let mut pending = Vec::new();
    for (from, records) in [(0, vec!["a"]), (1, vec!["b", "c"]), (3, vec!["d"])] {
        let answers = leader
            .propose_many_as_leader(vec![turn(from, &records)])
            .await
            .expect("proposed");
        pending.push(answers);
    }
    // Answered whichever is awaited first.
    for answers in pending.into_iter().rev() {
        let answers = answers.await.expect("answered");
        assert!(
            matches!(answers.as_slice(), [Response::Turn(refused)] if refused.is_empty()),
            "{answers:?}"
        );
    }
    let index = last_index(&h);
    for m in h.members.values() {
        h.applied(m, index, WAIT).await;
        let records = common::engine_records(m.view());
        let expected: Vec<Vec<u8>> = ["a", "b", "c", "d"]
            .iter()
            .map(|r| r.as_bytes().to_vec())
            .collect();
        assert_eq!(records, expected);
    }
    // A follower proposes nothing.
    let follower = h.other(leader.id());
    let refused = match follower.propose_many_as_leader(vec![turn(4, &["e"])]).await {
        Ok(answers) => answers.await.expect_err("a follower"),
        Err(e) => e,
    };
    assert!(matches!(refused, Error::NotLeader { .. }), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_follower_is_forwarded_to_the_leader() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    let follower = h.other(leader.id());
    assert_eq!(follower.status().role, "follower");
    let r = follower
        .write(put_batch(1, "via-follower", "yes"))
        .await
        .expect("forwarded write");
    assert!(matches!(r, Response::Merged { .. }), "{r:?}");
    // Acknowledged means committed: a linearizable read anywhere sees it.
    for m in h.members.values() {
        let v = m
            .read(Consistency::Linearizable, |s| {
                s.record(&pyralog_ledger::devkit::key(1).address(), b"via-follower")
                    .expect("read")
                    .and_then(|r| r.value)
            })
            .await
            .expect("linearizable read");
        assert_eq!(v, Some(b"yes".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_is_refused_by_every_member_alike() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    // A batch whose signature does not match its contents.
    let mut cmd = put_batch(1, "k", "v");
    if let pyralog_cluster::Command::Batch { batch, .. } = &mut cmd {
        batch.seq = 99;
    }
    let r = leader.write(cmd).await.expect("committed");
    assert!(matches!(r, Response::Refused { .. }), "{r:?}");
    let index = last_index(&h);
    for m in h.members.values() {
        h.applied(m, index, WAIT).await;
        assert_eq!(record(m, "k"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_stops_a_new_one_is_elected_and_nothing_acknowledged_is_lost() {
    let mut h = Harness::cluster(3).await;
    let old = h.leader(WAIT).await;
    let old_id = old.id();
    drop(old);
    let mut acked = Vec::new();
    for seq in 1..=5 {
        let k = format!("before-{seq}");
        h.members[&old_id]
            .write(put_batch(seq, &k, "v"))
            .await
            .expect("write");
        acked.push(k);
    }
    h.stop(old_id).await;
    let new = h.leader(WAIT).await;
    assert_ne!(new.id(), old_id);
    for seq in 6..=10 {
        let k = format!("after-{seq}");
        h.other(new.id())
            .write(put_batch(seq, &k, "v"))
            .await
            .expect("write after failover");
        acked.push(k);
    }
    for m in h.members.values() {
        for k in &acked {
            let v = m
                .read(Consistency::Linearizable, |s| {
                    s.record(&pyralog_ledger::devkit::key(1).address(), k.as_bytes())
                        .expect("read")
                        .and_then(|r| r.value)
                })
                .await
                .expect("read");
            assert_eq!(v, Some(b"v".to_vec()), "{k} on member {}", m.id());
        }
    }
    // The old leader restarts from its files and catches up.
    let back = h.start(old_id).await;
    h.applied(&back, last_index(&h), WAIT).await;
    for k in &acked {
        assert_eq!(record(&back, k), Some(b"v".to_vec()), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_purged_entries_catches_up_by_snapshot() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    let behind = h.other(leader.id());
    h.net.isolate(behind.id(), true);
    for seq in 1..=30 {
        leader
            .write(put_batch(seq, &format!("s{seq}"), "v"))
            .await
            .expect("write");
    }
    leader
        .write(write(900, "still-pending"))
        .await
        .expect("write");
    // Snapshot and drop the log the isolated member would need.
    leader.raft().trigger().snapshot().await.expect("snapshot");
    let deadline = std::time::Instant::now() + WAIT;
    while leader.metrics().snapshot.is_none() {
        assert!(std::time::Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let upto = leader.status().applied.expect("applied");
    leader
        .raft()
        .trigger()
        .purge_log(upto)
        .await
        .expect("purge");
    let deadline = std::time::Instant::now() + WAIT;
    while leader.metrics().purged.as_ref().map(|l| l.index) < Some(upto) {
        assert!(std::time::Instant::now() < deadline, "log not purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.net.isolate(behind.id(), false);
    h.applied(&behind, upto, WAIT).await;
    assert!(
        behind.metrics().snapshot.is_some(),
        "caught up without a snapshot"
    );
    for seq in 1..=30 {
        assert_eq!(record(&behind, &format!("s{seq}")), Some(b"v".to_vec()));
    }
    assert_eq!(behind.view().pending_len().expect("pending"), 1);
    let root = |m: &pyralog_cluster::Member| m.view().ledger().read().expect("ledger").state_root();
    assert_eq!(root(&behind), root(&leader));
    // It keeps following after the snapshot.
    leader
        .write(put_batch(31, "s31", "v"))
        .await
        .expect("write");
    h.applied(&behind, last_index(&h), WAIT).await;
    assert_eq!(record(&behind, "s31"), Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_added_promoted_and_a_voter_removed_while_writes_go_on() {
    let mut h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    let seq = Arc::new(AtomicU64::new(0));
    let writer = {
        let (m, seq) = (Arc::clone(&leader), Arc::clone(&seq));
        tokio::spawn(async move {
            let mut keys = Vec::new();
            for _ in 0..40 {
                let s = seq.fetch_add(1, Ordering::SeqCst) + 1;
                let k = format!("w{s}");
                m.write(put_batch(s, &k, "v"))
                    .await
                    .expect("write during changes");
                keys.push(k);
            }
            keys
        })
    };
    let learner = h.start(4).await;
    leader.add_learner(4, addr(4)).await.expect("add learner");
    assert_eq!(learner.status().role, "learner");
    leader.promote(&[4]).await.expect("promote");
    let victim = h
        .members
        .keys()
        .copied()
        .find(|id| *id != leader.id() && *id != 4)
        .expect("a voter to remove");
    // Membership changes can be sent to any member.
    h.members[&4].remove(&[victim]).await.expect("remove");
    let keys = writer.await.expect("writer");
    let status = leader.status();
    assert!(status.voters.contains(&4), "{status:?}");
    assert!(!status.voters.contains(&victim), "{status:?}");
    assert!(!status.learners.contains(&victim), "{status:?}");
    h.stop(victim).await;
    h.applied(&learner, last_index(&h), WAIT).await;
    for k in &keys {
        assert_eq!(record(&learner, k), Some(b"v".to_vec()), "{k}");
    }
    // The new voter counts towards the quorum: writes still commit.
    leader
        .write(put_batch(1000, "after", "v"))
        .await
        .expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_honour_their_consistency_level() {
    let h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    let follower = h.other(leader.id());
    leader.write(put_batch(1, "r", "v")).await.expect("write");
    let get = |s: &pyralog_ledger::Store| {
        s.record(&pyralog_ledger::devkit::key(1).address(), b"r")
            .expect("read")
            .and_then(|r| r.value)
    };
    // A follower refuses a leader-level read and says who leads.
    let e = follower
        .read(Consistency::Leader, get)
        .await
        .expect_err("not leader");
    assert!(
        matches!(e, Error::NotLeader { leader: Some(l), .. } if l == leader.id()),
        "{e}"
    );
    assert_eq!(
        leader.read(Consistency::Leader, get).await.expect("read"),
        Some(b"v".to_vec())
    );
    // A linearizable read on a follower waits for the leader's read index.
    assert_eq!(
        follower
            .read(Consistency::Linearizable, get)
            .await
            .expect("read"),
        Some(b"v".to_vec())
    );
    // A leader cut off from the quorum cannot confirm it still leads.
    h.net.isolate(leader.id(), true);
    let e = leader
        .read(Consistency::Linearizable, get)
        .await
        .expect_err("an isolated leader must not serve a linearizable read");
    assert!(!matches!(e, Error::Storage(_)), "{e}");
    assert!(
        "weak"
            .parse::<Consistency>()
            .map_err(|e| e.to_string())
            .err()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarted_from_its_files_keeps_everything_acknowledged() {
    let mut h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    for seq in 1..=5 {
        leader
            .write(put_batch(seq, &format!("r{seq}"), "v"))
            .await
            .expect("write");
    }
    let Response::Pending { id } = leader.write(write(700, "p")).await.expect("write") else {
        panic!("not pending")
    };
    drop(leader);
    for id in [1, 2, 3] {
        h.stop(id).await;
    }
    for id in [1, 2, 3] {
        h.start(id).await;
    }
    let leader = h.leader(WAIT).await;
    // The new term's first entry commits everything before it.
    leader.write(put_batch(6, "r6", "v")).await.expect("write");
    let index = last_index(&h);
    for m in h.members.values() {
        h.applied(m, index, WAIT).await;
        for seq in 1..=6 {
            assert_eq!(
                record(m, &format!("r{seq}")),
                Some(b"v".to_vec()),
                "member {}",
                m.id()
            );
        }
        assert!(m.view().is_pending(&id).expect("pending"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_in_its_term_applies_its_whole_log_before_it_builds_on_it() {
    let mut h = Harness::cluster(3).await;
    let leader = h.leader(WAIT).await;
    let id = leader.id();
    leader
        .write_as_leader(put_batch(1, "a", "v"))
        .await
        .expect("a write");
    // Its followers go: what it writes now stays in its log, uncommitted.
    let others: Vec<u64> = (1..=3).filter(|i| *i != id).collect();
    for &o in &others {
        h.stop(o).await;
    }
    let stuck = tokio::time::timeout(
        Duration::from_millis(500),
        leader.write_as_leader(put_batch(2, "b", "v")),
    )
    .await;
    assert!(stuck.is_err(), "committed without a quorum: {stuck:?}");
    let last = leader.metrics().last_log_index.expect("a log");
    drop(leader);
    h.stop(id).await;
    // It comes back first (leading again in its term: openraft restores a
    // committed vote), then its followers.
    let back = h.start(id).await;
    for &o in &others {
        h.start(o).await;
    }
    back.catch_up_as_leader().await.expect("caught up");
    let applied = back.status().applied.unwrap_or(0);
    assert!(
        applied >= last,
        "applied {applied}, but its log reached {last} before it stopped"
    );
    assert_eq!(record(&back, "b"), Some(b"v".to_vec()));
}
