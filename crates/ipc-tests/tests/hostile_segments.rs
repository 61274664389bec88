//! Random bytes written into every kind of shared-memory object, at rest
//! and while another process uses it, give error values, timeouts or
//! documented blocking (bounded here by timeouts), never a signal: the
//! process using the object and the one opening it afterwards both live.
//!
//! One documented exception is left alone: the robust-list links of a lock
//! held at that moment (its `prev` and `next` words), which the kernel and
//! the holder trust as glibc's robust mutexes do.

use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_queue::{JoinableQueue, Queue};
use ipc_shm::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, LockError, RLock, RawValue,
    Semaphore, SharedMemory, Value,
};
use ipc_testkit::{Rng, PATIENCE};

/// A short timeout for every operation that could block.
const BRIEF: Duration = Duration::from_millis(1);
/// Corruptions per kind while the other process uses the object.
const IN_USE_ROUNDS: u32 = 200;
/// Corruptions per kind at rest, each followed by an open and a use.
const AT_REST_ROUNDS: u32 = 200;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Value,
    Array,
    Lock,
    RLock,
    Semaphore,
    BoundedSemaphore,
    Event,
    Condition,
    Barrier,
    Queue,
    JoinableQueue,
}

const KINDS: [Kind; 11] = [
    Kind::Value,
    Kind::Array,
    Kind::Lock,
    Kind::RLock,
    Kind::Semaphore,
    Kind::BoundedSemaphore,
    Kind::Event,
    Kind::Condition,
    Kind::Barrier,
    Kind::Queue,
    Kind::JoinableQueue,
];

/// Where the robust-list links of a kind's mutexes are: 24 to 40 bytes
/// into each mutex (after the header for ipc-shm's kinds; ipc-queue's two
/// mutexes start its control block, one 64-byte line each).
fn link_words(kind: Kind) -> Vec<std::ops::Range<usize>> {
    let mutexes: &[usize] = match kind {
        Kind::Value | Kind::Array | Kind::Lock | Kind::RLock | Kind::Condition | Kind::Barrier => {
            &[128]
        }
        Kind::Queue | Kind::JoinableQueue => &[128, 192],
        _ => &[],
    };
    mutexes.iter().map(|m| m + 24..m + 40).collect()
}

fn create(kind: Kind, name: &str) -> Box<dyn std::any::Any> {
    match kind {
        Kind::Value => Box::new(Value::create(name, 5u64).unwrap()),
        Kind::Array => Box::new(Array::create(name, &[3u32; 32]).unwrap()),
        Kind::Lock => Box::new(Lock::create(name).unwrap()),
        Kind::RLock => Box::new(RLock::create(name).unwrap()),
        Kind::Semaphore => Box::new(Semaphore::create(name, 2).unwrap()),
        Kind::BoundedSemaphore => Box::new(BoundedSemaphore::create(name, 2).unwrap()),
        Kind::Event => Box::new(Event::create(name).unwrap()),
        Kind::Condition => Box::new(Condition::create(name).unwrap()),
        Kind::Barrier => Box::new(Barrier::create(name, 2).unwrap()),
        Kind::Queue => Box::new(
            Queue::<Vec<u8>>::builder()
                .capacity(512)
                .maxsize(8)
                .create(name)
                .unwrap(),
        ),
        Kind::JoinableQueue => Box::new(
            JoinableQueue::<Vec<u8>>::builder()
                .capacity(512)
                .create(name)
                .unwrap(),
        ),
    }
}

/// Opens `name` as `kind` and uses it a little, every blocking call with a
/// short timeout. Errors are the expected outcome; only a crash is not.
///
/// Calls that wait for a lock without a deadline (`Value::get`,
/// `Barrier::reset`, the relock after a condition's wait) are left out, or
/// made only `at_rest` after a lock with a timeout succeeded: random bytes
/// can name a live thread (a kernel thread, say) as the holder, which is a
/// lock held for ever, the documented blocking.
fn open_and_use(kind: Kind, name: &str, at_rest: bool) {
    /// Takes a guard whatever a holder's death left, and lets it go.
    fn settle<G>(r: Result<G, LockError<G>>, mut change: impl FnMut(&mut G)) {
        let guard = match r {
            Ok(guard) => Some(guard),
            Err(e) => e.into_guard(),
        };
        if let Some(mut guard) = guard {
            change(&mut guard);
        }
    }
    match kind {
        Kind::Value => {
            if let Ok(v) = Value::<u64>::open(name) {
                settle(v.lock_timeout(BRIEF), |g| **g = g.wrapping_add(1));
            }
        }
        Kind::Array => {
            if let Ok(a) = Array::<u32>::open(name, 32) {
                settle(a.lock_timeout(BRIEF), |g| g[0] ^= 1);
            }
        }
        Kind::Lock => {
            if let Ok(l) = Lock::open(name) {
                settle(l.lock_timeout(BRIEF), |_| {});
            }
        }
        Kind::RLock => {
            if let Ok(l) = RLock::open(name) {
                settle(l.lock_timeout(BRIEF), |_| {});
            }
        }
        Kind::Semaphore => {
            if let Ok(s) = Semaphore::open(name) {
                if s.acquire_timeout(BRIEF) {
                    let _ = s.release();
                }
            }
        }
        Kind::BoundedSemaphore => {
            if let Ok(s) = BoundedSemaphore::open(name) {
                if s.acquire_timeout(BRIEF) {
                    let _ = s.release();
                }
                let _ = s.release();
            }
        }
        Kind::Event => {
            if let Ok(e) = Event::open(name) {
                e.set();
                let _ = e.wait_timeout(BRIEF);
                e.clear();
            }
        }
        Kind::Condition => {
            if let Ok(c) = Condition::open(name) {
                if let Ok(guard) = c.lock_timeout(BRIEF) {
                    guard.notify_all();
                    if at_rest {
                        let _ = guard.wait_timeout(BRIEF);
                    }
                }
            }
        }
        Kind::Barrier => {
            if let Ok(b) = Barrier::open(name) {
                let _ = (b.parties(), b.n_waiting(), b.is_broken());
                if at_rest {
                    let _ = b.wait_timeout(BRIEF);
                }
            }
        }
        Kind::Queue => {
            if let Ok(q) = Queue::<Vec<u8>>::builder().open(name) {
                let _ = (q.qsize(), q.used_bytes(), q.full());
                let _ = q.put_timeout(vec![7; 9], BRIEF);
                let _ = q.get_timeout(BRIEF);
            }
        }
        Kind::JoinableQueue => {
            if let Ok(q) = JoinableQueue::<Vec<u8>>::builder().open(name) {
                let _ = q.put_timeout(vec![7; 9], BRIEF);
                let _ = q.get_timeout(BRIEF);
                let _ = q.task_done();
                let _ = q.join_timeout(BRIEF);
            }
        }
    }
}

/// Writes 1 to 8 random bytes at a random place of `segment`: mostly in
/// the header and control block, where the checks are, sometimes anywhere;
/// never into `spared`.
fn corrupt(segment: &SharedMemory, rng: &mut Rng, spared: &[std::ops::Range<usize>]) {
    let size = segment.size();
    loop {
        let span = if rng.below(4) == 0 {
            size
        } else {
            size.min(640)
        };
        let at = rng.below(span as u64) as usize;
        let len = (1 + rng.below(8) as usize).min(size - at);
        if spared.iter().any(|r| at < r.end && r.start < at + len) {
            continue;
        }
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        segment.write_at(at, &bytes).unwrap();
        return;
    }
}

#[test]
fn random_bytes_in_any_object_give_errors_not_signals() {
    let mut rng = Rng::from_env_or_clock();
    for kind in KINDS {
        let name = ipc_testkit::name();
        let object = create(kind, &name);
        let segment = SharedMemory::open(&name).unwrap();
        let pristine = segment.to_vec();

        // In use: a child opens and uses the object in a loop while this
        // process writes random bytes into it (not into held locks' links).
        let stop = RawValue::new(0u32).unwrap();
        let uses = RawValue::new(0u64).unwrap();
        let mut user = Process::new()
            .allow_threads()
            .fork({
                let name = name.clone();
                let (stop, uses) = (&stop, &uses);
                move || {
                    let deadline = Instant::now() + PATIENCE;
                    while stop.get() == 0 && Instant::now() < deadline {
                        open_and_use(kind, &name, false);
                        uses.set(uses.get() + 1);
                    }
                    0
                }
            })
            .unwrap();
        let spared = link_words(kind);
        let deadline = Instant::now() + PATIENCE;
        while uses.get() == 0 {
            assert!(
                Instant::now() < deadline,
                "{kind:?}: the user never started"
            );
            std::thread::yield_now();
        }
        for _ in 0..IN_USE_ROUNDS {
            corrupt(&segment, &mut rng, &spared);
            // Let the user run into it before the next one.
            let seen = uses.get();
            while uses.get() == seen {
                assert!(
                    Instant::now() < deadline + PATIENCE,
                    "{kind:?}: the user stalled"
                );
                std::thread::yield_now();
            }
        }
        stop.set(1);
        let status = user
            .join_timeout(PATIENCE * 2)
            .unwrap()
            .expect("the user ends");
        assert!(
            status.success(),
            "{kind:?}: the user process died: {status:?}"
        );
        eprintln!(
            "{kind:?}: {} uses beside {IN_USE_ROUNDS} corruptions",
            uses.get()
        );

        // At rest: from a clean copy each time, a few random bytes, then an
        // open and a use in a child (any lock it takes is its own).
        for _ in 0..AT_REST_ROUNDS / 10 {
            segment.write_at(0, &pristine).unwrap();
            for _ in 0..10 {
                corrupt(&segment, &mut rng, &[]);
            }
            let mut opener = Process::new()
                .allow_threads()
                .fork({
                    let name = name.clone();
                    move || {
                        for _ in 0..10 {
                            open_and_use(kind, &name, true);
                        }
                        0
                    }
                })
                .unwrap();
            let status = opener
                .join_timeout(PATIENCE)
                .unwrap()
                .expect("the opener ends");
            assert!(status.success(), "{kind:?}: the opener died: {status:?}");
        }
        drop((segment, object));
    }
    ipc_testkit::assert_no_leftovers();
}
