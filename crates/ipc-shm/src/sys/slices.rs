//! The in-place views of shared memory: `unsafe` accessors that lend a
//! segment's bytes or a `RawArray`'s elements as ordinary slices, for
//! callers who rule out concurrent writers by other means.

use std::slice;

use bytemuck::Pod;

use crate::{RawArray, SharedMemory};

impl SharedMemory {
    /// The segment's bytes as a slice.
    ///
    /// # Safety
    ///
    /// While the slice is alive, no process (this one included, through
    /// another handle or [`write_at`](Self::write_at)) may write the
    /// segment: Rust assumes the bytes behind a `&[u8]` do not change.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `size()` readable bytes that live as long as
        // `self`; the caller promises that nobody writes them meanwhile.
        unsafe { slice::from_raw_parts(self.map.as_ptr(), self.size()) }
    }

    /// The segment's bytes as a mutable slice.
    ///
    /// # Safety
    ///
    /// While the slice is alive, nothing else may read or write the segment:
    /// no other process, and no other handle or slice in this one.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the mapping is `size()` writable bytes that live as long as
        // `self`; the caller promises exclusive access meanwhile.
        unsafe { slice::from_raw_parts_mut(self.map.as_ptr(), self.size()) }
    }
}

impl<T: Pod> RawArray<T> {
    fn elements(&self) -> *mut T {
        // Checks that the elements are inside the mapping and aligned.
        self.obj
            .map()
            .checked::<T>(self.obj.layout.data_offset, self.len())
    }

    /// The elements as a slice.
    ///
    /// # Safety
    ///
    /// While the slice is alive, no process may write the array.
    pub unsafe fn as_slice(&self) -> &[T] {
        let data = self.elements();
        // SAFETY: the header check proved the mapping holds `len()` aligned
        // elements at the data offset; any bytes are a valid `T` (Pod); the
        // caller promises that nobody writes them meanwhile.
        unsafe { slice::from_raw_parts(data, self.len()) }
    }

    /// The elements as a mutable slice.
    ///
    /// # Safety
    ///
    /// While the slice is alive, nothing else may read or write the array:
    /// no other process, and no other handle or slice in this one.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        let data = self.elements();
        // SAFETY: as in `as_slice`; the caller promises exclusive access.
        unsafe { slice::from_raw_parts_mut(data, self.len()) }
    }
}
