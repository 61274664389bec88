//! What the fuzz targets share: names unique to this process, raw frames
//! on a Unix stream written without `SIGPIPE`, the scripted peer's settings
//! read from the fuzzer's first bytes, and a reference side of the authkey
//! handshake written from CPython's `multiprocessing.connection` (3.12)
//! rather than with ipc-socket's code, so that the handshake targets can
//! tell a right answer from a wrong one.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac, SimpleHmac};

/// A name no other process uses and this one uses once: `prefix`, the
/// process id and a counter.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// `payload` behind the 4-byte big-endian length header of
/// `multiprocessing.connection`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len())
        .expect("fuzz frames are small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(payload);
    out
}

/// Writes all of `bytes` with `MSG_NOSIGNAL`. A fuzz target has libFuzzer's
/// `main`, not Rust's, so `SIGPIPE` is not ignored, and a write to a peer
/// that already gave up would otherwise kill the fuzzer.
pub fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    while !bytes.is_empty() {
        match send(stream.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one frame with a short (4-byte) header, as ipc-socket writes
/// every handshake message. `None` at a clean end of stream, an error for
/// anything else (a read timeout, a torn frame, a length over 64 KiB).
pub fn read_frame(stream: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match stream.read(&mut header[..1])? {
        0 => return Ok(None),
        _ => stream.read_exact(&mut header[1..])?,
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > 64 * 1024 {
        return Err(io::Error::other(format!("a frame of {len} bytes")));
    }
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Reads and drops everything until the peer closes (or the read timeout
/// set on the stream passes).
pub fn drain(stream: &mut UnixStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// The handshake deadline of scripts that end by shutting down.
pub const PATIENT: Duration = Duration::from_secs(5);
/// The handshake deadline of scripts that keep the connection open.
pub const HASTY: Duration = Duration::from_millis(20);
/// How much later than its deadline a handshake may end on a busy machine.
pub const SLACK: Duration = Duration::from_secs(2);

/// What the scripted peer saw of the side under test.
#[derive(Debug, Default)]
pub struct Seen {
    /// The challenge message the scripted peer sent.
    pub ours: Option<Vec<u8>>,
    /// The side under test's answer to it.
    pub answer: Option<Vec<u8>>,
    /// The side under test's verdict on the scripted peer's answer.
    pub verdict: Option<Vec<u8>>,
}

/// Plays `script` on `stream` with `play` (an I/O error, the side under
/// test giving up and closing, ends it), closes the write side unless the
/// script keeps it open, and reads until the other side closes.
pub fn play_out(
    mut stream: UnixStream,
    script: &Script,
    play: impl FnOnce(&mut UnixStream, &Script, &mut Seen) -> io::Result<()>,
) -> Seen {
    let mut seen = Seen::default();
    let _ = play(&mut stream, script, &mut seen);
    if !script.keep_open {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    drain(&mut stream);
    seen
}

/// How a scripted peer behaves, read from the first two bytes of the
/// fuzzer's input; the rest is the tail it sends where the script says.
#[derive(Clone, Debug)]
pub struct Script {
    /// 0: the tail is the peer's whole side of the conversation. 1 to 3:
    /// the peer plays that many steps right (computed with the key), then
    /// the tail; the targets say what each step is.
    pub stage: u8,
    /// The tail is records (a length byte, then up to that many bytes),
    /// each sent as one frame; otherwise its raw bytes go out as they are.
    pub framed: bool,
    /// Keep the connection open at the end instead of shutting down the
    /// writing side: the side under test must give up at its deadline.
    pub keep_open: bool,
    /// A listener script waits for `#WELCOME#` before challenging, as a
    /// Python client does, instead of sending its challenge with its answer.
    pub python_order: bool,
    /// How the peer answers a challenge (see [`response`]).
    pub answer: u8,
    /// The form of a challenge the peer makes up (see [`challenge_message`]).
    pub challenge: u8,
    /// The rest of the input.
    pub tail: Vec<u8>,
}

impl Script {
    /// Reads a script; missing bytes count as zero.
    pub fn parse(data: &[u8]) -> Script {
        let flags = data.first().copied().unwrap_or(0);
        let forms = data.get(1).copied().unwrap_or(0);
        Script {
            stage: flags & 3,
            framed: flags & 4 != 0,
            keep_open: flags & 8 != 0,
            python_order: flags & 16 != 0,
            answer: forms & 7,
            challenge: (forms >> 3) & 7,
            tail: data.get(2..).unwrap_or_default().to_vec(),
        }
    }

    /// The first record of the tail and the rest, for stages that take a
    /// challenge from the fuzzer: a length byte and up to that many bytes.
    pub fn split_record(&self) -> (Vec<u8>, Vec<u8>) {
        match self.tail.split_first() {
            None => (Vec::new(), Vec::new()),
            Some((&n, rest)) => {
                let n = usize::from(n).min(rest.len());
                (rest[..n].to_vec(), rest[n..].to_vec())
            }
        }
    }

    /// `bytes` as the peer sends them: framed record by record, or raw.
    pub fn wire(&self, bytes: &[u8]) -> Vec<u8> {
        if !self.framed {
            return bytes.to_vec();
        }
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some((&n, after)) = rest.split_first() {
            let n = usize::from(n).min(after.len());
            out.extend(frame(&after[..n]));
            rest = &after[n..];
        }
        out
    }

    /// The first frame the peer's tail holds when it is framed.
    pub fn first_framed(&self) -> Option<Vec<u8>> {
        (self.framed && !self.tail.is_empty()).then(|| self.split_record().0)
    }
}

/// The authkey both sides of the handshake targets use.
pub const KEY: &[u8] = b"the fuzzers' authkey";
/// A key that is not [`KEY`], for answers that must be refused.
pub const WRONG_KEY: &[u8] = b"a wrong authkey";
/// Frames of the handshake, as in CPython.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The verdict on a right answer.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// The verdict on a wrong answer.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// The longest handshake frame either side reads (CPython's 256).
pub const MAX_FRAME: usize = 256;

/// The digests CPython 3.12 allows after `{`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    /// `md5`, also the legacy un-prefixed form.
    Md5,
    /// `sha256`.
    Sha256,
    /// `sha384`.
    Sha384,
    /// `sha3_256`.
    Sha3_256,
    /// `sha3_384`.
    Sha3_384,
}

const DIGESTS: [(Digest, &str); 5] = [
    (Digest::Md5, "md5"),
    (Digest::Sha256, "sha256"),
    (Digest::Sha384, "sha384"),
    (Digest::Sha3_256, "sha3_256"),
    (Digest::Sha3_384, "sha3_384"),
];

impl Digest {
    fn name(self) -> &'static str {
        DIGESTS.iter().find(|(d, _)| *d == self).unwrap().1
    }

    /// HMAC with this digest.
    pub fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut mac = <M as KeyInit>::new_from_slice(key).unwrap();
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
            Digest::Sha3_256 => run::<SimpleHmac<sha3::Sha3_256>>(key, message),
            Digest::Sha3_384 => run::<SimpleHmac<sha3::Sha3_384>>(key, message),
        }
    }
}

/// CPython's `_get_digest_name_and_payload`: `None` for a legacy 16- or
/// 20-byte message (raw MD5), the digest and the rest for a `{name}`
/// prefix, `Err` for anything else.
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8]), ()> {
    if [16, 20].contains(&message.len()) {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        // message.find(b'}', 1, _MAX_DIGEST_LEN + 2) with _MAX_DIGEST_LEN 8
        let end = message.len().min(10);
        if let Some(curly) = message[1..end].iter().position(|&b| b == b'}') {
            let name = &message[1..1 + curly];
            if let Some((digest, _)) = DIGESTS.iter().find(|(_, n)| n.as_bytes() == name) {
                return Ok((Some(*digest), &message[curly + 2..]));
            }
        }
    }
    Err(())
}

/// What CPython's `answer_challenge` sends back for the challenge frame
/// `#CHALLENGE#` + `message`, or `None` if it refuses the challenge (a
/// frame over 256 bytes, a message under 20 bytes or of no known form).
pub fn expected_answer(key: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    if CHALLENGE.len() + message.len() > MAX_FRAME || message.len() < 20 {
        return None;
    }
    match digest_and_payload(message).ok()? {
        (None, _) => Some(Digest::Md5.mac(key, message)),
        (Some(digest), _) => {
            let mut out = format!("{{{}}}", digest.name()).into_bytes();
            out.extend(digest.mac(key, message));
            Some(out)
        }
    }
}

/// Whether CPython's `deliver_challenge` accepts `response` to its
/// challenge `message` (`_verify_challenge`).
pub fn accepts(key: &[u8], message: &[u8], response: &[u8]) -> bool {
    match digest_and_payload(response) {
        Ok((digest, mac)) => digest.unwrap_or(Digest::Md5).mac(key, message) == mac,
        Err(()) => false,
    }
}

/// The answer a scripted peer gives to the challenge `message`: `form` 0
/// is the raw HMAC-MD5 of CPython 3.11 and earlier, 1 to 5 `{name}` and
/// the HMAC of each digest in turn, 6 and 7 those two forms with the
/// wrong key.
pub fn response(form: u8, message: &[u8]) -> Vec<u8> {
    let key = if answer_is_right(form) {
        KEY
    } else {
        WRONG_KEY
    };
    match form % 8 {
        0 | 6 => Digest::Md5.mac(key, message),
        n => {
            let digest = if n == 7 {
                Digest::Sha256
            } else {
                DIGESTS[usize::from(n) - 1].0
            };
            let mut out = format!("{{{}}}", digest.name()).into_bytes();
            out.extend(digest.mac(key, message));
            out
        }
    }
}

/// Whether [`response`] answers with the right key.
pub fn answer_is_right(form: u8) -> bool {
    form % 8 < 6
}

/// A well-formed challenge message a scripted peer makes up: `form` 0 is
/// a legacy 20-byte message, 1 to 5 `{name}` and 40 bytes for each
/// digest, 6 a legacy 20-byte one with a prefix-like start, 7 `{sha256}`
/// and 40 bytes.
pub fn challenge_message(form: u8) -> Vec<u8> {
    let random: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ form).collect();
    match form % 8 {
        0 => random[..20].to_vec(),
        6 => [&b"{sha256}"[..], &random[..12]].concat(),
        n => {
            let digest = if n == 7 {
                Digest::Sha256
            } else {
                DIGESTS[usize::from(n) - 1].0
            };
            [format!("{{{}}}", digest.name()).as_bytes(), &random].concat()
        }
    }
}

/// Whether `frame` is a challenge as ipc-socket makes them: `#CHALLENGE#`,
/// `{sha256}` and 40 bytes.
pub fn is_our_challenge(frame: &[u8]) -> bool {
    frame.len() == CHALLENGE.len() + 8 + 40 && frame.starts_with(b"#CHALLENGE#{sha256}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_matches_the_documented_vectors() {
        let counting: Vec<u8> = (0..20).collect();
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(&expected_answer(b"k", &counting).unwrap()),
            "b5b4bbed3ac433b774f3d4f6736f72fa"
        );
        let mut challenge = b"{sha256}".to_vec();
        challenge.extend(0..40u8);
        let answer = expected_answer(b"k", &challenge).unwrap();
        assert_eq!(&answer[..8], b"{sha256}");
        assert_eq!(
            hex(&answer[8..]),
            "e2d18d2266efaf3d644ed631dfa02c401ec26e092bef5993514fbbe8a5cd1f7e"
        );
        assert!(accepts(b"k", &challenge, &answer));
        assert!(accepts(
            b"k",
            &challenge,
            &Digest::Md5.mac(b"k", &challenge)
        ));
        for form in 0..8 {
            let message = challenge_message(form);
            assert!(expected_answer(KEY, &message).is_some(), "{form}");
            assert_eq!(accepts(KEY, &message, &response(form, &message)), form < 6);
        }
    }
}
