//! Large-item contenders: `ipc_queue::Queue` written and read in place
//! (`reserve` + fill + `commit`, `get_in_place` + look + release), the
//! same queue copying (`put_bytes` from the producer's buffer,
//! `get_bytes_into` the consumer's), and the floor: the producer writing
//! the payload once, a `memcpy` in one process.
//!
//! A consumer looks at what it gets the same way in every contender: it
//! checks the length and the first and last 8 bytes (a stamp the producer
//! wrote), so reading in place is not a copy in disguise and a copy is
//! not skipped.
//!
//! Roles, as in the queue benchmarks: 1/1, the parent produces and peer 0
//! consumes, then acknowledges on `back`; 2/2, the parent and peer 1
//! produce (half the items each, then an empty sentinel each), peers 0
//! and 2 consume until a sentinel and acknowledge.

use std::time::Instant;

use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;
use ipc_queue::Queue;

use super::{check_len, quit_peers, serve_runs, spawn_peer, Contender, Entry, Run};
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// Name of the floor.
pub const MEMCPY: &str = "memcpy once (in-process)";
/// Name of the in-place contender.
pub const IN_PLACE: &str = "ipc-queue in place";
/// Name of the copying contender.
pub const COPYING: &str = "ipc-queue copying";

/// The item sizes, each with a queue of its own.
pub(super) const SIZES: [usize; 3] = [64 << 10, 1 << 20, 16 << 20];
/// The largest item.
pub const MAX_ITEM: usize = 16 << 20;
/// How many items of its size a queue's ring holds (and iceoryx2's
/// subscriber buffer, and Python's ring of blocks). Deep enough that two
/// producers are not held up behind a consumer the scheduler set aside
/// while it holds an item: with 4, 2 / 2 at 1 MiB ran 0.88x the floor in
/// place, with 16 1.08x (medians of seven runs alternating the two;
/// BENCHMARKS.md).
pub(super) const ITEMS_IN_FLIGHT: usize = 16;
/// How many buffers the floor writes in turn. Fewer than a ring holds, so
/// the floor's memory is the warmer: 16 buffers of 1 MiB took the floor
/// from about 32 k to 17-21 k copies a second, and the floor is not to
/// fall with the contenders' depth.
const FLOOR_BUFFERS: usize = 4;

/// The ring of the queue for items of `size` bytes.
fn capacity(size: usize) -> usize {
    ITEMS_IN_FLIGHT * (size + 64)
}

/// The handle key of the queue for items of `size` bytes.
fn data_key(size: usize) -> String {
    format!("data-{size}")
}

/// Whether a contender of this module runs `bench`.
pub fn large(bench: Benchmark) -> bool {
    matches!(bench.via, Via::Large | Via::Large2) && bench.kind == Kind::Throughput
}

/// Whether `bench` is a large-item benchmark between one producer and one
/// consumer (for contenders that have no 2/2 setup).
pub fn large_one_to_one(bench: Benchmark) -> bool {
    large(bench) && bench.via == Via::Large
}

/// The registry entry of the floor.
pub fn memcpy_entry() -> Entry {
    Entry {
        name: MEMCPY,
        about: "the floor, in one process: the producer writing each item once, a \
                `copy_from_slice` of the payload into one of 4 buffers of its size in \
                turn (warmer memory than a ring of 16 items)",
        start: || {
            Ok(Some(Box::new(Memcpy {
                src: stamped(MAX_ITEM),
                dst: (0..FLOOR_BUFFERS).map(|_| vec![1; MAX_ITEM]).collect(),
            })))
        },
        peer: None,
        runs: large,
    }
}

/// The registry entry of the in-place contender.
pub fn in_place_entry() -> Entry {
    Entry {
        name: IN_PLACE,
        about: "`ipc_queue::Queue` (a ring of 16 items): the producer `reserve`s each item, \
                `copy_from_slice`s the payload into it and `commit`s; the consumer \
                `get_in_place`s it, checks its length and stamps where it lies and \
                releases it",
        start: || start(IN_PLACE),
        peer: Some(|args| peer(IN_PLACE, args)),
        runs: large,
    }
}

/// The registry entry of the copying contender.
pub fn copying_entry() -> Entry {
    Entry {
        name: COPYING,
        about: "`ipc_queue::Queue` (a ring of 16 items): `put_bytes` of the producer's buffer, \
                `get_bytes_into` the consumer's (a copy into the ring and one out of \
                it), the same checks",
        start: || start(COPYING),
        peer: Some(|args| peer(COPYING, args)),
        runs: large,
    }
}

/// A payload of `len` bytes whose first and last 8 bytes are the stamp.
pub(super) fn stamped(len: usize) -> Vec<u8> {
    let mut payload = vec![0xa5u8; len];
    stamp(&mut payload);
    payload
}

const STAMP: [u8; 8] = *b"in-place";

/// Writes the stamp at both ends of `payload` (a producer reusing one
/// buffer for every size restamps it for the size at hand).
pub(super) fn stamp(payload: &mut [u8]) {
    if payload.len() >= 16 {
        let end = payload.len() - 8;
        payload[..8].copy_from_slice(&STAMP);
        payload[end..].copy_from_slice(&STAMP);
    }
}

/// The consumers' look at an item: its length, and the stamps at its ends.
pub(super) fn check(item: &[u8], size: usize) -> Result {
    check_len(item.len(), size)?;
    if item.len() >= 16 && (item[..8] != STAMP || item[item.len() - 8..] != STAMP) {
        return Err("an item without its stamps".into());
    }
    Ok(())
}

/// The floor.
struct Memcpy {
    src: Vec<u8>,
    dst: Vec<Vec<u8>>,
}

impl Contender for Memcpy {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        let size = bench.size;
        stamp(&mut self.src[..size]);
        let start = Instant::now();
        for k in 0..count {
            let dst = &mut self.dst[k % FLOOR_BUFFERS];
            dst[..size].copy_from_slice(&self.src[..size]);
            std::hint::black_box(dst);
        }
        let elapsed = start.elapsed();
        check(&self.dst[0][..size], size)?;
        Ok(Sample::Throughput {
            messages: count,
            size,
            elapsed_ns: elapsed.as_nanos() as f64,
        })
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The two ways through the queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    InPlace,
    Copying,
}

impl Way {
    fn of(name: &str) -> Way {
        if name == IN_PLACE {
            Way::InPlace
        } else {
            Way::Copying
        }
    }
}

/// One process's end of the queues, with its buffers.
struct Ends {
    way: Way,
    /// A queue for each of [`SIZES`].
    data: Vec<Queue<()>>,
    back: Queue<()>,
    /// What a producer puts (the copying way's producer buffer).
    payload: Vec<u8>,
    /// Where the copying way's consumer gets into.
    buf: Vec<u8>,
}

impl Ends {
    fn new(way: Way, data: Vec<Queue<()>>, back: Queue<()>) -> Ends {
        Ends {
            way,
            data,
            back,
            payload: stamped(MAX_ITEM),
            buf: vec![0; MAX_ITEM],
        }
    }

    /// Puts an item of `size` bytes on the queue of items of `queue`
    /// bytes (`size` 0: a sentinel).
    fn put(&mut self, queue: usize, size: usize) -> Result {
        let data = queue_for(&self.data, queue)?;
        // The stamps of this size's item.
        stamp(&mut self.payload[..size]);
        let payload = &self.payload[..size];
        match self.way {
            Way::InPlace => {
                let mut room = data.reserve(size)?;
                room.copy_from_slice(payload);
                room.commit()?;
            }
            Way::Copying => data.put_bytes(payload)?,
        }
        Ok(())
    }

    /// Gets an item and looks at it; gives its length.
    fn get(&mut self, size: usize) -> Result<usize> {
        let data = queue_for(&self.data, size)?;
        match self.way {
            Way::InPlace => {
                let item = data.get_in_place()?;
                if !item.is_empty() {
                    check(&item, size)?;
                }
                Ok(item.len())
            }
            Way::Copying => {
                let n = data.get_bytes_into(&mut self.buf)?;
                if n != 0 {
                    check(&self.buf[..n], size)?;
                }
                Ok(n)
            }
        }
    }
}

/// The queue of `data` (one per [`SIZES`]) for items of `size` bytes.
fn queue_for(data: &[Queue<()>], size: usize) -> Result<&Queue<()>> {
    let i = SIZES
        .iter()
        .position(|&s| s == size)
        .ok_or_else(|| format!("no queue for items of {size} bytes"))?;
    Ok(&data[i])
}

/// A queue contender: the parent's ends and the three peers.
struct LargeContender {
    ends: Ends,
    peers: Vec<(Connection, Child)>,
}

fn start(name: &'static str) -> Result<Option<Box<dyn Contender>>> {
    let make = |size| Queue::<()>::builder().capacity(capacity(size)).anonymous();
    let data = SIZES
        .iter()
        .map(|&size| make(size))
        .collect::<ipc_core::Result<Vec<_>>>()?;
    let back = make(0)?;
    let mut peers = Vec::new();
    for role in ["0", "1", "2"] {
        let mut process = Process::new().pass("back", &back)?;
        for (queue, &size) in data.iter().zip(&SIZES) {
            process = process.pass(&data_key(size), queue)?;
        }
        peers.push(spawn_peer(name, process, &[role])?);
    }
    Ok(Some(Box::new(LargeContender {
        ends: Ends::new(Way::of(name), data, back),
        peers,
    })))
}

fn peer(name: &str, args: &[String]) -> Result {
    let role: usize = args.first().ok_or("a peer needs a role")?.parse()?;
    let data = SIZES
        .iter()
        .map(|&size| inherited(&data_key(size)))
        .collect::<ipc_core::Result<Vec<_>>>()?;
    let mut ends = Ends::new(Way::of(name), data, inherited("back")?);
    let mut ctl: Connection = inherited("ctl")?;
    serve_runs(&mut ctl, |_, run| {
        let Run { bench, count, .. } = run;
        let size = bench.size;
        match (bench.via, role) {
            (Via::Large, 0) => {
                for _ in 0..count {
                    check_len(ends.get(size)?, size)?;
                }
                Ok(ends.back.put_bytes(&[])?)
            }
            (Via::Large2, 1) => {
                for _ in 0..count {
                    ends.put(size, size)?;
                }
                ends.put(size, 0)
            }
            (Via::Large2, 0 | 2) => {
                while ends.get(size)? != 0 {}
                Ok(ends.back.put_bytes(&[])?)
            }
            _ => Err(format!("large-item peer {role} cannot run {bench}").into()),
        }
    })
}

impl LargeContender {
    fn tell(&mut self, peer: usize, bench: Benchmark, count: usize) -> Result {
        self.peers[peer].0.send(&super::Control::Run {
            bench,
            warmup: 0,
            count,
            cpu: None,
        })?;
        Ok(())
    }
}

impl Contender for LargeContender {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        let size = bench.size;
        let start = match bench.via {
            Via::Large => {
                self.tell(0, bench, count)?;
                let start = Instant::now();
                for _ in 0..count {
                    self.ends.put(size, size)?;
                }
                start
            }
            Via::Large2 => {
                let theirs = count / 2;
                self.tell(0, bench, 0)?;
                self.tell(2, bench, 0)?;
                let start = Instant::now();
                self.tell(1, bench, theirs)?;
                for _ in 0..count - theirs {
                    self.ends.put(size, size)?;
                }
                self.ends.put(size, 0)?;
                check_len(self.ends.back.get_bytes_into(&mut [])?, 0)?;
                start
            }
            _ => return Err(format!("{bench} is not a large-item benchmark").into()),
        };
        check_len(self.ends.back.get_bytes_into(&mut [])?, 0)?;
        Ok(Sample::Throughput {
            messages: count,
            size,
            elapsed_ns: start.elapsed().as_nanos() as f64,
        })
    }

    fn finish(self: Box<Self>) -> Result<()> {
        quit_peers(self.peers)
    }
}
