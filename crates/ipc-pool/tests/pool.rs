//! The pool across real worker processes: map and apply, a worker killed
//! in the middle of a task (that task alone fails, with the worker and the
//! signal; every other task completes and the pool keeps working), a task
//! that panics, and a parent with other threads.

use ipc_core::spawn::ChildFailure;
use ipc_core::Error;
use ipc_pool::Pool;

ipc_core::spawn_harness!();

fn square(x: u64) -> u64 {
    x * x
}

/// Squares, except that 13 kills its worker with SIGKILL and 14 aborts.
fn square_or_die(x: u64) -> u64 {
    match x {
        13 => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            unreachable!("SIGKILL ends the process");
        }
        14 => std::process::abort(),
        _ => x * x,
    }
}

fn square_or_panic(x: u64) -> u64 {
    assert!(x != 5, "five is not welcome");
    x * x
}

#[test]
fn map_and_apply_run_in_the_workers() {
    // Another thread in the parent is no obstacle: workers are spawned.
    let beside = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(100)));
    let mut pool = Pool::new(2).unwrap();
    assert_eq!(pool.processes(), 2);
    let squares = pool.map(ipc_core::entry!(square), 0..100u64).unwrap();
    assert_eq!(squares, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(pool.apply(ipc_core::entry!(square), &12).unwrap(), 144);
    assert!(pool
        .map(ipc_core::entry!(square), Vec::<u64>::new())
        .unwrap()
        .is_empty());
    pool.close().unwrap();
    beside.join().unwrap();
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_alone() {
    let mut pool = Pool::new(2).unwrap();
    let results = pool
        .map_each(ipc_core::entry!(square_or_die), 0..40u64)
        .unwrap();
    for (x, result) in results.iter().enumerate() {
        let x = x as u64;
        match (x, result) {
            (13, Err(Error::Child(f))) => assert!(
                matches!(
                    **f,
                    ChildFailure::WorkerDied {
                        signal: Some(9),
                        ..
                    }
                ),
                "{f}"
            ),
            (14, Err(Error::Child(f))) => assert!(
                matches!(
                    **f,
                    ChildFailure::WorkerDied {
                        signal: Some(6),
                        ..
                    }
                ),
                "{f}"
            ),
            (_, Ok(y)) => assert_eq!(*y, x * x),
            (_, other) => panic!("task {x}: {other:?}"),
        }
    }
    // Replacements took the dead workers' places.
    assert_eq!(pool.processes(), 2);
    assert_eq!(pool.map(ipc_core::entry!(square), 0..10u64).unwrap()[9], 81);
    // `map` reports the first failure in item order.
    assert!(matches!(
        pool.map(ipc_core::entry!(square_or_die), 10..15u64),
        Err(Error::Child(_))
    ));
}

#[test]
fn a_panicking_task_fails_alone_with_its_message() {
    let mut pool = Pool::new(2).unwrap();
    let results = pool
        .map_each(ipc_core::entry!(square_or_panic), 0..10u64)
        .unwrap();
    for (x, result) in results.into_iter().enumerate() {
        match result {
            Ok(y) => assert_eq!(y, (x * x) as u64),
            Err(Error::Child(f)) => {
                assert_eq!(x, 5);
                assert!(matches!(*f, ChildFailure::Panicked(ref m) if m == "five is not welcome"));
            }
            Err(e) => panic!("{x}: {e}"),
        }
    }
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
}
