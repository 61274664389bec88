//! The unsafe edge of ipc-shm. Everything that dereferences a pointer into a
//! shared mapping, calls futex, or hands out a reference to
//! shared memory lives here; the rest of the crate is safe code
//! (`#![deny(unsafe_code)]` at the crate root).
//!
//! # Crate invariants these modules rely on
//!
//! * A [`map::Mapping`] is a `MAP_SHARED`, read-write mapping that lives as
//!   long as the `Mapping` value; every pointer handed out is derived from it
//!   and checked against its length and the alignment of its type.
//! * Memory shared with other processes is modelled like memory-mapped I/O:
//!   it may change at any time. Plain reads and writes of it are volatile
//!   copies of [`bytemuck::Pod`] values, for which every bit pattern is
//!   valid, so a torn or foreign write can never produce an invalid value.
//! * References (`&mut T`) to the data of a locked object exist only inside a
//!   [`mutex::MutexGuard`], i.e. while this thread holds the object's robust
//!   mutex. The object kinds that have a lock (`Value`, `Array`) touch their
//!   data in no other way; the layout header (`header.rs`) is validated
//!   before any data is touched, and it refuses to open a locked object as a
//!   raw one or the other way round.
#![allow(unsafe_code)]

pub(crate) mod futex;
pub(crate) mod map;
pub(crate) mod mutex;
pub(crate) mod robust;
mod slices;
