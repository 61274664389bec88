//! The contracts every mechanism of this workspace shares: one [`Error`]
//! type, the typed [`Sender`]/[`Receiver`] traits over serde values with
//! the bytes-level [`ByteSender`]/[`ByteReceiver`] beneath them, the stream
//! framing of Python's `multiprocessing.connection` ([`frame`]), the
//! framed [`Connection`] that pipes and sockets share, [`wait`] over many
//! connections, and child processes that receive IPC handles ([`process`])
//! and run registered functions by Python's three start methods
//! ([`spawn`], [`forkserver`], fork).
//!
//! ```
//! use ipc_core::process::Process;
//! use std::{os::fd::OwnedFd, os::unix::net::UnixStream};
//! use ipc_core::{Connection, FdStream};
//!
//! let (a, b) = UnixStream::pair()?;
//! let mut parent = Connection::new(FdStream::new(OwnedFd::from(a))?);
//! let mut child_end = Connection::new(FdStream::new(OwnedFd::from(b))?);
//!
//! // Python: Process(target=f, args=(child_conn,)).start()
//! let mut child = Process::new().pass("conn", &child_end)?.fork(move || {
//!     let n: u64 = child_end.recv()?;
//!     child_end.send(&(n * 2))
//! })?;
//! parent.send(&21u64)?;
//! assert_eq!(parent.recv::<u64>()?, 42);
//! assert!(child.join()?.success());
//! # Ok::<(), ipc_core::Error>(())
//! ```
#![deny(unsafe_code)]

pub mod codec;
mod connection;
mod deadline;
mod error;
pub mod forkserver;
pub mod frame;
#[cfg(feature = "pickle")]
pub mod pickle;
pub mod process;
pub mod spawn;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;
mod transport;
mod wait;

use std::time::Duration;

pub use codec::Codec;
pub use connection::{Connection, BATCH_LEN, DEFAULT_MAX_MESSAGE_SIZE};
pub use deadline::Deadline;
pub use error::{Error, Mismatch, Property, PutError, Result};
pub use transport::{FdKind, FdStream, Transport};
pub use wait::{wait, wait_fds, Interest, Waitable};

/// Sends raw messages: each call is one message, received whole.
pub trait ByteSender {
    /// Sends `buf` as one message.
    fn send_bytes(&mut self, buf: &[u8]) -> Result<()>;

    /// Sends each of `messages` as one message, in order. Mechanisms that
    /// can hand many messages to the kernel at once (a connection writes
    /// them with one vectored call per few hundred) override this; the
    /// receiver sees the same messages as from separate sends.
    fn send_bytes_batch(&mut self, messages: &[&[u8]]) -> Result<()> {
        messages
            .iter()
            .try_for_each(|message| self.send_bytes(message))
    }
}

/// Receives raw messages.
pub trait ByteReceiver {
    /// Waits for the next message.
    fn recv_bytes(&mut self) -> Result<Vec<u8>>;
    /// Waits up to `timeout` for the next message ([`Error::Timeout`]).
    fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>>;
    /// Takes a message that is there now, or returns [`Error::Empty`].
    fn try_recv_bytes(&mut self) -> Result<Vec<u8>>;
    /// Waits for the next message and copies it into `buf` without
    /// allocating; [`Error::BufferTooShort`] leaves it unread.
    fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize>;
}

/// Sends typed messages (serde values, encoded with postcard).
///
/// Written against this trait, code works with a pipe, a queue or a socket:
///
/// ```
/// fn report<S: ipc_core::Sender<(String, u32)>>(out: &mut S) -> ipc_core::Result<()> {
///     out.send(&("done".to_string(), 3))
/// }
/// ```
pub trait Sender<T: ?Sized> {
    /// Sends one message.
    fn send(&mut self, msg: &T) -> Result<()>;
}

/// Receives typed messages.
pub trait Receiver<T> {
    /// Waits for the next message.
    fn recv(&mut self) -> Result<T>;
    /// Waits up to `timeout` for the next message ([`Error::Timeout`]).
    fn recv_timeout(&mut self, timeout: Duration) -> Result<T>;
    /// Takes a message that is there now, or returns [`Error::Empty`].
    fn try_recv(&mut self) -> Result<T>;
}

/// A connection crosses to a child as its stream's handle plus its own
/// direction, size limit and codec: the text is `r<0|1>w<0|1>m<max>`, then
/// `c<codec>` unless the codec is postcard, then a space and the stream's
/// own text.
impl<S: Transport + process::Inheritable> process::Inheritable for Connection<S> {
    fn handle(&self) -> process::Handle<'_> {
        let stream = self.get_ref().handle();
        process::Handle {
            fds: stream.fds,
            text: format!(
                "r{}w{}m{}{} {}",
                u8::from(self.readable()),
                u8::from(self.writable()),
                self.max_message_size(),
                if self.codec() == Codec::Postcard {
                    String::new()
                } else {
                    format!("c{}", self.codec().name())
                },
                stream.text
            ),
        }
    }

    fn from_inherited(inherited: process::Inherited) -> Result<Self> {
        let bad = || Error::InvalidArgument("malformed connection handle");
        let (own, stream_text) = inherited.text.split_once(' ').ok_or_else(bad)?;
        let rest = own.strip_prefix('r').ok_or_else(bad)?;
        let (readable, rest) = rest.split_once('w').ok_or_else(bad)?;
        let (writable, max) = rest.split_once('m').ok_or_else(bad)?;
        let flag = |s: &str| match s {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(bad()),
        };
        let (readable, writable) = (flag(readable)?, flag(writable)?);
        let (max, codec) = match max.split_once('c') {
            Some((max, codec)) => (max, Codec::named(codec)?),
            None => (max, Codec::Postcard),
        };
        let max = max.parse().map_err(|_| bad())?;
        let stream = S::from_inherited(process::Inherited {
            fds: inherited.fds,
            text: stream_text.to_owned(),
        })?;
        let mut conn = Connection::with_direction(stream, readable, writable);
        conn.set_max_message_size(max);
        conn.set_codec(codec);
        Ok(conn)
    }
}

/// A descriptor stream crosses to a child as its one descriptor.
impl process::Inheritable for FdStream {
    fn handle(&self) -> process::Handle<'_> {
        use std::os::fd::AsFd;
        process::Handle {
            fds: vec![self.as_fd()],
            text: String::new(),
        }
    }

    fn from_inherited(inherited: process::Inherited) -> Result<Self> {
        let [fd]: [std::os::fd::OwnedFd; 1] = inherited
            .fds
            .try_into()
            .map_err(|_| Error::InvalidArgument("a stream handle has one descriptor"))?;
        Ok(FdStream::new(fd)?)
    }
}
