//! Awaiting a change of a 32-bit word in shared memory (feature `tokio`):
//! the async counterpart of a futex wait, for the waits of this workspace's
//! shared-memory objects (ipc-queue's get and put, say).
//!
//! A futex cannot be registered with epoll, so no reactor can watch one.
//! Instead one thread per process, started by the first await, waits on
//! every awaited word at once with `futex_waitv` (Linux 5.16 and later; up
//! to 127 words per call, plus one of its own to be told the set changed)
//! and wakes the task of each word that changes or is woken. A future that
//! is dropped takes its word out of the set. The futures are plain
//! `std::future::Future`s: they run on tokio or any other executor.
//!
//! Before 5.16 (no `futex_waitv`), and while more than 127 words are
//! awaited, the thread instead wakes every awaiting task each
//! millisecond to look again: correct, and only as costly as the awaits
//! in progress.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! let word = AtomicU32::new(0);
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     let changed = ipc_shm::watch::changed(&word, 0);
//!     word.store(1, Ordering::Release);
//!     ipc_shm::raw::futex_wake(&word, 1);
//!     changed.await; // ready: the word no longer holds 0
//! });
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::raw::SAFETY_NET;
use crate::sys::futex;

/// The most words one `futex_waitv` call takes, the thread's own included.
const WAITV_MAX: usize = 128;

/// How often the thread wakes every awaiting task when it cannot wait on
/// all their words (no `futex_waitv`, or more words than one call takes).
const POLL_EVERY: Duration = Duration::from_millis(1);

/// A future that is ready once `word` no longer holds `expected`, or a
/// futex wake on it arrives (which the caller takes as a reason to look
/// again, as after a futex wait). Cancel safe: dropping it only takes the
/// word out of the watched set.
///
/// The word may be in shared memory, changed and woken (`futex_wake`,
/// without `FUTEX_PRIVATE_FLAG`) by another process.
pub fn changed(word: &AtomicU32, expected: u32) -> Changed<'_> {
    Changed {
        word,
        expected,
        id: None,
    }
}

/// The future of [`changed`].
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub struct Changed<'a> {
    word: &'a AtomicU32,
    expected: u32,
    /// Its entry in the watched set, once registered.
    id: Option<u64>,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.word.load(Ordering::Acquire) != this.expected {
            this.deregister();
            return Poll::Ready(());
        }
        let watcher = watcher();
        let mut state = watcher.lock();
        match this.id.and_then(|id| state.entries.get_mut(&id)) {
            Some(entry) if entry.fired => {
                state.entries.remove(&this.id.take().unwrap_or_default());
                return Poll::Ready(());
            }
            Some(entry) => {
                if !entry.waker.will_wake(cx.waker()) {
                    entry.waker = cx.waker().clone();
                }
                return Poll::Pending;
            }
            None => {}
        }
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(
            id,
            Entry {
                address: this.word.as_ptr() as usize,
                expected: this.expected,
                waker: cx.waker().clone(),
                fired: false,
            },
        );
        this.id = Some(id);
        // A change between the look above and the registration is seen by
        // the thread's next wait: the kernel compares the word first.
        watcher.rearm(state);
        Poll::Pending
    }
}

impl Changed<'_> {
    fn deregister(&mut self) {
        if let Some(id) = self.id.take() {
            let watcher = watcher();
            let mut state = watcher.lock();
            // The thread must not go on waiting on a word that may be
            // unmapped once this borrow ends.
            if state.entries.remove(&id).is_some_and(|entry| !entry.fired) {
                watcher.rearm(state);
            }
        }
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// One awaited word.
struct Entry {
    /// The word's address. Only the kernel reads it (an address no longer
    /// mapped makes `futex_waitv` fail with `EFAULT`, never this process
    /// crash); the entry is removed before the word's memory can go.
    address: usize,
    expected: u32,
    waker: Waker,
    /// Its task was woken: the future is ready at its next poll.
    fired: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    next_id: u64,
}

/// The process's watching thread and the set it watches.
struct Watcher {
    state: Mutex<State>,
    /// Bumped (and woken) whenever the set changes, so the thread's wait,
    /// which includes this word, ends and it waits again on the new set.
    rearm: AtomicU32,
    /// Whether the thread has nothing to watch and waits on `idle`.
    sleeping: AtomicBool,
    idle: Condvar,
}

static WATCHER: OnceLock<&'static Watcher> = OnceLock::new();

/// Set by [`poll_every_millisecond`]: behave as on a kernel without
/// `futex_waitv`.
static FORCE_POLLING: AtomicBool = AtomicBool::new(false);

/// Makes the watching thread wake every awaiting task each millisecond
/// instead of waiting on their words, as it does on kernels before 5.16:
/// for tests of that path on newer kernels.
#[doc(hidden)]
pub fn poll_every_millisecond(on: bool) {
    FORCE_POLLING.store(on, Ordering::Relaxed);
    let watcher = watcher();
    let state = watcher.lock();
    watcher.rearm(state);
}

fn watcher() -> &'static Watcher {
    WATCHER.get_or_init(|| {
        let watcher: &'static Watcher = Box::leak(Box::new(Watcher {
            state: Mutex::new(State::default()),
            rearm: AtomicU32::new(0),
            sleeping: AtomicBool::new(false),
            idle: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("ipc-shm-watch".into())
            .spawn(move || watcher.run())
            .expect("the shared-memory watching thread starts");
        watcher
    })
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the thread the set changed (called with the state locked, and
    /// releases it).
    fn rearm(&self, state: MutexGuard<'_, State>) {
        self.rearm.fetch_add(1, Ordering::Release);
        drop(state);
        if self.sleeping.load(Ordering::Acquire) {
            self.idle.notify_one();
        }
        futex::wake(&self.rearm, 1);
    }

    fn run(&self) {
        loop {
            let mut state = self.lock();
            let rearm = self.rearm.load(Ordering::Acquire);
            let waiting: Vec<(u64, usize, u32)> = state
                .entries
                .iter()
                .filter(|(_, e)| !e.fired)
                .map(|(&id, e)| (id, e.address, e.expected))
                .collect();
            if waiting.is_empty() {
                self.sleeping.store(true, Ordering::Release);
                state = self.idle.wait(state).unwrap_or_else(|e| e.into_inner());
                self.sleeping.store(false, Ordering::Release);
                drop(state);
                continue;
            }
            drop(state);
            let polling = FORCE_POLLING.load(Ordering::Relaxed) || waiting.len() >= WAITV_MAX;
            let woke = if polling {
                None
            } else {
                let mut words: Vec<(usize, u32)> =
                    waiting.iter().map(|&(_, a, e)| (a, e)).collect();
                words.push((self.rearm.as_ptr() as usize, rearm));
                futex::wait_any(&words, SAFETY_NET)
            };
            match woke {
                // The set changed: wait again on the new one.
                Some(futex::Any::Woken(i)) if i == waiting.len() => {}
                // That word was woken.
                Some(futex::Any::Woken(i)) => self.fire(|id| id == waiting[i].0),
                Some(futex::Any::Interrupted) => {}
                // The set changed before the wait began: wait on the new
                // one (a changed word of it shows again there).
                Some(futex::Any::Changed) if self.rearm.load(Ordering::Acquire) != rearm => {}
                // Some word no longer held its value when the kernel
                // looked, or the safety net ran out: every task looks again.
                Some(futex::Any::Changed | futex::Any::TimedOut) => self.fire(|_| true),
                None => {
                    futex::wait(&self.rearm, rearm, Some(POLL_EVERY));
                    self.fire(|_| true);
                }
            }
        }
    }

    /// Wakes the tasks of the entries `which` picks.
    fn fire(&self, which: impl Fn(u64) -> bool) {
        let mut wakers = Vec::new();
        let mut state = self.lock();
        for (&id, entry) in state.entries.iter_mut() {
            if !entry.fired && which(id) {
                entry.fired = true;
                wakers.push(entry.waker.clone());
            }
        }
        drop(state);
        for waker in wakers {
            waker.wake();
        }
    }
}
