//! The child-process helpers of `ipc_core::process`: exit codes of forked
//! children, exactly the passed descriptors crossing an exec, rebuilding
//! handles with `inherited`, `join_timeout`, `kill`, `terminate`, reaping
//! on drop, and forked children closing what they were not passed.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use ipc_core::process::{Child, Process};
use ipc_pipe::Error;
use ipc_tests::{join, join_ok, FdReport, PATIENCE};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

fn child_program(mode: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipc-test-child"));
    command.arg(mode);
    command
}

// Python: Process.exitcode is 0 for a normal return, sys.exit(n) gives n,
// an exception gives 1.
#[test]
fn forked_children_exit_with_their_outcome() {
    let code = |mut child: Child| join(&mut child).code();
    assert_eq!(
        code(Process::new().allow_threads().fork(|| ()).unwrap()),
        Some(0)
    );
    assert_eq!(
        code(Process::new().allow_threads().fork(|| 7).unwrap()),
        Some(7)
    );
    assert_eq!(
        code(
            Process::new()
                .allow_threads()
                .fork(|| -> Result<(), String> { Ok(()) })
                .unwrap()
        ),
        Some(0)
    );
    assert_eq!(
        code(
            Process::new()
                .allow_threads()
                .fork(|| -> Result<(), String> { Err("expected failure".into()) })
                .unwrap()
        ),
        Some(1)
    );
    assert_eq!(
        code(
            Process::new()
                .allow_threads()
                .fork(|| -> i32 { panic!("expected panic in a child") })
                .unwrap()
        ),
        Some(101)
    );
}

/// Every descriptor of this process that would survive an exec (no
/// close-on-exec flag): whatever the test harness left open.
fn inheritable_fds() -> Vec<RawFd> {
    ipc_tests::open_fds()
        .into_iter()
        .filter(|&fd| ipc_tests::fd_is_inheritable(fd))
        .collect()
}

// Only the handles given to `pass` cross the exec: the child finds the
// descriptor it was passed, and the numbers of other descriptors the parent
// had open (other pipes, a file) are not open in it (EBADF).
#[test]
fn an_exec_child_gets_exactly_the_passed_descriptors() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let (other_a, other_b) = ipc_pipe::duplex().unwrap();
    let (one_way_r, one_way_w) = ipc_pipe::one_way().unwrap();
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let not_passed: Vec<RawFd> = vec![
        parent.as_fd().as_raw_fd(),
        child_end.as_fd().as_raw_fd(),
        other_a.as_fd().as_raw_fd(),
        other_b.as_fd().as_raw_fd(),
        one_way_r.as_fd().as_raw_fd(),
        one_way_w.as_fd().as_raw_fd(),
        file.as_raw_fd(),
    ];
    let leaked_by_harness = inheritable_fds();
    let mut child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(child_program("fds"))
        .unwrap();
    drop(child_end);
    parent.send(&not_passed).unwrap();
    let report: FdReport = parent.recv_timeout(PATIENCE).unwrap();
    join_ok(&mut child);

    for (fd, open) in &report.probed {
        assert!(
            !open,
            "descriptor {fd} of the parent is open in the child: {report:?}"
        );
    }
    assert_eq!(report.probed.len(), not_passed.len());
    let mut expected: Vec<RawFd> = (0..3)
        .chain([report.conn_fd])
        .chain(leaked_by_harness)
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let unexpected: Vec<RawFd> = report
        .open
        .iter()
        .copied()
        .filter(|fd| !expected.contains(fd))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the child has descriptors nobody passed: {unexpected:?} ({report:?})"
    );
    assert!(report.open.contains(&report.conn_fd));
}

// `inherited` rebuilds a passed handle once; a key that was not passed,
// or a handle taken twice, is NotFound.
#[test]
fn inherited_handles_are_taken_once_and_missing_ones_not_found() {
    let (mut parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(child_program("handles"))
        .unwrap();
    drop(child_end);
    assert_eq!(parent.recv_timeout::<String>(PATIENCE).unwrap(), "ok");
    join_ok(&mut child);
}

#[test]
fn handle_keys_must_be_plain() {
    let (_a, b) = ipc_pipe::duplex().unwrap();
    for key in ["", "a=b", "a;b", "a:b", "space key", "ключ"] {
        assert!(
            matches!(Process::new().pass(key, &b), Err(Error::InvalidArgument(_))),
            "key {key:?} was accepted"
        );
    }
    assert!(Process::new().pass("ok_key-1.2", &b).is_ok());
}

// Python: join(timeout) returns with the process still alive; a later join
// sees the exit.
#[test]
fn join_timeout_is_none_while_running_and_some_after() {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || child_end.recv_bytes().map(drop))
        .unwrap();
    assert!(child.is_alive().unwrap());
    assert!(child.try_join().unwrap().is_none());
    let start = Instant::now();
    assert!(child
        .join_timeout(Duration::from_millis(100))
        .unwrap()
        .is_none());
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "join_timeout returned early"
    );
    assert!(child.exit_status().is_none());
    parent.send_bytes(b"exit").unwrap();
    let status = child
        .join_timeout(PATIENCE)
        .unwrap()
        .expect("the child exited");
    assert!(status.success());
    assert_eq!(child.exit_status(), Some(status));
    assert!(!child.is_alive().unwrap());
    // Joining again returns the same status.
    assert_eq!(child.join().unwrap(), status);
    assert_eq!(child.join_timeout(Duration::ZERO).unwrap(), Some(status));
}

// Python: Process.kill() sends SIGKILL; exitcode is -SIGKILL.
#[test]
fn kill_ends_a_child_stuck_in_recv() {
    let (_parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || child_end.recv_bytes().map(drop))
        .unwrap();
    assert!(child
        .join_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
    child.kill().unwrap();
    let status = join(&mut child);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
    assert_eq!(status.code(), None);
    // Killing a child that is gone is not an error.
    child.kill().unwrap();
}

#[test]
fn kill_ends_an_exec_child_stuck_in_recv() {
    let (_parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(child_program("block"))
        .unwrap();
    drop(child_end);
    assert!(child
        .join_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
    child.kill().unwrap();
    let status = join(&mut child);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
}

// Python: Process.terminate() sends SIGTERM.
#[test]
fn terminate_sends_sigterm() {
    let (_parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || child_end.recv_bytes().map(drop))
        .unwrap();
    child.terminate().unwrap();
    let status = join(&mut child);
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
}

/// Dropping a child that was never joined kills and reaps it: afterwards
/// the pid is neither a zombie of ours nor a live process.
fn assert_gone_after_drop(child: Child) {
    let pid = Pid::from_raw(child.pid() as i32);
    drop(child);
    assert_eq!(
        waitpid(pid, Some(WaitPidFlag::WNOHANG)),
        Err(Errno::ECHILD),
        "the child was not reaped"
    );
    assert_eq!(
        kill(pid, None),
        Err(Errno::ESRCH),
        "the child is still there"
    );
}

#[test]
fn dropping_an_unjoined_forked_child_kills_and_reaps_it() {
    let (_parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || child_end.recv_bytes().map(drop))
        .unwrap();
    assert_gone_after_drop(child);
}

#[test]
fn dropping_an_unjoined_exec_child_kills_and_reaps_it() {
    let (_parent, child_end) = ipc_pipe::duplex().unwrap();
    let child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(child_program("block"))
        .unwrap();
    assert_gone_after_drop(child);
}

#[test]
fn dropping_a_child_that_already_exited_reaps_it() {
    let child = Process::new().allow_threads().fork(|| 3).unwrap();
    // Wait for the exit without reaping: the pidfd becomes readable.
    let ready = ipc_core::wait(&[&child], PATIENCE).unwrap();
    assert_eq!(ready, [0]);
    assert!(child.exit_status().is_none());
    assert_gone_after_drop(child);
}

// The classic bug: a child that inherited the write end of a pipe keeps
// the reader from ever seeing EOF. A forked child closes every descriptor
// it was not passed, so when the parent closes its writer the reader gets
// EOF while the child still runs.
#[test]
fn a_forked_child_does_not_keep_unpassed_descriptors_open() {
    let (mut reader, writer) = ipc_pipe::one_way().unwrap();
    let (mut ctl, mut ctl_child) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("ctl", &ctl_child)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            ctl_child.send_bytes(b"started")?;
            // Run until the parent says so.
            ctl_child.recv_bytes().map(drop)
        })
        .unwrap();
    assert_eq!(ctl.recv_bytes_timeout(PATIENCE).unwrap(), b"started");
    drop(writer);
    match reader.recv_bytes_timeout(PATIENCE) {
        Err(Error::Closed) => {}
        Err(Error::Timeout) => panic!("no EOF: the child kept the write end open"),
        other => panic!("{other:?}"),
    }
    assert!(
        child.is_alive().unwrap(),
        "the child should still be running"
    );
    ctl.send_bytes(b"exit").unwrap();
    join_ok(&mut child);
}

/// The same for an exec'd child: the descriptors of this workspace are
/// close-on-exec, so the writer is not kept open by the child either.
#[test]
fn an_exec_child_does_not_keep_unpassed_descriptors_open() {
    let (mut reader, writer) = ipc_pipe::one_way().unwrap();
    let (_parent, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = Process::new()
        .pass("conn", &child_end)
        .unwrap()
        .exec(child_program("block"))
        .unwrap();
    drop(writer);
    match reader.recv_bytes_timeout(PATIENCE) {
        Err(Error::Closed) => {}
        Err(Error::Timeout) => panic!("no EOF: the child kept the write end open"),
        other => panic!("{other:?}"),
    }
    assert!(child.is_alive().unwrap());
    child.kill().unwrap();
    join(&mut child);
}

/// A forked child keeps the passed descriptors and the standard streams;
/// an object its closure captured without passing it is cut off from the
/// parent's file (a dead socket): sending on it is `Closed` and reaches
/// nobody, receiving on it is `Closed`.
#[test]
fn a_forked_child_keeps_what_it_was_passed_and_nothing_else() {
    let (mut parent, mut child_end) = ipc_pipe::duplex().unwrap();
    let (mut other, mut other_peer) = ipc_pipe::duplex().unwrap();
    // `other_peer` is captured below but not passed.
    let passed = child_end.as_fd().as_raw_fd();
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            let std_open: Vec<bool> = (0..3).map(ipc_tests::fd_is_open).collect();
            let passed_open = ipc_tests::fd_is_open(passed);
            let send = format!("{:?}", other_peer.send_bytes(b"leak"));
            let recv = format!("{:?}", other_peer.recv_bytes_timeout(PATIENCE).map(drop));
            child_end.send(&(std_open, passed_open, send, recv))
        })
        .unwrap();
    let report: (Vec<bool>, bool, String, String) = parent.recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        report,
        (
            vec![true; 3],
            true,
            "Err(Closed)".to_owned(),
            "Err(Closed)".to_owned()
        )
    );
    join_ok(&mut child);
    // Nothing the child did reached the parent's socket, and with the
    // parent's copy of `other_peer` gone (moved into the closure) it ends.
    match other.recv_bytes_timeout(PATIENCE) {
        Err(Error::Closed) => {}
        got => panic!("the unpassed end reached the parent: {got:?}"),
    }
}

#[test]
fn fork_is_refused_beside_other_threads_unless_allowed() {
    // The test harness already runs this test on a thread of its own; one
    // more thread makes the count certain.
    let parked = std::thread::spawn(std::thread::park);
    match Process::new().fork(|| 0) {
        Err(Error::ThreadedFork { threads }) => assert!(threads >= 2, "{threads}"),
        other => panic!("expected ThreadedFork, got {other:?}"),
    }
    let mut child = Process::new().allow_threads().fork(|| 3).unwrap();
    assert_eq!(child.join().unwrap().code(), Some(3));
    parked.thread().unpark();
    parked.join().unwrap();
}
