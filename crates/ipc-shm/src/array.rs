//! [`Array`] and [`RawArray`]: a fixed-length array of a plain-old-data
//! type in shared memory, with a robust lock (Python's
//! `multiprocessing.Array`) or without one (`multiprocessing.RawArray`).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;
use ipc_core::{Deadline, Error, Result};

use crate::lock::{wrap, LockResult};
use crate::segment::MUTEX_OFFSET;
use crate::segment::{object_common, sealed, Builder, Kind, Layout, Object, ObjectKind, Spec};
use crate::shm::SharedMemory;
use crate::sys::mutex::MutexGuard;

/// What a new array starts with: a copy of a slice, or zeroed elements.
#[derive(Clone, Copy, Debug)]
pub enum Elements<'a, T> {
    /// A copy of these values.
    Copy(&'a [T]),
    /// This many zeroed elements.
    Zeroed(usize),
}

/// The [`ObjectKind`] of an array type: a copy of a slice or zeroed
/// elements, `len` of them.
macro_rules! array_kind {
    ($ty:ident, $kind:expr) => {
        impl<T: Pod> sealed::Sealed for $ty<T> {}

        impl<T: Pod> ObjectKind for $ty<T> {
            type Init<'a> = Elements<'a, T>;

            fn spec() -> Spec {
                Spec::of::<T>($kind)
            }

            fn len(init: &Elements<'_, T>) -> usize {
                match init {
                    Elements::Copy(values) => values.len(),
                    Elements::Zeroed(len) => *len,
                }
            }

            fn fill(init: Elements<'_, T>, shm: &SharedMemory, layout: &Layout) {
                if let Elements::Copy(values) = init {
                    shm.map.copy_in(layout.data_offset, values)
                }
            }

            fn wrap(obj: Object) -> Self {
                $ty {
                    obj,
                    _type: PhantomData,
                }
            }
        }
    };
}

const OUT_OF_RANGE: Error = Error::InvalidArgument("array index out of range");
const WRONG_LEN: Error = Error::InvalidArgument("slice length differs from the array length");

/// A fixed-length array of a plain-old-data type in shared memory, guarded
/// by a robust process-shared lock: Python's `multiprocessing.Array`.
///
/// [`get`](Self::get), [`set`](Self::set) and [`to_vec`](Self::to_vec)
/// take the lock once each, as Python's indexing does;
/// [`lock`](Self::lock) (Python's `get_lock()`) holds it and gives
/// `&mut [T]`, the fast way to touch many elements.
///
/// ```
/// use ipc_core::process::Process;
/// use ipc_shm::Array;
///
/// let arr = Array::from_slice(&[0i32, 1, 2, 3, 4])?; // Array('i', range(5))
/// let mut child = Process::new().pass("arr", &arr)?.fork({
///     let arr = &arr;
///     move || -> ipc_core::Result<()> {
///         for x in arr.lock()?.iter_mut() {
///             *x = -*x;
///         }
///         Ok(())
///     }
/// })?;
/// assert!(child.join()?.success());
/// assert_eq!(arr.to_vec()?, [0, -1, -2, -3, -4]); // arr[:]
/// # Ok::<(), ipc_core::Error>(())
/// ```
///
/// A holder that dies is reported as for [`Value`](crate::Value): the next
/// [`lock`](Self::lock) returns [`LockError::OwnerDied`](crate::LockError)
/// with the guard, and the one-element calls fail with
/// [`Error::OwnerDied`] until a holder marks the data consistent.
/// Opening checks the element type and the length.
pub struct Array<T: Pod> {
    obj: Object,
    _type: PhantomData<T>,
}

array_kind!(Array, Kind::Array);

impl<T: Pod> Array<T> {
    /// A builder for an array holding a copy of `values` (see
    /// [`Builder`]); opening checks that the array has `values.len()`
    /// elements.
    pub fn builder(values: &[T]) -> Builder<'_, Self> {
        Builder::new(Elements::Copy(values))
    }

    /// A builder for an array of `len` zeroed elements (see [`Builder`]);
    /// opening checks that the array has `len` elements.
    pub fn builder_zeroed(len: usize) -> Builder<'static, Self> {
        Builder::new(Elements::Zeroed(len))
    }

    /// A new anonymous array holding a copy of `values`.
    pub fn from_slice(values: &[T]) -> Result<Self> {
        Self::builder(values).anonymous()
    }

    /// A new anonymous array of `len` zeroed elements (Python's
    /// `Array('i', 10)`).
    pub fn zeroed(len: usize) -> Result<Self> {
        Self::builder_zeroed(len).anonymous()
    }

    /// Creates the array `/dev/shm/<name>` holding a copy of `values`; this
    /// process owns it.
    pub fn create(name: &str, values: &[T]) -> Result<Self> {
        Self::builder(values).create(name)
    }

    /// Creates the array `/dev/shm/<name>` of `len` zeroed elements.
    pub fn create_zeroed(name: &str, len: usize) -> Result<Self> {
        Self::builder_zeroed(len).create(name)
    }

    /// Opens the array `name`, checking that it holds `len` elements of
    /// type `T`.
    pub fn open(name: &str, len: usize) -> Result<Self> {
        Self::builder_zeroed(len).open(name)
    }

    /// Opens `name`, or creates it holding a copy of `values`. An existing
    /// array must have `values.len()` elements.
    pub fn open_or_create(name: &str, values: &[T]) -> Result<Self> {
        Self::builder(values).open_or_create(name)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.obj.layout.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock_until(&self, deadline: Deadline) -> LockResult<MutexGuard<'_, [T]>> {
        wrap(self.obj.map().lock_slice::<T>(
            MUTEX_OFFSET,
            self.obj.layout.data_offset,
            self.len(),
            deadline,
        ))
    }

    /// Waits for the lock and returns a guard that derefs to the elements.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, [T]>> {
        self.lock_until(Deadline::Never)
    }

    /// Takes the lock if it is free now ([`LockError::WouldBlock`](crate::LockError)).
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, [T]>> {
        self.lock_until(Deadline::Now)
    }

    /// Waits at most `timeout` for the lock ([`LockError::Timeout`](crate::LockError)).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, [T]>> {
        self.lock_until(Deadline::after(timeout))
    }

    /// Element `index`, read under the lock (Python's `arr[i]`).
    pub fn get(&self, index: usize) -> Result<T> {
        self.lock()?.get(index).copied().ok_or(OUT_OF_RANGE)
    }

    /// Writes element `index` under the lock (Python's `arr[i] = v`).
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        *self.lock()?.get_mut(index).ok_or(OUT_OF_RANGE)? = value;
        Ok(())
    }

    /// A copy of all elements, taken under the lock (Python's `arr[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.lock()?.to_vec())
    }

    /// Overwrites all elements with `values` under the lock (Python's
    /// `arr[:] = values`); the lengths must match.
    pub fn copy_from_slice(&self, values: &[T]) -> Result<()> {
        if values.len() != self.len() {
            return Err(WRONG_LEN);
        }
        self.lock()?.copy_from_slice(values);
        Ok(())
    }
}

object_common!(Array<T>);

impl<T: Pod> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len())
            .field("segment", &self.obj.shm)
            .finish()
    }
}

/// A fixed-length array of a plain-old-data type in shared memory without
/// a lock: Python's `multiprocessing.RawArray`.
///
/// Element reads and writes are volatile copies, bulk ones `memcpy`. With
/// no lock, a read racing a write in another process can see a mix of old
/// and new bytes (still valid values, `T` being plain old data).
///
/// ```
/// let a = ipc_shm::RawArray::from_slice(&[1u8, 2, 3])?;
/// a.set(0, 9)?;
/// assert_eq!(a.to_vec(), [9, 2, 3]);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct RawArray<T: Pod> {
    pub(crate) obj: Object,
    _type: PhantomData<T>,
}

array_kind!(RawArray, Kind::RawArray);

impl<T: Pod> RawArray<T> {
    /// A builder for an array holding a copy of `values` (see
    /// [`Builder`]); opening checks that the array has `values.len()`
    /// elements.
    pub fn builder(values: &[T]) -> Builder<'_, Self> {
        Builder::new(Elements::Copy(values))
    }

    /// A builder for an array of `len` zeroed elements (see [`Builder`]);
    /// opening checks that the array has `len` elements.
    pub fn builder_zeroed(len: usize) -> Builder<'static, Self> {
        Builder::new(Elements::Zeroed(len))
    }

    /// A new anonymous array holding a copy of `values`.
    pub fn from_slice(values: &[T]) -> Result<Self> {
        Self::builder(values).anonymous()
    }

    /// A new anonymous array of `len` zeroed elements (Python's
    /// `Array('i', 10)`).
    pub fn zeroed(len: usize) -> Result<Self> {
        Self::builder_zeroed(len).anonymous()
    }

    /// Creates the array `/dev/shm/<name>` holding a copy of `values`; this
    /// process owns it.
    pub fn create(name: &str, values: &[T]) -> Result<Self> {
        Self::builder(values).create(name)
    }

    /// Creates the array `/dev/shm/<name>` of `len` zeroed elements.
    pub fn create_zeroed(name: &str, len: usize) -> Result<Self> {
        Self::builder_zeroed(len).create(name)
    }

    /// Opens the array `name`, checking that it holds `len` elements of
    /// type `T`.
    pub fn open(name: &str, len: usize) -> Result<Self> {
        Self::builder_zeroed(len).open(name)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.obj.layout.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn offset(&self, index: usize) -> Result<usize> {
        if index < self.len() {
            Ok(self.obj.layout.data_offset + index * std::mem::size_of::<T>())
        } else {
            Err(OUT_OF_RANGE)
        }
    }

    /// Element `index`.
    pub fn get(&self, index: usize) -> Result<T> {
        Ok(self.obj.map().read(self.offset(index)?))
    }

    /// Writes element `index`.
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.obj.map().write(self.offset(index)?, value);
        Ok(())
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = vec![T::zeroed(); self.len()];
        self.obj
            .map()
            .copy_out(self.obj.layout.data_offset, &mut out);
        out
    }

    /// Copies all elements into `out`; the lengths must match.
    pub fn copy_to_slice(&self, out: &mut [T]) -> Result<()> {
        if out.len() != self.len() {
            return Err(WRONG_LEN);
        }
        self.obj.map().copy_out(self.obj.layout.data_offset, out);
        Ok(())
    }

    /// Overwrites all elements with `values`; the lengths must match.
    pub fn copy_from_slice(&self, values: &[T]) -> Result<()> {
        if values.len() != self.len() {
            return Err(WRONG_LEN);
        }
        self.obj.map().copy_in(self.obj.layout.data_offset, values);
        Ok(())
    }
}

object_common!(RawArray<T>);

impl<T: Pod> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len())
            .field("segment", &self.obj.shm)
            .finish()
    }
}
