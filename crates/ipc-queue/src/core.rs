//! The ring itself, shared by all three queue types: variable-size records
//! in a byte ring, a tail that producers move under one robust mutex and a
//! head that consumers move under another, and futex words to sleep on.
//!
//! # Records
//!
//! A record is `[len: u32][0: u32][payload][padding to 8]`. A record that
//! does not fit before the end of the ring is preceded by a wrap marker
//! (`len == u32::MAX`) and starts at offset 0.
//!
//! # Two ends, one word each
//!
//! `tail` packs the number of puts ever made (wrapping, high 32 bits) with
//! the ring offset where the next record goes; `head` packs the number of
//! gets with the offset of the next record to take. A put writes its
//! record into free space and then publishes it with one store of `tail`;
//! a get copies its record out and then takes it with one store of `head`.
//! So every change a process makes to the queue is a single atomic store:
//! a process killed at any instruction leaves either the old word (its put
//! never returned, its get took nothing) or the new one, and the next
//! process to take that end's mutex, told by it that the owner died, only
//! checks the words and wakes everyone ([`Core::recover`]); there is
//! nothing to repair. The number of items is `tail.count - head.count`;
//! JoinableQueue's unfinished tasks are `tail.count - done`.
//!
//! Producers and consumers never take each other's mutex, so one producer
//! and one consumer run at the same time. Each end keeps its last look at
//! the other end's word (`seen_head`, `seen_tail`) and only reads the real
//! one, a cache line the other side writes, when that look shows no room
//! or no item. The one operation that needs both ends is moving an empty
//! ring back to offset 0 when a record does not fit after the tail
//! ([`Core::realign`]), done in steps that each leave a valid ring.
//!
//! # Waiting
//!
//! `put_seq` changes with every put and `get_seq` with every get. A getter
//! that finds nothing has read `put_seq` before looking at `tail`; it spins
//! briefly, then registers in `waiting_getters` and sleeps on `put_seq`
//! with the value it read. A put stores `tail`, then `put_seq`, then
//! (after a full fence, which the registration also has) looks at
//! `waiting_getters`: either the getter's sleep sees the new `put_seq` and
//! returns at once, or the put sees the registration, clears it and wakes
//! every sleeper after unlocking; a woken getter that still finds nothing
//! registers again. So `futex_wake` is called once per sleep, not once per
//! operation, and never when nobody sleeps; a waiter that times out or is
//! killed leaves at most one needless wake-up behind. Taking a mutex tries
//! a few times before blocking in the kernel, as it is only ever held for
//! a short copy. Sleeps are cut at [`SAFETY_NET`] and the waiter looks
//! again: that is what lets a waiter recover when the process that should
//! have woken it was killed between its store and its wake.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipc_core::{Deadline, Error, Result};
use ipc_shm::raw::{atomic_u32, atomic_u64, futex_wait, futex_wake, SAFETY_NET};
use ipc_shm::SharedMemory;

use crate::layout::{self, Params, Spec};
use crate::sys::{self, End};

/// How long a getter keeps checking for a put before it sleeps: more than
/// a futex wake-up takes on a loaded or virtual machine, so a peer that
/// answers quickly (a request and its reply) is seen without a sleep on
/// either side, and two processes exchanging messages do not fall into
/// waking each other up every time. (A budget that adapts to a slow
/// producer was tried and did exactly that.)
const GET_SPIN: Duration = Duration::from_micros(100);
/// How long a getter that found the queue empty leaves the producers'
/// cache line alone before its first look. A producer streaming items
/// meanwhile writes several of them without the getter pulling its line
/// away after each one, and the getter then takes them as a batch from
/// its last look at the tail: 1 producer / 1 consumer at 64 B went from
/// 11 to 24 M items/s with it, measured. Shorter than any round trip
/// through another process, so a reply is not delayed by it.
const GET_QUIET: Duration = Duration::from_nanos(300);
/// How long a putter keeps checking for room before it sleeps.
const PUT_SPIN: Duration = Duration::from_micros(20);
/// How many gets a putter that found the ring full lets happen before it
/// tries again (if they come within [`PUT_SPIN`]). A full ring means the
/// getters are behind: a putter that took each slot as it came free would
/// pull the getters' cache lines to its core on every get and slow them
/// down (to a quarter, measured); letting them drain a batch undisturbed
/// is faster for both.
const PUT_BATCH: u32 = 64;
/// Spin-loop hints between a waiting putter's looks, for the same reason.
const PUT_PAUSES: u32 = 16;
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

/// How long a call with this deadline waits for a lock. A non-blocking
/// call waits out a holder that is running (the lock is held for well under
/// a microsecond), but not one that is stopped or descheduled for long: it
/// then reports the queue busy as `Full` or `Empty` rather than block. A
/// dead holder is reported by the robust mutex at once either way.
fn lock_deadline(deadline: Deadline) -> Deadline {
    match deadline {
        Deadline::Now => Deadline::after(NOWAIT_LOCK_PATIENCE),
        other => other,
    }
}

/// The error a call that gave up on the lock returns: `busy` (`Full` or
/// `Empty`) for a non-blocking call, `Timeout` for a timed one.
fn gave_up(deadline: Deadline, error: Error, busy: Error) -> Error {
    match (deadline, error) {
        (Deadline::Now, Error::Timeout) => busy,
        (_, error) => error,
    }
}

/// One end of the ring: how many items have passed it (wrapping) and the
/// ring offset it is at. Stored as one `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) count: u32,
    pub(crate) offset: u32,
}

impl Pos {
    fn pack(self) -> u64 {
        u64::from(self.count) << 32 | u64::from(self.offset)
    }

    fn unpack(word: u64) -> Pos {
        Pos {
            count: (word >> 32) as u32,
            offset: word as u32,
        }
    }
}

/// A head and a tail, as one process saw them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub(crate) head: Pos,
    pub(crate) tail: Pos,
}

impl View {
    /// The number of records between head and tail.
    fn items(&self) -> u32 {
        self.tail.count.wrapping_sub(self.head.count)
    }
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

/// One end's mutex, held; released on drop.
struct Locked<'a> {
    mutex: ipc_shm::raw::RobustMutexRef<'a>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.mutex.unlock();
    }
}

/// In unit tests, a place where a test can make this process exit on the
/// spot (holding a lock, half-way through an update), as a `SIGKILL`
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

/// What a put or get that found the queue full or empty waits on.
struct Waiting<'a> {
    /// The other end's sequence word, changed by each put (or get).
    seq: &'a AtomicU32,
    /// What `seq` held before the queue was found full or empty.
    seen: u32,
    /// The offset of the count of processes asleep on `seq`.
    waiters: usize,
    /// How long to leave `seq` alone before the first look.
    quiet: Duration,
    /// How far `seq` should move before the spin ends early.
    want: u32,
    /// Spin-loop hints between looks at `seq`.
    pauses: u32,
    /// How long to spin before sleeping.
    spin: Duration,
    /// What a non-blocking call returns: `Full` or `Empty`.
    busy: Error,
}

/// Spins until `word` has moved at least `want` steps on from `seen`:
/// `true` then, or after `spin_for` if it moved at all, `false` if it did
/// not move. It leaves the word alone for `quiet` first, then looks once
/// every `pauses` spin-loop hints, so as not to
/// pull the cache line away from the process writing it on every one of
/// its operations. After the first few microseconds it yields the CPU
/// between looks: the process that will change the word may be waiting
/// for this very CPU (a woken process is often placed on its waker's CPU).
fn spin(
    word: &AtomicU32,
    seen: u32,
    quiet: Duration,
    want: u32,
    pauses: u32,
    spin_for: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < quiet {
        for _ in 0..4 {
            std::hint::spin_loop();
        }
    }
    loop {
        for _ in 0..16 {
            if word.load(Ordering::Relaxed).wrapping_sub(seen) >= want {
                return true;
            }
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
        }
        let spent = start.elapsed();
        if spent >= spin_for {
            return word.load(Ordering::Relaxed) != seen;
        }
        if spent >= YIELD_AFTER {
            std::thread::yield_now();
        }
    }
}

/// Where a put writes: an optional wrap marker, then its record.
#[derive(Clone, Copy, Debug)]
struct Placement {
    marker: Option<u64>,
    record: u64,
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

    pub(crate) fn load_pos(&self, at: usize, order: Ordering) -> Pos {
        Pos::unpack(atomic_u64(&self.shm, at).load(order))
    }

    pub(crate) fn store_pos(&self, at: usize, pos: Pos, order: Ordering) {
        atomic_u64(&self.shm, at).store(pos.pack(), order);
    }

    /// Head and tail as they are now (a snapshot). The head is read first:
    /// it never passes the tail, so the tail read after it is at least as
    /// far along and the item count never comes out negative.
    pub(crate) fn view(&self) -> View {
        let head = self.load_pos(layout::HEAD, Ordering::Acquire);
        let tail = self.load_pos(layout::TAIL, Ordering::Acquire);
        View { head, tail }
    }

    /// Takes one end's lock, checking the queue first if its last holder
    /// died.
    fn lock(&self, end: End, deadline: Deadline) -> Result<Locked<'_>> {
        let mutex = sys::mutex(&self.shm, end);
        // The lock is held for a few hundred nanoseconds at a time: try a
        // little before letting the mutex put this thread to sleep
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
            None => mutex.lock(lock_deadline(deadline))?,
        };
        let locked = Locked { mutex };
        if died {
            self.recover(end)?;
            mutex.mark_consistent();
        }
        Ok(locked)
    }

    /// After a holder died: checks the words it may have changed, and
    /// wakes every waiter (the dead process may have owed one a wake-up).
    /// Every change is one store, so there is nothing to finish or undo.
    fn recover(&self, end: End) -> Result<()> {
        self.check(&self.view())?;
        self.word(layout::RECOVERIES)
            .fetch_add(1, Ordering::Relaxed);
        self.wake_all(end);
        Ok(())
    }

    /// How many times a lock whose holder died was recovered.
    pub(crate) fn recoveries(&self) -> u32 {
        self.word(layout::RECOVERIES).load(Ordering::Relaxed)
    }

    /// The bytes between head and tail: records, and wrap markers in front
    /// of them. A view read from a hostile segment gives a wrong number,
    /// never an overflow.
    fn used(&self, v: &View) -> u64 {
        let cap = (self.capacity as u64).max(1);
        let (head, tail) = (
            u64::from(v.head.offset) % cap,
            u64::from(v.tail.offset) % cap,
        );
        match (head == tail, v.items() == 0) {
            (true, true) => 0,
            (true, false) => cap,
            (false, _) => (tail + cap - head) % cap,
        }
    }

    /// Refuses a view that no sequence of puts and gets can produce, so
    /// nothing read from the segment is followed before it is checked.
    pub(crate) fn check(&self, v: &View) -> Result<()> {
        let cap = self.capacity as u64;
        let items = u64::from(v.items());
        let offset_ok = |p: Pos| u64::from(p.offset) < cap && p.offset % 8 == 0;
        let ok = offset_ok(v.head)
            && offset_ok(v.tail)
            && items * RECORD_HEADER <= self.used(v)
            // Nothing but a wrap marker between head and tail: it runs to
            // the end of the ring, so the tail is at 0.
            && (items != 0 || v.head.offset == v.tail.offset || v.tail.offset == 0);
        if ok {
            Ok(())
        } else {
            Err(corrupt(format!(
                "the queue's control state is corrupt ({v:?}, capacity {cap})"
            )))
        }
    }

    /// Whether anyone registered to wait on the counter at `waiting`; if
    /// so, clears the registrations (the caller then wakes everyone, and
    /// whoever still has to wait registers again). Called after the store
    /// that a waiter waits for and a full fence, so a waiter that
    /// registers after this call sees that store.
    fn take_waiters(&self, waiting: usize) -> bool {
        let waiting = self.word(waiting);
        waiting.load(Ordering::Relaxed) != 0 && waiting.swap(0, Ordering::AcqRel) != 0
    }

    /// Wakes every waiter, called holding `end`'s lock. Only the sequence
    /// words that lock guards (and `join_seq`, which is only ever changed
    /// atomically) are changed, registrations first: bumping the other
    /// end's word here could race with its holder's bump and leave the word
    /// where a waiter that read it in between expects it. That end's
    /// sleepers are still woken; one that is about to sleep looks again
    /// within [`SAFETY_NET`].
    fn wake_all(&self, end: End) {
        let (own_seq, own_waiting, other_seq) = match end {
            End::Tail => (layout::PUT_SEQ, layout::WAITING_GETTERS, layout::GET_SEQ),
            End::Head => (layout::GET_SEQ, layout::WAITING_PUTTERS, layout::PUT_SEQ),
        };
        self.word(own_waiting).store(0, Ordering::Relaxed);
        self.bump(self.word(own_seq));
        futex_wake(self.word(own_seq), u32::MAX);
        self.word(layout::WAITING_JOINERS)
            .store(0, Ordering::Relaxed);
        let join_seq = self.word(layout::JOIN_SEQ);
        join_seq.fetch_add(1, Ordering::Release);
        futex_wake(join_seq, u32::MAX);
        futex_wake(self.word(other_seq), u32::MAX);
    }

    /// Bumps a sequence word that only its end's lock holder writes.
    fn bump(&self, seq: &AtomicU32) {
        seq.store(
            seq.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Release,
        );
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

    fn ring_write(&self, off: u64, bytes: &[u8]) -> Result<()> {
        self.shm
            .write_at(layout::RING_OFFSET + off as usize, bytes)?;
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

    /// Where a record of `need` bytes goes after `v.tail`, if there is room
    /// for it (and for one more item).
    fn place(&self, v: &View, need: u64) -> Option<Placement> {
        if self.maxsize != 0 && v.items() as usize >= self.maxsize {
            return None;
        }
        let cap = self.capacity as u64;
        let free = cap - self.used(v);
        let off = u64::from(v.tail.offset);
        if need <= cap - off {
            (need <= free).then_some(Placement {
                marker: None,
                record: off,
            })
        } else {
            (cap - off + need <= free).then_some(Placement {
                marker: Some(off),
                record: 0,
            })
        }
    }

    /// Puts one record. `Full` (for [`Deadline::Now`]), `Timeout`, `Closed` or
    /// `TooLarge` leave the queue unchanged.
    pub(crate) fn put(&self, payload: &[u8], deadline: Deadline) -> Result<()> {
        let need = self.record_size(payload.len())?;
        let cap = self.capacity as u64;
        let get_seq = self.word(layout::GET_SEQ);
        let mut spun = false;
        loop {
            let locked = self
                .lock(End::Tail, deadline)
                .map_err(|e| gave_up(deadline, e, Error::Full))?;
            if self.is_closed() {
                return Err(Error::Closed);
            }
            let tail = self.load_pos(layout::TAIL, Ordering::Relaxed);
            let mut v = View {
                head: self.load_pos(layout::SEEN_HEAD, Ordering::Relaxed),
                tail,
            };
            self.check(&v)?;
            let mut placement = self.place(&v, need);
            let mut seen = 0;
            if placement.is_none() {
                // The last look at the head shows no room: look again.
                seen = get_seq.load(Ordering::Acquire);
                v.head = self.load_pos(layout::HEAD, Ordering::Acquire);
                self.store_pos(layout::SEEN_HEAD, v.head, Ordering::Relaxed);
                self.check(&v)?;
                placement = self.place(&v, need);
            }
            if let Some(at) = placement {
                if let Some(marker) = at.marker {
                    self.ring_write(marker, &WRAP.to_ne_bytes())?;
                }
                let mut header = [0u8; RECORD_HEADER as usize];
                header[..4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
                self.ring_write(at.record, &header)?;
                self.ring_write(at.record + RECORD_HEADER, payload)?;
                let tail = Pos {
                    count: tail.count.wrapping_add(1),
                    offset: ((at.record + need) % cap) as u32,
                };
                // The commit: the record becomes visible to getters.
                self.store_pos(layout::TAIL, tail, Ordering::Release);
                crash_point();
                let put_seq = self.word(layout::PUT_SEQ);
                self.bump(put_seq);
                fence(Ordering::SeqCst);
                let wake = self.take_waiters(layout::WAITING_GETTERS);
                drop(locked);
                if wake {
                    futex_wake(put_seq, u32::MAX);
                }
                return Ok(());
            }
            if v.items() == 0 {
                // Empty, yet the record does not fit after the tail.
                self.realign(tail, deadline)
                    .map_err(|e| gave_up(deadline, e, Error::Full))?;
                continue;
            }
            let waiting = Waiting {
                seq: get_seq,
                seen,
                waiters: layout::WAITING_PUTTERS,
                quiet: Duration::ZERO,
                want: PUT_BATCH,
                pauses: PUT_PAUSES,
                spin: PUT_SPIN,
                busy: Error::Full,
            };
            self.wait_for_change(locked, deadline, waiting, &mut spun)?;
        }
    }

    /// Moves an empty ring whose tail is at `tail` back to offset 0, so
    /// that any record that fits the ring at all fits after the tail.
    /// Called holding the producers' lock; takes the consumers' lock too
    /// (always in that order). Each step is one store that leaves a valid
    /// ring: a wrap marker at the tail, published as if it preceded a
    /// record at 0 (a ring holding only a marker is empty), then the head
    /// moved past it, as a get would.
    fn realign(&self, tail: Pos, deadline: Deadline) -> Result<()> {
        let consumers = self.lock(End::Head, deadline)?;
        let v = View {
            head: self.load_pos(layout::HEAD, Ordering::Acquire),
            tail,
        };
        self.check(&v)?;
        if v.items() != 0 {
            return Ok(());
        }
        if tail.offset != 0 {
            self.ring_write(u64::from(tail.offset), &WRAP.to_ne_bytes())?;
            let tail = Pos { offset: 0, ..tail };
            self.store_pos(layout::TAIL, tail, Ordering::Release);
            crash_point();
        }
        let head = Pos {
            offset: 0,
            ..v.head
        };
        self.store_pos(layout::HEAD, head, Ordering::Release);
        crash_point();
        self.store_pos(layout::SEEN_HEAD, head, Ordering::Relaxed);
        drop(consumers);
        Ok(())
    }

    /// Takes one record into `dest` and returns its length. `Empty` (for
    /// [`Deadline::Now`]), `Timeout`, `Closed` (closed and drained) and
    /// `BufferTooShort` leave the queue unchanged.
    pub(crate) fn get(&self, mut dest: Dest<'_>, deadline: Deadline) -> Result<usize> {
        let put_seq = self.word(layout::PUT_SEQ);
        let mut spun = false;
        loop {
            let locked = self
                .lock(End::Head, deadline)
                .map_err(|e| gave_up(deadline, e, Error::Empty))?;
            let mut v = View {
                head: self.load_pos(layout::HEAD, Ordering::Relaxed),
                tail: self.load_pos(layout::SEEN_TAIL, Ordering::Relaxed),
            };
            let mut seen = 0;
            if v.items() == 0 {
                // The last look at the tail shows nothing more: look again.
                seen = put_seq.load(Ordering::Acquire);
                v.tail = self.load_pos(layout::TAIL, Ordering::Acquire);
                self.store_pos(layout::SEEN_TAIL, v.tail, Ordering::Relaxed);
                if v.items() == 0 && self.is_closed() {
                    // Puts before the close are visible after it.
                    v.tail = self.load_pos(layout::TAIL, Ordering::Acquire);
                    if v.items() == 0 {
                        return Err(Error::Closed);
                    }
                }
            }
            self.check(&v)?;
            if v.items() != 0 {
                let (head, payload_off, len) = self.locate(&v)?;
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
                // The commit: the record is taken and its space free.
                self.store_pos(layout::HEAD, head, Ordering::Release);
                crash_point();
                let get_seq = self.word(layout::GET_SEQ);
                self.bump(get_seq);
                fence(Ordering::SeqCst);
                let wake = self.take_waiters(layout::WAITING_PUTTERS);
                drop(locked);
                if wake {
                    futex_wake(get_seq, u32::MAX);
                }
                return Ok(len);
            }
            let waiting = Waiting {
                seq: put_seq,
                seen,
                waiters: layout::WAITING_GETTERS,
                quiet: GET_QUIET,
                want: 1,
                pauses: 1,
                spin: GET_SPIN,
                busy: Error::Empty,
            };
            self.wait_for_change(locked, deadline, waiting, &mut spun)?;
        }
    }

    /// Called holding an end's lock after finding no room (or no item):
    /// gives up as `wait` says (`busy` for a non-blocking call, `Timeout`
    /// for a timed one), else unlocks and waits for the other end's
    /// sequence word to move from what it was before the look that found
    /// nothing: a short spin the first time, then a futex sleep,
    /// registered as a waiter so that the other end wakes us (see the
    /// module docs for why no wake-up is lost).
    fn wait_for_change(
        &self,
        locked: Locked<'_>,
        deadline: Deadline,
        waiting: Waiting<'_>,
        spun: &mut bool,
    ) -> Result<()> {
        let Some(sleep) = deadline.slice(SAFETY_NET) else {
            return Err(match deadline {
                Deadline::Now => waiting.busy,
                _ => Error::Timeout,
            });
        };
        drop(locked);
        if !*spun {
            *spun = true;
            spin(
                waiting.seq,
                waiting.seen,
                waiting.quiet,
                waiting.want,
                waiting.pauses,
                waiting.spin,
            );
            return Ok(());
        }
        self.word(waiting.waiters).fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        futex_wait(waiting.seq, waiting.seen, Some(sleep));
        Ok(())
    }

    /// Finds the record at the head of a non-empty, checked view: the head
    /// after taking it, the ring offset of its payload and its length. A
    /// length that does not fit the ring is reported, never followed.
    fn locate(&self, v: &View) -> Result<(Pos, u64, usize)> {
        let cap = self.capacity as u64;
        let mut avail = self.used(v);
        let mut off = u64::from(v.head.offset);
        let mut len = self.ring_len(off)?;
        if len == WRAP {
            let skip = cap - off;
            if off == 0 || skip >= avail {
                return Err(corrupt(format!(
                    "corrupt queue: a wrap marker at ring offset {off} leaves no record behind it"
                )));
            }
            avail -= skip;
            off = 0;
            len = self.ring_len(0)?;
        }
        let need = (len != WRAP)
            .then(|| RECORD_HEADER + u64::from(len).next_multiple_of(8))
            .filter(|&need| need <= cap - off && need <= avail);
        let Some(need) = need else {
            return Err(corrupt(format!(
                "corrupt queue: record length {len} at ring offset {off} runs past the {avail} bytes in use or the ring's end ({cap} bytes)"
            )));
        };
        let head = Pos {
            count: v.head.count.wrapping_add(1),
            offset: ((off + need) % cap) as u32,
        };
        Ok((head, off + RECORD_HEADER, len as usize))
    }

    /// Whether the queue was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.word(layout::CLOSED).load(Ordering::Acquire) != 0
    }

    /// Closes the queue and wakes every waiter. Taking the producers' lock
    /// orders the close after every put that returned before it.
    pub(crate) fn close(&self) -> Result<()> {
        let locked = self.lock(End::Tail, Deadline::Never)?;
        self.word(layout::CLOSED).store(1, Ordering::Release);
        self.wake_all(End::Tail);
        drop(locked);
        Ok(())
    }

    /// The number of items (a snapshot).
    pub(crate) fn items(&self) -> usize {
        self.view().items() as usize
    }

    /// The number of items put and not yet marked done (a snapshot). `done`
    /// is read first, as it never passes the put count.
    pub(crate) fn unfinished(&self) -> usize {
        let done = self.word(layout::DONE).load(Ordering::Acquire);
        let puts = self.load_pos(layout::TAIL, Ordering::Acquire).count;
        puts.wrapping_sub(done) as usize
    }

    /// The bytes of the ring in use (a snapshot).
    pub(crate) fn used_bytes(&self) -> usize {
        self.used(&self.view()) as usize
    }

    /// Marks one item done (Python's `task_done`): one compare-and-swap,
    /// so there is no lock to die holding.
    pub(crate) fn task_done(&self) -> Result<()> {
        let done = self.word(layout::DONE);
        let mut seen = done.load(Ordering::Acquire);
        loop {
            let puts = self.load_pos(layout::TAIL, Ordering::Acquire).count;
            if seen == puts {
                return Err(Error::InvalidArgument(
                    "task_done() called more times than there were items",
                ));
            }
            let next = seen.wrapping_add(1);
            match done.compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if next == puts => break,
                Ok(_) => return Ok(()),
                Err(now) => seen = now,
            }
        }
        let join_seq = self.word(layout::JOIN_SEQ);
        join_seq.fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.take_waiters(layout::WAITING_JOINERS) {
            futex_wake(join_seq, u32::MAX);
        }
        Ok(())
    }

    /// Waits until every item put has been marked done.
    pub(crate) fn join(&self, deadline: Deadline) -> Result<()> {
        let join_seq = self.word(layout::JOIN_SEQ);
        loop {
            let seen = join_seq.load(Ordering::Acquire);
            if self.unfinished() == 0 {
                return Ok(());
            }
            let Some(sleep) = deadline.slice(SAFETY_NET) else {
                return Err(Error::Timeout);
            };
            self.word(layout::WAITING_JOINERS)
                .fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
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
    //! Deterministic crash points: a forked child does part of a put or a
    //! get, or takes a lock and does part of one by hand, then exits
    //! without unlocking (as a process killed at that instruction would);
    //! the parent must go on.

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

    fn queue() -> Queue<Vec<u8>> {
        Queue::builder().capacity(256).anonymous().unwrap()
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

    /// Runs `op` in children that crash at point 1, 2, ... until one
    /// finishes, each on a fresh queue from `setup`; `check` gets what the
    /// queue then holds. Afterwards the queue must go on working, and the
    /// dead holder's lock must have been recovered. Returns
    /// the number of crash points.
    fn at_every_step(
        setup: impl Fn() -> Queue<Vec<u8>>,
        op: impl Fn(&Queue<Vec<u8>>),
        check: impl Fn(u32, Vec<Vec<u8>>),
    ) -> u32 {
        let mut k = 1;
        loop {
            let q = setup();
            let crashed = crash_at(&q, k, &op);
            check(k, drain(&q));
            q.put_bytes(b"after").unwrap();
            assert_eq!(q.get_bytes_nowait().unwrap(), b"after", "crash point {k}");
            // One lock recovered, or both for a put that died realigning.
            assert_eq!(q.recoveries() != 0, crashed, "crash point {k}");
            q.core().check(&q.core().view()).unwrap();
            if !crashed {
                return k - 1;
            }
            k += 1;
        }
    }

    #[test]
    fn a_put_killed_at_any_step_is_all_or_nothing() {
        let c = vec![3u8; 100];
        let steps = at_every_step(
            near_the_end,
            |q| q.put_bytes(&c).unwrap(),
            |k, got| {
                let (a, b) = (b"a".to_vec(), b"b".to_vec());
                assert!(
                    got == [a.clone(), b.clone()] || got == [a, b, c.clone()],
                    "crash point {k}: {got:?}"
                );
            },
        );
        // The wrap marker, the record header, the payload, the tail.
        assert_eq!(steps, 4);
    }

    #[test]
    fn a_get_killed_at_any_step_takes_its_item_or_nothing() {
        let steps = at_every_step(
            || {
                let q = near_the_end();
                q.put_bytes(&[3u8; 100]).unwrap();
                q
            },
            |q| {
                q.get_bytes().unwrap();
            },
            |k, got| {
                let (a, b, c) = (b"a".to_vec(), b"b".to_vec(), vec![3u8; 100]);
                assert!(
                    got == [a, b.clone(), c.clone()] || got == [b, c],
                    "crash point {k}: {got:?}"
                );
            },
        );
        // The copy out, the head.
        assert_eq!(steps, 2);
    }

    #[test]
    fn a_put_that_realigns_an_empty_ring_is_all_or_nothing_at_any_step() {
        let big = vec![5u8; 200];
        let steps = at_every_step(
            || {
                // Empty, with head and tail at 160: a 208-byte record fits
                // neither after the tail nor before the head.
                let q = queue();
                q.put_bytes(&[9u8; 150]).unwrap();
                q.get_bytes().unwrap();
                q
            },
            |q| q.put_bytes(&big).unwrap(),
            |k, got| {
                assert!(
                    got.is_empty() || got == [big.clone()],
                    "crash point {k}: {got:?}"
                );
            },
        );
        // Realigning: the wrap marker, the tail, the head; then the put's
        // own header, payload and tail.
        assert_eq!(steps, 6);
    }

    /// In a child: takes the lock of `end`, runs `steps`, and exits
    /// holding it.
    fn die_holding_lock(q: &Queue<Vec<u8>>, end: End, steps: impl FnOnce(&Core)) {
        let mut child = Process::new()
            .pass("q", q)
            .unwrap()
            .fork(|| {
                let core = q.core();
                let died = sys::mutex(&core.shm, end).lock(None).unwrap();
                assert!(!died);
                steps(core);
                0
            })
            .unwrap();
        assert!(child.join().unwrap().success());
    }

    fn write_record(core: &Core, off: u64, payload: &[u8]) {
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        core.ring_write(off, &header).unwrap();
        core.ring_write(off + RECORD_HEADER, payload).unwrap();
    }

    fn publish(core: &Core, count: u32, offset: u32) {
        core.store_pos(layout::TAIL, Pos { count, offset }, Ordering::Release);
    }

    #[test]
    fn a_producer_that_dies_before_publishing_changes_nothing() {
        let q = queue();
        q.put_bytes(b"before").unwrap();
        die_holding_lock(&q, End::Tail, |core| {
            // The record of a second put, written but never published.
            write_record(core, 16, b"never put");
        });
        assert_eq!(q.get_bytes_nowait().unwrap(), b"before");
        assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
        q.put_bytes(b"after").unwrap();
        assert_eq!(q.recoveries(), 1);
        assert_eq!(q.get_bytes_nowait().unwrap(), b"after");
    }

    #[test]
    fn a_producer_that_dies_after_publishing_keeps_its_put() {
        let q = queue();
        die_holding_lock(&q, End::Tail, |core| {
            write_record(core, 0, b"committed");
            publish(core, 1, 24);
        });
        // Getters do not need the producers' lock.
        assert_eq!(q.get_bytes_nowait().unwrap(), b"committed");
        q.put_bytes(b"after").unwrap();
        assert_eq!(q.get_bytes_nowait().unwrap(), b"after");
    }

    #[test]
    fn a_dead_consumer_does_not_block_producers() {
        let q = queue();
        q.put_bytes(b"first").unwrap();
        die_holding_lock(&q, End::Head, |_| {});
        // Puts go on while the consumers' lock waits for its next locker.
        q.put_bytes_nowait(b"second").unwrap();
        assert_eq!(q.qsize(), 2);
        assert_eq!(q.get_bytes_nowait().unwrap(), b"first");
        assert_eq!(q.recoveries(), 1);
        assert_eq!(q.get_bytes_nowait().unwrap(), b"second");
    }

    #[test]
    fn a_blocked_getter_wakes_when_the_putter_dies_before_waking_it() {
        let q = queue();
        let getter = std::thread::scope(|s| {
            let waiting = s.spawn(|| q.get_bytes_timeout(Duration::from_secs(10)));
            // Wait (boundedly) until the getter is registered as sleeping.
            let deadline = Instant::now() + Duration::from_secs(10);
            while q
                .core()
                .word(layout::WAITING_GETTERS)
                .load(Ordering::Relaxed)
                == 0
            {
                assert!(Instant::now() < deadline, "the getter never went to sleep");
                std::thread::yield_now();
            }
            die_holding_lock(&q, End::Tail, |core| {
                write_record(core, 0, b"late");
                publish(core, 1, 16);
            });
            waiting.join().unwrap()
        });
        assert_eq!(getter.unwrap(), b"late");
    }

    #[test]
    fn a_corrupt_control_word_is_reported() {
        // A misaligned tail, a tail past the ring, more items than the
        // bytes in use can hold.
        for (count, offset) in [(1, 12), (1, 256), (40, 16)] {
            let q = queue();
            die_holding_lock(&q, End::Tail, |core| publish(core, count, offset));
            let err = q.get_bytes_nowait().unwrap_err();
            assert!(
                err.to_string().contains("control state is corrupt"),
                "{count} {offset}: {err}"
            );
            // Still reported to the next caller: the words are never
            // trusted.
            assert!(q.put_bytes(b"x").is_err());
            assert!(q.get_bytes_nowait().is_err());
        }
    }

    #[test]
    fn a_head_past_the_ring_gives_a_wrong_size_not_an_overflow() {
        // Found by the `shm_open` fuzz target: `used_bytes` reads the
        // words without the checks a put or get makes first.
        let q = queue();
        let head = Pos {
            count: 0,
            offset: 22_528,
        };
        q.core().store_pos(layout::HEAD, head, Ordering::Release);
        assert!(q.used_bytes() <= 256);
        assert!(q.get_bytes_nowait().is_err());
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
            q.core().check(&q.core().view()).unwrap();
        }
        // The largest item fits an empty ring wherever its head is, one
        // byte more never does.
        let largest = vec![1u8; 256 - 8];
        for skew in [0usize, 1, 100] {
            q.put_bytes(&vec![0; skew]).unwrap();
            q.get_bytes().unwrap();
            q.put_bytes(&largest).unwrap();
            assert_eq!(q.used_bytes(), 256);
            assert!(matches!(q.put_bytes_nowait(b""), Err(Error::Full)));
            assert_eq!(q.get_bytes().unwrap(), largest);
        }
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
