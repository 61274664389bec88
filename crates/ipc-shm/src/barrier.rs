//! A process-shared [`Barrier`] (Python's `multiprocessing.Barrier`): a
//! robust mutex guards the count of arrivals; waiters sleep on a futex
//! generation number that the last arrival (or a break) advances.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};

use crate::lock::{wrap, LockError, LockGuard};
use crate::raw::SAFETY_NET;
use crate::segment::{object_common, Object};
use crate::segment::{sealed, Builder, Kind, Layout, ObjectKind, Spec, MUTEX_OFFSET};
use crate::shm::SharedMemory;
use crate::sys::futex;

/// Words of a barrier: the generation (a futex), the arrivals in this
/// generation, the number of parties, whether the barrier is broken; then,
/// at word 4, 64 bits saying whether each of the last 64 generations ended
/// broken (bit `generation % 64`).
const GENERATION: usize = 0;
const COUNT: usize = 1;
const PARTIES: usize = 2;
const BROKEN: usize = 3;
const OUTCOMES: usize = 4;

/// Why a barrier wait did not pass.
#[derive(Debug)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier was aborted, reset while this party waited, timed out
    /// for some party, or a process died holding its lock (Python's
    /// `BrokenBarrierError`).
    Broken,
    /// The barrier's lock cannot be taken.
    Failed(Error),
}

impl fmt::Display for BarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BarrierError::Broken => f.write_str("the barrier is broken"),
            BarrierError::Failed(e) => write!(f, "cannot use the barrier: {e}"),
        }
    }
}

impl std::error::Error for BarrierError {}

impl From<BarrierError> for Error {
    fn from(e: BarrierError) -> Error {
        match e {
            BarrierError::Broken => Error::Io(io::Error::other(BarrierError::Broken)),
            BarrierError::Failed(e) => e,
        }
    }
}

/// A process-shared barrier for a fixed number of parties: Python's
/// `multiprocessing.Barrier`.
///
/// Each [`wait`](Self::wait) blocks until `parties` processes (or threads)
/// are waiting, then all pass; each gets a distinct index in
/// `0..parties` (the first to arrive 0). [`abort`](Self::abort) breaks it,
/// [`reset`](Self::reset) breaks the current round and makes it usable
/// again. A waiter whose timeout runs out breaks the barrier for everyone,
/// as in Python.
///
/// ```
/// use ipc_core::process::Process;
/// let barrier = ipc_shm::Barrier::new(2)?;
/// let mut child = Process::new().pass("b", &barrier)?.fork({
///     let barrier = &barrier;
///     move || barrier.wait().map(|_| ())
/// })?;
/// let index = barrier.wait()?;
/// assert!(index < 2);
/// assert!(child.join()?.success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A process that dies while waiting leaves the others waiting (use a
/// timeout); one that dies holding the barrier's internal lock breaks it.
#[derive(Debug)]
pub struct Barrier {
    obj: Object,
}

impl sealed::Sealed for Barrier {}

impl ObjectKind for Barrier {
    type Init<'a> = u32;

    fn spec() -> Spec {
        Spec::of::<[u32; 8]>(Kind::Barrier)
    }

    fn len(_: &u32) -> usize {
        1
    }

    fn check(parties: &u32) -> Result<()> {
        if *parties == 0 {
            return Err(Error::InvalidArgument("a barrier needs at least one party"));
        }
        Ok(())
    }

    fn fill(parties: u32, shm: &SharedMemory, layout: &Layout) {
        shm.map
            .write(layout.data_offset, [0, 0, parties, 0, 0, 0, 0, 0u32])
    }

    fn wrap(obj: Object) -> Self {
        Barrier { obj }
    }
}

impl Barrier {
    /// A builder for a barrier for `parties` parties (see [`Builder`]).
    pub fn builder(parties: u32) -> Builder<'static, Self> {
        Builder::new(parties)
    }

    /// A new anonymous barrier for `parties` parties.
    pub fn new(parties: u32) -> Result<Self> {
        Self::builder(parties).anonymous()
    }

    /// Creates the barrier `/dev/shm/<name>`; this process owns it.
    pub fn create(name: &str, parties: u32) -> Result<Self> {
        Self::builder(parties).create(name)
    }

    /// Opens the barrier `name`.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder(1).open(name)
    }

    /// Opens `name`, or creates it for `parties` parties.
    pub fn open_or_create(name: &str, parties: u32) -> Result<Self> {
        Self::builder(parties).open_or_create(name)
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        self.obj.map().atomic_u32(self.obj.word(i))
    }

    fn outcomes(&self) -> &AtomicU64 {
        self.obj.map().atomic_u64(self.obj.word(OUTCOMES))
    }

    /// The number of parties needed to pass.
    pub fn parties(&self) -> u32 {
        self.word(PARTIES).load(Ordering::Relaxed)
    }

    /// The number of parties waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.word(COUNT).load(Ordering::Relaxed)
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.word(BROKEN).load(Ordering::Acquire) != 0
    }

    /// Waits for all parties; returns this party's arrival index.
    pub fn wait(&self) -> std::result::Result<u32, BarrierError> {
        self.wait_inner(None, None::<fn()>)
    }

    /// Like [`wait`](Self::wait), breaking the barrier if the parties are
    /// not all there within `timeout`. If the barrier's lock cannot be
    /// taken in that time, the result is `Failed(Timeout)`; breaking it
    /// after the timeout waits at most [`SAFETY_NET`](crate::raw::SAFETY_NET)
    /// more for the lock, then also gives `Failed(Timeout)`.
    pub fn wait_timeout(&self, timeout: Duration) -> std::result::Result<u32, BarrierError> {
        self.wait_inner(Some(timeout), None::<fn()>)
    }

    /// Like [`wait`](Self::wait) with a timeout if given; if this party is
    /// the last to arrive, it runs `action` before releasing the others
    /// (Python's `action` argument). A panicking action breaks the barrier
    /// and the panic continues in this process.
    pub fn wait_with_action(
        &self,
        timeout: Option<Duration>,
        action: impl FnOnce(),
    ) -> std::result::Result<u32, BarrierError> {
        self.wait_inner(timeout, Some(action))
    }

    /// Locks the barrier state, waiting until `deadline` (then
    /// `Failed(Timeout)`). A previous holder that died breaks the barrier
    /// (its count may be wrong), which repairs the state.
    fn lock_state(&self, deadline: Deadline) -> std::result::Result<LockGuard<'_>, BarrierError> {
        match wrap(self.obj.map().lock_unit(MUTEX_OFFSET, deadline)) {
            Ok(guard) => Ok(guard),
            Err(LockError::OwnerDied(died)) => {
                let guard = died.into_guard();
                self.break_locked(true);
                guard.mark_consistent();
                Ok(guard)
            }
            Err(e) => Err(BarrierError::Failed(e.into())),
        }
    }

    /// With the state locked: ends the current generation as broken (waking
    /// its waiters), and marks the barrier broken if `broken`.
    fn break_locked(&self, broken: bool) {
        if broken {
            self.word(BROKEN).store(1, Ordering::Release);
        }
        let generation = self.word(GENERATION);
        let g = generation.load(Ordering::Relaxed);
        self.outcomes().fetch_or(1 << (g % 64), Ordering::Relaxed);
        self.word(COUNT).store(0, Ordering::Relaxed);
        generation.store(g.wrapping_add(1), Ordering::Release);
        futex::wake_all(generation);
    }

    fn wait_inner<F: FnOnce()>(
        &self,
        timeout: Option<Duration>,
        action: Option<F>,
    ) -> std::result::Result<u32, BarrierError> {
        let deadline = Deadline::from(timeout);
        let (g, index) = match self.arrive(deadline, action)? {
            Arrived::Last(index) => return Ok(index),
            Arrived::Waiting { generation, index } => (generation, index),
        };
        let generation = self.word(GENERATION);
        loop {
            if generation.load(Ordering::Acquire) != g {
                break;
            }
            let Some(sleep) = deadline.slice(SAFETY_NET) else {
                // Breaking the barrier must happen after the deadline, so
                // its lock gets a grace of its own (it is held for
                // microseconds); a holder that keeps it longer (stopped, or
                // a word another process forged) gets this party a
                // `Failed(Timeout)` instead of a wait with no end.
                let _guard = self.lock_state(Deadline::after(SAFETY_NET))?;
                if generation.load(Ordering::Acquire) == g {
                    self.break_locked(true);
                    return Err(BarrierError::Broken);
                }
                break;
            };
            futex::wait(generation, g, Some(sleep));
        }
        self.outcome(g, index)
    }

    /// Awaits all parties: [`wait`](Self::wait) without blocking a thread
    /// (feature `tokio`; on any executor). Taking the barrier's lock may
    /// wait a few microseconds (it is held that long).
    ///
    /// Cancel safe, as `asyncio.Barrier` is: a wait dropped before the
    /// generation ends takes back its arrival, so the barrier still waits
    /// for as many parties.
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self) -> std::result::Result<u32, BarrierError> {
        let (g, index) = match self.arrive(Deadline::Never, None::<fn()>)? {
            Arrived::Last(index) => return Ok(index),
            Arrived::Waiting { generation, index } => (generation, index),
        };
        let mut arrival = Arrival {
            barrier: self,
            generation: g,
            ended: false,
        };
        let generation = self.word(GENERATION);
        while generation.load(Ordering::Acquire) == g {
            crate::watch::changed(generation, g).await;
        }
        arrival.ended = true;
        self.outcome(g, index)
    }

    /// With this party's arrival in generation `g` counted, whether that
    /// generation ended broken.
    fn outcome(&self, g: u32, index: u32) -> std::result::Result<u32, BarrierError> {
        // The generation was advanced with Release after its outcome bit
        // was written, and loaded with Acquire before this.
        if self.outcomes().load(Ordering::Relaxed) & (1 << (g % 64)) != 0 {
            Err(BarrierError::Broken)
        } else {
            Ok(index)
        }
    }

    /// Counts this party's arrival under the lock: the last party runs
    /// `action` and ends the generation; the others are told which
    /// generation to wait out.
    fn arrive<F: FnOnce()>(
        &self,
        deadline: Deadline,
        action: Option<F>,
    ) -> std::result::Result<Arrived, BarrierError> {
        let guard = self.lock_state(deadline)?;
        if self.is_broken() {
            return Err(BarrierError::Broken);
        }
        let generation = self.word(GENERATION);
        let g = generation.load(Ordering::Relaxed);
        let count = self.word(COUNT);
        let index = count.load(Ordering::Relaxed);
        if index >= self.parties() {
            // No sequence of waits leaves this: the segment was written by
            // someone else. Break the barrier rather than trust it.
            self.break_locked(true);
            return Err(BarrierError::Broken);
        }
        if index + 1 >= self.parties() {
            if let Some(action) = action {
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(action)) {
                    self.break_locked(true);
                    drop(guard);
                    std::panic::resume_unwind(panic);
                }
            }
            self.outcomes()
                .fetch_and(!(1 << (g % 64)), Ordering::Relaxed);
            count.store(0, Ordering::Relaxed);
            generation.store(g.wrapping_add(1), Ordering::Release);
            // Wake before unlocking: if this process dies between the two,
            // the next locker recovers the lock and wakes everyone.
            futex::wake_all(generation);
            drop(guard);
            return Ok(Arrived::Last(index));
        }
        count.store(index + 1, Ordering::Relaxed);
        drop(guard);
        Ok(Arrived::Waiting {
            generation: g,
            index,
        })
    }

    /// Takes back an arrival in generation `g` that will not wait it out,
    /// if that generation is still going.
    #[cfg(feature = "tokio")]
    fn leave(&self, g: u32) {
        let Ok(_guard) = self.lock_state(Deadline::after(SAFETY_NET)) else {
            return;
        };
        let count = self.word(COUNT);
        let arrived = count.load(Ordering::Relaxed);
        if self.word(GENERATION).load(Ordering::Relaxed) == g && arrived > 0 {
            count.store(arrived - 1, Ordering::Relaxed);
        }
    }

    /// Breaks the barrier: current and future waiters get
    /// [`BarrierError::Broken`] until [`reset`](Self::reset).
    pub fn abort(&self) -> std::result::Result<(), BarrierError> {
        let _guard = self.lock_state(Deadline::Never)?;
        self.break_locked(true);
        Ok(())
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting
    /// now get [`BarrierError::Broken`].
    pub fn reset(&self) -> std::result::Result<(), BarrierError> {
        let _guard = self.lock_state(Deadline::Never)?;
        if self.word(COUNT).load(Ordering::Relaxed) > 0 {
            self.break_locked(false);
        }
        self.word(BROKEN).store(0, Ordering::Release);
        Ok(())
    }
}

object_common!(Barrier);

/// How a party's arrival went.
enum Arrived {
    /// It was the last: the generation ended, and this is its index.
    Last(u32),
    /// It waits for generation `generation` to end.
    Waiting { generation: u32, index: u32 },
}

/// An async party's arrival, taken back if its wait is dropped before the
/// generation ends.
#[cfg(feature = "tokio")]
struct Arrival<'a> {
    barrier: &'a Barrier,
    generation: u32,
    ended: bool,
}

#[cfg(feature = "tokio")]
impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.barrier.leave(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrival_count_no_waits_can_leave_breaks_the_barrier() {
        // Found by the `shm_open` fuzz target: the count is read from the
        // segment, and `u32::MAX + 1` overflowed.
        for count in [u32::MAX, 3, 7] {
            let barrier = Barrier::new(3).unwrap();
            barrier.word(COUNT).store(count, Ordering::Relaxed);
            assert!(matches!(
                barrier.wait_timeout(Duration::ZERO),
                Err(BarrierError::Broken)
            ));
            assert!(barrier.is_broken());
        }
    }
}
