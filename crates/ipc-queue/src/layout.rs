//! Where everything sits in a queue's segment. A queue is an object of
//! the workspace's one object model (`ipc_shm::raw::Object`): the common
//! header (magic, layout version, kind, item type, capacity as the length,
//! creator), then this crate's [`Control`] block, then the ring.
//!
//! The control block is a `#[repr(C)]` struct of atomics in groups that
//! each have a line of their own ([`Line`]), so a producer and a consumer
//! working at the same time each keep their own lines and share the other
//! end's word only when their last look at it has run out.

use std::mem::{offset_of, size_of};
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64};

use ipc_core::{Error, Result};
use ipc_shm::raw::{self, HEADER_SIZE};

pub(crate) use ipc_shm::raw::Kind;

/// The bytes a group of words is padded and aligned to: one cache line.
/// 128 (a pair of lines, against the adjacent-line prefetcher of x86) was
/// measured too and was not faster: the same within noise on the 64 B
/// rows, 0.86x and 0.88x on the 4 KiB rows (`cargo xtask bench`, see
/// docs/BENCHMARKS.md), so the smaller block is kept.
pub(crate) const LINE: usize = 64;

/// A group of words on a line of its own.
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

const _: () = assert!(std::mem::align_of::<Line<u8>>() == LINE);

impl<T> Deref for Line<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The bytes of a robust mutex: reached through
/// `ipc_shm::raw::RobustMutexRef` at its offset, never through this field.
#[repr(C)]
pub(crate) struct MutexBytes([AtomicU64; raw::ROBUST_MUTEX_SIZE / 8]);

/// One end of the ring.
#[repr(C)]
pub(crate) struct End {
    /// `count << 32 | ring offset` (see `ring::Pos`): the commit word.
    pub(crate) pos: AtomicU64,
    /// Changed by every operation of this end: what the other end's
    /// waiters sleep on.
    pub(crate) seq: AtomicU32,
}

/// Who waits, and whether the queue is closed.
#[repr(C)]
pub(crate) struct Waits {
    /// Getters asleep until a put (see `waker`).
    pub(crate) getters: AtomicU64,
    /// Putters asleep until a get.
    pub(crate) putters: AtomicU64,
    /// 1 once closed.
    pub(crate) closed: AtomicU32,
    /// How many times a lock whose holder died was recovered.
    pub(crate) recoveries: AtomicU32,
}

/// JoinableQueue's task count, and the bound in items.
#[repr(C)]
pub(crate) struct Join {
    /// Tasks marked done (wrapping), compared with the put count.
    pub(crate) done: AtomicU32,
    /// Changed each time the unfinished count reaches zero.
    pub(crate) seq: AtomicU32,
    /// Joiners asleep until then.
    pub(crate) joiners: AtomicU64,
    /// The bound in items (0: none), written once by the creator.
    pub(crate) maxsize: AtomicU64,
}

/// How many claims can be open at once: reservations written in place
/// without the producers' lock, and puts waiting behind them to be
/// published in order.
pub(crate) const CLAIM_SLOTS: usize = 16;

/// How many borrows can be open at once: items read in place without the
/// consumers' lock, and gets waiting behind them to be taken in order.
pub(crate) const BORROW_SLOTS: usize = 16;

/// What a claim or borrow slot holds.
pub(crate) mod slot {
    /// Nothing.
    pub(crate) const FREE: u32 = 0;
    /// Its holder is writing the record (a claim) or reading it (a
    /// borrow), holding the slot's mutex. With the mutex free, the holder
    /// is gone: it died, or let the slot go unsettled.
    pub(crate) const HELD: u32 = 1;
    /// The record is written (a claim: to be published when the claims
    /// before it are) or read (a borrow: to be taken off the queue when
    /// the borrows before it are).
    pub(crate) const DONE: u32 = 2;
    /// A claim given up (dropped, or its claimant died): its space is
    /// published as a void record, which getters skip.
    pub(crate) const VOID: u32 = 3;
}

/// One open claim (ring space past the tail that a producer fills without
/// the producers' lock) or borrow (a record past the head that a consumer
/// reads without the consumers' lock); see `core`'s module docs. Its
/// fields are written under that end's lock, `state` last.
#[repr(C)]
pub(crate) struct Slot {
    /// Held by the holder while it writes or reads, so that a holder that
    /// died is told apart from one still at work.
    mutex: MutexBytes,
    /// One of [`slot`]'s values.
    pub(crate) state: AtomicU32,
    /// The ring offset where its part of the ring starts (a wrap marker,
    /// void records, or its record): the end's word, when it is the oldest.
    pub(crate) from: AtomicU64,
    /// The ring offset of its record.
    pub(crate) record: AtomicU64,
    /// The bytes its record takes (the next one starts after them).
    pub(crate) size: AtomicU64,
}

/// The open claims past the tail, or the open borrows past the head,
/// written under that end's lock (and worked out again from the slots by
/// the next holder when a holder dies).
#[repr(C)]
pub(crate) struct Chain {
    /// How many slots are not free: 0 on the fast path, where the end's
    /// word is the frontier and `next` means nothing.
    pub(crate) open: AtomicU32,
    /// Borrows only: how many held slots were let go by their holders
    /// (an item given back, or found with its borrower dead), for the
    /// next get to take first. A hint: a get that finds none resets it.
    pub(crate) given_back: AtomicU32,
    /// The frontier (`ring::Pos`) while slots are open: the offset of the
    /// next record to claim (or to borrow), with the count the end's word
    /// will have once every open slot is settled (a void claim counts
    /// none).
    pub(crate) next: AtomicU64,
}

/// The queue's control block, right after the object header.
#[repr(C)]
pub(crate) struct Control {
    producer_mutex: Line<MutexBytes>,
    consumer_mutex: Line<MutexBytes>,
    /// Moved by puts, under the producers' mutex.
    pub(crate) tail: Line<End>,
    /// Moved by gets, under the consumers' mutex.
    pub(crate) head: Line<End>,
    /// The producers' last look at `head`.
    pub(crate) seen_head: Line<AtomicU64>,
    /// The consumers' last look at `tail`.
    pub(crate) seen_tail: Line<AtomicU64>,
    pub(crate) waits: Line<Waits>,
    pub(crate) join: Line<Join>,
    pub(crate) claims: Line<Chain>,
    pub(crate) claim_slots: [Line<Slot>; CLAIM_SLOTS],
    pub(crate) borrows: Line<Chain>,
    pub(crate) borrow_slots: [Line<Slot>; BORROW_SLOTS],
}

pub(crate) const PRODUCER_MUTEX: usize = HEADER_SIZE + offset_of!(Control, producer_mutex);
pub(crate) const CONSUMER_MUTEX: usize = HEADER_SIZE + offset_of!(Control, consumer_mutex);

/// The offset of claim slot `i`'s mutex.
pub(crate) const fn claim_mutex(i: usize) -> usize {
    slot_mutex(offset_of!(Control, claim_slots), i)
}

/// The offset of borrow slot `i`'s mutex.
pub(crate) const fn borrow_mutex(i: usize) -> usize {
    slot_mutex(offset_of!(Control, borrow_slots), i)
}

/// The offset of the mutex of slot `i` of the slots at `slots` in the
/// control block.
const fn slot_mutex(slots: usize, i: usize) -> usize {
    HEADER_SIZE + slots + i * size_of::<Line<Slot>>() + offset_of!(Slot, mutex)
}

/// Every robust mutex of a queue, for the object model to initialise.
static MUTEXES: [usize; 2 + CLAIM_SLOTS + BORROW_SLOTS] = {
    let mut all = [PRODUCER_MUTEX; 2 + CLAIM_SLOTS + BORROW_SLOTS];
    all[1] = CONSUMER_MUTEX;
    let mut i = 0;
    while i < CLAIM_SLOTS {
        all[2 + i] = claim_mutex(i);
        i += 1;
    }
    let mut i = 0;
    while i < BORROW_SLOTS {
        all[2 + CLAIM_SLOTS + i] = borrow_mutex(i);
        i += 1;
    }
    all
};
/// Where the ring starts.
pub(crate) const RING_OFFSET: usize = HEADER_SIZE + size_of::<Control>();

const _: () = assert!(HEADER_SIZE % LINE == 0);
const _: () = assert!(size_of::<MutexBytes>() == raw::ROBUST_MUTEX_SIZE);

/// The smallest ring: one record of up to 56 bytes.
pub(crate) const MIN_CAPACITY: usize = 64;
/// The largest ring: ring offsets are 32-bit, beside a 32-bit count in one
/// 64-bit word that a put or a get stores in one go.
pub(crate) const MAX_CAPACITY: usize = u32::MAX as usize & !7;

/// What a queue is created with, or expected to be on open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    pub(crate) kind: Kind,
    pub(crate) type_name: &'static str,
}

impl Spec {
    /// The object the queue is: the item type's name is what open checks;
    /// the ring is `capacity` bytes after the control block.
    pub(crate) fn object(&self) -> raw::Spec {
        raw::Spec::new(
            self.kind,
            self.type_name,
            1,
            8,
            RING_OFFSET - HEADER_SIZE,
            &MUTEXES,
        )
    }
}

/// The parameters a validated queue was made with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub(crate) capacity: usize,
    pub(crate) maxsize: usize,
}

pub(crate) const TOO_LARGE: &str = "the queue capacity is too large (at most 4 GiB - 8)";

/// Rounds a requested capacity up to a multiple of 8, at least
/// [`MIN_CAPACITY`] and at most [`MAX_CAPACITY`].
pub(crate) fn round_capacity(capacity: usize) -> Result<usize> {
    capacity
        .max(MIN_CAPACITY)
        .checked_next_multiple_of(8)
        .filter(|&c| c <= MAX_CAPACITY)
        .ok_or(Error::InvalidArgument(TOO_LARGE))
}
// A chain's recovery walks either kind of slot with one array.
const _: () = assert!(BORROW_SLOTS == CLAIM_SLOTS);
