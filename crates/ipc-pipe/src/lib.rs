//! Python's `multiprocessing.Pipe` for Rust: a pair of connected
//! [`Connection`]s between related processes, carrying typed messages
//! (serde values) and byte messages framed exactly as Python frames them.
//!
//! [`duplex`] (Python's `Pipe()`) is a Unix socketpair; [`one_way`]
//! (`Pipe(duplex=False)`) is a pipe and returns `(reader, writer)`.
//! Hand one end to a child with [`Process`](ipc_core::process::Process):
//!
//! ```
//! use ipc_core::process::Process;
//!
//! let (mut parent_conn, mut child_conn) = ipc_pipe::duplex()?;
//! let mut child = Process::new().pass("conn", &child_conn)?.fork(move || {
//!     child_conn.send(&vec!["hello", "IPC"])
//! })?;
//! let greeting: Vec<String> = parent_conn.recv()?;
//! assert_eq!(greeting, ["hello", "IPC"]);
//! child.join()?;
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! After the peer has closed and everything it sent has been read, a
//! receive returns [`Error::Closed`] (Python's
//! `EOFError`); sending to a closed peer returns an error instead of
//! killing the process with `SIGPIPE`.
#![deny(unsafe_code)]

use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};

pub use ipc_core::{Connection, Error, FdStream, Result};

/// The kernel buffer asked for on each end: a 1 MiB buffer lets large
/// messages stream at several GB/s, where the default (about 200 KiB for
/// a socket, 64 KiB for a pipe) costs far more context switches. The
/// kernel caps the request at its own limit, which is fine.
pub const DEFAULT_BUFFER_SIZE: usize = 1024 * 1024;

/// Options for a pipe: message size limit and kernel buffer size.
///
/// ```
/// let (mut a, mut b) = ipc_pipe::Pipe::new().max_message_size(16).duplex()?;
/// assert!(a.send_bytes(&[0; 17]).is_err());
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Pipe {
    max_message: u64,
    buffer_size: usize,
    codec: ipc_core::Codec,
}

impl Default for Pipe {
    fn default() -> Pipe {
        Pipe {
            max_message: ipc_core::DEFAULT_MAX_MESSAGE_SIZE,
            buffer_size: DEFAULT_BUFFER_SIZE,
            codec: ipc_core::Codec::Postcard,
        }
    }
}

impl Pipe {
    /// The default options.
    pub fn new() -> Pipe {
        Pipe::default()
    }

    /// The largest message either end sends or receives.
    pub fn max_message_size(mut self, bytes: u64) -> Pipe {
        self.max_message = bytes;
        self
    }

    /// How both ends encode typed messages (postcard unless set): with
    /// ipc-core's `pickle` feature, `Codec::Pickle` to talk to Python's
    /// `conn.send(obj)` / `conn.recv()`. A child that inherits an end
    /// inherits its codec.
    pub fn codec(mut self, codec: ipc_core::Codec) -> Pipe {
        self.codec = codec;
        self
    }

    /// The kernel buffer to ask for on each end (0 keeps the default).
    pub fn buffer_size(mut self, bytes: usize) -> Pipe {
        self.buffer_size = bytes;
        self
    }

    /// Two connected ends that can both send and receive (a socketpair).
    pub fn duplex(self) -> Result<(Connection, Connection)> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        for end in [&a, &b] {
            if self.buffer_size > 0 {
                // Best effort: the kernel clamps to its limit, and a failure
                // only costs speed.
                let _ = socket::setsockopt(end, socket::sockopt::SndBuf, &self.buffer_size);
                let _ = socket::setsockopt(end, socket::sockopt::RcvBuf, &self.buffer_size);
            }
        }
        Ok((self.wrap(a, true, true)?, self.wrap(b, true, true)?))
    }

    /// A one-way pipe: `(reader, writer)`, as Python's `Pipe(duplex=False)`.
    /// Receiving on the writer or sending on the reader is
    /// [`Error::Unsupported`].
    pub fn one_way(self) -> Result<(Connection, Connection)> {
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        if self.buffer_size > 0 {
            // Best effort, as above; unprivileged processes may grow a pipe
            // up to /proc/sys/fs/pipe-max-size (1 MiB by default).
            let _ = nix::fcntl::fcntl(&writer, FcntlArg::F_SETPIPE_SZ(self.buffer_size as i32));
        }
        Ok((
            self.wrap(reader, true, false)?,
            self.wrap(writer, false, true)?,
        ))
    }

    fn wrap(&self, fd: OwnedFd, readable: bool, writable: bool) -> Result<Connection> {
        let mut conn = Connection::with_direction(FdStream::new(fd)?, readable, writable);
        conn.set_max_message_size(self.max_message);
        conn.set_codec(self.codec);
        Ok(conn)
    }
}

/// Two connected ends that can both send and receive: Python's `Pipe()`.
///
/// ```
/// let (mut a, mut b) = ipc_pipe::duplex()?;
/// a.send(&1.5f64)?;
/// assert_eq!(b.recv::<f64>()?, 1.5);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn duplex() -> Result<(Connection, Connection)> {
    Pipe::new().duplex()
}

/// A one-way pipe, `(reader, writer)`: Python's `Pipe(duplex=False)`.
///
/// ```
/// let (mut reader, mut writer) = ipc_pipe::one_way()?;
/// writer.send_bytes(b"one way")?;
/// assert_eq!(reader.recv_bytes()?, b"one way");
/// assert!(matches!(reader.send_bytes(b"back"), Err(ipc_core::Error::Unsupported(_))));
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn one_way() -> Result<(Connection, Connection)> {
    Pipe::new().one_way()
}
