//! [`Value`] and [`RawValue`]: one plain-old-data value in shared memory,
//! with a robust lock (Python's `multiprocessing.Value`) or without one
//! (`multiprocessing.RawValue`).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;
use ipc_core::{Deadline, Error, Result};

use crate::lock::{wrap, LockError, LockResult};
use crate::segment::{object_common, Object};
use crate::segment::{sealed, Builder, Kind, Layout, ObjectKind, Spec, MUTEX_OFFSET};
use crate::shm::SharedMemory;
use crate::sys::mutex::MutexGuard;

/// The [`ObjectKind`] of a value type: one `T`, starting as the value
/// given.
macro_rules! value_kind {
    ($ty:ident, $kind:expr) => {
        impl<T: Pod> sealed::Sealed for $ty<T> {}

        impl<T: Pod> ObjectKind for $ty<T> {
            type Init<'a> = T;

            fn spec() -> Spec {
                Spec::of::<T>($kind)
            }

            fn len(_: &T) -> usize {
                1
            }

            fn fill(value: T, shm: &SharedMemory, layout: &Layout) {
                shm.map.write(layout.data_offset, value)
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

/// A value of a plain-old-data type in shared memory, guarded by a robust
/// process-shared lock: Python's `multiprocessing.Value`.
///
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one read or
/// write, as Python's `.value` does; [`lock`](Self::lock) (Python's
/// `get_lock()`) holds it across several steps and gives `&mut T`.
///
/// ```
/// use ipc_core::process::Process;
/// use ipc_shm::Value;
///
/// let num = Value::new(0.0f64)?; // Python: Value('d', 0.0)
/// let mut child = Process::new().pass("num", &num)?.fork({
///     let num = &num;
///     move || num.set(3.1415926)
/// })?;
/// assert!(child.join()?.success());
/// assert_eq!(num.get()?, 3.1415926);
///
/// *num.lock()? += 1.0; // with num.get_lock(): num.value += 1.0
/// assert_eq!(num.get()?, 4.1415926);
/// # Ok::<(), ipc_core::Error>(())
/// ```
///
/// If a process dies holding the lock, the next [`lock`](Self::lock)
/// returns [`LockError::OwnerDied`] with the guard: check or repair the
/// value, then `mark_consistent()`. Until then `get` fails with
/// [`Error::OwnerDied`]; `set` replaces the whole value and so marks it
/// consistent itself.
///
/// Every process opens the segment as a `Value` of the same `T`: the layout
/// header refuses another type (by size, alignment and type name, a
/// best-effort check), a `RawValue`, an `Array` or garbage.
pub struct Value<T: Pod> {
    obj: Object,
    _type: PhantomData<T>,
}

value_kind!(Value, Kind::Value);

impl<T: Pod> Value<T> {
    /// A builder for a `Value` that starts as `value`: anonymous, created,
    /// opened or either (see [`Builder`]).
    pub fn builder(value: T) -> Builder<'static, Self> {
        Builder::new(value)
    }

    /// A new anonymous value, for this process and the children it is
    /// handed to.
    pub fn new(value: T) -> Result<Self> {
        Self::builder(value).anonymous()
    }

    /// Creates the value `/dev/shm/<name>`; this process owns it.
    pub fn create(name: &str, value: T) -> Result<Self> {
        Self::builder(value).create(name)
    }

    /// Opens the value `name`, checking that it holds a `Value<T>`.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder(T::zeroed()).open(name)
    }

    /// Opens `name`, or creates it holding `value`.
    pub fn open_or_create(name: &str, value: T) -> Result<Self> {
        Self::builder(value).open_or_create(name)
    }

    fn lock_until(&self, deadline: Deadline) -> LockResult<MutexGuard<'_, T>> {
        wrap(
            self.obj
                .map()
                .lock_data::<T>(MUTEX_OFFSET, self.obj.layout.data_offset, deadline),
        )
    }

    /// Waits for the lock and returns a guard that derefs to the value.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.lock_until(Deadline::Never)
    }

    /// Takes the lock if it is free now ([`LockError::WouldBlock`]).
    pub fn try_lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.lock_until(Deadline::Now)
    }

    /// Waits at most `timeout` for the lock ([`LockError::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<MutexGuard<'_, T>> {
        self.lock_until(Deadline::after(timeout))
    }

    /// Reads the value under the lock (Python's `.value`).
    /// [`Error::OwnerDied`] while the value is marked inconsistent.
    pub fn get(&self) -> Result<T> {
        Ok(*self.lock()?)
    }

    /// Writes the value under the lock (Python's `.value = v`). This
    /// replaces the whole value, so it also repairs one left inconsistent
    /// by a holder that died.
    pub fn set(&self, value: T) -> Result<()> {
        let mut guard = match self.lock() {
            Ok(guard) => guard,
            Err(LockError::OwnerDied(died)) => died.into_guard(),
            Err(e) => return Err(Error::from(e)),
        };
        *guard = value;
        guard.mark_consistent();
        Ok(())
    }
}

object_common!(Value<T>);

impl<T: Pod> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .field("segment", &self.obj.shm)
            .finish()
    }
}

/// A value of a plain-old-data type in shared memory without a lock:
/// Python's `multiprocessing.RawValue`.
///
/// [`get`](Self::get) and [`set`](Self::set) are single volatile copies.
/// With no lock, a read that races a write in another process can see a
/// mix of the old and the new bytes when `T` is larger than the machine
/// writes at once; `T` being plain old data, that mix is still a valid
/// `T`. Synchronise with a [`Lock`](crate::Lock) or use [`Value`] when that
/// matters.
///
/// ```
/// let n = ipc_shm::RawValue::new(7i32)?; // Python: RawValue('i', 7)
/// n.set(n.get() * 6);
/// assert_eq!(n.get(), 42);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct RawValue<T: Pod> {
    obj: Object,
    _type: PhantomData<T>,
}

value_kind!(RawValue, Kind::RawValue);

impl<T: Pod> RawValue<T> {
    /// A builder for a `RawValue` that starts as `value`: anonymous, created,
    /// opened or either (see [`Builder`]).
    pub fn builder(value: T) -> Builder<'static, Self> {
        Builder::new(value)
    }

    /// A new anonymous value.
    pub fn new(value: T) -> Result<Self> {
        Self::builder(value).anonymous()
    }

    /// Creates the value `/dev/shm/<name>`; this process owns it.
    pub fn create(name: &str, value: T) -> Result<Self> {
        Self::builder(value).create(name)
    }

    /// Opens the value `name`, checking that it holds a `RawValue<T>`.
    pub fn open(name: &str) -> Result<Self> {
        Self::builder(T::zeroed()).open(name)
    }

    /// Opens `name`, or creates it holding `value`.
    pub fn open_or_create(name: &str, value: T) -> Result<Self> {
        Self::builder(value).open_or_create(name)
    }

    /// Reads the value.
    pub fn get(&self) -> T {
        self.obj.map().read(self.obj.layout.data_offset)
    }

    /// Writes the value.
    pub fn set(&self, value: T) {
        self.obj.map().write(self.obj.layout.data_offset, value)
    }
}

object_common!(RawValue<T>);

impl<T: Pod> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("type", &std::any::type_name::<T>())
            .field("segment", &self.obj.shm)
            .finish()
    }
}
