//! Large frames through a queue, written and read in place: a producer
//! process fills three frames of 1 MiB, each with its number, where they
//! lie in the queue's ring ([`Queue::reserve`]), then sends an empty frame
//! as the end marker; a consumer process reads each one there
//! ([`Queue::get_in_place`]) and prints its size and what it holds. No
//! frame is copied into the ring or out of it. Same output as
//! `examples/python/large_frames.py`, which pickles each frame through a
//! `multiprocessing.Queue`:
//!
//! ```text
//! frame of 1048576 bytes, all 0: yes
//! frame of 1048576 bytes, all 1: yes
//! frame of 1048576 bytes, all 2: yes
//! ```
//!
//! Run with `cargo run -p ipc-shm-queue --example large_frames`.

use ipc_core::process::Process;
use ipc_queue::Queue;

const FRAME: usize = 1 << 20;

/// Python: `def producer(queue)`.
fn producer(queue: &Queue<()>) -> ipc_core::Result<()> {
    for n in 0..3u8 {
        let mut frame = queue.reserve(FRAME)?;
        frame.fill(n);
        frame.commit()?;
    }
    // The end marker: an empty frame.
    queue.reserve(0)?.commit()
}

/// Python: `def consumer(queue)`.
fn consumer(queue: &Queue<()>) -> ipc_core::Result<()> {
    loop {
        let frame = queue.get_in_place()?;
        let Some(&first) = frame.first() else {
            return Ok(());
        };
        let uniform = if frame.iter().all(|&b| b == first) {
            "yes"
        } else {
            "no"
        };
        println!("frame of {} bytes, all {first}: {uniform}", frame.len());
    }
}

fn main() -> ipc_core::Result<()> {
    // Room for two frames in flight.
    let queue = Queue::builder().capacity(2 * FRAME + 4096).anonymous()?;
    let mut p1 = Process::new()
        .pass("queue", &queue)?
        .fork(|| producer(&queue))?;
    let mut p2 = Process::new()
        .pass("queue", &queue)?
        .fork(|| consumer(&queue))?;
    let (s1, s2) = (p1.join()?, p2.join()?);
    if !(s1.success() && s2.success()) {
        return Err(ipc_core::Error::Io(std::io::Error::other(format!(
            "a child failed: producer {s1}, consumer {s2}"
        ))));
    }
    Ok(())
}
