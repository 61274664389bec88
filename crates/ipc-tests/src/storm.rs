//! A signal storm: another thread sends `SIGUSR1` at one thread thousands
//! of times a second, to a handler installed without `SA_RESTART`, so that
//! every blocking system call of that thread keeps failing with `EINTR`.
//! Timeouts must hold through it, and calls without one must not fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Signals handled in this process so far.
static DELIVERED: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

/// The longest a storm lasts: a call that a storm keeps from timing out
/// then returns late, and the test fails instead of hanging.
const MAX_STORM: Duration = Duration::from_secs(8);

/// Gap between two signals (about 10,000 a second).
const GAP: Duration = Duration::from_micros(100);

/// A running storm aimed at the thread that started it; stops when dropped.
#[derive(Debug)]
pub struct SignalStorm {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl SignalStorm {
    /// Installs the handler (no `SA_RESTART`) and starts the storm at the
    /// calling thread.
    pub fn at_this_thread() -> SignalStorm {
        let action = SigAction::new(
            SigHandler::Handler(count_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only increments an atomic, which is
        // async-signal-safe; replacing SIGUSR1's disposition affects
        // nothing else in a test process.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.expect("install the SIGUSR1 handler");
        let target: Pthread = pthread_self();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = 0;
            while !stopping.load(Ordering::Relaxed) && start.elapsed() < MAX_STORM {
                if pthread_kill(target, Signal::SIGUSR1).is_err() {
                    break;
                }
                sent += 1;
                // Pacing the storm, not synchronising anything.
                std::thread::sleep(GAP);
            }
            sent
        });
        let storm = SignalStorm {
            stop,
            thread: Some(thread),
        };
        storm.wait_for_signals(10);
        storm
    }

    /// Signals handled in this process so far.
    pub fn delivered() -> u64 {
        DELIVERED.load(Ordering::Relaxed)
    }

    /// Waits (boundedly) until `n` more signals have been handled.
    pub fn wait_for_signals(&self, n: u64) {
        let target = Self::delivered() + n;
        let deadline = Instant::now() + crate::PATIENCE;
        while Self::delivered() < target {
            assert!(
                Instant::now() < deadline,
                "the signal storm is not arriving"
            );
            std::thread::yield_now();
        }
    }

    /// Stops the storm and returns how many signals it sent.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the storm thread panicked"))
    }
}

impl Drop for SignalStorm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
