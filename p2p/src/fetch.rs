//! `/pyralog/fetch/1`: ask a peer for an origin's batches by seq.
//!
//! Frames are a `u32` little-endian length and the canonical bytes; a request
//! is at most [`MAX_REQUEST`] bytes and a response at most [`MAX_RESPONSE`],
//! checked before anything is allocated.

use std::io;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use pyralog_ledger::codec::{Decode, Encode, Reader, put_len, put_u64};
use pyralog_ledger::{Address, Error};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/pyralog/fetch/1");
/// The most bytes in a request frame.
pub const MAX_REQUEST: usize = 1024;
/// The most bytes in a response frame.
pub const MAX_RESPONSE: usize = 16 << 20;
/// The most batches one response may carry.
pub const MAX_BATCHES: usize = 256;

/// The `origin` of a request for finalized blocks (heights `from_seq..=to_seq`)
/// rather than an origin's batches: no key is all zeros.
pub const BLOCKS: Address = Address([0; 32]);

/// "Send me `origin`'s batches `from_seq..=to_seq`."
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// Whose batches.
    pub origin: Address,
    /// The first seq.
    pub from_seq: u64,
    /// The last seq.
    pub to_seq: u64,
}

/// The batches found, each in its canonical bytes (the node decodes and checks
/// them like any other batch from the wire).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FetchResponse {
    /// Encoded batches, in seq order.
    pub batches: Vec<Vec<u8>>,
}

impl Encode for FetchRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        self.origin.encode(out);
        put_u64(out, self.from_seq);
        put_u64(out, self.to_seq);
    }
}

impl Decode for FetchRequest {
    const MIN_SIZE: usize = 48;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(FetchRequest {
            origin: Address::decode(r)?,
            from_seq: r.u64("from seq")?,
            to_seq: r.u64("to seq")?,
        })
    }
}

impl Encode for FetchResponse {
    fn encode(&self, out: &mut Vec<u8>) {
        put_len(out, self.batches.len());
        for b in &self.batches {
            pyralog_ledger::codec::put_bytes(out, b);
        }
    }
}

impl Decode for FetchResponse {
    const MIN_SIZE: usize = 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let n = r.len(MAX_BATCHES, 4, "batches")?;
        let mut batches = Vec::with_capacity(n);
        for _ in 0..n {
            batches.push(r.bytes(MAX_RESPONSE, "batch")?.to_vec());
        }
        Ok(FetchResponse { batches })
    }
}

/// The size-capped codec of the fetch protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchCodec;

pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {max}-byte cap"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

pub(crate) async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> io::Result<()> {
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame over its cap",
        ));
    }
    // One write for the length and the bytes: each write on a stream is a
    // frame of its own on the connection, and a frame a message of the
    // encrypted channel (a system call on each side).
    let mut frame = Vec::with_capacity(4 + bytes.len());
    frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    frame.extend_from_slice(bytes);
    io.write_all(&frame).await?;
    io.close().await
}

fn invalid(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Codec for FetchCodec {
    type Protocol = StreamProtocol;
    type Request = FetchRequest;
    type Response = FetchResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<FetchRequest> {
        FetchRequest::from_bytes(&read_frame(io, MAX_REQUEST).await?).map_err(invalid)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<FetchResponse> {
        FetchResponse::from_bytes(&read_frame(io, MAX_RESPONSE).await?).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: FetchRequest,
    ) -> io::Result<()> {
        write_frame(io, &req.to_bytes(), MAX_REQUEST).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: FetchResponse,
    ) -> io::Result<()> {
        write_frame(io, &res.to_bytes(), MAX_RESPONSE).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_caps_hold() {
        let req = FetchRequest {
            origin: Address([4; 32]),
            from_seq: 3,
            to_seq: 9,
        };
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_frame(
                &mut futures::io::Cursor::new(&mut buf),
                &req.to_bytes(),
                MAX_REQUEST,
            )
            .await
            .expect("write");
            let back = read_frame(&mut futures::io::Cursor::new(&buf), MAX_REQUEST)
                .await
                .expect("read");
            assert_eq!(FetchRequest::from_bytes(&back).expect("decode"), req);
            // A length prefix over the cap is refused before reading the body.
            let mut huge = (u32::MAX).to_le_bytes().to_vec();
            huge.extend_from_slice(&[0; 8]);
            let err = read_frame(&mut futures::io::Cursor::new(&huge), MAX_REQUEST)
                .await
                .expect_err("cap");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
        let resp = FetchResponse {
            batches: vec![vec![1, 2, 3], vec![]],
        };
        assert_eq!(
            FetchResponse::from_bytes(&resp.to_bytes()).expect("decode"),
            resp
        );
    }
}
