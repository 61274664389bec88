//! The low-level building blocks under this crate's objects, for other
//! crates of the workspace that lay out their own shared-memory structures
//! (ipc-queue's ring): atomics at an offset of a [`SharedMemory`], futex
//! wait and wake on them, and the robust process-shared mutex with its
//! owner-died signal.
//!
//! ```
//! use ipc_shm::{raw, SharedMemory};
//! let mut shm = SharedMemory::anonymous(4096)?;
//! raw::init_robust_mutex(&mut shm, 0)?;
//! // SAFETY: offset 0 holds the mutex initialised just above.
//! let mutex = unsafe { raw::RobustMutexRef::at(&shm, 0) };
//! assert!(!mutex.lock(ipc_core::Deadline::Never)?); // no previous owner died
//! raw::atomic_u64(&shm, 128).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//! mutex.unlock()?;
//! # Ok::<(), ipc_core::Error>(())
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};

use crate::sys::futex;
use crate::sys::mutex::{LockFailure, MutexKind, RobustMutex, MUTEX_AREA};
use crate::SharedMemory;

pub use crate::segment::{Kind, Layout, Object, Place, Spec, HEADER_SIZE, LAYOUT_VERSION};

/// The longest a waiter on a futex in shared memory sleeps before looking
/// again. A wake-up is lost when the process it went to (a woken waiter,
/// or a waker between its store and its wake) is killed before passing it
/// on; looking again now and then bounds what that costs the others. It is
/// not how waiting normally ends: a change wakes a sleeper at once.
pub const SAFETY_NET: Duration = Duration::from_millis(500);

/// The hash of a type name that every layout header of the workspace
/// records (FNV-1a, 64 bits: stable across releases, unlike std's
/// hashers), so that an object is never opened as another item type.
///
/// ```
/// use ipc_shm::raw::type_hash;
/// assert_eq!(type_hash("u64"), type_hash(std::any::type_name::<u64>()));
/// assert_ne!(type_hash("u64"), type_hash("u32"));
/// ```
pub fn type_hash(type_name: &str) -> u64 {
    crate::segment::fnv1a(type_name.as_bytes())
}

/// The bytes a robust mutex takes in a layout (a multiple of 8).
pub const ROBUST_MUTEX_SIZE: usize = MUTEX_AREA;

/// The 32-bit atomic at `offset` of `shm`.
///
/// # Panics
///
/// If the word is outside the segment or `offset` is not a multiple of 4.
#[inline]
pub fn atomic_u32(shm: &SharedMemory, offset: usize) -> &AtomicU32 {
    shm.map.atomic_u32(offset)
}

/// The 64-bit atomic at `offset` of `shm`.
///
/// # Panics
///
/// If the word is outside the segment or `offset` is not a multiple of 8.
#[inline]
pub fn atomic_u64(shm: &SharedMemory, offset: usize) -> &AtomicU64 {
    shm.map.atomic_u64(offset)
}

/// Sleeps while `word` holds `expected`, at most `timeout` (`None`: no
/// limit); `false` if the timeout ran out. The word may be in memory shared
/// with other processes (no `FUTEX_PRIVATE_FLAG`). Returns early on a wake,
/// a signal or spuriously: callers re-check their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    futex::wait(word, expected, timeout) == futex::Wake::Woken
}

/// Wakes up to `n` waiters sleeping on `word`; returns how many woke.
pub fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, n)
}

/// Initialises a robust, process-shared, error-checking mutex in
/// the [`ROBUST_MUTEX_SIZE`] bytes at `offset` of `shm`. Call it while
/// creating a layout, before any other process can see it.
///
/// # Panics
///
/// If the bytes are outside the segment or misaligned.
pub fn init_robust_mutex(shm: &mut SharedMemory, offset: usize) -> Result<()> {
    Ok(shm.map.init_mutex(offset, MutexKind::ErrorCheck)?)
}

/// A number that changes in a forked child: a holder of a robust mutex that
/// keeps it while the program goes on (a guard) records it when it locks,
/// and finds out by comparing that it is now a copy in a child, where the
/// mutex is not held (the kernel and this crate forget a parent's locks in
/// a child). Counted from the first lock of any robust mutex in the
/// process.
///
/// ```
/// let before = ipc_shm::raw::fork_generation();
/// assert_eq!(ipc_shm::raw::fork_generation(), before);
/// ```
#[inline]
pub fn fork_generation() -> u64 {
    crate::sys::robust::fork_generation()
}

/// A robust mutex inside a segment, locked and unlocked by hand.
#[derive(Clone, Copy)]
pub struct RobustMutexRef<'a> {
    mutex: &'a RobustMutex,
}

impl std::fmt::Debug for RobustMutexRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobustMutexRef").finish_non_exhaustive()
    }
}

impl<'a> RobustMutexRef<'a> {
    /// The mutex at `offset` of `shm`.
    ///
    /// # Safety
    ///
    /// The bytes at `offset` must hold a mutex that [`init_robust_mutex`]
    /// initialised (in this or another process), for instance because a
    /// layout header checked on open says so (other bytes are refused or
    /// lock wrongly; only while this thread holds the mutex can another
    /// process writing it make the unlock write elsewhere, as with glibc's
    /// robust mutexes). The segment
    /// must stay mapped while this thread holds the mutex: the thread's
    /// robust futex list points into it.
    ///
    /// # Panics
    ///
    /// If the bytes are outside the segment or misaligned.
    // Declaring the contract needs `unsafe fn`; the body has no unsafe code.
    #[allow(unsafe_code)]
    #[inline]
    pub unsafe fn at(shm: &'a SharedMemory, offset: usize) -> Self {
        RobustMutexRef {
            mutex: shm.map.mutex(offset),
        }
    }

    /// Locks, waiting until `deadline` if one is given ([`Error::Timeout`]
    /// after it). `Ok(true)` means a previous holder died holding the lock,
    /// or a holder since then has not called
    /// [`mark_consistent`](Self::mark_consistent): repair the data first.
    /// Locking it again from the holding thread is an error.
    #[inline]
    pub fn lock(&self, deadline: impl Into<Deadline>) -> Result<bool> {
        self.mutex.lock(deadline.into()).map_err(failure)
    }

    /// Whether the calling thread holds the mutex: for a caller about to
    /// wait for something only another holder of it could bring.
    ///
    /// ```
    /// use ipc_shm::{raw, SharedMemory};
    /// let mut shm = SharedMemory::anonymous(4096)?;
    /// raw::init_robust_mutex(&mut shm, 0)?;
    /// // SAFETY: offset 0 holds the mutex initialised just above.
    /// let mutex = unsafe { raw::RobustMutexRef::at(&shm, 0) };
    /// assert!(!mutex.is_held_by_this_thread());
    /// mutex.lock(ipc_core::Deadline::Never)?;
    /// assert!(mutex.is_held_by_this_thread());
    /// mutex.unlock()?;
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    #[inline]
    pub fn is_held_by_this_thread(&self) -> bool {
        self.mutex.held_by_me()
    }

    /// Locks if the mutex is free now; `Ok(None)` if it is held.
    #[inline]
    pub fn try_lock(&self) -> Result<Option<bool>> {
        match self.mutex.lock(Deadline::Now) {
            Ok(died) => Ok(Some(died)),
            Err(LockFailure::WouldBlock) => Ok(None),
            Err(e) => Err(failure(e)),
        }
    }

    /// Unlocks; an error if this thread does not hold the mutex.
    #[inline]
    pub fn unlock(&self) -> Result<()> {
        Ok(self.mutex.unlock()?)
    }

    /// Clears the owner-died mark once the data is repaired. Only the
    /// holder calls this.
    #[inline]
    pub fn mark_consistent(&self) {
        self.mutex.mark_consistent();
    }
}

fn failure(e: LockFailure) -> Error {
    match e {
        LockFailure::WouldBlock => Error::Io(std::io::ErrorKind::WouldBlock.into()),
        LockFailure::TimedOut => Error::Timeout,
        LockFailure::Deadlock => {
            Error::InvalidArgument("this thread already holds the robust mutex")
        }
        LockFailure::Other(e) => Error::Io(e),
    }
}
