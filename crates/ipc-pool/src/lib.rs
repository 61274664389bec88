//! Python's `multiprocessing.Pool` for Rust on Linux: worker processes
//! that run registered functions ([`ipc_core::entry!`]) on typed arguments
//! and hand back typed results.
//!
//! ```
//! use ipc_pool::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> ipc_core::Result<()> {
//!     ipc_core::spawn::init(); // a worker starts here
//!     let mut pool = Pool::new(2)?; // Python: with Pool(2) as p:
//!     let squares = pool.map(ipc_core::entry!(square), 0..10)?; // p.map(square, range(10))
//!     assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//!     Ok(())
//! }
//! ```
//!
//! # Workers
//!
//! Workers are started with the spawn start method
//! ([`ipc_core::spawn`]): each is a fresh run of this program, so the pool
//! is sound in a program with other threads (a tokio runtime beside it),
//! and `ipc_core::spawn::init()` must be the first line of `main` (in a
//! test crate, `ipc_core::spawn_harness!()`). Each worker has a socket of
//! its own and a progress word in shared memory; the pool sends it a chunk
//! of tasks (about four per worker, Python's rule) and reads back the
//! chunk's results in one frame, waiting on every busy worker's socket at
//! once ([`ipc_core::wait`]). A socket that ends means its worker died; its
//! progress word says which task it was running.
//!
//! # A worker that dies
//!
//! A worker killed in the middle of a task (SIGKILL, an abort, a segfault)
//! fails exactly that task, with [`ChildFailure::WorkerDied`] naming the
//! worker and the signal; the rest of its chunk goes back to the queue, a
//! replacement worker starts, and every other task completes. The tasks of
//! that chunk that the worker had finished run again, as their results
//! died with it: tasks run at least once, so a task a worker's death can
//! interrupt should be safe to repeat. (Python's
//! Pool waits for ever in this case, and `ProcessPoolExecutor` breaks the
//! whole pool.) A task that panics fails alone with the panic message; a
//! task whose argument or result cannot be encoded fails alone too.
//!
//! # Known limits
//!
//! * Every argument and result is encoded on its own inside a chunk: a
//!   `map` of 100,000 trivial tasks on 2 workers takes about 24 ms, level
//!   with Python's `Pool.map` (21-23 ms measured side by side), not yet
//!   ahead of it. Encoding a chunk's arguments as one sequence is the next
//!   step.
//! * No `imap`, `imap_unordered`, `apply_async`, initializer or
//!   `maxtasksperchild` yet.
//!
//! [`ChildFailure::WorkerDied`]: ipc_core::spawn::ChildFailure::WorkerDied
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;

use ipc_core::process::{inherited, Process};
use ipc_core::spawn::{ChildFailure, Entry, Runner, Spawned};
use ipc_core::{codec, wait, Connection, FdStream, Waitable};
use ipc_shm::RawValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

pub use ipc_core::{Error, Result};

/// The handle key of a worker's task socket.
const TASKS: &str = "ipc-pool-tasks";
/// The handle key of a worker's progress word.
const PROGRESS: &str = "ipc-pool-progress";

/// What a worker is sent: an entry and the encoded arguments of a chunk of
/// tasks, answered with one frame holding an [`Outcome`] per task, in
/// order.
#[derive(Serialize, Deserialize)]
struct Chunk {
    entry: String,
    arguments: Vec<ByteBuf>,
}

/// A task's encoded result, or why there is none.
type Outcome = std::result::Result<ByteBuf, ChildFailure>;

/// The loop a worker runs: a chunk in, its outcomes out in one frame,
/// until the pool closes the socket. Before each task it writes the task's
/// place in the chunk to its progress word, so that if it dies the pool
/// knows which task it was running.
fn serve(_: ()) {
    let (Ok(mut tasks), Ok(progress)) = (
        inherited::<Connection<FdStream>>(TASKS),
        inherited::<RawValue<u64>>(PROGRESS),
    ) else {
        return;
    };
    while let Ok(frame) = tasks.recv_bytes() {
        let Ok(chunk) = codec::decode::<Chunk>(&frame) else {
            return;
        };
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(chunk.arguments.len());
        for (place, argument) in chunk.arguments.iter().enumerate() {
            progress.set(place as u64);
            let mut out = Vec::new();
            let outcome =
                Runner::find(&chunk.entry).and_then(|runner| runner.run_into(argument, &mut out));
            outcomes.push(outcome.map(|()| ByteBuf::from(out)));
        }
        if tasks.send(&outcomes).is_err() {
            return;
        }
    }
}

/// One worker process and its task socket.
struct Worker {
    spawned: Spawned<()>,
    tasks: Connection<FdStream>,
    /// Which task of its chunk the worker is running.
    progress: RawValue<u64>,
    /// The tasks sent to it and not yet answered, in order: index and
    /// encoded argument (kept to send again if the worker dies).
    pending: VecDeque<(usize, ByteBuf)>,
}

impl Worker {
    fn start() -> Result<Worker> {
        let (ours, theirs) = UnixStream::pair()?;
        let tasks = Connection::new(FdStream::new(ours.into())?);
        let theirs = Connection::new(FdStream::new(theirs.into())?);
        let progress = RawValue::new(0u64)?;
        let spawned = Process::new()
            .pass(TASKS, &theirs)?
            .pass(PROGRESS, &progress)?
            .spawn(ipc_core::entry!(serve), &())?;
        Ok(Worker {
            spawned,
            tasks,
            progress,
            pending: VecDeque::new(),
        })
    }

    /// Why this worker is gone: it closed its socket, so it is exiting or
    /// dead; its status says which.
    fn death(self) -> ChildFailure {
        let pid = self.spawned.pid();
        drop(self.tasks);
        match self.spawned.join_timeout(REAP) {
            Err(Error::Child(failure)) => match *failure {
                ChildFailure::Signaled(signal) => ChildFailure::WorkerDied {
                    pid,
                    signal: Some(signal),
                    code: None,
                },
                ChildFailure::Exited(code) => ChildFailure::WorkerDied {
                    pid,
                    signal: None,
                    code: Some(code),
                },
                other => other,
            },
            _ => ChildFailure::WorkerDied {
                pid,
                signal: None,
                code: None,
            },
        }
    }
}

/// How long the pool waits for a worker whose socket ended to be reaped.
const REAP: std::time::Duration = std::time::Duration::from_secs(10);

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Dropping the pool kills its workers (Python's `terminate()` on leaving
/// a `with` block); [`close`](Self::close) lets them finish and exit.
pub struct Pool {
    workers: Vec<Worker>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `processes` workers (at least one).
    pub fn new(processes: usize) -> Result<Pool> {
        if processes == 0 {
            return Err(Error::InvalidArgument("a pool needs at least one process"));
        }
        let workers = (0..processes)
            .map(|_| Worker::start())
            .collect::<Result<Vec<_>>>()?;
        Ok(Pool { workers })
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.workers.len()
    }

    /// Runs `entry` on every item and returns the results in order
    /// (Python's `map`), or the first task's error in item order.
    pub fn map<A, R>(
        &mut self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.map_each(entry, items)?.into_iter().collect()
    }

    /// Runs `entry` on every item and returns each task's own result, in
    /// item order: a task that failed does not hide the others.
    pub fn map_each<A, R>(
        &mut self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R>>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let mut arguments = Vec::new();
        let mut failed = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let mut bytes = Vec::new();
            match codec::encode_into(&item, &mut bytes) {
                Ok(()) => arguments.push((index, ByteBuf::from(bytes))),
                Err(e) => failed.push((index, e)),
            }
        }
        let total = arguments.len() + failed.len();
        let mut results: Vec<Option<Result<R>>> = (0..total).map(|_| None).collect();
        for (index, e) in failed {
            results[index] = Some(Err(e));
        }
        let chunksize = chunksize(arguments.len(), self.workers.len());
        for (index, outcome) in self.run(entry, arguments, chunksize)? {
            results[index] = Some(match outcome {
                Ok(bytes) => codec::decode(&bytes),
                Err(failure) => Err(Error::Child(Box::new(failure))),
            });
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every task has an outcome"))
            .collect())
    }

    /// Runs `entry` on `argument` in a worker and returns its result
    /// (Python's `apply`).
    pub fn apply<A, R>(&mut self, entry: Entry<A, R>, argument: &A) -> Result<R>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let mut bytes = Vec::new();
        codec::encode_into(argument, &mut bytes)?;
        let (_, outcome) = self
            .run(entry, vec![(0, ByteBuf::from(bytes))], 1)?
            .pop()
            .expect("one task, one outcome");
        match outcome {
            Ok(bytes) => codec::decode(&bytes),
            Err(failure) => Err(Error::Child(Box::new(failure))),
        }
    }

    /// Kills the workers at once (Python's `terminate()`); dropping the
    /// pool does the same.
    pub fn terminate(self) {
        drop(self);
    }

    /// Lets the workers finish and exit (Python's `close()` then `join()`).
    pub fn close(mut self) -> Result<()> {
        for worker in self.workers.drain(..) {
            drop(worker.tasks);
            worker.spawned.join_timeout(REAP)?;
        }
        Ok(())
    }

    /// Sends chunks of the tasks to idle workers and collects one outcome
    /// per task, replacing workers that die.
    fn run<A, R>(
        &mut self,
        entry: Entry<A, R>,
        tasks: Vec<(usize, ByteBuf)>,
        chunksize: usize,
    ) -> Result<Vec<(usize, Outcome)>> {
        let name = entry.name().to_owned();
        let mut queue: VecDeque<(usize, ByteBuf)> = tasks.into();
        let mut outcomes = Vec::with_capacity(queue.len());
        let total = queue.len();
        while outcomes.len() < total {
            for worker in self.workers.iter_mut().filter(|w| w.pending.is_empty()) {
                let take = chunksize.min(queue.len());
                if take == 0 {
                    break;
                }
                let chunk: Vec<(usize, ByteBuf)> = queue.drain(..take).collect();
                let frame = Chunk {
                    entry: name.clone(),
                    arguments: chunk.iter().map(|(_, a)| a.clone()).collect(),
                };
                worker.pending.extend(chunk);
                // A worker that died is found by the wait below.
                // A worker that died is found by the wait below.
                let _ = worker.tasks.send(&frame);
            }
            let busy: Vec<usize> = (0..self.workers.len())
                .filter(|&i| !self.workers[i].pending.is_empty())
                .collect();
            // `wait` also reports a socket whose outcomes the connection
            // has already read into its buffer.
            let sockets: Vec<&dyn Waitable> = busy
                .iter()
                .map(|&i| &self.workers[i].tasks as &dyn Waitable)
                .collect();
            let ready = wait(&sockets, None)?;
            drop(sockets);
            for k in ready {
                self.collect(busy[k], &mut queue, &mut outcomes)?;
            }
        }
        Ok(outcomes)
    }

    /// Reads what worker `i` has to say: a task's outcome, or its end, in
    /// which case the task it was running fails, the rest of its chunk goes
    /// back to the front of the queue, and a new worker takes its place.
    fn collect(
        &mut self,
        i: usize,
        queue: &mut VecDeque<(usize, ByteBuf)>,
        outcomes: &mut Vec<(usize, Outcome)>,
    ) -> Result<()> {
        let worker = &mut self.workers[i];
        let garbage = match worker.tasks.recv_bytes() {
            Ok(frame) => match codec::decode::<Vec<Outcome>>(&frame) {
                Ok(answers) if answers.len() == worker.pending.len() => {
                    for ((index, _), outcome) in worker.pending.drain(..).zip(answers) {
                        outcomes.push((index, outcome));
                    }
                    return Ok(());
                }
                // Bytes no worker of ours sends: it is broken.
                Ok(answers) => Some(ChildFailure::Codec(format!(
                    "{} outcomes for a chunk of {} tasks",
                    answers.len(),
                    worker.pending.len()
                ))),
                Err(e) => Some(ChildFailure::Codec(e.to_string())),
            },
            // The socket ended: the worker died.
            Err(e) if e.is_closed() => None,
            // A frame over the size limit, or a socket error: the worker
            // cannot be trusted any more either.
            Err(e) => Some(ChildFailure::Codec(e.to_string())),
        };
        let replacement = Worker::start()?;
        let mut dead = std::mem::replace(worker, replacement);
        let pending: Vec<(usize, ByteBuf)> = std::mem::take(&mut dead.pending).into();
        // The task it was running; a broken worker's whole chunk is lost
        // with the frame, so its first task takes the blame.
        let running = match garbage {
            Some(_) => 0,
            None => usize::try_from(dead.progress.get()).map_or(0, |p| p.min(pending.len() - 1)),
        };
        // A broken worker is killed when dropped; a dead one is reaped to
        // learn how it died.
        let failure = garbage.unwrap_or_else(|| dead.death());
        // Tasks before it had run but their outcomes died with the worker:
        // they run again (at least once), as do the ones after it.
        let mut failed = None;
        for (place, task) in pending.into_iter().enumerate().rev() {
            if place == running {
                failed = Some(task.0);
            } else {
                queue.push_front(task);
            }
        }
        if let Some(index) = failed {
            outcomes.push((index, Err(failure)));
        }
        Ok(())
    }
}

/// Python's rule: about four chunks per worker.
fn chunksize(tasks: usize, workers: usize) -> usize {
    tasks.div_ceil(workers * 4).max(1)
}
