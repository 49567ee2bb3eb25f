//! The stamp difficulty this node asks of its clients: its own, from the load
//! of its pool, raised to what the validators announce when enough of them are
//! loaded ([`pyralog_consensus::announce`]). A validator announces its own
//! level on the `difficulty` topic every few seconds, and sooner when it
//! changes.

use pyralog_consensus::announce::{
    ANNOUNCE_CHANGE_MS, ANNOUNCE_EVERY_MS, Announcement, PeerDifficulty,
};
use pyralog_consensus::bft::ValidatorSet;
use pyralog_ledger::block::VerifiedTx;
use pyralog_ledger::codec::Encode;
use pyralog_ledger::{Address, Error, Keypair, Store};
use pyralog_p2p::network::MessageIdOf;
use pyralog_p2p::{NetCommand, PeerId, Topic, Verdict};

use crate::driver::{ApiError, Consensus, Driver, now_ms};

/// What the node knows and says about admission difficulty.
pub struct Admission {
    /// The validators whose word counts, with their power (under proof of
    /// stake, the current epoch's set).
    set: ValidatorSet,
    /// This node's validator key; it announces while the key is in the set.
    key: Keypair,
    peers: PeerDifficulty,
    /// The level last announced, and when.
    announced: Option<(u32, u64)>,
    /// Announcements taken, and refused, from the network.
    pub(crate) heard: u64,
    pub(crate) refused: u64,
}

impl Admission {
    /// For a node of `store`'s chain signing with `key`.
    pub(crate) fn new(store: &Store, key: &Keypair) -> Result<Admission, Error> {
        let g = store.genesis();
        let set = match g.engine {
            pyralog_ledger::Engine::Pos => crate::pbft_host::staked_set(store)?,
            _ => crate::pbft_host::genesis_set(store)?,
        };
        let pow = &g.params.pow;
        Ok(Admission {
            key: key.clone(),
            peers: PeerDifficulty::new(
                g.chain_id.clone(),
                pow.min_difficulty,
                pow.max_difficulty,
                g.params.max_clock_skew_ms,
            ),
            set,
            announced: None,
            heard: 0,
            refused: 0,
        })
    }

    fn me(&self) -> Option<Address> {
        Some(self.key.address()).filter(|a| self.set.contains(a))
    }

    /// A new epoch's set: its members' words count from now on, with their
    /// new power; those who left are forgotten.
    pub(crate) fn set_validators(&mut self, set: ValidatorSet) {
        self.peers.retain_members(&set);
        self.set = set;
    }
}

/// The difficulties behind what a client is asked (`/pow/difficulty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Difficulty {
    /// What a client's transaction needs now.
    pub required: u32,
    /// This node's own level, from its pool.
    pub local: u32,
}

impl Driver {
    /// This node's own level: the chain's floor, raised as its pool fills
    /// ([`pyralog_consensus::admission::required_bits`]).
    fn local_difficulty(&self) -> u32 {
        let pow = &self.rules.genesis().params.pow;
        let (load, capacity) = match &self.engine {
            Consensus::Gossip(e) => (e.pending(), e.pending_capacity()),
            Consensus::Ordered(p) => (p.pool_len(), p.pool_capacity()),
        };
        pyralog_consensus::admission::required_bits(
            pow.min_difficulty,
            pow.max_difficulty,
            load,
            capacity,
        )
    }

    /// What a client's transaction needs now, and why.
    pub(crate) fn difficulty(&self) -> Difficulty {
        let local = self.local_difficulty();
        let a = &self.admission;
        Difficulty {
            required: a.peers.required(&a.set, a.me().as_ref(), local, now_ms()),
            local,
        }
    }

    /// The stamp difficulty this node requires of a client's transaction now.
    pub(crate) fn required_difficulty(&self) -> u32 {
        self.difficulty().required
    }

    /// Refuses a client's transaction whose stamp is below what the node
    /// asks for now. Relayed transactions and peers' batches are held to the
    /// chain's floor only: their node admitted them under its own load.
    pub(crate) fn check_stamp_now(&self, tx: &VerifiedTx) -> Result<(), ApiError> {
        let required = self.required_difficulty();
        self.store()
            .rules()
            .pow_key()
            .check(&tx.id(), tx.tx().stamp, required)
            .map(|_| ())
            .map_err(|e| ApiError::from_ledger(&e))
    }

    /// Announces this validator's level when it changed (at most every
    /// [`ANNOUNCE_CHANGE_MS`]) or has not been said for [`ANNOUNCE_EVERY_MS`].
    pub(crate) fn announce_difficulty(&mut self) {
        if self.admission.me().is_none() {
            return;
        }
        let key = &self.admission.key;
        let now = now_ms();
        let level = self.local_difficulty();
        let due = match self.admission.announced {
            None => true,
            Some((said, at)) => {
                let since = now.saturating_sub(at);
                since >= ANNOUNCE_EVERY_MS || (said != level && since >= ANNOUNCE_CHANGE_MS)
            }
        };
        if !due {
            return;
        }
        let chain = &self.rules.genesis().chain_id;
        let data = Announcement::sign(chain, key, level, now).to_bytes();
        self.admission.announced = Some((level, now));
        self.net.command(NetCommand::Publish {
            topic: Topic::Difficulty,
            data,
        });
    }

    /// A peer's announcement from the `difficulty` topic: kept if it is a
    /// validator's fresh, signed word; a forged or out-of-bounds one costs
    /// the forwarding peer score.
    pub(crate) fn hear_difficulty(&mut self, from: PeerId, id: MessageIdOf, data: &[u8]) {
        let verdict = match Announcement::from_wire(data) {
            Err(error) => {
                tracing::warn!(%from, %error, "undecodable difficulty announcement");
                Verdict::Reject
            }
            Ok(a) => {
                let a_set = &self.admission.set;
                match self.admission.peers.hear(a_set, &a, now_ms()) {
                    Ok(()) => {
                        self.admission.heard += 1;
                        Verdict::Accept
                    }
                    Err(refusal) if refusal.is_provably_invalid() => {
                        tracing::warn!(%from, %refusal, "invalid difficulty announcement");
                        Verdict::Reject
                    }
                    Err(_) => Verdict::Ignore,
                }
            }
        };
        if verdict != Verdict::Accept {
            self.admission.refused += 1;
        }
        self.report(id, from, verdict);
    }

    /// The validators' last words, for `/status`.
    pub(crate) fn peer_difficulties(&self) -> serde_json::Value {
        let now = now_ms();
        self.admission
            .peers
            .heard(now)
            .map(|(v, d, age)| {
                serde_json::json!({"validator": v.to_human(), "difficulty": d, "age_ms": age})
            })
            .collect()
    }
}
