//! Fuzz target: arbitrary bytes from a peer, read as frames by a
//! `Connection`. It must return messages or error values, never panic, and
//! never hand back a message over its limit; a message that does not fit
//! the caller's buffer or limit must stay unread, whole, for the next
//! receive (docs/ARCHITECTURE.md, `connection`).
//!
//! The first byte picks the limit (4096 or 16 bytes) and the kind of
//! receive: `recv_bytes_timeout`, `recv_bytes_into_timeout` with a 64-byte
//! buffer, `recv_bytes_max_timeout` with 32 bytes, or a typed
//! `recv_timeout`. The rest is the peer's byte stream.
#![no_main]

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipc_core::{Connection, Error, FdStream, Result};
use libfuzzer_sys::fuzz_target;

const TIMEOUT: Duration = Duration::from_secs(1);

/// One receive of the kind `kind`; `Ok` if it took a message.
fn receive(conn: &mut Connection, kind: u8, limit: u64) -> Result<()> {
    match kind {
        0 => {
            let message = conn.recv_bytes_timeout(TIMEOUT)?;
            assert!(message.len() as u64 <= limit);
        }
        1 => {
            let mut buf = [0u8; 64];
            match conn.recv_bytes_into_timeout(&mut buf, TIMEOUT) {
                Ok(n) => assert!(n <= buf.len()),
                Err(Error::BufferTooShort { needed }) => {
                    assert!(needed > buf.len());
                    let message = conn.recv_bytes_timeout(TIMEOUT)?;
                    assert_eq!(message.len(), needed, "the message did not stay whole");
                }
                Err(e) => return Err(e),
            }
        }
        2 => match conn.recv_bytes_max_timeout(32, TIMEOUT) {
            Ok(message) => assert!(message.len() as u64 <= limit.min(32)),
            Err(Error::TooLarge { size, .. }) => {
                assert!(size > limit.min(32));
                let message = conn.recv_bytes_timeout(TIMEOUT)?;
                assert_eq!(message.len() as u64, size, "the message did not stay whole");
            }
            Err(e) => return Err(e),
        },
        _ => match conn.recv_timeout::<(u8, String, Vec<u8>)>(TIMEOUT) {
            // A message that does not decode is consumed: go on.
            Ok(_) | Err(Error::Decode(_)) => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    // `thread::spawn` takes only `'static` data: the writer gets a copy.
    let data = data[..data.len().min(64 * 1024)].to_vec();
    let (mut peer, ours) = UnixStream::pair().unwrap();
    let mut conn = Connection::new(FdStream::new(OwnedFd::from(ours)).unwrap());
    let limit = if mode & 1 == 0 { 4096 } else { 16 };
    conn.set_max_message_size(limit);
    // The data fits in the socket's buffer, so the writer never waits for
    // the reader and always finishes.
    let writer = std::thread::spawn(move || {
        let _ = peer.write_all(&data);
    });
    while receive(&mut conn, (mode >> 1) & 3, limit).is_ok() {}
    writer.join().unwrap();
});
