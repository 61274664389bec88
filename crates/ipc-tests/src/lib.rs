//! Shared helpers of the multi-process integration tests in `tests/` and of
//! the `ipc-test-child` helper program: bounded waits, message patterns, a
//! raw socket end a forked "hostile peer" can inherit, descriptor probes,
//! the Python interpreters to test against, a [`SignalStorm`], and a
//! self-signed TLS identity ([`self_signed_tls`]).
//!
//! Every wait here is bounded by [`PATIENCE`], so a bug makes a test fail
//! instead of hang. [`PATIENCE`], [`join`], [`join_ok`] and [`pattern`] are
//! the ones of [`ipc_testkit`], re-exported for these tests.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use ipc_core::process::{Handle, Inheritable, Inherited};
use serde::{Deserialize, Serialize};

mod storm;
pub use ipc_testkit::{join, join_ok, pattern, PATIENCE};
pub use storm::SignalStorm;

/// A 64-bit FNV-1a checksum, to report a large message's content briefly.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Rust stand-in for Python's `[1, 2.25, None]`: a list of dynamically
/// typed values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Python's `int`.
    Int(i64),
    /// Python's `float`.
    Float(f64),
    /// Python's `None`.
    None,
    /// Python's `str`.
    Str(String),
    /// Python's `list`.
    List(Vec<Value>),
}

/// What `ipc-test-child fds` reports about its descriptors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FdReport {
    /// The descriptor its connection was rebuilt on.
    pub conn_fd: RawFd,
    /// Every descriptor open in the child.
    pub open: Vec<RawFd>,
    /// For each descriptor number the parent asked about, whether
    /// `fcntl(F_GETFD)` found it open (false means `EBADF`).
    pub probed: Vec<(RawFd, bool)>,
}

/// Whether descriptor number `fd` is open in this process, by
/// `fcntl(F_GETFD)` (an unused number gives `EBADF`).
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads this process's descriptor table and takes
    // no pointer; a number that is not open is reported as EBADF, never
    // touched.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags >= 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EBADF),
        "fcntl(F_GETFD) on {fd}"
    );
    false
}

/// Whether descriptor `fd` is open and survives exec (no `FD_CLOEXEC`).
pub fn fd_is_inheritable(fd: RawFd) -> bool {
    // SAFETY: as in `fd_is_open`: F_GETFD only reads the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC == 0
}

/// The descriptors open in this process, sorted.
pub fn open_fds() -> Vec<RawFd> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory listing had a descriptor of its own, closed by now.
    let mut open: Vec<RawFd> = listed.into_iter().filter(|&fd| fd_is_open(fd)).collect();
    open.sort_unstable();
    open
}

/// One end of a plain socketpair that a forked child can inherit: the
/// hostile peer of the bad-input tests, which writes raw bytes instead of
/// frames.
#[derive(Debug)]
pub struct RawEnd(pub UnixStream);

impl RawEnd {
    /// A connected pair: a framed [`ipc_core::Connection`] for the code
    /// under test and a raw end for the peer.
    pub fn pair() -> (ipc_core::Connection, RawEnd) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let conn = ipc_core::Connection::new(
            ipc_core::FdStream::new(OwnedFd::from(ours)).expect("wrap the socket"),
        );
        (conn, RawEnd(theirs))
    }
}

impl Inheritable for RawEnd {
    fn handle(&self) -> Handle<'_> {
        Handle {
            fds: vec![self.0.as_fd()],
            text: String::new(),
        }
    }

    fn from_inherited(inherited: Inherited) -> ipc_core::Result<Self> {
        let [fd]: [OwnedFd; 1] = inherited
            .fds
            .try_into()
            .map_err(|_| ipc_core::Error::InvalidArgument("a raw end has one descriptor"))?;
        Ok(RawEnd(UnixStream::from(fd)))
    }
}

/// The first of `candidates` (names on `PATH` or absolute paths) that
/// runs, with the version it reports.
pub fn find_python(candidates: &[&str]) -> Option<(String, String)> {
    candidates.iter().find_map(|&name| {
        let output = Command::new(name)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        let mut version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if version.is_empty() {
            version = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        }
        Some((name.to_owned(), version))
    })
}

/// The interpreters the Python interop tests run against: `python3` and,
/// where installed, 3.12 and 3.13 (3.11 is this machine's `python3`).
pub const PYTHONS: [&[&str]; 3] = [
    &["python3"],
    &["python3.12", "/root/.pyenv/versions/3.12.1/bin/python3.12"],
    &["python3.13", "/root/.pyenv/versions/3.13.0/bin/python3.13"],
];

/// The first of `candidates` that runs here, or `None` with a note that
/// the test skips it (a missing interpreter is not a failure).
pub fn python_or_skip(candidates: &[&str]) -> Option<String> {
    match find_python(candidates) {
        Some((path, version)) => {
            println!("running against {path} ({version})");
            Some(path)
        }
        None => {
            println!("note: none of {candidates:?} runs here; skipping this Python interop test");
            None
        }
    }
}

/// Python for a child started with `Process::exec`: `handle_fd(key)` is
/// the descriptor number of the handle passed under `key`, from
/// `IPC_HANDLES`.
pub const PY_HANDLE_FD: &str = r#"
import os
def handle_fd(key):
    for entry in os.environ["IPC_HANDLES"].split(";"):
        name, rest = entry.split("=", 1)
        if name == key:
            return int(rest.split(":", 1)[0].split(",")[0].split(".")[0])
    raise SystemExit("no handle " + key)
"#;

/// A TLS server identity for `localhost`, generated now, and a client that
/// trusts it.
pub fn self_signed_tls() -> (ipc_socket::TlsServer, ipc_socket::TlsClient) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("generate a certificate");
    let server = ipc_socket::TlsServer::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("load the certificate and key");
    let client = ipc_socket::TlsClient::from_pem(cert.cert.pem().as_bytes(), "localhost")
        .expect("trust the certificate");
    (server, client)
}
