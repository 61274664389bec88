//! `recv_bytes_into` and `send_bytes` allocate nothing per message: a
//! counting allocator watches the test's own thread through a steady stream
//! of messages after the first ones have set up the connection's buffers.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use common::counting::measure;
use ipc_core::{Connection, FdStream};

#[test]
fn a_steady_stream_allocates_nothing_per_message() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut sender = Connection::new(FdStream::new(OwnedFd::from(a)).unwrap());
    let mut receiver = Connection::new(FdStream::new(OwnedFd::from(b)).unwrap());
    let small = [7u8; 64];
    let large = vec![9u8; 48 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut exchange = |rounds| {
        for round in 0..rounds {
            let message: &[u8] = if round % 10 == 0 { &large } else { &small };
            sender.send_bytes(message).unwrap();
            let n = receiver.recv_bytes_into(&mut buf).unwrap();
            assert_eq!(&buf[..n], message);
        }
    };
    // The first messages set up the receive buffer, which starts small and
    // grows once, when a read fills it.
    let ((), setup) = measure(|| exchange(20));
    assert!(
        setup.allocations <= 2,
        "{} allocations to set up",
        setup.allocations
    );
    let ((), steady) = measure(|| exchange(1000));
    assert_eq!(
        steady.allocations, 0,
        "{} allocations for 1000 messages",
        steady.allocations
    );
}
