//! The one unsafe step of ipc-queue: naming the robust mutexes inside a
//! queue's segment.

use ipc_shm::raw::RobustMutexRef;
use ipc_shm::SharedMemory;

use crate::layout::{CONSUMER_MUTEX, PRODUCER_MUTEX};

/// Which of the queue's two robust mutexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The producers' mutex, guarding the tail.
    Tail,
    /// The consumers' mutex, guarding the head.
    Head,
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
    // SAFETY: every `Core` holds a segment whose header was validated
    // (`layout::validate`) or that it created itself (`layout::create`
    // runs `init_robust_mutex` at PRODUCER_MUTEX and CONSUMER_MUTEX before
    // publishing the header), so both offsets hold initialised robust
    // mutexes.
    unsafe { RobustMutexRef::at(shm, offset) }
}
