//! Python's `multiprocessing.Queue` and `JoinableQueue` for Rust, with the
//! items in a Redis stream: the queue of ipc-queue, between processes on
//! as many machines as reach one Redis server.
//!
//! A program moves from one machine to many by changing its constructor:
//!
//! ```no_run
//! // One machine: ipc_queue::Queue::<String>::builder().maxsize(100).open_or_create("jobs")?
//! let broker = ipc_broker::Broker::new("redis://queue-host:6379/0")?;
//! let jobs = ipc_broker::Queue::<String>::builder().maxsize(100).open_or_create(&broker, "jobs")?;
//! jobs.put("resize photo 7".to_owned())?;
//! let job = jobs.get()?;
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! What holds:
//!
//! - **A bound that is real.** `maxsize` is checked and the item added in
//!   one transaction on the server, so concurrent producers never pass it;
//!   nothing is ever trimmed away (`XADD … MAXLEN` would drop items).
//! - **[`Queue`]: at most once.** An item is acknowledged and deleted in
//!   the same step that takes it; a consumer that dies holding it loses it,
//!   as with the shared-memory queue.
//! - **[`JoinableQueue`]: at least once.** An item stays pending with its
//!   consumer until `task_done`; one pending longer than the visibility
//!   timeout (its consumer died or is slow) is taken again by the next
//!   consumer that asks (`XAUTOCLAIM`), with its delivery count raised
//!   ([`JoinableQueue::get_item`]). `join` waits until nothing is pending
//!   or waiting.
//! - **Order.** The items of one producer are first delivered in the order
//!   it put them; an item delivered again comes when it is reclaimed,
//!   after later ones.
//! - **Deadlines.** A call waits at most its timeout for items or room.
//!   Talking to the server adds, per command (one for most calls, one
//!   more each time a get or put waits), at most the [`Broker`]'s command
//!   timeout for an answer and, when the connection fails or the answer
//!   does not come, the connect timeout spent connecting again and
//!   sending the command again; then the call is an [`Error::Io`] naming
//!   the server. Every command may be sent twice: a put carries its
//!   connection's sequence number, so a put sent twice is stored once; a
//!   take whose answer was lost is lost for a [`Queue`] (at most once) and
//!   delivered again for a [`JoinableQueue`].
//! - **Threads.** Each call of a handle runs on a connection of its own
//!   (an idle one of the handle's, or a new one), so threads sharing a
//!   handle never wait for each other.
//! - **Bad input.** An entry this crate did not write (another program's
//!   `XADD` on the stream) is dropped (and, for a [`JoinableQueue`], done
//!   with); a get that brings nothing else is an [`Error::Broker`] naming
//!   it. An item of another type is an [`Error::Decode`]. Either way the
//!   queue goes on.
//! - **Durability** is the server's: with its append-only file and
//!   `appendfsync always`, every put that returned survives a restart;
//!   with `everysec` (Redis's default), about the last second may not.
//!
//! Items are postcard-encoded, as in ipc-queue. A queue is five keys
//! sharing one hash tag (`ipc:{name}:items`, `:meta`, `:freed`, `:done`,
//! `:producers`), so a Redis Cluster keeps each queue on one node.

mod broker;
mod queue;
mod scripts;
mod stream;

pub use broker::Broker;
pub use queue::{Builder, Item, JoinableQueue, Queue, QueueKind, DEFAULT_VISIBILITY_TIMEOUT};

pub use ipc_core::{Error, PutError, Result};
