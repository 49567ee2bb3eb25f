//! `/pyralog/raft/2`: Raft RPCs between the members of one cluster, on one
//! stream per pair of members that stays open.
//!
//! Version 1 ran on libp2p's request-response behaviour, which opens a stream
//! for every request: each RPC paid the stream's opening, the protocol's
//! confirmation and the stream's close (a noise message and a system call
//! each, on both sides), a timer on the `futures-timer` thread, and two trips
//! through the swarm task. Here a caller's [`Links`] opens one stream to a
//! member (libp2p-stream), and every call is a frame on it:
//!
//! ```text
//! request:  length (u32 LE) | call id (u64 LE) | request bytes
//! response: length (u32 LE) | call id (u64 LE) | response bytes
//! ```
//!
//! The length counts the id and the bytes and is capped at [`MAX_FRAME`]
//! plus the id, checked before the body is read. Answers carry the id of
//! their request, so the member may serve requests in any order. The bytes
//! are opaque here: the cluster crate encodes and decodes them (and checks
//! them again against its own caps). Requests from peers are handed to the
//! one inbox the node registers with [`crate::NetCommand::RaftServe`]; the
//! node decides whether the peer is a member of its cluster before acting on
//! anything.
//!
//! A caller writes its frame on the stream itself, under the link's lock
//! (the first caller opens the stream); a task per link reads the answers.
//! A stream that fails (the connection closed, a frame over the cap, bytes
//! that are not a frame, a caller that gave up in the middle of writing its
//! frame) fails the calls waiting on it, and the next call opens another.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::prelude::*;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::network::NetCommand;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/pyralog/raft/2");
/// The most bytes in one request or response.
pub const MAX_FRAME: usize = 64 << 20;
/// Calls to one member waiting for their answer at most; more are refused.
pub const MAX_CALLS: usize = 1024;
/// Inbound requests waiting for the node at most (the inbox's capacity is
/// the node's choice; this is the advice).
pub const INBOX: usize = 256;
/// Requests one inbound stream may have with the node at once; its next
/// frame is not read until one is answered.
pub const MAX_SERVING: usize = 256;
/// Inbound streams open at once; more are closed as they come.
pub const MAX_INBOUND_STREAMS: usize = 64;
/// How long a call waits for its answer (the connection and the stream
/// included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a stream (dialling included) may take.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of a frame before the body: the length and the call id.
const HEADER: usize = 4 + 8;

type Answer = Result<Vec<u8>, String>;

/// A request from a peer, waiting for the node's answer.
#[derive(Debug)]
pub struct Inbound {
    /// The peer (authenticated by the transport).
    pub from: PeerId,
    /// The request.
    pub request: Vec<u8>,
    /// Where the answer goes.
    pub channel: Responder,
}

/// Sends the answer to one inbound request back on its stream.
#[derive(Debug)]
pub struct Responder {
    id: u64,
    out: mpsc::Sender<(u64, Vec<u8>)>,
    _slot: OwnedSemaphorePermit,
}

impl Responder {
    /// Answers the request. If the stream is gone the answer is dropped (the
    /// caller has its own timeout).
    pub fn respond(self, response: Vec<u8>) {
        // The channel holds MAX_SERVING answers and each responder holds one
        // of the stream's MAX_SERVING slots until here, so it is never full.
        let _ = self.out.try_send((self.id, response));
    }
}

/// One frame's bytes, header included; refuses a body over the cap.
pub fn encode_frame(id: u64, body: &[u8]) -> io::Result<Vec<u8>> {
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a raft frame of {} bytes is over the {MAX_FRAME}-byte cap",
                body.len()
            ),
        ));
    }
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

/// Reads one frame: its call id and body. A length over the cap, or too
/// short to hold an id, is refused before anything more is read.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(u64, Vec<u8>)> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if !(8..=MAX_FRAME + 8).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a raft frame of {len} bytes is not between 8 and {MAX_FRAME} + 8"),
        ));
    }
    let mut id = [0u8; 8];
    io.read_exact(&mut id).await?;
    let mut body = vec![0u8; len - 8];
    io.read_exact(&mut body).await?;
    Ok((u64::from_le_bytes(id), body))
}

/// Writes every frame waiting in `queue` (at least `first`), then flushes:
/// calls that pile up while one is written leave together.
async fn write_frames<T: AsyncWrite + Unpin>(
    io: &mut T,
    first: (u64, Vec<u8>),
    queue: &mut mpsc::Receiver<(u64, Vec<u8>)>,
) -> io::Result<()> {
    let mut next = Some(first);
    while let Some((id, body)) = next {
        io.write_all(&encode_frame(id, &body)?).await?;
        next = queue.try_recv().ok();
    }
    io.flush().await
}

/// Raft calls to the members of this node's cluster, each member on one
/// stream; and the serving of theirs. Cheap to clone.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

struct Inner {
    control: Mutex<libp2p_stream::Control>,
    commands: mpsc::Sender<NetCommand>,
    links: Mutex<HashMap<PeerId, Arc<Link>>>,
    /// Where inbound requests go, once the node has said
    /// ([`crate::NetCommand::RaftServe`]).
    inbox: Mutex<Option<mpsc::Sender<Inbound>>>,
}

impl Inner {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Arc<Link>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn control(&self) -> std::sync::MutexGuard<'_, libp2p_stream::Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn inbox(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Inbound>>> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

/// The calls to one member, on one stream.
struct Link {
    peer: PeerId,
    /// Where to dial the member if it is not connected.
    addr: Option<Multiaddr>,
    /// The stream's writing half, once a caller opened it.
    writer: tokio::sync::Mutex<Option<futures::io::WriteHalf<libp2p::Stream>>>,
    /// Calls sent and not answered, by id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
    /// Set when the stream failed: its calls are answered and the next call
    /// makes a new link.
    dead: AtomicBool,
    /// Tells the link's reader to stop (the peer was banned or its last
    /// connection closed).
    stop: tokio::sync::Notify,
}

impl Link {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the link dead, fails every call on it with `why`, and stops
    /// its task.
    fn fail(&self, why: &str) {
        self.dead.store(true, Ordering::Release);
        for (_, reply) in self.waiting().drain() {
            let _ = reply.send(Err(why.to_string()));
        }
        self.stop.notify_one();
    }
}

/// Fails its link if dropped before [`Unfinished::done`]: a caller that gave
/// up in the middle of writing a frame left a part of it on the stream, and
/// what follows would be read as garbage.
struct Unfinished<'a>(Option<&'a Link>);

impl Unfinished<'_> {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.0 {
            link.fail("a call gave up in the middle of its frame");
        }
    }
}

/// A call's place among a link's waiting calls, freed when the call ends.
struct Place<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.link.waiting().remove(&self.id);
    }
}

impl Links {
    /// Links that open streams with `control` and ask the swarm task (behind
    /// `commands`) to dial members that are not connected.
    pub(crate) fn new(
        control: libp2p_stream::Control,
        commands: mpsc::Sender<NetCommand>,
    ) -> Links {
        Links {
            inner: Arc::new(Inner {
                control: Mutex::new(control),
                commands,
                links: Mutex::new(HashMap::new()),
                inbox: Mutex::new(None),
            }),
        }
    }

    /// Calls `peer` (dialled at `addr` if not connected) with `request` and
    /// waits for its answer, or for why there is none.
    pub async fn call(&self, peer: PeerId, addr: Option<Multiaddr>, request: Vec<u8>) -> Answer {
        if request.len() > MAX_FRAME {
            return Err(format!(
                "a raft request of {} bytes is over the {MAX_FRAME}-byte cap",
                request.len()
            ));
        }
        let link = self.link(peer, addr);
        let id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut waiting = link.waiting();
            if waiting.len() >= MAX_CALLS {
                return Err("too many raft calls in flight".into());
            }
            waiting.insert(id, reply);
        }
        // Whichever way this call ends (answered, failed, timed out, or its
        // caller gave up on it), its place is freed.
        let _place = Place { link: &link, id };
        let frame = encode_frame(id, &request).map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        match tokio::time::timeout_at(deadline, self.send(&link, &frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(why),
            Err(_) => return Err(format!("could not send in {CALL_TIMEOUT:?}")),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the stream to the member closed".into()),
            Err(_) => {
                // A stream that leaves a call unanswered this long is of no
                // more use: the next call opens another.
                let why = format!("no answer in {CALL_TIMEOUT:?}");
                link.fail(&why);
                Err(why)
            }
        }
    }

    /// Writes `frame` on the stream of `link`, opening it first if no call
    /// has. Calls wait for each other here, so frames never interleave.
    async fn send(&self, link: &Arc<Link>, frame: &[u8]) -> Result<(), String> {
        let mut writer = link.writer.lock().await;
        // The link may have died before this call's place was taken; its
        // failure drained the calls before this one, so check here.
        if link.dead.load(Ordering::Acquire) {
            return Err("the stream to the member closed".into());
        }
        if writer.is_none() {
            let stream = match self.open(link).await {
                Ok(stream) => stream,
                Err(why) => {
                    link.fail(&why);
                    return Err(why);
                }
            };
            let (reader, w) = stream.split();
            *writer = Some(w);
            tokio::spawn(read_answers(Arc::clone(link), reader));
        }
        let Some(w) = writer.as_mut() else {
            return Err("the stream to the member closed".into());
        };
        let unfinished = Unfinished(Some(link));
        let written = async {
            w.write_all(frame).await?;
            w.flush().await
        }
        .await;
        unfinished.done();
        written.map_err(|e| {
            let why = format!("the raft stream failed: {e}");
            link.fail(&why);
            why
        })
    }

    /// Opens a stream to the member of `link`, dialling it first if an
    /// address is known.
    async fn open(&self, link: &Link) -> Result<libp2p::Stream, String> {
        let (peer, addr) = (link.peer, link.addr.clone());
        let mut control = self.inner.control().clone();
        let commands = self.inner.commands.clone();
        let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
            if let Some(addr) = addr {
                // The swarm task dials first, at the address, so the stream's
                // own dial (by peer id alone) finds one under way.
                let (done, reached) = oneshot::channel();
                commands
                    .send(NetCommand::Reach { peer, addr, done })
                    .await
                    .map_err(|_| "the network is gone".to_string())?;
                reached
                    .await
                    .map_err(|_| "the network is gone".to_string())??;
            }
            control
                .open_stream(peer, PROTOCOL)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match opened {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(why)) => Err(format!("cannot open a raft stream: {why}")),
            Err(_) => Err(format!("no raft stream in {OPEN_TIMEOUT:?}")),
        }
    }

    /// The live link to `peer`, made if there is none (its stream opens with
    /// its first call).
    fn link(&self, peer: PeerId, addr: Option<Multiaddr>) -> Arc<Link> {
        let mut links = self.inner.links();
        if let Some(link) = links.get(&peer)
            && !link.dead.load(Ordering::Acquire)
        {
            return Arc::clone(link);
        }
        let link = Arc::new(Link {
            peer,
            addr,
            writer: tokio::sync::Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        });
        links.insert(peer, Arc::clone(&link));
        link
    }

    /// Closes the link to `peer`, if any, failing its calls with `why`. The
    /// swarm task calls this when it bans the peer or loses its last
    /// connection to it: a stream on a connection being closed need not
    /// report it soon, and its calls would wait for their timeout.
    pub(crate) fn close(&self, peer: &PeerId, why: &str) {
        let link = self.inner.links().remove(peer);
        if let Some(link) = link {
            link.fail(why);
        }
    }

    /// Where inbound requests go from now on; streams already open keep the
    /// inbox they found.
    pub(crate) fn set_inbox(&self, inbox: mpsc::Sender<Inbound>) {
        *self.inner.inbox() = Some(inbox);
    }

    /// Serves inbound streams until the swarm is gone: each request goes to
    /// the inbox the node gave ([`Links::set_inbox`]; none yet: the stream
    /// is closed).
    pub(crate) fn serve(&self) {
        let incoming = self.inner.control().accept(PROTOCOL);
        let Ok(mut incoming) = incoming else {
            tracing::warn!("raft streams are already served");
            return;
        };
        let open = Arc::new(Semaphore::new(MAX_INBOUND_STREAMS));
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                    tracing::debug!(%peer, "too many raft streams open: closing a new one");
                    continue;
                };
                let inbox = inner.inbox().clone();
                let Some(inbox) = inbox else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Err(e) = serve_stream(peer, stream, inbox).await {
                        tracing::debug!(%peer, error = %e, "a raft stream ended");
                    }
                    drop(permit);
                });
            }
        });
    }
}

/// Reads the answers on the stream of `link` until it fails or the link is
/// stopped; then fails what waits on it and closes the stream.
async fn read_answers(link: Arc<Link>, mut reader: futures::io::ReadHalf<libp2p::Stream>) {
    let read = async {
        loop {
            match read_frame(&mut reader).await {
                Ok((id, body)) => {
                    // An answer to a call that timed out finds nobody: dropped.
                    if let Some(reply) = link.waiting().remove(&id) {
                        let _ = reply.send(Ok(body));
                    }
                }
                Err(e) => break e,
            }
        }
    };
    // Stopped: the calls were failed already.
    if let futures::future::Either::Right((e, _)) =
        futures::future::select(Box::pin(link.stop.notified()), Box::pin(read)).await
    {
        link.fail(&format!("the raft stream failed: {e}"));
    }
    // The writing half goes too, so the stream closes.
    drop(link.writer.lock().await.take());
}

/// Reads requests from one inbound stream into `inbox` and writes the
/// answers back, until the stream or the inbox closes.
async fn serve_stream(
    peer: PeerId,
    stream: libp2p::Stream,
    inbox: mpsc::Sender<Inbound>,
) -> io::Result<()> {
    let (mut reader, mut writer) = stream.split();
    let (out, mut answers) = mpsc::channel(MAX_SERVING);
    let slots = Arc::new(Semaphore::new(MAX_SERVING));
    let read = async {
        loop {
            let slot = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|_| io::Error::other("closed"))?;
            let (id, request) = read_frame(&mut reader).await?;
            let channel = Responder {
                id,
                out: out.clone(),
                _slot: slot,
            };
            let inbound = Inbound {
                from: peer,
                request,
                channel,
            };
            if inbox.send(inbound).await.is_err() {
                return io::Result::Ok(());
            }
        }
    };
    let write = async {
        while let Some(first) = answers.recv().await {
            write_frames(&mut writer, first, &mut answers).await?;
        }
        io::Result::Ok(())
    };
    futures::future::select(Box::pin(read), Box::pin(write))
        .await
        .factor_first()
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_the_cap_is_kept_both_ways() {
        futures::executor::block_on(async {
            let frame = encode_frame(7, &[1, 2, 3]).expect("encode");
            assert_eq!(frame.len(), HEADER + 3);
            let back = read_frame(&mut futures::io::Cursor::new(&frame))
                .await
                .expect("read");
            assert_eq!(back, (7, vec![1, 2, 3]));

            let err = encode_frame(1, &vec![0; MAX_FRAME + 1]).expect_err("cap");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

            let mut huge = ((MAX_FRAME + 9) as u32).to_le_bytes().to_vec();
            huge.extend_from_slice(&[0; 16]);
            let err = read_frame(&mut futures::io::Cursor::new(&huge))
                .await
                .expect_err("cap");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
    }

    #[test]
    fn a_frame_too_short_for_an_id_or_cut_short_is_refused() {
        futures::executor::block_on(async {
            let mut short = 4u32.to_le_bytes().to_vec();
            short.extend_from_slice(&[0; 8]);
            let err = read_frame(&mut futures::io::Cursor::new(&short))
                .await
                .expect_err("too short");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);

            let mut cut = encode_frame(3, &[9; 10]).expect("encode");
            cut.truncate(cut.len() - 1);
            let err = read_frame(&mut futures::io::Cursor::new(&cut))
                .await
                .expect_err("cut");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        });
    }
}
