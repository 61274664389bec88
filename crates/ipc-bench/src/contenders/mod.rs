//! The contenders and the machinery they share.
//!
//! A [`Contender`] runs one measurement of one benchmark when asked, against
//! a peer process it started. Most contenders are a [`Link`] (one end of a
//! channel that sends and receives whole messages) used on both sides: the
//! parent end is driven by [`drive`], the peer end, in a child started as
//! `ipc-bench --peer NAME`, answers with [`answer`]; a control connection
//! (an `ipc-pipe` duplex, never timed) tells the peer what comes next.
//!
//! # Adding a contender
//!
//! 1. Write a module with a [`Link`] for your mechanism.
//! 2. Give it a `start()` that creates the channel, calls [`spawn_peer`]
//!    and returns a [`LinkContender`], and a `peer()` that rebuilds the
//!    other end in the child and calls [`serve`].
//! 3. Add an [`Entry`] to [`registry`].
//!
//! A contender that cannot be a [`Link`] (the Python one) implements
//! [`Contender`] directly and has no `peer`. The async contenders have
//! their own awaited link and drivers (see [`async_io`]); [`wake`] has one
//! link type used both ways, blocking and awaited.

pub mod async_io;
pub mod broker;
#[cfg(feature = "iceoryx2")]
pub mod iceoryx2;
pub mod in_place;
pub mod ipc_channel;
pub mod pickle_dict;
pub mod pipe;
pub mod pool;
pub mod python;
pub mod queue;
pub mod raw;
pub mod shm;
pub mod socket;
pub mod start;
pub mod wake;

use std::process::Command;
use std::time::{Duration, Instant};

use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;
use serde::{Deserialize, Serialize};

use crate::affinity;
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// The floor every other contender of `bench` is compared with.
pub fn floor(bench: &Benchmark) -> &'static str {
    match (bench.via, bench.kind) {
        (Via::Pipe, _) => raw::NAME,
        (Via::AsyncPipe, _) => async_io::TOKIO,
        // The async queue's goal is stated against the blocking queue.
        (Via::AsyncQueue, _) => queue::NAME,
        // What an await adds shows against the same wait made blocking.
        (Via::AsyncWake, _) => wake::BLOCKING,
        (Via::Unix | Via::Tcp, _) => socket::RAW,
        (Via::Shm, Kind::Bandwidth) => shm::MEMCPY,
        (Via::Shm, _) => shm::MUTEX,
        (Via::Queue | Via::Queue2, _) => queue::MQ,
        (Via::Spawn | Via::Forkserver | Via::Fork, _) => start::EXEC,
        (Via::Pool, _) => pool::THREADS,
        // Rust at both ends: what the pickle codec costs without Python.
        (Via::PickleDict, _) => pickle_dict::RUST_PEER,
        // The redis commands the queue needs, pipelined, without it.
        (Via::Broker | Via::BrokerTcp | Via::Broker4, _) => broker::RAW,
        // The producer writing each item once.
        (Via::Large | Via::Large2, _) => in_place::MEMCPY,
    }
}

/// The Python contender of `bench`, the second reference.
pub fn python(bench: &Benchmark) -> &'static str {
    match bench.via {
        // Python at both ends, with `conn.send` / `recv` for the dict.
        Via::Pipe | Via::AsyncPipe | Via::PickleDict => python::NAME,
        Via::Unix | Via::Tcp => python::SOCKET,
        // Python has no awaitable semaphore: the blocking one is the
        // reference, as the blocking `Pipe` is the async ping-pong's.
        Via::Shm | Via::AsyncWake => python::SHM,
        Via::Queue | Via::Queue2 | Via::AsyncQueue => python::QUEUE,
        Via::Spawn | Via::Forkserver | Via::Fork => python::START,
        Via::Pool => python::POOL,
        Via::Broker | Via::BrokerTcp | Via::Broker4 => python::BROKER,
        Via::Large | Via::Large2 => python::LARGE,
    }
}

/// Pairs of contenders of `bench`, `(contender, measured against)`, whose
/// ratio the report gives under the table beside the floor's and
/// Python's: what a choice within one mechanism costs.
pub fn comparisons(bench: &Benchmark) -> &'static [(&'static str, &'static str)] {
    match bench.via {
        // The same messages over the same pipe, pickled or postcard.
        Via::Pipe => &[(pipe::PICKLE, pipe::TYPED)],
        // What writing and reading in place saves over copying, and what
        // the queue in place does beside iceoryx2's loans.
        Via::Large | Via::Large2 => &[
            (in_place::IN_PLACE, in_place::COPYING),
            (in_place::IN_PLACE, ICEORYX2),
        ],
        _ => &[],
    }
}

/// Whether contender `name` is a floor or a Python reference of some
/// benchmark (those always run, whatever `--only` says).
pub fn is_reference(name: &str) -> bool {
    Benchmark::all()
        .iter()
        .any(|b| floor(b) == name || python(b) == name)
}

/// The benchmarks over a pipe-like pair (the first contenders').
pub fn pipe_only(bench: Benchmark) -> bool {
    bench.via == Via::Pipe
}

/// The queue benchmarks with one producer and one consumer (those a
/// plain channel can run too).
pub fn queue_one_to_one(bench: Benchmark) -> bool {
    bench.via == Via::Queue
}

/// The CPU the peer of `bench` is pinned to when the parent is pinned to
/// `cpu`: the same one, except in the queue and wake-up ping-pongs, whose
/// two processes each get a CPU (see `affinity`).
pub fn peer_cpu(bench: Benchmark, cpu: Option<usize>) -> Option<usize> {
    let two_cpus = matches!(bench.via, Via::Queue | Via::AsyncQueue | Via::AsyncWake);
    if two_cpus && bench.kind == Kind::PingPong {
        cpu.and_then(affinity::other_cpu)
    } else {
        cpu
    }
}

/// Something measured: it runs benchmarks against a peer process.
pub trait Contender {
    /// Runs `bench` with `count` round trips or messages and reports how
    /// it went, with both processes pinned to `cpu` if it is given.
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample>;

    /// A note for the report, such as the version measured.
    fn describe(&self) -> Option<String> {
        None
    }

    /// Stops the peer process.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Starts a contender and its peer process; `Ok(None)` means it is
/// unavailable here (the reason goes to stderr and the report).
pub type StartFn = fn() -> Result<Option<Box<dyn Contender>>>;

/// The peer's side of a contender, run by `ipc-bench --peer NAME ARGS...`
/// with ARGS.
pub type PeerFn = fn(args: &[String]) -> Result;

/// One row of the registry.
pub struct Entry {
    /// The name shown in the results.
    pub name: &'static str,
    /// One line on what it is, for the report.
    pub about: &'static str,
    /// Starts the contender and its peer process.
    pub start: StartFn,
    /// The peer's side, if the peer is this program.
    pub peer: Option<PeerFn>,
    /// Whether it runs a benchmark.
    pub runs: fn(Benchmark) -> bool,
}

/// Every contender, in the order of the report, except that each
/// benchmark's table starts with its floor (a contender listed here
/// before the floor, such as [`async_io::TOKIO`] in the async queue
/// ping-pong, follows it there).
pub fn registry() -> Vec<Entry> {
    vec![
        raw::entry(),
        raw::exact_entry(),
        async_io::tokio_entry(),
        pipe::bytes_entry(),
        pipe::batched_entry(),
        pipe::bytes_alloc_entry(),
        pipe::typed_entry(),
        pipe::pickle_entry(),
        pickle_dict::rust_peer_entry(),
        pickle_dict::python_peer_entry(),
        async_io::ours_entry(),
        async_io::interprocess_entry(),
        python::entry(),
        ipc_channel::entry(),
        socket::raw_entry(),
        socket::entry(),
        python::socket_entry(),
        shm::mutex_entry(),
        shm::memcpy_entry(),
        shm::value_entry(),
        shm::shared_memory_entry(),
        shm::array_entry(),
        python::shm_entry(),
        queue::mq_entry(),
        queue::entry(),
        async_io::queue_entry(),
        python::queue_entry(),
        broker::raw_entry(),
        broker::entry(),
        broker::batched_entry(),
        python::broker_entry(),
        in_place::memcpy_entry(),
        in_place::in_place_entry(),
        in_place::copying_entry(),
        python::large_entry(),
        #[cfg(feature = "iceoryx2")]
        iceoryx2::entry(),
        #[cfg(not(feature = "iceoryx2"))]
        iceoryx2_not_built(),
        wake::blocking_entry(),
        wake::awaited_entry(),
        start::exec_entry(),
        start::ours_entry(),
        python::start_entry(),
        pool::threads_entry(),
        pool::entry(),
        python::pool_entry(),
    ]
}

/// Name of the iceoryx2 contender (see `iceoryx2.rs`), listed whether or
/// not this build has it.
pub const ICEORYX2: &str = "iceoryx2 publish/subscribe";

/// The registry entry of the iceoryx2 contender in a build without it (the
/// `iceoryx2` feature off): it is listed, and skipped with a note where it
/// would run.
#[cfg(not(feature = "iceoryx2"))]
fn iceoryx2_not_built() -> Entry {
    Entry {
        name: ICEORYX2,
        about: "iceoryx2 publish/subscribe of large items; not in this build (ipc-bench's \
                `iceoryx2` feature, which `cargo xtask bench` turns on)",
        start: || {
            eprintln!(
                "{ICEORYX2}: ipc-bench was built without its `iceoryx2` feature \
                 (`cargo xtask bench` turns it on); skipped"
            );
            Ok(None)
        },
        peer: None,
        runs: in_place::large_one_to_one,
    }
}

/// One end of a message channel, as the generic drivers use it.
///
/// Messages are built once by [`prepare`](Link::prepare), so the timed loop
/// measures the channel rather than the building of messages.
pub trait Link {
    /// Prepares to send messages of `send` payload bytes and to receive
    /// messages of `recv` payload bytes.
    fn prepare(&mut self, send: usize, recv: usize);
    /// Sends the prepared message.
    fn send(&mut self) -> Result<()>;
    /// Receives one message and returns its payload length.
    fn recv(&mut self) -> Result<usize>;
}

/// What the parent tells a peer over the control connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Control {
    /// Answer this benchmark: `warmup + count` round trips, or receive
    /// `count` messages and acknowledge.
    Run {
        /// The benchmark.
        bench: Benchmark,
        /// Untimed round trips first.
        warmup: usize,
        /// Timed round trips or messages.
        count: usize,
        /// The CPU to pin to for this run.
        cpu: Option<usize>,
    },
    /// Exit.
    Quit,
}

/// One benchmark a peer is asked to run: [`Control::Run`]'s fields.
pub struct Run {
    /// The benchmark.
    pub bench: Benchmark,
    /// Untimed round trips first.
    pub warmup: usize,
    /// Timed round trips or messages.
    pub count: usize,
    /// The CPU to pin to for this run.
    pub cpu: Option<usize>,
}

/// A peer's side of the control connection: runs each benchmark the
/// parent asks for with `run` (which may answer on the connection), until
/// the parent says quit or goes away.
pub fn serve_runs(
    ctl: &mut Connection,
    mut run: impl FnMut(&mut Connection, Run) -> Result,
) -> Result {
    loop {
        match ctl.recv::<Control>() {
            Ok(Control::Run {
                bench,
                warmup,
                count,
                cpu,
            }) => run(
                ctl,
                Run {
                    bench,
                    warmup,
                    count,
                    cpu,
                },
            )?,
            Ok(Control::Quit) | Err(ipc_core::Error::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The payload size of the acknowledgement that ends a throughput run.
pub const ACK_SIZE: usize = 0;

fn check_len(got: usize, expected: usize) -> Result {
    if got == expected {
        Ok(())
    } else {
        Err(format!("received {got} bytes, expected {expected}").into())
    }
}

/// The parent's side of a benchmark over `link`: times it.
pub fn drive<L: Link + ?Sized>(link: &mut L, bench: Benchmark, count: usize) -> Result<Sample> {
    let size = bench.size;
    match bench.kind {
        Kind::PingPong => {
            link.prepare(size, size);
            for _ in 0..bench.warmup(count) {
                link.send()?;
                check_len(link.recv()?, size)?;
            }
            let mut rtts = vec![0u64; count];
            let start = Instant::now();
            let mut last = start;
            for rtt in rtts.iter_mut() {
                link.send()?;
                let got = link.recv()?;
                let now = Instant::now();
                *rtt = now.duration_since(last).as_nanos() as u64;
                last = now;
                check_len(got, size)?;
            }
            Ok(Sample::from_round_trips(&mut rtts, last - start))
        }
        Kind::Throughput => {
            link.prepare(size, ACK_SIZE);
            let start = Instant::now();
            for _ in 0..count {
                link.send()?;
            }
            let got = link.recv()?;
            let elapsed = start.elapsed();
            check_len(got, ACK_SIZE)?;
            Ok(Sample::Throughput {
                messages: count,
                size,
                elapsed_ns: elapsed.as_nanos() as f64,
            })
        }
        _ => Err(format!("{bench} is not a message benchmark").into()),
    }
}

/// The peer's side of a benchmark over `link`.
pub fn answer<L: Link + ?Sized>(
    link: &mut L,
    bench: Benchmark,
    warmup: usize,
    count: usize,
) -> Result {
    let size = bench.size;
    match bench.kind {
        Kind::PingPong => {
            link.prepare(size, size);
            for _ in 0..warmup + count {
                check_len(link.recv()?, size)?;
                link.send()?;
            }
        }
        Kind::Throughput => {
            link.prepare(ACK_SIZE, size);
            for _ in 0..count {
                check_len(link.recv()?, size)?;
            }
            link.send()?;
        }
        _ => return Err(format!("{bench} is not a message benchmark").into()),
    }
    Ok(())
}

/// A contender whose peer is this program started as `ipc-bench --peer
/// NAME`, reached through a [`Link`].
pub struct LinkContender<L: Link> {
    ctl: Connection,
    child: Child,
    link: L,
}

impl<L: Link> LinkContender<L> {
    /// The parent end `link` of a channel whose peer `child` was started by
    /// [`spawn_peer`], which also returned `ctl`.
    pub fn new(ctl: Connection, child: Child, link: L) -> LinkContender<L> {
        LinkContender { ctl, child, link }
    }
}

impl<L: Link> Contender for LinkContender<L> {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        self.ctl.send(&Control::Run {
            bench,
            warmup: bench.warmup(count),
            count,
            cpu: peer_cpu(bench, cpu),
        })?;
        affinity::pinned(cpu, || drive(&mut self.link, bench, count))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        quit_peer(&mut self.ctl, &mut self.child)
    }
}

/// Asks a peer to quit and waits for it: an error if it exits with a
/// failure, or does not exit within 10 s (it is then killed).
pub fn quit_peer(ctl: &mut Connection, child: &mut Child) -> Result<()> {
    // A peer that is gone already shows in its status.
    let _ = ctl.send(&Control::Quit);
    match child.join_timeout(Duration::from_secs(10))? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("peer exited with {status}").into()),
        None => {
            child.kill()?;
            Err("peer did not exit; killed".into())
        }
    }
}

/// Asks every peer of `peers` to quit and waits for each: the problems of
/// all of them in one error, if any.
pub fn quit_peers(peers: Vec<(Connection, Child)>) -> Result<()> {
    let problems: Vec<String> = peers
        .into_iter()
        .filter_map(|(mut ctl, mut child)| quit_peer(&mut ctl, &mut child).err())
        .map(|e| e.to_string())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; ").into())
    }
}

/// Starts this program as the peer of contender `name`, with the handles
/// already given to `process`, the extra arguments `args` and a control
/// connection; returns the parent end of the control connection and the
/// child.
pub fn spawn_peer(name: &str, process: Process, args: &[&str]) -> Result<(Connection, Child)> {
    let (ctl, ctl_peer) = ipc_pipe::duplex()?;
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--peer").arg(name).args(args);
    let child = process.pass("ctl", &ctl_peer)?.exec(command)?;
    Ok((ctl, child))
}

/// The peer's loop: answers benchmarks over `link` as the control
/// connection asks, until told to quit or the parent goes away.
pub fn serve<L: Link>(mut link: L) -> Result {
    let mut ctl: Connection = inherited("ctl")?;
    serve_runs(&mut ctl, |_, run| {
        affinity::pinned(run.cpu, || {
            answer(&mut link, run.bench, run.warmup, run.count)
        })
    })
}
