//! Process-shared [`Semaphore`], [`BoundedSemaphore`] and [`Event`]
//! (Python's `multiprocessing` ones), built on futexes: a counter or a flag
//! in shared memory that waiters sleep on in the kernel, burning no CPU,
//! and that a process can die next to without harm (they have no owner).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};

use crate::raw::SAFETY_NET;
use crate::segment::{object_common, Object};
use crate::segment::{sealed, Builder, Kind, Layout, ObjectKind, Spec};
use crate::shm::SharedMemory;
use crate::sys::futex;

/// Words of a semaphore: the count, the number of sleepers, the maximum,
/// and whether the maximum applies (1 for a bounded semaphore).
const COUNT: usize = 0;
const WAITERS: usize = 1;
const MAX: usize = 2;
const BOUNDED: usize = 3;

fn sem_init(kind: Kind, value: u32) -> [u32; 4] {
    [value, 0, value, u32::from(kind == Kind::BoundedSemaphore)]
}

fn word(obj: &Object, i: usize) -> &AtomicU32 {
    obj.map().atomic_u32(obj.word(i))
}

fn sem_acquire(obj: &Object, deadline: Deadline) -> bool {
    let count = word(obj, COUNT);
    let waiters = word(obj, WAITERS);
    loop {
        let c = count.load(Ordering::Acquire);
        if c > 0 {
            if count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
            continue;
        }
        let Some(sleep) = deadline.slice(SAFETY_NET) else {
            return false;
        };
        // SeqCst on both sides: either the releaser sees us counted, or our
        // futex wait sees its increment.
        waiters.fetch_add(1, Ordering::SeqCst);
        futex::wait(count, 0, Some(sleep));
        waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A waiter counted in a waiters word for as long as it lives: an async
/// waiter is counted while it awaits, and uncounted when it is done or
/// dropped.
#[cfg(feature = "tokio")]
struct Counted<'a>(&'a AtomicU32);

#[cfg(feature = "tokio")]
impl<'a> Counted<'a> {
    fn new(waiters: &'a AtomicU32) -> Self {
        // SeqCst on both sides, as for a blocking waiter.
        waiters.fetch_add(1, Ordering::SeqCst);
        Counted(waiters)
    }
}

#[cfg(feature = "tokio")]
impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Awaits a positive count and decrements it. Cancel safe: the count is
/// taken only by the step that returns.
#[cfg(feature = "tokio")]
async fn sem_acquire_async(obj: &Object) {
    let count = word(obj, COUNT);
    let waiters = word(obj, WAITERS);
    loop {
        if sem_acquire(obj, Deadline::Now) {
            return;
        }
        let counted = Counted::new(waiters);
        // Counted before this look: either the releaser sees us counted
        // and wakes the word, or this look sees its increment.
        if count.load(Ordering::SeqCst) == 0 {
            crate::watch::changed(count, 0).await;
        }
        drop(counted);
    }
}

fn sem_release(obj: &Object) -> Result<()> {
    let count = word(obj, COUNT);
    let max = match word(obj, BOUNDED).load(Ordering::Relaxed) {
        0 => u32::MAX,
        _ => word(obj, MAX).load(Ordering::Relaxed),
    };
    let mut c = count.load(Ordering::Relaxed);
    loop {
        if c >= max {
            return Err(if max == u32::MAX {
                Error::InvalidArgument("semaphore value would overflow")
            } else {
                Error::InvalidArgument("semaphore or lock released too many times")
            });
        }
        match count.compare_exchange_weak(c, c + 1, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => c = now,
        }
    }
    if word(obj, WAITERS).load(Ordering::SeqCst) != 0 {
        futex::wake(count, 1);
    }
    Ok(())
}

macro_rules! semaphore_type {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $ty {
            obj: Object,
        }

        impl sealed::Sealed for $ty {}

        impl ObjectKind for $ty {
            type Init<'a> = u32;

            fn spec() -> Spec {
                Spec::of::<[u32; 4]>($kind)
            }

            fn len(_: &u32) -> usize {
                1
            }

            fn fill(value: u32, shm: &SharedMemory, layout: &Layout) {
                shm.map.write(layout.data_offset, sem_init($kind, value));
            }

            fn wrap(obj: Object) -> Self {
                $ty { obj }
            }
        }

        impl $ty {
            /// A builder for a semaphore with the initial `value` (see
            /// [`Builder`]).
            pub fn builder(value: u32) -> Builder<'static, Self> {
                Builder::new(value)
            }

            /// A new anonymous semaphore with the initial `value`.
            pub fn new(value: u32) -> Result<Self> {
                Self::builder(value).anonymous()
            }

            /// Creates the semaphore `/dev/shm/<name>`; this process owns it.
            pub fn create(name: &str, value: u32) -> Result<Self> {
                Self::builder(value).create(name)
            }

            /// Opens the semaphore `name`.
            pub fn open(name: &str) -> Result<Self> {
                Self::builder(0).open(name)
            }

            /// Opens `name`, or creates it with the initial `value`.
            pub fn open_or_create(name: &str, value: u32) -> Result<Self> {
                Self::builder(value).open_or_create(name)
            }

            /// Waits until the value is positive and decrements it.
            pub fn acquire(&self) {
                sem_acquire(&self.obj, Deadline::Never);
            }

            /// Decrements the value if it is positive now (Python's
            /// `acquire(False)`); `false` if it is zero.
            pub fn try_acquire(&self) -> bool {
                sem_acquire(&self.obj, Deadline::Now)
            }

            /// Waits at most `timeout` for a positive value and decrements
            /// it; `false` if the time ran out (Python's
            /// `acquire(timeout=t)`).
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                sem_acquire(&self.obj, Deadline::after(timeout))
            }

            /// Awaits a positive value and decrements it: [`acquire`](Self::acquire)
            /// without blocking a thread (feature `tokio`; on any
            /// executor). Cancel safe: dropped before it returned, it took
            /// nothing.
            #[cfg(feature = "tokio")]
            pub async fn acquire_async(&self) {
                sem_acquire_async(&self.obj).await
            }

            /// The current value (Python's `get_value()`).
            pub fn value(&self) -> u32 {
                word(&self.obj, COUNT).load(Ordering::Relaxed)
            }
        }

        object_common!($ty);
    };
}

semaphore_type!(
    /// A process-shared counting semaphore: Python's
    /// `multiprocessing.Semaphore`.
    ///
    /// ```
    /// let sem = ipc_shm::Semaphore::new(2)?;
    /// sem.acquire();
    /// assert!(sem.try_acquire());
    /// assert!(!sem.try_acquire());
    /// assert!(!sem.acquire_timeout(std::time::Duration::from_millis(10)));
    /// sem.release()?;
    /// assert_eq!(sem.value(), 1);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    ///
    /// A semaphore has no owner, so a process that dies after acquiring it
    /// simply never releases: nothing is reported to the others.
    Semaphore,
    Kind::Semaphore
);

impl Semaphore {
    /// Increments the value and wakes one waiter.
    pub fn release(&self) -> Result<()> {
        sem_release(&self.obj)
    }
}

semaphore_type!(
    /// A semaphore that refuses to go above its initial value: Python's
    /// `multiprocessing.BoundedSemaphore`.
    ///
    /// ```
    /// let sem = ipc_shm::BoundedSemaphore::new(1)?;
    /// sem.acquire();
    /// sem.release()?;
    /// assert!(sem.release().is_err()); // released too many times
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    BoundedSemaphore,
    Kind::BoundedSemaphore
);

impl BoundedSemaphore {
    /// Increments the value and wakes one waiter; releasing above the
    /// initial value is [`Error::InvalidArgument`] (Python's
    /// `ValueError`).
    pub fn release(&self) -> Result<()> {
        sem_release(&self.obj)
    }
}

/// Words of an event: the flag and the number of sleepers.
const FLAG: usize = 0;

/// A process-shared flag that processes can wait for: Python's
/// `multiprocessing.Event`.
///
/// ```
/// use std::time::Duration;
/// use ipc_core::process::Process;
///
/// let ready = ipc_shm::Event::new()?;
/// assert!(!ready.wait_timeout(Duration::ZERO));
/// let mut child = Process::new().pass("ready", &ready)?.fork({
///     let ready = &ready;
///     move || ready.set()
/// })?;
/// ready.wait();
/// assert!(ready.is_set());
/// child.join()?;
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Event {
    obj: Object,
}

impl sealed::Sealed for Event {}

impl ObjectKind for Event {
    type Init<'a> = ();

    fn spec() -> Spec {
        Spec::of::<[u32; 2]>(Kind::Event)
    }

    fn len(_: &()) -> usize {
        1
    }

    fn fill(_: (), _: &SharedMemory, _: &Layout) {}

    fn wrap(obj: Object) -> Self {
        Event { obj }
    }
}

impl Event {
    /// A builder for an event (not set) (see [`Builder`]).
    pub fn builder() -> Builder<'static, Self> {
        Builder::new(())
    }

    /// A new anonymous event, for this process and the children it
    /// is handed to.
    pub fn new() -> Result<Self> {
        Self::builder().anonymous()
    }

    /// Creates the event `/dev/shm/<name>`; this process owns it.
    pub fn create(name: &str) -> Result<Self> {
        Self::builder().create(name)
    }

    /// Opens the event `name` that another process created.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder().open(name)
    }

    /// Opens `name`, or creates it if it does not exist.
    pub fn open_or_create(name: &str) -> Result<Self> {
        Self::builder().open_or_create(name)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        word(&self.obj, FLAG).load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        word(&self.obj, FLAG).store(1, Ordering::SeqCst);
        if word(&self.obj, WAITERS).load(Ordering::SeqCst) != 0 {
            futex::wake_all(word(&self.obj, FLAG));
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        word(&self.obj, FLAG).store(0, Ordering::SeqCst);
    }

    /// Waits until the flag is set; returns `true` (as Python does).
    pub fn wait(&self) -> bool {
        self.wait_until(Deadline::Never)
    }

    /// Waits at most `timeout` for the flag; `false` if it is still not set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout))
    }

    /// Awaits the flag: [`wait`](Self::wait) without blocking a thread
    /// (feature `tokio`; on any executor). Cancel safe.
    ///
    /// ```
    /// let event = ipc_shm::Event::new()?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// event.set();
    /// runtime.block_on(event.wait_async());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self) {
        let flag = word(&self.obj, FLAG);
        let waiters = word(&self.obj, WAITERS);
        while flag.load(Ordering::Acquire) == 0 {
            let counted = Counted::new(waiters);
            // Counted before this look, as in `sem_acquire_async`.
            if flag.load(Ordering::SeqCst) == 0 {
                crate::watch::changed(flag, 0).await;
            }
            drop(counted);
        }
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        let flag = word(&self.obj, FLAG);
        let waiters = word(&self.obj, WAITERS);
        loop {
            if flag.load(Ordering::Acquire) != 0 {
                return true;
            }
            let Some(sleep) = deadline.slice(SAFETY_NET) else {
                return false;
            };
            waiters.fetch_add(1, Ordering::SeqCst);
            // The loop looks at the flag and the deadline again.
            futex::wait(flag, 0, Some(sleep));
            waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

object_common!(Event);
