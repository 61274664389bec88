//! The pool's dispatcher: a thread that owns the workers, hands queued
//! chunks to idle ones, passes their outcomes on to the callers, and
//! replaces a worker that dies or misbehaves.
//!
//! It waits in one [`ipc_core::wait`] call on everything that can happen:
//! a new command from a caller (a byte on its wake socket), outcomes on any
//! worker's socket, and the exit of any worker process (its pidfd), so a
//! dead worker is noticed the moment it dies, with no polling.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use ipc_core::spawn::ChildFailure;
use ipc_core::{wait, Error, Result, Waitable};

use crate::mailbox;
use crate::wire::{self, Chunk};
use crate::worker::{Recipe, Worker, NOT_STARTED, REAP};

/// One caller's batch of tasks (a `map`, an `imap`, an `apply_async`):
/// where its outcomes go, and whether the caller still wants them.
pub(crate) struct Submission {
    replies: Sender<Reply>,
    pub cancelled: AtomicBool,
    /// The task of an `async` caller waiting for a reply.
    waiting: Mutex<Option<Waker>>,
}

impl Submission {
    /// A submission and the receiving end of its replies.
    pub fn new() -> (Arc<Submission>, Receiver<Reply>) {
        let (replies, received) = std::sync::mpsc::channel();
        let submission = Submission {
            replies,
            cancelled: AtomicBool::new(false),
            waiting: Mutex::new(None),
        };
        (Arc::new(submission), received)
    }

    /// Hands `reply` to the caller, waking its task if it awaits one.
    fn deliver(&self, reply: Reply) {
        // A caller that stopped listening no longer wants it.
        let _ = self.replies.send(reply);
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// The next reply on `replies` (this submission's), for a caller that
    /// awaits it: `Ready(None)` once the pool is gone. Cancel safe: a reply
    /// that comes after the caller stopped polling stays in the channel.
    pub fn poll_reply(
        &self,
        replies: &Receiver<Reply>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Reply>> {
        match replies.try_recv() {
            Ok(reply) => return Poll::Ready(Some(reply)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        // A reply delivered before the waker was in place woke nobody.
        match replies.try_recv() {
            Ok(reply) => Poll::Ready(Some(reply)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

/// A run of consecutive tasks of one submission, as one chunk frame.
pub(crate) struct Piece {
    pub submission: Arc<Submission>,
    /// The place of its first task in the submission.
    pub first: usize,
    pub count: usize,
    pub frame: Vec<u8>,
    /// How many workers died holding it before it started.
    pub attempts: u32,
}

/// Outcomes of `count` tasks of a submission, from task `first` on.
pub(crate) struct Reply {
    pub first: usize,
    pub count: usize,
    pub body: Body,
}

pub(crate) enum Body {
    /// A worker's frame of outcomes (see [`wire::outcomes`]).
    Outcomes(Vec<u8>),
    /// Every task of the run failed this way.
    Failed(ChildFailure),
    /// No worker could be started to run them.
    NoWorker(String),
    /// The pool was terminated before they ran.
    Terminated,
}

pub(crate) enum Command {
    Run(Piece),
    /// Run what is queued, then let the workers exit.
    Close,
    /// Kill the workers now.
    Terminate,
}

/// What the dispatcher is to be woken for, in its `sleeping` word.
mod sleeping {
    /// It is not waiting: it will look at the commands.
    pub const AWAKE: u8 = 0;
    /// It waits, and any command wakes it.
    pub const FOR_ANY: u8 = 1;
    /// It waits with every slot's worker running a piece: a new piece
    /// could only be queued, so only a close or a terminate wakes it. This
    /// spares a `map` sending its chunks a wake-up of the dispatcher (and
    /// a hand of the CPU to it) for each chunk after the first few.
    ///
    /// Sound because each of those workers has tasks unanswered, and its
    /// socket and its exit are in the dispatcher's wait: one of them will
    /// send outcomes or end, and after any wake-up the loop reads the
    /// channel first. A change that leaves a slot with a piece out of the
    /// wait, or counts an idle worker as running, must not set this.
    pub const FOR_CONTROL: u8 = 2;
}

/// The callers' side of the dispatcher.
pub(crate) struct Dispatch {
    commands: Sender<Command>,
    /// Whether the dispatcher still takes commands; held across a send,
    /// so that once the dispatcher has closed it, every command sent is
    /// already in the channel for its last look.
    taking: Arc<Mutex<bool>>,
    wake: UnixStream,
    sleeping: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl Dispatch {
    /// Starts the dispatcher thread with the workers.
    pub fn start(
        workers: Vec<Worker>,
        recipe: Recipe,
        max_tasks: Option<usize>,
    ) -> Result<Dispatch> {
        let (commands, received) = std::sync::mpsc::channel();
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let sleeping = Arc::new(AtomicU8::new(sleeping::AWAKE));
        let taking = Arc::new(Mutex::new(true));
        let mut dispatcher = Dispatcher {
            slots: workers
                .into_iter()
                .map(|worker| Slot {
                    worker: Some(worker),
                    running: None,
                })
                .collect(),
            queue: VecDeque::new(),
            recipe,
            max_tasks,
            commands: received,
            taking: taking.clone(),
            woken,
            sleeping: sleeping.clone(),
            closing: false,
        };
        let thread = std::thread::Builder::new()
            .name("ipc-pool".into())
            .spawn(move || dispatcher.run())?;
        Ok(Dispatch {
            commands,
            taking,
            wake,
            sleeping,
            thread: Some(thread),
        })
    }

    /// Hands a command to the dispatcher, waking it if it waits for such
    /// a command.
    pub fn send(&self, command: Command) -> Result<()> {
        let wakes = match command {
            Command::Run(_) => sleeping::FOR_ANY,
            Command::Close | Command::Terminate => sleeping::FOR_CONTROL,
        };
        let taking = self.taking.lock().unwrap_or_else(|e| e.into_inner());
        if !*taking {
            return Err(Error::Closed);
        }
        self.commands.send(command).map_err(|_| Error::Closed)?;
        drop(taking);
        // The dispatcher sets the word, looks at the commands once more and
        // only then waits; this sends, then reads the word. The fences on
        // both sides make it a handshake whatever the channel does inside:
        // either the dispatcher sees this command, or this sees the word.
        // A piece that finds `FOR_CONTROL` does not wake it: see there.
        fence(Ordering::SeqCst);
        let mut state = self.sleeping.load(Ordering::SeqCst);
        while state != sleeping::AWAKE && state <= wakes {
            match self.sleeping.compare_exchange(
                state,
                sleeping::AWAKE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    // A full wake socket already holds a wake-up.
                    let _ = (&self.wake).write(&[1]);
                    break;
                }
                Err(now) => state = now,
            }
        }
        Ok(())
    }

    /// Waits for the dispatcher to end (after [`Command::Close`] or
    /// [`Command::Terminate`]).
    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Dispatch {
    fn drop(&mut self) {
        let _ = self.send(Command::Terminate);
        self.join();
    }
}

struct Slot {
    /// `None` while a replacement could not be started.
    worker: Option<Worker>,
    running: Option<Running>,
}

/// The piece a worker is running and how many of its tasks it answered.
struct Running {
    piece: Piece,
    answered: usize,
}

/// Why a worker is being replaced.
enum Cause {
    /// Its socket ended or its process exited.
    Died,
    /// It sent something no worker of ours sends.
    Broken(ChildFailure),
    /// It ran its share of tasks (`max_tasks_per_child`).
    Retired,
}

struct Dispatcher {
    slots: Vec<Slot>,
    queue: VecDeque<Piece>,
    recipe: Recipe,
    max_tasks: Option<usize>,
    commands: Receiver<Command>,
    taking: Arc<Mutex<bool>>,
    woken: UnixStream,
    sleeping: Arc<AtomicU8>,
    closing: bool,
}

/// What one entry of the wait list stands for.
#[derive(Clone, Copy)]
enum Ready {
    Commands,
    Socket(usize),
    Exited(usize),
}

impl Dispatcher {
    fn run(&mut self) {
        loop {
            if !self.take_commands() {
                return self.terminate();
            }
            self.assign();
            if self.closing
                && self.queue.is_empty()
                && self.slots.iter().all(|s| s.running.is_none())
            {
                self.exit_workers();
                return;
            }
            let busy = self
                .slots
                .iter()
                .all(|s| s.worker.is_some() && s.running.is_some());
            let wake_for = if busy {
                sleeping::FOR_CONTROL
            } else {
                sleeping::FOR_ANY
            };
            self.sleeping.store(wake_for, Ordering::SeqCst);
            // The other half of the handshake in `Dispatch::send`.
            fence(Ordering::SeqCst);
            let (queued, closing) = (self.queue.len(), self.closing);
            if !self.take_commands() {
                return self.terminate();
            }
            if self.queue.len() != queued || self.closing != closing {
                // A command came as the word was set: its sender may have
                // seen the word before it was set and not woken us, so
                // begin again rather than wait with the word cleared.
                self.sleeping.store(sleeping::AWAKE, Ordering::SeqCst);
                continue;
            }
            let ready = self.wait();
            self.sleeping.store(sleeping::AWAKE, Ordering::SeqCst);
            for ready in ready {
                match ready {
                    Ready::Commands => {
                        let mut sink = [0u8; 64];
                        while matches!((&self.woken).read(&mut sink), Ok(n) if n > 0) {}
                    }
                    Ready::Socket(i) => {
                        self.read_worker(i);
                    }
                    Ready::Exited(i) => {
                        // Outcomes it sent before it died come first. What
                        // is left after its whole frames (part of one, kept
                        // open by a process it started) never ends.
                        let mut read = self.read_worker(i);
                        while read == Received::Frame {
                            read = self.read_worker(i);
                        }
                        if read == Received::Nothing {
                            self.replace(i, Cause::Died);
                        }
                    }
                }
            }
        }
    }

    /// Takes every command waiting; `false` once the pool is terminated.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Run(piece)) => self.queue.push_back(piece),
                Ok(Command::Close) => self.closing = true,
                Ok(Command::Terminate) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Waits for a command, outcomes, or a worker's exit.
    fn wait(&self) -> Vec<Ready> {
        let woken = self.woken.as_fd();
        let mut objects: Vec<&dyn Waitable> = vec![&woken];
        let mut meaning = vec![Ready::Commands];
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(worker) = &slot.worker {
                objects.push(&worker.tasks);
                meaning.push(Ready::Socket(i));
                objects.push(&worker.spawned);
                meaning.push(Ready::Exited(i));
            }
        }
        match wait(&objects, None) {
            Ok(ready) => {
                // A worker's socket before its exit, so that an exit with
                // outcomes sent is read once.
                let mut ready: Vec<Ready> = ready.into_iter().map(|k| meaning[k]).collect();
                let sockets: Vec<usize> = ready
                    .iter()
                    .filter_map(|r| match r {
                        Ready::Socket(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                ready.retain(|r| !matches!(r, Ready::Exited(i) if sockets.contains(i)));
                ready
            }
            // Not expected with valid descriptors; look again.
            Err(_) => Vec::new(),
        }
    }

    /// Hands queued pieces to idle workers.
    fn assign(&mut self) {
        for i in 0..self.slots.len() {
            // A piece answered without reaching the worker leaves it idle:
            // it takes the next.
            while self.assign_to(i) == Assigned::Answered {}
        }
    }

    /// Hands the next queued piece to slot `i` if it is idle.
    fn assign_to(&mut self, i: usize) -> Assigned {
        if self.queue.is_empty() || self.slots[i].running.is_some() {
            return Assigned::Nothing;
        }
        if self.slots[i].worker.is_none() {
            if let Err(e) = self.restart(i) {
                if self.slots.iter().all(|s| s.worker.is_none()) {
                    self.fail_queue(&e.to_string());
                }
                return Assigned::Nothing;
            }
        }
        let Some(mut piece) = self.next_piece() else {
            return Assigned::Nothing;
        };
        let worker = self.slots[i].worker.as_mut().expect("started above");
        if let Some(max) = self.max_tasks {
            let allowance = max.saturating_sub(worker.finished).max(1);
            if piece.count > allowance {
                match split(piece, allowance) {
                    Ok((head, tail)) => {
                        self.queue.push_front(tail);
                        piece = head;
                    }
                    Err(piece) => {
                        reply(&piece, 0, piece.count, Body::Failed(piece_error()));
                        return Assigned::Answered;
                    }
                }
            }
        }
        worker.reset_progress();
        // A worker that died is found by the wait. A frame the connection
        // refuses before writing anything (larger than a message may be,
        // which the chunk's budget rules out) would leave its tasks waiting
        // on a worker that never got them.
        match worker.send_chunk(&piece.frame) {
            Err(e @ Error::TooLarge { .. }) => {
                reply(
                    &piece,
                    0,
                    piece.count,
                    Body::Failed(ChildFailure::Codec(e.to_string())),
                );
                Assigned::Answered
            }
            Err(e) if !e.is_closed() => {
                // It stopped reading (a timeout, perhaps part-way through
                // the frame), or its socket failed: it cannot be sent
                // another. The piece never reached it, so it goes to the
                // replacement, unless worker after worker stalls on it. A
                // socket closed is a death, which the wait finds.
                let why = ChildFailure::Codec(match e {
                    Error::Timeout => "it stopped reading the tasks sent to it".to_owned(),
                    e => format!("a chunk could not be sent to it: {e}"),
                });
                self.requeue_unstarted(piece, why.clone());
                self.replace(i, Cause::Broken(why));
                Assigned::Answered
            }
            _ => {
                self.slots[i].running = Some(Running { piece, answered: 0 });
                Assigned::Running
            }
        }
    }

    /// The first queued piece whose caller still wants it.
    fn next_piece(&mut self) -> Option<Piece> {
        while let Some(piece) = self.queue.pop_front() {
            if !piece.submission.cancelled.load(Ordering::Relaxed) {
                return Some(piece);
            }
        }
        None
    }

    fn restart(&mut self, i: usize) -> Result<()> {
        self.slots[i].worker = Some(Worker::start(&self.recipe)?);
        Ok(())
    }

    /// Fails every queued piece: no worker can be started.
    fn fail_queue(&mut self, why: &str) {
        for piece in self.queue.drain(..) {
            reply(&piece, 0, piece.count, Body::NoWorker(why.to_owned()));
        }
    }

    /// Reads what worker `i` sent: a frame of outcomes, or the end of its
    /// socket.
    fn read_worker(&mut self, i: usize) -> Received {
        let slot = &mut self.slots[i];
        let Some(worker) = slot.worker.as_mut() else {
            return Received::Replaced;
        };
        // Only what has arrived: a worker that sends part of a frame and
        // stalls must not stop the dispatcher. The part is kept, and the
        // wait says when more comes.
        let frame = match worker.tasks.try_recv_bytes() {
            Ok(received) => worker.mailbox.open(mailbox::Slot::Outcomes, received),
            Err(Error::Empty) => return Received::Nothing,
            Err(e) if e.is_closed() => return self.replaced(i, Cause::Died),
            // Over the size limit, or a socket error: it cannot be trusted.
            Err(e) => Err(e),
        };
        let frame = match frame {
            Ok(frame) => frame,
            // Or a notice with no frame in its mailbox.
            Err(e) => return self.broken(i, e),
        };
        let Some(running) = slot.running.as_mut() else {
            return self.broken(i, "a worker sent outcomes while it had no tasks");
        };
        let left = running.piece.count - running.answered;
        let answered = match wire::outcome_count(&frame) {
            Ok(count) if count > 0 && count <= left => count,
            Ok(count) => return self.broken(i, format!("{count} outcomes for {left} tasks")),
            Err(e) => return self.broken(i, e),
        };
        reply(
            &running.piece,
            running.answered,
            answered,
            Body::Outcomes(frame),
        );
        running.answered += answered;
        worker.finished += answered;
        if running.answered == running.piece.count {
            slot.running = None;
            if self.max_tasks.is_some_and(|max| worker.finished >= max) {
                return self.replaced(i, Cause::Retired);
            }
        }
        Received::Frame
    }

    /// Replaces worker `i` for `cause`.
    fn replaced(&mut self, i: usize, cause: Cause) -> Received {
        self.replace(i, cause);
        Received::Replaced
    }

    /// Replaces worker `i`, which sent what is not outcomes (`why`).
    fn broken(&mut self, i: usize, why: impl ToString) -> Received {
        self.replaced(i, Cause::Broken(ChildFailure::Codec(why.to_string())))
    }

    /// Replaces worker `i`. The tasks of its piece it had not answered go
    /// back to the front of the queue, except the one its progress word
    /// names (the one it was running when it died, or when its garbage was
    /// read), which fails. The replacement starts at once, unless the
    /// worker died idle before any task and no work waits: one whose
    /// initializer always fails would otherwise be started again and again
    /// while the pool has nothing to do (`assign` starts it for the next
    /// piece).
    fn replace(&mut self, i: usize, cause: Cause) {
        let slot = &mut self.slots[i];
        let Some(worker) = slot.worker.take() else {
            return;
        };
        let running = slot.running.take();
        let died_unused = running.is_none() && worker.finished == 0;
        let place = worker.progress();
        let failure = match cause {
            Cause::Died => worker.death(),
            Cause::Broken(failure) => Ok(failure),
            Cause::Retired => {
                drop(worker.tasks);
                let _ = worker.spawned.join_timeout(REAP);
                Ok(ChildFailure::Exited(0))
            }
        };
        if let Some(Running { piece, answered }) = running {
            self.fail_or_requeue(piece, answered, place, failure);
        }
        let wanted = !self.queue.is_empty() || !(self.closing || died_unused);
        if wanted {
            // If it cannot start, `assign` tries again when there is work.
            let _ = self.restart(i);
        }
    }

    fn fail_or_requeue(
        &mut self,
        piece: Piece,
        answered: usize,
        place: u64,
        failure: std::result::Result<ChildFailure, ChildFailure>,
    ) {
        let rest = if answered == 0 {
            piece
        } else {
            match split(piece, answered) {
                Ok((_, rest)) => rest,
                Err(piece) => {
                    return reply(
                        &piece,
                        answered,
                        piece.count - answered,
                        Body::Failed(piece_error()),
                    )
                }
            }
        };
        let failure = match failure {
            // The worker's own code failed (its initializer): every task
            // sent to it fails with that.
            Err(own) => return reply(&rest, 0, rest.count, Body::Failed(own)),
            Ok(failure) => failure,
        };
        let running = usize::try_from(place)
            .ok()
            .filter(|&p| place != NOT_STARTED && p >= answered)
            .map(|p| (p - answered).min(rest.count - 1));
        let Some(running) = running else {
            // It died before it started any of them.
            return self.requeue_unstarted(rest, failure);
        };
        reply(&rest, running, 1, Body::Failed(failure));
        let count = rest.count;
        let (before, after) = match around(rest, running) {
            Ok(parts) => parts,
            Err(rest) => {
                // Not expected: the frame was ours. Fail the others too.
                for k in (0..count).filter(|&k| k != running) {
                    reply(&rest, k, 1, Body::Failed(piece_error()));
                }
                return;
            }
        };
        // Before it in the queue, so the tasks keep their order.
        for part in [after, before].into_iter().flatten() {
            self.queue.push_front(part);
        }
    }

    /// Puts `piece`, which its worker never started (it died, or stopped
    /// reading), back at the front of the queue; after [`MAX_ATTEMPTS`]
    /// such workers, fails it with `failure` instead.
    fn requeue_unstarted(&mut self, mut piece: Piece, failure: ChildFailure) {
        piece.attempts += 1;
        if piece.attempts >= MAX_ATTEMPTS {
            reply(&piece, 0, piece.count, Body::Failed(failure));
        } else {
            self.queue.push_front(piece);
        }
    }

    /// Fails every task not yet answered, so that no caller waits for it;
    /// the workers are killed as they are dropped.
    fn terminate(&mut self) {
        self.stop_taking();
        for piece in self.queue.drain(..) {
            reply(&piece, 0, piece.count, Body::Terminated);
        }
        for running in self.slots.iter_mut().filter_map(|s| s.running.take()) {
            let left = running.piece.count - running.answered;
            reply(&running.piece, running.answered, left, Body::Terminated);
        }
    }

    /// Takes no more commands: a piece sent after the last look would
    /// never be answered, and its caller would wait for ever. Pieces
    /// still in the channel are answered as terminated (`Closed`).
    fn stop_taking(&mut self) {
        *self.taking.lock().unwrap_or_else(|e| e.into_inner()) = false;
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Run(piece) = command {
                reply(&piece, 0, piece.count, Body::Terminated);
            }
        }
    }

    /// Lets every worker finish and exit (after `close`).
    fn exit_workers(&mut self) {
        self.stop_taking();
        for slot in &mut self.slots {
            if let Some(worker) = slot.worker.take() {
                drop(worker.tasks);
                let _ = worker.spawned.join_timeout(REAP);
            }
        }
    }
}

/// A piece whose workers all died (or stopped reading) before starting it
/// fails after this many.
const MAX_ATTEMPTS: u32 = 3;

/// What [`Dispatcher::read_worker`] found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Received {
    /// A whole frame, read; the worker is still there.
    Frame,
    /// No whole frame yet.
    Nothing,
    /// The worker is gone (its socket ended, it was broken or retired) and
    /// was replaced, or there was none.
    Replaced,
}

/// What [`Dispatcher::assign_to`] did with a slot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Assigned {
    /// The slot is busy, or there was nothing to give it.
    Nothing,
    /// A piece went to its worker.
    Running,
    /// The slot can take another piece at once: one was answered without
    /// reaching the worker, or went back to the queue with its worker,
    /// which stopped reading, replaced.
    Answered,
}

/// Sends the outcomes of `count` tasks of `piece` from its task `from` on.
fn reply(piece: &Piece, from: usize, count: usize, body: Body) {
    piece.submission.deliver(Reply {
        first: piece.first + from,
        count,
        body,
    });
}

fn piece_error() -> ChildFailure {
    ChildFailure::Codec("the pool could not split its own chunk".into())
}

/// Splits `piece` into its first `at` tasks and the rest.
fn split(piece: Piece, at: usize) -> std::result::Result<(Piece, Piece), Piece> {
    let split = Chunk::read(&piece.frame).and_then(|chunk| {
        if at < chunk.count {
            chunk.split(at)
        } else {
            Err(Error::InvalidArgument("a chunk split past its end"))
        }
    });
    let Ok((head, tail)) = split else {
        return Err(piece);
    };
    let part = |first: usize, count: usize, frame: Vec<u8>| Piece {
        submission: piece.submission.clone(),
        first,
        count,
        frame,
        attempts: piece.attempts,
    };
    Ok((
        part(piece.first, at, head),
        part(piece.first + at, piece.count - at, tail),
    ))
}

/// The tasks of `piece` before task `k` and after it, each `None` if empty.
fn around(piece: Piece, k: usize) -> std::result::Result<(Option<Piece>, Option<Piece>), Piece> {
    let count = piece.count;
    let (before, rest) = if k == 0 {
        (None, piece)
    } else {
        let (before, rest) = split(piece, k)?;
        (Some(before), rest)
    };
    if k + 1 == count {
        return Ok((before, None));
    }
    let (_, after) = split(rest, 1)?;
    Ok((before, Some(after)))
}
