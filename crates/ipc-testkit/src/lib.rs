//! Helpers shared by the test suites of the ipc workspace, kept in one
//! place instead of copied between crates' `tests/` directories: bounded
//! waits ([`PATIENCE`], [`LONG`], [`SHORT`], [`join`], [`join_ok`],
//! [`wait_until_asleep`], [`assert_waited`]), deterministic test bytes
//! ([`pattern`], [`Rng`]), names unique to the test process ([`name`],
//! [`unique`], [`temp_path`]), the check that a test left nothing in
//! `/dev/shm` ([`leftovers`], [`assert_no_leftovers`], [`exists`]), and a
//! private redis-server for the broker's tests ([`RedisServer`]).
//!
//! It depends on `ipc-core` and std only, so every crate of the workspace
//! (ipc-shm and ipc-socket included) can take it as a dev-dependency
//! without a dependency cycle. It is internal (`publish = false`).
//!
//! Every wait here is bounded, so a bug makes a test fail instead of hang.
//!
//! ```
//! let segment = ipc_testkit::name();
//! assert!(!ipc_testkit::exists(&segment));
//! ipc_testkit::assert_no_leftovers();
//! ```

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipc_core::process::Child;

mod redis;
pub use redis::RedisServer;

/// How long a test waits for something that should happen soon: 10 s.
/// Generous for a loaded machine; a bug then fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A more generous bound, 30 s, for waits that should end at once but
/// cross forked processes that fight over shared locks.
pub const LONG: Duration = Duration::from_secs(30);

/// The timeout, 100 ms, of checks that a timed wait returns on time.
pub const SHORT: Duration = Duration::from_millis(100);

/// How much later than its timeout a timed wait may return in
/// [`assert_waited`].
const LATE: Duration = Duration::from_secs(2);

/// Polls `future` once with a waker that does nothing and drops it: a
/// cancellation at a point where it may have done part of its work.
/// `None` if it was not ready then.
pub fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// A single-threaded tokio runtime with its timer and, where the tokio
/// build has it, its IO driver: what the async tests run on. One thread, so
/// an await that blocked would stall the whole test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Waits (at most [`PATIENCE`]) for `child` to exit and returns its status;
/// panics if it does not exit in time.
///
/// ```
/// let mut child = ipc_core::process::Process::new().fork(|| 3)?;
/// assert_eq!(ipc_testkit::join(&mut child).code(), Some(3));
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn join(child: &mut Child) -> ExitStatus {
    match child.join_timeout(PATIENCE) {
        Ok(Some(status)) => status,
        Ok(None) => panic!("child {} did not exit within {PATIENCE:?}", child.pid()),
        Err(e) => panic!("joining child {}: {e:?}", child.pid()),
    }
}

/// Waits (at most [`PATIENCE`]) for `child` to exit and asserts that it
/// exited with 0.
///
/// ```
/// let mut child = ipc_core::process::Process::new().fork(|| ())?;
/// ipc_testkit::join_ok(&mut child);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn join_ok(child: &mut Child) {
    let status = join(child);
    assert!(status.success(), "child {} failed: {status:?}", child.pid());
}

/// Asserts that a timed wait started at `start` with `timeout` returned no
/// earlier than its timeout, and not more than 2 s late.
///
/// ```
/// let start = std::time::Instant::now();
/// std::thread::sleep(ipc_testkit::SHORT);
/// ipc_testkit::assert_waited(start, ipc_testkit::SHORT);
/// ```
pub fn assert_waited(start: Instant, timeout: Duration) {
    let took = start.elapsed();
    assert!(
        took >= timeout,
        "returned after {took:?}, before {timeout:?}"
    );
    assert!(took < timeout + LATE, "took {took:?}");
}

/// Waits until process `pid` sleeps in the kernel (a futex wait, what a
/// blocked lock or getter does), looking at `/proc/<pid>/wchan` and, where
/// the kernel hides that, at the process state (`S`); panics after
/// [`PATIENCE`].
///
/// ```
/// use ipc_core::process::Process;
/// // A child that parks (a futex wait) for ever.
/// let mut child = Process::new().fork(|| -> i32 {
///     loop {
///         std::thread::park();
///     }
/// })?;
/// ipc_testkit::wait_until_asleep(child.pid());
/// child.kill()?;
/// child.join()?;
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn wait_until_asleep(pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("futex") {
            return;
        }
        // Kernels that hide wait channels show "0": fall back to the
        // process state, `S` (sleeping).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if (wchan.is_empty() || wchan == "0") && state == Some('S') {
            return;
        }
        std::thread::yield_now();
    }
    panic!("process {pid} never went to sleep on a futex");
}

/// `len` bytes of a pseudo-random pattern that depends on `seed`, so a
/// message that arrives cut, shifted or mixed up does not compare equal.
///
/// ```
/// use ipc_testkit::pattern;
/// assert_eq!(pattern(1, 1000), pattern(1, 1000));
/// assert_ne!(pattern(1, 1000), pattern(2, 1000));
/// assert_eq!(pattern(1, 1000)[..10], pattern(1, 10)[..]);
/// ```
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = state.to_le_bytes();
        let take = word.len().min(len - out.len());
        out.extend_from_slice(&word[..take]);
    }
    out
}

/// A small xorshift64 generator: reproducible from its seed, which the
/// tests print so that a failure can be replayed.
///
/// ```
/// let mut rng = ipc_testkit::Rng::new(42);
/// assert!(rng.below(10) < 10);
/// ```
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed` (0, which xorshift cannot leave,
    /// counts as 1).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 1 } else { seed })
    }

    /// A generator seeded from `IPC_TEST_SEED` if set, else from the clock
    /// and the pid so that runs differ; prints the seed for replay.
    pub fn from_env_or_clock() -> Rng {
        let seed = std::env::var("IPC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("the clock is after 1970")
                    .as_nanos() as u64;
                t ^ (u64::from(std::process::id()) << 32) | 1
            });
        println!("random seed: IPC_TEST_SEED={seed}");
        Rng::new(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (which must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A fresh name `<prefix>_<pid>_<n>`, unique to this process and call.
///
/// ```
/// let a = ipc_testkit::unique("ipct_sock");
/// assert!(a.starts_with(&format!("ipct_sock_{}_", std::process::id())));
/// assert_ne!(a, ipc_testkit::unique("ipct_sock"));
/// ```
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

thread_local! {
    /// The names [`name`] made on this thread: a test's, since the test
    /// harness runs each test on a thread of its own (and the tests of one
    /// binary at the same time, so a process-wide look would see the
    /// segments of the tests beside it).
    static NAMED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A fresh segment name for this test, `ipct_<pid>_<n>`: the names
/// [`leftovers`] looks for.
///
/// ```
/// let a = ipc_testkit::name();
/// assert!(a.starts_with(&format!("ipct_{}_", std::process::id())));
/// assert_ne!(a, ipc_testkit::name());
/// ```
pub fn name() -> String {
    let name = unique("ipct");
    NAMED.with(|named| named.borrow_mut().push(name.clone()));
    name
}

/// A path in the temporary directory that no other process or call uses:
/// `<tmp>/<prefix>_<pid>_<n>` (for a Unix socket, say).
///
/// ```
/// let path = ipc_testkit::temp_path("ipct_sock");
/// assert!(path.starts_with(std::env::temp_dir()));
/// ```
pub fn temp_path(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(unique(prefix))
}

/// The `/dev/shm` entries named by [`name`] in this process that are still
/// there (`ipct_<pid>_…`), sorted: every test's of this process, including
/// those running beside this one.
///
/// ```
/// assert!(ipc_testkit::leftovers().is_empty());
/// ```
pub fn leftovers() -> Vec<String> {
    let prefix = format!("ipct_{}_", std::process::id());
    shm_entries(|entry| entry.starts_with(&prefix))
}

/// The `/dev/shm` entries named by [`name`] on this thread (this test) that
/// are still there, or named after one of them (`ipct_<pid>_<n>…`), sorted.
///
/// ```
/// let _ = ipc_testkit::name();
/// assert!(ipc_testkit::own_leftovers().is_empty());
/// ```
pub fn own_leftovers() -> Vec<String> {
    let named = NAMED.with(|named| named.borrow().clone());
    // `ipct_7_1` names `ipct_7_1_a` but not `ipct_7_12`.
    let after = |entry: &str, name: &str| {
        entry
            .strip_prefix(name)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    shm_entries(|entry| named.iter().any(|name| after(entry, name)))
}

/// The `/dev/shm` entries `wanted` picks, sorted.
fn shm_entries(wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|entry| wanted(entry))
        .collect();
    left.sort();
    left
}

/// Fails the test if it left segments in `/dev/shm`: any of this process
/// ([`leftovers`]) under nextest, which runs each test in a process of its
/// own, else those named on this thread ([`own_leftovers`]), since the
/// tests running beside it in the same process are theirs to check.
///
/// ```
/// ipc_testkit::assert_no_leftovers();
/// ```
pub fn assert_no_leftovers() {
    let left = if std::env::var_os("NEXTEST").is_some() {
        leftovers()
    } else {
        own_leftovers()
    };
    assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
}

/// Whether `/dev/shm/<name>` exists.
///
/// ```
/// assert!(!ipc_testkit::exists(&ipc_testkit::name()));
/// ```
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}
