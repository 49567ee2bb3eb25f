//! A rough latency probe (debug build, in-process network): not a benchmark.
//! Run with `cargo test -p pyralog-cluster --test probe -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run by hand"]
async fn write_latency_probe() {
    let h = common::Harness::cluster(3).await;
    let leader = h.leader(Duration::from_secs(10)).await;
    let cmds: Vec<_> = (0..300).map(|i| common::write(10_000 + i, "k")).collect();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    for c in cmds {
        let t = Instant::now();
        leader.write(c).await.expect("write");
        lat.push(t.elapsed());
    }
    let total = t0.elapsed();
    lat.sort();
    println!(
        "one client: {} writes in {:?} ({:.0}/s), p50 {:?}, p99 {:?}",
        lat.len(),
        total,
        lat.len() as f64 / total.as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}

#[test]
#[ignore = "prints figures; run by hand"]
fn fsync_probe() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = pyralog_cluster::open_cluster_db(&dir.path().join("raft.redb")).expect("db");
    let t = Instant::now();
    for i in 0..100u64 {
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("probe"))
                .expect("table");
            t.insert(i, [0u8; 200].as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    println!("durable redb commit: {:?} each", t.elapsed() / 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run by hand"]
async fn concurrent_write_probe() {
    let h = common::Harness::cluster(3).await;
    let leader = h.leader(Duration::from_secs(10)).await;
    let clients = 64u64;
    let per = 20u64;
    let batches: Vec<Vec<_>> = (0..clients)
        .map(|c| {
            (0..per)
                .map(|i| common::write(20_000 + c * per + i, "k"))
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for cmds in batches {
        let m = std::sync::Arc::clone(&leader);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for c in cmds {
                let t = Instant::now();
                m.write(c).await.expect("write");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let total = t0.elapsed();
    lat.sort();
    println!(
        "{clients} clients: {} writes in {:?} ({:.0}/s), p50 {:?}, p99 {:?}",
        lat.len(),
        total,
        lat.len() as f64 / total.as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
