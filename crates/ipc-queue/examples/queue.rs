//! The producer/consumer example of the original article, with a
//! producer process and a consumer process sharing one queue: the
//! producer puts 1 to 5 and then an end marker (`None`), the consumer
//! prints each item until the marker. Same output as
//! `examples/python/queue.py`:
//!
//! ```text
//! Consumed data: 1
//! ...
//! Consumed data: 5
//! ```
//!
//! Run with `cargo run -p ipc-shm-queue --example queue`.

use ipc_core::process::Process;
use ipc_queue::Queue;

/// Python: `def producer(queue, data_list)`.
fn producer(queue: &Queue<Option<i32>>, data_list: &[i32]) -> ipc_core::Result<()> {
    for &data in data_list {
        queue.put(Some(data))?;
    }
    Ok(queue.put(None)?)
}

/// Python: `def consumer(queue)`.
fn consumer(queue: &Queue<Option<i32>>) -> ipc_core::Result<()> {
    while let Some(data) = queue.get()? {
        println!("Consumed data: {data}");
    }
    Ok(())
}

fn main() -> ipc_core::Result<()> {
    let queue = Queue::new()?;
    let data_list = [1, 2, 3, 4, 5];
    let mut p1 = Process::new()
        .pass("queue", &queue)?
        .fork(|| producer(&queue, &data_list))?;
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
