//! Where everything sits in a queue's segment, and the `#[repr(C)]`
//! layout header that is written on create and checked on open.
//!
//! ```text
//! offset   0  magic        u64  "ipcqueue", written last (Release)
//!          8  init         u32  0 while the creator initialises, 1 when ready (a futex)
//!         12  version      u32  LAYOUT_VERSION
//!         16  kind         u32  1 Queue, 2 SimpleQueue, 3 JoinableQueue
//!         20  reserved     u32
//!         24  capacity     u64  ring bytes (a multiple of 8)
//!         32  maxsize      u64  bound in items (0: none)
//!         40  type_hash    u64  FNV-1a of std::any::type_name::<T>()
//!         48  total_size   u64  RING_OFFSET + capacity
//!         56  type_name    [u8; 72]  cut short, for messages
//!        128  producer mutex (64 bytes), held by a put
//!        192  consumer mutex (64 bytes), held by a get
//!        256  tail u64 (put count << 32 | ring offset), put_seq u32
//!        320  head u64 (get count << 32 | ring offset), get_seq u32
//!        384  seen_head u64  the producers' last look at `head`
//!        448  seen_tail u64  the consumers' last look at `tail`
//!        512  waiting_getters u32, waiting_putters u32, closed u32, recoveries u32
//!        576  done u32 (task_done count), join_seq u32, waiting_joiners u32
//!        640  the ring
//! ```
//!
//! Every group from 128 on has its own 64-byte cache line, so a producer
//! and a consumer working at the same time each keep their own lines and
//! share only `tail` and `head`, and those only when one of them has run
//! out of what its last look showed.
//!
//! The header is written through atomics and published with a Release
//! store of the magic number, then the `init` word; an opener waits on
//! `init` (a futex) for a creator that is still initialising.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};
use ipc_shm::raw::{self, atomic_u32, atomic_u64};
use ipc_shm::SharedMemory;

/// `"ipcqueue"`, little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ipcqueue");
/// Bumped whenever the layout changes incompatibly.
pub(crate) const LAYOUT_VERSION: u32 = 3;

const INIT: usize = 8;
const VERSION: usize = 12;
const KIND: usize = 16;
const CAPACITY: usize = 24;
const MAXSIZE: usize = 32;
const TYPE_HASH: usize = 40;
const TOTAL_SIZE: usize = 48;
const TYPE_NAME: usize = 56;
const TYPE_NAME_LEN: usize = 72;
pub(crate) const HEADER_SIZE: usize = 128;
pub(crate) const PRODUCER_MUTEX: usize = HEADER_SIZE;
pub(crate) const CONSUMER_MUTEX: usize = 192;
pub(crate) const TAIL: usize = 256;
pub(crate) const PUT_SEQ: usize = 264;
pub(crate) const HEAD: usize = 320;
pub(crate) const GET_SEQ: usize = 328;
pub(crate) const SEEN_HEAD: usize = 384;
pub(crate) const SEEN_TAIL: usize = 448;
pub(crate) const WAITING_GETTERS: usize = 512;
pub(crate) const WAITING_PUTTERS: usize = 516;
pub(crate) const CLOSED: usize = 520;
pub(crate) const RECOVERIES: usize = 524;
pub(crate) const DONE: usize = 576;
pub(crate) const JOIN_SEQ: usize = 580;
pub(crate) const WAITING_JOINERS: usize = 584;
pub(crate) const RING_OFFSET: usize = 640;

/// The layout header as a `#[repr(C)]` type. It is never read or written
/// as a whole (the fields are reached through atomics at their offsets,
/// since other processes read them concurrently); it pins those offsets,
/// which the assertions below check against the constants used.
#[repr(C)]
#[allow(dead_code)]
struct Header {
    magic: u64,
    init: u32,
    version: u32,
    kind: u32,
    reserved: u32,
    capacity: u64,
    maxsize: u64,
    type_hash: u64,
    total_size: u64,
    type_name: [u8; TYPE_NAME_LEN],
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(offset_of!(Header, init) == INIT);
    assert!(offset_of!(Header, version) == VERSION);
    assert!(offset_of!(Header, kind) == KIND);
    assert!(offset_of!(Header, capacity) == CAPACITY);
    assert!(offset_of!(Header, maxsize) == MAXSIZE);
    assert!(offset_of!(Header, type_hash) == TYPE_HASH);
    assert!(offset_of!(Header, total_size) == TOTAL_SIZE);
    assert!(offset_of!(Header, type_name) == TYPE_NAME);
};
const _: () = assert!(TYPE_NAME + TYPE_NAME_LEN == HEADER_SIZE);
const _: () = assert!(PRODUCER_MUTEX + raw::ROBUST_MUTEX_SIZE <= CONSUMER_MUTEX);
const _: () = assert!(CONSUMER_MUTEX + raw::ROBUST_MUTEX_SIZE <= TAIL);

/// The smallest ring: one record of up to 56 bytes.
pub(crate) const MIN_CAPACITY: usize = 64;
/// The largest ring: ring offsets are 32-bit, beside a 32-bit count in one
/// 64-bit word that a put or a get stores in one go.
pub(crate) const MAX_CAPACITY: usize = u32::MAX as usize & !7;
/// The smallest segment that can hold a queue.
pub(crate) const MIN_TOTAL_SIZE: usize = RING_OFFSET + MIN_CAPACITY;
/// How long an opener waits for a creator that is initialising.
const INIT_WAIT: Duration = Duration::from_secs(2);

/// Which of the three queue types a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Queue = 1,
    SimpleQueue = 2,
    JoinableQueue = 3,
}

impl Kind {
    fn name(n: u32) -> Option<&'static str> {
        match n {
            1 => Some("Queue"),
            2 => Some("SimpleQueue"),
            3 => Some("JoinableQueue"),
            _ => None,
        }
    }
}

/// What a queue is created with, or expected to be on open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    pub(crate) kind: Kind,
    pub(crate) type_name: &'static str,
}

impl Spec {
    fn type_hash(&self) -> u64 {
        raw::type_hash(self.type_name)
    }
}

/// The parameters a validated queue was made with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub(crate) capacity: usize,
    pub(crate) maxsize: usize,
}

/// The segment size for a ring of `capacity` bytes.
pub(crate) fn total_size(capacity: usize) -> Result<usize> {
    (capacity <= MAX_CAPACITY)
        .then(|| capacity + RING_OFFSET)
        .ok_or(Error::InvalidArgument(TOO_LARGE))
}

const TOO_LARGE: &str = "the queue capacity is too large (at most 4 GiB - 8)";

/// Rounds a requested capacity up to a multiple of 8, at least
/// [`MIN_CAPACITY`] and at most [`MAX_CAPACITY`].
pub(crate) fn round_capacity(capacity: usize) -> Result<usize> {
    capacity
        .max(MIN_CAPACITY)
        .checked_next_multiple_of(8)
        .filter(|&c| c <= MAX_CAPACITY)
        .ok_or(Error::InvalidArgument(TOO_LARGE))
}

/// Lays out a freshly created, zero-filled segment and publishes it.
pub(crate) fn create(shm: &mut SharedMemory, spec: &Spec, params: &Params) -> Result<()> {
    raw::init_robust_mutex(shm, PRODUCER_MUTEX)?;
    raw::init_robust_mutex(shm, CONSUMER_MUTEX)?;
    let shm = &*shm;
    atomic_u32(shm, VERSION).store(LAYOUT_VERSION, Ordering::Relaxed);
    atomic_u32(shm, KIND).store(spec.kind as u32, Ordering::Relaxed);
    atomic_u64(shm, CAPACITY).store(params.capacity as u64, Ordering::Relaxed);
    atomic_u64(shm, MAXSIZE).store(params.maxsize as u64, Ordering::Relaxed);
    atomic_u64(shm, TYPE_HASH).store(spec.type_hash(), Ordering::Relaxed);
    atomic_u64(shm, TOTAL_SIZE).store(total_size(params.capacity)? as u64, Ordering::Relaxed);
    let name = spec.type_name.as_bytes();
    shm.write_at(TYPE_NAME, &name[..name.len().min(TYPE_NAME_LEN)])?;
    atomic_u64(shm, 0).store(MAGIC, Ordering::Release);
    let init = atomic_u32(shm, INIT);
    init.store(1, Ordering::Release);
    raw::futex_wake(init, u32::MAX);
    Ok(())
}

fn invalid(message: String) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, message))
}

/// Checks the header of a mapped segment against `spec` and returns the
/// queue's parameters. `what` names the segment in messages.
pub(crate) fn validate(shm: &SharedMemory, spec: &Spec) -> Result<Params> {
    let what = match shm.name() {
        Some(name) => format!("shared memory segment `{name}`"),
        None => "the anonymous segment".to_owned(),
    };
    if shm.size() < MIN_TOTAL_SIZE {
        return Err(invalid(format!(
            "{what} has {} bytes, too few to hold a queue",
            shm.size()
        )));
    }
    wait_ready(shm, &what)?;
    let magic = atomic_u64(shm, 0).load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(invalid(format!(
            "{what} is not an ipc-queue (magic {magic:#018x}, expected {MAGIC:#018x})"
        )));
    }
    let version = atomic_u32(shm, VERSION).load(Ordering::Relaxed);
    if version != LAYOUT_VERSION {
        return Err(invalid(format!(
            "{what} has queue layout version {version}, this build reads version {LAYOUT_VERSION}"
        )));
    }
    let kind = atomic_u32(shm, KIND).load(Ordering::Relaxed);
    let Some(found) = Kind::name(kind) else {
        return Err(invalid(format!("{what} has an unknown queue kind {kind}")));
    };
    if kind != spec.kind as u32 {
        return Err(invalid(format!(
            "{what} holds a {found}, not a {}",
            Kind::name(spec.kind as u32).unwrap_or("?")
        )));
    }
    if atomic_u64(shm, TYPE_HASH).load(Ordering::Relaxed) != spec.type_hash() {
        let mut name = [0u8; TYPE_NAME_LEN];
        shm.read_at(TYPE_NAME, &mut name)?;
        let stored = String::from_utf8_lossy(&name);
        return Err(invalid(format!(
            "{what} holds items of type `{}`, not `{}`",
            stored.trim_end_matches('\0'),
            spec.type_name
        )));
    }
    let capacity = atomic_u64(shm, CAPACITY).load(Ordering::Relaxed);
    let total = atomic_u64(shm, TOTAL_SIZE).load(Ordering::Relaxed);
    let capacity = usize::try_from(capacity)
        .ok()
        .filter(|&c| (MIN_CAPACITY..=MAX_CAPACITY).contains(&c) && c % 8 == 0)
        .ok_or_else(|| invalid(format!("{what} has an impossible capacity {capacity}")))?;
    let expected = total_size(capacity)?;
    if total != expected as u64 {
        return Err(invalid(format!(
            "{what} has an inconsistent header ({total} bytes for a ring of {capacity}, expected {expected})"
        )));
    }
    if shm.size() < expected {
        return Err(invalid(format!(
            "{what} has {} bytes, fewer than the {expected} its header describes",
            shm.size()
        )));
    }
    let maxsize = atomic_u64(shm, MAXSIZE).load(Ordering::Relaxed);
    let maxsize = usize::try_from(maxsize).unwrap_or(usize::MAX);
    Ok(Params { capacity, maxsize })
}

/// Waits (at most [`INIT_WAIT`], sleeping on the `init` word) for a creator
/// that is still initialising.
fn wait_ready(shm: &SharedMemory, what: &str) -> Result<()> {
    let init = atomic_u32(shm, INIT);
    let deadline = Deadline::after(INIT_WAIT);
    loop {
        match init.load(Ordering::Acquire) {
            1 => return Ok(()),
            0 => {}
            other => {
                return Err(invalid(format!(
                    "{what} is not an ipc-queue (init word {other:#x})"
                )))
            }
        }
        let Some(left) = deadline.remaining().filter(|left| !left.is_zero()) else {
            return Err(invalid(format!(
                "{what} was never initialised: its creator died while creating it, or it is not an ipc-queue"
            )));
        };
        raw::futex_wait(init, 0, Some(left));
    }
}
