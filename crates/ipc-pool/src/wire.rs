//! What travels between the pool and a worker: a chunk of tasks in one
//! frame, and the worker's outcomes for a run of them in another.
//!
//! Both are runs of records after a 4-byte count, each a header and the
//! bytes it announces: one byte for a record shorter than [`SHORT`] (its
//! length), else [`LONG`] and a 4-byte little-endian length; an argument or
//! a result inside a record is a postcard value ([`ipc_core::codec`]). A
//! small task's record is then its value and one byte, where a fixed
//! 4-byte length made every frame of a `map` of numbers half overhead, and
//! each byte is copied several times on its way. Each task has a record
//! of its own, so the worker decodes each argument on its own (one that
//! does not decode fails alone), the pool can split a chunk without
//! knowing its types, and no byte of a task is copied on its way from the
//! frame to the entry. Plain lengths, not a serde sequence: at tens
//! of nanoseconds a task, serde's per-element calls cost more than the
//! tasks of a `map` of small items.
//!
//! ```text
//! record:   u8 length (< SHORT), bytes | u8 LONG, u32 length, bytes
//! chunk:    entry name record, u32 count, count × argument record
//! outcomes: u32 count, count × (result record | u8 FAILED, u32 length, ChildFailure)
//! ```

use ipc_core::spawn::ChildFailure;
use ipc_core::{codec, Error, Result};
use serde::Serialize;

/// The largest argument or result one task may have: a frame holds at
/// least one, with room to spare for the chunk's own fields.
pub(crate) const MAX_TASK_BYTES: u64 = ipc_core::DEFAULT_MAX_MESSAGE_SIZE - 4096;

/// A worker sends its outcomes once they pass this many bytes, without
/// waiting for the end of the chunk.
pub(crate) const FLUSH_BYTES: usize = 4 << 20;

/// A record shorter than this has a one-byte header, its length.
const SHORT: u8 = 0xFC;
/// The header of a record whose 4-byte length follows.
const LONG: u8 = 0xFE;
/// The header of an outcome that is why a task has no result, its 4-byte
/// length following. (No header is `0xFC` or `0xFD`.)
const FAILED: u8 = 0xFF;

/// Starts a record at the end of `frame` with a header of one byte if
/// `short`, else of five: writers guess from the record before, so that
/// [`end_record`] seldom has to move a record to widen its header.
#[inline]
fn begin_record(frame: &mut Vec<u8>, short: bool) -> usize {
    let at = frame.len();
    if short {
        frame.push(0);
    } else {
        frame.extend_from_slice(&[LONG, 0, 0, 0, 0]);
    }
    at
}

/// Ends the record begun at `at` (by `begin_record` with `short`): gives
/// whether it is short, or its size if it is too large.
#[inline(always)]
fn end_record(frame: &mut Vec<u8>, at: usize, short: bool) -> std::result::Result<bool, u64> {
    let header = if short { 1 } else { 5 };
    let len = frame.len() - at - header;
    if len as u64 > MAX_TASK_BYTES {
        return Err(len as u64);
    }
    if len < usize::from(SHORT) {
        if short {
            frame[at] = len as u8;
        } else {
            // The wide header is valid for any length; keep it.
            frame[at + 1..at + 5].copy_from_slice(&(len as u32).to_le_bytes());
        }
        return Ok(true);
    }
    if short {
        widen(frame, at);
    }
    frame[at] = LONG;
    frame[at + 1..at + 5].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(false)
}

/// Widens the one-byte header of the record at `at` to five bytes: the one
/// move of a large record after small ones, kept out of line so that the
/// small ones' path stays short enough to inline.
#[cold]
fn widen(frame: &mut Vec<u8>, at: usize) {
    let end = frame.len();
    frame.extend_from_slice(&[0; 4]);
    frame.copy_within(at + 1..end, at + 5);
}

/// Appends a record of `bytes`.
fn put_record(frame: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() < usize::from(SHORT) {
        frame.push(bytes.len() as u8);
    } else {
        frame.push(LONG);
        frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    frame.extend_from_slice(bytes);
}

/// Reads frames from the front.
struct Reader<'a>(&'a [u8]);

// Inlined: they run once or twice a task, in generic code elsewhere.
impl<'a> Reader<'a> {
    #[inline]
    fn u32(&mut self) -> Result<u32> {
        let (word, rest) = self.0.split_first_chunk::<4>().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(u32::from_le_bytes(*word))
    }

    #[inline]
    fn u8(&mut self) -> Result<u8> {
        let (byte, rest) = self.0.split_first().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(*byte)
    }

    /// A record: its header, then its bytes.
    #[inline]
    fn record(&mut self) -> Result<&'a [u8]> {
        let header = self.u8()?;
        self.body(header)
    }

    /// The bytes of a record whose header was `header`.
    #[inline]
    fn body(&mut self, header: u8) -> Result<&'a [u8]> {
        let len = match header {
            short if short < SHORT => usize::from(short),
            LONG => self.u32()? as usize,
            _ => return Err(Error::Decode(postcard::Error::DeserializeBadEnum)),
        };
        self.long_body(len)
    }

    /// The next `len` bytes.
    #[inline]
    fn long_body(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.0.len() < len {
            return Err(truncated());
        }
        let (record, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(record)
    }
}

fn truncated() -> Error {
    Error::Decode(postcard::Error::DeserializeUnexpectedEnd)
}

/// Writes a chunk one argument at a time; an argument that does not encode
/// is left out and its error returned.
pub(crate) struct ChunkWriter {
    frame: Vec<u8>,
    /// Where the count goes.
    count_at: usize,
    count: usize,
    /// Whether the last argument was short: the next likely is too.
    short: bool,
}

impl ChunkWriter {
    /// A chunk of tasks for the entry `entry`, with room for `capacity`
    /// bytes of arguments before it grows.
    pub fn new(entry: &str, capacity: usize) -> ChunkWriter {
        let mut frame = Vec::with_capacity(entry.len() + 9 + capacity);
        put_record(&mut frame, entry.as_bytes());
        let count_at = frame.len();
        frame.extend_from_slice(&[0; 4]);
        ChunkWriter {
            frame,
            count_at,
            count: 0,
            short: true,
        }
    }

    /// Adds `argument`, or returns why it cannot travel: it does not
    /// encode, or it is larger than a frame may be.
    pub fn push<A: Serialize>(&mut self, argument: &A) -> Result<()> {
        let at = begin_record(&mut self.frame, self.short);
        if let Err(e) = codec::encode_into(argument, &mut self.frame) {
            self.frame.truncate(at);
            return Err(e);
        }
        match end_record(&mut self.frame, at, self.short) {
            Ok(short) => {
                self.short = short;
                self.count += 1;
                Ok(())
            }
            Err(size) => {
                self.frame.truncate(at);
                Err(Error::TooLarge {
                    size,
                    limit: MAX_TASK_BYTES,
                })
            }
        }
    }

    /// How many arguments it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// How many bytes it takes.
    pub fn bytes(&self) -> usize {
        self.frame.len()
    }

    /// The chunk's frame.
    pub fn finish(mut self) -> Vec<u8> {
        let count = (self.count as u32).to_le_bytes();
        self.frame[self.count_at..self.count_at + 4].copy_from_slice(&count);
        self.frame
    }
}

/// A chunk as the worker and the dispatcher read it.
pub(crate) struct Chunk<'a> {
    pub entry: &'a str,
    pub count: usize,
    arguments: Reader<'a>,
}

impl<'a> Chunk<'a> {
    /// Reads a chunk's frame, up to its first argument.
    pub fn read(frame: &'a [u8]) -> Result<Chunk<'a>> {
        let mut reader = Reader(frame);
        let entry = std::str::from_utf8(reader.record()?)
            .map_err(|_| Error::Decode(postcard::Error::DeserializeBadUtf8))?;
        let count = reader.u32()? as usize;
        Ok(Chunk {
            entry,
            count,
            arguments: reader,
        })
    }

    /// Its next argument's bytes.
    #[inline]
    pub fn next_argument(&mut self) -> Result<&'a [u8]> {
        self.arguments.record()
    }

    /// Splits its arguments into a chunk of the first `at` and a chunk of
    /// the rest.
    pub fn split(mut self, at: usize) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut head = ChunkFrame::new(self.entry);
        let mut tail = ChunkFrame::new(self.entry);

        for k in 0..self.count {
            let argument = self.next_argument()?;
            if k < at { &mut head } else { &mut tail }.push(argument);
        }
        Ok((head.finish(), tail.finish()))
    }
}

/// A chunk written from arguments already encoded.
struct ChunkFrame(ChunkWriter);

impl ChunkFrame {
    fn new(entry: &str) -> ChunkFrame {
        ChunkFrame(ChunkWriter::new(entry, 0))
    }

    fn push(&mut self, argument: &[u8]) {
        let writer = &mut self.0;
        put_record(&mut writer.frame, argument);
        writer.count += 1;
    }

    fn finish(self) -> Vec<u8> {
        self.0.finish()
    }
}

/// Writes a worker's outcomes: each task's result is appended in place by
/// the entry, with no copy.
pub(crate) struct OutcomeWriter {
    frame: Vec<u8>,
    count: u32,
    /// Whether the last result was short: the next likely is too.
    short: bool,
    /// Where the record of a task whose run has not returned begins.
    open: Option<usize>,
}

impl OutcomeWriter {
    pub fn new() -> OutcomeWriter {
        OutcomeWriter {
            frame: vec![0; 4],
            count: 0,
            short: true,
            open: None,
        }
    }

    /// Adds one task's outcome: `run` appends its encoded result to the
    /// buffer, or says why there is none. Should `run` panic, the record it
    /// began stays open until [`abandon`](Self::abandon).
    pub fn push(
        &mut self,
        run: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), ChildFailure>,
    ) {
        let at = begin_record(&mut self.frame, self.short);
        self.open = Some(at);
        let failure = match run(&mut self.frame) {
            Ok(()) => match end_record(&mut self.frame, at, self.short) {
                Ok(short) => {
                    self.short = short;
                    None
                }
                Err(size) => Some(ChildFailure::Codec(format!(
                    "a result of {size} bytes is larger than a frame may be ({MAX_TASK_BYTES} bytes)"
                ))),
            },
            Err(failure) => Some(failure),
        };
        self.open = None;
        match failure {
            Some(failure) => self.fail_at(at, &failure),
            None => self.count += 1,
        }
    }

    /// Ends the record a panicking `run` left open, if any, with
    /// `failure` in its place.
    pub fn abandon(&mut self, failure: &ChildFailure) {
        if let Some(at) = self.open.take() {
            self.fail_at(at, failure);
        }
    }

    /// Writes `failure` as the outcome whose record begins at `at`.
    fn fail_at(&mut self, at: usize, failure: &ChildFailure) {
        self.frame.truncate(at);
        self.frame.extend_from_slice(&[FAILED, 0, 0, 0, 0]);
        // A failure's text is small: it always encodes and fits.
        let _ = codec::encode_into(failure, &mut self.frame);
        let len = (self.frame.len() - at - 5) as u32;
        self.frame[at + 1..at + 5].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    /// How many bytes it takes.
    pub fn bytes(&self) -> usize {
        self.frame.len()
    }

    /// Its frame, after which it starts again empty.
    pub fn frame(&mut self) -> &[u8] {
        self.frame[..4].copy_from_slice(&self.count.to_le_bytes());
        &self.frame
    }

    /// Starts again empty.
    pub fn clear(&mut self) {
        self.frame.truncate(4);
        self.count = 0;
    }
}

/// How many outcomes a worker's frame holds: all the pool reads of it
/// before handing it to the caller, who decodes them with [`outcomes`].
pub(crate) fn outcome_count(frame: &[u8]) -> Result<usize> {
    Reader(frame).u32().map(|n| n as usize)
}

/// The outcomes of a worker's frame, each a task's encoded result or why
/// there is none; a malformed record ends them with its error.
pub(crate) fn outcomes(frame: &[u8]) -> Outcomes<'_> {
    let mut reader = Reader(frame);
    let left = reader.u32().map_or(0, |n| n as usize);
    Outcomes { reader, left }
}

/// Hands `each` the encoded result of each of the first `count` outcomes
/// of a worker's frame, in order, until one is not a result: the task's
/// failure ([`Error::Child`]), a malformed record, or the error of `each`
/// ends them. Gives how many it read: fewer than `count` if the frame holds
/// fewer. What [`outcomes`] reads, without an item per outcome to build and
/// match: the caller of a `map` of small tasks feels each.
pub(crate) fn each_result(
    frame: &[u8],
    count: usize,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<usize> {
    let mut reader = Reader(frame);
    let count = count.min(reader.u32().map_or(0, |n| n as usize));
    for _ in 0..count {
        let header = reader.u8()?;
        if header == FAILED {
            let len = reader.u32()? as usize;
            let failure = codec::decode::<ChildFailure>(reader.long_body(len)?)?;
            return Err(Error::Child(Box::new(failure)));
        }
        each(reader.body(header)?)?;
    }
    Ok(count)
}

/// The iterator of [`outcomes`].
pub(crate) struct Outcomes<'a> {
    reader: Reader<'a>,
    /// Outcomes still to read; none after a malformed one.
    left: usize,
}

impl<'a> Iterator for Outcomes<'a> {
    type Item = Result<std::result::Result<&'a [u8], ChildFailure>>;

    // Inlined: it runs once a task, in the caller's generic decoding.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let reader = &mut self.reader;
        let outcome = reader.u8().and_then(|header| match header {
            FAILED => {
                let len = reader.u32()? as usize;
                codec::decode::<ChildFailure>(reader.long_body(len)?).map(Err)
            }
            header => reader.body(header).map(Ok),
        });
        if outcome.is_err() {
            self.left = 0;
        }
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_written_by_argument_reads_back_and_splits() {
        let mut writer = ChunkWriter::new("m::f", 0);
        writer.push(&7u64).unwrap();
        writer.push(&"eight").unwrap();
        assert_eq!(writer.len(), 2);
        let frame = writer.finish();
        let mut chunk = Chunk::read(&frame).unwrap();
        assert_eq!((chunk.entry, chunk.count), ("m::f", 2));
        assert_eq!(
            codec::decode::<u64>(chunk.next_argument().unwrap()).unwrap(),
            7
        );
        let eight = chunk.next_argument().unwrap();
        assert_eq!(codec::decode::<String>(eight).unwrap(), "eight");
        assert!(chunk.next_argument().is_err());
        let (head, tail) = Chunk::read(&frame).unwrap().split(1).unwrap();
        let mut head = Chunk::read(&head).unwrap();
        assert_eq!(head.count, 1);
        assert_eq!(
            codec::decode::<u64>(head.next_argument().unwrap()).unwrap(),
            7
        );
        let mut tail = Chunk::read(&tail).unwrap();
        assert_eq!((tail.entry, tail.count), ("m::f", 1));
        assert_eq!(tail.next_argument().unwrap(), eight);
        // Cut short: the frame says more than it holds.
        assert!(Chunk::read(&frame[..frame.len() - 1])
            .unwrap()
            .split(1)
            .is_err());
    }

    #[test]
    fn long_records_among_short_ones_read_back() {
        let long = "x".repeat(300);
        let edge = "y".repeat(usize::from(SHORT) - 2);
        let mut writer = ChunkWriter::new("m::f", 0);
        for argument in [&long, &"a".to_string(), &long, &long, &edge, &edge, &long] {
            writer.push(argument).unwrap();
        }
        let frame = writer.finish();
        let read = |frame: &[u8]| {
            let mut chunk = Chunk::read(frame).unwrap();
            (0..chunk.count)
                .map(|_| codec::decode::<String>(chunk.next_argument().unwrap()).unwrap())
                .collect::<Vec<_>>()
        };
        let all = read(&frame);
        assert_eq!(all, [&long, "a", &long, &long, &edge, &edge, &long]);
        let (head, tail) = Chunk::read(&frame).unwrap().split(3).unwrap();
        assert_eq!([read(&head), read(&tail)].concat(), all);

        let mut outcomes_out = OutcomeWriter::new();
        for result in &all {
            outcomes_out.push(|out| {
                codec::encode_into(result, out).map_err(|e| ChildFailure::Codec(e.to_string()))
            });
        }
        outcomes_out.push(|_| Err(ChildFailure::Panicked("p".repeat(300))));
        let frame = outcomes_out.frame().to_vec();
        let read: Vec<_> = outcomes(&frame).map(|o| o.unwrap()).collect();
        assert_eq!(read.len(), all.len() + 1);
        for (outcome, result) in read.iter().zip(&all) {
            assert_eq!(
                codec::decode::<String>(outcome.clone().unwrap()).unwrap(),
                *result
            );
        }
        assert_eq!(
            read[all.len()],
            Err(ChildFailure::Panicked("p".repeat(300)))
        );
    }

    #[test]
    fn outcomes_read_back_and_garbage_ends_them() {
        let mut writer = OutcomeWriter::new();
        writer.push(|out| {
            codec::encode_into(&9u64, out).map_err(|e| ChildFailure::Codec(e.to_string()))
        });
        writer.push(|out| {
            out.extend_from_slice(b"half a result");
            Err(ChildFailure::Panicked("no".into()))
        });
        let frame = writer.frame().to_vec();
        assert_eq!(outcome_count(&frame).unwrap(), 2);
        let read: Vec<_> = outcomes(&frame).map(|o| o.unwrap()).collect();
        assert_eq!(
            read,
            [Ok(&[9u8][..]), Err(ChildFailure::Panicked("no".into()))]
        );
        let mut cut = frame.clone();
        cut.truncate(frame.len() - 1);
        let read: Vec<_> = outcomes(&cut).collect();
        assert!(read[0].is_ok() && read[1].is_err() && read.len() == 2);
        let mut bad_tag = frame;
        bad_tag[4] = 0xFD;
        assert_eq!(outcomes(&bad_tag).count(), 1, "the first error ends them");
        writer.clear();
        assert_eq!(outcome_count(writer.frame()).unwrap(), 0);
    }
}
