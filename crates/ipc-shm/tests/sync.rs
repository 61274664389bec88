//! The process-shared synchronisation primitives against the behaviours
//! of CPython's own tests (`_TestLock`, `_TestSemaphore`, `_TestCondition`,
//! `_TestEvent`, `_TestBarrier`), with real processes.

use std::time::{Duration, Instant};

use ipc_core::process::{Child, Process};
use ipc_shm::{
    Barrier, BarrierError, BoundedSemaphore, Condition, Error, Event, Lock, LockError, RLock,
    RawValue, Semaphore,
};
use ipc_testkit::{assert_no_leftovers, assert_waited, name, LONG, SHORT};

#[test]
fn lock_acquire_try_and_release_like_python() {
    let lock = Lock::new().unwrap();
    lock.acquire().unwrap();
    assert!(matches!(lock.try_acquire(), Err(LockError::WouldBlock)));
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(Error::InvalidArgument(_))));
    // Locking again from the holding thread is refused instead of hanging.
    let g = lock.lock().unwrap();
    assert!(matches!(lock.lock(), Err(LockError::Failed(_))));
    drop(g);
    // Another process cannot release our lock.
    lock.acquire().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| i32::from(lock.release().is_err()))
        .unwrap();
    assert_eq!(child.join().unwrap().code(), Some(1));
    lock.release().unwrap();
}

#[test]
fn rlock_counts_its_acquires() {
    let n = name();
    let rlock = RLock::create(&n).unwrap();
    for _ in 0..3 {
        rlock.acquire().unwrap();
    }
    let other = RLock::open(&n).unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| i32::from(matches!(other.try_acquire(), Err(LockError::WouldBlock))))
        .unwrap();
    assert_eq!(child.join().unwrap().code(), Some(1));
    for _ in 0..3 {
        rlock.release().unwrap();
    }
    assert!(matches!(rlock.release(), Err(Error::InvalidArgument(_))));
    let g1 = rlock.lock().unwrap();
    let g2 = rlock.lock().unwrap();
    drop((g2, g1));
    assert!(rlock.try_acquire().is_ok());
    rlock.release().unwrap();
    drop((rlock, other));
    assert_no_leftovers();
}

#[test]
fn semaphore_values_and_timeouts() {
    let sem = Semaphore::new(2).unwrap();
    assert_eq!(sem.value(), 2);
    sem.acquire();
    assert_eq!(sem.value(), 1);
    assert!(sem.try_acquire());
    assert_eq!(sem.value(), 0);
    assert!(!sem.try_acquire());
    for expected in 1..=4 {
        sem.release().unwrap();
        assert_eq!(sem.value(), expected);
    }
    let zero = Semaphore::new(0).unwrap();
    let started = Instant::now();
    assert!(!zero.acquire_timeout(Duration::ZERO));
    assert!(started.elapsed() < Duration::from_secs(1));
    let started = Instant::now();
    assert!(!zero.acquire_timeout(SHORT));
    assert_waited(started, SHORT);
}

#[test]
fn semaphores_wake_waiters_in_other_processes() {
    let sem = Semaphore::new(0).unwrap();
    let done = Semaphore::new(0).unwrap();
    let children: Vec<Child> = (0..3)
        .map(|_| {
            Process::new()
                .allow_threads()
                .fork(|| -> ipc_shm::Result<()> {
                    sem.acquire();
                    done.release()
                })
                .unwrap()
        })
        .collect();
    for _ in 0..3 {
        sem.release().unwrap();
    }
    for _ in 0..3 {
        assert!(done.acquire_timeout(LONG));
    }
    for mut c in children {
        assert!(c.join().unwrap().success());
    }
    assert_eq!(sem.value(), 0);
}

#[test]
fn bounded_semaphore_refuses_over_release() {
    let n = name();
    let sem = BoundedSemaphore::create(&n, 2).unwrap();
    let other = BoundedSemaphore::open(&n).unwrap();
    assert!(matches!(sem.release(), Err(Error::InvalidArgument(_))));
    sem.acquire();
    other.acquire();
    assert!(!sem.try_acquire());
    other.release().unwrap();
    sem.release().unwrap();
    assert!(matches!(other.release(), Err(Error::InvalidArgument(_))));
    assert_eq!(sem.value(), 2);
    let zero = BoundedSemaphore::new(0).unwrap();
    assert!(zero.release().is_err());
    // A Semaphore segment is not a BoundedSemaphore.
    assert!(Semaphore::open(&n).is_err());
    drop((sem, other));
    assert_no_leftovers();
}

#[test]
fn event_set_clear_and_wait_like_python() {
    let event = Event::new().unwrap();
    assert!(!event.is_set());
    let started = Instant::now();
    assert!(!event.wait_timeout(Duration::ZERO));
    assert!(started.elapsed() < Duration::from_secs(1));
    let started = Instant::now();
    assert!(!event.wait_timeout(SHORT));
    assert_waited(started, SHORT);
    event.set();
    assert!(event.is_set());
    assert!(event.wait());
    assert!(event.wait_timeout(SHORT));
    event.clear();
    assert!(!event.is_set());
    let go = Event::new().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| {
            go.wait();
            event.set();
        })
        .unwrap();
    go.set();
    assert!(event.wait_timeout(LONG));
    assert!(child.join().unwrap().success());
}

/// Starts `n` children that each wait on `cond` once and then post `woken`.
/// Returns when all of them are waiting: each posts `sleeping` while holding
/// the lock, and waiting releases it, so once we hold the lock after `n`
/// posts, all `n` are registered as waiters.
fn start_waiters(
    cond: &Condition,
    sleeping: &Semaphore,
    woken: &Semaphore,
    n: usize,
) -> Vec<Child> {
    let children = (0..n)
        .map(|_| {
            Process::new()
                .allow_threads()
                .fork(|| -> ipc_shm::Result<()> {
                    let guard = cond.lock()?;
                    sleeping.release()?;
                    let _guard = guard.wait()?;
                    woken.release()
                })
                .unwrap()
        })
        .collect();
    for _ in 0..n {
        assert!(sleeping.acquire_timeout(LONG));
    }
    children
}

#[test]
fn condition_notify_wakes_exactly_as_many_as_asked() {
    let cond = Condition::new().unwrap();
    let sleeping = Semaphore::new(0).unwrap();
    let woken = Semaphore::new(0).unwrap();
    let children = start_waiters(&cond, &sleeping, &woken, 6);

    // notify() wakes one.
    cond.lock().unwrap().notify(1);
    assert!(woken.acquire_timeout(LONG));
    assert!(
        !woken.acquire_timeout(SHORT),
        "notify(1) woke more than one"
    );

    // notify(2) wakes two.
    cond.lock().unwrap().notify(2);
    assert!(woken.acquire_timeout(LONG));
    assert!(woken.acquire_timeout(LONG));
    assert!(
        !woken.acquire_timeout(SHORT),
        "notify(2) woke more than two"
    );

    // notify_all() wakes the other three; more notifies are no-ops.
    let guard = cond.lock().unwrap();
    guard.notify_all();
    guard.notify_all();
    drop(guard);
    for _ in 0..3 {
        assert!(woken.acquire_timeout(LONG));
    }
    for mut c in children {
        assert!(c.join().unwrap().success());
    }
    assert!(!woken.try_acquire());
    cond.lock().unwrap().notify(5);
}

#[test]
fn condition_wait_timeouts_and_wait_for() {
    let cond = Condition::new().unwrap();
    let (guard, notified) = cond.lock().unwrap().wait_timeout(Duration::ZERO).unwrap();
    assert!(!notified);
    let started = Instant::now();
    let (guard, notified) = guard.wait_timeout(SHORT).unwrap();
    assert!(!notified);
    assert_waited(started, SHORT);

    // wait_for with a predicate that never holds times out.
    let started = Instant::now();
    let (guard, ok) = guard.wait_for(|| false, Some(SHORT)).unwrap();
    assert!(!ok);
    assert_waited(started, SHORT);
    drop(guard);

    // A child sets a shared value under the lock and notifies.
    let state = RawValue::new(0u32).unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            for i in 1..=3 {
                let guard = cond.lock()?;
                state.set(i);
                guard.notify_all();
            }
            Ok(())
        })
        .unwrap();
    let (guard, ok) = cond
        .lock()
        .unwrap()
        .wait_for(|| state.get() == 3, Some(LONG))
        .unwrap();
    assert!(ok);
    assert_eq!(state.get(), 3);
    drop(guard);
    assert!(child.join().unwrap().success());

    // wait(60) returns true when a child notifies.
    let guard = cond.lock().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            cond.lock()?.notify(1);
            Ok(())
        })
        .unwrap();
    let (_guard, notified) = guard.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(notified);
    drop(_guard);
    assert!(child.join().unwrap().success());
}

#[test]
fn barrier_passes_parties_in_lock_step() {
    const PARTIES: u32 = 5;
    const PASSES: u32 = 10;
    let barrier = Barrier::new(PARTIES).unwrap();
    let zeros = RawValue::new(0u32).unwrap();
    let actions = RawValue::new(0u32).unwrap();
    let step = Lock::new().unwrap();
    let arrived = RawValue::new([0u32; PASSES as usize]).unwrap();
    let children: Vec<Child> = (0..PARTIES)
        .map(|_| {
            Process::new()
                .allow_threads()
                .fork(|| -> Result<(), BarrierError> {
                    for pass in 0..PASSES as usize {
                        {
                            let _g = step.lock().map_err(|e| BarrierError::Failed(e.into()))?;
                            let mut a = arrived.get();
                            a[pass] += 1;
                            arrived.set(a);
                        }
                        let index = barrier.wait_with_action(Some(LONG), || {
                            actions.set(actions.get() + 1);
                        })?;
                        // Everyone arrived at this pass before anyone left it.
                        assert_eq!(arrived.get()[pass], PARTIES);
                        if index == 0 {
                            let _g = step.lock().map_err(|e| BarrierError::Failed(e.into()))?;
                            zeros.set(zeros.get() + 1);
                        }
                        barrier.wait()?;
                    }
                    Ok(())
                })
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.join().unwrap().success());
    }
    assert_eq!(zeros.get(), PASSES, "exactly one wait() per pass returns 0");
    assert_eq!(actions.get(), PASSES, "the action runs once per pass");
    assert!(!barrier.is_broken());
    assert_eq!(barrier.n_waiting(), 0);
}

#[test]
fn barrier_abort_reset_and_timeout_break_it() {
    let n = name();
    let barrier = Barrier::create(&n, 3).unwrap();
    assert_eq!(barrier.parties(), 3);
    // Barrier(1) passes at once, twice.
    let single = Barrier::new(1).unwrap();
    assert_eq!(single.wait().unwrap(), 0);
    assert_eq!(single.wait().unwrap(), 0);
    assert!(Barrier::new(0).is_err());

    // abort() breaks the waiters and later waits, until reset().
    let waiting = |b: &Barrier| {
        let b = Barrier::open(b.name().unwrap()).unwrap();
        Process::new()
            .allow_threads()
            .fork(move || i32::from(matches!(b.wait_timeout(LONG), Err(BarrierError::Broken))))
            .unwrap()
    };
    let mut a = waiting(&barrier);
    let mut b = waiting(&barrier);
    let deadline = Instant::now() + LONG;
    while barrier.n_waiting() < 2 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    barrier.abort().unwrap();
    assert_eq!(a.join().unwrap().code(), Some(1));
    assert_eq!(b.join().unwrap().code(), Some(1));
    assert!(barrier.is_broken());
    assert!(matches!(barrier.wait(), Err(BarrierError::Broken)));
    barrier.reset().unwrap();
    assert!(!barrier.is_broken());

    // reset() with a party waiting breaks it and leaves the barrier usable.
    let mut a = waiting(&barrier);
    while barrier.n_waiting() < 1 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    barrier.reset().unwrap();
    assert_eq!(a.join().unwrap().code(), Some(1));
    assert!(!barrier.is_broken());

    // A party whose timeout runs out breaks the barrier for everyone.
    let started = Instant::now();
    assert!(matches!(
        barrier.wait_timeout(SHORT),
        Err(BarrierError::Broken)
    ));
    assert_waited(started, SHORT);
    assert!(barrier.is_broken());
    barrier.reset().unwrap();

    // And it works again with all three parties.
    let c1 = Barrier::open(&n).unwrap();
    let c2 = Barrier::open(&n).unwrap();
    let mut k1 = Process::new()
        .allow_threads()
        .fork(move || c1.wait().map(|_| ()))
        .unwrap();
    let mut k2 = Process::new()
        .allow_threads()
        .fork(move || c2.wait().map(|_| ()))
        .unwrap();
    assert!(barrier.wait_timeout(LONG).is_ok());
    assert!(k1.join().unwrap().success() && k2.join().unwrap().success());
    drop((barrier, single));
    assert_no_leftovers();
}
