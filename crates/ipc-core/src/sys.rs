//! The thin unsafe edge of ipc-core: the few system calls that nix does not
//! wrap safely, made through rustix where it wraps them and raw otherwise.
//! Everything else in the crate is safe code; each function here has a safe
//! signature whose contract is stated in its doc comment.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use rustix::io::Errno;
use rustix::process::PidfdFlags;

/// `pidfd_open(2)`: a descriptor that refers to the process `pid` itself,
/// immune to pid reuse, and readable once the process has exited.
///
/// The caller must be the parent of `pid` and must not have reaped it yet;
/// then `pid` cannot have been reused by another process.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // Pid 0 or a negative one names no single process.
    let pid = (pid > 0)
        .then(|| rustix::process::Pid::from_raw(pid))
        .flatten()
        .ok_or(Errno::INVAL)?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// `pidfd_send_signal(2)`: signals the process the pidfd refers to, never a
/// process that happens to reuse its pid.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> io::Result<()> {
    // Every signal nix names is one rustix names too.
    let signal = rustix::process::Signal::from_named_raw(signal as i32).ok_or(Errno::INVAL)?;
    Ok(rustix::process::pidfd_send_signal(pidfd, signal)?)
}

/// What `fork` returned in this process.
pub(crate) enum Forked {
    /// We are the parent; the child has this pid.
    Parent(libc::pid_t),
    /// We are the child.
    Child,
}

/// `fork(2)`.
///
/// In the child only async-signal-safe work is sound until `exec` or `_exit`
/// if the parent had other threads; `process::Process::fork` documents the
/// rule for users and does nothing else before handing over to the closure.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the hazard
    // after it (locks held by threads that do not exist in the child) is the
    // documented contract of `Process::fork`, which is the only caller.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Points each descriptor in `targets` at `dead` (`dup2`), so the file it
/// referred to is released in this process while the number stays taken:
/// an object that still holds the number gets errors (a dead socket reads
/// EOF and refuses writes) and closes it harmlessly when dropped.
/// Async-signal-safe: it only makes system calls.
pub(crate) fn replace_with_dead(dead: BorrowedFd<'_>, targets: &[RawFd]) {
    for &fd in targets {
        // SAFETY: dup2 only changes the descriptor table; `dead` is open
        // (borrowed) and `fd` is a number this process's objects may still
        // name, which is exactly why it is replaced rather than closed.
        unsafe { libc::dup2(dead.as_raw_fd(), fd) };
    }
}

/// Closes every descriptor from 3 up that is not in `keep` (sorted,
/// deduplicated). Async-signal-safe: it only makes system calls.
pub(crate) fn close_all_except(keep: &[RawFd]) {
    let mut first: libc::c_uint = 3;
    for &fd in keep.iter().filter(|&&fd| fd >= 3) {
        let fd = fd as libc::c_uint;
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // Raw: rustix has no wrapper for close_range.
    // SAFETY: close_range only closes descriptors. It is called in a freshly
    // forked child on descriptors that the child's code is told not to use
    // (`Process::fork` docs); it touches no memory.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if ret < 0 {
        // Kernels before 5.9 lack close_range: close one by one, bounded by
        // the descriptor limit.
        let limit = fd_limit().min(u64::from(last) + 1);
        for fd in u64::from(first)..limit {
            // SAFETY: as above; closing a descriptor that is not open is EBADF.
            unsafe { libc::close(fd as libc::c_int) };
        }
    }
}

fn fd_limit() -> u64 {
    // SAFETY: sysconf reads a limit and touches no memory of ours.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if max > 0 {
        max as u64
    } else {
        1024
    }
}

/// `_exit(2)`: ends the process without running atexit handlers or
/// destructors, which must not run in a forked child of a threaded parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Makes this process ignore `SIGINT` (`ignore`), or take its default
/// action again: a forkserver ignores the Ctrl-C meant for the program's
/// foreground processes, as Python's does, and its children get the
/// default back.
pub(crate) fn ignore_interrupts(ignore: bool) {
    let handler = if ignore {
        nix::sys::signal::SigHandler::SigIgn
    } else {
        nix::sys::signal::SigHandler::SigDfl
    };
    // SAFETY: SIG_IGN and SIG_DFL install no handler code, so nothing runs
    // in signal context.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGINT, handler) };
}

/// `atexit(3)`: runs `handler` when the process exits normally (`exit`,
/// or returning from `main`), not on `_exit` or a fatal signal.
pub(crate) fn at_exit(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: atexit only stores the pointer; `handler` is a function of
    // this program, so it is valid for the whole life of the process.
    match unsafe { libc::atexit(handler) } {
        0 => Ok(()),
        _ => Err(io::Error::other("atexit could not register a handler")),
    }
}

/// Takes ownership of a descriptor number that this process inherited at
/// exec time, after checking that it is open.
///
/// Nothing else in this process may own `fd`: the caller takes each
/// inherited handle at most once (`process::inherited` removes it from the
/// table it reads).
pub(crate) fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // Also checks that the descriptor is open.
    set_cloexec(fd)?;
    // SAFETY: the descriptor is open (checked above) and, by the contract of
    // this function, owned by nothing else in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The device and inode of the file behind a descriptor number, if the
/// number is open.
pub(crate) fn identity_of_number(fd: RawFd) -> Option<(u64, u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat only writes into `stat`, which is valid for writes; a
    // number that is not open gives EBADF and touches nothing.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    Some((stat.st_dev, stat.st_ino))
}

/// Sets close-on-exec on a descriptor number this process inherited, so a
/// handle it never takes does not leak into its own children.
pub(crate) fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a plain number only changes descriptor flags; it
    // touches no memory, and a number that is not open gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers a hook that runs in the child between `fork` and `exec` and
/// clears close-on-exec on `fds`, so exactly those descriptors survive exec.
pub(crate) fn inherit_across_exec(command: &mut std::process::Command, fds: Vec<RawFd>) {
    use std::os::unix::process::CommandExt;
    let hook = move || {
        for &fd in &fds {
            // SAFETY: fcntl is async-signal-safe and touches no memory; `fd`
            // was borrowed from a live handle by `Process::exec`, which keeps
            // the handle alive until spawn returns.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls fcntl, which is async-signal-safe, and
    // allocates nothing (the vector was built before the fork).
    unsafe { command.pre_exec(hook) };
}

/// Writes to a pipe without letting `SIGPIPE` kill the process when the
/// reader has gone: the signal is blocked for this thread during the write
/// and, if the write raised it, consumed before it is unblocked. `EPIPE` is
/// returned instead (or, when the reader left in the middle of the write,
/// the count written so far; the next write then gets `EPIPE`).
pub(crate) fn write_pipe_no_sigpipe(
    fd: BorrowedFd<'_>,
    bufs: &[io::IoSlice<'_>],
) -> io::Result<usize> {
    let mut sigpipe = SigSet::empty();
    sigpipe.add(Signal::SIGPIPE);
    let already_pending = sigpipe_pending();
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigpipe), Some(&mut old))?;
    let result = nix::sys::uio::writev(fd, bufs).map_err(io::Error::from);
    // A reader that leaves while a blocking write is under way makes the
    // kernel raise SIGPIPE and return the partial count, not EPIPE.
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let may_have_raised = match &result {
        Err(e) => e.raw_os_error() == Some(libc::EPIPE),
        Ok(written) => *written < total,
    };
    if may_have_raised && !already_pending {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the set and the timeout are valid for the call; a null
        // siginfo pointer is allowed. This consumes the SIGPIPE our own
        // write raised, which is pending because it is blocked; with none
        // pending it returns EAGAIN at once.
        unsafe { libc::sigtimedwait(sigpipe.as_ref(), std::ptr::null_mut(), &zero) };
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    result
}

/// Whether `SIGPIPE` is ignored in this process (Rust programs and CPython
/// ignore it from `main`; a C host may not).
pub(crate) fn sigpipe_ignored() -> bool {
    let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `current` is valid for writes.
    let ret = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), current.as_mut_ptr()) };
    // SAFETY: sigaction succeeded, so it initialised `current`.
    ret == 0 && unsafe { current.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// Whether a `SIGPIPE` is already pending for this thread or process, in
/// which case a write must not consume it.
fn sigpipe_pending() -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is valid for writes; sigpending fills it in.
    let ret = unsafe { libc::sigpending(set.as_mut_ptr()) };
    // SAFETY: sigpending succeeded, so `set` is initialised; sigismember
    // only reads it.
    ret != 0 || unsafe { libc::sigismember(set.as_ptr(), libc::SIGPIPE) } == 1
}

/// A descriptor registered with tokio's reactor by [`register`]; only
/// `register` makes one.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct Registered(OwnedFd);

#[cfg(feature = "tokio")]
impl std::os::fd::AsFd for Registered {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(feature = "tokio")]
impl AsRawFd for Registered {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers `fd`, which the registration then owns, with the current
/// tokio runtime's reactor, for readiness of `interest`.
#[cfg(feature = "tokio")]
pub(crate) fn register(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<Registered>> {
    // SAFETY: tokio requires the registered descriptor to stay open, and
    // the same, until the AsyncFd is dropped. The AsyncFd owns it, and its
    // one user (`tokio::Readiness`) never takes `&mut` access to it, so it
    // is closed only when the AsyncFd is dropped, after deregistering it.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(Registered(fd), interest) };
    registered.map_err(io::Error::from)
}
