//! Random and adversarial byte streams fed to a `Connection`: whatever a peer
//! writes, the reader returns messages or error values, never panics, never
//! allocates more than its limit and never reads past the end of the stream.
//! A deterministic stand-in for the fuzz target in `fuzz/`, so CI covers it.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipc_core::{Connection, Error, FdStream};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `bytes` to a fresh connection's peer, closes the peer, and reads
/// until the connection reports an error; returns the messages and the error.
fn read_all(bytes: &[u8], limit: u64) -> (Vec<Vec<u8>>, Error) {
    let (mut raw, ours) = UnixStream::pair().unwrap();
    let mut conn = Connection::new(FdStream::new(OwnedFd::from(ours)).unwrap());
    conn.set_max_message_size(limit);
    // Small inputs fit in the socket buffer, so writing before reading
    // cannot block.
    raw.write_all(bytes).unwrap();
    drop(raw);
    let mut messages = Vec::new();
    loop {
        match conn.recv_bytes_timeout(Duration::from_secs(5)) {
            Ok(message) => {
                assert!(
                    message.len() as u64 <= limit,
                    "a message over the limit was returned"
                );
                messages.push(message);
            }
            Err(e) => return (messages, e),
        }
    }
}

/// An encoded frame: the header (short or long form) and the payload.
fn frame(rng: &mut Rng, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.below(4) == 0 {
        out.extend_from_slice(&[0xff; 4]);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    } else {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

#[test]
fn random_garbage_gives_errors_not_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2_000 {
        let len = rng.below(64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let (_, error) = read_all(&bytes, 1024);
        assert!(
            matches!(
                error,
                Error::Closed
                    | Error::Truncated { .. }
                    | Error::InvalidHeader { .. }
                    | Error::TooLarge { .. }
            ),
            "unexpected error {error:?} for {bytes:02x?}"
        );
    }
}

#[test]
fn valid_frames_then_a_cut_arrive_whole_then_truncated() {
    let mut rng = Rng(42);
    for _ in 0..500 {
        let count = rng.below(8) as usize;
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|_| (0..rng.below(300)).map(|_| rng.next() as u8).collect())
            .collect();
        let mut stream: Vec<u8> = payloads.iter().flat_map(|p| frame(&mut rng, p)).collect();
        let whole = stream.len();
        let cut = rng.below(20) as usize;
        stream.truncate(whole.saturating_sub(cut));
        let (messages, error) = read_all(&stream, 1 << 20);
        // Every message that arrived is the one that was sent, in order.
        assert!(messages.len() <= payloads.len());
        assert_eq!(messages[..], payloads[..messages.len()]);
        if stream.len() == whole {
            assert_eq!(messages.len(), payloads.len());
            assert!(matches!(error, Error::Closed), "{error:?}");
        } else {
            // Cut inside a frame: truncated; cut on a frame boundary: closed.
            assert!(messages.len() < payloads.len());
            assert!(
                matches!(error, Error::Truncated { .. } | Error::Closed),
                "{error:?}"
            );
        }
    }
}

#[test]
fn huge_announced_lengths_are_refused_without_allocating() {
    for announced in [1u64 << 62, u64::MAX, (1 << 31) - 1, 1 << 33] {
        let mut rng = Rng(announced);
        let mut stream = vec![0xff; 4];
        stream.extend_from_slice(&announced.to_be_bytes());
        stream.extend((0..100).map(|_| rng.next() as u8));
        let (messages, error) = read_all(&stream, 1 << 20);
        assert!(messages.is_empty());
        assert!(
            matches!(error, Error::TooLarge { size, limit: 1_048_576 } if size == announced),
            "{error:?}"
        );
    }
}
