//! [`Queue`]: Python's `multiprocessing.Queue`, typed, in shared memory;
//! and the [`Builder`] that creates, opens or inherits every queue type.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use ipc_core::process::{Handle, Inheritable, Inherited};
#[cfg(doc)]
use ipc_core::Error;
use ipc_core::{ByteReceiver, ByteSender, Deadline, PutError, Receiver, Result, Sender};
use ipc_shm::raw::Place;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::{with_scratch, Core, Dest};
use crate::layout::{self, Kind, Params, Spec};

/// The ring size of a queue made without [`Builder::capacity`]: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// What the three queue types share, so one [`Builder`] makes them all.
/// Not implemented outside this crate.
pub trait QueueKind: Sized + sealed::Sealed {
    #[doc(hidden)]
    fn spec() -> KindSpec;
    #[doc(hidden)]
    fn from_core(core: RawCore) -> Self;
}

/// What a queue type is created as (opaque).
#[doc(hidden)]
#[derive(Debug)]
pub struct KindSpec(pub(crate) Spec);

/// A mapped queue segment (opaque).
#[doc(hidden)]
#[derive(Debug)]
pub struct RawCore(pub(crate) Core);

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// Creates, opens or makes anonymous a [`Queue`], [`SimpleQueue`] or
/// [`JoinableQueue`], with a bound in items (`maxsize`, 0 for none) and a
/// ring of `capacity` bytes.
///
/// A named queue lives in `/dev/shm/<name>` with owner-only permissions;
/// the creating process owns it and removes it when its handle is dropped
/// (or with `unlink`). Opening checks the layout header: magic number,
/// layout version, queue kind and item type, and sizes.
///
/// ```
/// use ipc_queue::Queue;
/// # let name = format!("ipcdoc_{}_builder", std::process::id());
/// let owner = Queue::<String>::builder().maxsize(100).capacity(64 << 10).create(&name)?;
/// let other = Queue::<String>::builder().open(&name)?; // usually another process
/// owner.put("hello".to_owned())?;
/// assert_eq!(other.get()?, "hello");
/// assert!(Queue::<u64>::builder().open(&name).is_err()); // wrong item type
/// # Ok::<(), ipc_core::Error>(())
/// ```
///
/// [`SimpleQueue`]: crate::SimpleQueue
/// [`JoinableQueue`]: crate::JoinableQueue
#[derive(Debug)]
pub struct Builder<Q> {
    maxsize: usize,
    capacity: usize,
    _queue: PhantomData<fn() -> Q>,
}

impl<Q> Clone for Builder<Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q> Copy for Builder<Q> {}

impl<Q: QueueKind> Builder<Q> {
    pub(crate) fn new() -> Self {
        Builder {
            maxsize: 0,
            capacity: DEFAULT_CAPACITY,
            _queue: PhantomData,
        }
    }

    /// The most items the queue holds at once (Python's `maxsize`); 0,
    /// the default, means no bound but the capacity in bytes.
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// The size of the ring in bytes (default [`DEFAULT_CAPACITY`]),
    /// rounded up to a multiple of 8 and to at least 64. Each item takes
    /// its encoded size rounded up to 8, plus 8; an item that could not fit
    /// even in an empty ring is refused at once with [`Error::TooLarge`].
    /// The queue's memory is this plus a fixed 512-byte header; nothing
    /// grows per item.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    fn params(&self) -> Result<Params> {
        let simple = Q::spec().0.kind == Kind::SimpleQueue;
        Ok(Params {
            capacity: layout::round_capacity(self.capacity)?,
            // A SimpleQueue has no bound in items.
            maxsize: if simple { 0 } else { self.maxsize },
        })
    }

    /// An anonymous queue (a memfd), handed to children with
    /// [`Process::pass`](ipc_core::process::Process::pass).
    pub fn anonymous(self) -> Result<Q> {
        let params = self.params()?;
        Ok(Q::from_core(RawCore(Core::create(
            Place::Anonymous,
            &Q::spec().0,
            params,
        )?)))
    }

    /// Creates the named queue `/dev/shm/<name>`; fails if the name exists.
    /// This process owns it and removes it when the handle is dropped.
    pub fn create(self, name: &str) -> Result<Q> {
        let params = self.params()?;
        Ok(Q::from_core(RawCore(Core::create(
            Place::Named(name),
            &Q::spec().0,
            params,
        )?)))
    }

    /// Opens the existing named queue; [`Error::NotFound`] if there is
    /// none. The maxsize and capacity are the creator's (this builder's are
    /// ignored). A segment of another kind, item type, layout version or
    /// size, or one holding garbage, is refused with a message saying what
    /// was found.
    pub fn open(self, name: &str) -> Result<Q> {
        Ok(Q::from_core(RawCore(Core::open(name, &Q::spec().0)?)))
    }

    /// Creates the named queue, or opens it if it exists; `is_owner()`
    /// [`Queue::is_owner`] says which happened.
    pub fn open_or_create(self, name: &str) -> Result<Q> {
        let params = self.params()?;
        Ok(Q::from_core(RawCore(Core::open_or_create(
            name,
            &Q::spec().0,
            params,
        )?)))
    }
}

/// A multi-producer, multi-consumer FIFO queue of `T` in shared memory:
/// Python's `multiprocessing.Queue`, without its feeder thread or a broker
/// process. Every item reaches exactly one getter.
///
/// Items are serde values encoded with postcard ([`ipc_core::codec`]);
/// `put_bytes` / `get_bytes_into` move raw bytes without encoding or
/// allocating. All methods take `&self`: a handle can be shared by threads.
/// A process killed with `SIGKILL` at any point leaves a queue the others
/// keep using (see the [crate docs](crate)).
///
/// ```
/// use ipc_core::process::Process;
/// use ipc_queue::Queue;
///
/// let q = Queue::<Option<i32>>::new()?;
/// let mut child = Process::new().pass("q", &q)?.fork({
///     let q = &q;
///     move || -> ipc_core::Result<()> {
///         for i in 1..=3 {
///             q.put(Some(i))?;
///         }
///         Ok(q.put(None)?)
///     }
/// })?;
/// let mut got = Vec::new();
/// while let Some(n) = q.get()? {
///     got.push(n);
/// }
/// assert_eq!(got, [1, 2, 3]);
/// assert!(child.join()?.success());
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct Queue<T> {
    pub(crate) core: Core,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.core.shm().name())
            .field("capacity", &self.core.ring.capacity)
            .field("maxsize", &self.core.ring.maxsize)
            .finish_non_exhaustive()
    }
}

impl<T> sealed::Sealed for Queue<T> {}

impl<T> QueueKind for Queue<T> {
    fn spec() -> KindSpec {
        KindSpec(Spec {
            kind: Kind::Queue,
            type_name: std::any::type_name::<T>(),
        })
    }

    fn from_core(core: RawCore) -> Self {
        Queue {
            core: core.0,
            _item: PhantomData,
        }
    }
}

impl<T> Queue<T> {
    /// An anonymous queue with no bound in items and a ring of
    /// [`DEFAULT_CAPACITY`] bytes (Python's `Queue()`).
    pub fn new() -> Result<Self> {
        Self::builder().anonymous()
    }

    /// An anonymous queue of at most `maxsize` items (Python's
    /// `Queue(maxsize)`; 0 for no bound).
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::builder().maxsize(maxsize).anonymous()
    }

    /// A builder for named queues and other sizes.
    pub fn builder() -> Builder<Self> {
        Builder::new()
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    #[cfg(test)]
    pub(crate) fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// Another handle to the same queue (a fresh mapping of the same
    /// segment), for instance to give one to each of several owners in
    /// this process. The new handle never removes a named queue.
    ///
    /// ```
    /// let q = ipc_queue::Queue::<u8>::new()?;
    /// let other = q.try_clone()?;
    /// q.put(7)?;
    /// assert_eq!(other.get()?, 7);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        self.clone_as()
    }

    /// Another handle to this queue's segment, of the kind `Q` (the kind
    /// the segment holds: a `JoinableQueue`'s queue clones as one).
    pub(crate) fn clone_as<Q: QueueKind>(&self) -> Result<Q> {
        let handle = self.core.shm().handle();
        let fds = handle
            .fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<_>>>()?;
        inherit(Inherited {
            fds,
            text: handle.text,
        })
    }

    /// Puts raw bytes as one item, waiting for room as long as it takes.
    /// A typed getter decodes them with [`ipc_core::codec`].
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.core.put(bytes, Deadline::Never)
    }

    /// Like [`put_bytes`](Self::put_bytes), waiting at most `timeout`
    /// ([`Error::Timeout`]).
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.core.put(bytes, Deadline::after(timeout))
    }

    /// Puts raw bytes if there is room now, else [`Error::Full`].
    pub fn put_bytes_nowait(&self, bytes: &[u8]) -> Result<()> {
        self.core.put(bytes, Deadline::Now)
    }

    /// Takes the next item's bytes, waiting as long as it takes.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.core.get(Dest::Vec(&mut out), Deadline::Never)?;
        Ok(out)
    }

    /// Like [`get_bytes`](Self::get_bytes), waiting at most `timeout`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.core
            .get(Dest::Vec(&mut out), Deadline::after(timeout))?;
        Ok(out)
    }

    /// Takes the next item's bytes if there is one now, else
    /// [`Error::Empty`].
    pub fn get_bytes_nowait(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.core.get(Dest::Vec(&mut out), Deadline::Now)?;
        Ok(out)
    }

    /// Copies the next item's bytes into `buf` without allocating and
    /// returns their number; waits as long as it takes. If `buf` is too
    /// short, [`Error::BufferTooShort`] says how long it must be and the
    /// item stays in the queue.
    ///
    /// ```
    /// let q = ipc_queue::Queue::<()>::new()?;
    /// q.put_bytes(b"hello")?;
    /// let mut buf = [0u8; 2];
    /// assert!(matches!(q.get_bytes_into(&mut buf), Err(ipc_core::Error::BufferTooShort { needed: 5 })));
    /// let mut buf = [0u8; 16];
    /// assert_eq!(q.get_bytes_into(&mut buf)?, 5);
    /// assert_eq!(&buf[..5], b"hello");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn get_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.core.get(Dest::Slice(buf), Deadline::Never)
    }

    /// Like [`get_bytes_into`](Self::get_bytes_into), waiting at most
    /// `timeout`.
    pub fn get_bytes_into_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.core.get(Dest::Slice(buf), Deadline::after(timeout))
    }

    /// Like [`get_bytes_into`](Self::get_bytes_into) if an item is there
    /// now, else [`Error::Empty`].
    pub fn get_bytes_into_nowait(&self, buf: &mut [u8]) -> Result<usize> {
        self.core.get(Dest::Slice(buf), Deadline::Now)
    }

    /// The number of items in the queue (Python's `qsize()`); a snapshot
    /// that other processes may change at once, taken from a head and a
    /// tail that were in the queue together, never more than it can hold.
    /// A queue whose words are corrupt counts 0 (its puts and gets report
    /// [`Error::Corrupt`](ipc_core::Error::Corrupt)).
    pub fn qsize(&self) -> usize {
        self.core.items()
    }

    /// Whether the queue holds no items (a snapshot).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` items (a snapshot), so that a
    /// put would wait; always `false` without a maxsize. A put can still
    /// find no room when the ring's bytes run out first. Reservations
    /// being written ([`reserve`](Self::reserve)) count here, and so do
    /// items taken while an item before them is still borrowed in place
    /// ([`get_in_place`](Self::get_in_place)), until that borrow ends, as
    /// their records keep their place in the ring; neither counts in
    /// [`qsize`](Self::qsize).
    pub fn full(&self) -> bool {
        self.core.at_maxsize()
    }

    /// The bound in items (0: none).
    pub fn maxsize(&self) -> usize {
        self.core.ring.maxsize
    }

    /// The size of the ring in bytes.
    pub fn capacity(&self) -> usize {
        self.core.ring.capacity as usize
    }

    /// The bytes of the ring in use (a snapshot, as consistent as
    /// [`qsize`](Self::qsize)'s).
    pub fn used_bytes(&self) -> usize {
        self.core.used_bytes()
    }

    /// Closes the queue for every process: later puts fail with
    /// [`Error::Closed`]; getters take what is left and are then told
    /// [`Error::Closed`]; getters asleep on an empty queue wake up. Closing
    /// twice is fine.
    pub fn close(&self) -> Result<()> {
        self.core.close()
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Whether this handle created the queue (and so unlinks a named one on
    /// drop). The segment itself is not handed out: raw writes to the ring
    /// would bypass the queue's lock.
    pub fn is_owner(&self) -> bool {
        self.core.shm().is_owner()
    }

    /// How many times a process found the queue's lock held by a process
    /// that had died, and repaired the queue: a diagnostic for crash tests
    /// and monitoring.
    pub fn recoveries(&self) -> u32 {
        self.core.recoveries()
    }

    /// The name of a named queue (`/dev/shm/<name>`).
    pub fn name(&self) -> Option<&str> {
        self.core.shm().name()
    }

    /// Removes a named queue's name now; processes that have it open keep
    /// using it.
    pub fn unlink(&self) -> Result<()> {
        self.core.shm().unlink()
    }
}

fn put_typed<T: Serialize + ?Sized>(core: &Core, item: &T, deadline: Deadline) -> Result<()> {
    with_scratch(|buf| {
        ipc_core::codec::encode_into(item, buf)?;
        core.put(buf, deadline)
    })
}

fn get_typed<T: DeserializeOwned>(core: &Core, deadline: Deadline) -> Result<T> {
    with_scratch(|buf| {
        core.get(Dest::Vec(buf), deadline)?;
        ipc_core::codec::decode(buf)
    })
}

pub(crate) fn put_owned<T: Serialize>(
    core: &Core,
    item: T,
    deadline: Deadline,
) -> std::result::Result<(), PutError<T>> {
    put_typed(core, &item, deadline).map_err(|error| PutError { item, error })
}

pub(crate) fn get_owned<T: DeserializeOwned>(core: &Core, deadline: Deadline) -> Result<T> {
    get_typed(core, deadline)
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts `item`, waiting for room as long as it takes (Python's
    /// `put(item)`). On failure the item comes back in the [`PutError`].
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        put_owned(&self.core, item, Deadline::Never)
    }

    /// Puts `item`, waiting at most `timeout` for room (Python's
    /// `put(item, timeout=t)`): [`Error::Timeout`] after it.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        put_owned(&self.core, item, Deadline::after(timeout))
    }

    /// Puts `item` if there is room now (Python's `put_nowait`):
    /// [`Error::Full`] otherwise.
    pub fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>> {
        put_owned(&self.core, item, Deadline::Now)
    }

    /// Takes the next item, waiting as long as it takes (Python's
    /// `get()`); [`Error::Closed`] once the queue is closed and drained.
    /// Bytes that do not decode as `T` are [`Error::Decode`]; that item is
    /// consumed.
    pub fn get(&self) -> Result<T> {
        get_owned(&self.core, Deadline::Never)
    }

    /// Takes the next item, waiting at most `timeout` (Python's
    /// `get(timeout=t)`): [`Error::Timeout`] after it.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        get_owned(&self.core, Deadline::after(timeout))
    }

    /// Takes the next item if there is one now (Python's `get_nowait`):
    /// [`Error::Empty`] otherwise.
    pub fn get_nowait(&self) -> Result<T> {
        get_owned(&self.core, Deadline::Now)
    }
}

/// Async forms (feature `tokio`): futures that run on tokio or any other
/// executor and never block a thread. While one waits, the process's one
/// shared-memory waiting thread ([`ipc_shm::watch`]) watches the queue's
/// word for it. The items are the same as the blocking forms': an async
/// end talks to a blocking one, in this process or another.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// let q = ipc_queue::Queue::<String>::new()?;
/// let other = q.try_clone()?;
/// let getter = tokio::spawn(async move { other.get_async().await });
/// q.put_async("hello".to_owned()).await.map_err(|e| e.error)?;
/// assert_eq!(getter.await.unwrap()?, "hello");
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
impl<T> Queue<T> {
    /// Puts raw bytes as one item, awaiting room. Cancel safe: dropped
    /// before it returned, it put nothing.
    pub fn put_bytes_async<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
        // The core's future itself, not one wrapped around it: a level of
        // state less per item.
        self.core.put_async(bytes)
    }

    /// Takes the next item's bytes, awaiting one. Cancel safe: dropped
    /// before it returned, it took nothing.
    pub async fn get_bytes_async(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.core.get_async(Dest::Vec(&mut out)).await?;
        Ok(out)
    }

    /// Copies the next item's bytes into `buf`, awaiting one; see
    /// [`get_bytes_into`](Self::get_bytes_into). Cancel safe.
    pub fn get_bytes_into_async<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = Result<usize>> + Send + 'a {
        self.core.get_async(Dest::Slice(buf))
    }
}

#[cfg(feature = "tokio")]
impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts `item`, awaiting room. Cancel safe: dropped before it
    /// returned, it put nothing (and the item is dropped with it).
    pub async fn put_async(&self, item: T) -> std::result::Result<(), PutError<T>> {
        let mut bytes = Vec::new();
        if let Err(error) = ipc_core::codec::encode_into(&item, &mut bytes) {
            return Err(PutError { item, error });
        }
        match self.core.put_async(&bytes).await {
            Ok(()) => Ok(()),
            Err(error) => Err(PutError { item, error }),
        }
    }

    /// Takes the next item, awaiting one; [`Error::Closed`] once the queue
    /// is closed and drained. Cancel safe: dropped before it returned, it
    /// took nothing.
    pub async fn get_async(&self) -> Result<T> {
        let bytes = self.get_bytes_async().await?;
        ipc_core::codec::decode(&bytes)
    }
}

/// A queue crosses to a child as its segment: a named one by name, an
/// anonymous one by its memfd. The child checks the header again.
impl<T> Inheritable for Queue<T> {
    fn handle(&self) -> Handle<'_> {
        self.core.shm().handle()
    }

    fn from_inherited(inherited: Inherited) -> Result<Self> {
        inherit(inherited)
    }
}

pub(crate) fn inherit<Q: QueueKind>(inherited: Inherited) -> Result<Q> {
    Ok(Q::from_core(RawCore(Core::inherit(
        inherited,
        &Q::spec().0,
    )?)))
}

impl<T: Serialize> Sender<T> for Queue<T> {
    fn send(&mut self, msg: &T) -> Result<()> {
        put_typed(&self.core, msg, Deadline::Never)
    }
}

impl<T: DeserializeOwned> Receiver<T> for Queue<T> {
    fn recv(&mut self) -> Result<T> {
        get_typed(&self.core, Deadline::Never)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        get_typed(&self.core, Deadline::after(timeout))
    }

    fn try_recv(&mut self) -> Result<T> {
        get_typed(&self.core, Deadline::Now)
    }
}

impl<T> ByteSender for Queue<T> {
    fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.put_bytes(buf)
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
        self.get_bytes_into(buf)
    }
}
