//! Futex wait and wake on a 32-bit word in shared memory, as rustix shapes
//! them: `wait(&AtomicU32, expected, timeout)` and `wake(&AtomicU32, n)`.
//! The word may be mapped by several processes, so these never use
//! `FUTEX_PRIVATE_FLAG`.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a [`wait`] ended. Every caller re-checks its condition, so a
/// spurious return is harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken by a `wake`, a signal or spuriously; or the word did not hold
    /// `expected` when the kernel looked.
    Woken,
    /// The timeout ran out.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, at most `timeout` (`None`: no
/// limit). A blocked waiter uses no CPU.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned 32-bit atomic for the duration of the
    // call (the reference guarantees it); FUTEX_WAIT only reads it and
    // compares it with `expected` atomically in the kernel. `ts_ptr` is null
    // or points at a timespec that outlives the call (a relative timeout,
    // measured on CLOCK_MONOTONIC).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        Wake::TimedOut
    } else {
        // 0, EAGAIN (the word changed), EINTR: the caller re-checks.
        Wake::Woken
    }
}

/// Wakes up to `n` waiters sleeping on `word`; returns how many woke.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key to find
    // sleepers; it reads no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    rc.max(0) as usize
}

/// Wakes every waiter sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
