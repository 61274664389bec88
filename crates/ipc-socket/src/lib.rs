//! Python's `multiprocessing.connection` `Listener` and `Client` for Rust:
//! a server process accepts authenticated connections on a Unix socket
//! path, a Linux abstract name or a TCP address, and exchanges typed or
//! byte messages over the same [`Connection`](ipc_core::Connection) type
//! that ipc-pipe uses. The framing and the authkey handshake are Python's,
//! byte for byte, so a Python program can be on either end.
//!
//! ```
//! use ipc_socket::{Client, Listener, Options};
//!
//! let options = Options::new().authkey(b"secret password");
//! let listener = Listener::bind("@ipc-socket-doc-example", options.clone())?;
//! let client = std::thread::spawn(move || -> ipc_core::Result<Vec<u8>> {
//!     let mut conn = Client::connect("@ipc-socket-doc-example", options)?;
//!     conn.send_bytes(b"Hello, Server!")?;
//!     conn.recv_bytes()
//! });
//! let mut conn = listener.accept()?;
//! let data = conn.recv_bytes()?;
//! conn.send_bytes(&[&b"Received: "[..], &data].concat())?;
//! assert_eq!(client.join().unwrap()?, b"Received: Hello, Server!");
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! For connections that leave the machine, [`Options::tls_server`] and
//! [`Options::tls_client`] put TLS (rustls) under the framing; the authkey
//! handshake then runs inside the encrypted channel.
//!
//! Every handshake has a deadline ([`Options::handshake_timeout`]), an
//! empty authkey is refused (it hangs CPython 3.11 and 3.12), TCP
//! connections set `TCP_NODELAY`, and a wrong key, a stalled or garbled
//! handshake, or a hostile frame header is an error for that connection
//! alone.
#![deny(unsafe_code)]

mod address;
mod auth;
mod client;
mod listener;
mod options;
mod server;
mod stream;
mod tls;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use address::Address;
pub use client::Client;
pub use listener::{Listener, PendingConnection};
pub use options::{
    Options, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_HANDSHAKES,
};
pub use server::Server;
pub use stream::SocketStream;
pub use tls::{TlsClient, TlsServer};

/// A connection over a socket: the framed, typed connection of ipc-core.
pub type SocketConnection = ipc_core::Connection<SocketStream>;

/// Anything that names an [`Address`]: the enum itself, a string to parse,
/// or a TCP socket address.
pub trait ToAddress {
    /// The address.
    fn to_address(&self) -> ipc_core::Result<Address>;
}

impl ToAddress for Address {
    fn to_address(&self) -> ipc_core::Result<Address> {
        Ok(self.clone())
    }
}

impl ToAddress for &Address {
    fn to_address(&self) -> ipc_core::Result<Address> {
        Ok((*self).clone())
    }
}

impl ToAddress for &str {
    fn to_address(&self) -> ipc_core::Result<Address> {
        self.parse()
    }
}

impl ToAddress for String {
    fn to_address(&self) -> ipc_core::Result<Address> {
        self.parse()
    }
}

impl ToAddress for std::net::SocketAddr {
    fn to_address(&self) -> ipc_core::Result<Address> {
        Ok(Address::tcp(*self))
    }
}

/// Formats bytes as Python's `repr(bytes)` does (`b'...'`), for programs
/// that print what their Python counterparts print.
///
/// ```
/// assert_eq!(ipc_socket::python_bytes_repr(b"Received: hi"), "b'Received: hi'");
/// assert_eq!(ipc_socket::python_bytes_repr(b"it's\n\x00"), "b\"it's\\n\\x00\"");
/// ```
pub fn python_bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = format!("b{quote}");
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ if b as char == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}
