//! The one unsafe step of ipc-queue: reaching the control block and the
//! robust mutexes inside a queue's segment.

use ipc_shm::raw::{RobustMutexRef, HEADER_SIZE};
use ipc_shm::SharedMemory;

use crate::layout::{
    self, Control, BORROW_SLOTS, CLAIM_SLOTS, CONSUMER_MUTEX, PRODUCER_MUTEX, RING_OFFSET,
};

/// Which of the queue's two robust mutexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The producers' mutex, guarding the tail.
    Tail,
    /// The consumers' mutex, guarding the head.
    Head,
}

/// The control block of a queue's segment.
///
/// # Panics
///
/// If the segment is too small to hold one (never for a segment whose
/// header `layout` checked or wrote).
#[allow(unsafe_code)]
#[inline]
pub(crate) fn control(shm: &SharedMemory) -> &Control {
    assert!(
        shm.size() >= RING_OFFSET,
        "a queue segment holds a control block"
    );
    let p = shm.as_ptr().wrapping_add(HEADER_SIZE).cast::<Control>();
    // SAFETY: the block is inside the mapping (checked above), aligned (the
    // mapping starts on a page and HEADER_SIZE is a multiple of the block's
    // alignment, checked at compile time in `layout`), and the mapping
    // outlives the borrow of `shm`. `Control` is made of atomics only (and
    // padding): any bytes another process writes are valid values, and
    // atomics allow changes through a shared reference.
    unsafe { &*p }
}

/// One of the queue's robust mutexes.
///
/// Only called on a segment whose layout header was written by
/// [`crate::layout`] (which initialises the mutex before publishing the
/// header) and checked on open.
#[allow(unsafe_code)]
pub(crate) fn mutex(shm: &SharedMemory, end: End) -> RobustMutexRef<'_> {
    let offset = match end {
        End::Tail => PRODUCER_MUTEX,
        End::Head => CONSUMER_MUTEX,
    };
    // SAFETY: every `Core` holds a segment whose object header was validated
    // for a queue kind, or that it created itself; the object model
    // initialises the mutexes the queue's spec lists (PRODUCER_MUTEX and
    // CONSUMER_MUTEX) before publishing the header.
    unsafe { RobustMutexRef::at(shm, offset) }
}

/// The robust mutex of slot `i` of `end`'s chain (claims at the tail,
/// borrows at the head), which the slot's holder keeps while it writes or
/// reads its record.
///
/// # Panics
///
/// If `i` is not a slot's index.
#[allow(unsafe_code)]
pub(crate) fn slot_mutex(shm: &SharedMemory, end: End, i: usize) -> RobustMutexRef<'_> {
    let offset = match end {
        End::Tail => {
            assert!(i < CLAIM_SLOTS, "claim slot {i} of {CLAIM_SLOTS}");
            layout::claim_mutex(i)
        }
        End::Head => {
            assert!(i < BORROW_SLOTS, "borrow slot {i} of {BORROW_SLOTS}");
            layout::borrow_mutex(i)
        }
    };
    // SAFETY: as for `mutex`: the object model initialises every mutex the
    // queue's spec lists, and it lists each slot's (`layout::claim_mutex`,
    // `layout::borrow_mutex`).
    unsafe { RobustMutexRef::at(shm, offset) }
}

/// The `len` ring bytes at ring offset `off`, read in place.
///
/// # Safety
///
/// For as long as the slice lives, the caller owns these bytes, in this
/// process: it holds a borrow of a record between the head and the tail
/// (its slot's mutex: no putter writes before the head, which waits for
/// the borrow, and no other getter takes the record, which lies before the
/// consumers' frontier), or a claim on space past the tail (its
/// slot's mutex: no getter reads the space before the tail passes it,
/// which waits for the claim, and no other putter writes it, since claims
/// never overlap), and makes no `&mut` slice of them meanwhile.
///
/// # Panics
///
/// If the bytes are not inside the segment (the ring's checks keep every
/// record inside it).
#[allow(unsafe_code)]
pub(crate) unsafe fn ring_bytes(shm: &SharedMemory, off: u64, len: usize) -> &[u8] {
    let start = ring_range(shm, off, len);
    // SAFETY: the range is inside the mapping (checked above), which lives
    // as long as the borrow of `shm`; a `u8` has no invalid values; and by
    // the caller's lock no process of the queue's protocol writes these
    // bytes while the slice lives.
    unsafe { std::slice::from_raw_parts(shm.as_ptr().add(start), len) }
}

/// The `len` ring bytes at ring offset `off`, written in place.
///
/// # Safety
///
/// For as long as the slice lives, the caller holds a claim on these
/// bytes, past the tail (see [`ring_bytes`]), and makes no other slice of
/// them.
///
/// # Panics
///
/// If the bytes are not inside the segment.
#[allow(unsafe_code, clippy::mut_from_ref)]
pub(crate) unsafe fn ring_bytes_mut(shm: &SharedMemory, off: u64, len: usize) -> &mut [u8] {
    let start = ring_range(shm, off, len);
    // SAFETY: as for `ring_bytes`, and the caller's reservation makes this
    // the only slice of these bytes in any process of the protocol.
    unsafe { std::slice::from_raw_parts_mut(shm.as_ptr().add(start), len) }
}

/// Where ring bytes `off..off + len` start in the segment, checked to lie
/// inside it.
fn ring_range(shm: &SharedMemory, off: u64, len: usize) -> usize {
    let start = usize::try_from(off)
        .ok()
        .and_then(|off| off.checked_add(RING_OFFSET));
    match start {
        Some(start) if start.checked_add(len).is_some_and(|end| end <= shm.size()) => start,
        _ => panic!("ring bytes {off}+{len} outside a segment of {}", shm.size()),
    }
}
