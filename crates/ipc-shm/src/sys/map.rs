//! A shared, read-write memory mapping of a segment (memmap2's `MmapRaw`)
//! with bounds- and alignment-checked accessors: atomics and volatile copies
//! of plain-old-data values (`mutex` adds the robust mutex of an object).

use std::io;
use std::mem::{align_of, size_of, ManuallyDrop};
use std::os::fd::BorrowedFd;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64};

use bytemuck::Pod;
use memmap2::{MmapOptions, MmapRaw};

/// The atomic integer types a mapping can be seen as (`Mapping::atomics`).
pub trait AtomicWord: Sized {}

impl AtomicWord for std::sync::atomic::AtomicU8 {}
impl AtomicWord for std::sync::atomic::AtomicU16 {}
impl AtomicWord for AtomicU32 {}
impl AtomicWord for AtomicU64 {}

/// A `MAP_SHARED` read-write mapping of a whole segment.
///
/// Offsets given to the accessors are checked: an offset out of range or
/// misaligned for the type is a bug in this crate and panics, never reads
/// or writes outside the mapping.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// Unmapped on drop unless `keep_mapped` was called.
    raw: ManuallyDrop<MmapRaw>,
    keep_mapped: bool,
}

impl Mapping {
    /// Maps the first `len` bytes of the segment behind `fd`.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty segment",
            ));
        }
        let raw = MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Mapping {
            raw: ManuallyDrop::new(raw),
            keep_mapped: false,
        })
    }

    /// Leaves the memory mapped when this value is dropped, until the
    /// process ends: for a mapping that a thread's robust futex list still
    /// points into (a lock held, without a guard, by a thread of this
    /// process).
    pub(crate) fn keep_mapped(&mut self) {
        self.keep_mapped = true;
    }

    /// Leaves this mapping out of every child forked from now on.
    pub(crate) fn exclude_from_forks(&self) -> io::Result<()> {
        self.raw.advise(memmap2::Advice::DontFork)
    }

    /// The length of the mapping in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The first byte of the mapping.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.raw.as_mut_ptr()
    }

    /// A pointer to `count` values of `T` at `offset`, after checking that
    /// they lie inside the mapping and that `offset` is aligned for `T`.
    #[inline]
    pub(super) fn checked<T>(&self, offset: usize, count: usize) -> *mut T {
        let bytes = size_of::<T>()
            .checked_mul(count)
            .and_then(|n| n.checked_add(offset));
        assert!(
            bytes.is_some_and(|end| end <= self.len()),
            "ipc-shm bug: {count} x {} bytes at offset {offset} overrun a {}-byte mapping",
            size_of::<T>(),
            self.len()
        );
        // The address decides, not the offset: a type may be aligned to
        // more than the page the mapping starts on.
        let p = self.as_ptr().wrapping_add(offset);
        assert!(
            (p as usize) % align_of::<T>() == 0,
            "ipc-shm bug: offset {offset} is not aligned to {}",
            align_of::<T>()
        );
        p.cast()
    }

    /// The 32-bit atomic at `offset`.
    #[inline]
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let p = self.checked::<AtomicU32>(offset, 1);
        // SAFETY: `checked` proved that the four bytes are inside the mapping
        // and aligned; the mapping outlives the returned reference (it is tied
        // to `&self`); AtomicU32 has no invalid bit patterns and allows
        // mutation through a shared reference, so other processes writing the
        // word concurrently is exactly what atomics are for.
        unsafe { &*p }
    }

    /// The 64-bit atomic at `offset`.
    #[inline]
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        let p = self.checked::<AtomicU64>(offset, 1);
        // SAFETY: as in `atomic_u32`: in bounds, aligned, outlived by the
        // mapping, and an atomic type.
        unsafe { &*p }
    }

    /// `len` atomics of type `A` from `offset`: the mapping seen as
    /// numbers that other processes read and write at the same time.
    #[inline]
    pub(crate) fn atomics<A: AtomicWord>(&self, offset: usize, len: usize) -> &[A] {
        let p = self.checked::<A>(offset, len);
        // SAFETY: `checked` proved the `len` words inside the mapping and
        // aligned; the mapping outlives the slice (tied to `&self`); an
        // atomic integer has no invalid bit patterns, the same layout as
        // its integer, and allows mutation through a shared reference, so
        // other processes writing the words concurrently is exactly what
        // atomics are for.
        unsafe { std::slice::from_raw_parts(p.cast_const(), len) }
    }

    /// A volatile copy of the `T` at `offset`.
    pub(crate) fn read<T: Pod>(&self, offset: usize) -> T {
        let p = self.checked::<T>(offset, 1);
        // SAFETY: in bounds and aligned (checked above); T is Pod, so any
        // bytes, including a value torn by a concurrent writer in another
        // process, are a valid T.
        unsafe { ptr::read_volatile(p) }
    }

    /// A volatile write of `value` at `offset`.
    pub(crate) fn write<T: Pod>(&self, offset: usize, value: T) {
        let p = self.checked::<T>(offset, 1);
        // SAFETY: in bounds and aligned (checked above); the mapping is
        // writable and never aliased by a Rust reference to non-atomic data
        // outside a MutexGuard (module invariant), and callers use this only
        // on raw data or on a header that is not yet published.
        unsafe { ptr::write_volatile(p, value) }
    }

    /// Copies `dst.len()` values of `T` from `offset` into `dst`.
    #[inline]
    pub(crate) fn copy_out<T: Pod>(&self, offset: usize, dst: &mut [T]) {
        let p = self.checked::<T>(offset, dst.len());
        // SAFETY: the source range is inside the mapping and aligned
        // (checked above); `dst` is valid for writes of its length; `copy`
        // allows the ranges to overlap (a caller may hold a slice of this
        // very mapping from the unsafe accessors); T is Pod, so whatever
        // bytes another process left there form valid values.
        unsafe { ptr::copy(p.cast_const(), dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the mapping at `offset`.
    #[inline]
    pub(crate) fn copy_in<T: Pod>(&self, offset: usize, src: &[T]) {
        let p = self.checked::<T>(offset, src.len());
        // SAFETY: the destination range is inside the writable mapping and
        // aligned (checked above); `src` is valid for reads of its length;
        // `copy` allows the ranges to overlap.
        unsafe { ptr::copy(src.as_ptr(), p, src.len()) }
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub(crate) fn fill(&self, offset: usize, len: usize, byte: u8) {
        let p = self.checked::<u8>(offset, len);
        // SAFETY: the range is inside the writable mapping (checked above).
        unsafe { ptr::write_bytes(p, byte, len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.keep_mapped {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.raw) };
        }
    }
}
