//! A queue handed to a freshly exec'd program (the dependable start
//! method): the child rebuilds it with `inherited` and checks the header
//! again. The child is this test binary, started to run only
//! `exec_child_entry`.

use std::process::Command;

use ipc_core::process::{has_inherited_handles, inherited, Process};
use ipc_core::Error;
use ipc_queue::{JoinableQueue, Queue};
use ipc_testkit::{exists, PATIENCE};

/// In the exec'd child: echo every number doubled onto `out` and mark it
/// done on `jobs`, until `jobs` is closed. Without inherited handles (run
/// as a normal test) it does nothing.
#[test]
fn exec_child_entry() {
    if !has_inherited_handles() {
        return;
    }
    let jobs: JoinableQueue<u64> = inherited("jobs").expect("inherit jobs");
    let out: Queue<u64> = inherited("out").expect("inherit out");
    loop {
        match jobs.get_timeout(PATIENCE) {
            Ok(n) => {
                out.put(n * 2).expect("put");
                jobs.task_done().expect("task_done");
            }
            Err(Error::Closed) => break,
            Err(e) => panic!("child get: {e:?}"),
        }
    }
}

#[test]
fn an_execd_child_rebuilds_anonymous_and_named_queues() {
    let name = format!("ipct_{}_exec", std::process::id());
    let jobs = JoinableQueue::<u64>::new().unwrap();
    let out = Queue::<u64>::builder().create(&name).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", "exec_child_entry", "--nocapture"]);
    let mut child = Process::new()
        .pass("jobs", &jobs)
        .unwrap()
        .pass("out", &out)
        .unwrap()
        .exec(command)
        .unwrap();
    for n in 0..100 {
        jobs.put(n).unwrap();
    }
    jobs.join_timeout(PATIENCE).unwrap();
    for n in 0..100 {
        assert_eq!(out.get_timeout(PATIENCE).unwrap(), n * 2);
    }
    jobs.close().unwrap();
    let status = child.join_timeout(PATIENCE).unwrap().expect("child hangs");
    assert!(status.success(), "{status:?}");
    drop(out);
    assert!(!exists(&name));
}
