//! The codecs for typed messages: serde values encoded with postcard, the
//! default of every mechanism, or (feature `pickle`) with Python's pickle,
//! which a connection can be switched to ([`Codec`]).
//!
//! Every mechanism encodes and decodes postcard through these functions,
//! so a typed message sent through a pipe can be received from a queue or
//! a socket unchanged.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Appends the postcard encoding of `value` to `out`.
///
/// ```
/// let mut buf = Vec::new();
/// ipc_core::codec::encode_into(&(7u8, "hi"), &mut buf)?;
/// assert_eq!(buf, [7, 2, b'h', b'i']);
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[inline(always)]
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    encode_into_for::<(), T>(value, out)
}

/// [`encode_into`] through serde code of its own for the marker type `M`,
/// for a loop that encodes many small values (a pool's tasks).
///
/// Serde's code for a value, a `u64`'s say, is one function per
/// serializer type. Once a program encodes that value in many places, the
/// compiler stops inlining it and each value costs a call, where a loop
/// of trivial tasks spends as long again in the call as in the work. A
/// marker that only one loop uses makes its serializer a type no other
/// code calls, so that the compiler can inline that code there. The bytes
/// are [`encode_into`]'s.
///
/// ```
/// struct Tasks;
/// let mut buf = Vec::new();
/// ipc_core::codec::encode_into_for::<Tasks, _>(&300u64, &mut buf)?;
/// assert_eq!(buf, [0xAC, 0x02]);
/// # Ok::<(), ipc_core::Error>(())
/// ```
// Inlined, with postcard's serializer built here rather than through
// `serialize_with_flavor`, which the compiler keeps out of line: a small
// value's encoding is then a few moves in its caller's code, where the
// call cost the pool's tasks a third of their time.
#[inline(always)]
pub fn encode_into_for<M, T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let mut serializer = postcard::Serializer {
        output: AppendTo::<M>(out, PhantomData),
    };
    value.serialize(&mut serializer).map_err(Error::Encode)
}

/// The size of `value`'s postcard encoding, found by a pass that writes
/// nothing: for a caller that reserves room before it encodes (a queue's
/// in-place put).
///
/// ```
/// assert_eq!(ipc_core::codec::encoded_size(&(7u8, "hi"))?, 4);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn encoded_size<T: Serialize + ?Sized>(value: &T) -> Result<usize> {
    postcard::experimental::serialized_size(value).map_err(Error::Encode)
}

/// Writes `value`'s postcard encoding at the start of `out`, giving its
/// length; [`Error::Encode`] if it does not fit.
///
/// ```
/// let mut buf = [0u8; 8];
/// let n = ipc_core::codec::encode_to_slice(&(7u8, "hi"), &mut buf)?;
/// assert_eq!(&buf[..n], [7, 2, b'h', b'i']);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn encode_to_slice<T: Serialize + ?Sized>(value: &T, out: &mut [u8]) -> Result<usize> {
    postcard::to_slice(value, out)
        .map(|written| written.len())
        .map_err(Error::Encode)
}

/// A postcard output that appends to a `Vec` with `extend_from_slice`, so
/// a large byte field is one `memcpy`; postcard's own `to_extend` copies
/// element by element, which made typed 1 MiB messages markedly slower
/// than the bytes path.
///
/// `M` only makes it a type of its own ([`encode_into_for`]).
struct AppendTo<'a, M>(&'a mut Vec<u8>, PhantomData<fn() -> M>);

impl<M> postcard::ser_flavors::Flavor for AppendTo<'_, M> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    // Always inlined: each number of a message comes through here, and in
    // a large program the compiler would otherwise make it a call.
    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        // A varint or a short field: a copy of a length known at compile
        // time is a few moves, where a call to memcpy (or a loop of byte
        // pushes, each checking the capacity) costs more than the rest of
        // a small message's encoding.
        let out = &mut *self.0;
        match bytes.len() {
            1 => out.push(bytes[0]),
            2 => extend_fixed::<2>(out, bytes),
            3 => extend_fixed::<3>(out, bytes),
            4 => extend_fixed::<4>(out, bytes),
            5 => extend_fixed::<5>(out, bytes),
            6 => extend_fixed::<6>(out, bytes),
            7 => extend_fixed::<7>(out, bytes),
            8 => extend_fixed::<8>(out, bytes),
            9 => extend_fixed::<9>(out, bytes),
            10 => extend_fixed::<10>(out, bytes),
            _ => out.extend_from_slice(bytes),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `bytes`, which are `N` long.
#[inline(always)]
fn extend_fixed<const N: usize>(out: &mut Vec<u8>, bytes: &[u8]) {
    if let Ok(bytes) = <&[u8; N]>::try_from(bytes) {
        out.extend_from_slice(bytes);
    }
}

/// Decodes one value that must use all of `bytes`.
///
/// Trailing bytes are an error: they mean the peer sent another type than
/// the one expected, and silently ignoring them would hide that.
///
/// ```
/// let value: (u8, String) = ipc_core::codec::decode(&[7, 2, b'h', b'i'])?;
/// assert_eq!(value, (7, "hi".to_string()));
/// assert!(ipc_core::codec::decode::<u8>(&[7, 0]).is_err());
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[inline(always)]
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    decode_borrowed(bytes)
}

/// Like [`decode`], for a value that may borrow from `bytes` (a `&str`, a
/// `&[u8]`), so that reading it copies nothing.
///
/// ```
/// let (name, data): (&str, &[u8]) = ipc_core::codec::decode_borrowed(&[2, b'h', b'i', 1, 9])?;
/// assert_eq!((name, data), ("hi", &[9u8][..]));
/// # Ok::<(), ipc_core::Error>(())
/// ```
// Inlined, for the reason `encode_into` is; the error's path is not.
#[inline(always)]
pub fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    decode_through::<(), T>(bytes)
}

/// [`decode`] through serde code of its own for the marker type `M`, for
/// a loop that decodes many small values: see [`encode_into_for`].
///
/// ```
/// struct Results;
/// let value: u64 = ipc_core::codec::decode_for::<Results, _>(&[0xAC, 0x02])?;
/// assert_eq!(value, 300);
/// assert!(ipc_core::codec::decode_for::<Results, u64>(&[0xAC, 0x02, 0]).is_err());
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[inline(always)]
pub fn decode_for<M: 'static, T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    decode_through::<M, T>(bytes)
}

/// Decodes one value that must use all of `bytes`, reading through
/// [`ReadFrom<M>`].
#[inline(always)]
fn decode_through<'a, M: 'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    let mut deserializer = postcard::Deserializer::from_flavor(ReadFrom::<M> {
        rest: bytes,
        marker: PhantomData,
    });
    let decoded = match T::deserialize(&mut deserializer) {
        Ok(value) => match deserializer.finalize() {
            Ok([]) => return Ok(value),
            _ => postcard::Error::DeserializeBadEncoding,
        },
        Err(e) => e,
    };
    Err(decode_error(bytes, decoded))
}

/// A postcard input reading a slice, a type of its own for each `M`
/// ([`decode_for`]).
struct ReadFrom<'de, M> {
    rest: &'de [u8],
    marker: PhantomData<fn() -> M>,
}

impl<'de, M: 'de> postcard::de_flavors::Flavor<'de> for ReadFrom<'de, M> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    #[inline(always)]
    fn pop(&mut self) -> postcard::Result<u8> {
        let (&byte, rest) = self
            .rest
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        Ok(byte)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.rest.len())
    }

    #[inline]
    fn try_take_n(&mut self, count: usize) -> postcard::Result<&'de [u8]> {
        let (taken, rest) = self
            .rest
            .split_at_checked(count)
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        Ok(taken)
    }

    #[inline]
    fn finalize(self) -> postcard::Result<&'de [u8]> {
        Ok(self.rest)
    }
}

/// The error of `bytes` that did not decode with `postcard`'s error.
#[cold]
fn decode_error(bytes: &[u8], postcard: postcard::Error) -> Error {
    // Python's conn.send(obj) writes a pickle: say so rather than leave the
    // reader with postcard's "hit the end of buffer".
    match pickle_protocol(bytes) {
        Some(protocol) => Error::LooksLikePickle { protocol },
        None => Error::Decode(postcard),
    }
}

/// The protocol of a pickle, if `bytes` begin as one of protocol 2 or
/// later does (the `PROTO` opcode, then the protocol).
///
/// ```
/// assert_eq!(ipc_core::codec::pickle_protocol(b"\x80\x04K\x07."), Some(4));
/// assert_eq!(ipc_core::codec::pickle_protocol(&[7, 2, b'h', b'i']), None);
/// ```
pub fn pickle_protocol(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [0x80, protocol @ 2..=5, ..] => Some(*protocol),
        _ => None,
    }
}

/// How a connection encodes its typed messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// postcard: compact and fast, for Rust peers. The default.
    #[default]
    Postcard,
    /// Python's pickle (feature `pickle`), for Python peers that use
    /// `conn.send(obj)` and `conn.recv()`; see [`crate::pickle`].
    #[cfg(feature = "pickle")]
    Pickle,
}

impl Codec {
    /// The codec's name in an inherited connection's handle text.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Postcard => "postcard",
            #[cfg(feature = "pickle")]
            Codec::Pickle => "pickle",
        }
    }

    /// The codec named `name` (see [`name`](Self::name)); pickle needs the
    /// feature in the process that reads it.
    pub(crate) fn named(name: &str) -> Result<Codec> {
        match name {
            "postcard" => Ok(Codec::Postcard),
            #[cfg(feature = "pickle")]
            "pickle" => Ok(Codec::Pickle),
            #[cfg(not(feature = "pickle"))]
            "pickle" => Err(crate::Error::Unsupported(
                "the connection speaks pickle: enable ipc-core's `pickle` feature here",
            )),
            _ => Err(crate::Error::InvalidArgument(
                "unknown codec in a connection handle",
            )),
        }
    }

    /// Appends the encoding of `value` to `out`.
    pub fn encode_into<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Codec::Postcard => encode_into(value, out),
            #[cfg(feature = "pickle")]
            Codec::Pickle => crate::pickle::encode_into(value, out),
        }
    }

    /// Decodes one value that must use all of `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        match self {
            Codec::Postcard => decode(bytes),
            #[cfg(feature = "pickle")]
            Codec::Pickle => crate::pickle::decode(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_fields_encode_as_postcard_does() {
        for shift in 0..64 {
            let value = (1u64 << shift) | 1;
            let mut ours = vec![9];
            super::encode_into(&(value, "x".repeat(shift)), &mut ours).unwrap();
            assert_eq!(
                ours[1..],
                postcard::to_stdvec(&(value, "x".repeat(shift))).unwrap()
            );
        }
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Shape {
        Point,
        Line(u32, i64),
        Named { name: String, sides: Vec<u16> },
    }

    /// A marker of the tests' own.
    enum Marked {}

    /// Postcard's error in a decoding's failure.
    fn postcard_error<T: std::fmt::Debug>(decoded: crate::Result<T>) -> postcard::Error {
        match decoded {
            Err(crate::Error::Decode(e)) => e,
            other => panic!("not a decoding error: {other:?}"),
        }
    }

    #[test]
    fn a_marked_codec_writes_and_reads_the_same_bytes() {
        let values = [
            Shape::Point,
            Shape::Line(u32::MAX, i64::MIN),
            Shape::Named {
                name: "é".repeat(200),
                sides: (0..300).collect(),
            },
        ];
        for value in &values {
            let (mut plain, mut marked) = (vec![7], vec![7]);
            super::encode_into(value, &mut plain).unwrap();
            super::encode_into_for::<Marked, _>(value, &mut marked).unwrap();
            assert_eq!(plain, marked);
            let read: Shape = super::decode_for::<Marked, _>(&marked[1..]).unwrap();
            assert_eq!(&read, value);
            assert_eq!(postcard::from_bytes::<Shape>(&marked[1..]).unwrap(), *value);
            // Cut short, or with a byte too many, it fails as postcard's
            // own reader does.
            let cut = &marked[1..marked.len() - 1];
            assert_eq!(
                postcard_error(super::decode_for::<Marked, Shape>(cut)),
                postcard::from_bytes::<Shape>(cut).unwrap_err()
            );
            let longer = [&marked[1..], &[0][..]].concat();
            let (_, rest) = postcard::take_from_bytes::<Shape>(&longer).unwrap();
            assert_eq!(rest, [0]);
            assert_eq!(
                postcard_error(super::decode_for::<Marked, Shape>(&longer)),
                postcard::Error::DeserializeBadEncoding
            );
        }
        // A varint too long or cut short is an error, not a read past the end.
        assert_eq!(
            postcard_error(super::decode_for::<Marked, u64>(&[0xFF; 11])),
            postcard::Error::DeserializeBadVarint
        );
        assert_eq!(
            postcard_error(super::decode_for::<Marked, u64>(&[0x80])),
            postcard::Error::DeserializeUnexpectedEnd
        );
    }
}
