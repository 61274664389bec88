//! The one object model of the workspace: every object that lives in
//! shared memory (a `Value`, an `Array`, a lock, ipc-queue's queues) is a
//! segment that starts with the same header, is validated the same way,
//! records the same creator identity, and is created, opened, adopted and
//! reclaimed by the same code.
//!
//! ```text
//! offset  0  magic        u64  MAGIC_INIT while the creator works, MAGIC once published
//!         8  state        u32  0 while the creator initialises, 1 when ready (a futex)
//!        12  version      u32  LAYOUT_VERSION
//!        16  kind         u32  Kind
//!        24  elem_size    u64  size_of::<T>()
//!        32  elem_align   u64  align_of::<T>()
//!        40  len          u64  number of elements (a queue: ring bytes)
//!        48  type_hash    u64  FNV-1a of std::any::type_name::<T>()
//!        56  data_offset  u64  where the elements start
//!        64  total_size   u64  bytes the object needs
//!        80  creator      u64  who created or now owns it (see `creator`)
//!        88  type_name    [u8; 40]  the type's name, cut short, for messages
//!       128  the kind's control block (robust mutexes, a queue's words)
//!            the data, aligned for T
//! ```
//!
//! # Creating, and creators that die
//!
//! A creator makes the name with `O_EXCL`, takes an exclusive `flock` on
//! it, writes the header with `MAGIC_INIT` (before sizing the segment, so
//! that a segment with a size always says whose it is), sizes it,
//! initialises the object, publishes it (magic, then state, then a wake-up)
//! and lets the `flock` go. The kernel drops the `flock` of a process that
//! dies, so an opener that finds an unpublished object and can take the
//! `flock` knows its creator is gone: `open` reports
//! [`Error::Abandoned`] at once, `open_or_create` removes the name (under
//! the `flock`, after checking that the name still leads to the same
//! segment) and creates it afresh. A complete object whose recorded creator
//! died is adopted by `open_or_create` (it becomes the owner that removes
//! it), and [`remove_if_orphaned`] / [`remove_orphans`] remove such
//! leftovers by name or prefix.
//!
//! The type check is best effort: two different types with the same size,
//! alignment and type name are indistinguishable, and `type_name` is not
//! guaranteed stable between compiler versions.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use ipc_core::process::{Handle, Inherited};
use ipc_core::{Deadline, Error, Mismatch, Property, Result};

use crate::creator;
use crate::shm::{self, create_or_open, Claim, SharedMemory};
use crate::sys::futex;
use crate::sys::map::Mapping;
use crate::sys::mutex::{MutexKind, MUTEX_AREA};
use crate::sys::robust;

/// `"ipcobj\0\x03"`: a published object.
const MAGIC: u64 = u64::from_le_bytes(*b"ipcobj\0\x03");
/// `"ipcobj\0\0"`: an object its creator is still making.
const MAGIC_INIT: u64 = u64::from_le_bytes(*b"ipcobj\0\0");
/// Bumped whenever the header or the layout of any kind changes
/// incompatibly.
pub const LAYOUT_VERSION: u32 = 3;
/// The bytes of the header; a kind's control block starts here.
pub const HEADER_SIZE: usize = 128;
/// Where the robust mutex of the ipc-shm kinds that lock is.
pub(crate) const MUTEX_OFFSET: usize = HEADER_SIZE;
const STATE_OFFSET: usize = 8;
const CREATOR_OFFSET: usize = 80;
const STATE_READY: u32 = 1;
const TYPE_NAME_LEN: usize = 40;
/// How long an opener waits for a live creator that is initialising.
const INIT_WAIT: Duration = Duration::from_secs(2);
/// How often an opener looks again while a creator works (a creator that
/// dies wakes nobody).
const CREATOR_POLL: Duration = Duration::from_millis(2);

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(Header, state) == STATE_OFFSET);
const _: () = assert!(std::mem::offset_of!(Header, creator) == CREATOR_OFFSET);

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: u64,
    state: u32,
    version: u32,
    kind: u32,
    reserved: u32,
    elem_size: u64,
    elem_align: u64,
    len: u64,
    type_hash: u64,
    data_offset: u64,
    total_size: u64,
    reserved2: u64,
    creator: u64,
    type_name: [u8; TYPE_NAME_LEN],
}

/// What an object is: the kinds of every crate of the workspace, so that
/// a segment of one is never opened as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum Kind {
    /// [`Value`](crate::Value).
    Value = 1,
    /// [`RawValue`](crate::RawValue).
    RawValue = 2,
    /// [`Array`](crate::Array).
    Array = 3,
    /// [`RawArray`](crate::RawArray).
    RawArray = 4,
    /// [`Lock`](crate::Lock).
    Lock = 5,
    /// [`RLock`](crate::RLock).
    RLock = 6,
    /// [`Semaphore`](crate::Semaphore).
    Semaphore = 7,
    /// [`BoundedSemaphore`](crate::BoundedSemaphore).
    BoundedSemaphore = 8,
    /// [`Event`](crate::Event).
    Event = 9,
    /// [`Condition`](crate::Condition).
    Condition = 10,
    /// [`Barrier`](crate::Barrier).
    Barrier = 11,
    /// ipc-queue's `Queue`.
    Queue = 101,
    /// ipc-queue's `SimpleQueue`.
    SimpleQueue = 102,
    /// ipc-queue's `JoinableQueue`.
    JoinableQueue = 103,
}

impl Kind {
    const ALL: [Kind; 14] = [
        Kind::Value,
        Kind::RawValue,
        Kind::Array,
        Kind::RawArray,
        Kind::Lock,
        Kind::RLock,
        Kind::Semaphore,
        Kind::BoundedSemaphore,
        Kind::Event,
        Kind::Condition,
        Kind::Barrier,
        Kind::Queue,
        Kind::SimpleQueue,
        Kind::JoinableQueue,
    ];

    /// Whether objects of this ipc-shm kind have a robust mutex at
    /// `MUTEX_OFFSET`.
    pub(crate) fn has_mutex(self) -> bool {
        matches!(
            self,
            Kind::Value | Kind::Array | Kind::Lock | Kind::RLock | Kind::Condition | Kind::Barrier
        )
    }

    fn from_u32(n: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == n)
    }

    /// The kind's type name, `Value`, `JoinableQueue` ...
    pub fn name(self) -> &'static str {
        match self {
            Kind::Value => "Value",
            Kind::RawValue => "RawValue",
            Kind::Array => "Array",
            Kind::RawArray => "RawArray",
            Kind::Lock => "Lock",
            Kind::RLock => "RLock",
            Kind::Semaphore => "Semaphore",
            Kind::BoundedSemaphore => "BoundedSemaphore",
            Kind::Event => "Event",
            Kind::Condition => "Condition",
            Kind::Barrier => "Barrier",
            Kind::Queue => "Queue",
            Kind::SimpleQueue => "SimpleQueue",
            Kind::JoinableQueue => "JoinableQueue",
        }
    }

    fn with_article(self) -> String {
        let name = self.name();
        let article = if name.starts_with(['A', 'E']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {name}")
    }
}

/// What an object is created as, or expected to be on open: its kind, its
/// element type, and the control block between the header and the data.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    kind: Kind,
    elem_size: usize,
    elem_align: usize,
    type_hash: u64,
    type_name: &'static str,
    control: usize,
    mutexes: &'static [usize],
}

impl Spec {
    /// An ipc-shm object of elements of type `T`.
    pub(crate) fn of<T: Pod>(kind: Kind) -> Spec {
        Spec::new(
            kind,
            std::any::type_name::<T>(),
            std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
            MUTEX_AREA,
            if kind.has_mutex() {
                &[MUTEX_OFFSET]
            } else {
                &[]
            },
        )
    }

    /// An object of `kind` whose elements are `elem_size` bytes aligned to
    /// `elem_align`, named `type_name` (checked on open), with a control
    /// block of `control` bytes after the header that holds robust mutexes
    /// at the offsets `mutexes` (from the start of the segment; initialised
    /// on create, and kept mapped on drop while this process holds one).
    ///
    /// ```
    /// use ipc_shm::raw::{Kind, Spec, HEADER_SIZE, ROBUST_MUTEX_SIZE};
    /// let spec = Spec::new(Kind::Queue, "alloc::string::String", 1, 8, 512, &[HEADER_SIZE]);
    /// assert_eq!(spec.layout(64)?.data_offset, HEADER_SIZE + 512);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If a mutex is outside the control block or not aligned to 8.
    pub fn new(
        kind: Kind,
        type_name: &'static str,
        elem_size: usize,
        elem_align: usize,
        control: usize,
        mutexes: &'static [usize],
    ) -> Spec {
        for &at in mutexes {
            assert!(
                at >= HEADER_SIZE && at + MUTEX_AREA <= HEADER_SIZE + control && at % 8 == 0,
                "a mutex at {at} is outside a control block of {control} bytes"
            );
        }
        Spec {
            kind,
            elem_size,
            elem_align,
            type_hash: fnv1a(type_name.as_bytes()),
            type_name,
            control,
            mutexes,
        }
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where the parts of an object of `len` elements go.
    pub fn layout(&self, len: usize) -> Result<Layout> {
        if !self.elem_align.is_power_of_two() || self.elem_align > 4096 {
            return Err(Error::InvalidArgument(
                "element types aligned to more than a page are not supported",
            ));
        }
        let data_offset = (HEADER_SIZE + self.control).next_multiple_of(self.elem_align.max(8));
        let total = self
            .elem_size
            .checked_mul(len)
            .and_then(|n| n.checked_add(data_offset))
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or(Error::InvalidArgument("the object is too large"))?;
        Ok(Layout {
            data_offset,
            len,
            total,
        })
    }

    fn mutex_kind(&self) -> MutexKind {
        if self.kind == Kind::RLock {
            MutexKind::Recursive
        } else {
            MutexKind::ErrorCheck
        }
    }
}

/// Where an object's parts are, in bytes from the start of its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layout {
    /// Where the elements start.
    pub data_offset: usize,
    /// How many elements there are.
    pub len: usize,
    /// The bytes the object takes.
    pub total: usize,
}

/// Where a new object lives.
#[derive(Clone, Copy, Debug)]
pub enum Place<'a> {
    /// `/dev/shm/<name>`.
    Named(&'a str),
    /// A memfd, for children.
    Anonymous,
}

/// A segment holding one initialised, validated object of the workspace.
///
/// Dropped while a thread of this process holds one of its mutexes without
/// a guard (Python's `acquire()` with no `release()`), it stays mapped
/// until the process ends: the thread's robust futex list links into the
/// mutex, and the kernel and glibc write through those links.
#[derive(Debug)]
pub struct Object {
    pub(crate) shm: SharedMemory,
    pub(crate) layout: Layout,
    mutexes: &'static [usize],
}

impl Object {
    /// Creates an object of `len` elements: writes the header, initialises
    /// the spec's mutexes, lets `init` fill in the control block and the
    /// data, then publishes the header. [`Error::AlreadyExists`] if the
    /// name exists.
    pub fn create(
        place: Place<'_>,
        spec: &Spec,
        len: usize,
        init: impl FnOnce(&SharedMemory, &Layout),
    ) -> Result<Object> {
        let layout = spec.layout(len)?;
        let header = header_bytes(spec, &layout);
        // The flock is held until the object is published (see the module
        // docs); dropping it releases it.
        let (mut shm, _creating) = match place {
            Place::Named(name) => {
                let (shm, lock) = SharedMemory::create_locked(name, layout.total, &header)?;
                (shm, Some(lock))
            }
            Place::Anonymous => {
                let shm = SharedMemory::anonymous(layout.total)?;
                shm.map.copy_in(0, &header);
                (shm, None)
            }
        };
        for &at in spec.mutexes {
            shm.map.init_mutex(at, spec.mutex_kind())?;
        }
        init(&shm, &layout);
        publish(&shm.map);
        Ok(Object {
            shm,
            layout,
            mutexes: spec.mutexes,
        })
    }

    /// Opens the object `name` and checks its header against `spec` (and
    /// `len`, if given). A creator still at work is waited for (at most
    /// two seconds); one that died before publishing is
    /// [`Error::Abandoned`].
    pub fn open(name: &str, spec: &Spec, len: Option<usize>) -> Result<Object> {
        match find(name, Deadline::after(INIT_WAIT))? {
            Found::Published(shm) => Object::validated(shm, spec, len),
            Found::Abandoned(_) => Err(Error::Abandoned(what(Some(name)))),
        }
    }

    /// Opens `name` if it holds a published object (checking `len` too),
    /// or creates it: if it does not exist, or if its creator died before
    /// publishing it (the name is reclaimed). A complete object whose
    /// creator died is adopted: this handle becomes its owner.
    pub fn open_or_create(
        name: &str,
        spec: &Spec,
        len: usize,
        init: impl FnOnce(&SharedMemory, &Layout),
    ) -> Result<Object> {
        let mut init = Some(init);
        create_or_open(
            name,
            || {
                Object::create(Place::Named(name), spec, len, |shm, layout| {
                    (init.take().expect("init runs once"))(shm, layout)
                })
            },
            || match find(name, Deadline::after(INIT_WAIT))? {
                Found::Published(shm) => {
                    let mut object = Object::validated(shm, spec, Some(len))?;
                    object.adopt_if_orphaned()?;
                    Ok(Some(object))
                }
                Found::Abandoned(claim) => claim.remove(name).map(|()| None),
            },
        )
    }

    /// Rebuilds an object a parent handed over.
    pub fn inherit(inherited: Inherited, spec: &Spec) -> Result<Object> {
        use ipc_core::process::Inheritable;
        Object::validated(SharedMemory::from_inherited(inherited)?, spec, None)
    }

    fn validated(shm: SharedMemory, spec: &Spec, len: Option<usize>) -> Result<Object> {
        let layout = validate(&shm.map, spec, len, &what(shm.name()))?;
        Ok(Object {
            shm,
            layout,
            mutexes: spec.mutexes,
        })
    }

    /// Makes this handle the owner of a published object whose recorded
    /// creator (or last adopter) is dead, so that someone removes it.
    fn adopt_if_orphaned(&mut self) -> Result<()> {
        let word = self.shm.map.atomic_u64(CREATOR_OFFSET);
        let recorded = word.load(Ordering::Acquire);
        if creator::is_alive(recorded) {
            return Ok(());
        }
        // One adopter wins; the others see it alive.
        if word
            .compare_exchange(recorded, creator::me(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.shm.adopt();
        }
        Ok(())
    }

    /// The segment.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Where the object's parts are.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The mapping.
    pub(crate) fn map(&self) -> &Mapping {
        &self.shm.map
    }

    /// The robust mutex of an ipc-shm kind that locks.
    pub(crate) fn mutex(&self) -> &crate::sys::mutex::RobustMutex {
        self.shm.map.mutex(MUTEX_OFFSET)
    }

    /// The byte offset of the `i`-th 32-bit word of the data.
    pub(crate) fn word(&self, i: usize) -> usize {
        self.layout.data_offset + 4 * i
    }

    /// What a child needs to rebuild the object.
    pub fn handle(&self) -> Handle<'_> {
        use ipc_core::process::Inheritable;
        self.shm.handle()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let held_here = self.mutexes.iter().any(|&at| {
            self.shm
                .map
                .mutex(at)
                .holder()
                .is_some_and(robust::thread_of_this_process)
        });
        if held_here {
            self.shm.map.keep_mapped();
        }
    }
}

/// Makes or opens an object of kind `K`, the same four ways for every
/// kind of this crate (ipc-queue's queues have a builder of the same
/// shape): [`anonymous`](Self::anonymous), [`create`](Self::create),
/// [`open`](Self::open) and [`open_or_create`](Self::open_or_create), all
/// through one race loop and one header check. Each kind's `builder`
/// takes what a new object starts with; the shorthands (`Value::new`,
/// `Lock::create`, ...) are this builder.
///
/// ```
/// use ipc_shm::{Semaphore, Value};
/// # let name = format!("ipcdoc_{}_builder", std::process::id());
/// let price = Value::builder(1.5f64).open_or_create(&name)?; // made here
/// let again = Value::builder(0.0f64).open_or_create(&name)?; // opened: 1.5
/// assert!(price.is_owner() && !again.is_owner());
/// assert_eq!(again.get()?, 1.5);
/// let slots = Semaphore::builder(3).anonymous()?;
/// assert_eq!(slots.value(), 3);
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[must_use = "a builder does nothing until one of its four methods is called"]
pub struct Builder<'a, K: ObjectKind> {
    init: K::Init<'a>,
}

impl<K: ObjectKind> std::fmt::Debug for Builder<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("kind", &K::spec().kind)
            .finish_non_exhaustive()
    }
}

impl<'a, K: ObjectKind> Builder<'a, K> {
    /// A builder whose new objects start from `init`.
    pub(crate) fn new(init: K::Init<'a>) -> Self {
        Builder { init }
    }

    /// A new anonymous object (a memfd), for this process and the
    /// children it is handed to.
    pub fn anonymous(self) -> Result<K> {
        self.make(Place::Anonymous)
    }

    /// Creates the object `/dev/shm/<name>`; [`Error::AlreadyExists`] if
    /// the name exists. This process owns it and removes it on drop.
    pub fn create(self, name: &str) -> Result<K> {
        self.make(Place::Named(name))
    }

    /// Opens the object `name`, checking that it is a `K` (and of this
    /// builder's length, for arrays); what a new one would start with is
    /// ignored. [`Error::Abandoned`] if its creator died before finishing
    /// it.
    pub fn open(self, name: &str) -> Result<K> {
        let len = K::len(&self.init);
        Object::open(name, &K::spec(), Some(len)).map(K::wrap)
    }

    /// Opens `name` if it holds a `K`, or creates it: if it does not exist,
    /// or if its creator died before finishing it. A complete object whose
    /// creator died is adopted (see the crate docs).
    pub fn open_or_create(self, name: &str) -> Result<K> {
        K::check(&self.init)?;
        let len = K::len(&self.init);
        let init = self.init;
        Object::open_or_create(name, &K::spec(), len, |shm, layout| {
            K::fill(init, shm, layout)
        })
        .map(K::wrap)
    }

    fn make(self, place: Place<'_>) -> Result<K> {
        K::check(&self.init)?;
        let len = K::len(&self.init);
        let init = self.init;
        Object::create(place, &K::spec(), len, |shm, layout| {
            K::fill(init, shm, layout)
        })
        .map(K::wrap)
    }
}

/// The kinds of object a [`Builder`] makes: every type of this crate with
/// a segment of its own. Sealed; its items are how the builder reaches a
/// kind's layout.
pub trait ObjectKind: Sized + sealed::Sealed {
    /// What a new object starts with (a value, a slice, a count).
    type Init<'a>;
    #[doc(hidden)]
    fn spec() -> Spec;
    #[doc(hidden)]
    fn len(init: &Self::Init<'_>) -> usize;
    #[doc(hidden)]
    fn check(_init: &Self::Init<'_>) -> Result<()> {
        Ok(())
    }
    #[doc(hidden)]
    fn fill(init: Self::Init<'_>, shm: &SharedMemory, layout: &Layout);
    #[doc(hidden)]
    fn wrap(obj: Object) -> Self;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// How messages name a segment.
fn what(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("shared memory segment `{name}`"),
        None => "the anonymous segment".to_owned(),
    }
}

fn header_bytes(spec: &Spec, layout: &Layout) -> [u8; HEADER_SIZE] {
    let mut type_name = [0u8; TYPE_NAME_LEN];
    let n = spec.type_name.len().min(TYPE_NAME_LEN);
    type_name[..n].copy_from_slice(&spec.type_name.as_bytes()[..n]);
    bytemuck::cast(Header {
        magic: MAGIC_INIT,
        state: 0,
        version: LAYOUT_VERSION,
        kind: spec.kind as u32,
        reserved: 0,
        elem_size: spec.elem_size as u64,
        elem_align: spec.elem_align as u64,
        len: layout.len as u64,
        type_hash: spec.type_hash,
        data_offset: layout.data_offset as u64,
        total_size: layout.total as u64,
        reserved2: 0,
        creator: creator::me(),
        type_name,
    })
}

/// Makes an initialised object visible to openers: the magic with a
/// Release store after everything else, then the state, then a wake-up for
/// openers that wait.
fn publish(map: &Mapping) {
    map.atomic_u64(0).store(MAGIC, Ordering::Release);
    let state = map.atomic_u32(STATE_OFFSET);
    state.store(STATE_READY, Ordering::Release);
    futex::wake_all(state);
}

/// What a name was found to hold.
enum Found {
    /// A segment that is not an unpublished object of ours (usually a
    /// published one: `validate` says what it is).
    Published(SharedMemory),
    /// An object whose creator died before publishing it, with the `flock`
    /// that keeps other reclaimers and creators off it.
    Abandoned(Claim),
}

/// Opens `name` and tells a published object (or anything else with a
/// size) from one its creator abandoned. Waits until `deadline` while a
/// live creator initialises.
fn find(name: &str, deadline: Deadline) -> Result<Found> {
    let mut fd = shm::open_fd(name)?;
    let mut mapped: Option<SharedMemory> = None;
    loop {
        remap_if_grown(&fd, name, &mut mapped)?;
        if let Some(shm) = &mapped {
            if !being_created(&shm.map) {
                return Ok(Found::Published(mapped.take().expect("mapped")));
            }
        }
        // Unpublished (or not yet sized): is its creator still at work?
        match Claim::take(fd) {
            Ok(claim) => {
                // Nobody holds the flock: the creator published (and let
                // go) since we looked, or died.
                remap_if_grown(claim.fd(), name, &mut mapped)?;
                match &mapped {
                    Some(shm) if !being_created(&shm.map) => {
                        return Ok(Found::Published(mapped.take().expect("mapped")))
                    }
                    Some(_) => return Ok(Found::Abandoned(claim)),
                    None if claim.is_old_and_empty()? => return Ok(Found::Abandoned(claim)),
                    // Empty and young: its creator may be about to lock it.
                    None => fd = claim.release()?,
                }
            }
            Err(back) => fd = back,
        }
        let Some(slice) = deadline.slice(CREATOR_POLL) else {
            return Err(Error::Timeout);
        };
        match &mapped {
            Some(shm) => {
                futex::wait(shm.map.atomic_u32(STATE_OFFSET), 0, Some(slice));
            }
            None => std::thread::sleep(slice),
        }
    }
}

/// Maps the segment behind `fd` again if it grew since `mapped` was made:
/// a creator writes the header (128 bytes) before it sizes the segment, so
/// an early look can map the header alone.
fn remap_if_grown(fd: &OwnedFd, name: &str, mapped: &mut Option<SharedMemory>) -> Result<()> {
    let size = shm::segment_size(fd, name)?;
    if size > 0 && mapped.as_ref().is_none_or(|shm| shm.size() < size) {
        *mapped = Some(SharedMemory::from_named_fd(fd, name, size)?);
    }
    Ok(())
}

/// Maps the segment behind `fd` if its creator sized it.
fn map_if_sized(fd: &OwnedFd, name: &str) -> Result<Option<SharedMemory>> {
    match shm::segment_size(fd, name)? {
        0 => Ok(None),
        size => SharedMemory::from_named_fd(fd, name, size).map(Some),
    }
}

/// Whether a mapped segment holds an object its creator has not yet
/// published.
fn being_created(map: &Mapping) -> bool {
    map.len() >= HEADER_SIZE
        && unpublished(
            map.atomic_u64(0).load(Ordering::Acquire),
            map.atomic_u32(STATE_OFFSET).load(Ordering::Acquire),
        )
}

/// Whether a header's magic and state words are those of an object whose
/// creator has not finished publishing it: the initialising magic, or the
/// published one before the state word (`publish` stores the two one after
/// the other, and a creator can die between them).
fn unpublished(magic: u64, state: u32) -> bool {
    (magic == MAGIC_INIT && state != STATE_READY) || (magic == MAGIC && state == 0)
}

/// Checks the header of a mapped segment against `spec` (and `len`, if
/// given) and returns the object's layout. `what` names the segment.
fn validate(map: &Mapping, spec: &Spec, len: Option<usize>, what: &str) -> Result<Layout> {
    let incompatible = |property, expected: String, found: String| {
        Error::Incompatible(Box::new(Mismatch::new(what, property, expected, found)))
    };
    let corrupt = |property, expected: String, found: String| {
        Error::Corrupt(Box::new(Mismatch::new(what, property, expected, found)))
    };
    if map.len() < HEADER_SIZE {
        return Err(incompatible(
            Property::Size,
            format!(
                "at least {HEADER_SIZE} bytes for {}",
                spec.kind.with_article()
            ),
            format!("{} bytes", map.len()),
        ));
    }
    let magic = map.atomic_u64(0).load(Ordering::Acquire);
    let state = map.atomic_u32(STATE_OFFSET).load(Ordering::Acquire);
    if unpublished(magic, state) {
        // An anonymous segment is published before anyone else sees it, so
        // this is a named one whose creator died (`find` saw to the rest).
        return Err(Error::Abandoned(what.to_owned()));
    }
    if magic != MAGIC {
        return Err(incompatible(
            Property::Magic,
            format!("an object of this workspace ({MAGIC:#018x})"),
            format!("{magic:#018x}"),
        ));
    }
    if state != STATE_READY {
        return Err(corrupt(
            Property::State,
            format!("{STATE_READY}"),
            format!("{state:#x}"),
        ));
    }
    let h: Header = map.read(0);
    if h.version != LAYOUT_VERSION {
        return Err(incompatible(
            Property::Version,
            format!("{LAYOUT_VERSION}"),
            format!("{}", h.version),
        ));
    }
    let Some(found) = Kind::from_u32(h.kind) else {
        return Err(corrupt(
            Property::Kind,
            "a known kind".to_owned(),
            format!("kind number {}", h.kind),
        ));
    };
    if found != spec.kind {
        return Err(incompatible(
            Property::Kind,
            spec.kind.with_article(),
            found.with_article(),
        ));
    }
    if h.elem_size != spec.elem_size as u64
        || h.elem_align != spec.elem_align as u64
        || h.type_hash != spec.type_hash
    {
        let stored = String::from_utf8_lossy(&h.type_name);
        return Err(incompatible(
            Property::ItemType,
            format!(
                "`{}` (size {}, align {})",
                spec.type_name, spec.elem_size, spec.elem_align
            ),
            format!(
                "`{}` (size {}, align {})",
                stored.trim_end_matches('\0'),
                h.elem_size,
                h.elem_align
            ),
        ));
    }
    let impossible_len = || {
        corrupt(
            Property::Length,
            "a length that fits in memory".to_owned(),
            format!("{}", h.len),
        )
    };
    let stored_len = usize::try_from(h.len).map_err(|_| impossible_len())?;
    if let Some(len) = len {
        if stored_len != len {
            return Err(incompatible(
                Property::Length,
                format!("{len}"),
                format!("{stored_len}"),
            ));
        }
    }
    let layout = spec.layout(stored_len).map_err(|_| impossible_len())?;
    if h.data_offset != layout.data_offset as u64 || h.total_size != layout.total as u64 {
        return Err(corrupt(
            Property::Header,
            format!(
                "data at {}, {} bytes in all",
                layout.data_offset, layout.total
            ),
            format!("data at {}, {} bytes in all", h.data_offset, h.total_size),
        ));
    }
    if map.len() < layout.total {
        return Err(corrupt(
            Property::Size,
            format!("{} bytes, as its header says", layout.total),
            format!("{} bytes", map.len()),
        ));
    }
    Ok(layout)
}

/// Removes the named object `name` if its creator (or the process that
/// adopted it) is dead: one its creator never finished, or a complete one
/// nobody owns any more. `Ok(true)` if it was removed; `Ok(false)` if it
/// does not exist, its owner lives, someone is creating it right now, or it
/// is not an object of this workspace (a plain [`SharedMemory`], one of
/// Python's: their bytes record no creator). Processes that have the object
/// mapped keep using it; only the name goes.
///
/// Safe to run while other processes create, open and use objects: it
/// takes the same lock as creators and `open_or_create`, and removes a name
/// only while it still leads to the segment it judged.
///
/// ```
/// use ipc_shm::{remove_if_orphaned, Value};
/// # let name = format!("ipcdoc_{}_orphan", std::process::id());
/// let v = Value::create(&name, 1u32)?;
/// assert!(!remove_if_orphaned(&name)?); // its creator, this process, lives
/// drop(v);
/// assert!(!remove_if_orphaned(&name)?); // gone already
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn remove_if_orphaned(name: &str) -> Result<bool> {
    let fd = match shm::open_fd(name) {
        Ok(fd) => fd,
        Err(Error::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let Ok(claim) = Claim::take(fd) else {
        return Ok(false);
    };
    let orphaned = match map_if_sized(claim.fd(), name)? {
        None => claim.is_old_and_empty()?,
        Some(shm) if shm.size() < HEADER_SIZE => false,
        // Under the claim nobody is creating it: an unpublished object's
        // creator died.
        Some(shm) if being_created(&shm.map) => true,
        Some(shm) => {
            shm.map.atomic_u64(0).load(Ordering::Acquire) == MAGIC
                && !creator::is_alive(shm.map.atomic_u64(CREATOR_OFFSET).load(Ordering::Acquire))
        }
    };
    if orphaned {
        match claim.remove(name) {
            Ok(()) => {}
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(orphaned)
}

/// Removes every named object whose name starts with `prefix` and whose
/// creator is dead (see [`remove_if_orphaned`]); returns the names removed.
/// Python's resource tracker does this for the segments of a program once
/// all its processes have exited; here the program (or a cleanup job) says
/// when, for the prefix it names its objects with.
///
/// ```
/// # let prefix = format!("ipcdoc_{}_orphans_", std::process::id());
/// let removed = ipc_shm::remove_orphans(&prefix)?;
/// assert!(removed.is_empty());
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn remove_orphans(prefix: &str) -> Result<Vec<String>> {
    if prefix.is_empty() {
        return Err(Error::InvalidArgument(
            "an empty prefix would look at every segment of every program",
        ));
    }
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(shm::SHM_DIR)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(prefix) && remove_if_orphaned(&name)? {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// FNV-1a, 64 bits: a stable hash (std's hashers may change between
/// releases), good enough to tell type names apart.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Implements `Inheritable` and the name accessors for a type that wraps an
/// [`Object`] in a field `obj` and has a `spec()` function.
macro_rules! object_common {
    ($ty:ident $(<$t:ident>)?) => {
        impl$(<$t: bytemuck::Pod>)? ipc_core::process::Inheritable for $ty$(<$t>)? {
            fn handle(&self) -> ipc_core::process::Handle<'_> {
                self.obj.handle()
            }

            fn from_inherited(inherited: ipc_core::process::Inherited) -> ipc_core::Result<Self> {
                Ok(Self::wrap(crate::segment::Object::inherit(inherited, &Self::spec())?))
            }
        }

        impl$(<$t: bytemuck::Pod>)? $ty$(<$t>)? {
            /// The name of the segment (`/dev/shm/<name>`), or `None` for an
            /// anonymous one.
            pub fn name(&self) -> Option<&str> {
                self.obj.shm.name()
            }

            /// Whether this handle created the segment (and so unlinks it
            /// on drop, unless told otherwise). The segment itself is not
            /// handed out: raw writes beside a live guard's `&mut` would be
            /// undefined behaviour.
            pub fn is_owner(&self) -> bool {
                self.obj.shm.is_owner()
            }

            /// Whether a creator's drop unlinks the segment (default
            /// `true`); see [`SharedMemory::set_unlink_on_drop`](crate::SharedMemory::set_unlink_on_drop).
            pub fn set_unlink_on_drop(&mut self, unlink: bool) {
                self.obj.shm.set_unlink_on_drop(unlink);
            }

            /// Removes the segment's name now; see
            /// [`SharedMemory::unlink`](crate::SharedMemory::unlink).
            pub fn unlink(&self) -> ipc_core::Result<()> {
                self.obj.shm.unlink()
            }
        }
    };
}
pub(crate) use object_common;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_align_the_data_and_refuse_overflow() {
        let l = Spec::of::<u8>(Kind::Array).layout(3).unwrap();
        assert_eq!((l.data_offset, l.total), (192, 195));
        #[repr(C, align(256))]
        #[derive(Clone, Copy, Pod, Zeroable)]
        struct Wide([u8; 256]);
        let l = Spec::of::<Wide>(Kind::Value).layout(1).unwrap();
        assert_eq!(l.data_offset, 256);
        assert!(Spec::of::<u64>(Kind::Array).layout(usize::MAX / 4).is_err());
    }

    #[test]
    fn type_hashes_differ() {
        assert_ne!(
            Spec::of::<u64>(Kind::Value).type_hash,
            Spec::of::<f64>(Kind::Value).type_hash
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
