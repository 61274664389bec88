//! The one unsafe step of ipc-queue: reaching the control block and the
//! robust mutexes inside a queue's segment.

use ipc_shm::raw::{RobustMutexRef, HEADER_SIZE};
use ipc_shm::SharedMemory;

use crate::layout::{Control, CONSUMER_MUTEX, PRODUCER_MUTEX, RING_OFFSET};

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
