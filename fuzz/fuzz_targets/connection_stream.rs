//! Fuzz target: arbitrary bytes from a peer, read as frames by a
//! `Connection`. It must return messages or error values, never panic, and
//! never hand back a message over its limit.
#![no_main]

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(64 * 1024)];
    let (mut peer, ours) = UnixStream::pair().unwrap();
    let mut conn = ipc_core::Connection::new(ipc_core::FdStream::new(OwnedFd::from(ours)).unwrap());
    conn.set_max_message_size(4096);
    let writer = std::thread::spawn(move || {
        let _ = peer.write_all(data.to_vec().as_slice());
    });
    while let Ok(message) = conn.recv_bytes_timeout(Duration::from_secs(1)) {
        assert!(message.len() <= 4096);
    }
    writer.join().unwrap();
});
