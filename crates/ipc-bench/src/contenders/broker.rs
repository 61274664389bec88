//! Broker contenders ([`Via::Broker`], [`Via::BrokerTcp`],
//! [`Via::Broker4`]): a queue in a Redis stream between producer and
//! consumer processes, each contender on a private redis-server of its own
//! (a Unix socket in a temporary directory and a loopback TCP port, no
//! persistence), started with it and stopped by its pid after it.
//!
//! - [`NAME`]: `ipc_broker::Queue`, one `put_bytes` and one `get_bytes`
//!   per item (one round trip each);
//! - [`BATCHED`]: the same queue with `put_many_bytes` and
//!   `get_many_bytes` of [`BATCH`] items (one round trip per batch);
//! - [`RAW`], the floor: the redis crate alone, `XADD` pipelined
//!   [`BATCH`] at a time, `XREADGROUP COUNT` [`BATCH`] then one pipelined
//!   `XACK` and `XDEL` of what it read: what the queue's semantics need,
//!   without its bound, its close or its checks.
//!
//! Throughput only. 1 / 1: the parent puts COUNT items, peer 0 takes them
//! all and acknowledges on a shared-memory queue (not measured). 4 / 4: see
//! `BrokerContender::four_by_four`.

use std::time::Instant;

use ipc_broker::{Broker, Queue};
use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;
use ipc_testkit::RedisServer;

use super::{check_len, serve_runs, spawn_peer, Contender, Entry, Run};
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// Name of the per-item contender.
pub const NAME: &str = "ipc-broker";

/// Name of the batched contender.
pub const BATCHED: &str = "ipc-broker batched";

/// Name of the floor.
pub const RAW: &str = "raw redis pipelined";

/// Items per batch of the batched contender and the floor.
pub const BATCH: usize = 64;

/// The queue's (and the floor's stream's) name.
const QUEUE: &str = "bench";

/// The floor's stream and consumer group.
const RAW_STREAM: &str = "raw-bench";
const RAW_GROUP: &str = "g";

fn broker_bench(bench: Benchmark) -> bool {
    matches!(bench.via, Via::Broker | Via::BrokerTcp | Via::Broker4)
}

/// The registry entry of [`NAME`].
pub fn entry() -> Entry {
    Entry {
        name: NAME,
        about: "`ipc_broker::Queue` on a private redis-server (Unix socket): `put_bytes` / \
                `get_bytes`, one round trip per item each way",
        start: || start(NAME),
        peer: Some(|args| peer(NAME, args)),
        runs: broker_bench,
    }
}

/// The registry entry of [`BATCHED`].
pub fn batched_entry() -> Entry {
    Entry {
        name: BATCHED,
        about: "`ipc_broker::Queue` on a private redis-server (Unix socket): \
                `put_many_bytes` / `get_many_bytes` of 64 items, one round trip per batch",
        start: || start(BATCHED),
        peer: Some(|args| peer(BATCHED, args)),
        runs: broker_bench,
    }
}

/// The registry entry of [`RAW`].
pub fn raw_entry() -> Entry {
    Entry {
        name: RAW,
        about: "the floor: the redis crate alone on a private redis-server (Unix socket), \
                `XADD` pipelined 64 at a time; the consumer `XREADGROUP COUNT 64 BLOCK`, \
                then one pipelined `XACK` + `XDEL` of the ids it read",
        start: || start(RAW),
        peer: Some(|args| peer(RAW, args)),
        runs: broker_bench,
    }
}

/// One side of a broker contender.
trait Ends {
    /// Puts `count` copies of `item`.
    fn put_n(&mut self, item: &[u8], count: usize) -> Result;
    /// Takes `count` items, each of `size` bytes.
    fn get_n(&mut self, size: usize, count: usize) -> Result;
    /// Takes items of `size` bytes until a take (one item, or a batch)
    /// brings empty sentinels; returns how many it brought.
    fn get_until_sentinel(&mut self, size: usize) -> Result<u8>;
}

/// How many of `lengths` are sentinels (0); an error if another is not
/// `size`.
fn sentinels(lengths: impl IntoIterator<Item = usize>, size: usize) -> Result<u8> {
    let mut found = 0;
    for len in lengths {
        if len == 0 {
            found += 1;
        } else {
            check_len(len, size)?;
        }
    }
    Ok(found)
}

/// `ipc_broker::Queue`, per item or in batches.
struct Ours {
    queue: Queue<()>,
    batched: bool,
}

impl Ends for Ours {
    fn put_n(&mut self, item: &[u8], count: usize) -> Result {
        if !self.batched {
            for _ in 0..count {
                self.queue.put_bytes(item)?;
            }
            return Ok(());
        }
        let batch = vec![item; BATCH];
        let mut left = count;
        while left > 0 {
            let n = left.min(BATCH);
            self.queue.put_many_bytes(&batch[..n])?;
            left -= n;
        }
        Ok(())
    }

    fn get_n(&mut self, size: usize, count: usize) -> Result {
        let mut left = count;
        while left > 0 {
            if self.batched {
                let items = self.queue.get_many_bytes(left.min(BATCH), None)?;
                for item in &items {
                    check_len(item.len(), size)?;
                }
                left -= items.len();
            } else {
                check_len(self.queue.get_bytes()?.len(), size)?;
                left -= 1;
            }
        }
        Ok(())
    }

    fn get_until_sentinel(&mut self, size: usize) -> Result<u8> {
        loop {
            let found = if self.batched {
                let items = self.queue.get_many_bytes(BATCH, None)?;
                sentinels(items.iter().map(Vec::len), size)?
            } else {
                sentinels([self.queue.get_bytes()?.len()], size)?
            };
            if found > 0 {
                return Ok(found);
            }
        }
    }
}

/// The floor: redis commands, pipelined.
struct Raw {
    conn: redis::Connection,
    consumer: String,
}

impl Ends for Raw {
    fn put_n(&mut self, item: &[u8], count: usize) -> Result {
        let mut left = count;
        while left > 0 {
            let n = left.min(BATCH);
            let mut pipe = redis::pipe();
            for _ in 0..n {
                pipe.cmd("XADD")
                    .arg(RAW_STREAM)
                    .arg("*")
                    .arg("d")
                    .arg(item)
                    .ignore();
            }
            pipe.exec(&mut self.conn)?;
            left -= n;
        }
        Ok(())
    }

    fn get_n(&mut self, size: usize, count: usize) -> Result {
        let mut left = count;
        while left > 0 {
            let lengths = self.take(left.min(BATCH))?;
            for &len in &lengths {
                check_len(len, size)?;
            }
            left -= lengths.len();
        }
        Ok(())
    }

    fn get_until_sentinel(&mut self, size: usize) -> Result<u8> {
        loop {
            let found = sentinels(self.take(BATCH)?, size)?;
            if found > 0 {
                return Ok(found);
            }
        }
    }
}

impl Raw {
    /// Reads up to `most` entries for this consumer, acknowledges and
    /// deletes them in one pipeline, and returns their lengths.
    fn take(&mut self, most: usize) -> Result<Vec<usize>> {
        {
            let read: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(RAW_GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(most)
                .arg("BLOCK")
                .arg(10_000)
                .arg("STREAMS")
                .arg(RAW_STREAM)
                .arg(">")
                .query(&mut self.conn)?;
            let entries = entries(&read).ok_or("XREADGROUP gave nothing in 10 s")?;
            let (ids, lengths): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
            redis::pipe()
                .cmd("XACK")
                .arg(RAW_STREAM)
                .arg(RAW_GROUP)
                .arg(&ids)
                .ignore()
                .cmd("XDEL")
                .arg(RAW_STREAM)
                .arg(&ids)
                .ignore()
                .exec(&mut self.conn)?;
            Ok(lengths)
        }
    }
}

/// `(id, length of field d)` of each entry of an `XREADGROUP` reply.
fn entries(read: &redis::Value) -> Option<Vec<(Vec<u8>, usize)>> {
    use redis::Value;
    let Value::Array(streams) = read else {
        return None;
    };
    let Some(Value::Array(stream)) = streams.first() else {
        return None;
    };
    let Some(Value::Array(entries)) = stream.get(1) else {
        return None;
    };
    entries
        .iter()
        .map(|entry| match entry {
            Value::Array(pair) => match pair.as_slice() {
                [Value::BulkString(id), Value::Array(fields)] => match fields.as_slice() {
                    [_, Value::BulkString(data)] => Some((id.clone(), data.len())),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The ends of contender `name` on the server at `url`; the parent's
/// (`producer`) makes the queue or stream.
fn ends(name: &str, url: &str, producer: bool) -> Result<Box<dyn Ends>> {
    if name == RAW {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        if producer {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(RAW_STREAM)
                .arg(RAW_GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .exec(&mut conn)?;
        }
        return Ok(Box::new(Raw {
            conn,
            consumer: format!("consumer-{}", std::process::id()),
        }));
    }
    let broker = Broker::new(url)?;
    let builder = Queue::<()>::builder();
    let queue = if producer {
        builder.create(&broker, QUEUE)?
    } else {
        builder.open(&broker, QUEUE)?
    };
    Ok(Box::new(Ours {
        queue,
        batched: name == BATCHED,
    }))
}

/// A broker contender: its server, the parent's ends (over the Unix socket
/// and over TCP), the acknowledgement queue and the peers.
struct BrokerContender {
    unix: Box<dyn Ends>,
    tcp: Box<dyn Ends>,
    back: ipc_queue::Queue<()>,
    peers: Vec<(Connection, Child)>,
    out: Vec<u8>,
    // Dropped last: stops the server after the peers are gone.
    _server: RedisServer,
}

/// Peers 0 to 3 consume, 4 to 6 produce (with the parent, in 4 / 4).
const PEERS: usize = 7;
const CONSUMERS: usize = 4;

fn start(name: &'static str) -> Result<Option<Box<dyn Contender>>> {
    let Some(server) = RedisServer::start_tcp() else {
        eprintln!("{name}: redis-server is not installed; skipped");
        return Ok(None);
    };
    let (unix_url, tcp_url) = (server.url(), server.tcp_url().ok_or("a TCP port")?);
    let unix = ends(name, &unix_url, true)?;
    let tcp = ends(name, &tcp_url, false)?;
    let back = ipc_queue::Queue::<()>::new()?;
    let mut peers = Vec::new();
    for role in 0..PEERS {
        let process = Process::new().pass("back", &back)?;
        let role = role.to_string();
        peers.push(spawn_peer(name, process, &[&role, &unix_url, &tcp_url])?);
    }
    Ok(Some(Box::new(BrokerContender {
        unix,
        tcp,
        back,
        peers,
        out: Vec::new(),
        _server: server,
    })))
}

fn peer(name: &str, args: &[String]) -> Result {
    let [role, unix_url, tcp_url] = args else {
        return Err("usage: --peer NAME ROLE UNIX_URL TCP_URL".into());
    };
    let role: usize = role.parse()?;
    let mut unix = ends(name, unix_url, false)?;
    let mut tcp = ends(name, tcp_url, false)?;
    let back: ipc_queue::Queue<()> = inherited("back")?;
    let mut ctl: Connection = inherited("ctl")?;
    serve_runs(&mut ctl, |_, run| {
        let Run { bench, count, .. } = run;
        let ends = if bench.via == Via::BrokerTcp {
            &mut tcp
        } else {
            &mut unix
        };
        let item = vec![0xa5u8; bench.size];
        match (bench.via, role < CONSUMERS) {
            (Via::Broker | Via::BrokerTcp, true) => {
                ends.get_n(bench.size, count)?;
                back.put_bytes(&[])?;
            }
            (Via::Broker4, true) => {
                let sentinels = ends.get_until_sentinel(bench.size)?;
                back.put_bytes(&[sentinels])?;
            }
            (Via::Broker4, false) => {
                ends.put_n(&item, count)?;
                ends.put_n(&[], 1)?;
            }
            _ => return Err(format!("broker peer {role} cannot run {bench}").into()),
        }
        Ok(())
    })
}

impl BrokerContender {
    fn tell(&mut self, peer: usize, bench: Benchmark, count: usize) -> Result {
        self.peers[peer].0.send(&super::Control::Run {
            bench,
            warmup: 0,
            count,
            cpu: None,
        })?;
        Ok(())
    }

    /// 4 producers (the parent and peers 4 to 6), each following its items
    /// with an empty sentinel, and 4 consumers (peers 0 to 3), each
    /// taking items until its batch holds a sentinel and then saying how
    /// many it took. A consumer whose batch held several leaves another
    /// without one: the parent then puts more, once the count shows it.
    /// Timed from just before the producers are told to start to the last
    /// acknowledgement, so it covers the first put to the last get.
    fn four_by_four(&mut self, bench: Benchmark, count: usize) -> Result<Sample> {
        let share = count / 4;
        for consumer in 0..CONSUMERS {
            self.tell(consumer, bench, 0)?;
        }
        let start = Instant::now();
        for producer in CONSUMERS..PEERS {
            self.tell(producer, bench, share)?;
        }
        self.unix.put_n(&self.out, count - 3 * share)?;
        self.unix.put_n(&[], 1)?;
        let (mut put, mut seen, mut acks) = (4usize, 0usize, 0usize);
        while acks < CONSUMERS {
            let ack = self.back.get_bytes()?;
            seen += usize::from(*ack.first().ok_or("an empty acknowledgement")?);
            acks += 1;
            let (waiting, left) = (CONSUMERS - acks, put.saturating_sub(seen));
            if left < waiting {
                self.unix.put_n(&[], waiting - left)?;
                put += waiting - left;
            }
        }
        Ok(Sample::Throughput {
            messages: count,
            size: bench.size,
            elapsed_ns: start.elapsed().as_nanos() as f64,
        })
    }
}

impl Contender for BrokerContender {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        if bench.kind != Kind::Throughput {
            return Err(format!("{bench} is not a broker benchmark").into());
        }
        self.out.resize(bench.size, 0xa5);
        if bench.via == Via::Broker4 {
            return self.four_by_four(bench, count);
        }
        self.tell(0, bench, count)?;
        let start = Instant::now();
        let ends = if bench.via == Via::BrokerTcp {
            &mut self.tcp
        } else {
            &mut self.unix
        };
        ends.put_n(&self.out, count)?;
        check_len(self.back.get_bytes()?.len(), 0)?;
        Ok(Sample::Throughput {
            messages: count,
            size: bench.size,
            elapsed_ns: start.elapsed().as_nanos() as f64,
        })
    }

    fn finish(self: Box<Self>) -> Result<()> {
        super::quit_peers(self.peers)
    }
}
