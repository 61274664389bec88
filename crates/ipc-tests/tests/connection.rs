//! The Connection rows of PYTHON-BEHAVIOURS.md between real processes
//! (`_TestConnection` in CPython's test suite): typed and byte round trips,
//! 16 and 64 MiB messages, `recv_bytes_into`, `poll` timing, EOF after the
//! peer closes, one-way pipes, `send_bytes` ranges, a parent closing the
//! child's end after the start; plus many messages in flight, both
//! directions at once, and sending to a closed peer without dying of
//! `SIGPIPE`.

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_pipe::{Connection, Error, FdStream};
use ipc_tests::{checksum, join_ok, pattern, Value, PATIENCE};
use nix::sys::signal::{signal, SigHandler, Signal};

fn child_program() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ipc-test-child"))
}

/// A forked child that echoes every byte message until the peer closes.
fn fork_echo(mut end: Connection) -> ipc_core::process::Child {
    Process::new()
        .allow_threads()
        .pass("conn", &end)
        .expect("pass")
        .fork(move || -> ipc_core::Result<()> {
            loop {
                match end.recv_bytes() {
                    Ok(msg) => end.send_bytes(&msg)?,
                    Err(Error::Closed) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .expect("fork")
}

// Python: conn.send([1, 2.25, None]); conn.recv() == [1, 2.25, None]
#[test]
fn typed_list_round_trips_through_a_child() {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            let value: Vec<Value> = child_end.recv()?;
            child_end.send(&value)
        })
        .unwrap();
    let sent = vec![
        Value::Int(1),
        Value::Float(2.25),
        Value::None,
        Value::List(vec![Value::Str("nested ✓".into()), Value::List(vec![])]),
    ];
    parent.send(&sent).unwrap();
    let back: Vec<Value> = parent.recv_timeout(PATIENCE).unwrap();
    assert_eq!(back, sent);
    join_ok(&mut child);
}

// Python: conn.send_bytes(msg); conn.recv_bytes() == msg
#[test]
fn bytes_round_trip_through_a_child() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = fork_echo(child_end);
    for msg in [&b"hello"[..], b"", b"\0\xff\x00", &pattern(1, 100_000)] {
        parent.send_bytes(msg).unwrap();
        assert_eq!(parent.recv_bytes_timeout(PATIENCE).unwrap(), msg);
    }
    drop(parent);
    join_ok(&mut child);
}

/// Sends `len` bytes to an echoing child, which also checks them, and
/// checks what comes back.
fn big_round_trip(len: usize) {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let msg = pattern(len as u64, len);
    let expected_sum = checksum(&msg);
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            let got = child_end.recv_bytes()?;
            // The child checks what arrived before echoing it.
            child_end.send(&(got.len(), checksum(&got)))?;
            child_end.send_bytes(&got)
        })
        .unwrap();
    parent.send_bytes(&msg).unwrap();
    let (child_len, child_sum): (usize, u64) = parent.recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        (child_len, child_sum),
        (len, expected_sum),
        "the child got other bytes"
    );
    let back = parent.recv_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(back.len(), len);
    assert!(back == msg, "the echoed message differs");
    join_ok(&mut child);
}

// Python: a 16 MiB message round-trips intact (test_connection, "really_big_msg").
#[test]
fn sixteen_mib_message_round_trips_intact() {
    big_round_trip(16 << 20);
}

#[test]
fn sixty_four_mib_message_round_trips_intact() {
    big_round_trip(64 << 20);
}

/// Just over the size that is allocated up front: the receiver grows its
/// buffer as the bytes arrive.
#[test]
fn message_just_over_sixty_four_mib_round_trips_intact() {
    big_round_trip((64 << 20) + 12_345);
}

// Python: recv_bytes_into(buffer) returns the count; with an offset it
// writes there and leaves the rest alone.
#[test]
fn recv_bytes_into_returns_the_count_and_writes_at_an_offset() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = fork_echo(child_end);
    let msg: Vec<u8> = (1..=40).collect();
    parent.send_bytes(&msg).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(parent.recv_bytes_into(&mut buf).unwrap(), 40);
    assert_eq!(&buf[..40], &msg[..]);
    assert!(buf[40..].iter().all(|&b| b == 0));

    // Python: recv_bytes_into(buffer, 3 * itemsize)
    parent.send_bytes(&msg).unwrap();
    let mut buf = [0xeeu8; 64];
    assert_eq!(parent.recv_bytes_into(&mut buf[12..]).unwrap(), 40);
    assert!(
        buf[..12].iter().all(|&b| b == 0xee),
        "bytes before the offset changed"
    );
    assert_eq!(&buf[12..52], &msg[..]);
    assert!(
        buf[52..].iter().all(|&b| b == 0xee),
        "bytes after the message changed"
    );
    drop(parent);
    join_ok(&mut child);
}

// Python: a 110-byte message into a 40-byte buffer raises BufferTooShort
// carrying the whole message; here the message stays unread instead.
#[test]
fn too_short_buffer_is_reported_and_the_message_kept() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = fork_echo(child_end);
    let msg = pattern(110, 110);
    parent.send_bytes(&msg).unwrap();
    assert!(parent.poll(PATIENCE).unwrap());
    let mut small = [0u8; 40];
    match parent.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort { needed: 110 }) => {}
        other => panic!("110 bytes into 40: {other:?}"),
    }
    assert_eq!(small, [0u8; 40], "the short buffer was written");
    assert_eq!(parent.recv_bytes_timeout(PATIENCE).unwrap(), msg);
    drop(parent);
    join_ok(&mut child);
}

// Python: poll() is False at once on an idle connection, poll(0.1) False
// after about 0.1 s, and True at once after the peer has sent.
#[test]
fn poll_waits_its_timeout_and_sees_a_sent_message_at_once() {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            // Send only when told to, so the parent sees an idle pipe first.
            let go: String = child_end.recv()?;
            child_end.send(&format!("{go} done"))
        })
        .unwrap();

    let start = Instant::now();
    assert!(!parent.poll(Duration::ZERO).unwrap());
    assert!(start.elapsed() < Duration::from_secs(1), "poll(0) waited");

    let start = Instant::now();
    assert!(!parent.poll(Duration::from_millis(100)).unwrap());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(100),
        "poll(100 ms) returned after {waited:?}"
    );
    assert!(waited < PATIENCE, "poll(100 ms) took {waited:?}");

    parent.send(&"go").unwrap();
    assert!(
        parent.poll(PATIENCE).unwrap(),
        "the child's reply never came"
    );
    // With the message there, poll(100 ms) is true (it did not wait out its
    // timeout), and a long poll returns at once.
    assert!(parent.poll(Duration::from_millis(100)).unwrap());
    let start = Instant::now();
    assert!(parent.poll(PATIENCE).unwrap());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "poll with a message waiting took {:?}",
        start.elapsed()
    );
    // Polling consumed nothing.
    assert!(parent.poll(Duration::ZERO).unwrap());
    assert_eq!(parent.recv_timeout::<String>(PATIENCE).unwrap(), "go done");
    join_ok(&mut child);
}

// Python: after the peer's end is closed, recv() and recv_bytes() raise
// EOFError, and readable/writable stay true.
#[test]
fn receiving_after_the_peer_closed_is_closed() {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || child_end.send(&"bye"))
        .unwrap();
    join_ok(&mut child);
    assert_eq!(parent.recv_timeout::<String>(PATIENCE).unwrap(), "bye");
    assert!(parent.poll(Duration::ZERO).unwrap(), "EOF makes poll true");
    assert!(matches!(parent.recv::<String>(), Err(Error::Closed)));
    assert!(matches!(parent.recv_bytes(), Err(Error::Closed)));
    assert!(matches!(parent.recv_bytes(), Err(Error::Closed)));
    assert!(parent.readable() && parent.writable());
}

// Python: Pipe(duplex=False) gives (reader, writer); reader.send,
// writer.recv and writer.poll fail.
#[test]
fn one_way_ends_refuse_the_wrong_direction() {
    let (mut reader, mut writer) = ipc_pipe::one_way().unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(!writer.readable() && writer.writable());
    assert!(matches!(reader.send(&1u8), Err(Error::Unsupported(_))));
    assert!(matches!(
        reader.send_bytes(b"x"),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(writer.recv::<u8>(), Err(Error::Unsupported(_))));
    assert!(matches!(writer.recv_bytes(), Err(Error::Unsupported(_))));
    assert!(matches!(
        writer.try_recv_bytes(),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        writer.recv_bytes_into(&mut [0u8; 8]),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        writer.poll(Duration::ZERO),
        Err(Error::Unsupported(_))
    ));
    // The refusals sent nothing and broke nothing.
    assert!(!reader.poll(Duration::ZERO).unwrap());
    writer.send_bytes(b"fine").unwrap();
    assert_eq!(reader.recv_bytes_timeout(PATIENCE).unwrap(), b"fine");
}

#[test]
fn one_way_pipe_carries_messages_from_a_child() {
    let (mut reader, mut writer) = ipc_pipe::one_way().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("w", &writer)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            writer.send(&Value::Int(1))?;
            writer.send_bytes(&pattern(9, 3 << 20))
        })
        .unwrap();
    assert_eq!(
        reader.recv_timeout::<Value>(PATIENCE).unwrap(),
        Value::Int(1)
    );
    assert!(reader.recv_bytes_timeout(PATIENCE).unwrap() == pattern(9, 3 << 20));
    join_ok(&mut child);
    assert!(matches!(reader.recv_bytes(), Err(Error::Closed)));
}

// Python: send_bytes(msg, 5) -> msg[5:]; (msg, 7, 8) -> msg[7:15];
// (msg, 26) and (msg, 26, 0) -> b''; (27), (22, 5), (26, 1) -> ValueError
// and nothing is sent.
#[test]
fn send_bytes_range_matches_python() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = fork_echo(child_end);
    let msg: Vec<u8> = (b'a'..=b'z').collect();
    assert_eq!(msg.len(), 26);
    for (offset, size, expected) in [
        (5, None, &msg[5..]),
        (7, Some(8), &msg[7..15]),
        (26, None, &[][..]),
        (26, Some(0), &[][..]),
        (0, None, &msg[..]),
        (0, Some(26), &msg[..]),
    ] {
        parent.send_bytes_range(&msg, offset, size).unwrap();
        assert_eq!(
            parent.recv_bytes_timeout(PATIENCE).unwrap(),
            expected,
            "send_bytes_range(msg, {offset}, {size:?})"
        );
    }
    for (offset, size) in [
        (27, None),
        (22, Some(5)),
        (26, Some(1)),
        (usize::MAX, None),
        (1, Some(usize::MAX)),
    ] {
        match parent.send_bytes_range(&msg, offset, size) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("send_bytes_range(msg, {offset}, {size:?}): {other:?}"),
        }
    }
    // Nothing was sent by the refused calls: the next message is the marker.
    parent.send_bytes(b"marker").unwrap();
    assert_eq!(parent.recv_bytes_timeout(PATIENCE).unwrap(), b"marker");
    assert!(!parent.poll(Duration::from_millis(50)).unwrap());
    drop(parent);
    join_ok(&mut child);
}

// Python (test_spawn_close): the parent closes the child's end right after
// starting the child, and still talks to it.
#[test]
fn parent_closes_the_exec_childs_end_after_start_and_still_talks() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut command = child_program();
    command.arg("echo");
    let mut child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(command)
        .unwrap();
    child_end.close();
    for msg in [&b"one"[..], b"", &pattern(2, 200_000)] {
        parent.send_bytes(msg).unwrap();
        assert_eq!(parent.recv_bytes_timeout(PATIENCE).unwrap(), msg);
    }
    drop(parent);
    join_ok(&mut child);
}

#[test]
fn parent_closes_the_forked_childs_end_after_start_and_still_talks() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    // The closure owns `child_end`; the parent's copy is gone once fork
    // returns, as Python's parent does `child_conn.close()`.
    let mut child = fork_echo(child_end);
    parent.send(&Value::Str("still there?".into())).unwrap();
    let back = parent.recv_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(
        ipc_core::codec::decode::<Value>(&back).unwrap(),
        Value::Str("still there?".into())
    );
    drop(parent);
    join_ok(&mut child);
}

/// Many small messages in flight at once: a child sends 100 000 numbers as
/// fast as it can, the parent checks every one arrives, once, in order.
#[test]
fn a_hundred_thousand_messages_arrive_in_order() {
    const N: u64 = 100_000;
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut command = child_program();
    command.args(["count", &N.to_string()]);
    let mut child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(command)
        .unwrap();
    drop(child_end);
    for i in 0..N {
        let got: u64 = parent.recv_timeout(PATIENCE).unwrap();
        assert_eq!(got, i, "message out of order");
    }
    assert!(matches!(
        parent.recv_bytes_timeout(PATIENCE),
        Err(Error::Closed)
    ));
    join_ok(&mut child);
}

#[test]
fn a_hundred_thousand_byte_messages_through_a_one_way_pipe() {
    const N: u32 = 100_000;
    let (mut reader, mut writer) = ipc_pipe::one_way().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("w", &writer)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            (0..N).try_for_each(|i| writer.send_bytes(&i.to_le_bytes()[..(i % 5) as usize]))
        })
        .unwrap();
    for i in 0..N {
        let got = reader.recv_bytes_timeout(PATIENCE).unwrap();
        assert_eq!(got, &i.to_le_bytes()[..(i % 5) as usize], "message {i}");
    }
    assert!(matches!(
        reader.recv_bytes_timeout(PATIENCE),
        Err(Error::Closed)
    ));
    join_ok(&mut child);
}

/// A second connection on a duplicate of `conn`'s descriptor, so one thread
/// can receive while another sends on the same socket.
fn receiving_half(conn: &Connection) -> Connection {
    let fd = conn.as_fd().try_clone_to_owned().unwrap();
    Connection::with_direction(FdStream::new(fd).unwrap(), true, false)
}

/// Sends `count` messages of `len` bytes while a thread receives as many
/// from the peer; returns the checksums received.
fn send_and_receive_at_once(
    conn: &mut Connection,
    seed: u64,
    count: u64,
    len: usize,
) -> ipc_core::Result<Vec<u64>> {
    let mut rx = receiving_half(conn);
    let receiver = std::thread::spawn(move || -> ipc_core::Result<Vec<u64>> {
        (0..count)
            .map(|_| rx.recv_bytes_timeout(PATIENCE).map(|m| checksum(&m)))
            .collect()
    });
    for i in 0..count {
        conn.send_bytes(&pattern(seed * 1000 + i, len))?;
    }
    receiver.join().expect("the receiving thread panicked")
}

/// Both processes send and receive at the same time, each message larger
/// than the kernel buffers, so neither could finish sending before the
/// other starts receiving.
#[test]
fn both_directions_at_once() {
    const COUNT: u64 = 8;
    const LEN: usize = 3 << 20;
    let expected = |seed: u64| -> Vec<u64> {
        (0..COUNT)
            .map(|i| checksum(&pattern(seed * 1000 + i, LEN)))
            .collect()
    };
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    // Fork before this process starts any thread of its own.
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || -> i32 {
            match send_and_receive_at_once(&mut child_end, 2, COUNT, LEN) {
                Ok(got) if got == expected(1) => 0,
                Ok(_) => 2,
                Err(e) => {
                    eprintln!("child: {e:?}");
                    1
                }
            }
        })
        .unwrap();
    let got = send_and_receive_at_once(&mut parent, 1, COUNT, LEN).unwrap();
    assert!(got == expected(2), "the parent received other messages");
    join_ok(&mut child);
}

/// Sending to a peer that is gone returns `Closed`, first in this process
/// (where Rust ignores `SIGPIPE`).
#[test]
fn sending_to_a_closed_peer_is_closed() {
    let (mut a, b) = ipc_pipe::duplex().unwrap();
    drop(b);
    assert!(matches!(a.send_bytes(b"x"), Err(Error::Closed)));
    assert!(matches!(a.send(&1u8), Err(Error::Closed)));

    let (reader, mut writer) = ipc_pipe::one_way().unwrap();
    drop(reader);
    assert!(matches!(writer.send_bytes(b"x"), Err(Error::Closed)));
    assert!(matches!(writer.send(&1u8), Err(Error::Closed)));
}

/// Resets `SIGPIPE` to its default action, which kills the process, as C
/// hosts and shells leave it.
fn default_sigpipe() {
    // SAFETY: installing SIG_DFL runs no handler code of ours; the child
    // that calls this is single-threaded.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.expect("reset SIGPIPE");
}

/// A child whose `SIGPIPE` is back to the default writes to a peer that is
/// gone; it must get `Closed` and exit normally (code 0), not die of the
/// signal. `make` returns (the child's end, the peer's end); the pipe is
/// made in the parent, before the child changes the signal.
fn child_with_default_sigpipe_sends_to_closed_peer(make: fn() -> (Connection, Connection)) {
    let (mut end, peer) = make();
    drop(peer);
    let mut child = Process::new()
        .allow_threads()
        .pass("end", &end)
        .unwrap()
        .fork(move || -> i32 {
            default_sigpipe();
            let small = end.send_bytes(b"x");
            let big = end.send_bytes(&vec![0u8; 4 << 20]);
            match (small, big) {
                (Err(Error::Closed), Err(Error::Closed)) => 0,
                other => {
                    eprintln!("child: {other:?}");
                    3
                }
            }
        })
        .unwrap();
    let status = ipc_tests::join(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "the writer did not get Closed and exit normally: {status:?}"
    );
}

#[test]
fn duplex_send_to_closed_peer_with_default_sigpipe_does_not_kill() {
    child_with_default_sigpipe_sends_to_closed_peer(|| ipc_pipe::duplex().unwrap());
}

#[test]
fn one_way_send_to_closed_peer_with_default_sigpipe_does_not_kill() {
    child_with_default_sigpipe_sends_to_closed_peer(|| {
        let (reader, writer) = ipc_pipe::one_way().unwrap();
        (writer, reader)
    });
}

/// The same with the pipe made in the child after the reset.
#[test]
fn one_way_made_after_sigpipe_reset_does_not_kill() {
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> i32 {
            default_sigpipe();
            let (reader, mut writer) = ipc_pipe::one_way().unwrap();
            drop(reader);
            match writer.send_bytes(b"x") {
                Err(Error::Closed) => 0,
                other => {
                    eprintln!("child: {other:?}");
                    3
                }
            }
        })
        .unwrap();
    let status = ipc_tests::join(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The reader goes away while a child with the default `SIGPIPE` is in the
/// middle of writing a message much larger than the pipe buffer.
#[test]
fn reader_closing_mid_write_with_default_sigpipe_does_not_kill() {
    let (reader, mut writer) = ipc_pipe::one_way().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("w", &writer)
        .unwrap()
        .fork(move || -> i32 {
            default_sigpipe();
            match writer.send_bytes(&vec![1u8; 32 << 20]) {
                Err(Error::Closed) => 0,
                other => {
                    eprintln!("child: {other:?}");
                    3
                }
            }
        })
        .unwrap();
    // Once the writer has started, close the reader without reading.
    assert!(reader.poll(PATIENCE).unwrap(), "the child never wrote");
    drop(reader);
    let status = ipc_tests::join(&mut child);
    assert_eq!(status.code(), Some(0), "{status:?}");
}
