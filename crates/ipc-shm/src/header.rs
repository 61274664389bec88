//! The layout header at the start of every segment that holds an ipc-shm
//! object (a `Value`, an `Array`, a lock ...): a magic number, a layout
//! version, the kind of object, the size, alignment and a hash of the name
//! of its element type, and its length. An opener checks every field
//! before it touches anything else, so a segment of another kind, type,
//! length or version, or one full of garbage, is refused with an error
//! that says what was expected and what was found.
//!
//! ```text
//! offset  0  magic        u64  written last (Release), read first (Acquire)
//!         8  state        u32  0 while the creator initialises, 1 when ready (a futex)
//!        12  version      u32  LAYOUT_VERSION
//!        16  kind         u32  Kind
//!        24  elem_size    u64  size_of::<T>()
//!        32  elem_align   u64  align_of::<T>()
//!        40  len          u64  number of elements
//!        48  type_hash    u64  FNV-1a of std::any::type_name::<T>()
//!        56  data_offset  u64  where the elements start
//!        64  total_size   u64  bytes the object needs
//!        72  type_name    [u8; 56]  the type's name, cut short, for messages
//!       128  the robust mutex (64 bytes), used by the kinds that lock
//!       192  the data, aligned for T
//! ```
//!
//! The type check is best effort: two different types with the same size,
//! alignment and type name (the same type in two builds whose compilers
//! spell its name differently, or two crates' types that share a path) are
//! indistinguishable, and `type_name` is not guaranteed stable between
//! compiler versions, so a program built with another compiler may be
//! refused.

use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use ipc_core::{Deadline, Error, Result};

use crate::shm::invalid_data;
use crate::sys::futex;
use crate::sys::map::Mapping;
use crate::sys::mutex::MUTEX_AREA;

/// `"ipcshm\0\x01"`, little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ipcshm\0\x01");
/// Bumped whenever the layout changes incompatibly.
pub(crate) const LAYOUT_VERSION: u32 = 2;
pub(crate) const HEADER_SIZE: usize = 128;
pub(crate) const MUTEX_OFFSET: usize = HEADER_SIZE;
const DATA_MIN_OFFSET: usize = MUTEX_OFFSET + MUTEX_AREA;
const STATE_OFFSET: usize = 8;
const STATE_READY: u32 = 1;
/// How long an opener waits for a creator that is initialising.
pub(crate) const INIT_WAIT: Duration = Duration::from_secs(2);

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);

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
    type_name: [u8; 56],
}

/// What an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Value = 1,
    RawValue = 2,
    Array = 3,
    RawArray = 4,
    Lock = 5,
    RLock = 6,
    Semaphore = 7,
    BoundedSemaphore = 8,
    Event = 9,
    Condition = 10,
    Barrier = 11,
}

impl Kind {
    const ALL: [Kind; 11] = [
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
    ];

    /// Whether objects of this kind have a robust mutex at `MUTEX_OFFSET`.
    pub(crate) fn has_mutex(self) -> bool {
        matches!(
            self,
            Kind::Value | Kind::Array | Kind::Lock | Kind::RLock | Kind::Condition | Kind::Barrier
        )
    }

    fn from_u32(n: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == n)
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

    pub(crate) fn name(self) -> &'static str {
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
        }
    }
}

/// The type and kind an object is created with or expected to have.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    pub(crate) kind: Kind,
    elem_size: usize,
    elem_align: usize,
    type_hash: u64,
    type_name: &'static str,
}

impl Spec {
    /// An object of elements of type `T`.
    pub(crate) fn of<T: Pod>(kind: Kind) -> Spec {
        let type_name = std::any::type_name::<T>();
        Spec {
            kind,
            elem_size: std::mem::size_of::<T>(),
            elem_align: std::mem::align_of::<T>(),
            type_hash: fnv1a(type_name.as_bytes()),
            type_name,
        }
    }

    /// Where the parts of an object of `len` elements go.
    pub(crate) fn layout(&self, len: usize) -> Result<Layout> {
        if !self.elem_align.is_power_of_two() || self.elem_align > 4096 {
            return Err(Error::InvalidArgument(
                "element types aligned to more than a page are not supported",
            ));
        }
        let align = self.elem_align.max(8);
        let data_offset = DATA_MIN_OFFSET.next_multiple_of(align);
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
}

/// Where an object's parts are, in bytes from the start of its segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) data_offset: usize,
    pub(crate) len: usize,
    pub(crate) total: usize,
}

/// Writes every header field but the magic and the state (which
/// [`publish`] writes once the object is initialised).
pub(crate) fn write(map: &Mapping, spec: &Spec, layout: &Layout) {
    let mut type_name = [0u8; 56];
    let n = spec.type_name.len().min(type_name.len());
    type_name[..n].copy_from_slice(&spec.type_name.as_bytes()[..n]);
    map.write(
        0,
        Header {
            magic: 0,
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
            type_name,
        },
    );
}

/// Makes an initialised object visible to openers: the magic with a
/// Release store after everything else, then the state, then a wake-up for
/// openers that wait.
pub(crate) fn publish(map: &Mapping) {
    map.atomic_u64(0)
        .store(MAGIC, std::sync::atomic::Ordering::Release);
    let state = map.atomic_u32(STATE_OFFSET);
    state.store(STATE_READY, std::sync::atomic::Ordering::Release);
    futex::wake_all(state);
}

/// Checks the header of a mapped segment against `spec` (and `len`, if
/// given) and returns the object's layout. `what` names the segment in
/// error messages.
pub(crate) fn validate(
    map: &Mapping,
    spec: &Spec,
    len: Option<usize>,
    what: &str,
) -> Result<Layout> {
    if map.len() < HEADER_SIZE {
        return Err(invalid_data(format!(
            "{what} has {} bytes, too few to hold {}",
            map.len(),
            spec.kind.with_article()
        )));
    }
    wait_ready(map, what)?;
    let magic = map.atomic_u64(0).load(std::sync::atomic::Ordering::Acquire);
    if magic != MAGIC {
        return Err(invalid_data(format!(
            "{what} is not an ipc-shm object (magic {magic:#018x}, expected {MAGIC:#018x})"
        )));
    }
    let h: Header = map.read(0);
    if h.version != LAYOUT_VERSION {
        return Err(invalid_data(format!(
            "{what} has layout version {}, this build reads version {LAYOUT_VERSION}",
            h.version
        )));
    }
    let found = match Kind::from_u32(h.kind) {
        Some(kind) => kind,
        None => {
            return Err(invalid_data(format!(
                "{what} has an unknown kind {}",
                h.kind
            )))
        }
    };
    if found != spec.kind {
        return Err(invalid_data(format!(
            "{what} holds {}, not {}",
            found.with_article(),
            spec.kind.with_article()
        )));
    }
    if h.elem_size != spec.elem_size as u64
        || h.elem_align != spec.elem_align as u64
        || h.type_hash != spec.type_hash
    {
        let stored = String::from_utf8_lossy(&h.type_name);
        return Err(invalid_data(format!(
            "{what} holds elements of type `{}` (size {}, align {}), not `{}` (size {}, align {})",
            stored.trim_end_matches('\0'),
            h.elem_size,
            h.elem_align,
            spec.type_name,
            spec.elem_size,
            spec.elem_align
        )));
    }
    let stored_len = usize::try_from(h.len)
        .map_err(|_| invalid_data(format!("{what} has an impossible length {}", h.len)))?;
    if let Some(len) = len {
        if stored_len != len {
            return Err(invalid_data(format!(
                "{what} holds {stored_len} elements, not {len}"
            )));
        }
    }
    let layout = spec
        .layout(stored_len)
        .map_err(|_| invalid_data(format!("{what} has an impossible length {}", h.len)))?;
    if h.data_offset != layout.data_offset as u64 || h.total_size != layout.total as u64 {
        return Err(invalid_data(format!(
            "{what} has an inconsistent header (data at {}, {} bytes; expected {} and {})",
            h.data_offset, h.total_size, layout.data_offset, layout.total
        )));
    }
    if map.len() < layout.total {
        return Err(invalid_data(format!(
            "{what} has {} bytes, fewer than the {} its header describes",
            map.len(),
            layout.total
        )));
    }
    Ok(layout)
}

/// Waits (at most [`INIT_WAIT`], sleeping on the state word) for a
/// creator that is still initialising.
fn wait_ready(map: &Mapping, what: &str) -> Result<()> {
    let state = map.atomic_u32(STATE_OFFSET);
    let deadline = Deadline::after(INIT_WAIT);
    loop {
        match state.load(std::sync::atomic::Ordering::Acquire) {
            STATE_READY => return Ok(()),
            0 => {}
            other => {
                return Err(invalid_data(format!(
                    "{what} is not an ipc-shm object (state word {other:#x})"
                )))
            }
        }
        let Some(left) = deadline.remaining().filter(|left| !left.is_zero()) else {
            return Err(invalid_data(format!(
                "{what} was never initialised: its creator died while creating it, or it is not an ipc-shm object"
            )));
        };
        futex::wait(state, 0, Some(left));
    }
}

/// FNV-1a, 64 bits: a stable hash (std's hashers may change between
/// releases), good enough to tell type names apart.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

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
