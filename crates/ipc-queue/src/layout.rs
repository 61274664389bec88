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
}

pub(crate) const PRODUCER_MUTEX: usize = HEADER_SIZE + offset_of!(Control, producer_mutex);
pub(crate) const CONSUMER_MUTEX: usize = HEADER_SIZE + offset_of!(Control, consumer_mutex);
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
            &[PRODUCER_MUTEX, CONSUMER_MUTEX],
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
