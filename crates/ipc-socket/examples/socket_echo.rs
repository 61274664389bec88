//! The socket scenario of the first article (`examples/python/socket_echo.py`):
//! a server process answers each message with `b"Received: " + data`, and a
//! client process sends `Hello, Server!` and prints the reply. Both are
//! forked children, as in the Python original; the listener is bound before
//! they start, so the client never races the server.

use ipc_core::process::Process;
use ipc_socket::{Address, Client, Listener, Options};

fn main() -> ipc_core::Result<()> {
    let listener = Listener::bind("127.0.0.1:0", Options::new())?;
    let address = listener.address().clone();
    let mut server = Process::new()
        .pass("listener", &listener)?
        .fork(move || server(listener))?;
    let mut client = Process::new().fork(move || client(address, "Hello, Server!"))?;
    let ok = client.join()?.success() & server.join()?.success();
    assert!(ok, "a child failed");
    Ok(())
}

fn server(listener: Listener) -> ipc_core::Result<()> {
    let mut conn = listener.accept()?;
    if let Some(Address::Tcp(host, port)) = conn.get_ref().peer_address() {
        println!("Connected by ('{host}', {port})");
    }
    while let Ok(data) = conn.recv_bytes() {
        conn.send_bytes(&[&b"Received: "[..], &data].concat())?;
    }
    Ok(())
}

fn client(address: Address, message: &str) -> ipc_core::Result<()> {
    let mut conn = Client::connect(&address, Options::new())?;
    conn.send_bytes(message.as_bytes())?;
    let data = conn.recv_bytes()?;
    println!("Received {}", ipc_socket::python_bytes_repr(&data));
    Ok(())
}
