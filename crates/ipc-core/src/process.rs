//! Child processes that receive IPC handles: Python's `Process(target=f,
//! args=(conn,))`, either as a fork running a closure or as a fresh exec of
//! a program that rebuilds its handles on its side.
//!
//! # Which start method
//!
//! [`Process::exec`] is the dependable default: the child is a fresh
//! program, so nothing about the parent's threads can hurt it. Only the
//! handles passed with [`Process::pass`] cross the exec; every other
//! descriptor of this workspace is close-on-exec.
//!
//! [`Process::fork`] is the fast path for **single-threaded** programs. The
//! child is a copy of the parent that runs a closure and exits. If the
//! parent had other threads, the child holds copies of whatever locks those
//! threads held at the moment of the fork (the allocator's, stdout's, a
//! logger's), and may deadlock on the first one it touches. This is why
//! Python stopped defaulting to plain fork. So `fork` counts the threads
//! first and refuses with [`Error::ThreadedFork`] when there is more than
//! one, unless the caller accepts the hazard with
//! [`Process::allow_threads`] (a test harness's parked thread is the usual
//! case: this workspace's own tests opt in that way, as libtest runs each
//! test on a thread of its own).
//!
//! In a forked child only stdin, stdout, stderr and the passed handles stay
//! open. Every other descriptor the parent had is pointed at a dead socket:
//! the pipe end or file behind it is released (so EOF still arrives when
//! the parent closes its own end), and an object the closure captured
//! without passing it fails with [`Error::Closed`] instead of reaching the
//! parent's file. Pass every handle the child uses.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Debug;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::sys::{self, Forked};
use crate::wait::{poll_readable, Waitable};
use crate::{Deadline, Error, Result};

/// The environment variable that tells an exec'd child which descriptors
/// and names it was handed.
pub const HANDLES_ENV: &str = "IPC_HANDLES";

/// What a child needs to rebuild an IPC object: descriptors it keeps open
/// across the fork or exec, and a short text (a name, flags, limits).
#[derive(Debug)]
pub struct Handle<'a> {
    /// Descriptors the child inherits.
    pub fds: Vec<BorrowedFd<'a>>,
    /// Anything else the child needs, as printable text without `;`.
    pub text: String,
}

/// A handle as the child receives it.
#[derive(Debug)]
pub struct Inherited {
    /// The inherited descriptors, now owned by the child.
    pub fds: Vec<OwnedFd>,
    /// The text the parent attached.
    pub text: String,
}

/// An IPC object that can be handed to a child process.
pub trait Inheritable: Sized {
    /// What to hand over.
    fn handle(&self) -> Handle<'_>;
    /// Rebuilds the object in the child.
    fn from_inherited(inherited: Inherited) -> Result<Self>;
}

/// What a forked child's closure returns: its exit code.
pub trait ChildOutcome {
    /// The exit code of the child process.
    fn exit_code(self) -> i32;
}

impl ChildOutcome for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl ChildOutcome for i32 {
    fn exit_code(self) -> i32 {
        self
    }
}

impl<E: Debug> ChildOutcome for std::result::Result<(), E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child process failed: {e:?}");
                1
            }
        }
    }
}

/// Starts a child process with chosen IPC handles.
///
/// ```
/// use ipc_core::process::Process;
/// // Fork a child that runs a closure; its return value is the exit status.
/// let mut child = Process::new().fork(|| 7)?;
/// assert_eq!(child.join()?.code(), Some(7));
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Process {
    passed: Vec<Passed>,
    /// Whether [`fork`](Process::fork) may go ahead beside other threads.
    allow_threads: bool,
}

/// One handle given to [`Process::pass`].
#[derive(Debug)]
struct Passed {
    key: String,
    /// The descriptor numbers the object itself uses, which a forked child
    /// keeps open for the closure that captured the object.
    originals: Vec<RawFd>,
    /// Our own duplicates, which an exec'd child inherits. Owning them means
    /// the numbers handed over stay valid until the spawn, whatever the
    /// caller does with the object meanwhile.
    duplicates: Vec<OwnedFd>,
    text: String,
}

impl Process {
    /// A child with no handles yet.
    pub fn new() -> Process {
        Process::default()
    }

    /// Hands `object` to the child under `key` (letters, digits, `_`, `-`,
    /// `.`). An exec'd child takes it back with [`inherited`]; a forked
    /// child uses the object its closure captured, whose descriptors stay
    /// open in the child.
    pub fn pass<T: Inheritable>(mut self, key: &str, object: &T) -> Result<Process> {
        let handle = object.handle();
        let duplicates = handle
            .fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<_>>>()?;
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !key_ok {
            return Err(Error::InvalidArgument(
                "a handle key is empty or has characters other than [A-Za-z0-9_.-]",
            ));
        }
        if handle.text.contains([';', '\0']) {
            return Err(Error::InvalidArgument(
                "a handle's text may not contain ';' or NUL",
            ));
        }
        self.passed.push(Passed {
            key: key.to_owned(),
            originals: handle.fds.iter().map(|fd| fd.as_raw_fd()).collect(),
            duplicates,
            text: handle.text,
        });
        Ok(self)
    }

    /// Lets [`fork`](Self::fork) go ahead in a process that has other
    /// threads, which it otherwise refuses.
    ///
    /// The hazard you accept: the child starts with a copy of every lock
    /// another thread held at that instant (the allocator's, stdout's, a
    /// logger's, a runtime's) and no thread to release it, so the closure
    /// may deadlock on its first allocation or print. It is sound when the
    /// other threads hold nothing the child touches at the fork, for
    /// instance a test harness's thread parked waiting for the test to end.
    /// Otherwise use [`exec`](Self::exec).
    ///
    /// ```
    /// use ipc_core::process::Process;
    /// let parked = std::thread::spawn(std::thread::park);
    /// let refused = Process::new().fork(|| 0);
    /// assert!(matches!(refused, Err(ipc_core::Error::ThreadedFork { .. })));
    /// // This thread knows the other one holds nothing:
    /// let mut child = Process::new().allow_threads().fork(|| 0)?;
    /// assert!(child.join()?.success());
    /// parked.thread().unpark();
    /// parked.join().unwrap();
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn allow_threads(mut self) -> Process {
        self.allow_threads = true;
        self
    }

    /// Forks a child that runs `body` and exits with its outcome: 0 for
    /// `()` or `Ok(())`, 1 for `Err` (printed to stderr), the number for an
    /// `i32`, 101 for a panic. See the [module docs](self) for when fork is
    /// sound: in a process with more than one thread it is refused with
    /// [`Error::ThreadedFork`] unless [`allow_threads`](Self::allow_threads)
    /// was called.
    pub fn fork<F, R>(self, body: F) -> Result<Child>
    where
        F: FnOnce() -> R,
        R: ChildOutcome,
    {
        if !self.allow_threads {
            let threads = thread_count()?;
            if threads > 1 {
                return Err(Error::ThreadedFork { threads });
            }
        }
        let mut keep = self.originals();
        keep.sort_unstable();
        keep.dedup();
        let replace: Vec<RawFd> = open_descriptors()?
            .into_iter()
            .filter(|fd| *fd > 2 && keep.binary_search(fd).is_err())
            .collect();
        // A socket whose peer is gone: reads give EOF, writes EPIPE.
        let (dead, _) = std::os::unix::net::UnixStream::pair()?;
        let dead = OwnedFd::from(dead);
        // The listing's own directory descriptor may have had the number the
        // dead socket now has; that number must be closed in the child.
        let replace: Vec<RawFd> = replace
            .into_iter()
            .filter(|&fd| fd != dead.as_raw_fd())
            .collect();
        // Numbers kept open in the child: the passed handles and the
        // replaced ones; anything else (opened by another thread after the
        // listing, and the dead socket itself) is closed.
        let mut keep_open: Vec<RawFd> = keep.iter().chain(&replace).copied().collect();
        keep_open.sort_unstable();
        // Unflushed output would otherwise be written twice, once by each process.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        match sys::fork()? {
            Forked::Child => {
                sys::replace_with_dead(dead.as_fd(), &replace);
                sys::close_all_except(&keep_open);
                let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                    Ok(outcome) => outcome.exit_code(),
                    Err(_) => 101,
                };
                let _ = std::io::stdout().flush();
                sys::exit_now(code)
            }
            Forked::Parent(pid) => Child::adopt(pid, None),
        }
    }

    /// Spawns `command` with the passed handles, which it rebuilds with
    /// [`inherited`]. Only these descriptors cross the exec.
    ///
    /// ```no_run
    /// # fn main() -> ipc_core::Result<()> {
    /// use std::process::Command;
    /// use ipc_core::process::{inherited, Process};
    /// # let (parent_end, child_end): (ipc_core::Connection, ipc_core::Connection) = todo!();
    /// // Parent:
    /// let mut command = Command::new(std::env::current_exe()?);
    /// command.arg("--child");
    /// let mut child = Process::new().pass("conn", &child_end)?.exec(command)?;
    /// drop(child_end);
    /// // Child, in its main, when started with --child:
    /// let mut conn: ipc_core::Connection = inherited("conn")?;
    /// # Ok(()) }
    /// ```
    pub fn exec(self, mut command: Command) -> Result<Child> {
        let fds: Vec<RawFd> = self.descriptors().map(|fd| fd.as_raw_fd()).collect();
        command.env(HANDLES_ENV, self.handle_spec(|i| fds[i])?);
        sys::inherit_across_exec(&mut command, fds);
        let std_child = command.spawn()?;
        let pid = std_child.id() as libc::pid_t;
        // Our duplicates are dropped with `self` here; the child has its own.
        Child::adopt(pid, Some(std_child))
    }

    /// Our duplicates of every passed descriptor, handle after handle: what
    /// an exec'd child inherits, or a forkserver's child receives.
    pub(crate) fn descriptors(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.passed
            .iter()
            .flat_map(|p| p.duplicates.iter().map(|fd| fd.as_fd()))
    }

    /// The descriptor numbers the passed objects themselves use, in the
    /// order of [`descriptors`](Self::descriptors): what a forked child
    /// keeps open.
    fn originals(&self) -> Vec<RawFd> {
        self.passed
            .iter()
            .flat_map(|p| p.originals.iter().copied())
            .collect()
    }

    /// The handle table as [`HANDLES_ENV`] carries it, the `i`th passed
    /// descriptor (in the order of [`descriptors`](Self::descriptors))
    /// written as the number `number(i)` it has in the child.
    pub(crate) fn handle_spec(&self, number: impl Fn(usize) -> RawFd) -> Result<String> {
        let mut spec = String::new();
        let mut index = 0;
        for passed in &self.passed {
            if !spec.is_empty() {
                spec.push(';');
            }
            // Each descriptor travels with its device and inode, so the
            // child adopts a number only if it is still this file (and a
            // grandchild that inherited the variable but not the
            // descriptors adopts nothing).
            let numbers = passed
                .duplicates
                .iter()
                .map(|fd| {
                    let (dev, ino) = identity(fd.as_fd())?;
                    index += 1;
                    Ok(format!("{}.{dev}.{ino}", number(index - 1)))
                })
                .collect::<Result<Vec<String>>>()?;
            spec.push_str(&format!(
                "{}={}:{}",
                passed.key,
                numbers.join(","),
                passed.text
            ));
        }
        Ok(spec)
    }

    /// Forks a child that takes its handles back with [`inherited`], as an
    /// exec'd child does, and then runs `body`: the fork start method of
    /// registered entries. Refused beside other threads as
    /// [`fork`](Self::fork) is.
    pub(crate) fn fork_with_handles(self, body: impl FnOnce() -> i32) -> Result<Child> {
        let originals = self.originals();
        let spec = self.handle_spec(|i| originals[i])?;
        self.fork(move || {
            install_handles(&spec, Some);
            body()
        })
    }
}

/// How many threads this process has: `num_threads`, field 20 of
/// `/proc/self/stat` (after the command name, which may hold anything, in
/// parentheses).
fn thread_count() -> Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].split_ascii_whitespace().nth(17))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::Io(std::io::Error::other(
                "cannot read the thread count in /proc/self/stat",
            ))
        })
}

/// The descriptors open in this process, from `/proc/self/fd`.
fn open_descriptors() -> Result<Vec<RawFd>> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

/// The handles this process was started with, parsed once from
/// [`HANDLES_ENV`]; each is taken at most once.
static INHERITED: Mutex<Option<HandleTable>> = Mutex::new(None);

/// Handle key → (descriptors, text), as read from [`HANDLES_ENV`].
type HandleTable = HashMap<String, (Vec<PassedFd>, String)>;

/// A descriptor number and the identity of the file the parent passed as it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PassedFd {
    fd: RawFd,
    dev: u64,
    ino: u64,
}

/// The device and inode of an open descriptor.
fn identity(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    let stat = nix::sys::stat::fstat(fd)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// Parses the handle table. Malformed entries, and every entry that names a
/// descriptor number another entry names too (two owners for one
/// descriptor), are left out.
fn parse_handles(spec: &str) -> HandleTable {
    let mut table: HandleTable = spec
        .split(';')
        .filter_map(|entry| {
            let (key, rest) = entry.split_once('=')?;
            let (numbers, text) = rest.split_once(':')?;
            let fds = numbers
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let mut parts = n.split('.');
                    let passed = PassedFd {
                        fd: parts.next()?.parse().ok()?,
                        dev: parts.next()?.parse().ok()?,
                        ino: parts.next()?.parse().ok()?,
                    };
                    parts.next().is_none().then_some(passed)
                })
                .collect::<Option<Vec<PassedFd>>>()?;
            Some((key.to_owned(), (fds, text.to_owned())))
        })
        .collect();
    let mut uses: HashMap<RawFd, usize> = HashMap::new();
    for fd in table.values().flat_map(|(fds, _)| fds) {
        *uses.entry(fd.fd).or_default() += 1;
    }
    table.retain(|_, (fds, _)| fds.iter().all(|fd| uses[&fd.fd] == 1));
    table
}

/// An entry of the handle table as [`parse_handles_for_fuzzing`] lists it.
type ParsedEntry = (String, Vec<(RawFd, u64, u64)>, String);

/// Parses an [`HANDLES_ENV`] value as [`inherited`] does, without touching
/// any descriptor, and lists the entries it keeps, sorted by key: the key,
/// each descriptor as `(number, dev, ino)`, and the text.
///
/// Not part of the API: it exists only for the fuzz target
/// `fuzz/fuzz_targets/handles_parse.rs`, which must reach this private
/// parser from outside the crate.
#[doc(hidden)]
pub fn parse_handles_for_fuzzing(spec: &str) -> Vec<ParsedEntry> {
    let mut entries: Vec<_> = parse_handles(spec)
        .into_iter()
        .map(|(key, (fds, text))| {
            let fds = fds.iter().map(|fd| (fd.fd, fd.dev, fd.ino)).collect();
            (key, fds, text)
        })
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// Makes `spec` (as [`HANDLES_ENV`] carries it) the handle table
/// [`inherited`] takes from, in a child that was not exec'd: each number in
/// it is mapped through `number`, and an entry with a number that maps to
/// nothing is left out. Descriptors the table names are owned by it.
pub(crate) fn install_handles(spec: &str, number: impl Fn(RawFd) -> Option<RawFd>) {
    let mut table = parse_handles(spec);
    table.retain(|_, (fds, _)| {
        fds.iter_mut().all(|fd| match number(fd.fd) {
            Some(mapped) => {
                fd.fd = mapped;
                true
            }
            None => false,
        })
    });
    *INHERITED.lock().unwrap_or_else(|e| e.into_inner()) = Some(table);
}

/// Takes the handle the parent passed under `key` and rebuilds the object.
/// Each handle can be taken once; a missing one, or one whose descriptor is
/// no longer the file the parent passed, is [`Error::NotFound`].
pub fn inherited<T: Inheritable>(key: &str) -> Result<T> {
    let (passed, text) = {
        let mut table = INHERITED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let table = table.get_or_insert_with(|| {
            let table = std::env::var_os(HANDLES_ENV)
                .map(|s| parse_handles(&s.to_string_lossy()))
                .unwrap_or_default();
            // Handles this process never takes must not leak into its own
            // children; numbers that are not the passed files are left alone.
            for fd in table.values().flat_map(|(fds, _)| fds) {
                if sys::identity_of_number(fd.fd) == Some((fd.dev, fd.ino)) {
                    let _ = sys::set_cloexec(fd.fd);
                }
            }
            table
        });
        table.remove(key).ok_or_else(|| {
            Error::NotFound(format!("no handle `{key}` was passed to this process"))
        })?
    };
    if let Some(stale) = passed
        .iter()
        .find(|fd| sys::identity_of_number(fd.fd) != Some((fd.dev, fd.ino)))
    {
        return Err(Error::NotFound(format!(
            "handle `{key}`: descriptor {} is not the file the parent passed (was this process started by Process::exec?)",
            stale.fd
        )));
    }
    let fds = passed
        .into_iter()
        .map(|fd| sys::adopt_inherited_fd(fd.fd))
        .collect::<std::io::Result<Vec<_>>>()?;
    T::from_inherited(Inherited { fds, text })
}

/// Whether this process was started by [`Process::exec`] with handles.
pub fn has_inherited_handles() -> bool {
    std::env::var_os(HANDLES_ENV).is_some_and(|s: OsString| !s.is_empty())
}

/// A child process started by [`Process`].
///
/// Dropping a `Child` that has not been joined kills it and reaps it, so a
/// failing test or an early return never leaves an orphan or a zombie.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    std_child: Option<std::process::Child>,
    reaper: Reaper,
}

/// Who reaps a child and learns its exit status.
#[derive(Debug)]
enum Reaper {
    /// This process: the child is ours.
    Us,
    /// The forkserver that forked it, which writes the raw wait status (an
    /// `i32`, native endian) to this socket once it has reaped the child.
    Forkserver(OwnedFd),
}

impl Child {
    fn adopt(pid: libc::pid_t, std_child: Option<std::process::Child>) -> Result<Child> {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok(Child {
                pid,
                pidfd,
                status: None,
                std_child,
                reaper: Reaper::Us,
            }),
            Err(e) => {
                // Without a pidfd we cannot manage the child safely: end it.
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
                Err(e.into())
            }
        }
    }

    /// A child a forkserver forked and reaps: its pid, a pidfd the server
    /// opened before it could be reaped, and the socket its exit status
    /// arrives on.
    pub(crate) fn served(pid: libc::pid_t, pidfd: OwnedFd, status: OwnedFd) -> Child {
        Child {
            pid,
            pidfd,
            status: None,
            std_child: None,
            reaper: Reaper::Forkserver(status),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to exit and returns its status.
    pub fn join(&mut self) -> Result<ExitStatus> {
        self.reap(WaitPidFlag::empty())
            .map(|s| s.expect("blocking waitpid returns a status"))
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still
    /// running then.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.status.is_none() && !poll_readable(self.wait_fd(), Deadline::after(timeout))? {
            return Ok(None);
        }
        self.reap(WaitPidFlag::WNOHANG)
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_join(&mut self) -> Result<Option<ExitStatus>> {
        self.reap(WaitPidFlag::WNOHANG)
    }

    /// Whether the child is still running.
    pub fn is_alive(&mut self) -> Result<bool> {
        Ok(self.try_join()?.is_none())
    }

    /// The exit status, once the child has been joined.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Sends `SIGKILL` (Python's `Process.kill`). Killing a child that has
    /// already exited is not an error.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// Sends `SIGTERM` (Python's `Process.terminate`).
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends `signal` to the child, never to another process that reuses
    /// its pid.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match sys::pidfd_send_signal(self.pidfd.as_fd(), signal) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => Ok(other?),
        }
    }

    /// The child's standard output, if the command was given
    /// `Stdio::piped()` (exec'd children only).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.std_child.as_mut()?.stdout.take()
    }

    /// The child's standard input, if the command was given
    /// `Stdio::piped()` (exec'd children only).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.std_child.as_mut()?.stdin.take()
    }

    fn reap(&mut self, flags: WaitPidFlag) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let raw = match &self.reaper {
            Reaper::Us => match wait_raw(self.pid, flags)? {
                Some(raw) => raw,
                None => return Ok(None),
            },
            Reaper::Forkserver(socket) => {
                if flags.contains(WaitPidFlag::WNOHANG)
                    && !poll_readable(socket.as_fd(), Deadline::Now)?
                {
                    return Ok(None);
                }
                read_reported_status(socket.as_fd()).ok_or_else(|| {
                    Error::Io(std::io::Error::other(format!(
                        "the forkserver ended before it reported how child {} exited",
                        self.pid
                    )))
                })?
            }
        };
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        Ok(Some(status))
    }
}

/// Reads the raw wait status a forkserver reports, waiting for it; `None`
/// if the server closed the socket (or failed) first.
fn read_reported_status(socket: BorrowedFd<'_>) -> Option<i32> {
    let mut raw = [0u8; 4];
    let mut filled = 0;
    while filled < raw.len() {
        match rustix::io::read(socket, &mut raw[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    Some(i32::from_ne_bytes(raw))
}

/// Reaps the child `pid` and gives its raw wait status (as `ExitStatus`
/// takes it), or `None` if it is still running and `flags` say not to wait.
pub(crate) fn wait_raw(pid: libc::pid_t, flags: WaitPidFlag) -> Result<Option<i32>> {
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(pid), Some(flags)) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                return Ok(Some((signal as i32) | if core { 0x80 } else { 0 }))
            }
            Ok(_) => continue,
        }
    }
}

impl Waitable for Child {
    /// A child is ready once it has exited (Python's `Process.sentinel`);
    /// a forkserver's child, once the server has reported its exit.
    fn wait_fd(&self) -> BorrowedFd<'_> {
        match &self.reaper {
            Reaper::Us => self.pidfd.as_fd(),
            Reaper::Forkserver(socket) => socket.as_fd(),
        }
    }

    fn ready_without_waiting(&self) -> bool {
        self.status.is_some()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_specs_parse_and_refuse_garbage() {
        let table =
            parse_handles("conn=7.1.2:r1w1;queue=:ipcq_1;multi=3.1.5,4.1.6:x;bad;worse=z:;old=9:t");
        assert_eq!(
            table["conn"],
            (
                vec![PassedFd {
                    fd: 7,
                    dev: 1,
                    ino: 2
                }],
                "r1w1".to_owned()
            )
        );
        assert_eq!(table["queue"], (vec![], "ipcq_1".to_owned()));
        assert_eq!(table["multi"].0.len(), 2);
        assert!(!table.contains_key("bad"));
        assert!(!table.contains_key("worse"));
        assert!(
            !table.contains_key("old"),
            "a number without its identity is refused"
        );
    }

    #[test]
    fn a_descriptor_named_twice_is_nobodys() {
        let table = parse_handles("a=5.1.1:x;b=5.1.1:y;c=6.1.1,6.1.1:z;d=7.1.1:w");
        assert_eq!(table.keys().collect::<Vec<_>>(), ["d"]);
    }

    #[test]
    fn a_reused_number_is_not_adopted() {
        // Descriptor 0 is open in every test process, but it is not the
        // file this made-up identity names.
        let (dev, ino) = sys::identity_of_number(0).unwrap();
        assert_ne!((dev, ino), (u64::MAX, u64::MAX));
        let mut table = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
        table.get_or_insert_with(HashMap::new).insert(
            "stale".to_owned(),
            (
                vec![PassedFd {
                    fd: 0,
                    dev: u64::MAX,
                    ino: u64::MAX,
                }],
                String::new(),
            ),
        );
        drop(table);
        struct Nothing;
        impl Inheritable for Nothing {
            fn handle(&self) -> Handle<'_> {
                Handle {
                    fds: Vec::new(),
                    text: String::new(),
                }
            }
            fn from_inherited(inherited: Inherited) -> Result<Self> {
                // Never reached: adopting descriptor 0 would close stdin.
                std::mem::forget(inherited.fds);
                Ok(Nothing)
            }
        }
        assert!(matches!(
            inherited::<Nothing>("stale"),
            Err(Error::NotFound(_))
        ));
    }
}
