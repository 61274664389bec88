//! Listener and Client between real processes: the Listener/Client rows of
//! Python's test suite, limits and timeouts, a hostile or stalled peer
//! affecting only its own connection, and a stress run of many
//! authenticated clients at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_core::Error;
use ipc_socket::{Address, Client, Listener, Options, Server};
use ipc_testkit::{temp_path, unique};

const KEY: &[u8] = b"listener test key";
const LONG: Duration = Duration::from_secs(20);

/// One address of every family, each unique to this call.
fn every_family() -> Vec<Address> {
    vec![
        Address::Unix(temp_path("ipct_sock")),
        Address::Abstract(unique("ipct_abstract").into_bytes()),
        "127.0.0.1:0".parse().unwrap(),
        "[::1]:0".parse().unwrap(),
    ]
}

/// Binds, skipping IPv6 where the machine has no ::1.
fn bind(address: &Address, options: Options) -> Option<Listener> {
    match Listener::bind(address, options) {
        Err(Error::Io(e)) if matches!(address, Address::Tcp(h, _) if h == "::1") => {
            eprintln!("note: no IPv6 loopback here ({e}); skipped");
            None
        }
        other => Some(other.unwrap()),
    }
}

#[test]
fn every_family_carries_typed_messages_between_processes() {
    // _TestListener.test_context: scoped listener, client, accepted
    // connection exchange 1729.
    for address in every_family() {
        let Some(listener) = bind(&address, Options::new().authkey(KEY)) else {
            continue;
        };
        let bound = listener.address().clone();
        let mut child = Process::new()
            .allow_threads()
            .fork(move || -> ipc_core::Result<()> {
                let mut conn = Client::connect(&bound, Options::new().authkey(KEY))?;
                conn.send(&1729u32)?;
                let back: u32 = conn.recv()?;
                assert_eq!(back, 1730);
                Ok(())
            })
            .unwrap();
        let mut conn = listener.accept_timeout(LONG).unwrap();
        let n: u32 = conn.recv_timeout(LONG).unwrap();
        conn.send(&(n + 1)).unwrap();
        assert!(child.join().unwrap().success(), "{address}");
    }
}

#[test]
fn a_second_listener_on_a_bound_address_fails() {
    for address in every_family() {
        let Some(first) = bind(&address, Options::new()) else {
            continue;
        };
        assert!(
            Listener::bind(first.address(), Options::new()).is_err(),
            "{address}"
        );
    }
}

#[test]
fn unix_socket_file_is_removed_with_its_listener() {
    let path = temp_path("ipct_sock");
    let listener = Listener::bind(Address::Unix(path.clone()), Options::new()).unwrap();
    assert!(path.exists());
    drop(listener);
    assert!(!path.exists());
}

#[test]
fn a_client_that_wrote_and_exited_before_accept_is_still_heard() {
    // test_issue14725: the client sends 'hello' and exits before accept().
    for address in every_family() {
        let Some(listener) = bind(&address, Options::new()) else {
            continue;
        };
        let bound = listener.address().clone();
        let mut child = Process::new()
            .allow_threads()
            .fork(move || -> ipc_core::Result<()> {
                let mut conn = Client::connect(&bound, Options::new())?;
                conn.send_bytes(b"hello")
            })
            .unwrap();
        assert!(child.join().unwrap().success());
        let mut conn = listener.accept_timeout(LONG).unwrap();
        assert_eq!(
            conn.recv_bytes_timeout(LONG).unwrap(),
            b"hello",
            "{address}"
        );
        assert!(matches!(conn.recv_bytes_timeout(LONG), Err(Error::Closed)));
    }
}

#[test]
fn a_send_right_after_accept_makes_the_clients_poll_true() {
    // test_issue16955.
    let listener = Listener::bind("127.0.0.1:0", Options::new()).unwrap();
    let bound = listener.address().clone();
    let mut child = Process::new()
        .allow_threads()
        .fork(move || -> ipc_core::Result<()> {
            let conn = Client::connect(&bound, Options::new())?;
            assert!(
                conn.poll(Duration::from_secs(10))?,
                "poll(10 s) stayed false"
            );
            Ok(())
        })
        .unwrap();
    let mut conn = listener.accept_timeout(LONG).unwrap();
    conn.send_bytes(b"x").unwrap();
    assert!(child.join().unwrap().success());
}

#[test]
fn empty_authkey_is_refused_at_construction() {
    let empty = Options::new().authkey(b"");
    assert!(matches!(
        Listener::bind("127.0.0.1:0", empty.clone()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Client::connect("127.0.0.1:1", empty),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn wrong_authkey_fails_on_both_sides_and_the_listener_keeps_serving() {
    let listener = Listener::bind("127.0.0.1:0", Options::new().authkey(KEY)).unwrap();
    let bound = listener.address().clone();
    let mut child = Process::new()
        .allow_threads()
        .fork(move || -> i32 {
            let wrong = Client::connect(&bound, Options::new().authkey(b"wrong"));
            if !matches!(wrong, Err(Error::Authentication(_))) {
                return 2;
            }
            let Ok(mut right) = Client::connect(&bound, Options::new().authkey(KEY)) else {
                return 3;
            };
            if right.send_bytes(b"after").is_err() {
                return 4;
            }
            0
        })
        .unwrap();
    assert!(matches!(
        listener.accept_timeout(LONG),
        Err(Error::Authentication(_))
    ));
    let mut conn = listener.accept_timeout(LONG).unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"after");
    assert_eq!(child.join().unwrap().code(), Some(0));
}

#[test]
fn a_client_stalled_mid_handshake_is_cut_off_and_others_are_served() {
    let options = Options::new()
        .authkey(KEY)
        .handshake_timeout(Duration::from_millis(300));
    let listener = Listener::bind("127.0.0.1:0", options.clone()).unwrap();
    let ipc_socket::Address::Tcp(host, port) = listener.address().clone() else {
        unreachable!()
    };
    // A raw client that connects and never answers the challenge.
    let stalled = TcpStream::connect((host.as_str(), port)).unwrap();
    let started = Instant::now();
    let result = listener.accept_timeout(LONG);
    assert!(
        matches!(result, Err(Error::Authentication(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the handshake deadline was not enforced"
    );
    drop(stalled);
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || Client::connect(&bound, options)?.send_bytes(b"next"));
    let mut conn = listener.accept_timeout(LONG).unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"next");
    client.join().unwrap().unwrap();
}

#[test]
fn garbage_and_huge_headers_are_errors_for_that_connection_alone() {
    let listener = Listener::bind(
        Address::Unix(temp_path("ipct_sock")),
        Options::new().authkey(KEY),
    )
    .unwrap();
    let Address::Unix(path) = listener.address().clone() else {
        unreachable!()
    };
    // Garbage instead of a handshake answer.
    let mut raw = UnixStream::connect(&path).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(matches!(
        listener.accept_timeout(LONG),
        Err(Error::Authentication(_) | Error::InvalidHeader { .. })
    ));
    drop(raw);
    // A 4 GiB length header after a good handshake.
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || -> ipc_core::Result<()> {
        let conn = Client::connect(&bound, Options::new().authkey(KEY))?;
        let mut raw: UnixStream = UnixStream::from(ipc_socket_into_fd(conn));
        raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0])
            .map_err(Error::from)?;
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).map_err(Error::from)?;
        Ok(())
    });
    let mut conn = listener.accept_timeout(LONG).unwrap();
    let result = conn.recv_bytes_timeout(LONG);
    assert!(
        matches!(
            result,
            Err(Error::TooLarge {
                size: 4_294_967_296,
                ..
            })
        ),
        "{result:?}"
    );
    drop(conn);
    client.join().unwrap().unwrap();
    // The listener still serves.
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || {
        Client::connect(&bound, Options::new().authkey(KEY))?.send_bytes(b"ok")
    });
    assert_eq!(
        listener
            .accept_timeout(LONG)
            .unwrap()
            .recv_bytes_timeout(LONG)
            .unwrap(),
        b"ok"
    );
    client.join().unwrap().unwrap();
}

/// The socket under a connection, for writing raw bytes after a handshake.
fn ipc_socket_into_fd(conn: ipc_socket::SocketConnection) -> std::os::fd::OwnedFd {
    use std::os::fd::AsFd;
    conn.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn a_half_closed_connection_reads_closed_but_can_still_be_answered() {
    let listener = Listener::bind("127.0.0.1:0", Options::new()).unwrap();
    let bound = listener.address().clone();
    let client = std::thread::spawn(move || -> ipc_core::Result<Vec<u8>> {
        let mut conn = Client::connect(&bound, Options::new())?;
        conn.send_bytes(b"last words")?;
        use std::os::fd::AsFd;
        nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&conn.as_fd()),
            nix::sys::socket::Shutdown::Write,
        )?;
        conn.recv_bytes_timeout(LONG)
    });
    let mut conn = listener.accept_timeout(LONG).unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"last words");
    assert!(matches!(conn.recv_bytes_timeout(LONG), Err(Error::Closed)));
    conn.send_bytes(b"reply").unwrap();
    assert_eq!(client.join().unwrap().unwrap(), b"reply");
}

#[test]
fn tcp_connections_set_nodelay_on_both_ends() {
    use nix::sys::socket::{getsockopt, sockopt::TcpNoDelay};
    use std::os::fd::AsFd;
    let listener = Listener::bind("127.0.0.1:0", Options::new()).unwrap();
    let client = Client::connect(listener.address(), Options::new()).unwrap();
    let server = listener.accept_timeout(LONG).unwrap();
    assert!(getsockopt(&client.as_fd(), TcpNoDelay).unwrap());
    assert!(getsockopt(&server.as_fd(), TcpNoDelay).unwrap());
}

#[test]
fn read_timeout_gives_timeout_and_keeps_the_connection() {
    let options = Options::new().read_timeout(Some(Duration::from_millis(100)));
    let listener = Listener::bind(
        Address::Abstract(unique("ipct_rt").into_bytes()),
        options.clone(),
    )
    .unwrap();
    let mut client = Client::connect(listener.address(), options).unwrap();
    let mut server = listener.accept_timeout(LONG).unwrap();
    let started = Instant::now();
    assert!(matches!(server.recv_bytes(), Err(Error::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(100));
    client.send_bytes(b"late").unwrap();
    assert_eq!(server.recv_bytes().unwrap(), b"late");
}

#[test]
fn max_connections_makes_accept_wait_for_a_free_slot() {
    let options = Options::new().max_connections(Some(1));
    let listener = Listener::bind("127.0.0.1:0", options).unwrap();
    let _first_client = Client::connect(listener.address(), Options::new()).unwrap();
    let _second_client = Client::connect(listener.address(), Options::new()).unwrap();
    let first = listener.accept_timeout(LONG).unwrap();
    assert!(matches!(
        listener.accept_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    drop(first);
    assert!(listener.accept_timeout(LONG).is_ok());
}

#[test]
fn connect_retries_until_the_listener_appears() {
    let address = Address::Unix(temp_path("ipct_sock"));
    let Address::Unix(path) = &address else {
        unreachable!()
    };
    let path = path.clone();
    let (mut ready_reader, mut ready_writer) = ipc_pipe::one_way().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("ready", &ready_writer)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            // Tell the parent we are about to connect, before anyone listens.
            ready_writer.send_bytes(b"connecting")?;
            let mut conn = Client::connect(Address::Unix(path), Options::new())?;
            conn.send_bytes(b"made it")
        })
        .unwrap();
    assert_eq!(
        ready_reader.recv_bytes_timeout(LONG).unwrap(),
        b"connecting"
    );
    let listener = Listener::bind(&address, Options::new()).unwrap();
    let mut conn = listener.accept_timeout(LONG).unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"made it");
    assert!(child.join().unwrap().success());
}

#[test]
fn stress_500_authenticated_clients_100_round_trips_each() {
    const CLIENTS: usize = 500;
    const ROUND_TRIPS: u32 = 100;
    let listener = Listener::bind("127.0.0.1:0", Options::new().authkey(KEY)).unwrap();
    let bound = listener.address().clone();
    // The clients run in another process, each on a thread of its own.
    let mut clients = Process::new()
        .allow_threads()
        .fork(move || -> i32 {
            let threads: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let bound = bound.clone();
                    std::thread::spawn(move || -> ipc_core::Result<()> {
                        let mut conn = Client::connect(
                            &bound,
                            Options::new().authkey(KEY).connect_timeout(LONG),
                        )?;
                        for round in 0..ROUND_TRIPS {
                            conn.send(&(i as u32, round))?;
                            let back: (u32, u32) = conn.recv_timeout(LONG)?;
                            assert_eq!(back, (i as u32, round + 1));
                        }
                        Ok(())
                    })
                })
                .collect();
            let failed = threads
                .into_iter()
                .map(|t| t.join())
                .filter(|r| !matches!(r, Ok(Ok(()))))
                .count();
            if failed > 0 {
                eprintln!("{failed} clients failed");
            }
            failed.min(100) as i32
        })
        .unwrap();
    let server = Server::start(listener, |mut conn| {
        while let Ok((i, round)) = conn.recv::<(u32, u32)>() {
            if conn.send(&(i, round + 1)).is_err() {
                break;
            }
        }
    })
    .unwrap();
    let status = clients
        .join_timeout(Duration::from_secs(120))
        .unwrap()
        .expect("the clients did not finish in 120 s");
    assert_eq!(status.code(), Some(0), "some clients were refused or lost");
    server.shutdown();
}

#[test]
fn server_shutdown_ends_live_connections() {
    let listener = Listener::bind("127.0.0.1:0", Options::new()).unwrap();
    let mut client = Client::connect(listener.address(), Options::new()).unwrap();
    let server = Server::start(listener, |mut conn| while conn.recv_bytes().is_ok() {}).unwrap();
    client.send_bytes(b"keep the handler busy").unwrap();
    server.shutdown();
    assert!(matches!(
        client.recv_bytes_timeout(LONG),
        Err(Error::Closed)
    ));
}
