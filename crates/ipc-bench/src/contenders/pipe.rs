//! `ipc-pipe` contenders: `ipc_pipe::duplex()` with the bytes API into a
//! reused buffer, the bytes API that allocates each message, and typed
//! (serde) messages encoded with postcard or with Python's pickle.

use ipc_core::process::{inherited, Process};
use ipc_core::{Codec, Connection, FdStream, Transport};
use serde::{Deserialize, Serialize};

use super::{spawn_peer, Contender, Entry, Link, LinkContender};
use crate::bench::{Result, Via};

/// Name of the bytes contender.
pub const BYTES: &str = "ipc-pipe bytes";
/// Name of the batching bytes contender.
pub const BATCHED: &str = "ipc-pipe bytes (batched)";
/// Messages per `send_bytes_batch` call of [`BATCHED`].
pub const BATCH: usize = 512;
/// Name of the allocating bytes contender.
pub const BYTES_ALLOC: &str = "ipc-pipe bytes (recv_bytes)";
/// Name of the typed contender.
pub const TYPED: &str = "ipc-pipe typed";
/// Name of the typed contender whose connections use the pickle codec.
pub const PICKLE: &str = "ipc-pipe pickle";

/// The registry entry of [`BYTES`].
pub fn bytes_entry() -> Entry {
    Entry {
        name: BYTES,
        about: "`ipc_pipe::duplex()`, `send_bytes` / `recv_bytes_into` a reused buffer \
                (also the blocking reference of the async ping-pong)",
        start: || start(BYTES, |conn| Bytes::new(conn, false)),
        peer: Some(|_| peer(|conn| Bytes::new(conn, false))),
        runs: |b| super::pipe_only(b) || b.via == Via::AsyncPipe,
    }
}

/// The registry entry of [`BATCHED`]: only the one-way throughput of small
/// messages, where one system call per message is the limit. The sender
/// hands [`BATCH`] messages at a time to `send_bytes_batch` (one vectored
/// write); the wire format and the receiver (`recv_bytes_into`) are those
/// of [`BYTES`].
pub fn batched_entry() -> Entry {
    Entry {
        name: BATCHED,
        about: "`ipc_pipe::duplex()`, the sender hands 512 messages at a time to \
                `send_bytes_batch` (one `writev`); same wire format, receiver unchanged \
                (`recv_bytes_into` a reused buffer): only the sending pattern differs",
        start: || start(BATCHED, Batched::new),
        // The receiving peer is exactly that of `BYTES`.
        peer: Some(|_| peer(|conn| Bytes::new(conn, false))),
        runs: |b| {
            super::pipe_only(b) && b.kind == crate::bench::Kind::Throughput && b.size <= 4 << 10
        },
    }
}

/// The registry entry of [`BYTES_ALLOC`].
pub fn bytes_alloc_entry() -> Entry {
    Entry {
        name: BYTES_ALLOC,
        about: "`ipc_pipe::duplex()`, `send_bytes` / `recv_bytes` (a new `Vec` per message)",
        start: || start(BYTES_ALLOC, |conn| Bytes::new(conn, true)),
        peer: Some(|_| peer(|conn| Bytes::new(conn, true))),
        runs: super::pipe_only,
    }
}

/// The registry entry of [`TYPED`].
pub fn typed_entry() -> Entry {
    Entry {
        name: TYPED,
        about: "`ipc_pipe::duplex()`, `send` / `recv` of a serde struct holding a \
                `serde_bytes` `Vec<u8>` (a `u64` for 8 B)",
        start: || start(TYPED, |conn| Typed::new(conn, Codec::Postcard)),
        peer: Some(|_| peer(|conn| Typed::new(conn, Codec::Postcard))),
        runs: super::pipe_only,
    }
}

/// The registry entry of [`PICKLE`]: the messages of [`TYPED`], with
/// `Codec::Pickle` on both ends, so the two differ only in the codec.
pub fn pickle_entry() -> Entry {
    Entry {
        name: PICKLE,
        about: "`ipc_pipe::duplex()` with `set_codec(Codec::Pickle)` on both ends, `send` / \
                `recv` of the messages of `ipc-pipe typed` (a dict holding `bytes`, an \
                `int` for 8 B), each checked by `ipc_core::pickle::check` before it \
                is decoded",
        start: || start(PICKLE, |conn| Typed::new(conn, Codec::Pickle)),
        peer: Some(|_| peer(|conn| Typed::new(conn, Codec::Pickle))),
        runs: super::pipe_only,
    }
}

/// Starts contender `name`: a duplex whose parent end becomes `link`, and
/// a peer given the other end as `data`.
pub(crate) fn start<L: Link + 'static>(
    name: &str,
    link: fn(Connection) -> L,
) -> Result<Option<Box<dyn Contender>>> {
    let (parent, child_end) = ipc_pipe::duplex()?;
    let (ctl, child) = spawn_peer(name, Process::new().pass("data", &child_end)?, &[])?;
    drop(child_end);
    Ok(Some(Box::new(LinkContender::new(ctl, child, link(parent)))))
}

/// The peer of a contender started by [`start`]: `link` over the `data`
/// end, serving until told to quit.
pub(crate) fn peer<L: Link>(link: fn(Connection) -> L) -> Result {
    super::serve(link(inherited("data")?))
}

/// The bytes API (over any transport: the socket contenders use it too).
pub(crate) struct Bytes<S: Transport = FdStream> {
    conn: Connection<S>,
    allocate: bool,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl<S: Transport> Bytes<S> {
    pub(crate) fn new(conn: Connection<S>, allocate: bool) -> Bytes<S> {
        Bytes {
            conn,
            allocate,
            out: Vec::new(),
            buf: Vec::new(),
        }
    }
}

impl<S: Transport> Link for Bytes<S> {
    fn prepare(&mut self, send: usize, recv: usize) {
        self.out = vec![0xa5; send];
        if self.buf.len() < recv {
            self.buf.resize(recv, 0);
        }
    }

    fn send(&mut self) -> Result {
        Ok(self.conn.send_bytes(&self.out)?)
    }

    fn recv(&mut self) -> Result<usize> {
        if self.allocate {
            return Ok(self.conn.recv_bytes()?.len());
        }
        loop {
            match self.conn.recv_bytes_into(&mut self.buf) {
                Ok(n) => return Ok(n),
                Err(ipc_core::Error::BufferTooShort { needed }) => self.buf.resize(needed, 0),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The bytes API, sending in batches of [`BATCH`]: `send` queues the
/// prepared message, and a batch goes out when it is full or before the
/// next receive (so the last partial batch of a run is sent before waiting
/// for the acknowledgement).
struct Batched {
    inner: Bytes,
    pending: usize,
}

impl Batched {
    fn new(conn: Connection) -> Batched {
        Batched {
            inner: Bytes::new(conn, false),
            pending: 0,
        }
    }

    fn flush(&mut self) -> Result {
        if self.pending > 0 {
            let batch = vec![self.inner.out.as_slice(); self.pending];
            self.inner.conn.send_bytes_batch(&batch)?;
            self.pending = 0;
        }
        Ok(())
    }
}

impl Link for Batched {
    fn prepare(&mut self, send: usize, recv: usize) {
        self.pending = 0;
        self.inner.prepare(send, recv);
    }

    fn send(&mut self) -> Result {
        self.pending += 1;
        if self.pending == BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize> {
        self.flush()?;
        self.inner.recv()
    }
}

/// A typed message of `size` payload bytes.
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The typed message sent or expected: a `u64` for 8 bytes, else a
/// [`Payload`].
enum Message {
    Word(u64),
    Bytes(Payload),
}

/// The typed API, with the codec the connection was given.
struct Typed {
    conn: Connection,
    out: Message,
    recv_word: bool,
}

impl Typed {
    fn new(mut conn: Connection, codec: Codec) -> Typed {
        conn.set_codec(codec);
        Typed {
            conn,
            out: Message::Word(0),
            recv_word: false,
        }
    }
}

impl Link for Typed {
    fn prepare(&mut self, send: usize, recv: usize) {
        self.out = if send == 8 {
            Message::Word(0xa5a5_a5a5_a5a5_a5a5)
        } else {
            Message::Bytes(Payload {
                data: vec![0xa5; send],
            })
        };
        self.recv_word = recv == 8;
    }

    fn send(&mut self) -> Result {
        match &self.out {
            Message::Word(w) => self.conn.send(w)?,
            Message::Bytes(p) => self.conn.send(p)?,
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize> {
        if self.recv_word {
            let _: u64 = self.conn.recv()?;
            Ok(8)
        } else {
            Ok(self.conn.recv::<Payload>()?.data.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a typed contender over a duplex, as its parent and
    /// peer use them.
    fn typed_pair(codec: Codec) -> (Typed, Typed) {
        let (a, b) = ipc_pipe::duplex().unwrap();
        (Typed::new(a, codec), Typed::new(b, codec))
    }

    #[test]
    fn typed_messages_cross_with_either_codec() {
        for codec in [Codec::Postcard, Codec::Pickle] {
            for size in [8, 64, 4 << 10] {
                let (mut parent, mut peer) = typed_pair(codec);
                parent.prepare(size, size);
                peer.prepare(size, size);
                parent.send().unwrap();
                assert_eq!(peer.recv().unwrap(), size, "{codec:?}, {size} B");
                peer.send().unwrap();
                assert_eq!(parent.recv().unwrap(), size, "{codec:?}, {size} B");
            }
        }
    }
}
