//! The async forms on tokio against real processes: an async end talks to
//! a blocking end in a child, over a socket and over pipes, with messages
//! larger than the kernel's buffers; receives dropped part-way through a
//! message lose nothing, and a send dropped part-way never leaves half a
//! message; a child's exit and a spawned entry's result are awaited.

use std::io::Write;

use ipc_core::frame::Header;
use ipc_core::process::{inherited, Process};
use ipc_core::spawn::{ChildFailure, Entry, Spawned, StartMethod};
use ipc_core::tokio::AsyncConnection;
use ipc_core::{Connection, Error};
use ipc_testkit::{pattern, poll_once, runtime, Rng};
use ipc_tests::{checksum, RawEnd, PATIENCE};

ipc_core::spawn_harness!();

/// Message sizes that cross the kernel's socket and pipe buffers.
const SIZES: [usize; 6] = [0, 1, 100, 70_000, 1 << 20, 3 << 20];

/// Sends back every message it receives on "conn", until the parent closes.
fn echo(_: ()) -> u32 {
    let mut conn: Connection = inherited("conn").expect("the passed connection");
    let mut n = 0;
    while let Ok(message) = conn.recv_bytes() {
        conn.send_bytes(&message).expect("echo");
        n += 1;
    }
    n
}

/// Reads messages on "conn" until the parent closes; gives each one's
/// length and checksum.
fn lengths_and_sums(_: ()) -> Vec<(usize, u64)> {
    let mut conn: Connection = inherited("conn").expect("the passed connection");
    let mut seen = Vec::new();
    while let Ok(message) = conn.recv_bytes() {
        seen.push((message.len(), checksum(&message)));
    }
    seen
}

/// Spawns `entry` with `end` passed under "conn"; this process's copy of
/// `end` is closed, so the child holds the only one.
fn spawn_with<R: serde::de::DeserializeOwned>(end: Connection, entry: Entry<(), R>) -> Spawned<R> {
    Process::new()
        .pass("conn", &end)
        .expect("pass the end")
        .spawn(entry, &())
        .expect("spawn the child")
}

#[test]
fn an_async_end_talks_to_a_blocking_child_over_a_socket() {
    runtime().block_on(async {
        let (ours, theirs) = ipc_pipe::duplex().unwrap();
        let child = spawn_with(theirs, ipc_core::entry!(echo));
        let mut ours = AsyncConnection::new(ours).unwrap();
        for (i, size) in SIZES.into_iter().enumerate() {
            let message = pattern(i as u64, size);
            ours.send_bytes(&message).await.unwrap();
            let echoed = ours.recv_bytes().await.unwrap();
            assert_eq!(checksum(&echoed), checksum(&message), "size {size}");
        }
        ours.send(&(7u8, "typed".to_owned())).await.unwrap();
        assert_eq!(
            ours.recv::<(u8, String)>().await.unwrap(),
            (7, "typed".to_owned())
        );
        let mut small = [0u8; 16];
        ours.send_bytes(b"into").await.unwrap();
        assert_eq!(ours.recv_bytes_into(&mut small).await.unwrap(), 4);
        assert_eq!(&small[..4], b"into");
        drop(ours);
        assert_eq!(child.join_async().await.unwrap(), SIZES.len() as u32 + 2);
    });
}

#[test]
fn an_async_writer_feeds_a_blocking_reader_over_a_pipe() {
    runtime().block_on(async {
        let (theirs, ours) = ipc_pipe::one_way().unwrap();
        let child = spawn_with(theirs, ipc_core::entry!(lengths_and_sums));
        let mut ours = AsyncConnection::new(ours).unwrap();
        let mut sent = Vec::new();
        for (i, size) in SIZES.into_iter().enumerate() {
            let message = pattern(i as u64, size);
            ours.send_bytes(&message).await.unwrap();
            sent.push((size, checksum(&message)));
        }
        drop(ours);
        assert_eq!(child.join_async().await.unwrap(), sent);
    });
}

/// Writes the bytes of its argument on "raw" in the pieces it is told, each
/// after a message on "go".
fn trickle(stream: Vec<u8>) -> bool {
    let mut raw: RawEnd = inherited("raw").expect("the raw end");
    let mut go: Connection = inherited("go").expect("the go connection");
    let mut at = 0;
    while let Ok(piece) = go.recv::<u64>() {
        let end = (at + piece as usize).min(stream.len());
        raw.0.write_all(&stream[at..end]).expect("write a piece");
        at = end;
        go.send(&()).expect("say the piece is out");
    }
    at == stream.len()
}

#[test]
fn receives_dropped_part_way_lose_nothing() {
    let mut rng = Rng::from_env_or_clock();
    let messages: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let size = match rng.below(4) {
                0 => rng.below(8),
                1 => rng.below(300),
                2 => rng.below(20_000),
                _ => rng.below(300_000),
            };
            pattern(i, size as usize)
        })
        .collect();
    let mut stream = Vec::new();
    for message in &messages {
        stream.extend_from_slice(Header::new(message.len() as u64).as_bytes());
        stream.extend_from_slice(message);
    }
    let received = runtime().block_on(async {
        let (ours, raw) = RawEnd::pair();
        let (mut go, theirs) = ipc_pipe::duplex().unwrap();
        let child = Process::new()
            .pass("raw", &raw)
            .unwrap()
            .pass("go", &theirs)
            .unwrap()
            .spawn(ipc_core::entry!(trickle), &stream)
            .unwrap();
        drop((raw, theirs));
        let mut ours = AsyncConnection::new(ours).unwrap();
        let mut received = Vec::new();
        let mut sent = 0;
        while sent < stream.len() {
            // A piece of 1 byte to a few frames, often ending inside a
            // header or a payload; at most 64 KB, which an empty socket
            // takes whole while this side waits for the child to say it
            // is out (the socket is emptied below before the next one).
            let most = match rng.below(3) {
                0 => 6,
                1 => 5_000,
                _ => 64_000,
            };
            let piece = 1 + rng.below(most);
            go.send(&piece).unwrap();
            go.recv::<()>().unwrap();
            sent += piece as usize;
            // The piece is in the socket: each receive takes some of it and
            // is dropped unless it finished a message.
            ours.readable().await.unwrap();
            while let Some(message) = poll_once(ours.recv_bytes()) {
                received.push(message.unwrap());
            }
        }
        drop(go);
        loop {
            match ours.recv_bytes().await {
                Ok(message) => received.push(message),
                Err(Error::Closed) => break,
                Err(e) => panic!("after {} messages: {e}", received.len()),
            }
        }
        assert!(child.join_async().await.unwrap(), "the child wrote it all");
        received
    });
    assert_eq!(sums(&received), sums(&messages));
}

#[test]
fn a_receive_polled_once_takes_what_readable_reported() {
    // `readable` can see bytes arrive before the reactor has: a receive
    // polled once right after it, with no yield to the runtime between,
    // must still take them. (It waited for the reactor's word after a read
    // that had emptied the socket, so a loop of `readable` and
    // single polls took nothing more and the writer filled the socket.)
    runtime().block_on(async {
        let (ours, mut raw) = RawEnd::pair();
        let mut ours = AsyncConnection::new(ours).unwrap();
        for (i, size) in [5usize, 0, 40_000, 3].into_iter().enumerate() {
            let message = pattern(i as u64, size);
            raw.0
                .write_all(Header::new(size as u64).as_bytes())
                .unwrap();
            raw.0.write_all(&message).unwrap();
            ours.readable().await.unwrap();
            let got = poll_once(ours.recv_bytes()).expect("the message readable saw");
            assert_eq!(got.unwrap(), message, "message {i}");
        }
    });
}

fn sums(messages: &[Vec<u8>]) -> Vec<(usize, u64)> {
    messages.iter().map(|m| (m.len(), checksum(m))).collect()
}

#[test]
fn a_send_dropped_part_way_never_leaves_half_a_message() {
    runtime().block_on(async {
        let (ours, theirs) = ipc_pipe::duplex().unwrap();
        let child = spawn_with(theirs, ipc_core::entry!(lengths_and_sums));
        let mut ours = AsyncConnection::new(ours).unwrap();
        let big = pattern(1, 8 << 20);
        let small = pattern(2, 5);
        // More than the socket holds: the first poll writes part of it.
        let _ = poll_once(ours.send_bytes(&big));
        ours.send_bytes(&small).await.unwrap();
        drop(ours);
        assert_eq!(
            child.join_async().await.unwrap(),
            [(big.len(), checksum(&big)), (small.len(), checksum(&small))]
        );
    });
}

fn exits(code: i32) -> u8 {
    std::process::exit(code);
}

#[test]
fn exits_and_results_are_awaited_whatever_the_method() {
    runtime().block_on(async {
        for method in [StartMethod::Spawn, StartMethod::Forkserver] {
            let child = Process::new()
                .start(method, ipc_core::entry!(exits), &3)
                .unwrap();
            match tokio::time::timeout(PATIENCE, child.join_async()).await {
                Ok(Err(Error::Child(failure))) => {
                    assert_eq!(*failure, ChildFailure::Exited(3), "{method:?}")
                }
                other => panic!("{method:?}: {other:?}"),
            }
        }
        let mut child = Process::new()
            .allow_threads()
            .fork(|| -> i32 {
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        child.kill().unwrap();
        let status = tokio::time::timeout(PATIENCE, child.join_async())
            .await
            .expect("the exit within the patience")
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    });
}

/// The connection's read timeout bounds an async receive as it does a
/// blocking one, and the connection stays usable after it.
#[test]
fn a_read_timeout_bounds_an_async_receive_and_the_connection_goes_on() {
    runtime().block_on(async {
        let (mut ours, theirs) = ipc_pipe::duplex().unwrap();
        ours.set_read_timeout(Some(std::time::Duration::from_millis(50)));
        let child = spawn_with(theirs, ipc_core::entry!(echo));
        let mut ours = AsyncConnection::new(ours).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(ours.recv_bytes().await, Err(Error::Timeout)));
        assert!(started.elapsed() >= std::time::Duration::from_millis(50));
        ours.send_bytes(b"still here").await.unwrap();
        assert_eq!(ours.recv_bytes().await.unwrap(), b"still here");
        drop(ours);
        assert_eq!(child.join_async().await.unwrap(), 1);
    });
}

/// `readable` waits for what a receive has not seen yet: after a receive
/// that emptied the socket, and after a try that found half a message, it
/// is pending until more bytes come (it does not say "ready" again and
/// again about what was already looked at).
#[test]
fn readable_waits_for_new_bytes_rather_than_repeating_itself() {
    use std::os::unix::net::UnixStream;
    runtime().block_on(async {
        let (ours, mut raw) = UnixStream::pair().unwrap();
        let conn = Connection::new(ipc_core::FdStream::new(ours.into()).unwrap());
        let mut ours = AsyncConnection::new(conn).unwrap();
        let frame = |payload: &[u8]| {
            let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(payload);
            bytes
        };
        raw.write_all(&frame(b"whole")).unwrap();
        ours.readable().await.unwrap();
        assert_eq!(ours.recv_bytes().await.unwrap(), b"whole");
        assert!(
            poll_once(ours.readable()).is_none(),
            "ready with nothing new"
        );

        let half = frame(b"in two parts");
        raw.write_all(&half[..7]).unwrap();
        ours.readable().await.unwrap();
        assert!(matches!(ours.try_recv_bytes(), Err(Error::Empty)));
        assert!(
            poll_once(ours.readable()).is_none(),
            "ready again on the same half"
        );
        raw.write_all(&half[7..]).unwrap();
        tokio::time::timeout(PATIENCE, ours.readable())
            .await
            .expect("the rest arrives")
            .unwrap();
        assert_eq!(ours.try_recv_bytes().unwrap(), b"in two parts");

        // The write end of a one-way pipe has nothing to wait for.
        let (_reader, writer) = ipc_pipe::one_way().unwrap();
        let writer = AsyncConnection::new(writer).unwrap();
        assert!(matches!(
            writer.readable().await,
            Err(Error::Unsupported(_))
        ));
    });
}
