//! The producer/consumer example of the original article, through Redis:
//! a producer process puts 1 to 5 and then an end marker (`None`) on a
//! broker queue, a consumer process prints each item until the marker. The
//! same program as `crates/ipc-queue/examples/queue.rs` with the queue's
//! constructor changed, and the same output as `examples/python/queue.py`:
//!
//! ```text
//! Consumed data: 1
//! ...
//! Consumed data: 5
//! ```
//!
//! Run with the server's URL as the argument (`cargo xtask demo` starts a
//! private redis-server and passes its URL):
//! `cargo run -p ipc-broker --example broker_queue -- redis://127.0.0.1:6379/0`.
//! The two processes open the queue by URL and name, as processes on two
//! machines would.

use ipc_broker::{Broker, Queue};
use ipc_core::process::Process;

/// The queue's name, unique to this run so that runs never share one.
fn queue_name() -> String {
    format!("article-{}", std::process::id())
}

/// Python: `def producer(queue, data_list)`.
fn producer(url: &str, name: &str, data_list: &[i32]) -> ipc_core::Result<()> {
    let broker = Broker::new(url)?;
    let queue = Queue::<Option<i32>>::builder().open(&broker, name)?;
    for &data in data_list {
        queue.put(Some(data))?;
    }
    Ok(queue.put(None)?)
}

/// Python: `def consumer(queue)`.
fn consumer(url: &str, name: &str) -> ipc_core::Result<()> {
    let broker = Broker::new(url)?;
    let queue = Queue::<Option<i32>>::builder().open(&broker, name)?;
    while let Some(data) = queue.get()? {
        println!("Consumed data: {data}");
    }
    Ok(())
}

fn main() -> ipc_core::Result<()> {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: broker_queue REDIS_URL (redis://host:port/db or redis+unix:///path)");
        std::process::exit(2);
    };
    let name = queue_name();
    let broker = Broker::new(&url)?;
    let queue = Queue::<Option<i32>>::builder().create(&broker, &name)?;
    let data_list = [1, 2, 3, 4, 5];
    let mut p1 = Process::new().fork(|| producer(&url, &name, &data_list))?;
    let mut p2 = Process::new().fork(|| consumer(&url, &name))?;
    let (s1, s2) = (p1.join()?, p2.join()?);
    // The queue lives on the server until deleted.
    queue.unlink()?;
    if !(s1.success() && s2.success()) {
        return Err(ipc_core::Error::Io(std::io::Error::other(format!(
            "a child failed: producer {s1}, consumer {s2}"
        ))));
    }
    Ok(())
}
