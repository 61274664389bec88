//! One conformance suite over the [`ipc_core`] traits ([`Sender`],
//! [`Receiver`], [`ByteSender`], [`ByteReceiver`]) that every mechanism of
//! the workspace runs, so a pipe, a queue and a socket keep the same
//! promises: messages arrive whole and in order, empty messages exist, a
//! short buffer or a bad encoding loses nothing else, timeouts are never
//! early, and a closed peer is [`Error::Closed`].
//!
//! Each check takes a factory that returns a fresh connected pair
//! `(sender side, receiver side)` and panics with a message naming the
//! broken promise. [`run_all`] runs every in-process check;
//! [`cross_process_send`] and [`cross_process_recv`] fork a child, so their
//! ends must be [`Inheritable`] and the calling process single-threaded
//! (one test per process, as cargo-nextest runs them).
//!
//! ```
//! # fn pair() -> (ipc_core::Connection, ipc_core::Connection) {
//! #     use std::{os::fd::OwnedFd, os::unix::net::UnixStream};
//! #     let (a, b) = UnixStream::pair().unwrap();
//! #     let end = |s: UnixStream| ipc_core::Connection::new(ipc_core::FdStream::new(OwnedFd::from(s)).unwrap());
//! #     (end(a), end(b))
//! # }
//! // `pair` returns a connected (sender, receiver), here a socketpair.
//! ipc_conformance::run_all(pair);
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use ipc_core::process::{Inheritable, Process};
use ipc_core::{ByteReceiver, ByteSender, Error, Receiver, Sender};
use serde::{Deserialize, Serialize};

pub use ipc_testkit::{pattern, PATIENCE};

/// The timeout the timing checks use.
pub const SHORT_TIMEOUT: Duration = Duration::from_millis(100);

/// A struct with strings, floats, a vector and an option.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// A number.
    pub id: u32,
    /// Some text, not necessarily ASCII.
    pub name: String,
    /// A float.
    pub score: f64,
    /// Several strings.
    pub tags: Vec<String>,
    /// An optional number.
    pub parent: Option<u64>,
}

/// An enum with every kind of variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A unit variant.
    Empty,
    /// A newtype variant.
    Circle(f64),
    /// A struct variant.
    Rect {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
    /// A tuple variant.
    Named(String, i64),
}

/// Structs, enums, options, maps and vectors inside one another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nested {
    /// Structs in a vector.
    pub records: Vec<Record>,
    /// Enums in options in a vector.
    pub shapes: Vec<Option<Shape>>,
    /// A vector of vectors.
    pub matrix: Vec<Vec<i16>>,
    /// A map with byte-vector values.
    pub map: BTreeMap<String, Vec<u8>>,
    /// A tuple of scalars that are awkward to encode.
    pub odd: (bool, char, i128, u128, f32),
}

/// What a sender must send for the suite: bytes and every sample type.
pub trait SuiteSender:
    ByteSender
    + Sender<Record>
    + Sender<Shape>
    + Sender<Nested>
    + Sender<String>
    + Sender<Vec<u64>>
    + Sender<Vec<Shape>>
    + Sender<u64>
    + Sender<()>
{
}

impl<S> SuiteSender for S where
    S: ByteSender
        + Sender<Record>
        + Sender<Shape>
        + Sender<Nested>
        + Sender<String>
        + Sender<Vec<u64>>
        + Sender<Vec<Shape>>
        + Sender<u64>
        + Sender<()>
{
}

/// What a receiver must receive for the suite: bytes and every sample type.
pub trait SuiteReceiver:
    ByteReceiver
    + Receiver<Record>
    + Receiver<Shape>
    + Receiver<Nested>
    + Receiver<String>
    + Receiver<Vec<u64>>
    + Receiver<Vec<Shape>>
    + Receiver<u64>
    + Receiver<()>
{
}

impl<R> SuiteReceiver for R where
    R: ByteReceiver
        + Receiver<Record>
        + Receiver<Shape>
        + Receiver<Nested>
        + Receiver<String>
        + Receiver<Vec<u64>>
        + Receiver<Vec<Shape>>
        + Receiver<u64>
        + Receiver<()>
{
}

/// A sample [`Record`] that differs with `i`.
pub fn record(i: u32) -> Record {
    Record {
        id: i,
        name: format!("record №{i} – ünïcødé ✓"),
        score: f64::from(i) * 0.25 - 3.5,
        tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
        parent: (i % 3 != 0).then_some(u64::from(i) * 1_000_003),
    }
}

/// A sample [`Nested`] value.
pub fn nested() -> Nested {
    Nested {
        records: (0..5).map(record).collect(),
        shapes: vec![
            Some(Shape::Empty),
            None,
            Some(Shape::Circle(-0.0)),
            Some(Shape::Rect { w: 3, h: u32::MAX }),
            Some(Shape::Named(String::new(), i64::MIN)),
        ],
        matrix: vec![vec![], vec![1], vec![-2, 3, i16::MAX, i16::MIN]],
        map: BTreeMap::from([
            ("empty".to_owned(), vec![]),
            ("bytes".to_owned(), (0..=255).collect()),
        ]),
        odd: (true, '🦀', i128::MIN, u128::MAX, f32::INFINITY),
    }
}

/// Runs every in-process check against pairs from `make`, which must
/// return a fresh connected `(sender side, receiver side)` on each call.
pub fn run_all<S, R>(make: impl Fn() -> (S, R))
where
    S: SuiteSender,
    R: SuiteReceiver,
{
    typed_round_trip(&make);
    bytes_round_trip(&make);
    batch_arrives_as_separate_messages(&make);
    empty_messages(&make);
    typed_and_bytes_interleave(&make);
    fifo_order(&make);
    try_recv_on_nothing_is_empty(&make);
    recv_timeout_on_nothing_times_out(&make);
    recv_timeout_returns_a_waiting_message_at_once(&make);
    buffer_too_short_keeps_the_message(&make);
    garbage_is_a_decode_error_and_the_channel_survives(&make);
    wrong_type_is_a_decode_error(&make);
    closed_peer_after_draining(&make);
    send_to_closed_peer_is_closed(&make);
}

fn recv_now<T, R: Receiver<T>>(rx: &mut R, what: &str) -> T {
    match rx.recv_timeout(PATIENCE) {
        Ok(value) => value,
        Err(e) => panic!("receiving {what}: {e:?}"),
    }
}

fn recv_bytes_now<R: ByteReceiver>(rx: &mut R, what: &str) -> Vec<u8> {
    match rx.recv_bytes_timeout(PATIENCE) {
        Ok(value) => value,
        Err(e) => panic!("receiving {what}: {e:?}"),
    }
}

fn round_trip<T, S, R>(tx: &mut S, rx: &mut R, value: &T)
where
    T: PartialEq + Debug,
    S: Sender<T>,
    R: Receiver<T>,
{
    tx.send(value)
        .unwrap_or_else(|e| panic!("sending {value:?}: {e:?}"));
    let got: T = recv_now(rx, &format!("{value:?}"));
    assert_eq!(&got, value, "a typed message changed on the way");
}

/// Structs, enums, strings, vectors and nested values arrive equal to what
/// was sent.
pub fn typed_round_trip<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    for i in [0, 1, 7, 1000] {
        round_trip(&mut tx, &mut rx, &record(i));
    }
    for shape in [
        Shape::Empty,
        Shape::Circle(2.25),
        Shape::Rect { w: 0, h: 9 },
        Shape::Named("x".repeat(300), -1),
    ] {
        round_trip(&mut tx, &mut rx, &shape);
    }
    round_trip(&mut tx, &mut rx, &nested());
    for text in ["", "hello", "ünïcødé and emoji 🦀", &"long ".repeat(10_000)] {
        round_trip(&mut tx, &mut rx, &text.to_owned());
    }
    round_trip(&mut tx, &mut rx, &Vec::<u64>::new());
    round_trip(
        &mut tx,
        &mut rx,
        &(0..5000).map(|i| i * i).collect::<Vec<u64>>(),
    );
    round_trip(
        &mut tx,
        &mut rx,
        &vec![Shape::Empty, Shape::Circle(f64::MAX), Shape::Empty],
    );
    for n in [0, 1, 127, 128, u64::MAX] {
        round_trip(&mut tx, &mut rx, &n);
    }
    round_trip(&mut tx, &mut rx, &());
}

/// Byte messages of many sizes arrive whole and unchanged.
pub fn bytes_round_trip<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    for (seed, len) in [1, 2, 3, 100, 4096, 16_384, 16_385, 60_000]
        .into_iter()
        .enumerate()
    {
        let msg = pattern(seed as u64, len);
        tx.send_bytes(&msg).expect("send_bytes");
        let got = recv_bytes_now(&mut rx, &format!("a {len}-byte message"));
        assert!(got == msg, "a {len}-byte message changed on the way");
    }
}

/// A batch of messages (more than one chunk of `ipc_core::BATCH_LEN`,
/// empty ones included) arrives as the same messages in the same order.
/// Small enough in total for the smallest kernel buffer, so the sender
/// never waits for the receiver.
pub fn batch_arrives_as_separate_messages<S: SuiteSender, R: SuiteReceiver>(
    make: impl Fn() -> (S, R),
) {
    let (mut tx, mut rx) = make();
    let messages: Vec<Vec<u8>> = (0..1200u64)
        .map(|i| pattern(i, (i % 37) as usize))
        .collect();
    let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    tx.send_bytes_batch(&slices).expect("send_bytes_batch");
    for (i, message) in messages.iter().enumerate() {
        let got = recv_bytes_now(&mut rx, &format!("batch message {i}"));
        assert!(got == *message, "batch message {i} changed on the way");
    }
    assert!(
        matches!(rx.try_recv_bytes(), Err(Error::Empty)),
        "more arrived than was sent"
    );
}

/// An empty message is a message: it arrives, as bytes or as `()`, and
/// takes its place in the order.
pub fn empty_messages<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    tx.send_bytes(b"").expect("send an empty message");
    tx.send_bytes(b"x").expect("send");
    tx.send_bytes(b"").expect("send an empty message");
    Sender::<()>::send(&mut tx, &()).expect("send ()");
    assert_eq!(recv_bytes_now(&mut rx, "the first empty message"), b"");
    assert_eq!(recv_bytes_now(&mut rx, "b\"x\""), b"x");
    assert_eq!(recv_bytes_now(&mut rx, "the second empty message"), b"");
    let () = recv_now(&mut rx, "()");
    let mut buf = [0u8; 0];
    tx.send_bytes(b"").expect("send an empty message");
    assert_eq!(
        rx.recv_bytes_into(&mut buf).expect("recv_bytes_into"),
        0,
        "an empty message fits an empty buffer"
    );
    assert!(matches!(rx.try_recv_bytes(), Err(Error::Empty)));
}

/// Typed and byte messages share one stream in one order.
pub fn typed_and_bytes_interleave<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    Sender::<u64>::send(&mut tx, &1).expect("send");
    tx.send_bytes(b"two").expect("send_bytes");
    Sender::<Record>::send(&mut tx, &record(3)).expect("send");
    tx.send_bytes(b"").expect("send_bytes");
    assert_eq!(recv_now::<u64, _>(&mut rx, "1"), 1);
    assert_eq!(recv_bytes_now(&mut rx, "two"), b"two");
    assert_eq!(recv_now::<Record, _>(&mut rx, "record 3"), record(3));
    assert_eq!(recv_bytes_now(&mut rx, "empty"), b"");
}

/// Many messages arrive in the order they were sent, none lost, none
/// doubled (sent in batches that fit any buffer, so one thread can do both).
pub fn fifo_order<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    let mut next_expected = 0u64;
    for batch in 0..100u64 {
        for i in batch * 100..(batch + 1) * 100 {
            if i % 10 == 0 {
                tx.send_bytes(&i.to_be_bytes()).expect("send_bytes");
            } else {
                Sender::<u64>::send(&mut tx, &i).expect("send");
            }
        }
        for _ in 0..100 {
            let got = if next_expected % 10 == 0 {
                let bytes = recv_bytes_now(&mut rx, "a numbered byte message");
                u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
            } else {
                recv_now::<u64, _>(&mut rx, "a numbered message")
            };
            assert_eq!(got, next_expected, "messages out of order");
            next_expected += 1;
        }
    }
    assert!(matches!(
        Receiver::<u64>::try_recv(&mut rx),
        Err(Error::Empty)
    ));
}

/// `try_recv` with nothing sent is [`Error::Empty`], at once; with a
/// message there it returns it.
pub fn try_recv_on_nothing_is_empty<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    let start = Instant::now();
    for _ in 0..3 {
        let typed = Receiver::<u64>::try_recv(&mut rx);
        assert!(matches!(typed, Err(Error::Empty)), "try_recv: {typed:?}");
        let bytes = rx.try_recv_bytes();
        assert!(
            matches!(bytes, Err(Error::Empty)),
            "try_recv_bytes: {bytes:?}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "try_recv waited ({:?})",
        start.elapsed()
    );
    Sender::<u64>::send(&mut tx, &5).expect("send");
    tx.send_bytes(b"five").expect("send_bytes");
    // The message may take a moment to become visible on some mechanisms.
    let deadline = Instant::now() + PATIENCE;
    let typed = loop {
        match Receiver::<u64>::try_recv(&mut rx) {
            Err(Error::Empty) if Instant::now() < deadline => std::thread::yield_now(),
            other => break other,
        }
    };
    assert_eq!(typed.expect("try_recv with a message there"), 5);
    let bytes = loop {
        match rx.try_recv_bytes() {
            Err(Error::Empty) if Instant::now() < deadline => std::thread::yield_now(),
            other => break other,
        }
    };
    assert_eq!(bytes.expect("try_recv_bytes with a message there"), b"five");
}

/// `recv_timeout` with nothing sent is [`Error::Timeout`], never before the
/// timeout, and a message sent afterwards still arrives.
pub fn recv_timeout_on_nothing_times_out<S: SuiteSender, R: SuiteReceiver>(
    make: impl Fn() -> (S, R),
) {
    let (mut tx, mut rx) = make();
    let start = Instant::now();
    let typed = Receiver::<Record>::recv_timeout(&mut rx, SHORT_TIMEOUT);
    let elapsed = start.elapsed();
    assert!(
        matches!(typed, Err(Error::Timeout)),
        "recv_timeout: {typed:?}"
    );
    assert!(
        elapsed >= SHORT_TIMEOUT,
        "recv_timeout returned early: {elapsed:?}"
    );
    assert!(
        elapsed < SHORT_TIMEOUT + PATIENCE,
        "recv_timeout overslept: {elapsed:?}"
    );

    let start = Instant::now();
    let bytes = rx.recv_bytes_timeout(SHORT_TIMEOUT);
    let elapsed = start.elapsed();
    assert!(
        matches!(bytes, Err(Error::Timeout)),
        "recv_bytes_timeout: {bytes:?}"
    );
    assert!(
        elapsed >= SHORT_TIMEOUT,
        "recv_bytes_timeout returned early: {elapsed:?}"
    );

    let zero = rx.recv_bytes_timeout(Duration::ZERO);
    assert!(
        matches!(zero, Err(Error::Timeout)),
        "zero timeout: {zero:?}"
    );

    Sender::<Record>::send(&mut tx, &record(9)).expect("send");
    assert_eq!(recv_now::<Record, _>(&mut rx, "record 9"), record(9));
}

/// A message that is already there is returned at once, whatever the
/// timeout.
pub fn recv_timeout_returns_a_waiting_message_at_once<S: SuiteSender, R: SuiteReceiver>(
    make: impl Fn() -> (S, R),
) {
    let (mut tx, mut rx) = make();
    Sender::<u64>::send(&mut tx, &77).expect("send");
    tx.send_bytes(b"waiting").expect("send_bytes");
    let start = Instant::now();
    let typed: u64 = Receiver::<u64>::recv_timeout(&mut rx, Duration::from_secs(60))
        .expect("recv_timeout with a message there");
    let bytes = rx
        .recv_bytes_timeout(Duration::from_secs(60))
        .expect("recv_bytes_timeout with a message there");
    assert_eq!((typed, bytes.as_slice()), (77, &b"waiting"[..]));
    assert!(
        start.elapsed() < PATIENCE,
        "a waiting message took {:?}",
        start.elapsed()
    );
}

/// A buffer too short for the next message is [`Error::BufferTooShort`]
/// with the size needed, and the message stays for the next call.
pub fn buffer_too_short_keeps_the_message<S: SuiteSender, R: SuiteReceiver>(
    make: impl Fn() -> (S, R),
) {
    let (mut tx, mut rx) = make();
    let msg = pattern(110, 110);
    tx.send_bytes(&msg).expect("send_bytes");
    tx.send_bytes(b"next").expect("send_bytes");
    let mut small = [0u8; 40];
    for _ in 0..2 {
        match rx.recv_bytes_into(&mut small) {
            Err(Error::BufferTooShort { needed: 110 }) => {}
            other => panic!("110 bytes into 40: {other:?}"),
        }
    }
    let mut big = [0xaau8; 200];
    let n = rx
        .recv_bytes_into(&mut big)
        .expect("the message is still there for a big enough buffer");
    assert_eq!(n, 110);
    assert!(big[..110] == msg[..], "the message changed");
    assert!(
        big[110..].iter().all(|&b| b == 0xaa),
        "bytes past the message were written"
    );
    let mut exact = [0u8; 4];
    assert_eq!(rx.recv_bytes_into(&mut exact).expect("exact fit"), 4);
    assert_eq!(&exact, b"next");
}

/// Bytes that are no valid encoding of the expected type are
/// [`Error::Decode`]; the bad message is consumed and the next arrives.
pub fn garbage_is_a_decode_error_and_the_channel_survives<S: SuiteSender, R: SuiteReceiver>(
    make: impl Fn() -> (S, R),
) {
    let (mut tx, mut rx) = make();
    // A string whose bytes are not UTF-8.
    tx.send_bytes(&[3, 0xff, 0xfe, 0xfd]).expect("send_bytes");
    // A varint that never ends.
    tx.send_bytes(&[0xff; 12]).expect("send_bytes");
    // An enum variant that does not exist.
    tx.send_bytes(&[200]).expect("send_bytes");
    // A length that runs past the end of the message.
    tx.send_bytes(&[50, b'a']).expect("send_bytes");
    Sender::<String>::send(&mut tx, &"after the garbage".to_owned()).expect("send");
    let bad_string = Receiver::<String>::recv_timeout(&mut rx, PATIENCE);
    assert!(
        matches!(bad_string, Err(Error::Decode(_))),
        "not UTF-8: {bad_string:?}"
    );
    let bad_varint = Receiver::<u64>::recv_timeout(&mut rx, PATIENCE);
    assert!(
        matches!(bad_varint, Err(Error::Decode(_))),
        "endless varint: {bad_varint:?}"
    );
    let bad_variant = Receiver::<Shape>::recv_timeout(&mut rx, PATIENCE);
    assert!(
        matches!(bad_variant, Err(Error::Decode(_))),
        "bad variant: {bad_variant:?}"
    );
    let short = Receiver::<String>::recv_timeout(&mut rx, PATIENCE);
    assert!(
        matches!(short, Err(Error::Decode(_))),
        "short string: {short:?}"
    );
    assert_eq!(
        recv_now::<String, _>(&mut rx, "the message after"),
        "after the garbage"
    );
}

/// A message of another type than expected is [`Error::Decode`] (trailing
/// bytes count), not a silently wrong value.
pub fn wrong_type_is_a_decode_error<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    Sender::<Shape>::send(&mut tx, &Shape::Rect { w: 1, h: 2 }).expect("send");
    Sender::<u64>::send(&mut tx, &300).expect("send");
    let unit = Receiver::<()>::recv_timeout(&mut rx, PATIENCE);
    assert!(
        matches!(unit, Err(Error::Decode(_))),
        "a Shape as (): {unit:?}"
    );
    let record = Receiver::<Record>::recv_timeout(&mut rx, PATIENCE);
    assert!(
        matches!(record, Err(Error::Decode(_))),
        "a u64 as Record: {record:?}"
    );
    Sender::<u64>::send(&mut tx, &301).expect("send");
    assert_eq!(recv_now::<u64, _>(&mut rx, "301"), 301);
}

/// Once the sender is gone, what it sent still arrives, and then every
/// receive is [`Error::Closed`] at once (not `Timeout`, not `Empty`).
pub fn closed_peer_after_draining<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, mut rx) = make();
    Sender::<u64>::send(&mut tx, &1).expect("send");
    tx.send_bytes(b"").expect("send_bytes");
    tx.send_bytes(b"last").expect("send_bytes");
    drop(tx);
    assert_eq!(recv_now::<u64, _>(&mut rx, "1"), 1);
    assert_eq!(recv_bytes_now(&mut rx, "the empty message"), b"");
    assert_eq!(recv_bytes_now(&mut rx, "last"), b"last");
    let start = Instant::now();
    for _ in 0..2 {
        let typed = Receiver::<u64>::recv(&mut rx);
        assert!(matches!(typed, Err(Error::Closed)), "recv: {typed:?}");
        let bytes = rx.recv_bytes();
        assert!(matches!(bytes, Err(Error::Closed)), "recv_bytes: {bytes:?}");
        let timed = Receiver::<u64>::recv_timeout(&mut rx, Duration::from_secs(60));
        assert!(
            matches!(timed, Err(Error::Closed)),
            "recv_timeout: {timed:?}"
        );
        let tried = rx.try_recv_bytes();
        assert!(
            matches!(tried, Err(Error::Closed)),
            "try_recv_bytes: {tried:?}"
        );
        let mut buf = [0u8; 8];
        let into = rx.recv_bytes_into(&mut buf);
        assert!(
            matches!(into, Err(Error::Closed)),
            "recv_bytes_into: {into:?}"
        );
    }
    assert!(
        start.elapsed() < PATIENCE,
        "Closed took {:?}",
        start.elapsed()
    );
}

/// Sending once the receiver is gone is [`Error::Closed`] (within a few
/// sends, for mechanisms that buffer), never a crash or a hang.
pub fn send_to_closed_peer_is_closed<S: SuiteSender, R: SuiteReceiver>(make: impl Fn() -> (S, R)) {
    let (mut tx, rx) = make();
    drop(rx);
    let deadline = Instant::now() + PATIENCE;
    let msg = [7u8; 1024];
    let err = loop {
        match tx.send_bytes(&msg) {
            Ok(()) if Instant::now() < deadline => continue,
            Ok(()) => panic!("sends to a closed peer kept succeeding"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, Error::Closed),
        "send to a closed peer: {err:?}"
    );
    let again = Sender::<u64>::send(&mut tx, &1);
    assert!(
        matches!(again, Err(Error::Closed)),
        "second send: {again:?}"
    );
}

/// A forked child sends `n` records and then a 4 MiB message; the parent
/// receives them all in order, then [`Error::Closed`], and the child exits
/// with 0.
///
/// Forks: call it from a single-threaded process (one test per process).
pub fn cross_process_send<S, R>(make: impl Fn() -> (S, R), n: u32)
where
    S: SuiteSender + Inheritable,
    R: SuiteReceiver,
{
    let (mut tx, mut rx) = make();
    let big = pattern(4, 4 << 20);
    let child_big = big.clone();
    let mut child = Process::new()
        .allow_threads()
        .pass("tx", &tx)
        .expect("pass the sender")
        .fork(move || -> ipc_core::Result<()> {
            for i in 0..n {
                Sender::<Record>::send(&mut tx, &record(i))?;
            }
            tx.send_bytes(&child_big)
        })
        .expect("fork");
    for i in 0..n {
        let got: Record = recv_now(&mut rx, &format!("record {i} from the child"));
        assert_eq!(got, record(i), "records out of order");
    }
    let got = recv_bytes_now(&mut rx, "the 4 MiB message from the child");
    assert!(got == big, "the 4 MiB message changed on the way");
    let status = child
        .join_timeout(PATIENCE)
        .expect("join")
        .expect("the child did not exit");
    assert!(status.success(), "the child failed: {status:?}");
    let end = Receiver::<Record>::recv_timeout(&mut rx, PATIENCE);
    assert!(
        matches!(end, Err(Error::Closed)),
        "after the child exited: {end:?}"
    );
}

/// The parent sends `n` records and a 4 MiB message to a forked child,
/// which checks each (exit code 2 for a wrong one, 3 for a missing
/// [`Error::Closed`] at the end) and exits with 0.
///
/// Forks: call it from a single-threaded process (one test per process).
pub fn cross_process_recv<S, R>(make: impl Fn() -> (S, R), n: u32)
where
    S: SuiteSender,
    R: SuiteReceiver + Inheritable,
{
    let (mut tx, mut rx) = make();
    let big = pattern(5, 4 << 20);
    let child_big = big.clone();
    let mut child = Process::new()
        .allow_threads()
        .pass("rx", &rx)
        .expect("pass the receiver")
        .fork(move || -> i32 {
            for i in 0..n {
                match Receiver::<Record>::recv_timeout(&mut rx, PATIENCE) {
                    Ok(got) if got == record(i) => {}
                    _ => return 2,
                }
            }
            match rx.recv_bytes_timeout(PATIENCE) {
                Ok(got) if got == child_big => {}
                _ => return 2,
            }
            match rx.recv_bytes_timeout(PATIENCE) {
                Err(Error::Closed) => 0,
                _ => 3,
            }
        })
        .expect("fork");
    for i in 0..n {
        Sender::<Record>::send(&mut tx, &record(i)).expect("send to the child");
    }
    tx.send_bytes(&big).expect("send 4 MiB to the child");
    drop(tx);
    let status = child
        .join_timeout(PATIENCE)
        .expect("join")
        .expect("the child did not exit");
    assert_eq!(
        status.code(),
        Some(0),
        "the child saw something wrong: {status:?}"
    );
}
