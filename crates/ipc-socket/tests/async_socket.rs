//! The async forms (feature `tokio`) between real processes: async ends
//! against blocking ends in another process over every family, a stalled
//! or hostile client affecting only its own connection, accepts dropped at
//! random points losing no connection, the connection limit, and the
//! async server serving many clients at once and shutting down.
#![cfg(feature = "tokio")]

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_core::Error;
use ipc_socket::tokio::{AsyncListener, AsyncServer};
use ipc_socket::{Address, Client, Listener, Options};
use ipc_testkit::{join, join_ok, runtime, temp_path, unique, Rng};

mod common;
use common::{blocking_client, blocking_listener, LONG};

const KEY: &[u8] = b"async socket test key";

fn every_family() -> Vec<Address> {
    vec![
        Address::Unix(temp_path("ipct_sock")),
        Address::Abstract(unique("ipct_abstract").into_bytes()),
        "127.0.0.1:0".parse().unwrap(),
    ]
}

#[test]
fn an_async_listener_serves_blocking_clients_of_every_family() {
    runtime().block_on(async {
        for address in every_family() {
            let listener = AsyncListener::bind(&address, Options::new().authkey(KEY)).unwrap();
            let mut child =
                blocking_client(listener.address(), Options::new().authkey(KEY), |conn| {
                    conn.send(&("question", 6u32))?;
                    let answer: u64 = conn.recv_timeout(LONG)?;
                    assert_eq!(answer, 42);
                    let big = conn.recv_bytes_timeout(LONG)?;
                    assert_eq!(big, ipc_testkit::pattern(7, 3 << 20));
                    Ok(())
                });
            let mut conn = listener.accept_timeout(LONG).await.unwrap();
            let (word, n): (String, u32) = conn.recv().await.unwrap();
            assert_eq!(word, "question");
            conn.send(&(u64::from(n) * 7)).await.unwrap();
            // Larger than a socket buffer: the send awaits room.
            conn.send_bytes(&ipc_testkit::pattern(7, 3 << 20))
                .await
                .unwrap();
            join_ok(&mut child);
        }
    });
    ipc_testkit::assert_no_leftovers();
}

#[test]
fn an_async_client_talks_to_a_blocking_listener_of_every_family() {
    runtime().block_on(async {
        for address in every_family() {
            let listener = Listener::bind(&address, Options::new().authkey(KEY)).unwrap();
            let bound = listener.address().clone();
            let mut child = blocking_listener(&listener, |conn| {
                let n: u32 = conn.recv_timeout(LONG)?;
                conn.send_bytes(&ipc_testkit::pattern(u64::from(n), 1 << 20))
            });
            let mut conn = Client::connect_async(&bound, Options::new().authkey(KEY))
                .await
                .unwrap();
            conn.send(&9u32).await.unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let n = conn.recv_bytes_into(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], ipc_testkit::pattern(9, 1 << 20));
            join_ok(&mut child);
        }
    });
}

#[test]
fn a_stalled_client_holds_up_nobody_and_is_cut_off_at_its_deadline() {
    runtime().block_on(async {
        let options = Options::new()
            .authkey(KEY)
            .handshake_timeout(Duration::from_millis(300));
        let listener = AsyncListener::bind("127.0.0.1:0", options.clone()).unwrap();
        let Address::Tcp(host, port) = listener.address().clone() else {
            unreachable!()
        };
        // Connects and never answers the challenge.
        let stalled = TcpStream::connect((host.as_str(), port)).unwrap();
        let started = Instant::now();
        let mut child =
            blocking_client(listener.address(), options, |conn| conn.send_bytes(b"next"));
        // The good client comes through while the stalled one waits.
        let mut conn = listener.accept_timeout(LONG).await.unwrap();
        assert_eq!(conn.recv_bytes().await.unwrap(), b"next");
        join_ok(&mut child);
        let result = listener.accept_timeout(LONG).await;
        assert!(
            matches!(result, Err(Error::Authentication(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the handshake deadline was not enforced"
        );
        drop(stalled);
    });
}

#[test]
fn wrong_keys_and_garbage_are_errors_for_that_connection_alone() {
    runtime().block_on(async {
        let listener = AsyncListener::bind(
            Address::Unix(temp_path("ipct_sock")),
            Options::new().authkey(KEY),
        )
        .unwrap();
        let Address::Unix(path) = listener.address().clone() else {
            unreachable!()
        };
        // Garbage instead of a handshake answer, and a 4 GiB header.
        for garbage in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0][..],
        ] {
            let mut raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
            raw.write_all(garbage).unwrap();
            let result = listener.accept_timeout(LONG).await;
            assert!(
                matches!(
                    result,
                    Err(Error::Authentication(_) | Error::InvalidHeader { .. })
                ),
                "{result:?}"
            );
        }
        // A client with the wrong key fails on both sides.
        let bound = listener.address().clone();
        let mut wrong = Process::new()
            .allow_threads()
            .fork(move || -> i32 {
                match Client::connect(&bound, Options::new().authkey(b"wrong")) {
                    Err(Error::Authentication(_)) => 0,
                    _ => 2,
                }
            })
            .unwrap();
        assert!(matches!(
            listener.accept_timeout(LONG).await,
            Err(Error::Authentication(_))
        ));
        join_ok(&mut wrong);
        // An async client with the wrong key gets the error too.
        let refused = tokio::join!(
            Client::connect_async(listener.address(), Options::new().authkey(b"wrong")),
            listener.accept_timeout(LONG)
        );
        assert!(matches!(refused.0, Err(Error::Authentication(_))));
        assert!(matches!(refused.1, Err(Error::Authentication(_))));
        // The listener still serves.
        let mut child = blocking_client(listener.address(), Options::new().authkey(KEY), |conn| {
            conn.send_bytes(b"ok")
        });
        let mut conn = listener.accept_timeout(LONG).await.unwrap();
        assert_eq!(conn.recv_bytes().await.unwrap(), b"ok");
        join_ok(&mut child);
    });
}

#[test]
fn accepts_dropped_at_random_points_lose_no_connection() {
    const CLIENTS: u32 = 40;
    let mut rng = Rng::from_env_or_clock();
    runtime().block_on(async {
        let listener = AsyncListener::bind(
            Address::Unix(temp_path("ipct_sock")),
            Options::new().authkey(KEY).max_connections(Some(8)),
        )
        .unwrap();
        let bound = listener.address().clone();
        let mut child = Process::new()
            .allow_threads()
            .fork(move || -> ipc_core::Result<()> {
                for i in 0..CLIENTS {
                    let mut conn = Client::connect(&bound, Options::new().authkey(KEY))?;
                    conn.send(&i)?;
                    // Each waits for its answer, so the limit of 8 is held
                    // by connections the parent has not dropped yet.
                    assert_eq!(conn.recv_timeout::<u32>(LONG)?, i);
                }
                Ok(())
            })
            .unwrap();
        let mut seen = BTreeSet::new();
        while seen.len() < CLIENTS as usize {
            let accepted = match rng.below(3) {
                // Polled once and dropped: done or not, nothing is lost.
                0 => ipc_testkit::poll_once(listener.accept()),
                // Dropped after a random short while.
                1 => {
                    let wait = Duration::from_micros(rng.below(500));
                    tokio::time::timeout(wait, listener.accept()).await.ok()
                }
                _ => Some(listener.accept_timeout(LONG).await),
            };
            if let Some(accepted) = accepted {
                let mut conn = accepted.unwrap();
                let i: u32 = conn.recv().await.unwrap();
                assert!(seen.insert(i), "client {i} accepted twice");
                conn.send(&i).await.unwrap();
            }
        }
        assert_eq!(seen, (0..CLIENTS).collect());
        join_ok(&mut child);
    });
}

#[test]
fn max_connections_makes_accept_wait_for_a_free_place() {
    runtime().block_on(async {
        let listener =
            AsyncListener::bind("127.0.0.1:0", Options::new().max_connections(Some(1))).unwrap();
        let (first_client, second_client) = tokio::join!(
            Client::connect_async(listener.address(), Options::new()),
            Client::connect_async(listener.address(), Options::new()),
        );
        let first = listener.accept_timeout(LONG).await.unwrap();
        assert!(matches!(
            listener.accept_timeout(Duration::from_millis(100)).await,
            Err(Error::Timeout)
        ));
        drop(first);
        assert!(listener.accept_timeout(LONG).await.is_ok());
        drop((first_client, second_client));
    });
}

#[test]
fn an_async_server_serves_many_clients_at_once_and_shutdown_ends_them() {
    const CLIENTS: usize = 8;
    const IDLE: u64 = u64::MAX;
    runtime().block_on(async {
        let listener = AsyncListener::bind(
            Address::Abstract(unique("ipct_abstract").into_bytes()),
            Options::new().authkey(KEY),
        )
        .unwrap();
        let bound = listener.address().clone();
        let (idle_tx, mut idle) = tokio::sync::mpsc::unbounded_channel();
        let server = AsyncServer::start(listener, move |mut conn| {
            let idle_tx = idle_tx.clone();
            async move {
                while let Ok(n) = conn.recv::<u64>().await {
                    if n == IDLE {
                        let _ = idle_tx.send(());
                    } else if conn.send(&(n * n)).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut child = Process::new()
            .allow_threads()
            .fork(move || -> ipc_core::Result<()> {
                let clients: Vec<_> = (0..CLIENTS as u64)
                    .map(|c| {
                        let bound = bound.clone();
                        std::thread::spawn(move || -> ipc_core::Result<()> {
                            let mut conn = Client::connect(&bound, Options::new().authkey(KEY))?;
                            for i in 0..100 {
                                let n = c * 1000 + i;
                                conn.send(&n)?;
                                assert_eq!(conn.recv_timeout::<u64>(LONG)?, n * n);
                            }
                            // Say so and wait: shutdown must end this.
                            conn.send(&IDLE)?;
                            match conn.recv_timeout::<u64>(LONG) {
                                Err(Error::Closed) => Ok(()),
                                other => panic!("expected Closed, got {other:?}"),
                            }
                        })
                    })
                    .collect();
                for client in clients {
                    client.join().unwrap()?;
                }
                Ok(())
            })
            .unwrap();
        for _ in 0..CLIENTS {
            tokio::time::timeout(LONG, idle.recv())
                .await
                .expect("every client reaches its idle point")
                .unwrap();
        }
        tokio::time::timeout(LONG, server.shutdown())
            .await
            .expect("shutdown ends the handlers");
        assert!(join(&mut child).success());
    });
}
