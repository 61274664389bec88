//! Many tasks of one entry in one call, for a worker that runs many small
//! tasks (ipc-pool's): a run of encoded arguments in, a run of outcomes
//! out. The registered entry runs the whole run in code made for its own
//! types, so a task costs a decode, a call and an encode, with no indirect
//! call and no unwind guard of its own.
//!
//! Both runs are records, each a header and the bytes it announces: one
//! byte for a record shorter than `0xFC` (its length), else `0xFE` and a
//! 4-byte little-endian length; an argument or a result is a postcard
//! value ([`codec`]). An outcome that is a failure is `0xFF`, a 4-byte
//! length and the [`ChildFailure`]. A small task's record is then its
//! value and one byte, where a fixed 4-byte length made every frame of a
//! `map` of numbers half overhead. Each task has a record of its own, so
//! an argument that does not decode fails alone, and a run can be split
//! without knowing its types. Plain lengths, not a serde sequence: at a
//! few nanoseconds a task, serde's per-element calls cost more than the
//! tasks of a `map` of small items.
//!
//! ```text
//! argument: u8 length (< SHORT), bytes | u8 LONG, u32 length, bytes
//! outcome:  an argument's form holding the result | u8 FAILED, u32 length, ChildFailure
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{panic_failure, ChildFailure, Runner};
use crate::{codec, Error, Result};

/// A run of arguments (a chunk) is ended once it passes this many bytes,
/// whatever its count.
pub const RUN_BYTES: usize = 16 << 20;

/// Outcomes are handed on once they pass this many bytes, without waiting
/// for the end of the run.
pub const FLUSH_BYTES: usize = 4 << 20;

/// The largest argument or result one task may have. A frame is ended
/// after the record that takes it past [`RUN_BYTES`] (arguments) or
/// [`FLUSH_BYTES`] (outcomes), so it holds less than that before its last
/// record, and this leaves room for one more of any size, and for the
/// frame's own fields, within a message.
pub const MAX_RECORD_BYTES: u64 = crate::DEFAULT_MAX_MESSAGE_SIZE - RUN_BYTES as u64 - 4096;

const _: () = assert!(FLUSH_BYTES <= RUN_BYTES);

/// A record shorter than this has a one-byte header, its length.
const SHORT: u8 = 0xFC;
/// The header of a record whose 4-byte length follows.
const LONG: u8 = 0xFE;
/// The header of an outcome that is why a task has no result, its 4-byte
/// length following. (No header is `0xFC` or `0xFD`.)
const FAILED: u8 = 0xFF;

/// Appends records to a frame, guessing each header's width from the
/// record before, so that a record seldom has to move to widen its header.
#[derive(Debug)]
pub struct RecordWriter {
    short: bool,
}

impl Default for RecordWriter {
    fn default() -> Self {
        RecordWriter { short: true }
    }
}

impl RecordWriter {
    /// Appends a record that `write` fills, or returns why it cannot be
    /// one (the frame is then as before): `write`'s error, or that the
    /// record is larger than [`MAX_RECORD_BYTES`].
    #[inline(always)]
    pub fn write<E: From<TooLarge>>(
        &mut self,
        frame: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let at = self.begin(frame);
        if let Err(e) = write(frame) {
            frame.truncate(at);
            return Err(e);
        }
        self.end(frame, at).map_err(|size| {
            frame.truncate(at);
            E::from(TooLarge(size))
        })
    }

    /// Starts a record at the end of `frame`; gives where it starts.
    #[inline(always)]
    fn begin(&self, frame: &mut Vec<u8>) -> usize {
        let at = frame.len();
        if self.short {
            frame.push(0);
        } else {
            frame.extend_from_slice(&[LONG, 0, 0, 0, 0]);
        }
        at
    }

    /// Ends the record begun at `at`, or gives its size if it is too large.
    #[inline(always)]
    fn end(&mut self, frame: &mut Vec<u8>, at: usize) -> std::result::Result<(), u64> {
        let header = if self.short { 1 } else { 5 };
        let len = frame.len() - at - header;
        if len as u64 > MAX_RECORD_BYTES {
            return Err(len as u64);
        }
        if len < usize::from(SHORT) {
            if self.short {
                frame[at] = len as u8;
            } else {
                // The wide header is valid for any length; keep it.
                frame[at + 1..at + 5].copy_from_slice(&(len as u32).to_le_bytes());
                self.short = true;
            }
            return Ok(());
        }
        if self.short {
            widen(frame, at);
            self.short = false;
        }
        frame[at] = LONG;
        frame[at + 1..at + 5].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
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

/// A record of this many bytes, more than [`MAX_RECORD_BYTES`].
#[derive(Clone, Copy, Debug)]
pub struct TooLarge(pub u64);

impl From<TooLarge> for Error {
    fn from(TooLarge(size): TooLarge) -> Error {
        Error::TooLarge {
            size,
            limit: MAX_RECORD_BYTES,
        }
    }
}

impl From<TooLarge> for ChildFailure {
    fn from(TooLarge(size): TooLarge) -> ChildFailure {
        ChildFailure::Codec(format!(
            "a result of {size} bytes is larger than a frame may be ({MAX_RECORD_BYTES} bytes)"
        ))
    }
}

/// Appends a record of `bytes`.
pub fn put_record(frame: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() < usize::from(SHORT) {
        frame.push(bytes.len() as u8);
    } else {
        frame.push(LONG);
        frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    frame.extend_from_slice(bytes);
}

/// Reads records and words from the front of a frame; each read that runs
/// past its end is an error, never a panic.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a>(pub &'a [u8]);

// Inlined: they run once or twice a task, in generic code elsewhere.
impl<'a> Reader<'a> {
    /// A little-endian 4-byte word.
    #[inline]
    pub fn u32(&mut self) -> Result<u32> {
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
    pub fn record(&mut self) -> Result<&'a [u8]> {
        let header = self.u8()?;
        self.body(header)
    }

    /// An outcome: a task's encoded result, or why it has none.
    #[inline]
    pub fn outcome(&mut self) -> Result<std::result::Result<&'a [u8], ChildFailure>> {
        match self.u8()? {
            FAILED => {
                let len = self.u32()? as usize;
                codec::decode::<ChildFailure>(self.take(len)?).map(Err)
            }
            header => self.body(header).map(Ok),
        }
    }

    /// The bytes of a record whose header was `header`.
    #[inline]
    fn body(&mut self, header: u8) -> Result<&'a [u8]> {
        let len = match header {
            short if short < SHORT => usize::from(short),
            LONG => self.u32()? as usize,
            _ => return Err(Error::Decode(postcard::Error::DeserializeBadEnum)),
        };
        self.take(len)
    }

    /// The next `len` bytes.
    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.0.len() < len {
            return Err(truncated());
        }
        let (record, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(record)
    }
}

/// The error of a read past the end of a frame.
pub fn truncated() -> Error {
    Error::Decode(postcard::Error::DeserializeUnexpectedEnd)
}

/// The tasks of a run still to do: their arguments, and the place of the
/// next one in the run.
#[derive(Debug)]
pub struct Tasks<'a> {
    arguments: Reader<'a>,
    count: usize,
    place: usize,
}

impl<'a> Tasks<'a> {
    /// `count` tasks whose argument records start `arguments`.
    pub fn new(arguments: Reader<'a>, count: usize) -> Tasks<'a> {
        Tasks {
            arguments,
            count,
            place: 0,
        }
    }

    /// Whether every task has its outcome.
    pub fn done(&self) -> bool {
        self.place >= self.count
    }

    /// The place of the next task in the run.
    pub fn place(&self) -> usize {
        self.place
    }
}

/// A worker's outcomes: each task's result is appended in place by the
/// entry, with no copy, after a 4-byte count.
#[derive(Debug)]
pub struct Outcomes {
    frame: Vec<u8>,
    count: u32,
    records: RecordWriter,
    /// Where the record of a task whose run has not returned begins.
    open: Option<usize>,
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            frame: vec![0; 4],
            count: 0,
            records: RecordWriter::default(),
            open: None,
        }
    }
}

impl Outcomes {
    /// Opens the record of a task's outcome at the end of the frame.
    #[inline(always)]
    fn begin(&mut self) -> usize {
        let at = self.records.begin(&mut self.frame);
        self.open = Some(at);
        at
    }

    /// Closes the record opened at `at`, holding the task's result if
    /// `written` is `Ok`, else its failure.
    #[inline(always)]
    fn end(&mut self, at: usize, written: std::result::Result<(), ChildFailure>) {
        self.open = None;
        let ended = written.and_then(|()| {
            self.records
                .end(&mut self.frame, at)
                .map_err(|size| ChildFailure::from(TooLarge(size)))
        });
        match ended {
            Ok(()) => self.count += 1,
            Err(failure) => {
                self.frame.truncate(at);
                self.fail(&failure);
            }
        }
    }

    /// Adds a task's outcome that is `failure`.
    #[cold]
    pub fn fail(&mut self, failure: &ChildFailure) {
        let at = self.frame.len();
        self.frame.extend_from_slice(&[FAILED, 0, 0, 0, 0]);
        // A failure's text is small (a panic's message is cut to 64 KiB):
        // it always encodes and fits.
        let _ = codec::encode_into(failure, &mut self.frame);
        let len = (self.frame.len() - at - 5) as u32;
        self.frame[at + 1..at + 5].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    /// Ends the record a panicking `run` left open with `failure` in its
    /// place; `false` if none was open.
    pub fn abandon(&mut self, failure: &ChildFailure) -> bool {
        let Some(at) = self.open.take() else {
            return false;
        };
        self.frame.truncate(at);
        self.fail(failure);
        true
    }

    /// How many outcomes it holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many bytes it takes.
    pub fn bytes(&self) -> usize {
        self.frame.len()
    }

    /// Its frame: the count, then the outcomes.
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

/// The outcomes of a frame written by [`Outcomes`], each a task's encoded
/// result or why there is none; a malformed record ends them with its
/// error.
pub fn outcomes(frame: &[u8]) -> OutcomeIter<'_> {
    let mut reader = Reader(frame);
    let left = reader.u32().map_or(0, |n| n as usize);
    OutcomeIter { reader, left }
}

/// How many outcomes a frame written by [`Outcomes`] says it holds.
pub fn outcome_count(frame: &[u8]) -> Result<usize> {
    Reader(frame).u32().map(|n| n as usize)
}

/// The iterator of [`outcomes`].
#[derive(Debug)]
pub struct OutcomeIter<'a> {
    reader: Reader<'a>,
    /// Outcomes still to read; none after a malformed one.
    left: usize,
}

impl<'a> Iterator for OutcomeIter<'a> {
    type Item = Result<std::result::Result<&'a [u8], ChildFailure>>;

    // Inlined: it runs once a task, in the caller's generic decoding.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let outcome = self.reader.outcome();
        if outcome.is_err() {
            self.left = 0;
        }
        Some(outcome)
    }
}

/// Runs tasks of `function` from `tasks` into `out` until every task has
/// its outcome or `out` holds [`FLUSH_BYTES`], writing each task's place to
/// `progress` before it starts; used by [`entry!`](crate::entry). A panic
/// goes through, leaving the panicking task's record open in `out`. `M`
/// is a type of the entry's own, so that the serde code of its argument
/// and result is inlined in this loop ([`codec::encode_into_for`]).
#[doc(hidden)]
#[inline(always)]
pub fn run_many<A: DeserializeOwned, R: Serialize, M: 'static>(
    function: fn(A) -> R,
    tasks: &mut Tasks<'_>,
    out: &mut Outcomes,
    progress: &AtomicU64,
) {
    // Written out, with no closure: each closure is a function the
    // compiler may keep out of line, and in a large program it does.
    //
    // On local copies, which `Resume` puts back when the loop ends or a
    // task panics: through `tasks` and `out`, every step's state was
    // stored to memory, since any call that may unwind could read it.
    let mut run = Resume::new(tasks, out);
    while run.tasks.place < run.tasks.count && run.out.bytes() < FLUSH_BYTES {
        progress.store(run.tasks.place as u64, Ordering::Relaxed);
        let argument = run.tasks.arguments.record();
        let at = run.out.begin();
        let written = match argument.and_then(codec::decode_for::<M, A>) {
            Ok(argument) => codec::encode_into_for::<M, R>(&function(argument), &mut run.out.frame),
            Err(e) => Err(e),
        };
        run.out
            .end(at, written.map_err(|e| ChildFailure::Codec(e.to_string())));
        run.tasks.place += 1;
    }
}

/// A run's tasks and outcomes, moved out of their places for a loop and
/// put back when it is dropped (the loop's end, or a panic).
struct Resume<'t, 'a, 'o> {
    tasks: Tasks<'a>,
    out: Outcomes,
    places: (&'t mut Tasks<'a>, &'o mut Outcomes),
}

impl<'t, 'a, 'o> Resume<'t, 'a, 'o> {
    #[inline(always)]
    fn new(tasks: &'t mut Tasks<'a>, out: &'o mut Outcomes) -> Self {
        Resume {
            tasks: std::mem::replace(tasks, Tasks::new(Reader(&[]), 0)),
            // A stand-in that allocates nothing: `Resume` puts the
            // outcomes back in its place.
            out: std::mem::replace(
                out,
                Outcomes {
                    frame: Vec::new(),
                    count: 0,
                    records: RecordWriter::default(),
                    open: None,
                },
            ),
            places: (tasks, out),
        }
    }
}

impl Drop for Resume<'_, '_, '_> {
    #[inline(always)]
    fn drop(&mut self) {
        std::mem::swap(self.places.0, &mut self.tasks);
        std::mem::swap(self.places.1, &mut self.out);
    }
}

impl Runner {
    /// Runs every task of `tasks` with this entry, writing each task's
    /// place to `progress` before it starts (so that whoever watches knows
    /// which task a process that died was running), and hands `flush` the
    /// outcomes whenever they pass [`FLUSH_BYTES`] and at the end, after
    /// which they start again empty. A task that panics fails alone with
    /// the panic message; the unwind guard is set once for many tasks,
    /// not once per task. `false` when `flush` said to stop.
    pub fn run_tasks(
        self,
        tasks: &mut Tasks<'_>,
        out: &mut Outcomes,
        progress: &AtomicU64,
        mut flush: impl FnMut(&mut Outcomes) -> bool,
    ) -> bool {
        loop {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (self.0.run_many)(tasks, out, progress)
            }));
            if let Err(panic) = ran {
                // The task that panicked fails in its place, and the run
                // goes on after it.
                let failure = panic_failure(&*panic);
                if !out.abandon(&failure) {
                    out.fail(&failure);
                }
                tasks.place += 1;
            }
            if tasks.done() || out.bytes() >= FLUSH_BYTES {
                if !out.is_empty() && !flush(out) {
                    return false;
                }
                out.clear();
            }
            if tasks.done() {
                return true;
            }
        }
    }
}

/// Gives every task of `tasks` the outcome `failure`, handing `flush` the
/// outcomes as [`Runner::run_tasks`] does; for tasks whose entry is not
/// there.
pub fn fail_tasks(
    tasks: &mut Tasks<'_>,
    failure: &ChildFailure,
    out: &mut Outcomes,
    mut flush: impl FnMut(&mut Outcomes) -> bool,
) -> bool {
    while !tasks.done() {
        out.fail(failure);
        tasks.place += 1;
        if tasks.done() || out.bytes() >= FLUSH_BYTES {
            if !flush(out) {
                return false;
            }
            out.clear();
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(values: &[&str]) -> Vec<u8> {
        let mut frame = Vec::new();
        let mut writer = RecordWriter::default();
        for value in values {
            writer
                .write(&mut frame, |f| codec::encode_into(value, f))
                .unwrap();
        }
        frame
    }

    #[test]
    fn long_records_among_short_ones_read_back() {
        let long = "x".repeat(300);
        let edge = "y".repeat(usize::from(SHORT) - 2);
        let all = [&long[..], "a", &long, &long, &edge, &edge, &long];
        let frame = records(&all);
        let mut reader = Reader(&frame);
        for value in all {
            let read: String = codec::decode(reader.record().unwrap()).unwrap();
            assert_eq!(read, value);
        }
        assert!(reader.record().is_err(), "past the end");
        // Records of bytes already encoded read back the same.
        let mut copied = Vec::new();
        let mut reader = Reader(&frame);
        for _ in all {
            put_record(&mut copied, reader.record().unwrap());
        }
        let mut reader = Reader(&copied);
        for value in all {
            let read: String = codec::decode(reader.record().unwrap()).unwrap();
            assert_eq!(read, value);
        }
        assert!(reader.0.is_empty());
    }

    /// Adds one task's outcome as `run_many` does: `run` appends its
    /// result to the frame or says why there is none.
    fn push(
        out: &mut Outcomes,
        run: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), ChildFailure>,
    ) {
        let at = out.begin();
        let written = run(&mut out.frame);
        out.end(at, written);
    }

    #[test]
    fn outcomes_read_back_and_garbage_ends_them() {
        let mut out = Outcomes::default();
        push(&mut out, |frame| {
            codec::encode_into(&9u64, frame).map_err(|e| ChildFailure::Codec(e.to_string()))
        });
        push(&mut out, |frame| {
            frame.extend_from_slice(b"half a result");
            Err(ChildFailure::Panicked("no".into()))
        });
        push(&mut out, |frame| {
            frame.extend_from_slice(b"left open");
            Ok(())
        });
        // A run that panics leaves its record open; abandon replaces it.
        out.begin();
        out.frame.extend_from_slice(b"open");
        assert!(out.abandon(&ChildFailure::Panicked("p".repeat(300))));
        assert!(!out.abandon(&ChildFailure::Panicked("twice".into())));
        let frame = out.frame().to_vec();
        assert_eq!(outcome_count(&frame).unwrap(), 4);
        let read: Vec<_> = outcomes(&frame).map(|o| o.unwrap()).collect();
        assert_eq!(
            read,
            [
                Ok(&[9u8][..]),
                Err(ChildFailure::Panicked("no".into())),
                Ok(&b"left open"[..]),
                Err(ChildFailure::Panicked("p".repeat(300))),
            ]
        );
        let mut cut = frame.clone();
        cut.truncate(frame.len() - 1);
        let read: Vec<_> = outcomes(&cut).collect();
        assert!(read[..3].iter().all(|o| o.is_ok()) && read[3].is_err() && read.len() == 4);
        let mut bad_tag = frame;
        bad_tag[4] = 0xFD;
        assert_eq!(outcomes(&bad_tag).count(), 1, "the first error ends them");
        out.clear();
        assert_eq!(outcome_count(out.frame()).unwrap(), 0);
    }

    /// The runner of `function`, registered as `entry!` would.
    macro_rules! runner {
        ($function:ident) => {
            Runner(&super::super::Registered {
                name: stringify!($function),
                run: |argument, out| super::super::invoke($function, argument, out),
                run_many: |tasks, out, progress| {
                    run_many::<_, _, ()>($function, tasks, out, progress)
                },
            })
        };
    }

    /// Runs the `count` tasks of `frame` with `runner`: whether it
    /// finished, the frames of outcomes it flushed, and its last progress.
    fn run_all(runner: Runner, frame: &[u8], count: usize) -> (bool, Vec<Vec<u8>>, u64) {
        let mut tasks = Tasks::new(Reader(frame), count);
        let progress = AtomicU64::new(u64::MAX);
        let mut sent = Vec::new();
        let finished = runner.run_tasks(&mut tasks, &mut Outcomes::default(), &progress, |out| {
            sent.push(out.frame().to_vec());
            true
        });
        (
            finished && tasks.done(),
            sent,
            progress.load(Ordering::Relaxed),
        )
    }

    fn halve(x: u64) -> u64 {
        assert!(x % 2 == 0, "odd: {x}");
        x / 2
    }

    #[test]
    fn a_run_of_tasks_fails_each_bad_one_alone() {
        let mut frame = Vec::new();
        let mut writer = RecordWriter::default();
        for x in [4u64, 3, 8] {
            writer
                .write(&mut frame, |f| codec::encode_into(&x, f))
                .unwrap();
        }
        writer
            .write(&mut frame, |f| codec::encode_into("nine", f))
            .unwrap();
        writer
            .write(&mut frame, |f| codec::encode_into(&10u64, f))
            .unwrap();
        let (finished, sent, progress) = run_all(runner!(halve), &frame, 6);
        assert!(finished);
        assert_eq!(sent.len(), 1, "one flush at the end");
        assert_eq!(progress, 5);
        let read: Vec<_> = outcomes(&sent[0]).map(|o| o.unwrap()).collect();
        let ok = |x: u64| {
            let mut v = Vec::new();
            codec::encode_into(&x, &mut v).unwrap();
            v
        };
        assert_eq!(read[0], Ok(&ok(2)[..]));
        assert_eq!(read[1], Err(ChildFailure::Panicked("odd: 3".into())));
        assert_eq!(read[2], Ok(&ok(4)[..]));
        assert!(
            matches!(read[3], Err(ChildFailure::Codec(_))),
            "{:?}",
            read[3]
        );
        assert_eq!(read[4], Ok(&ok(5)[..]));
        assert!(
            matches!(read[5], Err(ChildFailure::Codec(_))),
            "the frame ends: {:?}",
            read[5]
        );
    }

    fn shout(n: usize) -> u64 {
        panic!("{}", "é".repeat(n))
    }

    #[test]
    fn a_task_that_panics_with_a_huge_message_fails_with_its_start() {
        let mut frame = Vec::new();
        RecordWriter::default()
            .write(&mut frame, |f| codec::encode_into(&(1usize << 20), f))
            .unwrap();
        let (finished, sent, _) = run_all(runner!(shout), &frame, 1);
        assert!(finished);
        let failure = outcomes(&sent[0]).next().unwrap().unwrap().unwrap_err();
        let ChildFailure::Panicked(message) = failure else {
            panic!("not a panic: {failure:?}")
        };
        assert!(message.starts_with("éé"));
        assert!(message.len() <= super::super::PANIC_MESSAGE_BYTES + 64);
        assert!(
            message.ends_with(&format!("({} bytes in all)", 2 << 20)),
            "{}",
            &message[message.len() - 40..]
        );
    }

    fn inflate(n: usize) -> Vec<u8> {
        vec![7; n]
    }

    #[test]
    fn large_outcomes_are_flushed_before_the_run_ends() {
        let mut frame = Vec::new();
        for _ in 0..5 {
            put_record(&mut frame, &[0x80, 0x80, 0x60]); // 1.5 MiB as a varint
        }
        let runner = runner!(inflate);
        let mut tasks = Tasks::new(Reader(&frame), 5);
        let mut counts = Vec::new();
        let finished = runner.run_tasks(
            &mut tasks,
            &mut Outcomes::default(),
            &AtomicU64::new(0),
            |out| {
                counts.push(out.len());
                assert!(outcomes(out.frame()).all(|o| o.unwrap().unwrap().len() > 3 << 19));
                true
            },
        );
        assert!(finished);
        assert_eq!(
            counts,
            [3, 2],
            "a flush once past {FLUSH_BYTES} bytes, and one at the end"
        );
        // A flush that fails stops the run.
        let mut tasks = Tasks::new(Reader(&frame), 5);
        assert!(!runner.run_tasks(
            &mut tasks,
            &mut Outcomes::default(),
            &AtomicU64::new(0),
            |_| false
        ));
        assert_eq!(tasks.place(), 3);
    }
}
