//! A worker process: its side (the loop it runs) and the pool's side (the
//! process, its socket, its progress word and the chunk it is running).

use std::os::unix::net::UnixStream;

use ipc_core::process::{inherited, Process};
use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::spawn::batch::{self, Outcomes};
use ipc_core::spawn::{ChildFailure, Runner, Spawned, StartMethod};
use ipc_core::{Connection, Error, FdStream, Result};
use ipc_shm::SharedMemory;
use serde::{Deserialize, Serialize};

use crate::wire::Chunk;

/// The handle key of a worker's task socket.
const TASKS: &str = "ipc-pool-tasks";
/// The handle key of a worker's progress word.
const PROGRESS: &str = "ipc-pool-progress";

/// The progress word's value while a worker has not started its chunk.
const NOT_STARTED: u64 = u64::MAX;

/// Set, beside a chunk's number, in a worker's start word by the pool when
/// it takes that chunk back before the worker started it.
const TAKEN_BACK: u64 = 1 << 32;

/// What a worker is started with.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// An entry to run once before the first task, and its encoded
    /// argument.
    pub initializer: Option<(String, Vec<u8>)>,
}

/// The loop a worker runs: a chunk in, its outcomes out (in one frame, or
/// several for a chunk with large results), until the pool closes the
/// socket. Before each task it writes the chunk's number and the task's
/// place in it to its progress word, so that if it dies the pool knows
/// which task it was running, even with its next chunk already sent.
/// Before each chunk it marks the chunk started in its start word, unless
/// the pool took it back first (see [`Worker::take_back`]): then it skips
/// it.
pub(crate) fn serve(setup: Setup) {
    let (Ok(mut tasks), Ok(progress)) = (
        inherited::<Connection<FdStream>>(TASKS),
        inherited::<SharedMemory>(PROGRESS),
    ) else {
        return;
    };
    if let Some((name, argument)) = setup.initializer {
        // The panic ends the worker, and the pool fails the chunk sent to
        // it with the message.
        if let Err(failure) =
            Runner::find(&name).and_then(|r| r.run_into(&argument, &mut Vec::new()))
        {
            panic!("the pool's initializer failed: {failure}");
        }
    }
    let start = start_word(&progress);
    let progress = progress_word(&progress);
    let mut outcomes = Outcomes::default();
    // Chunks are numbered in the order they come, as the pool numbers them
    // when it sends them (see [`progress`](Worker::progress)).
    let mut number = 0u32;
    while let Ok(frame) = tasks.recv_bytes() {
        let Ok(chunk) = Chunk::read(&frame) else {
            return;
        };
        let mut chunk_tasks = chunk.tasks().numbered(number);
        let this = number;
        number = number.wrapping_add(1);
        if !begin(start, this) {
            continue;
        }
        outcomes.clear();
        let send = |outcomes: &mut Outcomes| tasks.send_bytes(outcomes.frame()).is_ok();
        // The entry runs the whole chunk in its own code: one call and
        // one unwind guard for many tasks.
        let sent = match Runner::find(chunk.entry) {
            Ok(runner) => runner.run_tasks(&mut chunk_tasks, &mut outcomes, progress, send),
            Err(unknown) => batch::fail_tasks(&mut chunk_tasks, &unknown, &mut outcomes, send),
        };
        if !sent {
            return;
        }
    }
}

/// The word of a worker's progress segment that says which task it runs.
fn progress_word(progress: &SharedMemory) -> &AtomicU64 {
    ipc_shm::raw::atomic_u64(progress, 0)
}

/// The word of a worker's progress segment that says which chunk it
/// started last (its number, wrapping), or, with [`TAKEN_BACK`], which
/// chunk the pool took back before it started it.
fn start_word(progress: &SharedMemory) -> &AtomicU64 {
    ipc_shm::raw::atomic_u64(progress, 8)
}

/// Marks chunk `number` started, the one after the last started; `false`
/// if the pool took it back first, which the worker then skips.
fn begin(start: &AtomicU64, number: u32) -> bool {
    let before = u64::from(number.wrapping_sub(1));
    let mine = u64::from(number);
    match start.compare_exchange(before, mine, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(now) => {
            // Taken back, or a word this worker cannot explain: it starts
            // counting from this chunk either way.
            start.store(mine, Ordering::Release);
            now != TAKEN_BACK | mine
        }
    }
}

/// How the pool starts each worker.
pub(crate) struct Recipe {
    pub method: StartMethod,
    /// Whether a fork may go ahead beside other threads.
    pub allow_threads: bool,
    /// What the worker is given.
    pub setup: Setup,
}

/// One worker process, seen from the pool.
pub(crate) struct Worker {
    pub spawned: Spawned<()>,
    pub tasks: Connection<FdStream>,
    /// Which task of its chunk the worker is running: a word that only
    /// the worker writes.
    progress: SharedMemory,
    /// Tasks it has finished (for `max_tasks_per_child`).
    pub finished: usize,
    /// How many chunks it was sent: the next chunk's number.
    pub sent: u32,
    /// How many bytes its task socket holds before a send waits (the
    /// kernel's `SO_SNDBUF`, which counts some overhead too).
    pub send_buffer: usize,
}

impl Worker {
    pub fn start(recipe: &Recipe) -> Result<Worker> {
        let (ours, theirs) = UnixStream::pair()?;
        let send_buffer =
            rustix::net::sockopt::socket_send_buffer_size(&ours).map_err(std::io::Error::from)?;
        let tasks = Connection::new(FdStream::new(ours.into())?);
        let theirs = Connection::new(FdStream::new(theirs.into())?);
        let progress = SharedMemory::anonymous(16)?;
        progress_word(&progress).store(NOT_STARTED, Ordering::Relaxed);
        // No chunk started: the one before chunk 0.
        start_word(&progress).store(u64::from(u32::MAX), Ordering::Relaxed);
        let process = match recipe.method {
            StartMethod::Fork if recipe.allow_threads => Process::new().allow_threads(),
            _ => Process::new(),
        };
        let spawned = process
            .pass(TASKS, &theirs)?
            .pass(PROGRESS, &progress)?
            .start(recipe.method, ipc_core::entry!(serve), &recipe.setup)?;
        Ok(Worker {
            spawned,
            tasks,
            progress,
            finished: 0,
            sent: 0,
            send_buffer,
        })
    }

    /// Which task the worker is running or ran last: the number of its
    /// chunk (the worker's chunks are numbered from 0 in the order they
    /// were sent, wrapping) and its place in that chunk; `None` before its
    /// first task. A worker may write anything there: the value is a
    /// hint, checked against the chunks sent before it is used.
    pub fn progress(&self) -> Option<(u32, usize)> {
        let word = progress_word(&self.progress).load(Ordering::Relaxed);
        (word != NOT_STARTED).then_some(((word >> 32) as u32, (word & 0xffff_ffff) as usize))
    }

    /// Takes back chunk `number`, sent to the worker ahead of the one it
    /// runs, if the worker has not started it: `true` then, and the worker
    /// will skip it. The worker starts chunks in order, each only if the
    /// word still names the chunk before it, so exactly one of the two
    /// changes the word.
    pub fn take_back(&self, number: u32) -> bool {
        let before = u64::from(number.wrapping_sub(1));
        let taken_back = TAKEN_BACK | u64::from(number);
        start_word(&self.progress)
            .compare_exchange(before, taken_back, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Why this worker is gone: it closed its socket, so it is exiting or
    /// dead, and its status says which. `Ok` is a signal or an exit code;
    /// `Err` is a failure of the worker's own code (its initializer).
    pub fn death(self) -> std::result::Result<ChildFailure, ChildFailure> {
        let pid = self.spawned.pid();
        drop(self.tasks);
        let died = |signal, code| ChildFailure::WorkerDied { pid, signal, code };
        match self.spawned.join_timeout(REAP) {
            Err(Error::Child(failure)) => match *failure {
                ChildFailure::Signaled(signal) => Ok(died(Some(signal), None)),
                ChildFailure::Exited(code) => Ok(died(None, Some(code))),
                other => Err(other),
            },
            _ => Ok(died(None, None)),
        }
    }
}

/// How long the pool waits for a worker whose socket ended to be reaped.
pub(crate) const REAP: std::time::Duration = std::time::Duration::from_secs(10);
