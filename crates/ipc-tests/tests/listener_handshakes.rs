//! The listener's handshakes in progress, at their edges: a full
//! `max_handshakes` bound costs no CPU, a connection set aside for want of
//! a place reaches the next caller, a handshake timeout too long to
//! represent is "never", and TLS sessions neither hide decrypted bytes
//! from `wait` nor leak the rest of a message whose send timed out.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_core::Error;
use ipc_socket::{Client, Listener, Options};
use ipc_tests::{self_signed_tls, PATIENCE};

fn unique(tag: &str) -> String {
    format!("ipct-handshakes-{tag}-{}", std::process::id())
}

fn raw_connect(name: &str) -> UnixStream {
    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap()
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    t(usage.user_time()) + t(usage.system_time())
}

#[test]
fn clients_waiting_beyond_max_handshakes_cost_no_cpu() {
    let name = unique("bound");
    let options = Options::new().authkey(b"k").max_handshakes(1);
    let listener = Listener::bind(format!("@{name}").as_str(), options).unwrap();
    // One silent client takes the only handshake place; the other waits in
    // the backlog, which stays readable all along.
    let _silent = raw_connect(&name);
    let _waiting = raw_connect(&name);
    let wait = Duration::from_millis(500);
    let cpu = thread_cpu();
    let start = Instant::now();
    assert!(matches!(listener.accept_timeout(wait), Err(Error::Timeout)));
    assert!(start.elapsed() >= wait);
    let used = thread_cpu() - cpu;
    assert!(
        used < wait / 4,
        "accept used {used:?} of CPU waiting {wait:?}"
    );
}

#[test]
fn a_connection_set_aside_for_want_of_a_place_reaches_the_next_caller() {
    let name = unique("aside");
    let address = format!("@{name}");
    let options = Options::new().authkey(b"k").max_connections(Some(1));
    let listener = Listener::bind(address.as_str(), options.clone()).unwrap();
    std::thread::scope(|scope| {
        let client0 = scope.spawn(|| Client::connect(address.as_str(), options.clone()));
        let held = listener.accept_timeout(PATIENCE).unwrap();
        let _client0 = client0.join().unwrap().unwrap();
        let client1 = scope.spawn(|| Client::connect(address.as_str(), options.clone()));
        // This caller gets client 1 through its handshake, finds no place
        // and gives up, setting it aside.
        let short = scope.spawn(|| listener.accept_timeout(Duration::from_millis(300)));
        let (tx, rx) = mpsc::channel();
        let listener = &listener;
        scope.spawn(move || {
            let _ = tx.send(listener.accept());
        });
        assert!(matches!(short.join().unwrap(), Err(Error::Timeout)));
        let _client1 = client1.join().unwrap().unwrap();
        drop(held);
        let got = rx
            .recv_timeout(PATIENCE)
            .expect("the set-aside connection never reached the caller in accept");
        assert!(got.is_ok(), "{got:?}");
    });
}

#[test]
fn a_handshake_timeout_too_long_to_represent_waits_for_ever() {
    let name = unique("forever");
    let address = format!("@{name}");
    let options = Options::new()
        .authkey(b"k")
        .handshake_timeout(Duration::MAX);
    let listener = Listener::bind(address.as_str(), options.clone()).unwrap();
    let _silent = raw_connect(&name);
    std::thread::scope(|scope| {
        // The client's own handshake waits for the listener's challenge.
        let client = scope.spawn(|| Client::connect(address.as_str(), options.clone()));
        listener.accept_timeout(PATIENCE).unwrap();
        client.join().unwrap().unwrap();
    });
}

#[test]
fn bytes_decrypted_during_the_tls_handshake_are_seen_by_wait() {
    let (server_tls, client_tls) = self_signed_tls();
    let listener = Listener::bind("127.0.0.1:0", Options::new().tls_server(server_tls)).unwrap();
    let address = listener.address().clone();
    for round in 0..30 {
        let client = std::thread::spawn({
            let (address, client_tls) = (address.clone(), client_tls.clone());
            move || -> ipc_core::Result<ipc_socket::SocketConnection> {
                let mut client = Client::connect(&address, Options::new().tls_client(client_tls))?;
                client.send_bytes(b"hello")?;
                Ok(client)
            }
        });
        let conn = listener.accept_timeout(PATIENCE).unwrap();
        let _client = client.join().unwrap().unwrap();
        let ready = ipc_core::wait(&[&conn], PATIENCE).unwrap();
        assert_eq!(
            ready,
            [0],
            "round {round}: a message that arrived is not seen"
        );
        let mut conn = conn;
        assert_eq!(conn.recv_bytes_timeout(PATIENCE).unwrap(), b"hello");
    }
}

#[test]
fn a_tls_send_that_timed_out_part_way_sends_nothing_more() {
    let (server_tls, client_tls) = self_signed_tls();
    let listener = Listener::bind("127.0.0.1:0", Options::new().tls_server(server_tls)).unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || {
        Client::connect(
            &address,
            Options::new()
                .tls_client(client_tls)
                .write_timeout(Some(Duration::from_millis(200))),
        )
    });
    let mut server = listener.accept_timeout(PATIENCE).unwrap();
    let mut client = client.join().unwrap().unwrap();
    // The server does not read: the send fills every buffer and times out.
    let big = vec![7u8; 64 << 20];
    assert!(matches!(client.send_bytes(&big), Err(Error::Timeout)));
    // A receive on the same end must not push the rest out, and no later
    // send may go out behind the broken message.
    assert!(matches!(
        client.recv_bytes_timeout(Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        client.send_bytes(b"tail"),
        Err(Error::Unsupported(_))
    ));
    drop(client);
    // The server sees the start of the big message, then the end of the
    // stream: never "tail" read as part of it.
    server.set_max_message_size(128 << 20);
    match server.recv_bytes_timeout(PATIENCE) {
        Err(Error::Truncated { .. }) | Err(Error::Closed) => {}
        other => panic!("{:?}", other.map(|m| m.len())),
    }
}
