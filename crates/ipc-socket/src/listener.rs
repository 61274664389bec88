//! [`Listener`]: Python's `multiprocessing.connection.Listener`, accepting
//! authenticated framed connections on a Unix path, an abstract name or a
//! TCP address.

use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};

use crate::address::Address;
use crate::auth;
use crate::options::Options;
use crate::stream::{Limit, Slot, SocketStream};
use crate::SocketConnection;

#[derive(Debug)]
enum Inner {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Accepts connections from [`Client`](crate::Client)s, or from Python's
/// `multiprocessing.connection.Client`.
///
/// A Unix socket file is removed when its `Listener` is dropped.
///
/// ```
/// use ipc_socket::{Client, Listener, Options};
/// let options = Options::new().authkey(b"secret");
/// let listener = Listener::bind("127.0.0.1:0", options.clone())?;
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || -> ipc_core::Result<String> {
///     let mut conn = Client::connect(&address, options)?;
///     conn.send(&"hello")?;
///     conn.recv()
/// });
/// let mut conn = listener.accept()?;
/// let greeting: String = conn.recv()?;
/// conn.send(&format!("{greeting}, client"))?;
/// assert_eq!(client.join().unwrap()?, "hello, client");
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
    address: Address,
    options: Options,
    limit: Option<Arc<Limit>>,
    remove_on_drop: Option<PathBuf>,
}

/// A connection accepted but not yet authenticated: a server hands it to a
/// worker thread so that a client that stalls in the handshake does not
/// hold up `accept` for the others.
#[derive(Debug)]
pub struct PendingConnection {
    fd: OwnedFd,
    slot: Option<Slot>,
    options: Options,
}

impl PendingConnection {
    /// Runs the server's side of the handshakes: TLS first when the
    /// listener has a certificate, then the authkey challenge–response when
    /// it has a key (challenge the client, then answer its challenge), all
    /// within the handshake timeout.
    pub fn authenticate(self) -> Result<SocketConnection> {
        let options = &self.options;
        let deadline = Deadline::after(options.handshake_timeout);
        let stream = match &options.tls_server {
            Some(tls) => SocketStream::tls_server(self.fd, self.slot, tls, deadline)?,
            None => SocketStream::plain(self.fd, self.slot)?,
        };
        let mut conn = options.connection(stream);
        if let Some(key) = &options.authkey {
            auth::ServerHandshake::new()?.run_to_end(&mut conn, key, deadline)?;
        }
        Ok(conn)
    }
}

impl Listener {
    /// Listens on `address` (an [`Address`] or a string such as
    /// `"/tmp/app.sock"`, `"@app"` or `"127.0.0.1:6000"`; port 0 picks a
    /// free port). Fails if the address is in use.
    pub fn bind(address: impl crate::ToAddress, options: Options) -> Result<Listener> {
        options.validate()?;
        let address = address.to_address()?;
        let (inner, address, remove_on_drop) = match address {
            Address::Unix(path) => (
                Inner::Unix(UnixListener::bind(&path)?),
                Address::Unix(path.clone()),
                Some(path),
            ),
            Address::Abstract(name) => {
                let addr = UnixSocketAddr::from_abstract_name(&name)?;
                (
                    Inner::Unix(UnixListener::bind_addr(&addr)?),
                    Address::Abstract(name),
                    None,
                )
            }
            Address::Tcp(host, port) => {
                let listener = TcpListener::bind(&Address::resolve(&host, port)?[..])?;
                let local = listener.local_addr()?;
                (Inner::Tcp(listener), Address::tcp(local), None)
            }
        };
        let listener = Listener {
            inner,
            address,
            limit: options.max_connections.map(Limit::new),
            options,
            remove_on_drop,
        };
        // std listens with a fixed backlog; listening again sets ours.
        nix::sys::socket::listen(
            &listener.as_fd(),
            nix::sys::socket::Backlog::new(listener.options.backlog.max(1))?,
        )?;
        Ok(listener)
    }

    /// The address clients connect to (with the real port if bound to 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Accepts the next connection and authenticates it, waiting as long as
    /// it takes. A client that fails the handshake gets an error for that
    /// connection alone; call `accept` again for the next one.
    pub fn accept(&self) -> Result<SocketConnection> {
        self.accept_pending_deadline(Deadline::Never)?
            .authenticate()
    }

    /// [`accept`](Self::accept), giving up with [`Error::Timeout`] if no
    /// client arrives within `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<SocketConnection> {
        self.accept_pending_deadline(Deadline::after(timeout))?
            .authenticate()
    }

    /// Accepts the next connection without authenticating it yet.
    pub fn accept_pending(&self) -> Result<PendingConnection> {
        self.accept_pending_deadline(Deadline::Never)
    }

    /// [`accept_pending`](Self::accept_pending) with a timeout.
    pub fn accept_pending_timeout(&self, timeout: Duration) -> Result<PendingConnection> {
        self.accept_pending_deadline(Deadline::after(timeout))
    }

    /// Accepted, authenticated connections, one at a time.
    pub fn incoming(&self) -> impl Iterator<Item = Result<SocketConnection>> + '_ {
        std::iter::repeat_with(move || self.accept())
    }

    fn accept_pending_deadline(&self, deadline: Deadline) -> Result<PendingConnection> {
        let slot = match &self.limit {
            Some(limit) => Some(limit.take(deadline).ok_or(Error::Timeout)?),
            None => None,
        };
        if deadline != Deadline::Never
            && ipc_core::wait(&[&self.as_fd()], deadline.remaining())?.is_empty()
        {
            return Err(Error::Timeout);
        }
        let fd: OwnedFd = match &self.inner {
            Inner::Unix(listener) => listener.accept()?.0.into(),
            Inner::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                stream.set_nodelay(true)?;
                stream.into()
            }
        };
        Ok(PendingConnection {
            fd,
            slot,
            options: self.options.clone(),
        })
    }
}

/// A listener can be handed to a child process (Python passes listening
/// sockets to pool workers the same way). The child gets the listening
/// socket and its address; the options are not passed (the authkey must
/// never be put in the environment), so an exec'd child's listener has
/// the default options. Only the creator removes a Unix socket file.
impl ipc_core::process::Inheritable for Listener {
    fn handle(&self) -> ipc_core::process::Handle<'_> {
        ipc_core::process::Handle {
            fds: vec![self.as_fd()],
            text: self.address.to_string(),
        }
    }

    fn from_inherited(inherited: ipc_core::process::Inherited) -> Result<Listener> {
        let [fd]: [OwnedFd; 1] = inherited
            .fds
            .try_into()
            .map_err(|_| Error::InvalidArgument("a listener handle has one descriptor"))?;
        let address: Address = inherited.text.parse()?;
        let inner = match address {
            Address::Tcp(..) => Inner::Tcp(TcpListener::from(fd)),
            _ => Inner::Unix(UnixListener::from(fd)),
        };
        Ok(Listener {
            inner,
            address,
            options: Options::new(),
            limit: None,
            remove_on_drop: None,
        })
    }
}

impl AsFd for PendingConnection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Unix(listener) => listener.as_fd(),
            Inner::Tcp(listener) => listener.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.remove_on_drop {
            let _ = std::fs::remove_file(path);
        }
    }
}
