//! `recv_bytes_into` and `send_bytes` allocate nothing per message: a
//! counting global allocator watches a steady stream of messages after the
//! first ones have set up the connection's buffers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipc_core::{Connection, FdStream};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is only a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's: a valid, non-zero layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_steady_stream_allocates_nothing_per_message() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut sender = Connection::new(FdStream::new(OwnedFd::from(a)).unwrap());
    let mut receiver = Connection::new(FdStream::new(OwnedFd::from(b)).unwrap());
    let small = [7u8; 64];
    let large = vec![9u8; 48 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut exchange = |rounds| {
        for round in 0..rounds {
            let message: &[u8] = if round % 10 == 0 { &large } else { &small };
            sender.send_bytes(message).unwrap();
            let n = receiver.recv_bytes_into(&mut buf).unwrap();
            assert_eq!(&buf[..n], message);
        }
    };
    // The first messages set up the receive buffer, which starts small and
    // grows once, when a read fills it.
    let start = ALLOCATIONS.load(Ordering::Relaxed);
    exchange(20);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(
        before - start <= 2,
        "{} allocations to set up",
        before - start
    );
    exchange(1000);
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(during, 0, "{during} allocations for 1000 messages");
}
