//! The async forms (feature `tokio`) against blocking ends in forked
//! children: gets and puts that await, join, futures dropped at random
//! points that never lose or split an item, more awaited queues than one
//! `futex_waitv` call takes, and the polling path of kernels without it.
#![cfg(feature = "tokio")]

use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_core::Error;
use ipc_queue::{JoinableQueue, Queue};
use ipc_testkit::{runtime, Rng, PATIENCE};

/// Forks a child (beside the test harness's parked thread and the
/// watching thread, neither of which the child's blocking calls touch)
/// that runs `body` and exits 0 if it returns true.
fn fork_child(body: impl FnOnce() -> bool) -> ipc_core::process::Child {
    Process::new()
        .allow_threads()
        .fork(move || if body() { 0 } else { 1 })
        .expect("fork")
}

fn succeeded(mut child: ipc_core::process::Child) -> bool {
    child
        .join_timeout(PATIENCE)
        .expect("join")
        .is_some_and(|status| status.success())
}

#[test]
fn async_gets_take_a_blocking_putters_items_in_order() {
    let q = Queue::<u64>::with_maxsize(4).unwrap();
    let child = fork_child({
        let q = q.try_clone().unwrap();
        move || (0..2000).all(|i| q.put(i).is_ok())
    });
    runtime().block_on(async {
        for i in 0..2000 {
            let item = tokio::time::timeout(PATIENCE, q.get_async())
                .await
                .expect("an item within the patience")
                .unwrap();
            assert_eq!(item, i);
        }
    });
    assert!(succeeded(child));
}

#[test]
fn async_puts_await_the_room_a_blocking_getter_makes() {
    let q = Queue::<u64>::with_maxsize(2).unwrap();
    let child = fork_child({
        let q = q.try_clone().unwrap();
        move || (0..2000).all(|i| q.get_timeout(PATIENCE).ok() == Some(i))
    });
    runtime().block_on(async {
        for i in 0..2000 {
            tokio::time::timeout(PATIENCE, q.put_async(i))
                .await
                .expect("room within the patience")
                .unwrap();
        }
    });
    assert!(succeeded(child));
}

#[test]
fn gets_dropped_at_random_points_never_lose_an_item() {
    let mut rng = Rng::from_env_or_clock();
    let q = Queue::<u64>::with_maxsize(8).unwrap();
    let child = fork_child({
        let q = q.try_clone().unwrap();
        move || (0..3000).all(|i| q.put(i).is_ok())
    });
    let deadline = Instant::now() + PATIENCE;
    runtime().block_on(async {
        let mut next = 0;
        while next < 3000 {
            assert!(Instant::now() < deadline, "stuck at item {next}");
            let patience = Duration::from_micros(rng.below(100));
            if let Ok(item) = tokio::time::timeout(patience, q.get_async()).await {
                assert_eq!(item.unwrap(), next);
                next += 1;
            }
        }
    });
    assert!(succeeded(child));
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

#[test]
fn puts_dropped_at_random_points_never_leave_half_an_item_or_two() {
    let mut rng = Rng::from_env_or_clock();
    let q = Queue::<(u64, Vec<u8>)>::with_maxsize(1).unwrap();
    // Items of a few hundred bytes: a put is more than one store.
    let item = |i: u64| (i, vec![i as u8; 300 + (i as usize % 7) * 50]);
    let child = fork_child({
        let q = q.try_clone().unwrap();
        move || (0..1000).all(|i| q.get_timeout(PATIENCE).ok() == Some(item(i)))
    });
    let deadline = Instant::now() + PATIENCE;
    runtime().block_on(async {
        for i in 0..1000 {
            loop {
                assert!(Instant::now() < deadline, "stuck at item {i}");
                let patience = Duration::from_micros(rng.below(100));
                if let Ok(put) = tokio::time::timeout(patience, q.put_async(item(i))).await {
                    put.unwrap();
                    break;
                }
            }
        }
    });
    assert!(succeeded(child));
}

#[test]
fn join_async_waits_until_every_item_is_done() {
    let q = JoinableQueue::<u32>::new().unwrap();
    let child = fork_child({
        let q = q.try_clone().unwrap();
        move || (0..100).all(|_| q.get_timeout(PATIENCE).is_ok() && q.task_done().is_ok())
    });
    runtime().block_on(async {
        for i in 0..100 {
            q.put_async(i).await.unwrap();
        }
        tokio::time::timeout(PATIENCE, q.join_async())
            .await
            .expect("joined within the patience")
            .unwrap();
        assert_eq!(q.unfinished_tasks(), 0);
    });
    assert!(succeeded(child));
}

/// One task per queue awaits its item; a child puts one in each.
fn await_one_item_in_each(queues: usize) {
    let qs: Vec<Queue<usize>> = (0..queues).map(|_| Queue::new().unwrap()).collect();
    let child = fork_child({
        let qs: Vec<Queue<usize>> = qs.iter().map(|q| q.try_clone().unwrap()).collect();
        move || qs.iter().enumerate().all(|(i, q)| q.put(i).is_ok())
    });
    let runtime = runtime();
    let got: Vec<usize> = runtime.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let tasks: Vec<_> = qs
                    .into_iter()
                    .map(|q| tokio::task::spawn_local(async move { q.get_async().await }))
                    .collect();
                let mut got = Vec::new();
                for task in tasks {
                    let item = tokio::time::timeout(PATIENCE, task)
                        .await
                        .expect("an item within the patience");
                    got.push(item.unwrap().unwrap());
                }
                got
            })
            .await
    });
    assert_eq!(got, (0..queues).collect::<Vec<_>>());
    assert!(succeeded(child));
}

#[test]
fn more_awaited_queues_than_one_waitv_call_takes() {
    await_one_item_in_each(200);
}

#[test]
fn the_polling_path_of_kernels_without_futex_waitv() {
    ipc_shm::watch::poll_every_millisecond(true);
    await_one_item_in_each(5);
    ipc_shm::watch::poll_every_millisecond(false);
}

#[test]
fn a_forked_child_awaits_with_a_watching_thread_of_its_own() {
    let q = Queue::<u32>::new().unwrap();
    let back = Queue::<u32>::new().unwrap();
    // This process's watching thread exists from here on; a forked child
    // has a copy of its state but not the thread.
    runtime().block_on(async {
        let waiting = tokio::time::timeout(Duration::from_millis(1), q.get_async()).await;
        assert!(waiting.is_err(), "nothing was put yet");
    });
    let child = fork_child({
        let (q, back) = (q.try_clone().unwrap(), back.try_clone().unwrap());
        move || {
            runtime().block_on(async {
                for _ in 0..3 {
                    let Ok(Ok(x)) = tokio::time::timeout(PATIENCE, q.get_async()).await else {
                        return false;
                    };
                    if back.put_async(x + 1).await.is_err() {
                        return false;
                    }
                }
                true
            })
        }
    });
    for x in [10, 20, 30] {
        q.put(x).unwrap();
        assert_eq!(back.get_timeout(PATIENCE).unwrap(), x + 1);
    }
    assert!(succeeded(child));
}

#[test]
fn in_place_gets_and_reservations_dropped_at_random_points_lose_nothing() {
    let mut rng = Rng::from_env_or_clock();
    // A ring of two items: reservations wait for room, gets for items.
    let q = Queue::<()>::builder()
        .capacity(2 * 4096 + 64)
        .anonymous()
        .unwrap();
    let from_child = Queue::<()>::builder()
        .capacity(2 * 4096 + 64)
        .anonymous()
        .unwrap();
    let item = |i: u64| vec![i as u8; 1000 + (i as usize % 3) * 1000];
    // The child echoes every item from `q` onto `from_child` in place.
    let child = fork_child({
        let (q, back) = (q.try_clone().unwrap(), from_child.try_clone().unwrap());
        move || {
            (0..500).all(|_| {
                let Ok(got) = q.get_in_place_timeout(PATIENCE) else {
                    return false;
                };
                let Ok(mut room) = back.reserve_timeout(got.len(), PATIENCE) else {
                    return false;
                };
                room.copy_from_slice(&got);
                room.commit().is_ok()
            })
        }
    });
    let deadline = Instant::now() + PATIENCE;
    runtime().block_on(async {
        let (mut sent, mut received) = (0, 0);
        while received < 500 {
            assert!(
                Instant::now() < deadline,
                "stuck at {sent} sent, {received} received"
            );
            let patience = Duration::from_micros(rng.below(100));
            if sent < 500 {
                if let Ok(room) =
                    tokio::time::timeout(patience, q.reserve_async(item(sent).len())).await
                {
                    let mut room = room.unwrap();
                    room.copy_from_slice(&item(sent));
                    room.commit().unwrap();
                    sent += 1;
                }
            }
            if let Ok(got) = tokio::time::timeout(patience, from_child.get_in_place_async()).await {
                assert_eq!(&got.unwrap()[..], &item(received)[..]);
                received += 1;
            }
        }
    });
    assert!(succeeded(child));
    assert!(q.empty() && from_child.empty());
    assert_eq!(q.used_bytes() + from_child.used_bytes(), 0);
}
