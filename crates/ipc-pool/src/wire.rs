//! What travels between the pool and a worker: a chunk of tasks in one
//! frame, and the worker's outcomes for a run of them in another.
//!
//! Both are runs of records, each a 4-byte little-endian length and that
//! many bytes, after a 4-byte count; an argument or a result inside a
//! record is a postcard value ([`ipc_core::codec`]). Each task has a record
//! of its own, so the worker decodes each argument on its own (one that
//! does not decode fails alone), the pool can split a chunk without
//! knowing its types, and no byte of a task is copied on its way from the
//! frame to the entry. Fixed-width lengths, not a serde sequence: at tens
//! of nanoseconds a task, serde's per-element calls cost more than the
//! tasks of a `map` of small items.
//!
//! ```text
//! chunk:    u32 entry length, entry name, u32 count, count × (u32 length, argument)
//! outcomes: u32 count, count × (u8 0, u32 length, result | u8 1, u32 length, ChildFailure)
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

/// The tag of a task's outcome record: its result, or why there is none.
const OK: u8 = 0;
const FAILED: u8 = 1;

/// Starts a record at the end of `frame`; [`end_record`] gives its length.
fn begin_record(frame: &mut Vec<u8>) -> usize {
    let at = frame.len();
    frame.extend_from_slice(&[0; 4]);
    at
}

/// Ends the record begun at `at`, or gives its size if it is too large.
fn end_record(frame: &mut [u8], at: usize) -> std::result::Result<(), u64> {
    let len = frame.len() - at - 4;
    if len as u64 > MAX_TASK_BYTES {
        return Err(len as u64);
    }
    frame[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads frames from the front.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32> {
        let (word, rest) = self.0.split_first_chunk::<4>().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(u32::from_le_bytes(*word))
    }

    fn u8(&mut self) -> Result<u8> {
        let (byte, rest) = self.0.split_first().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(*byte)
    }

    fn record(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
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
}

impl ChunkWriter {
    /// A chunk of tasks for the entry `entry`, with room for `capacity`
    /// bytes of arguments before it grows.
    pub fn new(entry: &str, capacity: usize) -> ChunkWriter {
        let mut frame = Vec::with_capacity(entry.len() + 8 + capacity);
        let at = begin_record(&mut frame);
        frame.extend_from_slice(entry.as_bytes());
        let _ = end_record(&mut frame, at);
        let count_at = frame.len();
        frame.extend_from_slice(&[0; 4]);
        ChunkWriter {
            frame,
            count_at,
            count: 0,
        }
    }

    /// Adds `argument`, or returns why it cannot travel: it does not
    /// encode, or it is larger than a frame may be.
    pub fn push<A: Serialize>(&mut self, argument: &A) -> Result<()> {
        let at = begin_record(&mut self.frame);
        let written = codec::encode_into(argument, &mut self.frame).and_then(|()| {
            end_record(&mut self.frame, at).map_err(|size| Error::TooLarge {
                size,
                limit: MAX_TASK_BYTES,
            })
        });
        match written {
            Ok(()) => self.count += 1,
            Err(_) => self.frame.truncate(at),
        }
        written
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
        writer
            .frame
            .extend_from_slice(&(argument.len() as u32).to_le_bytes());
        writer.frame.extend_from_slice(argument);
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
}

impl OutcomeWriter {
    pub fn new() -> OutcomeWriter {
        OutcomeWriter {
            frame: vec![0; 4],
            count: 0,
        }
    }

    /// Adds one task's outcome: `run` appends its encoded result to the
    /// buffer, or says why there is none.
    pub fn push(
        &mut self,
        run: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), ChildFailure>,
    ) {
        let tag_at = self.frame.len();
        self.frame.push(OK);
        let at = begin_record(&mut self.frame);
        let failure = match run(&mut self.frame) {
            Ok(()) => match end_record(&mut self.frame, at) {
                Ok(()) => None,
                Err(size) => Some(ChildFailure::Codec(format!(
                    "a result of {size} bytes is larger than a frame may be ({MAX_TASK_BYTES} bytes)"
                ))),
            },
            Err(failure) => Some(failure),
        };
        if let Some(failure) = failure {
            self.frame.truncate(tag_at);
            self.frame.push(FAILED);
            let at = begin_record(&mut self.frame);
            // A failure's text is small: it always encodes and fits.
            let _ = codec::encode_into(&failure, &mut self.frame);
            let _ = end_record(&mut self.frame, at);
        }
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
pub(crate) fn outcomes(
    frame: &[u8],
) -> impl Iterator<Item = Result<std::result::Result<&[u8], ChildFailure>>> + '_ {
    let mut reader = Reader(frame);
    let count = reader.u32().map_or(0, |n| n as usize);
    let mut broken = false;
    (0..count).map_while(move |_| {
        if broken {
            return None;
        }
        let outcome = reader.u8().and_then(|tag| {
            let record = reader.record()?;
            match tag {
                OK => Ok(Ok(record)),
                FAILED => codec::decode::<ChildFailure>(record).map(Err),
                _ => Err(Error::Decode(postcard::Error::DeserializeBadEnum)),
            }
        });
        broken = outcome.is_err();
        Some(outcome)
    })
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
        bad_tag[4] = 7;
        assert_eq!(outcomes(&bad_tag).count(), 1, "the first error ends them");
        writer.clear();
        assert_eq!(outcome_count(writer.frame()).unwrap(), 0);
    }
}
