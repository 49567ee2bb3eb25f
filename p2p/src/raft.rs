//! `/pyralog/raft/1`: Raft RPCs between the members of one cluster.
//!
//! The frames are opaque here: the cluster crate encodes and decodes them
//! (and checks them again against its own caps). This module only moves
//! them, capped at [`MAX_FRAME`] bytes each way, checked before the body is
//! read. Requests from peers are handed to the one inbox the node registers
//! with [`crate::NetCommand::RaftServe`]; the node decides whether the peer
//! is a member of its cluster before acting on anything.

use std::io;

use futures::prelude::*;
use libp2p::request_response::{Codec, ResponseChannel};
use libp2p::{PeerId, StreamProtocol};

use crate::fetch::{read_frame, write_frame};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/pyralog/raft/1");
/// The most bytes in one request or response.
pub const MAX_FRAME: usize = 64 << 20;
/// Outbound calls waiting for their answer at most; more are refused.
pub const MAX_CALLS: usize = 1024;
/// Inbound requests waiting for the node at most (the inbox's capacity is
/// the node's choice; this is the advice).
pub const INBOX: usize = 256;

/// A request or a response: bytes the cluster crate defines.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frame(pub Vec<u8>);

/// A request from a peer, waiting for the node's answer
/// ([`crate::NetCommand::RaftRespond`]).
#[derive(Debug)]
pub struct Inbound {
    /// The peer (authenticated by the transport).
    pub from: PeerId,
    /// The request.
    pub request: Vec<u8>,
    /// Where the answer goes.
    pub channel: ResponseChannel<Frame>,
}

/// The size-capped codec.
#[derive(Clone, Copy, Debug, Default)]
pub struct RaftCodec;

impl Codec for RaftCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Frame;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame> {
        read_frame(io, MAX_FRAME).await.map(Frame)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame> {
        read_frame(io, MAX_FRAME).await.map(Frame)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()> {
        write_frame(io, &req.0, MAX_FRAME).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Frame,
    ) -> io::Result<()> {
        write_frame(io, &res.0, MAX_FRAME).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_over_the_cap_are_refused_both_ways() {
        futures::executor::block_on(async {
            let mut c = RaftCodec;
            let mut huge = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
            huge.extend_from_slice(&[0; 8]);
            let err = c
                .read_request(&PROTOCOL, &mut futures::io::Cursor::new(&huge))
                .await
                .expect_err("cap");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let mut out = Vec::new();
            let err = c
                .write_response(
                    &PROTOCOL,
                    &mut futures::io::Cursor::new(&mut out),
                    Frame(vec![0; MAX_FRAME + 1]),
                )
                .await
                .expect_err("cap");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let mut buf = Vec::new();
            c.write_request(
                &PROTOCOL,
                &mut futures::io::Cursor::new(&mut buf),
                Frame(vec![7; 3]),
            )
            .await
            .expect("write");
            let back = c
                .read_request(&PROTOCOL, &mut futures::io::Cursor::new(&buf))
                .await
                .expect("read");
            assert_eq!(back, Frame(vec![7; 3]));
        });
    }
}
