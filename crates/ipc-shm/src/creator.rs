//! Who created (or now owns) a named object, recorded in its header so
//! that any process can tell whether that process is still alive: the pid
//! and the process's start time, so that a pid the kernel reused for
//! another process is not mistaken for the creator.
//!
//! The identity is one 64-bit word (pid in the high half, the low 32 bits
//! of the start time in clock ticks since boot in the low half), so that an
//! adopter replaces it with one compare-and-swap. Two processes share a
//! word only if they have the same pid and started a multiple of 2^32
//! ticks (about 16 months at 100 Hz) apart.
//!
//! Liveness is read from `/proc/<pid>/stat`, as `ps` does; a process in
//! another pid namespace than the reader's is seen as dead.

use std::sync::atomic::{AtomicU64, Ordering};

/// The identity word of no process (a segment whose creator has not yet
/// written it).
pub(crate) const NOBODY: u64 = 0;

/// The calling process's identity word.
pub(crate) fn me() -> u64 {
    // Cached with the pid it belongs to: a forked child has a new one.
    static CACHE: AtomicU64 = AtomicU64::new(NOBODY);
    let pid = std::process::id();
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != NOBODY && (cached >> 32) as u32 == pid {
        return cached;
    }
    // Our own entry always exists; a /proc that cannot be read gives a
    // start time of 0, which still names this pid.
    let start = start_time(pid).unwrap_or(0);
    let id = identity(pid, start);
    CACHE.store(id, Ordering::Relaxed);
    id
}

/// The pid an identity word names.
pub(crate) fn pid(id: u64) -> u32 {
    (id >> 32) as u32
}

/// Whether the process an identity word names is alive (a zombie is not).
pub(crate) fn is_alive(id: u64) -> bool {
    let pid = pid(id);
    if id == NOBODY || pid == 0 {
        return false;
    }
    match start_time(pid) {
        Some(start) => identity(pid, start) == id,
        None => false,
    }
}

fn identity(pid: u32, start: u64) -> u64 {
    (u64::from(pid) << 32) | (start & 0xffff_ffff)
}

/// The start time of a live (not zombie) process, in clock ticks since
/// boot: field 22 of `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything,
    // spaces and parentheses included: the fields after it start after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state: Z (zombie) and X (dead) are gone for us.
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Fields 4 to 21, then the start time.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_child_is_not() {
        let me = me();
        assert_eq!(pid(me), std::process::id());
        assert!(is_alive(me));
        assert!(!is_alive(NOBODY));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let id = identity(pid, start_time(pid).unwrap_or(0));
        child.wait().unwrap();
        assert!(!is_alive(id));
        // The same pid with another start time is another process.
        assert!(!is_alive(me ^ 1));
    }
}
