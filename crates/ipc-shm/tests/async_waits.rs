//! The async waits of ipc-shm (feature `tokio`) against a forked child that
//! releases or sets: a semaphore's acquire and an event's wait, awaited
//! by several tasks at once in one process.
#![cfg(feature = "tokio")]

use std::future::Future;

use ipc_core::process::Process;
use ipc_shm::{Event, Semaphore};
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
