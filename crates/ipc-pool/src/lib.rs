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
//!     let pool = Pool::new(2)?; // Python: with Pool(2) as p:
//!     let squares = pool.map(ipc_core::entry!(square), 0..10)?; // p.map(square, range(10))
//!     assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//!     Ok(())
//! }
//! ```
//!
//! | Python | ipc-pool |
//! |---|---|
//! | `Pool(4)` / `Pool(initializer=f, initargs=a, maxtasksperchild=n)` | [`Pool::new(4)`](Pool::new) / [`Pool::builder()`](Pool::builder) |
//! | `p.map(f, xs)` / `p.map(f, xs, chunksize=k)` | [`pool.map(entry!(f), xs)`](Pool::map) / [`pool.chunksize(k).map(..)`](Pool::chunksize) |
//! | `p.imap(f, xs)`, `p.imap_unordered(f, xs)` | [`pool.imap(..)`](Pool::imap), [`pool.imap_unordered(..)`](Pool::imap_unordered) |
//! | `p.apply(f, (x,))`, `p.apply_async(f, (x,))` | [`pool.apply(..)`](Pool::apply), [`pool.apply_async(..)`](Pool::apply_async) → [`AsyncResult`] |
//! | `p.close(); p.join()`, `p.terminate()` | [`pool.close()?; pool.join()?`](Pool::close), [`pool.terminate()`](Pool::terminate) or drop |
//! | `concurrent.futures` + `asyncio.wrap_future` | [`pool.map_async(..).await`](Pool::map_async), [`pool.apply_async(..)?.await`](AsyncResult) |
//! | `get_context("forkserver").Pool(4)` | [`Pool::builder().processes(4).start_method(StartMethod::Forkserver)`](Builder::start_method) |
//!
//! # Workers
//!
//! Workers are started with the spawn start method by default
//! ([`ipc_core::spawn`]): each is a fresh run of this program, so the pool
//! is sound in a program with other threads (a tokio runtime beside it),
//! and `ipc_core::spawn::init()` must be the first line of `main` (in a
//! test crate, `ipc_core::spawn_harness!()`). The forkserver
//! ([`Builder::start_method`]) starts workers faster and is as sound; fork
//! needs the caller to accept its hazard ([`Builder::allow_threads`]). A thread of the pool hands
//! chunks of tasks to idle workers and waits, in one call, for outcomes on
//! any worker's socket and for the exit of any worker, so tasks run while
//! the caller does something else, and a dead worker is noticed at once.
//! Each task's argument and result travel encoded with postcard
//! ([`ipc_core::codec`]).
//!
//! # A worker that dies
//!
//! A worker killed in the middle of a task (SIGKILL, an abort, a segfault)
//! fails exactly that task, with [`ChildFailure::WorkerDied`] naming the
//! worker and the signal; the rest of its chunk goes back to the queue, a
//! replacement worker starts, and every other task completes. The tasks of
//! that chunk that the worker had finished but not yet reported run again,
//! as their results died with it: tasks run at least once, so a task a
//! worker's death can interrupt should be safe to repeat. (Python's Pool
//! waits for ever in this case, and `ProcessPoolExecutor` breaks the whole
//! pool.) A task that panics fails alone with the panic message; a task
//! whose argument or result cannot be encoded fails alone too; a worker
//! that sends garbage is replaced and its task fails.
//!
//! [`ChildFailure::WorkerDied`]: ipc_core::spawn::ChildFailure::WorkerDied
//! [`StartMethod::Forkserver`]: ipc_core::spawn::StartMethod::Forkserver
#![deny(unsafe_code)]

mod dispatcher;
mod mailbox;
mod wire;
mod worker;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use ipc_core::codec;
use ipc_core::spawn::{ChildFailure, Entry, StartMethod};
use serde::de::DeserializeOwned;
use serde::Serialize;

use dispatcher::{Body, Command, Dispatch, Piece, Reply, Submission};
use wire::ChunkWriter;
use worker::{Recipe, Setup, Worker};

pub use ipc_core::{Error, Result};

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Its methods take `&self`: one pool can serve several threads at once.
/// Dropping the pool kills its workers (Python's `terminate()` on leaving
/// a `with` block); [`close`](Self::close) then [`join`](Self::join) lets
/// them finish what was submitted and exit.
pub struct Pool {
    dispatch: Dispatch,
    processes: usize,
    closed: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Sets up a [`Pool`]: its number of workers, an initializer, and how
/// many tasks a worker runs before a fresh one replaces it.
///
/// ```
/// fn connect(url: String) {
///     // Python: Pool(initializer=connect, initargs=(url,)); runs once per worker.
///     assert!(url.starts_with("db://"));
/// }
/// fn double(x: i32) -> i32 {
///     2 * x
/// }
///
/// fn main() -> ipc_core::Result<()> {
///     ipc_core::spawn::init();
///     let pool = ipc_pool::Pool::builder()
///         .processes(2)
///         .initializer(ipc_core::entry!(connect), &"db://here".to_string())
///         .max_tasks_per_child(100)
///         .build()?;
///     assert_eq!(pool.map(ipc_core::entry!(double), [1, 2, 3])?, [2, 4, 6]);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    processes: Option<usize>,
    initializer: Option<Result<(String, Vec<u8>)>>,
    max_tasks_per_child: Option<usize>,
    start_method: StartMethod,
    allow_threads: bool,
}

impl Builder {
    /// The number of worker processes; by default as many as the machine
    /// has CPUs (Python's `os.cpu_count()`).
    pub fn processes(mut self, processes: usize) -> Builder {
        self.processes = Some(processes);
        self
    }

    /// An entry each worker runs once on `argument` before its first task
    /// (Python's `initializer` and `initargs`). If it panics, the tasks
    /// sent to that worker fail with its message.
    pub fn initializer<A: Serialize>(mut self, entry: Entry<A, ()>, argument: &A) -> Builder {
        let mut bytes = Vec::new();
        self.initializer = Some(
            codec::encode_into(argument, &mut bytes).map(|()| (entry.name().to_owned(), bytes)),
        );
        self
    }

    /// A worker exits after this many tasks and a fresh one takes its place
    /// (Python's `maxtasksperchild`): a bound on what a task that leaks can
    /// cost. By default workers live as long as the pool.
    pub fn max_tasks_per_child(mut self, tasks: usize) -> Builder {
        self.max_tasks_per_child = Some(tasks);
        self
    }

    /// How workers are started (Python's `context`): by default
    /// [`StartMethod::Spawn`]. [`StartMethod::Forkserver`] starts them
    /// faster, and as safely whatever threads the program has.
    /// [`StartMethod::Fork`] also needs [`allow_threads`](Self::allow_threads),
    /// since the pool forks replacement workers from a thread of its own.
    ///
    /// ```
    /// use ipc_core::spawn::StartMethod;
    /// fn cube(x: u64) -> u64 {
    ///     x * x * x
    /// }
    /// # ipc_core::spawn::init();
    /// let pool = ipc_pool::Pool::builder()
    ///     .processes(2)
    ///     .start_method(StartMethod::Forkserver)
    ///     .build()?;
    /// assert_eq!(pool.map(ipc_core::entry!(cube), [1, 2, 3])?, [1, 8, 27]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.start_method = method;
        self
    }

    /// Lets a pool on [`StartMethod::Fork`] fork beside other threads, as
    /// [`Process::allow_threads`](ipc_core::process::Process::allow_threads)
    /// does, with the hazard it describes: the pool's own thread forks every
    /// replacement worker, and a worker may deadlock on a lock another
    /// thread of the program held at that instant. Use it only when the
    /// program's other threads hold nothing a task touches; otherwise use
    /// spawn or the forkserver.
    pub fn allow_threads(mut self) -> Builder {
        self.allow_threads = true;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool> {
        let processes = match self.processes {
            Some(0) => return Err(Error::InvalidArgument("a pool needs at least one process")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument(
                "max_tasks_per_child must be at least 1",
            ));
        }
        if self.start_method == StartMethod::Fork && !self.allow_threads {
            return Err(Error::InvalidArgument(
                "a pool on fork forks replacement workers from a thread of its own: accept that hazard with Builder::allow_threads, or use spawn or the forkserver",
            ));
        }
        let recipe = Recipe {
            method: self.start_method,
            allow_threads: self.allow_threads,
            setup: Setup {
                initializer: self.initializer.transpose()?,
            },
        };
        let workers = (0..processes)
            .map(|_| Worker::start(&recipe))
            .collect::<Result<Vec<_>>>()?;
        Ok(Pool {
            dispatch: Dispatch::start(workers, recipe, self.max_tasks_per_child)?,
            processes,
            closed: AtomicBool::new(false),
        })
    }
}

impl Pool {
    /// Starts `processes` workers (at least one): `Pool::builder().processes(n).build()`.
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A [`Builder`] for a pool with an initializer, a task limit per
    /// worker or the default number of workers.
    pub fn builder() -> Builder {
        Builder {
            processes: None,
            initializer: None,
            max_tasks_per_child: None,
            start_method: StartMethod::Spawn,
            allow_threads: false,
        }
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Runs `entry` on every item and returns the results in order
    /// (Python's `map`), or the first task's error in item order. The items
    /// go to the workers in chunks, about four per worker (Python's rule);
    /// [`chunksize`](Self::chunksize) sets another size.
    pub fn map<A, R>(
        &self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.chunked(None).map(entry, items)
    }

    /// [`map`](Self::map) without blocking a thread: awaits the results on
    /// any executor (tokio's among them). Items are sent to the workers
    /// before the first await.
    ///
    /// Cancel safety: dropping the future withdraws the tasks no worker
    /// has started; the ones running finish and their results are dropped.
    /// Nothing is left in the pool.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// # ipc_core::spawn::init();
    /// let pool = ipc_pool::Pool::new(2)?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// let squares = runtime.block_on(pool.map_async(ipc_core::entry!(square), 0..5))?;
    /// assert_eq!(squares, [0, 1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn map_async<A, R>(
        &self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.chunked(None).map_async(entry, items).await
    }

    /// Like [`map`](Self::map), with each task's own result: a task that
    /// failed does not hide the others.
    pub fn map_each<A, R>(
        &self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R>>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.chunked(None).map_each(entry, items)
    }

    /// Runs `entry` on the items and yields the results in item order as
    /// they come (Python's `imap`). The items are taken lazily, a few
    /// chunks ahead of the results read, one task per chunk unless
    /// [`chunksize`](Self::chunksize) says otherwise.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// fn main() -> ipc_core::Result<()> {
    ///     ipc_core::spawn::init();
    ///     let pool = ipc_pool::Pool::new(2)?;
    ///     // An endless input: only what is read is computed.
    ///     let mut squares = pool.imap(ipc_core::entry!(square), 0u64..);
    ///     assert_eq!(squares.next().transpose()?, Some(0));
    ///     assert_eq!(squares.nth(2).transpose()?, Some(9));
    ///     Ok(())
    /// }
    /// ```
    pub fn imap<A, R, I>(&self, entry: Entry<A, R>, items: I) -> Imap<'_, I::IntoIter, R>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.chunked(Some(1)).imap(entry, items)
    }

    /// Like [`imap`](Self::imap), yielding each result as soon as it is
    /// ready, in any order (Python's `imap_unordered`).
    pub fn imap_unordered<A, R, I>(&self, entry: Entry<A, R>, items: I) -> Imap<'_, I::IntoIter, R>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.chunked(Some(1)).imap_unordered(entry, items)
    }

    /// The same methods with `chunksize` tasks sent to a worker at a time:
    /// fewer round trips for many small tasks, a coarser balance for a few
    /// long ones.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// fn main() -> ipc_core::Result<()> {
    ///     ipc_core::spawn::init();
    ///     let pool = ipc_pool::Pool::new(2)?;
    ///     let squares: Vec<u64> = pool
    ///         .chunksize(100)
    ///         .imap(ipc_core::entry!(square), 0..1000u64)
    ///         .collect::<ipc_core::Result<_>>()?;
    ///     assert_eq!(squares[999], 998_001);
    ///     Ok(())
    /// }
    /// ```
    pub fn chunksize(&self, chunksize: usize) -> Chunked<'_> {
        self.chunked(Some(chunksize.max(1)))
    }

    fn chunked(&self, chunksize: Option<usize>) -> Chunked<'_> {
        Chunked {
            pool: self,
            chunksize,
        }
    }

    /// Runs `entry` on `argument` in a worker and returns its result
    /// (Python's `apply`).
    pub fn apply<A, R>(&self, entry: Entry<A, R>, argument: &A) -> Result<R>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.apply_async(entry, argument)?.get()
    }

    /// Starts `entry` on `argument` in a worker and returns at once with a
    /// handle to its result (Python's `apply_async`; the `Future` of
    /// `ProcessPoolExecutor.submit`).
    ///
    /// ```
    /// use std::time::Duration;
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// fn main() -> ipc_core::Result<()> {
    ///     ipc_core::spawn::init();
    ///     let pool = ipc_pool::Pool::new(2)?;
    ///     let pending: Vec<_> = (0..4u64)
    ///         .map(|x| pool.apply_async(ipc_core::entry!(square), &x))
    ///         .collect::<ipc_core::Result<_>>()?;
    ///     let mut first = pending.into_iter();
    ///     let mut one = first.next().unwrap();
    ///     assert_eq!(one.get_timeout(Duration::from_secs(10))?, 0);
    ///     assert_eq!(first.map(|p| p.get()).sum::<ipc_core::Result<u64>>()?, 14);
    ///     Ok(())
    /// }
    /// ```
    pub fn apply_async<A, R>(&self, entry: Entry<A, R>, argument: &A) -> Result<AsyncResult<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.check_open()?;
        let (submission, replies) = Submission::new();
        let mut writer = ChunkWriter::new(entry.name(), 0);
        writer.push(argument)?;
        let piece = Piece {
            submission: submission.clone(),
            first: 0,
            count: 1,
            frame: writer.finish(),
            attempts: 0,
        };
        self.dispatch.send(Command::Run(piece))?;
        Ok(AsyncResult {
            replies,
            submission,
            received: RefCell::new(None),
            spent: false,
            _result: PhantomData,
        })
    }

    /// Takes no more tasks (Python's `close()`); what was submitted still
    /// runs. Then [`join`](Self::join) waits for it and for the workers to
    /// exit.
    ///
    /// An [`imap`](Self::imap) begun before the close sends its tasks as
    /// its results are taken (Python's sends them all at once): those it
    /// sends once the pool has run everything and is letting its workers
    /// go are answered [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::SeqCst) {
            self.dispatch.send(Command::Close)?;
        }
        Ok(())
    }

    /// Waits until every submitted task has run and the workers have
    /// exited (Python's `join()`); only after [`close`](Self::close).
    pub fn join(mut self) -> Result<()> {
        if !self.closed.load(Ordering::SeqCst) {
            return Err(Error::InvalidArgument("join a pool only after close"));
        }
        self.dispatch.join();
        Ok(())
    }

    /// Kills the workers at once (Python's `terminate()`); dropping the
    /// pool does the same. Tasks still pending fail with [`Error::Closed`].
    pub fn terminate(self) {
        drop(self);
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::InvalidArgument("the pool is closed"))
        } else {
            Ok(())
        }
    }
}

/// A [`Pool`] with a chunk size chosen by the caller, from
/// [`Pool::chunksize`].
#[derive(Debug, Clone, Copy)]
pub struct Chunked<'p> {
    pool: &'p Pool,
    /// `None`: Python's rule for `map`.
    chunksize: Option<usize>,
}

impl<'p> Chunked<'p> {
    /// [`Pool::map`] with this chunk size.
    pub fn map<A, R>(self, entry: Entry<A, R>, items: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let mut results = Vec::new();
        let mut failed = None;
        self.batch(entry, items, &mut results, |results, run| {
            keep_first_error(results, &mut failed, run)
        })?;
        failed.map_or(Ok(results), Err)
    }

    /// [`Pool::map_each`] with this chunk size.
    pub fn map_each<A, R>(
        self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R>>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let mut results = Vec::new();
        self.batch(entry, items, &mut results, |results, run| match run {
            Run::Replied(reply) => for_each_outcome(reply, |_, result| results.push(result)),
            Run::Failed(count, e) => results.extend((0..count).map(|_| Err(copy_error(&e)))),
        })?;
        Ok(results)
    }

    /// Sends every item and hands each run of tasks to `take` in item
    /// order, once its outcomes are in, with `results` sized for every
    /// item: the caller decodes straight into its results, with no run
    /// kept aside once its turn comes.
    fn batch<A, R, T>(
        self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
        results: &mut Vec<T>,
        take: impl FnMut(&mut Vec<T>, Run),
    ) -> Result<()>
    where
        A: Serialize,
    {
        self.pool.check_open()?;
        let items = items.into_iter();
        // A range or a `Vec` says how long it is: no need to collect it
        // first. The count only sizes chunks; every item is sent however
        // many there are.
        match items.size_hint() {
            (low, Some(high)) if low == high => self.send_all(entry, items, low, results, take),
            _ => {
                let items: Vec<A> = items.collect();
                let total = items.len();
                self.send_all(entry, items.into_iter(), total, results, take)
            }
        }
    }

    fn send_all<A, R, T>(
        self,
        entry: Entry<A, R>,
        mut items: impl Iterator<Item = A>,
        total: usize,
        results: &mut Vec<T>,
        mut take: impl FnMut(&mut Vec<T>, Run),
    ) -> Result<()>
    where
        A: Serialize,
    {
        results.reserve_exact(total);
        let (submission, replies) = Submission::new();
        let _withdraw = Withdraw(&submission);
        let mut order = InOrder::new(|run| take(results, run));
        let mut outstanding = self.send_pieces(entry, &mut items, total, &submission, &mut order);
        while outstanding > 0 {
            // The dispatcher answers every task, even when terminated.
            let reply = replies.recv().map_err(|_| Error::Closed)?;
            outstanding -= reply.count;
            order.arrive(reply.first, reply.count, Run::Replied(reply));
        }
        order.finish();
        Ok(())
    }

    /// Sends every item in chunks (of Python's size for `total` items
    /// unless chosen), handing runs that could not be sent to `order`;
    /// gives how many tasks went out.
    fn send_pieces<A, R, F: FnMut(Run)>(
        self,
        entry: Entry<A, R>,
        items: &mut impl Iterator<Item = A>,
        total: usize,
        submission: &Arc<Submission>,
        order: &mut InOrder<F>,
    ) -> usize
    where
        A: Serialize,
    {
        let chunksize = self
            .chunksize
            .unwrap_or_else(|| python_chunksize(total, self.pool.processes));
        let mut outstanding = 0;
        let mut taken = 0;
        loop {
            let sent = send_piece(self.pool, submission, entry.name(), items, taken, chunksize);
            if sent.taken == 0 {
                return outstanding;
            }
            match sent.sent {
                Ok(count) => outstanding += count,
                Err((count, e)) => order.arrive(taken, count, Run::Failed(count, e)),
            }
            if let Some((k, e)) = sent.unencodable {
                order.arrive(k, 1, Run::Failed(1, e));
            }
            taken += sent.taken;
        }
    }

    /// [`Pool::map_async`] with this chunk size.
    pub async fn map_async<A, R>(
        self,
        entry: Entry<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        self.pool.check_open()?;
        let items: Vec<A> = items.into_iter().collect();
        let total = items.len();
        let mut results = Vec::with_capacity(total);
        let mut failed = None;
        let (submission, replies) = Submission::new();
        let _withdraw = Withdraw(&submission);
        let mut order = InOrder::new(|run| keep_first_error(&mut results, &mut failed, run));
        let mut outstanding = self.send_pieces(
            entry,
            &mut items.into_iter(),
            total,
            &submission,
            &mut order,
        );
        while outstanding > 0 {
            let reply = std::future::poll_fn(|cx| submission.poll_reply(&replies, cx))
                .await
                .ok_or(Error::Closed)?;
            outstanding -= reply.count;
            order.arrive(reply.first, reply.count, Run::Replied(reply));
        }
        order.finish();
        failed.map_or(Ok(results), Err)
    }

    /// [`Pool::imap`] with this chunk size.
    pub fn imap<A, R, I>(self, entry: Entry<A, R>, items: I) -> Imap<'p, I::IntoIter, R>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.lazy(entry, items, true)
    }

    /// [`Pool::imap_unordered`] with this chunk size.
    pub fn imap_unordered<A, R, I>(self, entry: Entry<A, R>, items: I) -> Imap<'p, I::IntoIter, R>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.lazy(entry, items, false)
    }

    fn lazy<A, R, I>(self, entry: Entry<A, R>, items: I, ordered: bool) -> Imap<'p, I::IntoIter, R>
    where
        A: Serialize,
        R: DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let chunksize = self.chunksize.unwrap_or(1);
        // Enough queued that no worker waits for the caller to read.
        let window = chunksize * self.pool.processes * 2;
        let mut tasks = Imap::new(
            self.pool,
            entry,
            items.into_iter(),
            chunksize,
            window,
            ordered,
        );
        if let Err(e) = self.pool.check_open() {
            tasks.fail(e);
        }
        tasks
    }
}

/// Python's rule for `map`: about four chunks per worker.
fn python_chunksize(tasks: usize, workers: usize) -> usize {
    tasks.div_ceil(workers * 4).max(1)
}

/// A chunk is sent once its arguments take this many bytes, full or not:
/// with its last argument, it still fits in a message.
const CHUNK_BYTES: usize = ipc_core::spawn::batch::RUN_BYTES;

/// The results of [`Pool::imap`] or [`Pool::imap_unordered`]: an iterator
/// that sends items to the workers as results are read.
///
/// Dropping it stops sending items; tasks already sent still run.
pub struct Imap<'p, I, R> {
    pool: &'p Pool,
    entry: &'static str,
    /// `None` once every item was taken.
    items: Option<I>,
    chunksize: usize,
    /// At most this many items taken and their results not yet read:
    /// results held for an earlier one count, so that a slow first task
    /// does not let the rest of the input be read ahead.
    window: usize,
    /// Items taken so far: the next item's index.
    taken: usize,
    outstanding: usize,
    submission: Arc<Submission>,
    replies: Receiver<Reply>,
    ordered: bool,
    /// Ordered: the results from index `base` on, `None` where not yet
    /// known. Unordered: results in the order they came.
    ready: VecDeque<Option<Result<R>>>,
    base: usize,
}

impl<I, R> std::fmt::Debug for Imap<'_, I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("entry", &self.entry)
            .field("taken", &self.taken)
            .field("outstanding", &self.outstanding)
            .field("ordered", &self.ordered)
            .finish_non_exhaustive()
    }
}

impl<'p, A, I, R> Imap<'p, I, R>
where
    A: Serialize,
    I: Iterator<Item = A>,
    R: DeserializeOwned,
{
    fn new(
        pool: &'p Pool,
        entry: Entry<A, R>,
        items: I,
        chunksize: usize,
        window: usize,
        ordered: bool,
    ) -> Self {
        let (submission, replies) = Submission::new();
        Imap {
            pool,
            entry: entry.name(),
            items: Some(items),
            chunksize,
            window: window.max(chunksize),
            taken: 0,
            outstanding: 0,
            submission,
            replies,
            ordered,
            ready: VecDeque::new(),
            base: 0,
        }
    }

    /// Like [`next`](Iterator::next), waiting at most `timeout` for the
    /// next result: `Some(Err(Error::Timeout))` if it is not there by then
    /// (Python's `IMapIterator.next(timeout)`); the iterator goes on.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(Some(ipc_core::Deadline::after(timeout)))
    }

    fn next_until(&mut self, deadline: Option<ipc_core::Deadline>) -> Option<Result<R>> {
        loop {
            self.send_more();
            if let Some(result) = self.take_ready() {
                return Some(result);
            }
            if self.outstanding == 0 {
                return None;
            }
            let reply = match deadline.map(|d| d.remaining()) {
                None => self
                    .replies
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(left) => self.replies.recv_timeout(left.unwrap_or(Duration::MAX)),
            };
            match reply {
                Ok(reply) => self.absorb(reply),
                Err(RecvTimeoutError::Timeout) => return Some(Err(Error::Timeout)),
                // The pool was terminated: the rest is lost.
                Err(RecvTimeoutError::Disconnected) => {
                    self.outstanding = 0;
                    self.items = None;
                    self.ready.clear();
                    return Some(Err(Error::Closed));
                }
            }
        }
    }

    /// Takes items and sends them while fewer than `window` items are
    /// taken and unread (every result read moves `base` on).
    fn send_more(&mut self) {
        while self.taken - self.base < self.window {
            let Some(items) = self.items.as_mut() else {
                return;
            };
            let first = self.taken;
            let sent = send_piece(
                self.pool,
                &self.submission,
                self.entry,
                items,
                first,
                self.chunksize,
            );
            if sent.taken == 0 {
                self.items = None;
                return;
            }
            self.taken += sent.taken;
            match sent.sent {
                Ok(count) => self.outstanding += count,
                Err((count, e)) => {
                    for k in first..first + count {
                        self.put(k, Err(copy_error(&e)));
                    }
                }
            }
            if let Some((k, e)) = sent.unencodable {
                self.put(k, Err(e));
            }
        }
    }

    /// Ends the iteration with `error` (a pool closed before it began),
    /// which stands for one item taken.
    fn fail(&mut self, error: Error) {
        self.items = None;
        self.taken += 1;
        self.ready.push_back(Some(Err(error)));
    }

    fn put(&mut self, index: usize, result: Result<R>) {
        if self.ordered {
            let k = index - self.base;
            if self.ready.len() <= k {
                self.ready.resize_with(k + 1, || None);
            }
            self.ready[k] = Some(result);
        } else {
            self.ready.push_back(Some(result));
        }
    }

    fn take_ready(&mut self) -> Option<Result<R>> {
        match self.ready.front() {
            Some(Some(_)) => {
                self.base += 1;
                self.ready.pop_front().flatten()
            }
            _ => None,
        }
    }

    fn absorb(&mut self, reply: Reply) {
        self.outstanding -= reply.count;
        let first = reply.first;
        for_each_outcome(reply, |k, result| self.put(first + k, result));
    }
}

impl<A, I, R> Iterator for Imap<'_, I, R>
where
    A: Serialize,
    I: Iterator<Item = A>,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }
}

impl<I, R> Drop for Imap<'_, I, R> {
    fn drop(&mut self) {
        self.submission.cancelled.store(true, Ordering::Relaxed);
    }
}

/// What [`send_piece`] did.
struct Sent {
    /// Items taken: none once they are all taken.
    taken: usize,
    /// How many tasks went to the pool, or how many could not and why.
    sent: std::result::Result<usize, (usize, Error)>,
    /// The item that ended the piece because it cannot be encoded: its
    /// index and why.
    unencodable: Option<(usize, Error)>,
}

/// Takes up to `chunksize` items and sends them to the pool as one piece,
/// its first task numbered `first`. An item that cannot be encoded ends
/// the piece early and fails alone.
fn send_piece<A: Serialize>(
    pool: &Pool,
    submission: &Arc<Submission>,
    entry: &str,
    items: &mut impl Iterator<Item = A>,
    first: usize,
    chunksize: usize,
) -> Sent {
    // Room for small arguments: growing a large frame copies it each time.
    let capacity = chunksize.saturating_mul(16).min(CHUNK_BYTES);
    let mut writer = ChunkWriter::new(entry, capacity);
    let mut taken = 0;
    let mut unencodable = None;
    for item in items.take(chunksize) {
        taken += 1;
        if let Err(e) = writer.push(&item) {
            unencodable = Some((first + taken - 1, e));
            break;
        }
        if writer.bytes() >= CHUNK_BYTES {
            break;
        }
    }
    let count = writer.len();
    let sent = if count == 0 {
        Ok(0)
    } else {
        let piece = Piece {
            submission: submission.clone(),
            first,
            count,
            frame: writer.finish(),
            attempts: 0,
        };
        pool.dispatch
            .send(Command::Run(piece))
            .map(|()| count)
            .map_err(|e| (count, e))
    };
    Sent {
        taken,
        sent,
        unencodable,
    }
}

/// The marker of the serde code that decodes the results read one
/// outcome at a time, in [`for_each_outcome`] ([`codec::decode_for`]).
enum EachOutcome {}

/// Decodes the outcomes of a reply's tasks, in order.
fn for_each_outcome<R: DeserializeOwned>(reply: Reply, mut put: impl FnMut(usize, Result<R>)) {
    let child = |failure: ChildFailure| Error::Child(Box::new(failure));
    match reply.body {
        Body::Outcomes(frame) => {
            let mut read = 0;
            for outcome in wire::outcomes(&frame).take(reply.count) {
                let result = match outcome {
                    Ok(outcome) => outcome
                        .map_err(child)
                        .and_then(codec::decode_for::<EachOutcome, R>),
                    Err(e) => Err(e),
                };
                put(read, result);
                read += 1;
            }
            // A frame cut short or garbled: the tasks it does not answer
            // fail with the reason.
            for k in read..reply.count {
                put(k, Err(malformed()));
            }
        }
        Body::Failed(failure) => (0..reply.count).for_each(|k| put(k, Err(child(failure.clone())))),
        Body::Terminated => (0..reply.count).for_each(|k| put(k, Err(Error::Closed))),
        Body::NoWorker(why) => (0..reply.count).for_each(|k| {
            let message = format!("no pool worker could be started: {why}");
            put(k, Err(Error::Io(std::io::Error::other(message))))
        }),
    }
}

/// A run of a batch's tasks, as [`Chunked::batch`] hands it on.
enum Run {
    /// Their outcomes, from the dispatcher.
    Replied(Reply),
    /// They never reached a worker, all for this reason.
    Failed(usize, Error),
}

/// Hands runs of tasks on in item order, keeping those that come early
/// until the ones before them are in.
struct InOrder<F: FnMut(Run)> {
    take: F,
    /// The first task not yet handed on.
    next: usize,
    /// Runs that came before their turn, by first task and count.
    early: std::collections::BTreeMap<(usize, usize), Run>,
}

impl<F: FnMut(Run)> InOrder<F> {
    fn new(take: F) -> Self {
        InOrder {
            take,
            next: 0,
            early: std::collections::BTreeMap::new(),
        }
    }

    /// Takes the run of `count` tasks from task `first` on.
    fn arrive(&mut self, first: usize, count: usize, run: Run) {
        if first != self.next {
            self.early.insert((first, count), run);
            return;
        }
        (self.take)(run);
        self.next += count;
        while let Some(entry) = self.early.first_entry() {
            let (first, count) = *entry.key();
            if first != self.next {
                break;
            }
            (self.take)(entry.remove());
            self.next += count;
        }
    }

    /// Hands on what is left, in order, should the runs not have met end
    /// to end.
    fn finish(mut self) {
        while let Some((_, run)) = self.early.pop_first() {
            (self.take)(run);
        }
    }
}

/// Decodes a run's results onto the end of `results`, unless a run before
/// failed: runs come in item order, so the first error kept is the first
/// task's.
fn keep_first_error<R: DeserializeOwned>(
    results: &mut Vec<R>,
    failed: &mut Option<Error>,
    run: Run,
) {
    if failed.is_some() {
        return;
    }
    let decoded = match run {
        Run::Replied(reply) => decode_into(reply, results),
        Run::Failed(_, e) => Err(e),
    };
    *failed = decoded.err();
}

/// The marker of the serde code that decodes a `map`'s results, which
/// inlines it in [`decode_into`]'s loop ([`codec::decode_for`]).
enum Results {}

/// Decodes a reply's results onto the end of `results`, or gives the
/// error of its first task that failed.
fn decode_into<R: DeserializeOwned>(reply: Reply, results: &mut Vec<R>) -> Result<()> {
    let Body::Outcomes(frame) = &reply.body else {
        let mut failed = Ok(());
        for_each_outcome(reply, |_, result: Result<R>| {
            if let (Ok(()), Err(e)) = (&failed, result) {
                failed = Err(e);
            }
        });
        return failed;
    };
    let read = wire::each_result(frame, reply.count, |bytes| {
        results.push(codec::decode_for::<Results, R>(bytes)?);
        Ok(())
    })?;
    if read < reply.count {
        return Err(malformed());
    }
    Ok(())
}

/// Why a task that a worker's frame does not answer fails.
fn malformed() -> Error {
    let why = ChildFailure::Codec("a worker's outcomes are malformed".into());
    Error::Child(Box::new(why))
}

/// An error for each of several tasks that one cause failed.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Closed => Error::Closed,
        other => Error::Io(std::io::Error::other(other.to_string())),
    }
}

/// Withdraws a submission's tasks not yet sent to a worker when its caller
/// returns.
struct Withdraw<'a>(&'a Submission);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }
}

/// The pending result of [`Pool::apply_async`] (Python's `AsyncResult`).
///
/// Dropping it before the task was sent to a worker withdraws the task.
pub struct AsyncResult<R> {
    replies: Receiver<Reply>,
    submission: Arc<Submission>,
    received: RefCell<Option<Reply>>,
    /// Whether [`get_timeout`](Self::get_timeout) gave the result.
    spent: bool,
    _result: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("received", &self.received.borrow().is_some())
            .finish_non_exhaustive()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Whether the task has finished (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.wait_timeout(Duration::ZERO)
    }

    /// Waits at most `timeout` for the task to finish, and says whether it
    /// has (Python's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.received.borrow().is_some() || self.spent {
            return true;
        }
        let reply = if timeout.is_zero() {
            self.replies.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            self.replies.recv_timeout(timeout)
        };
        match reply {
            Ok(reply) => {
                *self.received.borrow_mut() = Some(reply);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            // The pool is gone: `get` says so at once.
            Err(RecvTimeoutError::Disconnected) => true,
        }
    }

    /// Waits for the result (Python's `get()`): the task's value, or why
    /// there is none ([`Error::Child`] for a panic or a dead worker,
    /// [`Error::Closed`] if the pool was terminated first).
    pub fn get(self) -> Result<R> {
        let received = self.received.borrow_mut().take();
        match received {
            Some(reply) => decode_one(reply),
            None if self.spent => Err(Error::Closed),
            None => self
                .replies
                .recv()
                .map_err(|_| Error::Closed)
                .and_then(decode_one),
        }
    }

    /// Waits at most `timeout` for the result (Python's `get(timeout)`):
    /// [`Error::Timeout`] leaves the task running and the handle usable.
    /// Once it gave the result, the handle is spent and gives
    /// [`Error::Closed`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R> {
        if !self.wait_timeout(timeout) {
            return Err(Error::Timeout);
        }
        let received = self.received.borrow_mut().take();
        match received {
            Some(reply) => {
                self.spent = true;
                decode_one(reply)
            }
            None => Err(Error::Closed),
        }
    }
}

/// Awaiting an `AsyncResult` gives the result as [`get`](AsyncResult::get)
/// does, without blocking a thread, on any executor. Cancel safe: dropped
/// before the result came, the `AsyncResult` still has it to give; polled
/// again after it gave it, it gives [`Error::Closed`].
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// # ipc_core::spawn::init();
/// let pool = ipc_pool::Pool::new(1)?;
/// let pending = pool.apply_async(ipc_core::entry!(square), &12)?;
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// assert_eq!(runtime.block_on(pending)?, 144);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<R: DeserializeOwned> std::future::Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<R>> {
        let this = self.get_mut();
        if let Some(reply) = this.received.get_mut().take() {
            this.spent = true;
            return std::task::Poll::Ready(decode_one(reply));
        }
        if this.spent {
            return std::task::Poll::Ready(Err(Error::Closed));
        }
        this.submission.poll_reply(&this.replies, cx).map(|reply| {
            this.spent = true;
            reply.map_or(Err(Error::Closed), decode_one)
        })
    }
}

impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        self.submission.cancelled.store(true, Ordering::Relaxed);
    }
}

fn decode_one<R: DeserializeOwned>(reply: Reply) -> Result<R> {
    let mut result = None;
    for_each_outcome(reply, |_, r| result = Some(r));
    result.unwrap_or(Err(Error::Closed))
}
