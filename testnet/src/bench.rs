//! `pyralog-testnet bench`: a devnet, a load against it, and the figures.
//!
//! Transactions are built, stamped at the devnet's floor difficulty and signed
//! before the clock starts (stamping is the client's CPU by design; its cost is
//! reported separately). Client threads post them round-robin to every node.
//! Without `rate` each client posts as fast as answers come back (a closed
//! loop); with it, write `i` is posted at `i / rate` seconds (an open loop, so
//! the offered load does not bend to the latency). Convergence is sampled:
//! for every `sample_every`-th write, a watcher polls each node until the
//! record is there and keeps the time from submission to the last node holding
//! it. It polls every outstanding sample in turn, so one slow write does not
//! delay the clock of the ones behind it. Under an ordering engine, a single
//! post is timed by `?wait=final` on the node that took it, and a sample of a
//! bulk post by waiting on every node in turn (`GET /tx/{hash}?wait=final`),
//! so nothing polls the nodes. Writes not taken are counted by the code the
//! node gave.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use pyralog_ledger::{Encode, devkit};
use serde_json::{Value, json};

use crate::devnet::Devnet;

/// How to load the devnet.
#[derive(Debug, Clone)]
pub struct Load {
    /// Writes to send.
    pub txs: usize,
    /// Client threads posting.
    pub clients: usize,
    /// Sample convergence every this many writes.
    pub sample_every: usize,
    /// Stop posting after this long, if set.
    pub duration: Option<Duration>,
    /// Transactions per request (1: one `POST /tx` each; more: the bulk form).
    pub bulk: usize,
    /// Offered writes per second, if set (an open loop).
    pub rate: Option<f64>,
    /// Time sampled writes to finality instead of polling every node: a
    /// single post on the node that took it (`POST /tx?wait=final`), a
    /// sample of a bulk post on every node in turn (`GET
    /// /tx/{hash}?wait=final`). For ordering engines, where finality is
    /// known, and the polling itself would be a second load on the nodes.
    pub until_final: bool,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Writes sent.
    pub sent: usize,
    /// Writes the nodes accepted.
    pub accepted: usize,
    /// Seconds from the first post to the last answer.
    pub seconds: f64,
    /// Seconds from the first post until the last sampled write was on every node.
    pub converged_seconds: f64,
    /// Convergence latencies sampled, in milliseconds, sorted.
    pub convergence_ms: Vec<f64>,
    /// Whether the latencies are to finality on the receiving node (else to
    /// the last node holding the write).
    pub until_final: bool,
    /// Mean stamping time per write at the floor difficulty, in microseconds.
    pub stamp_us: f64,
    /// Stamp difficulty used.
    pub bits: u32,
    /// This machine's limits measured in the same run.
    pub verify_per_sec: f64,
    /// blake3 40-byte hashes per second, one core.
    pub hashes_per_sec: f64,
    /// The offered rate, if the load was paced.
    pub offered_per_sec: Option<f64>,
    /// Blocks the first node committed during the run (ordering engines).
    pub blocks: Option<u64>,
    /// What the machine did while the load was posted (Linux only).
    pub machine: Option<MachineUse>,
    /// Writes not taken, by the code the node gave (or why there was none).
    pub refused: BTreeMap<String, usize>,
}

/// How busy the machine was while the load was posted, from `/proc`: so a
/// run slowed by someone else's work shows it.
#[derive(Debug, Clone, Copy)]
pub struct MachineUse {
    /// Busy share of all cores, 0..1.
    pub busy: f64,
    /// The share of all cores used by processes other than the bench and its
    /// nodes.
    pub others: f64,
}

/// Clock ticks per second of `/proc`'s times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The whole machine's busy ticks (`/proc/stat`'s first line, less idle and
/// iowait).
fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(
        fields
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, t)| t)
            .sum(),
    )
}

/// User and system ticks of process `pid` (`/proc/<pid>/stat`, fields 14
/// and 15), zero once it is gone.
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // After the command's closing parenthesis, the state is field 3.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}

/// Ticks of the machine and of `pids` now.
fn sample_use(pids: &[u32]) -> Option<(u64, u64)> {
    Some((
        machine_ticks()?,
        pids.iter().map(|p| process_ticks(*p)).sum(),
    ))
}

fn machine_use(before: (u64, u64), after: (u64, u64), seconds: f64) -> MachineUse {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let capacity = (seconds * TICKS_PER_SEC * cores).max(1.0);
    let busy = after.0.saturating_sub(before.0) as f64;
    let ours = after.1.saturating_sub(before.1) as f64;
    MachineUse {
        busy: (busy / capacity).min(1.0),
        others: ((busy - ours).max(0.0) / capacity).min(1.0),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Report {
    /// Accepted writes per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.seconds
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        json!({
            "sent": self.sent,
            "accepted": self.accepted,
            "seconds": self.seconds,
            "accepted_per_sec": self.rate(),
            "end_to_end_per_sec": self.accepted as f64 / self.converged_seconds,
            "convergence_ms": {"samples": self.convergence_ms.len(), "p50": percentile(&self.convergence_ms, 0.5), "p99": percentile(&self.convergence_ms, 0.99), "max": self.convergence_ms.last()},
            "stamp": {"bits": self.bits, "mean_us": self.stamp_us},
            "limits": {"ed25519_verify_per_sec": self.verify_per_sec, "blake3_40B_hashes_per_sec": self.hashes_per_sec},
            "offered_per_sec": self.offered_per_sec,
            "blocks": self.blocks,
            "machine": self.machine.map(|m| json!({"busy": m.busy, "others": m.others})),
            "refused": self.refused,
        })
    }

    /// The report as text.
    pub fn text(&self, engine: &str, nodes: usize) -> String {
        let held = if self.until_final {
            "submission to final on the node that took the write"
        } else if engine == "gossip" {
            "submission to the last node holding the write"
        } else {
            "submission to the last node finalized the write"
        };
        let offered = match self.offered_per_sec {
            Some(r) => format!(" (offered {r:.0}/s)"),
            None => String::new(),
        };
        let blocks = match self.blocks {
            Some(b) if b > 0 && engine != "gossip" => format!(
                "\nblocks     {b} committed on the first node, {:.1} writes per block",
                self.accepted as f64 / b as f64
            ),
            _ => String::new(),
        };
        let refused = if self.refused.is_empty() {
            String::new()
        } else {
            let codes: Vec<String> = self
                .refused
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            format!("\nrefused    {}", codes.join(", "))
        };
        let machine = match self.machine {
            Some(m) => format!(
                "\nmachine    {:.0}% busy while posting, {:.0}% of it by other processes",
                m.busy * 100.0,
                m.others * 100.0
            ),
            None => String::new(),
        };
        format!(
            "{engine} devnet of {nodes} nodes\n\
             accepted   {} of {} writes in {:.2}s: {:.0} writes/s{offered}\n\
             end to end {:.0} writes/s (until the last sampled write was on every node, {:.2}s)\n\
             converged  p50 {:.1} ms, p99 {:.1} ms ({} samples: {held})\n\
             stamping   {} bits, {:.1} us per write (client side, before the clock started)\n\
             limits     ed25519 verify {:.0}/s, blake3 {:.2} M hashes/s (one core, measured now){blocks}{machine}{refused}",
            self.accepted,
            self.sent,
            self.seconds,
            self.rate(),
            self.accepted as f64 / self.converged_seconds,
            self.converged_seconds,
            percentile(&self.convergence_ms, 0.5),
            percentile(&self.convergence_ms, 0.99),
            self.convergence_ms.len(),
            self.bits,
            self.stamp_us,
            self.verify_per_sec,
            self.hashes_per_sec / 1e6,
        )
    }
}

/// Measures single-core signature verification and hashing rates now.
fn limits() -> (f64, f64) {
    let k = devkit::key(1);
    let d = pyralog_ledger::Hash::of(pyralog_ledger::Domain::TxId, b"bench");
    let sig = k.sign(pyralog_ledger::keys::SigDomain::Transaction, &d);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(300) {
        let _ = pyralog_ledger::keys::verify(
            pyralog_ledger::keys::SigDomain::Transaction,
            &d,
            &k.address(),
            &sig,
        );
        n += 1;
    }
    let verify = n as f64 / start.elapsed().as_secs_f64();
    let key = [7u8; 32];
    let mut input = [0u8; 40];
    let start = Instant::now();
    let mut h = 0u64;
    while start.elapsed() < Duration::from_millis(300) {
        for _ in 0..1000 {
            input[..8].copy_from_slice(&h.to_le_bytes());
            std::hint::black_box(blake3::keyed_hash(&key, &input));
            h += 1;
        }
    }
    (verify, h as f64 / start.elapsed().as_secs_f64())
}

/// Runs `load` against `net`.
pub fn run(net: &Devnet, load: &Load, log: &dyn Fn(&str)) -> Result<Report> {
    let (chain, epoch, bits) = crate::devnet::chain_now(&net.nodes[0].rpc)?;
    log(&format!(
        "building {} signed writes stamped at {bits} bits",
        load.txs
    ));
    let run_id = std::process::id();
    let started = Instant::now();
    // Each write from its own key at nonce 0, so an ordering engine (whose
    // nonces are sequential per sender) takes them in any order too.
    let txs: Vec<(String, String, String)> = (0..load.txs)
        .map(|i| {
            let signer = devkit::key((u64::from(run_id) << 32) | i as u64);
            let key = format!("bench-{i}");
            let tx = devkit::tx(
                &chain,
                &signer,
                0,
                epoch,
                devkit::put(&signer, key.as_bytes(), b"v"),
                bits,
            );
            (
                format!("/kv/{}/{key}", signer.address()),
                hex::encode(tx.to_bytes()),
                format!("/tx/{}?wait=final", tx.id().to_hex()),
            )
        })
        .collect();
    let stamp_us = started.elapsed().as_secs_f64() * 1e6 / load.txs.max(1) as f64;
    let txs = Arc::new(txs);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let samples: Arc<Mutex<Vec<(String, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let finals: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let refused: Arc<Mutex<BTreeMap<String, usize>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let rpcs: Vec<String> = net.nodes.iter().map(|n| n.rpc.clone()).collect();
    log(&format!(
        "posting with {} clients to {} nodes",
        load.clients,
        rpcs.len()
    ));
    let blocks_before = blocks_committed(&rpcs[0]);
    let ours: Vec<u32> = net
        .children
        .iter()
        .flatten()
        .map(|c| c.id())
        .chain(std::iter::once(std::process::id()))
        .collect();
    let use_before = sample_use(&ours);
    let t0 = Instant::now();
    let stop_at = load.duration.map(|d| t0 + d);
    let rate = load.rate.filter(|r| *r > 0.0);
    // Samples of bulk posts are waited on, not polled ([`watch_final`]).
    let waits = load.until_final && load.bulk > 1;
    let workers: Vec<_> = (0..load.clients)
        .map(|_| {
            let (txs, next, accepted, samples, rpcs, refused) = (
                txs.clone(),
                next.clone(),
                accepted.clone(),
                samples.clone(),
                rpcs.clone(),
                refused.clone(),
            );
            let sample_every = load.sample_every.max(1);
            let bulk = load.bulk;
            let until_final = load.until_final && bulk == 1;
            let finals = finals.clone();
            std::thread::spawn(move || {
                let agent = crate::devnet::agent();
                let bulk = bulk.max(1);
                loop {
                    if stop_at.is_some_and(|t| Instant::now() >= t) {
                        return;
                    }
                    let first = next.fetch_add(bulk, Ordering::Relaxed);
                    if first >= txs.len() {
                        return;
                    }
                    if let Some(r) = rate {
                        let due = t0 + Duration::from_secs_f64(first as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let last = (first + bulk).min(txs.len());
                    let rpc = &rpcs[(first / bulk) % rpcs.len()];
                    let sent = Instant::now();
                    let ok: Vec<usize> = if bulk == 1 {
                        let timed = until_final && first % sample_every == 0;
                        match crate::devnet::post_tx_with(&agent, rpc, &txs[first].1, timed) {
                            Ok((200, _)) if timed => {
                                let ms = sent.elapsed().as_secs_f64() * 1e3;
                                finals.lock().unwrap_or_else(|p| p.into_inner()).push(ms);
                                // Timed already; the watcher need not look.
                                accepted.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok((200, _)) => vec![first],
                            Ok((status, v)) => {
                                let code = v["code"].as_str().map_or(status.to_string(), str::to_string);
                                refuse(&refused, code, 1);
                                vec![]
                            }
                            Err(_) => {
                                refuse(&refused, "no answer".into(), 1);
                                vec![]
                            }
                        }
                    } else {
                        let body = json!({ "txs": txs[first..last].iter().map(|(_, h, _)| h).collect::<Vec<_>>() });
                        let answer = agent
                            .post(&format!("{rpc}/tx"))
                            .send_json(body)
                            .ok()
                            .and_then(|mut r| r.body_mut().read_json::<Value>().ok());
                        let results = answer.as_ref().and_then(|v| v["results"].as_array());
                        match results {
                            Some(rs) => {
                                let mut ok = Vec::with_capacity(rs.len());
                                for (k, r) in rs.iter().enumerate() {
                                    if r["status"] == "pending" {
                                        ok.push(first + k);
                                    } else {
                                        let code = r["code"].as_str().unwrap_or("unknown");
                                        refuse(&refused, code.to_string(), 1);
                                    }
                                }
                                ok
                            }
                            None => {
                                let code = answer
                                    .as_ref()
                                    .and_then(|v| v["code"].as_str())
                                    .unwrap_or("no answer");
                                refuse(&refused, code.to_string(), last - first);
                                vec![]
                            }
                        }
                    };
                    accepted.fetch_add(ok.len(), Ordering::Relaxed);
                    let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
                    for i in ok.into_iter().filter(|i| i % sample_every == 0) {
                        let path = if waits { &txs[i].2 } else { &txs[i].0 };
                        s.push((path.clone(), sent));
                    }
                }
            })
        })
        .collect();
    // Watch samples as they appear, while the load runs.
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (samples, rpcs, finished) = (samples.clone(), rpcs.clone(), finished.clone());
        std::thread::spawn(move || {
            if waits {
                watch_final(&samples, &rpcs, &finished)
            } else {
                watch(&samples, &rpcs, &finished)
            }
        })
    };
    for w in workers {
        let _ = w.join();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let machine = use_before
        .zip(sample_use(&ours))
        .map(|(before, after)| machine_use(before, after, seconds));
    finished.store(true, Ordering::Relaxed);
    let mut convergence = watcher.join().map_err(|_| anyhow!("the watcher failed"))?;
    convergence.extend(finals.lock().unwrap_or_else(|p| p.into_inner()).iter());
    let converged_seconds = t0.elapsed().as_secs_f64();
    convergence.sort_by(f64::total_cmp);
    let blocks = blocks_committed(&rpcs[0])
        .zip(blocks_before)
        .map(|(after, before)| after.saturating_sub(before));
    let (verify_per_sec, hashes_per_sec) = limits();
    Ok(Report {
        sent: next.load(Ordering::Relaxed).min(load.txs),
        accepted: accepted.load(Ordering::Relaxed),
        seconds,
        converged_seconds,
        convergence_ms: convergence,
        until_final: load.until_final && load.bulk <= 1,
        stamp_us,
        bits,
        verify_per_sec,
        hashes_per_sec,
        offered_per_sec: rate,
        blocks,
        machine,
        refused: refused.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    })
}

/// Counts `n` writes refused with `code`.
fn refuse(refused: &Mutex<BTreeMap<String, usize>>, code: String, n: usize) {
    *refused
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(code)
        .or_default() += n;
}

/// Polls every outstanding sample on every node that does not hold it yet,
/// round after round, until the load is over and no sample is left (or five
/// minutes pass). Returns the latencies in milliseconds.
fn watch(
    samples: &Mutex<Vec<(String, Instant)>>,
    rpcs: &[String],
    finished: &AtomicBool,
) -> Vec<f64> {
    let agent = crate::devnet::agent();
    let holds = |rpc: &str, path: &str| {
        agent
            .get(&format!("{rpc}{path}"))
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200)
    };
    let mut done: Vec<f64> = Vec::new();
    let mut outstanding: Vec<(String, Instant, Vec<&String>)> = Vec::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        {
            let s = samples.lock().unwrap_or_else(|p| p.into_inner());
            for (path, sent) in &s[seen..] {
                outstanding.push((path.clone(), *sent, rpcs.iter().collect()));
            }
            seen = s.len();
        }
        if outstanding.is_empty() {
            if finished.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for (path, sent, pending) in &mut outstanding {
            // The nodes in turn, up to the first that lacks the write: the
            // others are asked once it has it. They finalize a write about
            // together, so asking all of them every round was mostly reads
            // that told nothing, taken from the nodes' CPU while they are
            // measured. The write is done in the same round as before: the
            // first after the last node took it.
            while let Some(rpc) = pending.first() {
                if !holds(rpc, path) {
                    break;
                }
                pending.remove(0);
            }
            if pending.is_empty() {
                done.push(sent.elapsed().as_secs_f64() * 1e3);
            }
        }
        outstanding.retain(|(_, _, pending)| !pending.is_empty());
        // Gentle on the nodes: the watcher's reads are not the load measured.
        std::thread::sleep(Duration::from_millis(1));
    }
    done
}

/// For ordering engines with bulk posts: waits on the nodes in turn for each
/// sample to be final there (`GET /tx/{hash}?wait=final` answers once it
/// is, at once if it already is), one thread per sample, so nothing polls
/// the nodes while they are measured and a write is timed when its last
/// node has it, not at the next poll. Returns the latencies in milliseconds
/// (a sample some node never answered for is left out).
fn watch_final(
    samples: &Mutex<Vec<(String, Instant)>>,
    rpcs: &[String],
    finished: &AtomicBool,
) -> Vec<f64> {
    let done: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let mut waiting = Vec::new();
    let mut seen = 0;
    loop {
        let new: Vec<(String, Instant)> = {
            let s = samples.lock().unwrap_or_else(|p| p.into_inner());
            let new = s[seen..].to_vec();
            seen = s.len();
            new
        };
        if new.is_empty() {
            if finished.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for (path, sent) in new {
            let (rpcs, done) = (rpcs.to_vec(), done.clone());
            waiting.push(std::thread::spawn(move || {
                let agent = crate::devnet::agent();
                for rpc in &rpcs {
                    let answered = agent
                        .get(&format!("{rpc}{path}"))
                        .call()
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    if !answered {
                        return;
                    }
                }
                let ms = sent.elapsed().as_secs_f64() * 1e3;
                done.lock().unwrap_or_else(|p| p.into_inner()).push(ms);
            }));
        }
    }
    for w in waiting {
        let _ = w.join();
    }
    let done = done.lock().unwrap_or_else(|p| p.into_inner());
    done.clone()
}

/// The node's `blocks_committed_total` metric, if it has one.
fn blocks_committed(rpc: &str) -> Option<u64> {
    let mut r = crate::devnet::agent()
        .get(&format!("{rpc}/metrics"))
        .call()
        .ok()?;
    let text = r.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("pyralog_blocks_committed_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_was_refused_and_why_only_when_something_was() {
        let mut report = Report {
            sent: 10,
            accepted: 7,
            seconds: 1.0,
            converged_seconds: 1.5,
            convergence_ms: vec![3.0, 4.0],
            until_final: false,
            stamp_us: 90.0,
            bits: 8,
            verify_per_sec: 30_000.0,
            hashes_per_sec: 1e7,
            offered_per_sec: None,
            blocks: None,
            machine: None,
            refused: BTreeMap::new(),
        };
        assert!(!report.text("pbft", 4).contains("refused"));
        assert!(
            report.json()["refused"]
                .as_object()
                .is_some_and(|m| m.is_empty())
        );
        let refused = Mutex::new(BTreeMap::new());
        refuse(&refused, "stamp_too_weak".into(), 2);
        refuse(&refused, "no answer".into(), 1);
        refuse(&refused, "stamp_too_weak".into(), 1);
        report.refused = refused.into_inner().expect("counts");
        let text = report.text("pbft", 4);
        assert!(
            text.contains("\nrefused    no answer 1, stamp_too_weak 3"),
            "{text}"
        );
        assert_eq!(report.json()["refused"]["stamp_too_weak"], 3);
    }

    #[test]
    fn machine_use_splits_the_busy_time_between_the_bench_and_others() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // Two seconds: the machine busy 150 ticks per core, ours 100 of them.
        let before = (1_000, 400);
        let after = (1_000 + (150.0 * cores) as u64, 400 + (100.0 * cores) as u64);
        let m = machine_use(before, after, 2.0);
        assert!((m.busy - 0.75).abs() < 0.01, "{m:?}");
        assert!((m.others - 0.25).abs() < 0.01, "{m:?}");
        // Our count can pass the machine's (ticks are rounded apiece): never
        // less than nothing for the others.
        let m = machine_use((0, 0), (10, 50), 1.0);
        assert_eq!(m.others, 0.0);
    }

    #[test]
    fn this_process_and_the_machine_show_their_ticks() {
        let me = std::process::id();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(150) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        assert!(process_ticks(me) > 0, "no CPU time read for this process");
        assert_eq!(process_ticks(u32::MAX), 0, "a process that is not there");
        assert!(machine_ticks().is_some_and(|t| t > 0));
    }
}
