//! Python's `multiprocessing` [`Queue`], [`SimpleQueue`] and
//! [`JoinableQueue`] for Rust on Linux: a multi-producer, multi-consumer
//! FIFO held in a shared-memory ring, with no broker process and no feeder
//! thread, that keeps working when one of its processes is killed.
//!
//! ```
//! use ipc_core::process::Process;
//! use ipc_queue::Queue;
//!
//! // Python: queue = Queue(); Process(target=producer, args=(queue,)).start()
//! let queue = Queue::<Option<i32>>::new()?;
//! let mut producer = Process::new().pass("queue", &queue)?.fork({
//!     let queue = &queue;
//!     move || -> ipc_core::Result<()> {
//!         for data in [1, 2, 3, 4, 5] {
//!             queue.put(Some(data))?;
//!         }
//!         Ok(queue.put(None)?)
//!     }
//! })?;
//! let mut sum = 0;
//! while let Some(data) = queue.get()? {
//!     sum += data;
//! }
//! assert_eq!(sum, 15);
//! assert!(producer.join()?.success());
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! # Named and anonymous queues
//!
//! [`Queue::new`] makes an anonymous queue (a memfd) that children receive
//! through [`Process::pass`](ipc_core::process::Process::pass). A
//! [`Builder`] makes named ones, `/dev/shm/<name>` with owner-only
//! permissions, that an unrelated process opens by name: `create` fails if
//! the name exists, `open` if it does not, `open_or_create` does either.
//! The creating process owns a named queue and removes it when its handle
//! is dropped. Opening checks a layout header (magic number, layout
//! version, queue kind, item type, capacity and size) and refuses anything
//! else with an error saying what it found.
//!
//! # Items, bounds and blocking
//!
//! Items are serde values encoded with postcard, or raw bytes
//! (`put_bytes`, `get_bytes_into`, which allocates nothing). A queue is
//! bounded in items (`maxsize`) and in bytes (its ring's `capacity`);
//! items may have any size up to what an empty ring holds, and a bigger
//! one is refused at once with [`Error::TooLarge`](ipc_core::Error). `put`
//! and `get` block, `*_timeout` wait at most a given time, `*_nowait` do
//! not wait and return `Full` / `Empty` (a failed put hands the item back
//! in a [`PutError`]). A blocked process spins briefly and then sleeps on a
//! futex: it uses no CPU while it waits. [`Queue::close`] closes the queue
//! for everyone: puts fail, getters drain what is left and are then told
//! [`Error::Closed`](ipc_core::Error), and sleeping getters wake up.
//!
//! # Large items, in place
//!
//! [`Queue::reserve`] hands out room in the ring itself, to fill and
//! commit; [`Queue::get_in_place`] lends the next item where it lies, to
//! read (or decode, borrowing `&str` and `&[u8]` fields) and release. A
//! large item is then written once and never copied out. The
//! [`in_place`] module says what an open reservation or a borrowed item
//! holds up, and what a process killed while holding one leaves.
//!
//! # When a process is killed
//!
//! Producers take one robust process-shared mutex and consumers another,
//! so a put and a get run at the same time. Every change a put or a get
//! makes is a single atomic store of the ring's tail (after the record is
//! written into free space) or head (after the record is copied out), so a
//! process killed at any instruction (mid-put, mid-get, holding a lock)
//! leaves a queue that the others keep using: the next locker, told by the
//! robust mutex that the holder died, checks the ring and wakes every
//! waiter; there is nothing half-done to repair. Every item whose put
//! returned `Ok` is delivered exactly once, except an item that a killed
//! getter had already taken off (an item borrowed in place is not taken
//! off until it is released, so it is delivered again instead). A record length found corrupt in the ring
//! is reported as an error, never followed past the ring's end.
//!
//! # Known limits
//!
//! * A waiter whose waker was killed between its commit and its wake-up
//!   notices within half a second (waits are cut into slices of at most
//!   500 ms that look again); no item is lost meanwhile.
//! * A waiter killed while registered as waiting leaves a registration
//!   behind, which costs the next put or get one needless wake-up call.
//! * A JoinableQueue's `join` waits for an item that a killed getter took
//!   off and never marked done, as Python's does.
//! * The ring holds at most 4 GiB - 8 bytes (offsets are 32-bit).
//! * A getter that finds the queue empty spins up to 100 µs (yielding the
//!   CPU after 20 µs) before it sleeps; it leaves the producers' cache
//!   line alone for the first 300 ns so that a streaming producer is not
//!   slowed down item by item. `cargo xtask bench` measures the queue
//!   against Python's and the kernel's (`docs/BENCHMARKS.md` in the
//!   repository).
//! * `qsize`, `empty` and `full` are snapshots, as in Python.
//! * The item type check is best effort: it compares
//!   [`std::any::type_name`], which the compiler does not promise to keep
//!   stable between versions.
//!
//! # The package name
//!
//! The package is `ipc-shm-queue` (the name `ipc-queue` on crates.io
//! belongs to an unrelated crate); the library keeps the name `ipc_queue`:
//!
//! ```toml
//! [dependencies]
//! ipc-shm-queue = "0.1"
//! ```
#![deny(unsafe_code)]

mod core;
pub mod in_place;
mod joinable;
mod layout;
mod queue;
mod ring;
mod sys;
mod waker;

pub use in_place::{InPlace, Reservation};
pub use joinable::{JoinableQueue, SimpleQueue};
pub use queue::{Builder, Queue, QueueKind, DEFAULT_CAPACITY};
#[doc(hidden)]
pub use queue::{KindSpec, RawCore};

pub use ipc_core::{Error, PutError, Result};
