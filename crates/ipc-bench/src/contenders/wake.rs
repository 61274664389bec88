//! The wake-up ping-pong: what it costs to be woken through an await
//! rather than from a blocking wait.
//!
//! Two process-shared semaphores made with `ipc_shm::Semaphore::new(0)`
//! and handed to the peer with `Process::pass`: `ping`, released by the
//! parent and acquired by the peer, and `pong`, the other way. Each side
//! releases the other's semaphore, then waits for its own, so every round
//! trip wakes each process once; nothing else crosses (size 0). The two
//! processes are pinned to two different CPUs (see `super::peer_cpu`), so
//! each one really goes to sleep and is woken by the other.
//!
//! - [`BLOCKING`], the floor: both sides wait in `acquire()`, their own
//!   thread asleep in a futex wait.
//! - [`AWAITED`]: both sides `acquire_async().await` on a tokio
//!   `current_thread` runtime. The futex is then waited on by `ipc-shm`'s
//!   watching thread (`ipc_shm::watch`, one per process), which wakes the
//!   task: the path of every async wait on shared memory in the workspace
//!   (the async queue's puts and gets among them). That thread starts at
//!   the process's first await, inside a pinned measurement, so it
//!   inherits its process's CPU.
//!
//! A round trip holds two awaited wake-ups in [`AWAITED`] and none in
//! [`BLOCKING`]: half the difference of their p50s is the extra cost of one
//! awaited wake-up, which the report prints under the table.

use ipc_core::process::{inherited, Process};
use ipc_shm::Semaphore;

use super::async_io::{self, AsyncLink};
use super::{serve, spawn_peer, Contender, Entry, Link, LinkContender};
use crate::bench::{Benchmark, Result, Via};

/// Name of the blocking semaphores, the floor.
pub const BLOCKING: &str = "ipc-shm Semaphore";

/// Name of the awaited semaphores.
pub const AWAITED: &str = "ipc-shm Semaphore async";

fn wake_ping_pong(bench: Benchmark) -> bool {
    bench.via == Via::AsyncWake
}

/// The registry entry of [`BLOCKING`].
pub fn blocking_entry() -> Entry {
    Entry {
        name: BLOCKING,
        about: "the floor of the wake-up ping-pong: two `ipc_shm::Semaphore::new(0)` \
                passed to the peer with `Process::pass`; each side `release()`s the \
                other's and blocks in `acquire()` on its own (a futex wait of its own \
                thread), the two processes on two CPUs",
        start: start_blocking,
        peer: Some(|_| serve(inherited_semaphores()?)),
        runs: wake_ping_pong,
    }
}

/// The registry entry of [`AWAITED`].
pub fn awaited_entry() -> Entry {
    Entry {
        name: AWAITED,
        about: "the semaphores of `ipc-shm Semaphore`, each side `release()`ing the \
                other's and `acquire_async().await`ing its own on a tokio `current_thread` \
                runtime, so each process is woken through `ipc-shm`'s watching thread \
                (`ipc_shm::watch`); two such awaited wake-ups per round trip, none in the \
                floor, so (p50 − floor p50) / 2 is the extra cost of one awaited wake-up",
        start: start_awaited,
        peer: Some(|_| async_io::peer(inherited_semaphores)),
        runs: wake_ping_pong,
    }
}

/// The semaphores and a process that passes them to the peer; the
/// parent's end waits on `pong` and releases `ping`.
fn semaphores() -> Result<(Process, Semaphores)> {
    let (ping, pong) = (Semaphore::new(0)?, Semaphore::new(0)?);
    let process = Process::new().pass("ping", &ping)?.pass("pong", &pong)?;
    Ok((
        process,
        Semaphores {
            own: pong,
            other: ping,
        },
    ))
}

/// The peer's end: it waits on `ping` and releases `pong`.
fn inherited_semaphores() -> Result<Semaphores> {
    Ok(Semaphores {
        own: inherited("ping")?,
        other: inherited("pong")?,
    })
}

fn start_blocking() -> Result<Option<Box<dyn Contender>>> {
    let (process, link) = semaphores()?;
    let (ctl, child) = spawn_peer(BLOCKING, process, &[])?;
    Ok(Some(Box::new(LinkContender::new(ctl, child, link))))
}

fn start_awaited() -> Result<Option<Box<dyn Contender>>> {
    let (process, link) = semaphores()?;
    async_io::start(AWAITED, process, || Ok(link))
}

/// One side of the wake-up ping-pong: a "message" is a release of the
/// other side's semaphore, receiving one is acquiring its own.
struct Semaphores {
    /// Released by the other side, waited on here.
    own: Semaphore,
    /// Released here, waited on by the other side.
    other: Semaphore,
}

impl Link for Semaphores {
    fn prepare(&mut self, _send: usize, _recv: usize) {}

    fn send(&mut self) -> Result {
        Ok(self.other.release()?)
    }

    fn recv(&mut self) -> Result<usize> {
        self.own.acquire();
        Ok(0)
    }
}

impl AsyncLink for Semaphores {
    fn prepare(&mut self, _send: usize, _recv: usize) {}

    async fn send(&mut self) -> Result {
        Ok(self.other.release()?)
    }

    async fn recv(&mut self) -> Result<usize> {
        self.own.acquire_async().await;
        Ok(0)
    }
}
