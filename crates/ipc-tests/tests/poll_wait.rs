//! The Poll and Wait rows of PYTHON-BEHAVIOURS.md between real processes
//! (`_TestPoll` and `TestWait` in CPython's test suite): `poll` on empty
//! messages, message boundaries, `wait` over several children's pipes, its
//! timeout, and `wait` over connections mixed with a `Child` and raw
//! descriptors.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_core::Waitable;
use ipc_pipe::Error;
use ipc_tests::{join_ok, PATIENCE};

// Python (_TestPoll.test_empty_string): poll() is False, then True after
// the peer sends b'', and stays True: poll never consumes.
#[test]
fn an_empty_message_makes_poll_true_and_it_stays_true() {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            child_end.recv_bytes()?;
            child_end.send_bytes(b"")?;
            // Stay until the parent is done, so EOF does not make poll true.
            match child_end.recv_bytes() {
                Err(Error::Closed) => Ok(()),
                other => other.map(drop),
            }
        })
        .unwrap();
    assert!(!parent.poll(Duration::ZERO).unwrap());
    parent.send_bytes(b"go").unwrap();
    assert!(
        parent.poll(PATIENCE).unwrap(),
        "the empty message never came"
    );
    for _ in 0..3 {
        assert!(
            parent.poll(Duration::ZERO).unwrap(),
            "poll consumed the message"
        );
        assert!(parent.poll(Duration::from_millis(10)).unwrap());
    }
    assert_eq!(parent.recv_bytes_timeout(PATIENCE).unwrap(), b"");
    assert!(
        !parent.poll(Duration::ZERO).unwrap(),
        "the empty message is gone now"
    );
    drop(parent);
    join_ok(&mut child);
}

// Python (_TestPoll.test_dont_merge): b'a', b'b', b'cd' sent back to back
// arrive as three messages.
#[test]
fn messages_sent_back_to_back_are_not_merged() {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            child_end.send_bytes(b"a")?;
            child_end.send_bytes(b"b")?;
            child_end.send_bytes(b"cd")
        })
        .unwrap();
    // All three are in the socket before the first is read.
    join_ok(&mut child);
    assert!(parent.poll(Duration::ZERO).unwrap());
    assert_eq!(parent.recv_bytes().unwrap(), b"a");
    assert!(parent.poll(Duration::ZERO).unwrap());
    assert_eq!(parent.recv_bytes().unwrap(), b"b");
    assert!(parent.poll(Duration::ZERO).unwrap());
    assert_eq!(parent.recv_bytes().unwrap(), b"cd");
    assert!(matches!(parent.recv_bytes(), Err(Error::Closed)));
}

// Python (_TestPoll.test_strings): a sequence that includes empty messages
// arrives in order, each as sent.
#[test]
fn a_sequence_with_empty_messages_arrives_in_order() {
    let strings: Vec<&[u8]> = vec![
        b"hello",
        b"",
        b"a",
        b"b",
        b"cd",
        b"",
        b"",
        b"e",
        b"f",
        b"",
        &[b'x'; 70_000],
        b"",
    ];
    let (mut reader, mut writer) = ipc_pipe::one_way().unwrap();
    let to_send: Vec<Vec<u8>> = strings.iter().map(|s| s.to_vec()).collect();
    let mut child = Process::new()
        .allow_threads()
        .pass("w", &writer)
        .unwrap()
        .fork(move || to_send.iter().try_for_each(|s| writer.send_bytes(s)))
        .unwrap();
    for expected in &strings {
        assert!(reader.poll(PATIENCE).unwrap());
        assert_eq!(reader.recv_bytes().unwrap(), *expected);
    }
    assert!(matches!(
        reader.recv_bytes_timeout(PATIENCE),
        Err(Error::Closed)
    ));
    join_ok(&mut child);
}

// Python (TestWait.test_wait): wait() over 4 pipes from 4 children each
// sending 10 messages then closing delivers all 40; closed readers are
// reported ready and then give EOF.
#[test]
fn wait_over_four_children_delivers_everything_then_eof() {
    let mut readers = Vec::new();
    let mut children = Vec::new();
    for who in 0..4u32 {
        let (reader, mut writer) = ipc_pipe::one_way().unwrap();
        let child = Process::new()
            .allow_threads()
            .pass("w", &writer)
            .unwrap()
            .fork(move || (0..10u32).try_for_each(|i| writer.send(&(who, i))))
            .unwrap();
        readers.push((who, reader));
        children.push(child);
    }
    let mut received: Vec<Vec<u32>> = vec![Vec::new(); 4];
    let mut closed = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !readers.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let objects: Vec<&dyn Waitable> = readers.iter().map(|(_, r)| r as &dyn Waitable).collect();
        let ready = ipc_core::wait(&objects, left).unwrap();
        assert!(
            !ready.is_empty(),
            "wait timed out with readers left: {received:?}"
        );
        // Remove from the back so earlier indices stay valid.
        for &index in ready.iter().rev() {
            let (who, reader) = &mut readers[index];
            match reader.recv::<(u32, u32)>() {
                Ok((sender, i)) => {
                    assert_eq!(sender, *who, "a message on another child's pipe");
                    received[sender as usize].push(i);
                }
                Err(Error::Closed) => {
                    closed.push(*who);
                    readers.remove(index);
                }
                Err(e) => panic!("reader {who}: {e:?}"),
            }
        }
    }
    for (who, got) in received.iter().enumerate() {
        assert_eq!(
            *got,
            (0..10).collect::<Vec<u32>>(),
            "messages of child {who}"
        );
    }
    closed.sort_unstable();
    assert_eq!(closed, [0, 1, 2, 3], "every reader ended with EOF");
    for child in &mut children {
        join_ok(child);
    }
}

// Python (TestWait.test_wait_timeout): wait on idle pipes returns [] after
// at least the timeout; after one peer sends it returns that one.
#[test]
fn wait_on_idle_pipes_times_out_then_reports_the_one_that_sent() {
    let (a, mut a_peer) = ipc_pipe::duplex().unwrap();
    let (b, mut b_peer) = ipc_pipe::duplex().unwrap();
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let ready = ipc_core::wait(&[&a, &b], timeout).unwrap();
    let waited = start.elapsed();
    assert!(ready.is_empty(), "idle pipes reported ready: {ready:?}");
    assert!(waited >= timeout, "wait returned after {waited:?}");
    assert!(waited < timeout + PATIENCE, "wait took {waited:?}");

    // A child sends on b.
    let mut child = Process::new()
        .allow_threads()
        .pass("b", &b_peer)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            b_peer.send(&())?;
            // Keep the end open until told, so only the message makes b ready.
            b_peer.recv_bytes().map(drop)
        })
        .unwrap();
    let start = Instant::now();
    assert_eq!(ipc_core::wait(&[&a, &b], PATIENCE).unwrap(), [1]);
    assert!(start.elapsed() < PATIENCE);
    // wait consumed nothing.
    assert_eq!(ipc_core::wait(&[&a, &b], Duration::ZERO).unwrap(), [1]);
    let mut b = b;
    b.recv::<()>().unwrap();
    assert!(ipc_core::wait(&[&a, &b], Duration::ZERO)
        .unwrap()
        .is_empty());
    b.send_bytes(b"done").unwrap();
    join_ok(&mut child);
    a_peer.send_bytes(b"").unwrap();
    assert_eq!(
        ipc_core::wait(&[&a, &b], PATIENCE).unwrap(),
        [0, 1],
        "a has a message, b is closed"
    );
}

// Python (TestWait.test_wait_integer): wait() takes process sentinels and
// raw descriptors mixed with connections, and reports each when ready.
#[test]
fn wait_mixes_connections_a_child_and_a_raw_descriptor() {
    let (ctl, mut ctl_child) = ipc_pipe::duplex().unwrap();
    let (idle, _idle_peer) = ipc_pipe::duplex().unwrap();
    let (raw, raw_peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("ctl", &ctl_child)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            // Exit when told, without sending anything.
            ctl_child.recv_bytes().map(drop)
        })
        .unwrap();
    let raw_fd = raw.as_fd();
    let objects = |child: &ipc_core::process::Child| -> Vec<usize> {
        ipc_core::wait(&[&idle, child, &raw_fd], Duration::ZERO).unwrap()
    };
    assert!(objects(&child).is_empty(), "nothing is ready yet");

    let mut ctl = ctl;
    ctl.send_bytes(b"exit").unwrap();
    let ready = ipc_core::wait(&[&idle, &child, &raw_fd], PATIENCE).unwrap();
    assert_eq!(ready, [1], "the child's exit makes it ready");
    // Still reported after the child is joined.
    join_ok(&mut child);
    assert_eq!(objects(&child), [1]);

    std::io::Write::write_all(&mut &raw_peer, b"!").unwrap();
    let ready = ipc_core::wait(&[&idle, &child, &raw_fd], PATIENCE).unwrap();
    assert_eq!(ready, [1, 2]);
    drop(ctl);
}

// Python (TestWait.test_neg_timeout): wait([a], timeout=-1) returns []
// at once; here the zero timeout.
#[test]
fn wait_with_a_zero_timeout_returns_at_once() {
    let (a, mut a_peer) = ipc_pipe::duplex().unwrap();
    let (reader, _writer) = ipc_pipe::one_way().unwrap();
    let start = Instant::now();
    for _ in 0..100 {
        assert!(ipc_core::wait(&[&a, &reader], Duration::ZERO)
            .unwrap()
            .is_empty());
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "100 zero-timeout waits took {:?}",
        start.elapsed()
    );
    a_peer.send_bytes(b"x").unwrap();
    let start = Instant::now();
    assert_eq!(ipc_core::wait(&[&a, &reader], Duration::ZERO).unwrap(), [0]);
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// A connection whose next message already sits in its receive buffer is
/// ready for `wait` and `poll` even though the socket itself is drained.
#[test]
fn wait_sees_messages_already_buffered_in_the_connection() {
    let (mut a, mut a_peer) = ipc_pipe::duplex().unwrap();
    let (other, _other_peer) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("a", &a_peer)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            // Three small messages in one write each, likely read at once.
            for m in [&b"1"[..], b"2", b"3"] {
                a_peer.send_bytes(m)?;
            }
            a_peer.recv_bytes().map(drop)
        })
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let ready = ipc_core::wait(&[&a as &dyn Waitable, &other], PATIENCE).unwrap();
        assert_eq!(ready, [0], "messages left unseen: got {got:?}");
        got.push(a.recv_bytes().unwrap());
    }
    assert_eq!(got, [b"1", b"2", b"3"]);
    assert!(
        ipc_core::wait(&[&a as &dyn Waitable, &other], Duration::ZERO)
            .unwrap()
            .is_empty()
    );
    a.send_bytes(b"done").unwrap();
    join_ok(&mut child);
}
