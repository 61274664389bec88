//! [`Broker`]: where the queues live (a Redis server, by URL) and how long
//! to wait for it; and the connection each queue handle keeps to it, made
//! again after it drops.

use std::fmt;
use std::io;
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};

/// How long a connection attempt may take, unless set.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server may take to answer a command, unless set.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest timeouts taken (a day): longer ones are this; shorter than
/// a millisecond, a millisecond (a socket timeout of zero would be none).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A Redis server holding queues, and the timeouts for talking to it.
///
/// The URL is `redis://[user[:password]@]host[:port][/db]` (TCP),
/// `rediss://…` (TCP with TLS, feature `tls`) or
/// `redis+unix:///path/to/socket[?db=N&user=U&pass=P]` (a Unix socket);
/// the user and password are a Redis ACL user's. Cloning a `Broker` is
/// cheap: each queue handle opens its own connection from it.
///
/// ```
/// use std::time::Duration;
/// let broker = ipc_broker::Broker::new("redis://127.0.0.1:6379/0")?
///     .connect_timeout(Duration::from_secs(1))
///     .command_timeout(Duration::from_secs(5));
/// assert_eq!(broker.address(), "127.0.0.1:6379");
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Broker {
    client: redis::Client,
    address: String,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("Broker")
            .field("address", &self.address)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

impl Broker {
    /// The server at `url`; nothing is connected yet. An URL that does
    /// not parse is [`Error::InvalidArgument`].
    pub fn new(url: &str) -> Result<Broker> {
        let client = redis::Client::open(url)
            .map_err(|_| Error::InvalidArgument("not a redis:// or redis+unix:// URL"))?;
        let address = client.get_connection_info().addr().to_string();
        Ok(Broker {
            client,
            address,
            connect_timeout: CONNECT_TIMEOUT,
            command_timeout: COMMAND_TIMEOUT,
        })
    }

    /// Trusts the server's certificate if it chains to `pem` (one or more
    /// PEM certificates), instead of the system's roots: for a server
    /// whose certificate a private authority signed. Only for `rediss://`
    /// URLs; the certificate must name the URL's host.
    #[cfg(feature = "tls")]
    pub fn root_certificate(mut self, pem: &[u8]) -> Result<Broker> {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        };
        self.client =
            redis::Client::build_with_tls(self.client.get_connection_info().clone(), certificates)
                .map_err(|_| Error::InvalidArgument("not a PEM certificate for a rediss:// URL"))?;
        Ok(self)
    }

    /// How long connecting may take (5 s unless set; between a millisecond
    /// and a day).
    pub fn connect_timeout(mut self, timeout: Duration) -> Broker {
        self.connect_timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    /// How long the server may take to answer one command (10 s unless
    /// set; between a millisecond and a day); a command it does not answer
    /// in time is sent again on a new connection, within the connect
    /// timeout, and then an [`Error::Io`] naming the server.
    pub fn command_timeout(mut self, timeout: Duration) -> Broker {
        self.command_timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        self
    }

    /// The server's address, for messages: `host:port` or the socket's
    /// path (never the password).
    pub fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn link(&self) -> Link {
        Link {
            broker: self.clone(),
            conn: None,
            name: link_name(),
            puts: 0,
        }
    }
}

/// One connection to the broker, opened on first use and again after it
/// dropped; every command runs within a deadline. It has a name of its
/// own, as a consumer of the stream and as a producer whose puts are
/// numbered.
pub(crate) struct Link {
    broker: Broker,
    conn: Option<redis::Connection>,
    name: String,
    /// The sequence number of this link's last put.
    puts: u64,
}

/// A name no other link uses, now or later: the host, the process, and a
/// count and clock reading of this process.
fn link_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{host}:{}:{}:{since_epoch:x}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Link {
    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The link's name, as consumer and producer.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A number for the next put, above every one before it: a put sent
    /// twice keeps its number, so the server stores it once. Numbers go up
    /// in the order puts are made, since one link runs one call at a time.
    pub(crate) fn next_put(&mut self) -> u64 {
        self.puts += 1;
        self.puts
    }

    /// Runs `command` on the connection, which waits for the server at
    /// most `wait` beyond the command timeout (for a command that blocks
    /// on the server, such as `XREADGROUP … BLOCK`). A connection that
    /// failed is dropped and made again, and the command sent again (every
    /// command of this crate may be: a put carries its producer's sequence
    /// number, so the server stores it once), for as long as the connect
    /// timeout: a server that restarts is back within it.
    pub(crate) fn run<T>(
        &mut self,
        wait: Duration,
        mut command: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut back_within = Deadline::Never;
        let mut pause = Duration::from_millis(5);
        loop {
            let error = match self.try_run(wait, back_within, &mut command) {
                Ok(value) => return Ok(value),
                Err(Failure::Other(e)) => return Err(e),
                Err(Failure::Connection(e)) => e,
            };
            if back_within == Deadline::Never {
                back_within = Deadline::after(self.broker.connect_timeout);
            }
            let Some(left) = back_within.slice(pause) else {
                return Err(error);
            };
            if pause > Duration::from_millis(5) {
                // Nothing to wait on but the server's return.
                std::thread::sleep(left);
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Runs `command` once on the connection if there is one, never
    /// connecting or waiting for the server to come back: for a clean-up
    /// that may be skipped.
    pub(crate) fn run_if_connected<T>(
        &mut self,
        mut command: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        self.conn.as_ref()?;
        self.try_run(Duration::ZERO, Deadline::Never, &mut command)
            .ok()
    }

    /// One try: connects if need be (by `back_within` at the latest, once
    /// a try failed), sends the command and reads its answer.
    fn try_run<T>(
        &mut self,
        wait: Duration,
        back_within: Deadline,
        command: &mut impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Failure> {
        let answer_within = self.broker.command_timeout + wait;
        let connect_within = back_within
            .remaining()
            .map_or(self.broker.connect_timeout, |left| {
                left.clamp(Duration::from_millis(1), self.broker.connect_timeout)
            });
        let conn = self.connection(connect_within).map_err(|e| match e {
            // Refused or cut: the server may be coming back.
            Error::Io(_) => Failure::Connection(e),
            // A wrong password stays wrong.
            other => Failure::Other(other),
        })?;
        let answer = conn
            .set_read_timeout(Some(answer_within))
            .and_then(|()| command(conn));
        answer.map_err(|e| {
            // A server loading its data after a restart answers LOADING
            // until it is done: as good as not back yet.
            // An answer that did not come in time counts as a lost
            // connection: the command is sent again on a new one (every
            // command of this crate may be).
            let dropped =
                e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || loading(&e);
            if dropped {
                // A reply may still be on its way: this connection's next
                // reply would be the wrong one.
                self.conn = None;
            }
            let error = self.error(e);
            if dropped {
                Failure::Connection(error)
            } else {
                Failure::Other(error)
            }
        })
    }

    fn connection(&mut self, within: Duration) -> Result<&mut redis::Connection> {
        if self.conn.is_none() {
            let conn = self
                .broker
                .client
                .get_connection_with_timeout(within)
                .map_err(|e| self.error(e))?;
            conn.set_write_timeout(Some(self.broker.command_timeout))
                .map_err(|e| self.error(e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// A Redis error as this workspace's, naming the server.
    pub(crate) fn error(&self, e: redis::RedisError) -> Error {
        let address = &self.broker.address;
        if e.kind() == redis::ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
            return Error::Authentication(format!("redis at {address}: {e}"));
        }
        if e.code() == Some("NOAUTH") || e.code() == Some("NOPERM") {
            return Error::Authentication(format!("redis at {address}: {e}"));
        }
        if e.is_timeout() {
            return Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("redis at {address} did not answer in time: {e}"),
            ));
        }
        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            let kind = if e.is_connection_refusal() {
                io::ErrorKind::ConnectionRefused
            } else {
                io::ErrorKind::ConnectionAborted
            };
            return Error::Io(io::Error::new(kind, format!("redis at {address}: {e}")));
        }
        Error::Broker(format!("redis at {address}: {e}"))
    }
}

/// Why a command failed: the connection (worth connecting again), or not.
enum Failure {
    Connection(Error),
    Other(Error),
}

/// How long a command may block on the server for `deadline`, in whole
/// milliseconds (at least 1: `BLOCK 0` would wait for ever), capped at
/// `slice`; `None` once the deadline has passed.
pub(crate) fn block_ms(deadline: Deadline, slice: Duration) -> Option<u64> {
    let wait = deadline.slice(slice)?;
    Some((wait.as_millis() as u64).max(1))
}

/// Whether the server answered LOADING (it is reading its data after a
/// restart): to a command, or to every command of a transaction, which it
/// then aborted.
fn loading(e: &redis::RedisError) -> bool {
    e.code() == Some("LOADING")
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == "LOADING"))
}
