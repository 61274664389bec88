//! Settings shared by [`Listener`](crate::Listener) and
//! [`Client`](crate::Client): the authkey, limits and timeouts.

use std::time::Duration;

use ipc_core::{Error, Result};

/// The handshake must finish within this time unless told otherwise;
/// CPython has no such bound, so a stalled peer there hangs `accept`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Client::connect`](crate::Client::connect) keeps retrying.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pending connections the kernel queues for `accept` (Python uses 1).
pub const DEFAULT_BACKLOG: i32 = 1024;
/// Handshakes a listener runs at once unless told otherwise.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

/// Options of a listener or a client; fields that do not apply to one
/// side are ignored by it.
///
/// ```
/// use std::time::Duration;
/// let options = ipc_socket::Options::new()
///     .authkey(b"secret")
///     .max_message_size(1 << 20)
///     .read_timeout(Some(Duration::from_secs(30)));
/// assert!(ipc_socket::Options::new().authkey(b"").validate().is_err());
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) authkey: Option<Vec<u8>>,
    pub(crate) max_message_size: u64,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) backlog: i32,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_handshakes: usize,
    pub(crate) tls_server: Option<crate::TlsServer>,
    pub(crate) tls_client: Option<crate::TlsClient>,
    pub(crate) codec: ipc_core::Codec,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            authkey: None,
            max_message_size: ipc_core::DEFAULT_MAX_MESSAGE_SIZE,
            read_timeout: None,
            write_timeout: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backlog: DEFAULT_BACKLOG,
            max_connections: None,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            tls_server: None,
            tls_client: None,
            codec: ipc_core::Codec::Postcard,
        }
    }
}

impl Options {
    /// No authkey, default limits and timeouts.
    pub fn new() -> Options {
        Options::default()
    }

    /// Authenticate every connection with this key (Python's `authkey`).
    /// An empty key is refused by [`validate`](Self::validate): it hangs
    /// CPython 3.11 and 3.12.
    pub fn authkey(mut self, key: &[u8]) -> Options {
        self.authkey = Some(key.to_vec());
        self
    }

    /// The largest message a connection sends or receives.
    pub fn max_message_size(mut self, bytes: u64) -> Options {
        self.max_message_size = bytes;
        self
    }

    /// A receive that waits longer than this for a whole message returns
    /// [`Error::Timeout`](ipc_core::Error::Timeout), keeping what it read
    /// (see [`Connection::set_read_timeout`](ipc_core::Connection::set_read_timeout)).
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Options {
        self.read_timeout = timeout;
        self
    }

    /// A send that takes longer than this to hand a whole message to the
    /// kernel returns [`Error::Timeout`](ipc_core::Error::Timeout) (see
    /// [`Connection::set_write_timeout`](ipc_core::Connection::set_write_timeout)).
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Options {
        self.write_timeout = timeout;
        self
    }

    /// The whole authkey handshake must finish within this time.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Options {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a client keeps trying to connect (the server may not be
    /// listening yet).
    pub fn connect_timeout(mut self, timeout: Duration) -> Options {
        self.connect_timeout = timeout;
        self
    }

    /// The listen backlog.
    pub fn backlog(mut self, backlog: i32) -> Options {
        self.backlog = backlog;
        self
    }

    /// At most this many accepted connections alive at once; `accept` waits
    /// for one to close before handing out another. Handshakes in progress
    /// do not count against it (they have a bound of their own,
    /// [`max_handshakes`](Self::max_handshakes)), but a connection from
    /// [`Listener::accept_pending`](crate::Listener::accept_pending) holds
    /// its place from the start.
    pub fn max_connections(mut self, max: Option<usize>) -> Options {
        self.max_connections = max;
        self
    }

    /// At most this many clients in their handshakes at once (default
    /// [`DEFAULT_MAX_HANDSHAKES`]); further clients wait in the listen
    /// backlog until one is through or dropped at its handshake deadline,
    /// so the bound should exceed the stalled clients a listener is to
    /// shrug off (each costs a descriptor meanwhile). Handshakes do not count
    /// against [`max_connections`](Self::max_connections), which bounds
    /// the connections that are through them.
    pub fn max_handshakes(mut self, max: usize) -> Options {
        self.max_handshakes = max;
        self
    }

    /// A listener with these options speaks TLS (see [`TlsServer`](crate::TlsServer)).
    /// A plain client connecting to it fails with a clear error.
    pub fn tls_server(mut self, tls: crate::TlsServer) -> Options {
        self.tls_server = Some(tls);
        self
    }

    /// A client with these options speaks TLS (see [`TlsClient`](crate::TlsClient)).
    /// Connecting to a plain listener fails with a clear error.
    pub fn tls_client(mut self, tls: crate::TlsClient) -> Options {
        self.tls_client = Some(tls);
        self
    }

    /// How the connections encode typed messages: postcard by default,
    /// or Python's pickle (`Codec::Pickle`, feature `pickle`) for Python
    /// peers that use `conn.send(obj)` and `conn.recv()`. The handshakes
    /// are bytes and do not depend on it.
    pub fn codec(mut self, codec: ipc_core::Codec) -> Options {
        self.codec = codec;
        self
    }

    /// A connection over `stream` with these options' codec, limit and
    /// timeouts.
    pub(crate) fn connection(&self, stream: crate::SocketStream) -> crate::SocketConnection {
        let mut conn = ipc_core::Connection::new(stream);
        conn.set_codec(self.codec);
        conn.set_max_message_size(self.max_message_size);
        conn.set_read_timeout(self.read_timeout);
        conn.set_write_timeout(self.write_timeout);
        conn
    }

    /// Checks the options for values that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.authkey.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::InvalidArgument(
                "an empty authkey is refused (it hangs CPython 3.11 and 3.12)",
            ));
        }
        if self.max_connections == Some(0) {
            return Err(Error::InvalidArgument("max_connections must be at least 1"));
        }
        if self.max_handshakes == 0 {
            return Err(Error::InvalidArgument("max_handshakes must be at least 1"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "the handshake timeout must be positive",
            ));
        }
        Ok(())
    }
}
