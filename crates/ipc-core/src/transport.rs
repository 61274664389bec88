//! Byte streams a [`Connection`](crate::Connection) runs its framing over:
//! a socket or pipe descriptor here, a TLS session in ipc-socket.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::PollFlags;
use nix::sys::socket::MsgFlags;
use nix::sys::stat::SFlag;

use crate::wait::poll_one;
use crate::{sys, Deadline};

/// A bidirectional (or one-way) byte stream with a descriptor to wait on.
///
/// Both methods wait no later than their [`Deadline`]: at most until it,
/// however many signals interrupt the wait (an interrupted wait resumes
/// with the time remaining), and with [`Deadline::Never`] as long as it
/// takes, never returning `EINTR`. Running out of time is an
/// [`io::ErrorKind::TimedOut`] error, with nothing read or written.
///
/// A pipe cannot be made non-blocking for one call without changing flags
/// that the processes sharing it see too, so with a deadline a pipe is
/// polled first and then read or written (at most `PIPE_BUF` bytes, which
/// fit once it is writable): if another process sharing the same end takes
/// the bytes or the room in between, that call can wait past its deadline.
pub trait Transport: AsFd {
    /// Reads at least one byte, or returns 0 at the end of the stream.
    fn read(&mut self, buf: &mut [u8], deadline: Deadline) -> io::Result<usize>;

    /// Writes some of `bufs`, at least one byte, returning how many went
    /// out.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>], deadline: Deadline) -> io::Result<usize>;

    /// Sends whatever the stream still holds of what `write_vectored`
    /// accepted (a TLS session keeps records it could not send yet).
    /// Plain descriptors hold nothing.
    fn flush(&mut self, deadline: Deadline) -> io::Result<()> {
        let _ = deadline;
        Ok(())
    }

    /// Whether bytes can be read without the descriptor becoming readable
    /// (a TLS session may hold decrypted bytes). Plain descriptors never do.
    fn has_buffered_input(&self) -> bool {
        false
    }

    /// Whether the stream holds bytes it accepted but could not send yet,
    /// which go out once the descriptor is writable (a TLS session's
    /// records). Plain descriptors never do.
    fn wants_write(&self) -> bool {
        false
    }

    /// Whether the last read found the descriptor empty: it returned fewer
    /// bytes than asked (a stream socket or a pipe gives what it has, up
    /// to the length asked) or would have had to wait. An async reader
    /// then knows it need not try again before the reactor says readable.
    /// `false` when the stream cannot tell (a TLS session reads records,
    /// not what the caller asked for).
    fn drained(&self) -> bool {
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
    /// See [`Transport::drained`].
    drained: bool,
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
        Ok(FdStream {
            fd,
            kind,
            drained: false,
        })
    }

    /// Wraps a descriptor the caller knows to be a connected stream socket,
    /// without asking the kernel (one system call less per connection).
    /// Given anything else, sends fail with an error.
    pub fn socket(fd: OwnedFd) -> FdStream {
        FdStream {
            fd,
            kind: FdKind::Socket,
            drained: false,
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

impl FdStream {
    /// One read of what is there, waiting until `deadline` for something.
    fn read_waiting(&self, buf: &mut [u8], deadline: Deadline) -> io::Result<usize> {
        loop {
            let result = match (deadline, self.kind) {
                (Deadline::Never, _) => nix::unistd::read(&self.fd, buf),
                // Try first: when bytes are there, as they mostly are for a
                // timed receive in the middle of a message, this is one
                // system call instead of a poll and a read.
                (_, FdKind::Socket) => {
                    nix::sys::socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)
                }
                // A pipe read cannot be made non-blocking per call without
                // changing the file status flags, which the process at the
                // other end of a fork shares; wait until readable first.
                (_, FdKind::Pipe) => {
                    wait_for(self.fd.as_fd(), PollFlags::POLLIN, deadline)?;
                    nix::unistd::read(&self.fd, buf)
                }
            };
            match result {
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => wait_for(self.fd.as_fd(), PollFlags::POLLIN, deadline)?,
                other => return other.map_err(io::Error::from),
            }
        }
    }
}

impl Transport for FdStream {
    fn read(&mut self, buf: &mut [u8], deadline: Deadline) -> io::Result<usize> {
        let result = self.read_waiting(buf, deadline);
        self.drained = match &result {
            Ok(n) => *n < buf.len(),
            Err(e) => e.kind() == io::ErrorKind::TimedOut,
        };
        result
    }

    fn drained(&self) -> bool {
        self.drained
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>], deadline: Deadline) -> io::Result<usize> {
        loop {
            let result = match (self.kind, deadline) {
                (FdKind::Socket, _) => {
                    let flags = match deadline {
                        Deadline::Never => MsgFlags::MSG_NOSIGNAL,
                        _ => MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    };
                    nix::sys::socket::sendmsg::<nix::sys::socket::SockaddrStorage>(
                        self.fd.as_raw_fd(),
                        bufs,
                        &[],
                        flags,
                        None,
                    )
                    .map_err(io::Error::from)
                }
                (FdKind::Pipe, Deadline::Never) => write_pipe(self.fd.as_fd(), bufs),
                (FdKind::Pipe, _) => {
                    // Once the pipe is writable it has room for PIPE_BUF
                    // bytes, and a write of at most that many never blocks.
                    wait_for(self.fd.as_fd(), PollFlags::POLLOUT, deadline)?;
                    let mut room = libc::PIPE_BUF;
                    let mut head = Vec::with_capacity(bufs.len().min(8));
                    for buf in bufs {
                        if room == 0 {
                            break;
                        }
                        let take = buf.len().min(room);
                        head.push(IoSlice::new(&buf[..take]));
                        room -= take;
                    }
                    write_pipe(self.fd.as_fd(), &head)
                }
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_for(self.fd.as_fd(), PollFlags::POLLOUT, deadline)?
                }
                other => return other,
            }
        }
    }
}

/// A blocking pipe write that never raises `SIGPIPE`.
fn write_pipe(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if sys::sigpipe_ignored() {
        nix::sys::uio::writev(fd, bufs).map_err(io::Error::from)
    } else {
        sys::write_pipe_no_sigpipe(fd, bufs)
    }
}

/// Waits until `fd` is ready for `events` (or hung up), or fails with
/// [`io::ErrorKind::TimedOut`] at the deadline.
fn wait_for(fd: BorrowedFd<'_>, events: PollFlags, deadline: Deadline) -> io::Result<()> {
    if poll_one(fd, events, deadline)? {
        Ok(())
    } else {
        Err(io::ErrorKind::TimedOut.into())
    }
}
