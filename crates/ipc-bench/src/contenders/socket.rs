//! Socket contenders: `ipc-socket`'s `Listener` / `Client` over a Unix
//! socket and TCP on 127.0.0.1, and their floor, plain std `UnixStream` /
//! `TcpStream` (`TCP_NODELAY`) framed by hand exactly as the
//! `raw socketpair` floor frames (the same [`Raw`] reader and writer).
//!
//! The peer binds three listeners (Unix data, TCP data, Unix for the
//! connect benchmark), sends their addresses over the control connection,
//! and accepts the two data connections; the parent connects. The data
//! benchmarks then run over those two connections with the generic
//! [`drive`] / [`answer`]; the connect benchmark makes a new connection
//! per timed round trip.
//!
//! The connect floor is a raw `UnixStream::connect` followed by three
//! 64-byte round trips on the new connection, then close: the shape of
//! the authkey handshake (challenge, answer and welcome each way, about
//! three round trips) without the HMAC.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Instant;

use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;
use ipc_socket::{Address, Client, Listener, Options};

use super::pipe::Bytes;
use super::raw::Raw;
use super::{
    answer, drive, quit_peer, serve_runs, spawn_peer, Contender, Control, Entry, Link, Run,
};
use crate::affinity;
use crate::bench::{Benchmark, Kind, Result, Sample, Via};

/// Name of the socket floor.
pub const RAW: &str = "raw socket";

/// Name of the ipc-socket contender.
pub const IPC: &str = "ipc-socket";

/// The authkey of the ipc-socket connections.
const AUTHKEY: &[u8] = b"ipc-bench authkey";

/// The payload of each raw handshake round trip.
const HANDSHAKE_MSG: usize = 64;

/// The raw handshake's round trips.
const HANDSHAKE_ROUND_TRIPS: usize = 3;

/// Whether a contender of this module runs `bench`.
fn runs(bench: Benchmark) -> bool {
    match bench.via {
        Via::Unix => true,
        Via::Tcp => bench.kind != Kind::Connect,
        _ => false,
    }
}

/// The registry entry of the socket floor.
pub fn raw_entry() -> Entry {
    Entry {
        name: RAW,
        about: "the socket floor: std `UnixStream` / `TcpStream` (`TCP_NODELAY`) from a \
                std listener, framed by hand like `raw socketpair` (4-byte length + payload \
                in one `writev`, buffered `read`s); connect: `UnixStream::connect` + three \
                64-byte round trips",
        start: || start(RAW),
        peer: Some(|_| peer(false)),
        runs,
    }
}

/// The registry entry of the ipc-socket contender.
pub fn entry() -> Entry {
    Entry {
        name: IPC,
        about: "`ipc_socket::Listener` / `Client` with an authkey, `send_bytes` / \
                `recv_bytes_into` a reused buffer; connect: `Client::connect` with the \
                authkey (the full handshake)",
        start: || start(IPC),
        peer: Some(|_| peer(true)),
        runs,
    }
}

fn options() -> Options {
    Options::new().authkey(AUTHKEY)
}

/// A fresh Unix socket path for the peer's listener `what`.
fn socket_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ipc-bench-{}-{what}.sock", std::process::id()))
}

fn start(name: &'static str) -> Result<Option<Box<dyn Contender>>> {
    let ipc = name == IPC;
    let (mut ctl, child) = spawn_peer(name, Process::new(), &[])?;
    let addresses: Vec<String> = ctl.recv()?;
    let [unix, tcp, connect] = <[String; 3]>::try_from(addresses)
        .map_err(|a| format!("the socket peer sent {} addresses, not 3", a.len()))?;
    let (unix, tcp): (Box<dyn Link>, Box<dyn Link>) = if ipc {
        (
            Box::new(Bytes::new(
                Client::connect(unix.as_str(), options())?,
                false,
            )),
            Box::new(Bytes::new(Client::connect(tcp.as_str(), options())?, false)),
        )
    } else {
        let tcp = TcpStream::connect(tcp.as_str())?;
        tcp.set_nodelay(true)?;
        (
            Box::new(Raw::new(OwnedFd::from(UnixStream::connect(&unix)?), true)),
            Box::new(Raw::new(OwnedFd::from(tcp), true)),
        )
    };
    Ok(Some(Box::new(Sockets {
        ipc,
        ctl,
        child,
        unix,
        tcp,
        connect,
    })))
}

/// The parent's side: the two data connections and the address to connect
/// to in the connect benchmark.
struct Sockets {
    ipc: bool,
    ctl: Connection,
    child: Child,
    unix: Box<dyn Link>,
    tcp: Box<dyn Link>,
    connect: String,
}

impl Sockets {
    /// One connection of the connect benchmark, closed at once.
    fn connect_once(&self) -> Result {
        if self.ipc {
            drop(Client::connect(self.connect.as_str(), options())?);
        } else {
            let mut stream = UnixStream::connect(&self.connect)?;
            let mut buf = [0xa5u8; HANDSHAKE_MSG];
            for _ in 0..HANDSHAKE_ROUND_TRIPS {
                stream.write_all(&buf)?;
                stream.read_exact(&mut buf)?;
            }
        }
        Ok(())
    }

    fn connects(&self, bench: Benchmark, count: usize) -> Result<Sample> {
        for _ in 0..bench.warmup(count) {
            self.connect_once()?;
        }
        let mut times = vec![0u64; count];
        let start = Instant::now();
        let mut last = start;
        for time in times.iter_mut() {
            self.connect_once()?;
            let now = Instant::now();
            *time = now.duration_since(last).as_nanos() as u64;
            last = now;
        }
        Ok(Sample::from_round_trips(&mut times, last - start))
    }
}

impl Contender for Sockets {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        self.ctl.send(&Control::Run {
            bench,
            warmup: bench.warmup(count),
            count,
            cpu,
        })?;
        affinity::pinned(cpu, || match (bench.kind, bench.via) {
            (Kind::Connect, _) => self.connects(bench, count),
            (_, Via::Tcp) => drive(&mut *self.tcp, bench, count),
            _ => drive(&mut *self.unix, bench, count),
        })
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        quit_peer(&mut self.ctl, &mut self.child)
    }
}

/// The listeners of the peer (one value per process, so the size of the
/// larger variant does not matter).
#[allow(clippy::large_enum_variant)]
enum Listeners {
    Raw {
        unix: UnixListener,
        tcp: TcpListener,
        connect: UnixListener,
        paths: [PathBuf; 2],
    },
    Ipc {
        unix: Listener,
        tcp: Listener,
        connect: Listener,
    },
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if let Listeners::Raw { paths, .. } = self {
            for path in paths.iter() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Listeners {
    fn bind(ipc: bool) -> Result<Listeners> {
        let (data, connect) = (socket_path("data"), socket_path("connect"));
        for path in [&data, &connect] {
            let _ = std::fs::remove_file(path);
        }
        Ok(if ipc {
            Listeners::Ipc {
                unix: Listener::bind(Address::Unix(data), options())?,
                tcp: Listener::bind("127.0.0.1:0", options())?,
                connect: Listener::bind(Address::Unix(connect), options())?,
            }
        } else {
            Listeners::Raw {
                unix: UnixListener::bind(&data)?,
                tcp: TcpListener::bind("127.0.0.1:0")?,
                connect: UnixListener::bind(&connect)?,
                paths: [data, connect],
            }
        })
    }

    /// What the parent connects to: Unix data, TCP data, Unix connect.
    fn addresses(&self) -> Result<Vec<String>> {
        Ok(match self {
            Listeners::Raw { tcp, paths, .. } => vec![
                paths[0].display().to_string(),
                tcp.local_addr()?.to_string(),
                paths[1].display().to_string(),
            ],
            Listeners::Ipc {
                unix, tcp, connect, ..
            } => vec![
                unix.address().to_string(),
                tcp.address().to_string(),
                connect.address().to_string(),
            ],
        })
    }

    /// Accepts the two data connections.
    fn accept_data(&self) -> Result<(Box<dyn Link>, Box<dyn Link>)> {
        Ok(match self {
            Listeners::Raw { unix, tcp, .. } => {
                let u = unix.accept()?.0;
                let t = tcp.accept()?.0;
                t.set_nodelay(true)?;
                (
                    Box::new(Raw::new(OwnedFd::from(u), true)),
                    Box::new(Raw::new(OwnedFd::from(t), true)),
                )
            }
            Listeners::Ipc { unix, tcp, .. } => (
                Box::new(Bytes::new(unix.accept()?, false)),
                Box::new(Bytes::new(tcp.accept()?, false)),
            ),
        })
    }

    /// The peer's side of one connection of the connect benchmark.
    fn accept_once(&self) -> Result {
        match self {
            Listeners::Raw { connect, .. } => {
                let mut stream = connect.accept()?.0;
                let mut buf = [0u8; HANDSHAKE_MSG];
                for _ in 0..HANDSHAKE_ROUND_TRIPS {
                    stream.read_exact(&mut buf)?;
                    stream.write_all(&buf)?;
                }
            }
            Listeners::Ipc { connect, .. } => drop(connect.accept()?),
        }
        Ok(())
    }
}

/// The peer: binds, reports the addresses, accepts the data connections,
/// then answers benchmarks until told to quit.
fn peer(ipc: bool) -> Result {
    let mut ctl: Connection = inherited("ctl")?;
    let listeners = Listeners::bind(ipc)?;
    ctl.send(&listeners.addresses()?)?;
    let (mut unix, mut tcp) = listeners.accept_data()?;
    serve_runs(&mut ctl, |_, run| {
        let Run {
            bench,
            warmup,
            count,
            cpu,
        } = run;
        affinity::pinned(cpu, || match (bench.kind, bench.via) {
            (Kind::Connect, _) => {
                for _ in 0..warmup + count {
                    listeners.accept_once()?;
                }
                Ok(())
            }
            (_, Via::Tcp) => answer(&mut *tcp, bench, warmup, count),
            _ => answer(&mut *unix, bench, warmup, count),
        })
    })
}
