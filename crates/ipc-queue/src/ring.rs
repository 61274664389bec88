//! The ring's arithmetic: where records go and where they are, how much
//! is in use, and which head and tail words no sequence of puts and gets
//! can produce. Nothing here waits or locks; `core` does that around it.
//!
//! # Records
//!
//! A record is `[len: u32][span: u32][payload][padding to 8]`. A record
//! that does not fit before the end of the ring is preceded by a wrap
//! marker (`len == u32::MAX`) and starts at offset 0. `span` is 0 for a
//! record that takes its header and its padded payload, or the bytes it
//! takes if more: a claim committed with fewer bytes than it reserved. A
//! void record (`len == VOID`) is `span` bytes of a claim given up: it
//! holds no item, counts as none, and getters step over it.
//!
//! # Two ends, one word each
//!
//! `tail` packs the number of puts ever made (wrapping, high 32 bits) with
//! the ring offset where the next record goes; `head` packs the number of
//! gets with the offset of the next record to take ([`Pos`]).

use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::{Error, Mismatch, Property, Result};
use ipc_shm::SharedMemory;

use crate::layout::RING_OFFSET;

/// The length that marks "the next record starts at offset 0".
pub(crate) const WRAP: u32 = u32::MAX;
/// The length that marks a void record: `span` bytes with no item.
pub(crate) const VOID: u32 = u32::MAX - 1;
/// Bytes in front of every payload.
pub(crate) const RECORD_HEADER: u64 = 8;

/// One end of the ring: how many items have passed it (wrapping) and the
/// ring offset it is at. Stored as one `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) count: u32,
    pub(crate) offset: u32,
}

impl Pos {
    /// The position a word holds.
    #[inline]
    pub(crate) fn load(word: &AtomicU64, order: Ordering) -> Pos {
        let word = word.load(order);
        Pos {
            count: (word >> 32) as u32,
            offset: word as u32,
        }
    }

    /// Stores the position in one go.
    #[inline]
    pub(crate) fn store(self, word: &AtomicU64, order: Ordering) {
        word.store(u64::from(self.count) << 32 | u64::from(self.offset), order);
    }
}

/// A head and a tail, as one process saw them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub(crate) head: Pos,
    pub(crate) tail: Pos,
}

impl View {
    /// The number of records between head and tail.
    #[inline]
    pub(crate) fn items(&self) -> u32 {
        self.tail.count.wrapping_sub(self.head.count)
    }
}

/// Where a put writes: an optional wrap marker, then its record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub(crate) marker: Option<u64>,
    pub(crate) record: u64,
}

/// What is wrong with bytes read from the ring or its words: the property,
/// what was expected and what was found.
#[derive(Debug)]
pub(crate) struct Corruption(pub(crate) Property, pub(crate) String, pub(crate) String);

impl Corruption {
    /// The error, naming the queue in `shm`.
    pub(crate) fn error(self, shm: &SharedMemory) -> Error {
        let segment = match shm.name() {
            Some(name) => format!("queue `{name}`"),
            None => "the anonymous queue".to_owned(),
        };
        Error::Corrupt(Box::new(Mismatch::new(segment, self.0, self.1, self.2)))
    }
}

/// A ring of `capacity` bytes holding at most `maxsize` items (0: no
/// bound).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring {
    pub(crate) capacity: u64,
    pub(crate) maxsize: usize,
    /// A record of at least this many bytes goes at the start of the ring
    /// when it can (`core::WARM_RECORD`; smaller in tests, whose rings are
    /// small).
    pub(crate) warm_record: u64,
}

impl Ring {
    /// The bytes between head and tail: records, and wrap markers in front
    /// of them. A view read from a hostile segment gives a wrong number,
    /// never an overflow.
    pub(crate) fn used(&self, v: &View) -> u64 {
        let cap = self.capacity.max(1);
        let (head, tail) = (
            u64::from(v.head.offset) % cap,
            u64::from(v.tail.offset) % cap,
        );
        match (head == tail, v.items() == 0) {
            (true, true) => 0,
            (true, false) => cap,
            (false, _) => (tail + cap - head) % cap,
        }
    }

    /// Refuses a view that no sequence of puts and gets can produce, so
    /// nothing read from the segment is followed before it is checked.
    pub(crate) fn check(&self, v: &View) -> Result<(), Corruption> {
        let cap = self.capacity;
        let items = u64::from(v.items());
        let offset_ok = |p: Pos| u64::from(p.offset) < cap && p.offset % 8 == 0;
        // (With no item between head and tail there may still be wrap
        // markers and void records.)
        let ok = offset_ok(v.head) && offset_ok(v.tail) && items * RECORD_HEADER <= self.used(v);
        if ok {
            Ok(())
        } else {
            Err(Corruption(
                Property::ControlWord,
                format!("a head and a tail of a ring of {cap} bytes"),
                format!("{v:?}"),
            ))
        }
    }

    /// The size a record for `len` payload bytes takes, or
    /// [`Error::TooLarge`] if even an empty ring could not hold it.
    pub(crate) fn record_size(&self, len: usize) -> Result<u64> {
        let limit = self.capacity - RECORD_HEADER;
        let len64 = len as u64;
        if len64 > limit || len64 >= u64::from(VOID) {
            return Err(Error::TooLarge { size: len64, limit });
        }
        Ok(RECORD_HEADER + len64.next_multiple_of(8))
    }

    /// Where a record of `need` bytes goes after `v.tail`, if there is room
    /// for it (and for one more item).
    /// With `gap`, the record must leave that many bytes free after it: a
    /// claim never fills the ring, so the claims' frontier never comes
    /// round to the head, and a claim that was published before its slot
    /// was freed (a producer killed in between) can never be taken for
    /// the one at the tail.
    pub(crate) fn place(&self, v: &View, need: u64, gap: u64) -> Option<Placement> {
        if self.maxsize != 0 && v.items() as usize >= self.maxsize {
            return None;
        }
        let cap = self.capacity;
        let free = cap - self.used(v);
        let off = u64::from(v.tail.offset);
        if need <= cap - off {
            (need + gap <= free).then_some(Placement {
                marker: None,
                record: off,
            })
        } else {
            (cap - off + need + gap <= free).then_some(Placement {
                marker: Some(off),
                record: 0,
            })
        }
    }

    /// Where a record of `need` bytes goes if it starts the ring again at
    /// offset 0 (a wrap marker at the tail), if there is room for that.
    pub(crate) fn place_at_start(&self, v: &View, need: u64, gap: u64) -> Option<Placement> {
        if self.maxsize != 0 && v.items() as usize >= self.maxsize {
            return None;
        }
        let cap = self.capacity;
        let off = u64::from(v.tail.offset);
        let free = cap - self.used(v);
        (off != 0 && cap - off + need + gap <= free).then_some(Placement {
            marker: Some(off),
            record: 0,
        })
    }

    /// The tail after a record of `need` bytes placed at `at`.
    pub(crate) fn tail_after(&self, tail: Pos, at: &Placement, need: u64) -> Pos {
        Pos {
            count: tail.count.wrapping_add(1),
            offset: ((at.record + need) % self.capacity) as u32,
        }
    }

    /// Finds the record at the head of a non-empty, checked view, past
    /// any wrap marker and void record in front of it. A length or a span
    /// that does not fit the ring is reported, never followed.
    pub(crate) fn locate(&self, shm: &SharedMemory, v: &View) -> Result<Located> {
        let cap = self.capacity;
        let mut avail = self.used(v);
        let mut off = u64::from(v.head.offset);
        let corrupt = |expected: String, found: String| {
            Corruption(Property::Record, expected, found).error(shm)
        };
        loop {
            let (len, span32) = read_header(shm, off)?;
            let span = u64::from(span32);
            if len == WRAP {
                let skip = cap - off;
                if off == 0 || skip >= avail {
                    return Err(corrupt(
                        "a record after a wrap marker".to_owned(),
                        format!("a wrap marker at ring offset {off} with nothing behind it"),
                    ));
                }
                avail -= skip;
                off = 0;
                continue;
            }
            if len == VOID {
                // Something must follow it: the view holds an item.
                if span < RECORD_HEADER || span % 8 != 0 || span > cap - off || span >= avail {
                    return Err(corrupt(
                        format!("a void record followed by a record within {avail} bytes"),
                        format!("a void record of {span} bytes at ring offset {off}"),
                    ));
                }
                avail -= span;
                off = (off + span) % cap;
                continue;
            }
            let need = record_need(len, span32).unwrap_or(0);
            if need == 0 || need > cap - off || need > avail {
                return Err(corrupt(
                    format!("a record within the {avail} bytes in use and the ring's {cap}"),
                    format!("a record of {len} bytes spanning {span} at ring offset {off}"),
                ));
            }
            return Ok(Located {
                head: Pos {
                    count: v.head.count.wrapping_add(1),
                    offset: ((off + need) % cap) as u32,
                },
                record: off,
                need,
                len: len as usize,
            });
        }
    }

    /// The record at `record` that takes `need` bytes, as an open borrow
    /// slot describes it, checked again against the ring and its own
    /// header: the slot's words and the header are the segment's, so
    /// either may have been written by anyone.
    pub(crate) fn record_at(
        &self,
        shm: &SharedMemory,
        count: u32,
        record: u64,
        need: u64,
    ) -> Result<Located> {
        let cap = self.capacity;
        let fits = record.checked_add(need).is_some_and(|end| end <= cap);
        let (len, span) = if fits && record % 8 == 0 {
            read_header(shm, record)?
        } else {
            (WRAP, 0)
        };
        if len == WRAP || len == VOID || record_need(len, span) != Some(need) {
            return Err(Corruption(
                Property::Record,
                format!("a borrowed record of {need} bytes at ring offset {record}"),
                format!("a record of {len} bytes spanning {span}"),
            )
            .error(shm));
        }
        Ok(Located {
            head: Pos {
                count,
                offset: ((record + need) % cap) as u32,
            },
            record,
            need,
            len: len as usize,
        })
    }
}

/// The bytes a record of `len` payload bytes whose span word is `span`
/// takes, or `None` if the two do not go together.
fn record_need(len: u32, span: u32) -> Option<u64> {
    let least = RECORD_HEADER + u64::from(len).next_multiple_of(8);
    match u64::from(span) {
        0 => Some(least),
        span if span >= least && span % 8 == 0 => Some(span),
        _ => None,
    }
}

/// A record found in the ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    /// The head (or the consumers' frontier) once it is taken.
    pub(crate) head: Pos,
    /// Where it starts, and the bytes it takes.
    pub(crate) record: u64,
    pub(crate) need: u64,
    /// Its payload's length, checked against the ring.
    pub(crate) len: usize,
}

impl Located {
    /// The ring offset of its payload.
    #[inline]
    pub(crate) fn payload_off(&self) -> u64 {
        self.record + RECORD_HEADER
    }
}

/// Copies `bytes` into the ring at `off`.
#[inline]
pub(crate) fn write(shm: &SharedMemory, off: u64, bytes: &[u8]) -> Result<()> {
    shm.write_at(RING_OFFSET + off as usize, bytes)
}

/// Copies the ring's bytes at `off` into `buf`.
#[inline]
pub(crate) fn read(shm: &SharedMemory, off: u64, buf: &mut [u8]) -> Result<()> {
    shm.read_at(RING_OFFSET + off as usize, buf)
}

/// The length and span words of the record (or wrap marker, whose second
/// word means nothing) at `off`.
fn read_header(shm: &SharedMemory, off: u64) -> Result<(u32, u32)> {
    let mut len = [0u8; 4];
    read(shm, off, &mut len)?;
    let len = u32::from_ne_bytes(len);
    if len == WRAP {
        return Ok((len, 0));
    }
    let mut span = [0u8; 4];
    read(shm, off + 4, &mut span)?;
    Ok((len, u32::from_ne_bytes(span)))
}

/// The header of a record of `len` payload bytes that takes `span` bytes
/// (0: just its header and padded payload).
pub(crate) fn header(len: u32, span: u32) -> [u8; RECORD_HEADER as usize] {
    let mut header = [0u8; RECORD_HEADER as usize];
    header[..4].copy_from_slice(&len.to_ne_bytes());
    header[4..].copy_from_slice(&span.to_ne_bytes());
    header
}
