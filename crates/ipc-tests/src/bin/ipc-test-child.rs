//! The helper program the integration tests start with `Process::exec`, so
//! a child is a fresh program that rebuilds its connection from the
//! inherited handle `conn` (`ipc_core::process::inherited`).
//!
//! Usage: `ipc-test-child MODE [ARG]`, where MODE is
//! - `echo`: send every byte message back until the peer closes;
//! - `count N`: send the numbers `0..N` as typed `u64` messages;
//! - `fds`: receive a list of descriptor numbers, probe each with
//!   `fcntl(F_GETFD)` and reply with an [`ipc_tests::FdReport`];
//! - `handles`: check that a missing handle and a handle taken twice are
//!   `NotFound`, then reply `"ok"`;
//! - `block`: wait for a message for ever (for the kill tests).
//!
//! It exits with 0 on success, 1 on an error, 2 on bad usage.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::ExitCode;

use ipc_core::process::inherited;
use ipc_core::{Connection, Error, Result};
use ipc_tests::FdReport;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo") => echo(),
        Some("count") => match args.get(1).and_then(|n| n.parse().ok()) {
            Some(n) => count(n),
            None => return usage(),
        },
        Some("fds") => fds(),
        Some("handles") => handles(),
        Some("block") => block(),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-test-child: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: ipc-test-child echo | count N | fds | handles | block");
    ExitCode::from(2)
}

fn conn() -> Result<Connection> {
    inherited("conn")
}

fn echo() -> Result<()> {
    let mut conn = conn()?;
    loop {
        match conn.recv_bytes() {
            Ok(msg) => conn.send_bytes(&msg)?,
            Err(Error::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn count(n: u64) -> Result<()> {
    let mut conn = conn()?;
    (0..n).try_for_each(|i| conn.send(&i))
}

fn fds() -> Result<()> {
    let mut conn = conn()?;
    let asked: Vec<RawFd> = conn.recv()?;
    let report = FdReport {
        conn_fd: conn.as_fd().as_raw_fd(),
        open: ipc_tests::open_fds(),
        probed: asked
            .into_iter()
            .map(|fd| (fd, ipc_tests::fd_is_open(fd)))
            .collect(),
    };
    conn.send(&report)
}

fn handles() -> Result<()> {
    match inherited::<Connection>("not-passed") {
        Err(Error::NotFound(_)) => {}
        other => {
            return Err(Error::Io(std::io::Error::other(format!(
                "a handle that was not passed: {other:?}"
            ))))
        }
    }
    let mut conn = conn()?;
    match inherited::<Connection>("conn") {
        Err(Error::NotFound(_)) => {}
        other => {
            return Err(Error::Io(std::io::Error::other(format!(
                "a handle taken twice: {other:?}"
            ))))
        }
    }
    conn.send("ok")
}

fn block() -> Result<()> {
    let mut conn = conn()?;
    let _: Vec<u8> = conn.recv_bytes()?;
    Ok(())
}
