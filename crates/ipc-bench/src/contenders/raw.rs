//! The floor: a plain `AF_UNIX` `SOCK_STREAM` socketpair with 1 MiB
//! kernel buffers, framed by hand with nix calls and no `ipc-core` code on
//! the data path.
//!
//! The frame is Python's: a 4-byte big-endian length, then the payload;
//! both go out in one `writev`. The reader is what a careful hand-written
//! framed reader does: a 64 KiB staging buffer that `read` fills as far as
//! the kernel allows (so many small frames cost one call), and payloads of
//! half that size or more read straight into the reused message buffer.
//! Only the hand-over of the descriptor to the child uses `ipc-core`'s
//! process API.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};

use ipc_core::process::{inherited, Handle, Inheritable, Inherited, Process};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType};

use super::{spawn_peer, Contender, Entry, Link, LinkContender};
use crate::bench::Result;

/// Name of the floor contender.
pub const NAME: &str = "raw socketpair";

/// Name of the unbuffered variant.
pub const EXACT: &str = "raw socketpair (exact reads)";

/// The kernel buffer asked for on each end, as `ipc_pipe` asks.
const BUFFER_SIZE: usize = 1 << 20;

/// The staging buffer of the reader.
const STAGE_LEN: usize = 64 << 10;

/// The registry entry of the floor.
pub fn entry() -> Entry {
    Entry {
        name: NAME,
        about: "the floor: a socketpair with 1 MiB buffers framed by hand \
                (4-byte length + payload in one `writev`, buffered `read`s)",
        start: || start(NAME, true),
        peer: Some(|_| super::serve(Raw::new(inherited::<Socket>("data")?.0, true))),
        runs: super::pipe_only,
    }
}

/// The registry entry of the unbuffered variant, which reads each header
/// and each payload with `read`s of exactly their size: two calls per
/// small message, but no copy through a staging buffer.
pub fn exact_entry() -> Entry {
    Entry {
        name: EXACT,
        about: "the floor's socketpair and writer, but the reader reads exactly the \
                4-byte header, then exactly the payload into the message buffer \
                (no staging buffer)",
        start: || start(EXACT, false),
        peer: Some(|_| super::serve(Raw::new(inherited::<Socket>("data")?.0, false))),
        runs: super::pipe_only,
    }
}

fn start(name: &str, buffered: bool) -> Result<Option<Box<dyn Contender>>> {
    let (a, b) = socketpair()?;
    let (ctl, child) = spawn_peer(name, Process::new().pass("data", &b)?, &[])?;
    Ok(Some(Box::new(LinkContender::new(
        ctl,
        child,
        Raw::new(a.0, buffered),
    ))))
}

/// The floor's socketpair: `AF_UNIX` stream sockets with 1 MiB kernel
/// buffers on both ends.
pub(crate) fn socketpair() -> Result<(Socket, Socket)> {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    for end in [&a, &b] {
        socket::setsockopt(end, sockopt::SndBuf, &BUFFER_SIZE)?;
        socket::setsockopt(end, sockopt::RcvBuf, &BUFFER_SIZE)?;
    }
    Ok((Socket(a), Socket(b)))
}

/// A bare descriptor handed to the peer.
pub(crate) struct Socket(pub(crate) OwnedFd);

impl Inheritable for Socket {
    fn handle(&self) -> Handle<'_> {
        Handle {
            fds: vec![self.0.as_fd()],
            text: String::new(),
        }
    }

    fn from_inherited(inherited: Inherited) -> ipc_core::Result<Socket> {
        let [fd]: [OwnedFd; 1] = inherited
            .fds
            .try_into()
            .map_err(|_| ipc_core::Error::InvalidArgument("expected one descriptor"))?;
        Ok(Socket(fd))
    }
}

/// The hand-framed end (of any stream socket).
pub(crate) struct Raw {
    fd: OwnedFd,
    buffered: bool,
    out: Vec<u8>,
    stage: Box<[u8]>,
    pos: usize,
    end: usize,
    msg: Vec<u8>,
}

impl Raw {
    pub(crate) fn new(fd: OwnedFd, buffered: bool) -> Raw {
        Raw {
            fd,
            buffered,
            out: Vec::new(),
            stage: vec![0; STAGE_LEN].into_boxed_slice(),
            pos: 0,
            end: 0,
            msg: Vec::new(),
        }
    }

    /// Reads more into the staging buffer, keeping what is unread.
    fn fill(&mut self) -> Result {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.stage.len() {
            self.stage.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let n = read(&self.fd, &mut self.stage[self.end..])?;
        self.end += n;
        Ok(())
    }
}

impl Raw {
    /// The unbuffered reader: exactly the header, then exactly the payload.
    fn recv_exact(&mut self) -> Result<usize> {
        let mut header = [0u8; 4];
        read_exact(&self.fd, &mut header)?;
        let len = u32::from_be_bytes(header) as usize;
        if self.msg.len() < len {
            self.msg.resize(len, 0);
        }
        read_exact(&self.fd, &mut self.msg[..len])?;
        Ok(len)
    }
}

fn read_exact(fd: &OwnedFd, mut buf: &mut [u8]) -> Result {
    while !buf.is_empty() {
        let n = read(fd, buf)?;
        buf = &mut buf[n..];
    }
    Ok(())
}

fn read(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return Err("peer closed".into()),
            Ok(n) => return Ok(n),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Link for Raw {
    fn prepare(&mut self, send: usize, recv: usize) {
        self.out = vec![0xa5; send];
        if self.msg.len() < recv {
            self.msg.resize(recv, 0);
        }
    }

    fn send(&mut self) -> Result {
        let header = (self.out.len() as u32).to_be_bytes();
        let mut parts = [IoSlice::new(&header), IoSlice::new(&self.out)];
        let mut parts: &mut [IoSlice<'_>] = &mut parts;
        while !parts.is_empty() {
            match nix::sys::uio::writev(&self.fd, parts) {
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize> {
        if !self.buffered {
            return self.recv_exact();
        }
        while self.end - self.pos < 4 {
            self.fill()?;
        }
        let header: [u8; 4] = self.stage[self.pos..self.pos + 4]
            .try_into()
            .expect("four bytes");
        self.pos += 4;
        let len = u32::from_be_bytes(header) as usize;
        if self.msg.len() < len {
            self.msg.resize(len, 0);
        }
        let mut filled = 0;
        loop {
            let take = (self.end - self.pos).min(len - filled);
            self.msg[filled..filled + take].copy_from_slice(&self.stage[self.pos..self.pos + take]);
            self.pos += take;
            filled += take;
            if filled == len {
                return Ok(len);
            }
            if len - filled >= STAGE_LEN / 2 {
                filled += read(&self.fd, &mut self.msg[filled..len])?;
            } else {
                self.fill()?;
            }
        }
    }
}
