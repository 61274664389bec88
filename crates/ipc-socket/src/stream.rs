//! The byte stream under a socket [`Connection`](crate::SocketConnection):
//! a connected socket, and the slot it holds in its listener's connection
//! limit until it is dropped.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use ipc_core::{FdStream, Transport};

/// A connected stream socket.
#[derive(Debug)]
pub struct SocketStream {
    inner: FdStream,
    _slot: Option<Slot>,
}

impl SocketStream {
    pub(crate) fn new(fd: OwnedFd, slot: Option<Slot>) -> io::Result<SocketStream> {
        Ok(SocketStream {
            inner: FdStream::new(fd)?,
            _slot: slot,
        })
    }
}

impl SocketStream {
    /// The address of the other end, for TCP connections (Python's
    /// `Listener.last_accepted`); `None` for Unix sockets, whose clients
    /// are usually unnamed.
    pub fn peer_address(&self) -> Option<crate::Address> {
        // std knows TCP peer addresses; a duplicate descriptor lends it ours.
        let socket = std::net::TcpStream::from(self.inner.as_fd().try_clone_to_owned().ok()?);
        socket.peer_addr().ok().map(crate::Address::tcp)
    }
}

impl AsFd for SocketStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Transport for SocketStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.write_vectored(bufs)
    }
}

/// A listener's count of live connections.
#[derive(Debug)]
pub(crate) struct Limit {
    max: usize,
    live: Mutex<usize>,
    freed: Condvar,
}

/// One taken place in a [`Limit`], given back on drop.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Limit>);

impl Limit {
    pub(crate) fn new(max: usize) -> Arc<Limit> {
        Arc::new(Limit {
            max,
            live: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Takes a place, waiting until `deadline` (`None`: for ever) for one.
    pub(crate) fn take(self: &Arc<Limit>, deadline: Option<Instant>) -> Option<Slot> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        while *live >= self.max {
            live = match deadline {
                None => self.freed.wait(live).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.freed
                        .wait_timeout(live, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        *live += 1;
        Some(Slot(Arc::clone(self)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.0.live.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        self.0.freed.notify_one();
    }
}
