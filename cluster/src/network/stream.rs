//! A leader's appends to one follower, pipelined.
//!
//! openraft replicates through `stream_append`: a stream of append requests
//! in, a stream of results out, in the same order. Sent one at a time (its
//! default), a request waits for the answer to the one before it. For a lone
//! writer that one is usually the append that only tells the follower how
//! far the log is committed, so every write waited a round trip to a
//! follower before its own entries left.
//!
//! Here a request may go out while others are on the wire, on one condition:
//! none of those carries entries. Entries are appended in sequence (while
//! some are on their way, what the leader writes next gathers in openraft's
//! next request, the batching a busy cluster lives on), and requests on the
//! wire together all start from the same place in the log. Each goes as an
//! RPC of its own, and RPCs may be served in any order; requests that share
//! their `prev_log_id` check the same thing whichever the follower takes
//! first, so that order cannot matter. The check is made here on every
//! request, not assumed of openraft: one that starts elsewhere waits until
//! the wire is clear. Results still come out in the order of the requests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::Either;
use futures::stream::{BoxStream, FuturesOrdered};
use futures::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::errors::RPCError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};

use super::{MAX_RPC_BYTES, Reply, Rpc, Transport, call_encoded, checked, encode_fitted};
use crate::types::{LogId, NodeId, TypeConfig};

/// Requests one stream keeps on the wire at once (at most one of them with
/// entries).
pub const IN_FLIGHT: usize = 4;

type AppendResult = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(openraft::errors::Unreachable::from_string(e))
}

/// Sends `input` to member `to` (see the module docs for what goes out
/// when). Results come out in the order of the input; the stream ends after
/// the first that is not a success, after a request that had to be cut to
/// fit (what the input sends next assumed all of it went), and once the
/// input ends and every answer is in. `timeout` bounds each request.
pub fn send<S>(
    transport: Arc<dyn Transport>,
    from: NodeId,
    to: NodeId,
    addr: String,
    input: S,
    timeout: Duration,
) -> BoxStream<'static, AppendResult>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let mut input = Some(input);
    // A request taken from the input that must wait for a clear wire.
    let mut next: Option<AppendEntriesRequest<TypeConfig>> = None;
    let mut flying = FuturesOrdered::new();
    // What is on the wire: where its requests start, and whether each
    // carries entries, oldest first.
    let mut start: Option<Option<LogId>> = None;
    let mut carrying = VecDeque::new();
    let mut over = false;
    futures::stream::poll_fn(move |cx| {
        if over {
            return Poll::Ready(None);
        }
        while flying.len() < IN_FLIGHT && !carrying.contains(&true) {
            let req = match next.take() {
                Some(req) => req,
                None => match input.as_mut().map(|s| s.poll_next_unpin(cx)) {
                    Some(Poll::Ready(Some(req))) => req,
                    Some(Poll::Ready(None)) => {
                        input = None;
                        break;
                    }
                    Some(Poll::Pending) | None => break,
                },
            };
            if !flying.is_empty() && start != Some(req.prev_log_id) {
                next = Some(req);
                break;
            }
            if flying.is_empty() {
                start = Some(req.prev_log_id);
            }
            carrying.push_back(!req.entries.is_empty());
            let prev = req.prev_log_id;
            let last = req.entries.last().map(|e| e.log_id()).or(prev);
            let encoded = encode_fitted(&mut Rpc::Append(req), MAX_RPC_BYTES)
                .and_then(|(bytes, partial)| Ok((checked(bytes, MAX_RPC_BYTES)?, partial)));
            match encoded {
                Ok((bytes, partial)) => {
                    if partial.is_some() {
                        input = None;
                    }
                    let (transport, addr) = (Arc::clone(&transport), addr.clone());
                    flying.push_back(Either::Left(async move {
                        let reply = call_encoded(&*transport, to, &addr, bytes, timeout)
                            .await
                            .map_err(|e| super::append_error(e, from, to, timeout))?;
                        result_of(reply, prev, partial.or(last))
                    }));
                }
                Err(e) => {
                    input = None;
                    flying.push_back(Either::Right(futures::future::ready(Err(unreachable(e)))));
                }
            }
        }
        match flying.poll_next_unpin(cx) {
            Poll::Ready(Some(result)) => {
                carrying.pop_front();
                over = !matches!(result, Ok(Ok(_)));
                Poll::Ready(Some(result))
            }
            Poll::Ready(None) if input.is_none() && next.is_none() => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .boxed()
}

/// What a follower's reply to a streamed append means for the range
/// `(prev, last]` it carried.
fn result_of(reply: Reply, prev: Option<LogId>, last: Option<LogId>) -> AppendResult {
    match reply {
        Reply::Append(AppendEntriesResponse::Conflict) if prev.is_none() => Err(unreachable(
            "the follower claims a conflict before the first entry",
        )),
        // A follower's Raft never answers with part of a request; a peer
        // that does must at least name a place inside what was sent.
        Reply::Append(AppendEntriesResponse::PartialSuccess(at)) if at < prev || at > last => {
            Err(unreachable(format!(
                "the follower claims to have taken up to {at:?}, outside the {prev:?}..={last:?} sent"
            )))
        }
        Reply::Append(r) => Ok(r.into_stream_result(prev, last)),
        Reply::Failed(why) => Err(unreachable(why)),
        other => Err(unreachable(format!(
            "unexpected reply to a streamed append: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;
    use futures::future::BoxFuture;
    use openraft::raft::StreamAppendError;
    use tokio::sync::oneshot;

    use super::*;
    use crate::error::Error;
    use crate::types::{Entry, Vote};

    /// A call and how to answer it (once).
    type Call = (
        AppendEntriesRequest<TypeConfig>,
        Option<oneshot::Sender<Vec<u8>>>,
    );

    /// Holds every call until the test answers it.
    #[derive(Default)]
    struct Held {
        calls: Mutex<Vec<Call>>,
    }

    impl Held {
        fn count(&self) -> usize {
            self.calls.lock().expect("calls").len()
        }

        fn prev_of(&self, call: usize) -> Option<LogId> {
            self.calls.lock().expect("calls")[call].0.prev_log_id
        }

        fn answer(&self, call: usize, reply: AppendEntriesResponse<TypeConfig>) {
            let tx = self.calls.lock().expect("calls")[call]
                .1
                .take()
                .expect("answered once");
            let _ = tx.send(crate::network::encode_reply(&Reply::Append(reply)));
        }
    }

    impl Transport for Held {
        fn call(
            &self,
            _to: NodeId,
            _addr: &str,
            request: Vec<u8>,
        ) -> BoxFuture<'static, Result<Vec<u8>, Error>> {
            let (tx, rx) = oneshot::channel();
            match crate::wire::decode::<Rpc>("rpc", &request, MAX_RPC_BYTES) {
                Ok(Rpc::Append(req)) => self.calls.lock().expect("calls").push((req, Some(tx))),
                other => panic!("not an append: {other:?}"),
            }
            async move { rx.await.map_err(|_| Error::Raft("dropped".into())) }.boxed()
        }
    }

    fn id(index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(1, 1, index)
    }

    /// An append of `n` entries after `prev`.
    fn append(prev: u64, n: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(id(prev)),
            leader_commit: Some(id(prev)),
            entries: (prev + 1..=prev + n)
                .map(|i| Entry::new_blank(id(i)))
                .collect(),
        }
    }

    #[test]
    fn a_partial_success_outside_what_was_sent_is_refused() {
        let ok = |at: u64| {
            result_of(
                Reply::Append(AppendEntriesResponse::PartialSuccess(Some(id(at)))),
                Some(id(5)),
                Some(id(8)),
            )
        };
        assert!(matches!(ok(6), Ok(Ok(Some(m))) if m == id(6)));
        assert!(matches!(ok(9), Err(RPCError::Unreachable(_))));
        assert!(matches!(ok(4), Err(RPCError::Unreachable(_))));
    }

    #[test]
    fn a_timed_out_append_is_a_timeout_to_openraft() {
        let e =
            crate::network::append_error(Error::Timeout("rpc"), 1, 2, Duration::from_millis(50));
        assert!(matches!(e, RPCError::Timeout(t) if t.id == 1 && t.target == 2));
        let e = crate::network::append_error(Error::Raft("no".into()), 1, 2, Duration::ZERO);
        assert!(matches!(e, RPCError::Unreachable(_)));
    }

    /// A pipeline over a held transport, fed by hand.
    fn pipeline() -> (
        Arc<Held>,
        futures::channel::mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
        BoxStream<'static, AppendResult>,
    ) {
        let held = Arc::new(Held::default());
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let out = send(
            Arc::clone(&held) as Arc<dyn Transport>,
            1,
            2,
            "m2".into(),
            rx,
            Duration::from_secs(5),
        );
        (held, tx, out)
    }

    fn next_now(out: &mut BoxStream<'static, AppendResult>) -> Option<Option<AppendResult>> {
        out.next().now_or_never()
    }

    fn matched(r: Option<Option<AppendResult>>) -> Option<LogId> {
        match r {
            Some(Some(Ok(Ok(m)))) => m,
            other => panic!("expected a success, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn new_entries_go_out_behind_a_commit_only_append_but_not_behind_entries() {
        let (held, input, mut out) = pipeline();
        input.unbounded_send(append(5, 0)).expect("send");
        assert!(next_now(&mut out).is_none());
        input.unbounded_send(append(5, 1)).expect("send");
        assert!(next_now(&mut out).is_none());
        assert_eq!(
            held.count(),
            2,
            "the entries did not wait for the commit-only append"
        );
        // Entries are on the wire: the next request waits, gathering.
        input.unbounded_send(append(6, 1)).expect("send");
        assert!(next_now(&mut out).is_none());
        assert_eq!(held.count(), 2, "a second request with entries went out");
        // Answered out of order, the results still come in order.
        held.answer(1, AppendEntriesResponse::Success);
        assert!(next_now(&mut out).is_none());
        held.answer(0, AppendEntriesResponse::Success);
        assert_eq!(matched(next_now(&mut out)), Some(id(5)));
        assert_eq!(matched(next_now(&mut out)), Some(id(6)));
        // The wire is clear of entries: the waiting request goes.
        assert!(next_now(&mut out).is_none());
        assert_eq!(held.count(), 3);
        assert_eq!(held.prev_of(2), Some(id(6)));
        held.answer(2, AppendEntriesResponse::Success);
        assert_eq!(matched(next_now(&mut out)), Some(id(7)));
        drop(input);
        assert!(
            matches!(next_now(&mut out), Some(None)),
            "the stream did not end"
        );
    }

    #[tokio::test]
    async fn a_request_from_another_place_in_the_log_waits_for_a_clear_wire() {
        let (held, input, mut out) = pipeline();
        input.unbounded_send(append(5, 0)).expect("send");
        input.unbounded_send(append(4, 0)).expect("send");
        assert!(next_now(&mut out).is_none());
        assert_eq!(
            held.count(),
            1,
            "requests from two places were on the wire at once"
        );
        held.answer(0, AppendEntriesResponse::Success);
        assert_eq!(matched(next_now(&mut out)), Some(id(5)));
        assert!(next_now(&mut out).is_none());
        assert_eq!(held.count(), 2);
        assert_eq!(held.prev_of(1), Some(id(4)));
    }

    #[tokio::test]
    async fn a_single_append_goes_the_same_way_and_answers_as_openraft_expects() {
        use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
        let held = Arc::new(Held::default());
        let mut client = crate::network::Network::new(1, Arc::clone(&held) as Arc<dyn Transport>)
            .new_client(2, &crate::types::Member::new("m2"))
            .await;
        let option = RPCOption::new(Duration::from_secs(5));
        for (reply, expect) in [
            (
                AppendEntriesResponse::Success,
                AppendEntriesResponse::Success,
            ),
            (
                AppendEntriesResponse::Conflict,
                AppendEntriesResponse::Conflict,
            ),
            (
                AppendEntriesResponse::PartialSuccess(Some(id(6))),
                AppendEntriesResponse::PartialSuccess(Some(id(6))),
            ),
        ] {
            let call = held.count();
            let answer = {
                let sent = client.append_entries(append(5, 2), option.clone());
                let mut sent = std::pin::pin!(sent);
                assert!(futures::poll!(sent.as_mut()).is_pending());
                held.answer(call, reply);
                sent.await
            };
            assert_eq!(answer.expect("answer"), expect);
        }
    }

    #[tokio::test]
    async fn at_most_in_flight_requests_are_on_the_wire() {
        let (held, input, mut out) = pipeline();
        for _ in 0..IN_FLIGHT + 2 {
            input.unbounded_send(append(5, 0)).expect("send");
        }
        assert!(next_now(&mut out).is_none());
        assert_eq!(held.count(), IN_FLIGHT);
    }

    #[tokio::test]
    async fn the_stream_ends_at_the_first_failure() {
        let (held, input, mut out) = pipeline();
        input.unbounded_send(append(5, 0)).expect("send");
        input.unbounded_send(append(5, 1)).expect("send");
        assert!(next_now(&mut out).is_none());
        held.answer(1, AppendEntriesResponse::Success);
        held.answer(0, AppendEntriesResponse::Conflict);
        match next_now(&mut out) {
            Some(Some(Ok(Err(StreamAppendError::Conflict(at))))) => assert_eq!(at, id(5)),
            other => panic!("expected the conflict, got {other:?}"),
        }
        assert!(
            matches!(next_now(&mut out), Some(None)),
            "results went on after a failure"
        );
    }

    #[test]
    fn a_conflict_claimed_before_the_first_entry_is_an_error_not_a_panic() {
        let r = result_of(Reply::Append(AppendEntriesResponse::Conflict), None, None);
        assert!(matches!(r, Err(RPCError::Unreachable(_))), "{r:?}");
        let r = result_of(Reply::Failed("no".into()), Some(id(1)), Some(id(2)));
        assert!(matches!(r, Err(RPCError::Unreachable(_))), "{r:?}");
    }
}
