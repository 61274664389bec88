//! How a put, a get or a join that has to wait sleeps, and how the process
//! that changes what it waits for wakes it, without a system call when
//! nobody sleeps and without losing a wake-up.
//!
//! Each thing to wait for has a sequence word that changes with every
//! operation that may end a wait (`put_seq` for getters, `get_seq` for
//! putters, `join.seq` for joiners) and a registration word beside it. A
//! waiter reads the sequence (`seen`) before the look that found nothing,
//! spins briefly, then registers and sleeps on the sequence with `seen` as
//! the expected value: a change since then makes the sleep return at once.
//!
//! A registration records the newest `seen` any waiter registered with
//! ([`Waker::register`] only moves it forwards). A waker bumps the
//! sequence to `now`, makes a full fence, and takes the registration only
//! if it is older than `now` ([`Waker::take`]): a waiter registered with
//! `now` has already seen this change (and found nothing to do, say
//! because another getter took the item), so waking it would be useless,
//! and clearing its registration would leave it asleep when the *next*
//! change comes, with nobody to wake it: the wake-up the old counter of
//! waiters lost. The waiter's registration and the waker's bump are each
//! followed by a full fence before the other word is read (Dekker), so
//! either the waker sees the registration or the sleep sees the bump.
//!
//! Sleeps are cut at [`SAFETY_NET`] and the waiter looks again: that is
//! only for a waker killed between its bump and its wake-up, never how a
//! wait normally ends.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_shm::raw::{futex_wait, futex_wake};

#[cfg(doc)]
use ipc_shm::raw::SAFETY_NET;

/// Set in a registration word while a registration stands; the low 32
/// bits are the sequence it was made for.
const REGISTERED: u64 = 1 << 32;

/// How long a spin runs before it starts yielding the CPU between looks.
const YIELD_AFTER: Duration = Duration::from_micros(20);

/// Whether sequence value `a` comes before `b` (wrapping).
#[inline]
fn older(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

/// A sequence word and the registrations of those asleep on it.
#[derive(Clone, Copy)]
pub(crate) struct Waker<'a> {
    pub(crate) seq: &'a AtomicU32,
    registered: &'a AtomicU64,
}

impl<'a> Waker<'a> {
    pub(crate) fn new(seq: &'a AtomicU32, registered: &'a AtomicU64) -> Self {
        Waker { seq, registered }
    }

    /// The sequence now, read before the look whose result a wait depends
    /// on.
    #[inline]
    pub(crate) fn seen(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Registers a waiter that saw `seen`, then sleeps until the sequence
    /// moves from `seen`, a wake-up, or `timeout`.
    pub(crate) fn sleep(&self, seen: u32, timeout: Duration) {
        self.register(seen);
        futex_wait(self.seq, seen, Some(timeout));
    }

    /// Makes (or keeps) a registration for `seen` or a newer sequence.
    /// Always a read-modify-write of the word, then a full fence: the
    /// waiter's half of the Dekker pair with [`take`](Self::take).
    pub(crate) fn register(&self, seen: u32) {
        let mut current = self.registered.load(Ordering::Relaxed);
        loop {
            let keep = current & REGISTERED != 0 && !older(current as u32, seen);
            let new = if keep {
                current
            } else {
                REGISTERED | u64::from(seen)
            };
            match self.registered.compare_exchange_weak(
                current,
                new,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        fence(Ordering::SeqCst);
    }

    /// Called after bumping the sequence to `now` and a full fence:
    /// whether a waiter registered before it saw `now`. If so, its
    /// registration is taken and the caller wakes every sleeper (after
    /// unlocking); waiters that still have nothing to do register again.
    #[inline]
    pub(crate) fn take(&self, now: u32) -> bool {
        let mut current = self.registered.load(Ordering::Relaxed);
        loop {
            if current & REGISTERED == 0 || !older(current as u32, now) {
                return false;
            }
            match self
                .registered
                .compare_exchange(current, 0, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Wakes every sleeper.
    #[inline]
    pub(crate) fn wake(&self) {
        futex_wake(self.seq, u32::MAX);
    }

    /// Bumps a sequence word that only one lock's holder writes; returns
    /// the new value.
    #[inline]
    pub(crate) fn bump(&self) -> u32 {
        let now = self.seq.load(Ordering::Relaxed).wrapping_add(1);
        self.seq.store(now, Ordering::Release);
        now
    }

    /// Drops every registration (a recovery wakes everyone anyway).
    pub(crate) fn clear(&self) {
        self.registered.store(0, Ordering::Relaxed);
    }
}

/// How a put or get that found the queue full or empty spins before it
/// sleeps.
pub(crate) struct Spin {
    /// How long to leave the sequence word alone before the first look.
    pub(crate) quiet: Duration,
    /// How far the word should move before the spin ends early.
    pub(crate) want: u32,
    /// Spin-loop hints between looks at the word.
    pub(crate) pauses: u32,
    /// How long to spin before sleeping.
    pub(crate) spin_for: Duration,
}

impl Spin {
    /// Spins until `word` has moved at least `want` steps on from `seen`:
    /// `true` then, or after `spin_for` if it moved at all, `false` if it
    /// did not move. It leaves the word alone for `quiet` first, then looks
    /// once every `pauses` spin-loop hints, so as not to pull the cache
    /// line away from the process writing it on every one of its
    /// operations. After the first few microseconds it yields the CPU
    /// between looks: the process that will change the word may be waiting
    /// for this very CPU (a woken process is often placed on its waker's
    /// CPU).
    pub(crate) fn run(&self, word: &AtomicU32, seen: u32) -> bool {
        let start = Instant::now();
        while start.elapsed() < self.quiet {
            for _ in 0..4 {
                std::hint::spin_loop();
            }
        }
        loop {
            for _ in 0..16 {
                if word.load(Ordering::Relaxed).wrapping_sub(seen) >= self.want {
                    return true;
                }
                for _ in 0..self.pauses {
                    std::hint::spin_loop();
                }
            }
            let spent = start.elapsed();
            if spent >= self.spin_for {
                return word.load(Ordering::Relaxed) != seen;
            }
            if spent >= YIELD_AFTER {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waker_whose_change_the_sleeper_already_saw_leaves_its_registration() {
        let (seq, registered) = (AtomicU32::new(7), AtomicU64::new(0));
        let waker = Waker::new(&seq, &registered);
        // A getter saw sequence 7 (the put that made it was already
        // counted), found the queue empty (another getter took the item)
        // and registered.
        waker.register(waker.seen());
        // That put takes its waiters late: nobody to wake for it.
        assert!(!waker.take(7));
        // The next put finds the registration and wakes the getter.
        assert!(waker.take(waker.bump()));
        assert!(!waker.take(8), "taken once");
    }

    #[test]
    fn registrations_only_move_forwards_and_survive_wrapping() {
        let (seq, registered) = (AtomicU32::new(u32::MAX), AtomicU64::new(0));
        let waker = Waker::new(&seq, &registered);
        waker.register(u32::MAX);
        waker.register(u32::MAX - 3); // a slower waiter, older sequence
        assert!(!waker.take(u32::MAX), "the newest registration stands");
        assert_eq!(waker.bump(), 0);
        assert!(waker.take(0), "0 comes after u32::MAX");
        waker.register(5);
        waker.clear();
        assert!(!waker.take(6));
    }
}
