//! Python's `multiprocessing` shared memory for Rust on Linux:
//! [`SharedMemory`] segments that Python's
//! `multiprocessing.shared_memory.SharedMemory` can attach to (and the other
//! way round), [`Value`] and [`Array`] of plain-old-data types with a lock
//! (and their lock-free [`RawValue`] and [`RawArray`]), and process-shared
//! [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`],
//! [`Condition`] and [`Barrier`].
//!
//! ```
//! use ipc_core::process::Process;
//! use ipc_shm::{Array, Value};
//!
//! // Python: num = Value('d', 0.0); arr = Array('i', range(5))
//! let num = Value::new(0.0f64)?;
//! let arr = Array::from_slice(&[0i32, 1, 2, 3, 4])?;
//! let mut child = Process::new()
//!     .pass("num", &num)?
//!     .pass("arr", &arr)?
//!     .fork({
//!         let (num, arr) = (&num, &arr);
//!         move || -> ipc_core::Result<()> {
//!             num.set(3.1415926)?;
//!             for x in arr.lock()?.iter_mut() {
//!                 *x = -*x;
//!             }
//!             Ok(())
//!         }
//!     })?;
//! assert!(child.join()?.success());
//! assert_eq!(num.get()?, 3.1415926);
//! assert_eq!(arr.to_vec()?, [0, -1, -2, -3, -4]);
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! # Locks that survive a dead holder
//!
//! Every lock here ([`Lock`], [`RLock`], the lock of a [`Value`] or an
//! [`Array`], the lock of a [`Condition`]) is a robust, process-shared futex
//! mutex inside the segment, on the kernel's robust futex list (the
//! mechanism under glibc's robust pthread mutexes, without their cost: an
//! uncontended lock and unlock take one atomic instruction between them).
//! When a thread or process dies holding one (killed
//! with `SIGKILL`, crashed), the next locker does not hang: it gets
//! [`LockError::OwnerDied`], which carries the guard. Repair the data, call
//! [`MutexGuard::mark_consistent`], and the lock goes on working. A guard
//! dropped without that still releases the lock, but the next locker is
//! told again; the lock never becomes unusable.
//!
//! ```
//! # use ipc_core::process::Process;
//! # use ipc_shm::{LockError, Value};
//! let counter = Value::new(0u64)?;
//! # let mut child = Process::new().fork({ let c = &counter; move || { std::mem::forget(c.lock()); 0 } })?;
//! # child.join()?;
//! let guard = match counter.lock() {
//!     Ok(guard) => guard,
//!     Err(LockError::OwnerDied(died)) => {
//!         let guard = died.into_guard();
//!         // ... check or repair *guard here ...
//!         guard.mark_consistent();
//!         guard
//!     }
//!     Err(e) => return Err(e.into()),
//! };
//! # drop(guard);
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! [`Semaphore`], [`BoundedSemaphore`] and [`Event`] have no owner; they,
//! and the waiting parts of [`Condition`] and [`Barrier`], are built on
//! futexes (without `FUTEX_PRIVATE_FLAG`, as the memory is shared between
//! processes), so a blocked waiter sleeps in the kernel and uses no CPU.
//!
//! # Names, owners and Python
//!
//! A named object lives in `/dev/shm/<name>`, as Python's
//! `SharedMemory(name=<name>)` does, with owner-only permissions (`0o600`).
//! The creating process owns it and removes it when the creating handle is
//! dropped (see [`SharedMemory`] for the details and for how to attach from
//! Python without its resource tracker deleting a segment it does not own).
//! Anonymous objects (`new`, `from_slice`, `zeroed`, `anonymous`) are memfds
//! with nothing in `/dev/shm`, handed to children through
//! [`Process::pass`](ipc_core::process::Process::pass) (a forked child
//! simply uses the object it captured; an exec'd one rebuilds it with
//! [`inherited`](ipc_core::process::inherited)).
//!
//! # Creators that die
//!
//! Every object records its creator (pid and start time). A creator killed
//! while creating never makes a name unusable: `open` says
//! [`Error::Abandoned`] at once, and `open_or_create` reclaims the name and
//! creates the object afresh. A complete object whose creator died (killed
//! before its destructor could unlink it) is adopted by `open_or_create`,
//! which then owns it and removes it on drop, or removed with
//! [`remove_orphans`] (by prefix, as Python's resource tracker removes a
//! program's leftovers) or [`remove_if_orphaned`] (by name), both safe to
//! run beside live users.
//!
//! ```
//! use ipc_core::process::Process;
//! use ipc_shm::{remove_orphans, Value};
//! # let prefix = format!("ipcdoc_{}_crash_", std::process::id());
//! let name = format!("{prefix}counter");
//! let mut child = Process::new().fork({
//!     let name = name.clone();
//!     move || -> ipc_core::Result<()> {
//!         std::mem::forget(Value::create(&name, 0u64)?); // as if killed
//!         Ok(())
//!     }
//! })?;
//! assert!(child.join()?.success());
//! assert_eq!(remove_orphans(&prefix)?, [name]);
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! Python's `Value`, `Array` and locks are not reachable by name from
//! another program, so interoperability with Python is through
//! [`SharedMemory`], whose bytes are the same on both sides.
//!
//! # Layout and checks
//!
//! Every object but a plain [`SharedMemory`] starts with a `#[repr(C)]`
//! header: magic number, layout version, kind, element size, alignment and
//! a hash of the element type's name, length and creator. Opening checks
//! all of it, so a `Value<u64>` opened as `Value<f64>`, an `Array` opened
//! with another length, a segment of another layout version or one that
//! holds garbage is refused with [`Error::Incompatible`] or
//! [`Error::Corrupt`], which say the property, what was expected and what
//! was found, never read as something it is not. The type check is best effort: it compares size, alignment and
//! [`std::any::type_name`], which the compiler does not promise to keep
//! stable. An opener that finds a live creator still initialising waits for
//! it briefly (on a futex) before giving up.
//!
//! # Soundness with other processes
//!
//! Element types are [`bytemuck::Pod`]: any bytes are a valid value, so
//! whatever another process writes can never produce an invalid one. A guard
//! gives `&mut T` because every process reaches a locked object's data only
//! through its lock; the header keeps a locked object from being opened as a
//! raw one. A process that writes the same segment behind the lock's back
//! (through [`SharedMemory::write_at`] on its name, or a foreign program)
//! can still tear values, as in any shared memory. A process that can write
//! the segment can also corrupt the lock itself; segments are owner-only
//! for that reason.
//!
//! # Building blocks for other layouts
//!
//! [`raw`] exposes what these objects are made of (atomics at an offset of
//! a [`SharedMemory`], futex wait and wake, the robust mutex with its
//! owner-died signal, opening a segment a creator is still sizing) to other
//! crates of the workspace that lay out their own structures, such as
//! ipc-queue's ring, so there is one implementation of each.
//!
//! # Why memmap2 and not the `shared_memory` crate
//!
//! Segments are made with `shm_open` (named) or `memfd_create` (anonymous)
//! through nix and mapped with memmap2's `MmapRaw`. The `shared_memory`
//! crate is unmaintained and picks its own naming and layout scheme, which
//! Python cannot attach to; `shm_open("/" + name)` is exactly what Python
//! does, so the names match.
#![deny(unsafe_code)]

mod array;
mod barrier;
mod condition;
mod creator;
mod lock;
pub mod raw;
mod segment;
mod semaphore;
mod shm;
mod sys;
mod value;
#[cfg(feature = "tokio")]
pub mod watch;

pub use array::{Array, Elements, RawArray};
pub use barrier::{Barrier, BarrierError};
pub use condition::{Condition, ConditionGuard};
pub use lock::{Lock, LockError, LockGuard, LockResult, OwnerDied, RLock};
pub use segment::{remove_if_orphaned, remove_orphans, Builder, ObjectKind};
pub use semaphore::{BoundedSemaphore, Event, Semaphore};
pub use shm::{Element, SharedMemory, SharedSlice, AUTO_NAME_PREFIX, MAX_NAME_LEN};
pub use sys::mutex::MutexGuard;
pub use value::{RawValue, Value};

pub use ipc_core::{Error, Result};
