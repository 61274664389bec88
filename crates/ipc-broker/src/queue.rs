//! [`Queue`] and [`JoinableQueue`] on a Redis stream, with the API of
//! ipc-queue's, and the [`Builder`] that creates or opens them.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::Duration;

use ipc_core::{ByteReceiver, ByteSender, Deadline, Error, PutError, Receiver, Result, Sender};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::stream::{Delivery, Opening, Stream, Taken};
use crate::Broker;
use sealed::Sealed;

/// How long a [`JoinableQueue`] item taken and not done stays with its
/// consumer before another may take it, unless set: 30 s.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

mod sealed {
    use std::time::Duration;

    use crate::stream::{Delivery, Stream};

    /// What the [`Builder`](super::Builder) needs of a queue type; outside
    /// this crate it cannot be named, so no other type is a queue kind.
    pub trait Sealed: Sized {
        const KIND: &'static str;
        fn delivery(visibility: Duration) -> Delivery;
        fn from_stream(stream: Stream) -> Self;
    }
}

/// The two queue types, so one [`Builder`] makes both.
pub trait QueueKind: sealed::Sealed {}

/// Sets a queue's bound (and a joinable queue's visibility timeout) before
/// it is created or opened on a [`Broker`].
///
/// ```no_run
/// let broker = ipc_broker::Broker::new("redis://127.0.0.1/0")?;
/// let jobs = ipc_broker::Queue::<String>::builder()
///     .maxsize(1000)
///     .open_or_create(&broker, "jobs")?;
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Builder<Q> {
    maxsize: usize,
    visibility: Duration,
    kind: PhantomData<fn() -> Q>,
}

impl<Q> Clone for Builder<Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q> Copy for Builder<Q> {}

impl<Q: QueueKind> Builder<Q> {
    fn new() -> Builder<Q> {
        Builder {
            maxsize: 0,
            visibility: DEFAULT_VISIBILITY_TIMEOUT,
            kind: PhantomData,
        }
    }

    /// At most this many items wait at once (0, the default: no bound).
    /// The server enforces it atomically, whatever the number of
    /// producers; items taken and not yet done do not count. A queue
    /// opened keeps the bound it was created with.
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// For a [`JoinableQueue`]: how long an item taken and not done stays
    /// with its consumer before another consumer may take it again
    /// (30 s unless set). A consumer that takes longer than this to finish
    /// an item may see it done twice.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility = timeout;
        self
    }

    /// Creates queue `name`; [`Error::AlreadyExists`] if it is there.
    pub fn create(self, broker: &Broker, name: &str) -> Result<Q> {
        self.make(broker, name, Opening::Create)
    }

    /// Opens queue `name`; [`Error::NotFound`] if it is not there.
    pub fn open(self, broker: &Broker, name: &str) -> Result<Q> {
        self.make(broker, name, Opening::Open)
    }

    /// Opens queue `name`, creating it if it is not there.
    pub fn open_or_create(self, broker: &Broker, name: &str) -> Result<Q> {
        self.make(broker, name, Opening::Either)
    }

    fn make(self, broker: &Broker, name: &str, opening: Opening) -> Result<Q> {
        let delivery = Q::delivery(self.visibility);
        Stream::open(broker, name, Q::KIND, self.maxsize, delivery, opening).map(Q::from_stream)
    }
}

/// Python's `multiprocessing.Queue`, its items in a Redis stream: many
/// producers and consumers, on any machines that reach the server.
///
/// An item is acknowledged when it is taken (at most once, as with the
/// shared-memory queue: a consumer that dies holding it loses it). Items
/// from one producer are taken in the order it put them. Threads may share
/// a handle: each call runs on a connection of its own.
///
/// ```no_run
/// let broker = ipc_broker::Broker::new("redis://127.0.0.1/0")?;
/// let q = ipc_broker::Queue::<String>::builder().open_or_create(&broker, "greetings")?;
/// q.put("hello".to_owned())?;
/// assert_eq!(q.get()?, "hello");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Queue<T> {
    stream: Stream,
    item: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.stream.name())
            .field("maxsize", &self.stream.maxsize())
            .finish_non_exhaustive()
    }
}

impl<T> QueueKind for Queue<T> {}

impl<T> sealed::Sealed for Queue<T> {
    const KIND: &'static str = "queue";

    fn delivery(_: Duration) -> Delivery {
        Delivery::AtMostOnce
    }

    fn from_stream(stream: Stream) -> Self {
        Queue {
            stream,
            item: PhantomData,
        }
    }
}

impl<T> Queue<T> {
    /// A [`Builder`] for a queue.
    pub fn builder() -> Builder<Self> {
        Builder::new()
    }

    /// Another handle on the same queue, with connections of its own.
    pub fn try_clone(&self) -> Result<Self> {
        self.stream.try_clone().map(Self::from_stream)
    }

    /// Puts raw bytes as one item, waiting for room.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.stream.put(&[bytes], Deadline::Never)
    }

    /// Puts raw bytes, waiting for room up to `timeout` ([`Error::Timeout`]).
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.stream.put(&[bytes], Deadline::after(timeout))
    }

    /// Puts raw bytes if there is room now, else [`Error::Full`].
    pub fn put_bytes_nowait(&self, bytes: &[u8]) -> Result<()> {
        self.stream.put(&[bytes], Deadline::Now)
    }

    /// Puts several items in one command, all or none, waiting for room
    /// for all of them: small items reach the server's rate rather than
    /// the round trip's.
    pub fn put_many_bytes(&self, items: &[&[u8]]) -> Result<()> {
        self.stream.put(items, Deadline::Never)
    }

    /// Takes the next item's bytes, waiting for one.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        self.take(Deadline::Never)
    }

    /// Takes the next item's bytes, waiting up to `timeout`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.take(Deadline::after(timeout))
    }

    /// Takes an item's bytes if one is there now, else [`Error::Empty`].
    pub fn get_bytes_nowait(&self) -> Result<Vec<u8>> {
        self.take(Deadline::Now)
    }

    fn take(&self, deadline: Deadline) -> Result<Vec<u8>> {
        self.stream.take(deadline).map(|taken| taken.bytes)
    }

    /// Takes up to `most` items' bytes in one command, waiting up to
    /// `timeout` (`None`: for ever) for the first: small items reach the
    /// server's rate rather than the round trip's.
    pub fn get_many_bytes(&self, most: usize, timeout: Option<Duration>) -> Result<Vec<Vec<u8>>> {
        let taken = self.stream.take_many(most, Deadline::from(timeout))?;
        Ok(taken.into_iter().map(|taken| taken.bytes).collect())
    }

    /// The number of items waiting (a snapshot).
    pub fn qsize(&self) -> Result<usize> {
        self.stream.waiting()
    }

    /// Whether no item waits (a snapshot).
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether the queue is at its bound (a snapshot; never for an
    /// unbounded queue).
    pub fn full(&self) -> Result<bool> {
        let maxsize = self.maxsize();
        Ok(maxsize > 0 && self.qsize()? >= maxsize)
    }

    /// The bound, 0 for none.
    pub fn maxsize(&self) -> usize {
        self.stream.maxsize()
    }

    /// Closes the queue for every handle: puts then fail with
    /// [`Error::Closed`]; gets take what is left and are then told
    /// [`Error::Closed`] (a get waiting on the server notices within half
    /// a second).
    pub fn close(&self) -> Result<()> {
        self.stream.close()
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> Result<bool> {
        self.stream.is_closed()
    }

    /// The queue's name on the server.
    pub fn name(&self) -> &str {
        self.stream.name()
    }

    /// Deletes the queue from the server, with any items in it; other
    /// handles then get [`Error::NotFound`].
    pub fn unlink(&self) -> Result<()> {
        self.stream.unlink()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts `item`, waiting for room (Python's `put(item)`).
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        put_typed(&self.stream, item, Deadline::Never)
    }

    /// Puts `item`, waiting up to `timeout` ([`Error::Timeout`]).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        put_typed(&self.stream, item, Deadline::after(timeout))
    }

    /// Puts `item` if there is room now; [`Error::Full`] otherwise.
    pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
        put_typed(&self.stream, item, Deadline::Now)
    }

    /// Puts every item of `items` in one command, all or none.
    pub fn put_many(&self, items: &[T]) -> Result<()> {
        let encoded = items.iter().map(encode).collect::<Result<Vec<_>>>()?;
        let slices: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        self.stream.put(&slices, Deadline::Never)
    }

    /// Takes up to `most` items in one command, waiting up to `timeout`
    /// (`None`: for ever) for the first. An item among them that does not
    /// decode as `T` fails the call (all of them are taken).
    pub fn get_many(&self, most: usize, timeout: Option<Duration>) -> Result<Vec<T>> {
        self.get_many_bytes(most, timeout)?
            .iter()
            .map(|bytes| ipc_core::codec::decode(bytes))
            .collect()
    }

    /// Takes the next item, waiting for one; [`Error::Closed`] once the
    /// queue is closed and drained. An item that does not decode as `T` is
    /// [`Error::Decode`] (that item is taken; the queue goes on).
    pub fn get(&self) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes()?)
    }

    /// Takes the next item, waiting up to `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes_timeout(timeout)?)
    }

    /// Takes an item if one is there now; [`Error::Empty`] otherwise.
    pub fn get_nowait(&self) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes_nowait()?)
    }
}

fn put_typed<T: Serialize>(
    stream: &Stream,
    item: T,
    deadline: Deadline,
) -> std::result::Result<(), PutError<T>> {
    match encode(&item).and_then(|bytes| stream.put(&[&bytes], deadline)) {
        Ok(()) => Ok(()),
        Err(error) => Err(PutError { item, error }),
    }
}

impl<T: Serialize> Sender<T> for Queue<T> {
    fn send(&mut self, msg: &T) -> Result<()> {
        let bytes = encode(msg)?;
        self.stream.put(&[&bytes], Deadline::Never)
    }
}

impl<T: DeserializeOwned> Receiver<T> for Queue<T> {
    fn recv(&mut self) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes()?)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes_timeout(timeout)?)
    }

    fn try_recv(&mut self) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes_nowait()?)
    }
}

impl<T> ByteSender for Queue<T> {
    fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.put_bytes(buf)
    }

    fn send_bytes_batch(&mut self, messages: &[&[u8]]) -> Result<()> {
        // In one command where the bound allows, else one at a time.
        match self.maxsize() {
            0 => self.put_many_bytes(messages),
            bound => messages
                .chunks(bound)
                .try_for_each(|chunk| self.put_many_bytes(chunk)),
        }
    }
}

impl<T> ByteReceiver for Queue<T> {
    fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.get_bytes()
    }

    fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.get_bytes_timeout(timeout)
    }

    fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.get_bytes_nowait()
    }

    fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let bytes = self.get_bytes()?;
        if bytes.len() > buf.len() {
            // The item is taken already: a broker queue cannot leave it.
            return Err(Error::BufferTooShort {
                needed: bytes.len(),
            });
        }
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }
}

/// An item of a [`JoinableQueue`] as delivered: the value, its entry id,
/// and how many times it has been delivered (more than 1 after its
/// consumer died or took longer than the visibility timeout).
#[derive(Debug)]
pub struct Item<T> {
    /// The item.
    pub value: T,
    /// Its entry id in the stream (`<ms>-<seq>`), the same for every
    /// delivery of it: what a consumer de-duplicates by.
    pub id: String,
    /// How many times it has been delivered, this time included.
    pub deliveries: u64,
}

/// Python's `multiprocessing.JoinableQueue` on a Redis stream: every item
/// put is unfinished until a consumer calls [`task_done`](Self::task_done)
/// for it, and [`join`](Self::join) waits until none is.
///
/// Delivery is at least once: an item taken and not done within the
/// visibility timeout (its consumer died, or is slow) goes to the next
/// consumer that asks, with its delivery count raised. Items are first
/// delivered in the order each producer put them; redelivered items come
/// when they are reclaimed, after later ones.
///
/// ```no_run
/// let broker = ipc_broker::Broker::new("redis://127.0.0.1/0")?;
/// let q = ipc_broker::JoinableQueue::<u32>::builder()
///     .visibility_timeout(std::time::Duration::from_secs(60))
///     .open_or_create(&broker, "tasks")?;
/// q.put(7)?;
/// let task = q.get()?;
/// q.task_done()?; // the item `get` returned last (and not done yet)
/// q.join()?;
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
    /// Items this handle took with `get` and has not marked done, oldest
    /// first: what `task_done` marks.
    taken: Mutex<VecDeque<String>>,
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("name", &self.queue.name())
            .field("maxsize", &self.queue.maxsize())
            .finish_non_exhaustive()
    }
}

impl<T> QueueKind for JoinableQueue<T> {}

impl<T> sealed::Sealed for JoinableQueue<T> {
    const KIND: &'static str = "joinable";

    fn delivery(visibility: Duration) -> Delivery {
        Delivery::AtLeastOnce { visibility }
    }

    fn from_stream(stream: Stream) -> Self {
        JoinableQueue {
            queue: Queue::from_stream(stream),
            taken: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T> JoinableQueue<T> {
    /// A [`Builder`] for a joinable queue.
    pub fn builder() -> Builder<Self> {
        Builder::new()
    }

    /// Another handle on the same queue, with connections of its own (and
    /// no items taken yet).
    pub fn try_clone(&self) -> Result<Self> {
        self.queue.stream.try_clone().map(Self::from_stream)
    }

    fn take(&self, deadline: Deadline) -> Result<Taken> {
        let mut taken = self.take_many(1, deadline)?;
        // take_many gives at least one item, or an error.
        taken.pop().ok_or(Error::Empty)
    }

    /// Takes between 1 and `most` items, each unfinished until done.
    fn take_many(&self, most: usize, deadline: Deadline) -> Result<Vec<Taken>> {
        let taken = self.queue.stream.take_many(most, deadline)?;
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(taken.iter().map(|t| t.id.clone()));
        Ok(taken)
    }

    /// Takes the next item's bytes, waiting for one; it stays unfinished
    /// until [`task_done`](Self::task_done).
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        self.take(Deadline::Never).map(|t| t.bytes)
    }

    /// Takes the next item's bytes, waiting up to `timeout`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.take(Deadline::after(timeout)).map(|t| t.bytes)
    }

    /// Takes an item's bytes if one is there now, else [`Error::Empty`].
    pub fn get_bytes_nowait(&self) -> Result<Vec<u8>> {
        self.take(Deadline::Now).map(|t| t.bytes)
    }

    /// Marks done the oldest item this handle took with a `get` and has
    /// not marked done (Python's `task_done()`); [`Error::InvalidArgument`]
    /// if there is none. `Ok(())` also when another delivery of it was
    /// done already.
    pub fn task_done(&self) -> Result<()> {
        let id = self
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .ok_or(Error::InvalidArgument(
                "task_done() called more times than items were taken",
            ))?;
        self.queue.stream.done(&id).map(drop).inspect_err(|_| {
            // Not marked: still the oldest this handle has to mark.
            self.taken
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_front(id.clone());
        })
    }

    /// Marks one delivered item done, by its id (from [`get_item`](
    /// Self::get_item)): `true` if this finished it, `false` if another
    /// delivery of it had.
    pub fn done(&self, id: &str) -> Result<bool> {
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|taken| taken != id);
        self.queue.stream.done(id)
    }

    /// Waits until every item put has been taken and marked done (Python's
    /// `join()`).
    pub fn join(&self) -> Result<()> {
        self.queue.stream.join(Deadline::Never)
    }

    /// [`join`](Self::join), giving up with [`Error::Timeout`] after
    /// `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.queue.stream.join(Deadline::after(timeout))
    }

    /// Items put and not yet done, taken or not (a snapshot).
    pub fn unfinished(&self) -> Result<usize> {
        self.queue.stream.unfinished()
    }

    /// See [`Queue::put_bytes`].
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.queue.put_bytes(bytes)
    }

    /// See [`Queue::put_bytes_timeout`].
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.queue.put_bytes_timeout(bytes, timeout)
    }

    /// See [`Queue::put_bytes_nowait`].
    pub fn put_bytes_nowait(&self, bytes: &[u8]) -> Result<()> {
        self.queue.put_bytes_nowait(bytes)
    }

    /// See [`Queue::put_many_bytes`].
    pub fn put_many_bytes(&self, items: &[&[u8]]) -> Result<()> {
        self.queue.put_many_bytes(items)
    }

    /// See [`Queue::empty`]: whether no item waits (some may be taken and
    /// not done).
    pub fn empty(&self) -> Result<bool> {
        self.queue.empty()
    }

    /// See [`Queue::full`].
    pub fn full(&self) -> Result<bool> {
        self.queue.full()
    }

    /// See [`Queue::maxsize`].
    pub fn maxsize(&self) -> usize {
        self.queue.maxsize()
    }

    /// See [`Queue::is_closed`].
    pub fn is_closed(&self) -> Result<bool> {
        self.queue.is_closed()
    }

    /// See [`Queue::name`].
    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// See [`Queue::qsize`]: items waiting, not those taken and not done.
    pub fn qsize(&self) -> Result<usize> {
        self.queue.qsize()
    }

    /// See [`Queue::close`].
    pub fn close(&self) -> Result<()> {
        self.queue.close()
    }

    /// See [`Queue::unlink`].
    pub fn unlink(&self) -> Result<()> {
        self.queue.unlink()
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// See [`Queue::put`].
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.queue.put(item)
    }

    /// See [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.queue.put_timeout(item, timeout)
    }

    /// See [`Queue::put_nowait`].
    pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.queue.put_nowait(item)
    }

    /// See [`Queue::put_many`].
    pub fn put_many(&self, items: &[T]) -> Result<()> {
        self.queue.put_many(items)
    }

    /// Takes the next item, waiting for one; it stays unfinished until
    /// [`task_done`](Self::task_done). An item that does not decode as `T`
    /// is [`Error::Decode`], and is still to be marked done.
    pub fn get(&self) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes()?)
    }

    /// Takes the next item, waiting up to `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes_timeout(timeout)?)
    }

    /// Takes an item if one is there now; [`Error::Empty`] otherwise.
    pub fn get_nowait(&self) -> Result<T> {
        ipc_core::codec::decode(&self.get_bytes_nowait()?)
    }

    /// Takes the next item with its id and delivery count, waiting up to
    /// `timeout` (`None`: for ever); mark it done with
    /// [`done`](Self::done) (or `task_done`).
    pub fn get_item(&self, timeout: Option<Duration>) -> Result<Item<T>> {
        Item::decode(self.take(Deadline::from(timeout))?)
    }

    /// Takes up to `most` items in one step, waiting up to `timeout`
    /// (`None`: for ever) for the first, each with its id and delivery
    /// count: the batched form of [`get_item`](Self::get_item). Each stays
    /// unfinished until marked done. An item among them that does not
    /// decode as `T` fails the call (all of them are taken, and still to be
    /// marked done with `task_done`).
    ///
    /// ```no_run
    /// # fn main() -> ipc_core::Result<()> {
    /// let broker = ipc_broker::Broker::new("redis+unix:///run/redis/redis.sock")?;
    /// let jobs = ipc_broker::JoinableQueue::<u64>::builder().open(&broker, "jobs")?;
    /// for item in jobs.get_items(64, None)? {
    ///     println!("job {} (delivery {})", item.value, item.deliveries);
    ///     jobs.done(&item.id)?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_items(&self, most: usize, timeout: Option<Duration>) -> Result<Vec<Item<T>>> {
        self.take_many(most, Deadline::from(timeout))?
            .into_iter()
            .map(Item::decode)
            .collect()
    }
}

impl<T: DeserializeOwned> Item<T> {
    fn decode(taken: Taken) -> Result<Item<T>> {
        Ok(Item {
            value: ipc_core::codec::decode(&taken.bytes)?,
            id: taken.id,
            deliveries: taken.deliveries,
        })
    }
}

/// An item's bytes: postcard, as the shared-memory queue writes them.
fn encode<T: Serialize + ?Sized>(item: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ipc_core::codec::encode_into(item, &mut bytes)?;
    Ok(bytes)
}
