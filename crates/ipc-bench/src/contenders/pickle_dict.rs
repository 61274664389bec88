//! The small dict round trip ([`Via::PickleDict`]): a Rust parent sends
//! [`Job::example`], `{'job': 7, 'args': [1, 2, 3], 'name': 'square'}`,
//! with `Codec::Pickle` and receives it back into a [`Job`], from a Rust
//! peer that does the same, or from a Python peer that echoes it with
//! `conn.send(conn.recv())` on a `multiprocessing.connection.Connection`
//! over the descriptor it inherited (`pipe_bench.py --echo`). Python to
//! Python, the reference, is the `python Pipe` contender's `pickle-dict`
//! command.

use std::process::Command;
use std::time::Duration;

use ipc_core::process::{Child, Process};
use ipc_core::{Codec, Connection};
use serde::{Deserialize, Serialize};

use super::{drive, peer_cpu, pipe, python, Contender, Entry, Link};
use crate::affinity;
use crate::bench::{Benchmark, Result, Sample, Via};

/// Name of the contender with a Rust peer: the floor of the dict round trip.
pub const RUST_PEER: &str = "ipc-pipe pickle (Rust peer)";

/// Name of the contender with a Python peer.
pub const PYTHON_PEER: &str = "ipc-pipe pickle (Python peer)";

/// How long the Python peer may take to start and say which Python it is.
const PYTHON_START_PATIENCE: Duration = Duration::from_secs(30);

/// The message of the dict round trip: a struct on the Rust side, a dict
/// with these keys on the Python side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// A small integer.
    pub job: u64,
    /// A short list of small integers.
    pub args: Vec<i64>,
    /// A short string.
    pub name: String,
}

impl Job {
    /// `{'job': 7, 'args': [1, 2, 3], 'name': 'square'}`, the dict
    /// `pipe_bench.py` sends too.
    pub fn example() -> Job {
        Job {
            job: 7,
            args: vec![1, 2, 3],
            name: "square".to_owned(),
        }
    }
}

/// The registry entry of [`RUST_PEER`].
pub fn rust_peer_entry() -> Entry {
    Entry {
        name: RUST_PEER,
        about: "the dict round trip's floor: `ipc_pipe::duplex()` with \
                `set_codec(Codec::Pickle)` on both ends; each side `recv`s a \
                `struct Job { job: u64, args: Vec<i64>, name: String }` (checked against \
                the one expected) and `send`s it, a Rust peer",
        start: || pipe::start(RUST_PEER, Dict::new),
        peer: Some(|_| pipe::peer(Dict::new)),
        runs: |b| b.via == Via::PickleDict,
    }
}

/// The registry entry of [`PYTHON_PEER`].
pub fn python_peer_entry() -> Entry {
    Entry {
        name: PYTHON_PEER,
        about: "the dict round trip with a Python peer: the Rust parent as in `ipc-pipe \
                pickle (Rust peer)`; the peer is CPython started with \
                `Process::pass(\"data\", &end)?.exec(..)`, echoing with \
                `conn.send(conn.recv())` on a `multiprocessing.connection.Connection` \
                over the descriptor it finds in `IPC_HANDLES` (`pipe_bench.py --echo data`)",
        start: start_python_peer,
        peer: None,
        runs: |b| b.via == Via::PickleDict,
    }
}

/// One end of the dict round trip: sends [`Job::example`] and expects it
/// back, whole.
struct Dict {
    conn: Connection,
    message: Job,
}

impl Dict {
    fn new(mut conn: Connection) -> Dict {
        conn.set_codec(Codec::Pickle);
        Dict {
            conn,
            message: Job::example(),
        }
    }
}

impl Link for Dict {
    // The message is fixed, whatever the sizes say (the benchmark's are 0).
    fn prepare(&mut self, _send: usize, _recv: usize) {}

    fn send(&mut self) -> Result {
        Ok(self.conn.send(&self.message)?)
    }

    /// Returns 0, the benchmark's size: the message is a dict, not a payload
    /// of bytes, and what counts is that it came back equal.
    fn recv(&mut self) -> Result<usize> {
        let got: Job = self.conn.recv()?;
        if got != self.message {
            return Err(format!("sent {:?}, got back {got:?}", self.message).into());
        }
        Ok(0)
    }
}

/// The Rust parent of a Python peer that echoes every object it receives,
/// until this end closes.
struct PythonEcho {
    link: Dict,
    child: Child,
    version: String,
}

fn start_python_peer() -> Result<Option<Box<dyn Contender>>> {
    let (parent, child_end) = ipc_pipe::duplex()?;
    let mut command = Command::new("python3");
    command
        .arg(python::script("pipe_bench.py"))
        .args(["--echo", "data"]);
    let child = match Process::new().pass("data", &child_end)?.exec(command) {
        Ok(child) => child,
        Err(ipc_core::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("python3 not found: {PYTHON_PEER} is skipped");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    // Our copy would keep the pipe open if Python died before answering.
    drop(child_end);
    let mut link = Dict::new(parent);
    // The peer's first message, its version, also says it is ready.
    link.conn.set_read_timeout(Some(PYTHON_START_PATIENCE));
    let version: String = link.conn.recv()?;
    link.conn.set_read_timeout(None);
    Ok(Some(Box::new(PythonEcho {
        link,
        child,
        version,
    })))
}

impl Contender for PythonEcho {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        // The peer has no control connection to be told where to run: it
        // is placed from here, as the other peers place themselves.
        affinity::place(self.child.pid(), peer_cpu(bench, cpu))?;
        affinity::pinned(cpu, || drive(&mut self.link, bench, count))
    }

    fn describe(&self) -> Option<String> {
        Some(format!("Python {}", self.version))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let PythonEcho {
            link, mut child, ..
        } = *self;
        // End of file on its connection is the peer's signal to exit.
        drop(link);
        match child.join_timeout(Duration::from_secs(10))? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("the Python peer exited with {status}").into()),
            None => {
                child.kill()?;
                Err("the Python peer did not exit; killed".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_scripts_send_the_same_dict() {
        let script = std::fs::read_to_string(python::script("pipe_bench.py")).unwrap();
        let Job { job, args, name } = Job::example();
        let args: Vec<String> = args.iter().map(i64::to_string).collect();
        let literal = format!(
            "{{'job': {job}, 'args': [{}], 'name': '{name}'}}",
            args.join(", ")
        );
        assert!(script.contains(&literal), "{literal} not in pipe_bench.py");
    }

    #[test]
    fn the_dict_survives_the_pickle_codec() {
        let mut bytes = Vec::new();
        ipc_core::pickle::encode_into(&Job::example(), &mut bytes).unwrap();
        assert_eq!(
            ipc_core::pickle::decode::<Job>(&bytes).unwrap(),
            Job::example()
        );
    }
}
