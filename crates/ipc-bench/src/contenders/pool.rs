//! Pool contenders: `map` of a trivial task and of a CPU-bound one over
//! `ipc-pool`'s `Pool`, beside their in-process floor (the same map over
//! threads).
//!
//! The pool is made when the contender starts, outside every timed
//! region, and kept for the whole run; one "message" is one map call, the
//! Python rule picks the chunksize on every side. The CPU-bound task spins
//! until its thread has used [`BUSY`] of CPU time (`CLOCK_THREAD_CPUTIME_ID`,
//! which Python's `time.thread_time_ns` reads too), so a worker that loses
//! its CPU to another process takes longer, as real work would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipc_pool::Pool;
use nix::time::{clock_gettime, ClockId};

use super::{Contender, Entry};
use crate::bench::{python_chunksize, Benchmark, Kind, Result, Sample, Via, BUSY, POOL_WORKERS};

/// Name of the floor.
pub const THREADS: &str = "std threads (in-process)";

/// Name of `ipc-pool`'s contender.
pub const POOL: &str = "ipc-pool Pool";

fn maps(bench: Benchmark) -> bool {
    bench.via == Via::Pool && matches!(bench.kind, Kind::MapTrivial | Kind::MapBusy)
}

/// The registry entry of the floor.
pub fn threads_entry() -> Entry {
    Entry {
        name: THREADS,
        about: "the floor, in one process: the same tasks over 2 scoped threads started \
                by each map, which take chunks of Python's chunksize in turn and whose \
                results are put back in order",
        start: || Ok(Some(Box::new(Threads))),
        peer: None,
        runs: maps,
    }
}

/// The registry entry of `ipc-pool`'s contender.
pub fn entry() -> Entry {
    Entry {
        name: POOL,
        about: "`ipc_pool::Pool::new(2)`, made once when the contender starts; one \
                measurement is `count` calls of `pool.map(entry!(f), 0..n)` (default \
                chunksize, Python's rule), `f` a `u64` squared or a 5 ms spin on the \
                thread's CPU clock",
        start: || Ok(Some(Box::new(Ours(Pool::new(POOL_WORKERS)?)))),
        peer: None,
        runs: maps,
    }
}

/// The trivial task.
pub fn square(x: u64) -> u64 {
    x * x
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("CLOCK_THREAD_CPUTIME_ID");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

/// The CPU-bound task: spins until this thread has used [`BUSY`] of CPU,
/// and gives back its item.
pub fn busy(x: u64) -> u64 {
    let end = thread_cpu() + BUSY;
    while thread_cpu() < end {
        std::hint::spin_loop();
    }
    x
}

/// The function of a map benchmark.
fn task(bench: Benchmark) -> Result<fn(u64) -> u64> {
    match bench.kind {
        Kind::MapTrivial => Ok(square),
        Kind::MapBusy => Ok(busy),
        _ => Err(format!("not a map benchmark: {bench}").into()),
    }
}

/// Checks a map's results.
fn check(bench: Benchmark, f: fn(u64) -> u64, results: &[u64]) -> Result {
    let n = bench.size as u64;
    let right = results.len() == bench.size && (n == 0 || results[bench.size - 1] == f(n - 1));
    if right {
        Ok(())
    } else {
        Err(format!("map gave {} results, wrong ones", results.len()).into())
    }
}

/// A sample of `count` map calls of `bench` in `elapsed`.
fn maps_sample(bench: Benchmark, count: usize, elapsed: Duration) -> Sample {
    Sample::Throughput {
        messages: bench.size * count,
        size: 0,
        elapsed_ns: elapsed.as_nanos() as f64,
    }
}

/// The floor.
struct Threads;

impl Threads {
    fn map(f: fn(u64) -> u64, n: usize) -> Vec<u64> {
        let chunk = python_chunksize(n, POOL_WORKERS);
        let chunks = n.div_ceil(chunk);
        let next = AtomicUsize::new(0);
        let done = Mutex::new(Vec::with_capacity(chunks));
        std::thread::scope(|s| {
            for _ in 0..POOL_WORKERS {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks {
                        break;
                    }
                    let range = (i * chunk) as u64..((i + 1) * chunk).min(n) as u64;
                    let results: Vec<u64> = range.map(f).collect();
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, results));
                });
            }
        });
        let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
        done.sort_unstable_by_key(|(i, _)| *i);
        done.into_iter().flat_map(|(_, r)| r).collect()
    }
}

impl Contender for Threads {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        let f = task(bench)?;
        let start = Instant::now();
        let mut last = Vec::new();
        for _ in 0..count {
            last = std::hint::black_box(Threads::map(f, bench.size));
        }
        let elapsed = start.elapsed();
        check(bench, f, &last)?;
        Ok(maps_sample(bench, count, elapsed))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// `ipc-pool`'s contender.
struct Ours(Pool);

impl Contender for Ours {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        let f = task(bench)?;
        // One entry per function: `entry!` registers it where it appears.
        let entry = match bench.kind {
            Kind::MapTrivial => ipc_core::entry!(square),
            _ => ipc_core::entry!(busy),
        };
        let pool = &self.0;
        let n = bench.size as u64;
        let start = Instant::now();
        let mut last = Vec::new();
        for _ in 0..count {
            last = pool.map(entry, 0..n)?;
        }
        let elapsed = start.elapsed();
        check(bench, f, &last)?;
        Ok(maps_sample(bench, count, elapsed))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        // Dropping the pool stops its workers.
        drop(self.0);
        Ok(())
    }
}
