//! The async waits of ipc-shm (feature `tokio`) against a forked child that
//! releases, sets or notifies: a semaphore's acquire, an event's wait, a
//! barrier's and a condition's, awaited by several tasks at once in one
//! process, and dropped waits that give back what they took.
#![cfg(feature = "tokio")]

use std::future::Future;

use ipc_core::process::Process;
use ipc_shm::{Condition, Event, RawValue, Semaphore};
use ipc_testkit::{runtime, PATIENCE};

#[test]
fn three_tasks_acquire_what_a_child_releases() {
    let sem = Semaphore::new(0).unwrap();
    let go = Event::new().unwrap();
    // The child shares the mapping of both objects.
    let mut child = Process::new()
        .allow_threads()
        .fork(|| i32::from(!(go.wait_timeout(PATIENCE) && (0..3).all(|_| sem.release().is_ok()))))
        .unwrap();
    runtime().block_on(async {
        let acquires = (0..3).map(|_| sem.acquire_async());
        let all = futures_join_all(acquires);
        // The child releases once the three are waiting (or about to).
        go.set();
        tokio::time::timeout(PATIENCE, all)
            .await
            .expect("acquired within the patience");
    });
    assert_eq!(sem.value(), 0);
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
}

#[test]
fn every_task_awaiting_an_event_wakes_when_a_child_sets_it() {
    let event = Event::new().unwrap();
    let mut child = Process::new().allow_threads().fork(|| event.set()).unwrap();
    runtime().block_on(async {
        let waits = (0..4).map(|_| event.wait_async());
        tokio::time::timeout(PATIENCE, futures_join_all(waits))
            .await
            .expect("every wait ends within the patience");
    });
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
}

/// Awaits every future of `futures`, polling them together.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn a_barrier_awaited_beside_a_blocking_party_and_a_dropped_wait_taken_back() {
    let barrier = ipc_shm::Barrier::new(2).unwrap();
    runtime().block_on(async {
        // Polled once, it arrives; dropped, it takes its arrival back.
        let mut dropped = Box::pin(barrier.wait_async());
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(dropped.as_mut().poll(cx).is_pending())
        })
        .await;
        assert!(polled, "one party of two cannot pass");
        assert_eq!(barrier.n_waiting(), 1);
        drop(dropped);
        assert_eq!(barrier.n_waiting(), 0);
    });
    // The child shares the barrier's mapping and waits, blocking.
    let mut child = Process::new()
        .allow_threads()
        .fork(|| i32::from(barrier.wait_timeout(PATIENCE).is_err()))
        .unwrap();
    runtime().block_on(async {
        let index = tokio::time::timeout(PATIENCE, barrier.wait_async())
            .await
            .expect("both parties within the patience")
            .unwrap();
        assert!(index < 2);
    });
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
}

#[test]
fn tasks_awaiting_a_condition_wake_as_a_child_notifies_them() {
    let cond = Condition::new().unwrap();
    let turn = RawValue::new(0u32).unwrap();
    // The child hands the turn to each of three tasks in order.
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_core::Result<()> {
            for next in 1..=3 {
                let guard = cond.lock().map_err(|_| ipc_core::Error::Timeout)?;
                let (guard, taken) = guard
                    .wait_for(|| turn.get() == next - 1, Some(PATIENCE))
                    .map_err(|_| ipc_core::Error::Timeout)?;
                assert!(taken, "the previous turn was never taken");
                turn.set(next + 100);
                guard.notify_all();
            }
            Ok(())
        })
        .unwrap();
    runtime().block_on(async {
        let task = |me: u32| {
            let (cond, turn) = (&cond, &turn);
            async move {
                let mut guard = cond.lock().unwrap();
                while turn.get() != me + 100 {
                    guard = guard.wait_async().await.unwrap();
                }
                turn.set(me);
                guard.notify_all();
            }
        };
        tokio::time::timeout(
            PATIENCE,
            futures_join_all([task(1), task(2), task(3)].into_iter()),
        )
        .await
        .expect("every task has its turn within the patience");
    });
    assert_eq!(turn.get(), 3);
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
}

#[test]
fn a_dropped_condition_wait_hands_its_notification_on() {
    let cond = Condition::new().unwrap();
    let waiting = RawValue::new(0u32).unwrap();
    runtime().block_on(async {
        // An async wait counts itself first, and this process's watcher
        // thread goes to sleep on the condition's word...
        let mut dropped = Box::pin(cond.lock().unwrap().wait_async());
        assert!(ipc_testkit::poll_once(dropped.as_mut()).is_none());
        ipc_testkit::wait_until_asleep(watcher_thread());
        // ...then a blocking waiter in another process, which exits 0 if
        // it is notified well before its timeout.
        let child = Process::new()
            .allow_threads()
            .fork(|| -> i32 {
                let Ok(guard) = cond.lock() else { return 2 };
                waiting.set(1);
                let started = std::time::Instant::now();
                match guard.wait_timeout(PATIENCE) {
                    Ok((_, true)) if started.elapsed() < PATIENCE / 2 => 0,
                    _ => 1,
                }
            })
            .unwrap();
        ipc_testkit::wait_until_asleep(child.pid());
        // One notify wakes the first sleeper, the watcher, for the async
        // wait, which is dropped without taking it: the child must still
        // be notified, at once.
        cond.lock_timeout(PATIENCE).unwrap().notify(1);
        drop(dropped);
        let mut child = child;
        assert_eq!(
            child.join_timeout(PATIENCE).unwrap().unwrap().code(),
            Some(0),
            "the notification was lost with the dropped wait"
        );
        assert_eq!(waiting.get(), 1);
    });
}

/// The thread id of this process's watcher of awaited shared-memory
/// words (a new thread names itself a moment after it starts).
fn watcher_thread() -> u32 {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if name.trim() == "ipc-shm-watch" {
                return task.file_name().unwrap().to_str().unwrap().parse().unwrap();
            }
        }
        std::thread::yield_now();
    }
    panic!("no watcher thread after an await");
}

/// The watcher costs nothing until used: a fresh process (a forked child
/// has this thread alone) has no watcher thread, and its first pending
/// await starts one.
#[test]
fn the_watcher_thread_starts_at_the_first_await_and_not_before() {
    let event = Event::new().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> i32 {
            let watchers = || {
                std::fs::read_dir("/proc/self/task")
                    .unwrap()
                    .filter(|task| {
                        let comm = task.as_ref().unwrap().path().join("comm");
                        std::fs::read_to_string(comm).unwrap_or_default().trim() == "ipc-shm-watch"
                    })
                    .count()
            };
            if watchers() != 0 {
                return 2;
            }
            // An event already set is awaited without waiting: still none.
            event.set();
            if ipc_testkit::poll_once(event.wait_async()).is_none() || watchers() != 0 {
                return 3;
            }
            event.clear();
            let mut waiting = Box::pin(event.wait_async());
            if ipc_testkit::poll_once(waiting.as_mut()).is_some() {
                return 4;
            }
            let _ = watcher_thread();
            0
        })
        .unwrap();
    assert_eq!(
        child.join_timeout(PATIENCE).unwrap().unwrap().code(),
        Some(0)
    );
}
