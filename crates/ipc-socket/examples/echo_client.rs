//! An echo client: sends one message and prints the reply as Python prints
//! bytes. Works against `echo_server` or a Python `Listener` that echoes:
//!
//! ```text
//! IPC_AUTHKEY=secret cargo run -p ipc-socket --example echo_client -- --address 127.0.0.1:6000 --message "Hello, Server!"
//! ```
//!
//! The authkey comes from the environment variable `IPC_AUTHKEY`.

use ipc_socket::{Client, Options};

fn main() -> ipc_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let address = value("--address").unwrap_or_else(|| "127.0.0.1:6000".into());
    let message = value("--message").unwrap_or_else(|| "Hello, Server!".into());
    let mut options = Options::new();
    if let Some(key) = std::env::var_os("IPC_AUTHKEY") {
        options = options.authkey(key.as_encoded_bytes());
    }
    let mut conn = Client::connect(address.as_str(), options)?;
    conn.send_bytes(message.as_bytes())?;
    let reply = conn.recv_bytes()?;
    println!("Received {}", ipc_socket::python_bytes_repr(&reply));
    Ok(())
}
