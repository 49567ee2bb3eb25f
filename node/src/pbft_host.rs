//! The driver's half for the `pbft` engine: it persists the engine's records
//! before anything else it asked for, commits finalized blocks to the store
//! (with their certificates), relays transactions and consensus messages over
//! gossip, and serves and fetches blocks for replicas that are behind.

use std::collections::VecDeque;
use std::time::Duration;

use pyralog_consensus::Engine as _;
use pyralog_consensus::bft::ValidatorSet;
use pyralog_consensus::pbft::{
    CommittedBlock, Config, Effect, Input, Pbft, Record, Signed, committed_bytes, engine_data,
};
use pyralog_ledger::block::{Certificate, VerifiedTx, Vote, verify_txs_with};
use pyralog_ledger::codec::{Decode, Encode};
use pyralog_ledger::{Address, Error, Keypair, Store, Transaction};
use pyralog_p2p::fetch::{BLOCKS, FetchRequest, FetchResponse, MAX_RESPONSE};
use pyralog_p2p::network::MessageIdOf;
use pyralog_p2p::{NetCommand, NetEvent, PeerId, Topic, Verdict};

use crate::driver::{ApiError, Consensus, Driver, now_ms};

/// How often the engine's clock ticks.
pub(crate) const TICK: Duration = Duration::from_millis(5);
/// Blocks asked for in one fetch.
const FETCH_BLOCKS: u64 = 64;

/// The engine for a store whose genesis runs PBFT, recovered from what it
/// persisted. A node whose key is not a genesis validator follows.
pub(crate) fn engine(store: &Store, validator: Keypair) -> Result<Pbft, Error> {
    let g = store.genesis();
    let set = ValidatorSet::equal(g.validators.iter().map(|v| v.public_key)).map_err(|e| {
        Error::Genesis {
            problems: vec![format!("validators: {e}")],
        }
    })?;
    let key = set.contains(&validator.address()).then_some(validator);
    let mut records = Vec::new();
    for bytes in store.engine_records()? {
        records.push(
            Record::from_bytes(&bytes)
                .map_err(|e| Error::Corrupt(format!("a consensus record: {e}")))?,
        );
    }
    let cfg = Config {
        view_timeout_ms: g.params.block_time_ms.max(250) * 4,
        ..Config::default()
    };
    Ok(Pbft::recover(
        g.chain_id.clone(),
        set,
        key,
        cfg,
        store.tip().height,
        records,
    ))
}

impl Driver {
    fn pbft(&mut self) -> Option<&mut Pbft> {
        match &mut self.engine {
            Consensus::Pbft(p) => Some(p),
            Consensus::Gossip(_) => None,
        }
    }

    /// Feeds one input and carries out the effects; `gossip` is the message it
    /// came from, to report a verdict on.
    pub(crate) fn feed_pbft(&mut self, input: Input, gossip: Option<(MessageIdOf, PeerId)>) {
        let mut verdict = Verdict::Accept;
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let Some(engine) = self.pbft() else {
                return;
            };
            let effects = engine.handle(now_ms(), input);
            // Durable first: nothing this step sends may get ahead of it.
            let records: Vec<Vec<u8>> = effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Persist(r) => Some(r.to_bytes()),
                    _ => None,
                })
                .collect();
            if let Err(error) = self.store.append_engine_records(&records) {
                tracing::error!(%error, "cannot persist consensus state; stopping");
                std::process::exit(2);
            }
            for effect in effects {
                match effect {
                    Effect::Persist(_) => {}
                    Effect::Broadcast(m) | Effect::Send { message: m, .. } => self.publish(&m),
                    Effect::Commit(block) => {
                        if let Some(next) = self.commit_block(block) {
                            queue.push_back(next);
                        }
                    }
                    Effect::Fetch { after, .. } => self.fetch_blocks(after),
                    Effect::Rejected { from, reason } => {
                        if reason.is_misbehaviour() {
                            tracing::warn!(%from, ?reason, "consensus message rejected");
                            verdict = Verdict::Reject;
                        } else {
                            tracing::debug!(%from, ?reason, "consensus message not for now");
                        }
                    }
                    Effect::Evidence(ev) => {
                        tracing::warn!(validator = %ev.validator, kind = ev.first.kind.name(), height = ev.first.height, "equivocation")
                    }
                    Effect::ViewChanged { view } => {
                        self.metrics.view_changes += 1;
                        tracing::info!(view, "entered view");
                    }
                }
            }
        }
        if let Some((id, from)) = gossip {
            if verdict == Verdict::Reject {
                self.metrics.gossip_rejected += 1;
            }
            self.net.command(NetCommand::Report { id, from, verdict });
        }
    }

    /// Consensus messages go out stamped with the send time, so a resent
    /// message is a new gossip message rather than a duplicate gossipsub drops.
    fn publish(&mut self, m: &Signed) {
        let mut data = now_ms().to_le_bytes().to_vec();
        m.encode(&mut data);
        self.net.command(NetCommand::Publish {
            topic: Topic::Consensus,
            data,
        });
    }

    /// Executes and stores a committed block; answers the clients waiting on
    /// its transactions. Returns the engine's next input.
    fn commit_block(&mut self, block: CommittedBlock) -> Option<Input> {
        let seq = block.proposal.seq();
        let certificate = Certificate {
            round: block.view,
            votes: block
                .commits
                .iter()
                .map(|v| Vote {
                    validator: v.validator,
                    signature: v.signature,
                })
                .collect(),
        };
        let p = &block.proposal;
        let result = self.store.commit_ordered(
            p.proposer(),
            p.timestamp_ms(),
            p.txs().to_vec(),
            engine_data(block.view, p.timestamp_ms()),
            certificate,
        );
        let (tip, failed) = match result {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(seq, %error, "cannot commit a finalized block; stopping");
                std::process::exit(2);
            }
        };
        self.metrics.blocks_committed += 1;
        self.metrics.txs_committed += (p.txs().len() - failed.len()) as u64;
        for tx in p.txs() {
            let id = tx.id();
            let answer = match failed.iter().find(|(f, _)| *f == id) {
                Some((_, e)) => Err(ApiError::from_ledger(e)),
                None => Ok("final"),
            };
            for w in self.waiters.remove(&id).unwrap_or_default() {
                let _ = w.send(answer.clone());
            }
        }
        Some(Input::Executed {
            seq,
            state_root: tip.state_root,
        })
    }

    /// Asks a connected peer (in turn) for the blocks after `after`; whatever
    /// comes back is checked against its certificate by the engine.
    fn fetch_blocks(&mut self, after: u64) {
        let peers = self.net.connected();
        if peers.is_empty() {
            return;
        }
        let peer = peers[(self.fetches % peers.len() as u64) as usize];
        self.fetches += 1;
        self.net.command(NetCommand::Fetch {
            peer,
            request: FetchRequest {
                origin: BLOCKS,
                from_seq: after + 1,
                to_seq: after + FETCH_BLOCKS,
            },
        });
    }

    fn serve_blocks(&self, r: &FetchRequest) -> Result<FetchResponse, Error> {
        let mut out = FetchResponse::default();
        let mut bytes = 0;
        let last = r.to_seq.min(r.from_seq.saturating_add(FETCH_BLOCKS - 1));
        for height in r.from_seq..=last {
            let Some(block) = self.store.block(height)? else {
                break;
            };
            let encoded = committed_bytes(&block)?;
            bytes += encoded.len() + 4;
            if bytes > MAX_RESPONSE - 1024 {
                break;
            }
            out.batches.push(encoded);
        }
        Ok(out)
    }

    /// Admits a transaction for PBFT: the stateless checks and replay, then it
    /// goes to this node's pool and, if `relay`, to every other validator's.
    pub(crate) fn submit_pbft(&mut self, tx: VerifiedTx, relay: bool) -> Result<(), ApiError> {
        let rules = self.store.rules();
        let checked = rules
            .check_stateless(&tx, self.current_epoch())
            .map_err(|e| ApiError::from_ledger(&e))
            .and_then(|_| match self.store.tx_location(&tx.id()) {
                Ok(Some(_)) => Err(ApiError::bad(
                    "replayed",
                    "replayed transaction: it was already committed",
                )),
                Ok(None) => Ok(()),
                Err(e) => Err(ApiError::internal(e)),
            });
        checked?;
        if relay {
            self.net.command(NetCommand::Publish {
                topic: Topic::Transactions,
                data: tx.tx().to_bytes(),
            });
        }
        self.feed_pbft(Input::Submit(tx), None);
        Ok(())
    }

    pub(crate) fn pbft_network(&mut self, event: NetEvent) {
        match event {
            NetEvent::Gossip {
                topic: Topic::Consensus,
                from,
                id,
                data,
            } => {
                let decoded = data
                    .get(8..)
                    .ok_or(Error::UnexpectedEnd { what: "send time" })
                    .and_then(Signed::decode_wire);
                match decoded {
                    Ok(m) => self.feed_pbft(Input::Message(m), Some((id, from))),
                    Err(error) => {
                        tracing::warn!(%from, %error, "invalid consensus message");
                        self.reject_gossip(id, from);
                    }
                }
            }
            NetEvent::Gossip {
                topic: Topic::Transactions,
                from,
                id,
                data,
            } => {
                let verified = Transaction::from_bytes(&data)
                    .and_then(|t| verify_txs_with(vec![t], Some(&mut self.keys)))
                    .map(|mut v| v.pop());
                let verdict = match verified {
                    Ok(Some(tx)) => match self.submit_pbft(tx, false) {
                        Ok(()) => Verdict::Accept,
                        Err(e) if e.code == "replayed" || e.code == "expired" => Verdict::Ignore,
                        Err(_) => Verdict::Reject,
                    },
                    Ok(None) | Err(_) => Verdict::Reject,
                };
                if verdict == Verdict::Reject {
                    self.metrics.gossip_rejected += 1;
                }
                self.net.command(NetCommand::Report { id, from, verdict });
            }
            NetEvent::Gossip { from, id, .. } => {
                // Batches and digests belong to the gossip engine.
                self.net.command(NetCommand::Report {
                    id,
                    from,
                    verdict: Verdict::Ignore,
                });
            }
            NetEvent::FetchRequest {
                request, channel, ..
            } => {
                let response = if request.origin == BLOCKS {
                    self.serve_blocks(&request).unwrap_or_default()
                } else {
                    FetchResponse::default()
                };
                self.net.command(NetCommand::Respond { channel, response });
            }
            NetEvent::FetchResponse { from, response } => {
                for bytes in response.batches {
                    match CommittedBlock::from_bytes(&bytes) {
                        Ok(block) => self.feed_pbft(
                            Input::Synced {
                                from: Address([0; 32]),
                                block,
                            },
                            None,
                        ),
                        Err(error) => {
                            tracing::warn!(%from, %error, "invalid block in a fetch response");
                            break;
                        }
                    }
                }
            }
            NetEvent::Connected(peer) => tracing::info!(%peer, "peer connected"),
            NetEvent::Disconnected(peer) => tracing::info!(%peer, "peer disconnected"),
            NetEvent::Listening(addr) => tracing::info!(%addr, "p2p listening"),
        }
    }
}
