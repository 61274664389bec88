//! Python's pickle as a codec for typed messages (feature `pickle`), so
//! that a Python peer's `conn.send(obj)` arrives as a Rust value and a
//! Rust `send(&value)` arrives as a Python object from `conn.recv()`.
//!
//! Decoding never runs code and never builds anything but plain data:
//! before a message is decoded, [`check`] walks its opcodes and refuses, with an error that names it,
//! any global other than the few plain builtins pickle uses to spell sets,
//! byte arrays and (protocol 2) bytes; any opcode that builds an object
//! (`REDUCE` of anything else, `BUILD`, `NEWOBJ`, `INST`, `OBJ`, the
//! extension registry, persistent ids, out-of-band buffers); nesting
//! deeper than [`MAX_DEPTH`]; and shared references (the memo) that would
//! make the decoded value more than [`EXPANDED_PER_BYTE`] times the size of
//! the message (and more than [`MIN_EXPANDED`] bytes). A message is read from
//! memory the peer has already sent, so an announced length beyond its end
//! is a truncation, not an allocation.
//!
//! The decoder is this module's own, reading protocols 0 to 5 into the
//! value each string and byte string allocated once at its size, then into
//! the Rust type through serde; [serde-pickle](https://docs.rs/serde-pickle)
//! writes pickles and gives the dynamically typed [`Value`].
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! // What Python 3.12's `pickle.dumps({'job': 7, 'args': [1, 2]}, protocol=4)` writes.
//! let from_python = b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x03job\x94K\x07\x8c\x04args\x94]\x94(K\x01K\x02eu.";
//! #[derive(serde::Deserialize, Debug, PartialEq)]
//! struct Job {
//!     job: u32,
//!     args: Vec<i64>,
//! }
//! let job: Job = ipc_core::pickle::decode(from_python)?;
//! assert_eq!(job, Job { job: 7, args: vec![1, 2] });
//!
//! let mut bytes = Vec::new();
//! ipc_core::pickle::encode_into(&BTreeMap::from([("echo", 1)]), &mut bytes)?;
//! assert_eq!(ipc_core::pickle::decode::<BTreeMap<String, i32>>(&bytes)?["echo"], 1);
//!
//! // A global that would run code is refused, by name.
//! let evil = b"\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.";
//! let refused = ipc_core::pickle::decode::<ipc_core::pickle::Value>(evil).unwrap_err();
//! assert!(refused.to_string().contains("os.system"));
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! Integers beyond 64 bits are an error for typed decoding (through
//! serde, which has no big integers, `Value` included); [`decode_value`]
//! keeps them, as `Value::Int`. Python's `datetime`, `Decimal`,
//! classes and the like are objects built by code, so they are refused;
//! send them as plain data (a string, a number, a dict).

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

mod build;
mod de;

/// A dynamically typed Python value made of plain data.
pub use serde_pickle::{HashableValue, Value};

/// The deepest nesting of containers a message may have: deeper input is
/// refused before anything recurses over it.
pub const MAX_DEPTH: u32 = 128;

/// How many times its own size a message may decode to, counted once every
/// shared reference is copied out (a list that holds the same list, or the
/// same megabyte of bytes, twice holds two copies once decoded), with each
/// value costing [`VALUE_COST`] bytes besides its text or bytes: this keeps
/// what a message makes this process allocate in proportion to what its
/// sender paid for.
pub const EXPANDED_PER_BYTE: u64 = 64;

/// The decoded size any message may reach, however short.
pub const MIN_EXPANDED: u64 = 1 << 20;

/// What one decoded value costs in the count of [`EXPANDED_PER_BYTE`],
/// besides the bytes of its text or data.
pub const VALUE_COST: u64 = 16;

/// The most digits of an integer written as text (protocol 0's `INT` and
/// `LONG`): parsing more takes time quadratic in the digits, which is why
/// Python refuses more than this many itself (CVE-2020-10735).
pub const MAX_TEXT_DIGITS: usize = 4300;

/// The newest pickle protocol there is (Python 3.8 and later).
const NEWEST_PROTOCOL: u8 = 5;

/// Appends the pickle of `value` to `out` (protocol 3, which every
/// Python 3 reads): a struct or a map as a dict, a sequence as a list, a
/// tuple as a tuple, bytes (with `serde_bytes`) as bytes, `None` for
/// `Option::None` and `()`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_pickle::to_writer(out, &value, serde_pickle::SerOptions::new())
        .map_err(|e| Error::Pickle(format!("cannot encode the message as a pickle: {e}")))
}

/// Appends the pickle of a dynamically typed `value`, as
/// [`encode_into`] does for a serde value.
///
/// ```
/// use std::collections::BTreeMap;
/// use ipc_core::pickle::{HashableValue, Value};
/// let reply = Value::Dict(BTreeMap::from([(HashableValue::String("n".into()), Value::I64(1))]));
/// let mut bytes = Vec::new();
/// ipc_core::pickle::encode_value_into(&reply, &mut bytes)?;
/// assert_eq!(ipc_core::pickle::decode_value(&bytes)?, reply);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn encode_value_into(value: &Value, out: &mut Vec<u8>) -> Result<()> {
    serde_pickle::value_to_writer(out, value, serde_pickle::SerOptions::new())
        .map_err(|e| Error::Pickle(format!("cannot encode the value as a pickle: {e}")))
}

/// Decodes one pickled value, which must use all of `bytes`, after
/// [`check`] found it plain data.
///
/// A dict becomes a struct or a map (in Python's order, for a map type
/// that keeps it), a list, tuple or set a sequence, `None` an
/// `Option::None` or `()`; a Python int becomes any Rust integer it fits
/// in, up to 128 bits.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    check(bytes)?;
    T::deserialize(build::build(bytes)?).map_err(|e| {
        Error::Pickle(format!(
            "cannot decode the pickle: the Python object does not fit the Rust type: {e}"
        ))
    })
}

/// Decodes one pickled value of any plain-data shape, after [`check`]
/// found it plain data; unlike `decode::<Value>`, integers beyond 64 bits
/// stay whole (`Value::Int`).
///
/// ```
/// use ipc_core::pickle::Value;
/// // pickle.dumps(2**70, protocol=4)
/// let big = ipc_core::pickle::decode_value(b"\x80\x04\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40.")?;
/// assert!(matches!(big, Value::Int(_)));
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn decode_value(bytes: &[u8]) -> Result<Value> {
    check(bytes)?;
    let plain = build::build(bytes)?;
    // A backstop: `Value`'s sorted sets and maps are serde-pickle's, whose
    // order the check and `into_value` allow for; should a case slip past
    // both, it is this message's error, not the receiver's panic.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plain.into_value())).unwrap_or_else(
        |_| {
            Err(Error::Pickle(
                "the pickle's sets or dict keys cannot be ordered as a `Value`".into(),
            ))
        },
    )
}

/// One value on the checker's stack: how deep it nests, how many objects
/// it expands to, and what it is where that matters.
#[derive(Clone, Debug)]
struct Item {
    depth: u32,
    expanded: u64,
    /// It is, or holds, a float NaN: as a set member or a dict key it has
    /// no order, and the sorted sets and maps of [`Value`] panic on it.
    nan: bool,
    /// The memo entry that is this very object: a memo reference is the
    /// object itself, so what is added to it later shows through every
    /// reference.
    memo: Option<u64>,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Plain,
    /// A short string, which `STACK_GLOBAL` may take as a name.
    Text(String),
    /// One of the plain builtins pickle spells data with.
    AllowedGlobal,
    /// The mark that `MARK` pushes.
    Mark,
}

impl Item {
    fn scalar() -> Item {
        Item {
            depth: 0,
            expanded: VALUE_COST,
            nan: false,
            memo: None,
            kind: Kind::Plain,
        }
    }

    fn container_of(items: &[Item], limit: u64) -> Result<Item> {
        let depth = items.iter().map(|i| i.depth).max().unwrap_or(0) + 1;
        let expanded = items
            .iter()
            .fold(VALUE_COST, |sum, i| sum.saturating_add(i.expanded));
        let item = Item::checked(depth, expanded, limit)?;
        Ok(Item {
            nan: items.iter().any(|i| i.nan),
            ..item
        })
    }

    /// An item of this depth and expanded size, if within the bounds
    /// (`limit` is the message's bound on expanded objects).
    fn checked(depth: u32, expanded: u64, limit: u64) -> Result<Item> {
        if depth > MAX_DEPTH {
            return Err(Error::Pickle(format!(
                "the pickle nests containers more than {MAX_DEPTH} deep"
            )));
        }
        if expanded > limit {
            return Err(Error::Pickle(format!(
                "the pickle's shared references expand to more than {limit} bytes once \
                 decoded, {EXPANDED_PER_BYTE} times the message"
            )));
        }
        Ok(Item {
            depth,
            expanded,
            nan: false,
            memo: None,
            kind: Kind::Plain,
        })
    }

    /// This container with `items` added to it.
    fn with(&self, items: &[Item], limit: u64) -> Result<Item> {
        let depth = items
            .iter()
            .map(|i| i.depth + 1)
            .fold(self.depth.max(1), u32::max);
        let expanded = items
            .iter()
            .fold(self.expanded, |sum, i| sum.saturating_add(i.expanded));
        let item = Item::checked(depth, expanded, limit)?;
        Ok(Item {
            nan: self.nan || items.iter().any(|i| i.nan),
            memo: self.memo,
            ..item
        })
    }
}

/// Refuses NaN among `keys`, which become set members or dict keys.
fn orderable(keys: impl IntoIterator<Item = Item>) -> Result<()> {
    if keys.into_iter().any(|key| key.nan) {
        return Err(Error::Pickle(
            "the pickle has a NaN as a set member or a dict key, which has no order here".into(),
        ));
    }
    Ok(())
}

/// The globals a plain-data pickle may name: how pickle spells a set, a
/// frozenset, a byte array, a list or a big int in some protocols, and
/// the bytes of protocols 0 to 2 (`_codecs.encode`, and `bytes()` when
/// empty). The decoder builds these as
/// data; anything else is code.
fn allowed_global(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        (
            "builtins" | "__builtin__",
            "set" | "frozenset" | "bytes" | "bytearray" | "list" | "int"
        ) | ("_codecs", "encode")
    )
}

/// The checker's reading position in a message.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(Error::Pickle(format!(
                "the pickle is cut short: an argument of {n} bytes with {left} left"
            )));
        }
        let start = self.at;
        self.at += n as usize;
        Ok(&self.bytes[start..self.at])
    }

    fn uint(&mut self, width: u64) -> Result<u64> {
        let bytes = self.take(width)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    }

    /// A newline-terminated argument (the text opcodes of protocol 0).
    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = &self.bytes[self.at..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(Error::Pickle(
                "the pickle is cut short: a text argument without its newline".into(),
            ));
        };
        self.at += end + 1;
        Ok(&rest[..end])
    }
}

/// Checks that `bytes` are one whole pickle of plain data, as the module
/// docs say, without building anything: the stack is simulated with only
/// each value's depth and expanded size.
///
/// ```
/// assert!(ipc_core::pickle::check(b"\x80\x04K\x07.").is_ok()); // 7
/// assert!(ipc_core::pickle::check(b"\x80\x04K\x07").is_err()); // no STOP
/// ```
pub fn check(bytes: &[u8]) -> Result<()> {
    let mut r = Reader { bytes, at: 0 };
    let limit = (bytes.len() as u64)
        .saturating_mul(EXPANDED_PER_BYTE)
        .max(MIN_EXPANDED);
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u64, Item> = HashMap::new();
    // Memo entries a reference has been taken to: the object may not
    // change after that (Python's pickler fills a container before it
    // refers to it; a change after would not show in what was counted).
    let mut referred: std::collections::HashSet<u64> = std::collections::HashSet::new();
    // Marks not yet closed: each is a container to come, so as many as
    // the nesting may be deep.
    let mut open_marks = 0usize;
    // What REDUCE copies out of the memo, over the whole message.
    let mut reduced: u64 = 0;
    let refuse = |what: &str| -> Error {
        Error::Pickle(format!(
            "the pickle {what}, which this codec does not do: decoding never runs code \
             or builds objects (send plain data: dicts, lists, strings, numbers, bytes)"
        ))
    };
    let underflow = || Error::Pickle("the pickle is malformed: its stack runs out".into());
    loop {
        let [op] = r.take(1)? else {
            unreachable!("take(1) gives one byte")
        };
        let op = *op;
        match op {
            // PROTO
            0x80 => {
                let version = r.uint(1)?;
                if version > u64::from(NEWEST_PROTOCOL) {
                    return Err(Error::Pickle(format!(
                        "the pickle has protocol {version}, newer than any Python's"
                    )));
                }
            }
            // FRAME: a hint of the next frame's length; it must be there.
            0x95 => {
                let len = r.uint(8)?;
                let left = (bytes.len() - r.at) as u64;
                if len > left {
                    return Err(Error::Pickle(format!(
                        "the pickle is cut short: a frame of {len} bytes with {left} left"
                    )));
                }
            }
            // STOP
            b'.' => {
                return match (stack.len(), r.at == bytes.len()) {
                    (1, true) if !matches!(stack[0].kind, Kind::Mark) => Ok(()),
                    (_, false) => Err(Error::Pickle(
                        "the pickle has bytes after its end (STOP)".into(),
                    )),
                    _ => Err(Error::Pickle(
                        "the pickle is malformed: it does not end with one value".into(),
                    )),
                };
            }
            // NONE, NEWTRUE, NEWFALSE
            b'N' | 0x88 | 0x89 => stack.push(Item::scalar()),
            // BININT, BININT1, BININT2, BINFLOAT
            b'J' => push_skipped(&mut r, &mut stack, 4)?,
            b'K' => push_skipped(&mut r, &mut stack, 1)?,
            b'M' => push_skipped(&mut r, &mut stack, 2)?,
            b'G' => {
                let bits = r.uint(8)?.swap_bytes();
                stack.push(Item {
                    nan: f64::from_bits(bits).is_nan(),
                    expanded: VALUE_COST + 8,
                    ..Item::scalar()
                });
            }
            // LONG1, LONG4
            0x8a => {
                let n = r.uint(1)?;
                push_skipped(&mut r, &mut stack, n)?;
            }
            0x8b => {
                let n = r.uint(4)?;
                push_skipped(&mut r, &mut stack, n)?;
            }
            // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8: kept as text when
            // short, for STACK_GLOBAL's error message.
            0x8c | b'X' | 0x8d => {
                let width = match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                };
                let n = r.uint(width)?;
                let text = r.take(n)?;
                // Module and global names are short; longer text is kept
                // as its size only.
                let kind = match std::str::from_utf8(text) {
                    Ok(text) if text.len() <= 64 => Kind::Text(text.to_owned()),
                    _ => Kind::Plain,
                };
                stack.push(Item {
                    kind,
                    expanded: VALUE_COST + n,
                    ..Item::scalar()
                });
            }
            // SHORT_BINBYTES, SHORT_BINSTRING; BINBYTES, BINSTRING;
            // BINBYTES8, BYTEARRAY8
            b'C' | b'U' => {
                let n = r.uint(1)?;
                push_skipped(&mut r, &mut stack, n)?;
            }
            b'B' | b'T' => {
                let n = r.uint(4)?;
                push_skipped(&mut r, &mut stack, n)?;
            }
            0x8e | 0x96 => {
                let n = r.uint(8)?;
                push_skipped(&mut r, &mut stack, n)?;
            }
            // INT, LONG, FLOAT, STRING, UNICODE (protocol 0's text forms)
            b'I' | b'L' | b'F' | b'S' | b'V' => {
                let text = r.line()?;
                if matches!(op, b'I' | b'L') && text.len() > MAX_TEXT_DIGITS + 2 {
                    return Err(Error::Pickle(format!(
                        "the pickle writes an integer of more than {MAX_TEXT_DIGITS} digits \
                         as text, which Python itself refuses to read"
                    )));
                }
                let nan =
                    op == b'F' && String::from_utf8_lossy(text).to_lowercase().contains("nan");
                stack.push(Item {
                    expanded: VALUE_COST + text.len() as u64,
                    nan,
                    ..Item::scalar()
                });
            }
            // EMPTY_LIST, EMPTY_DICT, EMPTY_TUPLE, EMPTY_SET
            b']' | b'}' | b')' | 0x8f => stack.push(Item::container_of(&[], limit)?),
            // MARK
            b'(' => {
                open_marks += 1;
                if open_marks > MAX_DEPTH as usize {
                    return Err(Error::Pickle(format!(
                        "the pickle opens more than {MAX_DEPTH} marks at once"
                    )));
                }
                stack.push(Item {
                    kind: Kind::Mark,
                    ..Item::scalar()
                });
            }
            // LIST, DICT, TUPLE, FROZENSET: the items since the mark.
            b'l' | b'd' | b't' | 0x91 => {
                let items = pop_to_mark(&mut stack, &mut open_marks)?;
                match op {
                    b'd' => orderable(items.iter().step_by(2).cloned())?,
                    0x91 => orderable(items.iter().cloned())?,
                    _ => {}
                }
                stack.push(Item::container_of(&items, limit)?);
            }
            // TUPLE1, TUPLE2, TUPLE3
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let at = stack.len().checked_sub(n).ok_or_else(underflow)?;
                let items = stack.split_off(at);
                if items.iter().any(|i| matches!(i.kind, Kind::Mark)) {
                    return Err(underflow());
                }
                stack.push(Item::container_of(&items, limit)?);
            }
            // APPEND, SETITEM: one item (or key and value) into the
            // container below it.
            b'a' | b's' => {
                let n = if op == b'a' { 1 } else { 2 };
                let at = stack.len().checked_sub(n + 1).ok_or_else(underflow)?;
                let items = stack.split_off(at + 1);
                if items.iter().any(|i| matches!(i.kind, Kind::Mark)) {
                    return Err(underflow());
                }
                if op == b's' {
                    orderable(items.first().cloned())?;
                }
                let container = stack.last_mut().ok_or_else(underflow)?;
                *container = container.with(&items, limit)?;
                remember_change(container, &mut memo, &referred, &refuse)?;
            }
            // APPENDS, SETITEMS, ADDITEMS: the items since the mark.
            b'e' | b'u' | 0x90 => {
                let items = pop_to_mark(&mut stack, &mut open_marks)?;
                match op {
                    b'u' => orderable(items.iter().step_by(2).cloned())?,
                    0x90 => orderable(items.iter().cloned())?,
                    _ => {}
                }
                let container = stack.last_mut().ok_or_else(underflow)?;
                *container = container.with(&items, limit)?;
                remember_change(container, &mut memo, &referred, &refuse)?;
            }
            // POP, POP_MARK, DUP
            b'0' => {
                let popped = stack.pop().ok_or_else(underflow)?;
                if matches!(popped.kind, Kind::Mark) {
                    open_marks -= 1;
                }
            }
            b'1' => {
                pop_to_mark(&mut stack, &mut open_marks)?;
            }
            // A second reference the memo does not see; Python never
            // writes it.
            b'2' => return Err(refuse("duplicates a value (DUP)")),
            // BINPUT, LONG_BINPUT, PUT, MEMOIZE
            b'q' | b'r' | b'p' | 0x94 => {
                let index = match op {
                    b'q' => r.uint(1)?,
                    b'r' => r.uint(4)?,
                    b'p' => text_number(r.line()?)?,
                    _ => memo.len() as u64,
                };
                let top = stack.last_mut().ok_or_else(underflow)?;
                // Python's pickler memoizes each object once, when it is
                // made; a second entry for one object would escape the
                // count of what references expand to.
                if top.memo.is_some() || matches!(top.kind, Kind::Mark) || memo.contains_key(&index)
                {
                    return Err(refuse("memoizes an object twice, or a reference"));
                }
                top.memo = Some(index);
                memo.insert(index, top.clone());
            }
            // BINGET, LONG_BINGET, GET
            b'h' | b'j' | b'g' => {
                let index = match op {
                    b'h' => r.uint(1)?,
                    b'j' => r.uint(4)?,
                    _ => text_number(r.line()?)?,
                };
                let item = memo.get(&index).cloned().ok_or_else(|| {
                    Error::Pickle(format!(
                        "the pickle is malformed: it refers to memo entry {index}, \
                         which it never made"
                    ))
                })?;
                referred.insert(index);
                stack.push(item);
            }
            // GLOBAL: module and name as text lines.
            b'c' => {
                let module = String::from_utf8_lossy(r.line()?).into_owned();
                let name = String::from_utf8_lossy(r.line()?).into_owned();
                stack.push(global(&module, &name, &refuse)?);
            }
            // STACK_GLOBAL: module and name from the stack.
            0x93 => {
                let name = stack.pop().ok_or_else(underflow)?;
                let module = stack.pop().ok_or_else(underflow)?;
                let (Kind::Text(module), Kind::Text(name)) = (&module.kind, &name.kind) else {
                    return Err(refuse("names a global that is not a plain name"));
                };
                stack.push(global(module, name, &refuse)?);
            }
            // REDUCE: only of an allowed builtin (a set from a list, ...).
            b'R' => {
                let arguments = stack.pop().ok_or_else(underflow)?;
                let callable = stack.pop().ok_or_else(underflow)?;
                if !matches!(callable.kind, Kind::AllowedGlobal) {
                    return Err(refuse("calls something (REDUCE)"));
                }
                // set(...) and frozenset(...) make their argument's items
                // set members.
                orderable([arguments.clone()])?;
                if matches!(arguments.kind, Kind::Mark) {
                    return Err(underflow());
                }
                // set(x), list(x), ... copy the items of x.
                reduced = reduced.saturating_add(arguments.expanded);
                if reduced > limit {
                    return Err(refuse("copies more than the message allows (REDUCE)"));
                }
                stack.push(Item::checked(arguments.depth, arguments.expanded, limit)?);
            }
            b'b' => return Err(refuse("sets an object's state (BUILD)")),
            0x81 | 0x92 => return Err(refuse("builds an object of a class (NEWOBJ)")),
            b'i' | b'o' => return Err(refuse("builds an object of a class (INST/OBJ)")),
            0x82..=0x84 => return Err(refuse("uses the extension registry (EXT)")),
            b'P' | b'Q' => return Err(refuse("refers to persistent ids")),
            0x97 | 0x98 => return Err(refuse("has out-of-band buffers")),
            other => {
                return Err(Error::Pickle(format!(
                    "the pickle is malformed: unknown opcode 0x{other:02x}"
                )))
            }
        }
    }
}

/// Skips a scalar's `n` bytes of argument and pushes it, counting them.
fn push_skipped(r: &mut Reader<'_>, stack: &mut Vec<Item>, n: u64) -> Result<()> {
    r.take(n)?;
    stack.push(Item {
        expanded: VALUE_COST + n,
        ..Item::scalar()
    });
    Ok(())
}

/// The items down to the topmost mark, which is taken off too.
fn pop_to_mark(stack: &mut Vec<Item>, open_marks: &mut usize) -> Result<Vec<Item>> {
    let mark = stack
        .iter()
        .rposition(|i| matches!(i.kind, Kind::Mark))
        .ok_or_else(|| Error::Pickle("the pickle is malformed: a mark is missing".into()))?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    *open_marks -= 1;
    Ok(items)
}

/// After a change to `container`: if it is a memoized object, its memo
/// entry is the changed object too (a memo reference is the object
/// itself), unless a reference to it was taken already.
fn remember_change(
    container: &Item,
    memo: &mut HashMap<u64, Item>,
    referred: &std::collections::HashSet<u64>,
    refuse: &impl Fn(&str) -> Error,
) -> Result<()> {
    if let Some(id) = container.memo {
        if referred.contains(&id) {
            return Err(refuse(
                "changes an object after referring to it (or puts an object inside itself)",
            ));
        }
        memo.insert(id, container.clone());
    }
    Ok(())
}

fn text_number(line: &[u8]) -> Result<u64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            Error::Pickle("the pickle is malformed: a memo index is not a number".into())
        })
}

fn global(module: &str, name: &str, refuse: &impl Fn(&str) -> Error) -> Result<Item> {
    if allowed_global(module, name) {
        Ok(Item {
            kind: Kind::AllowedGlobal,
            ..Item::scalar()
        })
    } else {
        Err(refuse(&format!("names the global `{module}.{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn refused(bytes: &[u8]) -> String {
        match check(bytes) {
            Err(Error::Pickle(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_anything_recurses() {
        // [[[[...]]]] 10,000 deep: EMPTY_LIST each, then APPEND each.
        let mut bytes = b"\x80\x04".to_vec();
        bytes.extend(std::iter::repeat_n(b']', 10_000));
        bytes.extend(std::iter::repeat_n(b'a', 9_999));
        bytes.push(b'.');
        assert!(refused(&bytes).contains("deep"));
        // The same depth through the memo, one level per step, with a
        // stack that never grows: list k is memoized, then filled with a
        // reference to list k - 1, then popped.
        let mut bytes = b"\x80\x04]r\x00\x00\x00\x00".to_vec();
        for k in 1u32..1000 {
            bytes.push(b']');
            bytes.push(b'r');
            bytes.extend_from_slice(&k.to_le_bytes());
            bytes.push(b'j');
            bytes.extend_from_slice(&(k - 1).to_le_bytes());
            bytes.extend_from_slice(b"a0");
        }
        bytes.push(b'j');
        bytes.extend_from_slice(&999u32.to_le_bytes());
        bytes.push(b'.');
        assert!(refused(&bytes).contains("deep"));
    }

    #[test]
    fn shared_references_that_expand_without_bound_are_refused() {
        // L(n+1) = [L(n), L(n)]: 60 steps are 2^60 objects once copied.
        let mut bytes = b"\x80\x04]r\x00\x00\x00\x00".to_vec();
        for k in 1u32..=60 {
            bytes.push(b']');
            bytes.push(b'r');
            bytes.extend_from_slice(&k.to_le_bytes());
            bytes.push(b'(');
            for _ in 0..2 {
                bytes.push(b'j');
                bytes.extend_from_slice(&(k - 1).to_le_bytes());
            }
            bytes.extend_from_slice(b"e0");
        }
        bytes.push(b'j');
        bytes.extend_from_slice(&60u32.to_le_bytes());
        bytes.push(b'.');
        assert!(refused(&bytes).contains("expand"));
    }

    #[test]
    fn a_memoized_object_changed_after_a_reference_or_copied_is_refused() {
        // A list memoized empty, filled with a megabyte, then referred to
        // 3000 times: each reference is the full list, not the empty one.
        let mut bytes = b"\x80\x04]q\x00B\x00\x00\x10\x00".to_vec();
        bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
        bytes.extend_from_slice(b"a0(");
        for _ in 0..3000 {
            bytes.extend_from_slice(b"h\x00");
        }
        bytes.extend_from_slice(b"l.");
        assert!(refused(&bytes).contains("expand"));
        // A change after a reference was taken.
        assert!(refused(b"\x80\x04]q\x00h\x000K\x01a.").contains("after referring"));
        // DUP, and memoizing a reference, copy whole values.
        assert!(refused(b"\x80\x04K\x012\x86.").contains("DUP"));
        assert!(refused(b"\x80\x04]q\x00h\x00q\x01\x86.").contains("twice"));
        // More open marks than the nesting may be deep.
        let mut marks = b"\x80\x04".to_vec();
        marks.extend(std::iter::repeat_n(b'(', 200_000));
        marks.extend(std::iter::repeat_n(b'1', 200_000));
        marks.extend_from_slice(b"N.");
        assert!(refused(&marks).contains("marks"));
        // An integer of 100,000 digits as text.
        let mut long = b"L".to_vec();
        long.extend(std::iter::repeat_n(b'7', 100_000));
        long.extend_from_slice(b"L\n.");
        assert!(refused(&long).contains("digits"));
    }

    #[test]
    fn one_large_value_referenced_many_times_is_refused() {
        // b = bytes(100_000); [b] * 10_000 as pickle writes it: the bytes
        // once, memoized, then a reference per element (10 GB decoded).
        let mut bytes = b"\x80\x04]q\x00(B\xa0\x86\x01\x00".to_vec();
        bytes.extend(std::iter::repeat_n(0u8, 100_000));
        bytes.extend_from_slice(b"q\x01");
        for _ in 1..10_000 {
            bytes.extend_from_slice(b"h\x01");
        }
        bytes.extend_from_slice(b"e.");
        assert!(refused(&bytes).contains("expand"));
        // Ten references are fine.
        let mut ten = b"\x80\x04]q\x00(B\xa0\x86\x01\x00".to_vec();
        ten.extend(std::iter::repeat_n(0u8, 100_000));
        ten.extend_from_slice(b"q\x01");
        for _ in 1..10 {
            ten.extend_from_slice(b"h\x01");
        }
        ten.extend_from_slice(b"e.");
        check(&ten).unwrap();
    }

    #[test]
    fn truncation_and_huge_lengths_are_errors_not_allocations() {
        assert!(refused(b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7fabc").contains("cut short"));
        assert!(refused(b"\x80\x04]").contains("cut short"));
        assert!(refused(b"\x80\x04K\x01K\x02.").contains("one value"));
        assert!(refused(b"\x80\x04K\x01.junk").contains("after its end"));
        assert!(refused(b"\x80\x04h\x05.").contains("memo entry 5"));
        assert!(refused(b"\x80\x04\xff.").contains("unknown opcode"));
    }

    #[test]
    fn a_structure_that_contains_itself_is_an_error_not_a_hang() {
        // l = []; l.append(l) and d = {}; d['me'] = d, as Python 3.11
        // pickles them (protocol 4).
        let list = b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00]\x94h\x00a.";
        let dict = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x02me\x94h\x00s.";
        for bytes in [&list[..], &dict[..]] {
            assert!(matches!(decode::<Value>(bytes), Err(Error::Pickle(_))));
            assert!(matches!(decode_value(bytes), Err(Error::Pickle(_))));
        }
    }

    #[test]
    fn nan_as_a_set_member_or_dict_key_is_refused() {
        let nan = b"G\x7f\xf8\x00\x00\x00\x00\x00\x00";
        let one = b"G\x3f\xf0\x00\x00\x00\x00\x00\x00";
        let mut set = b"\x80\x04\x8f(".to_vec();
        for _ in 0..20 {
            set.extend_from_slice(nan);
            set.extend_from_slice(one);
        }
        set.extend_from_slice(b"\x90.");
        assert!(refused(&set).contains("NaN"));
        let mut dict = b"\x80\x04}(".to_vec();
        dict.extend_from_slice(nan);
        dict.extend_from_slice(b"K\x01u.");
        assert!(refused(&dict).contains("NaN"));
        // A NaN in a tuple that becomes a key, and set() of a list.
        let mut tuple_key = b"\x80\x04}".to_vec();
        tuple_key.extend_from_slice(nan);
        tuple_key.extend_from_slice(b"\x85K\x01s.");
        assert!(refused(&tuple_key).contains("NaN"));
        let mut reduce = b"\x80\x02c__builtin__\nset\n](".to_vec();
        reduce.extend_from_slice(nan);
        reduce.extend_from_slice(nan);
        reduce.extend_from_slice(b"e\x85R.");
        assert!(refused(&reduce).contains("NaN"));
        // A NaN as a plain value is fine.
        let mut list = b"\x80\x04](".to_vec();
        list.extend_from_slice(nan);
        list.extend_from_slice(nan);
        list.extend_from_slice(b"e.");
        check(&list).unwrap();
    }

    /// What Python 3.11 writes for the values named, by protocol.
    const TUPLE_TWICE: &[u8] =
        b"\x80\x04\x95\r\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02\x86\x94h\x01e."; // [t, t], t = (1, 2)
    const LIST_TWICE: &[u8] = b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94K\x01a\x8c\x01b\x94h\x02u."; // {'a': l, 'b': l}, l = [1]
    const UNSORTED: &[u8] = b"\x80\x04\x95\x17\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01z\x94K\x01\x8c\x01a\x94K\x02\x8c\x01m\x94K\x03u."; // {'z': 1, 'a': 2, 'm': 3}
    const PROTOCOL_0: &[u8] = b"(dp0\nVa\np1\n(lp2\nI1\naVx\np3\nasVb\np4\nL1180591620717411303424L\nsVc\np5\nF1.5\nsVd\np6\nNsVe\np7\nI01\ns."; // {'a': [1, 'x'], 'b': 2**70, 'c': 1.5, 'd': None, 'e': True}
    const PROTOCOL_2: &[u8] = b"\x80\x02]q\x00(c__builtin__\nset\nq\x01]q\x02(K\x01K\x02e\x85q\x03Rq\x04c_codecs\nencode\nq\x05X\x03\x00\x00\x00\x00\xc3\xbfq\x06X\x06\x00\x00\x00latin1q\x07\x86q\x08Rq\tc__builtin__\nbytearray\nq\nh\x05X\x02\x00\x00\x00abq\x0bh\x07\x86q\x0cRq\r\x85q\x0eRq\x0fc__builtin__\nfrozenset\nq\x10]q\x11K\x03a\x85q\x12Rq\x13e."; // [{1, 2}, b'\x00\xff', bytearray(b'ab'), frozenset([3])]
    const BIG_INTS: &[u8] = b"\x80\x04\x95W\x00\x00\x00\x00\x00\x00\x00]\x94(\x8a\t\xff\xff\xff\xff\xff\xff\xff\xff\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\r\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8a\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x1a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01e."; // [2**64-1, -2**63, 2**100, -2**127, 2**200]
    const BYTEARRAYS_3: &[u8] =
        b"\x80\x03]q\x00(cbuiltins\nbytearray\nq\x01C\x02abq\x02\x85q\x03Rq\x04h\x01)Rq\x05e."; // [bytearray(b'ab'), bytearray()]
    const BYTEARRAY_5: &[u8] = b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00]\x94\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94a."; // [bytearray(b'ab')]

    #[test]
    fn shared_references_decode_as_copies() {
        assert_eq!(
            decode::<Vec<(i32, i32)>>(TUPLE_TWICE).unwrap(),
            [(1, 2), (1, 2)]
        );
        let both: BTreeMap<String, Vec<i32>> = decode(LIST_TWICE).unwrap();
        assert_eq!(both["a"], [1]);
        assert_eq!(both["b"], [1]);
        let pair = Value::Tuple(vec![Value::I64(1), Value::I64(2)]);
        assert_eq!(
            decode_value(TUPLE_TWICE).unwrap(),
            Value::List(vec![pair.clone(), pair])
        );
    }

    /// The keys of a dict in the order a map type receives them.
    struct KeyOrder(Vec<String>);

    impl<'de> serde::Deserialize<'de> for KeyOrder {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Keys;
            impl<'de> serde::de::Visitor<'de> for Keys {
                type Value = KeyOrder;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<KeyOrder, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(KeyOrder(keys))
                }
            }
            d.deserialize_map(Keys)
        }
    }

    #[test]
    fn a_dict_arrives_in_pythons_order() {
        assert_eq!(decode::<KeyOrder>(UNSORTED).unwrap().0, ["z", "a", "m"]);
    }

    #[test]
    fn every_protocol_decodes_plain_data() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Zero {
            a: (i32, String),
            c: f64,
            d: Option<u8>,
            e: bool,
        }
        let zero: Zero = decode(PROTOCOL_0).unwrap();
        assert_eq!(
            zero,
            Zero {
                a: (1, "x".into()),
                c: 1.5,
                d: None,
                e: true
            }
        );
        let Value::Dict(zero) = decode_value(PROTOCOL_0).unwrap() else {
            panic!("a dict")
        };
        assert!(matches!(
            zero[&HashableValue::String("b".into())],
            Value::Int(_)
        ));

        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Two(
            std::collections::BTreeSet<u8>,
            #[serde(with = "serde_bytes")] Vec<u8>,
            #[serde(with = "serde_bytes")] Vec<u8>,
            Vec<u8>,
        );
        let two: Two = decode(PROTOCOL_2).unwrap();
        assert_eq!(
            two,
            Two([1, 2].into(), vec![0, 0xff], b"ab".to_vec(), vec![3])
        );
        let arrays: Vec<serde_bytes::ByteBuf> = decode(BYTEARRAYS_3).unwrap();
        assert_eq!(arrays, [b"ab".to_vec(), Vec::new()]);
        let arrays: Vec<serde_bytes::ByteBuf> = decode(BYTEARRAY_5).unwrap();
        assert_eq!(arrays, [b"ab".to_vec()]);
    }

    #[test]
    fn integers_fit_any_rust_integer_that_holds_them() {
        let (max, min, big, negative, _): (u64, i64, u128, i128, serde::de::IgnoredAny) =
            decode(BIG_INTS).unwrap();
        assert_eq!(
            (max, min, big, negative),
            (u64::MAX, i64::MIN, 1 << 100, i128::MIN)
        );
        // 2**200 fits nothing; decode_value keeps it.
        let too_big = decode::<Vec<i128>>(BIG_INTS).unwrap_err().to_string();
        assert!(too_big.contains("bits"), "{too_big}");
        let Value::List(all) = decode_value(BIG_INTS).unwrap() else {
            panic!("a list")
        };
        assert!(matches!(all[4], Value::Int(_)));
        // And what a Rust u64 beyond i64 is sent as comes back.
        let mut bytes = Vec::new();
        encode_into(&u64::MAX, &mut bytes).unwrap();
        assert_eq!(decode::<u64>(&bytes).unwrap(), u64::MAX);
    }

    #[test]
    fn enums_and_options_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        enum Shape {
            Empty,
            Circle(f64),
            Line(i32, i32),
            Box { w: u8, h: u8 },
        }
        let shapes = vec![
            Shape::Empty,
            Shape::Circle(1.5),
            Shape::Line(-1, 2),
            Shape::Box { w: 3, h: 4 },
        ];
        let sent = (shapes, Some(7u8), None::<String>, ());
        let mut bytes = Vec::new();
        encode_into(&sent, &mut bytes).unwrap();
        assert_eq!(
            decode::<(Vec<Shape>, Option<u8>, Option<String>, ())>(&bytes).unwrap(),
            sent
        );
    }

    #[test]
    fn a_mismatch_names_the_python_type() {
        let why = decode::<BTreeMap<String, u32>>(LIST_TWICE)
            .unwrap_err()
            .to_string();
        assert!(why.contains("the Python value is a list"), "{why}");
    }

    #[test]
    fn code_is_refused_by_name() {
        assert!(refused(b"cos\nsystem\n(S'ls'\ntR.").contains("`os.system`"));
        assert!(refused(b"\x80\x04\x8c\x08datetime\x8c\x04date\x93.").contains("datetime.date"));
        // REDUCE of something that is not an allowed global.
        assert!(refused(b"\x80\x04K\x01)R.").contains("REDUCE"));
        // An allowed builtin is fine: set([1]) in protocol 2.
        check(b"\x80\x02c__builtin__\nset\nq\x00]q\x01K\x01a\x85q\x02Rq\x03.").unwrap();
    }
}
