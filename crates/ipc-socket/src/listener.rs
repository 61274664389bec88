//! [`Listener`]: Python's `multiprocessing.connection.Listener`, accepting
//! authenticated framed connections on a Unix path, an abstract name or a
//! TCP address.
//!
//! See [`Listener`] for how it runs many clients' handshakes at once.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipc_core::{Deadline, Error, Interest, Result, Transport};

use crate::address::Address;
use crate::auth::{ConnectionHandshake, ServerHandshake};
use crate::options::Options;
use crate::stream::{Limit, Slot, SocketStream};

/// How long accepting pauses after `accept(2)` failed for want of
/// resources.
pub(crate) const ACCEPT_PAUSE: Duration = Duration::from_millis(50);
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
/// # Handshakes in progress
///
/// Python's `Listener.accept` runs each client's handshake to its end
/// before it looks at the next client, so one client that connects and
/// says nothing holds up everyone else. Here the thread in `accept` runs
/// every handshake in progress at once: it polls the listening socket and
/// all of them, accepts whoever arrives, takes each handshake as far as
/// the bytes received allow (never waiting on one peer), and returns the
/// first connection that is through. Handshakes have their own bound
/// ([`Options::max_handshakes`]; clients beyond it wait in the listen
/// backlog) and take a place of [`Options::max_connections`] only once
/// they are through; a stalled one is dropped at its handshake deadline.
/// (While `accept` waits for a free place, nothing runs the handshakes in
/// progress: they wait too, and may reach their deadline.)
///
/// Threads that call `accept` on the same listener at once take turns
/// running the handshakes; a connection that one of them finishes goes to
/// whichever caller asks first.
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
    /// Whether the listening socket is non-blocking (one this process
    /// bound); an inherited one is left as its owner made it.
    nonblocking: bool,
    handshakes: Mutex<Handshakes>,
    /// Signalled when a caller stops running the handshakes.
    turn: Condvar,
    /// Written to wake the caller running the handshakes when a finished
    /// connection is put back for others to take.
    wake: (UnixStream, UnixStream),
}

/// The handshakes a listener has in progress, and their outcomes not yet
/// handed to a caller.
#[derive(Debug, Default)]
struct Handshakes {
    /// A caller of `accept` is running them (outside the lock).
    running: bool,
    in_progress: Vec<InProgress>,
    finished: VecDeque<Result<SocketConnection>>,
    /// After `accept(2)` failed for want of resources (descriptors,
    /// memory), the listening socket is left alone until then instead of
    /// failing again at once.
    accept_paused_until: Option<Instant>,
}

/// One client between `accept(2)` and the end of its handshakes.
#[derive(Debug)]
struct InProgress {
    conn: SocketConnection,
    handshake: ConnectionHandshake,
    deadline: Deadline,
}

/// Puts the handshakes back and hands the turn on when a round ends, even
/// by a panic, so that the listener stays usable.
struct Turn<'a> {
    listener: &'a Listener,
    in_progress: Vec<InProgress>,
    finished: Vec<Result<SocketConnection>>,
    accept_paused_until: Option<Instant>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut shared = self.listener.lock_handshakes();
        shared.running = false;
        shared.in_progress.append(&mut self.in_progress);
        shared.finished.extend(self.finished.drain(..));
        shared.accept_paused_until = self.accept_paused_until;
        self.listener.turn.notify_all();
    }
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

/// A connection accepted but not yet authenticated, for callers that run
/// each handshake on a thread of their own (`accept` runs them all on its
/// caller's thread instead).
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
            ServerHandshake::new()?.run_to_end(&mut conn, key, deadline)?;
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
        // Accepting never blocks: the accept loops wait in poll, and
        // another thread or process taking the client first is harmless.
        // (The flag belongs to the socket, so a process it is handed to
        // sees it too.)
        match &inner {
            Inner::Unix(listener) => listener.set_nonblocking(true)?,
            Inner::Tcp(listener) => listener.set_nonblocking(true)?,
        }
        let listener = Listener::new(inner, address, options, remove_on_drop, true)?;
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
        nonblocking: bool,
    ) -> Result<Listener> {
        let wake = UnixStream::pair()?;
        wake.0.set_nonblocking(true)?;
        wake.1.set_nonblocking(true)?;
        Ok(Listener {
            inner,
            address,
            limit: options.max_connections.map(Limit::new),
            options,
            remove_on_drop,
            nonblocking,
            handshakes: Mutex::default(),
            turn: Condvar::new(),
            wake,
        })
    }

    /// The address clients connect to (with the real port if bound to 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The options it was bound with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Its connection limit, if it has one.
    #[cfg(feature = "tokio")]
    pub(crate) fn limit(&self) -> Option<&Arc<Limit>> {
        self.limit.as_ref()
    }

    /// Returns the next connection through its handshakes, waiting as long
    /// as it takes. Many clients' handshakes run at once (see
    /// [`Listener`]), so a client that stalls holds up nobody. A client that
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
                    self.turn.notify_all();
                    // A caller running the handshakes is in poll: wake it
                    // to hand this one out.
                    let _ = (&self.wake.0).write(&[1]);
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
            let mut turn = Turn {
                listener: self,
                in_progress: std::mem::take(&mut shared.in_progress),
                finished: Vec::new(),
                accept_paused_until: shared.accept_paused_until,
            };
            drop(shared);
            let round = self.run_handshakes(&mut turn, deadline, stop);
            drop(turn);
            shared = self.lock_handshakes();
            match round? {
                Round::Stopped => return Ok(None),
                Round::TimedOut if shared.finished.is_empty() => return Err(Error::Timeout),
                Round::TimedOut | Round::Again => {}
            }
        }
    }

    /// One round: waits until the listening socket, a handshake in
    /// progress, the wake-up socket or `stop` is ready, or the earliest
    /// deadline passes, and does what can be done without waiting.
    fn run_handshakes(
        &self,
        turn: &mut Turn<'_>,
        deadline: Deadline,
        stop: Option<BorrowedFd<'_>>,
    ) -> Result<Round> {
        let in_progress = &mut turn.in_progress;
        let earliest = in_progress
            .iter()
            .fold(deadline, |earliest, h| earliest.min(h.deadline));
        let now = Instant::now();
        let paused = turn.accept_paused_until.filter(|&until| until > now);
        turn.accept_paused_until = paused;
        // At the bound (or after accept ran out of resources) new clients
        // are left in the backlog: the listening socket is not watched,
        // or it would be ready all along.
        let watch_listener = in_progress.len() < self.options.max_handshakes && paused.is_none();
        let earliest = match paused {
            Some(until) => earliest.min(Deadline::At(until)),
            None => earliest,
        };
        // Decrypted bytes waiting in a TLS session do not show on its
        // socket: such a handshake goes on without waiting.
        let buffered = in_progress
            .iter()
            .any(|h| h.conn.get_ref().has_buffered_input());
        let wait = if buffered { Deadline::Now } else { earliest };
        let mut fds = vec![(self.wake.1.as_fd(), Interest::Read)];
        fds.extend(stop.map(|fd| (fd, Interest::Read)));
        let first_handshake = fds.len();
        fds.extend(in_progress.iter().map(|h| {
            // A TLS handshake that could not send all of its flight waits
            // for room as well.
            let interest = if h.conn.get_ref().wants_write() {
                Interest::ReadOrWrite
            } else {
                Interest::Read
            };
            (h.conn.as_fd(), interest)
        }));
        if watch_listener {
            fds.push((self.as_fd(), Interest::Read));
        }
        let ready = ipc_core::wait_fds(&fds, wait)?;
        drop(fds);
        if ready[0] {
            let mut drain = [0u8; 64];
            while matches!((&self.wake.1).read(&mut drain), Ok(n) if n > 0) {}
        }
        if stop.is_some() && ready[1] {
            return Ok(Round::Stopped);
        }
        let listener_ready = watch_listener && ready[ready.len() - 1];
        // Back to front, so that taking one out keeps the others' indices.
        // A TLS handshake step costs real CPU (a signature): once the
        // caller's deadline has passed, the round stops after its first
        // step, and the handshakes still ready (their sockets stay so) go
        // on in the next round.
        let mut stepped = false;
        for i in (0..in_progress.len()).rev() {
            if stepped && deadline.has_passed() {
                break;
            }
            if ready[first_handshake + i] || in_progress[i].conn.get_ref().has_buffered_input() {
                self.advance(in_progress, i, &mut turn.finished);
                stepped = true;
            }
        }
        if listener_ready && !(stepped && deadline.has_passed()) {
            self.accept_arrivals(turn, deadline);
        }
        let in_progress = &mut turn.in_progress;
        let before = in_progress.len();
        in_progress.retain(|h| !h.deadline.has_passed());
        for _ in in_progress.len()..before {
            turn.finished.push(Err(Error::Authentication(
                "the peer did not finish the handshake in time".into(),
            )));
        }
        Ok(if !turn.finished.is_empty() || !deadline.has_passed() {
            Round::Again
        } else {
            Round::TimedOut
        })
    }

    /// Takes the clients waiting in the backlog and starts their
    /// handshakes.
    fn accept_arrivals(&self, turn: &mut Turn<'_>, deadline: Deadline) {
        // Clients beyond the bound wait in the listen backlog; past the
        // caller's deadline, the others wait for the next round.
        let mut first = true;
        while turn.in_progress.len() < self.options.max_handshakes
            && (std::mem::take(&mut first) || !deadline.has_passed())
        {
            let fd = match self.accept_raw() {
                Ok(fd) => fd,
                Err(Error::Timeout) => return,
                Err(e) => {
                    // Out of descriptors or memory: the backlog stays
                    // readable, so give the process a moment instead of
                    // failing in a loop.
                    turn.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    turn.finished.push(Err(e));
                    return;
                }
            };
            match self.start_handshake(fd) {
                Ok(handshake) => {
                    turn.in_progress.push(handshake);
                    let last = turn.in_progress.len() - 1;
                    self.advance(&mut turn.in_progress, last, &mut turn.finished);
                }
                Err(e) => turn.finished.push(Err(e)),
            }
        }
    }

    fn start_handshake(&self, fd: OwnedFd) -> Result<InProgress> {
        let options = &self.options;
        let stream = match &options.tls_server {
            Some(tls) => SocketStream::tls_server_unstarted(fd, tls)?,
            None => SocketStream::plain(fd, None)?,
        };
        Ok(InProgress {
            conn: options.connection(stream),
            handshake: ConnectionHandshake::server(options)?,
            deadline: Deadline::after(options.handshake_timeout),
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
        let key = self.options.authkey.as_deref();
        match handshake.handshake.advance(&mut handshake.conn, key) {
            Ok(false) => {}
            Ok(true) => finished.push(Ok(in_progress.swap_remove(i).conn)),
            Err(e) => {
                in_progress.swap_remove(i);
                finished.push(Err(e));
            }
        }
    }

    /// One `accept(2)` that does not wait; [`Error::Timeout`] if nobody is
    /// waiting.
    fn accept_raw(&self) -> Result<OwnedFd> {
        accept_now(self.as_fd(), self.accepting())
    }

    /// What `accept_now` needs to know of this listener.
    pub(crate) fn accepting(&self) -> Accepting {
        Accepting {
            tcp: matches!(self.inner, Inner::Tcp(_)),
            nonblocking: self.nonblocking,
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
        // A pending connection holds its place from here on: handshakes
        // that the caller runs on threads of its own are bounded by the
        // connection limit.
        let slot = match &self.limit {
            Some(limit) => Some(limit.take(deadline).ok_or(Error::Timeout)?),
            None => None,
        };
        loop {
            match self.accept_raw() {
                Ok(fd) => {
                    return Ok(PendingConnection {
                        fd,
                        slot,
                        options: self.options.clone(),
                    })
                }
                Err(Error::Timeout) => {
                    if !ipc_core::wait_fds(&[(self.as_fd(), Interest::Read)], deadline)?[0] {
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
        // A socket some other program made is left as it is; a blocking one
        // is only accepted from once poll says a client waits.
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let nonblocking =
            nix::fcntl::OFlag::from_bits_truncate(flags).contains(nix::fcntl::OFlag::O_NONBLOCK);
        let inner = match address {
            Address::Tcp(..) => Inner::Tcp(TcpListener::from(fd)),
            _ => Inner::Unix(UnixListener::from(fd)),
        };
        Listener::new(inner, address, Options::new(), None, nonblocking)
    }
}

/// What kind of listening socket `accept_now` takes from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Accepting {
    tcp: bool,
    /// Whether the listening socket is non-blocking; a blocking one (which
    /// another program made) is only accepted from once poll says a client
    /// waits.
    nonblocking: bool,
}

/// One `accept(2)` that does not wait; [`Error::Timeout`] if nobody is
/// waiting. The connection is blocking, closed on exec, and without
/// Nagle's delay when it is TCP.
pub(crate) fn accept_now(listening: BorrowedFd<'_>, kind: Accepting) -> Result<OwnedFd> {
    use rustix::io::Errno;
    if !kind.nonblocking && !ipc_core::wait_fds(&[(listening, Interest::Read)], Deadline::Now)?[0] {
        return Err(Error::Timeout);
    }
    let tcp = kind.tcp;
    loop {
        return match rustix::net::accept_with(listening, rustix::net::SocketFlags::CLOEXEC) {
            Ok(fd) => {
                if tcp {
                    rustix::net::sockopt::set_tcp_nodelay(&fd, true)
                        .map_err(std::io::Error::from)?;
                }
                Ok(fd)
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => Err(Error::Timeout),
            Err(e) => Err(std::io::Error::from(e).into()),
        };
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
