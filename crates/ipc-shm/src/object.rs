//! What every typed object (`Value`, `Array`, the locks ...) has in common:
//! a segment with a checked layout header, created, opened or inherited the
//! same way.

use std::io;

use ipc_core::process::{Handle, Inheritable, Inherited};
use ipc_core::{Deadline, Error, Result};

use crate::header::{self, Kind, Layout, Spec, HEADER_SIZE, INIT_WAIT, MUTEX_OFFSET};
use crate::shm::SharedMemory;
use crate::sys::map::Mapping;
use crate::sys::mutex::{MutexKind, RobustMutex};
use crate::sys::robust;

/// A segment holding one initialised, validated object.
///
/// Dropped while a thread of this process holds its mutex without a guard
/// (Python's `acquire()` with no `release()`), it stays mapped until the
/// process ends: the thread's robust futex list links into the mutex, and
/// the kernel and glibc write through those links.
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) shm: SharedMemory,
    pub(crate) layout: Layout,
    kind: Kind,
}

/// Where a new object lives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Place<'a> {
    /// `/dev/shm/<name>`.
    Named(&'a str),
    /// A memfd, for children.
    Anonymous,
}

impl Object {
    /// Creates an object of `len` elements: writes the header, initialises
    /// the mutex if the kind has one (`mutex`), lets `init` fill in the
    /// data, then publishes the header.
    pub(crate) fn create(
        place: Place<'_>,
        spec: &Spec,
        len: usize,
        mutex: Option<MutexKind>,
        init: impl FnOnce(&Mapping, &Layout),
    ) -> Result<Object> {
        debug_assert_eq!(mutex.is_some(), spec.kind.has_mutex());
        let layout = spec.layout(len)?;
        let mut shm = match place {
            Place::Named(name) => SharedMemory::create(name, layout.total)?,
            Place::Anonymous => SharedMemory::anonymous(layout.total)?,
        };
        header::write(&shm.map, spec, &layout);
        if let Some(kind) = mutex {
            shm.map.init_mutex(MUTEX_OFFSET, kind)?;
        }
        init(&shm.map, &layout);
        header::publish(&shm.map);
        Ok(Object {
            shm,
            layout,
            kind: spec.kind,
        })
    }

    /// Opens the object `name`, waiting briefly for a creator that is
    /// still initialising it, and checks its header against `spec` (and
    /// `len`, if given).
    pub(crate) fn open(name: &str, spec: &Spec, len: Option<usize>) -> Result<Object> {
        let shm = SharedMemory::open_when_sized(name, HEADER_SIZE, Deadline::after(INIT_WAIT))?;
        Object::validated(shm, spec, len)
    }

    /// Opens `name` if it exists, or creates it. Opening checks `len` too.
    pub(crate) fn open_or_create(
        name: &str,
        spec: &Spec,
        len: usize,
        mutex: Option<MutexKind>,
        init: impl FnOnce(&Mapping, &Layout),
    ) -> Result<Object> {
        let mut init = Some(init);
        for _ in 0..100 {
            match Object::create(Place::Named(name), spec, len, mutex, |map, layout| {
                (init.take().expect("init runs once"))(map, layout)
            }) {
                Err(Error::AlreadyExists(_)) => {}
                other => return other,
            }
            match Object::open(name, spec, Some(len)) {
                Err(Error::NotFound(_)) => continue,
                other => return other,
            }
        }
        Err(Error::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("`{name}` kept appearing and disappearing"),
        )))
    }

    fn validated(shm: SharedMemory, spec: &Spec, len: Option<usize>) -> Result<Object> {
        let what = match shm.name() {
            Some(name) => format!("shared memory segment `{name}`"),
            None => "the anonymous segment".to_owned(),
        };
        let layout = header::validate(&shm.map, spec, len, &what)?;
        Ok(Object {
            shm,
            layout,
            kind: spec.kind,
        })
    }

    /// The mapping.
    pub(crate) fn map(&self) -> &Mapping {
        &self.shm.map
    }

    /// The object's robust mutex.
    pub(crate) fn mutex(&self) -> &RobustMutex {
        self.shm.map.mutex(MUTEX_OFFSET)
    }

    /// The byte offset of the `i`-th 32-bit word of the data.
    pub(crate) fn word(&self, i: usize) -> usize {
        self.layout.data_offset + 4 * i
    }

    pub(crate) fn handle(&self) -> Handle<'_> {
        self.shm.handle()
    }

    pub(crate) fn inherit(inherited: Inherited, spec: &Spec) -> Result<Object> {
        Object::validated(SharedMemory::from_inherited(inherited)?, spec, None)
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        if !self.kind.has_mutex() {
            return;
        }
        if self
            .mutex()
            .holder()
            .is_some_and(robust::thread_of_this_process)
        {
            self.shm.map.keep_mapped();
        }
    }
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
                Ok(Self::wrap(crate::object::Object::inherit(inherited, &Self::spec())?))
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
