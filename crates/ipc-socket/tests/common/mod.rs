//! Children that hold the blocking end of a socket test: a client that
//! connects and talks, or a listener that accepts and talks. Each exits 0
//! when its `talk` succeeds.
#![allow(dead_code)] // each test binary uses what it needs

use std::time::Duration;

use ipc_core::process::{Child, Process};
use ipc_socket::{Address, Client, Listener, Options, SocketConnection};

/// How long a child waits for its peer.
pub const LONG: Duration = Duration::from_secs(20);

/// A forked child that connects to `address` with the blocking client.
pub fn blocking_client(
    address: &Address,
    options: Options,
    talk: impl FnOnce(&mut SocketConnection) -> ipc_core::Result<()>,
) -> Child {
    let address = address.clone();
    Process::new()
        .allow_threads()
        .fork(move || -> ipc_core::Result<()> {
            let mut conn = Client::connect(&address, options)?;
            talk(&mut conn)
        })
        .unwrap()
}

/// A forked child that accepts one connection on `listener`, which the
/// parent keeps (and so its socket file) until it drops it.
pub fn blocking_listener(
    listener: &Listener,
    talk: impl FnOnce(&mut SocketConnection) -> ipc_core::Result<()>,
) -> Child {
    Process::new()
        .allow_threads()
        .pass("listener", listener)
        .unwrap()
        .fork(move || -> ipc_core::Result<()> {
            let mut conn = listener.accept_timeout(LONG)?;
            talk(&mut conn)
        })
        .unwrap()
}
