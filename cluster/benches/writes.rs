//! Durable writes of one 3-member cluster on loopback, side by side with a
//! 3-member etcd on the same machine, in one run.
//!
//! Run with `cargo bench -p pyralog-cluster --bench writes` (figures and
//! method in `docs/BENCHMARKS.md`, "Clusters (issue 5)").
//!
//! # Pyralog
//!
//! Three members, each in its own OS process (this binary started again with
//! `--member <id> <dir>`), each with its own libp2p swarm on a loopback TCP
//! port, talking `/pyralog/raft/2` (one stream per pair of members), with their Raft log synced to disk
//! before openraft hears of it (the production path). This
//! process is member 1, the leader, and also runs the clients: each client
//! calls [`Member::write`] with a `Command::Write` of a signed, stamped
//! `Put` and waits for the answer, which comes once the entry is committed
//! by a majority and applied. Transactions are signed before a phase starts,
//! so a client's signing is not timed (etcd's client signs nothing either).
//!
//! # etcd
//!
//! Debian's `etcd` (3.4), three members on loopback ports with data folders
//! beside the Pyralog members' (same disk), default settings (the WAL is
//! fsynced before a put is answered). The clients speak etcd's gRPC `Put` over
//! HTTP/2 directly (the `benchmark` tool is not packaged): one connection per
//! client, to the leader, with values as large as a Pyralog write's
//! canonical bytes.
//!
//! # Shape of a run
//!
//! Both clusters start, then each round runs, for 1 and for 64 clients, a
//! Pyralog phase and an etcd phase of the same length, so the two see the
//! machine in the same state. A phase reports writes per second and the p50
//! and p99 of the write latency; the summary gives the median over rounds.
//!
//! Settings (environment): `BENCH_SECS` (each phase, default 5),
//! `BENCH_ROUNDS` (default 3), `BENCH_CLIENTS` (default `1,64`),
//! `BENCH_ETCD=0` to skip etcd, `BENCH_ETCD_BIN` (default `etcd`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use pyralog_cluster::machine::PendingLimits;
use pyralog_cluster::network::p2p::{P2pTransport, serve};
use pyralog_cluster::{Command, Member, MemberConfig, NodeId, Response};
use pyralog_ledger::codec::Encode;
use pyralog_ledger::{ChainId, Engine, GenesisFile, devkit};
use pyralog_p2p::{Config, Limits, NetCommand, NetEvent, Network, PeerId, Topics};
use tokio::sync::mpsc;

/// The benchmark's chain.
const CHAIN: &str = "pyralog-bench";
/// Members of each cluster.
const MEMBERS: u64 = 3;
/// Stamp difficulty of the genesis and of every write.
const STAMP_BITS: u32 = 4;
/// A cap on the writes per second a phase is signed for (a phase signs for
/// twice the best rate seen so far).
const MAX_RATE: usize = 60_000;
/// The same for one client (it waits for each write).
const MAX_RATE_ONE: usize = 8_000;
/// Pending writes are never sealed into batches here (no engine runs), so
/// the cap is raised on every member to hold a whole run.
const PENDING: PendingLimits = PendingLimits {
    count: 4_000_000,
    bytes: 2 << 30,
};

fn genesis() -> GenesisFile {
    let mut params = devkit::devnet_params(STAMP_BITS);
    params.epoch_length = 1_000_000;
    devkit::genesis_file(
        CHAIN,
        Engine::Gossip,
        params,
        &[(&devkit::key(1), 1_000_000)],
        &[(&devkit::key(100), "/ip4/127.0.0.1/tcp/1".to_owned())],
    )
}

/// The libp2p identity of member `id`, from a fixed seed, so every process
/// knows every member's peer id before anyone listens.
fn node_key(id: NodeId) -> anyhow::Result<pyralog_p2p::NodeKey> {
    let mut seed = [0x5a; 32];
    seed[..8].copy_from_slice(&id.to_le_bytes());
    Ok(pyralog_p2p::node_key_from_seed(seed)?)
}

/// The operator's list of the cluster's peers.
fn cluster_peers() -> anyhow::Result<BTreeMap<PeerId, NodeId>> {
    (1..=MEMBERS)
        .map(|id| Ok((node_key(id)?.public().to_peer_id(), id)))
        .collect()
}

/// Starts member `id` in `dir` on its own swarm; returns it and its address.
async fn start_member(id: NodeId, dir: &Path) -> anyhow::Result<(Arc<Member>, String)> {
    let g = genesis().validate()?;
    let net = Network::new(Config {
        key: node_key(id)?,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootnodes: Vec::new(),
        topics: Topics::new(&g.chain_id, &g.hash()),
        banned: Vec::new(),
        limits: Limits::default(),
    })?;
    let mut handle = net.spawn();
    let peer = handle.local_peer_id();
    let listen = loop {
        if let NetEvent::Listening(a) = handle.next_event().await {
            break a;
        }
    };
    let commander = handle.commander();
    tokio::spawn(async move {
        loop {
            let _ = handle.next_event().await;
        }
    });
    let mut config = MemberConfig::new(id, dir.to_path_buf(), genesis());
    config.pending = PENDING;
    let member = Member::start(config, Arc::new(P2pTransport::new(commander.clone()))).await?;
    let (tx, rx) = mpsc::channel(pyralog_p2p::raft::INBOX);
    commander.command(NetCommand::RaftServe(tx));
    tokio::spawn(serve(Arc::clone(&member), cluster_peers()?, rx));
    Ok((member, format!("{listen}/p2p/{peer}")))
}

/// A member process: starts, prints its address, serves until its stdin
/// closes (the benchmark ended or died).
fn member_main(id: NodeId, dir: PathBuf) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (member, addr) = start_member(id, &dir).await?;
        println!("addr {addr}");
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        let _ = member.shutdown().await;
        anyhow::Ok(())
    })?;
    // The swarm's tasks would keep the runtime busy: leave now.
    std::process::exit(0)
}

/// A child process, killed (and reaped) when dropped.
struct Process {
    name: String,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }
}

/// Starts member `id` as a process of its own; returns it and its address.
fn spawn_member(id: NodeId, dir: &Path) -> anyhow::Result<(Process, String)> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("--member")
        .arg(id.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("member stdout")?;
    let mut process = Process {
        name: format!("member {id}"),
        child,
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("addr ") else {
        process.check_alive()?;
        bail!("member {id} printed {line:?}, not its address");
    };
    Ok((process, addr.to_owned()))
}

/// What one phase measured.
#[derive(Clone, Debug)]
struct Outcome {
    writes: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    first_error: Option<String>,
    /// CPU time of the system under test (its members and the clients).
    cpu: Duration,
    /// CPU time the rest of the machine used meanwhile (other builds).
    others: Duration,
}

impl Outcome {
    fn from_clients(
        parts: Vec<(Vec<Duration>, usize, Option<String>)>,
        elapsed: Duration,
        meter: Meter,
    ) -> Self {
        let (cpu, others) = meter.stop();
        let mut latencies = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        for (l, e, why) in parts {
            latencies.extend(l);
            errors += e;
            first_error = first_error.or(why);
        }
        latencies.sort_unstable();
        Outcome {
            writes: latencies.len(),
            errors,
            elapsed,
            latencies,
            first_error,
            cpu,
            others,
        }
    }

    /// CPU time per write, in µs.
    fn cpu_per_write(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.writes.max(1) as f64
    }

    fn rate(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }

    fn line(&self, system: &str, clients: usize) -> String {
        let mut s = format!(
            "{system:>7} {clients:>3} clients: {:>6} writes in {:>5.2} s = {:>8.0} writes/s, p50 {:>7.3} ms, p99 {:>7.3} ms, {:>4.0} µs CPU/write, others used {:>3.0}% of the machine",
            self.writes,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            self.cpu_per_write(),
            self.others.as_secs_f64() * 100.0 / self.elapsed.as_secs_f64() / cores() as f64,
        );
        if self.errors > 0 {
            s.push_str(&format!(
                ", {} errors (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        s
    }
}

/// Clock ticks per second in `/proc` (Linux's `USER_HZ`).
const TICKS: f64 = 100.0;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// User and system time of process `pid`, from `/proc/<pid>/stat`.
fn cpu_of(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command's closing parenthesis, from the state on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_secs_f64(ticks as f64 / TICKS)
}

/// Busy time of the whole machine, from `/proc/stat`.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system idle iowait irq softirq steal: not idle, not iowait
                .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
                .filter_map(|(_, f)| f.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / TICKS)
}

/// Measures the CPU time of a set of processes over a phase, and what the
/// rest of the machine used meanwhile.
struct Meter {
    pids: Vec<u32>,
    ours: Duration,
    busy: Duration,
}

impl Meter {
    fn start(pids: Vec<u32>) -> Meter {
        let ours = pids.iter().map(|p| cpu_of(*p)).sum();
        Meter {
            pids,
            ours,
            busy: machine_busy(),
        }
    }

    /// Ours and the others' CPU time since the start.
    fn stop(self) -> (Duration, Duration) {
        let ours: Duration = self.pids.iter().map(|p| cpu_of(*p)).sum();
        let ours = ours.saturating_sub(self.ours);
        let busy = machine_busy().saturating_sub(self.busy);
        (ours, busy.saturating_sub(ours))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Signed, stamped writes for `clients` clients, `per_client` each; each
/// client has a sender key of its own.
fn sign_writes(round: usize, clients: usize, per_client: usize) -> Vec<Vec<Command>> {
    let chain: ChainId = CHAIN.parse().expect("the benchmark's chain id parses");
    let g = genesis()
        .validate()
        .expect("the benchmark's genesis validates");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let epoch = g.gossip_epoch(now_ms);
    let sign_client = |c: usize| -> Vec<Command> {
        let key = devkit::key(1_000 + c as u64);
        (0..per_client)
            .map(|i| {
                let nonce = (round * per_client + i) as u64;
                let k = format!("r{round}/c{c}/{i}");
                Command::Write(Arc::new(devkit::tx(
                    &chain,
                    &key,
                    nonce,
                    epoch,
                    devkit::put(&key, k.as_bytes(), &[0xab; 32]),
                    STAMP_BITS,
                )))
            })
            .collect()
    };
    // Both cores sign (the clusters are idle meanwhile).
    std::thread::scope(|s| {
        let halves: Vec<_> = [0usize, 1]
            .into_iter()
            .map(|h| {
                s.spawn(move || {
                    (0..clients)
                        .filter(|c| c % 2 == h)
                        .map(|c| (c, sign_client(c)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Vec<Command>)> = halves
            .into_iter()
            .flat_map(|h| h.join().expect("a signing thread"))
            .collect();
        all.sort_by_key(|(c, _)| *c);
        all.into_iter().map(|(_, w)| w).collect()
    })
}

/// Each client writes its commands one after another until `secs` pass.
async fn drive_pyralog(
    leader: &Arc<Member>,
    writes: Vec<Vec<Command>>,
    secs: Duration,
    pids: Vec<u32>,
) -> Outcome {
    let meter = Meter::start(pids);
    let start = Instant::now();
    let deadline = start + secs;
    let tasks: Vec<_> = writes
        .into_iter()
        .map(|cmds| {
            let leader = Arc::clone(leader);
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(cmds.len());
                let mut errors = 0;
                let mut first = None;
                for cmd in cmds {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    match leader.write(cmd).await {
                        Ok(Response::Pending { .. }) => lat.push(t.elapsed()),
                        Ok(other) => {
                            errors += 1;
                            first.get_or_insert(format!("{other:?}"));
                        }
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e.to_string());
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.expect("a client task"));
    }
    Outcome::from_clients(parts, start.elapsed(), meter)
}

/// etcd's gRPC `Put` over one HTTP/2 connection.
struct EtcdClient {
    send: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
}

/// Appends `v` as a protobuf varint.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A gRPC message holding `etcdserverpb.PutRequest { key, value }`.
fn put_request(key: &[u8], value: &[u8]) -> Bytes {
    let mut msg = Vec::with_capacity(key.len() + value.len() + 8);
    msg.push(0x0a); // field 1, bytes
    varint(&mut msg, key.len() as u64);
    msg.extend_from_slice(key);
    msg.push(0x12); // field 2, bytes
    varint(&mut msg, value.len() as u64);
    msg.extend_from_slice(value);
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

impl EtcdClient {
    async fn connect(addr: SocketAddr) -> anyhow::Result<EtcdClient> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = h2::client::handshake(tcp).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(EtcdClient {
            send,
            uri: format!("http://{addr}/etcdserverpb.KV/Put").parse()?,
        })
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let mut send = self.send.clone().ready().await?;
        let (response, mut body) = send.send_request(request, false)?;
        body.send_data(put_request(key, value), true)?;
        let (parts, mut reply) = response.await?.into_parts();
        if parts.status != http::StatusCode::OK {
            bail!("HTTP status {}", parts.status);
        }
        // A failure may come as headers only, without a body or trailers.
        let mut status = parts.headers.get("grpc-status").cloned();
        let mut message = parts.headers.get("grpc-message").cloned();
        while let Some(chunk) = reply.data().await {
            let chunk = chunk?;
            let _ = reply.flow_control().release_capacity(chunk.len());
        }
        if let Some(trailers) = reply.trailers().await? {
            status = status.or(trailers.get("grpc-status").cloned());
            message = message.or(trailers.get("grpc-message").cloned());
        }
        match status {
            Some(s) if s == "0" => Ok(()),
            Some(s) => bail!("grpc-status {s:?}: {message:?}"),
            None => bail!("no grpc-status"),
        }
    }
}

/// A 3-member etcd on loopback.
struct Etcd {
    members: Vec<Process>,
    clients: Vec<SocketAddr>,
    leader: SocketAddr,
    version: String,
}

/// Free loopback ports (bound and released; etcd binds them right after).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

impl Etcd {
    async fn start(bin: &str, dir: &Path) -> anyhow::Result<Etcd> {
        let version = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .with_context(|| format!("running {bin} --version (apt-get install etcd-server)"))?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let ports = free_ports(2 * MEMBERS as usize)?;
        let n = MEMBERS as usize;
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[n + i]);
        let initial = (0..n)
            .map(|i| format!("e{i}={}", peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut clients = Vec::new();
        for (i, port) in ports.iter().take(n).enumerate() {
            let client_url = format!("http://127.0.0.1:{port}");
            clients.push(SocketAddr::from(([127, 0, 0, 1], *port)));
            let data = dir.join(format!("e{i}"));
            let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
            let child = std::process::Command::new(bin)
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "pyralog-bench"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {bin}"))?;
            members.push(Process {
                name: format!("etcd e{i}"),
                child,
            });
        }
        // Ready once a put through every member succeeds.
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in &clients {
            loop {
                let attempt = async {
                    let mut c = EtcdClient::connect(*addr).await?;
                    c.put(b"bench/ready", b"1").await
                };
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Ok(())) => break,
                    _ if Instant::now() < deadline => {
                        for m in &mut members {
                            m.check_alive()?;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(Err(e)) => return Err(e.context("etcd never became ready")),
                    Err(_) => bail!("etcd never became ready"),
                }
            }
        }
        let leader = etcd_leader(&clients)?;
        Ok(Etcd {
            members,
            clients,
            leader,
            version,
        })
    }
}

/// The client address of etcd's leader, from `etcdctl endpoint status`.
fn etcd_leader(clients: &[SocketAddr]) -> anyhow::Result<SocketAddr> {
    let endpoints = clients
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoints,
            "endpoint",
            "status",
            "-w",
            "json",
        ])
        .output()
        .context("running etcdctl (apt-get install etcd-client)")?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("etcdctl said {}", String::from_utf8_lossy(&out.stderr)))?;
    for s in status.as_array().context("a list of endpoints")? {
        let me = &s["Status"]["header"]["member_id"];
        if !me.is_null() && *me == s["Status"]["leader"] {
            let endpoint = s["Endpoint"].as_str().context("an endpoint")?;
            let addr = endpoint.trim_start_matches("http://");
            return Ok(addr.parse()?);
        }
    }
    bail!("no leader in {status}")
}

/// Each client puts fresh keys one after another until `secs` pass.
async fn drive_etcd(
    leader: SocketAddr,
    round: usize,
    clients: usize,
    value_size: usize,
    secs: Duration,
    pids: Vec<u32>,
) -> anyhow::Result<Outcome> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(EtcdClient::connect(leader).await?);
    }
    let meter = Meter::start(pids);
    let start = Instant::now();
    let deadline = start + secs;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            tokio::spawn(async move {
                let value = vec![0xabu8; value_size];
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut first = None;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("r{round}/c{c}/{i}");
                    i += 1;
                    let t = Instant::now();
                    match conn.put(key.as_bytes(), &value).await {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e.to_string());
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await?);
    }
    Ok(Outcome::from_clients(parts, start.elapsed(), meter))
}

/// What the environment asks for.
struct Settings {
    secs: Duration,
    rounds: usize,
    clients: Vec<usize>,
    etcd: Option<String>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let secs: f64 = var("BENCH_SECS").map_or(Ok(5.0), |v| v.parse())?;
        let rounds = var("BENCH_ROUNDS").map_or(Ok(3), |v| v.parse())?;
        let clients = var("BENCH_CLIENTS")
            .unwrap_or_else(|| "1,64".into())
            .split(',')
            .map(|c| c.trim().parse())
            .collect::<Result<Vec<usize>, _>>()?;
        let etcd = match var("BENCH_ETCD").as_deref() {
            Some("0") => None,
            _ => Some(var("BENCH_ETCD_BIN").unwrap_or_else(|| "etcd".into())),
        };
        Ok(Settings {
            secs: Duration::from_secs_f64(secs),
            rounds,
            clients,
            etcd,
        })
    }
}

/// Waits until member 1 leads (it initialized the cluster, so it normally
/// wins the first election; otherwise it asks for another).
async fn lead(member: &Member) -> anyhow::Result<()> {
    for attempt in 0..100 {
        if member.is_leader() {
            return Ok(());
        }
        if attempt % 20 == 19 {
            let _ = member.raft().trigger().elect(false).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("member 1 never became the leader: {:?}", member.status())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("cluster-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    println!("machine: {}", machine());
    println!("data under {}", root.path().display());

    let mut children = Vec::new();
    let mut addrs = BTreeMap::new();
    for id in 2..=MEMBERS {
        let (p, addr) = spawn_member(id, &root.path().join(format!("m{id}")))?;
        children.push(p);
        addrs.insert(id, addr);
    }
    let (leader, addr) = start_member(1, &root.path().join("m1")).await?;
    addrs.insert(1, addr);
    let all = addrs
        .iter()
        .map(|(id, addr)| (*id, openraft::impls::BasicNode { addr: addr.clone() }))
        .collect();
    leader.initialize(all).await?;
    lead(&leader).await?;
    println!("pyralog: 3 members in 3 processes over libp2p, leader is member 1");

    let etcd = match &settings.etcd {
        Some(bin) => {
            let dir = root.path().join("etcd");
            std::fs::create_dir_all(&dir)?;
            let e = Etcd::start(bin, &dir).await?;
            println!(
                "etcd: {} members {:?}, leader {}",
                e.version, e.clients, e.leader
            );
            Some(e)
        }
        None => None,
    };

    let value_size = sign_writes(0, 1, 1)[0][0].to_bytes().len();
    println!(
        "write: Command::Write of a signed Put, {value_size} canonical bytes; etcd values are {value_size} bytes"
    );

    // The processes whose CPU time counts: this one (the leader and the
    // clients; for etcd, the clients) and the members.
    let me = std::process::id();
    let pyralog_pids: Vec<u32> = std::iter::once(me)
        .chain(children.iter().map(|c| c.child.id()))
        .collect();
    let etcd_pids: Vec<u32> = std::iter::once(me)
        .chain(
            etcd.iter()
                .flat_map(|e| e.members.iter().map(|m| m.child.id())),
        )
        .collect();

    // Warm both up (connections, allocators) and learn how fast each load
    // goes, to sign just enough writes for a phase.
    let warm = Duration::from_secs(1);
    let mut best: BTreeMap<usize, f64> = BTreeMap::new();
    for &clients in &settings.clients {
        let per_client = (MAX_RATE_ONE / clients.max(1)).max(200);
        let o = drive_pyralog(
            &leader,
            sign_writes(0, clients, per_client),
            warm,
            Vec::new(),
        )
        .await;
        best.insert(clients, o.rate());
        if let Some(e) = &etcd {
            drive_etcd(e.leader, 0, clients, value_size, warm, Vec::new()).await?;
        }
    }

    let mut results: BTreeMap<(&str, usize), Vec<Outcome>> = BTreeMap::new();
    for round in 1..=settings.rounds {
        for &clients in &settings.clients {
            // Twice the best rate seen, and at least a few thousand.
            let rate = best.get(&clients).copied().unwrap_or(0.0);
            let total = ((2.0 * rate).clamp(2_000.0, MAX_RATE as f64) * settings.secs.as_secs_f64())
                as usize;
            let writes = sign_writes(round, clients, total / clients.max(1) + 1);
            // On stderr, for whoever profiles a phase.
            eprintln!("phase: pyralog, {clients} clients");
            let o = drive_pyralog(&leader, writes, settings.secs, pyralog_pids.clone()).await;
            println!("round {round}: {}", o.line("pyralog", clients));
            let seen = best.entry(clients).or_default();
            *seen = seen.max(o.rate());
            if o.elapsed < settings.secs {
                println!("  (the pool of signed writes ran out before the phase's end)");
            }
            results.entry(("pyralog", clients)).or_default().push(o);
            for c in &mut children {
                c.check_alive()?;
            }
            if let Some(e) = &etcd {
                eprintln!("phase: etcd, {clients} clients");
                let o = drive_etcd(
                    e.leader,
                    round,
                    clients,
                    value_size,
                    settings.secs,
                    etcd_pids.clone(),
                )
                .await?;
                println!("round {round}: {}", o.line("etcd", clients));
                results.entry(("etcd", clients)).or_default().push(o);
            }
        }
    }

    println!();
    println!(
        "| system | clients | writes/s | p50 ms | p99 ms | CPU µs/write | rounds (writes/s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for &clients in &settings.clients {
        for system in ["pyralog", "etcd"] {
            let Some(os) = results.get(&(system, clients)) else {
                continue;
            };
            let rates: Vec<f64> = os.iter().map(Outcome::rate).collect();
            println!(
                "| {system} | {clients} | {:.0} | {:.3} | {:.3} | {:.0} | {} |",
                median(rates.clone()),
                median(os.iter().map(|o| ms(o.quantile(0.5))).collect()),
                median(os.iter().map(|o| ms(o.quantile(0.99))).collect()),
                median(os.iter().map(Outcome::cpu_per_write).collect()),
                rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let errors: usize = results.values().flatten().map(|o| o.errors).sum();
    if errors > 0 {
        println!("{errors} writes failed (see the phase lines)");
    }
    drop(children);
    drop(etcd);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--member") {
        let id: NodeId = args.get(i + 1).context("--member <id> <dir>")?.parse()?;
        let dir = PathBuf::from(args.get(i + 2).context("--member <id> <dir>")?);
        return member_main(id, dir);
    }
    let settings = Settings::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(settings))
}
