//! The spawn start method across real processes: a fresh run of this test
//! binary runs a registered function on a typed argument and hands back its
//! typed result, from a parent with several threads; a panic, an abort, an
//! exit, an argument of the wrong type and an unknown name are each a clear
//! error.

use std::time::Duration;

use ipc_core::process::{inherited, Process};
use ipc_core::spawn::{ChildFailure, Entry};
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
fn handles_are_passed_to_a_spawned_child() {
    let (mut ours, theirs) = ipc_pipe::duplex().unwrap();
    let child = Process::new()
        .pass("conn", &theirs)
        .unwrap()
        .spawn(ipc_core::entry!(doubles_on_the_connection), &())
        .unwrap();
    drop(theirs);
    for x in 1..=3u64 {
        ours.send(&x).unwrap();
        assert_eq!(ours.recv::<u64>().unwrap(), 2 * x);
    }
    drop(ours);
    assert_eq!(child.join_timeout(PATIENCE).unwrap(), 3);
}

#[test]
fn a_panic_an_abort_and_an_exit_are_told_apart() {
    let child = Process::new()
        .spawn(ipc_core::entry!(panics), &"no luck".to_owned())
        .unwrap();
    assert_eq!(
        failure(child.join_timeout(PATIENCE)),
        ChildFailure::Panicked("no luck".to_owned())
    );
    let child = Process::new().spawn(ipc_core::entry!(aborts), &()).unwrap();
    assert_eq!(
        failure(child.join_timeout(PATIENCE)),
        ChildFailure::Signaled(libc::SIGABRT)
    );
    let child = Process::new().spawn(ipc_core::entry!(exits), &3).unwrap();
    assert_eq!(
        failure(child.join_timeout(PATIENCE)),
        ChildFailure::Exited(3)
    );
}

#[test]
fn a_wrong_argument_type_and_an_unknown_name_are_clear_errors() {
    let square = ipc_core::entry!(square);
    // The same entry, typed wrongly by the caller: the child cannot decode.
    let wrong: Entry<String, u64> = Entry::named(square.name()).unwrap();
    let child = Process::new()
        .spawn(wrong, &"not a number at all, and long".to_owned())
        .unwrap();
    assert!(matches!(
        failure(child.join_timeout(PATIENCE)),
        ChildFailure::Codec(_)
    ));
    assert!(matches!(
        Entry::<u64, u64>::named("no::such::entry"),
        Err(Error::NotFound(_))
    ));
}
