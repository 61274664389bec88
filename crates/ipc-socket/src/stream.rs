//! The byte stream under a socket [`Connection`](crate::SocketConnection):
//! a connected socket, plain or with TLS, and the slot it holds in its
//! listener's connection limit until it is dropped.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};

use ipc_core::{Deadline, Error, FdStream, Transport};

use crate::tls::{TlsClient, TlsServer};

/// A connected stream socket, possibly encrypted.
#[derive(Debug)]
pub struct SocketStream {
    inner: Inner,
    _slot: Option<Slot>,
}

#[derive(Debug)]
enum Inner {
    /// A plain socket, and whether its first bytes were checked for TLS.
    Plain(FdStream, bool),
    Tls(Box<TlsState>),
}

#[derive(Debug)]
struct TlsState {
    socket: FdStream,
    session: rustls::Connection,
    /// Decrypted bytes are waiting in the session, so the socket need not
    /// become readable for a read to succeed.
    plaintext_waiting: bool,
}

/// `Read`/`Write` over the socket for rustls's record I/O, each call
/// bounded by the operation's deadline.
struct SocketIo<'a> {
    socket: &'a mut FdStream,
    deadline: Deadline,
}

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf, self.deadline)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket
            .write_vectored(&[IoSlice::new(buf)], self.deadline)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsState {
    fn flush_records(&mut self, deadline: Deadline) -> io::Result<()> {
        while self.session.wants_write() {
            self.session.write_tls(&mut SocketIo {
                socket: &mut self.socket,
                deadline,
            })?;
        }
        Ok(())
    }

    /// Processes the records read so far, noting whether they left
    /// decrypted bytes to read (which the socket will not show).
    fn process(&mut self) -> io::Result<()> {
        let state = self.session.process_new_packets().map_err(tls_io_error)?;
        self.plaintext_waiting = state.plaintext_bytes_to_read() > 0;
        Ok(())
    }

    /// Reads and processes one more record's worth of bytes; false at the
    /// end of the stream.
    fn read_records(&mut self, deadline: Deadline) -> io::Result<bool> {
        if self.session.read_tls(&mut SocketIo {
            socket: &mut self.socket,
            deadline,
        })? == 0
        {
            return Ok(false);
        }
        self.process()?;
        Ok(true)
    }

    fn read(&mut self, buf: &mut [u8], deadline: Deadline) -> io::Result<usize> {
        // Records the session still holds (its own, or the rest of a send
        // that timed out) go out if they can without waiting: a receive
        // must not block on a peer that is not reading.
        match self.flush_records(Deadline::Now) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            other => other?,
        }
        loop {
            match self.session.reader().read(buf) {
                Ok(n) => {
                    self.process()?;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing decrypted yet: read another record.
                    if !self.read_records(deadline)? {
                        // The peer closed without close_notify.
                        return Ok(0);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands plaintext to the session and sends its records. What an
    /// earlier call left unsent goes first, so the session has room and
    /// the count returned is exactly what it took; once it has taken some,
    /// that count is returned even if its records could not all go out
    /// (the caller's next write or flush sends them, or fails).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>], deadline: Deadline) -> io::Result<usize> {
        self.flush_records(deadline)?;
        let n = self.session.writer().write_vectored(bufs)?;
        match self.flush_records(deadline) {
            Err(_) if n > 0 => Ok(n),
            other => other.map(|()| n),
        }
    }

    /// Goes on with the TLS handshake, waiting for the peer until
    /// `deadline`; true once it is done. With [`Deadline::Now`], false
    /// means it needs bytes that have not arrived yet, or room to send
    /// (see [`SocketStream::wants_write`]).
    fn handshake(&mut self, deadline: Deadline) -> ipc_core::Result<bool> {
        let not_yet =
            |e: &io::Error| e.kind() == io::ErrorKind::TimedOut && deadline == Deadline::Now;
        let mut run = || -> io::Result<bool> {
            while self.session.is_handshaking() {
                if self.session.wants_write() {
                    match self.flush_records(deadline) {
                        Err(e) if not_yet(&e) => return Ok(false),
                        other => other?,
                    }
                    continue;
                }
                match self.read_records(deadline) {
                    Ok(true) => {}
                    Ok(false) => return Err(io::ErrorKind::ConnectionReset.into()),
                    Err(e) if not_yet(&e) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            // The last flight (a client's Finished) may still be waiting.
            match self.flush_records(deadline) {
                Err(e) if not_yet(&e) => Ok(false),
                other => other.map(|()| true),
            }
        };
        run().map_err(|e| match Error::from(e) {
            Error::Timeout => {
                Error::Authentication("the peer did not finish the TLS handshake in time".into())
            }
            Error::Io(e) => Error::Authentication(format!("TLS handshake failed: {e}")),
            Error::Closed => Error::Authentication(
                "TLS handshake failed: the peer closed the connection (is it speaking TLS?)".into(),
            ),
            other => other,
        })
    }
}

impl SocketStream {
    pub(crate) fn plain(fd: OwnedFd, slot: Option<Slot>) -> io::Result<SocketStream> {
        Ok(SocketStream {
            inner: Inner::Plain(FdStream::socket(fd), false),
            _slot: slot,
        })
    }

    /// The server side of a TLS session over `fd`, handshake done.
    pub(crate) fn tls_server(
        fd: OwnedFd,
        slot: Option<Slot>,
        tls: &TlsServer,
        deadline: Deadline,
    ) -> ipc_core::Result<SocketStream> {
        let session = rustls::ServerConnection::new(Arc::clone(&tls.0))
            .map_err(|e| Error::Authentication(format!("TLS: {e}")))?;
        SocketStream::tls(fd, slot, session.into(), deadline)
    }

    /// The server side of a TLS session over `fd` whose handshake is yet
    /// to run, step by step, through [`continue_handshake`](Self::continue_handshake).
    pub(crate) fn tls_server_unstarted(
        fd: OwnedFd,
        tls: &TlsServer,
    ) -> ipc_core::Result<SocketStream> {
        let session = rustls::ServerConnection::new(Arc::clone(&tls.0))
            .map_err(|e| Error::Authentication(format!("TLS: {e}")))?;
        Ok(SocketStream::tls_unstarted(fd, session.into()))
    }

    /// The client side of a TLS session over `fd` whose handshake is yet
    /// to run, as [`tls_server_unstarted`](Self::tls_server_unstarted).
    #[cfg(feature = "tokio")]
    pub(crate) fn tls_client_unstarted(
        fd: OwnedFd,
        tls: &TlsClient,
    ) -> ipc_core::Result<SocketStream> {
        let session =
            rustls::ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
                .map_err(|e| Error::Authentication(format!("TLS: {e}")))?;
        Ok(SocketStream::tls_unstarted(fd, session.into()))
    }

    fn tls_unstarted(fd: OwnedFd, session: rustls::Connection) -> SocketStream {
        SocketStream {
            inner: Inner::Tls(Box::new(TlsState {
                socket: FdStream::socket(fd),
                session,
                plaintext_waiting: false,
            })),
            _slot: None,
        }
    }

    /// Goes on with a TLS handshake as far as the bytes already received
    /// allow, without waiting; true once it is done (at once for a plain
    /// socket).
    pub(crate) fn continue_handshake(&mut self) -> ipc_core::Result<bool> {
        match &mut self.inner {
            Inner::Plain(..) => Ok(true),
            Inner::Tls(state) => state.handshake(Deadline::Now),
        }
    }

    /// Holds `slot` of the listener's connection limit until dropped.
    pub(crate) fn hold_slot(&mut self, slot: Slot) {
        self._slot = Some(slot);
    }

    /// The client side of a TLS session over `fd`, handshake done.
    pub(crate) fn tls_client(
        fd: OwnedFd,
        tls: &TlsClient,
        deadline: Deadline,
    ) -> ipc_core::Result<SocketStream> {
        let session =
            rustls::ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
                .map_err(|e| Error::Authentication(format!("TLS: {e}")))?;
        SocketStream::tls(fd, None, session.into(), deadline)
    }

    fn tls(
        fd: OwnedFd,
        slot: Option<Slot>,
        session: rustls::Connection,
        deadline: Deadline,
    ) -> ipc_core::Result<SocketStream> {
        let mut stream = SocketStream::tls_unstarted(fd, session);
        if let Inner::Tls(state) = &mut stream.inner {
            state.handshake(deadline)?;
        }
        stream._slot = slot;
        Ok(stream)
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    /// The address of the other end, for TCP connections (Python's
    /// `Listener.last_accepted`); `None` for Unix sockets, whose clients
    /// are usually unnamed.
    pub fn peer_address(&self) -> Option<crate::Address> {
        // std knows TCP peer addresses; a duplicate descriptor lends it ours.
        let socket = std::net::TcpStream::from(self.as_fd().try_clone_to_owned().ok()?);
        socket.peer_addr().ok().map(crate::Address::tcp)
    }
}

/// A plain socket connection can be handed to a child process (an exec'd
/// child rebuilds it with [`inherited`](ipc_core::process::inherited)). A
/// TLS session cannot: its keys live in this process's memory, so an exec'd
/// child gets [`Error::Unsupported`]; a forked child that captured the
/// connection keeps a working copy of the session, but only one of the two
/// processes may use it.
impl ipc_core::process::Inheritable for SocketStream {
    fn handle(&self) -> ipc_core::process::Handle<'_> {
        let text = if self.is_tls() { "tls" } else { "plain" };
        ipc_core::process::Handle {
            fds: vec![self.as_fd()],
            text: text.to_owned(),
        }
    }

    fn from_inherited(inherited: ipc_core::process::Inherited) -> ipc_core::Result<Self> {
        if inherited.text == "tls" {
            return Err(Error::Unsupported(
                "a TLS connection cannot be rebuilt in another program",
            ));
        }
        let [fd]: [OwnedFd; 1] = inherited
            .fds
            .try_into()
            .map_err(|_| Error::InvalidArgument("a socket handle has one descriptor"))?;
        Ok(SocketStream::plain(fd, None)?)
    }
}

impl AsFd for SocketStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Plain(stream, _) => stream.as_fd(),
            Inner::Tls(state) => state.socket.as_fd(),
        }
    }
}

impl Transport for SocketStream {
    fn read(&mut self, buf: &mut [u8], deadline: Deadline) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(stream, checked) => {
                let n = stream.read(buf, deadline)?;
                if !*checked && n > 0 {
                    *checked = true;
                    if looks_like_tls(&buf[..n]) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the peer speaks TLS: set Options::tls_client or Options::tls_server on this end",
                        ));
                    }
                }
                Ok(n)
            }
            Inner::Tls(state) => state.read(buf, deadline),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>], deadline: Deadline) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(stream, _) => stream.write_vectored(bufs, deadline),
            Inner::Tls(state) => state.write_vectored(bufs, deadline),
        }
    }

    fn flush(&mut self, deadline: Deadline) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(..) => Ok(()),
            Inner::Tls(state) => state.flush_records(deadline),
        }
    }

    fn has_buffered_input(&self) -> bool {
        matches!(&self.inner, Inner::Tls(state) if state.plaintext_waiting)
    }

    /// Whether a TLS session holds records it could not send yet: a
    /// handshake that stopped for want of room in the socket goes on once
    /// it is writable.
    fn wants_write(&self) -> bool {
        matches!(&self.inner, Inner::Tls(state) if state.session.wants_write())
    }

    fn drained(&self) -> bool {
        matches!(&self.inner, Inner::Plain(stream, _) if stream.drained())
    }
}

/// Whether a plain connection's first bytes are a TLS record header
/// (content type 20–23, version 3.x): a handshake or an alert from a peer
/// that expects TLS. As a frame header they would announce more than
/// 335 MB, which no first message of a plain peer does in practice.
fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x14..=0x17, 0x03, 0x00..=0x04, ..])
}

/// A listener's count of live connections.
#[derive(Debug)]
pub(crate) struct Limit {
    max: usize,
    live: Mutex<usize>,
    freed: Condvar,
    /// Tells async waiters for a place that one was given back.
    #[cfg(feature = "tokio")]
    freed_async: tokio::sync::Notify,
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
            #[cfg(feature = "tokio")]
            freed_async: tokio::sync::Notify::new(),
        })
    }

    /// Takes a place, awaiting one as long as it takes. Cancel safe: a
    /// place is taken only when the future completes.
    #[cfg(feature = "tokio")]
    pub(crate) async fn take_async(self: &Arc<Limit>) -> Slot {
        loop {
            let freed = self.freed_async.notified();
            let mut freed = std::pin::pin!(freed);
            // Listening before looking, so a place given back in between
            // is not missed.
            freed.as_mut().enable();
            if let Some(slot) = self.take(Deadline::Now) {
                return slot;
            }
            freed.await;
        }
    }

    /// Takes a place, waiting until `deadline` for one.
    pub(crate) fn take(self: &Arc<Limit>, deadline: Deadline) -> Option<Slot> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        while *live >= self.max {
            live = match deadline.remaining() {
                None => self.freed.wait(live).unwrap_or_else(|e| e.into_inner()),
                Some(left) if left.is_zero() => return None,
                Some(left) => {
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
        #[cfg(feature = "tokio")]
        self.0.freed_async.notify_waiters();
    }
}
