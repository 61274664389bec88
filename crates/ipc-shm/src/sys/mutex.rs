//! The robust, process-shared pthread mutex that every lock of this crate
//! is built on, and the guard that hands out `&mut` access to the data it
//! protects.
//!
//! A mutex initialised with `PTHREAD_PROCESS_SHARED` and
//! `PTHREAD_MUTEX_ROBUST` lives inside a segment. When its holder dies, the
//! kernel (through glibc's robust list) marks it, and the next locker gets
//! `EOWNERDEAD`. We call `pthread_mutex_consistent` at once, so the pthread
//! mutex itself never becomes `ENOTRECOVERABLE`, and record the fact in our
//! own `inconsistent` word beside it: until a holder marks the data
//! consistent, every locker is told that a previous owner died.

use std::cell::UnsafeCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, ManuallyDrop, MaybeUninit};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use bytemuck::Pod;

use super::map::Mapping;

extern "C" {
    // glibc 2.30+; the libc crate does not declare it yet. It is
    // pthread_mutex_timedlock with a choice of clock, which lets timeouts use
    // CLOCK_MONOTONIC and so ignore changes of the wall clock.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The bytes reserved for a [`RobustMutex`] in a segment's layout.
pub(crate) const MUTEX_AREA: usize = 64;

const _: () = assert!(size_of::<RobustMutex>() <= MUTEX_AREA);

/// A robust, process-shared pthread mutex in shared memory, with a word
/// that says whether the data it guards is marked inconsistent.
#[repr(C)]
pub(crate) struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
    /// 1 from the moment a locker learns that a holder died until a holder
    /// marks the data consistent.
    inconsistent: AtomicU32,
}

/// What kind of pthread mutex to initialise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// Locking again from the owning thread is `EDEADLK`, unlocking from
    /// another thread is `EPERM` (Python's `Lock`, minus cross-thread
    /// release, which a robust mutex cannot do).
    ErrorCheck,
    /// The owning thread may lock again; each lock needs an unlock
    /// (Python's `RLock`).
    Recursive,
}

/// How long a lock call may block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum How {
    /// Until the mutex is ours.
    Block,
    /// Not at all.
    Try,
    /// Until this moment.
    Until(Instant),
}

/// Why a lock call did not return the mutex.
#[derive(Debug)]
pub(crate) enum LockFailure {
    /// `How::Try` and another thread or process holds it.
    WouldBlock,
    /// `How::Until` and the moment passed.
    TimedOut,
    /// This thread already holds it (an error-checking mutex).
    Deadlock,
    /// Anything else: an unrecoverable mutex or bytes that are no mutex.
    Other(io::Error),
}

impl Mapping {
    /// Initialises a robust, process-shared mutex at `offset`.
    ///
    /// Takes `&mut self`: only the creator of a segment calls this, before
    /// publishing the segment's header, when nothing else in this process
    /// refers to the mapping and no other process touches the mutex (openers
    /// wait for the header).
    pub(crate) fn init_mutex(&mut self, offset: usize, kind: MutexKind) -> io::Result<()> {
        let mutex = self.mutex(offset);
        mutex.inconsistent.store(0, Ordering::Relaxed);
        let kind = match kind {
            MutexKind::ErrorCheck => libc::PTHREAD_MUTEX_ERRORCHECK,
            MutexKind::Recursive => libc::PTHREAD_MUTEX_RECURSIVE,
        };
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is valid for writes; init fills it in.
        check(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        // SAFETY: `attr` was initialised just above, and the setters only
        // write into it; the mutex pointer is in bounds and aligned (from
        // `Mapping::mutex`) and, per this function's contract, used by no one
        // else while it is initialised.
        let result = unsafe {
            let attr = attr.as_mut_ptr();
            let mut r = libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED);
            if r == 0 {
                r = libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if r == 0 {
                r = libc::pthread_mutexattr_settype(attr, kind);
            }
            if r == 0 {
                r = libc::pthread_mutex_init(mutex.raw.get(), attr);
            }
            libc::pthread_mutexattr_destroy(attr);
            r
        };
        check(result)
    }

    /// Locks the mutex at `mutex_offset` and returns a guard for the `T`
    /// at `data_offset`, and whether a previous owner died (or the data is
    /// still marked inconsistent).
    ///
    /// The caller is a locked object kind whose data is reached only
    /// through this guard (see the module invariants in `sys`).
    pub(crate) fn lock_data<T: Pod>(
        &self,
        mutex_offset: usize,
        data_offset: usize,
        how: How,
    ) -> Result<(MutexGuard<'_, T>, bool), LockFailure> {
        // Bounds and alignment are checked before locking.
        let data = NonNull::new(self.checked::<T>(data_offset, 1))
            .expect("a mapping is never at address 0");
        let mutex = self.mutex(mutex_offset);
        let recovered = mutex.lock(how)?;
        Ok((MutexGuard::new(mutex, data), recovered))
    }

    /// Like [`lock_data`](Self::lock_data) for `len` values of `T`.
    pub(crate) fn lock_slice<T: Pod>(
        &self,
        mutex_offset: usize,
        data_offset: usize,
        len: usize,
        how: How,
    ) -> Result<(MutexGuard<'_, [T]>, bool), LockFailure> {
        // Bounds and alignment of the whole slice are checked before locking.
        let first = NonNull::new(self.checked::<T>(data_offset, len))
            .expect("a mapping is never at address 0");
        let data = NonNull::slice_from_raw_parts(first, len);
        let mutex = self.mutex(mutex_offset);
        let recovered = mutex.lock(how)?;
        Ok((MutexGuard::new(mutex, data), recovered))
    }

    /// Locks the mutex at `mutex_offset` with no data behind it (a `Lock`,
    /// an `RLock`, a `Condition`).
    pub(crate) fn lock_unit(
        &self,
        mutex_offset: usize,
        how: How,
    ) -> Result<(MutexGuard<'_, ()>, bool), LockFailure> {
        let mutex = self.mutex(mutex_offset);
        let recovered = mutex.lock(how)?;
        Ok((MutexGuard::new(mutex, NonNull::dangling()), recovered))
    }
}

impl RobustMutex {
    /// Locks; `Ok(true)` if a previous owner died or the data is still
    /// marked inconsistent.
    #[inline]
    pub(crate) fn lock(&self, how: How) -> Result<bool, LockFailure> {
        let raw = self.raw.get();
        let rc = match how {
            // SAFETY: `raw` points at a mutex the creator initialised before
            // publishing the header that was checked when this object was
            // opened; glibc validates the mutex kind and fails with EINVAL
            // on bytes it does not recognise.
            How::Block => unsafe { libc::pthread_mutex_lock(raw) },
            // SAFETY: as above.
            How::Try => unsafe { libc::pthread_mutex_trylock(raw) },
            How::Until(deadline) => {
                let abstime = monotonic_deadline(deadline);
                // SAFETY: as above; `abstime` is a valid timespec that
                // outlives the call.
                unsafe { pthread_mutex_clocklock(raw, libc::CLOCK_MONOTONIC, &abstime) }
            }
        };
        match rc {
            0 => Ok(self.inconsistent.load(Ordering::Acquire) != 0),
            libc::EOWNERDEAD => {
                // We hold the mutex now. Make the pthread mutex usable again at
                // once and keep the news in our own word until a holder marks
                // the data consistent.
                self.inconsistent.store(1, Ordering::Release);
                // SAFETY: we hold the mutex (EOWNERDEAD means the lock
                // succeeded), which is what pthread_mutex_consistent requires.
                let rc = unsafe { libc::pthread_mutex_consistent(raw) };
                if rc != 0 {
                    // Do not return an error while still holding the lock.
                    // SAFETY: we hold the mutex, as above.
                    unsafe { libc::pthread_mutex_unlock(raw) };
                    return Err(LockFailure::Other(io::Error::from_raw_os_error(rc)));
                }
                Ok(true)
            }
            libc::EBUSY => Err(LockFailure::WouldBlock),
            // A try by the holding thread: the lock is just as unavailable.
            libc::EDEADLK if matches!(how, How::Try) => Err(LockFailure::WouldBlock),
            libc::ETIMEDOUT => Err(LockFailure::TimedOut),
            libc::EDEADLK => Err(LockFailure::Deadlock),
            rc => Err(LockFailure::Other(io::Error::from_raw_os_error(rc))),
        }
    }

    /// Unlocks; `EPERM` if this thread does not hold the mutex.
    #[inline]
    pub(crate) fn unlock(&self) -> io::Result<()> {
        // SAFETY: an initialised robust mutex (see `lock`); unlocking a
        // robust mutex that this thread does not hold fails with EPERM
        // instead of corrupting it.
        check(unsafe { libc::pthread_mutex_unlock(self.raw.get()) })
    }

    /// Clears the inconsistent mark. Only a holder calls this.
    pub(crate) fn mark_consistent(&self) {
        self.inconsistent.store(0, Ordering::Release);
    }

    /// Whether the data is marked inconsistent.
    pub(crate) fn is_inconsistent(&self) -> bool {
        self.inconsistent.load(Ordering::Acquire) != 0
    }
}

/// Scoped access to data guarded by a process-shared robust lock. The lock
/// is released when the guard is dropped.
///
/// If the previous holder died, the guard was handed over inside an
/// [`OwnerDied`](crate::OwnerDied): repair the data, then call
/// [`mark_consistent`](Self::mark_consistent). A guard dropped without that
/// still releases the lock, which keeps working, but the next locker is told
/// again that the data may be inconsistent.
///
/// The guard cannot be sent to another thread: a pthread mutex must be
/// unlocked by the thread that locked it.
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a RobustMutex,
    data: NonNull<T>,
    _marker: PhantomData<(&'a mut T, *const ())>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    fn new(mutex: &'a RobustMutex, data: NonNull<T>) -> Self {
        MutexGuard {
            mutex,
            data,
            _marker: PhantomData,
        }
    }

    /// Marks the guarded data consistent again after a previous holder
    /// died (`pthread_mutex_consistent` plus this crate's own mark), so the
    /// next locker is not told about the death.
    pub fn mark_consistent(&self) {
        self.mutex.mark_consistent();
    }

    /// Whether the data is marked inconsistent: a holder died and nobody
    /// has marked it consistent since.
    pub fn is_inconsistent(&self) -> bool {
        self.mutex.is_inconsistent()
    }

    /// Releases the lock, reporting a failure that dropping would ignore.
    pub fn unlock(self) -> ipc_core::Result<()> {
        let this = ManuallyDrop::new(self);
        Ok(this.mutex.unlock()?)
    }

    /// Keeps the lock held but forgets the guard (Python's `acquire()`
    /// without a `with`); the lock is released by an explicit unlock.
    pub(crate) fn leak(self) {
        let _ = ManuallyDrop::new(self);
    }

    /// Releases the lock, runs `f`, and locks again (what a condition
    /// variable's wait does). The new guard comes back with whether a
    /// holder died meanwhile.
    pub(crate) fn relock_after<R>(
        self,
        f: impl FnOnce() -> R,
    ) -> (R, Result<(MutexGuard<'a, T>, bool), LockFailure>) {
        let this = ManuallyDrop::new(self);
        let (mutex, data) = (this.mutex, this.data);
        if let Err(e) = mutex.unlock() {
            return (f(), Err(LockFailure::Other(e)));
        }
        let result = f();
        let relocked = mutex
            .lock(How::Block)
            .map(|recovered| (MutexGuard::new(mutex, data), recovered));
        (result, relocked)
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `data` was checked to be in bounds and aligned when the
        // guard was made, the mapping outlives `'a`, and while this thread
        // holds the mutex no other user of the object touches the data (the
        // object kinds with a lock reach their data only through a guard).
        // The value is Pod (or the empty `()`), so any bytes are valid.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // derived from the guard, and the mutex makes the guard the only
        // holder in any process.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let _ = self.mutex.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("data", &&**self)
            .field("inconsistent", &self.is_inconsistent())
            .finish()
    }
}

/// `deadline` as an absolute CLOCK_MONOTONIC time, which is the clock
/// behind `Instant` on Linux.
fn monotonic_deadline(deadline: Instant) -> libc::timespec {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut now = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `now` is valid for writes; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, now.as_mut_ptr()) };
    // SAFETY: clock_gettime with a valid clock always fills in `now`.
    let now = unsafe { now.assume_init() };
    let mut sec = now
        .tv_sec
        .saturating_add(remaining.as_secs() as libc::time_t);
    let mut nsec = now.tv_nsec + remaining.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        sec = sec.saturating_add(1);
        nsec -= 1_000_000_000;
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
