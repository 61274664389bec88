//! The start methods across real processes: a child (a fresh run of this
//! test binary, a fork of the forkserver, a fork of this process) runs a
//! registered function on a typed argument and hands back its typed result,
//! with the handles it was passed; a panic, an abort, an exit, an argument
//! of the wrong type and an unknown name are each a clear error, whatever
//! the method. Spawn and forkserver need nothing of the parent's threads;
//! fork is refused beside them unless the caller accepts the hazard.

use std::time::Duration;

use ipc_core::process::{inherited, Process};
use ipc_core::spawn::{ChildFailure, Entry, StartMethod};
use ipc_core::{Connection, Error, FdStream};
use ipc_tests::PATIENCE;

ipc_core::spawn_harness!();

fn square(x: u64) -> u64 {
    x * x
}

fn panics(message: String) -> u8 {
    panic!("{message}");
}

fn aborts(_: ()) -> u8 {
    std::process::abort();
}

fn exits(code: i32) -> u8 {
    std::process::exit(code);
}

/// Echoes what arrives on the connection the parent passed, doubled.
fn doubles_on_the_connection(_: ()) -> u32 {
    let mut conn: Connection<FdStream> = inherited("conn").expect("the passed connection");
    let mut n = 0;
    while let Ok(x) = conn.recv::<u64>() {
        conn.send(&(x * 2)).expect("send");
        n += 1;
    }
    n
}

/// Every start method, each with a `Process` it may use here: libtest
/// runs this test on a thread of its own, beside a main thread parked
/// waiting for it, which is the hazard fork's opt-in accepts.
const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Forkserver,
    StartMethod::Fork,
];

fn process(method: StartMethod) -> Process {
    match method {
        StartMethod::Fork => Process::new().allow_threads(),
        _ => Process::new(),
    }
}

fn failure<R: std::fmt::Debug>(result: ipc_core::Result<R>) -> ChildFailure {
    match result {
        Err(Error::Child(failure)) => *failure,
        other => panic!("expected a child failure, got {other:?}"),
    }
}

#[test]
fn a_spawned_child_runs_a_registered_function_and_returns_its_result() {
    // Other threads in the parent are no obstacle, unlike for fork.
    let busy = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
    let child = Process::new().spawn(ipc_core::entry!(square), &7).unwrap();
    assert_eq!(child.join_timeout(PATIENCE).unwrap(), 49);
    busy.join().unwrap();
}

#[test]
fn every_method_runs_the_entry_and_returns_its_result() {
    for method in METHODS {
        let child = process(method)
            .start(method, ipc_core::entry!(square), &9)
            .unwrap();
        assert_eq!(child.join_timeout(PATIENCE).unwrap(), 81, "{method:?}");
    }
}

#[test]
fn handles_are_passed_whatever_the_method() {
    for method in METHODS {
        let (mut ours, theirs) = ipc_pipe::duplex().unwrap();
        let child = process(method)
            .pass("conn", &theirs)
            .unwrap()
            .start(method, ipc_core::entry!(doubles_on_the_connection), &())
            .unwrap();
        drop(theirs);
        for x in 1..=3u64 {
            ours.send(&x).unwrap();
            assert_eq!(ours.recv::<u64>().unwrap(), 2 * x, "{method:?}");
        }
        // The child holds the only other end: closing ours ends its loop.
        drop(ours);
        assert_eq!(child.join_timeout(PATIENCE).unwrap(), 3, "{method:?}");
    }
}

#[test]
fn a_panic_an_abort_and_an_exit_are_told_apart() {
    for method in METHODS {
        let child = process(method)
            .start(method, ipc_core::entry!(panics), &"no luck".to_owned())
            .unwrap();
        assert_eq!(
            failure(child.join_timeout(PATIENCE)),
            ChildFailure::Panicked("no luck".to_owned()),
            "{method:?}"
        );
        let child = process(method)
            .start(method, ipc_core::entry!(aborts), &())
            .unwrap();
        assert_eq!(
            failure(child.join_timeout(PATIENCE)),
            ChildFailure::Signaled(libc::SIGABRT),
            "{method:?}"
        );
        let child = process(method)
            .start(method, ipc_core::entry!(exits), &3)
            .unwrap();
        assert_eq!(
            failure(child.join_timeout(PATIENCE)),
            ChildFailure::Exited(3),
            "{method:?}"
        );
    }
}

#[test]
fn a_wrong_argument_type_and_an_unknown_name_are_clear_errors() {
    let square = ipc_core::entry!(square);
    // The same entry, typed wrongly by the caller: the child cannot decode.
    let wrong: Entry<String, u64> = Entry::named(square.name()).unwrap();
    for method in METHODS {
        let child = process(method)
            .start(method, wrong, &"not a number at all, and long".to_owned())
            .unwrap();
        assert!(
            matches!(
                failure(child.join_timeout(PATIENCE)),
                ChildFailure::Codec(_)
            ),
            "{method:?}"
        );
    }
    assert!(matches!(
        Entry::<u64, u64>::named("no::such::entry"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn fork_beside_another_thread_is_refused_unless_accepted() {
    // This test's own thread and libtest's main thread are two already.
    let refused = Process::new().start(StartMethod::Fork, ipc_core::entry!(square), &2);
    assert!(
        matches!(refused, Err(Error::ThreadedFork { threads }) if threads >= 2),
        "{refused:?}"
    );
    let child = Process::new()
        .allow_threads()
        .start(StartMethod::Fork, ipc_core::entry!(square), &2)
        .unwrap();
    assert_eq!(child.join_timeout(PATIENCE).unwrap(), 4);
}

#[test]
fn a_parent_waits_for_a_message_or_a_child_exit_in_one_call() {
    let (mut ours, theirs) = ipc_pipe::duplex().unwrap();
    for method in METHODS {
        // One child answers on the connection, another only exits.
        let answering = process(method)
            .pass("conn", &theirs)
            .unwrap()
            .start(method, ipc_core::entry!(doubles_on_the_connection), &())
            .unwrap();
        let exiting = process(method)
            .start(method, ipc_core::entry!(exits), &0)
            .unwrap();
        ours.send(&21u64).unwrap();
        let (mut answered, mut exited) = (false, false);
        while !(answered && exited) {
            let ready = ipc_core::wait(&[&ours, &exiting], PATIENCE).unwrap();
            assert!(!ready.is_empty(), "{method:?}: nothing within the patience");
            if ready.contains(&0) {
                assert_eq!(ours.recv::<u64>().unwrap(), 42, "{method:?}");
                answered = true;
            }
            exited |= ready.contains(&1);
        }
        assert_eq!(
            failure(exiting.join_timeout(PATIENCE)),
            ChildFailure::Exited(0)
        );
        // Dropping a child that has not been joined kills and reaps it.
        drop(answering);
    }
}
