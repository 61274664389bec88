//! A hostile or broken peer: raw bytes written on the other end of a
//! socket instead of well-formed frames, by this process or by a forked
//! child. Every case must give an error value quickly (never a panic, a
//! hang or an allocation sized by the peer's claim) and lose nothing that
//! did arrive.

use std::io::Write;
use std::time::{Duration, Instant};

use ipc_core::frame::Header;
use ipc_core::process::Process;
use ipc_core::{Connection, Error, DEFAULT_MAX_MESSAGE_SIZE};
use ipc_tests::{join, join_ok, pattern, RawEnd, PATIENCE};

/// Writes `bytes` on the raw end.
fn raw_write(raw: &RawEnd, bytes: &[u8]) {
    (&raw.0).write_all(bytes).expect("raw write");
}

/// A frame as the framing would put it on the wire.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Header::new(payload.len() as u64).as_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// The long (12-byte) header announcing `len` bytes.
fn long_header(len: u64) -> Vec<u8> {
    let mut out = vec![0xff; 4];
    out.extend_from_slice(&len.to_be_bytes());
    out
}

fn assert_too_large(result: ipc_core::Result<impl std::fmt::Debug>, size: u64, limit: u64) {
    match result {
        Err(Error::TooLarge { size: s, limit: l }) if (s, l) == (size, limit) => {}
        other => panic!("expected TooLarge {{ size: {size}, limit: {limit} }}, got {other:?}"),
    }
}

fn assert_truncated(result: ipc_core::Result<impl std::fmt::Debug>, expected: u64, received: u64) {
    match result {
        Err(e @ Error::Truncated { .. }) => {
            assert!(e.is_closed());
            match e {
                Error::Truncated {
                    expected: x,
                    received: r,
                } => assert_eq!(
                    (x, r),
                    (expected, received),
                    "Truncated {{ expected, received }}"
                ),
                _ => unreachable!(),
            }
        }
        other => panic!(
            "expected Truncated {{ expected: {expected}, received: {received} }}, got {other:?}"
        ),
    }
}

// A header claiming 2^62 bytes is refused at once, before any allocation,
// and the refusal is repeatable (the message stays unread).
#[test]
fn a_header_claiming_two_to_the_62_bytes_is_too_large_at_once() {
    let (mut conn, raw) = RawEnd::pair();
    raw_write(&raw, &long_header(1 << 62));
    let start = Instant::now();
    assert_too_large(conn.recv_bytes(), 1 << 62, DEFAULT_MAX_MESSAGE_SIZE);
    assert_too_large(conn.recv_bytes(), 1 << 62, DEFAULT_MAX_MESSAGE_SIZE);
    assert_too_large(conn.recv::<Vec<u8>>(), 1 << 62, DEFAULT_MAX_MESSAGE_SIZE);
    assert_too_large(conn.try_recv_bytes(), 1 << 62, DEFAULT_MAX_MESSAGE_SIZE);
    assert_too_large(
        conn.recv_bytes_into(&mut [0u8; 16]),
        1 << 62,
        DEFAULT_MAX_MESSAGE_SIZE,
    );
    assert_too_large(conn.recv_bytes_max(10), 1 << 62, 10);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    assert!(conn.poll(Duration::ZERO).unwrap());
}

// With the default limit of 256 MiB, a short header claiming 2^31 - 1
// bytes is too large.
#[test]
fn a_header_claiming_two_gib_is_too_large_for_the_default_limit() {
    let (mut conn, raw) = RawEnd::pair();
    raw_write(&raw, &[0x7f, 0xff, 0xff, 0xff]);
    assert_eq!(conn.max_message_size(), 256 << 20);
    assert_too_large(conn.recv_bytes(), 0x7fff_ffff, 256 << 20);
    assert_too_large(conn.recv::<String>(), 0x7fff_ffff, 256 << 20);
}

// The limit set with set_max_message_size / Pipe::max_message_size is the
// one enforced; a refused message stays for a call with a larger limit.
#[test]
fn max_message_size_is_honoured_and_a_refused_message_is_kept() {
    let (mut conn, raw) = RawEnd::pair();
    conn.set_max_message_size(1000);
    let big = pattern(1, 1001);
    raw_write(&raw, &frame(&big));
    raw_write(&raw, &frame(&[5; 11]));
    assert_too_large(conn.recv_bytes(), 1001, 1000);
    assert_too_large(conn.recv::<Vec<u8>>(), 1001, 1000);
    conn.set_max_message_size(2000);
    assert_eq!(conn.recv_bytes_timeout(PATIENCE).unwrap(), big);
    // Python's recv_bytes(maxlength).
    assert_too_large(conn.recv_bytes_max(10), 11, 10);
    assert_eq!(conn.recv_bytes_max(11).unwrap(), [5; 11]);

    // The sending side refuses too, and sends nothing.
    let (mut a, mut b) = ipc_pipe::Pipe::new().max_message_size(16).duplex().unwrap();
    assert_too_large(a.send_bytes(&[0; 17]), 17, 16);
    assert_too_large(a.send(&[0u8; 17][..]), 18, 16);
    a.send_bytes(&[1; 16]).unwrap();
    assert_eq!(b.recv_bytes_timeout(PATIENCE).unwrap(), [1; 16]);
    assert!(matches!(b.try_recv_bytes(), Err(Error::Empty)));
}

// The limit crosses an exec with the handle: a child whose end allows 100
// bytes refuses a 101-byte message.
#[test]
fn an_exec_child_inherits_the_message_size_limit() {
    let (mut parent, child_end) = ipc_pipe::Pipe::new()
        .max_message_size(100)
        .duplex()
        .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ipc-test-child"));
    command.arg("echo");
    let mut child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(command)
        .unwrap();
    drop(child_end);
    parent.send_bytes(&[7; 100]).unwrap();
    assert_eq!(parent.recv_bytes_timeout(PATIENCE).unwrap(), [7; 100]);
    // Our end allows 100 too, so lift it to send 101.
    parent.set_max_message_size(1000);
    parent.send_bytes(&[7; 101]).unwrap();
    let status = join(&mut child);
    assert_eq!(
        status.code(),
        Some(1),
        "the child accepted 101 bytes: {status:?}"
    );
}

// A frame cut short by the peer closing: Truncated with what the header
// announced and what arrived (Python: "got end of file during message").
#[test]
fn a_truncated_frame_is_truncated() {
    let (mut conn, raw) = RawEnd::pair();
    raw_write(&raw, Header::new(100).as_bytes());
    raw_write(&raw, &[9; 10]);
    drop(raw);
    assert_truncated(conn.recv_bytes(), 100, 10);
    assert_truncated(conn.recv_bytes(), 100, 10);
}

#[test]
fn a_truncated_frame_from_a_child_is_truncated_for_every_kind_of_receive() {
    for which in 0..3 {
        let (mut conn, raw) = RawEnd::pair();
        let mut child = Process::new()
            .allow_threads()
            .pass("raw", &raw)
            .unwrap()
            .fork(move || {
                raw_write(&raw, Header::new(100).as_bytes());
                raw_write(&raw, &[9; 10]);
            })
            .unwrap();
        join_ok(&mut child);
        match which {
            0 => assert_truncated(conn.recv_bytes_timeout(PATIENCE), 100, 10),
            1 => assert_truncated(conn.recv_timeout::<Vec<u8>>(PATIENCE), 100, 10),
            _ => assert_truncated(conn.recv_bytes_into(&mut [0u8; 200]), 100, 10),
        }
    }
}

// The same for a claim above the size allocated up front: the error still
// names the size the header announced.
#[test]
fn a_truncated_huge_frame_names_the_announced_size() {
    let (mut conn, raw) = RawEnd::pair();
    conn.set_max_message_size(u64::MAX);
    raw_write(&raw, &long_header(1 << 40));
    raw_write(&raw, &[1; 10]);
    drop(raw);
    assert_truncated(conn.recv_bytes(), 1 << 40, 10);

    let (mut conn, raw) = RawEnd::pair();
    raw_write(&raw, Header::new(100 << 20).as_bytes());
    raw_write(&raw, &[1; 10]);
    drop(raw);
    assert_truncated(conn.recv_bytes(), 100 << 20, 10);
}

// EOF inside a header is Truncated too; EOF between frames is Closed.
#[test]
fn eof_inside_a_header_is_truncated() {
    for (bytes, expected) in [
        (&[0u8, 0][..], 4),
        (&[0u8, 0, 0][..], 4),
        (&[0xffu8, 0xff, 0xff, 0xff][..], 12),
        (&[0xffu8, 0xff, 0xff, 0xff, 0, 0][..], 12),
    ] {
        let (mut conn, raw) = RawEnd::pair();
        raw_write(&raw, bytes);
        drop(raw);
        assert_truncated(conn.recv_bytes(), expected, bytes.len() as u64);
    }
    let (mut conn, raw) = RawEnd::pair();
    raw_write(&raw, &frame(b"whole"));
    drop(raw);
    assert_eq!(conn.recv_bytes().unwrap(), b"whole");
    assert!(matches!(conn.recv_bytes(), Err(Error::Closed)));
}

// A negative length other than -1 (Python would return b'' and lose its
// place) is InvalidHeader, every time: the stream cannot be resynchronised.
#[test]
fn an_invalid_header_is_reported_and_stays_reported() {
    for header in [[0xff, 0xff, 0xff, 0xfe], [0x80, 0, 0, 0]] {
        let (mut conn, raw) = RawEnd::pair();
        raw_write(&raw, &header);
        raw_write(&raw, &frame(b"after"));
        let is_invalid = |r: ipc_core::Result<Vec<u8>>| matches!(r, Err(Error::InvalidHeader { header: h }) if h == header);
        assert!(is_invalid(conn.recv_bytes()));
        assert!(is_invalid(conn.recv_bytes()));
        assert!(is_invalid(conn.recv::<Vec<u8>>()));
        assert!(is_invalid(conn.try_recv_bytes()));
        assert!(is_invalid(conn.recv_bytes_timeout(Duration::ZERO)));
        assert!(matches!(
            conn.recv_bytes_into(&mut [0u8; 64]),
            Err(Error::InvalidHeader { .. })
        ));
        // Ready for poll and wait, so a waiting loop finds out.
        assert!(conn.poll(Duration::ZERO).unwrap());
        assert_eq!(ipc_core::wait(&[&conn], Duration::ZERO).unwrap(), [0]);
    }
}

// Garbage where a typed message should be is a Decode error; the message
// is consumed and the next valid one arrives.
#[test]
fn garbage_typed_message_is_a_decode_error_and_the_next_arrives() {
    let (mut conn, raw) = RawEnd::pair();
    let mut valid = Vec::new();
    ipc_core::codec::encode_into(&(42u64, "ok".to_owned()), &mut valid).unwrap();
    raw_write(&raw, &frame(&[0xff; 11]));
    raw_write(&raw, &frame(&[1, 2, 3]));
    raw_write(&raw, &frame(b""));
    raw_write(&raw, &frame(&valid));
    for _ in 0..3 {
        let got = conn.recv_timeout::<(u64, String)>(PATIENCE);
        assert!(matches!(got, Err(Error::Decode(_))), "{got:?}");
    }
    assert_eq!(
        conn.recv_timeout::<(u64, String)>(PATIENCE).unwrap(),
        (42, "ok".to_owned())
    );
}

// A child that writes unframed junk and exits: every receive ends in an
// error value (never a panic or a hang), and then the stream is done.
#[test]
fn unframed_junk_from_a_child_gives_errors_not_panics() {
    for seed in 0..8u64 {
        let (mut conn, raw) = RawEnd::pair();
        let mut child = Process::new()
            .allow_threads()
            .pass("raw", &raw)
            .unwrap()
            .fork(move || raw_write(&raw, &pattern(seed, 64 * 1024)))
            .unwrap();
        join_ok(&mut child);
        let mut received = 0;
        let err = loop {
            match conn.recv_bytes_timeout(PATIENCE) {
                Ok(msg) => received += msg.len(),
                Err(e) => break e,
            }
        };
        assert!(received <= 64 * 1024);
        assert!(
            matches!(
                err,
                Error::InvalidHeader { .. }
                    | Error::TooLarge { .. }
                    | Error::Truncated { .. }
                    | Error::Closed
            ),
            "seed {seed}: {err:?}"
        );
    }
}

/// Sets this (forked, single-threaded) process's address-space limit to
/// what it uses now plus `headroom` bytes, so an allocation the size of a
/// peer's claim fails (and aborts) instead of succeeding.
fn limit_address_space(headroom: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    let (_, hard) = getrlimit(Resource::RLIMIT_AS).unwrap();
    setrlimit(Resource::RLIMIT_AS, vm_kib * 1024 + headroom, hard).unwrap();
}

// A peer that lies about a length costs only what it actually sends: in a
// child that cannot map 200 MiB more, a claim of 200 MiB (under the
// 256 MiB default limit) followed by 10 bytes and EOF is Truncated, for
// byte and typed receives alike, instead of an abort.
#[test]
fn a_lying_length_does_not_allocate_the_claimed_size() {
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> i32 {
            limit_address_space(128 << 20);
            let claim = 200u64 << 20;
            for typed in [false, true] {
                let (mut conn, raw) = RawEnd::pair();
                raw_write(&raw, Header::new(claim).as_bytes());
                raw_write(&raw, &[3; 10]);
                drop(raw);
                let result = if typed {
                    conn.recv::<Vec<u8>>().map(drop)
                } else {
                    conn.recv_bytes().map(drop)
                };
                match result {
                    Err(Error::Truncated {
                        expected,
                        received: 10,
                    }) if expected == claim => {}
                    other => {
                        eprintln!("typed {typed}: {other:?}");
                        return 2;
                    }
                }
            }
            0
        })
        .unwrap();
    let status = join(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "the receiver allocated what the peer claimed (or failed otherwise): {status:?}"
    );
}

/// A forked peer writes `wire[..cut]`, stalls until told to go on, then
/// writes the rest and exits. The receive, given short timeouts while the
/// peer stalls, times out (never later than it should) and then returns
/// the whole message once the rest arrives.
fn stall_then_finish<T: PartialEq + std::fmt::Debug>(
    wire: Vec<u8>,
    cut: usize,
    expected: T,
    mut receive: impl FnMut(&mut Connection, Duration) -> ipc_core::Result<T>,
) {
    let (mut conn, raw) = RawEnd::pair();
    let (mut ctl, mut ctl_child) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("raw", &raw)
        .unwrap()
        .pass("ctl", &ctl_child)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            raw_write(&raw, &wire[..cut]);
            ctl_child.recv_bytes()?;
            raw_write(&raw, &wire[cut..]);
            Ok(())
        })
        .unwrap();
    let timeout = Duration::from_millis(100);
    for _ in 0..3 {
        let start = Instant::now();
        match receive(&mut conn, timeout) {
            Err(Error::Timeout) => {}
            other => panic!("a stalled frame: {other:?}"),
        }
        let waited = start.elapsed();
        assert!(waited >= timeout, "timed out early: {waited:?}");
        assert!(waited < timeout + PATIENCE, "timed out late: {waited:?}");
    }
    assert!(matches!(conn.try_recv_bytes(), Err(Error::Empty)));
    ctl.send_bytes(b"go on").unwrap();
    let got = receive(&mut conn, PATIENCE).expect("the whole message after the stall");
    assert!(got == expected, "the message changed across the stall");
    join_ok(&mut child);
    assert!(matches!(
        conn.recv_bytes_timeout(PATIENCE),
        Err(Error::Closed)
    ));
}

fn bytes_timeout(conn: &mut Connection, t: Duration) -> ipc_core::Result<Vec<u8>> {
    conn.recv_bytes_timeout(t)
}

#[test]
fn a_peer_stalling_inside_the_header_loses_nothing() {
    let msg = pattern(1, 100);
    stall_then_finish(frame(&msg), 2, msg.clone(), bytes_timeout);
    let long = [long_header(100), msg.clone()].concat();
    stall_then_finish(long, 7, msg, bytes_timeout);
}

#[test]
fn a_peer_stalling_inside_a_small_payload_loses_nothing() {
    let msg = pattern(2, 100);
    stall_then_finish(frame(&msg), 4 + 30, msg, bytes_timeout);
}

#[test]
fn a_peer_stalling_inside_a_large_payload_loses_nothing() {
    let msg = pattern(3, 4 << 20);
    stall_then_finish(frame(&msg), 1_500_000, msg, bytes_timeout);
}

#[test]
fn a_peer_stalling_inside_a_payload_over_sixty_four_mib_loses_nothing() {
    let msg = pattern(4, (64 << 20) + 4321);
    stall_then_finish(frame(&msg), 20 << 20, msg, bytes_timeout);
}

#[test]
fn a_typed_receive_across_a_stall_loses_nothing() {
    let value: Vec<u32> = (0..300_000).collect();
    let mut payload = Vec::new();
    ipc_core::codec::encode_into(&value, &mut payload).unwrap();
    let cut = payload.len() / 3;
    stall_then_finish(frame(&payload), cut, value, |conn, t| conn.recv_timeout(t));
}

#[test]
fn recv_bytes_into_across_a_stall_loses_nothing() {
    let msg = pattern(5, 200_000);
    let mut buf = vec![0u8; 300_000];
    stall_then_finish(frame(&msg), 50_000, msg, move |conn, t| {
        let n = conn.recv_bytes_into_timeout(&mut buf, t)?;
        Ok(buf[..n].to_vec())
    });
}
