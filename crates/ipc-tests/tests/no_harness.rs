//! A test crate that forgot `spawn_harness!`: a re-executed child of it
//! runs libtest's `main`, not the entry. Each start method that re-executes
//! says so clearly, instead of hanging or re-running the program over and
//! over.

use ipc_core::process::Process;
use ipc_core::spawn::{ChildFailure, StartMethod};
use ipc_core::Error;
use ipc_tests::PATIENCE;

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn spawn_and_forkserver_without_the_harness_are_clear_errors() {
    let child = Process::new()
        .start(StartMethod::Spawn, ipc_core::entry!(square), &3)
        .unwrap();
    match child.join_timeout(PATIENCE) {
        Err(Error::Child(failure)) => {
            assert_eq!(*failure, ChildFailure::Exited(0));
            assert!(failure.to_string().contains("spawn_harness!"), "{failure}");
        }
        other => panic!("expected the child to exit without a result, got {other:?}"),
    }
    let refused = Process::new().start(StartMethod::Forkserver, ipc_core::entry!(square), &3);
    match refused {
        Err(e) => assert!(e.to_string().contains("spawn_harness!"), "{e}"),
        Ok(_) => panic!("a forkserver started without the harness"),
    }
}
