//! The Python contenders, each a script in `python/` between a Python
//! parent and its `multiprocessing.Process` child:
//!
//! - `pipe_bench.py`: `multiprocessing.Pipe()` with `send_bytes` /
//!   `recv_bytes`, and `send` / `recv` of a small dict;
//! - `socket_bench.py`: `multiprocessing.connection.Listener` / `Client`
//!   with an authkey, over a Unix socket and TCP;
//! - `shm_bench.py`: `multiprocessing.Lock`, `Value('Q')` with its lock,
//!   `multiprocessing.shared_memory.SharedMemory`, and a ping-pong over
//!   two `multiprocessing.Semaphore`s;
//! - `queue_bench.py`: `multiprocessing.Queue()` with `put` / `get` of
//!   `bytes`;
//! - `large_bench.py`: large items in a pool of 4
//!   `multiprocessing.shared_memory.SharedMemory` blocks of each size,
//!   whose indices travel on `multiprocessing.Queue()`s;
//! - `start_bench.py`: `multiprocessing.get_context(method).Process`
//!   started with each of `spawn`, `forkserver` and `fork`;
//! - `pool_bench.py`: `multiprocessing.Pool(processes).map`;
//! - `broker_bench.py`: a `queue.Queue` served by a `BaseManager`.
//!
//! A script runs in `--serve` mode: it reads one command a line on stdin
//! (`pingpong SIZE WARMUP COUNT CPU`, `throughput SIZE COUNT CPU` for the
//! pipe, and `pickle-dict WARMUP COUNT CPU` for its dict round trip; the
//! same with the transport, `unix` or `tcp`, after the command
//! word, and `connect WARMUP COUNT CPU`, for sockets; `lock COUNT`,
//! `increments PROCS COUNT CPU OTHER_CPU`, `bandwidth SIZE COUNT`,
//! `sem WARMUP COUNT CPU OTHER_CPU` for shared memory and semaphores;
//! `throughput SIZE COUNT PRODUCERS` and
//! `pingpong SIZE WARMUP COUNT CPU OTHER_CPU` for the queue;
//! `throughput SIZE COUNT PRODUCERS` for large items;
//! `start METHOD WARMUP COUNT` for process starts; `map-square PROCESSES
//! TASKS COUNT` and `map-busy PROCESSES TASKS MS COUNT` for the pool;
//! `quit`; CPU is the one to pin both processes to, or -1) and answers
//! each with one JSON line in the form of a [`Sample`].

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use super::{Contender, Entry};
use crate::bench::{Benchmark, Kind, Result, Sample, Via, BUSY, POOL_WORKERS};

/// Name of the Pipe contender.
pub const NAME: &str = "python Pipe";

/// Name of the Listener / Client contender.
pub const SOCKET: &str = "python Listener/Client";

/// Name of the shared-memory contender.
pub const SHM: &str = "python shm";

/// Name of the Queue contender.
pub const QUEUE: &str = "python Queue";

/// Name of the `BaseManager` queue contender.
pub const BROKER: &str = "python BaseManager queue";

/// Name of the process start contender.
pub const START: &str = "python Process";

/// Name of the Pool contender.
pub const POOL: &str = "python Pool";

/// Name of the large-item contender: Python's idiom for large items,
/// `SharedMemory` blocks whose names travel on a `Queue`.
pub const LARGE: &str = "python SharedMemory + Queue";

/// The registry entry of the process start contender.
pub fn start_entry() -> Entry {
    Entry {
        name: START,
        about: "CPython `ctx = multiprocessing.get_context(method)` for the benchmark's start \
                method; `a, b = ctx.Pipe()` (untimed), then timed from \
                `ctx.Process(target=f, args=(b,)).start()` to `a.recv_bytes()` of the one \
                byte `f` sends; then `join()` (untimed). The forkserver's server is \
                started by the calibration runs, before any measurement",
        start: || start("start_bench.py"),
        peer: None,
        runs: |b| b.kind == Kind::Start,
    }
}

/// The registry entry of the Pool contender.
pub fn pool_entry() -> Entry {
    Entry {
        name: POOL,
        about: "CPython `multiprocessing.Pool(2)` (default start method: fork up to \
                Python 3.13), made before the first measurement and kept; one measurement \
                is `count` calls of `pool.map(f, range(n))` (default chunksize), `f` \
                squaring its argument or spinning until `time.thread_time_ns()` has \
                advanced 5 ms",
        start: || start("pool_bench.py"),
        peer: None,
        runs: |b| b.via == Via::Pool,
    }
}

/// The registry entry of the `BaseManager` queue contender.
pub fn broker_entry() -> Entry {
    Entry {
        name: BROKER,
        about: "CPython `multiprocessing.managers.BaseManager` serving a `queue.Queue` on a \
                Unix socket with an authkey (Python's queue between machines); the parent \
                `put`s `bytes` through its proxy, a `multiprocessing.Process` client of the \
                same manager `get`s them",
        start: || start("broker_bench.py"),
        peer: None,
        runs: |b| matches!(b.via, Via::Broker | Via::BrokerTcp | Via::Broker4),
    }
}

/// The registry entry of the large-item contender.
pub fn large_entry() -> Entry {
    Entry {
        name: LARGE,
        about: "CPython's idiom for large items: 4 `SharedMemory` blocks of the item size \
                and two `multiprocessing.Queue()`s of block indices, `free` and `data`; the \
                producer `free.get()`s an index, writes the payload with \
                `shm.buf[:size] = payload` and `data.put`s the index; the consumer \
                `data.get()`s it, checks the block's length and stamps through `shm.buf` \
                and `free.put`s it back (2/2: two producer and two consumer processes)",
        start: || start("large_bench.py"),
        peer: None,
        runs: super::in_place::large,
    }
}

/// The registry entry of the Queue contender.
pub fn queue_entry() -> Entry {
    Entry {
        name: QUEUE,
        about: "CPython `multiprocessing.Queue()`, `put` / `get` of `bytes` objects between \
                `multiprocessing.Process` producers and consumers (ping-pong: two queues)",
        start: || start("queue_bench.py"),
        peer: None,
        runs: |b| matches!(b.via, Via::Queue | Via::Queue2 | Via::AsyncQueue),
    }
}

/// The registry entry of the contender.
pub fn entry() -> Entry {
    Entry {
        name: NAME,
        about: "CPython `multiprocessing.Pipe()` (default buffers), `send_bytes` / \
                `recv_bytes`, parent and a `multiprocessing.Process` child; the dict \
                round trip: the parent `conn.send(d)`s the dict and `conn.recv()`s it \
                back, the child echoes with `conn.send(conn.recv())`",
        start: || start("pipe_bench.py"),
        peer: None,
        // Python has no async `Pipe`: the blocking one is the async
        // ping-pong's Python reference.
        runs: |b| super::pipe_only(b) || matches!(b.via, Via::AsyncPipe | Via::PickleDict),
    }
}

/// The registry entry of the Listener / Client contender.
pub fn socket_entry() -> Entry {
    Entry {
        name: SOCKET,
        about: "CPython `multiprocessing.connection.Listener` / `Client` with an authkey, \
                `send_bytes` / `recv_bytes`, parent and a `multiprocessing.Process` child \
                (the listener); connect: `Client(address, authkey=...)`",
        start: || start("socket_bench.py"),
        peer: None,
        runs: |b| {
            matches!(b.via, Via::Unix | Via::Tcp) && (b.via == Via::Unix || b.kind != Kind::Connect)
        },
    }
}

/// The registry entry of the shared-memory contender.
pub fn shm_entry() -> Entry {
    Entry {
        name: SHM,
        about: "CPython `multiprocessing`: `Lock()` acquire + release; `Value('Q', 0)` with \
                `with v.get_lock(): v.value += 1` in the parent or the parent and a child; \
                64 MiB `SharedMemory`, `buf[:] = data` in the parent and `bytes(buf)` in \
                the child; wake-up ping-pong: two `Semaphore(0)`, each side `release()`s \
                the other's and blocks in `acquire()` on its own, the parent and the child \
                on two CPUs",
        start: || start("shm_bench.py"),
        peer: None,
        // Python has no awaitable semaphore: its blocking one is the
        // wake-up ping-pong's reference.
        runs: |b| matches!(b.via, Via::Shm | Via::AsyncWake),
    }
}

/// The benchmark script `name`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

fn start(name: &'static str) -> Result<Option<Box<dyn Contender>>> {
    let spawned = Command::new("python3")
        .arg(script(name))
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("python3 not found: the Python contender is skipped");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut python = Python {
        name,
        child,
        stdin,
        stdout,
        version: String::new(),
    };
    let hello: serde_json::Value = serde_json::from_str(&python.line()?)?;
    python.version = hello["python"].as_str().unwrap_or("?").to_owned();
    Ok(Some(Box::new(python)))
}

/// The running script.
struct Python {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
}

impl Python {
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(format!("{} exited", self.name).into());
        }
        Ok(line)
    }
}

impl Contender for Python {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        let size = bench.size;
        let cpu = cpu.map_or(-1, |c| c as i64);
        let warmup = bench.warmup(count);
        let via = match bench.via {
            Via::Unix => " unix",
            Via::Tcp => " tcp",
            _ => "",
        };
        let other = usize::try_from(cpu)
            .ok()
            .and_then(crate::affinity::other_cpu)
            .map_or(-1, |c| c as i64);
        let method = match bench.via {
            Via::Spawn => "spawn",
            Via::Forkserver => "forkserver",
            Via::Fork => "fork",
            _ => "",
        };
        match (bench.via, bench.kind) {
            (Via::Queue | Via::Queue2 | Via::AsyncQueue, Kind::PingPong) => {
                writeln!(self.stdin, "pingpong {size} {warmup} {count} {cpu} {other}")?
            }
            (Via::Broker | Via::BrokerTcp | Via::Broker4, _) => {
                let transport = if bench.via == Via::BrokerTcp {
                    "tcp"
                } else {
                    "unix"
                };
                let producers = if bench.via == Via::Broker4 { 4 } else { 1 };
                writeln!(
                    self.stdin,
                    "throughput {transport} {size} {count} {producers}"
                )?
            }
            (Via::PickleDict, Kind::PingPong) => {
                writeln!(self.stdin, "pickle-dict {warmup} {count} {cpu}")?
            }
            (Via::AsyncWake, Kind::PingPong) => {
                writeln!(self.stdin, "sem {warmup} {count} {cpu} {other}")?
            }
            (Via::Queue | Via::Queue2 | Via::AsyncQueue | Via::Large | Via::Large2, _) => {
                let procs = if matches!(bench.via, Via::Queue2 | Via::Large2) {
                    2
                } else {
                    1
                };
                writeln!(self.stdin, "throughput {size} {count} {procs}")?
            }
            (_, kind) => match kind {
                Kind::PingPong => {
                    writeln!(self.stdin, "pingpong{via} {size} {warmup} {count} {cpu}")?
                }
                Kind::Throughput => writeln!(self.stdin, "throughput{via} {size} {count} {cpu}")?,
                Kind::Connect => writeln!(self.stdin, "connect {warmup} {count} {cpu}")?,
                Kind::LockUnlock => writeln!(self.stdin, "lock {count}")?,
                Kind::Increments => {
                    writeln!(self.stdin, "increments {size} {count} {cpu} {other}")?
                }
                Kind::Bandwidth => writeln!(self.stdin, "bandwidth {size} {count}")?,
                Kind::Start => writeln!(self.stdin, "start {method} {warmup} {count}")?,
                Kind::MapTrivial => {
                    writeln!(self.stdin, "map-square {POOL_WORKERS} {size} {count}")?
                }
                Kind::MapBusy => writeln!(
                    self.stdin,
                    "map-busy {POOL_WORKERS} {size} {} {count}",
                    BUSY.as_millis()
                )?,
            },
        }
        self.stdin.flush()?;
        let line = self.line()?;
        serde_json::from_str(&line).map_err(|e| format!("{} said {line:?}: {e}", self.name).into())
    }

    fn describe(&self) -> Option<String> {
        Some(format!("Python {}", self.version))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        writeln!(self.stdin, "quit")?;
        self.stdin.flush()?;
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("{} exited with {status}", self.name).into())
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        self.child.wait()?;
        Err(format!("{} did not exit; killed", self.name).into())
    }
}
