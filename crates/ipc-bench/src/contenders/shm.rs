//! Shared-memory contenders: `ipc-shm`'s locks, a locked `Value<u64>`
//! counter, and 64 MiB written by one process and read by another through
//! a `SharedMemory` and an `Array<u8>`; with their in-process floors, a
//! `std::sync::Mutex` (lock + unlock, locked increments from one thread or
//! two) and `memcpy` (64 MiB copied into a buffer and out again).
//!
//! Lock + unlock runs in the parent alone. Locked increments from one
//! process run in the parent; from two, in the parent and its peer at the
//! same time (pinned to two different CPUs, see `affinity`), the parent
//! timing from its start until the peer reports it is done. Write + read: the parent copies 64 MiB from a local buffer
//! into the segment, tells the peer over the control connection, the peer
//! copies the segment into its own local buffer and answers; one such pass
//! is one "message". The segment and both local buffers are touched once
//! when the contender starts, so no pass pays tmpfs first-touch faults.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;
use ipc_shm::{Array, Lock, LockError, LockResult, SharedMemory, Value};

use super::{quit_peer, serve_runs, spawn_peer, Contender, Control, Entry, Run};
use crate::affinity;
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// Name of the lock floor.
pub const MUTEX: &str = "std Mutex (in-process)";
/// Name of the bandwidth floor.
pub const MEMCPY: &str = "memcpy (in-process)";
/// Name of the lock and counter contender.
pub const VALUE: &str = "ipc-shm Lock / Value<u64>";
/// Name of the `SharedMemory` bandwidth contender.
pub const SHM: &str = "ipc-shm SharedMemory";
/// Name of the `Array<u8>` bandwidth contender.
pub const ARRAY: &str = "ipc-shm Array<u8>";

/// The size of the write + read benchmark.
const BANDWIDTH_SIZE: usize = 64 << 20;

fn locks(bench: Benchmark) -> bool {
    bench.via == Via::Shm && matches!(bench.kind, Kind::LockUnlock | Kind::Increments)
}

fn bandwidth(bench: Benchmark) -> bool {
    bench.via == Via::Shm && bench.kind == Kind::Bandwidth
}

/// The registry entry of the lock floor.
pub fn mutex_entry() -> Entry {
    Entry {
        name: MUTEX,
        about: "the lock floor, in one process: a `std::sync::Mutex<u64>` locked and \
                unlocked, or incremented under its lock from one thread or two",
        start: || Ok(Some(Box::new(StdMutex(Arc::new(Mutex::new(0)))))),
        peer: None,
        runs: locks,
    }
}

/// The registry entry of the bandwidth floor.
pub fn memcpy_entry() -> Entry {
    Entry {
        name: MEMCPY,
        about: "the bandwidth floor, in one process: 64 MiB copied from a local buffer \
                into a second one, then into a third (two `memcpy`s, as a write + read)",
        start: || {
            Ok(Some(Box::new(Memcpy {
                src: vec![0xa5; BANDWIDTH_SIZE],
                mid: vec![1; BANDWIDTH_SIZE],
                dst: vec![1; BANDWIDTH_SIZE],
            })))
        },
        peer: None,
        runs: bandwidth,
    }
}

/// The registry entry of the lock and counter contender.
pub fn value_entry() -> Entry {
    Entry {
        name: VALUE,
        about: "lock + unlock: `ipc_shm::Lock::lock()` and dropping the guard; \
                increments: `*value.lock()? += 1` on a `Value<u64>` (an anonymous segment \
                passed to the peer with `Process::pass`), in the parent, or in the parent \
                and the peer at once",
        start: start_value,
        peer: Some(|_| peer(Segment::Value(inherited("value")?))),
        runs: locks,
    }
}

/// The registry entry of the `SharedMemory` contender.
pub fn shared_memory_entry() -> Entry {
    Entry {
        name: SHM,
        about: "a 64 MiB anonymous `SharedMemory`: the parent `write_at`s it from a local \
                buffer, the peer `read_at`s it all into its own buffer",
        start: || start_segment(SHM, Segment::Shm(SharedMemory::new(BANDWIDTH_SIZE)?)),
        peer: Some(|_| peer(Segment::Shm(inherited("segment")?))),
        runs: bandwidth,
    }
}

/// The registry entry of the `Array<u8>` contender.
pub fn array_entry() -> Entry {
    Entry {
        name: ARRAY,
        about: "a 64 MiB `Array<u8>`: the parent copies a local buffer into \
                `array.lock()?`, the peer copies `array.lock()?` into its own buffer",
        start: || start_segment(ARRAY, Segment::Array(Array::zeroed(BANDWIDTH_SIZE)?)),
        peer: Some(|_| peer(Segment::Array(inherited("segment")?))),
        runs: bandwidth,
    }
}

/// Takes a lock whose holder died as if it had not (nothing here leaves
/// data half-updated that matters to a benchmark).
fn locked<G>(result: LockResult<G>) -> Result<G> {
    match result {
        Ok(guard) => Ok(guard),
        Err(LockError::OwnerDied(died)) => Ok(died.into_guard()),
        Err(e) => Err(e.to_string().into()),
    }
}

/// A rate sample: `ops` operations of `size` bytes in `elapsed`.
fn ops(ops: usize, size: usize, elapsed: Duration) -> Sample {
    Sample::Throughput {
        messages: ops,
        size,
        elapsed_ns: elapsed.as_nanos() as f64,
    }
}

/// The lock floor.
struct StdMutex(Arc<Mutex<u64>>);

fn std_increments(m: &Mutex<u64>, count: usize) {
    for _ in 0..count {
        *m.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
}

impl Contender for StdMutex {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        let m = &self.0;
        let other = cpu.and_then(affinity::other_cpu);
        let start = Instant::now();
        match bench.kind {
            Kind::LockUnlock => {
                for _ in 0..count {
                    drop(std::hint::black_box(
                        m.lock().unwrap_or_else(|e| e.into_inner()),
                    ));
                }
            }
            Kind::Increments => {
                let others: Vec<_> = (1..bench.size)
                    .map(|_| {
                        let m = Arc::clone(m);
                        std::thread::spawn(move || {
                            affinity::pinned(other, || {
                                std_increments(&m, count);
                                Ok(())
                            })
                            .map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                affinity::pinned(cpu, || {
                    std_increments(m, count);
                    Ok(())
                })?;
                for t in others {
                    t.join().map_err(|_| "an incrementing thread panicked")??;
                }
            }
            _ => return Err(format!("{MUTEX} does not run {bench}").into()),
        }
        let procs = if bench.kind == Kind::Increments {
            bench.size
        } else {
            1
        };
        Ok(ops(count * procs, 0, start.elapsed()))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The bandwidth floor.
struct Memcpy {
    src: Vec<u8>,
    mid: Vec<u8>,
    dst: Vec<u8>,
}

impl Contender for Memcpy {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        let start = Instant::now();
        for i in 0..count {
            self.src[0] = i as u8;
            self.mid.copy_from_slice(std::hint::black_box(&self.src));
            self.dst.copy_from_slice(std::hint::black_box(&self.mid));
            if self.dst[0] != i as u8 {
                return Err("memcpy lost a byte".into());
            }
        }
        Ok(ops(count, bench.size, start.elapsed()))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The shared object of an ipc-shm contender, on either side.
enum Segment {
    Value(Value<u64>),
    Shm(SharedMemory),
    Array(Array<u8>),
}

impl Segment {
    fn increments(&self, count: usize) -> Result {
        let Segment::Value(v) = self else {
            return Err("not a Value".into());
        };
        for _ in 0..count {
            *locked(v.lock())? += 1;
        }
        Ok(())
    }

    fn write(&self, src: &[u8]) -> Result {
        match self {
            Segment::Shm(shm) => shm.write_at(0, src)?,
            Segment::Array(a) => locked(a.lock())?.copy_from_slice(src),
            Segment::Value(_) => return Err("not a segment".into()),
        }
        Ok(())
    }

    fn read(&self, dst: &mut [u8]) -> Result {
        match self {
            Segment::Shm(shm) => shm.read_at(0, dst)?,
            Segment::Array(a) => dst.copy_from_slice(&locked(a.lock())?),
            Segment::Value(_) => return Err("not a segment".into()),
        }
        Ok(())
    }
}

/// The parent's side of an ipc-shm contender.
struct Shm {
    ctl: Connection,
    child: Child,
    segment: Segment,
    /// The lock of the lock + unlock benchmark.
    lock: Option<Lock>,
    /// The local buffer the parent writes from.
    src: Vec<u8>,
}

fn start_value() -> Result<Option<Box<dyn Contender>>> {
    let value = Value::new(0u64)?;
    let (ctl, child) = spawn_peer(VALUE, Process::new().pass("value", &value)?, &[])?;
    Ok(Some(Box::new(Shm {
        ctl,
        child,
        segment: Segment::Value(value),
        lock: Some(Lock::new()?),
        src: Vec::new(),
    })))
}

fn start_segment(name: &str, segment: Segment) -> Result<Option<Box<dyn Contender>>> {
    let process = match &segment {
        Segment::Shm(shm) => Process::new().pass("segment", shm)?,
        Segment::Array(a) => Process::new().pass("segment", a)?,
        Segment::Value(_) => return Err("not a segment".into()),
    };
    // First touch of every page of the segment, before the peer starts.
    let src = vec![0xa5; BANDWIDTH_SIZE];
    segment.write(&src)?;
    let (ctl, child) = spawn_peer(name, process, &[])?;
    Ok(Some(Box::new(Shm {
        ctl,
        child,
        segment,
        lock: None,
        src,
    })))
}

impl Contender for Shm {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        let start;
        match bench.kind {
            Kind::LockUnlock => {
                let lock = self.lock.as_ref().ok_or("no lock")?;
                start = Instant::now();
                for _ in 0..count {
                    drop(std::hint::black_box(locked(lock.lock())?));
                }
            }
            Kind::Increments => {
                let peers = bench.size.saturating_sub(1);
                if peers > 1 {
                    return Err("at most 2 processes".into());
                }
                if peers == 1 {
                    self.ctl.send(&Control::Run {
                        bench,
                        warmup: 0,
                        count,
                        cpu: cpu.and_then(affinity::other_cpu),
                    })?;
                }
                start = Instant::now();
                affinity::pinned(cpu, || self.segment.increments(count))?;
                if peers == 1 {
                    let _done: u64 = self.ctl.recv()?;
                }
            }
            Kind::Bandwidth => {
                self.ctl.send(&Control::Run {
                    bench,
                    warmup: 0,
                    count,
                    cpu,
                })?;
                start = Instant::now();
                for i in 0..count {
                    self.src[0] = i as u8;
                    self.segment.write(&self.src)?;
                    self.ctl.send(&(i as u64))?;
                    let first: u64 = self.ctl.recv()?;
                    if first != u64::from(i as u8) {
                        return Err("the peer read something else".into());
                    }
                }
            }
            _ => return Err(format!("ipc-shm does not run {bench}").into()),
        }
        let elapsed = start.elapsed();
        let total = if bench.kind == Kind::Increments {
            count * bench.size
        } else {
            count
        };
        let size = if bench.kind == Kind::Bandwidth {
            bench.size
        } else {
            0
        };
        Ok(ops(total, size, elapsed))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        quit_peer(&mut self.ctl, &mut self.child)
    }
}

/// The peer of an ipc-shm contender: increments, or reads the segment
/// each time the parent says it wrote it.
fn peer(segment: Segment) -> Result {
    let mut ctl: Connection = inherited("ctl")?;
    let mut dst = match segment {
        Segment::Value(_) => Vec::new(),
        _ => vec![1u8; BANDWIDTH_SIZE],
    };
    serve_runs(
        &mut ctl,
        |ctl,
         Run {
             bench, count, cpu, ..
         }| {
            match bench.kind {
                Kind::Increments => {
                    affinity::pinned(cpu, || segment.increments(count))?;
                    ctl.send(&0u64)?;
                }
                Kind::Bandwidth => {
                    for _ in 0..count {
                        let _pass: u64 = ctl.recv()?;
                        segment.read(&mut dst)?;
                        ctl.send(&u64::from(dst[0]))?;
                    }
                }
                _ => return Err(format!("the ipc-shm peer does not run {bench}").into()),
            }
            Ok(())
        },
    )
}
