//! Process-shared [`Lock`] and [`RLock`] (Python's `multiprocessing.Lock`
//! and `RLock`) on this crate's robust futex mutex, and the error values every lock
//! of this crate returns: [`LockError`], whose [`OwnerDied`] variant hands
//! over the lock of a holder that died.

use std::fmt;
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};

use crate::segment::{object_common, Object};
use crate::segment::{sealed, Builder, Kind, Layout, ObjectKind, Spec, MUTEX_OFFSET};
use crate::shm::SharedMemory;
use crate::sys::mutex::{LockFailure, MutexGuard};

/// The guard of a [`Lock`] or an [`RLock`]: the lock is held until it is
/// dropped.
pub type LockGuard<'a> = MutexGuard<'a, ()>;

/// What a lock call returns: the guard, or why there is none, or (as
/// [`LockError::OwnerDied`]) the guard of a lock whose previous holder died.
pub type LockResult<G> = std::result::Result<G, LockError<G>>;

/// The lock was taken, but its previous holder died while holding it, so the
/// data it guards may be half-updated. Take the guard with
/// [`into_guard`](Self::into_guard), check or repair the data, then call
/// `mark_consistent()` on the guard.
///
/// If the guard is dropped without being marked consistent, the lock is
/// still released and keeps working, but the next locker is told again that
/// a holder died: the mark stays until someone repairs the data. (Unlike a
/// robust pthread mutex left inconsistent, which becomes unusable for
/// everyone.)
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G) -> Self {
        OwnerDied { guard }
    }

    /// The guard: the caller holds the lock.
    pub fn into_guard(self) -> G {
        self.guard
    }

    /// The guard, borrowed.
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// The guard, borrowed mutably.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDied").finish_non_exhaustive()
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous holder of the lock died while holding it")
    }
}

/// Why a lock call returned no plain guard.
pub enum LockError<G> {
    /// The lock is held now, but its previous holder died: see
    /// [`OwnerDied`].
    OwnerDied(OwnerDied<G>),
    /// A `try_` call found the lock held by another thread or process.
    WouldBlock,
    /// A timed call ran out of time.
    Timeout,
    /// The lock cannot be taken: this thread already holds a non-recursive
    /// lock ([`Error::InvalidArgument`]), or the lock is broken.
    Failed(Error),
}

impl<G> LockError<G> {
    /// The guard, if the lock was taken after all (a previous holder died).
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(died) => Some(died.into_guard()),
            _ => None,
        }
    }

    pub(crate) fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(died) => LockError::OwnerDied(OwnerDied {
                guard: f(died.guard),
            }),
            LockError::WouldBlock => LockError::WouldBlock,
            LockError::Timeout => LockError::Timeout,
            LockError::Failed(e) => LockError::Failed(e),
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(died) => fmt::Debug::fmt(died, f),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::Timeout => f.write_str("Timeout"),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(died) => fmt::Display::fmt(died, f),
            LockError::WouldBlock => f.write_str("the lock is held elsewhere"),
            LockError::Timeout => f.write_str("timed out waiting for the lock"),
            LockError::Failed(e) => write!(f, "cannot take the lock: {e}"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}

/// For `?` in functions that return [`ipc_core::Result`]: a dead owner
/// becomes [`Error::OwnerDied`] (and the guard is dropped, which releases
/// the lock and leaves the data marked inconsistent), `WouldBlock` and
/// `Timeout` become [`Error::Timeout`].
impl<G> From<LockError<G>> for Error {
    fn from(e: LockError<G>) -> Error {
        match e {
            LockError::OwnerDied(_) => Error::OwnerDied,
            LockError::WouldBlock | LockError::Timeout => Error::Timeout,
            LockError::Failed(e) => e,
        }
    }
}

/// Turns what `sys` returns into a [`LockResult`].
#[inline]
pub(crate) fn wrap<G>(r: std::result::Result<(G, bool), LockFailure>) -> LockResult<G> {
    match r {
        Ok((guard, false)) => Ok(guard),
        Ok((guard, true)) => Err(LockError::OwnerDied(OwnerDied { guard })),
        Err(failure) => Err(failure_error(failure)),
    }
}

/// The [`LockError`] for a lock call that did not take the lock.
pub(crate) fn failure_error<G>(failure: LockFailure) -> LockError<G> {
    match failure {
        LockFailure::WouldBlock => LockError::WouldBlock,
        LockFailure::TimedOut => LockError::Timeout,
        LockFailure::Deadlock => {
            LockError::Failed(Error::InvalidArgument("this thread already holds the lock"))
        }
        LockFailure::Other(e) => LockError::Failed(Error::Io(e)),
    }
}

fn leak(r: LockResult<LockGuard<'_>>) -> LockResult<()> {
    r.map(MutexGuard::leak).map_err(|e| e.map(MutexGuard::leak))
}

macro_rules! lock_type {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $ty {
            obj: Object,
        }

        impl sealed::Sealed for $ty {}

        impl ObjectKind for $ty {
            type Init<'a> = ();

            fn spec() -> Spec {
                Spec::of::<()>($kind)
            }

            fn len(_: &()) -> usize {
                0
            }

            fn fill(_: (), _: &SharedMemory, _: &Layout) {}

            fn wrap(obj: Object) -> Self {
                $ty { obj }
            }
        }

        impl $ty {
            /// A builder for a lock (see [`Builder`]).
            pub fn builder() -> Builder<'static, Self> {
                Builder::new(())
            }

            /// A new anonymous lock, for this process and the children it
            /// is handed to.
            pub fn new() -> Result<Self> {
                Self::builder().anonymous()
            }

            /// Creates the lock `/dev/shm/<name>`; this process owns it.
            pub fn create(name: &str) -> Result<Self> {
                Self::builder().create(name)
            }

            /// Opens the lock `name` that another process created.
            pub fn open(name: &str) -> Result<Self> {
                Self::builder().open(name)
            }

            /// Opens `name`, or creates it if it does not exist.
            pub fn open_or_create(name: &str) -> Result<Self> {
                Self::builder().open_or_create(name)
            }

            /// Waits for the lock and returns its guard.
            #[inline]
            pub fn lock(&self) -> LockResult<LockGuard<'_>> {
                wrap(self.obj.map().lock_unit(MUTEX_OFFSET, Deadline::Never))
            }

            /// Takes the lock if it is free now ([`LockError::WouldBlock`]
            /// otherwise).
            #[inline]
            pub fn try_lock(&self) -> LockResult<LockGuard<'_>> {
                wrap(self.obj.map().lock_unit(MUTEX_OFFSET, Deadline::Now))
            }

            /// Waits at most `timeout` for the lock ([`LockError::Timeout`]).
            pub fn lock_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
                wrap(self.obj.map().lock_unit(MUTEX_OFFSET, Deadline::after(timeout)))
            }

            /// Python's `acquire()`: takes the lock without a guard; release
            /// it with [`release`](Self::release) from the same thread.
            pub fn acquire(&self) -> LockResult<()> {
                leak(self.lock())
            }

            /// Python's `acquire(False)`: [`LockError::WouldBlock`] if the
            /// lock is held.
            pub fn try_acquire(&self) -> LockResult<()> {
                leak(self.try_lock())
            }

            /// Python's `acquire(timeout=t)`: [`LockError::Timeout`] if the
            /// lock stays held.
            pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<()> {
                leak(self.lock_timeout(timeout))
            }

            /// Python's `release()`. Releasing a lock this thread does not
            /// hold is [`Error::InvalidArgument`].
            pub fn release(&self) -> Result<()> {
                self.obj.mutex().unlock().map_err(|e| {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        Error::InvalidArgument("release of a lock this thread does not hold")
                    } else {
                        Error::Io(e)
                    }
                })
            }

            /// After [`acquire`](Self::acquire) reported
            /// [`LockError::OwnerDied`]: marks the guarded state consistent.
            /// Call it only while holding the lock.
            pub fn mark_consistent(&self) {
                self.obj.mutex().mark_consistent();
            }
        }

        object_common!($ty);
    };
}

lock_type!(
    /// A process-shared mutual-exclusion lock: Python's
    /// `multiprocessing.Lock`, robust against a holder that dies.
    ///
    /// ```
    /// use ipc_core::process::Process;
    /// use ipc_shm::{Lock, LockError};
    ///
    /// let lock = Lock::new()?;
    /// let guard = lock.lock()?;
    /// assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
    /// drop(guard);
    ///
    /// // A child that dies holding the lock: the next locker is told.
    /// let mut child = Process::new().pass("lock", &lock)?.fork({
    ///     let lock = &lock;
    ///     move || {
    ///         std::mem::forget(lock.lock());
    ///         0
    ///     }
    /// })?;
    /// child.join()?;
    /// match lock.lock() {
    ///     Err(LockError::OwnerDied(died)) => died.into_guard().mark_consistent(),
    ///     other => panic!("expected OwnerDied, got {other:?}"),
    /// }
    /// assert!(lock.lock().is_ok());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    ///
    /// Unlike Python's, the lock can be released only by the thread that
    /// took it (that is what lets the system notice a dead holder), and
    /// locking it again from the holding thread fails with
    /// [`Error::InvalidArgument`] instead of hanging.
    Lock,
    Kind::Lock
);

lock_type!(
    /// A process-shared recursive lock: Python's `multiprocessing.RLock`.
    /// The holding thread may take it again; each take needs a release, and
    /// releasing a lock this thread does not hold is an error.
    ///
    /// ```
    /// let rlock = ipc_shm::RLock::new()?;
    /// for _ in 0..3 {
    ///     rlock.acquire()?;
    /// }
    /// for _ in 0..3 {
    ///     rlock.release()?;
    /// }
    /// assert!(rlock.release().is_err());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    RLock,
    Kind::RLock
);
