//! The one unsafe step of ipc-queue: naming the robust mutex inside a
//! queue's segment.

use ipc_shm::raw::RobustMutexRef;
use ipc_shm::SharedMemory;

use crate::layout::MUTEX_OFFSET;

/// The queue's robust mutex.
///
/// Only called on a segment whose layout header was written by
/// [`crate::layout`] (which initialises the mutex before publishing the
/// header) and checked on open.
#[allow(unsafe_code)]
pub(crate) fn mutex(shm: &SharedMemory) -> RobustMutexRef<'_> {
    // SAFETY: every `Core` holds a segment whose header was validated
    // (`layout::validate`) or that it created itself (`layout::create`
    // runs `init_robust_mutex` at MUTEX_OFFSET before publishing the
    // header), so MUTEX_OFFSET holds an initialised robust mutex.
    unsafe { RobustMutexRef::at(shm, MUTEX_OFFSET) }
}
