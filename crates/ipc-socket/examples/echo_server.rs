//! An echo server that answers every message with `b"Received: " + data`,
//! for trying ipc-socket against Python's `multiprocessing.connection`:
//!
//! ```text
//! IPC_AUTHKEY=secret cargo run -p ipc-socket --example echo_server -- --address 127.0.0.1:6000
//! python3 -c "from multiprocessing.connection import Client
//! c = Client(('127.0.0.1', 6000), authkey=b'secret'); c.send_bytes(b'hi'); print(c.recv_bytes())"
//! ```
//!
//! The authkey comes from the environment variable `IPC_AUTHKEY` (no
//! authentication when it is unset). `--once` serves one client and exits.

use ipc_socket::{Listener, Options, Server};

fn main() -> ipc_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let address = args
        .iter()
        .position(|a| a == "--address")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:6000", String::as_str);
    let once = args.iter().any(|a| a == "--once");
    let mut options = Options::new();
    if let Some(key) = std::env::var_os("IPC_AUTHKEY") {
        options = options.authkey(key.as_encoded_bytes());
    }
    let listener = Listener::bind(address, options)?;
    eprintln!("echo_server listening on {}", listener.address());
    if once {
        let mut conn = listener.accept()?;
        echo(&mut conn);
        return Ok(());
    }
    let _server = Server::start(listener, |mut conn| echo(&mut conn))?;
    // Serve until killed; the accept and connection threads do the work.
    loop {
        std::thread::park();
    }
}

fn echo(conn: &mut ipc_socket::SocketConnection) {
    while let Ok(data) = conn.recv_bytes() {
        let reply = [&b"Received: "[..], &data].concat();
        if conn.send_bytes(&reply).is_err() {
            break;
        }
    }
}
