//! The robust, process-shared mutex that every lock of this crate is built
//! on, and the guard that hands out `&mut` access to the data it protects.
//!
//! The mutex is a futex word in the kernel's robust-futex format (the
//! holder's thread id, or `FUTEX_OWNER_DIED`) linked into the holder's
//! robust list while held (see `robust`), so that when a holder dies the
//! kernel marks the word. The next locker takes the lock over at once and
//! records the death in our own `inconsistent` word beside it: until a
//! holder marks the data consistent, every locker is told that a previous
//! owner died. The lock itself never becomes unusable.
//!
//! An uncontended lock is one compare-and-swap; an uncontended unlock is a
//! plain store and a load of the sleeper count (the barrier it would need is
//! paid by waiters instead, see `robust`). A contended locker spins briefly,
//! then counts itself among the sleepers and sleeps on a separate wake-up
//! sequence word as well as the lock word (`futex_waitv`): unlocks wake
//! sleepers through the sequence word, since a holder that unlocks and
//! locks again in a loop changes the lock word every few nanoseconds, which
//! would send a sleeper that waited for a change of it back round its loop
//! instead of to sleep. The lock word is for the kernel: a sleeper sets
//! `FUTEX_WAITERS` in it, and when the holder dies the kernel marks the word
//! and, seeing that bit, wakes a sleeper on it at once. An unlock wakes two
//! sleepers (so one stopped by SIGSTOP or a debugger before it looks does
//! not hold the others up), and the next unlocks leave the rest alone until
//! one of them has looked at the lock (`waking`). Sleepers also look at the
//! word every [`NAP`], which only matters on kernels without `futex_waitv`
//! (before 5.16), where a death is noticed that way.
//!
//! Every word is an atomic, so bytes in the segment, however garbled, can
//! make a lock misbehave (stay held, report a death) but not this code; the
//! mutex kind is checked on each lock, and whether this thread holds a
//! mutex is decided by a private per-thread record, not by the word alone.
//! The list links are the exception: like glibc's for a robust pthread
//! mutex, they are trusted while this thread holds the lock (and, for a
//! thread holding more than eight at once, the word is trusted for the
//! rest), so a process that can write the segment while a thread holds the
//! lock can make that thread's unlock write where it chooses.

use std::fmt;
use std::hint;
use std::io;
use std::marker::PhantomData;
use std::mem::{offset_of, size_of, ManuallyDrop};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytemuck::Pod;
use ipc_core::Deadline;

use super::futex;
use super::map::Mapping;
use super::robust::{self, Me, FUTEX_OFFSET};

/// The bytes reserved for a [`RobustMutex`] in a segment's layout.
pub(crate) const MUTEX_AREA: usize = 64;

const _: () = assert!(size_of::<RobustMutex>() <= MUTEX_AREA);
// The kernel finds the futex word from the list entry through the offset
// glibc declares in the list head; glibc's entries have their `prev` slot
// right before `next`.
const _: () = assert!(
    offset_of!(RobustMutex, word) as isize - offset_of!(RobustMutex, next) as isize == FUTEX_OFFSET
);
const _: () = assert!(offset_of!(RobustMutex, prev) + 8 == offset_of!(RobustMutex, next));

// The kernel's robust-futex word format (<linux/futex.h>): the holder's
// thread id, FUTEX_OWNER_DIED set by the kernel when it dies, and
// FUTEX_WAITERS, set by sleepers so that the kernel then wakes one of them
// (sleepers wait on the lock word and the wake-up sequence at once).
const TID_MASK: u32 = 0x3fff_ffff;
const OWNER_DIED: u32 = rustix::thread::futex::OWNER_DIED;
const WAITERS: u32 = rustix::thread::futex::WAITERS;
const _: () = assert!(TID_MASK & (OWNER_DIED | WAITERS) == 0);

/// The `kind` word of an initialised mutex: a tag and the kind, so that
/// bytes that were never initialised are refused.
const KIND_ERROR_CHECK: u32 = 0x4d58_0001;
const KIND_RECURSIVE: u32 = 0x4d58_0002;

/// How many times a contended locker looks at the word before it sleeps.
/// Few: a spinner pulls the lock's cache line away from the holder each
/// time it looks, and two processes incrementing a `Value` in a loop went
/// from 39 M/s at 10 looks to 8 M/s at 50 (`cargo xtask bench --bench
/// shm-increments-2p`), while a sleeper costs the holder one wake-up per
/// round.
const SPINS: u32 = 10;

/// The longest a sleeper sleeps before it looks at the lock word again.
/// Wake-ups from unlocks and from the kernel at a holder's death do not
/// depend on it; it is how soon a sleeper notices a holder that died on a
/// kernel without `futex_waitv`, or, in a process that could not register
/// for membarrier, an unlock in another process that did and so did not
/// see it.
const NAP: Duration = Duration::from_millis(10);

/// A robust, process-shared mutex in shared memory, with a word that says
/// whether the data it guards is marked inconsistent.
#[repr(C)]
pub(crate) struct RobustMutex {
    /// 0 when free, the holder's thread id, or `OWNER_DIED` once the kernel
    /// saw the holder die.
    word: AtomicU32,
    /// How many times the holder took a recursive mutex.
    depth: AtomicU32,
    /// Waiters that may sleep: an unlock that sees one wakes one.
    sleepers: AtomicU32,
    /// `KIND_ERROR_CHECK` or `KIND_RECURSIVE`.
    kind: AtomicU32,
    /// 1 from the moment a locker learns that a holder died until a holder
    /// marks the data consistent.
    inconsistent: AtomicU32,
    /// 1 from an unlock's wake-up until a sleeper looks at the word again.
    waking: AtomicU32,
    /// The robust list entry, in glibc's layout; only the holder's thread
    /// (and the kernel when it dies) uses them.
    prev: AtomicUsize,
    next: AtomicUsize,
    /// What sleepers sleep on: bumped by each unlock that wakes one.
    wake_seq: AtomicU32,
}

/// What kind of mutex to initialise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MutexKind {
    /// Locking again from the owning thread is an error, unlocking from
    /// another thread is `EPERM` (Python's `Lock`, minus cross-thread
    /// release, which a robust mutex cannot do).
    ErrorCheck,
    /// The owning thread may lock again; each lock needs an unlock
    /// (Python's `RLock`).
    Recursive,
}

/// Why a lock call did not return the mutex.
#[derive(Debug)]
pub(crate) enum LockFailure {
    /// `Deadline::Now` and another thread or process holds it.
    WouldBlock,
    /// The deadline passed.
    TimedOut,
    /// This thread already holds it (an error-checking mutex).
    Deadlock,
    /// Anything else: bytes that are no mutex, a recursion too deep, a
    /// thread without a robust list.
    Other(io::Error),
}

impl Mapping {
    /// The robust mutex at `offset`.
    #[inline]
    pub(crate) fn mutex(&self, offset: usize) -> &RobustMutex {
        let p = self.checked::<RobustMutex>(offset, 1);
        // SAFETY: in bounds and aligned (checked above) and outlived by the
        // mapping. RobustMutex is made of atomics only, so mutation by other
        // processes through this shared reference is allowed, and any bytes
        // are a valid value (the mutex checks its kind word on each lock).
        unsafe { &*p }
    }

    /// Initialises a robust, process-shared mutex at `offset`.
    ///
    /// Takes `&mut self`: only the creator of a segment calls this, before
    /// publishing the segment's header, when nothing else in this process
    /// refers to the mapping and no other process touches the mutex (openers
    /// wait for the header).
    pub(crate) fn init_mutex(&mut self, offset: usize, kind: MutexKind) -> io::Result<()> {
        let mutex = self.mutex(offset);
        for word in [
            &mutex.word,
            &mutex.depth,
            &mutex.sleepers,
            &mutex.inconsistent,
            &mutex.waking,
            &mutex.wake_seq,
        ] {
            word.store(0, Ordering::Relaxed);
        }
        mutex.prev.store(0, Ordering::Relaxed);
        mutex.next.store(0, Ordering::Relaxed);
        let kind = match kind {
            MutexKind::ErrorCheck => KIND_ERROR_CHECK,
            MutexKind::Recursive => KIND_RECURSIVE,
        };
        // Published with the header that openers wait for.
        mutex.kind.store(kind, Ordering::Release);
        Ok(())
    }

    /// Locks the mutex at `mutex_offset` and returns a guard for the `T`
    /// at `data_offset`, and whether a previous owner died (or the data is
    /// still marked inconsistent).
    ///
    /// The caller is a locked object kind whose data is reached only
    /// through this guard (see the module invariants in `sys`).
    pub(crate) fn lock_data<T: Pod>(
        &self,
        mutex_offset: usize,
        data_offset: usize,
        deadline: Deadline,
    ) -> Result<(MutexGuard<'_, T>, bool), LockFailure> {
        // Bounds and alignment are checked before locking.
        let data = NonNull::new(self.checked::<T>(data_offset, 1))
            .expect("a mapping is never at address 0");
        let mutex = self.mutex(mutex_offset);
        let recovered = mutex.lock(deadline)?;
        Ok((MutexGuard::new(mutex, data), recovered))
    }

    /// Like [`lock_data`](Self::lock_data) for `len` values of `T`.
    pub(crate) fn lock_slice<T: Pod>(
        &self,
        mutex_offset: usize,
        data_offset: usize,
        len: usize,
        deadline: Deadline,
    ) -> Result<(MutexGuard<'_, [T]>, bool), LockFailure> {
        // Bounds and alignment of the whole slice are checked before locking.
        let first = NonNull::new(self.checked::<T>(data_offset, len))
            .expect("a mapping is never at address 0");
        let data = NonNull::slice_from_raw_parts(first, len);
        let mutex = self.mutex(mutex_offset);
        let recovered = mutex.lock(deadline)?;
        Ok((MutexGuard::new(mutex, data), recovered))
    }

    /// Locks the mutex at `mutex_offset` with no data behind it (a `Lock`,
    /// an `RLock`, a `Condition`).
    #[inline]
    pub(crate) fn lock_unit(
        &self,
        mutex_offset: usize,
        deadline: Deadline,
    ) -> Result<(MutexGuard<'_, ()>, bool), LockFailure> {
        let mutex = self.mutex(mutex_offset);
        let recovered = mutex.lock(deadline)?;
        Ok((MutexGuard::new(mutex, NonNull::dangling()), recovered))
    }
}

/// How a contended lock call ended without taking the mutex afresh.
enum NotFresh {
    /// A recursive mutex this thread already held: its depth went up.
    Again,
    Failed(LockFailure),
}

impl RobustMutex {
    /// The robust list entry, as the kernel's list links it.
    #[inline]
    fn entry(&self) -> usize {
        self.next.as_ptr() as usize
    }

    /// Whether the mutex is recursive; an error for bytes that are no
    /// initialised mutex.
    #[inline]
    fn recursive(&self) -> Result<bool, LockFailure> {
        match self.kind.load(Ordering::Relaxed) {
            KIND_ERROR_CHECK => Ok(false),
            KIND_RECURSIVE => Ok(true),
            _ => Err(LockFailure::Other(io::Error::new(
                io::ErrorKind::InvalidData,
                "the bytes of this lock are not an initialised ipc-shm mutex",
            ))),
        }
    }

    /// Locks; `Ok(true)` if a previous owner died or the data is still
    /// marked inconsistent.
    #[inline]
    pub(crate) fn lock(&self, deadline: Deadline) -> Result<bool, LockFailure> {
        let recursive = self.recursive()?;
        let me = robust::me().map_err(LockFailure::Other)?;
        me.op_pending(self.entry());
        let taken =
            match self
                .word
                .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => Ok(false),
                Err(seen) => self.lock_contended(me, seen, recursive, deadline),
            };
        let died = match taken {
            Ok(died) => died,
            Err(not_fresh) => {
                me.op_done();
                return match not_fresh {
                    NotFresh::Again => Ok(self.is_inconsistent()),
                    NotFresh::Failed(failure) => Err(failure),
                };
            }
        };
        if recursive {
            self.depth.store(1, Ordering::Relaxed);
        }
        // SAFETY: this thread has just locked the mutex, whose list fields
        // these are, with the futex word at FUTEX_OFFSET from `next` (checked
        // at compile time). The mapping stays mapped while the lock is held:
        // guards borrow it; an object dropped while a thread of this process
        // holds it without a guard stays mapped (`Object`'s drop); `raw`
        // users promise it (`RobustMutexRef::at`).
        unsafe { me.link(self.prev.as_ptr(), self.next.as_ptr()) };
        robust::note_held(self.entry());
        me.op_done();
        if died {
            self.inconsistent.store(1, Ordering::Release);
            return Ok(true);
        }
        Ok(self.is_inconsistent())
    }

    /// The lock word was `seen`, not 0: take the mutex again (recursive),
    /// over from a dead holder, after a spin, or after sleeping. `Ok(true)`
    /// if it is taken over from a dead holder.
    #[cold]
    fn lock_contended(
        &self,
        me: Me,
        mut seen: u32,
        recursive: bool,
        deadline: Deadline,
    ) -> Result<bool, NotFresh> {
        if seen & TID_MASK == me.tid {
            if !robust::holds(self.entry()) {
                return Err(NotFresh::Failed(LockFailure::Other(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the lock word names this thread, which does not hold the lock",
                ))));
            }
            if !recursive {
                return Err(NotFresh::Failed(match deadline {
                    Deadline::Now => LockFailure::WouldBlock,
                    Deadline::Never | Deadline::At(_) => LockFailure::Deadlock,
                }));
            }
            let depth = self.depth.load(Ordering::Relaxed);
            let Some(depth) = depth.checked_add(1) else {
                return Err(NotFresh::Failed(LockFailure::Other(io::Error::other(
                    "a recursive lock taken 2^32 - 1 times",
                ))));
            };
            self.depth.store(depth, Ordering::Relaxed);
            return Err(NotFresh::Again);
        }
        let spins = match deadline {
            Deadline::Now => 0,
            Deadline::Never | Deadline::At(_) => SPINS,
        };
        for _ in 0..=spins {
            if let Some(died) = self.take_if_free(me, seen, 0) {
                return Ok(died);
            }
            hint::spin_loop();
            seen = self.word.load(Ordering::Relaxed);
        }
        match deadline {
            Deadline::Now => return Err(NotFresh::Failed(LockFailure::WouldBlock)),
            Deadline::At(_) if deadline.has_passed() => {
                return Err(NotFresh::Failed(LockFailure::TimedOut))
            }
            Deadline::Never | Deadline::At(_) => {}
        }
        self.sleep_until_taken(me, deadline)
            .map_err(NotFresh::Failed)
    }

    /// Counts this thread among the sleepers and sleeps until the mutex is
    /// free, then takes it; `Ok(true)` if from a dead holder.
    fn sleep_until_taken(&self, me: Me, deadline: Deadline) -> Result<bool, LockFailure> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let taken = loop {
            let seq = self.wake_seq.load(Ordering::Acquire);
            // (Re-)arm: the next unlock that finds a sleeper counted and
            // `waking` clear sets it, bumps `wake_seq` and wakes one.
            self.waking.store(0, Ordering::SeqCst);
            // After this, that unlock either saw us armed or we see its store.
            robust::heavy_barrier();
            let seen = self.word.load(Ordering::Relaxed);
            // Counted among the sleepers ourselves: others sleep if more.
            if let Some(died) = self.take_if_free(me, seen, 1) {
                break Ok(died);
            }
            let Some(timeout) = deadline.slice(NAP) else {
                break Err(LockFailure::TimedOut);
            };
            // Held: mark the word so that the kernel, if the holder dies,
            // wakes a sleeper on it (the unlock's store of 0 clears the
            // mark with the rest of the word). Woken, timed out, or not
            // asleep at all (an unlock came between `seq` and here): re-arm
            // and look again.
            let armed = seen | WAITERS;
            let marked = seen == armed
                || self
                    .word
                    .compare_exchange(seen, armed, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            let both = marked
                .then(|| futex::wait_either(&self.wake_seq, seq, &self.word, armed, timeout))
                .flatten();
            // Without both: the word moved on (this round sleeps for the
            // next unlock only), or a kernel without `futex_waitv`.
            let woke = both.unwrap_or_else(|| futex::wait(&self.wake_seq, seq, Some(timeout)));
            if woke == futex::Wake::TimedOut {
                self.reap_vanished_holder();
            }
        };
        let others = self.sleepers.fetch_sub(1, Ordering::SeqCst) > 1;
        if taken.is_err() && others {
            // We may have taken the wake-up of an unlock meant for a
            // sleeper: pass it on.
            self.waking.store(1, Ordering::SeqCst);
            self.wake_sleeper();
        }
        taken
    }

    /// Unlocks; `EPERM` if this thread does not hold the mutex.
    ///
    /// Whether this thread holds it is decided by its private record, not
    /// by the word alone: if another process rewrote the word while this
    /// thread held the lock, the entry still comes off this thread's robust
    /// list (so neither the kernel nor a later lock follows links into a
    /// segment that may be unmapped by then), the word is left to whoever
    /// wrote it, and the unlock reports the forgery.
    ///
    /// Always inlined: out of line, the call costs the uncontended
    /// lock + unlock about a tenth (`cargo xtask bench --bench
    /// shm-lock-unlock`, 7.9 against 7.1 ns).
    #[inline(always)]
    pub(crate) fn unlock(&self) -> io::Result<()> {
        let entry = self.entry();
        let me = match robust::me_if_known() {
            Some(me)
                if self.word.load(Ordering::Relaxed) & TID_MASK == me.tid
                    && robust::holds(entry) =>
            {
                me
            }
            me => return self.unlock_not_ours(me, entry),
        };
        if self.kind.load(Ordering::Relaxed) == KIND_RECURSIVE {
            let depth = self.depth.load(Ordering::Relaxed);
            if depth > 1 {
                self.depth.store(depth - 1, Ordering::Relaxed);
                return Ok(());
            }
        }
        robust::note_released(entry);
        me.op_pending(entry);
        // SAFETY: this thread holds the mutex (its own record says so, not
        // only the shared word), so `lock` linked these fields into this
        // thread's robust list; only this thread (here or in glibc) changes
        // the links of held entries, unless another process scribbles on the
        // mutex while it is held (see the module docs).
        unsafe { me.unlink(self.prev.as_ptr(), self.next.as_ptr()) };
        if robust::plain_unlock() {
            self.word.store(0, Ordering::Release);
            // The load below must not move above the store in the compiled
            // code; the CPU may still reorder them, which the waiters'
            // membarrier covers (see `robust`).
            compiler_fence(Ordering::SeqCst);
        } else {
            self.word.swap(0, Ordering::SeqCst);
        }
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_one();
        }
        me.op_done();
        Ok(())
    }

    /// An unlock where the word and this thread's record disagree. If the
    /// record says this thread holds the mutex but the word names someone
    /// else, another process rewrote the word: the entry still comes off
    /// this thread's robust list (so neither the kernel nor a later lock
    /// follows links into a segment that may be unmapped by then), the word
    /// is left to whoever wrote it, and the forgery is reported. Otherwise
    /// this thread does not hold it: `EPERM`.
    #[cold]
    #[inline(never)]
    fn unlock_not_ours(&self, me: Option<Me>, entry: usize) -> io::Result<()> {
        let not_held = || Err(io::Error::from_raw_os_error(libc::EPERM));
        let Some(me) = me else {
            return not_held();
        };
        let named = self.word.load(Ordering::Relaxed) & TID_MASK == me.tid;
        if named || !robust::recorded(entry) {
            return not_held();
        }
        robust::note_released(entry);
        me.op_pending(entry);
        // SAFETY: this thread's private record says it locked this mutex,
        // so `lock` linked these fields into its robust list (the links are
        // trusted as in `unlock`; only the word was found rewritten).
        unsafe { me.unlink(self.prev.as_ptr(), self.next.as_ptr()) };
        me.op_done();
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "another process rewrote the word of a lock this thread held",
        ))
    }

    /// Wakes a sleeper, unless one was woken and has not looked at the
    /// word since (waking more would only make the unlocker pay a system
    /// call per unlock while the first one gets going).
    #[cold]
    fn wake_one(&self) {
        if self.waking.load(Ordering::Relaxed) == 0 && self.waking.swap(1, Ordering::Relaxed) == 0 {
            self.wake_sleeper();
        }
    }

    /// Bumps the sleepers' sequence word and wakes one sleeper on it.
    fn wake_sleeper(&self) {
        self.wake_seq.fetch_add(1, Ordering::Release);
        // Two, not one: if the first is stopped (SIGSTOP, a debugger)
        // before it looks at the lock, the second still does, instead of
        // every sleeper waiting for its nap.
        futex::wake(&self.wake_seq, 2);
    }

    /// Takes the mutex if the word, last seen as `seen`, says it is free
    /// (or free after its holder died), retrying while it stays free but
    /// changes under us. `Some(true)` if taken over from a dead holder,
    /// `None` if it is held.
    #[inline]
    fn take_if_free(&self, me: Me, mut seen: u32, counted: u32) -> Option<bool> {
        while seen & TID_MASK == 0 {
            // Others asleep: keep the mark that has the kernel wake one of
            // them if this thread dies holding the lock.
            let mark = if self.sleepers.load(Ordering::Relaxed) > counted {
                WAITERS
            } else {
                0
            };
            match self.word.compare_exchange(
                seen,
                me.tid | mark,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(seen & OWNER_DIED != 0),
                Err(now) => seen = now,
            }
        }
        None
    }

    /// After a nap with the mutex held all along: if the thread the word
    /// names does not exist, marks the word as the kernel marks a dead
    /// holder's, so that the next look takes the mutex over with
    /// `OwnerDied`. The kernel does that itself for a holder that dies; a
    /// word naming a thread that never held it (written by another process)
    /// would otherwise keep the mutex held for ever. Thread ids are looked
    /// up in this process's pid namespace: sharing locks with processes of
    /// another namespace is not supported.
    #[cold]
    fn reap_vanished_holder(&self) {
        let seen = self.word.load(Ordering::Relaxed);
        let tid = seen & TID_MASK;
        let Some(pid) = rustix::process::Pid::from_raw(tid as i32) else {
            return;
        };
        if rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH) {
            let _ = self.word.compare_exchange(
                seen,
                (seen & WAITERS) | OWNER_DIED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether the calling thread holds the mutex (by its own record, not
    /// only the shared word; never in a forked child of the holder).
    pub(crate) fn held_by_me(&self) -> bool {
        robust::me_if_known().is_some_and(|me| {
            self.word.load(Ordering::Relaxed) & TID_MASK == me.tid && robust::holds(self.entry())
        })
    }

    /// The thread id of the holder, if a thread holds the mutex.
    pub(crate) fn holder(&self) -> Option<u32> {
        Some(self.word.load(Ordering::Relaxed) & TID_MASK).filter(|&tid| tid != 0)
    }

    /// Clears the inconsistent mark. Only a holder calls this.
    #[inline]
    pub(crate) fn mark_consistent(&self) {
        self.inconsistent.store(0, Ordering::Release);
    }

    /// Whether the data is marked inconsistent.
    #[inline]
    pub(crate) fn is_inconsistent(&self) -> bool {
        self.inconsistent.load(Ordering::Acquire) != 0
    }
}

/// Scoped access to data guarded by a process-shared robust lock. The lock
/// is released when the guard is dropped.
///
/// If the previous holder died, the guard was handed over inside an
/// [`OwnerDied`](crate::OwnerDied): repair the data, then call
/// [`mark_consistent`](Self::mark_consistent). A guard dropped without that
/// still releases the lock, which keeps working, but the next locker is told
/// again that the data may be inconsistent.
///
/// The guard cannot be sent to another thread: a robust mutex must be
/// unlocked by the thread that locked it (it is on that thread's robust
/// list).
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a RobustMutex,
    data: NonNull<T>,
    _marker: PhantomData<(&'a mut T, *const ())>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    fn new(mutex: &'a RobustMutex, data: NonNull<T>) -> Self {
        MutexGuard {
            mutex,
            data,
            _marker: PhantomData,
        }
    }

    /// Marks the guarded data consistent again after a previous holder
    /// died, so the next locker is not told about the death.
    pub fn mark_consistent(&self) {
        self.mutex.mark_consistent();
    }

    /// Whether the data is marked inconsistent: a holder died and nobody
    /// has marked it consistent since.
    pub fn is_inconsistent(&self) -> bool {
        self.mutex.is_inconsistent()
    }

    /// Releases the lock, reporting a failure that dropping would ignore.
    pub fn unlock(self) -> ipc_core::Result<()> {
        let this = ManuallyDrop::new(self);
        Ok(this.mutex.unlock()?)
    }

    /// Keeps the lock held but forgets the guard (Python's `acquire()`
    /// without a `with`); the lock is released by an explicit unlock.
    pub(crate) fn leak(self) {
        let _ = ManuallyDrop::new(self);
    }

    /// Releases the lock, runs `f`, and locks again (what a condition
    /// variable's wait does). The new guard comes back with whether a
    /// holder died meanwhile.
    pub(crate) fn relock_after<R>(
        self,
        f: impl FnOnce() -> R,
    ) -> (R, Result<(MutexGuard<'a, T>, bool), LockFailure>) {
        let this = ManuallyDrop::new(self);
        let (mutex, data) = (this.mutex, this.data);
        if let Err(e) = mutex.unlock() {
            return (f(), Err(LockFailure::Other(e)));
        }
        let result = f();
        let relocked = mutex
            .lock(Deadline::Never)
            .map(|recovered| (MutexGuard::new(mutex, data), recovered));
        (result, relocked)
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `data` was checked to be in bounds and aligned when the
        // guard was made, the mapping outlives `'a`, and while this thread
        // holds the mutex no other user of the object touches the data (the
        // object kinds with a lock reach their data only through a guard).
        // The value is Pod (or the empty `()`), so any bytes are valid.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // derived from the guard, and the mutex makes the guard the only
        // holder in any process.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let _ = self.mutex.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutexGuard")
            .field("data", &&**self)
            .field("inconsistent", &self.is_inconsistent())
            .finish()
    }
}
