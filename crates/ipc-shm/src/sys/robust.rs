//! The per-thread and per-process machinery under [`RobustMutex`]: the
//! calling thread's id, its kernel robust-futex list (shared with glibc), and
//! the asymmetric barrier that lets an uncontended unlock be a plain store.
//!
//! # The robust list
//!
//! The kernel keeps, per thread, a pointer to a user-space list of the
//! futexes the thread holds (`set_robust_list(2)`). When the thread dies it
//! walks the list and, for every futex word whose owner field is the dead
//! thread's id, sets `FUTEX_OWNER_DIED` and wakes one waiter. A thread has
//! one list head and glibc owns it (it registers the head when the thread
//! starts, for its own robust pthread mutexes), so our mutexes link
//! themselves into glibc's list using glibc's own entry layout: a
//! doubly-linked `{prev, next}` pair with the futex word 32 bytes before
//! `next` (the `futex_offset` the head declares, checked at run time). glibc
//! and this module only ever touch the list from the owning thread.
//!
//! # The asymmetric barrier
//!
//! A waiter announces itself (a sleeper count in the mutex) and then reads
//! the lock word; the unlocker writes the lock word and then reads the
//! sleeper count. That is Dekker's pattern: without a full barrier on both
//! sides, both may miss the other and the waiter sleeps through the unlock.
//! The unlock is the hot path, so its barrier is moved to the waiter:
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` makes every CPU that runs a
//! thread of a registered process execute a full barrier before it returns,
//! which is what the unlocker's missing fence would have done. A process
//! registers before its first lock; where the kernel refuses, its unlocks
//! use an atomic swap instead, and waiters also re-check on a timer.
//!
//! [`RobustMutex`]: super::mutex::RobustMutex

use std::cell::Cell;
use std::io;
use std::ptr;
use std::sync::atomic::{compiler_fence, fence, AtomicI32, AtomicU64, AtomicU8, Ordering};

use rustix::thread::{gettid, membarrier, MembarrierCommand};

/// The kernel's `struct robust_list_head`, as glibc keeps it per thread.
#[repr(C)]
pub(crate) struct RobustListHead {
    /// The first entry (the address of its `next` field), or the head itself
    /// when the list is empty. Bit 0 tags a priority-inheritance entry.
    list: usize,
    /// Where an entry's futex word is, relative to the entry.
    futex_offset: isize,
    /// An entry being locked or unlocked right now, which the kernel also
    /// checks at the thread's death.
    list_op_pending: usize,
}

/// The `futex_offset` our mutex layout needs (and glibc's pthread mutex
/// has): the futex word is 32 bytes before the list entry.
pub(crate) const FUTEX_OFFSET: isize = -32;

/// What the calling thread needs to lock: its id and its robust list head.
#[derive(Clone, Copy)]
pub(crate) struct Me {
    pub(crate) tid: u32,
    head: *mut RobustListHead,
}

/// How many held mutexes a thread keeps a private record of.
const HELD_SLOTS: usize = 8;

struct ThreadState {
    /// 0 until the first lock of this thread (and again in a forked child).
    tid: Cell<u32>,
    head: Cell<*mut RobustListHead>,
    /// The list entries of the mutexes this thread holds, the first
    /// `HELD_SLOTS` of them. The lock word in shared memory can be forged
    /// by any process that maps it; this record cannot, and unlinking an
    /// entry this thread never linked would write through links that
    /// process chose.
    held: [Cell<usize>; HELD_SLOTS],
    held_len: Cell<usize>,
    /// Mutexes held beyond the slots, for which the lock word is trusted.
    held_unrecorded: Cell<usize>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            tid: Cell::new(0),
            head: Cell::new(ptr::null_mut()),
            held: [const { Cell::new(0) }; HELD_SLOTS],
            held_len: Cell::new(0),
            held_unrecorded: Cell::new(0),
        }
    };
}

/// Records that the calling thread has just locked the mutex whose list
/// entry is `entry`.
#[inline]
pub(crate) fn note_held(entry: usize) {
    THREAD.with(|t| {
        let n = t.held_len.get();
        if n < HELD_SLOTS {
            t.held[n].set(entry);
            t.held_len.set(n + 1);
        } else {
            t.held_unrecorded.set(t.held_unrecorded.get() + 1);
        }
    });
}

/// Whether the calling thread's record says it holds the mutex of `entry`
/// (true as well when it holds more than the record keeps, and cannot
/// tell).
#[inline]
pub(crate) fn holds(entry: usize) -> bool {
    THREAD.with(|t| {
        let n = t.held_len.get();
        // Newest first: locks are mostly released in reverse order.
        (0..n).rev().any(|i| t.held[i].get() == entry) || t.held_unrecorded.get() > 0
    })
}

/// Whether the calling thread's record names the mutex of `entry` (false
/// for one held beyond what the record keeps).
#[inline]
pub(crate) fn recorded(entry: usize) -> bool {
    THREAD.with(|t| (0..t.held_len.get()).any(|i| t.held[i].get() == entry))
}

/// Forgets the mutex of `entry`, which the calling thread is unlocking.
#[inline]
pub(crate) fn note_released(entry: usize) {
    THREAD.with(|t| {
        let n = t.held_len.get();
        match (0..n).rev().find(|&i| t.held[i].get() == entry) {
            Some(i) => {
                t.held[i].set(t.held[n - 1].get());
                t.held_len.set(n - 1);
            }
            None => t
                .held_unrecorded
                .set(t.held_unrecorded.get().saturating_sub(1)),
        }
    });
}

/// How this process's unlocks publish the free lock word.
static UNLOCK_MODE: AtomicU8 = AtomicU8::new(MODE_UNKNOWN);
const MODE_UNKNOWN: u8 = 0;
/// Registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: a plain store.
const MODE_PLAIN: u8 = 1;
/// No membarrier: an atomic swap, a full barrier by itself.
const MODE_FENCED: u8 = 2;

/// Whether this process registered [`forget_after_fork`]: [`UNREGISTERED`],
/// [`REGISTERED`], or `pid << 1 | 1` while process `pid` registers it (see
/// [`register_at_fork`]).
static AT_FORK: AtomicU64 = AtomicU64::new(UNREGISTERED);
/// What `pthread_atfork` returned, once [`AT_FORK`] says it was called.
static AT_FORK_RC: AtomicI32 = AtomicI32::new(0);
const UNREGISTERED: u64 = 0;
const REGISTERED: u64 = 2;

/// The calling thread's id and robust list, set up on its first call.
#[inline]
pub(crate) fn me() -> io::Result<Me> {
    me_if_known().map_or_else(me_first, Ok)
}

/// The calling thread's id if it has ever locked (a thread that has not
/// cannot hold a lock).
#[inline]
pub(crate) fn me_if_known() -> Option<Me> {
    let (tid, head) = THREAD.with(|t| (t.tid.get(), t.head.get()));
    (tid != 0).then_some(Me { tid, head })
}

#[cold]
fn me_first() -> io::Result<Me> {
    let at_fork = register_at_fork(&AT_FORK, &AT_FORK_RC, std::process::id(), || {
        // SAFETY: `forget_after_fork` is an `extern "C" fn()` that only
        // touches a const thread-local and atomics, all fine in a freshly
        // forked child.
        unsafe { libc::pthread_atfork(None, None, Some(forget_after_fork)) }
    });
    if at_fork != 0 {
        // Without the handler a forked child would lock with its parent's
        // thread id.
        return Err(io::Error::from_raw_os_error(at_fork));
    }
    if UNLOCK_MODE.load(Ordering::Acquire) == MODE_UNKNOWN {
        let registered = membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
        let mode = if registered { MODE_PLAIN } else { MODE_FENCED };
        // Only after the registration returned may an unlock be a plain store.
        UNLOCK_MODE.store(mode, Ordering::Release);
    }
    let mut head: *mut RobustListHead = ptr::null_mut();
    let mut len: libc::size_t = 0;
    // Raw: rustix has no wrapper for get_robust_list.
    // SAFETY: pid 0 is the calling thread; the kernel writes one pointer and
    // one size into the two out-parameters, which are valid for writes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut *mut RobustListHead,
            &mut len as *mut libc::size_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("robust futex lists are not available here (get_robust_list: {e})"),
        ));
    }
    // SAFETY: a registered head is the thread's live `robust_list_head`
    // (glibc's, inside its thread descriptor), readable for `len` bytes.
    let futex_offset = (!head.is_null() && len == std::mem::size_of::<RobustListHead>())
        .then(|| unsafe { ptr::read_volatile(ptr::addr_of!((*head).futex_offset)) });
    if futex_offset != Some(FUTEX_OFFSET) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this thread has no robust futex list in the layout of glibc's (set_robust_list)",
        ));
    }
    let tid = gettid().as_raw_pid() as u32;
    THREAD.with(|t| {
        t.head.set(head);
        t.tid.set(tid);
    });
    Ok(Me { tid, head })
}

/// How many forks this process descends from since the first lock: the
/// generation a lock was taken in, for holders that must know whether
/// they are still in the process that took it.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// This process's generation: it changes in a forked child (once any
/// thread of the parent has locked a robust mutex, which registers the
/// handler that counts).
#[inline]
pub(crate) fn fork_generation() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// Calls `register` once per process (`pid`), recording in `state` and
/// `rc` that it did and what it returned; gives that. Not a `Once`: a
/// thread that forks while another thread of its process is inside
/// `register` leaves the child a `Once` marked running by a thread the
/// child does not have, and the child's first lock waited for it forever
/// (seen as a rare hang of a test that forks from a multi-threaded test
/// harness). A registration marked with another process's id is such a
/// leftover, and this process makes its own (`pthread_atfork` twice is
/// harmless: the handler only resets what a child must not inherit).
fn register_at_fork(
    state: &AtomicU64,
    rc: &AtomicI32,
    pid: u32,
    register: impl FnOnce() -> libc::c_int,
) -> libc::c_int {
    let mine = u64::from(pid) << 1 | 1;
    let mut register = Some(register);
    loop {
        let seen = state.load(Ordering::Acquire);
        if seen == REGISTERED {
            return rc.load(Ordering::Relaxed);
        }
        let stale = seen == UNREGISTERED || (seen != mine && seen & 1 == 1);
        if !stale {
            // Another thread of this process is registering: it is quick.
            std::thread::yield_now();
            continue;
        }
        if state
            .compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let done = register.take().map_or(0, |register| register());
            rc.store(done, Ordering::Relaxed);
            state.store(REGISTERED, Ordering::Release);
            return done;
        }
    }
}

/// In a forked child: the thread has a new id, and the process a new
/// registration to make.
extern "C" fn forget_after_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    THREAD.with(|t| {
        t.tid.set(0);
        // glibc empties the child's robust list: it holds nothing.
        t.held_len.set(0);
        t.held_unrecorded.set(0);
    });
    UNLOCK_MODE.store(MODE_UNKNOWN, Ordering::Release);
}

impl Me {
    /// Tells the kernel that `entry` is being locked or unlocked: if the
    /// thread dies before [`op_done`](Self::op_done), the kernel treats it
    /// as a held entry.
    #[inline]
    pub(crate) fn op_pending(self, entry: usize) {
        // SAFETY: `head` is this thread's live robust list head (see
        // `me_first`), written only by this thread.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*self.head).list_op_pending), entry) };
        compiler_fence(Ordering::SeqCst);
    }

    /// Ends what [`op_pending`](Self::op_pending) began.
    #[inline]
    pub(crate) fn op_done(self) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: as in `op_pending`.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*self.head).list_op_pending), 0) };
    }

    /// Links the entry whose `prev` and `next` fields are given at the front
    /// of the thread's robust list, as glibc links a robust mutex.
    ///
    /// # Safety
    ///
    /// `prev` and `next` are the fields of a mutex this thread has just
    /// locked, in a mapping that stays mapped while it is held, with the
    /// futex word [`FUTEX_OFFSET`] bytes from `next`.
    #[inline]
    pub(crate) unsafe fn link(self, prev: *mut usize, next: *mut usize) {
        let head = self.head;
        // SAFETY: `head` is this thread's head; its `list` is the head itself
        // or the `next` field of an entry this thread holds, and 8 bytes
        // before any of those is the matching `prev` slot (glibc keeps one
        // before its head too). Only this thread writes these while the
        // entries are held.
        unsafe {
            let first = ptr::read_volatile(ptr::addr_of!((*head).list));
            ptr::write_volatile(next, first);
            ptr::write_volatile(prev, head as usize);
            let first_prev = ((first & !1) as *mut usize).wrapping_sub(1);
            ptr::write_volatile(first_prev, next as usize);
            compiler_fence(Ordering::SeqCst);
            ptr::write_volatile(ptr::addr_of_mut!((*head).list), next as usize);
        }
    }

    /// Takes the entry out of the thread's robust list, wherever it is.
    ///
    /// # Safety
    ///
    /// The entry was [`link`](Self::link)ed by this thread and is still
    /// held; the neighbours its fields point at are entries of this thread's
    /// list (or its head), as glibc and `link` keep them.
    #[inline]
    pub(crate) unsafe fn unlink(self, prev: *mut usize, next: *mut usize) {
        // SAFETY: per the contract, the links lead to this thread's own list
        // entries, each with a `prev` slot 8 bytes before its `next`.
        unsafe {
            let after = ptr::read_volatile(next);
            let before = ptr::read_volatile(prev);
            let after_prev = ((after & !1) as *mut usize).wrapping_sub(1);
            ptr::write_volatile(after_prev, before);
            compiler_fence(Ordering::SeqCst);
            ptr::write_volatile((before & !1) as *mut usize, after);
        }
    }
}

/// Whether this process's unlocks may publish with a plain store (see the
/// module docs). Only true once this process registered.
#[inline]
pub(crate) fn plain_unlock() -> bool {
    UNLOCK_MODE.load(Ordering::Relaxed) == MODE_PLAIN
}

/// The waiter's half of the asymmetric barrier: after it, every unlock
/// either saw what the waiter stored before it or is visible to the waiter.
/// Where the kernel refuses (this process could not register either), only
/// unlocks of processes without membarrier are covered, which swap; the
/// waiter's periodic look covers the others.
pub(crate) fn heavy_barrier() {
    fence(Ordering::SeqCst);
    if plain_unlock() {
        // Supported here: this process registered (`plain_unlock`).
        let _ = membarrier(MembarrierCommand::GlobalExpedited);
        fence(Ordering::SeqCst);
    }
}

/// Whether `tid` is a thread of this process: a null signal sent with
/// `tgkill`, which checks the thread group (no `/proc` needed).
pub(crate) fn thread_of_this_process(tid: u32) -> bool {
    let Ok(tid) = libc::pid_t::try_from(tid) else {
        return false;
    };
    // Raw: rustix has no wrapper for tgkill.
    // SAFETY: signal 0 is delivered to nobody; the call only checks that
    // the thread exists in our thread group.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fork_handler_is_registered_once_and_a_registration_left_by_a_parent_is_redone() {
        let (state, rc) = (AtomicU64::new(UNREGISTERED), AtomicI32::new(0));
        let mut calls = 0;
        assert_eq!(
            register_at_fork(&state, &rc, 7, || {
                calls += 1;
                0
            }),
            0
        );
        assert_eq!(
            register_at_fork(&state, &rc, 7, || {
                calls += 1;
                0
            }),
            0
        );
        assert_eq!((calls, state.load(Ordering::Relaxed)), (1, REGISTERED));
        // A child forked while its parent (pid 7) was registering: the
        // parent's thread is not there to finish, so the child registers.
        state.store(7 << 1 | 1, Ordering::Relaxed);
        assert_eq!(
            register_at_fork(&state, &rc, 8, || {
                calls += 1;
                22
            }),
            22
        );
        assert_eq!(register_at_fork(&state, &rc, 8, || unreachable!()), 22);
        assert_eq!(calls, 2);
    }
}
