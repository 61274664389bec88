//! Stalled clients cannot starve a listener: with 200 clients that connect
//! and send nothing, send half a handshake, or drip one byte every 250 ms
//! (in another process), a well-behaved client connects and authenticates
//! within 100 ms through `Listener::accept`, `Listener::incoming` and a
//! `Server` with `max_connections` = 64. The stalled connections are
//! dropped at the handshake deadline, and descriptors and threads come back
//! to their idle counts.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_core::{Deadline, Interest};
use ipc_socket::{Client, Listener, Options, Server};
use ipc_tests::{open_fds, PATIENCE};

const STALLED: usize = 200;
const KEY: &[u8] = b"stalled clients test key";
const HANDSHAKE: Duration = Duration::from_millis(1500);
const WELL_BEHAVED_WITHIN: Duration = Duration::from_millis(100);
const DRIP: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug)]
enum Stall {
    Silent,
    HalfHandshake,
    Drip,
}

fn options() -> Options {
    Options::new().authkey(KEY).handshake_timeout(HANDSHAKE)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits (boundedly) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

/// Starts a process whose `STALLED` clients stall as told. It reports on
/// its pipe once they are all connected, then once the listener has
/// dropped every one of them, with the milliseconds that took.
fn stalled_clients(name: &str, stall: Stall) -> (ipc_core::process::Child, ipc_core::Connection) {
    let (mut report, child_end) = ipc_pipe::duplex().unwrap();
    let name = name.to_owned();
    let child = Process::new()
        .allow_threads()
        .pass("report", &child_end)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            let mut report = child_end;
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            let mut clients: Vec<Option<UnixStream>> = (0..STALLED)
                .map(|_| UnixStream::connect_addr(&addr).map(Some))
                .collect::<std::io::Result<_>>()?;
            if let Stall::HalfHandshake = stall {
                for client in clients.iter_mut().flatten() {
                    // Half of a 20-byte answer.
                    client.write_all(&[0, 0, 0, 20, 1, 2, 3, 4, 5])?;
                }
            }
            report.send(&"connected")?;
            let start = Instant::now();
            let mut buf = [0u8; 512];
            let mut next_drip = Instant::now() + DRIP;
            while clients.iter().any(Option::is_some) && start.elapsed() < PATIENCE {
                let open: Vec<usize> = (0..STALLED).filter(|&i| clients[i].is_some()).collect();
                let fds: Vec<_> = open
                    .iter()
                    .filter_map(|&i| clients[i].as_ref())
                    .map(|client| (client.as_fd(), Interest::Read))
                    .collect();
                // Wakes at least every 50 ms, for the drip.
                let ready = ipc_core::wait_fds(&fds, Deadline::after(Duration::from_millis(50)))?;
                drop(fds);
                for (&i, _) in open.iter().zip(ready).filter(|&(_, ready)| ready) {
                    let Some(client) = &mut clients[i] else {
                        continue;
                    };
                    // The challenge, or the end of the connection.
                    if matches!(client.read(&mut buf), Ok(0) | Err(_)) {
                        clients[i] = None;
                    }
                }
                if let Stall::Drip = stall {
                    if Instant::now() >= next_drip {
                        next_drip += DRIP;
                        for slot in clients.iter_mut() {
                            if let Some(client) = slot {
                                if client.write_all(&[0]).is_err() {
                                    *slot = None;
                                }
                            }
                        }
                    }
                }
            }
            let open = clients.iter().flatten().count() as u64;
            report.send(&(open, start.elapsed().as_millis() as u64))
        })
        .unwrap();
    assert_eq!(
        report.recv_timeout::<String>(PATIENCE).unwrap(),
        "connected"
    );
    (child, report)
}

/// Checks that the stalled clients were all dropped, at the handshake
/// deadline, and reaps their process.
fn all_dropped_at_the_deadline(
    mut child: ipc_core::process::Child,
    mut report: ipc_core::Connection,
) {
    let (open, millis): (u64, u64) = report.recv_timeout(PATIENCE * 2).unwrap();
    assert_eq!(open, 0, "stalled connections still open");
    // Dropped at the deadline, not before it (they were connected before
    // the report), and not long after.
    let took = Duration::from_millis(millis);
    assert!(
        took < HANDSHAKE + Duration::from_secs(3),
        "dropped after {took:?}"
    );
    assert!(child.join().unwrap().success());
}

/// A well-behaved client's connect and handshake, timed.
fn well_behaved(name: &str) -> Duration {
    let start = Instant::now();
    let mut conn = Client::connect(format!("@{name}").as_str(), options()).unwrap();
    let took = start.elapsed();
    conn.send(&"hello").unwrap();
    assert_eq!(conn.recv_timeout::<String>(PATIENCE).unwrap(), "hello back");
    took
}

fn echo_once(mut conn: ipc_socket::SocketConnection) {
    if let Ok(text) = conn.recv_timeout::<String>(PATIENCE) {
        let _ = conn.send(&format!("{text} back"));
    }
}

/// Runs every kind of stall against a listener bound and served by
/// `serve`, which returns how to stop serving.
fn check(tag: &str, serve: fn(&str) -> Box<dyn FnOnce()>) {
    for stall in [Stall::Silent, Stall::HalfHandshake, Stall::Drip] {
        let name = format!("ipct-stalled-{tag}-{stall:?}-{}", std::process::id());
        let fds_before = open_fds().len();
        let threads_before = threads();
        let finish = serve(&format!("@{name}"));
        let (child, report) = stalled_clients(&name, stall);
        let took = well_behaved(&name);
        assert!(
            took <= WELL_BEHAVED_WITHIN,
            "{stall:?}: the well-behaved client took {took:?} to connect and authenticate"
        );
        all_dropped_at_the_deadline(child, report);
        finish();
        eventually("descriptors back to their idle count", || {
            open_fds().len() <= fds_before
        });
        eventually("threads back to their idle count", || {
            threads() <= threads_before
        });
    }
}

/// Serves with `accept` (or `incoming`) on a thread, each connection
/// answered once, until told to stop.
fn serve_with(address: &str, incoming: bool) -> Box<dyn FnOnce()> {
    let listener = Listener::bind(address, options()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        if incoming {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    echo_once(conn);
                }
            }
        } else {
            while !stopping.load(Ordering::Relaxed) {
                if let Ok(conn) = listener.accept_timeout(Duration::from_millis(20)) {
                    echo_once(conn);
                }
            }
        }
    });
    let address = address.to_owned();
    Box::new(move || {
        stop.store(true, Ordering::Relaxed);
        if incoming {
            // `incoming` waits for ever: one more client lets it see the
            // flag.
            let _ = Client::connect(address.as_str(), options());
        }
        thread.join().unwrap();
    })
}

#[test]
fn stalled_clients_cannot_starve_accept() {
    check("accept", |address| serve_with(address, false));
}

#[test]
fn stalled_clients_cannot_starve_incoming() {
    check("incoming", |address| serve_with(address, true));
}

#[test]
fn stalled_clients_cannot_starve_a_server_with_a_connection_limit() {
    check("server", |address| {
        let listener = Listener::bind(address, options().max_connections(Some(64))).unwrap();
        let server = Server::start(listener, echo_once).unwrap();
        Box::new(move || server.shutdown())
    });
}
