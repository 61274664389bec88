//! The stream framing of Python's `multiprocessing.connection`, the one
//! implementation every stream connection in the workspace uses.
//!
//! A frame is a header followed by the payload. The header is the payload
//! length as a 4-byte big-endian signed integer; a payload longer than
//! `0x7fff_ffff` bytes is announced by -1 (`ff ff ff ff`) followed by the
//! length as an 8-byte big-endian unsigned integer. See `docs/PROTOCOL.md` in the repository.

use crate::{Error, Result};

/// The largest payload announced by the short 4-byte header.
pub const SHORT_MAX: u64 = 0x7fff_ffff;

/// The longest header: the -1 escape and an 8-byte length.
pub const MAX_HEADER_LEN: usize = 12;

/// An encoded frame header.
///
/// ```
/// use ipc_core::frame::Header;
/// assert_eq!(Header::new(5).as_bytes(), [0, 0, 0, 5]);
/// assert_eq!(
///     Header::new(1 << 31).as_bytes(),
///     [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
/// );
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Header {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl Header {
    /// The header announcing a payload of `payload_len` bytes.
    pub fn new(payload_len: u64) -> Header {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        if payload_len <= SHORT_MAX {
            // Fits in 31 bits, so the signed and unsigned encodings agree.
            bytes[..4].copy_from_slice(&(payload_len as u32).to_be_bytes());
            Header { bytes, len: 4 }
        } else {
            bytes[..4].copy_from_slice(&(-1i32).to_be_bytes());
            bytes[4..].copy_from_slice(&payload_len.to_be_bytes());
            Header { bytes, len: 12 }
        }
    }

    /// The header's bytes as they go on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What the start of a byte stream says about the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed; the header is at least this long.
    NeedAtLeast(usize),
    /// A complete header of `header_len` bytes announcing `payload_len`.
    Frame {
        /// How many bytes the header took.
        header_len: usize,
        /// How long the payload that follows is.
        payload_len: u64,
    },
}

/// Parses a frame header at the start of `buf`.
///
/// A negative length other than -1 is an [`Error::InvalidHeader`]: Python
/// reads it as an empty message and loses its place in the stream; we refuse.
///
/// ```
/// use ipc_core::frame::{parse_header, Parsed};
/// assert_eq!(parse_header(&[0, 0])?, Parsed::NeedAtLeast(4));
/// assert_eq!(parse_header(&[0, 0, 0, 3, b'a'])?, Parsed::Frame { header_len: 4, payload_len: 3 });
/// assert_eq!(parse_header(&[0xff; 4])?, Parsed::NeedAtLeast(12));
/// assert!(parse_header(&[0xff, 0xff, 0xff, 0xfe]).is_err());
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn parse_header(buf: &[u8]) -> Result<Parsed> {
    let Some(short) = buf.first_chunk::<4>() else {
        return Ok(Parsed::NeedAtLeast(4));
    };
    match i32::from_be_bytes(*short) {
        n if n >= 0 => Ok(Parsed::Frame {
            header_len: 4,
            payload_len: n as u64,
        }),
        -1 => match buf.get(4..12) {
            Some(long) => {
                let long: [u8; 8] = long.try_into().expect("slice of 8 bytes");
                Ok(Parsed::Frame {
                    header_len: 12,
                    payload_len: u64::from_be_bytes(long),
                })
            }
            None => Ok(Parsed::NeedAtLeast(12)),
        },
        _ => Err(Error::InvalidHeader { header: *short }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_python_byte_for_byte() {
        // Observed from CPython 3.11 (docs/PROTOCOL.md).
        assert_eq!(Header::new(0).as_bytes(), [0, 0, 0, 0]);
        assert_eq!(Header::new(16384).as_bytes(), [0, 0, 0x40, 0]);
        assert_eq!(Header::new(16385).as_bytes(), [0, 0, 0x40, 1]);
        assert_eq!(Header::new(SHORT_MAX).as_bytes(), [0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(
            Header::new(SHORT_MAX + 1).as_bytes(),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
    }

    #[test]
    fn long_form_is_accepted_for_any_size() {
        let buf = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(
            parse_header(&buf).unwrap(),
            Parsed::Frame {
                header_len: 12,
                payload_len: 5
            }
        );
    }

    #[test]
    fn every_header_round_trips() {
        for len in [
            0,
            1,
            255,
            65_536,
            SHORT_MAX,
            SHORT_MAX + 1,
            1 << 40,
            u64::MAX,
        ] {
            let header = Header::new(len);
            let parsed = parse_header(header.as_bytes()).unwrap();
            assert_eq!(
                parsed,
                Parsed::Frame {
                    header_len: header.as_bytes().len(),
                    payload_len: len
                }
            );
        }
    }

    #[test]
    fn partial_headers_ask_for_more() {
        for cut in 0..4 {
            assert_eq!(
                parse_header(&[0, 0, 0, 9][..cut]).unwrap(),
                Parsed::NeedAtLeast(4)
            );
        }
        for cut in 4..12 {
            let long = Header::new(SHORT_MAX + 9);
            assert_eq!(
                parse_header(&long.as_bytes()[..cut]).unwrap(),
                Parsed::NeedAtLeast(12)
            );
        }
    }

    #[test]
    fn negative_lengths_other_than_escape_are_refused() {
        for header in [[0xff, 0xff, 0xff, 0xfe], [0x80, 0, 0, 0]] {
            assert!(
                matches!(parse_header(&header), Err(Error::InvalidHeader { header: h }) if h == header)
            );
        }
    }
}
