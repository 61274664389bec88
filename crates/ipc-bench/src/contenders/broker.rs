//! Broker contenders ([`Via::Broker`]): a queue in a Redis stream between
//! a producer (the parent) and a consumer process, each contender on a
//! private redis-server of its own (a Unix socket in a temporary directory,
//! no persistence), started with it and stopped by its pid after it.
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
//! Throughput only: the parent puts COUNT items, the consumer takes them
//! all and answers on its control connection.

use std::time::Instant;

use ipc_broker::{Broker, Queue};
use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;
use ipc_testkit::RedisServer;

use super::{check_len, quit_peer, serve_runs, spawn_peer, Contender, Entry, Run};
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
    bench.via == Via::Broker
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
            let read: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(RAW_GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(left.min(BATCH))
                .arg("BLOCK")
                .arg(10_000)
                .arg("STREAMS")
                .arg(RAW_STREAM)
                .arg(">")
                .query(&mut self.conn)?;
            let entries = entries(&read).ok_or("XREADGROUP gave nothing in 10 s")?;
            let mut ids = Vec::with_capacity(entries.len());
            for (id, len) in entries {
                check_len(len, size)?;
                ids.push(id);
            }
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
            left -= ids.len();
        }
        Ok(())
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

/// A broker contender: its server, the producer's end and the consumer
/// process.
struct BrokerContender {
    ends: Box<dyn Ends>,
    peer: (Connection, Child),
    out: Vec<u8>,
    // Dropped last: stops the server after the peer is gone.
    _server: RedisServer,
}

fn start(name: &'static str) -> Result<Option<Box<dyn Contender>>> {
    let Some(server) = RedisServer::start() else {
        eprintln!("{name}: redis-server is not installed; skipped");
        return Ok(None);
    };
    let url = server.url();
    let ends = ends(name, &url, true)?;
    let peer = spawn_peer(name, Process::new(), &[&url])?;
    Ok(Some(Box::new(BrokerContender {
        ends,
        peer,
        out: Vec::new(),
        _server: server,
    })))
}

fn peer(name: &str, args: &[String]) -> Result {
    let url = args.first().ok_or("a broker peer needs the server's URL")?;
    let mut ends = ends(name, url, false)?;
    let mut ctl: Connection = inherited("ctl")?;
    serve_runs(&mut ctl, |ctl, run| {
        let Run { bench, count, .. } = run;
        ends.get_n(bench.size, count)?;
        ctl.send(&())?;
        Ok(())
    })
}

impl Contender for BrokerContender {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        if bench.kind != Kind::Throughput {
            return Err(format!("{bench} is not a broker benchmark").into());
        }
        self.out.resize(bench.size, 0xa5);
        self.peer.0.send(&super::Control::Run {
            bench,
            warmup: 0,
            count,
            cpu: None,
        })?;
        let start = Instant::now();
        self.ends.put_n(&self.out, count)?;
        self.peer.0.recv::<()>()?;
        Ok(Sample::Throughput {
            messages: count,
            size: bench.size,
            elapsed_ns: start.elapsed().as_nanos() as f64,
        })
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let (ctl, child) = &mut self.peer;
        quit_peer(ctl, child)
    }
}
