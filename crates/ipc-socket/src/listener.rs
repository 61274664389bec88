//! [`Listener`]: Python's `multiprocessing.connection.Listener`, accepting
//! authenticated framed connections on a Unix path, an abstract name or a
//! TCP address.
//!
//! # Handshakes in progress
//!
//! Python's `Listener.accept` runs each client's handshake to its end
//! before it looks at the next client, so one client that connects and
//! says nothing holds up everyone else. Here the thread in `accept` runs
//! every handshake in progress at once: it polls the listening socket and
//! all of them, accepts whoever arrives, takes each handshake as far as
//! the bytes received allow (never waiting on one peer), and returns the
//! first connection that is through. Handshakes have their own bound
//! ([`Options::max_handshakes`]; clients beyond it wait in the listen
//! backlog) and take a place of [`Options::max_connections`] only once
//! they are through; a stalled one is dropped at its handshake deadline.
//!
//! Threads that call `accept` on the same listener at once take turns
//! running the handshakes; a connection that one of them finishes goes to
//! whichever caller asks first.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipc_core::{Deadline, Error, Result, Transport, Waitable};

use crate::address::Address;
use crate::auth::ServerHandshake;
use crate::options::Options;
use crate::stream::{Limit, SocketStream};
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
    handshakes: Mutex<Handshakes>,
    /// Signalled when a caller stops running the handshakes.
    turn: Condvar,
}

/// The handshakes a listener has in progress, and their outcomes not yet
/// handed to a caller.
#[derive(Debug, Default)]
struct Handshakes {
    /// A caller of `accept` is running them (outside the lock).
    running: bool,
    in_progress: Vec<InProgress>,
    finished: VecDeque<Result<SocketConnection>>,
}

/// One client between `accept(2)` and the end of its handshakes.
#[derive(Debug)]
struct InProgress {
    conn: SocketConnection,
    auth: Option<ServerHandshake>,
    deadline: Instant,
}

/// What one round of running the handshakes came to.
enum Round {
    /// Nothing finished before the caller's deadline.
    TimedOut,
    /// The caller's stop descriptor became readable.
    Stopped,
    /// Something finished (it is in `finished`), or the round ended at a
    /// handshake's deadline: look again.
    Again,
}

/// A connection accepted but not yet authenticated: a server hands it to a
/// worker thread so that a client that stalls in the handshake does not
/// hold up `accept` for the others.
#[derive(Debug)]
pub struct PendingConnection {
    fd: OwnedFd,
    limit: Option<Arc<Limit>>,
    options: Options,
}

impl PendingConnection {
    /// Runs the server's side of the handshakes: TLS first when the
    /// listener has a certificate, then the authkey challenge–response when
    /// it has a key (challenge the client, then answer its challenge), all
    /// within the handshake timeout. With
    /// [`Options::max_connections`], it then waits for a free place.
    pub fn authenticate(self) -> Result<SocketConnection> {
        let options = &self.options;
        let deadline = Deadline::after(options.handshake_timeout);
        let stream = match &options.tls_server {
            Some(tls) => SocketStream::tls_server(self.fd, None, tls, deadline)?,
            None => SocketStream::plain(self.fd, None)?,
        };
        let mut conn = options.connection(stream);
        if let Some(key) = &options.authkey {
            ServerHandshake::new()?.run_to_end(&mut conn, key, deadline)?;
        }
        if let Some(limit) = &self.limit {
            let slot = limit.take(Deadline::Never).ok_or(Error::Timeout)?;
            conn.get_mut().hold_slot(slot);
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
        let listener = Listener::new(inner, address, options, remove_on_drop)?;
        // std listens with a fixed backlog; listening again sets ours.
        nix::sys::socket::listen(
            &listener.as_fd(),
            nix::sys::socket::Backlog::new(listener.options.backlog.max(1))?,
        )?;
        Ok(listener)
    }

    fn new(
        inner: Inner,
        address: Address,
        options: Options,
        remove_on_drop: Option<PathBuf>,
    ) -> Result<Listener> {
        // Accepting never blocks: the accept loops wait in poll, and
        // another thread or process taking the client first is harmless.
        match &inner {
            Inner::Unix(listener) => listener.set_nonblocking(true)?,
            Inner::Tcp(listener) => listener.set_nonblocking(true)?,
        }
        Ok(Listener {
            inner,
            address,
            limit: options.max_connections.map(Limit::new),
            options,
            remove_on_drop,
            handshakes: Mutex::default(),
            turn: Condvar::new(),
        })
    }

    /// The address clients connect to (with the real port if bound to 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Returns the next connection through its handshakes, waiting as long
    /// as it takes. Many clients' handshakes run at once (see the [module
    /// docs](self)), so a client that stalls holds up nobody. A client that
    /// fails its handshake (a wrong key, garbage, its handshake deadline
    /// passing) is an error for that connection alone, returned by one
    /// call; call `accept` again for the next one.
    pub fn accept(&self) -> Result<SocketConnection> {
        self.accept_until(Deadline::Never)
    }

    /// [`accept`](Self::accept), giving up with [`Error::Timeout`] if no
    /// connection is through its handshakes within `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<SocketConnection> {
        self.accept_until(Deadline::after(timeout))
    }

    fn accept_until(&self, deadline: Deadline) -> Result<SocketConnection> {
        let mut conn = self
            .next_connection(deadline, None)?
            .ok_or(Error::Timeout)??;
        if let Some(limit) = &self.limit {
            match limit.take(deadline) {
                Some(slot) => conn.get_mut().hold_slot(slot),
                None => {
                    // Keep it for the next call rather than drop a client
                    // that did everything right.
                    self.lock_handshakes().finished.push_front(Ok(conn));
                    return Err(Error::Timeout);
                }
            }
        }
        Ok(conn)
    }

    /// Gives `conn` a place of the connection limit, waiting as long as it
    /// takes; `None` if the limit is gone.
    pub(crate) fn take_slot(&self, mut conn: SocketConnection) -> Option<SocketConnection> {
        if let Some(limit) = &self.limit {
            conn.get_mut().hold_slot(limit.take(Deadline::Never)?);
        }
        Some(conn)
    }

    fn lock_handshakes(&self) -> MutexGuard<'_, Handshakes> {
        self.handshakes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next finished handshake (a connection, or the error that ended
    /// it), running the handshakes in progress while none is; `None` if
    /// `stop` became readable. [`Error::Timeout`] at `deadline`.
    pub(crate) fn next_connection(
        &self,
        deadline: Deadline,
        stop: Option<BorrowedFd<'_>>,
    ) -> Result<Option<Result<SocketConnection>>> {
        let mut shared = self.lock_handshakes();
        loop {
            if let Some(finished) = shared.finished.pop_front() {
                return Ok(Some(finished));
            }
            if shared.running {
                // Another caller is running the handshakes: wait for its
                // round to end.
                shared = match deadline.remaining() {
                    None => self.turn.wait(shared).unwrap_or_else(|e| e.into_inner()),
                    Some(left) if left.is_zero() => return Err(Error::Timeout),
                    Some(left) => {
                        self.turn
                            .wait_timeout(shared, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
                continue;
            }
            shared.running = true;
            let mut in_progress = std::mem::take(&mut shared.in_progress);
            let mut finished = Vec::new();
            drop(shared);
            let round = self.run_handshakes(&mut in_progress, &mut finished, deadline, stop);
            shared = self.lock_handshakes();
            shared.running = false;
            shared.in_progress.append(&mut in_progress);
            shared.finished.extend(finished);
            self.turn.notify_all();
            match round? {
                Round::Stopped => return Ok(None),
                Round::TimedOut if shared.finished.is_empty() => return Err(Error::Timeout),
                Round::TimedOut | Round::Again => {}
            }
        }
    }

    /// One round: waits until the listening socket, a handshake in
    /// progress or `stop` is readable, or the earliest deadline passes, and
    /// does what can be done without waiting.
    fn run_handshakes(
        &self,
        in_progress: &mut Vec<InProgress>,
        finished: &mut Vec<Result<SocketConnection>>,
        deadline: Deadline,
        stop: Option<BorrowedFd<'_>>,
    ) -> Result<Round> {
        let earliest = in_progress
            .iter()
            .map(|h| h.deadline)
            .min()
            .map_or(deadline, |d| deadline.min(Deadline::At(d)));
        // Decrypted bytes waiting in a TLS session do not show on its
        // socket: such a handshake goes on without waiting.
        let buffered = in_progress
            .iter()
            .any(|h| h.conn.get_ref().has_buffered_input());
        let wait = if buffered { Deadline::Now } else { earliest };
        // At the bound, new clients are left in the backlog: the listening
        // socket is not watched, or it would be readable all along.
        let room = in_progress.len() < self.options.max_handshakes;
        let (listener_ready, stopped, ready) = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![self.as_fd()];
            fds.extend(stop);
            fds.extend(in_progress.iter().map(|h| h.conn.as_fd()));
            let waitables: Vec<&dyn Waitable> = fds.iter().map(|fd| fd as &dyn Waitable).collect();
            let ready = ipc_core::wait(&waitables, wait.remaining())?;
            let first = 1 + usize::from(stop.is_some());
            let mut handshakes = vec![false; in_progress.len()];
            for &i in ready.iter().filter(|&&i| i >= first) {
                handshakes[i - first] = true;
            }
            (
                room && ready.contains(&0),
                stop.is_some() && ready.contains(&1),
                handshakes,
            )
        };
        if stopped {
            return Ok(Round::Stopped);
        }
        // Back to front, so that taking one out keeps the others' indices.
        for i in (0..in_progress.len()).rev() {
            if ready[i] || in_progress[i].conn.get_ref().has_buffered_input() {
                self.advance(in_progress, i, finished);
            }
        }
        if listener_ready {
            self.accept_arrivals(in_progress, finished);
        }
        let now = Instant::now();
        let before = in_progress.len();
        in_progress.retain(|h| h.deadline > now);
        for _ in in_progress.len()..before {
            finished.push(Err(Error::Authentication(
                "the peer did not finish the handshake in time".into(),
            )));
        }
        Ok(if !finished.is_empty() || !deadline.has_passed() {
            Round::Again
        } else {
            Round::TimedOut
        })
    }

    /// Takes the clients waiting in the backlog and starts their
    /// handshakes.
    fn accept_arrivals(
        &self,
        in_progress: &mut Vec<InProgress>,
        finished: &mut Vec<Result<SocketConnection>>,
    ) {
        // Clients beyond the bound wait in the listen backlog.
        while in_progress.len() < self.options.max_handshakes {
            let fd = match self.accept_raw() {
                Ok(fd) => fd,
                Err(Error::Timeout) => return,
                Err(e) => {
                    finished.push(Err(e));
                    return;
                }
            };
            match self.start_handshake(fd) {
                Ok(handshake) => {
                    in_progress.push(handshake);
                    self.advance(in_progress, in_progress.len() - 1, finished);
                }
                Err(e) => finished.push(Err(e)),
            }
        }
    }

    fn start_handshake(&self, fd: OwnedFd) -> Result<InProgress> {
        let options = &self.options;
        let stream = match &options.tls_server {
            Some(tls) => SocketStream::tls_server_unstarted(fd, tls)?,
            None => SocketStream::plain(fd, None)?,
        };
        let auth = match &options.authkey {
            Some(_) => Some(ServerHandshake::new()?),
            None => None,
        };
        Ok(InProgress {
            conn: options.connection(stream),
            auth,
            deadline: Instant::now() + options.handshake_timeout,
        })
    }

    /// Takes handshake `i` as far as it goes now, and out to `finished`
    /// once it is through or has failed.
    fn advance(
        &self,
        in_progress: &mut Vec<InProgress>,
        i: usize,
        finished: &mut Vec<Result<SocketConnection>>,
    ) {
        let handshake = &mut in_progress[i];
        let step = (|| -> Result<bool> {
            if !handshake.conn.get_mut().continue_handshake()? {
                return Ok(false);
            }
            match (&mut handshake.auth, &self.options.authkey) {
                (Some(auth), Some(key)) => auth.advance(&mut handshake.conn, key, Deadline::Now),
                _ => Ok(true),
            }
        })();
        match step {
            Ok(false) => {}
            Ok(true) => finished.push(Ok(in_progress.swap_remove(i).conn)),
            Err(e) => {
                in_progress.swap_remove(i);
                finished.push(Err(e));
            }
        }
    }

    /// One `accept(2)` on the non-blocking listening socket;
    /// [`Error::Timeout`] if nobody is waiting.
    fn accept_raw(&self) -> Result<OwnedFd> {
        let accepted = match &self.inner {
            Inner::Unix(listener) => listener.accept().map(|(s, _)| OwnedFd::from(s)),
            Inner::Tcp(listener) => listener.accept().and_then(|(stream, _)| {
                stream.set_nodelay(true)?;
                Ok(stream.into())
            }),
        };
        match accepted {
            Ok(fd) => Ok(fd),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(Error::Timeout),
            Err(e) => Err(e.into()),
        }
    }

    /// Accepts the next connection without authenticating it yet.
    pub fn accept_pending(&self) -> Result<PendingConnection> {
        self.accept_pending_deadline(Deadline::Never)
    }

    /// [`accept_pending`](Self::accept_pending) with a timeout.
    pub fn accept_pending_timeout(&self, timeout: Duration) -> Result<PendingConnection> {
        self.accept_pending_deadline(Deadline::after(timeout))
    }

    /// Connections through their handshakes, one at a time, as
    /// [`accept`](Self::accept) returns them (failed handshakes included,
    /// as errors).
    pub fn incoming(&self) -> impl Iterator<Item = Result<SocketConnection>> + '_ {
        std::iter::repeat_with(move || self.accept())
    }

    fn accept_pending_deadline(&self, deadline: Deadline) -> Result<PendingConnection> {
        loop {
            match self.accept_raw() {
                Ok(fd) => {
                    return Ok(PendingConnection {
                        fd,
                        limit: self.limit.clone(),
                        options: self.options.clone(),
                    })
                }
                Err(Error::Timeout) => {
                    if ipc_core::wait(&[&self.as_fd()], deadline.remaining())?.is_empty() {
                        return Err(Error::Timeout);
                    }
                }
                Err(e) => return Err(e),
            }
        }
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
        Listener::new(inner, address, Options::new(), None)
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
