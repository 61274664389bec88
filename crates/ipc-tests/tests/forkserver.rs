//! The forkserver's own life: a child is forked by the server, not by
//! this process; a server that was killed is noticed at the next request
//! and replaced. In a test binary of its own, since killing the server of
//! a process would fail the requests other tests make to it meanwhile.

use std::time::Duration;

use ipc_core::process::Process;
use ipc_core::spawn::StartMethod;
use ipc_tests::PATIENCE;

ipc_core::spawn_harness!();

/// The pid of the process that started this one.
fn parent_pid(_: ()) -> u32 {
    std::os::unix::process::parent_id()
}

/// Waits until every thread of the process `pid` has died (its descriptors
/// are closed then), looking at their states in /proc; fails the test after
/// the patience. The leader of a killed process shows as a zombie while its
/// other threads may still be exiting.
fn wait_until_dead(pid: u32) {
    let state = |stat: String| stat[stat.rfind(')')? + 2..].chars().next();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let alive = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks.filter_map(|task| task.ok()).any(|task| {
                    let stat =
                        std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    !matches!(state(stat), None | Some('Z' | 'X'))
                })
            })
            .unwrap_or(false);
        if !alive {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not die"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_forkserver_child_is_forked_by_the_server_which_is_replaced_if_killed() {
    // Other threads in the parent are no obstacle.
    let busy = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
    ipc_core::forkserver::start().unwrap();
    let server = ipc_core::forkserver::server_pid().expect("a running server");
    let child = Process::new()
        .start(StartMethod::Forkserver, ipc_core::entry!(parent_pid), &())
        .unwrap();
    assert_ne!(child.pid(), server);
    assert_eq!(child.join_timeout(PATIENCE).unwrap(), server);
    busy.join().unwrap();

    // A killed server is noticed at the next request and replaced.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until_dead(server);
    let child = Process::new()
        .start(StartMethod::Forkserver, ipc_core::entry!(parent_pid), &())
        .unwrap();
    let replacement = child.join_timeout(PATIENCE).unwrap();
    assert_ne!(replacement, server);
    assert_eq!(ipc_core::forkserver::server_pid(), Some(replacement));
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_forked_child_starts_a_forkserver_of_its_own() {
    ipc_core::forkserver::start().unwrap();
    let parents = ipc_core::forkserver::server_pid().expect("a running server");
    let mut child = Process::new()
        .allow_threads()
        .fork(move || {
            // The parent's server is not this process's to use.
            let ours = Process::new()
                .start(StartMethod::Forkserver, ipc_core::entry!(square), &6)
                .and_then(|child| child.join_timeout(PATIENCE));
            let server = ipc_core::forkserver::server_pid();
            // A forked child leaves by `_exit`, without the exit handler
            // that reaps the server: stop it here.
            let stopped = ipc_core::forkserver::stop().is_ok();
            i32::from(
                !(ours.ok() == Some(36) && server.is_some() && server != Some(parents) && stopped),
            )
        })
        .unwrap();
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
}
