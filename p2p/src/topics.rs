//! Gossip topics. Every name carries the chain id and the genesis hash, so two
//! networks never share a topic even if they share peers.

use libp2p::gossipsub::{IdentTopic, TopicHash};
use pyralog_ledger::{ChainId, Hash};

/// What a gossip message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Signed batches of transactions (`gossip` engine).
    Batches,
    /// Anti-entropy digests.
    Digests,
    /// Consensus messages of ordering engines (`pbft`).
    Consensus,
    /// Admitted transactions, relayed so every validator's pool has them.
    Transactions,
    /// Validators' signed word on the stamp difficulty they ask now.
    Difficulty,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 5] = [
        Topic::Batches,
        Topic::Digests,
        Topic::Consensus,
        Topic::Transactions,
        Topic::Difficulty,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Topic::Batches => "batches",
            Topic::Digests => "digests",
            Topic::Consensus => "consensus",
            Topic::Transactions => "txs",
            Topic::Difficulty => "difficulty",
        }
    }

    /// The most bytes one message on this topic may have.
    pub fn max_bytes(self) -> usize {
        match self {
            Topic::Batches => 4 << 20,
            Topic::Digests => 256 << 10,
            Topic::Consensus => 8 << 20,
            Topic::Transactions => 64 << 10,
            Topic::Difficulty => 256,
        }
    }
}

/// The topics of one network.
#[derive(Clone, Debug)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// The topics of the network `chain_id` started from genesis `genesis`.
    pub fn new(chain_id: &ChainId, genesis: &Hash) -> Topics {
        Topics {
            prefix: format!("/pyralog/{chain_id}/{}", &genesis.to_hex()[..16]),
        }
    }

    /// The gossipsub topic of `topic`.
    pub fn ident(&self, topic: Topic) -> IdentTopic {
        IdentTopic::new(format!("{}/{}/1", self.prefix, topic.suffix()))
    }

    /// Which of our topics `hash` is, if any.
    pub fn which(&self, hash: &TopicHash) -> Option<Topic> {
        Topic::ALL
            .into_iter()
            .find(|t| self.ident(*t).hash() == *hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_differ_by_chain_and_genesis() {
        let a: ChainId = "pyralog-a".parse().expect("chain");
        let b: ChainId = "pyralog-b".parse().expect("chain");
        let g1 = Hash([1; 32]);
        let g2 = Hash([2; 32]);
        let t = Topics::new(&a, &g1);
        assert_ne!(
            t.ident(Topic::Batches).hash(),
            Topics::new(&b, &g1).ident(Topic::Batches).hash()
        );
        assert_ne!(
            t.ident(Topic::Batches).hash(),
            Topics::new(&a, &g2).ident(Topic::Batches).hash()
        );
        assert_eq!(
            t.which(&t.ident(Topic::Digests).hash()),
            Some(Topic::Digests)
        );
        assert_eq!(
            t.which(&Topics::new(&b, &g1).ident(Topic::Digests).hash()),
            None
        );
    }
}
