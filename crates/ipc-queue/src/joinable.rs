//! [`JoinableQueue`] (Python's `multiprocessing.JoinableQueue`) and
//! [`SimpleQueue`] (Python's `multiprocessing.SimpleQueue`), both on the
//! same ring as [`Queue`].

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use ipc_core::process::{Handle, Inheritable, Inherited};
use ipc_core::{ByteReceiver, ByteSender, Deadline, PutError, Receiver, Result, Sender};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::layout::{Kind, Spec};
use crate::queue::{get_owned, inherit, put_owned, sealed, Builder, KindSpec, QueueKind, RawCore};
use crate::{InPlace, Queue, Reservation};

/// A [`Queue`] that also counts unfinished tasks: every put adds one,
/// [`task_done`](Self::task_done) takes one away, and
/// [`join`](Self::join) waits until none is left (Python's
/// `JoinableQueue`). Everything else is as in [`Queue`], method for
/// method.
///
/// ```
/// use ipc_core::process::Process;
/// use ipc_queue::JoinableQueue;
///
/// let q = JoinableQueue::<u32>::new()?;
/// let mut worker = Process::new().pass("q", &q)?.fork({
///     let q = &q;
///     move || -> ipc_core::Result<()> {
///         while let Ok(_task) = q.get() {
///             q.task_done()?;
///         }
///         Ok(())
///     }
/// })?;
/// for task in 0..10 {
///     q.put(task)?;
/// }
/// q.join()?; // every task is done
/// q.close()?;
/// assert!(worker.join()?.success());
/// assert!(q.task_done().is_err()); // more task_done() calls than items
/// # Ok::<(), ipc_core::Error>(())
/// ```
///
/// An item taken by a getter that is killed before calling `task_done`
/// stays unfinished, as in Python: `join` without a timeout would then
/// wait for ever.
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue).finish()
    }
}

impl<T> sealed::Sealed for JoinableQueue<T> {}

impl<T> QueueKind for JoinableQueue<T> {
    fn spec() -> KindSpec {
        KindSpec(Spec {
            kind: Kind::JoinableQueue,
            type_name: std::any::type_name::<T>(),
        })
    }

    fn from_core(core: RawCore) -> Self {
        JoinableQueue {
            queue: Queue::from_core(core),
        }
    }
}

/// Writes methods of a wrapper that hand the call to the same method of
/// its `queue` field, documented as that method.
macro_rules! same_as_queue {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            #[doc = concat!("[`Queue::", stringify!($name), "`], on this queue.")]
            #[inline]
            pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.queue.$name($($arg),*)
            }
        )*
    };
}

impl<T> JoinableQueue<T> {
    same_as_queue! {
        fn put_bytes(&self, bytes: &[u8]) -> Result<()>;
        fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()>;
        fn put_bytes_nowait(&self, bytes: &[u8]) -> Result<()>;
        fn get_bytes(&self) -> Result<Vec<u8>>;
        fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>>;
        fn get_bytes_nowait(&self) -> Result<Vec<u8>>;
        fn get_bytes_into(&self, buf: &mut [u8]) -> Result<usize>;
        fn get_bytes_into_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize>;
        fn get_bytes_into_nowait(&self, buf: &mut [u8]) -> Result<usize>;
        fn reserve(&self, len: usize) -> Result<Reservation<'_>>;
        fn reserve_timeout(&self, len: usize, timeout: Duration) -> Result<Reservation<'_>>;
        fn reserve_nowait(&self, len: usize) -> Result<Reservation<'_>>;
        fn get_in_place(&self) -> Result<InPlace<'_>>;
        fn get_in_place_timeout(&self, timeout: Duration) -> Result<InPlace<'_>>;
        fn get_in_place_nowait(&self) -> Result<InPlace<'_>>;
        fn qsize(&self) -> usize;
        fn empty(&self) -> bool;
        fn full(&self) -> bool;
        fn maxsize(&self) -> usize;
        fn capacity(&self) -> usize;
        fn used_bytes(&self) -> usize;
        fn close(&self) -> Result<()>;
        fn is_closed(&self) -> bool;
        fn is_owner(&self) -> bool;
        fn recoveries(&self) -> u32;
        fn name(&self) -> Option<&str>;
        fn unlink(&self) -> Result<()>;
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    same_as_queue! {
        fn put(&self, item: T) -> std::result::Result<(), PutError<T>>;
        fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>>;
        fn put_nowait(&self, item: T) -> std::result::Result<(), PutError<T>>;
        fn get(&self) -> Result<T>;
        fn get_timeout(&self, timeout: Duration) -> Result<T>;
        fn get_nowait(&self) -> Result<T>;
        fn put_in_place(&self, item: &T) -> Result<()>;
    }
}

/// The in-place async forms of [`Queue`]'s.
#[cfg(feature = "tokio")]
impl<T> JoinableQueue<T> {
    /// [`Queue::reserve_async`].
    pub async fn reserve_async(&self, len: usize) -> Result<Reservation<'_>> {
        self.queue.reserve_async(len).await
    }

    /// [`Queue::get_in_place_async`].
    pub async fn get_in_place_async(&self) -> Result<InPlace<'_>> {
        self.queue.get_in_place_async().await
    }
}

/// The async forms of [`Queue`]'s, and [`join_async`](Self::join_async).
#[cfg(feature = "tokio")]
impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// [`Queue::put_async`].
    pub async fn put_async(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.queue.put_async(item).await
    }

    /// [`Queue::get_async`].
    pub async fn get_async(&self) -> Result<T> {
        self.queue.get_async().await
    }
}

impl<T> JoinableQueue<T> {
    /// An anonymous joinable queue with no bound in items.
    pub fn new() -> Result<Self> {
        Self::builder().anonymous()
    }

    /// An anonymous joinable queue of at most `maxsize` items.
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::builder().maxsize(maxsize).anonymous()
    }

    /// A builder for named joinable queues and other sizes.
    pub fn builder() -> Builder<Self> {
        Builder::new()
    }

    /// Marks one task done. More calls than items put is
    /// [`ipc_core::Error::InvalidArgument`] (Python's `ValueError`).
    pub fn task_done(&self) -> Result<()> {
        self.queue.core().task_done()
    }

    /// Takes an item borrowed in place off the queue, then marks its task
    /// done: in that order, so that a process killed in between misses a
    /// `task_done` (as with a copying get) rather than leaving the item to
    /// be delivered, and counted, again.
    ///
    /// ```
    /// let q = ipc_queue::JoinableQueue::<()>::new()?;
    /// q.put_bytes(b"job")?;
    /// let item = q.get_in_place()?;
    /// assert_eq!(&item[..], b"job");
    /// q.task_done_with(item)?;
    /// q.join()?;
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn task_done_with(&self, item: InPlace<'_>) -> Result<()> {
        item.release()?;
        self.task_done()
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.queue.core().join(Deadline::Never)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`
    /// ([`ipc_core::Error::Timeout`]).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.queue.core().join(Deadline::after(timeout))
    }

    /// Awaits the moment every item put has been marked done (feature
    /// `tokio`; on any executor). Cancel safe.
    #[cfg(feature = "tokio")]
    pub async fn join_async(&self) -> Result<()> {
        self.queue.core().join_async().await
    }

    /// The number of items put and not yet marked done (a snapshot).
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.core().unfinished()
    }

    /// Another handle to the same joinable queue in this process (to move
    /// to another thread, say); see [`Queue::try_clone`].
    ///
    /// ```
    /// let q = ipc_queue::JoinableQueue::<u8>::new()?;
    /// let other = q.try_clone()?;
    /// other.put(7)?;
    /// assert_eq!(q.get()?, 7);
    /// q.task_done()?;
    /// other.join()?;
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        self.queue.clone_as()
    }
}

/// A plain FIFO with `put`, `get`, `empty` and `close` (Python's
/// `SimpleQueue`): no bound in items, no timeouts, no `qsize`.
///
/// ```
/// let q = ipc_queue::SimpleQueue::<bool>::new()?;
/// assert!(q.empty());
/// q.put(true)?;
/// assert!(!q.empty());
/// assert!(q.get()?);
/// q.close()?;
/// q.close()?; // twice is fine
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimpleQueue").field(&self.queue).finish()
    }
}

impl<T> sealed::Sealed for SimpleQueue<T> {}

impl<T> QueueKind for SimpleQueue<T> {
    fn spec() -> KindSpec {
        KindSpec(Spec {
            kind: Kind::SimpleQueue,
            type_name: std::any::type_name::<T>(),
        })
    }

    fn from_core(core: RawCore) -> Self {
        SimpleQueue {
            queue: Queue::from_core(core),
            _item: PhantomData,
        }
    }
}

impl<T> SimpleQueue<T> {
    /// An anonymous simple queue.
    pub fn new() -> Result<Self> {
        Self::builder().anonymous()
    }

    /// A builder for named simple queues and other capacities (a maxsize
    /// given to it is ignored: a simple queue has none).
    pub fn builder() -> Builder<Self> {
        Builder::new()
    }

    /// Another handle to the same simple queue in this process.
    ///
    /// ```
    /// let q = ipc_queue::SimpleQueue::<u8>::new()?;
    /// q.try_clone()?.put(7)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        self.queue.clone_as()
    }

    /// Whether the queue holds no items (a snapshot).
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes the queue (see [`Queue::close`]); twice is fine.
    pub fn close(&self) -> Result<()> {
        self.queue.close()
    }

    /// Puts raw bytes as one item.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.queue.put_bytes(bytes)
    }

    /// Takes the next item's bytes.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        self.queue.get_bytes()
    }

    /// Whether this handle created the queue.
    pub fn is_owner(&self) -> bool {
        self.queue.is_owner()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Puts `item`, waiting for room in the ring if need be.
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        put_owned(self.queue.core(), item, Deadline::Never)
    }

    /// Takes the next item, waiting as long as it takes;
    /// [`ipc_core::Error::Closed`] once closed and drained.
    pub fn get(&self) -> Result<T> {
        get_owned(self.queue.core(), Deadline::Never)
    }
}

macro_rules! forward_traits {
    ($ty:ident, $($field:tt)+) => {
        impl<T> Inheritable for $ty<T> {
            fn handle(&self) -> Handle<'_> {
                self.$($field)+.handle()
            }

            fn from_inherited(inherited: Inherited) -> Result<Self> {
                inherit(inherited)
            }
        }

        impl<T: Serialize> Sender<T> for $ty<T> {
            fn send(&mut self, msg: &T) -> Result<()> {
                self.$($field)+.send(msg)
            }
        }

        impl<T: DeserializeOwned> Receiver<T> for $ty<T> {
            fn recv(&mut self) -> Result<T> {
                Receiver::<T>::recv(&mut self.$($field)+)
            }

            fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
                Receiver::<T>::recv_timeout(&mut self.$($field)+, timeout)
            }

            fn try_recv(&mut self) -> Result<T> {
                Receiver::<T>::try_recv(&mut self.$($field)+)
            }
        }

        impl<T> ByteSender for $ty<T> {
            fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
                self.$($field)+.send_bytes(buf)
            }
        }

        impl<T> ByteReceiver for $ty<T> {
            fn recv_bytes(&mut self) -> Result<Vec<u8>> {
                self.$($field)+.recv_bytes()
            }

            fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
                self.$($field)+.recv_bytes_timeout(timeout)
            }

            fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
                self.$($field)+.try_recv_bytes()
            }

            fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
                self.$($field)+.recv_bytes_into(buf)
            }
        }
    };
}

forward_traits!(JoinableQueue, queue);
forward_traits!(SimpleQueue, queue);
