//! The rows of CPython's `_TestQueue` and `TestSimpleQueue` that apply to
//! a queue, run against ipc-queue with real child processes.

use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_core::Error;
use ipc_queue::{JoinableQueue, Queue, SimpleQueue};
use ipc_testkit::{assert_waited, join_ok, wait_until_asleep, PATIENCE, SHORT};

fn assert_quick(start: Instant) {
    let took = start.elapsed();
    assert!(took < Duration::from_millis(50), "took {took:?}");
}

/// `_TestQueue.test_put`.
#[test]
fn put_on_a_full_queue() {
    let q = Queue::<i32>::with_maxsize(6).unwrap();
    assert!(q.empty());
    assert!(!q.full());
    q.put(1).unwrap();
    q.put_timeout(2, Duration::from_secs(1)).unwrap();
    q.put_nowait(3).unwrap();
    q.put(4).unwrap();
    q.put_nowait(5).unwrap();
    q.put_timeout(6, Duration::from_secs(1)).unwrap();
    assert!(!q.empty());
    assert!(q.full());
    assert_eq!(q.qsize(), 6);

    let start = Instant::now();
    let err = q.put_nowait(7).unwrap_err();
    assert!(matches!(err.error, Error::Full), "{err:?}");
    assert_eq!(err.into_inner(), 7);
    assert_quick(start);

    let start = Instant::now();
    let err = q.put_timeout(7, SHORT).unwrap_err();
    assert!(matches!(err.error, Error::Timeout), "{err:?}");
    assert_eq!(err.item, 7);
    assert_waited(start, SHORT);

    // A child drains it.
    let mut child = Process::new()
        .allow_threads()
        .pass("q", &q)
        .unwrap()
        .fork({
            let q = &q;
            move || -> ipc_core::Result<()> {
                for expected in 1..=6 {
                    assert_eq!(q.get_timeout(PATIENCE)?, expected);
                }
                Ok(())
            }
        })
        .unwrap();
    join_ok(&mut child);
    assert!(q.empty());
    assert!(!q.full());
}

/// `_TestQueue.test_get` / `test_timeout`.
#[test]
fn get_in_fifo_order_and_on_an_empty_queue() {
    let q = Queue::<i32>::new().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("q", &q)
        .unwrap()
        .fork({
            let q = &q;
            move || -> ipc_core::Result<()> {
                for i in 1..=5 {
                    q.put(i)?;
                }
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 2);
    assert_eq!(q.get().unwrap(), 3);
    join_ok(&mut child);
    assert_eq!(q.get_nowait().unwrap(), 4);
    assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 5);
    assert!(q.empty());

    let start = Instant::now();
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    assert_quick(start);

    let start = Instant::now();
    assert!(matches!(q.get_timeout(SHORT), Err(Error::Timeout)));
    assert_waited(start, SHORT);

    let start = Instant::now();
    let long = Duration::from_millis(200);
    assert!(matches!(q.get_timeout(long), Err(Error::Timeout)));
    assert_waited(start, long);
}

/// `_TestQueue.test_fork`: the parent's items, then a child's, each in
/// order; then Empty.
#[test]
fn parent_and_child_items_all_arrive() {
    let q = Queue::<i32>::new().unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    let mut child = Process::new()
        .allow_threads()
        .pass("q", &q)
        .unwrap()
        .fork({
            let q = &q;
            move || -> ipc_core::Result<()> {
                for i in 10..20 {
                    q.put(i)?;
                }
                Ok(())
            }
        })
        .unwrap();
    join_ok(&mut child);
    let got: Vec<i32> = (0..20).map(|_| q.get_timeout(PATIENCE).unwrap()).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

/// `_TestQueue.test_qsize`.
#[test]
fn qsize_counts() {
    let q = Queue::<u8>::new().unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(5).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize(), 0);
}

/// `_TestQueue.test_closed_queue_put_get_exceptions`, for Queue and
/// JoinableQueue: after close, put fails and get (once drained) too.
#[test]
fn closed_queues_refuse_puts_and_gets() {
    let q = Queue::<i32>::new().unwrap();
    q.put(1).unwrap();
    q.close().unwrap();
    assert!(q.is_closed());
    let err = q.put(2).unwrap_err();
    assert!(matches!(err.error, Error::Closed), "{err:?}");
    assert_eq!(err.item, 2);
    assert_eq!(
        q.get().unwrap(),
        1,
        "what was there before close is drained"
    );
    assert!(matches!(q.get(), Err(Error::Closed)));
    assert!(matches!(q.get_nowait(), Err(Error::Closed)));

    let j = JoinableQueue::<i32>::new().unwrap();
    j.close().unwrap();
    assert!(matches!(j.put(1).unwrap_err().error, Error::Closed));
    assert!(matches!(j.get(), Err(Error::Closed)));
}

/// A getter asleep on an empty queue wakes when another process closes it.
#[test]
fn close_wakes_a_blocked_getter() {
    let q = Queue::<i32>::new().unwrap();
    let started = ipc_shm::Event::new().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("q", &q)
        .unwrap()
        .pass("started", &started)
        .unwrap()
        .fork({
            let (q, started) = (&q, &started);
            move || -> i32 {
                started.set();
                match q.get() {
                    Err(Error::Closed) => 0,
                    _ => 2,
                }
            }
        })
        .unwrap();
    assert!(started.wait_timeout(PATIENCE));
    wait_until_asleep(child.pid());
    q.close().unwrap();
    join_ok(&mut child);
}

/// `_TestQueue.test_task_done`: four worker processes; `join` returns once
/// all ten tasks are done; one `task_done` too many is an error.
#[test]
fn joinable_queue_with_four_workers() {
    let q = JoinableQueue::<u32>::new().unwrap();
    let done = ipc_shm::RawArray::<u64>::zeroed(1).unwrap();
    let mut workers: Vec<_> = (0..4)
        .map(|_| {
            Process::new()
                .allow_threads()
                .pass("q", &q)
                .unwrap()
                .pass("done", &done)
                .unwrap()
                .fork({
                    let (q, done) = (&q, &done);
                    move || -> ipc_core::Result<()> {
                        loop {
                            match q.get() {
                                Ok(_) => {
                                    done.set(0, done.get(0)? + 1)?;
                                    q.task_done()?;
                                }
                                Err(Error::Closed) => return Ok(()),
                                Err(e) => return Err(e),
                            }
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for task in 0..10 {
        q.put(task).unwrap();
    }
    q.join_timeout(PATIENCE).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.empty());
    q.close().unwrap();
    for w in &mut workers {
        join_ok(w);
    }
    assert!(matches!(q.task_done(), Err(Error::InvalidArgument(_))));
}

/// `join` with a timeout on unfinished work times out; `join` without
/// work returns at once.
#[test]
fn join_timeout_and_immediate_join() {
    let q = JoinableQueue::<u8>::new().unwrap();
    q.join().unwrap();
    q.put(1).unwrap();
    let start = Instant::now();
    assert!(matches!(q.join_timeout(SHORT), Err(Error::Timeout)));
    assert_waited(start, SHORT);
    q.get().unwrap();
    q.task_done().unwrap();
    q.join_timeout(Duration::ZERO).unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidArgument(_))));
}

/// `TestSimpleQueue.test_empty` / `test_close`.
#[test]
fn simple_queue_empty_and_close() {
    let q = SimpleQueue::<bool>::new().unwrap();
    assert!(q.empty());
    let mut child = Process::new()
        .allow_threads()
        .pass("q", &q)
        .unwrap()
        .fork({
            let q = &q;
            move || -> ipc_core::Result<()> {
                q.put(q.empty())?;
                Ok(q.put(q.empty())?)
            }
        })
        .unwrap();
    join_ok(&mut child);
    assert!(!q.empty());
    assert!(q.get().unwrap());
    assert!(!q.get().unwrap());
    assert!(q.empty());
    q.close().unwrap();
    q.close().unwrap();
}
