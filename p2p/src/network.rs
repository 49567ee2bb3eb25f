//! The swarm and the surface the node drives it through.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, identity, kad, noise,
    ping, tcp, yamux,
};
use pyralog_ledger::{Domain, Hash};

use crate::fetch::{FetchCodec, FetchRequest, FetchResponse, PROTOCOL};
use crate::raft as raft_rpc;
use crate::topics::{Topic, Topics};

/// How the node's network is set up.
pub struct Config {
    /// The node's libp2p identity.
    pub key: identity::Keypair,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Nodes to dial first (with a `/p2p/<peer id>` suffix, they also seed Kademlia).
    pub bootnodes: Vec<Multiaddr>,
    /// The network's topics.
    pub topics: Topics,
    /// Peers never to talk to.
    pub banned: Vec<PeerId>,
    /// Connection caps.
    pub limits: Limits,
}

/// A gossip message's id, as the node reports verdicts on it.
pub type MessageIdOf = MessageId;

/// What the node hears from the network.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message, not yet forwarded: the node must answer with
    /// [`NetCommand::Report`].
    Gossip {
        /// Its topic.
        topic: Topic,
        /// The peer it came through.
        from: PeerId,
        /// Its id, to report the verdict.
        id: MessageId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A peer asks for batches; answer with [`NetCommand::Respond`].
    FetchRequest {
        /// The peer.
        from: PeerId,
        /// What it wants.
        request: FetchRequest,
        /// Where the answer goes.
        channel: ResponseChannel<FetchResponse>,
    },
    /// A peer answered our fetch.
    FetchResponse {
        /// The peer.
        from: PeerId,
        /// Its answer.
        response: FetchResponse,
    },
    /// A connection to a peer opened.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// The swarm listens on a new address.
    Listening(Multiaddr),
}

/// The node's verdict on a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Provably invalid: drop it and lower the sender's score.
    Reject,
    /// Duplicate or not judgeable now: drop it, no penalty.
    Ignore,
}

/// What the node tells the network to do.
#[derive(Debug)]
pub enum NetCommand {
    /// Publish on a topic.
    Publish {
        /// The topic.
        topic: Topic,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The verdict on a gossip message.
    Report {
        /// The message.
        id: MessageId,
        /// Who sent it.
        from: PeerId,
        /// The verdict.
        verdict: Verdict,
    },
    /// Ask a peer for batches.
    Fetch {
        /// The peer.
        peer: PeerId,
        /// What to ask.
        request: FetchRequest,
    },
    /// Answer a fetch.
    Respond {
        /// Where.
        channel: ResponseChannel<FetchResponse>,
        /// The answer.
        response: FetchResponse,
    },
    /// Dial `peer` at `addr` unless it is connected or being dialled; `done`
    /// hears once it is connected (or why it cannot be). Raft's streams
    /// ([`crate::raft::Links`]) ask this before they open, so that the stream
    /// finds the connection: one asked for while the connection is being set
    /// up can wait on a dial the swarm never makes.
    Reach {
        /// The peer.
        peer: PeerId,
        /// Where to dial it.
        addr: Multiaddr,
        /// Told once the peer is connected, or why it is not.
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Where Raft requests from peers go from now on (streams opened before
    /// keep the inbox they found). A stream that finds no inbox is closed,
    /// and its calls fail. Raft runs only on a swarm on its own task
    /// ([`Network::spawn`]).
    RaftServe(tokio::sync::mpsc::Sender<raft_rpc::Inbound>),
    /// Cut a peer off and refuse it from now on.
    Ban(PeerId),
    /// Let a banned peer back.
    Unban(PeerId),
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A bad setting.
    #[error("network setup: {0}")]
    Setup(String),
}

/// Connection caps: a node is never a sink for unbounded connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Established connections in all.
    pub established: u32,
    /// Established inbound connections.
    pub inbound: u32,
    /// Inbound connections still in their handshake.
    pub pending_inbound: u32,
    /// Established connections to one peer.
    pub per_peer: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            established: 256,
            inbound: 192,
            pending_inbound: 64,
            per_peer: 2,
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    fetch: request_response::Behaviour<FetchCodec>,
    raft: libp2p_stream::Behaviour,
}

/// The running swarm.
pub struct Network {
    swarm: Swarm<Behaviour>,
    topics: Topics,
    banned: HashSet<PeerId>,
    /// The Raft streams to other members, once the swarm runs on its task
    /// ([`Network::spawn`]); closed here when a peer is banned or gone.
    pub(crate) raft_links: Option<raft_rpc::Links>,
    /// The process (identify's agent version, which names it) behind each
    /// connected peer's connections.
    instances: HashMap<PeerId, String>,
    /// Peers dropped as restarted, until this node dials them again: a
    /// connection from them before then is dropped too (see
    /// [`Network::gone`]).
    rejoin: HashSet<PeerId>,
    /// Restarted peers whose old connections are all closed, and when to
    /// dial them again ([`REJOIN_AFTER`] later).
    rejoin_at: HashMap<PeerId, Instant>,
    /// When the bootnodes were last dialled again.
    bootnodes_dialled: Instant,
    /// The bootnodes that name their peer id, dialled again while they are
    /// not connected ([`Network::redial_bootnodes`]).
    bootnodes: Vec<(PeerId, Multiaddr)>,
    /// Who waits for a peer being dialled to connect ([`NetCommand::Reach`]).
    reaching: HashMap<PeerId, Vec<Reached>>,
}

/// Where a [`NetCommand::Reach`] hears how its dial went.
type Reached = tokio::sync::oneshot::Sender<Result<(), String>>;

/// How often the swarm's task looks for peers to dial again.
pub const REDIAL_EVERY: Duration = Duration::from_secs(1);
/// How often a node dials the bootnodes it is not connected to.
pub const BOOTNODES_EVERY: Duration = Duration::from_secs(5);
/// How long after dropping a restarted peer it is dialled again: long enough
/// for the peer to see its old connections close, so that the new one is a
/// first connection at its end too (else it would not greet this node).
pub const REJOIN_AFTER: Duration = Duration::from_millis(500);

/// What identify tells peers this node is: the protocol version and a number
/// drawn once per process, so a peer can tell a restart on the same identity
/// from a second connection to the same process.
fn agent_version() -> String {
    use std::hash::{BuildHasher, Hasher};
    let instance = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("pyralog/{}/{instance:016x}", env!("CARGO_PKG_VERSION"))
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("peer_id", self.swarm.local_peer_id())
            .finish_non_exhaustive()
    }
}

fn setup<E: std::fmt::Display>(e: E) -> NetError {
    NetError::Setup(e.to_string())
}

fn gossipsub(key: &identity::Keypair, topics: &Topics) -> Result<gossipsub::Behaviour, NetError> {
    let max = Topic::ALL
        .iter()
        .map(|t| t.max_bytes())
        .max()
        .unwrap_or(1 << 20);
    // Anonymous: gossipsub neither signs nor checks an author on messages.
    // Everything we gossip carries its own signature (transactions by their
    // sender, batches by their origin, consensus messages by their validator)
    // and is judged by the node, and scores go to the peer a message came
    // through, which is all the node uses. A second signature per message cost
    // a sign on publish and a verify on every receipt (about an eighth of the
    // CPU of a loaded PBFT devnet).
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(max)
        .heartbeat_interval(Duration::from_millis(500))
        .message_id_fn(|m: &gossipsub::Message| {
            MessageId::from(Hash::of(Domain::GossipMessage, &m.data).0.to_vec())
        })
        .build()
        .map_err(setup)?;
    let _ = key;
    let mut g = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config).map_err(setup)?;
    let mut params = gossipsub::PeerScoreParams::default();
    // Devnets run every node on one host; loopback must not count as Sybils.
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
    params
        .ip_colocation_factor_whitelist
        .insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
    for t in Topic::ALL {
        let topic_params = gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            invalid_message_deliveries_weight: -100.0,
            invalid_message_deliveries_decay: 0.5,
            ..Default::default()
        };
        params.topics.insert(topics.ident(t).hash(), topic_params);
    }
    g.with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(setup)?;
    for t in Topic::ALL {
        g.subscribe(&topics.ident(t)).map_err(setup)?;
    }
    Ok(g)
}

impl Network {
    /// Builds the swarm, listens, and dials the bootnodes.
    pub fn new(config: Config) -> Result<Network, NetError> {
        let topics = config.topics.clone();
        let limits = config.limits;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(setup)?
            // QUIC beside TCP: a `/udp/P/quic-v1` address in `listen` or among
            // the bootnodes uses it (TLS 1.3 and multiplexing are QUIC's own).
            .with_quic()
            .with_behaviour(|key| {
                let peer = key.public().to_peer_id();
                let kad_config = kad::Config::new(StreamProtocol::new("/pyralog/kad/1"));
                let mut kad = kad::Behaviour::with_config(
                    peer,
                    kad::store::MemoryStore::new(peer),
                    kad_config,
                );
                kad.set_mode(Some(kad::Mode::Server));
                let fetch = request_response::Behaviour::with_codec(
                    FetchCodec,
                    [(PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10))
                        .with_max_concurrent_streams(64),
                );
                let raft = libp2p_stream::Behaviour::new();
                let caps = connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(limits.established))
                    .with_max_established_incoming(Some(limits.inbound))
                    .with_max_pending_incoming(Some(limits.pending_inbound))
                    .with_max_established_per_peer(Some(limits.per_peer));
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(caps),
                    gossipsub: gossipsub(key, &topics)
                        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?,
                    kad,
                    identify: identify::Behaviour::new(
                        identify::Config::new("/pyralog/1".into(), key.public())
                            .with_agent_version(agent_version()),
                    ),
                    ping: ping::Behaviour::default(),
                    fetch,
                    raft,
                })
            })
            .map_err(setup)?
            .with_swarm_config(|c| {
                // No protocol here is nested in another, so a dialer that
                // offers one protocol (request-response, kademlia, identify,
                // ping) sends its request along with the protocol's name
                // instead of waiting a round trip for the listener to agree;
                // gossipsub, which offers several versions, still asks
                // first. A listener that does not speak the protocol refuses
                // the stream as before; the dialer hears it as a failed read.
                c.with_idle_connection_timeout(Duration::from_secs(120))
                    .with_substream_upgrade_protocol_override(
                        libp2p::core::upgrade::Version::V1Lazy,
                    )
            })
            .build();
        for addr in config.listen {
            swarm.listen_on(addr).map_err(setup)?;
        }
        let mut bootnodes = Vec::new();
        for addr in config.bootnodes {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                bootnodes.push((peer, addr.clone()));
            }
            swarm.dial(addr).map_err(setup)?;
        }
        // Walk the DHT from the bootnodes; with none yet, peers arrive by dialling us.
        let _ = swarm.behaviour_mut().kad.bootstrap();
        let mut net = Network {
            swarm,
            topics: config.topics,
            banned: HashSet::new(),
            raft_links: None,
            instances: HashMap::new(),
            rejoin: HashSet::new(),
            rejoin_at: HashMap::new(),
            bootnodes_dialled: Instant::now(),
            bootnodes,
            reaching: HashMap::new(),
        };
        for peer in config.banned {
            net.command(NetCommand::Ban(peer));
        }
        Ok(net)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// A handle that opens and accepts Raft streams on this swarm.
    pub(crate) fn raft_control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().raft.new_control()
    }

    /// How many peers are connected.
    pub fn peers(&self) -> usize {
        self.swarm.connected_peers().count()
    }

    /// The connected peers, in a stable order.
    pub fn connected(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        v.sort();
        v
    }

    /// Addresses the swarm listens on.
    pub fn listeners(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    /// A peer's gossipsub score, if it has one.
    pub fn peer_score(&self, peer: &PeerId) -> Option<f64> {
        self.swarm.behaviour().gossipsub.peer_score(peer)
    }

    /// Carries out a command.
    pub fn command(&mut self, cmd: NetCommand) {
        let b = self.swarm.behaviour_mut();
        match cmd {
            NetCommand::Publish { topic, data } => {
                // No peers yet is fine: anti-entropy catches them up later.
                let _ = b.gossipsub.publish(self.topics.ident(topic), data);
            }
            NetCommand::Report { id, from, verdict } => {
                let acceptance = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Reject => MessageAcceptance::Reject,
                    Verdict::Ignore => MessageAcceptance::Ignore,
                };
                b.gossipsub
                    .report_message_validation_result(&id, &from, acceptance);
            }
            NetCommand::Fetch { peer, request } => {
                b.fetch.send_request(&peer, request);
            }
            NetCommand::Respond { channel, response } => {
                // The asker may be gone; nothing to do then.
                let _ = b.fetch.send_response(channel, response);
            }
            NetCommand::Reach { peer, addr, done } => self.reach(peer, addr, done),
            NetCommand::RaftServe(inbox) => {
                if let Some(links) = &self.raft_links {
                    links.set_inbox(inbox);
                }
            }
            NetCommand::Ban(peer) => {
                self.banned.insert(peer);
                b.gossipsub.blacklist_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
                if let Some(links) = &self.raft_links {
                    links.close(&peer, &format!("peer {peer} is banned"));
                }
            }
            NetCommand::Unban(peer) => {
                self.banned.remove(&peer);
                b.gossipsub.remove_blacklisted_peer(&peer);
            }
        }
    }

    /// The next event the node must see. Swarm events that concern only the
    /// network (identify, ping, Kademlia) are handled here.
    pub async fn next_event(&mut self) -> NetEvent {
        loop {
            let event = self.swarm.select_next_some().await;
            if let Some(e) = self.handle(event) {
                return e;
            }
        }
    }

    fn handle(&mut self, event: SwarmEvent<BehaviourEvent>) -> Option<NetEvent> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => Some(NetEvent::Listening(address)),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if self.banned.contains(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    self.reached(peer_id, Err(format!("peer {peer_id} is banned")));
                    return None;
                }
                self.reached(peer_id, Ok(()));
                (num_established.get() == 1).then_some(NetEvent::Connected(peer_id))
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } => {
                if !self.swarm.is_connected(&peer_id) {
                    self.reached(peer_id, Err(format!("cannot reach {peer_id}: {error}")));
                }
                None
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.gone(peer_id);
                    if let Some(links) = &self.raft_links {
                        links.close(&peer_id, "the connection to the member closed");
                    }
                }
                (num_established == 0 && !self.banned.contains(&peer_id))
                    .then_some(NetEvent::Disconnected(peer_id))
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.identified(peer_id, info.agent_version);
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                None
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let Some(topic) = self.topics.which(&message.topic) else {
                    self.command(NetCommand::Report {
                        id: message_id,
                        from: propagation_source,
                        verdict: Verdict::Ignore,
                    });
                    return None;
                };
                if message.data.len() > topic.max_bytes() {
                    self.command(NetCommand::Report {
                        id: message_id,
                        from: propagation_source,
                        verdict: Verdict::Reject,
                    });
                    return None;
                }
                Some(NetEvent::Gossip {
                    topic,
                    from: propagation_source,
                    id: message_id,
                    data: message.data,
                })
            }
            SwarmEvent::Behaviour(BehaviourEvent::Fetch(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => Some(NetEvent::FetchRequest {
                    from: peer,
                    request,
                    channel,
                }),
                request_response::Message::Response { response, .. } => {
                    Some(NetEvent::FetchResponse {
                        from: peer,
                        response,
                    })
                }
            },
            // Raft's streams report nothing to the swarm (see crate::raft).
            SwarmEvent::Behaviour(BehaviourEvent::Raft(())) => None,
            _ => None,
        }
    }

    /// Notes which process a peer's connection reaches, and drops a peer
    /// that came back as a new process while a connection to the old one is
    /// still open.
    ///
    /// A peer that crashed or was killed may leave its connections open at
    /// this end: QUIC sends nothing when a process dies, so the connection
    /// lingers until its idle timeout. Gossipsub greets a peer (sends its
    /// subscriptions) only on the first connection to it, so the restarted
    /// peer would never learn what this node subscribes to and would never
    /// publish to it, long after the dead connection is gone. Dropping every
    /// connection and dialling the peer again makes the next one a first
    /// connection at both ends.
    fn identified(&mut self, peer: PeerId, agent: String) {
        if self.rejoin.contains(&peer) {
            // A connection that came while the peer was being dropped goes
            // too: only one made after the last old one closed is greeted.
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        match self.instances.get(&peer) {
            Some(known) if *known != agent => {
                tracing::info!(%peer, "peer restarted while a connection to it was open; reconnecting");
                self.instances.remove(&peer);
                self.rejoin.insert(peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Some(_) => {}
            None => {
                self.instances.insert(peer, agent);
            }
        }
    }

    /// Dials again the restarted peers that are due, and, every
    /// [`BOOTNODES_EVERY`], each bootnode this node is not connected to (nor
    /// dialling): a node dropped by its peers (a restart they noticed, a
    /// dial back that failed, a peer that was down) finds its way back.
    pub fn redial(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .rejoin_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.rejoin_at.remove(&peer);
            self.rejoin.remove(&peer);
            self.dial_again(peer, Vec::new());
        }
        if now.duration_since(self.bootnodes_dialled) < BOOTNODES_EVERY {
            return;
        }
        self.bootnodes_dialled = now;
        for (peer, addr) in self.bootnodes.clone() {
            if !self.swarm.is_connected(&peer) {
                self.dial_again(peer, vec![addr]);
            }
        }
    }

    /// Dials `peer` (at `addresses`, and wherever Kademlia knows it) unless
    /// it is banned, connected or being dialled.
    fn dial_again(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if self.banned.contains(&peer) {
            return;
        }
        let dial = DialOpts::peer_id(peer)
            .addresses(addresses)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(error) = self.swarm.dial(dial) {
            tracing::debug!(%peer, %error, "cannot dial a peer again");
        }
    }

    /// Forgets a peer whose last connection closed; one dropped as restarted
    /// is dialled again [`REJOIN_AFTER`] later, and stays marked until then.
    /// A connection the restarted peer opened while its old ones were being
    /// closed may come up just after the last of them closed: the peer
    /// greeted this node (gossipsub's subscriptions) on a connection that is
    /// now gone and will not greet again on that one, so this node would
    /// never publish to it. Such a connection is dropped as well, and the
    /// peer is greeted on the connection this node makes.
    fn gone(&mut self, peer: PeerId) {
        self.instances.remove(&peer);
        if self.rejoin.contains(&peer) {
            self.rejoin_at
                .entry(peer)
                .or_insert_with(|| Instant::now() + REJOIN_AFTER);
        }
    }

    /// Tells `done` once `peer` is connected (for a Raft stream), dialling
    /// it at `addr` unless it is connected or being dialled already; a
    /// banned peer is refused.
    fn reach(&mut self, peer: PeerId, addr: Multiaddr, done: Reached) {
        if self.banned.contains(&peer) {
            let _ = done.send(Err(format!("peer {peer} is banned")));
            return;
        }
        if self.swarm.is_connected(&peer) {
            let _ = done.send(Ok(()));
            return;
        }
        let dial = DialOpts::peer_id(peer)
            .addresses(vec![addr])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(dial) {
            Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                // Callers that gave up are forgotten here; those left wait at
                // most for their dial, which ends one way or the other.
                self.reaching.retain(|_, waiting| {
                    waiting.retain(|w| !w.is_closed());
                    !waiting.is_empty()
                });
                self.reaching.entry(peer).or_default().push(done);
            }
            Err(e) => {
                let _ = done.send(Err(e.to_string()));
            }
        }
    }

    /// Tells those waiting for `peer` to connect how it went.
    fn reached(&mut self, peer: PeerId, how: Result<(), String>) {
        for done in self.reaching.remove(&peer).unwrap_or_default() {
            let _ = done.send(how.clone());
        }
    }
}
