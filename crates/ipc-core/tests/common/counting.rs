//! A global allocator that counts what one thread allocates: the number of
//! allocations and the peak of live bytes, for the thread that asked with
//! [`measure`] only. Other threads (the test harness, a peer thread) never
//! touch the counts, so a loaded machine cannot make a test flaky.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

/// What the measured thread has done so far.
#[derive(Clone, Copy, Debug, Default)]
#[allow(dead_code)] // each test binary reads the counts it needs
pub struct Usage {
    /// Calls to `alloc`/`realloc`.
    pub allocations: usize,
    /// Bytes allocated and not yet freed, at their highest.
    pub peak_bytes: usize,
}

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(grow: isize, counts: bool) {
    // `try_with`: a thread being torn down has no locals left to count in.
    let _ = MEASURING.try_with(|measuring| {
        if !measuring.get() {
            return;
        }
        if counts {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        LIVE.with(|live| {
            live.set(live.get() + grow);
            PEAK.with(|peak| peak.set(peak.get().max(live.get())));
        });
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting only touches const-initialised thread-locals, which allocate
// nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize, true);
        // SAFETY: same contract as the caller's: a valid, non-zero layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize, true);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize, true);
        // SAFETY: `ptr` came from this allocator with `layout`, as the
        // caller promises; `new_size` is valid by the same promise.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize), false);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns what this thread allocated meanwhile.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    ALLOCATIONS.with(|a| a.set(0));
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    MEASURING.with(|m| m.set(true));
    let result = f();
    MEASURING.with(|m| m.set(false));
    let usage = Usage {
        allocations: ALLOCATIONS.with(Cell::get),
        peak_bytes: PEAK.with(Cell::get).max(0) as usize,
    };
    (result, usage)
}
