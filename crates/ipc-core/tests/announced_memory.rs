//! Memory follows the bytes that arrived, never the bytes a peer announced:
//! a peer that sends the header of a 64 MiB message and a few bytes of it
//! costs the receiver about 1 MiB, whatever form of receive it uses. A
//! counting allocator measures the receiving thread's peak.

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::counting::measure;
use ipc_core::{frame::Header, Connection, Error, FdStream};

const ANNOUNCED: u64 = 64 * 1024 * 1024;
/// What the receiver may spend: the first 1 MiB of payload buffer and its
/// 64 KiB read buffer, with room to spare.
const BUDGET: usize = 1024 * 1024 + 256 * 1024;

/// A receiving connection and its peer, which has sent the header of a
/// 64 MiB message and `sent` bytes of it, and then stalls.
fn liar(sent: usize) -> (Connection, UnixStream) {
    let (mut peer, ours) = UnixStream::pair().unwrap();
    let conn = Connection::new(FdStream::new(OwnedFd::from(ours)).unwrap());
    peer.write_all(Header::new(ANNOUNCED).as_bytes()).unwrap();
    peer.write_all(&vec![0x5a; sent]).unwrap();
    (conn, peer)
}

fn assert_cheap(form: &str, result: Result<(), Error>, peak: usize) {
    assert!(matches!(result, Err(Error::Timeout)), "{form}: {result:?}");
    assert!(
        peak <= BUDGET,
        "{form}: {peak} bytes for a message announced as {ANNOUNCED} bytes"
    );
}

#[test]
fn every_receive_form_spends_what_arrived() {
    let wait = Duration::from_millis(50);
    type Recv = fn(&mut Connection, Duration) -> Result<(), Error>;
    let forms: [(&str, Recv); 6] = [
        ("recv_bytes_timeout", |c, t| {
            c.recv_bytes_timeout(t).map(drop)
        }),
        ("recv_bytes_max_timeout", |c, t| {
            c.recv_bytes_max_timeout(usize::MAX, t).map(drop)
        }),
        ("recv_bytes with a read timeout", |c, t| {
            c.set_read_timeout(Some(t));
            c.recv_bytes().map(drop)
        }),
        ("recv_timeout::<Vec<u8>>", |c, t| {
            c.recv_timeout::<Vec<u8>>(t).map(drop)
        }),
        ("recv_timeout::<String>", |c, t| {
            c.recv_timeout::<String>(t).map(drop)
        }),
        ("recv::<Vec<u8>> with a read timeout", |c, t| {
            c.set_read_timeout(Some(t));
            c.recv::<Vec<u8>>().map(drop)
        }),
    ];
    for (form, recv) in forms {
        for sent in [0, 3, 100_000] {
            let (mut conn, _peer) = liar(sent);
            let (result, usage) = measure(|| recv(&mut conn, wait));
            assert_cheap(
                &format!("{form} after {sent} bytes"),
                result,
                usage.peak_bytes,
            );
        }
    }
}

#[test]
fn a_large_message_still_arrives_whole_and_the_buffer_grows_with_it() {
    let (mut conn, mut peer) = liar(0);
    let payload: Vec<u8> = (0..=250u8).cycle().take(ANNOUNCED as usize).collect();
    let writer = std::thread::spawn(move || {
        peer.write_all(&payload).unwrap();
        payload
    });
    // Short timeouts, so that the message is taken in several calls, each
    // continuing the growing buffer of the one before.
    let message = loop {
        match conn.recv_bytes_timeout(Duration::from_millis(1)) {
            Ok(message) => break message,
            Err(Error::Timeout) => continue,
            Err(e) => panic!("{e:?}"),
        }
    };
    let payload = writer.join().unwrap();
    assert_eq!(message.len(), payload.len());
    assert!(message == payload, "the message arrived changed");
}

#[test]
fn a_peer_that_gives_up_part_way_costs_what_it_sent() {
    let (mut conn, peer) = liar(10_000);
    drop(peer);
    let (result, usage) = measure(|| conn.recv_bytes().map(drop));
    assert!(
        matches!(
            result,
            Err(Error::Truncated {
                expected: ANNOUNCED,
                received: 10_000
            })
        ),
        "{result:?}"
    );
    assert!(usage.peak_bytes <= BUDGET, "{} bytes", usage.peak_bytes);
}
