//! Async forms on tokio (feature `tokio`): a [`Connection`] whose sends and
//! receives are awaited instead of blocking a thread, and joins of
//! children that await their exit. The bytes on the wire are the same as
//! the blocking forms', so an async end talks to a blocking end, or to
//! Python, exactly as before.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ipc_core::Result<()> {
//! use std::os::{fd::OwnedFd, unix::net::UnixStream};
//! use ipc_core::tokio::AsyncConnection;
//! use ipc_core::{Connection, FdStream};
//!
//! let (a, b) = UnixStream::pair()?;
//! let mut ours = AsyncConnection::new(Connection::new(FdStream::new(OwnedFd::from(a))?))?;
//! let mut theirs = Connection::new(FdStream::new(OwnedFd::from(b))?); // blocking
//! ours.send(&("ping", 1u32)).await?;
//! let (word, n): (String, u32) = theirs.recv()?;
//! theirs.send_bytes(format!("{word}-{n}").as_bytes())?;
//! assert_eq!(ours.recv_bytes().await?, b"ping-1");
//! # Ok(())
//! # }
//! ```
//!
//! # How it waits
//!
//! A duplicate of the descriptor is registered with tokio's reactor
//! (epoll; see [`Readiness`]). A receive tries the blocking form's receive
//! with a deadline that has already passed, which reads what is there
//! without waiting, and awaits readiness whenever it would have to wait
//! (once a read found the stream empty, it waits for the reactor's word
//! before trying again, as tokio's own streams do): the framing, the limits and
//! the hostile-input checks are the blocking form's own. A receive that
//! stops part-way keeps what it read, as a blocking receive that times
//! out does, so the next one goes on with the same message.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitStatus;

use ::tokio::io::unix::AsyncFd;
pub use ::tokio::io::Interest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::Header;
use crate::process::Child;
use crate::spawn::Spawned;
use crate::sys;
use crate::wait::Waitable;
use crate::{Connection, Deadline, Error, FdStream, Result, Transport};

/// Awaits `future` for at most `duration`: [`Error::Timeout`] after it, as
/// the blocking forms' `_timeout` methods say, so that code that handles
/// one handles the other. The same as `tokio::time::timeout`, which any of
/// this workspace's futures can be wrapped in too (every one of them is
/// cancel safe, or says what dropping it means).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use std::time::Duration;
/// use ipc_core::tokio::{timeout, AsyncConnection};
///
/// let (ours, _theirs) = std::os::unix::net::UnixStream::pair()?;
/// let conn = ipc_core::Connection::new(ipc_core::FdStream::new(ours.into())?);
/// let mut conn = AsyncConnection::new(conn)?;
/// let nothing = timeout(Duration::from_millis(10), conn.recv_bytes()).await;
/// assert!(matches!(nothing, Err(ipc_core::Error::Timeout)));
/// # Ok(())
/// # }
/// ```
pub async fn timeout<T>(
    duration: std::time::Duration,
    future: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    ::tokio::time::timeout(duration, future)
        .await
        .unwrap_or(Err(Error::Timeout))
}

/// A descriptor's readiness on tokio's reactor: the one way this
/// workspace waits for a descriptor in async code. Protocol steps written
/// for the blocking forms run with [`Deadline::Now`] (which reads or writes
/// what can be done at once, and says [`Error::Timeout`] where it would
/// have to wait), and [`until`](Self::until) reruns them each time the
/// descriptor becomes ready.
///
/// It registers a duplicate of the descriptor, which it owns: nothing
/// else can close or replace the registered descriptor while the reactor
/// knows it, and its readiness is the original's (both name one open
/// file).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// use std::io::{Read, Write};
/// use std::os::{fd::AsFd, unix::net::UnixStream};
/// use ipc_core::tokio::{Interest, Readiness};
///
/// let (mut a, mut b) = UnixStream::pair()?;
/// b.set_nonblocking(true)?;
/// let readiness = Readiness::new(b.as_fd(), Interest::READABLE)?;
/// a.write_all(b"hi")?;
/// let mut buf = [0u8; 2];
/// let n = readiness
///     .until(Interest::READABLE, || match (&b).read(&mut buf) {
///         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(ipc_core::Error::Timeout),
///         other => Ok(other?),
///     })
///     .await?;
/// assert_eq!(&buf[..n], b"hi");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Readiness {
    registered: AsyncFd<sys::Registered>,
}

impl Readiness {
    /// Registers a duplicate of `fd` with the current tokio runtime, for
    /// readiness of `interest`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one without its IO driver, as
    /// tokio's own types do.
    pub fn new(fd: BorrowedFd<'_>, interest: Interest) -> Result<Readiness> {
        Ok(Readiness {
            registered: sys::register(fd.try_clone_to_owned()?, interest)?,
        })
    }

    /// Runs `attempt` until it gives anything but [`Error::Timeout`]
    /// (which means "I would have to wait"), awaiting readiness for
    /// `interest` before each retry. The first try is at once, without
    /// the reactor's word: bytes may have arrived before the reactor ran
    /// to say so. Cancel safe if `attempt` keeps its progress outside
    /// itself (as the blocking forms' steps do).
    pub async fn until<T>(
        &self,
        interest: Interest,
        mut attempt: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        self.until_drained(interest, true, || attempt().map(|done| (done, false)))
            .await
    }

    /// [`until`](Self::until) for a reader that knows more: `try_first`
    /// is false when its last read found the descriptor empty (so a try
    /// before the reactor's word would only fail), and `attempt` says with
    /// its result whether its reads left the descriptor empty, in which
    /// case the readiness it consumed is cleared at once instead of by
    /// one more read that would fail. (Cleared only if the reactor has
    /// not said "ready" again since the attempt began.)
    pub(crate) async fn until_drained<T>(
        &self,
        interest: Interest,
        try_first: bool,
        mut attempt: impl FnMut() -> Result<(T, bool)>,
    ) -> Result<T> {
        if try_first {
            match attempt() {
                Err(Error::Timeout) => {}
                other => return other.map(|(done, _)| done),
            }
        }
        loop {
            let mut ready = self.registered.ready(interest).await?;
            match attempt() {
                // Nothing more to do now: the readiness was stale.
                Err(Error::Timeout) => ready.clear_ready(),
                Ok((done, drained)) => {
                    if drained {
                        ready.clear_ready();
                    }
                    return Ok(done);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the descriptor is ready for `interest` (or the reactor
    /// last said so and nothing has since found it otherwise). Cancel safe.
    pub async fn ready(&self, interest: Interest) -> Result<()> {
        self.registered.ready(interest).await?.retain_ready();
        Ok(())
    }
}

/// The registered duplicate, for the calls that `until` retries (an
/// `accept(2)` on a listening socket, say).
impl AsFd for Readiness {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.registered.get_ref().as_fd()
    }
}

/// A [`Connection`] over a pipe or a socket whose sends and receives are
/// awaited. Made from a blocking connection with [`new`](Self::new),
/// inside a tokio runtime (with its IO driver enabled). Any
/// [`Transport`] will do: ipc-pipe's and ipc-core's [`FdStream`], or
/// ipc-socket's socket stream, plain or TLS.
///
/// # Cancel safety
///
/// Every receive is cancel safe: dropping its future loses nothing, and
/// the next receive returns the same message, whole. A send is cancel safe
/// in the sense that matters for framing: dropped before it wrote
/// anything, nothing is sent; dropped after it started, the rest of the
/// message is kept here and goes out before the next message (or at
/// [`flush`](Self::flush)), so the peer never sees half a message.
pub struct AsyncConnection<S: Transport = FdStream> {
    conn: Connection<S>,
    /// A duplicate of the connection's descriptor, registered with the
    /// reactor: it is ours alone, so nothing can close or swap it while
    /// it is registered, and its readiness is the connection's (both name
    /// one open socket or pipe).
    registered: Readiness,
    /// The unsent tail of a message whose send stopped part-way, from
    /// `unsent_at` on.
    unsent: Vec<u8>,
    unsent_at: usize,
    /// [`readable`](Self::readable) saw new bytes on the descriptor by
    /// looking itself, before the reactor did: the next receive tries to
    /// read before it waits for the reactor's word, which may not come
    /// until the task yields (a receive polled once after `readable`
    /// must still take what `readable` reported).
    seen_arrive: std::sync::atomic::AtomicBool,
}

impl<S: Transport> std::fmt::Debug for AsyncConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConnection")
            .field("conn", &self.conn)
            .field("unsent", &(self.unsent.len() - self.unsent_at))
            .finish()
    }
}

impl<S: Transport> AsyncConnection<S> {
    /// Registers `conn` with the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one without its IO driver, as
    /// tokio's own types do.
    pub fn new(conn: Connection<S>) -> Result<AsyncConnection<S>> {
        let interest = match (conn.readable(), conn.writable()) {
            (true, false) => Interest::READABLE,
            (false, true) => Interest::WRITABLE,
            _ => Interest::READABLE | Interest::WRITABLE,
        };
        Ok(AsyncConnection {
            registered: Readiness::new(conn.as_fd(), interest)?,
            conn,
            unsent: Vec::new(),
            unsent_at: 0,
            seen_arrive: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The blocking connection back, once every message is out (a send
    /// that was dropped part-way is finished first).
    pub async fn into_blocking(mut self) -> Result<Connection<S>> {
        self.flush().await?;
        Ok(self.conn)
    }

    /// The blocking connection, for its settings (limits) and identity.
    pub fn get_ref(&self) -> &Connection<S> {
        &self.conn
    }

    /// Sets the largest message this end sends or receives.
    pub fn set_max_message_size(&mut self, bytes: u64) {
        self.conn.set_max_message_size(bytes);
    }

    /// The blocking connection, mutably: for settings of it or of its
    /// stream. Bytes sent or received through it directly bypass the
    /// rest of a send that was dropped part-way, which then arrives after
    /// them.
    pub fn get_mut(&mut self) -> &mut Connection<S> {
        &mut self.conn
    }

    // ----- receiving -----------------------------------------------------

    /// Receives the next message. Cancel safe.
    ///
    /// The connection's [`read_timeout`](Connection::read_timeout), if it
    /// has one, bounds every receive, as it does the blocking ones.
    pub async fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        let max = self.get_ref().max_message_size();
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        self.receive(|conn| conn.recv_bytes_max_until(max, Deadline::Now))
            .await
    }

    /// Receives the next message into `buf` and gives its length, without
    /// allocating; a message longer than `buf` is
    /// [`Error::BufferTooShort`] and stays unread. Cancel safe.
    pub async fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.receive(|conn| conn.recv_into_deadline(buf, Deadline::Now))
            .await
    }

    /// Receives and decodes the next message. Cancel safe.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.receive(|conn| conn.recv_typed(Deadline::Now)).await
    }

    /// Receives a message that has arrived whole, without waiting:
    /// [`Error::Empty`] if there is none (the blocking form's
    /// `try_recv_bytes`). A receive future, polled once, may miss a message
    /// that arrived after the last read found the stream empty and before
    /// the reactor saw it (it waits for the reactor's word, as tokio's own
    /// streams do, rather than spend a system call on every receive);
    /// this looks at the stream itself.
    pub fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.conn.try_recv_bytes()
    }

    /// Receives and decodes a message that has arrived whole, without
    /// waiting: [`Error::Empty`] if there is none. See
    /// [`try_recv_bytes`](Self::try_recv_bytes).
    pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.conn.try_recv()
    }

    /// Waits until something has arrived that a receive has not seen: a
    /// whole message waiting here, or new bytes (or the end of the stream)
    /// on the descriptor, which a receive then takes, whole or in part.
    /// Cancel safe. After a [`try_recv_bytes`](Self::try_recv_bytes) that
    /// found only part of a message, it waits for more, rather than
    /// saying again that the part is there.
    pub async fn readable(&self) -> Result<()> {
        if !self.conn.readable() {
            return Err(Error::Unsupported("this end of the pipe cannot receive"));
        }
        let conn = &self.conn;
        let seen_arrive = &self.seen_arrive;
        self.registered
            .until(Interest::READABLE, || {
                if conn.holds_whole_message() || conn.get_ref().has_buffered_input() {
                    return Ok(());
                }
                if crate::wait_fds(&[(conn.as_fd(), crate::Interest::Read)], Deadline::Now)?[0] {
                    seen_arrive.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                Err(Error::Timeout)
            })
            .await
    }

    /// Runs `attempt` (a receive with a deadline already passed) until it
    /// does not time out, awaiting readiness in between.
    async fn receive<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Connection<S>) -> Result<T>,
    ) -> Result<T> {
        let limit = self.conn.read_timeout();
        let conn = &mut self.conn;
        // A try before the reactor's word finds what arrived before the
        // reactor ran (a receive polled once takes it), unless the last
        // read already found the stream empty and nothing waits here.
        let try_first = !conn.get_ref().drained()
            || conn.holds_input()
            || self
                .seen_arrive
                .swap(false, std::sync::atomic::Ordering::Relaxed);
        let received = self
            .registered
            .until_drained(Interest::READABLE, try_first, || {
                let received = attempt(conn)?;
                // Empty after a whole message with nothing left over here:
                // the next receive waits for the reactor.
                let drained = conn.get_ref().drained() && !conn.holds_input();
                Ok((received, drained))
            });
        match limit {
            Some(limit) => timeout(limit, received).await,
            None => received.await,
        }
    }

    /// Runs `step`, a piece of protocol over the blocking connection that
    /// does not wait (its sends and receives use [`Deadline::Now`]), until
    /// it gives anything but [`Error::Timeout`], awaiting readiness in
    /// between: readable, or writable too while the stream holds bytes it
    /// could not send yet. For protocols on top of the framing, such as a
    /// handshake. Cancel safe if `step` keeps its state outside itself.
    pub async fn drive<T>(
        &mut self,
        mut step: impl FnMut(&mut Connection<S>) -> Result<T>,
    ) -> Result<T> {
        // The rest of a send dropped part-way goes first, or the step's
        // frames would land in the middle of it.
        self.flush().await?;
        loop {
            let interest = if self.conn.get_ref().wants_write() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let conn = &mut self.conn;
            let outcome = self
                .registered
                .until(interest, || match step(conn) {
                    // Wanting to send where it did not before changes what
                    // to wait for.
                    Err(Error::Timeout)
                        if interest == Interest::READABLE && conn.get_ref().wants_write() =>
                    {
                        Ok(None)
                    }
                    outcome => outcome.map(Some),
                })
                .await?;
            if let Some(done) = outcome {
                return Ok(done);
            }
        }
    }

    // ----- sending -------------------------------------------------------

    /// Sends `buf` as one message. See the type's docs for cancel safety.
    ///
    /// The connection's [`write_timeout`](Connection::write_timeout), if
    /// it has one, bounds every send; a send that runs out of it is one
    /// dropped part-way (the rest of its message goes out before the next).
    pub async fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.send_bytes_batch(&[buf]).await
    }

    /// Sends each of `messages` as one message, in order, handing up to
    /// [`BATCH_LEN`](crate::BATCH_LEN) of them to the kernel in one
    /// vectored write, as the blocking form does. Cancel safe as a send
    /// is, message by message: dropped part-way, the messages sent are a
    /// prefix of `messages`, each whole.
    pub async fn send_bytes_batch(&mut self, messages: &[&[u8]]) -> Result<()> {
        match self.conn.write_timeout() {
            Some(limit) => timeout(limit, self.send_batch(messages)).await,
            None => self.send_batch(messages).await,
        }
    }

    async fn send_batch(&mut self, messages: &[&[u8]]) -> Result<()> {
        self.flush().await?;
        if !self.get_ref().writable() {
            return Err(Error::Unsupported("this end of the pipe cannot send"));
        }
        let limit = self.get_ref().max_message_size();
        if let Some(big) = messages.iter().find(|m| m.len() as u64 > limit) {
            return Err(Error::TooLarge {
                size: big.len() as u64,
                limit,
            });
        }
        if let [message] = messages {
            let header = Header::new(message.len() as u64);
            return self
                .send_parts(&mut [IoSlice::new(header.as_bytes()), IoSlice::new(message)])
                .await;
        }
        for chunk in messages.chunks(crate::BATCH_LEN) {
            let headers: Vec<Header> = chunk.iter().map(|m| Header::new(m.len() as u64)).collect();
            let mut parts: Vec<IoSlice<'_>> = headers
                .iter()
                .zip(chunk)
                .flat_map(|(h, m)| [IoSlice::new(h.as_bytes()), IoSlice::new(m)])
                .collect();
            self.send_parts(&mut parts).await?;
        }
        Ok(())
    }

    /// Sends `parts`, whole messages with their headers, as one run of
    /// bytes that a dropped future never cuts short.
    async fn send_parts(&mut self, parts: &mut [IoSlice<'_>]) -> Result<()> {
        let mut rest = parts;
        // Until the first byte is out, a dropped send has sent nothing.
        let first = self
            .registered
            .until(Interest::WRITABLE, || write_now(&mut self.conn, rest))
            .await?;
        IoSlice::advance_slices(&mut rest, first);
        while !rest.is_empty() {
            match write_now(&mut self.conn, rest) {
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(Error::Timeout) => {
                    // From here on the rest is ours to send, whatever
                    // happens to this future.
                    for part in rest.iter() {
                        self.unsent.extend_from_slice(part);
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        // What the stream accepted but holds (TLS records) goes out too;
        // dropped here, the next send or flush sends it first.
        self.flush().await
    }

    /// Encodes `message` and sends it as one message. See the type's docs
    /// for cancel safety.
    pub async fn send<T: Serialize + ?Sized>(&mut self, message: &T) -> Result<()> {
        let mut bytes = Vec::new();
        self.conn.codec().encode_into(message, &mut bytes)?;
        self.send_bytes(&bytes).await
    }

    /// Sends what is left of a message whose send future was dropped
    /// part-way, and whatever the stream still holds of what it accepted
    /// (a TLS session's records). Cancel safe: what it does not send stays
    /// for the next call.
    pub async fn flush(&mut self) -> Result<()> {
        while self.unsent_at < self.unsent.len() {
            let unsent = &self.unsent[self.unsent_at..];
            let conn = &mut self.conn;
            self.unsent_at += self
                .registered
                .until(Interest::WRITABLE, || {
                    write_now(conn, &[IoSlice::new(unsent)])
                })
                .await?;
        }
        self.unsent.clear();
        self.unsent_at = 0;
        let stream = self.conn.get_mut();
        self.registered
            .until(Interest::WRITABLE, || Ok(stream.flush(Deadline::Now)?))
            .await
    }
}

/// Writes what `conn`'s stream takes now of `parts`; [`Error::Timeout`] if
/// it takes nothing.
fn write_now<S: Transport>(conn: &mut Connection<S>, parts: &[IoSlice<'_>]) -> Result<usize> {
    match conn.get_mut().write_vectored(parts, Deadline::Now) {
        Ok(0) => Err(Error::Closed),
        Ok(n) => Ok(n),
        Err(e) => Err(e.into()),
    }
}

impl Child {
    /// Awaits the child's exit and gives its status: [`join`](Self::join)
    /// without a blocked thread. Cancel safe: dropped before the exit, the
    /// child is still there to join.
    pub async fn join_async(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_join()? {
            return Ok(status);
        }
        let exit = Readiness::new(self.wait_fd(), Interest::READABLE)?;
        exit.until(Interest::READABLE, || {
            self.try_join()?.ok_or(Error::Timeout)
        })
        .await
    }
}

impl<R: DeserializeOwned> Spawned<R> {
    /// Awaits the entry's result: [`join`](Self::join) without a blocked
    /// thread. Not cancel safe: dropping the future drops the child, which
    /// kills it.
    pub async fn join_async(self) -> Result<R> {
        let Spawned {
            mut child, socket, ..
        } = self;
        let mut socket = AsyncConnection::new(socket)?;
        let outcome = match socket.recv_bytes().await {
            Err(e) if !e.is_closed() => return Err(e),
            outcome => outcome,
        };
        drop(socket);
        let status = child.join_async().await.map(Some);
        crate::spawn::conclude(outcome, status)
    }
}
