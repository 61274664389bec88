//! The forkserver start method: one server process, started by
//! re-executing this program (so it is sound from a parent with any number
//! of threads) and single-threaded from then on, forks a child for each
//! request. A child starts as a copy of a small idle process, which is
//! faster than a fresh run of the program and as safe as one.
//!
//! Use it through [`Process::start`] with
//! [`StartMethod::Forkserver`](crate::spawn::StartMethod::Forkserver); the
//! server starts on first use, or when [`start`] is called.
//!
//! ```
//! use ipc_core::process::Process;
//! use ipc_core::spawn::StartMethod;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> ipc_core::Result<()> {
//!     ipc_core::spawn::init();
//!     let child = Process::new().start(StartMethod::Forkserver, ipc_core::entry!(square), &7)?;
//!     assert_eq!(child.join()?, 49);
//!     // Optional: the server also ends when this process does.
//!     ipc_core::forkserver::stop()?;
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//!
//! The parent holds one end of a `SOCK_SEQPACKET` pair, the server the
//! other. A request is one message: the entry's name and the handle table
//! (as [`Process::exec`] writes it, with positions for descriptor
//! numbers), carrying by `SCM_RIGHTS` a socket for the child's exit status
//! and every passed descriptor. The server forks; the child closes every
//! descriptor but the passed ones, installs the handle table so that
//! [`inherited`] works as in a spawned child,
//! runs the entry as [`init`](crate::spawn::init) would and exits. The
//! server answers with the child's pid and a pidfd it opened before the
//! child could be reaped (so it names that process and no other). It
//! polls its children's pidfds, reaps each one that exits and writes its
//! wait status to the status socket, which the parent's
//! [`Child`] waits on and reads. The server ends once the parent's end is
//! closed (by [`stop`], or by this process ending) and its children have
//! exited.

use std::io::{IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::wait::WaitPidFlag;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};

use crate::process::{
    inherited, install_handles, wait_raw, Child, Handle, Inheritable, Inherited, Process,
    HANDLES_ENV,
};
use crate::sys::{self, Forked};
use crate::wait::{poll_readable, poll_until, Waitable};
use crate::{codec, spawn, Deadline, Error, Result};
use crate::{wait_fds, Interest};

/// The entry name that makes a re-executed child the forkserver.
pub(crate) const SERVER_ENTRY: &str = "ipc_core::forkserver::server";
/// The handle key of the server's end of the request socket.
const CONTROL_KEY: &str = "ipc-forkserver";
/// The largest request the server reads: an entry name and a handle table
/// are far smaller.
const MAX_REQUEST: usize = 64 * 1024;
/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;
/// What the server sends once it is ready for requests.
const READY: &[u8] = b"ipc-forkserver ready";
/// How long the parent waits for the server to answer a request: a fork
/// takes well under a millisecond, so only a stuck server takes this long.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request: run `entry` in a new child whose handle table is `handles`,
/// descriptor numbers in it being positions among the passed descriptors,
/// counted from 1 (position 0 is the status socket).
#[derive(Serialize, Deserialize)]
struct Request {
    entry: String,
    handles: String,
}

/// The server's answer: the child's pid (with its pidfd attached), or why
/// there is no child.
type Reply = std::result::Result<i32, String>;

/// The running server, as the parent sees it.
struct Server {
    requests: OwnedFd,
    process: Child,
    /// The process that started it: a child forked from that process has a
    /// copy of this value, and a server of its own to start.
    owner: u32,
}

/// Servers that no longer take requests (one whose request failed), kept
/// until they exit (once their children have) so they are reaped here and
/// their children's exits still reported.
static RETIRED: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn retired() -> MutexGuard<'static, Vec<Child>> {
    RETIRED.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// Stops sending it requests; it exits once its children have.
    fn retire(self) {
        drop(self.requests);
        retired().push(self.process);
    }
}

/// Reaps the retired servers that have exited.
fn reap_retired() {
    retired().retain_mut(|server| matches!(server.try_join(), Ok(None)));
}

/// The running server of this process, taken out of `slot`; a copy
/// inherited from the process this one was forked from is left alone.
fn take_ours(slot: &mut Option<Server>) -> Option<Server> {
    match slot.take() {
        Some(server) if server.owner == std::process::id() => Some(server),
        Some(inherited) => {
            // Its descriptors are not this process's to close, nor its
            // process to kill.
            std::mem::forget(inherited);
            None
        }
        None => None,
    }
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

fn server() -> MutexGuard<'static, Option<Server>> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long this process, as it exits, waits for the server to end.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Ends the server as this process exits, so it is reaped here rather than
/// left to whatever adopts orphans (which in a container may never reap).
extern "C" fn stop_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        // A thread that held the lock (or a forked child's copy of a held
        // lock) means the state is not ours to touch now.
        let mut server = match SERVER.try_lock() {
            Ok(server) => server,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let mut servers: Vec<Child> = std::mem::take(&mut *retired());
        if let Some(Server {
            requests, process, ..
        }) = take_ours(&mut server)
        {
            drop(requests);
            servers.push(process);
        }
        // Each ends once its children have; one whose children outlive the
        // grace is left to go on reaping them rather than killed.
        let deadline = Deadline::after(EXIT_GRACE);
        for mut process in servers {
            let left = deadline.remaining().unwrap_or_default();
            if !matches!(process.join_timeout(left), Ok(Some(_))) {
                std::mem::forget(process);
            }
        }
    });
}

/// Starts the forkserver now if it is not running, so that the first
/// child does not pay for it (about the cost of one spawn). Starting it is
/// sound whatever threads this process has.
///
/// ```
/// ipc_core::spawn::init();
/// ipc_core::forkserver::start()?;
/// assert!(ipc_core::forkserver::server_pid().is_some());
/// ipc_core::forkserver::stop()?;
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn start() -> Result<()> {
    let mut server = server();
    let ours = match take_ours(&mut server) {
        Some(running) => running,
        None => Server::launch()?,
    };
    *server = Some(ours);
    Ok(())
}

/// The forkserver's process id, if it is running.
pub fn server_pid() -> Option<u32> {
    server()
        .as_ref()
        .filter(|s| s.owner == std::process::id())
        .map(|s| s.process.pid())
}

/// Stops the forkserver, if it is running: closes the request socket and
/// waits for the server to exit, which it does once every child it started
/// has exited. A later request starts a new server. Without this call the
/// server ends when this process does.
pub fn stop() -> Result<()> {
    let stopped = take_ours(&mut server());
    if let Some(Server {
        requests,
        mut process,
        ..
    }) = stopped
    {
        drop(requests);
        process.join()?;
    }
    Ok(())
}

/// Asks the server for a child that runs the registered entry `entry` with
/// the handles given to `process`: the forkserver arm of
/// [`Process::start`].
pub(crate) fn fork_child(process: &Process, entry: &str) -> Result<Child> {
    let (status_ours, status_theirs) = UnixStream::pair()?;
    let mut fds = vec![status_theirs.as_fd()];
    fds.extend(process.descriptors());
    if fds.len() > MAX_FDS {
        return Err(Error::InvalidArgument(
            "a forkserver child can be passed at most 252 descriptors",
        ));
    }
    let mut request = Vec::new();
    let handles = process.handle_spec(|i| i as RawFd + 1)?;
    codec::encode_into(
        &Request {
            entry: entry.to_owned(),
            handles,
        },
        &mut request,
    )?;
    if request.len() > MAX_REQUEST {
        return Err(Error::InvalidArgument(
            "the handle table is too large for a forkserver request",
        ));
    }
    reap_retired();
    let mut server = server();
    // A server that has died since the last request (killed, say) is
    // replaced, and so is one whose socket refuses the request: it started
    // nothing. One that fails after taking the request fails that request,
    // since it may have forked the child already. A replaced server is
    // retired, not killed: the children it started still get their exits
    // reported.
    for attempt in 0..2 {
        let mut running = match take_ours(&mut server) {
            Some(running) => running,
            None => Server::launch()?,
        };
        if !running.process.is_alive()? {
            running.retire();
            running = Server::launch()?;
        }
        match running.request(&request, &fds) {
            Ok((pid, pidfd)) => {
                *server = Some(running);
                return Ok(Child::served(pid, pidfd, status_ours.into()));
            }
            Err(Failed::Unsent(_)) if attempt == 0 => running.retire(),
            Err(Failed::Unsent(e) | Failed::Broken(e)) => {
                running.retire();
                return Err(e);
            }
            Err(Failed::Refused(why)) => {
                *server = Some(running);
                return Err(Error::Io(std::io::Error::other(format!(
                    "the forkserver could not start a child: {why}"
                ))));
            }
        }
    }
    unreachable!("the second attempt returns")
}

/// Why a request has no child. In each case but `Refused` the server is
/// dropped (killed and reaped).
enum Failed {
    /// The request did not reach the server, which is gone.
    Unsent(Error),
    /// The server took the request but did not answer properly.
    Broken(Error),
    /// The server answered with an error; it is still good.
    Refused(String),
}

impl Server {
    fn launch() -> Result<Server> {
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| {
            // Without the handler the server still ends with this process;
            // it is only not reaped here.
            let _ = sys::at_exit(stop_at_exit);
        });
        let (requests, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(std::io::Error::from)?;
        spawn::refuse_without_init()?;
        let mut process = Process::new()
            .pass(CONTROL_KEY, &RequestSocket(theirs))?
            .exec(spawn::reexec(SERVER_ENTRY))?;
        // The server says it is ready; a program that does not call
        // `init` first runs its `main` instead and never does.
        let ready = wait_fds(
            &[
                (requests.as_fd(), Interest::Read),
                (process.wait_fd(), Interest::Read),
            ],
            Deadline::after(REPLY_TIMEOUT),
        )?;
        let mut hello = [0u8; READY.len() + 1];
        let heard = if ready[0] {
            recv_with_fds(requests.as_fd(), &mut hello, 0)?
        } else {
            Received {
                len: 0,
                fds: Vec::new(),
                truncated: false,
            }
        };
        if heard.len != READY.len() || hello[..heard.len] != *READY || heard.truncated {
            let _ = process.kill();
            return Err(Error::Io(std::io::Error::other(
                "the forkserver did not start: is ipc_core::spawn::init() the first line of main, or spawn_harness! in the test crate?",
            )));
        }
        Ok(Server {
            requests,
            process,
            owner: std::process::id(),
        })
    }

    fn request(
        &self,
        request: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> std::result::Result<(i32, OwnedFd), Failed> {
        send_with_fds(self.requests.as_fd(), request, fds).map_err(|e| Failed::Unsent(e.into()))?;
        let broken = |e: Error| Failed::Broken(e);
        if !poll_readable(self.requests.as_fd(), Deadline::after(REPLY_TIMEOUT))
            .map_err(|e| broken(e.into()))?
        {
            return Err(broken(Error::Timeout));
        }
        let mut buffer = [0u8; 1024];
        let received =
            recv_with_fds(self.requests.as_fd(), &mut buffer, 1).map_err(|e| broken(e.into()))?;
        if received.len == 0 {
            return Err(broken(Error::Closed));
        }
        let reply: Reply = codec::decode(&buffer[..received.len]).map_err(broken)?;
        match (reply, received.fds.into_iter().next()) {
            (Ok(pid), Some(pidfd)) if pid > 0 && !received.truncated => Ok((pid, pidfd)),
            (Err(why), _) => Err(Failed::Refused(why)),
            _ => Err(broken(Error::Io(std::io::Error::other(
                "the forkserver's answer is malformed",
            )))),
        }
    }
}

/// The server's end of the request socket, as its child handle.
struct RequestSocket(OwnedFd);

impl Inheritable for RequestSocket {
    fn handle(&self) -> Handle<'_> {
        Handle {
            fds: vec![self.0.as_fd()],
            text: String::new(),
        }
    }

    fn from_inherited(inherited: Inherited) -> Result<Self> {
        let mut fds = inherited.fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(fd), None) => Ok(RequestSocket(fd)),
            _ => Err(Error::InvalidArgument(
                "the forkserver takes one descriptor",
            )),
        }
    }
}

/// Sends `bytes` as one message with `fds` attached.
fn send_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One message received with [`recv_with_fds`].
struct Received {
    /// Its length in the buffer (0: the peer closed the socket).
    len: usize,
    /// The descriptors attached to it, close-on-exec.
    fds: Vec<OwnedFd>,
    /// Whether the message or its descriptors did not fit.
    truncated: bool,
}

/// Receives one message into `buffer`, with at most `max_fds` descriptors.
fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    max_fds: usize,
) -> std::io::Result<Received> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let message = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(buffer)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(message) => break message,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for attached in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = attached {
            fds.extend(received);
        }
    }
    Ok(Received {
        len: message.bytes.min(buffer.len()),
        fds,
        truncated: message
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC),
    })
}

/// A child the server forked and has not reaped yet.
struct ServedChild {
    pid: i32,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's main loop, run by a re-executed child in
/// [`init`](crate::spawn::init); gives the exit code.
pub(crate) fn serve() -> i32 {
    let requests = match inherited::<RequestSocket>(CONTROL_KEY) {
        Ok(RequestSocket(fd)) => fd,
        Err(e) => {
            eprintln!("forkserver: {e}");
            return 1;
        }
    };
    // Its children install their own handle tables.
    std::env::remove_var(HANDLES_ENV);
    // Ctrl-C in a terminal goes to the program's whole process group: the
    // program decides what its children do, not the server.
    sys::ignore_interrupts(true);
    if send_with_fds(requests.as_fd(), READY, &[]).is_err() {
        return 1;
    }
    let mut children: Vec<ServedChild> = Vec::new();
    let mut open = true;
    let mut buffer = vec![0u8; MAX_REQUEST];
    while open || !children.is_empty() {
        let ready = {
            let mut polled: Vec<PollFd<'_>> = children
                .iter()
                .map(|c| PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN))
                .collect();
            if open {
                polled.push(PollFd::new(requests.as_fd(), PollFlags::POLLIN));
            }
            if let Err(e) = poll_until(&mut polled, Deadline::Never) {
                eprintln!("forkserver: {e}");
                return 1;
            }
            polled
                .iter()
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<bool>>()
        };
        if open && ready[children.len()] {
            match recv_with_fds(requests.as_fd(), &mut buffer, MAX_FDS) {
                Ok(Received { len: 0, .. }) => open = false,
                Ok(received) => {
                    let answer = answer(&buffer[..received.len], received);
                    let mut reply = Vec::new();
                    let sent = match &answer {
                        Ok(child) => codec::encode_into(&Reply::Ok(child.pid), &mut reply)
                            .map_err(std::io::Error::other)
                            .and_then(|()| {
                                send_with_fds(requests.as_fd(), &reply, &[child.pidfd.as_fd()])
                            }),
                        Err(why) => codec::encode_into(&Reply::Err(why.clone()), &mut reply)
                            .map_err(std::io::Error::other)
                            .and_then(|()| send_with_fds(requests.as_fd(), &reply, &[])),
                    };
                    if let Ok(child) = answer {
                        children.push(child);
                    }
                    if sent.is_err() {
                        open = false;
                    }
                }
                Err(_) => open = false,
            }
        }
        let mut index = 0;
        children.retain(|child| {
            index += 1;
            !ready[index - 1] || !report_exit(child)
        });
    }
    0
}

/// Reaps `child` if it has exited and writes its status to its status
/// socket; whether it was reaped.
fn report_exit(child: &ServedChild) -> bool {
    match wait_raw(child.pid, WaitPidFlag::WNOHANG) {
        Ok(Some(raw)) => {
            // The parent may have dropped its end: nothing to tell then.
            let _ = rustix::net::send(
                &child.status,
                &raw.to_ne_bytes(),
                SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            );
            true
        }
        Ok(None) => false,
        // Not our child any more (cannot happen): stop watching it.
        Err(_) => true,
    }
}

/// Forks the child a request asks for, or says why not.
fn answer(request: &[u8], received: Received) -> std::result::Result<ServedChild, String> {
    if received.truncated {
        return Err("the request or its descriptors were cut short".to_owned());
    }
    let Request { entry, handles } = codec::decode(request).map_err(|e| e.to_string())?;
    let mut fds = received.fds.into_iter();
    let status = fds.next().ok_or("the request has no status socket")?;
    let passed: Vec<OwnedFd> = fds.collect();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    match sys::fork().map_err(|e| e.to_string())? {
        Forked::Child => {
            // Only the passed descriptors stay open: the request socket,
            // the status sockets and the pidfds of other children go. The
            // objects that held them are never dropped (the child leaves
            // by `exit_now`), so no number is closed twice.
            let numbers: Vec<RawFd> = passed.into_iter().map(IntoRawFd::into_raw_fd).collect();
            let mut keep = numbers.clone();
            keep.sort_unstable();
            sys::close_all_except(&keep);
            std::mem::forget(status);
            install_handles(&handles, |position| {
                let position = usize::try_from(position).ok()?.checked_sub(1)?;
                numbers.get(position).copied()
            });
            sys::ignore_interrupts(false);
            let code = spawn::child_main(&entry);
            let _ = std::io::stdout().flush();
            sys::exit_now(code)
        }
        Forked::Parent(pid) => match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok(ServedChild { pid, pidfd, status }),
            Err(e) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = wait_raw(pid, WaitPidFlag::empty());
                Err(format!("pidfd_open: {e}"))
            }
        },
    }
}
