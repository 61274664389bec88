//! Every timeout is a deadline for the whole operation and holds while the
//! calling thread receives thousands of signals a second from a handler
//! installed without `SA_RESTART`: receives, sends, connects, accepts and
//! both handshakes (plain and TLS). A call without a timeout never returns
//! `EINTR`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener as RawTcpListener;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ipc_core::{Connection, Error, FdStream};
use ipc_socket::{Client, Listener, Options};
use ipc_tests::{self_signed_tls, SignalStorm, PATIENCE};

/// The timeout every call here is given.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How late a timed-out call may return on a loaded machine. A call whose
/// timeout restarts at each signal returns only when the storm ends (8 s).
const SLACK: Duration = Duration::from_millis(1500);

/// Runs `call` under a signal storm and checks that it ended at its
/// timeout (not before, and not much after) with the error `expect`ed.
#[track_caller]
fn times_out<T: std::fmt::Debug>(
    timeout: Duration,
    call: impl FnOnce() -> ipc_core::Result<T>,
    expect: impl FnOnce(&Error) -> bool,
) {
    let storm = SignalStorm::at_this_thread();
    let start = Instant::now();
    let result = call();
    let took = start.elapsed();
    let sent = storm.stop();
    match &result {
        Err(e) if expect(e) => {}
        other => panic!("expected a timeout, got {other:?} after {took:?}"),
    }
    assert!(took >= timeout, "gave up early, after {took:?}");
    assert!(
        took < timeout + SLACK,
        "took {took:?} for a {timeout:?} timeout ({sent} signals)"
    );
}

fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Timeout)
}

fn is_handshake_timeout(e: &Error) -> bool {
    matches!(e, Error::Authentication(m) if m.contains("in time"))
}

fn socketpair() -> (Connection, Connection) {
    let (a, b) = UnixStream::pair().unwrap();
    let end = |s: UnixStream| Connection::new(FdStream::new(OwnedFd::from(s)).unwrap());
    (end(a), end(b))
}

fn unique(tag: &str) -> String {
    format!("ipct-storm-{tag}-{}", std::process::id())
}

#[test]
fn receive_timeouts_hold_on_pipes_and_socketpairs() {
    let (_writer_keeps_it_open, mut reader) = {
        let (r, w) = ipc_pipe::one_way().unwrap();
        (w, r)
    };
    times_out(TIMEOUT, || reader.recv_bytes_timeout(TIMEOUT), is_timeout);
    let (_peer, mut conn) = socketpair();
    times_out(TIMEOUT, || conn.recv_timeout::<u64>(TIMEOUT), is_timeout);
    conn.set_read_timeout(Some(TIMEOUT));
    times_out(TIMEOUT, || conn.recv_bytes(), is_timeout);
}

#[test]
fn a_message_that_trickles_in_is_bounded_as_a_whole() {
    let (mut raw, ours) = UnixStream::pair().unwrap();
    let mut conn = Connection::new(FdStream::new(OwnedFd::from(ours)).unwrap());
    // Header and part of the payload: the receive waits for the rest, and
    // the bytes it has must not restart its clock.
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[1; 50]);
    raw.write_all(&partial).unwrap();
    times_out(TIMEOUT, || conn.recv_bytes_timeout(TIMEOUT), is_timeout);
    raw.write_all(&[2; 50]).unwrap();
    let message = conn.recv_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(message[..50], [1; 50]);
    assert_eq!(message[50..], [2; 50]);
}

#[test]
fn a_receive_without_a_timeout_never_fails_with_eintr() {
    let (mut peer, mut conn) = socketpair();
    let storm = SignalStorm::at_this_thread();
    let sender = std::thread::spawn(move || {
        // Send once the receiver has been interrupted many times.
        let signals = SignalStorm::delivered();
        let deadline = Instant::now() + PATIENCE;
        while SignalStorm::delivered() < signals + 500 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        peer.send(&42u64).unwrap();
        peer
    });
    let got = conn.recv::<u64>();
    storm.stop();
    assert_eq!(got.unwrap(), 42);
    drop(sender.join().unwrap());
}

#[test]
fn socket_read_and_write_timeouts_bound_the_whole_message() {
    let name = format!("@{}", unique("rw"));
    let options = Options::new()
        .read_timeout(Some(TIMEOUT))
        .write_timeout(Some(TIMEOUT));
    let listener = Listener::bind(name.as_str(), options.clone()).unwrap();
    let mut client = Client::connect(name.as_str(), options).unwrap();
    let _server_side = listener.accept_timeout(PATIENCE).unwrap();
    times_out(TIMEOUT, || client.recv_bytes(), is_timeout);
    // A peer that does not read: the send fills the socket buffers and
    // must give up at the deadline of the whole message, not per write.
    let big = vec![7u8; 64 << 20];
    times_out(TIMEOUT, || client.send_bytes(&big), is_timeout);
    // Part of that message went out: this end refuses to send again
    // rather than corrupt the stream.
    assert!(matches!(
        client.send_bytes(b"x"),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn a_write_timeout_bounds_the_whole_message_without_signals_too() {
    let (_peer, mut conn) = socketpair();
    let big = vec![7u8; 64 << 20];
    let start = Instant::now();
    let result = conn.send_bytes_timeout(&big, TIMEOUT);
    let took = start.elapsed();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(took >= TIMEOUT && took < TIMEOUT + SLACK, "{took:?}");
}

#[test]
fn connect_timeout_holds_against_a_full_backlog_on_unix_paths_and_abstract_names() {
    for address in [
        std::env::temp_dir()
            .join(unique("full.sock"))
            .display()
            .to_string(),
        format!("@{}", unique("full")),
    ] {
        // Backlog 0 queues at most one connection; the listener never
        // accepts.
        let listener = Listener::bind(address.as_str(), Options::new().backlog(0)).unwrap();
        let mut queued = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            // Fill the queue with connections that never get accepted;
            // a short connect timeout tells when it is full.
            match Client::connect(
                address.as_str(),
                Options::new().connect_timeout(Duration::from_millis(50)),
            ) {
                Ok(conn) => queued.push(conn),
                Err(Error::Timeout) => break,
                Err(e) => panic!("{e:?}"),
            }
            assert!(Instant::now() < deadline, "the backlog never filled");
        }
        let options = Options::new().connect_timeout(TIMEOUT);
        times_out(
            TIMEOUT,
            || Client::connect(address.as_str(), options),
            is_timeout,
        );
        drop(queued);
        drop(listener);
    }
}

#[test]
fn connect_timeout_holds_for_tcp_while_nobody_listens() {
    // A port that was free a moment ago: every attempt is refused, and the
    // client retries until its connect deadline.
    let port = RawTcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = Options::new().connect_timeout(TIMEOUT);
    times_out(
        TIMEOUT,
        || Client::connect(format!("127.0.0.1:{port}").as_str(), options),
        |e| matches!(e, Error::Io(io) if io.kind() == ErrorKind::ConnectionRefused),
    );
}

#[test]
fn accept_timeout_holds() {
    let listener =
        Listener::bind(format!("@{}", unique("accept")).as_str(), Options::new()).unwrap();
    times_out(TIMEOUT, || listener.accept_timeout(TIMEOUT), is_timeout);
}

#[test]
fn the_listener_handshake_deadline_holds_against_a_silent_client() {
    for tls in [false, true] {
        let name = format!("@{}", unique(if tls { "hs-tls" } else { "hs" }));
        let mut options = Options::new().authkey(b"k").handshake_timeout(TIMEOUT);
        if tls {
            options = options.tls_server(self_signed_tls().0);
        }
        let listener = Listener::bind(name.as_str(), options).unwrap();
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
        let _silent = UnixStream::connect_addr(&addr).unwrap();
        times_out(TIMEOUT, || listener.accept(), is_handshake_timeout);
    }
}

#[test]
fn the_client_handshake_deadline_holds_against_a_silent_listener() {
    for tls in [false, true] {
        let raw = RawTcpListener::bind("127.0.0.1:0").unwrap();
        let address = raw.local_addr().unwrap().to_string();
        let mut options = Options::new().authkey(b"k").handshake_timeout(TIMEOUT);
        if tls {
            options = options.tls_client(self_signed_tls().1);
        }
        // The kernel completes the connection; nobody ever answers.
        times_out(
            TIMEOUT,
            || Client::connect(address.as_str(), options),
            is_handshake_timeout,
        );
        let (mut accepted, _) = raw.accept().unwrap();
        let mut rest = Vec::new();
        // The client gave up and closed; what it sent is all there is.
        accepted.set_read_timeout(Some(PATIENCE)).unwrap();
        match accepted.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{e}"),
        }
    }
}
