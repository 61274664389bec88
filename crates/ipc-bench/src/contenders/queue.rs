//! Queue contenders: `ipc_queue::Queue` on its bytes path (`put_bytes` /
//! `get_bytes_into` a reused buffer) and, as the floor, the kernel's own
//! queue, a POSIX message queue (`mq_send` / `mq_receive`).
//!
//! Each contender makes two queues, `data` (towards the consumers) and
//! `back`, and starts three peer processes (`ipc-bench --peer NAME ROLE
//! ...`, roles 0, 1 and 2), each with its own control connection:
//!
//! - 1 producer / 1 consumer throughput (also as the blocking reference
//!   of the async queue benchmark): the parent puts COUNT items on
//!   `data`; peer 0 gets them all and puts an empty acknowledgement on
//!   `back`.
//! - 2 producers / 2 consumers: the parent and peer 1 produce (half the
//!   items each), each following its items with an empty sentinel; peers
//!   0 and 2 get items until they get a sentinel, then acknowledge on
//!   `back`. The time runs from just before the parent tells peer 1 to
//!   start (both producers then put at once) to the second
//!   acknowledgement, so it covers the first put to the last get.
//! - ping-pong: the parent puts an item on `data`, peer 0 (waiting in a
//!   get) gets it and puts it on `back`, where the parent waits; the full
//!   round trip is reported. The parent and peer 0 are pinned to two
//!   different CPUs, so each has a core.

use std::time::Instant;

use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;
use ipc_queue::Queue;
use nix::mqueue::{mq_open, mq_receive, mq_send, mq_unlink, MQ_OFlag, MqAttr, MqdT};
use nix::sys::stat::Mode;

use super::{check_len, serve_runs, spawn_peer, Contender, Control, Entry, Run};
use crate::affinity;
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// Name of the POSIX message queue contender (the floor).
pub const MQ: &str = "POSIX mq";

/// Name of the `ipc-queue` contender.
pub const NAME: &str = "ipc-queue bytes";

/// The byte capacity of the `ipc-queue` ring.
pub(crate) const CAPACITY: usize = 4 << 20;

/// The largest item of the queue benchmarks.
const MAX_ITEM: usize = 4 << 10;

/// Whether a contender of the queue benchmarks runs `bench`.
fn queue_bench(bench: Benchmark) -> bool {
    matches!(bench.via, Via::Queue | Via::Queue2)
}

/// The registry entry of [`NAME`].
pub fn entry() -> Entry {
    Entry {
        name: NAME,
        about: "`ipc_queue::Queue::builder().capacity(4 MiB).anonymous()`, `put_bytes` / \
                `get_bytes_into` a reused buffer; 2/2: two producer and two consumer \
                processes on one queue; also the blocking reference of the async queue",
        start: start_queue,
        peer: Some(peer_queue),
        runs: |b| queue_bench(b) || b.via == Via::AsyncQueue,
    }
}

/// The registry entry of [`MQ`].
pub fn mq_entry() -> Entry {
    Entry {
        name: MQ,
        about: "POSIX message queue (`mq_open` / `mq_send` / `mq_receive` through \
                `nix::mqueue`), blocking, message size 4 KiB, as many messages as \
                the system allows (see the notes)",
        start: start_mq,
        peer: Some(peer_mq),
        runs: queue_bench,
    }
}

/// The two operations the benchmarks need from a queue.
trait Ends {
    /// Puts one item, waiting for room.
    fn put(&self, item: &[u8]) -> Result;
    /// Gets one item into `buf`, waiting for one; returns its length.
    fn get(&self, buf: &mut [u8]) -> Result<usize>;
}

impl Ends for Queue<()> {
    fn put(&self, item: &[u8]) -> Result {
        Ok(self.put_bytes(item)?)
    }

    fn get(&self, buf: &mut [u8]) -> Result<usize> {
        Ok(self.get_bytes_into(buf)?)
    }
}

/// A POSIX message queue; the parent's copy unlinks it when dropped.
struct Mq {
    fd: MqdT,
    name: String,
    owner: bool,
}

impl Ends for Mq {
    fn put(&self, item: &[u8]) -> Result {
        Ok(mq_send(&self.fd, item, 0)?)
    }

    fn get(&self, buf: &mut [u8]) -> Result<usize> {
        let mut prio = 0;
        Ok(mq_receive(&self.fd, buf, &mut prio)?)
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        if self.owner {
            let _ = mq_unlink(self.name.as_str());
        }
    }
}

impl Mq {
    /// Creates queue `name` holding up to `maxmsg` messages of
    /// [`MAX_ITEM`] bytes.
    fn create(name: String, maxmsg: usize) -> nix::Result<Mq> {
        let attr = MqAttr::new(0, maxmsg as _, MAX_ITEM as _, 0);
        let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR;
        let fd = mq_open(
            name.as_str(),
            flags,
            Mode::S_IRUSR | Mode::S_IWUSR,
            Some(&attr),
        )?;
        Ok(Mq {
            fd,
            name,
            owner: true,
        })
    }

    /// Opens queue `name`, made by the parent.
    fn open(name: &str) -> Result<Mq> {
        let fd = mq_open(name, MQ_OFlag::O_RDWR, Mode::empty(), None)?;
        Ok(Mq {
            fd,
            name: name.to_owned(),
            owner: false,
        })
    }
}

/// The two queues.
struct Pair<Q> {
    data: Q,
    back: Q,
}

/// A queue contender: the parent's queues and the three peers.
struct QueueContender<Q: Ends> {
    q: Pair<Q>,
    peers: Vec<(Connection, Child)>,
    buf: Vec<u8>,
    out: Vec<u8>,
    note: Option<String>,
}

fn start_queue() -> Result<Option<Box<dyn Contender>>> {
    let make = || Queue::<()>::builder().capacity(CAPACITY).anonymous();
    let q = Pair {
        data: make()?,
        back: make()?,
    };
    let mut peers = Vec::new();
    for role in ["0", "1", "2"] {
        let process = Process::new()
            .pass("data", &q.data)?
            .pass("back", &q.back)?;
        peers.push(spawn_peer(NAME, process, &[role])?);
    }
    Ok(Some(Box::new(QueueContender::new(q, peers, None))))
}

fn peer_queue(args: &[String]) -> Result {
    let role = role(args)?;
    serve(
        role,
        Pair {
            data: inherited::<Queue<()>>("data")?,
            back: inherited::<Queue<()>>("back")?,
        },
    )
}

/// The most messages a queue may hold here: `/proc/sys/fs/mqueue/msg_max`.
fn msg_max() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn start_mq() -> Result<Option<Box<dyn Contender>>> {
    let pid = std::process::id();
    let max = msg_max().unwrap_or(10);
    // A privileged process may go past msg_max, within RLIMIT_MSGQUEUE;
    // take the largest depth that works, down to msg_max.
    let mut tried = Vec::new();
    let mut made = None;
    for maxmsg in [1024, 256, 64, max] {
        if maxmsg < max || tried.contains(&maxmsg) {
            continue;
        }
        tried.push(maxmsg);
        let data = Mq::create(format!("/ipc-bench-{pid}-data"), maxmsg);
        let back = Mq::create(format!("/ipc-bench-{pid}-back"), maxmsg);
        match (data, back) {
            (Ok(data), Ok(back)) => {
                made = Some((Pair { data, back }, maxmsg));
                break;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("{MQ}: mq_open with {maxmsg} messages: {e}");
            }
        }
    }
    let Some((q, maxmsg)) = made else {
        eprintln!("{MQ}: no message queue could be made (msg_max {max}); skipped");
        return Ok(None);
    };
    let mut peers = Vec::new();
    for role in ["0", "1", "2"] {
        let args = [role, q.data.name.as_str(), q.back.name.as_str()];
        peers.push(spawn_peer(MQ, Process::new(), &args)?);
    }
    let note = format!(
        "queues of {maxmsg} messages of {MAX_ITEM} B (/proc/sys/fs/mqueue/msg_max is {max}, \
         msgsize_max {})",
        std::fs::read_to_string("/proc/sys/fs/mqueue/msgsize_max")
            .map_or("?".to_owned(), |s| s.trim().to_owned())
    );
    Ok(Some(Box::new(QueueContender::new(q, peers, Some(note)))))
}

fn peer_mq(args: &[String]) -> Result {
    let role = role(args)?;
    let [_, data, back] = args else {
        return Err("usage: --peer 'POSIX mq' ROLE DATA BACK".into());
    };
    serve(
        role,
        Pair {
            data: Mq::open(data)?,
            back: Mq::open(back)?,
        },
    )
}

fn role(args: &[String]) -> Result<usize> {
    Ok(args.first().ok_or("a queue peer needs a role")?.parse()?)
}

/// A peer's loop: plays `role` in the benchmarks the control connection
/// asks for, until told to quit or the parent goes away.
fn serve<Q: Ends>(role: usize, q: Pair<Q>) -> Result {
    let mut ctl: Connection = inherited("ctl")?;
    let mut buf = vec![0u8; MAX_ITEM];
    let out = vec![0xa5u8; MAX_ITEM];
    serve_runs(&mut ctl, |_, run| {
        let Run {
            bench,
            warmup,
            count,
            cpu,
        } = run;
        affinity::pinned(cpu, || {
            let size = bench.size;
            match (bench.kind, bench.via, role) {
                (Kind::PingPong, _, 0) => {
                    for _ in 0..warmup + count {
                        let n = q.data.get(&mut buf)?;
                        check_len(n, size)?;
                        q.back.put(&buf[..n])?;
                    }
                    Ok(())
                }
                (Kind::Throughput, Via::Queue | Via::AsyncQueue, 0) => {
                    for _ in 0..count {
                        check_len(q.data.get(&mut buf)?, size)?;
                    }
                    q.back.put(&[])
                }
                (Kind::Throughput, Via::Queue2, 1) => {
                    for _ in 0..count {
                        q.data.put(&out[..size])?;
                    }
                    q.data.put(&[])
                }
                (Kind::Throughput, Via::Queue2, 0 | 2) => {
                    loop {
                        match q.data.get(&mut buf)? {
                            0 => break,
                            n => check_len(n, size)?,
                        }
                    }
                    q.back.put(&[])
                }
                _ => Err(format!("queue peer {role} cannot run {bench}").into()),
            }
        })
    })
}

impl<Q: Ends> QueueContender<Q> {
    fn new(q: Pair<Q>, peers: Vec<(Connection, Child)>, note: Option<String>) -> Self {
        QueueContender {
            q,
            peers,
            buf: vec![0u8; MAX_ITEM],
            out: vec![0xa5u8; MAX_ITEM],
            note,
        }
    }

    fn tell(&mut self, peer: usize, bench: Benchmark, warmup: usize, count: usize) -> Result {
        let cpu = None;
        self.tell_pinned(peer, bench, warmup, count, cpu)
    }

    fn tell_pinned(
        &mut self,
        peer: usize,
        bench: Benchmark,
        warmup: usize,
        count: usize,
        cpu: Option<usize>,
    ) -> Result {
        self.peers[peer].0.send(&Control::Run {
            bench,
            warmup,
            count,
            cpu,
        })?;
        Ok(())
    }

    fn ping_pong(&mut self, bench: Benchmark, count: usize) -> Result<Sample> {
        let size = bench.size;
        let (q, buf, out) = (&self.q, &mut self.buf, &self.out[..size]);
        for _ in 0..bench.warmup(count) {
            q.data.put(out)?;
            check_len(q.back.get(buf)?, size)?;
        }
        let mut rtts = vec![0u64; count];
        let start = Instant::now();
        let mut last = start;
        for rtt in rtts.iter_mut() {
            q.data.put(out)?;
            let got = q.back.get(buf)?;
            let now = Instant::now();
            *rtt = now.duration_since(last).as_nanos() as u64;
            last = now;
            check_len(got, size)?;
        }
        Ok(Sample::from_round_trips(&mut rtts, last - start))
    }
}

impl<Q: Ends> Contender for QueueContender<Q> {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        let size = bench.size;
        match (bench.kind, bench.via) {
            (Kind::PingPong, _) => {
                let other = super::peer_cpu(bench, cpu);
                self.tell_pinned(0, bench, bench.warmup(count), count, other)?;
                affinity::pinned(cpu, || self.ping_pong(bench, count))
            }
            (Kind::Throughput, Via::Queue | Via::AsyncQueue) => {
                self.tell(0, bench, 0, count)?;
                let start = Instant::now();
                for _ in 0..count {
                    self.q.data.put(&self.out[..size])?;
                }
                check_len(self.q.back.get(&mut self.buf)?, 0)?;
                Ok(Sample::Throughput {
                    messages: count,
                    size,
                    elapsed_ns: start.elapsed().as_nanos() as f64,
                })
            }
            (Kind::Throughput, Via::Queue2) => {
                let theirs = count / 2;
                self.tell(0, bench, 0, 0)?;
                self.tell(2, bench, 0, 0)?;
                let start = Instant::now();
                self.tell(1, bench, 0, theirs)?;
                for _ in 0..count - theirs {
                    self.q.data.put(&self.out[..size])?;
                }
                self.q.data.put(&[])?;
                for _ in 0..2 {
                    check_len(self.q.back.get(&mut self.buf)?, 0)?;
                }
                Ok(Sample::Throughput {
                    messages: count,
                    size,
                    elapsed_ns: start.elapsed().as_nanos() as f64,
                })
            }
            _ => Err(format!("{bench} is not a queue benchmark").into()),
        }
    }

    fn describe(&self) -> Option<String> {
        self.note.clone()
    }

    fn finish(self: Box<Self>) -> Result<()> {
        super::quit_peers(self.peers)
    }
}
