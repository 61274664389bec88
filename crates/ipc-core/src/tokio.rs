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
//! The descriptor is registered with tokio's reactor (epoll). A receive
//! tries the blocking form's receive with a deadline that has already
//! passed, which reads what is there without waiting, and awaits
//! readiness whenever it would have to wait: the framing, the limits and
//! the hostile-input checks are the blocking form's own. A receive that
//! stops part-way keeps what it read, as a blocking receive that times
//! out does, so the next one goes on with the same message.

use std::io::IoSlice;
use std::process::ExitStatus;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::Header;
use crate::process::Child;
use crate::spawn::Spawned;
use crate::sys::{self, Watched};
use crate::wait::Waitable;
use crate::{codec, Connection, Deadline, Error, FdStream, Result, Transport};

/// A [`Connection`] over a pipe or a socket whose sends and receives are
/// awaited. Made from a blocking connection with [`new`](Self::new),
/// inside a tokio runtime (with its IO driver enabled).
///
/// # Cancel safety
///
/// Every receive is cancel safe: dropping its future loses nothing, and
/// the next receive returns the same message, whole. A send is cancel safe
/// in the sense that matters for framing: dropped before it wrote
/// anything, nothing is sent; dropped after it started, the rest of the
/// message is kept here and goes out before the next message (or at
/// [`flush`](Self::flush)), so the peer never sees half a message.
pub struct AsyncConnection {
    /// The connection, registered with the reactor.
    registered: AsyncFd<Watched<Connection<FdStream>>>,
    /// The unsent tail of a message whose send stopped part-way, from
    /// `unsent_at` on.
    unsent: Vec<u8>,
    unsent_at: usize,
}

impl std::fmt::Debug for AsyncConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConnection")
            .field("conn", &self.registered.get_ref().0)
            .field("unsent", &(self.unsent.len() - self.unsent_at))
            .finish()
    }
}

impl AsyncConnection {
    /// Registers `conn` with the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or in one without its IO driver, as
    /// tokio's own types do.
    pub fn new(conn: Connection<FdStream>) -> Result<AsyncConnection> {
        let interest = match (conn.readable(), conn.writable()) {
            (true, false) => Interest::READABLE,
            (false, true) => Interest::WRITABLE,
            _ => Interest::READABLE | Interest::WRITABLE,
        };
        Ok(AsyncConnection {
            registered: sys::watch(conn, interest)?,
            unsent: Vec::new(),
            unsent_at: 0,
        })
    }

    /// The blocking connection back, once every message is out (a send
    /// that was dropped part-way is finished first).
    pub async fn into_blocking(mut self) -> Result<Connection<FdStream>> {
        self.flush().await?;
        Ok(self.registered.into_inner().0)
    }

    /// The blocking connection, for its settings (limits) and identity.
    pub fn get_ref(&self) -> &Connection<FdStream> {
        &self.registered.get_ref().0
    }

    /// Sets the largest message this end sends or receives.
    pub fn set_max_message_size(&mut self, bytes: u64) {
        self.conn_mut().set_max_message_size(bytes);
    }

    fn conn_mut(&mut self) -> &mut Connection<FdStream> {
        &mut self.registered.get_mut().0
    }

    // ----- receiving -----------------------------------------------------

    /// Receives the next message. Cancel safe.
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

    /// Waits until a receive would not wait: a message (or part of one, or
    /// the end of the stream) has arrived. Cancel safe.
    pub async fn readable(&self) -> Result<()> {
        if self.get_ref().ready_without_waiting() {
            return Ok(());
        }
        self.registered.readable().await?.retain_ready();
        Ok(())
    }

    /// Runs `attempt` (a receive with a deadline already passed) until it
    /// does not time out, awaiting readiness in between.
    async fn receive<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Connection<FdStream>) -> Result<T>,
    ) -> Result<T> {
        // A first try without the reactor's word: the bytes may be there
        // (or buffered here) before the reactor has run to say so, and a
        // receive polled once must take them.
        match attempt(self.conn_mut()) {
            Err(Error::Timeout) => {}
            other => return other,
        }
        loop {
            let mut ready = self.registered.readable_mut().await?;
            match attempt(&mut ready.get_inner_mut().0) {
                // Nothing more to read now: the readiness was stale.
                Err(Error::Timeout) => ready.clear_ready(),
                other => return other,
            }
        }
    }

    // ----- sending -------------------------------------------------------

    /// Sends `buf` as one message. See the type's docs for cancel safety.
    pub async fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.flush().await?;
        if !self.get_ref().writable() {
            return Err(Error::Unsupported("this end of the pipe cannot send"));
        }
        let len = buf.len() as u64;
        if len > self.get_ref().max_message_size() {
            return Err(Error::TooLarge {
                size: len,
                limit: self.get_ref().max_message_size(),
            });
        }
        let header = Header::new(len);
        let mut parts = [IoSlice::new(header.as_bytes()), IoSlice::new(buf)];
        let mut rest = &mut parts[..];
        let mut started = false;
        while !rest.is_empty() {
            match self.write_now(rest) {
                Ok(n) => {
                    started = true;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(Error::Timeout) if started => {
                    // From here on the rest is ours to send, whatever
                    // happens to this future.
                    for part in rest.iter() {
                        self.unsent.extend_from_slice(part);
                    }
                    return self.flush().await;
                }
                Err(Error::Timeout) => self.registered.writable().await?.clear_ready(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Encodes `message` and sends it as one message. See the type's docs
    /// for cancel safety.
    pub async fn send<T: Serialize + ?Sized>(&mut self, message: &T) -> Result<()> {
        let mut bytes = Vec::new();
        codec::encode_into(message, &mut bytes)?;
        self.send_bytes(&bytes).await
    }

    /// Sends what is left of a message whose send future was dropped
    /// part-way. Cancel safe: what it does not send stays for the next call.
    pub async fn flush(&mut self) -> Result<()> {
        while self.unsent_at < self.unsent.len() {
            let unsent = std::mem::take(&mut self.unsent);
            let result = self.write_now(&[IoSlice::new(&unsent[self.unsent_at..])]);
            self.unsent = unsent;
            match result {
                Ok(n) => self.unsent_at += n,
                Err(Error::Timeout) => self.registered.writable().await?.clear_ready(),
                Err(e) => return Err(e),
            }
        }
        self.unsent.clear();
        self.unsent_at = 0;
        Ok(())
    }

    /// Writes what the stream takes now of `parts`; [`Error::Timeout`] if
    /// it takes nothing.
    fn write_now(&mut self, parts: &[IoSlice<'_>]) -> Result<usize> {
        match self
            .conn_mut()
            .get_mut()
            .write_vectored(parts, Deadline::Now)
        {
            Ok(0) => Err(Error::Closed),
            Ok(n) => Ok(n),
            Err(e) => Err(e.into()),
        }
    }
}

impl Child {
    /// Awaits the child's exit and gives its status: [`join`](Self::join)
    /// without a blocked thread. Cancel safe: dropped before the exit, the
    /// child is still there to join.
    pub async fn join_async(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_join()? {
                return Ok(status);
            }
            let exited = sys::watch(self.wait_fd(), Interest::READABLE)?;
            let _ = exited.readable().await?;
        }
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
