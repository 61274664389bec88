//! [`Client`]: Python's `multiprocessing.connection.Client`, connecting to a
//! [`Listener`](crate::Listener) (ours or Python's) and authenticating.

use std::io;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixStream};
use std::time::{Duration, Instant};

use ipc_core::{Connection, Result};

use crate::address::Address;
use crate::auth;
use crate::options::Options;
use crate::stream::{apply_socket_timeouts, SocketStream};
use crate::SocketConnection;

/// Connects to a listener.
#[derive(Debug)]
pub struct Client;

/// Errors that mean "nobody is listening there yet", worth retrying until
/// the connect deadline.
fn worth_retrying(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound | io::ErrorKind::WouldBlock
    )
}

impl Client {
    /// Connects to `address` and, if `options` has an authkey, runs the
    /// client's side of the handshake (answer the server's challenge, then
    /// challenge it). While nobody listens at the address it retries until
    /// the connect timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_socket::{Client, Options};
    /// let options = Options::new().connect_timeout(Duration::from_millis(50));
    /// assert!(Client::connect("@nobody-listens-here-4711", options).is_err());
    /// ```
    pub fn connect(address: impl crate::ToAddress, options: Options) -> Result<SocketConnection> {
        options.validate()?;
        let address = address.to_address()?;
        let deadline = Instant::now() + options.connect_timeout;
        let mut backoff = Duration::from_millis(1);
        let fd = loop {
            match connect_once(&address, &options, deadline) {
                Ok(fd) => break fd,
                Err(e) if worth_retrying(&e) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(e.into());
                    }
                    // Retrying a refused connect has nothing to wait on, so
                    // it backs off; this is not a test's synchronisation.
                    std::thread::sleep(backoff.min(left));
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let deadline = Instant::now() + options.handshake_timeout;
        let stream = match &options.tls_client {
            Some(tls) => SocketStream::tls_client(
                fd,
                tls,
                deadline,
                (options.read_timeout, options.write_timeout),
            )?,
            None => SocketStream::plain(fd, None)?,
        };
        let mut conn = Connection::new(stream);
        conn.set_max_message_size(options.max_message_size);
        if let Some(key) = &options.authkey {
            auth::client_handshake(&mut conn, key, deadline)?;
        }
        Ok(conn)
    }
}

fn connect_once(address: &Address, options: &Options, deadline: Instant) -> io::Result<OwnedFd> {
    match address {
        Address::Unix(path) => {
            let stream = UnixStream::connect(path)?;
            apply_socket_timeouts(&stream, options.read_timeout, options.write_timeout)
                .map_err(io::Error::from)?;
            Ok(stream.into())
        }
        Address::Abstract(name) => {
            let stream = UnixStream::connect_addr(&UnixSocketAddr::from_abstract_name(name)?)?;
            apply_socket_timeouts(&stream, options.read_timeout, options.write_timeout)
                .map_err(io::Error::from)?;
            Ok(stream.into())
        }
        Address::Tcp(host, port) => {
            let mut last = io::Error::from(io::ErrorKind::ConnectionRefused);
            for addr in Address::resolve(host, *port).map_err(io::Error::from)? {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        apply_socket_timeouts(&stream, options.read_timeout, options.write_timeout)
                            .map_err(io::Error::from)?;
                        return Ok(stream.into());
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}
