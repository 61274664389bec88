//! When a blocking call gives up: the one deadline type of the workspace.
//!
//! Every blocking call turns its timeout into a [`Deadline`] once, at its
//! start, and every wait inside it (a `poll`, a futex sleep, a retry after
//! a signal) asks the deadline for the time *remaining*. So a call is
//! bounded as a whole: a signal that interrupts a wait, a message that
//! arrives in pieces, or a lock taken before a sleep never restarts the
//! clock.

use std::time::{Duration, Instant};

/// When a blocking operation gives up.
///
/// ```
/// use std::time::Duration;
/// use ipc_core::Deadline;
///
/// let deadline = Deadline::after(Duration::from_secs(5));
/// assert!(!deadline.has_passed());
/// assert!(deadline.remaining().unwrap() <= Duration::from_secs(5));
///
/// assert!(Deadline::Now.has_passed());
/// assert_eq!(Deadline::Now.remaining(), Some(Duration::ZERO));
/// assert_eq!(Deadline::Never.remaining(), None);
/// // A timeout of `None` waits for ever, as in Python.
/// assert_eq!(Deadline::from(None::<Duration>), Deadline::Never);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// Wait as long as it takes.
    Never,
    /// Do not wait: take only what is there at once (Python's
    /// `block=False`). Calls that tell "nothing there" apart from "timed
    /// out" (a queue's `Empty` and `Full`) do so for this variant.
    Now,
    /// Give up at this instant.
    At(Instant),
}

impl Deadline {
    /// The deadline `timeout` from now; one too far away to represent is
    /// [`Deadline::Never`].
    #[inline]
    pub fn after(timeout: Duration) -> Deadline {
        Instant::now()
            .checked_add(timeout)
            .map_or(Deadline::Never, Deadline::At)
    }

    /// The time left: `None` for [`Deadline::Never`], zero once the
    /// deadline has passed (and always for [`Deadline::Now`]).
    #[inline]
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Deadline::Never => None,
            Deadline::Now => Some(Duration::ZERO),
            Deadline::At(at) => Some(at.saturating_duration_since(Instant::now())),
        }
    }

    /// Whether no time is left.
    #[inline]
    pub fn has_passed(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// How long one sleep inside a longer wait may last: the time left, but
    /// at most `cap`, or `None` once the time is up. Waiters that cannot
    /// rely on every wake-up reaching them (a waker may be killed between
    /// its change and its wake) sleep in such slices and look again.
    #[inline]
    pub fn slice(self, cap: Duration) -> Option<Duration> {
        match self.remaining() {
            None => Some(cap),
            Some(left) if left.is_zero() => None,
            Some(left) => Some(left.min(cap)),
        }
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self, other) {
            (Deadline::Never, d) | (d, Deadline::Never) => d,
            (Deadline::Now, _) | (_, Deadline::Now) => Deadline::Now,
            (Deadline::At(a), Deadline::At(b)) => Deadline::At(a.min(b)),
        }
    }

    /// The time left as a `poll(2)` timeout in milliseconds, rounded up so
    /// that a poll never returns before the deadline; -1 for none.
    pub(crate) fn poll_millis(self) -> i32 {
        match self.remaining() {
            None => -1,
            Some(left) => left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        }
    }
}

/// A timeout from now; as [`Deadline::after`].
impl From<Duration> for Deadline {
    #[inline]
    fn from(timeout: Duration) -> Deadline {
        Deadline::after(timeout)
    }
}

/// A timeout from now, `None` waiting for ever (Python's `timeout=None`).
impl From<Option<Duration>> for Deadline {
    #[inline]
    fn from(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::Never, Deadline::after)
    }
}

impl From<Instant> for Deadline {
    #[inline]
    fn from(at: Instant) -> Deadline {
        Deadline::At(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_counts_down_to_zero_and_stays_there() {
        let past = Deadline::At(Instant::now());
        assert_eq!(past.remaining(), Some(Duration::ZERO));
        assert!(past.has_passed());
        let later = Deadline::after(Duration::from_secs(60));
        let left = later.remaining().unwrap();
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
        assert!(!later.has_passed());
        assert_eq!(Deadline::after(Duration::MAX), Deadline::Never);
    }

    #[test]
    fn slices_are_capped_and_end_with_the_deadline() {
        let cap = Duration::from_millis(500);
        assert_eq!(Deadline::Never.slice(cap), Some(cap));
        assert_eq!(Deadline::Now.slice(cap), None);
        let soon = Deadline::after(Duration::from_millis(100))
            .slice(cap)
            .unwrap();
        assert!(soon <= Duration::from_millis(100) && !soon.is_zero());
        assert_eq!(
            Deadline::after(Duration::from_secs(60)).slice(cap),
            Some(cap)
        );
    }

    #[test]
    fn min_takes_the_earlier() {
        let soon = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(9));
        assert_eq!(soon.min(late), soon);
        assert_eq!(late.min(soon), soon);
        assert_eq!(Deadline::Never.min(late), late);
        assert_eq!(late.min(Deadline::Now), Deadline::Now);
    }

    #[test]
    fn poll_millis_rounds_up() {
        assert_eq!(Deadline::Never.poll_millis(), -1);
        assert_eq!(Deadline::Now.poll_millis(), 0);
        let ms = Deadline::after(Duration::from_micros(1500)).poll_millis();
        assert!((1..=2).contains(&ms), "{ms}");
    }
}
