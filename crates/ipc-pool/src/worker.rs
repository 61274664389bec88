//! A worker process: its side (the loop it runs) and the pool's side (the
//! process, its socket, its mailbox, its progress word and the chunk it is
//! running).

use std::os::unix::net::UnixStream;

use ipc_core::process::{inherited, Process};
use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::spawn::batch::{self, Outcomes};
use ipc_core::spawn::{ChildFailure, Runner, Spawned, StartMethod};
use ipc_core::{Connection, Deadline, Error, FdStream, Result};
use ipc_shm::SharedMemory;
use serde::{Deserialize, Serialize};

use crate::mailbox::{Mailbox, Slot};
use crate::wire::Chunk;

/// The handle key of a worker's task socket.
const TASKS: &str = "ipc-pool-tasks";
/// The handle key of a worker's progress word.
const PROGRESS: &str = "ipc-pool-progress";
/// The handle key of a worker's mailbox.
const MAILBOX: &str = "ipc-pool-mailbox";

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
    let (Ok(mut tasks), Ok(progress), Ok(mailbox)) = (
        inherited::<Connection<FdStream>>(TASKS),
        inherited::<SharedMemory>(PROGRESS),
        inherited::<SharedMemory>(MAILBOX).and_then(Mailbox::from_shared),
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
    let progress = progress_word(&progress);
    let mut outcomes = Outcomes::default();
    while let Ok(received) = tasks.recv_bytes() {
        let Ok(frame) = mailbox.open(Slot::Tasks, received) else {
            return;
        };
        let Ok(chunk) = Chunk::read(&frame) else {
            return;
        };
        outcomes.clear();
        let mut answered = 0;
        let send = |outcomes: &mut Outcomes| {
            answered += outcomes.len();
            // Only the frame that answers the chunk's last task may go
            // through the mailbox: the pool reads it before it sends
            // anything more, where an earlier one's slot could be
            // overwritten before it is read.
            let sent = if answered == chunk.count {
                mailbox.send(
                    Slot::Outcomes,
                    outcomes.frame(),
                    &mut tasks,
                    Deadline::Never,
                )
            } else {
                tasks.send_bytes(outcomes.frame())
            };
            sent.is_ok()
        };
        // The entry runs the whole chunk in its own code: one call and
        // one unwind guard for many tasks.
        let sent = match Runner::find(chunk.entry) {
            Ok(runner) => runner.run_tasks(&mut chunk.tasks(), &mut outcomes, progress, send),
            Err(unknown) => batch::fail_tasks(&mut chunk.tasks(), &unknown, &mut outcomes, send),
        };
        if !sent {
            return;
        }
    }
}

/// The word of a worker's progress segment.
fn progress_word(progress: &SharedMemory) -> &AtomicU64 {
    ipc_shm::raw::atomic_u64(progress, 0)
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
    /// Where frames that fit cross instead of the socket.
    pub mailbox: Mailbox,
    /// Which task of its chunk the worker is running: a word that only
    /// the worker writes.
    progress: SharedMemory,
    /// Tasks it has finished (for `max_tasks_per_child`).
    pub finished: usize,
}

impl Worker {
    pub fn start(recipe: &Recipe) -> Result<Worker> {
        let (ours, theirs) = UnixStream::pair()?;
        let tasks = Connection::new(FdStream::new(ours.into())?);
        let theirs = Connection::new(FdStream::new(theirs.into())?);
        let progress = SharedMemory::anonymous(8)?;
        // Only the worker it is passed to maps it, not those forked later.
        progress.exclude_from_forks()?;
        let mailbox = Mailbox::new()?;
        progress_word(&progress).store(NOT_STARTED, Ordering::Relaxed);
        let process = match recipe.method {
            StartMethod::Fork if recipe.allow_threads => Process::new().allow_threads(),
            _ => Process::new(),
        };
        let spawned = process
            .pass(TASKS, &theirs)?
            .pass(PROGRESS, &progress)?
            .pass(MAILBOX, mailbox.shared())?
            .start(recipe.method, ipc_core::entry!(serve), &recipe.setup)?;
        Ok(Worker {
            spawned,
            tasks,
            mailbox,
            progress,
            finished: 0,
        })
    }

    /// Which task of its chunk the worker is running or ran last, or
    /// [`NOT_STARTED`]. A worker may write anything there: the value
    /// is a hint, checked against the chunk before it is used.
    pub fn progress(&self) -> u64 {
        progress_word(&self.progress).load(Ordering::Relaxed)
    }

    /// Marks the worker as not started on its new chunk.
    pub fn reset_progress(&self) {
        progress_word(&self.progress).store(NOT_STARTED, Ordering::Relaxed);
    }

    /// Sends the idle worker its chunk `frame`, through its mailbox if it
    /// fits. A worker that has answered tasks before is in its loop,
    /// reading its socket while idle: [`Error::Timeout`] if it has not
    /// taken the frame after [`STALLED_AFTER`] and a second for each
    /// 16 MiB, as one that stopped reading (stopped by a signal, say)
    /// would leave the dispatcher waiting on it for ever. A new worker may
    /// still be starting, or running an initializer that takes as long as
    /// it likes: no bound for it.
    pub fn send_chunk(&mut self, frame: &[u8]) -> Result<()> {
        let deadline = if self.finished > 0 {
            let seconds = (frame.len() >> 24) as u64;
            Deadline::after(STALLED_AFTER + std::time::Duration::from_secs(seconds))
        } else {
            Deadline::Never
        };
        self.mailbox
            .send(Slot::Tasks, frame, &mut self.tasks, deadline)
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

/// How long an idle worker may take to read a small chunk sent to it
/// before the pool takes it for stalled.
pub(crate) const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the pool waits for a worker whose socket ended to be reaped.
pub(crate) const REAP: std::time::Duration = std::time::Duration::from_secs(10);
