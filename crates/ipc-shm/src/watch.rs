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
//! Before 5.16 (no `futex_waitv`), and while more than 127 distinct words
//! are awaited, the thread instead wakes every awaiting task each
//! millisecond to look again: correct, and only as costly as the awaits
//! in progress. A process forked from one that awaited starts a thread of
//! its own at its first await.
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
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::raw::SAFETY_NET;
use crate::sys::futex;

/// The most words one `futex_waitv` call takes, the thread's own included.
const WAITV_MAX: usize = 128;

/// How often the thread wakes every awaiting task when it cannot wait on
/// all their words (no `futex_waitv`, or more words than one call takes).
const POLL_EVERY: Duration = Duration::from_millis(1);

/// A future that is ready once `word` no longer holds `expected`. A futex
/// wake on the word that leaves its value as it was may make it ready too,
/// or only at the next look (within the 500 ms safety net): the caller
/// looks at its condition again either way, as after a futex wait. Cancel
/// safe: dropping it only takes the word out of the watched set.
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
        if let Some(id) = this.id {
            match state.entries.get_mut(&id) {
                Some(entry) if entry.fired => {
                    let done = state.entries.remove(&id);
                    this.id = None;
                    drop(state);
                    drop(done);
                    return Poll::Ready(());
                }
                Some(entry) => {
                    if !entry.waker.will_wake(cx.waker()) {
                        let old = std::mem::replace(&mut entry.waker, cx.waker().clone());
                        drop(state);
                        drop(old);
                    }
                    return Poll::Pending;
                }
                // Registered with a watcher of the process this one was
                // forked from: register again here.
                None => this.id = None,
            }
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
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
            // Removed under the lock before the borrow of the word ends,
            // so the thread never reads a word that may be unmapped.
            let removed = state.entries.remove(&id);
            let unfired = removed.as_ref().is_some_and(|entry| !entry.fired);
            if unfired {
                watcher.rearm(state);
            } else {
                drop(state);
            }
            drop(removed);
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
    /// mapped fails a wait with `EFAULT`, never faults here); a future
    /// removes its entry before its borrow of the word ends.
    address: usize,
    expected: u32,
    waker: Waker,
    /// Its task was woken: the future is ready at its next poll.
    fired: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
}

/// The next entry's id: unique in the process and in every child forked
/// from it (which counts on from its parent's value), so a future a child
/// inherited never names another one's entry.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The process's watching thread and the set it watches.
struct Watcher {
    /// The process whose thread this is: a forked child has none.
    pid: u32,
    state: Mutex<State>,
    /// Bumped (and woken) whenever the set changes, so the thread's wait,
    /// which includes this word, ends and it waits again on the new set.
    rearm: AtomicU32,
    /// Whether the thread has nothing to watch and waits on `idle`.
    sleeping: AtomicBool,
    idle: Condvar,
}

/// The watcher of this process. A forked child finds its parent's, whose
/// thread it does not have (and whose lock another thread may have held at
/// the fork): it leaves that one alone and makes its own.
static WATCHER: AtomicPtr<Watcher> = AtomicPtr::new(std::ptr::null_mut());

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
    let pid = std::process::id();
    let current = WATCHER.load(Ordering::Acquire);
    if let Some(watcher) = leaked(current).filter(|w| w.pid == pid) {
        return watcher;
    }
    let fresh: &'static mut Watcher = Box::leak(Box::new(Watcher {
        pid,
        state: Mutex::new(State::default()),
        rearm: AtomicU32::new(0),
        sleeping: AtomicBool::new(false),
        idle: Condvar::new(),
    }));
    match WATCHER.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            let watcher: &'static Watcher = fresh;
            std::thread::Builder::new()
                .name("ipc-shm-watch".into())
                .spawn(move || watcher.run())
                .expect("the shared-memory watching thread starts");
            watcher
        }
        // Another thread installed one first (a few bytes leak).
        Err(winner) => leaked(winner).expect("a watcher was installed"),
    }
}

/// The watcher a pointer from [`WATCHER`] names: null, or one leaked by
/// [`watcher`], so valid for ever.
fn leaked(pointer: *mut Watcher) -> Option<&'static Watcher> {
    futex::leaked(pointer)
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
        let mut next_tick = Instant::now();
        loop {
            let mut state = self.lock();
            let rearm = self.rearm.load(Ordering::Acquire);
            // One slot per distinct word (all getters of a queue await the
            // same word). Entries of one word that expect different values
            // cannot all be right: those whose word changed are woken now.
            let mut words: Vec<(usize, u32)> = Vec::new();
            let mut mixed: Vec<usize> = Vec::new();
            for entry in state.entries.values().filter(|e| !e.fired) {
                match words.iter().find(|&&(address, _)| address == entry.address) {
                    None => words.push((entry.address, entry.expected)),
                    Some(&(_, expected)) if expected != entry.expected => mixed.push(entry.address),
                    Some(_) => {}
                }
            }
            let stale = if mixed.is_empty() {
                Vec::new()
            } else {
                let stale = take_changed_of(&mut state, |e| mixed.contains(&e.address));
                words.clear();
                for entry in state.entries.values().filter(|e| !e.fired) {
                    if !words.iter().any(|&(address, _)| address == entry.address) {
                        words.push((entry.address, entry.expected));
                    }
                }
                stale
            };
            if words.is_empty() && stale.is_empty() {
                self.sleeping.store(true, Ordering::Release);
                state = self.idle.wait(state).unwrap_or_else(|e| e.into_inner());
                self.sleeping.store(false, Ordering::Release);
                drop(state);
                continue;
            }
            drop(state);
            wake(stale);
            if words.is_empty() {
                continue;
            }
            let polling = FORCE_POLLING.load(Ordering::Relaxed) || words.len() >= WAITV_MAX;
            let woke = if polling {
                None
            } else {
                words.push((self.rearm.as_ptr() as usize, rearm));
                futex::wait_any(&words, SAFETY_NET)
            };
            let mut state = self.lock();
            let woken = match woke {
                // The set changed: wait again on the new one.
                Some(futex::Any::Woken(i)) if i == words.len() - 1 => Vec::new(),
                // That word was woken: its entries look again.
                // (A word woken at the same moment shows as changed at the
                // next wait, if the wake came with a change.)
                Some(futex::Any::Woken(i)) => {
                    let address = words[i].0;
                    take_picked(&mut state, |entry| entry.address == address)
                }
                // Some word had changed, or a signal: wake the entries
                // whose word changed.
                Some(futex::Any::Changed | futex::Any::Interrupted) => {
                    take_changed_of(&mut state, |_| true)
                }
                // The safety net: everyone looks again.
                Some(futex::Any::TimedOut) => take_picked(&mut state, |_| true),
                // Polling: each tick, the entries of this look look again
                // (new ones wait for the next tick), whatever the re-arms.
                None => {
                    drop(state);
                    next_tick += POLL_EVERY;
                    let now = Instant::now();
                    if next_tick > now {
                        std::thread::sleep(next_tick - now);
                    } else {
                        next_tick = now;
                    }
                    state = self.lock();
                    take_picked(&mut state, |entry| {
                        words.iter().any(|&(address, _)| address == entry.address)
                    })
                }
            };
            drop(state);
            wake(woken);
        }
    }
}

/// Marks fired, and gives the wakers of, the unfired entries among those
/// `among` picks whose word no longer holds the value they expect.
fn take_changed_of(state: &mut State, among: impl Fn(&Entry) -> bool) -> Vec<Waker> {
    let mut wakers = Vec::new();
    for entry in state.entries.values_mut().filter(|e| !e.fired) {
        if among(entry) && futex::differs(entry.address, entry.expected) {
            entry.fired = true;
            wakers.push(entry.waker.clone());
        }
    }
    wakers
}

/// Marks fired, and gives the wakers of, the unfired entries `pick` picks.
fn take_picked(state: &mut State, pick: impl Fn(&Entry) -> bool) -> Vec<Waker> {
    let mut wakers = Vec::new();
    for entry in state.entries.values_mut().filter(|e| !e.fired) {
        if pick(entry) {
            entry.fired = true;
            wakers.push(entry.waker.clone());
        }
    }
    wakers
}

/// Wakes tasks, outside the state's lock (a waker may run code that
/// takes it).
fn wake(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}
