//! The one error type every mechanism returns, so code written against the
//! [`Sender`](crate::Sender)/[`Receiver`](crate::Receiver) traits handles a
//! pipe, a queue and a socket alike.

use std::fmt;
use std::io;

/// The result type of this workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to another process.
///
/// Variants that describe the peer's behaviour (`Closed`, `Truncated`,
/// `InvalidHeader`, `TooLarge`, `Decode`) are what a hostile or crashed peer
/// produces: they are values, never panics.
///
/// ```
/// use ipc_core::Error;
/// let err = Error::TooLarge { size: 1 << 62, limit: 1 << 20 };
/// assert_eq!(err.to_string(), "message of 4611686018427387904 bytes exceeds the limit of 1048576 bytes");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer is gone and everything it sent has been read (Python's
    /// `EOFError`), or a send found nobody to receive it.
    Closed,
    /// A timed operation ran out of time. Nothing was lost: a partly received
    /// message is kept and the next receive resumes it.
    Timeout,
    /// A non-blocking put found no room (Python's `queue.Full`).
    Full,
    /// A non-blocking get found nothing (Python's `queue.Empty`).
    Empty,
    /// A message is larger than the limit in force. When receiving, the
    /// message stays unread, so a later call with a larger limit gets it.
    TooLarge {
        /// The size of the message in bytes.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The caller's buffer cannot hold the next message (Python's
    /// `BufferTooShort`). The message stays unread; call again with a
    /// buffer of at least `needed` bytes.
    BufferTooShort {
        /// The size of the next message.
        needed: usize,
    },
    /// The peer closed the connection in the middle of a message.
    Truncated {
        /// Bytes the frame announced (header or payload).
        expected: u64,
        /// Bytes that arrived before the end of the stream.
        received: u64,
    },
    /// A frame header that no conforming peer sends (a negative length other
    /// than the -1 escape). The stream cannot be resynchronised, so the
    /// connection reports this error from now on.
    InvalidHeader {
        /// The four header bytes as read.
        header: [u8; 4],
    },
    /// A typed message could not be encoded.
    Encode(postcard::Error),
    /// The bytes of a message are not a valid encoding of the expected type.
    /// The message was consumed; the connection stays usable.
    Decode(postcard::Error),
    /// A typed message that does not decode begins as a Python pickle
    /// does: the peer sent it with Python's `conn.send(obj)`. Receive it
    /// with the pickle codec (feature `pickle`,
    /// `Connection::set_codec(Codec::Pickle)`), or as bytes. The message
    /// was consumed; the connection stays usable.
    LooksLikePickle {
        /// The pickle protocol its first bytes name.
        protocol: u8,
    },
    /// A pickle that the pickle codec does not read (code to run, an
    /// object of a class, nesting too deep, a malformed or cut pickle), or
    /// a value it cannot write; the text says which. The message was
    /// consumed; the connection stays usable.
    Pickle(String),
    /// An argument is out of range (Python's `ValueError`), for instance an
    /// offset past the end of the buffer given to `send_bytes_range`.
    InvalidArgument(&'static str),
    /// The operation is not possible on this end, for instance receiving on
    /// the write end of a one-way pipe.
    Unsupported(&'static str),
    /// A named resource or inherited handle does not exist.
    NotFound(String),
    /// A named resource to be created exists already (the name is
    /// given); `open_or_create` opens it instead.
    AlreadyExists(String),
    /// The peer failed the authkey challenge, or rejected ours.
    Authentication(String),
    /// The previous holder of a lock died while holding it. The data it
    /// guarded may be inconsistent.
    OwnerDied,
    /// A shared-memory object is not the object asked for: another kind,
    /// item type, length or layout version, too small, or not an object of
    /// this workspace at all. Nothing in it was touched.
    Incompatible(Box<Mismatch>),
    /// The bytes of a shared-memory object are impossible: no process of
    /// this workspace writes them (a header that contradicts itself, a
    /// control word or record length out of range, a lock that is no
    /// lock). Someone else wrote the segment, or memory was damaged.
    Corrupt(Box<Mismatch>),
    /// The creator of the named object died before it finished creating it
    /// (the name is given). `open_or_create` reclaims such a name.
    Abandoned(String),
    /// A spawned child did not deliver its entry's result, and why.
    Child(Box<crate::spawn::ChildFailure>),
    /// `fork` was refused: this process has other threads, whose locks the
    /// child would inherit held (see `Process::allow_threads`).
    ThreadedFork {
        /// How many threads the process had.
        threads: usize,
    },
    /// A message broker (ipc-broker's Redis server) refused a command, or
    /// holds data this workspace did not write there; the text says which,
    /// with the server's address. The queue stays usable.
    Broker(String),
    /// Any other operating-system error.
    Io(io::Error),
}

impl Error {
    /// Whether this error means the peer has gone away for good.
    ///
    /// ```
    /// assert!(ipc_core::Error::Closed.is_closed());
    /// assert!(!ipc_core::Error::Timeout.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed | Error::Truncated { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("the peer closed the connection"),
            Error::Timeout => f.write_str("the operation timed out"),
            Error::Full => f.write_str("the queue is full"),
            Error::Empty => f.write_str("nothing to receive"),
            Error::TooLarge { size, limit } => {
                write!(f, "message of {size} bytes exceeds the limit of {limit} bytes")
            }
            Error::BufferTooShort { needed } => {
                write!(f, "buffer too short: the next message needs {needed} bytes")
            }
            Error::Truncated { expected, received } => write!(
                f,
                "the peer closed the connection in the middle of a message ({received} of {expected} bytes)"
            ),
            Error::InvalidHeader { header } => {
                write!(f, "invalid frame header {header:02x?}: the stream is out of sync")
            }
            Error::Encode(e) => write!(f, "cannot encode the message: {e}"),
            Error::Decode(e) => write!(f, "cannot decode the message: {e}"),
            Error::LooksLikePickle { protocol } => write!(
                f,
                "cannot decode the message: it looks like a Python pickle (protocol {protocol}), \
                 as Python's conn.send(obj) writes; receive it with the pickle codec (feature \
                 `pickle`, Connection::set_codec(Codec::Pickle)) or as bytes, or have the peer \
                 use send_bytes"
            ),
            Error::Pickle(why) => f.write_str(why),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::Unsupported(what) => write!(f, "unsupported operation: {what}"),
            Error::NotFound(what) => write!(f, "not found: {what}"),
            Error::AlreadyExists(what) => write!(f, "already exists: {what}"),
            Error::Authentication(why) => write!(f, "authentication failed: {why}"),
            Error::OwnerDied => f.write_str("the previous owner of the lock died while holding it"),
            Error::Incompatible(m) => write!(
                f,
                "{} does not hold what was asked for: {} is {}, expected {}",
                m.segment, m.property, m.found, m.expected
            ),
            Error::Corrupt(m) => write!(
                f,
                "{} is corrupt: {} is {}, expected {}",
                m.segment, m.property, m.found, m.expected
            ),
            Error::Abandoned(what) => {
                write!(f, "the creator of {what} died before it finished creating it")
            }
            Error::Child(failure) => write!(f, "the spawned child failed: {failure}"),
            Error::ThreadedFork { threads } => write!(
                f,
                "fork refused: this process has {threads} threads, and the child would inherit their locks held (use exec, or Process::allow_threads if they hold nothing)"
            ),
            Error::Broker(why) => f.write_str(why),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Encode(e) | Error::Decode(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    /// A peer that vanished shows up as `EPIPE` or `ECONNRESET`; both become
    /// [`Error::Closed`] so callers see one kind of "gone".
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
            // A socket read or write timeout (SO_RCVTIMEO) shows up as EAGAIN.
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout,
            _ => Error::Io(e),
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::from(io::Error::from(e))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, e),
            Error::Full | Error::Empty => io::Error::new(io::ErrorKind::WouldBlock, e),
            Error::InvalidArgument(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
            Error::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, e),
            Error::AlreadyExists(_) => io::Error::new(io::ErrorKind::AlreadyExists, e),
            Error::Unsupported(_) | Error::ThreadedFork { .. } => {
                io::Error::new(io::ErrorKind::Unsupported, e)
            }
            Error::Authentication(_) => io::Error::new(io::ErrorKind::PermissionDenied, e),
            Error::Child(_) => io::Error::other(e),
            Error::Incompatible(_) | Error::Corrupt(_) | Error::Abandoned(_) => {
                io::Error::new(io::ErrorKind::InvalidData, e)
            }
            _ => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// What [`Error::Incompatible`] and [`Error::Corrupt`] found: which
/// property of which segment differs, what was expected and what is there.
///
/// ```
/// use ipc_core::{Error, Mismatch, Property};
/// let e = Error::Incompatible(Box::new(Mismatch::new(
///     "shared memory segment `prices`",
///     Property::ItemType,
///     "`f64`",
///     "`u64`",
/// )));
/// assert!(matches!(&e, Error::Incompatible(m) if m.property == Property::ItemType));
/// assert_eq!(
///     e.to_string(),
///     "shared memory segment `prices` does not hold what was asked for: the item type is `u64`, expected `f64`"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mismatch {
    /// The segment, as messages name it (`shared memory segment `name``
    /// or `the anonymous segment`).
    pub segment: String,
    /// What differs.
    pub property: Property,
    /// What was expected, for people.
    pub expected: String,
    /// What was found, for people.
    pub found: String,
}

impl Mismatch {
    /// A mismatch of `property` in `segment`.
    pub fn new(
        segment: impl Into<String>,
        property: Property,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Mismatch {
        Mismatch {
            segment: segment.into(),
            property,
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// The property of a shared-memory object that a [`Mismatch`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Property {
    /// The segment's size in bytes.
    Size,
    /// The magic number that marks an object of this workspace.
    Magic,
    /// The word that says whether the creator finished initialising.
    State,
    /// The layout version.
    Version,
    /// The kind of object (`Value`, `Lock`, `Queue` ...).
    Kind,
    /// The type of the elements or items.
    ItemType,
    /// The number of elements, or a queue's capacity.
    Length,
    /// Header fields that contradict each other.
    Header,
    /// A control word (a queue's head or tail, a cache of them).
    ControlWord,
    /// A record inside a queue's ring.
    Record,
    /// A lock's words.
    Lock,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::Size => "the size",
            Property::Magic => "the magic number",
            Property::State => "the initialisation state",
            Property::Version => "the layout version",
            Property::Kind => "the kind",
            Property::ItemType => "the item type",
            Property::Length => "the length",
            Property::Header => "the header",
            Property::ControlWord => "a control word",
            Property::Record => "a record",
            Property::Lock => "the lock",
        })
    }
}

/// A put that did not happen: the item, handed back, and why. Every queue
/// of the workspace returns it from a typed put.
///
/// `error` is [`Error::Full`] (non-blocking put on a full queue),
/// [`Error::Timeout`], [`Error::Closed`], [`Error::TooLarge`] (the item
/// could never fit), [`Error::Encode`], or an error of the queue itself.
/// It converts into [`Error`], so `?` works.
///
/// ```
/// use ipc_core::{Error, PutError};
/// let refused = PutError { item: 2u32, error: Error::Full };
/// assert_eq!(refused.to_string(), "put failed: the queue is full");
/// assert_eq!(refused.into_inner(), 2);
/// ```
pub struct PutError<T> {
    /// The item that was not put.
    pub item: T,
    /// Why.
    pub error: Error,
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        self.item
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "put failed: {}", self.error)
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        e.error
    }
}
