//! The conformance suite against ipc-queue.
//!
//! A queue has no ends: any handle may put or get, and the queue stays
//! open until someone calls `close`. The suite's "the peer is gone" checks
//! are about a channel whose sender or receiver went away, so each end here
//! is a queue handle that closes the queue when it is dropped (in the
//! process that uses it; for the cross-process checks, not the parent's
//! copy of the child's end). Typed messages go through `ipc_core::codec`
//! and the queue's bytes API, which is what the queue's own typed `put`
//! and `get` do.

use std::time::Duration;

use ipc_core::process::{Handle, Inheritable, Inherited};
use ipc_core::{ByteReceiver, ByteSender, Receiver, Result, Sender};
use ipc_queue::Queue;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The queue carries messages of every type the suite sends.
enum AnyMessage {}

/// When an end closes the queue as it is dropped.
#[derive(Clone, Copy)]
enum CloseOn {
    /// Wherever it is dropped.
    Drop,
    /// Only when dropped in another process than this one (the child that
    /// received it), not as the parent's copy is dropped after the fork.
    DropInChild(u32),
    /// Never.
    Never,
}

struct End {
    queue: Queue<AnyMessage>,
    close: CloseOn,
}

impl Drop for End {
    fn drop(&mut self) {
        let close = match self.close {
            CloseOn::Drop => true,
            CloseOn::DropInChild(parent) => std::process::id() != parent,
            CloseOn::Never => false,
        };
        if close {
            let _ = self.queue.close();
        }
    }
}

impl<T: Serialize + ?Sized> Sender<T> for End {
    fn send(&mut self, msg: &T) -> Result<()> {
        let mut buf = Vec::new();
        ipc_core::codec::encode_into(msg, &mut buf)?;
        self.queue.put_bytes(&buf)
    }
}

impl<T: DeserializeOwned> Receiver<T> for End {
    fn recv(&mut self) -> Result<T> {
        ipc_core::codec::decode(&self.queue.get_bytes()?)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        ipc_core::codec::decode(&self.queue.get_bytes_timeout(timeout)?)
    }

    fn try_recv(&mut self) -> Result<T> {
        ipc_core::codec::decode(&self.queue.get_bytes_nowait()?)
    }
}

impl ByteSender for End {
    fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.queue.send_bytes(buf)
    }
}

impl ByteReceiver for End {
    fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.queue.recv_bytes()
    }

    fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.queue.recv_bytes_timeout(timeout)
    }

    fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.queue.try_recv_bytes()
    }

    fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.queue.recv_bytes_into(buf)
    }
}

impl Inheritable for End {
    fn handle(&self) -> Handle<'_> {
        self.queue.handle()
    }

    fn from_inherited(inherited: Inherited) -> Result<Self> {
        Ok(End {
            queue: Queue::from_inherited(inherited)?,
            close: CloseOn::Drop,
        })
    }
}

/// Room for the suite's 4 MiB message.
const CAPACITY: usize = 8 << 20;

fn pair(send_close: CloseOn, recv_close: CloseOn) -> (End, End) {
    let queue = Queue::<AnyMessage>::builder()
        .capacity(CAPACITY)
        .anonymous()
        .expect("queue");
    let other = queue.try_clone().expect("a second handle");
    (
        End {
            queue,
            close: send_close,
        },
        End {
            queue: other,
            close: recv_close,
        },
    )
}

fn local() -> (End, End) {
    pair(CloseOn::Drop, CloseOn::Drop)
}

#[test]
fn queue_conforms() {
    ipc_conformance::run_all(local);
}

#[test]
fn named_queue_conforms() {
    let name = format!("ipct_{}_conformance", std::process::id());
    let make = || {
        let owner = Queue::<AnyMessage>::builder()
            .capacity(CAPACITY)
            .create(&name)
            .expect("create");
        let opener = Queue::<AnyMessage>::builder().open(&name).expect("open");
        // The name can go at once: both handles keep the segment mapped.
        owner.unlink().expect("unlink");
        (
            End {
                queue: opener,
                close: CloseOn::Drop,
            },
            End {
                queue: owner,
                close: CloseOn::Drop,
            },
        )
    };
    ipc_conformance::run_all(make);
    ipc_testkit::assert_no_leftovers();
}

#[test]
fn child_sends() {
    let parent = std::process::id();
    ipc_conformance::cross_process_send(
        || pair(CloseOn::DropInChild(parent), CloseOn::Never),
        1000,
    );
}

#[test]
fn child_receives() {
    let parent = std::process::id();
    ipc_conformance::cross_process_recv(|| pair(CloseOn::Drop, CloseOn::DropInChild(parent)), 1000);
}
