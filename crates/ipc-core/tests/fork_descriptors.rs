//! What a forked child holds: the handles it was passed, and nothing of the
//! parent's other descriptors, yet objects it captured without passing them
//! fail cleanly instead of aborting or reaching the parent's files.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipc_core::process::Process;
use ipc_core::{Connection, Error, FdStream};

fn pair() -> (Connection, Connection) {
    let (a, b) = UnixStream::pair().unwrap();
    (
        Connection::new(FdStream::new(OwnedFd::from(a)).unwrap()),
        Connection::new(FdStream::new(OwnedFd::from(b)).unwrap()),
    )
}

#[test]
fn captured_but_not_passed_handles_are_closed_in_the_child() {
    let (mut parent, mut unpassed) = pair();
    let (mut report, mut child_report) = pair();
    let mut child = Process::new()
        .allow_threads()
        .pass("report", &child_report)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            // Not passed: it must not reach the parent's socket.
            let send = unpassed.send_bytes(b"leak");
            let recv = unpassed.recv_bytes();
            child_report.send(&(send.is_err(), matches!(recv, Err(Error::Closed))))?;
            drop(unpassed);
            Ok(())
        })
        .unwrap();
    let (send_failed, recv_closed): (bool, bool) =
        report.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(send_failed && recv_closed);
    assert!(
        child.join().unwrap().success(),
        "the child aborted dropping a stale handle"
    );
    // Nothing the child did arrived on the parent's end: the closure (and
    // with it the parent's copy of `unpassed`) is gone, so the next receive
    // is the end of the stream, not "leak".
    assert!(matches!(
        parent.recv_bytes_timeout(Duration::from_secs(10)),
        Err(Error::Closed)
    ));
}

#[test]
fn the_parent_sees_eof_once_it_closes_its_own_end() {
    // The classic bug: a child that inherits the write end keeps the pipe
    // open, so the reader never sees EOF.
    let (mut reader, writer) = pair();
    let (mut done, child_done) = pair();
    let mut child = Process::new()
        .allow_threads()
        .pass("done", &child_done)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            let mut child_done = child_done;
            // Wait until the parent says it has finished, holding nothing.
            child_done.recv_bytes().map(drop)
        })
        .unwrap();
    drop(writer);
    assert!(matches!(
        reader.recv_bytes_timeout(Duration::from_secs(10)),
        Err(Error::Closed)
    ));
    done.send_bytes(b"").unwrap();
    assert!(child.join().unwrap().success());
}
