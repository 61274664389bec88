//! The ring itself, shared by all three queue types: variable-size records
//! in a byte ring, one robust mutex around a small control state, a redo
//! log that makes every state change atomic even when its process is
//! killed half-way, and futex words to sleep on.
//!
//! # Records
//!
//! A record is `[len: u32][0: u32][payload][padding to 8]`. A record that
//! does not fit before the end of the ring is preceded by a wrap marker
//! (`len == u32::MAX`) and starts at offset 0. `head` and `tail` are byte
//! positions that only grow (`position % capacity` is the offset); an
//! empty ring moves both to the next multiple of the capacity, so any
//! record that fits the ring at all fits an empty one.
//!
//! # Crash safety
//!
//! The control state `{head, tail, items, unfinished}` changes only under
//! the mutex and only through [`Core::commit`]: the new state goes to a
//! `pending` slot, `pending_valid` is set, the state is copied, and
//! `pending_valid` is cleared. A put writes its record into free space
//! before committing, a get copies its record out before committing. A
//! process killed at any instruction leaves either the old state (its put
//! never returned, its get took nothing) or a complete `pending` slot that
//! the next locker, told by the robust mutex that the owner died, copies
//! again ([`Core::recover`]). The recovered state is then checked, so a
//! corrupt segment is reported instead of trusted.
//!
//! # Waiting
//!
//! `put_seq` grows with every put and `get_seq` with every get. A getter
//! that finds nothing reads `put_seq` under the lock, spins briefly, then
//! registers in `waiting_getters` and sleeps on `put_seq` with the value it
//! read, so a put committed after its check always wakes it (or changes the
//! word before it sleeps). A put that finds registrations clears them under
//! the lock and wakes every sleeper after unlocking; a woken getter that
//! still finds nothing registers again. So `futex_wake` is called once per
//! sleep, not once per operation, and never when nobody sleeps; a waiter
//! that times out or is killed leaves at most one needless wake-up behind.
//! Taking the lock itself tries a few times before blocking in the
//! kernel, as the lock is only ever held for a short copy. Sleeps are cut at [`SAFETY_NET`] and the waiter looks
//! again: that is what lets a waiter recover when the process that should
//! have woken it was killed between its commit and its wake.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipc_core::{Error, Result};
use ipc_shm::raw::{atomic_u32, atomic_u64, futex_wait, futex_wake, RobustMutexRef};
use ipc_shm::SharedMemory;

use crate::layout::{self, Params, Spec};
use crate::sys;

/// How long a waiter sleeps at most before looking again.
const SAFETY_NET: Duration = Duration::from_millis(500);
/// How long a getter keeps checking for a put before it sleeps: more than
/// a futex wake-up takes on a loaded or virtual machine, so a peer that
/// answers quickly (a request and its reply) is seen without a sleep on
/// either side, and two processes exchanging messages do not fall into
/// waking each other up every time. (A budget that adapts to a slow
/// producer was tried and did exactly that.)
const GET_SPIN: Duration = Duration::from_micros(100);
/// How long a putter keeps checking for room before it sleeps. Shorter: a
/// full ring means the getters are behind, and letting them drain a batch
/// without contending for the lock item by item is faster for both.
const PUT_SPIN: Duration = Duration::from_micros(2);
/// How long a spin runs before it starts yielding the CPU between looks.
const YIELD_AFTER: Duration = Duration::from_micros(20);
/// How many times [`Core::lock`] tries the mutex before it blocks.
const LOCK_TRIES: u32 = 64;
/// How long a non-blocking put or get waits for the lock before calling
/// the queue busy.
const NOWAIT_LOCK_PATIENCE: Duration = Duration::from_millis(1);
/// The length that marks "the next record starts at offset 0".
const WRAP: u32 = u32::MAX;
/// Bytes in front of every payload.
const RECORD_HEADER: u64 = 8;

/// How long an operation may block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all (Python's `block=False`).
    Now,
    /// Until this moment.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Wait {
    pub(crate) fn timeout(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until)
    }

    fn lock_deadline(self) -> Option<Instant> {
        match self {
            Wait::Until(deadline) => Some(deadline),
            // A non-blocking call waits out a holder that is running (the
            // lock is held for well under a microsecond), but not one that
            // is stopped or descheduled for long: it then reports the queue
            // busy as Full or Empty rather than block. A dead holder is
            // reported by the robust mutex at once either way.
            Wait::Now => Some(Instant::now() + NOWAIT_LOCK_PATIENCE),
            Wait::Forever => None,
        }
    }

    /// The error a call that gave up on the lock returns: `busy` (`Full` or
    /// `Empty`) for a non-blocking call, `Timeout` for a timed one.
    fn gave_up(self, error: Error, busy: Error) -> Error {
        match (self, error) {
            (Wait::Now, Error::Timeout) => busy,
            (_, error) => error,
        }
    }

    /// How long to sleep now, or `None` if the time is up.
    fn sleep(self) -> Option<Duration> {
        match self {
            Wait::Now => None,
            Wait::Forever => Some(SAFETY_NET),
            Wait::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| left.min(SAFETY_NET))
            }
        }
    }
}

/// The control state guarded by the mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) head: u64,
    pub(crate) tail: u64,
    pub(crate) items: u64,
    pub(crate) unfinished: u64,
}

/// Where a received payload goes.
pub(crate) enum Dest<'b> {
    /// Into this slice; [`Error::BufferTooShort`] if it is too short.
    Slice(&'b mut [u8]),
    /// Into this vector, resized to the payload.
    Vec(&'b mut Vec<u8>),
}

/// A mapped, validated queue segment.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) shm: SharedMemory,
    pub(crate) capacity: usize,
    pub(crate) maxsize: usize,
}

/// The mutex, held; released on drop.
struct Locked<'a> {
    mutex: RobustMutexRef<'a>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.mutex.unlock();
    }
}

/// In unit tests, a place where a test can make this process exit on the
/// spot (holding the lock, half-way through an update), as a `SIGKILL`
/// there would; nothing at all in other builds.
#[cfg(test)]
fn crash_point() {
    tests::crash_point();
}

#[cfg(not(test))]
#[inline(always)]
fn crash_point() {}

fn corrupt(message: String) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, message))
}

/// Returns `true` as soon as `word` no longer holds `seen`, or `false`
/// after `spin_for`. After the first few microseconds it yields the CPU
/// between looks: the process that will change the word may be waiting
/// for this very CPU (a woken process is often placed on its waker's CPU).
/// What a put or get that found the queue full or empty waits on.
struct Waiting<'a> {
    /// The other side's sequence word, bumped by each put (or get).
    seq: &'a AtomicU32,
    /// The offset of the count of processes asleep on `seq`.
    waiters: usize,
    /// How long to spin before sleeping.
    spin: Duration,
    /// What a non-blocking call returns: `Full` or `Empty`.
    busy: Error,
}

fn spin(word: &AtomicU32, seen: u32, spin_for: Duration) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if word.load(Ordering::Relaxed) != seen {
                return true;
            }
            std::hint::spin_loop();
        }
        let spent = start.elapsed();
        if spent >= spin_for {
            return false;
        }
        if spent >= YIELD_AFTER {
            std::thread::yield_now();
        }
    }
}

impl Core {
    /// Creates a queue in a fresh, zero-filled segment.
    pub(crate) fn create(mut shm: SharedMemory, spec: &Spec, params: Params) -> Result<Core> {
        layout::create(&mut shm, spec, &params)?;
        Ok(Core {
            shm,
            capacity: params.capacity,
            maxsize: params.maxsize,
        })
    }

    /// Checks the header of an existing segment.
    pub(crate) fn open(shm: SharedMemory, spec: &Spec) -> Result<Core> {
        let params = layout::validate(&shm, spec)?;
        Ok(Core {
            shm,
            capacity: params.capacity,
            maxsize: params.maxsize,
        })
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        atomic_u32(&self.shm, offset)
    }

    /// The state as committed (consistent only under the lock).
    pub(crate) fn state(&self) -> State {
        self.load_state(layout::STATE)
    }

    fn load_state(&self, at: usize) -> State {
        let w = |i: usize| atomic_u64(&self.shm, at + 8 * i).load(Ordering::Relaxed);
        State {
            head: w(0),
            tail: w(1),
            items: w(2),
            unfinished: w(3),
        }
    }

    fn store_state(&self, at: usize, s: State) {
        let w = |i: usize, v: u64| {
            atomic_u64(&self.shm, at + 8 * i).store(v, Ordering::Relaxed);
            crash_point();
        };
        w(0, s.head);
        w(1, s.tail);
        w(2, s.items);
        w(3, s.unfinished);
    }

    /// Makes `new` the state, atomically with respect to being killed (see
    /// the module docs). Called under the lock.
    pub(crate) fn commit(&self, new: State) {
        let valid = atomic_u64(&self.shm, layout::PENDING_VALID);
        // Record bytes written or read before this point stay before it.
        fence(Ordering::Release);
        self.store_state(layout::PENDING, new);
        fence(Ordering::Release);
        valid.store(1, Ordering::Relaxed);
        crash_point();
        fence(Ordering::Release);
        self.store_state(layout::STATE, new);
        fence(Ordering::Release);
        valid.store(0, Ordering::Relaxed);
        crash_point();
    }

    /// Takes the lock, repairing the state first if its last holder died.
    fn lock(&self, wait: Wait) -> Result<Locked<'_>> {
        let mutex = sys::mutex(&self.shm);
        // The lock is held for a few hundred nanoseconds at a time: try a
        // little before letting the pthread mutex put this thread to sleep
        // in the kernel (which costs microseconds on both sides).
        let mut died = None;
        for _ in 0..LOCK_TRIES {
            if let Some(d) = mutex.try_lock()? {
                died = Some(d);
                break;
            }
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        }
        let died = match died {
            Some(died) => died,
            None => mutex.lock(wait.lock_deadline())?,
        };
        let locked = Locked { mutex };
        if died {
            self.recover()?;
            mutex.mark_consistent();
        }
        Ok(locked)
    }

    /// Finishes the commit of a holder that died, checks the state, and
    /// wakes every waiter (the dead process may have owed one a wake-up).
    fn recover(&self) -> Result<()> {
        let valid = atomic_u64(&self.shm, layout::PENDING_VALID);
        if valid.load(Ordering::Relaxed) != 0 {
            let pending = self.load_state(layout::PENDING);
            self.store_state(layout::STATE, pending);
            fence(Ordering::Release);
            valid.store(0, Ordering::Relaxed);
        }
        self.check_state(&self.state())?;
        self.word(layout::RECOVERIES)
            .fetch_add(1, Ordering::Relaxed);
        self.wake_all();
        Ok(())
    }

    /// How many times a lock whose holder died was recovered.
    pub(crate) fn recoveries(&self) -> u32 {
        self.word(layout::RECOVERIES).load(Ordering::Relaxed)
    }

    /// Refuses a state that no sequence of puts and gets can produce.
    pub(crate) fn check_state(&self, s: &State) -> Result<()> {
        let cap = self.capacity as u64;
        let ok = s.head <= s.tail
            && s.tail - s.head <= cap
            && s.head % 8 == 0
            && s.tail % 8 == 0
            && s.items
                .checked_mul(RECORD_HEADER)
                .is_some_and(|n| n <= s.tail - s.head)
            && (s.items == 0) == (s.head == s.tail);
        if ok {
            Ok(())
        } else {
            Err(corrupt(format!(
                "the queue's control state is corrupt ({s:?}, capacity {cap})"
            )))
        }
    }

    /// Whether anyone registered to wait on the counter at `waiting`; if
    /// so, clears the registrations (the caller then wakes everyone, and
    /// whoever still has to wait registers again). Called under the lock,
    /// where all registrations happen, so none made after this call is
    /// lost.
    fn take_waiters(&self, waiting: usize) -> bool {
        let waiting = self.word(waiting);
        waiting.load(Ordering::Relaxed) != 0 && waiting.swap(0, Ordering::Relaxed) != 0
    }

    /// Bumps every sequence word and wakes every waiter. Called under the
    /// lock.
    fn wake_all(&self) {
        for (seq, waiting) in [
            (layout::PUT_SEQ, layout::WAITING_GETTERS),
            (layout::GET_SEQ, layout::WAITING_PUTTERS),
            (layout::JOIN_SEQ, layout::WAITING_JOINERS),
        ] {
            let word = self.word(seq);
            word.fetch_add(1, Ordering::Relaxed);
            self.word(waiting).store(0, Ordering::Relaxed);
            futex_wake(word, u32::MAX);
        }
    }

    /// The size a record for `len` payload bytes takes, or
    /// [`Error::TooLarge`] if even an empty ring could not hold it.
    fn record_size(&self, len: usize) -> Result<u64> {
        let limit = self.capacity as u64 - RECORD_HEADER;
        let len64 = len as u64;
        if len64 > limit || len64 >= u64::from(WRAP) {
            return Err(Error::TooLarge { size: len64, limit });
        }
        Ok(RECORD_HEADER + len64.next_multiple_of(8))
    }

    fn ring_write(&self, pos: u64, bytes: &[u8]) -> Result<()> {
        let off = (pos % self.capacity as u64) as usize;
        self.shm.write_at(layout::RING_OFFSET + off, bytes)?;
        crash_point();
        Ok(())
    }

    fn ring_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.shm.read_at(layout::RING_OFFSET + off as usize, buf)
    }

    fn ring_len(&self, off: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.ring_read(off, &mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Puts one record. `Full` (for [`Wait::Now`]), `Timeout`, `Closed` or
    /// `TooLarge` leave the queue unchanged.
    pub(crate) fn put(&self, payload: &[u8], wait: Wait) -> Result<()> {
        let need = self.record_size(payload.len())?;
        let cap = self.capacity as u64;
        let get_seq = self.word(layout::GET_SEQ);
        let mut spun = false;
        loop {
            let locked = self.lock(wait).map_err(|e| wait.gave_up(e, Error::Full))?;
            if self.is_closed() {
                return Err(Error::Closed);
            }
            let mut s = self.state();
            self.check_state(&s)?;
            let room_for_item = self.maxsize == 0 || s.items < self.maxsize as u64;
            if s.head == s.tail && s.tail % cap != 0 {
                s.tail = s.tail.next_multiple_of(cap);
                s.head = s.tail;
            }
            let off = s.tail % cap;
            let skip = if need <= cap - off { 0 } else { cap - off };
            if room_for_item && s.tail - s.head + skip + need <= cap {
                if skip != 0 {
                    self.ring_write(s.tail, &WRAP.to_ne_bytes())?;
                }
                let at = s.tail + skip;
                let mut header = [0u8; 8];
                header[..4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
                self.ring_write(at, &header)?;
                self.ring_write(at + RECORD_HEADER, payload)?;
                self.commit(State {
                    head: s.head,
                    tail: at + need,
                    items: s.items + 1,
                    unfinished: s.unfinished + 1,
                });
                let put_seq = self.word(layout::PUT_SEQ);
                put_seq.fetch_add(1, Ordering::Relaxed);
                crash_point();
                let wake = self.take_waiters(layout::WAITING_GETTERS);
                drop(locked);
                if wake {
                    futex_wake(put_seq, u32::MAX);
                }
                return Ok(());
            }
            let waiting = Waiting {
                seq: get_seq,
                waiters: layout::WAITING_PUTTERS,
                spin: PUT_SPIN,
                busy: Error::Full,
            };
            self.wait_for_change(locked, wait, waiting, &mut spun)?;
        }
    }

    /// Takes one record into `dest` and returns its length. `Empty` (for
    /// [`Wait::Now`]), `Timeout`, `Closed` (closed and drained) and
    /// `BufferTooShort` leave the queue unchanged.
    pub(crate) fn get(&self, mut dest: Dest<'_>, wait: Wait) -> Result<usize> {
        let put_seq = self.word(layout::PUT_SEQ);
        let mut spun = false;
        loop {
            let locked = self.lock(wait).map_err(|e| wait.gave_up(e, Error::Empty))?;
            let s = self.state();
            self.check_state(&s)?;
            if s.head != s.tail {
                let (new, payload_off, len) = self.locate(&s)?;
                let buf: &mut [u8] = match &mut dest {
                    Dest::Slice(slice) => {
                        if slice.len() < len {
                            return Err(Error::BufferTooShort { needed: len });
                        }
                        &mut slice[..len]
                    }
                    Dest::Vec(vec) => {
                        vec.clear();
                        vec.resize(len, 0);
                        &mut vec[..]
                    }
                };
                self.ring_read(payload_off, buf)?;
                crash_point();
                self.commit(new);
                let get_seq = self.word(layout::GET_SEQ);
                get_seq.fetch_add(1, Ordering::Relaxed);
                crash_point();
                let wake = self.take_waiters(layout::WAITING_PUTTERS);
                drop(locked);
                if wake {
                    futex_wake(get_seq, u32::MAX);
                }
                return Ok(len);
            }
            if self.is_closed() {
                return Err(Error::Closed);
            }
            let waiting = Waiting {
                seq: put_seq,
                waiters: layout::WAITING_GETTERS,
                spin: GET_SPIN,
                busy: Error::Empty,
            };
            self.wait_for_change(locked, wait, waiting, &mut spun)?;
        }
    }

    /// Called holding the lock after finding no room (or no item): gives
    /// up as `wait` says (`busy` for a non-blocking call, `Timeout` for a
    /// timed one), else unlocks and waits for the other side's sequence
    /// word to move: a short spin the first time, then a futex sleep,
    /// registered as a waiter so the other side knows to wake us. The
    /// sequence is read under the lock, so no wake-up is lost.
    fn wait_for_change(
        &self,
        locked: Locked<'_>,
        wait: Wait,
        waiting: Waiting<'_>,
        spun: &mut bool,
    ) -> Result<()> {
        let Some(sleep) = wait.sleep() else {
            return Err(match wait {
                Wait::Now => waiting.busy,
                _ => Error::Timeout,
            });
        };
        let seen = waiting.seq.load(Ordering::Relaxed);
        if !*spun {
            *spun = true;
            drop(locked);
            spin(waiting.seq, seen, waiting.spin);
            return Ok(());
        }
        self.word(waiting.waiters).fetch_add(1, Ordering::Relaxed);
        drop(locked);
        futex_wait(waiting.seq, seen, Some(sleep));
        Ok(())
    }

    /// Finds the record at `head` of a non-empty ring: the state after
    /// taking it, the ring offset of its payload and its length. A length
    /// that does not fit the ring is reported, never followed.
    fn locate(&self, s: &State) -> Result<(State, u64, usize)> {
        let cap = self.capacity as u64;
        let mut head = s.head;
        let mut off = head % cap;
        let mut len = self.ring_len(off)?;
        if len == WRAP {
            let skip = cap - off;
            if skip >= s.tail - head {
                return Err(corrupt(format!(
                    "corrupt queue: a wrap marker at ring offset {off} leaves no record behind it"
                )));
            }
            head += skip;
            off = 0;
            len = self.ring_len(0)?;
        }
        let need = (len != WRAP)
            .then(|| RECORD_HEADER + u64::from(len).next_multiple_of(8))
            .filter(|&need| need <= cap - off && need <= s.tail - head);
        let Some(need) = need else {
            return Err(corrupt(format!(
                "corrupt queue: record length {len} at ring offset {off} runs past the {} bytes in use or the ring's end ({cap} bytes)",
                s.tail - head
            )));
        };
        if s.items == 0 {
            return Err(corrupt(
                "corrupt queue: a record is in the ring but the item count is 0".to_owned(),
            ));
        }
        let new = State {
            head: head + need,
            tail: s.tail,
            items: s.items - 1,
            unfinished: s.unfinished,
        };
        Ok((new, off + RECORD_HEADER, len as usize))
    }

    /// Whether the queue was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.word(layout::CLOSED).load(Ordering::Acquire) != 0
    }

    /// Closes the queue and wakes every waiter.
    pub(crate) fn close(&self) -> Result<()> {
        let locked = self.lock(Wait::Forever)?;
        self.word(layout::CLOSED).store(1, Ordering::Release);
        self.wake_all();
        drop(locked);
        Ok(())
    }

    /// The number of items (a snapshot).
    pub(crate) fn items(&self) -> usize {
        let items = atomic_u64(&self.shm, layout::STATE + 16).load(Ordering::Relaxed);
        usize::try_from(items).unwrap_or(usize::MAX)
    }

    /// The number of items put and not yet marked done (a snapshot).
    pub(crate) fn unfinished(&self) -> usize {
        let n = atomic_u64(&self.shm, layout::STATE + 24).load(Ordering::Relaxed);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// The bytes of the ring in use (a snapshot).
    pub(crate) fn used_bytes(&self) -> usize {
        let s = self.state();
        s.tail.saturating_sub(s.head) as usize
    }

    /// Marks one item done (Python's `task_done`).
    pub(crate) fn task_done(&self) -> Result<()> {
        let locked = self.lock(Wait::Forever)?;
        let s = self.state();
        if s.unfinished == 0 {
            return Err(Error::InvalidArgument(
                "task_done() called more times than there were items",
            ));
        }
        self.commit(State {
            unfinished: s.unfinished - 1,
            ..s
        });
        if s.unfinished == 1 {
            let join_seq = self.word(layout::JOIN_SEQ);
            join_seq.fetch_add(1, Ordering::Relaxed);
            let wake = self.take_waiters(layout::WAITING_JOINERS);
            drop(locked);
            if wake {
                futex_wake(join_seq, u32::MAX);
            }
        }
        Ok(())
    }

    /// Waits until every item put has been marked done.
    pub(crate) fn join(&self, wait: Wait) -> Result<()> {
        let join_seq = self.word(layout::JOIN_SEQ);
        loop {
            let locked = self.lock(wait)?;
            if self.state().unfinished == 0 {
                return Ok(());
            }
            let Some(sleep) = wait.sleep() else {
                return Err(Error::Timeout);
            };
            let seen = join_seq.load(Ordering::Relaxed);
            self.word(layout::WAITING_JOINERS)
                .fetch_add(1, Ordering::Relaxed);
            drop(locked);
            futex_wait(join_seq, seen, Some(sleep));
        }
    }
}

thread_local! {
    /// Scratch space for encoding and decoding typed items, so the typed
    /// path allocates nothing per item beyond what the item itself needs.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer (or a fresh one if it is in
/// use by an outer call).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            f(&mut buf)
        }
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    //! Deterministic crash points: a forked child does part of a put by
    //! hand while holding the lock, then exits without unlocking (as a
    //! process killed at that instruction would); the parent must go on.

    use super::*;
    use crate::Queue;
    use ipc_core::process::Process;

    /// The crash point at which this process exits (0: none).
    static CRASH_AT: AtomicU32 = AtomicU32::new(0);
    static PASSED: AtomicU32 = AtomicU32::new(0);
    /// The exit code of a process that stopped at its crash point.
    const CRASHED: i32 = 42;

    pub(super) fn crash_point() {
        let at = CRASH_AT.load(Ordering::Relaxed);
        if at != 0 && PASSED.fetch_add(1, Ordering::Relaxed) + 1 == at {
            // Exits without unwinding: the lock stays held, as after a
            // SIGKILL.
            std::process::exit(CRASHED);
        }
    }

    /// Forks a child that runs `op` on `q` and exits at crash point `k`;
    /// whether it stopped there (rather than finishing `op`).
    fn crash_at(q: &Queue<Vec<u8>>, k: u32, op: impl FnOnce(&Queue<Vec<u8>>)) -> bool {
        let mut child = Process::new()
            .pass("q", q)
            .unwrap()
            .fork(|| {
                CRASH_AT.store(k, Ordering::Relaxed);
                op(q);
                CRASH_AT.store(0, Ordering::Relaxed);
                0
            })
            .unwrap();
        let status = child.join().unwrap();
        match status.code() {
            Some(0) => false,
            Some(CRASHED) => true,
            _ => panic!("crash point {k}: child failed: {status:?}"),
        }
    }

    /// A queue of capacity 256 holding `a` and `b` with its tail 64 bytes
    /// before the end of the ring, so a 100-byte put wraps.
    fn near_the_end() -> Queue<Vec<u8>> {
        let q = queue();
        q.put_bytes(&[9u8; 150]).unwrap();
        q.put_bytes(b"a").unwrap();
        q.get_bytes().unwrap();
        q.put_bytes(b"b").unwrap();
        q
    }

    fn drain(q: &Queue<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match q.get_bytes_nowait() {
                Ok(item) => out.push(item),
                Err(Error::Empty) => return out,
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn a_put_killed_at_any_step_is_all_or_nothing() {
        let c = vec![3u8; 100];
        let mut k = 1;
        loop {
            let q = near_the_end();
            let crashed = crash_at(&q, k, |q| q.put_bytes(&c).unwrap());
            let got = drain(&q);
            assert_eq!(q.recoveries(), u32::from(crashed), "crash point {k}");
            let (a, b) = (b"a".to_vec(), b"b".to_vec());
            assert!(
                got == [a.clone(), b.clone()] || got == [a, b, c.clone()],
                "crash point {k}: {got:?}"
            );
            // The queue goes on working.
            q.put_bytes(b"after").unwrap();
            assert_eq!(q.get_bytes_nowait().unwrap(), b"after");
            if !crashed {
                assert!(k > 5, "too few crash points");
                break;
            }
            k += 1;
        }
    }

    #[test]
    fn a_get_killed_at_any_step_takes_its_item_or_nothing() {
        let mut k = 1;
        loop {
            let q = near_the_end();
            q.put_bytes(&[3u8; 100]).unwrap();
            let crashed = crash_at(&q, k, |q| {
                q.get_bytes().unwrap();
            });
            let got = drain(&q);
            assert_eq!(q.recoveries(), u32::from(crashed), "crash point {k}");
            let (a, b, c) = (b"a".to_vec(), b"b".to_vec(), vec![3u8; 100]);
            assert!(
                got == [a, b.clone(), c.clone()] || got == [b, c],
                "crash point {k}: {got:?}"
            );
            q.put_bytes(b"after").unwrap();
            assert_eq!(q.get_bytes_nowait().unwrap(), b"after");
            if !crashed {
                assert!(k > 5, "too few crash points");
                break;
            }
            k += 1;
        }
    }

    fn queue() -> Queue<Vec<u8>> {
        Queue::builder().capacity(256).anonymous().unwrap()
    }

    /// In a child: takes the lock, runs `steps`, and exits holding it.
    fn die_holding_lock(q: &Queue<Vec<u8>>, steps: impl FnOnce(&Core)) {
        let mut child = Process::new()
            .pass("q", q)
            .unwrap()
            .fork(|| {
                let core = q.core();
                let died = sys::mutex(&core.shm).lock(None).unwrap();
                assert!(!died);
                steps(core);
                0
            })
            .unwrap();
        assert!(child.join().unwrap().success());
    }

    fn write_record(core: &Core, pos: u64, payload: &[u8]) {
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        core.ring_write(pos, &header).unwrap();
        core.ring_write(pos + RECORD_HEADER, payload).unwrap();
    }

    #[test]
    fn a_holder_that_dies_with_nothing_pending_changes_nothing() {
        let q = queue();
        q.put_bytes(b"before").unwrap();
        die_holding_lock(&q, |core| {
            // The payload of a second put, written but never committed.
            write_record(core, 16, b"never put");
        });
        assert_eq!(q.get_bytes_nowait().unwrap(), b"before");
        assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
        q.put_bytes(b"after").unwrap();
        assert_eq!(q.get_bytes_nowait().unwrap(), b"after");
    }

    #[test]
    fn a_holder_that_dies_mid_commit_is_replayed() {
        let q = queue();
        die_holding_lock(&q, |core| {
            write_record(core, 0, b"logged");
            let new = State {
                head: 0,
                tail: 16,
                items: 1,
                unfinished: 1,
            };
            core.store_state(layout::PENDING, new);
            atomic_u64(&core.shm, layout::PENDING_VALID).store(1, Ordering::Relaxed);
            // Half of the copy into the state, then death.
            atomic_u64(&core.shm, layout::STATE + 8).store(16, Ordering::Relaxed);
        });
        assert_eq!(q.get_bytes_nowait().unwrap(), b"logged");
        assert_eq!(q.qsize(), 0);
        assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
    }

    #[test]
    fn a_holder_that_dies_after_its_commit_keeps_its_put() {
        let q = queue();
        die_holding_lock(&q, |core| {
            write_record(core, 0, b"committed");
            core.commit(State {
                head: 0,
                tail: 24,
                items: 1,
                unfinished: 1,
            });
        });
        assert_eq!(q.get_bytes_nowait().unwrap(), b"committed");
    }

    #[test]
    fn a_blocked_getter_wakes_when_the_putter_dies_before_waking_it() {
        let q = queue();
        let getter = std::thread::scope(|s| {
            let waiting = s.spawn(|| q.get_bytes_timeout(Duration::from_secs(10)));
            // Wait until the getter is registered as sleeping.
            while q
                .core()
                .word(layout::WAITING_GETTERS)
                .load(Ordering::Relaxed)
                == 0
            {
                std::thread::yield_now();
            }
            die_holding_lock(&q, |core| {
                write_record(core, 0, b"late");
                core.commit(State {
                    head: 0,
                    tail: 16,
                    items: 1,
                    unfinished: 1,
                });
            });
            waiting.join().unwrap()
        });
        assert_eq!(getter.unwrap(), b"late");
    }

    #[test]
    fn a_corrupt_logged_state_is_reported() {
        let q = queue();
        die_holding_lock(&q, |core| {
            core.store_state(
                layout::PENDING,
                State {
                    head: 64,
                    tail: 8,
                    items: 1,
                    unfinished: 1,
                },
            );
            atomic_u64(&core.shm, layout::PENDING_VALID).store(1, Ordering::Relaxed);
        });
        let err = q.get_bytes_nowait().unwrap_err();
        assert!(
            err.to_string().contains("control state is corrupt"),
            "{err}"
        );
        // Still reported to the next caller: the state is never trusted.
        assert!(q.put_bytes(b"x").is_err());
    }

    #[test]
    fn a_corrupt_record_length_is_reported_not_followed() {
        for bad in [u32::MAX - 1, 1 << 30, 249, 17] {
            let q = queue();
            q.put_bytes(&[7u8; 8]).unwrap();
            q.core().ring_write(0, &bad.to_ne_bytes()).unwrap();
            let mut buf = [0u8; 512];
            let err = q.get_bytes_into_nowait(&mut buf).unwrap_err();
            assert!(err.to_string().contains("corrupt queue"), "{bad}: {err}");
            assert!(matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::InvalidData));
        }
        // A wrap marker with nothing behind it.
        let q = queue();
        q.put_bytes(&[7u8; 8]).unwrap();
        q.core().ring_write(0, &WRAP.to_ne_bytes()).unwrap();
        let err = q.get_bytes_nowait().unwrap_err();
        assert!(err.to_string().contains("wrap marker"), "{err}");
    }

    #[test]
    fn records_wrap_around_the_ring() {
        let q = queue();
        for round in 0..100u32 {
            let n = (round as usize * 37) % 120;
            let a: Vec<u8> = (0..n).map(|i| (i as u32 + round) as u8).collect();
            q.put_bytes(&a).unwrap();
            q.put_bytes(&[round as u8; 3]).unwrap();
            assert_eq!(q.get_bytes_nowait().unwrap(), a);
            assert_eq!(q.get_bytes_nowait().unwrap(), [round as u8; 3]);
            let s = q.core().state();
            q.core().check_state(&s).unwrap();
        }
        // The largest item fits an empty ring, one byte more never does.
        let largest = vec![1u8; 256 - 8];
        q.put_bytes(&[0]).unwrap();
        q.get_bytes().unwrap();
        q.put_bytes(&largest).unwrap();
        assert_eq!(q.get_bytes().unwrap(), largest);
        let too_big = vec![1u8; 256 - 7];
        assert!(matches!(
            q.put_bytes(&too_big),
            Err(Error::TooLarge {
                size: 249,
                limit: 248
            })
        ));
    }
}
