//! A framed, typed connection over a byte stream: the `Connection` of
//! Python's `multiprocessing.connection`, shared by ipc-pipe and ipc-socket.
//!
//! Reads go through a buffer so that many small frames cost one `read`;
//! payloads larger than half the buffer are read straight into their
//! destination. Writes put the header and the payload out in one vectored
//! call, so small messages are one system call and large ones are never
//! copied. A receive that times out keeps what it has read, so nothing is
//! lost and the next receive picks up where it stopped.

use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{self, Header, Parsed};
use crate::transport::{FdStream, Transport};
use crate::wait::{poll_readable, Waitable};
use crate::{ByteReceiver, ByteSender, Codec, Deadline, Error, Receiver, Result, Sender};

/// The receive buffer at most. 64 KiB holds a thousand small frames per
/// `read`.
const READ_BUFFER_LEN: usize = 64 * 1024;
/// The receive buffer at first; the first `read` that fills it grows it to
/// [`READ_BUFFER_LEN`]. A connection that exchanges a few small messages
/// (an authentication handshake, a request and its reply) so never pays
/// for zeroing 64 KiB, which took longer than a round trip on a Unix
/// socket.
const READ_BUFFER_START: usize = 1024;

/// Messages per vectored write in [`Connection::send_bytes_batch`]: two
/// slices each (header and payload), within the kernel's `IOV_MAX` of 1024.
pub const BATCH_LEN: usize = 512;

/// The largest message a connection accepts unless told otherwise.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 256 * 1024 * 1024;

/// Scratch space kept between typed messages up to this size; a larger
/// message's buffer is freed once it has been sent or decoded.
const SCRATCH_KEEP_LEN: usize = 4 * 1024 * 1024;

/// Above this many bytes a payload buffer is grown as data arrives rather
/// than allocated up front, so a peer that lies about a length costs us
/// about what it actually sends: at most this much more, and then at most
/// twice what arrived.
const UPFRONT_ALLOC_LEN: u64 = 1024 * 1024;

/// One end of a framed connection.
///
/// Messages are framed as Python's `multiprocessing.connection` frames them,
/// so a Python `Connection` can be the other end of the bytes API. Typed
/// messages are serde values encoded with postcard.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use std::os::unix::net::UnixStream;
/// use ipc_core::{Connection, FdStream};
///
/// let (a, b) = UnixStream::pair()?;
/// let mut left = Connection::new(FdStream::new(OwnedFd::from(a))?);
/// let mut right = Connection::new(FdStream::new(OwnedFd::from(b))?);
/// left.send(&("ping", 1u32))?;
/// let (word, n): (String, u32) = right.recv()?;
/// assert_eq!((word.as_str(), n), ("ping", 1));
/// right.send_bytes(b"pong")?;
/// assert_eq!(left.recv_bytes()?, b"pong");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Connection<S: Transport = FdStream> {
    stream: S,
    readable: bool,
    writable: bool,
    max_message: u64,
    read_buf: Box<[u8]>,
    read_pos: usize,
    read_end: usize,
    /// The length of the next message once its header has been read.
    pending: Option<u64>,
    /// Payload bytes of the pending message taken off the stream by a
    /// receive that then timed out.
    partial: Vec<u8>,
    /// Set once an invalid header is seen: the stream is out of sync.
    desynced: Option<[u8; 4]>,
    /// Set once a send timed out part-way through a message: the peer
    /// would read the next message's bytes as the rest of that one.
    send_broken: bool,
    scratch: Vec<u8>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    codec: Codec,
}

impl<S: Transport> Connection<S> {
    /// A connection that can send and receive over `stream`.
    pub fn new(stream: S) -> Connection<S> {
        Connection::with_direction(stream, true, true)
    }

    /// A connection that may only receive, only send, or both (the ends of
    /// a one-way pipe). The other operations return [`Error::Unsupported`].
    pub fn with_direction(stream: S, readable: bool, writable: bool) -> Connection<S> {
        Connection {
            stream,
            readable,
            writable,
            max_message: DEFAULT_MAX_MESSAGE_SIZE,
            read_buf: Box::default(),
            read_pos: 0,
            read_end: 0,
            pending: None,
            partial: Vec::new(),
            desynced: None,
            send_broken: false,
            scratch: Vec::new(),
            read_timeout: None,
            write_timeout: None,
            codec: Codec::Postcard,
        }
    }

    /// How typed messages ([`send`](Self::send), [`recv`](Self::recv))
    /// are encoded: [`Codec::Postcard`] unless [`set_codec`](Self::set_codec)
    /// said otherwise. Byte messages are not encoded at all.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Sets how typed messages are encoded, for both directions, from the
    /// next message on: [`Codec::Pickle`] (feature `pickle`) to talk to a
    /// Python peer that uses `conn.send(obj)` and `conn.recv()`.
    ///
    /// ```
    /// use ipc_core::{Codec, Connection, FdStream};
    /// let (ours, _theirs) = std::os::unix::net::UnixStream::pair()?;
    /// let mut conn = Connection::new(FdStream::new(ours.into())?);
    /// assert_eq!(conn.codec(), Codec::Postcard);
    /// # #[cfg(feature = "pickle")]
    /// conn.set_codec(Codec::Pickle);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }

    /// The largest message this end sends or receives, in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message
    }

    /// Sets the largest message this end sends or receives. A peer that
    /// announces more gets [`Error::TooLarge`] and nothing is allocated.
    pub fn set_max_message_size(&mut self, bytes: u64) {
        self.max_message = bytes;
    }

    /// How long a receive without a timeout of its own ([`recv`](Self::recv),
    /// [`recv_bytes`](Self::recv_bytes), ...) may wait for a whole message;
    /// `None`, the default, waits for ever.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Sets the [`read_timeout`](Self::read_timeout). It bounds the whole
    /// message, however it arrives and however many signals interrupt the
    /// wait, and a receive that runs out of it returns [`Error::Timeout`],
    /// keeping what it read for the next receive.
    ///
    /// ```
    /// # use std::{os::fd::OwnedFd, os::unix::net::UnixStream, time::Duration};
    /// # use ipc_core::{Connection, Error, FdStream};
    /// # let (a, _b) = UnixStream::pair()?;
    /// let mut conn = Connection::new(FdStream::new(OwnedFd::from(a))?);
    /// conn.set_read_timeout(Some(Duration::from_millis(10)));
    /// assert!(matches!(conn.recv_bytes(), Err(Error::Timeout)));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// How long a send without a timeout of its own may take to hand a
    /// whole message to the kernel; `None`, the default, waits for ever.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// Sets the [`write_timeout`](Self::write_timeout): the bound of each
    /// whole message, not of each system call. A send that runs out of it
    /// returns [`Error::Timeout`]; if part of the message had gone out, the
    /// peer can no longer find where messages start, so this end refuses
    /// to send again.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream underneath, mutably: for settings of the stream itself.
    /// Bytes read or written through it bypass the framing, and the peer
    /// loses its place in the stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Closes this end. The peer's receives return [`Error::Closed`] once
    /// it has read everything sent before.
    pub fn close(self) {}

    // ----- sending -------------------------------------------------------

    /// Sends `buf` as one message (Python's `send_bytes`), within the
    /// [`write_timeout`](Self::write_timeout) if one is set.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.send_bytes_until(buf, Deadline::from(self.write_timeout))
    }

    /// Sends `buf` as one message, giving up with [`Error::Timeout`] after
    /// `timeout` (see [`set_write_timeout`](Self::set_write_timeout) for
    /// what a timeout part-way through leaves).
    pub fn send_bytes_timeout(&mut self, buf: &[u8], timeout: Duration) -> Result<()> {
        self.send_bytes_until(buf, Deadline::after(timeout))
    }

    /// Sends `buf` as one message, giving up with [`Error::Timeout`] at
    /// `deadline`, which bounds the whole message.
    pub fn send_bytes_until(&mut self, buf: &[u8], deadline: impl Into<Deadline>) -> Result<()> {
        self.check_can_send()?;
        let len = buf.len() as u64;
        if len > self.max_message {
            return Err(Error::TooLarge {
                size: len,
                limit: self.max_message,
            });
        }
        let header = Header::new(len);
        let mut parts = [IoSlice::new(header.as_bytes()), IoSlice::new(buf)];
        self.write_all(&mut parts, deadline.into())
    }

    fn check_can_send(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::Unsupported("this end of the pipe cannot send"));
        }
        if self.send_broken {
            return Err(Error::Unsupported(
                "an earlier send timed out part-way through a message; the stream is out of sync",
            ));
        }
        Ok(())
    }

    /// Writes every byte of `parts` before `deadline`.
    fn write_all(&mut self, mut parts: &mut [IoSlice<'_>], deadline: Deadline) -> Result<()> {
        let mut started = false;
        let mut result = Ok(());
        while !parts.is_empty() {
            match self.stream.write_vectored(parts, deadline) {
                Ok(0) => {
                    result = Err(Error::Closed);
                    break;
                }
                Ok(written) => {
                    started = true;
                    IoSlice::advance_slices(&mut parts, written);
                }
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self.stream.flush(deadline).map_err(Error::from);
        }
        // Part of the message may be out, or held by the stream to go out
        // later: the peer would read the next message as its rest. (A peer
        // that is gone keeps saying so by itself.)
        self.send_broken |= started && result.as_ref().is_err_and(|e| !matches!(e, Error::Closed));
        result
    }

    /// Sends each of `messages` as one message, handing up to
    /// [`BATCH_LEN`] of them to the kernel in one vectored write. For many
    /// small messages this is several times the rate of one
    /// [`send_bytes`](Self::send_bytes) call each, which costs a system call
    /// per message; the receiver sees exactly the same messages.
    ///
    /// If an error stops the batch, the messages before the failing write
    /// were sent; a message is never sent in part unless the peer is gone.
    ///
    /// ```
    /// # use std::{os::fd::OwnedFd, os::unix::net::UnixStream};
    /// # use ipc_core::{Connection, FdStream};
    /// # let (a, b) = UnixStream::pair()?;
    /// # let mut left = Connection::new(FdStream::new(OwnedFd::from(a))?);
    /// # let mut right = Connection::new(FdStream::new(OwnedFd::from(b))?);
    /// left.send_bytes_batch(&[b"one", b"", b"three"])?;
    /// assert_eq!(right.recv_bytes()?, b"one");
    /// assert_eq!(right.recv_bytes()?, b"");
    /// assert_eq!(right.recv_bytes()?, b"three");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn send_bytes_batch(&mut self, messages: &[&[u8]]) -> Result<()> {
        self.send_bytes_batch_until(messages, Deadline::from(self.write_timeout))
    }

    /// [`send_bytes_batch`](Self::send_bytes_batch), giving up with
    /// [`Error::Timeout`] at `deadline`, which bounds the whole batch.
    pub fn send_bytes_batch_until(
        &mut self,
        messages: &[&[u8]],
        deadline: impl Into<Deadline>,
    ) -> Result<()> {
        self.check_can_send()?;
        let deadline = deadline.into();
        if let Some(big) = messages.iter().find(|m| m.len() as u64 > self.max_message) {
            return Err(Error::TooLarge {
                size: big.len() as u64,
                limit: self.max_message,
            });
        }
        for chunk in messages.chunks(BATCH_LEN) {
            let mut headers = [Header::new(0); BATCH_LEN];
            for (header, message) in headers.iter_mut().zip(chunk) {
                *header = Header::new(message.len() as u64);
            }
            // One allocation per chunk of up to BATCH_LEN messages.
            let mut parts: Vec<IoSlice<'_>> = headers
                .iter()
                .zip(chunk)
                .flat_map(|(h, m)| [IoSlice::new(h.as_bytes()), IoSlice::new(m)])
                .collect();
            self.write_all(&mut parts, deadline)?;
        }
        Ok(())
    }

    /// Sends `buf[offset..offset + size]` as one message, `size` defaulting
    /// to the rest of the buffer (Python's `send_bytes(buf, offset, size)`).
    /// A range outside `buf` is [`Error::InvalidArgument`] and sends nothing.
    pub fn send_bytes_range(
        &mut self,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
    ) -> Result<()> {
        let part = checked_range(buf, offset, size)?;
        self.send_bytes(part)
    }

    /// Sends a typed message, within the
    /// [`write_timeout`](Self::write_timeout) if one is set.
    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.send_until(msg, Deadline::from(self.write_timeout))
    }

    /// Sends a typed message, giving up with [`Error::Timeout`] after
    /// `timeout`.
    pub fn send_timeout<T: Serialize + ?Sized>(
        &mut self,
        msg: &T,
        timeout: Duration,
    ) -> Result<()> {
        self.send_until(msg, Deadline::after(timeout))
    }

    fn send_until<T: Serialize + ?Sized>(&mut self, msg: &T, deadline: Deadline) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = self
            .codec
            .encode_into(msg, &mut scratch)
            .and_then(|()| self.send_bytes_until(&scratch, deadline));
        self.keep_scratch(scratch);
        result
    }

    // ----- receiving -----------------------------------------------------

    /// Receives the next message (Python's `recv_bytes`), waiting as long
    /// as it takes, or up to the [`read_timeout`](Self::read_timeout) if one
    /// is set.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_vec(self.max_message, self.read_deadline())
    }

    /// Receives the next message if it is at most `max_len` bytes (Python's
    /// `recv_bytes(maxlength)`). A longer one is [`Error::TooLarge`] and
    /// stays unread.
    pub fn recv_bytes_max(&mut self, max_len: usize) -> Result<Vec<u8>> {
        self.recv_vec(self.max_message.min(max_len as u64), self.read_deadline())
    }

    /// Receives the next message if it is at most `max_len` bytes, giving up
    /// with [`Error::Timeout`] after `timeout` (`None` waits for ever).
    pub fn recv_bytes_max_timeout(
        &mut self,
        max_len: usize,
        timeout: impl Into<Option<Duration>>,
    ) -> Result<Vec<u8>> {
        self.recv_bytes_max_until(max_len, Deadline::from(timeout.into()))
    }

    /// Receives the next message if it is at most `max_len` bytes, giving up
    /// with [`Error::Timeout`] at `deadline`, which bounds the whole
    /// message. With [`Deadline::Now`] it takes only what has arrived.
    pub fn recv_bytes_max_until(
        &mut self,
        max_len: usize,
        deadline: impl Into<Deadline>,
    ) -> Result<Vec<u8>> {
        self.recv_vec(self.max_message.min(max_len as u64), deadline.into())
    }

    /// Receives the next message, giving up with [`Error::Timeout`] after
    /// `timeout`. Bytes read before the timeout are kept for the next call.
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_vec(self.max_message, Deadline::after(timeout))
    }

    /// Receives a message that can be had without waiting, or returns
    /// [`Error::Empty`].
    pub fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        empty_if_timeout(self.recv_vec(self.max_message, Deadline::Now))
    }

    /// Receives the next message into `buf` and returns its length, without
    /// allocating (Python's `recv_bytes_into`). If `buf` is too short the
    /// result is [`Error::BufferTooShort`] with the size needed, and the
    /// message stays unread for a call with a larger buffer.
    pub fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv_into_deadline(buf, self.read_deadline())
    }

    /// [`recv_bytes_into`](Self::recv_bytes_into) with a timeout.
    pub fn recv_bytes_into_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.recv_into_deadline(buf, Deadline::after(timeout))
    }

    /// Receives a typed message, waiting as long as it takes, or up to the
    /// [`read_timeout`](Self::read_timeout) if one is set.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.recv_typed(self.read_deadline())
    }

    /// Receives a typed message, giving up with [`Error::Timeout`] after
    /// `timeout`.
    pub fn recv_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T> {
        self.recv_typed(Deadline::after(timeout))
    }

    /// Receives a typed message that can be had without waiting, or returns
    /// [`Error::Empty`].
    pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        empty_if_timeout(self.recv_typed(Deadline::Now))
    }

    /// Whether there is something to receive, waiting up to `timeout`
    /// (`None` waits for ever). Like Python's `poll`, this is true once the
    /// peer has closed too (the next receive then says so), and it never
    /// consumes anything.
    ///
    /// ```
    /// # use std::{os::fd::OwnedFd, os::unix::net::UnixStream, time::Duration};
    /// # use ipc_core::{Connection, FdStream};
    /// # let (a, b) = UnixStream::pair()?;
    /// # let mut left = Connection::new(FdStream::new(OwnedFd::from(a))?);
    /// # let mut right = Connection::new(FdStream::new(OwnedFd::from(b))?);
    /// assert!(!right.poll(Duration::ZERO)?);
    /// left.send_bytes(b"")?;
    /// assert!(right.poll(Duration::from_secs(5))?);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn poll(&self, timeout: impl Into<Option<Duration>>) -> Result<bool> {
        if !self.readable {
            return Err(Error::Unsupported("this end of the pipe cannot receive"));
        }
        if self.has_buffered_input() {
            return Ok(true);
        }
        Ok(poll_readable(
            self.stream.as_fd(),
            Deadline::from(timeout.into()),
        )?)
    }

    fn read_deadline(&self) -> Deadline {
        Deadline::from(self.read_timeout)
    }

    fn has_buffered_input(&self) -> bool {
        self.read_end > self.read_pos
            || self.pending.is_some()
            || self.desynced.is_some()
            || self.stream.has_buffered_input()
    }

    fn recv_vec(&mut self, limit: u64, deadline: Deadline) -> Result<Vec<u8>> {
        let len = self.next_message_len(deadline)?;
        if len > limit {
            return Err(Error::TooLarge { size: len, limit });
        }
        if len <= UPFRONT_ALLOC_LEN {
            let mut message = vec![0u8; len as usize];
            self.read_payload(&mut message, deadline)?;
            Ok(message)
        } else {
            self.read_payload_growing(len, deadline)
        }
    }

    pub(crate) fn recv_into_deadline(
        &mut self,
        buf: &mut [u8],
        deadline: Deadline,
    ) -> Result<usize> {
        let len = self.next_message_len(deadline)?;
        if len > self.max_message {
            return Err(Error::TooLarge {
                size: len,
                limit: self.max_message,
            });
        }
        if len > buf.len() as u64 {
            return Err(Error::BufferTooShort {
                needed: len as usize,
            });
        }
        let len = len as usize;
        self.read_payload(&mut buf[..len], deadline)?;
        Ok(len)
    }

    pub(crate) fn recv_typed<T: DeserializeOwned>(&mut self, deadline: Deadline) -> Result<T> {
        let len = self.next_message_len(deadline)?;
        if len > self.max_message {
            return Err(Error::TooLarge {
                size: len,
                limit: self.max_message,
            });
        }
        if len > UPFRONT_ALLOC_LEN {
            // Too large to size a buffer on the peer's word alone: the
            // scratch space is sized by what arrives, and kept only if
            // small.
            let message = self.read_payload_growing(len, deadline)?;
            return self.codec.decode(&message);
        }
        let len = len as usize;
        let mut scratch = std::mem::take(&mut self.scratch);
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        let result = self
            .read_payload(&mut scratch[..len], deadline)
            .and_then(|()| self.codec.decode(&scratch[..len]));
        self.keep_scratch(scratch);
        result
    }

    fn keep_scratch(&mut self, scratch: Vec<u8>) {
        if scratch.capacity() <= SCRATCH_KEEP_LEN {
            self.scratch = scratch;
        }
    }

    /// Reads the next header (unless it was read already) and returns the
    /// payload length.
    /// Whether a receive would return at once from what waits in this
    /// connection's buffer: a whole message, or a header that it reports
    /// as an error (out of sync, or over the size limit).
    pub(crate) fn holds_whole_message(&self) -> bool {
        if self.desynced.is_some() {
            return true;
        }
        let buffered = (self.read_end - self.read_pos) as u64;
        match self.pending {
            Some(len) => self.partial.len() as u64 + buffered >= len,
            None => match frame::parse_header(&self.read_buf[self.read_pos..self.read_end]) {
                Ok(Parsed::Frame {
                    header_len,
                    payload_len,
                }) => payload_len > self.max_message || buffered - header_len as u64 >= payload_len,
                Ok(Parsed::NeedAtLeast(_)) => false,
                Err(_) => true,
            },
        }
    }

    /// Whether bytes read from the stream wait here for a receive.
    #[cfg(feature = "tokio")]
    pub(crate) fn holds_input(&self) -> bool {
        self.read_pos < self.read_end || self.pending.is_some()
    }

    fn next_message_len(&mut self, deadline: Deadline) -> Result<u64> {
        if !self.readable {
            return Err(Error::Unsupported("this end of the pipe cannot receive"));
        }
        if let Some(header) = self.desynced {
            return Err(Error::InvalidHeader { header });
        }
        if let Some(len) = self.pending {
            return Ok(len);
        }
        if self.read_buf.is_empty() {
            self.read_buf = vec![0u8; READ_BUFFER_START].into_boxed_slice();
        }
        loop {
            match frame::parse_header(&self.read_buf[self.read_pos..self.read_end]) {
                Ok(Parsed::Frame {
                    header_len,
                    payload_len,
                }) => {
                    self.read_pos += header_len;
                    self.pending = Some(payload_len);
                    return Ok(payload_len);
                }
                Ok(Parsed::NeedAtLeast(needed)) => {
                    let have = self.read_end - self.read_pos;
                    if self.fill_buffer(deadline)? == 0 {
                        return Err(if have == 0 {
                            Error::Closed
                        } else {
                            Error::Truncated {
                                expected: needed as u64,
                                received: have as u64,
                            }
                        });
                    }
                }
                Err(Error::InvalidHeader { header }) => {
                    self.desynced = Some(header);
                    return Err(Error::InvalidHeader { header });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads more bytes into the receive buffer; 0 means end of stream.
    fn fill_buffer(&mut self, deadline: Deadline) -> Result<usize> {
        if self.read_pos == self.read_end {
            self.read_pos = 0;
            self.read_end = 0;
        } else if self.read_end == self.read_buf.len() {
            self.read_buf.copy_within(self.read_pos..self.read_end, 0);
            self.read_end -= self.read_pos;
            self.read_pos = 0;
        }
        let n = self
            .stream
            .read(&mut self.read_buf[self.read_end..], deadline)?;
        self.read_end += n;
        if self.read_end == self.read_buf.len() && self.read_buf.len() < READ_BUFFER_LEN {
            self.grow_buffer();
        }
        Ok(n)
    }

    /// Grows the receive buffer to its full size, keeping the unread bytes.
    fn grow_buffer(&mut self) {
        let mut bigger = vec![0u8; READ_BUFFER_LEN];
        let unread = self.read_end - self.read_pos;
        bigger[..unread].copy_from_slice(&self.read_buf[self.read_pos..self.read_end]);
        self.read_buf = bigger.into_boxed_slice();
        self.read_pos = 0;
        self.read_end = unread;
    }

    /// Reads the pending payload into `dst`, which is exactly its length.
    fn read_payload(&mut self, dst: &mut [u8], deadline: Deadline) -> Result<()> {
        let mut filled = self.partial.len();
        dst[..filled].copy_from_slice(&self.partial);
        self.partial.clear();
        let result = self.read_payload_from(dst, &mut filled, deadline);
        match result {
            Ok(()) => self.pending = None,
            Err(_) => self.partial.extend_from_slice(&dst[..filled]),
        }
        result
    }

    fn read_payload_from(
        &mut self,
        dst: &mut [u8],
        filled: &mut usize,
        deadline: Deadline,
    ) -> Result<()> {
        loop {
            let buffered = &self.read_buf[self.read_pos..self.read_end];
            let take = buffered.len().min(dst.len() - *filled);
            dst[*filled..*filled + take].copy_from_slice(&buffered[..take]);
            self.read_pos += take;
            *filled += take;
            let missing = dst.len() - *filled;
            if missing == 0 {
                return Ok(());
            }
            let n = if missing >= self.read_buf.len() / 2 {
                self.stream.read(&mut dst[*filled..], deadline)?
            } else {
                let n = self.fill_buffer(deadline)?;
                if n > 0 {
                    continue;
                }
                n
            };
            if n == 0 {
                return Err(Error::Truncated {
                    expected: dst.len() as u64,
                    received: *filled as u64,
                });
            }
            *filled += n;
        }
    }

    /// Reads a payload too large to allocate on the peer's word alone: the
    /// buffer is extended [`UPFRONT_ALLOC_LEN`] bytes at a time as they
    /// arrive (its capacity doubling, so never more than twice what
    /// arrived), and a receive that times out has zeroed at most that much
    /// in vain.
    fn read_payload_growing(&mut self, len: u64, deadline: Deadline) -> Result<Vec<u8>> {
        let len = usize::try_from(len).map_err(|_| Error::TooLarge {
            size: len,
            limit: usize::MAX as u64,
        })?;
        let mut message = std::mem::take(&mut self.partial);
        let result = loop {
            let filled = message.len();
            if filled == len {
                break Ok(());
            }
            message.resize(filled + (len - filled).min(UPFRONT_ALLOC_LEN as usize), 0);
            let mut progress = filled;
            let chunk_end = message.len();
            let step = self.read_payload_from(&mut message[..chunk_end], &mut progress, deadline);
            message.truncate(progress);
            if let Err(e) = step {
                // The chunk's end is not what the frame announced.
                break Err(match e {
                    Error::Truncated { received, .. } => Error::Truncated {
                        expected: len as u64,
                        received,
                    },
                    e => e,
                });
            }
        };
        match result {
            Ok(()) => {
                self.pending = None;
                Ok(message)
            }
            Err(e) => {
                self.partial = message;
                Err(e)
            }
        }
    }
}

fn empty_if_timeout<T>(result: Result<T>) -> Result<T> {
    match result {
        Err(Error::Timeout) => Err(Error::Empty),
        other => other,
    }
}

/// `buf[offset..offset + size]`, or the error Python raises for a range
/// outside the buffer.
fn checked_range(buf: &[u8], offset: usize, size: Option<usize>) -> Result<&[u8]> {
    if offset > buf.len() {
        return Err(Error::InvalidArgument(
            "offset is past the end of the buffer",
        ));
    }
    let size = size.unwrap_or(buf.len() - offset);
    let end = offset
        .checked_add(size)
        .filter(|&end| end <= buf.len())
        .ok_or(Error::InvalidArgument(
            "offset + size is past the end of the buffer",
        ))?;
    Ok(&buf[offset..end])
}

impl<S: Transport> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.stream.as_fd())
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

impl<S: Transport> AsFd for Connection<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl<S: Transport> Waitable for Connection<S> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    // Part of a message kept from a receive that timed out is not enough:
    // the next receive would wait for the rest, and a wait that said
    // "ready" for it would be said again at once, for as long as the peer
    // stalls. The descriptor says when more comes.
    fn ready_without_waiting(&self) -> bool {
        self.readable && (self.holds_whole_message() || self.stream.has_buffered_input())
    }
}

impl<S: Transport> ByteSender for Connection<S> {
    fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        Connection::send_bytes(self, buf)
    }
    fn send_bytes_batch(&mut self, messages: &[&[u8]]) -> Result<()> {
        Connection::send_bytes_batch(self, messages)
    }
}

impl<S: Transport> ByteReceiver for Connection<S> {
    fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        Connection::recv_bytes(self)
    }
    fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        Connection::recv_bytes_timeout(self, timeout)
    }
    fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        Connection::try_recv_bytes(self)
    }
    fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        Connection::recv_bytes_into(self, buf)
    }
}

impl<S: Transport, T: Serialize + ?Sized> Sender<T> for Connection<S> {
    fn send(&mut self, msg: &T) -> Result<()> {
        Connection::send(self, msg)
    }
}

impl<S: Transport, T: DeserializeOwned> Receiver<T> for Connection<S> {
    fn recv(&mut self) -> Result<T> {
        Connection::recv(self)
    }
    fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        Connection::recv_timeout(self, timeout)
    }
    fn try_recv(&mut self) -> Result<T> {
        Connection::try_recv(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_range_matches_python_send_bytes() {
        let msg: Vec<u8> = (0..26).collect();
        assert_eq!(checked_range(&msg, 5, None).unwrap(), &msg[5..]);
        assert_eq!(checked_range(&msg, 7, Some(8)).unwrap(), &msg[7..15]);
        assert!(checked_range(&msg, 26, None).unwrap().is_empty());
        assert!(checked_range(&msg, 26, Some(0)).unwrap().is_empty());
        for (offset, size) in [
            (27, None),
            (22, Some(5)),
            (26, Some(1)),
            (1, Some(usize::MAX)),
        ] {
            assert!(matches!(
                checked_range(&msg, offset, size),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn part_of_a_message_is_not_ready_for_a_wait_until_the_rest_comes() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;
        let (mut writer, reader) = UnixStream::pair().unwrap();
        let mut reader = Connection::new(FdStream::new(reader.into()).unwrap());
        // A header announcing 6 bytes, and 2 of them.
        writer.write_all(&[0, 0, 0, 6, b'h', b'e']).unwrap();
        assert!(matches!(reader.try_recv_bytes(), Err(Error::Empty)));
        assert_eq!(
            crate::wait(&[&reader], Duration::ZERO).unwrap(),
            Vec::<usize>::new()
        );
        writer.write_all(b"llo!").unwrap();
        assert_eq!(
            crate::wait(&[&reader], Duration::from_secs(5)).unwrap(),
            [0]
        );
        assert_eq!(reader.try_recv_bytes().unwrap(), b"hello!");
        // A whole message already read into the buffer is ready at once.
        writer
            .write_all(&[0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b'])
            .unwrap();
        assert_eq!(reader.recv_bytes().unwrap(), b"a");
        assert_eq!(crate::wait(&[&reader], Duration::ZERO).unwrap(), [0]);
        assert_eq!(reader.recv_bytes().unwrap(), b"b");
    }
}
