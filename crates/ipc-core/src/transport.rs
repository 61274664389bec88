//! Byte streams a [`Connection`](crate::Connection) runs its framing over:
//! a socket or pipe descriptor here, a TLS session in ipc-socket.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::MsgFlags;
use nix::sys::stat::SFlag;

use crate::sys;

/// A bidirectional (or one-way) byte stream with a descriptor to wait on.
///
/// Implementations block in `read` and `write_vectored` like a blocking
/// socket; the connection polls [`AsFd::as_fd`] first when it has a deadline.
pub trait Transport: AsFd {
    /// Reads at least one byte, or returns 0 at the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes some of `bufs`, returning how many bytes went out.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Whether bytes can be read without the descriptor becoming readable
    /// (a TLS session may hold decrypted bytes). Plain descriptors never do.
    fn has_buffered_input(&self) -> bool {
        false
    }
}

/// What kind of descriptor an [`FdStream`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// A stream socket (socketpair, Unix or TCP).
    Socket,
    /// One end of a pipe.
    Pipe,
}

/// A stream socket or a pipe end, owned.
///
/// Writes never raise `SIGPIPE`: sockets send with `MSG_NOSIGNAL`, and pipe
/// writes block the signal for the calling thread when the process has not
/// ignored it (Rust programs and CPython ignore it; a C host may not). The
/// disposition is looked up at each pipe write, not once: it can change
/// after the stream is made (a forked child that resets `SIGPIPE` to its
/// default, a host that installs a handler).
///
/// ```
/// use std::os::fd::OwnedFd;
/// use std::os::unix::net::UnixStream;
/// let (a, _b) = UnixStream::pair()?;
/// let stream = ipc_core::FdStream::new(OwnedFd::from(a))?;
/// assert_eq!(stream.kind(), ipc_core::FdKind::Socket);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FdStream {
    fd: OwnedFd,
    kind: FdKind,
}

impl FdStream {
    /// Wraps a socket or pipe descriptor, finding out which it is.
    pub fn new(fd: OwnedFd) -> io::Result<FdStream> {
        let stat = nix::sys::stat::fstat(&fd)?;
        let kind = match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFSOCK => FdKind::Socket,
            SFlag::S_IFIFO => FdKind::Pipe,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a connection needs a socket or a pipe descriptor",
                ))
            }
        };
        Ok(FdStream { fd, kind })
    }

    /// Wraps a descriptor the caller knows to be a connected stream socket,
    /// without asking the kernel (one system call less per connection).
    /// Given anything else, sends fail with an error.
    pub fn socket(fd: OwnedFd) -> FdStream {
        FdStream {
            fd,
            kind: FdKind::Socket,
        }
    }

    /// Whether this is a socket or a pipe.
    pub fn kind(&self) -> FdKind {
        self.kind
    }
}

impl AsFd for FdStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<FdStream> for OwnedFd {
    fn from(stream: FdStream) -> OwnedFd {
        stream.fd
    }
}

impl Transport for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(&self.fd, buf) {
                Err(nix::Error::EINTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let result = match self.kind {
                FdKind::Socket => nix::sys::socket::sendmsg::<nix::sys::socket::SockaddrStorage>(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    bufs,
                    &[],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from),
                FdKind::Pipe if !sys::sigpipe_ignored() => {
                    sys::write_pipe_no_sigpipe(self.fd.as_fd(), bufs)
                }
                FdKind::Pipe => nix::sys::uio::writev(&self.fd, bufs).map_err(io::Error::from),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}
