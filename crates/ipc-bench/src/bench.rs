//! What is measured: the benchmarks, one measurement's result ([`Sample`]),
//! and the statistics taken over rounds.
//!
//! To add a benchmark of an existing kind, add it to [`Benchmark::all`].
//! A new kind needs a [`Kind`] variant, its sides in the contenders that
//! run it, a [`Sample`] shape if the existing ones do not fit, a command in
//! the Python script of its [`Via`], and a table layout in `report.rs`.
//! Which contenders run a benchmark, and which are its floor and its
//! Python reference, follows from its [`Via`] and kind (see
//! `contenders::floor` and each registry entry's `runs`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The error type of the harness: any error, with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The result type of the harness.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// The kinds of measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The parent sends a message, the peer sends one of the same size
    /// back; the time of each round trip is recorded.
    PingPong,
    /// The parent sends messages back to back, the peer receives them all
    /// and answers with one empty acknowledgement; the time from the first
    /// send to the acknowledgement is recorded.
    Throughput,
    /// The parent connects (and authenticates) to a listener in the peer,
    /// then closes; the time of each connection is recorded.
    Connect,
    /// Uncontended lock + unlock of a lock in the parent alone; the time
    /// per pair is reported.
    LockUnlock,
    /// `size` processes each add 1 to a shared counter under its lock
    /// `count` times; increments per second are reported.
    Increments,
    /// The parent writes `size` bytes of shared memory, the peer reads
    /// them all into a local buffer; one write + read is a "message".
    Bandwidth,
    /// A child process is started with the start method of the
    /// benchmark's [`Via`] and sends one message back; the time from the
    /// call that starts it to the receipt of that message is recorded (the
    /// child is then joined, untimed).
    Start,
    /// `map` of a trivial function (squaring a `u64`) over `size` items on
    /// a pool of [`POOL_WORKERS`] workers; one map call is a "message", and
    /// tasks per second are reported.
    MapTrivial,
    /// `map` over `size` items of a function that spins for [`BUSY`] of
    /// its thread's CPU time, on a pool of [`POOL_WORKERS`] workers; one
    /// measurement is one map call, compared with the ideal
    /// ([`Benchmark::ideal`]).
    MapBusy,
}

/// The workers of the pool benchmarks.
pub const POOL_WORKERS: usize = 2;

/// The CPU time each task of [`Kind::MapBusy`] spins for (on its
/// thread's CPU clock, in Rust and Python alike).
pub const BUSY: Duration = Duration::from_millis(5);

/// What a benchmark goes over: this also picks its contenders, its floor
/// and its Python reference (see `contenders::floor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// A pipe-like pair made before the peer starts (ipc-pipe and peers).
    Pipe,
    /// A Unix stream socket reached through a listener.
    Unix,
    /// A TCP connection on 127.0.0.1.
    Tcp,
    /// Shared memory and its locks.
    Shm,
    /// A queue between one producer and one consumer process (ping-pong:
    /// two queues, one each way).
    Queue,
    /// A queue between two producer and two consumer processes.
    Queue2,
    /// A pipe-like pair made before the peer starts, both ends awaited on
    /// tokio `current_thread` runtimes.
    AsyncPipe,
    /// A queue between one producer and one consumer process, both
    /// awaiting its puts and gets on tokio `current_thread` runtimes.
    AsyncQueue,
    /// Two process-shared semaphores, one each way, each process waiting
    /// on its own: blocked in a futex wait, or awaiting on a tokio
    /// `current_thread` runtime through `ipc-shm`'s watching thread. No
    /// payload crosses (size 0): it measures being woken.
    AsyncWake,
    /// A child started by re-executing the program (Python's `spawn`).
    Spawn,
    /// A child forked by a server process started earlier (Python's
    /// `forkserver`).
    Forkserver,
    /// A child forked from the caller (Python's `fork`).
    Fork,
    /// A pool of worker processes.
    Pool,
    /// A queue in a Redis stream (`ipc-broker` and its floor, or Python's
    /// `BaseManager` queue) between one producer and one consumer process,
    /// over a Unix socket to a private server.
    Broker,
    /// The same over TCP on 127.0.0.1.
    BrokerTcp,
    /// The same over a Unix socket between four producer and four consumer
    /// processes.
    Broker4,
    /// A queue of large items (64 KiB and more) between one producer and
    /// one consumer process: written and read in place, or copied in and
    /// out.
    Large,
    /// The same between two producer and two consumer processes.
    Large2,
    /// A pipe-like pair made before the peer starts, carrying a small dict
    /// pickled both ways: `Codec::Pickle` on the Rust ends,
    /// `Connection.send` / `recv` on the Python ones. The message is
    /// always the same dict (`contenders::pickle_dict::Job::example`), so
    /// the size is 0.
    PickleDict,
}

/// One benchmark: a kind, a message size and what it goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Benchmark {
    /// What is measured.
    pub kind: Kind,
    /// The payload of each message, in bytes (for [`Kind::Increments`],
    /// the number of processes incrementing; for the map kinds, the number
    /// of tasks per map call).
    pub size: usize,
    /// What it goes over.
    pub via: Via,
}

impl Benchmark {
    /// Every benchmark, in the order they run and are reported.
    pub fn all() -> Vec<Benchmark> {
        let b = |kind, size, via| Benchmark { kind, size, via };
        let mut all = vec![
            b(Kind::PingPong, 8, Via::Pipe),
            b(Kind::PingPong, 4 << 10, Via::Pipe),
            b(Kind::Throughput, 64, Via::Pipe),
            b(Kind::Throughput, 4 << 10, Via::Pipe),
            b(Kind::Throughput, 64 << 10, Via::Pipe),
            b(Kind::Throughput, 1 << 20, Via::Pipe),
            b(Kind::PingPong, 0, Via::PickleDict),
        ];
        for via in [Via::Unix, Via::Tcp] {
            all.extend([
                b(Kind::PingPong, 8, via),
                b(Kind::PingPong, 4 << 10, via),
                b(Kind::Throughput, 64 << 10, via),
                b(Kind::Throughput, 1 << 20, via),
            ]);
        }
        all.extend([
            b(Kind::Connect, 0, Via::Unix),
            b(Kind::LockUnlock, 0, Via::Shm),
            b(Kind::Increments, 1, Via::Shm),
            b(Kind::Increments, 2, Via::Shm),
            b(Kind::Bandwidth, 64 << 20, Via::Shm),
            b(Kind::Throughput, 64, Via::Queue),
            b(Kind::Throughput, 4 << 10, Via::Queue),
            b(Kind::Throughput, 64, Via::Queue2),
            b(Kind::Throughput, 4 << 10, Via::Queue2),
            b(Kind::PingPong, 64, Via::Queue),
            b(Kind::PingPong, 8, Via::AsyncPipe),
            b(Kind::Throughput, 64, Via::AsyncQueue),
            b(Kind::PingPong, 64, Via::AsyncQueue),
            b(Kind::PingPong, 0, Via::AsyncWake),
            b(Kind::Throughput, 64, Via::Broker),
            b(Kind::Throughput, 4 << 10, Via::Broker),
            b(Kind::Throughput, 64, Via::BrokerTcp),
            b(Kind::Throughput, 4 << 10, Via::BrokerTcp),
            b(Kind::Throughput, 64, Via::Broker4),
            b(Kind::Throughput, 4 << 10, Via::Broker4),
            b(Kind::Throughput, 64 << 10, Via::Large),
            b(Kind::Throughput, 1 << 20, Via::Large),
            b(Kind::Throughput, 16 << 20, Via::Large),
            b(Kind::Throughput, 64 << 10, Via::Large2),
            b(Kind::Throughput, 1 << 20, Via::Large2),
            b(Kind::Throughput, 16 << 20, Via::Large2),
            b(Kind::Start, 0, Via::Spawn),
            b(Kind::Start, 0, Via::Forkserver),
            b(Kind::Start, 0, Via::Fork),
            b(Kind::MapTrivial, 100_000, Via::Pool),
            b(Kind::MapBusy, 200, Via::Pool),
        ]);
        all
    }

    /// A short stable identifier, such as `ping-pong-8B`,
    /// `throughput-1MiB`, `tcp-ping-pong-8B`, `shm-increments-2p`,
    /// `async-wake-ping-pong-0B`, `fork-start`, `pool-map-200x5ms` or
    /// `pickle-dict-ping-pong`.
    pub fn id(&self) -> String {
        let prefix = match self.via {
            Via::Pipe => "",
            Via::Unix => "unix-",
            Via::Tcp => "tcp-",
            Via::Shm => "shm-",
            Via::Queue => "queue-",
            Via::Queue2 => "queue2x2-",
            Via::AsyncPipe => "async-",
            Via::AsyncQueue => "async-queue-",
            Via::AsyncWake => "async-wake-",
            Via::Spawn => "spawn-",
            Via::Forkserver => "forkserver-",
            Via::Fork => "fork-",
            Via::Pool => "pool-",
            Via::PickleDict => "pickle-dict-",
            Via::Broker => "broker-",
            Via::BrokerTcp => "broker-tcp-",
            Via::Broker4 => "broker4x4-",
            Via::Large => "large-",
            Via::Large2 => "large2x2-",
        };
        let size = size_label(self.size).replace(' ', "");
        let rest = match self.kind {
            // One fixed message: a size would say nothing.
            Kind::PingPong if self.via == Via::PickleDict => "ping-pong".to_owned(),
            Kind::PingPong => format!("ping-pong-{size}"),
            Kind::Throughput => format!("throughput-{size}"),
            Kind::Connect => "connect".to_owned(),
            Kind::LockUnlock => "lock-unlock".to_owned(),
            Kind::Increments => format!("increments-{}p", self.size),
            Kind::Bandwidth => format!("write-read-{size}"),
            Kind::Start => "start".to_owned(),
            Kind::MapTrivial => format!("map-{}-trivial", count_label(self.size)),
            Kind::MapBusy => format!("map-{}x{}ms", self.size, BUSY.as_millis()),
        };
        format!("{prefix}{rest}")
    }

    /// How many untimed round trips precede `count` timed ones.
    pub fn warmup(&self, count: usize) -> usize {
        match self.kind {
            Kind::PingPong | Kind::Connect => (count / 10).clamp(10, 1000),
            // One untimed start first: a forkserver started long ago, or
            // caches cooled by other benchmarks, must not count.
            Kind::Start => 1,
            _ => 0,
        }
    }

    /// Whether a smaller headline is better (a time rather than a rate).
    pub fn lower_is_better(&self) -> bool {
        matches!(
            self.kind,
            Kind::PingPong | Kind::Connect | Kind::LockUnlock | Kind::Start
        )
    }

    /// The most rounds this benchmark runs, if fewer than the run's: one
    /// measurement of [`Kind::MapBusy`] takes half a second per contender.
    pub fn max_rounds(&self, quick: bool) -> Option<usize> {
        (self.kind == Kind::MapBusy).then_some(if quick { 3 } else { 9 })
    }

    /// How many times per round trip a process of this benchmark's
    /// awaiting contenders is woken through an await where the floor's
    /// thread is woken from a blocking wait: what the difference of their
    /// p50s is divided by to give the cost of one awaited wake-up.
    pub fn awaited_wakes_per_round_trip(&self) -> Option<u32> {
        // One release → acquire hop each way.
        (self.via == Via::AsyncWake && self.kind == Kind::PingPong).then_some(2)
    }

    /// The ideal time of one map call of [`Kind::MapBusy`]: the CPU time of
    /// all its tasks spread evenly over the workers, with no overhead.
    pub fn ideal(&self) -> Option<Duration> {
        (self.kind == Kind::MapBusy).then(|| BUSY * self.size as u32 / POOL_WORKERS as u32)
    }

    /// The headline number of `sample` in this benchmark: the p50 in ns
    /// (ping-pong, connect), ns per operation (lock+unlock), or
    /// messages / increments / write+read passes per second.
    pub fn score(&self, sample: &Sample) -> f64 {
        match (self.kind, sample) {
            (
                Kind::LockUnlock,
                Sample::Throughput {
                    messages,
                    elapsed_ns,
                    ..
                },
            ) => elapsed_ns / (*messages).max(1) as f64,
            _ => sample.headline(),
        }
    }
}

impl fmt::Display for Benchmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let over = match self.via {
            Via::Pipe => "",
            Via::Unix => " (Unix socket)",
            Via::Tcp => " (TCP 127.0.0.1)",
            Via::Shm => "",
            Via::Queue => " (queue, 1 producer / 1 consumer)",
            Via::Queue2 => " (queue, 2 producers / 2 consumers)",
            Via::AsyncPipe => " (async, tokio current_thread)",
            Via::AsyncQueue => " (async queue, 1 producer / 1 consumer, tokio current_thread)",
            Via::AsyncWake => "",
            Via::Spawn => "spawn",
            Via::Forkserver => "forkserver",
            Via::Fork => "fork",
            Via::Pool => "",
            Via::PickleDict => "",
            Via::Broker => " (broker: a Redis stream over a Unix socket, 1 producer / 1 consumer)",
            Via::BrokerTcp => {
                " (broker: a Redis stream over TCP 127.0.0.1, 1 producer / 1 consumer)"
            }
            Via::Broker4 => {
                " (broker: a Redis stream over a Unix socket, 4 producers / 4 consumers)"
            }
            Via::Large => " (large items, 1 producer / 1 consumer)",
            Via::Large2 => " (large items, 2 producers / 2 consumers)",
        };
        let size = size_label(self.size);
        match self.kind {
            Kind::PingPong if self.via == Via::Queue => write!(
                f,
                "Queue ping-pong round trip (put→get over two queues), {size}, two CPUs"
            ),
            Kind::PingPong if self.via == Via::AsyncWake => write!(
                f,
                "Wake-up ping-pong (release → acquire over two semaphores, blocking or \
                 awaited on tokio current_thread), two CPUs"
            ),
            Kind::PingPong if self.via == Via::PickleDict => write!(
                f,
                "Small dict round trip, pickled both ways \
                 ({{'job': 7, 'args': [1, 2, 3], 'name': 'square'}})"
            ),
            Kind::PingPong => write!(f, "Ping-pong round trip, {size}{over}"),
            Kind::Throughput => write!(f, "One-way throughput, {size}{over}"),
            Kind::Connect => write!(f, "Connect + authenticate{over}"),
            Kind::LockUnlock => write!(f, "Lock + unlock, uncontended"),
            Kind::Increments if self.size == 1 => write!(f, "Locked increments, 1 process"),
            Kind::Increments => write!(f, "Locked increments, {} processes", self.size),
            Kind::Bandwidth => write!(f, "Shared memory write + read across processes, {size}"),
            Kind::Start => write!(
                f,
                "Process start latency (call → first message from the child), {over}"
            ),
            Kind::MapTrivial => write!(
                f,
                "Pool map, {} trivial tasks (a u64 squared), {POOL_WORKERS} workers",
                count_label(self.size)
            ),
            Kind::MapBusy => write!(
                f,
                "Pool map, {} tasks of {} ms CPU each, {POOL_WORKERS} workers",
                self.size,
                BUSY.as_millis()
            ),
        }
    }
}

/// `64 B`, `4 KiB`, `1 MiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// `100k`, `200`: a count of items, for ids and titles.
pub fn count_label(n: usize) -> String {
    if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Python's default chunksize for `map` of `items` items on `workers`
/// workers: about four chunks per worker (`multiprocessing.Pool.map`).
pub fn python_chunksize(items: usize, workers: usize) -> usize {
    items.div_ceil(workers.max(1) * 4).max(1)
}

/// The result of one measurement by one contender.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Sample {
    /// Ping-pong: percentiles of the round-trip times.
    Latency {
        /// Median round trip, in nanoseconds.
        p50_ns: f64,
        /// 99th percentile round trip, in nanoseconds.
        p99_ns: f64,
        /// How many round trips were timed.
        round_trips: usize,
        /// The wall time of the timed round trips, in nanoseconds.
        elapsed_ns: f64,
    },
    /// Throughput: how long `messages` messages of `size` bytes took.
    Throughput {
        /// Messages sent.
        messages: usize,
        /// Payload bytes per message.
        size: usize,
        /// From the first send to the acknowledgement, in nanoseconds.
        elapsed_ns: f64,
    },
}

impl Sample {
    /// A latency sample from round-trip times in nanoseconds (reordered).
    pub fn from_round_trips(rtts: &mut [u64], elapsed: Duration) -> Sample {
        rtts.sort_unstable();
        Sample::Latency {
            p50_ns: percentile(rtts, 0.50) as f64,
            p99_ns: percentile(rtts, 0.99) as f64,
            round_trips: rtts.len(),
            elapsed_ns: elapsed.as_nanos() as f64,
        }
    }

    /// The wall time the measurement took.
    pub fn elapsed(&self) -> Duration {
        match *self {
            Sample::Latency { elapsed_ns, .. } | Sample::Throughput { elapsed_ns, .. } => {
                Duration::from_nanos(elapsed_ns as u64)
            }
        }
    }

    /// The headline number: the median round trip in nanoseconds (lower is
    /// better) or messages per second (higher is better).
    pub fn headline(&self) -> f64 {
        match *self {
            Sample::Latency { p50_ns, .. } => p50_ns,
            Sample::Throughput {
                messages,
                elapsed_ns,
                ..
            } => messages as f64 / (elapsed_ns / 1e9),
        }
    }

    /// The second number: the 99th percentile round trip in nanoseconds,
    /// or payload gigabytes (10^9 bytes) per second.
    pub fn secondary(&self) -> f64 {
        match *self {
            Sample::Latency { p99_ns, .. } => p99_ns,
            Sample::Throughput {
                messages,
                size,
                elapsed_ns,
            } => (messages * size) as f64 / elapsed_ns,
        }
    }
}

/// The nearest-rank percentile of sorted values (the Python script uses
/// the same rule).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median, minimum and maximum of some values.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    /// The median (the mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; all zero when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn spread_takes_the_middle() {
        let s = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 2.0, 3.0, 4.0]).median, 2.5);
    }

    #[test]
    fn labels_and_ids() {
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        let b = Benchmark {
            kind: Kind::Throughput,
            size: 65536,
            via: Via::Pipe,
        };
        assert_eq!(b.id(), "throughput-64KiB");
        let ids: Vec<String> = Benchmark::all().iter().map(Benchmark::id).collect();
        for id in [
            "tcp-ping-pong-8B",
            "unix-connect",
            "shm-increments-2p",
            "shm-write-read-64MiB",
            "queue-throughput-64B",
            "queue2x2-throughput-4KiB",
            "queue-ping-pong-64B",
            "async-ping-pong-8B",
            "async-queue-throughput-64B",
            "async-queue-ping-pong-64B",
            "async-wake-ping-pong-0B",
            "spawn-start",
            "forkserver-start",
            "fork-start",
            "pool-map-100k-trivial",
            "pool-map-200x5ms",
            "pickle-dict-ping-pong",
        ] {
            assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
        }
        // `--bench fork-start` picks one benchmark.
        assert_eq!(ids.iter().filter(|i| i.contains("fork-start")).count(), 1);
    }

    #[test]
    fn python_rules() {
        assert_eq!(python_chunksize(100_000, 2), 12_500);
        assert_eq!(python_chunksize(200, 2), 25);
        assert_eq!(python_chunksize(201, 2), 26);
        assert_eq!(python_chunksize(0, 2), 1);
        let busy = Benchmark {
            kind: Kind::MapBusy,
            size: 200,
            via: Via::Pool,
        };
        assert_eq!(busy.ideal(), Some(Duration::from_millis(500)));
    }
}
