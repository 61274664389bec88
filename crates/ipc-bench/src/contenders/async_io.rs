//! Async contenders: both processes await every send and receive on a
//! tokio `current_thread` runtime, made once per process. A whole
//! measurement runs inside one `block_on`, as an async program's loop
//! would, so the cost of entering the runtime is not charged per message.
//!
//! - [`OURS`]: `ipc_core::tokio::AsyncConnection` over an
//!   `ipc_pipe::duplex()` end, `send_bytes` / `recv_bytes_into` a reused
//!   buffer: the async twin of `ipc-pipe bytes`, which runs the same
//!   benchmark as the blocking reference.
//! - [`TOKIO`], the floor of the async ping-pong: the same frames
//!   (Python's: a 4-byte big-endian length, then the payload) by hand with
//!   `AsyncWriteExt` / `AsyncReadExt` over a `tokio::net::UnixStream` made
//!   from a socketpair with the buffers of `raw socketpair`. Like that
//!   floor it reads through a 64 KiB buffer (`tokio::io::BufReader`), so
//!   a small message costs one `read`, and it writes each frame with one
//!   `write_all` of a reused buffer. It also runs the async queue
//!   ping-pong, whose goal is at most its round trip in the same run, with
//!   the queues' placement: the parent on one CPU, the peer on the other.
//! - [`INTERPROCESS`]: interprocess's tokio local socket
//!   (`interprocess::local_socket::tokio::Stream`, a Unix socket on Linux)
//!   made from the same socketpair, with [`TOKIO`]'s hand framing: what a
//!   user of that crate gets.
//! - [`QUEUE`]: `ipc_queue::Queue` with `put_bytes_async` /
//!   `get_bytes_into_async` a reused buffer (the receiving path of the
//!   blocking `ipc-queue bytes`, its reference, so the two differ only in
//!   how they wait). Two queues as in `queue.rs`: the parent puts COUNT
//!   items on `data`, the peer gets them all and puts an empty
//!   acknowledgement on `back`.
//!
//! The awaited semaphores of `wake.rs` use the same runtime, drivers and
//! `AsyncContender` through [`start`], [`peer`] and [`AsyncLink`].

use std::time::Instant;

use ipc_core::process::{inherited, Child, Process};
use ipc_core::tokio::AsyncConnection;
use ipc_core::Connection;
use ipc_queue::Queue;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::runtime::Runtime;

use super::raw::Socket;
use super::{
    check_len, peer_cpu, quit_peer, serve_runs, spawn_peer, Contender, Control, Entry, ACK_SIZE,
};
use crate::affinity;
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// Name of `ipc-core`'s async connection.
pub const OURS: &str = "ipc-core AsyncConnection";

/// Name of the hand-framed tokio socket, the floor of the async ping-pong.
pub const TOKIO: &str = "tokio UnixStream";

/// Name of interprocess's tokio local socket.
pub const INTERPROCESS: &str = "interprocess tokio local socket";

/// Name of the async queue.
pub const QUEUE: &str = "ipc-shm-queue async";

/// The read buffer of [`TOKIO`], as the staging buffer of `raw socketpair`.
const READ_BUFFER: usize = 64 << 10;

fn async_pipe(bench: Benchmark) -> bool {
    bench.via == Via::AsyncPipe
}

/// The benchmarks of [`TOKIO`]: the async ping-pong, and the async queue
/// round trip, whose goal is stated against a `UnixStream` round trip.
fn tokio_runs(bench: Benchmark) -> bool {
    async_pipe(bench) || (bench.via == Via::AsyncQueue && bench.kind == Kind::PingPong)
}

/// The registry entry of [`OURS`].
pub fn ours_entry() -> Entry {
    Entry {
        name: OURS,
        about: "`ipc_core::tokio::AsyncConnection::new(end)` over an `ipc_pipe::duplex()` \
                end, `send_bytes(..).await` / `recv_bytes_into(..).await` a reused buffer, \
                both processes on a tokio `current_thread` runtime",
        start: start_ours,
        peer: Some(|_| peer(|| Ours::new(inherited("data")?))),
        runs: async_pipe,
    }
}

/// The registry entry of [`TOKIO`].
pub fn tokio_entry() -> Entry {
    Entry {
        name: TOKIO,
        about: "the floor of the async ping-pong: `tokio::net::UnixStream` from a socketpair \
                (1 MiB buffers), Python's framing by hand (4-byte big-endian length + \
                payload, one `write_all` per frame; `read_exact` of header and payload \
                through a 64 KiB `BufReader`), both processes on a tokio `current_thread` \
                runtime; also in the async queue ping-pong, with the queues' CPU placement \
                (the parent on one CPU, the peer on the other), as the goal it is held to \
                there",
        start: start_tokio,
        peer: Some(|_| peer(|| Framed::new(inherited::<Socket>("data")?))),
        runs: tokio_runs,
    }
}

/// The registry entry of [`INTERPROCESS`].
pub fn interprocess_entry() -> Entry {
    Entry {
        name: INTERPROCESS,
        about: "`interprocess::local_socket::tokio::Stream` (interprocess 2, feature `tokio`) \
                from a socketpair end, with the hand framing of `tokio UnixStream`, both \
                processes on a tokio `current_thread` runtime",
        start: start_interprocess,
        peer: Some(|_| peer(|| Framed::interprocess(inherited::<Socket>("data")?))),
        runs: async_pipe,
    }
}

/// The registry entry of [`QUEUE`].
pub fn queue_entry() -> Entry {
    Entry {
        name: QUEUE,
        about: "`ipc_queue::Queue::builder().capacity(4 MiB).anonymous()`, \
                `put_bytes_async` / `get_bytes_into_async` a reused buffer, producer and \
                consumer each on a tokio `current_thread` runtime (the waiting is \
                `ipc-shm`'s one watching thread per process)",
        start: start_queue,
        peer: Some(|_| {
            peer(|| {
                Ok(Queues::new(
                    inherited::<Queue<()>>("back")?,
                    inherited::<Queue<()>>("data")?,
                ))
            })
        }),
        runs: |b| b.via == Via::AsyncQueue,
    }
}

fn start_ours() -> Result<Option<Box<dyn Contender>>> {
    let (parent, child_end) = ipc_pipe::duplex()?;
    let process = Process::new().pass("data", &child_end)?;
    let started = start(OURS, process, || Ours::new(parent));
    drop(child_end);
    started
}

fn start_tokio() -> Result<Option<Box<dyn Contender>>> {
    let (parent, child_end) = super::raw::socketpair()?;
    let process = Process::new().pass("data", &child_end)?;
    let started = start(TOKIO, process, || Framed::new(parent));
    drop(child_end);
    started
}

fn start_interprocess() -> Result<Option<Box<dyn Contender>>> {
    let (parent, child_end) = super::raw::socketpair()?;
    let process = Process::new().pass("data", &child_end)?;
    let started = start(INTERPROCESS, process, || Framed::interprocess(parent));
    drop(child_end);
    started
}

fn start_queue() -> Result<Option<Box<dyn Contender>>> {
    let make = || {
        Queue::<()>::builder()
            .capacity(super::queue::CAPACITY)
            .anonymous()
    };
    let (data, back) = (make()?, make()?);
    let process = Process::new().pass("data", &data)?.pass("back", &back)?;
    start(QUEUE, process, || Ok(Queues::new(data, back)))
}

/// A tokio runtime on this thread alone, with the reactor the sockets need.
fn runtime() -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?)
}

/// Starts the peer of contender `name` with the handles given to
/// `process`, then makes the parent's end with `link` in a new runtime.
pub(super) fn start<L: AsyncLink + 'static>(
    name: &str,
    process: Process,
    link: impl FnOnce() -> Result<L>,
) -> Result<Option<Box<dyn Contender>>> {
    let (ctl, child) = spawn_peer(name, process, &[])?;
    let rt = runtime()?;
    let link = {
        // Registering with the reactor needs the runtime entered.
        let _entered = rt.enter();
        link()?
    };
    Ok(Some(Box::new(AsyncContender {
        ctl,
        child,
        link,
        rt,
    })))
}

/// The peer's side: makes its end with `link` in a new runtime and
/// answers benchmarks as the control connection asks.
pub(super) fn peer<L: AsyncLink>(link: impl FnOnce() -> Result<L>) -> Result {
    let rt = runtime()?;
    let mut link = {
        let _entered = rt.enter();
        link()?
    };
    let mut ctl: Connection = inherited("ctl")?;
    serve_runs(&mut ctl, |_, run| {
        affinity::pinned(run.cpu, || {
            rt.block_on(answer(&mut link, run.bench, run.warmup, run.count))
        })
    })
}

/// One end of an async message channel: [`super::Link`] with awaited
/// sends and receives.
pub(super) trait AsyncLink {
    /// Prepares to send messages of `send` payload bytes and to receive
    /// messages of `recv` payload bytes.
    fn prepare(&mut self, send: usize, recv: usize);
    /// Sends the prepared message.
    async fn send(&mut self) -> Result;
    /// Receives one message and returns its payload length.
    async fn recv(&mut self) -> Result<usize>;
}

/// The parent's side of a benchmark over `link`, as [`super::drive`].
async fn drive<L: AsyncLink>(link: &mut L, bench: Benchmark, count: usize) -> Result<Sample> {
    let size = bench.size;
    match bench.kind {
        Kind::PingPong => {
            link.prepare(size, size);
            for _ in 0..bench.warmup(count) {
                link.send().await?;
                check_len(link.recv().await?, size)?;
            }
            let mut rtts = vec![0u64; count];
            let start = Instant::now();
            let mut last = start;
            for rtt in rtts.iter_mut() {
                link.send().await?;
                let got = link.recv().await?;
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
                link.send().await?;
            }
            let got = link.recv().await?;
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

/// The peer's side of a benchmark over `link`, as [`super::answer`].
async fn answer<L: AsyncLink>(
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
                check_len(link.recv().await?, size)?;
                link.send().await?;
            }
        }
        Kind::Throughput => {
            link.prepare(ACK_SIZE, size);
            for _ in 0..count {
                check_len(link.recv().await?, size)?;
            }
            link.send().await?;
        }
        _ => return Err(format!("{bench} is not a message benchmark").into()),
    }
    Ok(())
}

/// The parent's end, its runtime and the peer.
struct AsyncContender<L> {
    ctl: Connection,
    child: Child,
    // Before `rt`: the end is dropped while its reactor still runs.
    link: L,
    rt: Runtime,
}

impl<L: AsyncLink> Contender for AsyncContender<L> {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        self.ctl.send(&Control::Run {
            bench,
            warmup: bench.warmup(count),
            count,
            cpu: peer_cpu(bench, cpu),
        })?;
        let (rt, link) = (&self.rt, &mut self.link);
        affinity::pinned(cpu, || rt.block_on(drive(link, bench, count)))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        quit_peer(&mut self.ctl, &mut self.child)
    }
}

/// [`OURS`].
struct Ours {
    conn: AsyncConnection,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Ours {
    fn new(conn: Connection) -> Result<Ours> {
        Ok(Ours {
            conn: AsyncConnection::new(conn)?,
            out: Vec::new(),
            buf: Vec::new(),
        })
    }
}

impl AsyncLink for Ours {
    fn prepare(&mut self, send: usize, recv: usize) {
        self.out = vec![0xa5; send];
        if self.buf.len() < recv {
            self.buf.resize(recv, 0);
        }
    }

    async fn send(&mut self) -> Result {
        Ok(self.conn.send_bytes(&self.out).await?)
    }

    async fn recv(&mut self) -> Result<usize> {
        loop {
            match self.conn.recv_bytes_into(&mut self.buf).await {
                Ok(n) => return Ok(n),
                Err(ipc_core::Error::BufferTooShort { needed }) => self.buf.resize(needed, 0),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// [`TOKIO`] (and [`INTERPROCESS`]): writes go straight through the
/// `BufReader` to the socket.
struct Framed<S> {
    stream: BufReader<S>,
    out: Vec<u8>,
    frame: Vec<u8>,
    msg: Vec<u8>,
}

impl Framed<tokio::net::UnixStream> {
    fn new(socket: Socket) -> Result<Self> {
        let std = std::os::unix::net::UnixStream::from(socket.0);
        std.set_nonblocking(true)?;
        Ok(Framed::over(tokio::net::UnixStream::from_std(std)?))
    }
}

impl Framed<interprocess::local_socket::tokio::Stream> {
    fn interprocess(socket: Socket) -> Result<Self> {
        let std = std::os::unix::net::UnixStream::from(socket.0);
        std.set_nonblocking(true)?;
        let stream = interprocess::os::unix::uds_local_socket::tokio::Stream::try_from(
            std::os::fd::OwnedFd::from(std),
        )?;
        Ok(Framed::over(stream.into()))
    }
}

impl<S: tokio::io::AsyncRead> Framed<S> {
    fn over(stream: S) -> Framed<S> {
        Framed {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            out: Vec::new(),
            frame: Vec::new(),
            msg: Vec::new(),
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncLink for Framed<S> {
    fn prepare(&mut self, send: usize, recv: usize) {
        self.out = vec![0xa5; send];
        if self.msg.len() < recv {
            self.msg.resize(recv, 0);
        }
    }

    async fn send(&mut self) -> Result {
        // Framed per message, as a real sender of varying payloads must.
        self.frame.clear();
        self.frame
            .extend_from_slice(&(self.out.len() as u32).to_be_bytes());
        self.frame.extend_from_slice(&self.out);
        Ok(self.stream.write_all(&self.frame).await?)
    }

    async fn recv(&mut self) -> Result<usize> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await?;
        let len = u32::from_be_bytes(header) as usize;
        if self.msg.len() < len {
            self.msg.resize(len, 0);
        }
        self.stream.read_exact(&mut self.msg[..len]).await?;
        Ok(len)
    }
}

/// [`QUEUE`]: puts on one queue, gets from the other.
struct Queues {
    tx: Queue<()>,
    rx: Queue<()>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Queues {
    fn new(tx: Queue<()>, rx: Queue<()>) -> Queues {
        Queues {
            tx,
            rx,
            out: Vec::new(),
            buf: Vec::new(),
        }
    }
}

impl AsyncLink for Queues {
    fn prepare(&mut self, send: usize, recv: usize) {
        self.out = vec![0xa5; send];
        if self.buf.len() < recv {
            self.buf.resize(recv, 0);
        }
    }

    async fn send(&mut self) -> Result {
        Ok(self.tx.put_bytes_async(&self.out).await?)
    }

    async fn recv(&mut self) -> Result<usize> {
        loop {
            match self.rx.get_bytes_into_async(&mut self.buf).await {
                Ok(n) => return Ok(n),
                Err(ipc_core::Error::BufferTooShort { needed }) => self.buf.resize(needed, 0),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
