//! Helpers shared by the integration tests: unique segment names
//! (`ipct_<pid>_<counter>`) and the check that a test left nothing behind
//! in `/dev/shm`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh name for this test process: `ipct_<pid>_<counter>`.
pub fn name() -> String {
    format!(
        "ipct_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `/dev/shm` entries this process created and did not remove.
pub fn leftovers() -> Vec<String> {
    let prefix = format!("ipct_{}_", std::process::id());
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Fails the test if this process left segments in `/dev/shm`.
pub fn assert_no_leftovers() {
    let left = leftovers();
    assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
}

/// Whether `/dev/shm/<name>` exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// A generous bound for waits that should end at once.
pub const LONG: Duration = Duration::from_secs(30);

/// A small xorshift generator seeded from the clock and the pid, so that
/// kill moments differ from run to run; the seed is printed for replay.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("IPC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                t ^ (u64::from(std::process::id()) << 32) | 1
            });
        println!("random seed: IPC_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Waits until process `pid` sleeps in the kernel (a futex wait), looking
/// at `/proc/<pid>/wchan` and, where the kernel hides that, at the process
/// state; bounded by [`LONG`].
pub fn wait_until_asleep(pid: u32) {
    let deadline = std::time::Instant::now() + LONG;
    while std::time::Instant::now() < deadline {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("futex") {
            return;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if (wchan.is_empty() || wchan == "0") && state == Some('S') {
            return;
        }
        std::thread::yield_now();
    }
    panic!("process {pid} never went to sleep");
}
