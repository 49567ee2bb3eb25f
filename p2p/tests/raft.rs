//! `/pyralog/raft/2` between real swarms on loopback: answers matched to
//! their calls by id whatever their order, and the calls that must fail.

use std::time::Duration;

use libp2p::identity::Keypair;
use pyralog_ledger::Hash;
use pyralog_p2p::raft::{INBOX, Inbound, MAX_CALLS, MAX_FRAME};
use pyralog_p2p::{Config, Multiaddr, NetCommand, NetHandle, Network, PeerId, Topics};
use tokio::sync::mpsc;

fn spawned() -> NetHandle {
    Network::new(Config {
        key: Keypair::generate_ed25519(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootnodes: vec![],
        topics: Topics::new(&"pyralog-test".parse().expect("chain"), &Hash([9; 32])),
        banned: vec![],
        limits: Default::default(),
    })
    .expect("network")
    .spawn()
}

/// Where `n` listens, with its peer id, once it does.
async fn address(n: &NetHandle) -> Multiaddr {
    for _ in 0..500 {
        if let Some(a) = n.listeners().first() {
            return a
                .clone()
                .with(libp2p::multiaddr::Protocol::P2p(n.local_peer_id()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never listened");
}

fn serve(n: &NetHandle) -> mpsc::Receiver<Inbound> {
    let (tx, rx) = mpsc::channel(INBOX);
    n.commander().command(NetCommand::RaftServe(tx));
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_find_their_calls_in_any_order() {
    let (a, b) = (spawned(), spawned());
    let mut inbox = serve(&b);
    let (b_peer, b_addr) = (b.local_peer_id(), address(&b).await);
    let a_peer = a.local_peer_id();
    // b answers the second request before the first.
    let server = tokio::spawn(async move {
        let first = inbox.recv().await.expect("first");
        let second = inbox.recv().await.expect("second");
        assert_eq!((first.from, second.from), (a_peer, a_peer));
        for r in [second, first] {
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(&r.request);
            r.channel.respond(answer);
        }
    });
    let commander = a.commander();
    let one = commander.raft_call(b_peer, Some(b_addr.clone()), b"one".to_vec());
    let two = async {
        // Second on the wire.
        tokio::time::sleep(Duration::from_millis(50)).await;
        commander
            .raft_call(b_peer, Some(b_addr.clone()), b"two".to_vec())
            .await
    };
    let (one, two) = tokio::join!(one, two);
    assert_eq!(one.expect("one"), b"re:one".to_vec());
    assert_eq!(two.expect("two"), b"re:two".to_vec());
    server.await.expect("server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_cannot_be_answered_fail_instead_of_hanging() {
    let (a, b) = (spawned(), spawned());
    let (b_peer, b_addr) = (b.local_peer_id(), address(&b).await);
    let commander = a.commander();

    // Over the cap: refused before anything is sent.
    let err = commander
        .raft_call(b_peer, Some(b_addr.clone()), vec![0; MAX_FRAME + 1])
        .await
        .expect_err("cap");
    assert!(err.contains("cap"), "{err}");

    // b serves no Raft: its stream is closed, and the call fails.
    let err = tokio::time::timeout(
        Duration::from_secs(15),
        commander.raft_call(b_peer, Some(b_addr.clone()), b"x".to_vec()),
    )
    .await
    .expect("a failure, not a hang")
    .expect_err("nobody serves");
    assert!(!err.is_empty());

    // Nobody at all behind an address: the dial fails, and so does the call.
    let nobody = PeerId::random();
    let nowhere: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{nobody}")
        .parse()
        .expect("addr");
    let err = tokio::time::timeout(
        Duration::from_secs(15),
        commander.raft_call(nobody, Some(nowhere), b"x".to_vec()),
    )
    .await
    .expect("a failure, not a hang")
    .expect_err("nobody there");
    assert!(!err.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_member_is_not_called() {
    let (a, b) = (spawned(), spawned());
    let mut inbox = serve(&b);
    let (b_peer, b_addr) = (b.local_peer_id(), address(&b).await);
    tokio::spawn(async move {
        while let Some(r) = inbox.recv().await {
            r.channel.respond(r.request);
        }
    });
    let commander = a.commander();
    let echo = commander
        .raft_call(b_peer, Some(b_addr.clone()), b"hi".to_vec())
        .await;
    assert_eq!(echo.expect("echo"), b"hi".to_vec());

    commander.command(NetCommand::Ban(b_peer));
    // The open stream closes with the connection; from then on the swarm
    // refuses to dial b for a new one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = commander
            .raft_call(b_peer, Some(b_addr.clone()), b"hi".to_vec())
            .await;
        match r {
            Err(e) if e.contains("banned") => break,
            _ if tokio::time::Instant::now() > deadline => panic!("still called: {r:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_their_callers_gave_up_on_free_their_places() {
    let (a, b) = (spawned(), spawned());
    let mut inbox = serve(&b);
    let (b_peer, b_addr) = (b.local_peer_id(), address(&b).await);
    // b reads every request and answers none.
    tokio::spawn(async move { while inbox.recv().await.is_some() {} });
    let commander = a.commander();
    let give_up = |n: usize| {
        let (commander, b_addr) = (commander.clone(), b_addr.clone());
        async move {
            tokio::time::timeout(
                Duration::from_millis(300),
                commander.raft_call(b_peer, Some(b_addr), n.to_le_bytes().to_vec()),
            )
            .await
        }
    };
    // More calls than a link holds at once, every one abandoned.
    let abandoned = futures::future::join_all((0..MAX_CALLS + 100).map(give_up)).await;
    let refused = abandoned
        .iter()
        .filter(|r| matches!(r, Ok(Err(e)) if e.contains("too many")))
        .count();
    assert!(refused <= 100, "{refused} refused");
    // Their places are free again: the next call is taken (and waits).
    let next = give_up(0).await;
    assert!(next.is_err(), "taken and unanswered, not refused: {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_in_the_middle_of_its_frame_leaves_no_garbage_for_the_next() {
    let (a, b) = (spawned(), spawned());
    let mut inbox = serve(&b);
    let (b_peer, b_addr) = (b.local_peer_id(), address(&b).await);
    // b answers every request with its length.
    tokio::spawn(async move {
        while let Some(r) = inbox.recv().await {
            r.channel
                .respond((r.request.len() as u64).to_le_bytes().to_vec());
        }
    });
    let commander = a.commander();
    let small = || commander.raft_call(b_peer, Some(b_addr.clone()), vec![1; 10]);
    assert_eq!(small().await.expect("first"), 10u64.to_le_bytes().to_vec());
    // A frame far larger than the stream's window, abandoned while it is
    // being written: part of it is on the stream.
    let big = commander.raft_call(b_peer, Some(b_addr.clone()), vec![7; MAX_FRAME - 16]);
    let gave_up = tokio::time::timeout(Duration::from_millis(20), big).await;
    assert!(
        gave_up.is_err(),
        "a {MAX_FRAME}-byte call was done in 20 ms"
    );
    // The next call is answered as itself, not read as the rest of the
    // abandoned frame.
    let mut answered = None;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(2), small()).await {
            Ok(Ok(answer)) => {
                answered = Some(answer);
                break;
            }
            // The old stream's failure may reach this call first.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(answered, Some(10u64.to_le_bytes().to_vec()));
}
