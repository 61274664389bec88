//! Async forms on tokio (feature `tokio`): [`AsyncListener`] accepts,
//! [`Client::connect_async`] connects, and [`AsyncServer`] serves each
//! connection on a task of its own. The handshakes (TLS, then the
//! authkey's challenge–response) and the bytes on the wire are the
//! blocking forms' own, so an async end talks to a blocking end, or to
//! Python, exactly as before.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ipc_core::Result<()> {
//! use ipc_socket::tokio::AsyncListener;
//! use ipc_socket::{Client, Options};
//!
//! let options = Options::new().authkey(b"secret");
//! let listener = AsyncListener::bind("127.0.0.1:0", options.clone())?;
//! let address = listener.address().clone();
//! let client = tokio::spawn(async move {
//!     let mut conn = Client::connect_async(&address, options).await?;
//!     conn.send(&"hello").await?;
//!     conn.recv::<String>().await
//! });
//! let mut conn = listener.accept().await?;
//! let greeting: String = conn.recv().await?;
//! conn.send(&format!("{greeting}, client")).await?;
//! assert_eq!(client.await.unwrap()?, "hello, client");
//! # Ok(())
//! # }
//! ```
//!
//! The runtime needs its IO and time drivers (`enable_all`): handshakes
//! have deadlines.

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use ::tokio::sync::{mpsc, oneshot, Mutex, Semaphore};
use ::tokio::task::{JoinHandle, JoinSet};
use ipc_core::tokio::{AsyncConnection, Interest, Readiness};
use ipc_core::{Error, Result};

use crate::address::Address;
use crate::auth::ConnectionHandshake;
use crate::client::{connect_once, Retry};
use crate::listener::{accept_now, Accepting, Listener, ACCEPT_PAUSE};
use crate::options::Options;
use crate::server::LiveSockets;
use crate::stream::SocketStream;
use crate::{Client, ToAddress};

/// A connection over a socket whose sends and receives are awaited.
pub type AsyncSocketConnection = AsyncConnection<SocketStream>;

/// The outcome of one client's handshakes, on its way to `accept`.
type Arrival = Result<AsyncSocketConnection>;

/// Runs a new connection's handshakes to their end by readiness, within
/// the options' handshake timeout.
async fn handshake(
    stream: SocketStream,
    mut handshake: ConnectionHandshake,
    options: &Options,
) -> Result<AsyncSocketConnection> {
    let mut conn = AsyncConnection::new(options.connection(stream))?;
    let key = options.authkey.as_deref();
    let through = conn.drive(|conn| match handshake.advance(conn, key)? {
        true => Ok(()),
        false => Err(Error::Timeout),
    });
    match ipc_core::tokio::timeout(options.handshake_timeout, through).await {
        Err(Error::Timeout) => Err(Error::Authentication(
            "the peer did not finish the handshake in time".into(),
        )),
        through => through.map(|()| conn),
    }
}

impl Client {
    /// [`connect`](Client::connect) without a blocked thread: connects to
    /// `address` (retrying until the connect timeout while nobody listens
    /// there) and runs the client's side of the handshakes.
    ///
    /// Cancel safe in that dropping it leaves nothing behind: the
    /// connection, made or not, is closed.
    pub async fn connect_async(
        address: impl ToAddress,
        options: Options,
    ) -> Result<AsyncSocketConnection> {
        options.validate()?;
        let address = address.to_address()?;
        let mut retry = Retry::new(&options);
        let fd = loop {
            match connect_once_async(&address, &retry).await {
                Ok(fd) => break fd,
                Err(e) => ::tokio::time::sleep(retry.pause_after(e)?).await,
            }
        };
        let stream = match &options.tls_client {
            Some(tls) => SocketStream::tls_client_unstarted(fd, tls)?,
            None => SocketStream::plain(fd, None)?,
        };
        handshake(stream, ConnectionHandshake::client(&options)?, &options).await
    }
}

/// One connect attempt. A Unix socket's connect never waits (see
/// `connect_unix`); a TCP connect is awaited.
async fn connect_once_async(address: &Address, retry: &Retry) -> std::io::Result<OwnedFd> {
    let Address::Tcp(host, port) = address else {
        return connect_once(address, retry.deadline);
    };
    let mut last = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    for addr in ::tokio::net::lookup_host((host.as_str(), *port)).await? {
        let left = retry.deadline.remaining().unwrap_or(Duration::MAX);
        match ::tokio::time::timeout(left, ::tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let stream = stream.into_std()?;
                stream.set_nodelay(true)?;
                // Connections are used blocking-mode, as the blocking
                // forms make them; waits go through the reactor.
                stream.set_nonblocking(false)?;
                return Ok(stream.into());
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::ErrorKind::TimedOut.into(),
        }
    }
    Err(last)
}

/// A [`Listener`] whose `accept` is awaited.
///
/// A task on the runtime accepts clients and runs each one's handshakes
/// on a task of its own, so a client that stalls holds up nobody; at most
/// [`Options::max_handshakes`] run at once (others wait in the listen
/// backlog), each bounded by [`Options::handshake_timeout`]. Connections
/// through their handshakes wait for [`accept`](Self::accept) in a queue
/// as long as `max_handshakes`; with [`Options::max_connections`] set,
/// `accept` waits for a place first. Dropping the listener stops its
/// tasks (and removes a Unix socket file).
#[derive(Debug)]
pub struct AsyncListener {
    listener: Listener,
    arrivals: Mutex<mpsc::Receiver<Arrival>>,
    accepting: JoinHandle<()>,
}

impl AsyncListener {
    /// Listens on `address`, as [`Listener::bind`] does.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn bind(address: impl ToAddress, options: Options) -> Result<AsyncListener> {
        AsyncListener::new(Listener::bind(address, options)?)
    }

    /// Accepts on `listener` from tasks of the current runtime.
    pub fn new(listener: Listener) -> Result<AsyncListener> {
        let readiness = Readiness::new(listener.as_fd(), Interest::READABLE)?;
        let options = listener.options().clone();
        let (arrivals_in, arrivals) = mpsc::channel(options.max_handshakes.max(1));
        let accepting = ::tokio::spawn(accept_loop(
            readiness,
            listener.accepting(),
            options,
            arrivals_in,
        ));
        Ok(AsyncListener {
            listener,
            arrivals: Mutex::new(arrivals),
            accepting,
        })
    }

    /// The address clients connect to.
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    /// The next connection through its handshakes. A client that failed
    /// its handshakes is an error for that connection alone, returned by
    /// one call; call `accept` again for the next.
    ///
    /// Cancel safe: dropped, it loses no connection (each waits for the
    /// next call), and it holds no place of the connection limit.
    pub async fn accept(&self) -> Result<AsyncSocketConnection> {
        let slot = match self.listener.limit() {
            Some(limit) => Some(limit.take_async().await),
            None => None,
        };
        let mut conn = self
            .arrivals
            .lock()
            .await
            .recv()
            .await
            .ok_or(Error::Closed)??;
        if let Some(slot) = slot {
            conn.get_mut().get_mut().hold_slot(slot);
        }
        Ok(conn)
    }

    /// [`accept`](Self::accept), giving up with [`Error::Timeout`] after
    /// `timeout` (the same as wrapping it in `tokio::time::timeout`).
    pub async fn accept_timeout(&self, timeout: Duration) -> Result<AsyncSocketConnection> {
        ipc_core::tokio::timeout(timeout, self.accept()).await
    }
}

impl Drop for AsyncListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Accepts clients and starts their handshakes, each on a task, until the
/// listener is dropped.
async fn accept_loop(
    listening: Readiness,
    kind: Accepting,
    options: Options,
    arrivals: mpsc::Sender<Arrival>,
) {
    let handshakes_allowed = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    let options = Arc::new(options);
    let mut handshakes = JoinSet::new();
    loop {
        let Ok(allowed) = Arc::clone(&handshakes_allowed).acquire_owned().await else {
            return;
        };
        let accepted = listening
            .until(Interest::READABLE, || accept_now(listening.as_fd(), kind))
            .await;
        let fd = match accepted {
            Ok(fd) => fd,
            Err(e) => {
                // Out of descriptors or memory: the backlog stays readable,
                // so give the process a moment instead of failing in a loop.
                if arrivals.send(Err(e)).await.is_err() {
                    return;
                }
                ::tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let options = Arc::clone(&options);
        let arrivals = arrivals.clone();
        handshakes.spawn(async move {
            let through = match server_stream(fd, &options) {
                Ok((stream, auth)) => handshake(stream, auth, &options).await,
                Err(e) => Err(e),
            };
            // The place is held until `accept` has room for the outcome,
            // which bounds what waits for it.
            let _ = arrivals.send(through).await;
            drop(allowed);
        });
        while handshakes.try_join_next().is_some() {}
    }
}

/// A just-accepted connection's stream and handshakes, as the options say.
fn server_stream(fd: OwnedFd, options: &Options) -> Result<(SocketStream, ConnectionHandshake)> {
    let stream = match &options.tls_server {
        Some(tls) => SocketStream::tls_server_unstarted(fd, tls)?,
        None => SocketStream::plain(fd, None)?,
    };
    Ok((stream, ConnectionHandshake::server(options)?))
}

/// A server whose handlers are tasks: [`Server`](crate::Server) for tokio.
///
/// One task accepts (through an [`AsyncListener`], so handshakes run at
/// once and a stalled client holds up nobody) and spawns `handler` on a
/// task of its own for each connection through its handshakes.
/// [`shutdown`](Self::shutdown) stops accepting, shuts down the sockets of
/// live connections (their handlers' receives return
/// [`Error::Closed`]), and awaits every handler.
/// Dropping the server without `shutdown` aborts its tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use ipc_socket::tokio::{AsyncListener, AsyncServer};
/// use ipc_socket::{Client, Options};
///
/// let listener = AsyncListener::bind("127.0.0.1:0", Options::new())?;
/// let address = listener.address().clone();
/// let server = AsyncServer::start(listener, |mut conn| async move {
///     while let Ok(n) = conn.recv::<u64>().await {
///         if conn.send(&(n * n)).await.is_err() {
///             break;
///         }
///     }
/// });
/// let mut conn = Client::connect_async(&address, Options::new()).await?;
/// conn.send(&12u64).await?;
/// assert_eq!(conn.recv::<u64>().await?, 144);
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncServer {
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<()>>,
}

impl AsyncServer {
    /// Starts serving on the current runtime: every accepted,
    /// authenticated connection is passed to `handler`, on a task of its
    /// own.
    pub fn start<F, Fut>(listener: AsyncListener, handler: F) -> AsyncServer
    where
        F: Fn(AsyncSocketConnection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let serving = ::tokio::spawn(serve(listener, handler, stopped));
        AsyncServer {
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Stops accepting, closes live connections, and awaits every handler.
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
    }
}

impl Drop for AsyncServer {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

async fn serve<F, Fut>(listener: AsyncListener, handler: F, mut stopped: oneshot::Receiver<()>)
where
    F: Fn(AsyncSocketConnection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let live = LiveSockets::default();
    let mut handlers = JoinSet::new();
    loop {
        ::tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    let removal = live.removal(live.insert(conn.get_ref().as_fd()));
                    let handled = handler(conn);
                    handlers.spawn(async move {
                        // Dropped when the handler returns or panics.
                        let _removal = removal;
                        handled.await;
                    });
                }
                // The listener's tasks are gone.
                Err(Error::Closed) => break,
                // A client that failed its handshake: its error is its own.
                Err(_) => {}
            },
            Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
        }
    }
    drop(listener);
    live.shut_down_all();
    while handlers.join_next().await.is_some() {}
}
