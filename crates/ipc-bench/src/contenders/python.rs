//! Python's `multiprocessing.Pipe()` with `send_bytes` / `recv_bytes`,
//! measured by `python/pipe_bench.py` between a Python parent and its
//! `multiprocessing.Process` child.
//!
//! The script runs in `--serve` mode: it reads one command a line on stdin
//! (`pingpong SIZE WARMUP COUNT CPU`, `throughput SIZE COUNT CPU`, `quit`;
//! CPU is the one to pin both processes to, or -1) and
//! answers each with one JSON line in the form of a [`Sample`].

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use super::{Contender, Entry};
use crate::bench::{Benchmark, Kind, Result, Sample};

/// Name of the contender.
pub const NAME: &str = "python Pipe";

/// The registry entry of the contender.
pub fn entry() -> Entry {
    Entry {
        name: NAME,
        about: "CPython `multiprocessing.Pipe()` (default buffers), `send_bytes` / \
                `recv_bytes`, parent and a `multiprocessing.Process` child",
        start,
        peer: None,
    }
}

/// The benchmark script.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("pipe_bench.py")
}

fn start() -> Result<Option<Box<dyn Contender>>> {
    let spawned = Command::new("python3")
        .arg(script())
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("python3 not found: the Python contender is skipped");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut python = Python {
        child,
        stdin,
        stdout,
        version: String::new(),
    };
    let hello: serde_json::Value = serde_json::from_str(&python.line()?)?;
    python.version = hello["python"].as_str().unwrap_or("?").to_owned();
    Ok(Some(Box::new(python)))
}

/// The running script.
struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
}

impl Python {
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("pipe_bench.py exited".into());
        }
        Ok(line)
    }
}

impl Contender for Python {
    fn run(&mut self, bench: Benchmark, count: usize, cpu: Option<usize>) -> Result<Sample> {
        let size = bench.size;
        let cpu = cpu.map_or(-1, |c| c as i64);
        match bench.kind {
            Kind::PingPong => {
                let warmup = bench.warmup(count);
                writeln!(self.stdin, "pingpong {size} {warmup} {count} {cpu}")?
            }
            Kind::Throughput => writeln!(self.stdin, "throughput {size} {count} {cpu}")?,
        }
        self.stdin.flush()?;
        let line = self.line()?;
        serde_json::from_str(&line).map_err(|e| format!("pipe_bench.py said {line:?}: {e}").into())
    }

    fn describe(&self) -> Option<String> {
        Some(format!("Python {}", self.version))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        writeln!(self.stdin, "quit")?;
        self.stdin.flush()?;
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("pipe_bench.py exited with {status}").into())
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        self.child.wait()?;
        Err("pipe_bench.py did not exit; killed".into())
    }
}
