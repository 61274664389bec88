//! Futex wait and wake on a 32-bit word in shared memory, through rustix's
//! `futex::wait(&AtomicU32, ..)` and `futex::wake(&AtomicU32, ..)`.
//! The word may be mapped by several processes, so these never use
//! `FUTEX_PRIVATE_FLAG` (rustix's `Flags::PRIVATE`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex::{self, Flags, Timespec, Wait, WaitFlags, WaitPtr, WaitvFlags};
use rustix::time::ClockId;

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
    // A relative timeout, measured on CLOCK_MONOTONIC; one too long for a
    // timespec is as good as none.
    let ts = timeout.map(|t| {
        Timespec::try_from(t).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    // Shared (no `Flags::PRIVATE`): the word may be mapped by other processes.
    match futex::wait(word, Flags::empty(), expected, ts.as_ref()) {
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        // Ok, EAGAIN (the word changed), EINTR: the caller re-checks.
        _ => Wake::Woken,
    }
}

/// Wakes up to `n` waiters sleeping on `word`; returns how many woke.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    // The kernel reads the count as an int.
    let n = n.min(i32::MAX as u32);
    // Shared, as in `wait`; an error (none is expected) woke nobody.
    futex::wake(word, Flags::empty(), n).unwrap_or(0)
}

/// Wakes every waiter sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// Set once the kernel said it has no `futex_waitv` (Linux before 5.16).
static NO_WAITV: AtomicBool = AtomicBool::new(false);

/// Sleeps while `a` holds `a_expected` and `b` holds `b_expected`, until a
/// wake on either word or `timeout` (`futex_waitv`). `None` on a kernel
/// without `futex_waitv`: the caller waits on one word instead.
pub(crate) fn wait_either(
    a: &AtomicU32,
    a_expected: u32,
    b: &AtomicU32,
    b_expected: u32,
    timeout: Duration,
) -> Option<Wake> {
    if NO_WAITV.load(Ordering::Relaxed) {
        return None;
    }
    let word = |atomic: &AtomicU32, expected: u32| {
        let mut wait = Wait::new();
        wait.val = u64::from(expected);
        wait.uaddr = WaitPtr::new(atomic.as_ptr().cast());
        // Shared (no `WaitFlags::PRIVATE`), as in `wait`.
        wait.flags = WaitFlags::SIZE_U32;
        wait
    };
    // `futex_waitv` takes an absolute time on the clock it is given.
    let now = rustix::time::clock_gettime(ClockId::Monotonic);
    let end = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).saturating_add(timeout);
    let end = Timespec {
        tv_sec: i64::try_from(end.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(end.subsec_nanos()),
    };
    match futex::waitv(
        &[word(a, a_expected), word(b, b_expected)],
        WaitvFlags::empty(),
        Some(&end),
        ClockId::Monotonic,
    ) {
        Err(Errno::NOSYS) => {
            NO_WAITV.store(true, Ordering::Relaxed);
            None
        }
        Err(Errno::TIMEDOUT) => Some(Wake::TimedOut),
        // Woken on either word, EAGAIN (a word changed), EINTR: re-check.
        _ => Some(Wake::Woken),
    }
}

/// How a [`wait_any`] ended.
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Any {
    /// A wake on the word at this index.
    Woken(usize),
    /// Some word did not hold its value when the kernel looked.
    Changed,
    /// A signal interrupted the wait.
    Interrupted,
    /// The timeout ran out.
    TimedOut,
}

/// Sleeps while every word (an address and the value it should hold)
/// holds its value, until a wake on one of them or `timeout`
/// (`futex_waitv`, at most 128 words). `None` on a kernel without
/// `futex_waitv`. The addresses are only read by the kernel: one that is
/// not mapped fails the call (`EFAULT`, reported as `Changed`).
#[cfg(feature = "tokio")]
pub(crate) fn wait_any(words: &[(usize, u32)], timeout: Duration) -> Option<Any> {
    if NO_WAITV.load(Ordering::Relaxed) {
        return None;
    }
    let waits: Vec<Wait> = words
        .iter()
        .map(|&(address, expected)| {
            let mut wait = Wait::new();
            wait.val = u64::from(expected);
            wait.uaddr = WaitPtr::new(address as *mut std::ffi::c_void);
            // Shared (no `WaitFlags::PRIVATE`), as in `wait`.
            wait.flags = WaitFlags::SIZE_U32;
            wait
        })
        .collect();
    let now = rustix::time::clock_gettime(ClockId::Monotonic);
    let end = Duration::new(now.tv_sec as u64, now.tv_nsec as u32).saturating_add(timeout);
    let end = Timespec {
        tv_sec: i64::try_from(end.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(end.subsec_nanos()),
    };
    match futex::waitv(&waits, WaitvFlags::empty(), Some(&end), ClockId::Monotonic) {
        Ok(index) => Some(Any::Woken(index)),
        Err(Errno::NOSYS) => {
            NO_WAITV.store(true, Ordering::Relaxed);
            None
        }
        Err(Errno::TIMEDOUT) => Some(Any::TimedOut),
        Err(Errno::INTR) => Some(Any::Interrupted),
        Err(_) => Some(Any::Changed),
    }
}

/// Whether the word at `address` no longer holds `expected`, asked of the
/// kernel (a `futex_waitv` on that word alone with a deadline already
/// passed), so that nothing in this process reads the address: one that
/// is no longer mapped (a future leaked with `mem::forget` outlived its
/// word) counts as changed instead of faulting.
#[cfg(feature = "tokio")]
pub(crate) fn differs(address: usize, expected: u32) -> bool {
    let mut wait = Wait::new();
    wait.val = u64::from(expected);
    wait.uaddr = WaitPtr::new(address as *mut std::ffi::c_void);
    wait.flags = WaitFlags::SIZE_U32;
    let passed = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match futex::waitv(
        &[wait],
        WaitvFlags::empty(),
        Some(&passed),
        ClockId::Monotonic,
    ) {
        Err(Errno::TIMEDOUT) => false,
        // EAGAIN: it changed; EFAULT: not mapped; a wake: look again.
        _ => true,
    }
}

/// The `'static` reference behind `pointer`.
///
/// Contract: `pointer` is null or comes from `Box::leak` (it is never
/// freed), as the watcher pointer of `crate::watch` does.
#[cfg(feature = "tokio")]
pub(crate) fn leaked<T>(pointer: *mut T) -> Option<&'static T> {
    // SAFETY: by this function's contract a non-null pointer is a leaked
    // box: valid, initialised and never freed or mutably borrowed again.
    unsafe { pointer.as_ref() }
}
