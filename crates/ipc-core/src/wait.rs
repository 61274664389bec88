//! Waiting for any of several connections, children or descriptors to become
//! ready: Python's `multiprocessing.connection.wait`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::{Deadline, Result};

/// Something [`wait`] can wait on: a descriptor that becomes readable, and
/// possibly data already buffered in this process.
pub trait Waitable {
    /// The descriptor that becomes readable when this is ready.
    fn wait_fd(&self) -> BorrowedFd<'_>;

    /// Whether this is ready without looking at the descriptor (a
    /// connection with a message already buffered).
    fn ready_without_waiting(&self) -> bool {
        false
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        *self
    }
}

impl Waitable for OwnedFd {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None` waits for ever), and returns the indices of the ready ones.
///
/// A connection is ready when it has something to receive or its peer has
/// closed; a [`Child`](crate::process::Child) when it has exited; a raw
/// descriptor when it is readable. A zero timeout only looks.
///
/// ```
/// use std::{os::fd::OwnedFd, os::unix::net::UnixStream, time::Duration};
/// use ipc_core::{Connection, FdStream};
/// let pair = || -> std::io::Result<_> {
///     let (a, b) = UnixStream::pair()?;
///     Ok((Connection::new(FdStream::new(OwnedFd::from(a))?), Connection::new(FdStream::new(OwnedFd::from(b))?)))
/// };
/// let (mut a, b) = pair()?;
/// let (_c, d) = pair()?;
/// assert!(ipc_core::wait(&[&b, &d], Duration::ZERO)?.is_empty());
/// a.send_bytes(b"x")?;
/// assert_eq!(ipc_core::wait(&[&b, &d], Duration::from_secs(5))?, [0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: impl Into<Option<Duration>>) -> Result<Vec<usize>> {
    let buffered: Vec<bool> = objects.iter().map(|o| o.ready_without_waiting()).collect();
    // With something ready already, only look at the others without
    // waiting, so that every ready object is reported and one with a
    // backlog of buffered messages cannot hide the rest.
    let deadline = if buffered.contains(&true) {
        Deadline::Now
    } else {
        Deadline::from(timeout.into())
    };
    let fds: Vec<_> = objects
        .iter()
        .map(|o| (o.wait_fd(), Interest::Read))
        .collect();
    let ready = wait_fds(&fds, deadline)?;
    Ok((0..objects.len())
        .filter(|&i| buffered[i] || ready[i])
        .collect())
}

/// What [`wait_fds`] waits for on a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Something to read, or the end of the stream.
    Read,
    /// Room to write.
    Write,
    /// Either.
    ReadOrWrite,
}

/// Waits until at least one of `fds` is ready the way asked (a hang-up or
/// an error counts as ready), or `deadline` passes, and returns for each
/// whether it is. The wait resumes with the time remaining after a signal
/// and never ends early: the lower layer of [`wait`], for event loops over
/// raw descriptors.
///
/// ```
/// use std::os::{fd::AsFd, unix::net::UnixStream};
/// use ipc_core::{wait_fds, Deadline, Interest};
/// let (a, b) = UnixStream::pair()?;
/// let ready = wait_fds(&[(a.as_fd(), Interest::Read), (b.as_fd(), Interest::Write)], Deadline::Now)?;
/// assert_eq!(ready, [false, true]);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn wait_fds(fds: &[(BorrowedFd<'_>, Interest)], deadline: Deadline) -> Result<Vec<bool>> {
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&(fd, interest)| {
            let events = match interest {
                Interest::Read => PollFlags::POLLIN,
                Interest::Write => PollFlags::POLLOUT,
                Interest::ReadOrWrite => PollFlags::POLLIN | PollFlags::POLLOUT,
            };
            PollFd::new(fd, events)
        })
        .collect();
    poll_until(&mut polled, deadline)?;
    Ok(polled
        .iter()
        .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}

/// Whether `fd` becomes readable (or hung up) before `deadline`.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, deadline: Deadline) -> io::Result<bool> {
    poll_one(fd, PollFlags::POLLIN, deadline)
}

/// Whether `fd` becomes ready for `events` (or hung up) before `deadline`.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Deadline,
) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, events)];
    Ok(poll_until(&mut fds, deadline)? > 0)
}

/// `poll(2)` until something is ready or `deadline` passes, retrying after
/// signals with the time remaining and rounding up so it never returns
/// early.
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Deadline) -> io::Result<usize> {
    loop {
        let timeout = PollTimeout::try_from(deadline.poll_millis()).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(fds, timeout) {
            Ok(0) if !deadline.has_passed() => continue,
            Ok(n) => {
                if fds.iter().any(|fd| {
                    fd.revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLNVAL))
                }) {
                    return Err(io::Error::from_raw_os_error(libc::EBADF));
                }
                return Ok(n as usize);
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
