//! A process-shared [`Condition`] (Python's `multiprocessing.Condition`):
//! a robust mutex plus a futex word that waiters sleep on, with wake-up
//! tokens so that `notify(n)` wakes at most `n` waiters.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipc_core::{Deadline, Result};

use crate::lock::{failure_error, wrap, LockError, LockGuard, LockResult, OwnerDied};
use crate::segment::{object_common, Object};
use crate::segment::{sealed, Builder, Kind, Layout, ObjectKind, Spec, MUTEX_OFFSET};
use crate::shm::SharedMemory;
use crate::sys::futex::{self, Wake};

/// Words of a condition: the futex sequence number, the waiters not yet
/// given a token, the tokens not yet taken.
const SEQ: usize = 0;
const WAITERS: usize = 1;
const TOKENS: usize = 2;

/// A process-shared condition variable with its own robust lock: Python's
/// `multiprocessing.Condition`.
///
/// Take the lock with [`lock`](Self::lock); the guard waits
/// ([`wait`](ConditionGuard::wait), [`wait_for`](ConditionGuard::wait_for))
/// and notifies ([`notify`](ConditionGuard::notify)), so notifying without
/// the lock (Python's `RuntimeError`) cannot happen. The state the waiters
/// test lives elsewhere, for instance in a [`RawValue`](crate::RawValue)
/// read and written only under this lock.
///
/// ```
/// use std::time::Duration;
/// use ipc_core::process::Process;
/// use ipc_shm::{Condition, RawValue};
///
/// let cond = Condition::new()?;
/// let done = RawValue::new(0u32)?;
/// let mut child = Process::new().fork({
///     let (cond, done) = (&cond, &done);
///     move || -> ipc_core::Result<()> {
///         let guard = cond.lock()?;
///         done.set(1);
///         guard.notify_all();
///         Ok(())
///     }
/// })?;
/// let guard = cond.lock()?;
/// let (_guard, ok) = guard.wait_for(|| done.get() == 1, Some(Duration::from_secs(60)))?;
/// assert!(ok);
/// # drop(_guard);
/// child.join()?;
/// # Ok::<(), ipc_core::Error>(())
/// ```
///
/// Its lock is not recursive (Python's default is an `RLock`). A waiter
/// killed while it waits leaves one wake-up token unclaimed, so a later
/// `notify` may wake one waiter fewer, or a later waiter may wake once
/// without a `notify`; [`wait_for`](ConditionGuard::wait_for), which
/// re-checks its predicate, is immune to both.
#[derive(Debug)]
pub struct Condition {
    obj: Object,
}

impl sealed::Sealed for Condition {}

impl ObjectKind for Condition {
    type Init<'a> = ();

    fn spec() -> Spec {
        Spec::of::<[u32; 4]>(Kind::Condition)
    }

    fn len(_: &()) -> usize {
        1
    }

    fn fill(_: (), _: &SharedMemory, _: &Layout) {}

    fn wrap(obj: Object) -> Self {
        Condition { obj }
    }
}

impl Condition {
    /// A builder for a condition (see [`Builder`]).
    pub fn builder() -> Builder<'static, Self> {
        Builder::new(())
    }

    /// A new anonymous condition, for this process and the children it
    /// is handed to.
    pub fn new() -> Result<Self> {
        Self::builder().anonymous()
    }

    /// Creates the condition `/dev/shm/<name>`; this process owns it.
    pub fn create(name: &str) -> Result<Self> {
        Self::builder().create(name)
    }

    /// Opens the condition `name` that another process created.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().open(name)
    }

    /// Opens `name`, or creates it if it does not exist.
    pub fn open_or_create(name: &str) -> Result<Self> {
        Self::builder().open_or_create(name)
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        self.obj.map().atomic_u32(self.obj.word(i))
    }

    fn lock_until(&self, deadline: Deadline) -> LockResult<ConditionGuard<'_>> {
        wrap(self.obj.map().lock_unit(MUTEX_OFFSET, deadline)).map_or_else(
            |e| Err(e.map(|guard| ConditionGuard { guard, cond: self })),
            |guard| Ok(ConditionGuard { guard, cond: self }),
        )
    }

    /// Waits for the lock.
    pub fn lock(&self) -> LockResult<ConditionGuard<'_>> {
        self.lock_until(Deadline::Never)
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> LockResult<ConditionGuard<'_>> {
        self.lock_until(Deadline::Now)
    }

    /// Waits at most `timeout` for the lock.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ConditionGuard<'_>> {
        self.lock_until(Deadline::after(timeout))
    }
}

object_common!(Condition);

/// An async wait's place among a condition's waiters, given back if the
/// wait is dropped before it took its notification.
#[cfg(feature = "tokio")]
struct AsyncWaiter<'a> {
    cond: &'a Condition,
    notified: bool,
}

#[cfg(feature = "tokio")]
impl Drop for AsyncWaiter<'_> {
    fn drop(&mut self) {
        if self.notified {
            return;
        }
        // The counts change under the lock only; a lock whose holder died
        // is still taken (and its state left marked inconsistent).
        let Some(guard) = self.cond.lock().map_or_else(LockError::into_guard, Some) else {
            return;
        };
        let cond = self.cond;
        let (seq, waiters, tokens) = (cond.word(SEQ), cond.word(WAITERS), cond.word(TOKENS));
        if waiters.load(Ordering::Relaxed) > 0 {
            waiters.fetch_sub(1, Ordering::Relaxed);
        } else if tokens.load(Ordering::Relaxed) > 0 {
            // A notify turned this wait's count into a token.
            tokens.fetch_sub(1, Ordering::Relaxed);
        }
        if tokens.load(Ordering::Relaxed) > 0 {
            // A notification may have woken this wait instead of another
            // waiter: make every waiter look again, so one takes it.
            seq.fetch_add(1, Ordering::Release);
            futex::wake(seq, u32::MAX);
        }
        drop(guard);
    }
}

/// The lock of a [`Condition`], held; waits and notifies.
pub struct ConditionGuard<'a> {
    guard: LockGuard<'a>,
    cond: &'a Condition,
}

impl<'a> ConditionGuard<'a> {
    /// Releases the lock, sleeps until notified, and takes the lock again.
    pub fn wait(self) -> LockResult<ConditionGuard<'a>> {
        match self.wait_until(Deadline::Never) {
            Ok((guard, _)) => Ok(guard),
            Err(e) => Err(e.map(|(guard, _)| guard)),
        }
    }

    /// Like [`wait`](Self::wait) for at most `timeout`; the flag is `false`
    /// if the time ran out without a notification (Python's `wait(t)`).
    pub fn wait_timeout(self, timeout: Duration) -> LockResult<(ConditionGuard<'a>, bool)> {
        self.wait_until(Deadline::after(timeout))
    }

    /// Waits until `predicate` (called with the lock held) returns `true`,
    /// for at most `timeout` if one is given; the flag is the predicate's
    /// last result (Python's `wait_for`).
    pub fn wait_for(
        self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> LockResult<(ConditionGuard<'a>, bool)> {
        let deadline = Deadline::from(timeout);
        let mut guard = self;
        loop {
            if predicate() {
                return Ok((guard, true));
            }
            if deadline.has_passed() {
                return Ok((guard, false));
            }
            guard = match guard.wait_until(deadline) {
                Ok((guard, _)) => guard,
                Err(e) => {
                    return Err(e.map(|(guard, _)| {
                        let ok = predicate();
                        (guard, ok)
                    }))
                }
            };
        }
    }

    fn wait_until(self, deadline: Deadline) -> LockResult<(ConditionGuard<'a>, bool)> {
        let cond = self.cond;
        let (seq, waiters, tokens) = (cond.word(SEQ), cond.word(WAITERS), cond.word(TOKENS));
        waiters.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.guard;
        let mut owner_died = false;
        loop {
            let seen = seq.load(Ordering::Relaxed);
            let timeout = deadline.remaining();
            let (woke, relocked) = guard.relock_after(|| futex::wait(seq, seen, timeout));
            let recovered;
            (guard, recovered) = match relocked {
                Ok(relocked) => relocked,
                Err(failure) => return Err(failure_error(failure)),
            };
            owner_died |= recovered;
            let notified = if tokens.load(Ordering::Relaxed) > 0 {
                tokens.fetch_sub(1, Ordering::Relaxed);
                Some(true)
            } else if woke == Wake::TimedOut || deadline.has_passed() {
                // Never below zero, even if a dead waiter's count was given away.
                let _ = waiters
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1));
                Some(false)
            } else {
                None
            };
            if let Some(notified) = notified {
                let guard = ConditionGuard { guard, cond };
                return if owner_died {
                    Err(LockError::OwnerDied(OwnerDied::new((guard, notified))))
                } else {
                    Ok((guard, notified))
                };
            }
        }
    }

    /// [`wait`](Self::wait) without a blocked thread: releases the lock
    /// now (on this thread, which owns it), awaits a notification, and
    /// takes the lock again on the thread that polls the future last,
    /// briefly blocking it while another holder has the lock, as a
    /// `std::sync::Mutex` in async code does. The guard it gives back
    /// cannot be sent to another thread, so the compiler refuses to hold
    /// it across an `.await` in a task that may move between threads.
    ///
    /// Cancel safe: a wait dropped before its notification uncounts
    /// itself, and one dropped after a notification was meant for it
    /// hands that notification on to the other waiters, so none is lost.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> ipc_core::Result<()> {
    /// use ipc_core::process::Process;
    /// use ipc_shm::{Condition, RawValue};
    ///
    /// let cond = Condition::new()?;
    /// let ready = RawValue::new(0u32)?;
    /// let mut child = Process::new().allow_threads().fork({
    ///     let (cond, ready) = (&cond, &ready);
    ///     move || -> ipc_core::Result<()> {
    ///         let guard = cond.lock()?;
    ///         ready.set(1);
    ///         guard.notify_all();
    ///         Ok(())
    ///     }
    /// })?;
    /// let mut guard = cond.lock()?;
    /// while ready.get() == 0 {
    ///     guard = guard.wait_async().await?;
    /// }
    /// drop(guard);
    /// child.join()?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub fn wait_async(
        self,
    ) -> impl std::future::Future<Output = LockResult<ConditionGuard<'a>>> + Send + 'a {
        let cond = self.cond;
        let seq = cond.word(SEQ);
        cond.word(WAITERS).fetch_add(1, Ordering::Relaxed);
        let mut seen = seq.load(Ordering::Relaxed);
        let unlocked = self.guard.unlock();
        let waiting = AsyncWaiter {
            cond,
            notified: false,
        };
        async move {
            // The whole place moves into the future, to be given back when
            // the future is dropped.
            let mut waiting = waiting;
            unlocked.map_err(LockError::Failed)?;
            loop {
                crate::watch::changed(seq, seen).await;
                let relocked = cond.lock();
                let held = matches!(relocked, Ok(_) | Err(LockError::OwnerDied(_)));
                let tokens = cond.word(TOKENS);
                if !held || tokens.load(Ordering::Relaxed) > 0 {
                    if held {
                        tokens.fetch_sub(1, Ordering::Relaxed);
                        waiting.notified = true;
                    }
                    return relocked;
                }
                // Another waiter took the notification: wait for the next.
                seen = seq.load(Ordering::Relaxed);
                drop(relocked);
            }
        }
    }

    /// Wakes up to `n` waiters (Python's `notify(n)`); a notify with nobody
    /// waiting does nothing.
    pub fn notify(&self, n: u32) {
        let cond = self.cond;
        let waiters = cond.word(WAITERS);
        let k = waiters.load(Ordering::Relaxed).min(n);
        if k == 0 {
            return;
        }
        waiters.fetch_sub(k, Ordering::Relaxed);
        cond.word(TOKENS).fetch_add(k, Ordering::Relaxed);
        let seq = cond.word(SEQ);
        seq.fetch_add(1, Ordering::Release);
        futex::wake(seq, k);
    }

    /// Wakes every waiter (Python's `notify_all()`).
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    /// Marks the state this lock guards consistent after a holder died.
    pub fn mark_consistent(&self) {
        self.guard.mark_consistent();
    }

    /// Releases the lock, reporting a failure that dropping would ignore.
    pub fn unlock(self) -> Result<()> {
        self.guard.unlock()
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}
