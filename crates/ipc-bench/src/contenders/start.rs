//! Process start latency: from the call that starts a child to the first
//! message received back from it, for `ipc-core`'s start methods and their
//! floor, `std::process::Command` running this program.
//!
//! Each contender starts its children from a peer process of its own (as
//! the Python contender starts them from its script's process), so what
//! is measured does not depend on what the harness process holds (a fork
//! copies the page tables of the 64 MiB buffers of the shared-memory
//! contenders, the pool's threads would make a fork unsound). On
//! [`Control::Run`] the peer makes `warmup + count` starts, each one:
//! create an `ipc_pipe::duplex()` (untimed), read the clock, start the
//! child with the other end, receive the one-byte message the child sends
//! on it, read the clock, then join the child (untimed). It answers with
//! the times, and the parent makes the [`Sample`] of them. The forkserver
//! starts at the first start of the warmup.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_core::process::{inherited, Child, Process};
use ipc_core::spawn::{Entry as SpawnEntry, StartMethod};
use ipc_core::Connection;

use super::{quit_peer, serve_runs, spawn_peer, Contender, Control, Entry, Run};
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// Name of the floor.
pub const EXEC: &str = "std Command (exec)";

/// Name of `ipc-core`'s start methods.
pub const OURS: &str = "ipc-core Process";

/// The handle key of the end a child sends its message on.
const HELLO: &str = "hello";

/// The peer argument that makes a child of the floor: it writes one byte
/// to its stdout and exits.
const HELLO_ARG: &str = "hello";

/// Whether `bench` is a start benchmark.
fn starts(bench: Benchmark) -> bool {
    bench.kind == Kind::Start
}

/// The start benchmarks `ipc-core` has a method for.
fn ours_runs(bench: Benchmark) -> bool {
    starts(bench) && matches!(bench.via, Via::Spawn | Via::Forkserver | Via::Fork)
}

/// The registry entry of the floor.
pub fn exec_entry() -> Entry {
    Entry {
        name: EXEC,
        about: "the floor of every start method: `std::process::Command` runs this program \
                again (`/proc/self/exe --peer ...`, stdout piped); it writes one byte to \
                stdout and exits; timed from the call to the byte read, then waited for. \
                Fork and forkserver skip the exec, so they can beat it",
        start: || start(EXEC),
        peer: Some(|args| match args.first().map(String::as_str) {
            Some(HELLO_ARG) => hello_stdout(),
            _ => serve(Method::Exec),
        }),
        runs: starts,
    }
}

/// The registry entry of `ipc-core`'s start methods.
pub fn ours_entry() -> Entry {
    Entry {
        name: OURS,
        about: "spawn and forkserver: `Process::new().pass(\"hello\", &end)?.start(method, \
                entry!(hello), &())`, the child takes the end with `inherited` and sends one \
                byte on it (the forkserver is started by the warmup); fork: \
                `Process::new().allow_threads().pass(\"hello\", &end)?.fork(|| \
                end.send_bytes(b\"x\"))`; the end is one of an `ipc_pipe::duplex()`, \
                made before the clock starts; timed from the call to the message \
                received, then joined",
        start: || start(OURS),
        peer: Some(|_| serve(Method::Ours)),
        runs: ours_runs,
    }
}

/// Who starts the children.
#[derive(Clone, Copy)]
enum Method {
    /// `std::process::Command`, the floor.
    Exec,
    /// `ipc-core`'s method for the benchmark's [`Via`].
    Ours,
}

fn start(name: &str) -> Result<Option<Box<dyn Contender>>> {
    let (ctl, child) = spawn_peer(name, Process::new(), &[])?;
    Ok(Some(Box::new(Starter { ctl, child })))
}

/// The parent's side: asks the peer to start children and collects the
/// times.
struct Starter {
    ctl: Connection,
    child: Child,
}

/// What the peer answers a run with: each timed start in nanoseconds, and
/// the wall time of the whole run (joins included) in nanoseconds.
type Times = (Vec<u64>, u64);

impl Contender for Starter {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        self.ctl.send(&Control::Run {
            bench,
            warmup: bench.warmup(count),
            count,
            cpu,
        })?;
        let (mut times, elapsed): Times = self.ctl.recv()?;
        if times.len() != count {
            return Err(format!("the peer timed {} starts of {count}", times.len()).into());
        }
        Ok(Sample::from_round_trips(
            &mut times,
            Duration::from_nanos(elapsed),
        ))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        quit_peer(&mut self.ctl, &mut self.child)
    }
}

/// The peer's loop: starts children as the control connection asks.
fn serve(method: Method) -> Result {
    let mut ctl: Connection = inherited("ctl")?;
    serve_runs(
        &mut ctl,
        |ctl,
         Run {
             bench,
             warmup,
             count,
             ..
         }| {
            let started = Instant::now();
            for _ in 0..warmup {
                start_one(method, bench.via)?;
            }
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                times.push(start_one(method, bench.via)?.as_nanos() as u64);
            }
            let times: Times = (times, started.elapsed().as_nanos() as u64);
            Ok(ctl.send(&times)?)
        },
    )
}

/// Starts one child and waits for its first message; returns the time
/// from the call to the message, having joined the child.
fn start_one(method: Method, via: Via) -> Result<Duration> {
    match method {
        Method::Exec => start_exec(),
        Method::Ours => start_ours(via),
    }
}

/// The floor: this program run by `std::process::Command`, heard from on
/// its stdout.
fn start_exec() -> Result<Duration> {
    let mut command = Command::new("/proc/self/exe");
    command
        .args(["--peer", EXEC, HELLO_ARG])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut byte = [0u8; 1];
    let begin = Instant::now();
    let mut child = command.spawn()?;
    child
        .stdout
        .as_mut()
        .ok_or("no stdout")?
        .read_exact(&mut byte)?;
    let took = begin.elapsed();
    let status = child.wait()?;
    if byte != *b"x" || !status.success() {
        return Err(format!("the floor's child sent {byte:?} and exited with {status}").into());
    }
    Ok(took)
}

/// The floor's child: one byte on stdout.
fn hello_stdout() -> Result {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(b"x")?;
    out.flush()?;
    Ok(())
}

/// The entry a spawned child runs: one message on the end it was given.
fn hello(_: ()) -> bool {
    inherited::<Connection>(HELLO)
        .and_then(|mut end| end.send_bytes(b"x"))
        .is_ok()
}

fn hello_entry() -> SpawnEntry<(), bool> {
    ipc_core::entry!(hello)
}

/// `ipc-core`'s start method for `via`.
fn start_ours(via: Via) -> Result<Duration> {
    let (mut ours, theirs) = ipc_pipe::duplex()?;
    let begin = Instant::now();
    match via {
        Via::Spawn | Via::Forkserver => {
            let method = match via {
                Via::Spawn => StartMethod::Spawn,
                _ => StartMethod::Forkserver,
            };
            let child = Process::new()
                .pass(HELLO, &theirs)?
                .start(method, hello_entry(), &())?;
            drop(theirs);
            let took = received(&mut ours, begin)?;
            if !child.join()? {
                return Err(format!("the {method:?} child could not send").into());
            }
            Ok(took)
        }
        Via::Fork => {
            let process = Process::new().allow_threads().pass(HELLO, &theirs)?;
            let mut end = theirs;
            // The closure, and the end it owns, are dropped in the parent
            // when `fork` returns.
            let mut child = process.fork(move || end.send_bytes(b"x"))?;
            let took = received(&mut ours, begin)?;
            let status = child.join()?;
            if !status.success() {
                return Err(format!("the forked child exited with {status}").into());
            }
            Ok(took)
        }
        _ => Err(format!("{OURS} has no start method for {via:?}").into()),
    }
}

/// Receives the child's message and gives the time since `begin`.
fn received(ours: &mut Connection, begin: Instant) -> Result<Duration> {
    let message = ours.recv_bytes()?;
    let took = begin.elapsed();
    if message != b"x" {
        return Err(format!("the child sent {message:?}").into());
    }
    Ok(took)
}
