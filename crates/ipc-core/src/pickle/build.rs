//! Builds the value of a pickle that [`check`](super::check) passed, in one
//! pass over its opcodes, with each string and byte string allocated once
//! at its exact size (serde-pickle grows a buffer for each from nothing,
//! which for a megabyte of `bytes` costs more than the copy itself).
//!
//! Pickle memoizes a container as soon as it is made and fills it after, so
//! values live in an arena while the opcodes run and a memo reference is an
//! index into it; the tree is copied out once the message has ended, moving
//! each value to its last reference.

use std::collections::HashMap;

use super::{Reader, MAX_DEPTH};
use crate::{Error, Result};

/// A Python value made of plain data, with every shared reference copied
/// out: what a message decodes to before it becomes a Rust type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Plain {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond 64 bits: its two's complement, little-endian, as
    /// pickle writes it.
    BigInt(Vec<u8>),
    Float(f64),
    Bytes(Vec<u8>),
    Str(String),
    List(Vec<Plain>),
    Tuple(Vec<Plain>),
    /// A dict's items in the order Python wrote them.
    Dict(Vec<(Plain, Plain)>),
    Set(Vec<Plain>),
    FrozenSet(Vec<Plain>),
}

/// A Python type's name with its article: "an int", "a list".
pub(crate) fn a(python_type: &str) -> String {
    let article = if python_type.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {python_type}")
}

impl Plain {
    /// The Python type, for error messages.
    pub(crate) fn python_type(&self) -> &'static str {
        match self {
            Plain::None => "None",
            Plain::Bool(_) => "bool",
            Plain::Int(_) | Plain::BigInt(_) => "int",
            Plain::Float(_) => "float",
            Plain::Bytes(_) => "bytes",
            Plain::Str(_) => "str",
            Plain::List(_) => "list",
            Plain::Tuple(_) => "tuple",
            Plain::Dict(_) => "dict",
            Plain::Set(_) => "set",
            Plain::FrozenSet(_) => "frozenset",
        }
    }
}

/// The builtins a checked pickle may call to spell data.
#[derive(Clone, Copy, Debug)]
enum Builtin {
    Set,
    FrozenSet,
    List,
    Bytes,
    ByteArray,
    Int,
    /// `_codecs.encode(text, 'latin1')`: protocol 2's bytes.
    Encode,
}

/// A value in the arena: finished, or a container whose items are arena
/// indices.
#[derive(Debug)]
enum Node {
    Scalar(Plain),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
    Builtin(Builtin),
    /// Moved out while the tree is copied.
    Taken,
}

impl Node {
    fn children(&self) -> Vec<usize> {
        match self {
            Node::List(ids) | Node::Tuple(ids) | Node::Set(ids) | Node::FrozenSet(ids) => {
                ids.clone()
            }
            Node::Dict(items) => items.iter().flat_map(|&(k, v)| [k, v]).collect(),
            Node::Scalar(_) | Node::Builtin(_) | Node::Taken => Vec::new(),
        }
    }
}

/// What an opcode adds items to: `APPEND(S)` a list, `SETITEM(S)` a dict,
/// `ADDITEMS` a set.
#[derive(Clone, Copy, Debug)]
enum Adding {
    List,
    Dict,
    Set,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Mark,
    Value(usize),
}

fn malformed(what: &str) -> Error {
    Error::Pickle(format!("the pickle is malformed: {what}"))
}

/// The value of `bytes`, a pickle [`check`](super::check) passed.
pub(crate) fn build(bytes: &[u8]) -> Result<Plain> {
    let mut b = Builder {
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let mut r = Reader { bytes, at: 0 };
    loop {
        let op = r.take(1)?[0];
        match op {
            // PROTO, FRAME
            0x80 => drop(r.take(1)?),
            0x95 => drop(r.take(8)?),
            // STOP
            b'.' => return b.finish(),
            b'N' => b.push(Plain::None),
            0x88 => b.push(Plain::Bool(true)),
            0x89 => b.push(Plain::Bool(false)),
            // BININT (signed), BININT1, BININT2 (unsigned)
            b'J' => b.push(Plain::Int(i64::from(r.uint(4)? as u32 as i32))),
            b'K' => b.push(Plain::Int(r.uint(1)? as i64)),
            b'M' => b.push(Plain::Int(r.uint(2)? as i64)),
            // BINFLOAT: big-endian
            b'G' => b.push(Plain::Float(f64::from_bits(r.uint(8)?.swap_bytes()))),
            // LONG1, LONG4
            0x8a | 0x8b => {
                let n = r.uint(if op == 0x8a { 1 } else { 4 })?;
                b.push(long(r.take(n)?));
            }
            // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
            0x8c | b'X' | 0x8d => {
                let n = r.uint(match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                })?;
                let text = String::from_utf8(r.take(n)?.to_vec()).map_err(|_| {
                    Error::Pickle(
                        "the pickle has a str that is not UTF-8 (a lone surrogate), which a \
                         Rust string cannot hold"
                            .into(),
                    )
                })?;
                b.push(Plain::Str(text));
            }
            // SHORT_BINBYTES, SHORT_BINSTRING; BINBYTES, BINSTRING;
            // BINBYTES8, BYTEARRAY8
            b'C' | b'U' | b'B' | b'T' | 0x8e | 0x96 => {
                let n = r.uint(match op {
                    b'C' | b'U' => 1,
                    b'B' | b'T' => 4,
                    _ => 8,
                })?;
                b.push(Plain::Bytes(r.take(n)?.to_vec()));
            }
            // INT, LONG, FLOAT, STRING, UNICODE: protocol 0's text forms.
            b'I' => b.push(match r.line()? {
                b"01" => Plain::Bool(true),
                b"00" => Plain::Bool(false),
                digits => text_int(digits)?,
            }),
            b'L' => {
                let digits = r.line()?;
                b.push(text_int(digits.strip_suffix(b"L").unwrap_or(digits))?);
            }
            b'F' => b.push(Plain::Float(text_float(r.line()?)?)),
            b'S' => b.push(Plain::Bytes(unescape_bytes(r.line()?)?)),
            b'V' => b.push(Plain::Str(raw_unicode_escape(r.line()?)?)),
            b']' => b.push_node(Node::List(Vec::new())),
            b'}' => b.push_node(Node::Dict(Vec::new())),
            b')' => b.push_node(Node::Tuple(Vec::new())),
            0x8f => b.push_node(Node::Set(Vec::new())),
            b'(' => b.stack.push(Slot::Mark),
            // LIST, DICT, TUPLE, FROZENSET
            b'l' | b'd' | b't' | 0x91 => {
                let items = b.pop_to_mark()?;
                let node = match op {
                    b'l' => Node::List(items),
                    b't' => Node::Tuple(items),
                    0x91 => Node::FrozenSet(items),
                    _ => Node::Dict(pairs(items)?),
                };
                b.push_node(node);
            }
            // TUPLE1, TUPLE2, TUPLE3
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = (0..n).map(|_| b.pop()).collect::<Result<Vec<_>>>()?;
                b.push_node(Node::Tuple(items.into_iter().rev().collect()));
            }
            // APPEND, SETITEM
            b'a' => {
                let item = b.pop()?;
                b.add_to_top(Adding::List, vec![item])?;
            }
            b's' => {
                let value = b.pop()?;
                let key = b.pop()?;
                b.add_to_top(Adding::Dict, vec![key, value])?;
            }
            // APPENDS, SETITEMS, ADDITEMS
            b'e' | b'u' | 0x90 => {
                let items = b.pop_to_mark()?;
                let adding = match op {
                    b'e' => Adding::List,
                    b'u' => Adding::Dict,
                    _ => Adding::Set,
                };
                b.add_to_top(adding, items)?;
            }
            // POP, POP_MARK
            b'0' => drop(
                b.stack
                    .pop()
                    .ok_or_else(|| malformed("its stack runs out"))?,
            ),
            b'1' => drop(b.pop_to_mark()?),
            // BINPUT, LONG_BINPUT, PUT, MEMOIZE
            b'q' | b'r' | b'p' | 0x94 => {
                let index = match op {
                    b'q' => r.uint(1)?,
                    b'r' => r.uint(4)?,
                    b'p' => super::text_number(r.line()?)?,
                    _ => b.memo.len() as u64,
                };
                let Some(Slot::Value(id)) = b.stack.last() else {
                    return Err(malformed("it memoizes a mark"));
                };
                b.memo.insert(index, *id);
            }
            // BINGET, LONG_BINGET, GET
            b'h' | b'j' | b'g' => {
                let index = match op {
                    b'h' => r.uint(1)?,
                    b'j' => r.uint(4)?,
                    _ => super::text_number(r.line()?)?,
                };
                let id = *b.memo.get(&index).ok_or_else(|| {
                    malformed(&format!(
                        "it refers to memo entry {index}, which it never made"
                    ))
                })?;
                b.stack.push(Slot::Value(id));
            }
            // GLOBAL, STACK_GLOBAL
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                b.push_node(Node::Builtin(builtin(module, name)?));
            }
            0x93 => {
                let name = b.pop()?;
                let module = b.pop()?;
                let (Node::Scalar(Plain::Str(module)), Node::Scalar(Plain::Str(name))) =
                    (&b.nodes[module], &b.nodes[name])
                else {
                    return Err(malformed("a global's name is not text"));
                };
                let global = builtin(module.as_bytes(), name.as_bytes())?;
                b.push_node(Node::Builtin(global));
            }
            // REDUCE
            b'R' => {
                let arguments = b.pop()?;
                let callable = b.pop()?;
                let node = b.reduce(callable, arguments)?;
                b.push_node(node);
            }
            other => {
                return Err(malformed(&format!(
                    "opcode 0x{other:02x} is not one of plain data"
                )))
            }
        }
    }
}

/// An int from its little-endian two's complement (`LONG1`, `LONG4`).
fn long(bytes: &[u8]) -> Plain {
    if bytes.len() > 8 {
        return Plain::BigInt(bytes.to_vec());
    }
    let fill = match bytes.last() {
        Some(&last) if last & 0x80 != 0 => 0xff,
        _ => 0,
    };
    let mut word = [fill; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    Plain::Int(i64::from_le_bytes(word))
}

/// An int written as decimal text (`INT`, `LONG`).
fn text_int(digits: &[u8]) -> Result<Plain> {
    let bad = || malformed("an int written as text is not a number");
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    if let Ok(small) = text.parse::<i64>() {
        return Ok(Plain::Int(small));
    }
    let big: num_bigint::BigInt = text.parse().map_err(|_| bad())?;
    Ok(long(&big.to_signed_bytes_le()))
}

/// A float written as text (`FLOAT`): Python's `repr`, `inf` and `nan`
/// included.
fn text_float(text: &[u8]) -> Result<f64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| malformed("a float written as text is not a number"))
}

/// The bytes of `STRING`'s argument: Python's `repr` of a byte string,
/// quoted, with its backslash escapes.
fn unescape_bytes(quoted: &[u8]) -> Result<Vec<u8>> {
    let bad = || malformed("a STRING argument is not a quoted, escaped string");
    let inner = match quoted {
        [b'\'', inner @ .., b'\''] | [b'"', inner @ .., b'"'] => inner,
        _ => return Err(bad()),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut rest = inner;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let (&e, tail) = rest.split_first().ok_or_else(bad)?;
        rest = tail;
        let unescaped = match e {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'\\' | b'\'' | b'"' => e,
            b'x' => {
                let (hex, tail) = rest.split_at_checked(2).ok_or_else(bad)?;
                rest = tail;
                hex_number(hex).ok_or_else(bad)? as u8
            }
            b'0'..=b'7' => {
                // Up to three octal digits.
                let more = rest
                    .iter()
                    .take(2)
                    .take_while(|d| (b'0'..=b'7').contains(d))
                    .count();
                let digits = std::iter::once(e).chain(rest[..more].iter().copied());
                rest = &rest[more..];
                digits.fold(0u32, |n, d| n * 8 + u32::from(d - b'0')) as u8
            }
            // Python keeps an unknown escape as it is.
            other => {
                out.push(b'\\');
                other
            }
        };
        out.push(unescaped);
    }
    Ok(out)
}

/// The text of `UNICODE`'s argument: Latin-1 bytes, except `\uXXXX` and
/// `\UXXXXXXXX` escapes (Python's raw-unicode-escape).
fn raw_unicode_escape(line: &[u8]) -> Result<String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        let width = match (c, rest.first()) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            // A backslash and the one after it are kept as they are: the
            // second cannot start an escape.
            (b'\\', Some(b'\\')) => {
                out.push_str("\\\\");
                rest = &rest[1..];
                continue;
            }
            _ => {
                out.push(char::from(c));
                continue;
            }
        };
        let (hex, tail) = rest[1..]
            .split_at_checked(width)
            .ok_or_else(|| malformed("a UNICODE argument has an escape cut short"))?;
        rest = tail;
        let code = hex_number(hex).and_then(char::from_u32).ok_or_else(|| {
            Error::Pickle(
                "the pickle has a str with an escape that is not a character (a lone \
                     surrogate), which a Rust string cannot hold"
                    .into(),
            )
        })?;
        out.push(code);
    }
    Ok(out)
}

/// Hexadecimal digits, and nothing else (no sign), as a number.
fn hex_number(digits: &[u8]) -> Option<u32> {
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

fn builtin(module: &[u8], name: &[u8]) -> Result<Builtin> {
    Ok(match (module, name) {
        (b"builtins" | b"__builtin__", b"set") => Builtin::Set,
        (b"builtins" | b"__builtin__", b"frozenset") => Builtin::FrozenSet,
        (b"builtins" | b"__builtin__", b"list") => Builtin::List,
        (b"builtins" | b"__builtin__", b"bytes") => Builtin::Bytes,
        (b"builtins" | b"__builtin__", b"bytearray") => Builtin::ByteArray,
        (b"builtins" | b"__builtin__", b"int") => Builtin::Int,
        (b"_codecs", b"encode") => Builtin::Encode,
        _ => {
            return Err(Error::Pickle(format!(
                "the pickle names the global `{}.{}`",
                String::from_utf8_lossy(module),
                String::from_utf8_lossy(name)
            )))
        }
    })
}

/// Key and value pairs from items laid out as pickle does: k, v, k, v.
fn pairs(items: Vec<usize>) -> Result<Vec<(usize, usize)>> {
    if items.len() % 2 != 0 {
        return Err(malformed("a dict has a key without a value"));
    }
    Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

struct Builder {
    nodes: Vec<Node>,
    stack: Vec<Slot>,
    memo: HashMap<u64, usize>,
}

impl Builder {
    fn push(&mut self, value: Plain) {
        self.push_node(Node::Scalar(value));
    }

    fn push_node(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Slot::Value(self.nodes.len() - 1));
    }

    fn pop(&mut self) -> Result<usize> {
        match self.stack.pop() {
            Some(Slot::Value(id)) => Ok(id),
            Some(Slot::Mark) | None => Err(malformed("its stack runs out")),
        }
    }

    fn pop_to_mark(&mut self) -> Result<Vec<usize>> {
        let mark = self
            .stack
            .iter()
            .rposition(|slot| matches!(slot, Slot::Mark))
            .ok_or_else(|| malformed("a mark is missing"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|slot| match slot {
                Slot::Value(id) => id,
                Slot::Mark => unreachable!("the topmost mark is below these"),
            })
            .collect())
    }

    /// Adds items to the container on top of the stack (`APPEND`,
    /// `SETITEMS`, ...): the arena node itself, so every memo reference
    /// sees them. Each opcode adds to its own kind of container only, as
    /// in Python (and as the check assumes: it looks for NaN keys in what
    /// `SETITEMS` and `ADDITEMS` add, not in what `APPENDS` does).
    fn add_to_top(&mut self, adding: Adding, items: Vec<usize>) -> Result<()> {
        let Some(&Slot::Value(top)) = self.stack.last() else {
            return Err(malformed("its stack runs out"));
        };
        match (adding, &mut self.nodes[top]) {
            (Adding::List, Node::List(ids)) | (Adding::Set, Node::Set(ids)) => ids.extend(items),
            (Adding::Dict, Node::Dict(entries)) => entries.extend(pairs(items)?),
            _ => {
                return Err(malformed(
                    "it adds items to something that is not a container of that kind",
                ))
            }
        }
        Ok(())
    }

    /// `callable(*arguments)` for the builtins pickle spells data with.
    fn reduce(&self, callable: usize, arguments: usize) -> Result<Node> {
        let Node::Builtin(builtin) = self.nodes[callable] else {
            return Err(malformed("it calls something that is not a builtin"));
        };
        let Node::Tuple(arguments) = &self.nodes[arguments] else {
            return Err(malformed("a call's arguments are not a tuple"));
        };
        let first = arguments.first().map(|&id| &self.nodes[id]);
        // The encoding of text that spells bytes: Python's pickler always
        // writes latin-1, the only one whose code points are the bytes.
        let latin1_named = match arguments.get(1).map(|&id| &self.nodes[id]) {
            Some(Node::Scalar(Plain::Str(encoding))) => {
                matches!(encoding.to_ascii_lowercase().as_str(), "latin1" | "latin-1")
            }
            _ => false,
        };
        let items = || match first {
            None => Ok(Vec::new()),
            Some(Node::List(ids) | Node::Tuple(ids) | Node::Set(ids) | Node::FrozenSet(ids)) => {
                Ok(ids.clone())
            }
            Some(_) => Err(malformed(&format!(
                "{builtin:?}() of something not a collection"
            ))),
        };
        Ok(match (builtin, first) {
            (Builtin::Set, _) => Node::Set(items()?),
            (Builtin::FrozenSet, _) => Node::FrozenSet(items()?),
            (Builtin::List, _) => Node::List(items()?),
            (Builtin::Bytes | Builtin::ByteArray, None) => Node::Scalar(Plain::Bytes(Vec::new())),
            (Builtin::Bytes | Builtin::ByteArray, Some(Node::Scalar(Plain::Bytes(bytes)))) => {
                Node::Scalar(Plain::Bytes(bytes.clone()))
            }
            // Protocol 2 spells bytes as text whose code points are the
            // bytes: `bytearray(u'...', 'latin-1')`, `_codecs.encode(...)`.
            (
                Builtin::Bytes | Builtin::ByteArray | Builtin::Encode,
                Some(Node::Scalar(Plain::Str(text))),
            ) if latin1_named => Node::Scalar(Plain::Bytes(latin1(text)?)),
            (Builtin::Int, Some(Node::Scalar(int @ (Plain::Int(_) | Plain::BigInt(_))))) => {
                Node::Scalar(int.clone())
            }
            (builtin, _) => {
                return Err(malformed(&format!(
                    "{builtin:?}() of an argument it does not take"
                )))
            }
        })
    }

    /// The value on the stack at `STOP`, copied out of the arena.
    fn finish(mut self) -> Result<Plain> {
        let [Slot::Value(root)] = self.stack[..] else {
            return Err(malformed("it does not end with one value"));
        };
        let mut uses = vec![0usize; self.nodes.len()];
        self.count_uses(root, &mut uses, 0)?;
        let mut copies = HashMap::new();
        self.take(root, &mut uses, &mut copies, 0)
    }

    /// How many times each value is referred to from `id` down.
    fn count_uses(&self, id: usize, uses: &mut [usize], depth: u32) -> Result<()> {
        uses[id] += 1;
        if uses[id] > 1 {
            return Ok(());
        }
        too_deep(depth)?;
        for child in self.nodes[id].children() {
            self.count_uses(child, uses, depth + 1)?;
        }
        Ok(())
    }

    /// Value `id`, moved out at its last use and copied before that.
    fn take(
        &mut self,
        id: usize,
        uses: &mut [usize],
        copies: &mut HashMap<usize, Plain>,
        depth: u32,
    ) -> Result<Plain> {
        too_deep(depth)?;
        uses[id] = uses[id].saturating_sub(1);
        let last = uses[id] == 0;
        if let Some(copy) = copies.get(&id) {
            return Ok(if last {
                copies.remove(&id).unwrap_or(Plain::None)
            } else {
                copy.clone()
            });
        }
        let value = match std::mem::replace(&mut self.nodes[id], Node::Taken) {
            Node::Scalar(value) => value,
            Node::List(ids) => Plain::List(self.take_all(ids, uses, copies, depth)?),
            Node::Tuple(ids) => Plain::Tuple(self.take_all(ids, uses, copies, depth)?),
            Node::Set(ids) => Plain::Set(self.take_all(ids, uses, copies, depth)?),
            Node::FrozenSet(ids) => Plain::FrozenSet(self.take_all(ids, uses, copies, depth)?),
            Node::Dict(entries) => {
                let mut items = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let key = self.take(key, uses, copies, depth + 1)?;
                    items.push((key, self.take(value, uses, copies, depth + 1)?));
                }
                Plain::Dict(items)
            }
            Node::Builtin(builtin) => {
                return Err(Error::Pickle(format!(
                    "the pickle holds the builtin {builtin:?} itself, which is not data"
                )))
            }
            Node::Taken => {
                return Err(Error::Pickle(
                    "the pickle holds an object that contains itself, which a Rust value \
                     cannot"
                        .into(),
                ))
            }
        };
        if !last {
            copies.insert(id, value.clone());
        }
        Ok(value)
    }

    /// The items of a container `id` at `depth`.
    fn take_all(
        &mut self,
        ids: Vec<usize>,
        uses: &mut [usize],
        copies: &mut HashMap<usize, Plain>,
        depth: u32,
    ) -> Result<Vec<Plain>> {
        ids.into_iter()
            .map(|child| self.take(child, uses, copies, depth + 1))
            .collect()
    }
}

/// Recursion over a value stops at the depth the check bounds already.
fn too_deep(depth: u32) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::Pickle(format!(
            "the pickle nests containers more than {MAX_DEPTH} deep"
        )));
    }
    Ok(())
}

/// Text whose code points are bytes, as bytes.
fn latin1(text: &str) -> Result<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| malformed("bytes spelled as text hold a character beyond U+00FF"))
}

impl Plain {
    /// As serde-pickle's dynamically typed [`Value`](super::Value), whose
    /// dicts and sets are sorted: a dict key or set member must be
    /// hashable in Python's sense (no list, dict or set).
    pub(crate) fn into_value(self) -> Result<super::Value> {
        use super::Value;
        Ok(match self {
            Plain::None => Value::None,
            Plain::Bool(b) => Value::Bool(b),
            Plain::Int(i) => Value::I64(i),
            Plain::BigInt(bytes) => {
                let big = num_bigint::BigInt::from_signed_bytes_le(&bytes);
                match i64::try_from(&big) {
                    Ok(small) => Value::I64(small),
                    Err(_) => Value::Int(big),
                }
            }
            Plain::Float(f) => Value::F64(f),
            Plain::Bytes(bytes) => Value::Bytes(bytes),
            Plain::Str(text) => Value::String(text),
            Plain::List(items) => Value::List(values(items)?),
            Plain::Tuple(items) => Value::Tuple(values(items)?),
            Plain::Set(items) => Value::Set(hashables(items)?),
            Plain::FrozenSet(items) => Value::FrozenSet(hashables(items)?),
            Plain::Dict(items) => {
                // One insert at a time: `HashableValue`'s order is not total
                // across numeric types (a float and a big int can each be
                // less than the other), and collecting would sort, which
                // panics on such an order; inserting only misplaces.
                let mut dict = std::collections::BTreeMap::new();
                for (key, value) in items {
                    dict.insert(hashable(key)?, value.into_value()?);
                }
                Value::Dict(dict)
            }
        })
    }
}

fn values(items: Vec<Plain>) -> Result<Vec<super::Value>> {
    items.into_iter().map(Plain::into_value).collect()
}

/// Set members, inserted one at a time (see the dict's case above).
fn hashables(items: Vec<Plain>) -> Result<std::collections::BTreeSet<super::HashableValue>> {
    let mut set = std::collections::BTreeSet::new();
    for item in items {
        set.insert(hashable(item)?);
    }
    Ok(set)
}

fn hashable(key: Plain) -> Result<super::HashableValue> {
    let python_type = key.python_type();
    key.into_value()?.into_hashable().map_err(|_| {
        Error::Pickle(format!(
            "the pickle has {} as a dict key or set member, which Python cannot hash",
            a(python_type)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_0_text_is_unescaped_as_python_does() {
        // Python 2's repr of a byte string, as its STRING opcode holds it.
        assert_eq!(
            unescape_bytes(br"'a\n\x00\'b\101\7z\q'").unwrap(),
            b"a\n\x00'bA\x07z\\q"
        );
        assert_eq!(unescape_bytes(br#""it's""#).unwrap(), b"it's");
        assert!(unescape_bytes(b"unquoted").is_err());
        assert!(unescape_bytes(br"'cut \x4'").is_err());
        // raw-unicode-escape: Latin-1 bytes and \u escapes.
        assert_eq!(
            raw_unicode_escape(b"caf\xe9 \\u20ac \\U0001f600 \\x").unwrap(),
            "caf\u{e9} \u{20ac} \u{1f600} \\x"
        );
        assert!(raw_unicode_escape(b"\\ud800").is_err());
        // A backslash pair starts no escape; a sign is no hex digit.
        assert_eq!(raw_unicode_escape(b"\\\\u0041").unwrap(), "\\\\u0041");
        assert!(raw_unicode_escape(b"\\u+041").is_err());
        assert!(unescape_bytes(b"'\\x+f'").is_err());
        assert!(raw_unicode_escape(b"\\u20").is_err());
        assert_eq!(
            build(b"S'a\\n'\np0\n.").unwrap(),
            Plain::Bytes(b"a\n".to_vec())
        );
    }

    #[test]
    fn items_are_added_only_to_their_kind_of_container() {
        // APPENDS onto a set (with a NaN the check looks for only in
        // ADDITEMS), SETITEM onto a list: Python refuses both.
        let mut nan_into_set = b"\x80\x04\x8f(G\x7f\xf8\x00\x00\x00\x00\x00\x00".to_vec();
        nan_into_set.extend_from_slice(b"G\x3f\xf0\x00\x00\x00\x00\x00\x00e.");
        assert!(build(&nan_into_set).is_err());
        assert!(build(b"\x80\x04](K\x01K\x02eK\x00K\x09s.").is_err());
        // Text spelling bytes must say latin-1, as Python's pickler does.
        let utf8 = b"c_codecs\nencode\n(X\x02\x00\x00\x00\xc3\xa9X\x05\x00\x00\x00utf-8tR.";
        assert!(build(utf8).is_err());
        let latin1 = b"c_codecs\nencode\n(X\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1tR.";
        assert_eq!(build(latin1).unwrap(), Plain::Bytes(vec![0xe9]));
    }

    #[test]
    fn ints_of_any_width_keep_their_sign() {
        assert_eq!(long(&[]), Plain::Int(0));
        assert_eq!(long(&[0xff]), Plain::Int(-1));
        assert_eq!(long(&[0x80, 0x00]), Plain::Int(128));
        assert_eq!(
            text_int(b"-9223372036854775808").unwrap(),
            Plain::Int(i64::MIN)
        );
        assert_eq!(
            text_int(b"18446744073709551616").unwrap(),
            Plain::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert!(text_int(b"12x").is_err());
    }
}
