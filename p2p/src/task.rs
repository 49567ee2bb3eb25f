//! The swarm on its own task.
//!
//! A swarm only moves bytes while something polls it. Polled from the node's
//! driver, between the driver's other work, every publish and every incoming
//! message waited for the driver to come round: on a 4-validator PBFT devnet
//! that was a median of ~40 ms per gossip hop at 1,000 writes/s, with a third
//! of the CPU idle (docs/BENCHMARKS.md, "PBFT"). [`Network::spawn`] moves the
//! swarm to a task of its own; the driver talks to it through two bounded
//! queues and reads a snapshot of what it needs to know synchronously.

use std::sync::{Arc, Mutex, PoisonError};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use crate::network::{NetCommand, NetEvent, Network, Verdict};

/// Commands waiting for the swarm task. Past this, new commands are dropped
/// (and counted): gossip is best effort and every protocol above it retries.
pub const COMMAND_QUEUE: usize = 8192;
/// Events waiting for the node. When full, the swarm task waits for the node
/// before it polls the swarm again, so memory stays bounded (gossip is
/// ignored before that, [`EVENT_RESERVE`]).
pub const EVENT_QUEUE: usize = 8192;
/// Places in the event queue gossip never takes. Past that, a gossip message
/// is ignored (no penalty: its sender or anti-entropy offers it again) rather
/// than waited on, so a node busy elsewhere (a write its cluster cannot
/// commit yet) never stops the swarm, and with it the cluster's own Raft
/// traffic that would unblock it.
pub const EVENT_RESERVE: usize = 256;

/// What the node reads about the network without asking the task.
#[derive(Debug, Default)]
struct Snapshot {
    connected: Vec<PeerId>,
    listeners: Vec<Multiaddr>,
    dropped_commands: u64,
    dropped_gossip: u64,
}

/// The node's side of a swarm running on its own task.
#[derive(Debug)]
pub struct NetHandle {
    local: PeerId,
    commands: mpsc::Sender<NetCommand>,
    events: mpsc::Receiver<NetEvent>,
    snapshot: Arc<Mutex<Snapshot>>,
    links: crate::raft::Links,
}

impl Network {
    /// Moves the swarm to a task of its own on the current tokio runtime. The
    /// task ends when the handle is dropped.
    pub fn spawn(self) -> NetHandle {
        let local = self.local_peer_id();
        let (commands, mut command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let shared = snapshot.clone();
        let mut net = self;
        let links = crate::raft::Links::new(net.raft_control(), commands.clone());
        links.serve();
        net.raft_links = Some(links.clone());
        tokio::spawn(async move {
            let mut redial = tokio::time::interval(crate::network::REDIAL_EVERY);
            redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = redial.tick() => net.redial(),
                    cmd = command_rx.recv() => match cmd {
                        Some(cmd) => net.command(cmd),
                        None => break,
                    },
                    event = net.next_event() => {
                        refresh(&shared, &net, matches!(event, NetEvent::Listening(_)));
                        if let NetEvent::Gossip { id, from, .. } = &event
                            && event_tx.capacity() <= EVENT_RESERVE
                        {
                            net.command(NetCommand::Report {
                                id: id.clone(),
                                from: *from,
                                verdict: Verdict::Ignore,
                            });
                            shared.lock().unwrap_or_else(PoisonError::into_inner).dropped_gossip += 1;
                            continue;
                        }
                        if event_tx.send(event).await.is_err() {
                            break;
                        }
                        continue;
                    }
                }
                // A ban closes connections without an event the node sees.
                refresh(&shared, &net, false);
            }
        });
        NetHandle {
            local,
            commands,
            events,
            snapshot,
            links,
        }
    }
}

/// Copies what the node reads synchronously out of the swarm.
fn refresh(shared: &Mutex<Snapshot>, net: &Network, listening: bool) {
    let connected = net.connected();
    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
    s.connected = connected;
    if listening {
        s.listeners = net.listeners();
    }
}

impl NetHandle {
    fn snapshot(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// How many peers are connected.
    pub fn peers(&self) -> usize {
        self.snapshot().connected.len()
    }

    /// The connected peers, in a stable order.
    pub fn connected(&self) -> Vec<PeerId> {
        self.snapshot().connected.clone()
    }

    /// Addresses the swarm listens on.
    pub fn listeners(&self) -> Vec<Multiaddr> {
        self.snapshot().listeners.clone()
    }

    /// Commands dropped because the swarm task's queue was full.
    pub fn dropped_commands(&self) -> u64 {
        self.snapshot().dropped_commands
    }

    /// Gossip messages ignored because the node had not taken the events
    /// before them ([`EVENT_RESERVE`]).
    pub fn dropped_gossip(&self) -> u64 {
        self.snapshot().dropped_gossip
    }

    /// A handle that sends commands from any task (Raft calls and answers
    /// come from the cluster's tasks, not the driver).
    pub fn commander(&self) -> Commander {
        Commander {
            commands: self.commands.clone(),
            snapshot: Arc::clone(&self.snapshot),
            links: self.links.clone(),
        }
    }

    /// Hands a command to the swarm task without waiting. If its queue is
    /// full the command is dropped and counted.
    pub fn command(&self, cmd: NetCommand) {
        if self.commands.try_send(cmd).is_err() {
            self.snapshot().dropped_commands += 1;
        }
    }

    /// An event that is already waiting, if any.
    pub fn try_next_event(&mut self) -> Option<NetEvent> {
        self.events.try_recv().ok()
    }

    /// The next event the node must see. Pending forever once the swarm task
    /// is gone (the node is shutting down).
    pub async fn next_event(&mut self) -> NetEvent {
        match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }
}

/// Sends commands to the swarm task from any task; see
/// [`NetHandle::commander`].
#[derive(Clone, Debug)]
pub struct Commander {
    commands: mpsc::Sender<NetCommand>,
    snapshot: Arc<Mutex<Snapshot>>,
    links: crate::raft::Links,
}

impl Commander {
    /// Hands a command to the swarm task without waiting. If its queue is
    /// full the command is dropped and counted (a Raft call's `reply` is
    /// then dropped too, which its caller sees as a failure).
    pub fn command(&self, cmd: NetCommand) {
        if self.commands.try_send(cmd).is_err() {
            self.snapshot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dropped_commands += 1;
        }
    }

    /// Calls `peer`, a member of this node's cluster (dialled at `addr` if
    /// not connected), with a Raft request, and waits for its answer or for
    /// why there is none. The call goes on the member's stream
    /// ([`crate::raft`]), not through the swarm task.
    pub async fn raft_call(
        &self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        self.links.call(peer, addr, request).await
    }
}
