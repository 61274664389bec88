//! [`Client`]: Python's `multiprocessing.connection.Client`, connecting to a
//! [`Listener`](crate::Listener) (ours or Python's) and authenticating.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use ipc_core::{Deadline, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::address::Address;
use crate::auth;
use crate::options::Options;
use crate::stream::SocketStream;
use crate::SocketConnection;

/// Connects to a listener.
#[derive(Debug)]
pub struct Client;

/// The pauses between connect attempts while nobody listens at the
/// address yet (or its backlog is full): a refused connect has nothing to
/// wait on, so it backs off, doubling up to 100 ms, until the connect
/// deadline. This is not a test's synchronisation.
pub(crate) struct Retry {
    pub(crate) deadline: Deadline,
    pause: Duration,
}

impl Retry {
    pub(crate) fn new(options: &Options) -> Retry {
        Retry {
            deadline: Deadline::after(options.connect_timeout),
            pause: Duration::from_millis(1),
        }
    }

    /// How long to pause before the next attempt after `failed`, or the
    /// error itself if it is not "nobody is listening there yet" or the
    /// deadline has passed.
    pub(crate) fn pause_after(&mut self, failed: io::Error) -> Result<Duration> {
        let worth_retrying = matches!(
            failed.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound | io::ErrorKind::WouldBlock
        );
        let left = self.deadline.remaining().unwrap_or(Duration::MAX);
        if !worth_retrying || left.is_zero() {
            return Err(failed.into());
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(Duration::from_millis(100));
        Ok(pause)
    }
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
        let mut retry = Retry::new(&options);
        let fd = loop {
            match connect_once(&address, retry.deadline) {
                Ok(fd) => break fd,
                Err(e) => std::thread::sleep(retry.pause_after(e)?),
            }
        };
        let deadline = Deadline::after(options.handshake_timeout);
        let stream = match &options.tls_client {
            Some(tls) => SocketStream::tls_client(fd, tls, deadline)?,
            None => SocketStream::plain(fd, None)?,
        };
        let mut conn = options.connection(stream);
        if let Some(key) = &options.authkey {
            auth::client_handshake(&mut conn, key, deadline)?;
        }
        Ok(conn)
    }
}

pub(crate) fn connect_once(address: &Address, deadline: Deadline) -> io::Result<OwnedFd> {
    match address {
        Address::Unix(path) => connect_unix(&UnixAddr::new(path.as_path())?),
        Address::Abstract(name) => connect_unix(&UnixAddr::new_abstract(name)?),
        Address::Tcp(host, port) => {
            let mut last = io::Error::from(io::ErrorKind::ConnectionRefused);
            for addr in Address::resolve(host, *port).map_err(io::Error::from)? {
                let left = deadline
                    .remaining()
                    .unwrap_or(Duration::MAX)
                    .max(Duration::from_millis(1));
                // std waits for the connection with poll, resuming with the
                // time remaining after a signal.
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return Ok(stream.into());
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

/// Connects a Unix socket without blocking: a blocking connect to a
/// listener whose backlog is full sleeps until there is room, past any
/// deadline, while a non-blocking one says `EAGAIN` at once, which the
/// caller retries until its deadline.
fn connect_unix(addr: &UnixAddr) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    loop {
        match connect(fd.as_raw_fd(), addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    // The connection is made; it is used blocking from here on.
    fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty()))?;
    Ok(fd)
}
