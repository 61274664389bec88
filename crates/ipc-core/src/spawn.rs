//! The spawn start method: a child that is a fresh run of this same
//! program (`/proc/self/exe`), started in a function registered by name,
//! with a typed argument and a typed result. Sound in a parent with any
//! number of threads (a tokio runtime, a test harness), unlike fork.
//!
//! ```
//! use ipc_core::process::Process;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> ipc_core::Result<()> {
//!     // First line of main: a spawned child runs its entry here and exits.
//!     ipc_core::spawn::init();
//!
//!     let child = Process::new().spawn(ipc_core::entry!(square), &7)?;
//!     assert_eq!(child.join()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//!
//! [`entry!`](crate::entry) registers the function in a table the linker
//! assembles (linkme's distributed slice), under its module path and name,
//! and gives a typed [`Entry`]. [`Process::spawn`] checks that the name is
//! in the table, re-executes this program with the name in an environment
//! variable, and hands the child a socket (with the handles given to
//! [`Process::pass`]). [`init`], the first line of `main`, finds the name,
//! reads the argument from the socket, runs the function, sends back its
//! result (or the panic message) and exits. [`Spawned::join`] gives the
//! result, or a [`ChildFailure`] saying what happened.
//!
//! # In tests
//!
//! A test binary's `main` is libtest's. Put [`spawn_harness!`](crate::spawn_harness)
//! at the root of the test crate: it adds a test named `ipc_spawn_child`
//! that calls [`init`]. A spawned child is started with that test's name as
//! libtest's filter, so it runs only that test, which runs the entry and
//! exits; in an ordinary run the test does nothing. This works the same
//! under `cargo test` and under nextest.

use std::any::Any;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::process::{inherited, Child, Process};
use crate::wait::Waitable;
use crate::{codec, forkserver, Connection, Deadline, Error, FdStream, Result};

#[doc(hidden)]
pub use linkme;

#[doc(hidden)]
pub mod batch;

/// The environment variable that names the entry a spawned child runs.
pub const ENTRY_ENV: &str = "IPC_SPAWN_ENTRY";
/// The handle key of the socket between a spawned child and its parent.
const SOCKET_KEY: &str = "ipc-spawn";
/// The name of the test [`spawn_harness!`](crate::spawn_harness) adds.
pub const HARNESS_TEST: &str = "ipc_spawn_child";

/// How a spawned child failed to deliver its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChildFailure {
    /// The entry panicked, with this message.
    Panicked(String),
    /// The argument could not be decoded as the entry's type, or the
    /// result encoded (the codec's message).
    Codec(String),
    /// The child does not have the entry the parent asked for (another
    /// build of the program replaced the file, say).
    UnknownEntry(String),
    /// The child exited with this code without delivering a result: it
    /// never reached its entry (is `ipc_core::spawn::init()` the first line
    /// of `main`, or `spawn_harness!` in the test crate?) or exited from
    /// inside it.
    Exited(i32),
    /// The child was killed by this signal before delivering a result.
    Signaled(i32),
    /// The worker process running the task died before it finished: its
    /// pid, and the signal that killed it or its exit code.
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// The signal that killed it, if a signal did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
    },
}

impl std::fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildFailure::Panicked(message) => write!(f, "the entry panicked: {message}"),
            ChildFailure::Codec(message) => write!(f, "cannot move the argument or result: {message}"),
            ChildFailure::UnknownEntry(name) => write!(f, "the child has no entry `{name}`"),
            ChildFailure::Exited(code) => write!(
                f,
                "the child exited with code {code} without a result (is ipc_core::spawn::init() the first line of main, or spawn_harness! in the test crate?)"
            ),
            ChildFailure::Signaled(signal) => {
                write!(f, "the child was killed by signal {signal} before it delivered a result")
            }
            ChildFailure::WorkerDied { pid, signal, code } => match (signal, code) {
                (Some(signal), _) => write!(f, "worker {pid} was killed by signal {signal} during the task"),
                (None, Some(code)) => write!(f, "worker {pid} exited with code {code} during the task"),
                (None, None) => write!(f, "worker {pid} died during the task"),
            },
        }
    }
}

/// An entry point in the registry: its name and how to run it on encoded
/// bytes. Made by [`entry!`](crate::entry).
#[doc(hidden)]
pub struct Registered {
    pub name: &'static str,
    /// Decodes the argument, runs the function and appends its encoded
    /// result to the buffer.
    pub run: fn(&[u8], &mut Vec<u8>) -> std::result::Result<(), ChildFailure>,
    /// Runs many tasks in code made for the function's types (see
    /// [`batch::run_many`]).
    pub run_many: fn(&mut batch::Tasks<'_>, &mut batch::Outcomes, &std::sync::atomic::AtomicU64),
}

/// Every registered entry of this program.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static ENTRIES: [Registered];

/// A registered function a spawned child can run: `fn(A) -> R`.
pub struct Entry<A, R> {
    name: &'static str,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for Entry<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Entry<A, R> {}

impl<A, R> std::fmt::Debug for Entry<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Entry").field(&self.name).finish()
    }
}

impl<A, R> Entry<A, R> {
    /// The entry registered under `name` (as [`name`](Self::name) gives
    /// it), typed by the caller: [`Error::NotFound`] if no entry has that
    /// name. Types that do not match the function's make the spawned call
    /// fail with [`ChildFailure::Codec`].
    pub fn named(name: &str) -> Result<Self> {
        registered(name)
            .map(|r| Entry {
                name: r.name,
                _types: PhantomData,
            })
            .ok_or_else(|| unknown(name))
    }

    /// The name it is registered under: the function's module path and
    /// name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

fn registered(name: &str) -> Option<&'static Registered> {
    ENTRIES.iter().find(|r| r.name == name)
}

fn unknown(name: &str) -> Error {
    Error::NotFound(format!(
        "spawn entry `{name}` (register the function with ipc_core::entry!)"
    ))
}

/// Types an entry from its function; used by [`entry!`](crate::entry).
#[doc(hidden)]
pub fn typed<A, R>(_function: fn(A) -> R, name: &'static str) -> Entry<A, R> {
    Entry {
        name,
        _types: PhantomData,
    }
}

/// Decodes the argument, runs the function and encodes its result; used by
/// [`entry!`](crate::entry).
#[doc(hidden)]
pub fn invoke<A: DeserializeOwned, R: Serialize>(
    function: fn(A) -> R,
    argument: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), ChildFailure> {
    let argument = codec::decode(argument).map_err(|e| ChildFailure::Codec(e.to_string()))?;
    let result = function(argument);
    let start = out.len();
    codec::encode_into(&result, out).map_err(|e| {
        out.truncate(start);
        ChildFailure::Codec(e.to_string())
    })
}

/// Registers a function `fn(A) -> R` (`A: Deserialize`, `R: Serialize`)
/// as an entry point of this program and gives its typed [`Entry`] for
/// [`Process::spawn`]. The registration is made at link time wherever the
/// macro appears, so the name is known to every run of the program.
///
/// ```no_run
/// fn greet(name: String) -> String {
///     format!("hello, {name}")
/// }
/// let greet = ipc_core::entry!(greet);
/// assert!(greet.name().ends_with("::greet"));
/// ```
#[macro_export]
macro_rules! entry {
    ($function:path) => {{
        #[$crate::spawn::linkme::distributed_slice($crate::spawn::ENTRIES)]
        #[linkme(crate = $crate::spawn::linkme)]
        static REGISTERED: $crate::spawn::Registered = $crate::spawn::Registered {
            name: concat!(module_path!(), "::", stringify!($function)),
            run: |argument, out| $crate::spawn::invoke($function, argument, out),
            run_many: |tasks, out, progress| {
                // The path is read here, outside the block below, so no
                // name of the macro's can hide a name in it.
                let function: fn(_) -> _ = $function;
                {
                    // A type of this entry's own, for its serde code to be
                    // inlined in the loop (`codec::encode_into_for`).
                    enum Loop {}
                    $crate::spawn::batch::run_many::<_, _, Loop>(function, tasks, out, progress)
                }
            },
        };
        $crate::spawn::typed($function, REGISTERED.name)
    }};
}

/// Adds to a test crate the test that lets spawned children run their
/// entries (see the [module docs](crate::spawn)). Put it once at the root
/// of each test crate that spawns.
#[macro_export]
macro_rules! spawn_harness {
    () => {
        #[test]
        fn ipc_spawn_child() {
            $crate::spawn::init();
        }
    };
}

/// If this process is a spawned child, runs its entry, sends the result to
/// the parent and exits; otherwise returns at once. Call it first thing in
/// `main`, before the program starts threads or parses its arguments.
pub fn init() {
    let Ok(name) = std::env::var(ENTRY_ENV) else {
        return;
    };
    // Children this one starts by other means must not take it for theirs.
    std::env::remove_var(ENTRY_ENV);
    let code = if name == forkserver::SERVER_ENTRY {
        forkserver::serve()
    } else {
        child_main(&name)
    };
    std::process::exit(code);
}

/// Runs the entry `name` as a child started by [`Process::start`] and
/// gives the exit code: the argument comes from the parent, the result
/// (or the panic message) goes back to it.
pub(crate) fn child_main(name: &str) -> i32 {
    match run_entry(name) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child `{name}`: {e}");
            1
        }
    }
}

/// Refuses to start children from a process that was started to run an
/// entry but did not call [`init`] first: its `main` is running instead,
/// and starting children the same way would start copies of it over and
/// over.
pub(crate) fn refuse_without_init() -> Result<()> {
    match std::env::var_os(ENTRY_ENV) {
        Some(_) => Err(Error::InvalidArgument(
            "this process was started to run an entry, but its main did not call ipc_core::spawn::init() first (or the test crate lacks spawn_harness!)",
        )),
        None => Ok(()),
    }
}

/// A command that re-executes this program as a child that runs the entry
/// `name` in [`init`].
pub(crate) fn reexec(name: &str) -> Command {
    let mut command = Command::new("/proc/self/exe");
    command
        .env(ENTRY_ENV, name)
        // For a test binary, libtest's filter selects the harness test; a
        // program's `main` calls `init` before it reads arguments.
        .args([HARNESS_TEST, "--nocapture", "--test-threads=1"]);
    command
}

fn run_entry(name: &str) -> Result<()> {
    let mut parent: Connection<FdStream> = inherited(SOCKET_KEY)?;
    let argument = parent.recv_bytes()?;
    parent.send(&run_registered(name, &argument))
}

/// Runs the registered entry `name` in this process on an encoded
/// argument and gives its encoded result, or why there is none (a panic is
/// caught and reported).
fn run_registered(name: &str, argument: &[u8]) -> std::result::Result<Vec<u8>, ChildFailure> {
    let runner = Runner::find(name)?;
    let mut out = Vec::new();
    runner.run_into(argument, &mut out)?;
    Ok(out)
}

/// A registered entry found by name, to run many times in this process:
/// for workers that run many tasks, as ipc-pool's do.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Runner(&'static Registered);

impl Runner {
    /// The entry registered as `name`, or [`ChildFailure::UnknownEntry`].
    pub fn find(name: &str) -> std::result::Result<Runner, ChildFailure> {
        registered(name)
            .map(Runner)
            .ok_or_else(|| ChildFailure::UnknownEntry(name.to_owned()))
    }

    /// Runs the entry on an encoded argument and appends its encoded result
    /// to `out`; a panic is caught and reported, and leaves `out` as it was.
    pub fn run_into(
        self,
        argument: &[u8],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), ChildFailure> {
        let start = out.len();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.0.run)(argument, out)))
            .unwrap_or_else(|panic| {
                out.truncate(start);
                Err(ChildFailure::Panicked(panic_message(&*panic)))
            })
    }
}

/// The failure of an entry that panicked with `panic`.
#[doc(hidden)]
pub fn panic_failure(panic: &(dyn Any + Send)) -> ChildFailure {
    ChildFailure::Panicked(panic_message(panic))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        shortened(s)
    } else if let Some(s) = panic.downcast_ref::<String>() {
        shortened(s)
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}

/// The longest panic message passed on whole: a failure travels in the
/// frame of a run's outcomes, which a message of hundreds of megabytes
/// would make too large to send.
pub(crate) const PANIC_MESSAGE_BYTES: usize = 64 << 10;

/// `message`, cut to [`PANIC_MESSAGE_BYTES`] (at a character's start) and
/// saying so if it is longer.
fn shortened(message: &str) -> String {
    if message.len() <= PANIC_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = PANIC_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &message[..end], message.len())
}

/// How [`Process::start`] makes the child that runs an entry: Python's
/// start methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// A fresh run of this program (`/proc/self/exe`): sound whatever
    /// threads this process has, and the slowest (the program is loaded
    /// and started again).
    #[default]
    Spawn,
    /// A fork of the [`forkserver`], a single-threaded
    /// process this program started once: sound whatever threads this
    /// process has, and faster than spawn.
    Forkserver,
    /// A fork of this process: the fastest, and refused with
    /// [`Error::ThreadedFork`] when this process has other threads unless
    /// [`Process::allow_threads`] accepts the hazard.
    Fork,
}

impl Process {
    /// Starts a child by `method` that runs `entry` on `argument`, with the
    /// handles given to [`pass`](Self::pass) (taken back with
    /// [`inherited`]). [`Error::NotFound`] if the entry is not registered.
    ///
    /// ```
    /// # use ipc_core::process::Process;
    /// use ipc_core::spawn::StartMethod;
    /// fn add(pair: (i64, i64)) -> i64 {
    ///     pair.0 + pair.1
    /// }
    /// # ipc_core::spawn::init();
    /// // Fork runs in this process's copy: no re-run of `main` needed.
    /// let child = Process::new().start(StartMethod::Fork, ipc_core::entry!(add), &(2, 3))?;
    /// assert_eq!(child.join()?, 5);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn start<A: Serialize, R: DeserializeOwned>(
        self,
        method: StartMethod,
        entry: Entry<A, R>,
        argument: &A,
    ) -> Result<Spawned<R>> {
        refuse_without_init()?;
        if registered(entry.name).is_none() {
            return Err(unknown(entry.name));
        }
        let mut bytes = Vec::new();
        codec::encode_into(argument, &mut bytes)?;
        let (ours, theirs) = UnixStream::pair()?;
        let mut ours = Connection::new(FdStream::new(OwnedFd::from(ours))?);
        let theirs = Connection::new(FdStream::new(OwnedFd::from(theirs))?);
        let process = self.pass(SOCKET_KEY, &theirs)?;
        let name = entry.name;
        let child = match method {
            StartMethod::Spawn => process.exec(reexec(name))?,
            StartMethod::Forkserver => forkserver::fork_child(&process, name)?,
            StartMethod::Fork => process.fork_with_handles(|| child_main(name))?,
        };
        drop(theirs);
        // The child may be gone already (a crash at start): its status
        // says more than the send's error would.
        let _ = ours.send_bytes(&bytes);
        Ok(Spawned {
            child,
            socket: ours,
            _result: PhantomData,
        })
    }

    /// Starts a child that is a fresh run of this program and runs `entry`
    /// on `argument`: [`start`](Self::start) with [`StartMethod::Spawn`].
    /// Sound whatever threads this process has.
    ///
    /// ```no_run
    /// # use ipc_core::process::Process;
    /// fn add(pair: (i64, i64)) -> i64 {
    ///     pair.0 + pair.1
    /// }
    /// let child = Process::new().spawn(ipc_core::entry!(add), &(2, 3))?;
    /// assert_eq!(child.join()?, 5);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn spawn<A: Serialize, R: DeserializeOwned>(
        self,
        entry: Entry<A, R>,
        argument: &A,
    ) -> Result<Spawned<R>> {
        self.start(StartMethod::Spawn, entry, argument)
    }
}

/// A child started by [`Process::spawn`], whose entry returns an `R`.
///
/// Dropping it without joining kills and reaps the child.
#[derive(Debug)]
pub struct Spawned<R> {
    pub(crate) child: Child,
    pub(crate) socket: Connection<FdStream>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Spawned<R> {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits for the entry's result. [`Error::Child`] if the child failed
    /// to deliver one (a panic, a codec error, an exit or a signal).
    pub fn join(self) -> Result<R> {
        self.join_until(Deadline::Never)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`
    /// ([`Error::Timeout`]; the child is then killed and reaped).
    pub fn join_timeout(self, timeout: Duration) -> Result<R> {
        self.join_until(Deadline::after(timeout))
    }

    /// Kills the child.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()
    }

    fn join_until(mut self, deadline: Deadline) -> Result<R> {
        let outcome = match deadline.remaining() {
            None => self.socket.recv_bytes(),
            Some(left) => self.socket.recv_bytes_timeout(left),
        };
        let outcome = match outcome {
            Err(e) if !e.is_closed() => return Err(e),
            outcome => outcome,
        };
        // Once the result is in, or the socket closed, the child is exiting.
        let status = self
            .child
            .join_timeout(deadline.remaining().unwrap_or(REAP));
        conclude(outcome, status)
    }
}

/// The result of a join, from what the child's socket gave (a result, or
/// its close) and how the child ended (`None`: not yet).
pub(crate) fn conclude<R: DeserializeOwned>(
    outcome: Result<Vec<u8>>,
    status: Result<Option<ExitStatus>>,
) -> Result<R> {
    let failure = match outcome {
        Ok(bytes) => {
            let delivered: std::result::Result<Vec<u8>, ChildFailure> = codec::decode(&bytes)?;
            match delivered {
                Ok(result) => {
                    status?;
                    return codec::decode(&result);
                }
                Err(failure) => failure,
            }
        }
        Err(e) if e.is_closed() => {
            let status = status?.ok_or(Error::Timeout)?;
            match (status.code(), status.signal()) {
                (Some(code), _) => ChildFailure::Exited(code),
                (None, Some(signal)) => ChildFailure::Signaled(signal),
                (None, None) => ChildFailure::Exited(-1),
            }
        }
        Err(e) => return Err(e),
    };
    Err(Error::Child(Box::new(failure)))
}

impl<R> Waitable for Spawned<R> {
    /// Ready once the child has exited (or, for a forkserver's child, once
    /// the server has reported its exit): a parent can wait for results on
    /// its queues and for its children to end in one
    /// [`wait`](crate::wait) call.
    fn wait_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.child.wait_fd()
    }

    fn ready_without_waiting(&self) -> bool {
        self.child.ready_without_waiting()
    }
}

/// How long a join without a deadline waits for a child that closed its
/// socket to be reaped (it exits right after).
const REAP: Duration = Duration::from_secs(10);
