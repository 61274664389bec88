//! The operations of all three queue types: put, get, close, task_done
//! and join, each under one of two robust mutexes, with the ring's
//! arithmetic in `ring` and the waiting in `waker`.
//!
//! A put writes its record into free space and then publishes it with one
//! store of `tail`; a get copies its record out and then takes it with one
//! store of `head`. So every change a process makes to the queue is a
//! single atomic store: a process killed at any instruction leaves either
//! the old word (its put never returned, its get took nothing) or the new
//! one, and the next process to take that end's mutex, told by it that the
//! owner died, checks the words, works the open claims out again from
//! their slots (below) and wakes everyone ([`Core::recover`]); there is
//! nothing else to repair. The number of items is `tail.count -
//! head.count`; JoinableQueue's unfinished tasks are the put count (with
//! the puts behind open claims) minus `done`.
//!
//! # Claims
//!
//! A reservation (an in-place put) does not keep the producers' lock while
//! its owner writes: it *claims* its room in a slot (`layout::Slot`) and
//! moves the claim frontier (`claims.next`) past it, and other producers
//! put after the frontier meanwhile. Records are published in claim
//! order: a put behind open claims takes a slot too, marked written, and
//! whoever settles a claim publishes every ready claim from the tail on
//! ([`Core::advance`]), one tail store each. A claim given up is taken
//! back if it is the newest, else written as a void record that getters
//! step over; a claimant that died (its slot's robust mutex says so) is
//! found by the next producer that looks past it, or by a getter waiting
//! behind it, and its claim given up. Slots are written field by field,
//! the state last, and `open`/`next` after them, so a producer that dies
//! holding the lock leaves slots that are free or whole, and the next
//! holder works `open` and `next` out from them ([`Core::recover`]). With
//! no claim open (`claims.open == 0`) a put is the single-store protocol
//! above, and costs one more load.
//!
//! # Borrows
//!
//! A borrowed item (an in-place get) is the consumers' mirror of a claim:
//! the getter records it in a borrow slot, moves the consumers' frontier
//! (`borrows.next`) past it and lets the consumers' lock go, and other
//! getters take the records after the frontier meanwhile (a copying get
//! behind open borrows takes a slot too, marked read). The head moves in
//! order: whoever settles a borrow takes off every read record from the
//! head on ([`Core::advance_borrows`]), one head store each, so no putter
//! writes over a record still borrowed. A borrow is given back by letting
//! its slot's mutex go with the slot still held (`restore`, a panic), and
//! one whose borrower died looks the same once its mutex is taken; the
//! next get takes such an item over (`take_back`): at once if it was given
//! back (the `given_back` hint says so) or is the oldest, else when the
//! head reaches it or the getter finds nothing else. A getter that waits
//! for borrows (every slot open, or a closed queue whose last items are
//! borrowed) waits on the getters' word like any getter, and the consumer
//! that frees a slot, gives an item back or settles a borrow of a closed
//! queue bumps it ([`Core::tell_getters`], under the producers' lock,
//! which owns that word). With no borrow open a get costs one more load.
//!
//! Producers and consumers never take each other's mutex, so one producer
//! and one consumer run at the same time. Each end keeps its last look at
//! the other end's word (`seen_head`, `seen_tail`) and only reads the real
//! one, a cache line the other side writes, when that look shows no room
//! or no item. The one operation that needs both ends is moving an empty
//! ring back to offset 0 ([`Core::realign`]), done in steps that each
//! leave a valid ring: when a record does not fit after the tail, and for
//! a record of [`WARM_RECORD`] bytes or more when the consumers' lock is
//! free at once (never while claims are open; an open borrow is an item,
//! so the ring is not empty). Taking a mutex tries a few times before
//! blocking in the kernel, as a put or get holds it only for a short copy
//! (neither a reservation nor a borrowed item keeps it: see `in_place`).

use std::cell::RefCell;
#[cfg(feature = "tokio")]
use std::future::Future;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::Duration;

use ipc_core::process::Inherited;
use ipc_core::{Deadline, Error, Property, Result};
use ipc_shm::raw::{Object, Place, RobustMutexRef, SAFETY_NET};
use ipc_shm::SharedMemory;

use crate::layout::{
    slot, Chain, Control, Line, Params, Slot, Spec, BORROW_SLOTS, CLAIM_SLOTS, MAX_CAPACITY,
    MIN_CAPACITY, TOO_LARGE,
};
use crate::ring::{self, Corruption, Pos, Ring, View, RECORD_HEADER, VOID, WRAP};
use crate::sys::{self, End};
use crate::waker::{Spin, Waker};

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
/// How long a getter keeps checking before it sleeps when the item it
/// waits for is a large one being written in place (a claim of at least
/// [`WARM_RECORD`] bytes at the tail), yielding the CPU between looks: it
/// comes the moment the copy ends, and taking it a futex wake-up later
/// keeps the ring from being empty when the producer reserves its next
/// item, which then misses the start of the ring, where memory is warm.
const BEHIND_LARGE_CLAIM_SPIN: Duration = Duration::from_millis(4);
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
/// How many times [`Core::view`] reads the head and the tail for a
/// consistent pair before it settles for the last reading.
const SNAPSHOT_TRIES: u32 = 16;
/// A record at least this large goes at the start of the ring when it can
/// (see [`Core::find_room`]), where the memory is warm. Smaller ones do
/// not: the ring of a small record is in the cache anyway, and moving an
/// empty ring back costs the consumers their lock.
const WARM_RECORD: u64 = 1 << 20;
/// How many times [`Core::lock`] tries the mutex before it blocks.
const LOCK_TRIES: u32 = 64;
/// How long a non-blocking put or get waits for the lock before calling
/// the queue busy.
const NOWAIT_LOCK_PATIENCE: Duration = Duration::from_millis(1);
/// Why a put (or get) that would wait is refused while this thread holds
/// a borrowed item (or a reservation) of the same queue: it holds up the
/// other consumers (producers), the only ones who could make the room (the
/// item) it would wait for.
const WAIT_FOR_SELF: &str = "a wait on a queue whose other end this thread holds in place \
                             (release the item or commit the reservation first)";

/// What a call that may not wait ([`Deadline::Now`]) does about an end's
/// lock that is held: how long it waits for it, and what it reports if
/// the holder keeps it longer.
#[derive(Clone, Copy)]
struct OnBusy {
    error: fn() -> Error,
    patience: Duration,
}

impl OnBusy {
    /// A non-blocking put or get: it waits out a holder that is running (a
    /// copy takes well under a microsecond), but not one that is stopped,
    /// descheduled or holding an in-place guard for long, and then reports
    /// the queue busy as `Full` or `Empty` rather than block. A dead holder
    /// is reported by the robust mutex at once either way.
    const fn blocking(busy: fn() -> Error) -> OnBusy {
        OnBusy {
            error: busy,
            patience: NOWAIT_LOCK_PATIENCE,
        }
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
    pub(crate) obj: Object,
    pub(crate) ring: Ring,
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

/// What a put or get that found the queue full or empty waits on.
struct Waiting<'a> {
    /// The other end's sequence word and registrations.
    waker: Waker<'a>,
    /// What the sequence held before the queue was found full or empty.
    seen: u32,
    /// How to spin before sleeping.
    spin: Spin,
    /// What a non-blocking call returns: `Full` or `Empty`.
    busy: Error,
}

/// Room for one record at the claim frontier (the tail, when no claim is
/// open), found by a producer that holds the producers' lock: no getter
/// reads it and no other putter writes it until it is published. Dropped
/// unpublished, it leaves the queue as it was (the lock is released, the
/// tail unmoved).
pub(crate) struct Room<'a> {
    locked: Locked<'a>,
    /// The frontier: the tail, or the end of the open claims.
    front: Pos,
    /// How many claims were open (0: the frontier is the tail).
    open: u32,
    at: ring::Placement,
    /// The bytes the record takes.
    need: u64,
    /// The payload bytes it has room for.
    len: usize,
    /// A free claim slot, when the record needs one: its index, and its
    /// mutex if this thread took it (for a reservation).
    slot: Option<(usize, Option<RobustMutexRef<'a>>)>,
}

impl Room<'_> {
    /// The ring offset of the payload.
    #[inline]
    fn payload_off(&self) -> u64 {
        self.at.record + RECORD_HEADER
    }
}

/// The next record for a getter, found by a consumer that holds the
/// consumers' lock, at the consumers' frontier (the head, when no borrow
/// is open): no other getter takes it and no putter writes over it until
/// [`Core::consume`] takes it or a borrow is opened on it. Dropped
/// unconsumed, it stays for the next get.
pub(crate) struct Record<'a> {
    locked: Locked<'a>,
    /// Where it is, and the frontier once it is taken.
    at: ring::Located,
    /// The frontier it was found at, and how many borrows were open (0:
    /// the frontier is the head).
    front: Pos,
    open: u32,
    /// A borrow slot, when the record needs one (it is borrowed, or taken
    /// behind open borrows): its index, and its mutex if this thread took
    /// it (a borrow, or an item taken over from a borrower that is gone).
    slot: Option<(usize, Option<RobustMutexRef<'a>>)>,
    /// Whether the slot was open already: an item given back, taken again.
    again: bool,
}

/// A reservation in the ring, for an in-place put: an open claim, whose
/// slot's mutex this thread holds until the claim is settled (committed,
/// or given up when it is dropped).
pub(crate) struct Reserved<'a> {
    core: &'a Core,
    slot: usize,
    mutex: RobustMutexRef<'a>,
    /// The ring offset of the record, and the bytes it takes.
    record: u64,
    need: u64,
    /// The payload bytes it has room for.
    len: usize,
    settled: bool,
}

impl Reserved<'_> {
    /// The ring offset of the payload.
    pub(crate) fn payload_off(&self) -> u64 {
        self.record + RECORD_HEADER
    }

    /// The queue's segment.
    pub(crate) fn shm(&self) -> &SharedMemory {
        self.core.shm()
    }

    /// Publishes the record with its first `len` payload bytes (at most
    /// the reserved length), as soon as the claims before it are.
    pub(crate) fn commit(mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::InvalidArgument(
                "a commit of more bytes than were reserved",
            ));
        }
        self.settled = true;
        self.core.settle(&self, Some(len))
    }

    /// Leaves the claim as it is, for the process that made it: a copy
    /// carried into a forked child, where its mutex is not held.
    pub(crate) fn forget(mut self) {
        self.settled = true;
    }
}

/// Dropped uncommitted, a reservation gives its claim up: no item.
impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.settled {
            // An error here leaves the claim to be found given up (its
            // mutex free, its state still "writing") by the next producer.
            let _ = self.core.settle(self, None);
        }
    }
}

impl<'a> Record<'a> {
    /// An item taken over from a borrower that is gone (`take_back`'s slot,
    /// its mutex and the record), with `open` borrows open.
    fn again(
        locked: Locked<'a>,
        open: u32,
        (i, mutex, at): (usize, RobustMutexRef<'a>, ring::Located),
    ) -> Record<'a> {
        Record {
            locked,
            at,
            front: at.head,
            open,
            slot: Some((i, Some(mutex))),
            again: true,
        }
    }
}

/// A record borrowed for an in-place get: an open borrow, whose slot's
/// mutex this thread holds until the borrow is settled (released, or given
/// back when it is dropped unreleased).
pub(crate) struct Taken<'a> {
    core: &'a Core,
    slot: usize,
    mutex: RobustMutexRef<'a>,
    payload_off: u64,
    len: usize,
    settled: bool,
}

impl Taken<'_> {
    /// The queue's segment.
    pub(crate) fn shm(&self) -> &SharedMemory {
        self.core.shm()
    }

    /// The ring offset of the payload.
    pub(crate) fn payload_off(&self) -> u64 {
        self.payload_off
    }

    /// The payload's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Takes the record off the queue, as soon as the borrows before it
    /// are settled.
    pub(crate) fn release(mut self) -> Result<()> {
        self.settled = true;
        self.core.settle_borrow(self.slot, &self.mutex, true)
    }

    /// Leaves the borrow as it is, for the process that made it: a copy
    /// carried into a forked child, where its mutex is not held.
    pub(crate) fn forget(mut self) {
        self.settled = true;
    }
}

/// Dropped unreleased, a borrow gives its item back: the next get takes it.
impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if !self.settled {
            // An error here leaves the borrow to be found given up (its
            // mutex free, its state still "held") by the next getter.
            let _ = self.core.settle_borrow(self.slot, &self.mutex, false);
        }
    }
}

impl Core {
    /// Creates a queue at `place` and lays out its control block.
    pub(crate) fn create(place: Place<'_>, spec: &Spec, params: Params) -> Result<Core> {
        if params.capacity > MAX_CAPACITY {
            return Err(Error::InvalidArgument(TOO_LARGE));
        }
        let obj = Object::create(place, &spec.object(), params.capacity, |shm, _| {
            Core::init(shm, &params)
        })?;
        Ok(Core::new(obj, params))
    }

    /// Opens the named queue `name`, or creates it.
    pub(crate) fn open_or_create(name: &str, spec: &Spec, params: Params) -> Result<Core> {
        Core::checked(Object::open_or_create(
            name,
            &spec.object(),
            params.capacity,
            |shm, _| Core::init(shm, &params),
        )?)
    }

    /// Opens the named queue `name` and checks it.
    pub(crate) fn open(name: &str, spec: &Spec) -> Result<Core> {
        Core::checked(Object::open(name, &spec.object(), None)?)
    }

    /// Rebuilds a queue a parent handed over, and checks it.
    pub(crate) fn inherit(inherited: Inherited, spec: &Spec) -> Result<Core> {
        Core::checked(Object::inherit(inherited, &spec.object())?)
    }

    /// Fills in a new queue's control block: the segment is zero-filled
    /// (an empty ring, no waiters, not closed), so only the bound.
    fn init(shm: &SharedMemory, params: &Params) {
        sys::control(shm)
            .join
            .maxsize
            .store(params.maxsize as u64, Ordering::Relaxed);
    }

    /// What the object header cannot check: that the capacity is one this
    /// crate makes.
    fn checked(object: Object) -> Result<Core> {
        let capacity = object.layout().len;
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) || capacity % 8 != 0 {
            return Err(Corruption(
                Property::Length,
                format!("a ring of {MIN_CAPACITY} to {MAX_CAPACITY} bytes, a multiple of 8"),
                format!("{capacity} bytes"),
            )
            .error(object.shm()));
        }
        let maxsize = sys::control(object.shm())
            .join
            .maxsize
            .load(Ordering::Relaxed);
        let maxsize = usize::try_from(maxsize).unwrap_or(usize::MAX);
        Ok(Core::new(object, Params { capacity, maxsize }))
    }

    /// A queue in `obj`, made with `params`.
    fn new(obj: Object, params: Params) -> Core {
        Core {
            obj,
            ring: Ring {
                capacity: params.capacity as u64,
                maxsize: params.maxsize,
                warm_record: WARM_RECORD,
            },
        }
    }

    /// The segment.
    pub(crate) fn shm(&self) -> &SharedMemory {
        self.obj.shm()
    }

    /// The control block.
    #[inline]
    pub(crate) fn control(&self) -> &Control {
        sys::control(self.shm())
    }

    /// Getters asleep until a put.
    fn getters(&self) -> Waker<'_> {
        let c = self.control();
        Waker::new(&c.tail.seq, &c.waits.getters)
    }

    /// Putters asleep until a get.
    fn putters(&self) -> Waker<'_> {
        let c = self.control();
        Waker::new(&c.head.seq, &c.waits.putters)
    }

    /// Joiners asleep until no task is unfinished.
    fn joiners(&self) -> Waker<'_> {
        let c = self.control();
        Waker::new(&c.join.seq, &c.join.joiners)
    }

    /// Refuses a view no sequence of puts and gets produces.
    pub(crate) fn check(&self, v: &View) -> Result<()> {
        self.ring.check(v).map_err(|c| c.error(self.shm()))
    }

    /// Head and tail as they were at one moment (a snapshot), read without
    /// a lock: the head, the tail, then the head again, until the head did
    /// not move while the tail was read (the pair then existed when the
    /// tail was read; the counts only grow, so an unchanged head cannot
    /// have gone round and back). After a few tries against a busy queue
    /// the last reading is used; it still never counts negative (the head
    /// is read first and never passes the tail). A view read from a hostile
    /// segment can still say anything: callers check it or only report it.
    pub(crate) fn view(&self) -> View {
        let c = self.control();
        let mut head = Pos::load(&c.head.pos, Ordering::Acquire);
        for _ in 0..SNAPSHOT_TRIES {
            let tail = Pos::load(&c.tail.pos, Ordering::Acquire);
            let again = Pos::load(&c.head.pos, Ordering::Acquire);
            if again == head {
                return View { head, tail };
            }
            head = again;
        }
        View {
            head,
            tail: Pos::load(&c.tail.pos, Ordering::Acquire),
        }
    }

    /// The claims (`Tail`) or the borrows (`Head`).
    fn chain(&self, end: End) -> &Chain {
        let c = self.control();
        match end {
            End::Tail => &c.claims,
            End::Head => &c.borrows,
        }
    }

    /// The slots of the claims (`Tail`) or of the borrows (`Head`).
    fn slots(&self, end: End) -> &[Line<Slot>] {
        let c = self.control();
        match end {
            End::Tail => &c.claim_slots,
            End::Head => &c.borrow_slots,
        }
    }

    /// `end`'s commit word: the tail or the head.
    fn word(&self, end: End) -> &AtomicU64 {
        let c = self.control();
        match end {
            End::Tail => &c.tail.pos,
            End::Head => &c.head.pos,
        }
    }

    /// Where `end` goes on from, with its count once every open slot is
    /// settled: the end's word when `open` (the slot count read by the
    /// caller) is 0, else the chain's frontier. For producers, where the
    /// next record goes; for consumers, where the next one to take lies.
    fn frontier(&self, end: End, open: u32, order: Ordering) -> Pos {
        if open == 0 {
            Pos::load(self.word(end), order)
        } else {
            Pos::load(&self.chain(end).next, order)
        }
    }

    /// Whether every open borrow still borrowed is this thread's.
    fn borrowed_here_only(&self) -> bool {
        self.slots(End::Head).iter().enumerate().all(|(i, s)| {
            s.state.load(Ordering::Acquire) != slot::HELD
                || sys::slot_mutex(self.shm(), End::Head, i).is_held_by_this_thread()
        })
    }

    /// Whether this thread holds a slot of `end`'s chain (a reservation, a
    /// borrowed item): what comes after it at that end waits for it.
    fn holds_slot(&self, end: End) -> bool {
        let slots = self.slots(end).len();
        self.chain(end).open.load(Ordering::Relaxed) != 0
            && (0..slots).any(|i| sys::slot_mutex(self.shm(), end, i).is_held_by_this_thread())
    }

    /// For a getter about to wait while claims are open: publishes what is
    /// ready, in case the producers that would have are gone. Never waits
    /// for the producers' lock.
    fn nudge_claims(&self) -> Result<()> {
        if self.control().claims.open.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        if let Some(locked) = self.try_lock(End::Tail)? {
            if self.advance()? {
                self.wake_getters(locked);
            }
        }
        Ok(())
    }

    /// Takes one end's lock if it is free now, checking the queue first if
    /// its last holder died.
    fn try_lock(&self, end: End) -> Result<Option<Locked<'_>>> {
        let mutex = sys::mutex(self.shm(), end);
        let Some(died) = mutex.try_lock()? else {
            return Ok(None);
        };
        let locked = Locked { mutex };
        if died {
            self.recover(end)?;
            mutex.mark_consistent();
        }
        Ok(Some(locked))
    }

    /// Takes one end's lock, waiting until `deadline` at most, checking
    /// the queue first if its last holder died.
    /// (`deadline` is the call's; `patience` how long one with
    /// [`Deadline::Now`] waits, worked out only if the lock is held, so
    /// that a free lock costs no clock read.)
    fn lock(&self, end: End, deadline: Deadline, patience: Duration) -> Result<Locked<'_>> {
        let mutex = sys::mutex(self.shm(), end);
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
            None => mutex.lock(match deadline {
                Deadline::Now => Deadline::after(patience),
                other => other,
            })?,
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
        self.recover_chain(end);
        self.check(&self.view())?;
        self.control()
            .waits
            .recoveries
            .fetch_add(1, Ordering::Relaxed);
        // What the dead holder settled and did not publish (or take off).
        match end {
            End::Tail => {
                self.advance()?;
            }
            End::Head => {
                self.advance_borrows_locked(BORROW_SLOTS)?;
            }
        }
        self.wake_all(end);
        Ok(())
    }

    /// How many times a lock whose holder died was recovered.
    pub(crate) fn recoveries(&self) -> u32 {
        self.control().waits.recoveries.load(Ordering::Relaxed)
    }

    /// Wakes every waiter, called holding `end`'s lock. Only the sequence
    /// words that lock guards (and `join_seq`, which is only ever changed
    /// atomically) are changed, registrations first: bumping the other
    /// end's word here could race with its holder's bump and leave the word
    /// where a waiter that read it in between expects it. That end's
    /// sleepers are still woken; one that is about to sleep looks again
    /// within [`SAFETY_NET`].
    fn wake_all(&self, end: End) {
        let (own, other) = match end {
            End::Tail => (self.getters(), self.putters()),
            End::Head => (self.putters(), self.getters()),
        };
        own.clear();
        own.bump();
        own.wake();
        let joiners = self.joiners();
        joiners.clear();
        joiners.seq.fetch_add(1, Ordering::Release);
        joiners.wake();
        other.wake();
    }

    /// Puts one record. `Full` (for [`Deadline::Now`]), `Timeout`, `Closed` or
    /// `TooLarge` leave the queue unchanged.
    pub(crate) fn put(&self, payload: &[u8], deadline: Deadline) -> Result<()> {
        self.put_or(payload, deadline, OnBusy::blocking(|| Error::Full), &mut 0)
    }

    /// [`put`](Self::put), giving `on_busy`'s error when a call with
    /// [`Deadline::Now`] finds the lock held too long. A call that finds
    /// no room leaves in `seen` the putters' sequence read before its last
    /// look, for an async caller to wait on.
    fn put_or(
        &self,
        payload: &[u8],
        deadline: Deadline,
        on_busy: OnBusy,
        seen: &mut u32,
    ) -> Result<()> {
        self.find_room(payload.len(), deadline, on_busy, false, seen, |room| {
            self.ring_write(room.payload_off(), payload)?;
            self.publish(room, payload.len())
        })
    }

    /// Claims room for a record of `len` payload bytes at the frontier,
    /// for the caller to fill without the producers' lock (other producers
    /// go on meanwhile, their records published after it). `Full` (for
    /// [`Deadline::Now`]), `Timeout`, `Closed` or `TooLarge` claim
    /// nothing.
    pub(crate) fn reserve(&self, len: usize, deadline: Deadline) -> Result<Reserved<'_>> {
        self.reserve_or(len, deadline, OnBusy::blocking(|| Error::Full), &mut 0)
    }

    /// [`reserve`](Self::reserve), with [`put_or`](Self::put_or)'s
    /// `on_busy` and `seen`.
    fn reserve_or(
        &self,
        len: usize,
        deadline: Deadline,
        on_busy: OnBusy,
        seen: &mut u32,
    ) -> Result<Reserved<'_>> {
        self.find_room(len, deadline, on_busy, true, seen, |room| self.claim(room))
    }

    /// Opens a claim on `room`, for a reservation, and lets the producers'
    /// lock go.
    fn claim<'a>(&'a self, room: Room<'a>) -> Result<Reserved<'a>> {
        let Some((slot, Some(mutex))) = room.slot else {
            return Err(Error::InvalidArgument("a claim without a slot"));
        };
        self.open_claim(slot, &room, slot::HELD);
        Ok(Reserved {
            core: self,
            slot,
            mutex,
            record: room.at.record,
            need: room.need,
            len: room.len,
            settled: false,
        })
    }

    /// Publishes the record in `room` with its first `len` payload bytes:
    /// one store of the tail, after which getters see it; then wakes a
    /// sleeping getter and releases the producers' lock.
    #[inline(always)]
    fn publish(&self, room: Room<'_>, len: usize) -> Result<()> {
        let c = self.control();
        self.ring_write(room.at.record, &ring::header(len as u32, 0))?;
        let moved = if room.open == 0 {
            // The commit: the record becomes visible to getters.
            self.ring
                .tail_after(room.front, &room.at, room.need)
                .store(&c.tail.pos, Ordering::Release);
            crash_point();
            true
        } else {
            // Behind open claims: published when they are, in order.
            let Some((slot, _)) = room.slot else {
                return Err(Error::InvalidArgument("a put behind claims without a slot"));
            };
            self.open_claim(slot, &room, slot::DONE);
            self.advance()?
        };
        if moved {
            self.wake_getters(room.locked);
        }
        Ok(())
    }

    /// Wakes a sleeping getter after the tail moved, releasing the
    /// producers' lock (`locked`) first.
    #[inline(always)]
    fn wake_getters(&self, locked: Locked<'_>) {
        let getters = self.getters();
        let now = getters.bump();
        fence(Ordering::SeqCst);
        let wake = getters.take(now);
        drop(locked);
        if wake {
            getters.wake();
        }
    }

    /// Waits for room for a record of `len` payload bytes after the tail
    /// and hands it to `then`, holding the producers' lock. A continuation
    /// rather than a returned guard: the copying put then compiles to one
    /// function, where handing a guard out of the loop cost it half its
    /// speed (the guard went through memory, measured).
    /// `claim`: room for a reservation, which takes a claim slot and its
    /// mutex. A put needs a slot too while claims are open (it is
    /// published after them); with every slot taken, it waits as for room.
    #[inline(always)]
    fn find_room<'a, R>(
        &'a self,
        len: usize,
        deadline: Deadline,
        on_busy: OnBusy,
        claim: bool,
        seen: &mut u32,
        then: impl FnOnce(Room<'a>) -> Result<R>,
    ) -> Result<R> {
        let need = self.ring.record_size(len)?;
        let c = self.control();
        let putters = self.putters();
        let mut spun = false;
        let mut reaped = false;
        loop {
            let locked = self
                .lock(End::Tail, deadline, on_busy.patience)
                .map_err(|e| gave_up(deadline, e, (on_busy.error)()))?;
            if self.is_closed() {
                return Err(Error::Closed);
            }
            // The frontier: the tail, unless claims are open.
            let open = c.claims.open.load(Ordering::Relaxed);
            if open as usize > CLAIM_SLOTS {
                return Err(self.broken_chain(End::Tail, &format!("{open} claims open")));
            }
            // A claim, or a record behind claims, leaves a gap (see
            // `Ring::place`).
            let gap = if claim || open != 0 { RECORD_HEADER } else { 0 };
            let tail = self.frontier(End::Tail, open, Ordering::Relaxed);
            let mut v = View {
                head: Pos::load(&c.seen_head, Ordering::Relaxed),
                tail,
            };
            if self.ring.check(&v).is_err() {
                // A cache word no put writes: repair it from the real head,
                // which alone says whether the queue is corrupt.
                v.head = Pos::load(&c.head.pos, Ordering::Acquire);
                v.head.store(&c.seen_head, Ordering::Relaxed);
                self.check(&v)?;
            }
            if need >= self.ring.warm_record {
                // A large record looks at the real head (a cache miss is
                // nothing beside its copy): where it goes depends on what
                // is free now, not at the last look.
                v.head = Pos::load(&c.head.pos, Ordering::Acquire);
                v.head.store(&c.seen_head, Ordering::Relaxed);
                self.check(&v)?;
                if open == 0 && tail.offset != 0 && v.items() == 0 {
                    // A large record into an empty ring goes back to offset
                    // 0, where the one before it was written: memory still
                    // in the cache, where the next slot of a ring larger
                    // than the cache never is (measured with 16 MiB items).
                    // Only if no consumer holds its lock: this is a choice
                    // of where, never a reason to wait.
                    if let Some(consumers) = self.try_lock(End::Head)? {
                        self.realign_locked(tail, consumers)?;
                        continue;
                    }
                }
            }
            let mut placement = self.ring.place(&v, need, gap);
            if placement.is_none() {
                // The last look at the head shows no room: look again.
                *seen = putters.seen();
                v.head = Pos::load(&c.head.pos, Ordering::Acquire);
                v.head.store(&c.seen_head, Ordering::Relaxed);
                self.check(&v)?;
                placement = self.ring.place(&v, need, gap);
            }
            if need >= self.ring.warm_record && placement.is_some_and(|at| at.record != 0) {
                // A large record starts the ring again whenever the start
                // is free: of a ring larger than the cache, only the start
                // stays in it, where the records before were written.
                placement = self.ring.place_at_start(&v, need, gap).or(placement);
            }
            if let Some(marker) = placement.and_then(|at| at.marker) {
                // Past the frontier, where no getter reads: harmless if the
                // room is not taken after all.
                self.ring_write(marker, &WRAP.to_ne_bytes())?;
            }
            let slot = match placement {
                Some(_) if claim || open != 0 => {
                    let slot = self.free_slot(End::Tail, claim)?;
                    if slot.is_none() {
                        // Every slot holds a claim: wait for the tail to
                        // pass some (`advance` wakes this end's sleepers).
                        *seen = putters.seen();
                    }
                    slot
                }
                _ => None,
            };
            if let Some(at) = placement.filter(|_| slot.is_some() || !(claim || open != 0)) {
                return then(Room {
                    locked,
                    front: tail,
                    open,
                    at,
                    need,
                    len,
                    slot,
                });
            }
            if open != 0 && !reaped && (placement.is_none() || slot.is_none()) {
                // The room or the slot may be a claim whose producer is
                // gone: find out, and look again (once a call) if anything
                // changed.
                reaped = true;
                if self.advance()? {
                    self.wake_getters(locked);
                    continue;
                }
                if c.claims.open.load(Ordering::Relaxed) != open {
                    continue;
                }
            }
            if placement.is_none() && v.items() == 0 && open == 0 {
                // Empty, yet the record does not fit after the tail.
                self.realign(tail, deadline, on_busy.patience)
                    .map_err(|e| gave_up(deadline, e, (on_busy.error)()))?;
                continue;
            }
            if deadline != Deadline::Now
                && (self.holds_slot(End::Head) || (open != 0 && self.holds_slot(End::Tail)))
            {
                return Err(Error::InvalidArgument(WAIT_FOR_SELF));
            }
            let waiting = Waiting {
                waker: putters,
                seen: *seen,
                spin: Spin {
                    quiet: Duration::ZERO,
                    want: PUT_BATCH,
                    pauses: PUT_PAUSES,
                    spin_for: PUT_SPIN,
                },
                busy: Error::Full,
            };
            self.wait_for_change(locked, deadline, waiting, &mut spun)?;
        }
    }

    /// A free slot of `end`'s chain, called holding that end's lock; with
    /// `lock`, one whose mutex this thread could take (a holder that
    /// settled lets its mutex go just after its slot is freed), taken.
    fn free_slot(
        &self,
        end: End,
        lock: bool,
    ) -> Result<Option<(usize, Option<RobustMutexRef<'_>>)>> {
        for (i, s) in self.slots(end).iter().enumerate() {
            if s.state.load(Ordering::Acquire) != slot::FREE {
                continue;
            }
            if !lock {
                return Ok(Some((i, None)));
            }
            let mutex = sys::slot_mutex(self.shm(), end, i);
            if let Some(died) = mutex.try_lock()? {
                if died {
                    // A holder that died after its slot was settled.
                    mutex.mark_consistent();
                }
                return Ok(Some((i, Some(mutex))));
            }
        }
        Ok(None)
    }

    /// Records in `slot` the claim on `room` (in `state`: being written, or
    /// written), and moves the frontier past it; called holding the
    /// producers' lock. The slot's fields go first and its state last, so
    /// a holder that dies leaves a slot that is free or whole, and the next
    /// holder works the frontier out from the slots (`recover_chain`).
    fn open_claim(&self, i: usize, room: &Room<'_>, state: u32) {
        let next = self.ring.tail_after(room.front, &room.at, room.need);
        self.open_slot(End::Tail, i, room.front, room.at.record, room.need, state);
        self.finish_opening(End::Tail, room.open, next);
    }

    /// Fills in slot `i` of `end`'s chain: its part of the ring starts at
    /// `front` (the frontier), its record at `record` and takes `need`
    /// bytes; its state last.
    fn open_slot(&self, end: End, i: usize, front: Pos, record: u64, need: u64, state: u32) {
        let s = &self.slots(end)[i];
        s.from.store(u64::from(front.offset), Ordering::Relaxed);
        s.record.store(record, Ordering::Relaxed);
        s.size.store(need, Ordering::Relaxed);
        s.state.store(state, Ordering::Release);
        crash_point();
    }

    /// Counts a slot just opened in `end`'s chain (which had `open`) and
    /// moves the frontier to `next`, after it.
    fn finish_opening(&self, end: End, open: u32, next: Pos) {
        let chain = self.chain(end);
        chain.open.store(open + 1, Ordering::Release);
        next.store(&chain.next, Ordering::Release);
        crash_point();
    }

    /// Settles reservation `r`: commits it with `commit` payload bytes, or
    /// gives it up (`None`). A claim given up that is the newest one is
    /// taken back; one with claims after it becomes a void record, which
    /// getters step over. Then publishes what is ready from the tail on.
    fn settle(&self, r: &Reserved<'_>, commit: Option<usize>) -> Result<()> {
        let c = self.control();
        let s = &c.claim_slots[r.slot];
        if let Some(len) = commit {
            // The claim's own space: no lock needed to write it.
            self.ring_write(r.record, &ring::header(len as u32, r.need as u32))?;
        }
        let mut holding = true;
        let locked = self.lock(End::Tail, Deadline::Never, Duration::ZERO);
        let result = locked.and_then(|locked| {
            if commit.is_some() {
                s.state.store(slot::DONE, Ordering::Release);
                crash_point();
            } else {
                self.give_up(r.slot, r.record, r.need)?;
            }
            // Settled: the mutex goes before the advance frees the slot, so
            // a putter that finds the slot free can take it (and is woken
            // by the advance, not after).
            let _ = r.mutex.unlock();
            holding = false;
            // A claim given up may have been all a getter of a closed queue
            // waited for: it looks again either way.
            if self.advance_from(r.slot)? || commit.is_none() {
                self.wake_getters(locked);
            }
            Ok(())
        });
        if holding {
            // Unsettled: a claim still "held" with a free mutex is one
            // given up.
            let _ = r.mutex.unlock();
        }
        result
    }

    /// Gives up the claim in slot `i` (record at `record`, `need` bytes),
    /// called holding the producers' lock: taken back if it is the newest,
    /// else made void. It no longer counts as a put either way, so joiners
    /// look again.
    fn give_up(&self, i: usize, record: u64, need: u64) -> Result<()> {
        let c = self.control();
        let s = &c.claim_slots[i];
        let next = Pos::load(&c.claims.next, Ordering::Relaxed);
        let end = (record.wrapping_add(need) % self.ring.capacity) as u32;
        let fewer = Pos {
            count: next.count.wrapping_sub(1),
            ..next
        };
        if next.offset == end {
            // Nothing after it: the frontier moves back to where it began.
            let back = Pos {
                offset: s.from.load(Ordering::Relaxed) as u32,
                ..fewer
            };
            back.store(&c.claims.next, Ordering::Release);
            crash_point();
            s.state.store(slot::FREE, Ordering::Release);
            let open = c.claims.open.load(Ordering::Relaxed);
            c.claims
                .open
                .store(open.saturating_sub(1), Ordering::Release);
            crash_point();
            // Room (and a slot) came free without the tail moving: wake the
            // putters waiting for it. Their word is the consumers' to bump,
            // so this takes the consumers' lock to bump it (the producers'
            // lock, held here, is always taken first): a putter about to
            // sleep then sees the word move, where a bare wake would find
            // it not yet asleep and leave it to sleep until `SAFETY_NET`.
            match self.lock(End::Head, Deadline::Never, Duration::ZERO) {
                Ok(locked) => self.wake_putters(locked),
                Err(_) => self.putters().wake(),
            }
        } else {
            self.ring_write(record, &ring::header(VOID, need as u32))?;
            s.state.store(slot::VOID, Ordering::Release);
            crash_point();
            fewer.store(&c.claims.next, Ordering::Release);
            crash_point();
        }
        self.wake_joiners();
        Ok(())
    }

    /// Publishes, from the tail on and in order, every claim that is ready
    /// (written, or void), giving up on the way any whose claimant is gone
    /// (died, or dropped it without settling); stops at one still being
    /// written. Called holding the producers' lock; whether the tail moved.
    fn advance(&self) -> Result<bool> {
        self.advance_from(CLAIM_SLOTS)
    }

    /// [`advance`](Self::advance), looking at slot `hint` first for the
    /// claim at the tail.
    fn advance_from(&self, hint: usize) -> Result<bool> {
        let c = self.control();
        let cap = self.ring.capacity;
        let was_full = c.claims.open.load(Ordering::Relaxed) as usize >= CLAIM_SLOTS;
        let mut moved = false;
        loop {
            let open = c.claims.open.load(Ordering::Relaxed);
            if open == 0 {
                break;
            }
            let tail = Pos::load(&c.tail.pos, Ordering::Relaxed);
            let Some(i) = self.slot_at(End::Tail, u64::from(tail.offset), hint) else {
                return Err(self.broken_chain(End::Tail, &format!("none at the tail {tail:?}")));
            };
            let s = &c.claim_slots[i];
            let (record, need) = self.slot_record(End::Tail, s)?;
            let count = match s.state.load(Ordering::Acquire) {
                slot::DONE => tail.count.wrapping_add(1),
                slot::VOID => tail.count,
                _ => {
                    if !self.holder_gone(End::Tail, i)? {
                        break;
                    }
                    self.give_up(i, record, need)?;
                    continue;
                }
            };
            // The commit of that record.
            Pos {
                count,
                offset: ((record + need) % cap) as u32,
            }
            .store(&c.tail.pos, Ordering::Release);
            crash_point();
            s.state.store(slot::FREE, Ordering::Release);
            c.claims.open.store(open - 1, Ordering::Release);
            crash_point();
            moved = true;
        }
        if was_full && moved {
            // Putters waiting for a slot (without a bump of their word,
            // which only the consumers' lock holder writes).
            self.putters().wake();
        }
        Ok(moved)
    }

    /// The open slot of `end`'s chain whose part of the ring starts at
    /// offset `from`, looking at slot `hint` first (a settling holder's
    /// own: most often the oldest), so that a lone claim or borrow costs
    /// one slot's line, not sixteen.
    fn slot_at(&self, end: End, from: u64, hint: usize) -> Option<usize> {
        let slots = self.slots(end);
        let at = |i: usize| {
            let s = &slots[i];
            s.state.load(Ordering::Acquire) != slot::FREE && s.from.load(Ordering::Relaxed) == from
        };
        if hint < slots.len() && at(hint) {
            return Some(hint);
        }
        (0..slots.len()).find(|&i| at(i))
    }

    /// The record of slot `s` of `end`'s chain: its offset and the bytes it
    /// takes, checked against the ring (the words are the segment's).
    fn slot_record(&self, end: End, s: &Slot) -> Result<(u64, u64)> {
        let (record, need) = (
            s.record.load(Ordering::Relaxed),
            s.size.load(Ordering::Relaxed),
        );
        let fits = record
            .checked_add(need)
            .is_some_and(|end| end <= self.ring.capacity);
        if record % 8 != 0 || need < RECORD_HEADER || need % 8 != 0 || !fits {
            return Err(self.broken_chain(end, &format!("a slot of {need} bytes at {record}")));
        }
        Ok((record, need))
    }

    /// Whether the holder of slot `i` of `end`'s chain, whose state says it
    /// still holds it, is gone: it died (its mutex says so), or let its
    /// mutex go without settling. A holder settles under its end's lock,
    /// which the caller holds, before it lets the mutex go.
    fn holder_gone(&self, end: End, i: usize) -> Result<bool> {
        let mutex = sys::slot_mutex(self.shm(), end, i);
        if mutex.is_held_by_this_thread() {
            return Ok(false);
        }
        match mutex.try_lock()? {
            None => Ok(false),
            Some(died) => {
                if died {
                    self.count_dead_holder(&mutex);
                }
                let _ = mutex.unlock();
                Ok(true)
            }
        }
    }

    /// A slot's mutex whose holder died, taken: consistent again, and
    /// counted as a recovery.
    fn count_dead_holder(&self, mutex: &RobustMutexRef<'_>) {
        mutex.mark_consistent();
        self.control()
            .waits
            .recoveries
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The error of slots no sequence of operations leaves.
    fn broken_chain(&self, end: End, found: &str) -> Error {
        let expected = match end {
            End::Tail => "a chain of claims from the tail",
            End::Head => "a chain of borrows from the head",
        };
        Corruption(Property::ControlWord, expected.to_owned(), found.to_owned()).error(self.shm())
    }

    /// After a holder of `end`'s lock died: works the open slots and the
    /// frontier out from the slots again (the slots are the truth; `open`
    /// and `next` are written after them), freeing any slot the end's word
    /// has already passed. Every open borrow may have been let go: the
    /// next get looks.
    fn recover_chain(&self, end: End) {
        let chain = self.chain(end);
        let slots = self.slots(end);
        let cap = self.ring.capacity;
        let mut in_chain = [false; CLAIM_SLOTS];
        let mut front = Pos::load(self.word(end), Ordering::Relaxed);
        // Borrows lie between the head and the tail, and records may fill
        // the ring, where the walk would come round to a slot the head has
        // passed (one whose taker died before freeing it): never more.
        let most = match end {
            End::Tail => u32::MAX,
            End::Head => Pos::load(&self.control().tail.pos, Ordering::Acquire)
                .count
                .wrapping_sub(front.count),
        };
        let mut open = 0;
        while let Some(i) = (open < most).then_some(()).and_then(|()| {
            (0..slots.len()).find(|&i| {
                !in_chain[i]
                    && slots[i].state.load(Ordering::Acquire) != slot::FREE
                    && slots[i].from.load(Ordering::Relaxed) == u64::from(front.offset)
            })
        }) {
            let s = &slots[i];
            let end = s
                .record
                .load(Ordering::Relaxed)
                .wrapping_add(s.size.load(Ordering::Relaxed))
                % cap.max(1);
            in_chain[i] = true;
            open += 1;
            // A void claim is no put.
            let counts = s.state.load(Ordering::Acquire) != slot::VOID;
            front = Pos {
                count: front.count.wrapping_add(u32::from(counts)),
                offset: end as u32,
            };
        }
        for (s, in_chain) in slots.iter().zip(in_chain) {
            if !in_chain {
                s.state.store(slot::FREE, Ordering::Release);
            }
        }
        front.store(&chain.next, Ordering::Release);
        chain.open.store(open, Ordering::Release);
        chain.given_back.store(open, Ordering::Relaxed);
    }

    /// Moves an empty ring whose tail is at `tail` back to offset 0, so
    /// that any record that fits the ring at all fits after the tail.
    /// Called holding the producers' lock; takes the consumers' lock too
    /// (always in that order). Each step is one store that leaves a valid
    /// ring: a wrap marker at the tail, published as if it preceded a
    /// record at 0 (a ring holding only a marker is empty), then the head
    /// moved past it, as a get would.
    fn realign(&self, tail: Pos, deadline: Deadline, patience: Duration) -> Result<()> {
        let consumers = self.lock(End::Head, deadline, patience)?;
        self.realign_locked(tail, consumers)
    }

    /// [`realign`](Self::realign), holding the consumers' lock already.
    fn realign_locked(&self, tail: Pos, consumers: Locked<'_>) -> Result<()> {
        let c = self.control();
        let v = View {
            head: Pos::load(&c.head.pos, Ordering::Acquire),
            tail,
        };
        self.check(&v)?;
        if v.items() != 0 {
            return Ok(());
        }
        if tail.offset != 0 {
            self.ring_write(u64::from(tail.offset), &WRAP.to_ne_bytes())?;
            let tail = Pos { offset: 0, ..tail };
            tail.store(&c.tail.pos, Ordering::Release);
            crash_point();
        }
        let head = Pos {
            offset: 0,
            ..v.head
        };
        head.store(&c.head.pos, Ordering::Release);
        crash_point();
        head.store(&c.seen_head, Ordering::Relaxed);
        drop(consumers);
        Ok(())
    }

    /// Takes one record into `dest` and returns its length. `Empty` (for
    /// [`Deadline::Now`]), `Timeout`, `Closed` (closed and drained) and
    /// `BufferTooShort` leave the queue unchanged.
    pub(crate) fn get(&self, mut dest: Dest<'_>, deadline: Deadline) -> Result<usize> {
        self.get_or(
            &mut dest,
            deadline,
            OnBusy::blocking(|| Error::Empty),
            &mut 0,
        )
    }

    /// [`get`](Self::get), giving `on_busy`'s error when a call with
    /// [`Deadline::Now`] finds the lock held too long. A call that finds
    /// nothing leaves in `seen` the getters' sequence read before its last
    /// look, for an async caller to wait on. (`dest` by reference: an async
    /// caller's future holds it, and a copy of it read back at once from
    /// the future's state stalled each get by a few nanoseconds.)
    fn get_or(
        &self,
        dest: &mut Dest<'_>,
        deadline: Deadline,
        on_busy: OnBusy,
        seen: &mut u32,
    ) -> Result<usize> {
        self.find_record(deadline, on_busy, false, seen, |record| {
            let len = record.at.len;
            let buf: &mut [u8] = match dest {
                Dest::Slice(slice) if slice.len() < len => {
                    return self.leave(record, Error::BufferTooShort { needed: len });
                }
                Dest::Slice(slice) => &mut slice[..len],
                Dest::Vec(vec) => {
                    vec.clear();
                    vec.resize(len, 0);
                    &mut vec[..]
                }
            };
            if let Err(e) = ring::read(self.shm(), record.at.payload_off(), buf) {
                return self.leave(record, e);
            }
            crash_point();
            self.consume(record)?;
            Ok(len)
        })
    }

    /// Leaves `record` for the next get and returns `error`: as it was,
    /// unless it is an item this getter took over from a borrower that is
    /// gone, which it gives back again.
    #[cold]
    fn leave<R>(&self, record: Record<'_>, error: Error) -> Result<R> {
        if let Some((_, Some(mutex))) = record.slot.filter(|_| record.again) {
            self.give_back(&mutex, record.locked)?;
        }
        Err(error)
    }

    /// Gives back the borrowed item whose slot's mutex (`mutex`) this
    /// thread holds, called holding the consumers' lock (`locked`, let go
    /// here): a free mutex on a held slot is what the next get takes over.
    fn give_back(&self, mutex: &RobustMutexRef<'_>, locked: Locked<'_>) -> Result<()> {
        let _ = mutex.unlock();
        self.note_given_back();
        drop(locked);
        self.tell_getters()
    }

    /// Counts one more item given back in the `given_back` hint; called
    /// holding the consumers' lock.
    fn note_given_back(&self) {
        let b = &self.control().borrows;
        let given_back = b.given_back.load(Ordering::Relaxed);
        b.given_back
            .store(given_back.saturating_add(1), Ordering::Relaxed);
    }

    /// Takes `record` off the queue: one store of the head, after which
    /// its space is free for putters; then wakes a sleeping putter and
    /// releases the consumers' lock. Behind open borrows, it is taken off
    /// when they are.
    #[inline(always)]
    fn consume(&self, record: Record<'_>) -> Result<()> {
        if record.slot.is_some() {
            return self.consume_behind_borrows(record);
        }
        // The commit: the record is taken and its space free.
        record
            .at
            .head
            .store(&self.control().head.pos, Ordering::Release);
        crash_point();
        self.wake_putters(record.locked);
        Ok(())
    }

    /// Wakes a sleeping putter after the head moved, releasing the
    /// consumers' lock (`locked`) first.
    #[inline(always)]
    fn wake_putters(&self, locked: Locked<'_>) {
        let putters = self.putters();
        let now = putters.bump();
        fence(Ordering::SeqCst);
        let wake = putters.take(now);
        drop(locked);
        if wake {
            putters.wake();
        }
    }

    /// [`consume`](Self::consume) for a record with a borrow slot (taken
    /// while borrows are open, or an item given back): the slot is marked
    /// read, and the record taken off when the borrows before it are.
    #[inline(never)]
    fn consume_behind_borrows(&self, record: Record<'_>) -> Result<()> {
        let Some((i, mutex)) = record.slot else {
            return Err(Error::InvalidArgument(
                "a get behind borrows without a slot",
            ));
        };
        if record.again {
            self.slots(End::Head)[i]
                .state
                .store(slot::DONE, Ordering::Release);
            crash_point();
        } else {
            self.open_slot(
                End::Head,
                i,
                record.front,
                record.at.record,
                record.at.need,
                slot::DONE,
            );
            self.finish_opening(End::Head, record.open, record.at.head);
        }
        if let Some(mutex) = mutex {
            // Read: as in `settle_borrow`.
            let _ = mutex.unlock();
        }
        self.advance_borrows(record.locked, i)
    }

    /// Finds the next record and borrows it for an in-place get: a borrow
    /// slot records it, and the consumers' lock is let go, so the other
    /// consumers go on past it while it is read. `Empty` (for
    /// [`Deadline::Now`]), `Timeout` and `Closed` (closed and drained)
    /// borrow nothing.
    pub(crate) fn take(&self, deadline: Deadline) -> Result<Taken<'_>> {
        self.take_or(deadline, OnBusy::blocking(|| Error::Empty), &mut 0)
    }

    /// [`take`](Self::take), with [`get_or`](Self::get_or)'s `on_busy`
    /// and `seen`.
    fn take_or(&self, deadline: Deadline, on_busy: OnBusy, seen: &mut u32) -> Result<Taken<'_>> {
        self.find_record(deadline, on_busy, true, seen, |record| {
            let Record {
                locked,
                at,
                front,
                open,
                slot,
                again,
            } = record;
            let Some((i, Some(mutex))) = slot else {
                return Err(Error::InvalidArgument("a borrow without a slot"));
            };
            if !again {
                self.open_slot(End::Head, i, front, at.record, at.need, slot::HELD);
                self.finish_opening(End::Head, open, at.head);
            }
            drop(locked);
            Ok(Taken {
                core: self,
                slot: i,
                mutex,
                payload_off: at.payload_off(),
                len: at.len,
                settled: false,
            })
        })
    }

    /// Settles the borrow in slot `i` (whose mutex, `mutex`, this thread
    /// holds): released, it is taken off the queue as soon as the borrows
    /// before it are; else it is given back, and the next get takes it.
    fn settle_borrow(&self, i: usize, mutex: &RobustMutexRef<'_>, release: bool) -> Result<()> {
        let mut holding = true;
        let result = self
            .lock(End::Head, Deadline::Never, Duration::ZERO)
            .and_then(|locked| {
                if release {
                    self.slots(End::Head)[i]
                        .state
                        .store(slot::DONE, Ordering::Release);
                    crash_point();
                    // Read: the mutex goes before the advance frees the
                    // slot, so a getter that finds it free can take it.
                    let _ = mutex.unlock();
                    holding = false;
                    return self.advance_borrows(locked, i);
                }
                holding = false;
                self.give_back(mutex, locked)
            });
        if holding {
            // Only now: a slot still "held" with a free mutex is one given
            // back.
            let _ = mutex.unlock();
        }
        result
    }

    /// [`advance_borrows_locked`](Self::advance_borrows_locked), then the
    /// wake-ups: putters if the head moved (releasing the consumers' lock,
    /// `locked`, first), getters if an item was given back, a slot came
    /// free that they may wait for (every slot was open), or the queue is
    /// closed (getters wait for the last borrows).
    fn advance_borrows(&self, locked: Locked<'_>, hint: usize) -> Result<()> {
        let was_full = self.control().borrows.open.load(Ordering::Relaxed) as usize >= BORROW_SLOTS;
        let (moved, gave_back) = self.advance_borrows_locked(hint)?;
        if moved {
            self.wake_putters(locked);
        } else {
            drop(locked);
        }
        if gave_back || (moved && was_full) || self.is_closed() {
            self.tell_getters()?;
        }
        Ok(())
    }

    /// Takes off the queue, from the head on and in order, every borrowed
    /// record that is read (released, or taken behind the borrows by a
    /// copying get), one head store each; stops at one still borrowed,
    /// marking it given back if its borrower is gone. Called holding the
    /// consumers' lock; whether the head moved, and whether an item was
    /// found given back.
    fn advance_borrows_locked(&self, hint: usize) -> Result<(bool, bool)> {
        let c = self.control();
        let b = &c.borrows;
        let cap = self.ring.capacity;
        let (mut moved, mut gave_back) = (false, false);
        loop {
            let open = b.open.load(Ordering::Relaxed);
            if open == 0 {
                break;
            }
            let head = Pos::load(&c.head.pos, Ordering::Relaxed);
            let tail = Pos::load(&c.tail.pos, Ordering::Acquire);
            if head.count == tail.count {
                // Borrows lie between the head and the tail.
                return Err(self.broken_chain(End::Head, &format!("{open} past the tail {tail:?}")));
            }
            let Some(i) = self.slot_at(End::Head, u64::from(head.offset), hint) else {
                return Err(self.broken_chain(End::Head, &format!("none at the head {head:?}")));
            };
            let s = &c.borrow_slots[i];
            let (record, need) = self.slot_record(End::Head, s)?;
            match s.state.load(Ordering::Acquire) {
                slot::DONE => {}
                slot::HELD => {
                    if self.holder_gone(End::Head, i)? {
                        self.note_given_back();
                        gave_back = true;
                    }
                    break;
                }
                state => {
                    return Err(self.broken_chain(End::Head, &format!("a borrow in state {state}")))
                }
            }
            // The commit: the record is taken and its space free.
            Pos {
                count: head.count.wrapping_add(1),
                offset: ((record + need) % cap) as u32,
            }
            .store(&c.head.pos, Ordering::Release);
            crash_point();
            s.state.store(slot::FREE, Ordering::Release);
            b.open.store(open - 1, Ordering::Release);
            crash_point();
            moved = true;
        }
        Ok((moved, gave_back))
    }

    /// Wakes the getters from the consumers' side (an item given back, a
    /// borrow slot come free, the last borrows of a closed queue settled).
    /// Their word is the producers' to bump, so this takes the producers'
    /// lock to bump it; called holding no lock of this queue (the
    /// producers' lock is always taken first).
    fn tell_getters(&self) -> Result<()> {
        let locked = self.lock(End::Tail, Deadline::Never, Duration::ZERO)?;
        self.wake_getters(locked);
        Ok(())
    }

    /// Takes over, for this getter, an item whose borrower is gone (it gave
    /// the item back, or died): the oldest borrow (the one at the head) if
    /// `oldest`, else the first open borrow whose mutex this thread can
    /// take, its record checked again. Called holding the consumers' lock;
    /// a look at every borrow that finds none clears the given-back hint.
    fn take_back(
        &self,
        oldest: bool,
    ) -> Result<Option<(usize, RobustMutexRef<'_>, ring::Located)>> {
        let c = self.control();
        let b = &c.borrows;
        let head = Pos::load(&c.head.pos, Ordering::Relaxed);
        let at_head = self.slot_at(End::Head, u64::from(head.offset), BORROW_SLOTS);
        for (i, s) in self.slots(End::Head).iter().enumerate() {
            if (oldest && Some(i) != at_head) || s.state.load(Ordering::Acquire) != slot::HELD {
                continue;
            }
            let mutex = sys::slot_mutex(self.shm(), End::Head, i);
            if mutex.is_held_by_this_thread() {
                continue;
            }
            let Some(died) = mutex.try_lock()? else {
                continue;
            };
            if died {
                self.count_dead_holder(&mutex);
            }
            let found = self.slot_record(End::Head, s).and_then(|(record, need)| {
                self.ring.record_at(self.shm(), head.count, record, need)
            });
            let at = match found {
                Ok(at) => at,
                Err(e) => {
                    let _ = mutex.unlock();
                    return Err(e);
                }
            };
            let given_back = b.given_back.load(Ordering::Relaxed);
            b.given_back
                .store(given_back.saturating_sub(1), Ordering::Relaxed);
            return Ok(Some((i, mutex, at)));
        }
        if !oldest {
            b.given_back.store(0, Ordering::Relaxed);
        }
        Ok(None)
    }

    /// Waits for the next record and hands it to `then`, holding the
    /// consumers' lock (a continuation, as in
    /// [`find_room`](Self::find_room)). The next record is an item given
    /// back by a borrower, if any, else the one at the consumers' frontier.
    /// `borrow`: for a borrow, which takes a borrow slot and its mutex. A
    /// copying get needs a slot too while borrows are open (it is taken
    /// off after them); with every slot open, it waits as for an item.
    #[inline(always)]
    fn find_record<'a, R>(
        &'a self,
        deadline: Deadline,
        on_busy: OnBusy,
        borrow: bool,
        seen: &mut u32,
        then: impl FnOnce(Record<'a>) -> Result<R>,
    ) -> Result<R> {
        let c = self.control();
        let getters = self.getters();
        let mut spun = false;
        let mut nudged = false;
        loop {
            if spun {
                // Items may wait behind a claim whose producer is gone,
                // with no producer left to find out: look, once a wait.
                self.nudge_claims()?;
            }
            let locked = self
                .lock(End::Head, deadline, on_busy.patience)
                .map_err(|e| gave_up(deadline, e, (on_busy.error)()))?;
            // The frontier: the head, unless borrows are open.
            let open = c.borrows.open.load(Ordering::Relaxed);
            if open != 0 {
                if open as usize > BORROW_SLOTS {
                    return Err(self.broken_chain(End::Head, &format!("{open} borrows open")));
                }
                // An item given back comes first, and so does the oldest
                // borrowed one if its borrower died: the head waits for it.
                let oldest = c.borrows.given_back.load(Ordering::Relaxed) == 0;
                if let Some(back) = self.take_back(oldest)? {
                    return then(Record::again(locked, open, back));
                }
            }
            let front = self.frontier(End::Head, open, Ordering::Relaxed);
            let mut v = View {
                head: front,
                tail: Pos::load(&c.seen_tail, Ordering::Relaxed),
            };
            if v.items() == 0 {
                // The last look at the tail shows nothing more: look again.
                *seen = getters.seen();
                v.tail = Pos::load(&c.tail.pos, Ordering::Acquire);
                v.tail.store(&c.seen_tail, Ordering::Relaxed);
            }
            if self.ring.check(&v).is_err() {
                // A cache word no get writes: repair it from the real tail.
                *seen = getters.seen();
                v.tail = Pos::load(&c.tail.pos, Ordering::Acquire);
                v.tail.store(&c.seen_tail, Ordering::Relaxed);
                self.check(&v)?;
            }
            if v.items() != 0 {
                let at = self.ring.locate(self.shm(), &v)?;
                let slot = if borrow || open != 0 {
                    self.free_slot(End::Head, borrow)?
                } else {
                    None
                };
                if slot.is_some() || !(borrow || open != 0) {
                    return then(Record {
                        locked,
                        at,
                        front,
                        open,
                        slot,
                        again: false,
                    });
                }
                // Every borrow slot is open: wait for one to come free
                // (`advance_borrows` tells the getters), unless a borrower
                // is gone.
                *seen = getters.seen();
            }
            if open != 0 {
                // A borrower that is gone: its item, rather than a wait.
                if let Some(back) = self.take_back(false)? {
                    return then(Record::again(locked, open, back));
                }
            }
            if v.items() == 0 && self.is_closed() {
                // Puts before the close are visible after it, or wait
                // behind claims still open. The claim count first: a count
                // of none that a publish left was stored after its tail,
                // which the load after it then sees.
                let claims = c.claims.open.load(Ordering::Acquire);
                v.tail = Pos::load(&c.tail.pos, Ordering::Acquire);
                if v.items() != 0 {
                    // Published since the look above: the cached tail must
                    // not stay behind it. Take it.
                    v.tail.store(&c.seen_tail, Ordering::Relaxed);
                    continue;
                }
                // Items borrowed by others may still be given back; those
                // of this thread would be waited for by itself.
                if claims == 0 && (open == 0 || self.borrowed_here_only()) {
                    return Err(Error::Closed);
                }
            }
            if deadline == Deadline::Now && !nudged && c.claims.open.load(Ordering::Relaxed) != 0 {
                // A get that may not wait looks behind open claims once
                // (see above) before it says `Empty`.
                nudged = true;
                drop(locked);
                self.nudge_claims()?;
                continue;
            }
            if deadline != Deadline::Now {
                // (The claims only once the spin found nothing: looking
                // costs a line per slot, and the spin mostly ends the wait.)
                let for_self = (spun && self.holds_slot(End::Tail))
                    || (v.items() != 0 && self.holds_slot(End::Head));
                if for_self {
                    return Err(Error::InvalidArgument(WAIT_FOR_SELF));
                }
            }
            let waiting = Waiting {
                waker: getters,
                seen: *seen,
                spin: Spin {
                    quiet: GET_QUIET,
                    want: 1,
                    pauses: 1,
                    spin_for: self.get_spin(),
                },
                busy: Error::Empty,
            };
            self.wait_for_change(locked, deadline, waiting, &mut spun)?;
        }
    }

    /// How long a getter that found nothing spins: [`GET_SPIN`], or
    /// [`BEHIND_LARGE_CLAIM_SPIN`] behind a large claim at the tail.
    fn get_spin(&self) -> Duration {
        let c = self.control();
        if c.claims.open.load(Ordering::Relaxed) == 0 {
            return GET_SPIN;
        }
        let tail = Pos::load(&c.tail.pos, Ordering::Relaxed);
        let large = self
            .slot_at(End::Tail, u64::from(tail.offset), CLAIM_SLOTS)
            .is_some_and(|i| c.claim_slots[i].size.load(Ordering::Relaxed) >= WARM_RECORD);
        if large {
            BEHIND_LARGE_CLAIM_SPIN
        } else {
            GET_SPIN
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
            waiting.spin.run(waiting.waker.seq, waiting.seen);
            return Ok(());
        }
        waiting.waker.sleep(waiting.seen, sleep);
        Ok(())
    }

    fn ring_write(&self, off: u64, bytes: &[u8]) -> Result<()> {
        ring::write(self.shm(), off, bytes)?;
        crash_point();
        Ok(())
    }

    /// Whether the queue was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.control().waits.closed.load(Ordering::Acquire) != 0
    }

    /// Closes the queue and wakes every waiter. Taking the producers' lock
    /// orders the close after every put that returned before it.
    pub(crate) fn close(&self) -> Result<()> {
        let locked = self.lock(End::Tail, Deadline::Never, Duration::ZERO)?;
        self.control().waits.closed.store(1, Ordering::Release);
        self.wake_all(End::Tail);
        drop(locked);
        Ok(())
    }

    /// The number of items (a snapshot), never more than a checked ring
    /// can hold: a hostile segment's words give a wrong count, not an
    /// impossible one.
    ///
    /// Records taken behind open borrows are no longer items, though the
    /// head has not passed them yet.
    pub(crate) fn items(&self) -> usize {
        let v = self.view();
        if self.ring.check(&v).is_err() {
            return 0;
        }
        let taken = if self.chain(End::Head).open.load(Ordering::Relaxed) == 0 {
            0
        } else {
            let slots = self.slots(End::Head).iter();
            slots
                .filter(|s| s.state.load(Ordering::Relaxed) == slot::DONE)
                .count() as u32
        };
        v.items().saturating_sub(taken) as usize
    }

    /// Whether the queue holds `maxsize` records (a snapshot): the count a
    /// put checks, from the head to the claims' frontier, so that a put
    /// finds no room by count exactly when this says so. Reservations being
    /// written count, and so do records taken behind open borrows until the
    /// borrows before them end, since until then they hold their place in
    /// the ring; [`items`](Self::items) leaves both out.
    pub(crate) fn at_maxsize(&self) -> bool {
        if self.ring.maxsize == 0 {
            return false;
        }
        let c = self.control();
        let head = Pos::load(&c.head.pos, Ordering::Acquire);
        let open = c.claims.open.load(Ordering::Acquire);
        let v = View {
            head,
            tail: self.frontier(End::Tail, open, Ordering::Acquire),
        };
        self.ring.check(&v).is_ok() && v.items() as usize >= self.ring.maxsize
    }

    /// The number of items put and not yet marked done (a snapshot). `done`
    /// is read first, as it never passes the put count.
    pub(crate) fn unfinished(&self) -> usize {
        let c = self.control();
        let done = c.join.done.load(Ordering::Acquire);
        // Puts behind open claims count, and reservations being written.
        let open = c.claims.open.load(Ordering::Acquire);
        let puts = self.frontier(End::Tail, open, Ordering::Acquire);
        puts.count.wrapping_sub(done) as usize
    }

    /// The bytes of the ring in use (a snapshot).
    pub(crate) fn used_bytes(&self) -> usize {
        let v = self.view();
        if self.ring.check(&v).is_err() {
            return 0;
        }
        self.ring.used(&v) as usize
    }

    /// Marks one item done (Python's `task_done`): one compare-and-swap,
    /// so there is no lock to die holding.
    pub(crate) fn task_done(&self) -> Result<()> {
        let c = self.control();
        let done = &c.join.done;
        let mut seen = done.load(Ordering::Acquire);
        loop {
            let puts = Pos::load(&c.tail.pos, Ordering::Acquire).count;
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
        self.wake_joiners();
        Ok(())
    }

    /// Tells joiners the unfinished count changed (it is only ever read,
    /// never written, so any process may bump their word, atomically).
    fn wake_joiners(&self) {
        let joiners = self.joiners();
        let now = joiners.seq.fetch_add(1, Ordering::Release).wrapping_add(1);
        fence(Ordering::SeqCst);
        if joiners.take(now) {
            joiners.wake();
        }
    }

    /// Waits until every item put has been marked done.
    pub(crate) fn join(&self, deadline: Deadline) -> Result<()> {
        let joiners = self.joiners();
        loop {
            let seen = joiners.seen();
            if self.unfinished() == 0 {
                return Ok(());
            }
            // A claim whose producer is gone counts until it is found.
            self.nudge_claims()?;
            let Some(sleep) = deadline.slice(SAFETY_NET) else {
                return Err(Error::Timeout);
            };
            joiners.sleep(seen, sleep);
        }
    }
}

/// How long an async put or get that would wait keeps looking before it
/// registers and awaits, once per call: as the blocking forms do, so that
/// a peer that answers within microseconds is seen without a wake-up on
/// either side, but no longer than the executor should be kept from its
/// other tasks (the blocking getter spins up to 100 µs).
#[cfg(feature = "tokio")]
const ASYNC_SPIN: Duration = Duration::from_micros(20);

/// An async look at a held lock: it only tries it, since the holder may
/// keep it for long (an in-place guard) and the executor's thread must not
/// block; it reports `Timeout`, not "empty" or "full", which it did not
/// look at, and the caller yields and looks again.
#[cfg(feature = "tokio")]
const ASYNC_LOOK: OnBusy = OnBusy {
    error: || Error::Timeout,
    patience: Duration::ZERO,
};

/// Lets the executor run other tasks once, then goes on: for a lock held
/// by a holder that is not running, which no futex word of ours announces.
#[cfg(feature = "tokio")]
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Why an async look found nothing it could return: the queue is busy
/// (empty or full) and the caller waits for its word, or the look ran out
/// of its slice of time and the caller lets the runtime run first.
///
/// The loops match a look's `Result` into this before they await, and
/// return an `Ok` rebuilt from its value, not the `Result` as it came.
/// A `Result` still being matched lives in the future's state across the
/// await; and a `Result` passed on whole is moved as its tag and the 31
/// bytes after it, two overlapping unaligned copies that stall on the
/// narrower stores the look wrote it with. Either cost each item of the
/// 64-byte async queue a store-forwarding stall or two (0.69-0.76x the
/// blocking queue before, 0.82-0.92x after, in the same runs).
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Busy {
    Wait,
    Yield,
}

/// Runs `look` until it gives anything but what `is_busy` says is a
/// miss (`Empty` or `Full`):
/// after the first miss, spins on `waker`'s word once, then registers
/// and awaits its change. A look that finds nothing reads the sequence
/// before its last look at the other end, as the blocking waits do: one
/// look per wait, and no cache miss on the sequence per item. A lock held
/// too long (`Timeout` from a look) yields to the executor and looks
/// again without registering.
#[cfg(feature = "tokio")]
async fn wait_async<R>(
    waker: Waker<'_>,
    spin: Spin,
    is_busy: fn(&Error) -> bool,
    mut look: impl FnMut(&mut u32) -> Result<R>,
) -> Result<R> {
    let mut spin = Some(spin);
    loop {
        let mut seen = 0;
        let busy = match look(&mut seen) {
            Ok(found) => return Ok(found),
            Err(e) if is_busy(&e) => Busy::Wait,
            Err(Error::Timeout) => Busy::Yield,
            Err(e) => return Err(e),
        };
        if busy == Busy::Yield {
            yield_now().await;
            continue;
        }
        if spin.take().is_some_and(|spin| spin.run(waker.seq, seen)) {
            continue;
        }
        waker.register(seen);
        ipc_shm::watch::changed(waker.seq, seen).await;
    }
}

/// The waits of an async caller (feature `tokio`): each tries the
/// operation without waiting and, if it would have to wait, registers as a
/// waiter (so the other end wakes the sequence word) and awaits the word's
/// change through [`ipc_shm::watch`], which one thread per process serves
/// for every awaited word. The sequence is read before the look that found
/// nothing, as in the blocking waits, so no change is missed.
#[cfg(feature = "tokio")]
impl Core {
    // The copying get and put have their own loops, the in-place forms
    // share `wait_async`: the same steps, but through `wait_async` the
    // async queue of 64 B items ran at 0.39-0.46x the blocking one against
    // 0.72-0.74x with its own loops, measured in the same runs.

    /// [`get`](Self::get) without blocking a thread. Cancel safe: an item
    /// is taken only by a look that returns it.
    pub(crate) async fn get_async(&self, mut dest: Dest<'_>) -> Result<usize> {
        let getters = self.getters();
        let mut spin = Some(Spin {
            quiet: GET_QUIET,
            want: 1,
            pauses: 1,
            spin_for: ASYNC_SPIN,
        });
        loop {
            let mut seen = 0;
            // The look's result is matched before any await, so that it
            // is not kept in the future's state (see `Busy`).
            let busy = match self.get_or(&mut dest, Deadline::Now, ASYNC_LOOK, &mut seen) {
                Ok(len) => return Ok(len),
                Err(Error::Empty) => Busy::Wait,
                Err(Error::Timeout) => Busy::Yield,
                Err(e) => return Err(e),
            };
            if busy == Busy::Yield {
                yield_now().await;
                continue;
            }
            if spin.take().is_some_and(|spin| spin.run(getters.seq, seen)) {
                continue;
            }
            self.nudge_claims()?;
            getters.register(seen);
            ipc_shm::watch::changed(getters.seq, seen).await;
        }
    }

    /// [`take`](Self::take) without blocking a thread. Cancel safe: the
    /// record is only found, never taken, until the caller releases it.
    pub(crate) fn take_async(&self) -> impl Future<Output = Result<Taken<'_>>> + '_ {
        self.getters_wait(move |seen| {
            let took = self.take_or(Deadline::Now, ASYNC_LOOK, seen);
            if matches!(took, Err(Error::Empty)) {
                self.nudge_claims()?;
            }
            took
        })
    }

    /// [`put`](Self::put) without blocking a thread. Cancel safe: the
    /// record is written whole by a look that finds room, or not at all.
    pub(crate) async fn put_async(&self, payload: &[u8]) -> Result<()> {
        let putters = self.putters();
        let mut spin = Some(Spin {
            quiet: Duration::ZERO,
            want: PUT_BATCH,
            pauses: PUT_PAUSES,
            spin_for: ASYNC_SPIN,
        });
        loop {
            let mut seen = 0;
            let busy = match self.put_or(payload, Deadline::Now, ASYNC_LOOK, &mut seen) {
                Ok(()) => return Ok(()),
                Err(Error::Full) => Busy::Wait,
                Err(Error::Timeout) => Busy::Yield,
                Err(e) => return Err(e),
            };
            if busy == Busy::Yield {
                yield_now().await;
                continue;
            }
            if spin.take().is_some_and(|spin| spin.run(putters.seq, seen)) {
                continue;
            }
            putters.register(seen);
            ipc_shm::watch::changed(putters.seq, seen).await;
        }
    }

    /// [`reserve`](Self::reserve) without blocking a thread. Cancel safe:
    /// nothing is reserved until the future returns the reservation.
    pub(crate) fn reserve_async(
        &self,
        len: usize,
    ) -> impl Future<Output = Result<Reserved<'_>>> + '_ {
        self.putters_wait(move |seen| self.reserve_or(len, Deadline::Now, ASYNC_LOOK, seen))
    }

    /// Runs `look` (a get or take with [`Deadline::Now`]) until it finds
    /// an item, awaiting the getters' word in between.
    fn getters_wait<'a, R: 'a>(
        &'a self,
        look: impl FnMut(&mut u32) -> Result<R> + 'a,
    ) -> impl Future<Output = Result<R>> + 'a {
        let spin = Spin {
            quiet: GET_QUIET,
            want: 1,
            pauses: 1,
            spin_for: ASYNC_SPIN,
        };
        wait_async(self.getters(), spin, |e| matches!(e, Error::Empty), look)
    }

    /// Runs `look` (a put or reserve with [`Deadline::Now`]) until it finds
    /// room, awaiting the putters' word in between.
    fn putters_wait<'a, R: 'a>(
        &'a self,
        look: impl FnMut(&mut u32) -> Result<R> + 'a,
    ) -> impl Future<Output = Result<R>> + 'a {
        let spin = Spin {
            quiet: Duration::ZERO,
            want: PUT_BATCH,
            pauses: PUT_PAUSES,
            spin_for: ASYNC_SPIN,
        };
        wait_async(self.putters(), spin, |e| matches!(e, Error::Full), look)
    }

    /// [`join`](Self::join) without blocking a thread. Cancel safe.
    pub(crate) async fn join_async(&self) -> Result<()> {
        let joiners = self.joiners();
        loop {
            let seen = joiners.seen();
            if self.unfinished() == 0 {
                return Ok(());
            }
            self.nudge_claims()?;
            joiners.register(seen);
            ipc_shm::watch::changed(joiners.seq, seen).await;
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
    use ipc_core::Property;
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

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
            .allow_threads()
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
        every_crash_point(|k| {
            let q = setup();
            let crashed = crash_at(&q, k, &op);
            check(k, drain(&q));
            q.put_bytes(b"after").unwrap();
            assert_eq!(q.get_bytes_nowait().unwrap(), b"after", "crash point {k}");
            // One lock recovered, or both for a put that died realigning.
            assert_eq!(q.recoveries() != 0, crashed, "crash point {k}");
            q.core().check(&q.core().view()).unwrap();
            crashed
        })
    }

    /// Runs `round` for crash points 1, 2, ... until it says its child did
    /// not crash (it finished); returns how many crash points there were.
    fn every_crash_point(mut round: impl FnMut(u32) -> bool) -> u32 {
        let mut k = 1;
        while round(k) {
            k += 1;
        }
        k - 1
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

    /// A queue of capacity 256 whose records of 64 bytes or more count as
    /// large ([`WARM_RECORD`] for the small rings of these tests).
    fn warm_queue() -> Queue<Vec<u8>> {
        let mut q = queue();
        q.core_mut().ring.warm_record = 64;
        q
    }

    /// Puts `item`, a record of 112 bytes, and checks that it went at the
    /// start of the ring (the tail is right after it).
    fn put_at_start(q: &Queue<Vec<u8>>, item: &[u8]) {
        q.put_bytes(item).unwrap();
        let tail = Pos::load(&q.core().control().tail.pos, Ordering::Relaxed);
        assert_eq!(tail.offset, 112);
    }

    #[test]
    fn a_large_put_into_an_empty_ring_moves_it_back_at_any_step() {
        let c = vec![4u8; 100];
        let steps = at_every_step(
            || {
                // Empty, head and tail at 112: the record would fit after
                // the tail, but a large one goes back to offset 0.
                let q = warm_queue();
                q.put_bytes(&[9u8; 100]).unwrap();
                q.get_bytes().unwrap();
                q
            },
            |q| put_at_start(q, &c),
            |k, got| {
                assert!(
                    got.is_empty() || got == [c.clone()],
                    "crash point {k}: {got:?}"
                );
            },
        );
        // Realigning: the wrap marker, the tail, the head; then the put's
        // own payload, header and tail.
        assert_eq!(steps, 6);
    }

    /// A reservation made and settled (committed, or given up) behind
    /// another one still open, by a child that dies at crash point 1, 2,
    /// ...: once the first is committed, the queue holds it and the
    /// child's item only if the child got as far as marking it written,
    /// in claim order, and nothing of a child that gave up.
    fn claim_behind_another_at_every_step(give_up: bool) -> u32 {
        let (a, first, second) = (b"a".to_vec(), b"first...".to_vec(), b"second..".to_vec());
        every_crash_point(|k| {
            let q = queue();
            q.put_bytes(&a).unwrap();
            let mut open = q.reserve(8).unwrap();
            let crashed = crash_at(&q, k, |q| {
                let mut room = q.reserve(8).unwrap();
                room.copy_from_slice(&second);
                if give_up {
                    drop(room);
                } else {
                    room.commit().unwrap();
                }
            });
            open.copy_from_slice(&first);
            open.commit().unwrap();
            let got = drain(&q);
            let whole = got == [a.clone(), first.clone()]
                || (!give_up && got == [a.clone(), first.clone(), second.clone()]);
            assert!(whole, "crash point {k}: {got:?}");
            assert!(!crashed || q.recoveries() != 0, "crash point {k}");
            q.put_bytes(b"after").unwrap();
            assert_eq!(q.get_bytes_nowait().unwrap(), b"after", "crash point {k}");
            drained_and_whole(&q, k);
            crashed
        })
    }

    /// Checks that `q`, drained, uses no space and has valid words.
    fn drained_and_whole(q: &Queue<Vec<u8>>, k: u32) {
        assert_eq!(q.used_bytes(), 0, "crash point {k}");
        q.core().check(&q.core().view()).unwrap();
    }

    #[test]
    fn a_claim_committed_behind_another_is_published_in_order_at_any_step() {
        // The claim (slot, frontier), the header, the state, then nothing
        // more: the tail waits for the first claim.
        assert_eq!(claim_behind_another_at_every_step(false), 4);
    }

    #[test]
    fn a_claim_given_up_behind_another_leaves_nothing_at_any_step() {
        // The claim (slot, frontier), then the frontier taken back and the
        // slot freed.
        assert_eq!(claim_behind_another_at_every_step(true), 4);
    }

    /// How a get behind a borrow ends, in [`get_behind_a_borrow_at_every_step`].
    #[derive(Clone, Copy, PartialEq)]
    enum Behind {
        Released,
        GivenBack,
        Copied,
    }

    /// A get behind this thread's borrow, crashed at each step in turn;
    /// then the borrow is released and the queue drained. Gives how many
    /// steps there were.
    fn get_behind_a_borrow_at_every_step(how: Behind) -> u32 {
        let items = [
            b"first...".to_vec(),
            b"second..".to_vec(),
            b"third...".to_vec(),
        ];
        every_crash_point(|k| {
            let q = queue();
            for item in &items {
                q.put_bytes(item).unwrap();
            }
            let held = q.get_in_place().unwrap();
            let crashed = crash_at(&q, k, |q| match how {
                Behind::Copied => assert_eq!(q.get_bytes().unwrap(), b"second.."),
                _ => {
                    let item = q.get_in_place().unwrap();
                    assert_eq!(&item[..], b"second..");
                    if how == Behind::Released {
                        item.release().unwrap();
                    } else {
                        item.restore();
                    }
                }
            });
            assert_eq!(&held[..], b"first...");
            held.release().unwrap();
            let got = drain(&q);
            // Taken once, or (killed before it was) delivered again; given
            // back, always again.
            let again = got == items[1..];
            assert!(
                again || (how != Behind::GivenBack && got == items[2..]),
                "crash point {k}: {got:?}"
            );
            assert!(!crashed || q.recoveries() != 0, "crash point {k}");
            drained_and_whole(&q, k);
            crashed
        })
    }

    #[test]
    fn a_borrow_released_behind_another_is_taken_once_or_again_at_any_step() {
        // The borrow's slot, its frontier; the release's state.
        assert_eq!(get_behind_a_borrow_at_every_step(Behind::Released), 3);
    }

    #[test]
    fn a_borrow_given_back_behind_another_comes_again_at_any_step() {
        // The borrow's slot and frontier; the give-back has no store a
        // crash could cut (its mutex let go is the given-back mark).
        assert_eq!(get_behind_a_borrow_at_every_step(Behind::GivenBack), 2);
    }

    #[test]
    fn a_copying_get_behind_a_borrow_takes_its_item_or_nothing_at_any_step() {
        // The copy; the slot, marked read; the frontier.
        assert_eq!(get_behind_a_borrow_at_every_step(Behind::Copied), 3);
    }

    #[test]
    fn a_borrow_that_fills_the_ring_released_at_any_step_leaves_it_whole() {
        // One record takes the whole ring: a recovery's walk from the head
        // comes round to where it began, past the slot the head passed.
        let full = vec![7u8; 248];
        let steps = every_crash_point(|k| {
            let q = queue();
            q.put_bytes(&full).unwrap();
            let crashed = crash_at(&q, k, |q| {
                let item = q.get_in_place().unwrap();
                item.release().unwrap();
            });
            let got = drain(&q);
            assert!(got.is_empty() || got == [full.clone()], "crash point {k}");
            q.put_bytes(b"after").unwrap();
            assert_eq!(q.get_bytes_nowait().unwrap(), b"after", "crash point {k}");
            drained_and_whole(&q, k);
            crashed
        });
        // The slot, the frontier; the state; the head, the slot freed.
        assert_eq!(steps, 5);
    }

    #[test]
    fn an_item_given_back_that_a_get_cannot_take_stays_given_back() {
        let q = queue();
        q.put_bytes(b"0123456789").unwrap();
        q.put_bytes(b"x").unwrap();
        q.get_in_place().unwrap().restore();
        let mut short = [0u8; 2];
        assert!(matches!(
            q.get_bytes_into_nowait(&mut short),
            Err(Error::BufferTooShort { .. })
        ));
        assert_eq!(q.get_bytes_nowait().unwrap(), b"0123456789");
        assert_eq!(q.get_bytes_nowait().unwrap(), b"x");
        q.close().unwrap();
        assert!(matches!(q.get_bytes_nowait(), Err(Error::Closed)));
        drained_and_whole(&q, 0);
    }

    #[test]
    fn a_put_behind_a_claim_and_the_commit_that_publishes_both_are_whole_at_any_step() {
        let (a, r, b) = (b"a".to_vec(), b"reserved".to_vec(), b"b".to_vec());
        let after = b"after".to_vec();
        let steps = every_crash_point(|k| {
            let q = queue();
            q.put_bytes(&a).unwrap();
            let crashed = crash_at(&q, k, |q| {
                let mut room = q.reserve(8).unwrap();
                q.put_bytes(&b).unwrap();
                room.copy_from_slice(&r);
                room.commit().unwrap();
            });
            // The next producer finds out what the child left.
            q.put_bytes(&after).unwrap();
            let got = drain(&q);
            let whole = [
                vec![a.clone(), after.clone()],
                vec![a.clone(), b.clone(), after.clone()],
                vec![a.clone(), r.clone(), b.clone(), after.clone()],
            ]
            .contains(&got);
            assert!(whole, "crash point {k}: {got:?}");
            assert!(!crashed || q.recoveries() != 0, "crash point {k}");
            drained_and_whole(&q, k);
            crashed
        });
        // The claim (slot, frontier); the put's payload, header and claim
        // (slot, frontier); the commit's header and state; the two records
        // published (each a tail and a freed slot).
        assert_eq!(steps, 12);
    }

    #[test]
    fn claims_never_fill_the_ring_and_a_full_one_is_whole_at_any_step() {
        // Records of 64 bytes in a ring of 256: with a claim open, three
        // fit and the fourth would fill the ring, which claims never do.
        let item = |b: u8| vec![b; 56];
        every_crash_point(|k| {
            let q = queue();
            let crashed = crash_at(&q, k, |q| {
                let mut room = q.reserve(56).unwrap();
                q.put_bytes(&item(2)).unwrap();
                q.put_bytes(&item(3)).unwrap();
                assert!(matches!(q.put_bytes_nowait(&item(4)), Err(Error::Full)));
                room.copy_from_slice(&item(1));
                room.commit().unwrap();
            });
            q.put_bytes(b"after").unwrap();
            let got = drain(&q);
            let after = b"after".to_vec();
            let whole = [
                vec![after.clone()],
                vec![item(2), after.clone()],
                vec![item(2), item(3), after.clone()],
                vec![item(1), item(2), item(3), after.clone()],
            ]
            .contains(&got);
            assert!(whole, "crash point {k}: {got:?}");
            drained_and_whole(&q, k);
            crashed
        });
    }

    #[test]
    fn hostile_claim_words_are_errors_not_panics() {
        let q = queue();
        let c = q.core().control();
        c.claims.open.store(u32::MAX, Ordering::Relaxed);
        assert!(matches!(q.put_bytes(b"x"), Err(Error::Corrupt(_))));
        c.claims.open.store(1, Ordering::Relaxed);
        let s = &c.claim_slots[0];
        s.state.store(slot::HELD, Ordering::Relaxed);
        s.from.store(0, Ordering::Relaxed);
        s.record.store(u64::MAX - 7, Ordering::Relaxed);
        s.size.store(64, Ordering::Relaxed);
        // A get that finds nothing looks behind the claim, and finds it
        // broken.
        assert!(matches!(q.get_bytes_nowait(), Err(Error::Corrupt(_))));
        s.state.store(slot::FREE, Ordering::Relaxed);
        c.claims.open.store(0, Ordering::Relaxed);
        q.put_bytes(b"y").unwrap();
        assert_eq!(q.get_bytes_nowait().unwrap(), b"y");
    }

    #[test]
    fn a_large_put_wraps_early_when_the_start_is_free_at_any_step() {
        let c = vec![6u8; 100];
        let steps = at_every_step(
            || {
                // "a" at 112, free before it; the tail at 128 has room after
                // it, but a large record goes to offset 0.
                let q = warm_queue();
                q.put_bytes(&[9u8; 100]).unwrap();
                q.put_bytes(b"a").unwrap();
                q.get_bytes().unwrap();
                q
            },
            |q| put_at_start(q, &c),
            |k, got| {
                let a = b"a".to_vec();
                assert!(
                    got == [a.clone()] || got == [a, c.clone()],
                    "crash point {k}: {got:?}"
                );
            },
        );
        // The wrap marker, the payload, the header, the tail.
        assert_eq!(steps, 4);
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
            .allow_threads()
            .pass("q", q)
            .unwrap()
            .fork(|| {
                let core = q.core();
                let died = sys::mutex(core.shm(), end).lock(None).unwrap();
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
        Pos { count, offset }.store(&core.control().tail.pos, Ordering::Release);
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
            while q.core().control().waits.getters.load(Ordering::Relaxed) == 0 {
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
    fn a_late_waker_whose_put_the_getter_saw_does_not_strand_it() {
        // The interleaving that lost a wake-up: a put, an item taken by
        // another getter, a getter that read the put's sequence, found the
        // queue empty, registered and fell asleep; then that put, late,
        // takes the waiters. The next put must still wake the getter.
        let q = &queue();
        q.put_bytes(b"a").unwrap();
        assert_eq!(q.get_bytes_nowait().unwrap(), b"a");
        let core = q.core();
        let (got, woke_after) = std::thread::scope(|s| {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let getter = s.spawn(move || {
                let me = std::fs::read_link("/proc/thread-self").unwrap();
                let tid: u32 = me.file_name().unwrap().to_str().unwrap().parse().unwrap();
                tid_tx.send(tid).unwrap();
                let got = q.get_bytes_timeout(Duration::from_secs(10));
                (got, Instant::now())
            });
            let tid = tid_rx.recv().unwrap();
            ipc_testkit::wait_until_asleep(tid);
            assert_ne!(core.control().waits.getters.load(Ordering::Relaxed), 0);
            // The late put: its sequence is the one the getter saw.
            let seen = core.getters().seen();
            assert!(!core.getters().take(seen), "it has nobody to wake");
            let put_at = Instant::now();
            q.put_bytes(b"b").unwrap();
            let (got, at) = getter.join().unwrap();
            (got, at.duration_since(put_at))
        });
        assert_eq!(got.unwrap(), b"b");
        eprintln!("the getter had the item {woke_after:?} after the put");
        // The safety net would take 500 ms; a wake-up takes microseconds
        // (the bound leaves room for a loaded machine).
        assert!(woke_after < Duration::from_millis(100), "{woke_after:?}");
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
                matches!(&err, Error::Corrupt(m) if m.property == Property::ControlWord),
                "{count} {offset}: {err}"
            );
            // Still reported to the next caller: the words are never
            // trusted.
            assert!(q.put_bytes(b"x").is_err());
            assert!(q.get_bytes_nowait().is_err());
        }
    }

    #[test]
    fn corrupt_cache_words_are_repaired_from_head_and_tail() {
        let q = queue();
        q.put_bytes(b"before").unwrap();
        let garbage = Pos {
            count: 77,
            offset: 13,
        };
        garbage.store(&q.core().control().seen_head, Ordering::Relaxed);
        garbage.store(&q.core().control().seen_tail, Ordering::Relaxed);
        q.put_bytes(b"after").unwrap();
        assert_eq!(q.get_bytes_nowait().unwrap(), b"before");
        assert_eq!(q.get_bytes_nowait().unwrap(), b"after");
        for round in 0..3u8 {
            garbage.store(&q.core().control().seen_head, Ordering::Relaxed);
            q.put_bytes(&[round]).unwrap();
            garbage.store(&q.core().control().seen_tail, Ordering::Relaxed);
            assert_eq!(q.get_bytes_nowait().unwrap(), [round]);
        }
        assert_eq!(q.qsize(), 0);
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
        head.store(&q.core().control().head.pos, Ordering::Release);
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
            assert!(
                matches!(&err, Error::Corrupt(m) if m.property == Property::Record),
                "{bad}: {err}"
            );
        }
        // A wrap marker with nothing behind it.
        let q = queue();
        q.put_bytes(&[7u8; 8]).unwrap();
        q.core().ring_write(0, &WRAP.to_ne_bytes()).unwrap();
        let err = q.get_bytes_nowait().unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt(m) if m.property == Property::Record),
            "{err}"
        );
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
