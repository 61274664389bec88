//! Pinning to one CPU for the length of a measurement.
//!
//! Ping-pong runs with both processes pinned to the same CPU by default. On
//! a virtual machine, a round trip between two CPUs that go idle waits for
//! the hypervisor to wake the other virtual CPU (about 60 µs here, against
//! 3 µs on one CPU), and whether the scheduler puts the two processes on one
//! CPU or two flips with whatever else runs on the machine. Pinned, the
//! benchmark measures the IPC path rather than the scheduler's mood.
//! Throughput runs unpinned, since sender and receiver should overlap.
//! Locked increments from two processes pin them to two different CPUs
//! (see [`other_cpu`]), so that they really contend: left alone, the
//! scheduler often time-slices both on one CPU, and the "contended" rate
//! becomes the uncontended one. The queue ping-pongs (put→get round trips
//! through two queues, blocking or awaited) are pinned the same way, one
//! process per CPU: their goals are stated for two processes that each
//! have a core. So is the wake-up ping-pong (release → acquire over two
//! semaphores), so that each process really sleeps until the other wakes
//! it.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::bench::Result;

/// The CPU ping-pong is pinned to: the highest one this process may use.
pub fn default_cpu() -> Option<usize> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
    (0..CpuSet::count())
        .rev()
        .find(|&cpu| allowed.is_set(cpu).unwrap_or(false))
}

/// Another CPU this process may use than `cpu` (the lowest one), for the
/// second process of the contended increments.
pub fn other_cpu(cpu: usize) -> Option<usize> {
    let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
    (0..CpuSet::count()).find(|&c| c != cpu && allowed.is_set(c).unwrap_or(false))
}

/// Runs `f` with this thread pinned to `cpu` (if any), then restores the
/// affinity it had.
pub fn pinned<T>(cpu: Option<usize>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(cpu) = cpu else {
        return f();
    };
    let me = Pid::from_raw(0);
    let before = sched_getaffinity(me)?;
    let mut only = CpuSet::new();
    only.set(cpu)?;
    sched_setaffinity(me, &only)?;
    let result = f();
    sched_setaffinity(me, &before)?;
    result
}

/// Pins process `pid` (its main thread) to `cpu`, or lets it run wherever
/// this process may when `cpu` is `None`: for a peer that cannot pin itself.
pub fn place(pid: u32, cpu: Option<usize>) -> Result {
    let allowed = match cpu {
        Some(cpu) => {
            let mut only = CpuSet::new();
            only.set(cpu)?;
            only
        }
        None => sched_getaffinity(Pid::from_raw(0))?,
    };
    let pid = i32::try_from(pid).map_err(|_| format!("no such process id {pid}"))?;
    sched_setaffinity(Pid::from_raw(pid), &allowed)?;
    Ok(())
}
