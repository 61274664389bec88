//! [`Server`]: a listener serving many clients at once, and shutting down
//! cleanly.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ipc_core::Deadline;

use nix::sys::socket::{shutdown, Shutdown};

use crate::listener::Listener;
use crate::SocketConnection;

/// Takes a connection out of [`LiveSockets`] when dropped.
pub(crate) struct Removal {
    live: LiveSockets,
    id: u64,
}

impl Drop for Removal {
    fn drop(&mut self) {
        self.live.remove(self.id);
    }
}

/// Live connections' sockets (duplicates), by connection number, so
/// shutdown can wake handlers waiting in a receive.
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveSockets(Arc<Mutex<LiveInner>>);

#[derive(Debug, Default)]
struct LiveInner {
    next_id: u64,
    sockets: HashMap<u64, OwnedFd>,
}

impl LiveSockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a duplicate of a live connection's socket; the number to
    /// remove it by.
    pub(crate) fn insert(&self, socket: BorrowedFd<'_>) -> u64 {
        let mut live = self.lock();
        let id = live.next_id;
        live.next_id += 1;
        // Without a duplicate (out of descriptors), shutdown cannot wake
        // this handler early; its connection still ends with the client.
        if let Ok(fd) = socket.try_clone_to_owned() {
            live.sockets.insert(id, fd);
        }
        id
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().sockets.remove(&id);
    }

    /// Removes connection `id` when dropped: when its handler returns, and
    /// when it panics too, so the client of a failed handler sees the end
    /// of the stream instead of a socket that a duplicate keeps open.
    pub(crate) fn removal(&self, id: u64) -> Removal {
        Removal {
            live: self.clone(),
            id,
        }
    }

    /// Shuts down every live socket: the handlers' receives return
    /// [`Error::Closed`](ipc_core::Error::Closed).
    pub(crate) fn shut_down_all(&self) {
        for fd in self.lock().sockets.values() {
            let _ = shutdown(std::os::fd::AsRawFd::as_raw_fd(fd), Shutdown::Both);
        }
    }
}

/// A running server.
///
/// # Threading model
///
/// One accept thread waits for clients (and for the shutdown signal) and
/// runs every client's handshakes at once, as
/// [`Listener::accept`](crate::Listener::accept) does, so a client that
/// stalls in its handshake holds up nobody else, and costs no thread. Each
/// connection through its handshakes gets a thread of its own for the
/// handler, so a client that stalls in the handler holds up nobody either.
/// With [`Options::max_connections`](crate::Options::max_connections) set,
/// at most that many handler threads exist at once; handshakes in progress
/// do not count against it (they have their own bound,
/// [`Options::max_handshakes`](crate::Options::max_handshakes)).
/// [`Server::shutdown`] stops accepting, shuts down the sockets of live
/// connections (their handlers' receives return
/// [`Error::Closed`](ipc_core::Error::Closed)), and joins every thread.
///
/// ```
/// use ipc_socket::{Client, Listener, Options, Server};
/// let listener = Listener::bind("127.0.0.1:0", Options::new())?;
/// let address = listener.address().clone();
/// let server = Server::start(listener, |mut conn| {
///     while let Ok(data) = conn.recv_bytes() {
///         let mut reply = b"Received: ".to_vec();
///         reply.extend_from_slice(&data);
///         if conn.send_bytes(&reply).is_err() {
///             break;
///         }
///     }
/// })?;
/// let mut conn = Client::connect(&address, Options::new())?;
/// conn.send_bytes(b"Hello")?;
/// assert_eq!(conn.recv_bytes()?, b"Received: Hello");
/// server.shutdown();
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Server {
    stop: Option<OwnedFd>,
    accept_thread: Option<JoinHandle<()>>,
    live: LiveSockets,
}

impl Server {
    /// Starts serving: every accepted, authenticated connection is passed
    /// to `handler` on a thread of its own.
    pub fn start<F>(listener: Listener, handler: F) -> ipc_core::Result<Server>
    where
        F: Fn(SocketConnection) + Send + Sync + 'static,
    {
        let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let live = LiveSockets::default();
        let handler = Arc::new(handler);
        let accept_live = live.clone();
        let accept_thread = std::thread::Builder::new()
            .name("ipc-socket-accept".into())
            .spawn(move || accept_loop(listener, stop_read, accept_live, handler))?;
        Ok(Server {
            stop: Some(stop_write),
            accept_thread: Some(accept_thread),
            live,
        })
    }

    /// Stops accepting, closes live connections and joins every thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // Closing the pipe's write end makes its read end readable.
        drop(self.stop.take());
        self.live.shut_down_all();
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn accept_loop<F>(listener: Listener, stop: OwnedFd, live: LiveSockets, handler: Arc<F>)
where
    F: Fn(SocketConnection) + Send + Sync + 'static,
{
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let conn = match listener.next_connection(Deadline::Never, Some(stop.as_fd())) {
            Ok(Some(Ok(conn))) => conn,
            // A client that failed its handshake: its error is its own.
            Ok(Some(Err(_))) => continue,
            Ok(None) | Err(_) => break,
        };
        let Some(conn) = listener.take_slot(conn) else {
            break;
        };
        // Shutdown may have come while this waited for a slot.
        if ipc_core::wait(&[&stop.as_fd()], Duration::ZERO).is_ok_and(|r| !r.is_empty()) {
            break;
        }
        let removal = live.removal(live.insert(conn.as_fd()));
        let handler = Arc::clone(&handler);
        let worker = std::thread::Builder::new()
            .name("ipc-socket-conn".into())
            .spawn(move || {
                let _removal = removal;
                handler(conn);
            });
        // A thread that could not start dropped its closure, and with it
        // the removal.
        if let Ok(worker) = worker {
            workers.push(worker);
        }
        workers.retain(|w| !w.is_finished());
    }
    live.shut_down_all();
    for worker in workers {
        let _ = worker.join();
    }
}
