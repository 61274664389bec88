//! [`SharedMemory`]: a segment of memory mapped by several processes,
//! named the way Python's `multiprocessing.shared_memory` names them on
//! Linux (`/dev/shm/<name>`), or anonymous (a memfd handed to children).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipc_core::process::{Handle, Inheritable, Inherited};
use ipc_core::{Error, Mismatch, Property, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::sys::map::Mapping;

/// The prefix of the names [`SharedMemory::new`] makes up, as Python's
/// `SharedMemory(create=True)` does (`psm_` and 8 hex digits).
pub const AUTO_NAME_PREFIX: &str = "psm_";

/// The longest name accepted, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// A shared-memory segment: Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// A named segment appears as `/dev/shm/<name>`, exactly where Python puts
/// `SharedMemory(name=<name>)`, so either side can create it and the other
/// attach to it. It is created with owner-only permissions (`0o600`).
///
/// **Who removes it.** The process that created a named segment (its
/// *owner*) unlinks it when the `SharedMemory` is dropped, unless
/// [`set_unlink_on_drop(false)`](Self::set_unlink_on_drop) was called;
/// [`unlink`](Self::unlink) removes it at once (Python's `.unlink()`).
/// Openers never unlink on drop. A forked child that drops its copy of the
/// owner's handle does not unlink either: only the creating process does.
/// A process killed with `SIGKILL` runs no destructor, so its segments stay
/// until someone unlinks them; all of them share a prefix you choose, so
/// stale ones can be listed in `/dev/shm` and removed. (The typed objects
/// of this crate and ipc-queue's queues record their creator, so
/// [`remove_orphans`](crate::remove_orphans) finds theirs; a plain segment
/// holds only your bytes, as Python's does, and records nothing. A segment
/// left empty by a creator killed before sizing it is reclaimed by
/// [`open_or_create`](Self::open_or_create).)
///
/// ```
/// use ipc_shm::SharedMemory;
/// # let name = format!("ipcdoc_{}_shm", std::process::id());
/// let owner = SharedMemory::create(&name, 4096)?;
/// owner.write_at(0, b"howdy")?;
///
/// let other = SharedMemory::open(&name)?; // in another process, usually
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"howdy");
/// assert_eq!(other.size(), 4096);
/// # Ok::<(), ipc_core::Error>(())
/// ```
///
/// **Python on the other side.** CPython 3.8–3.12 registers every segment
/// it *attaches* to with its resource tracker and unlinks it when that
/// Python process exits, which would destroy a segment this crate owns.
/// Attach like this to prevent it:
///
/// ```python
/// from multiprocessing import shared_memory, resource_tracker
/// shm = shared_memory.SharedMemory(name="my_segment")         # <= 3.12
/// resource_tracker.unregister(shm._name, "shared_memory")     # right away
/// # 3.13 and later:
/// shm = shared_memory.SharedMemory(name="my_segment", track=False)
/// ```
///
/// The other way round, a segment Python created is removed by Python's
/// owner (its `unlink()` or its resource tracker); open it here with
/// [`open`](Self::open), which never unlinks.
///
/// **Access.** [`read_at`](Self::read_at) and [`write_at`](Self::write_at)
/// copy bytes in and out (at `memcpy` speed); the `unsafe`
/// [`as_slice`](Self::as_slice) and [`as_mut_slice`](Self::as_mut_slice)
/// lend the bytes in place for callers who synchronise by other means.
/// Other processes may write the segment at any time: bytes read while
/// another process writes them can be a mix of old and new.
pub struct SharedMemory {
    pub(crate) map: Mapping,
    name: Option<String>,
    /// The memfd of an anonymous segment, kept to hand it to children.
    /// Named segments keep no descriptor: children reopen them by name.
    fd: Option<OwnedFd>,
    /// The pid of the creating process, for a named segment this handle
    /// created and should unlink on drop.
    owner_pid: Option<u32>,
    unlink_on_drop: bool,
    unlinked: AtomicBool,
}

impl SharedMemory {
    /// Creates the segment `/dev/shm/<name>` of `size` bytes, zero-filled,
    /// readable and writable by this user only. This process becomes its
    /// owner. Fails with [`Error::AlreadyExists`] if the name exists.
    pub fn create(name: &str, size: usize) -> Result<SharedMemory> {
        SharedMemory::create_locked(name, size, &[]).map(|(shm, _creating)| shm)
    }

    /// Creates `name` as [`create`](Self::create) does, with `header`
    /// written at its start before it is sized, and returns it with an
    /// exclusive `flock` on it that says "its creator is at work" until the
    /// caller drops it (see the `segment` module).
    pub(crate) fn create_locked(
        name: &str,
        size: usize,
        header: &[u8],
    ) -> Result<(SharedMemory, Flock<OwnedFd>)> {
        check_name(name)?;
        if size == 0 {
            return Err(Error::InvalidArgument(
                "a shared memory segment must have a positive size",
            ));
        }
        let path = format!("/{name}");
        let fd = match nix::sys::mman::shm_open(
            path.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        ) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => {
                return Err(Error::AlreadyExists(format!(
                    "shared memory segment `{name}`"
                )))
            }
            Err(e) => return Err(os_error(e, &format!("cannot create `{name}`"))),
        };
        // From here on the name is ours: remove it again if we fail.
        let made = Flock::lock(fd, FlockArg::LockExclusive)
            .map_err(|(_, e)| os_error(e, &format!("cannot lock `{name}`")))
            .and_then(|lock| {
                let len = i64::try_from(size)
                    .map_err(|_| Error::InvalidArgument("segment size too large"))?;
                write_all_at(&*lock, header)
                    .map_err(|e| os_error(e, &format!("cannot write `{name}`")))?;
                nix::unistd::ftruncate(&*lock, len)
                    .map_err(|e| os_error(e, &format!("cannot size `{name}`")))?;
                let map = Mapping::new(lock.as_fd(), size)?;
                Ok((map, lock))
            });
        match made {
            Ok((map, lock)) => Ok((
                SharedMemory {
                    map,
                    name: Some(name.to_owned()),
                    fd: None,
                    owner_pid: Some(std::process::id()),
                    unlink_on_drop: true,
                    unlinked: AtomicBool::new(false),
                },
                lock,
            )),
            Err(e) => {
                let _ = nix::sys::mman::shm_unlink(path.as_str());
                Err(e)
            }
        }
    }

    /// Creates a segment of `size` bytes under a fresh name of the form
    /// `psm_` + 8 hex digits, as Python's `SharedMemory(create=True,
    /// size=size)` does. Read the name with [`name`](Self::name).
    pub fn new(size: usize) -> Result<SharedMemory> {
        let mut last = None;
        for _ in 0..64 {
            let name = format!("{AUTO_NAME_PREFIX}{:08x}", random_u32()?);
            match SharedMemory::create(&name, size) {
                Err(e @ Error::AlreadyExists(_)) => last = Some(e),
                other => return other,
            }
        }
        Err(last.expect("the loop ran"))
    }

    /// Opens the existing segment `/dev/shm/<name>`, whatever its size
    /// (Python ignores the size when attaching, too). A name that does not
    /// exist is [`Error::NotFound`]; an empty segment is refused. Never
    /// unlinks the segment.
    pub fn open(name: &str) -> Result<SharedMemory> {
        let fd = open_fd(name)?;
        let size = segment_size(&fd, name)?;
        if size == 0 {
            // Creators size a segment right after making it, under a lock.
            return Err(Error::Abandoned(format!("shared memory segment `{name}`")));
        }
        SharedMemory::from_named_fd(&fd, name, size)
    }

    pub(crate) fn from_named_fd(fd: &OwnedFd, name: &str, size: usize) -> Result<SharedMemory> {
        Ok(SharedMemory {
            map: Mapping::new(fd.as_fd(), size)?,
            name: Some(name.to_owned()),
            fd: None,
            owner_pid: None,
            unlink_on_drop: false,
            unlinked: AtomicBool::new(false),
        })
    }

    /// Opens the existing segment `name` and checks that it holds at least
    /// `size` bytes; a smaller one is an error that says both sizes.
    pub fn open_at_least(name: &str, size: usize) -> Result<SharedMemory> {
        let shm = SharedMemory::open(name)?;
        if shm.size() < size {
            return Err(Error::Incompatible(Box::new(Mismatch::new(
                format!("shared memory segment `{name}`"),
                Property::Size,
                format!("at least {size} bytes"),
                format!("{} bytes", shm.size()),
            ))));
        }
        Ok(shm)
    }

    /// Creates `name` with `size` bytes, or opens it if it exists (and
    /// holds at least `size` bytes). [`is_owner`](Self::is_owner) says
    /// which happened: only a creator unlinks on drop.
    pub fn open_or_create(name: &str, size: usize) -> Result<SharedMemory> {
        create_or_open(
            name,
            || SharedMemory::create(name, size),
            || match SharedMemory::open_at_least(name, size) {
                Ok(shm) => Ok(Some(shm)),
                // Left empty by a creator that died, or about to be sized.
                Err(Error::Abandoned(_)) => {
                    if !remove_if_empty_and_abandoned(name)? {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        )
    }

    /// An anonymous segment of `size` bytes (a memfd): no name, nothing in
    /// `/dev/shm`, gone when the last process that maps it lets go. Hand it
    /// to children with [`Process::pass`](ipc_core::process::Process::pass).
    /// Its size is sealed: no process it is handed to can shrink it under
    /// another's mapping, which would make that one's next access to the
    /// lost pages a `SIGBUS`.
    ///
    /// ```
    /// use ipc_core::process::Process;
    /// let shm = ipc_shm::SharedMemory::anonymous(64)?;
    /// let mut child = Process::new().pass("shm", &shm)?.fork({
    ///     let shm = &shm;
    ///     move || shm.write_at(0, b"from the child")
    /// })?;
    /// assert!(child.join()?.success());
    /// let mut buf = [0u8; 14];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"from the child");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn anonymous(size: usize) -> Result<SharedMemory> {
        if size == 0 {
            return Err(Error::InvalidArgument(
                "a shared memory segment must have a positive size",
            ));
        }
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(
            c"ipc-shm",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let len =
            i64::try_from(size).map_err(|_| Error::InvalidArgument("segment size too large"))?;
        nix::unistd::ftruncate(&fd, len)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
        Ok(SharedMemory {
            map: Mapping::new(fd.as_fd(), size)?,
            name: None,
            fd: Some(fd),
            owner_pid: None,
            unlink_on_drop: false,
            unlinked: AtomicBool::new(false),
        })
    }

    /// The name without the leading `/` (what Python's `.name` shows), or
    /// `None` for an anonymous segment.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The size in bytes (Python's `.size`).
    #[inline]
    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// Whether this handle created the segment and so removes it on drop.
    pub fn is_owner(&self) -> bool {
        self.owner_pid.is_some()
    }

    /// Makes this handle the owner of a named segment whose owner died:
    /// it removes the segment when dropped.
    pub(crate) fn adopt(&mut self) {
        if self.name.is_some() {
            self.owner_pid = Some(std::process::id());
            self.unlink_on_drop = true;
        }
    }

    /// Whether a creator's drop unlinks the segment (default `true`). Set
    /// it to `false` to leave the segment for another process, which then
    /// becomes responsible for unlinking it.
    pub fn set_unlink_on_drop(&mut self, unlink: bool) {
        self.unlink_on_drop = unlink;
    }

    /// Removes the name now (Python's `.unlink()`); processes that mapped
    /// the segment keep using it. A second unlink, or an unlink of a name
    /// someone else removed, is [`Error::NotFound`]; an anonymous segment
    /// has no name to remove ([`Error::Unsupported`]).
    pub fn unlink(&self) -> Result<()> {
        let name = self.name.as_deref().ok_or(Error::Unsupported(
            "an anonymous segment has no name to unlink",
        ))?;
        self.unlinked.store(true, Ordering::Relaxed);
        match nix::sys::mman::shm_unlink(format!("/{name}").as_str()) {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) => Err(Error::NotFound(format!(
                "shared memory segment `{name}` (already unlinked)"
            ))),
            Err(e) => Err(os_error(e, &format!("cannot unlink `{name}`"))),
        }
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        self.map.copy_out(offset, buf);
        Ok(())
    }

    /// Copies `buf` into the segment at `offset`.
    #[inline]
    pub fn write_at(&self, offset: usize, buf: &[u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        self.map.copy_in(offset, buf);
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.check_range(offset, len)?;
        self.map.fill(offset, len, byte);
        Ok(())
    }

    /// A copy of the whole segment.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.size()];
        self.map.copy_out(0, &mut out);
        out
    }

    /// Leaves this process's mapping of the segment out of every child it
    /// forks from now on (`MADV_DONTFORK`), for a segment meant for one
    /// child: children forked later for others can neither reach it nor
    /// keep its memory alive. A child started from a registered entry and
    /// passed the segment ([`Process::start`](ipc_core::process::Process::start)
    /// with any start method, fork included) maps it anew from the
    /// descriptor it is handed; a closure run by
    /// [`Process::fork`](ipc_core::process::Process::fork) must not touch
    /// this value, which is not mapped in its process.
    ///
    /// ```
    /// use ipc_core::process::{inherited, Process};
    /// use ipc_core::spawn::StartMethod;
    /// use ipc_shm::SharedMemory;
    ///
    /// fn sign(_: ()) -> bool {
    ///     let shm = inherited::<SharedMemory>("shm");
    ///     shm.and_then(|shm| shm.write_at(0, b"passed")).is_ok()
    /// }
    ///
    /// # ipc_core::spawn::init();
    /// let shm = SharedMemory::anonymous(64)?;
    /// shm.exclude_from_forks()?;
    /// let child = Process::new()
    ///     .pass("shm", &shm)?
    ///     .start(StartMethod::Fork, ipc_core::entry!(sign), &())?;
    /// assert!(child.join()?);
    /// let mut buf = [0u8; 6];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"passed");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn exclude_from_forks(&self) -> Result<()> {
        Ok(self.map.exclude_from_forks()?)
    }

    /// The address of the first byte, valid as long as `self`.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Copies `out.len()` values of `T` from byte `offset` into `out`: a
    /// snapshot, which another process may be changing meanwhile (each
    /// value is then any bytes, which a [`Pod`](bytemuck::Pod) type
    /// allows). `offset` must be a multiple of `T`'s alignment.
    ///
    /// ```
    /// let shm = ipc_shm::SharedMemory::anonymous(64)?;
    /// shm.write_slice(8, &[1.5f64, -2.0])?;
    /// let mut back = [0f64; 2];
    /// shm.read_slice(8, &mut back)?;
    /// assert_eq!(back, [1.5, -2.0]);
    /// assert!(shm.read_slice(4, &mut back).is_err()); // misaligned
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn read_slice<T: bytemuck::Pod>(&self, offset: usize, out: &mut [T]) -> Result<()> {
        self.check_elements::<T>(offset, out.len())?;
        self.map.copy_out(offset, out);
        Ok(())
    }

    /// Copies `values` into the segment from byte `offset`, which must be
    /// a multiple of `T`'s alignment.
    pub fn write_slice<T: bytemuck::Pod>(&self, offset: usize, values: &[T]) -> Result<()> {
        self.check_elements::<T>(offset, values.len())?;
        self.map.copy_in(offset, values);
        Ok(())
    }

    /// The whole segment as numbers of type `T` (as many as fit), which
    /// this and other processes read and write at once: what Python sees
    /// as `memoryview(shm.buf).cast(T::FORMAT)` (or numpy as
    /// `np.ndarray(n, dtype=..., buffer=shm.buf)`).
    ///
    /// ```
    /// let shm = ipc_shm::SharedMemory::anonymous(8 * 4)?;
    /// let xs = shm.slice::<f64>();
    /// assert_eq!(xs.len(), 4);
    /// xs.set(2, 0.25);
    /// assert_eq!(xs.get(2), Some(0.25));
    /// assert_eq!(xs.to_vec(), [0.0, 0.0, 0.25, 0.0]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn slice<T: Element>(&self) -> SharedSlice<'_, T> {
        let len = self.size() / std::mem::size_of::<T>();
        SharedSlice {
            words: self.map.atomics(0, len),
        }
    }

    /// `len` numbers of type `T` from byte `offset` (a multiple of `T`'s
    /// size), as [`slice`](Self::slice) sees the whole segment.
    pub fn slice_at<T: Element>(&self, offset: usize, len: usize) -> Result<SharedSlice<'_, T>> {
        self.check_elements::<T::Word>(offset, len)?;
        Ok(SharedSlice {
            words: self.map.atomics(offset, len),
        })
    }

    fn check_elements<T>(&self, offset: usize, len: usize) -> Result<()> {
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len)
            .ok_or(Error::InvalidArgument(
                "range outside the shared memory segment",
            ))?;
        self.check_range(offset, bytes)?;
        // The address, not the offset: a `Pod` type may be aligned to more
        // than the page the mapping starts on.
        if (self.as_ptr() as usize).wrapping_add(offset) % std::mem::align_of::<T>() != 0 {
            return Err(Error::InvalidArgument(
                "offset not aligned to the element type",
            ));
        }
        Ok(())
    }

    #[inline]
    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::InvalidArgument(
                "range outside the shared memory segment",
            )),
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size())
            .field("owner", &self.is_owner())
            .finish_non_exhaustive()
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.unlink_on_drop
            && self.owner_pid == Some(std::process::id())
            && !self.unlinked.load(Ordering::Relaxed)
        {
            if let Some(name) = &self.name {
                let _ = nix::sys::mman::shm_unlink(format!("/{name}").as_str());
            }
        }
    }
}

/// A named segment is handed over by name (the child opens it and never
/// unlinks it); an anonymous one by its memfd.
impl Inheritable for SharedMemory {
    fn handle(&self) -> Handle<'_> {
        match (&self.name, &self.fd) {
            (Some(name), _) => Handle {
                fds: Vec::new(),
                text: format!("n{}", hex(name.as_bytes())),
            },
            (None, Some(fd)) => Handle {
                fds: vec![fd.as_fd()],
                text: "a".to_owned(),
            },
            (None, None) => unreachable!("a segment has a name or a descriptor"),
        }
    }

    fn from_inherited(inherited: Inherited) -> Result<Self> {
        let bad = || Error::InvalidArgument("malformed shared memory handle");
        let text = inherited.text;
        if let Some(hexname) = text.strip_prefix('n') {
            let name = String::from_utf8(unhex(hexname).ok_or_else(bad)?).map_err(|_| bad())?;
            return SharedMemory::open(&name);
        }
        if text != "a" {
            return Err(bad());
        }
        let [fd]: [OwnedFd; 1] = inherited.fds.try_into().map_err(|_| bad())?;
        let size = segment_size(&fd, "inherited segment")?;
        if size == 0 {
            return Err(Error::Incompatible(Box::new(Mismatch::new(
                "the inherited segment",
                Property::Size,
                "a positive size",
                "0 bytes",
            ))));
        }
        Ok(SharedMemory {
            map: Mapping::new(fd.as_fd(), size)?,
            name: None,
            fd: Some(fd),
            owner_pid: None,
            unlink_on_drop: false,
            unlinked: AtomicBool::new(false),
        })
    }
}

/// How long a creator may take between making a name and locking it: an
/// empty segment younger than this may still be in its creator's hands.
const CREATE_GRACE: Duration = Duration::from_millis(20);

/// The race every `open_or_create` runs (objects and plain segments
/// alike): `create`, and if the name exists, `open`; `open` answers
/// `Ok(None)` (or `NotFound`) when the name went away or was reclaimed in
/// between, and the loop creates again.
pub(crate) fn create_or_open<T>(
    name: &str,
    mut create: impl FnMut() -> Result<T>,
    mut open: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    for _ in 0..100 {
        match create() {
            Err(Error::AlreadyExists(_)) => {}
            other => return other,
        }
        match open() {
            Ok(Some(found)) => return Ok(found),
            Ok(None) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Io(std::io::Error::new(
        std::io::ErrorKind::WouldBlock,
        format!("`{name}` kept appearing and disappearing"),
    )))
}

/// An exclusive `flock` on a named segment nobody is creating.
pub(crate) struct Claim(Flock<OwnedFd>);

impl Claim {
    pub(crate) fn take(fd: OwnedFd) -> std::result::Result<Claim, OwnedFd> {
        Flock::lock(fd, FlockArg::LockExclusiveNonblock)
            .map(Claim)
            .map_err(|(fd, _)| fd)
    }

    /// Lets the lock go and gives the descriptor back.
    pub(crate) fn release(self) -> Result<OwnedFd> {
        self.0.unlock().map_err(|(_, e)| Error::from(e))
    }

    /// Removes `name` if it still leads to the claimed segment.
    pub(crate) fn remove(self, name: &str) -> Result<()> {
        unlink_if_same(name, self.0.as_fd())
    }

    /// The claimed segment's descriptor.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.0
    }

    /// Whether the claimed segment is empty and old enough that its
    /// creator cannot still be about to lock and size it: a creator killed
    /// between `shm_open` and its `flock`.
    pub(crate) fn is_old_and_empty(&self) -> Result<bool> {
        Ok(segment_size(&self.0, "the claimed segment")? == 0
            && !is_young(self.0.as_fd(), CREATE_GRACE)?)
    }
}

/// Removes `name` if it is an empty segment whose creator died before
/// sizing it (see [`Claim::is_old_and_empty`]).
fn remove_if_empty_and_abandoned(name: &str) -> Result<bool> {
    let fd = match open_fd(name) {
        Ok(fd) => fd,
        Err(Error::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let Ok(claim) = Claim::take(fd) else {
        return Ok(false);
    };
    if !claim.is_old_and_empty()? {
        return Ok(false);
    }
    claim.remove(name)?;
    Ok(true)
}

/// Where Linux's `shm_open` keeps its names.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// Opens the named segment `name`, refusing one that is not private to
/// this user.
pub(crate) fn open_fd(name: &str) -> Result<OwnedFd> {
    check_name(name)?;
    match nix::sys::mman::shm_open(
        format!("/{name}").as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            check_private(&fd, name)?;
            Ok(fd)
        }
        Err(Errno::ENOENT) => Err(Error::NotFound(format!(
            "shared memory segment `{name}` (no /dev/shm/{name})"
        ))),
        Err(e) => Err(os_error(e, &format!("cannot open `{name}`"))),
    }
}

/// Refuses a segment that another user owns or could write: `/dev/shm` is
/// writable by everyone, so another local user could create the name first,
/// and a segment holding a lock must come from someone we trust (glibc
/// follows pointers inside a robust mutex when unlocking it). Segments this
/// workspace and Python create are owner-only, so they pass.
fn check_private(fd: &OwnedFd, name: &str) -> Result<()> {
    let stat = nix::sys::stat::fstat(fd)?;
    let me = nix::unistd::geteuid().as_raw();
    if stat.st_uid != me {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "shared memory segment `{name}` belongs to uid {}, not to this user (uid {me})",
                stat.st_uid
            ),
        )));
    }
    if stat.st_mode & 0o077 != 0 {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "shared memory segment `{name}` can be opened by other users (mode {:o}); only owner-only segments are used",
                stat.st_mode & 0o777
            ),
        )));
    }
    Ok(())
}

/// Refuses names Python and Linux would refuse: empty, longer than
/// [`MAX_NAME_LEN`], or with a `/` or a NUL.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("a shared memory name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(
            "a shared memory name is longer than 255 bytes",
        ));
    }
    if name.contains(['/', '\0']) {
        return Err(Error::InvalidArgument(
            "a shared memory name contains '/' or NUL (give it without the leading slash, as Python does)",
        ));
    }
    if name == "." || name == ".." {
        return Err(Error::InvalidArgument(
            "a shared memory name is `.` or `..`",
        ));
    }
    Ok(())
}

/// Removes the name `name` if it still leads to the segment behind `fd`
/// (the caller holds the segment's `flock`, which every remover takes, so
/// the name cannot change hands between the check and the removal).
fn unlink_if_same(name: &str, fd: BorrowedFd<'_>) -> Result<()> {
    let ours = nix::sys::stat::fstat(fd)?;
    let named = match nix::sys::stat::stat(format!("{SHM_DIR}/{name}").as_str()) {
        Ok(named) => named,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(os_error(e, &format!("cannot look at `{name}`"))),
    };
    if (named.st_dev, named.st_ino) != (ours.st_dev, ours.st_ino) {
        return Ok(());
    }
    match nix::sys::mman::shm_unlink(format!("/{name}").as_str()) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(os_error(e, &format!("cannot unlink `{name}`"))),
    }
}

/// Whether the segment behind `fd` changed less than `age` ago (an empty
/// one that young may still be in its creator's hands).
fn is_young(fd: BorrowedFd<'_>, age: Duration) -> Result<bool> {
    let stat = nix::sys::stat::fstat(fd)?;
    let changed = std::time::UNIX_EPOCH
        + Duration::new(
            u64::try_from(stat.st_ctime).unwrap_or(0),
            u32::try_from(stat.st_ctime_nsec).unwrap_or(0),
        );
    // A clock set back makes the segment look young: that only delays.
    Ok(std::time::SystemTime::now()
        .duration_since(changed)
        .map_or(true, |elapsed| elapsed < age))
}

/// Writes `bytes` at the start of the file behind `fd`.
fn write_all_at(fd: &impl AsFd, mut bytes: &[u8]) -> nix::Result<()> {
    let mut at = 0;
    while !bytes.is_empty() {
        match nix::sys::uio::pwrite(fd, bytes, at) {
            Ok(n) => {
                bytes = &bytes[n..];
                at += n as i64;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn segment_size(fd: &OwnedFd, what: &str) -> Result<usize> {
    let stat =
        nix::sys::stat::fstat(fd).map_err(|e| os_error(e, &format!("cannot stat `{what}`")))?;
    usize::try_from(stat.st_size).map_err(|_| {
        Error::Corrupt(Box::new(Mismatch::new(
            format!("`{what}`"),
            Property::Size,
            "a size of at least 0",
            format!("{}", stat.st_size),
        )))
    })
}

fn os_error(e: Errno, context: &str) -> Error {
    let e = io::Error::from(e);
    Error::Io(io::Error::new(e.kind(), format!("{context}: {e}")))
}

fn random_u32() -> Result<u32> {
    use std::io::Read;
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u32::from_ne_bytes(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_python() {
        for bad in ["", "a/b", "/lead", "nul\0", ".", ".."] {
            assert!(
                matches!(check_name(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name(&"x".repeat(255)).is_ok());
        assert!(check_name("psm_0123abcd").is_ok());
    }

    #[test]
    fn an_anonymous_segment_cannot_be_resized_by_whoever_holds_it() {
        let shm = SharedMemory::anonymous(8192).unwrap();
        let fd = shm.fd.as_ref().unwrap();
        // What a process it is handed to could try: each is refused, and
        // the mapping stays whole.
        assert_eq!(nix::unistd::ftruncate(fd, 0), Err(Errno::EPERM));
        assert_eq!(nix::unistd::ftruncate(fd, 1 << 20), Err(Errno::EPERM));
        shm.write_at(8191, &[7]).unwrap();
        let mut byte = [0];
        shm.read_at(8191, &mut byte).unwrap();
        assert_eq!(byte, [7]);
    }

    #[test]
    fn hex_round_trips() {
        let name = "ipct_é;:=";
        assert_eq!(unhex(&hex(name.as_bytes())).unwrap(), name.as_bytes());
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}

/// A number type that a [`SharedSlice`] holds: the integers of 8 to 64
/// bits and the floats, each with the format character Python's
/// `memoryview.cast` and `struct` give it.
pub trait Element: bytemuck::Pod + private::Sealed {
    /// The format character of Python's `memoryview.cast` for this type
    /// (`'d'` for `f64`, `'q'` for `i64`, ...).
    const FORMAT: char;
    /// The atomic integer of the same size that reads and writes it.
    #[doc(hidden)]
    type Word: private::Word<Self>;
}

mod private {
    /// Only the types this crate implements [`Element`](super::Element)
    /// for.
    pub trait Sealed {}

    /// The atomic integer under an element: loads and stores it whole.
    pub trait Word<T>: crate::sys::map::AtomicWord {
        fn load(&self) -> T;
        fn store(&self, value: T);
    }
}

macro_rules! element {
    ($($t:ty => $word:ty, $format:literal, $to:expr, $from:expr;)*) => {$(
        impl private::Sealed for $t {}
        impl Element for $t {
            const FORMAT: char = $format;
            type Word = $word;
        }
        impl private::Word<$t> for $word {
            #[inline]
            fn load(&self) -> $t {
                let from: fn(_) -> $t = $from;
                from(<$word>::load(self, Ordering::Relaxed))
            }
            #[inline]
            fn store(&self, value: $t) {
                let to: fn($t) -> _ = $to;
                <$word>::store(self, to(value), Ordering::Relaxed)
            }
        }
    )*};
}

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8};

element! {
    u8 => AtomicU8, 'B', |v| v, |w| w;
    i8 => AtomicU8, 'b', |v: i8| v as u8, |w: u8| w as i8;
    u16 => AtomicU16, 'H', |v| v, |w| w;
    i16 => AtomicU16, 'h', |v: i16| v as u16, |w: u16| w as i16;
    u32 => AtomicU32, 'I', |v| v, |w| w;
    i32 => AtomicU32, 'i', |v: i32| v as u32, |w: u32| w as i32;
    u64 => AtomicU64, 'Q', |v| v, |w| w;
    i64 => AtomicU64, 'q', |v: i64| v as u64, |w: u64| w as i64;
    f32 => AtomicU32, 'f', f32::to_bits, f32::from_bits;
    f64 => AtomicU64, 'd', f64::to_bits, f64::from_bits;
}

/// Numbers of type `T` in a [`SharedMemory`] segment, read and written by
/// this and other processes at once ([`SharedMemory::slice`]).
///
/// Each number is read and written whole (an atomic load or store of its
/// size), so a reader never sees half of another process's write; there
/// is no order between different numbers, so a reader that must see a
/// group of writes together waits for a [`Lock`](crate::Lock), an
/// [`Event`](crate::Event) or a [`Semaphore`](crate::Semaphore) that the
/// writer releases after them. Python's side (`memoryview.cast`, numpy)
/// reads and writes aligned numbers whole too on the platforms Linux runs
/// on.
pub struct SharedSlice<'a, T: Element> {
    words: &'a [T::Word],
}

impl<T: Element> SharedSlice<'_, T> {
    /// How many numbers it holds.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The number at `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.words.get(index).map(private::Word::load)
    }

    /// Sets the number at `index`.
    ///
    /// # Panics
    ///
    /// If `index` is past the end, as a slice's indexing does.
    pub fn set(&self, index: usize, value: T) {
        private::Word::store(&self.words[index], value);
    }

    /// The numbers in order, each read when the iterator reaches it.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.words.iter().map(private::Word::load)
    }

    /// A copy of every number.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().collect()
    }

    /// Sets every number from `values`.
    ///
    /// # Panics
    ///
    /// If `values` has another length, as `<[T]>::copy_from_slice` does.
    pub fn copy_from_slice(&self, values: &[T]) {
        assert_eq!(
            values.len(),
            self.len(),
            "copy_from_slice: {} values into {} places",
            values.len(),
            self.len()
        );
        for (word, &value) in self.words.iter().zip(values) {
            private::Word::store(word, value);
        }
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for SharedSlice<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
