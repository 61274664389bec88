//! Where a [`Listener`](crate::Listener) listens and a
//! [`Client`](crate::Client) connects: a Unix socket path, a Linux abstract
//! name, or a TCP host and port.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use ipc_core::{Error, Result};

/// A socket address, as Python's `multiprocessing.connection` accepts them.
///
/// Parsed from strings: `unix:PATH` or anything containing `/` is a Unix
/// socket path; `@NAME` or `\0NAME` a Linux abstract name; `HOST:PORT` (with
/// `[V6]:PORT` for IPv6) a TCP address.
///
/// ```
/// use ipc_socket::Address;
/// assert_eq!("/tmp/s.sock".parse::<Address>()?, Address::Unix("/tmp/s.sock".into()));
/// assert_eq!("@svc".parse::<Address>()?, Address::Abstract(b"svc".to_vec()));
/// assert_eq!("127.0.0.1:6000".parse::<Address>()?, Address::Tcp("127.0.0.1".into(), 6000));
/// assert_eq!("[::1]:6000".parse::<Address>()?, Address::Tcp("::1".into(), 6000));
/// assert!("no-port".parse::<Address>().is_err());
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket at a path in the file system.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (no file; Python's `"\0name"`).
    Abstract(Vec<u8>),
    /// A TCP host name or IP address and a port.
    Tcp(String, u16),
}

impl Address {
    /// A TCP address from a socket address.
    pub fn tcp(addr: SocketAddr) -> Address {
        Address::Tcp(addr.ip().to_string(), addr.port())
    }

    /// The socket addresses a TCP host name resolves to.
    pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(Error::NotFound(format!("host `{host}` has no address")));
        }
        Ok(addrs)
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        if let Some(name) = s.strip_prefix('@').or_else(|| s.strip_prefix('\0')) {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Address::Unix(path.into()));
        }
        if s.contains('/') {
            return Ok(Address::Unix(s.into()));
        }
        let (host, port) = s.rsplit_once(':').ok_or(Error::InvalidArgument(
            "an address is a path, @name, or host:port",
        ))?;
        let port = port
            .parse()
            .map_err(|_| Error::InvalidArgument("the port is not a number from 0 to 65535"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(Error::InvalidArgument("the host is empty"));
        }
        Ok(Address::Tcp(host.to_owned(), port))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Address::Tcp(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::tcp(addr)
    }
}
