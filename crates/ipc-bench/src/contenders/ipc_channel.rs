//! The `ipc-channel` crate (Servo's): `IpcBytesSender` / `IpcBytesReceiver`
//! between two processes, bootstrapped with an `IpcOneShotServer`.
//!
//! The peer creates both channels and sends the parent its halves (the
//! sender towards the peer, the receiver from it) through the one-shot
//! server, whose name it gets on its command line.

use std::sync::mpsc;
use std::time::Duration;

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use ipc_core::process::Process;

use super::{spawn_peer, Contender, Entry, Link, LinkContender};
use crate::bench::Result;

/// Name of the contender.
pub const NAME: &str = "ipc-channel";

/// What the peer sends through the one-shot server: the parent's ends.
type Bootstrap = (IpcBytesSender, IpcBytesReceiver);

/// The registry entry of the contender.
pub fn entry() -> Entry {
    Entry {
        name: NAME,
        about: "the `ipc-channel` crate 0.23: `IpcBytesSender` / `IpcBytesReceiver` \
                (bootstrapped with `IpcOneShotServer`)",
        start,
        peer: Some(peer),
        // One consumer only: an `IpcBytesReceiver` cannot be shared.
        runs: |b| super::pipe_only(b) || super::queue_one_to_one(b),
    }
}

fn start() -> Result<Option<Box<dyn Contender>>> {
    let (server, name) = IpcOneShotServer::<Bootstrap>::new()?;
    let (ctl, mut child) = spawn_peer(NAME, Process::new(), &[&name])?;
    // `accept` has no timeout: wait for it on a thread, so a peer that
    // fails to connect is reported instead of hanging the run.
    let (done, accepted) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(server.accept().map(|(_, ends)| ends));
    });
    match accepted.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok((tx, rx))) => Ok(Some(Box::new(LinkContender::new(
            ctl,
            child,
            Channel::new(tx, rx),
        )))),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            child.kill()?;
            Err("the ipc-channel peer did not connect".into())
        }
    }
}

fn peer(args: &[String]) -> Result {
    let [name] = args else {
        return Err("usage: --peer ipc-channel SERVER_NAME".into());
    };
    let (to_peer, from_parent) = ipc::bytes_channel()?;
    let (to_parent, from_peer) = ipc::bytes_channel()?;
    let bootstrap: IpcSender<Bootstrap> = IpcSender::connect(name.clone())?;
    bootstrap.send((to_peer, from_peer))?;
    super::serve(Channel::new(to_parent, from_parent))
}

/// One end: a sender and a receiver.
struct Channel {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
    out: Vec<u8>,
}

impl Channel {
    fn new(tx: IpcBytesSender, rx: IpcBytesReceiver) -> Channel {
        Channel {
            tx,
            rx,
            out: Vec::new(),
        }
    }
}

impl Link for Channel {
    fn prepare(&mut self, send: usize, _recv: usize) {
        self.out = vec![0xa5; send];
    }

    fn send(&mut self) -> Result {
        Ok(self.tx.send(&self.out)?)
    }

    fn recv(&mut self) -> Result<usize> {
        Ok(self.rx.recv()?.len())
    }
}
