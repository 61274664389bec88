//! The conformance suite against ipc-socket connections: a Unix path, an
//! abstract name, TCP, TCP with the authkey handshake, and TLS, each in
//! both directions and across processes.

use ipc_socket::{Address, Client, Listener, Options, SocketConnection};
use ipc_testkit::{temp_path, unique};

/// A connected (client end, accepted end) pair; the accept runs on a
/// thread because an authenticating client needs the server to answer.
fn pair(
    address: Address,
    server: Options,
    client: Options,
) -> (SocketConnection, SocketConnection) {
    let listener = Listener::bind(address, server).expect("bind");
    let bound = listener.address().clone();
    std::thread::scope(|scope| {
        let accepted = scope.spawn(|| listener.accept().expect("accept"));
        let client = Client::connect(&bound, client).expect("connect");
        (client, accepted.join().expect("accept thread"))
    })
}

fn unix() -> (SocketConnection, SocketConnection) {
    let path = temp_path("ipct_conf");
    pair(Address::Unix(path), Options::new(), Options::new())
}

fn abstract_name() -> (SocketConnection, SocketConnection) {
    pair(
        Address::Abstract(unique("ipct_conf").into_bytes()),
        Options::new(),
        Options::new(),
    )
}

fn tcp() -> (SocketConnection, SocketConnection) {
    pair(
        "127.0.0.1:0".parse().unwrap(),
        Options::new(),
        Options::new(),
    )
}

fn tcp_reversed() -> (SocketConnection, SocketConnection) {
    let (client, server) = tcp();
    (server, client)
}

fn tcp_authenticated() -> (SocketConnection, SocketConnection) {
    let options = Options::new().authkey(b"conformance");
    pair("127.0.0.1:0".parse().unwrap(), options.clone(), options)
}

fn tls() -> (SocketConnection, SocketConnection) {
    let (server_tls, client_tls) = ipc_tests::self_signed_tls();
    pair(
        "127.0.0.1:0".parse().unwrap(),
        Options::new().authkey(b"k").tls_server(server_tls),
        Options::new().authkey(b"k").tls_client(client_tls),
    )
}

#[test]
fn unix_socket_conforms() {
    ipc_conformance::run_all(unix);
}

#[test]
fn abstract_socket_conforms() {
    ipc_conformance::run_all(abstract_name);
}

#[test]
fn tcp_conforms_both_ways() {
    ipc_conformance::run_all(tcp);
    ipc_conformance::run_all(tcp_reversed);
}

#[test]
fn authenticated_tcp_conforms() {
    ipc_conformance::run_all(tcp_authenticated);
}

#[test]
fn tls_conforms() {
    ipc_conformance::run_all(tls);
}

#[test]
fn socket_children_send_and_receive() {
    ipc_conformance::cross_process_send(unix, 1000);
    ipc_conformance::cross_process_recv(tcp, 1000);
    ipc_conformance::cross_process_send(tcp_authenticated, 1000);
}

#[test]
fn tls_children_send_and_receive() {
    ipc_conformance::cross_process_send(tls, 1000);
    ipc_conformance::cross_process_recv(tls, 1000);
}
