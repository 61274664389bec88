//! A worker process: its side (the loop it runs) and the pool's side (the
//! process, its socket, its progress word and the chunk it is running).

use std::os::unix::net::UnixStream;

use ipc_core::process::{inherited, Process};
use ipc_core::spawn::{ChildFailure, Runner, Spawned, StartMethod};
use ipc_core::{Connection, Error, FdStream, Result};
use ipc_shm::RawValue;
use serde::{Deserialize, Serialize};

use crate::wire::{self, Chunk, OutcomeWriter};

/// The handle key of a worker's task socket.
const TASKS: &str = "ipc-pool-tasks";
/// The handle key of a worker's progress word.
const PROGRESS: &str = "ipc-pool-progress";

/// The progress word's value while a worker has not started its chunk.
pub(crate) const NOT_STARTED: u64 = u64::MAX;

/// What a worker is started with.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// An entry to run once before the first task, and its encoded
    /// argument.
    pub initializer: Option<(String, Vec<u8>)>,
}

/// The loop a worker runs: a chunk in, its outcomes out (in one frame, or
/// several for a chunk with large results), until the pool closes the
/// socket. Before each task it writes the task's place in the chunk to its
/// progress word, so that if it dies the pool knows which task it was
/// running.
pub(crate) fn serve(setup: Setup) {
    let (Ok(mut tasks), Ok(progress)) = (
        inherited::<Connection<FdStream>>(TASKS),
        inherited::<RawValue<u64>>(PROGRESS),
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
    let mut outcomes = OutcomeWriter::new();
    while let Ok(frame) = tasks.recv_bytes() {
        let Ok(mut chunk) = Chunk::read(&frame) else {
            return;
        };
        let runner = Runner::find(chunk.entry);
        outcomes.clear();
        // One catch around the chunk's tasks, not one per task: a task
        // that panics gets its failure in its place, and the tasks after
        // it run under a new catch.
        let mut place = 0;
        while place < chunk.count {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_tasks(
                    &mut chunk,
                    &runner,
                    &mut place,
                    &progress,
                    &mut outcomes,
                    &mut tasks,
                )
            }));
            match ran {
                Ok(true) => {}
                Ok(false) => return,
                Err(panic) => {
                    outcomes.abandon(&ipc_core::spawn::panic_failure(&*panic));
                    if !flush(place, chunk.count, &mut outcomes, &mut tasks) {
                        return;
                    }
                    place += 1;
                }
            }
        }
    }
}

/// Runs the chunk's tasks from `place` on, counting `place` up as each
/// ends, sending outcomes as they fill a frame; `false` once the pool
/// has gone away.
fn run_tasks(
    chunk: &mut Chunk<'_>,
    runner: &std::result::Result<Runner, ChildFailure>,
    place: &mut usize,
    progress: &RawValue<u64>,
    outcomes: &mut OutcomeWriter,
    tasks: &mut Connection<FdStream>,
) -> bool {
    while *place < chunk.count {
        progress.set(*place as u64);
        // Matched here, not in the closure: the common case is then a
        // call with nothing to check or move around it.
        match (chunk.next_argument(), runner) {
            (Ok(argument), Ok(runner)) => outcomes.push(|out| runner.run_unguarded(argument, out)),
            (Ok(_), Err(unknown)) => outcomes.push(|_| Err(unknown.clone())),
            (Err(e), _) => outcomes.push(|_| Err(ChildFailure::Codec(e.to_string()))),
        }
        if !flush(*place, chunk.count, outcomes, tasks) {
            return false;
        }
        *place += 1;
    }
    true
}

/// Sends the outcomes when task `place` ends the chunk or they fill a
/// frame; `false` once the pool has gone away.
fn flush(
    place: usize,
    count: usize,
    outcomes: &mut OutcomeWriter,
    tasks: &mut Connection<FdStream>,
) -> bool {
    if place + 1 == count || outcomes.bytes() >= wire::FLUSH_BYTES {
        if tasks.send_bytes(outcomes.frame()).is_err() {
            return false;
        }
        outcomes.clear();
    }
    true
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
    /// Which task of its chunk the worker is running.
    pub progress: RawValue<u64>,
    /// Tasks it has finished (for `max_tasks_per_child`).
    pub finished: usize,
}

impl Worker {
    pub fn start(recipe: &Recipe) -> Result<Worker> {
        let (ours, theirs) = UnixStream::pair()?;
        let tasks = Connection::new(FdStream::new(ours.into())?);
        let theirs = Connection::new(FdStream::new(theirs.into())?);
        let progress = RawValue::new(NOT_STARTED)?;
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
        })
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
