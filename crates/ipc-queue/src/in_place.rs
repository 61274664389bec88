//! In-place items: a put that writes its item where it will lie in the
//! queue's ring ([`Queue::reserve`]), and a get that reads it there
//! ([`Queue::get_in_place`]), so a large item is not copied into the ring
//! from a buffer of the producer's, nor out of it into one of the
//! consumer's.
//!
//! A reservation is a *claim* on ring space past the tail: the producers'
//! lock is held only while the space is found, and the other producers go
//! on while it is written. Their items (and other reservations) go after
//! it, and are published in claim order: a put that returns `Ok` behind an
//! open reservation is in the queue, and getters see it once the
//! reservation is committed or given up. A borrowed item is the same on
//! the consumers' side, a *borrow*: the consumers' lock is held only while
//! the item is found, and the other consumers take the items after it
//! while it is read (in place or copying); the ring's space comes back in
//! order, when the items before it are released too. Up to 16 claims and
//! 16 borrows can be open at once, counting the puts and copying gets
//! behind them; past that, a put waits as for room and a get as for an
//! item. Both are tied to the thread that made them (they are not `Send`),
//! as the slot's mutex is, and to the process: a copy of one in a child
//! forked while it was held refuses to be used there (a panic on reading
//! or writing it, an error on commit) and leaves the parent's alone. While
//! this thread holds a borrowed item, a put that would have to wait for
//! room fails at once, and so does a get that would have to wait for a
//! borrow slot; while it holds a reservation, a get that would have to
//! wait for an item fails at once (only this thread could end those
//! waits). A get of a closed queue with nothing left waits for items
//! borrowed by others, which may still be given back, and says `Closed`
//! once none is borrowed, or at once if this thread holds one. Across
//! processes no such check is possible: a process that holds a
//! reservation and waits in a get, while another holds an item and waits
//! in a put on the same queue, waits for good; fill or read a guard, then
//! let it go, before the next call on that queue.
//!
//! # When a process is killed
//!
//! A producer killed while it holds a reservation leaves no item, and its
//! space is used only until the next producer (or a waiting consumer)
//! finds it dead, told by the claim's robust mutex: the claim is then
//! taken back, or, with items claimed after it, published as a void record
//! that getters step over, so those items still arrive. A consumer
//! killed while it holds a borrowed item leaves the item in the queue, and
//! another get takes it again, told by the borrow's robust mutex: the next
//! get at once if the item is the oldest one borrowed, else the first get
//! once the items before it are released (or that finds nothing else to
//! take). So an in-place get delivers **at least once**, where a copying
//! get, whose item is taken the moment it is copied, delivers at most
//! once; an item taken again may come after items put after it. A
//! borrowed item [restored](InPlace::restore), or dropped while its thread
//! unwinds from a panic, is given back the same way, and the next get
//! takes it first (so is one made and dropped inside a destructor that
//! runs during unwinding). So an item that makes every consumer panic or
//! crash is delivered again and again: release an item (or copy what you
//! need out of it) before processing it if the processing may fail. A
//! `JoinableQueue`'s count of unfinished tasks counts puts (and the
//! reservations being written) and `task_done` calls only; call `task_done` after the item is released
//! ([`JoinableQueue::task_done_with`](crate::JoinableQueue::task_done_with)
//! does both, in that order), or a crash in between delivers an item whose
//! task was already counted done.
//!
//! # What other processes can do to a borrowed item
//!
//! Processes that use the queue through this crate never write into a
//! reservation or a borrowed item that is not theirs: the locks, the
//! claims, the borrows and the ring's words keep every byte between the
//! head and the tail for the consumers (each borrowed record for its
//! borrower) and the bytes of each claim past the tail for the producer
//! that holds it. A process that maps the segment and writes anywhere it likes is
//! outside that promise, and so is a second mapping of the segment in this
//! process written through `ipc_shm`: the bytes of a borrowed item may then
//! change while a `&[u8]` (or a `&str` decoded in place) refers to them,
//! which Rust's rules do not allow, so that code's behaviour is no longer
//! defined. The queue itself reads each record's length once, checks it
//! against the ring, and keeps its own copies of the offsets it will
//! store, so such a writer cannot make the queue read or write outside
//! the ring. In-place access is for processes that trust each other; with
//! peers that are not trusted, use the copying `get`, which decodes a
//! private copy.
//!
//! # What the compiler holds you to
//!
//! A slice of a reservation or of a borrowed item cannot outlive it:
//!
//! ```compile_fail
//! let q = ipc_queue::Queue::<()>::new()?;
//! q.put_bytes(b"item")?;
//! let bytes: &[u8] = {
//!     let item = q.get_in_place()?;
//!     &item[..] // `item` does not live long enough
//! };
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! nor can a reservation or an item move to another thread, since the
//! mutex it holds belongs to this one (other threads may read it through a
//! shared reference, with scoped threads):
//!
//! ```compile_fail
//! let q = ipc_queue::Queue::<()>::new()?;
//! let room = q.reserve(4)?;
//! std::thread::scope(|s| {
//!     s.spawn(move || room.commit()); // `Reservation` is not `Send`
//! });
//! # Ok::<(), ipc_core::Error>(())
//! ```

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use ipc_core::{codec, Deadline, Result};
use serde::{Deserialize, Serialize};

use crate::core::{Core, Reserved, Taken};
use crate::sys;
use crate::Queue;

/// Room for one item in the queue's ring, written in place: a slice of
/// the ring (`&mut [u8]` through [`DerefMut`]) that becomes an item when
/// it is [committed](Self::commit). Dropped uncommitted, it makes no
/// item. Made by [`Queue::reserve`].
///
/// ```
/// let q = ipc_queue::Queue::<Vec<u8>>::new()?;
/// let mut room = q.reserve(4)?;
/// room.copy_from_slice(b"ring");
/// room.commit()?;
/// assert_eq!(q.get_bytes()?, b"ring");
///
/// let mut room = q.reserve(100)?;
/// room[..2].copy_from_slice(b"ok");
/// room.truncate(2); // fewer bytes than reserved
/// room.commit()?;
/// drop(q.reserve(8)?); // abandoned: no item
/// assert_eq!(q.get_bytes()?, b"ok");
/// assert!(q.empty());
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[must_use = "a reservation dropped uncommitted makes no item"]
pub struct Reservation<'q> {
    /// Always `Some` but in `drop`.
    reserved: Option<Reserved<'q>>,
    /// The bytes that will be the item (at most the reserved ones).
    len: usize,
    /// The process it was made in (see [`Guarded`]).
    made_in: Guarded,
}

impl Reservation<'_> {
    /// How many bytes the item will have.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the item will be empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes the item its first `len` bytes (no more than it has).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Commits the item: getters see it from now on, or once the
    /// reservations made before it are committed or given up (items are
    /// published in the order their room was claimed). A process killed
    /// during the commit either made the item or left none.
    pub fn commit(mut self) -> Result<()> {
        if !self.made_in.is_this_process() {
            return Err(ipc_core::Error::InvalidArgument(FORKED));
        }
        let reserved = self.reserved.take().expect("Some until dropped");
        reserved.commit(self.len)
    }

    fn reserved(&self) -> &Reserved<'_> {
        self.reserved.as_ref().expect("Some until dropped")
    }
}

/// Dropped uncommitted, a reservation gives its room up; a copy carried
/// into a forked child leaves the parent's claim alone.
impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(reserved) = self.reserved.take() {
            if !self.made_in.is_this_process() {
                reserved.forget();
            }
        }
    }
}

impl Deref for Reservation<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.made_in.assert_this_process();
        let reserved = self.reserved();
        // SAFETY: `reserved` holds a claim on these bytes (its slot's
        // mutex, in this process, just checked), past the tail, for as long
        // as `self` is borrowed; the slice is no longer than the
        // reservation.
        #[allow(unsafe_code)]
        unsafe {
            sys::ring_bytes(reserved.shm(), reserved.payload_off(), self.len)
        }
    }
}

impl DerefMut for Reservation<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.made_in.assert_this_process();
        let reserved = self.reserved();
        // SAFETY: as in `deref`; `&mut self` makes this the only slice of
        // the reservation in this process while it lives.
        #[allow(unsafe_code)]
        unsafe {
            sys::ring_bytes_mut(reserved.shm(), reserved.payload_off(), self.len)
        }
    }
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("len", &self.len)
            .finish()
    }
}

/// The next item of the queue, borrowed where it lies in the ring (`&[u8]`
/// through [`Deref`]). [Releasing](Self::release) it, or dropping it,
/// takes it off the queue; [restored](Self::restore), or dropped while its
/// thread unwinds from a panic, it is given back, and the next get takes
/// it. Made by [`Queue::get_in_place`].
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize)]
/// struct Frame { name: String, pixels: Vec<u8> }
/// // The same fields, borrowed from the ring (postcard encodes both alike).
/// #[derive(Deserialize)]
/// struct FrameRef<'a> { name: &'a str, pixels: &'a [u8] }
///
/// let q = ipc_queue::Queue::<Frame>::new()?;
/// q.put_in_place(&Frame { name: "first".into(), pixels: vec![1, 2, 3] })?;
/// let item = q.get_in_place()?;
/// let frame: FrameRef<'_> = item.decode()?;
/// assert_eq!((frame.name, frame.pixels), ("first", &[1u8, 2, 3][..]));
/// item.release()?;
/// assert!(q.empty());
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[must_use = "an item borrowed and dropped at once is taken off the queue unread"]
pub struct InPlace<'q> {
    /// `None` once released.
    taken: Option<Taken<'q>>,
    /// The process it was made in (see [`Guarded`]).
    made_in: Guarded,
}

impl InPlace<'_> {
    /// Decodes the item, borrowing `&str` and `&[u8]` fields from the ring
    /// where the type has them.
    pub fn decode<'a, U: Deserialize<'a>>(&'a self) -> Result<U> {
        codec::decode_borrowed(self)
    }

    /// Takes the item off the queue (what dropping it does, said aloud,
    /// with the error a drop cannot report: the queue's words found
    /// corrupt).
    ///
    /// # Panics
    ///
    /// In a process forked while the item was borrowed: the borrow, and
    /// its mutex, stayed with the process that made it.
    pub fn release(mut self) -> Result<()> {
        self.made_in.assert_this_process();
        match self.taken.take() {
            Some(taken) => taken.release(),
            None => Ok(()),
        }
    }

    /// Gives the item back: the next get (in any process) takes it before
    /// the items after it.
    ///
    /// ```
    /// let q = ipc_queue::Queue::<()>::new()?;
    /// q.put_bytes(b"first")?;
    /// q.put_bytes(b"second")?;
    /// q.get_in_place()?.restore();
    /// assert_eq!(q.get_bytes()?, b"first");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn restore(mut self) {
        // A borrow dropped unreleased is given back.
        drop(self.taken.take());
    }

    fn taken(&self) -> &Taken<'_> {
        self.taken
            .as_ref()
            .expect("an item is held until it is released")
    }
}

impl Deref for InPlace<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.made_in.assert_this_process();
        let taken = self.taken();
        // SAFETY: `taken` holds an open borrow of the record (in this
        // process, just checked: its slot's mutex is this thread's), which
        // lies between the head and the tail, checked against the ring: no
        // putter writes over it and no getter takes it until the borrow is
        // settled, which needs `self` (by value, or its drop).
        #[allow(unsafe_code)]
        unsafe {
            sys::ring_bytes(taken.shm(), taken.payload_off(), taken.len())
        }
    }
}

impl Drop for InPlace<'_> {
    fn drop(&mut self) {
        if let Some(taken) = self.taken.take() {
            if !self.made_in.is_this_process() {
                // A copy in a forked child: the borrow stayed with the
                // parent.
                taken.forget();
            } else if !std::thread::panicking() {
                let _ = taken.release();
            }
            // Unwinding: dropped unreleased, the item is given back.
        }
    }
}

/// Why a guard made before a fork cannot be used in the child.
const FORKED: &str = "an in-place reservation or item belongs to the process that made it, \
                      not to a child forked while it was held";

/// The process a guard was made in. `Process::fork` takes any closure, so
/// a guard can be copied into a child along with the rest of memory; the
/// mutex it holds stays with the parent (which goes on and releases
/// it), so in the child the guard must not touch the ring.
#[derive(Clone, Copy, Debug)]
struct Guarded {
    forks: u64,
    /// The mutex belongs to this thread: not `Send`, as a `MutexGuard` is
    /// not; but `Sync`, so scoped threads may read one item together.
    _thread: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl Guarded {
    fn here() -> Guarded {
        Guarded {
            forks: ipc_shm::raw::fork_generation(),
            _thread: PhantomData,
        }
    }

    fn is_this_process(&self) -> bool {
        self.forks == ipc_shm::raw::fork_generation()
    }

    #[track_caller]
    fn assert_this_process(&self) {
        assert!(self.is_this_process(), "{FORKED}");
    }
}

impl std::fmt::Debug for InPlace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.taken.as_ref().map(|t| t.len());
        f.debug_struct("InPlace").field("len", &len).finish()
    }
}

fn reserve(core: &Core, len: usize, deadline: Deadline) -> Result<Reservation<'_>> {
    Ok(Reservation {
        reserved: Some(core.reserve(len, deadline)?),
        len,
        made_in: Guarded::here(),
    })
}

fn get_in_place(core: &Core, deadline: Deadline) -> Result<InPlace<'_>> {
    Ok(InPlace {
        taken: Some(core.take(deadline)?),
        made_in: Guarded::here(),
    })
}

/// In-place puts and gets (see the [module](crate::in_place) for what a
/// reservation or a borrowed item holds, and for what a process killed
/// while holding one leaves).
impl<T> Queue<T> {
    /// Reserves room for an item of `len` bytes in the ring, waiting for it
    /// as long as it takes; fill it and [`commit`](Reservation::commit).
    /// [`Error::TooLarge`](ipc_core::Error) if even an empty ring could not
    /// hold it.
    ///
    /// ```
    /// let q = ipc_queue::Queue::<()>::builder().capacity(4 << 20).anonymous()?;
    /// let mut frame = q.reserve(1 << 20)?;
    /// frame.fill(0x80); // written where getters will read it
    /// frame.commit()?;
    /// assert_eq!(q.get_in_place()?.len(), 1 << 20);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn reserve(&self, len: usize) -> Result<Reservation<'_>> {
        reserve(&self.core, len, Deadline::Never)
    }

    /// Like [`reserve`](Self::reserve), waiting at most `timeout`.
    pub fn reserve_timeout(&self, len: usize, timeout: Duration) -> Result<Reservation<'_>> {
        reserve(&self.core, len, Deadline::after(timeout))
    }

    /// Like [`reserve`](Self::reserve) if there is room now, else
    /// [`Error::Full`](ipc_core::Error).
    pub fn reserve_nowait(&self, len: usize) -> Result<Reservation<'_>> {
        reserve(&self.core, len, Deadline::Now)
    }

    /// Borrows the next item where it lies in the ring, waiting as long as
    /// it takes; [`Error::Closed`](ipc_core::Error) once the queue is
    /// closed and drained.
    ///
    /// ```
    /// let q = ipc_queue::Queue::<String>::new()?;
    /// q.put("hello".to_owned())?;
    /// let item = q.get_in_place()?;
    /// let text: &str = item.decode()?; // borrowed from the ring
    /// assert_eq!(text, "hello");
    /// drop(item); // taken off the queue
    /// assert!(q.empty());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn get_in_place(&self) -> Result<InPlace<'_>> {
        get_in_place(&self.core, Deadline::Never)
    }

    /// Like [`get_in_place`](Self::get_in_place), waiting at most
    /// `timeout`.
    pub fn get_in_place_timeout(&self, timeout: Duration) -> Result<InPlace<'_>> {
        get_in_place(&self.core, Deadline::after(timeout))
    }

    /// Like [`get_in_place`](Self::get_in_place) if there is an item now,
    /// else [`Error::Empty`](ipc_core::Error).
    pub fn get_in_place_nowait(&self) -> Result<InPlace<'_>> {
        get_in_place(&self.core, Deadline::Now)
    }
}

/// The in-place forms on an executor (feature `tokio`): the waits for
/// room or for an item are awaited as the async puts and gets await them
/// ([`Queue::put_bytes_async`]); once the future returns, the reservation
/// or the item is held exactly as the blocking forms hold it, so fill or
/// read it without awaiting anything meanwhile (the mutex it holds belongs
/// to the thread; the items put after a reservation wait for it, and so
/// does the ring space of the items got after a borrowed one).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_core::Result<()> {
/// let q = ipc_queue::Queue::<()>::new()?;
/// let mut room = q.reserve_async(5).await?;
/// room.copy_from_slice(b"async");
/// room.commit()?;
/// let item = q.get_in_place_async().await?;
/// assert_eq!(&item[..], b"async");
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
impl<T> Queue<T> {
    /// [`reserve`](Self::reserve), awaiting room. Cancel safe: nothing is
    /// reserved until the future returns the reservation.
    pub async fn reserve_async(&self, len: usize) -> Result<Reservation<'_>> {
        Ok(Reservation {
            reserved: Some(self.core.reserve_async(len).await?),
            len,
            made_in: Guarded::here(),
        })
    }

    /// [`get_in_place`](Self::get_in_place), awaiting an item. Cancel
    /// safe: no item is borrowed, let alone taken, until the future
    /// returns it.
    pub async fn get_in_place_async(&self) -> Result<InPlace<'_>> {
        Ok(InPlace {
            taken: Some(self.core.take_async().await?),
            made_in: Guarded::here(),
        })
    }
}

impl<T: Serialize> Queue<T> {
    /// Puts `item`, encoding it straight into the ring (no buffer of the
    /// process's own in between), waiting for room as long as it takes.
    /// The item is encoded twice, once to learn its size: worth it for a
    /// large item whose fields encode fast (`serde_bytes` byte fields,
    /// strings).
    ///
    /// ```
    /// let q = ipc_queue::Queue::<(u32, String)>::new()?;
    /// q.put_in_place(&(7, "seven".to_owned()))?;
    /// assert_eq!(q.get()?, (7, "seven".to_owned()));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn put_in_place(&self, item: &T) -> Result<()> {
        let mut room = self.reserve(codec::encoded_size(item)?)?;
        let written = codec::encode_to_slice(item, &mut room)?;
        room.truncate(written);
        room.commit()
    }
}
