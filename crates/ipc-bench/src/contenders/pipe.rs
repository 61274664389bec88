//! `ipc-pipe` contenders: `ipc_pipe::duplex()` with the bytes API into a
//! reused buffer, the bytes API that allocates each message, and typed
//! (serde) messages.

use ipc_core::process::{inherited, Process};
use ipc_core::{Connection, FdStream, Transport};
use serde::{Deserialize, Serialize};

use super::{spawn_peer, Contender, Entry, Link, LinkContender};
use crate::bench::Result;

/// Name of the bytes contender.
pub const BYTES: &str = "ipc-pipe bytes";
/// Name of the allocating bytes contender.
pub const BYTES_ALLOC: &str = "ipc-pipe bytes (recv_bytes)";
/// Name of the typed contender.
pub const TYPED: &str = "ipc-pipe typed";

/// The registry entry of [`BYTES`].
pub fn bytes_entry() -> Entry {
    Entry {
        name: BYTES,
        about: "`ipc_pipe::duplex()`, `send_bytes` / `recv_bytes_into` a reused buffer",
        start: || start(BYTES, |conn| Bytes::new(conn, false)),
        peer: Some(|_| peer(|conn| Bytes::new(conn, false))),
        runs: super::pipe_only,
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
        start: || start(TYPED, Typed::new),
        peer: Some(|_| peer(Typed::new)),
        runs: super::pipe_only,
    }
}

fn start<L: Link + 'static>(
    name: &str,
    link: fn(Connection) -> L,
) -> Result<Option<Box<dyn Contender>>> {
    let (parent, child_end) = ipc_pipe::duplex()?;
    let (ctl, child) = spawn_peer(name, Process::new().pass("data", &child_end)?, &[])?;
    drop(child_end);
    Ok(Some(Box::new(LinkContender::new(ctl, child, link(parent)))))
}

fn peer<L: Link>(link: fn(Connection) -> L) -> Result {
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

/// The typed API.
struct Typed {
    conn: Connection,
    out: Message,
    recv_word: bool,
}

impl Typed {
    fn new(conn: Connection) -> Typed {
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
