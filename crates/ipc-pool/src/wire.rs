//! What travels between the pool and a worker: a chunk of tasks in one
//! frame, and the worker's outcomes for a run of them in another.
//!
//! Both are runs of records ([`ipc_core::spawn::batch`]): a chunk is the
//! entry's name in a record, a 4-byte count and the arguments' records; a
//! worker's outcomes are a 4-byte count and the outcomes' records. No byte
//! of a task is copied on its way from the frame to the entry.
//!
//! ```text
//! chunk:    entry name record, u32 count, count × argument record
//! outcomes: u32 count, count × outcome record
//! ```

use ipc_core::spawn::batch::{self, put_record, Reader, RecordWriter, Tasks};
use ipc_core::{codec, Error, Result};
use serde::Serialize;

pub(crate) use batch::{outcome_count, outcomes};

/// Writes a chunk one argument at a time; an argument that does not encode
/// is left out and its error returned.
pub(crate) struct ChunkWriter {
    frame: Vec<u8>,
    /// Where the count goes.
    count_at: usize,
    count: usize,
    records: RecordWriter,
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
            records: RecordWriter::default(),
        }
    }

    /// Adds `argument`, or returns why it cannot travel: it does not
    /// encode, or it is larger than a frame may be.
    #[inline]
    pub fn push<A: Serialize>(&mut self, argument: &A) -> Result<()> {
        self.records.write(&mut self.frame, |frame| {
            codec::encode_into_for::<Arguments, A>(argument, frame)
        })?;
        self.count += 1;
        Ok(())
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

    /// Its tasks, to run.
    pub fn tasks(&self) -> Tasks<'a> {
        Tasks::new(self.arguments, self.count)
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

/// The marker of the serde code that encodes a chunk's arguments
/// ([`codec::encode_into_for`]): only [`ChunkWriter::push`] uses it, so a
/// `map`'s loop of pushes gets that code inlined.
enum Arguments {}

/// Hands `each` the encoded result of each of the first `count` outcomes
/// of a worker's frame, in order, until one is not a result: the task's
/// failure ([`Error::Child`]), a malformed record, or the error of `each`
/// ends them. Gives how many it read: fewer than `count` if the frame holds
/// fewer. What [`outcomes`] reads, without an item per outcome to build and
/// match: the caller of a `map` of small tasks feels each.
#[inline]
pub(crate) fn each_result(
    frame: &[u8],
    count: usize,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<usize> {
    let mut reader = Reader(frame);
    let count = count.min(reader.u32().map_or(0, |n| n as usize));
    for _ in 0..count {
        match reader.outcome()? {
            Ok(result) => each(result)?,
            Err(failure) => return Err(Error::Child(Box::new(failure))),
        }
    }
    Ok(count)
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
        let edge = "y".repeat(0xFC - 2);
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
    }
}
