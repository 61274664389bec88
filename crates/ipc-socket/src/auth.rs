//! The authkey challenge–response of Python's `multiprocessing.connection`,
//! in both forms: the legacy raw HMAC-MD5 of CPython 3.11 and earlier, and
//! the `{digest}`-prefixed form of 3.12 and later. See `docs/PROTOCOL.md` in the repository.
//!
//! As deliverer we send `#CHALLENGE#{sha256}` and 40 random bytes and accept
//! a `{name}`-prefixed MAC for any of Python's five digests or a raw 16-byte
//! MD5 (what a 3.11 peer answers), comparing in constant time. As answerer
//! we reply raw HMAC-MD5 to a 20- or 16-byte challenge and `{name}` + MAC to
//! a prefixed one, as CPython 3.12 does.

use std::os::fd::BorrowedFd;

use hmac::{Hmac, KeyInit, Mac, SimpleHmac};
use ipc_core::{Connection, Deadline, Error, Interest, Result, Transport};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in our challenges (CPython 3.12's `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// The longest handshake frame either side accepts, as in CPython.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// Lengths of an un-prefixed (legacy, MD5-only) challenge or response.
const LEGACY_LENGTHS: [usize; 2] = [20, 16];
/// The longest digest name between the braces.
const MAX_DIGEST_NAME: usize = 8;

/// The digests Python allows in a `{name}` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
    Sha3_256,
    Sha3_384,
}

impl Digest {
    fn from_name(name: &[u8]) -> Option<Digest> {
        Some(match name {
            b"md5" => Digest::Md5,
            b"sha256" => Digest::Sha256,
            b"sha384" => Digest::Sha384,
            b"sha3_256" => Digest::Sha3_256,
            b"sha3_384" => Digest::Sha3_384,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    /// The length of a MAC of this digest.
    fn len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 | Digest::Sha3_256 => 32,
            Digest::Sha384 | Digest::Sha3_384 => 48,
        }
    }

    /// Runs `f` over an HMAC of this digest keyed with `key` and fed
    /// `message`.
    fn with_mac<R>(self, key: &[u8], message: &[u8], f: impl MacUser<R>) -> R {
        fn keyed<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> M {
            let mut mac =
                <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(message);
            mac
        }
        match self {
            Digest::Md5 => f.use_mac(keyed::<Hmac<md5::Md5>>(key, message)),
            Digest::Sha256 => f.use_mac(keyed::<Hmac<sha2::Sha256>>(key, message)),
            Digest::Sha384 => f.use_mac(keyed::<Hmac<sha2::Sha384>>(key, message)),
            // SHA-3 cores are sponges, which only the simple HMAC takes.
            Digest::Sha3_256 => f.use_mac(keyed::<SimpleHmac<sha3::Sha3_256>>(key, message)),
            Digest::Sha3_384 => f.use_mac(keyed::<SimpleHmac<sha3::Sha3_384>>(key, message)),
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        struct Finish;
        impl MacUser<Vec<u8>> for Finish {
            fn use_mac<M: Mac>(self, mac: M) -> Vec<u8> {
                mac.finalize().into_bytes().to_vec()
            }
        }
        self.with_mac(key, message, Finish)
    }

    /// Whether `tag` is the MAC of `message`, compared in constant time
    /// (`hmac`'s `verify_slice`).
    fn verifies(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        struct Verify<'t>(&'t [u8]);
        impl MacUser<bool> for Verify<'_> {
            fn use_mac<M: Mac>(self, mac: M) -> bool {
                mac.verify_slice(self.0).is_ok()
            }
        }
        self.with_mac(key, message, Verify(tag))
    }
}

/// What to do with a keyed HMAC whose digest is known only at run time.
trait MacUser<R> {
    fn use_mac<M: Mac>(self, mac: M) -> R;
}

/// Splits a challenge or response into its digest and payload, as CPython's
/// `_get_digest_name_and_payload` does: a legacy length means raw MD5.
fn digest_and_payload(message: &[u8]) -> Result<(Digest, &[u8])> {
    if LEGACY_LENGTHS.contains(&message.len()) {
        return Ok((Digest::Md5, message));
    }
    let unsupported = || {
        Error::Authentication(
            "unsupported message length, missing digest prefix, or unsupported digest".into(),
        )
    };
    let rest = message.strip_prefix(b"{").ok_or_else(unsupported)?;
    let close = rest
        .iter()
        .take(MAX_DIGEST_NAME + 1)
        .position(|&b| b == b'}')
        .ok_or_else(unsupported)?;
    let digest = Digest::from_name(&rest[..close]).ok_or_else(unsupported)?;
    Ok((digest, &rest[close + 1..]))
}

/// The answer to a challenge payload (everything after `#CHALLENGE#`).
fn response_to(key: &[u8], challenge: &[u8]) -> Result<Vec<u8>> {
    let (digest, _) = digest_and_payload(challenge)?;
    let mac = digest.mac(key, challenge);
    if LEGACY_LENGTHS.contains(&challenge.len()) {
        return Ok(mac);
    }
    let mut response = format!("{{{}}}", digest.name()).into_bytes();
    response.extend_from_slice(&mac);
    Ok(response)
}

/// Whether `response` is a valid answer to our challenge `message`.
fn verify(key: &[u8], message: &[u8], response: &[u8]) -> Result<()> {
    let (digest, mac) = digest_and_payload(response)?;
    if mac.len() != digest.len() {
        return Err(Error::Authentication(format!(
            "expected {} of length {} got {}",
            digest.name(),
            digest.len(),
            mac.len()
        )));
    }
    if digest.verifies(key, message, mac) {
        Ok(())
    } else {
        Err(Error::Authentication("digest received was wrong".into()))
    }
}

/// The next handshake frame if it has arrived whole, `None` if not yet.
fn handshake_try_recv<S: Transport>(conn: &mut Connection<S>) -> Result<Option<Vec<u8>>> {
    match conn.recv_bytes_max_until(MAX_HANDSHAKE_FRAME, Deadline::Now) {
        Err(Error::Timeout) => Ok(None),
        other => handshake_result(other).map(Some),
    }
}

fn handshake_result(received: Result<Vec<u8>>) -> Result<Vec<u8>> {
    match received {
        Err(Error::TooLarge { size, .. }) => Err(Error::Authentication(format!(
            "handshake message of {size} bytes is too long"
        ))),
        Err(Error::Timeout) => Err(Error::Authentication(
            "the peer did not finish the handshake in time".into(),
        )),
        other => other,
    }
}

/// A challenge of ours: the random message and its frame.
#[derive(Debug)]
struct Challenge {
    message: Vec<u8>,
    frame: Vec<u8>,
}

impl Challenge {
    fn new() -> Result<Challenge> {
        let mut message = b"{sha256}".to_vec();
        let mut random = [0u8; MESSAGE_LENGTH];
        getrandom::getrandom(&mut random)
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        message.extend_from_slice(&random);
        let mut frame = CHALLENGE.to_vec();
        frame.extend_from_slice(&message);
        Ok(Challenge { message, frame })
    }

    /// Checks the peer's `response`; a wrong one is answered with
    /// `#FAILURE#` (the welcome is the caller's, as the listener sends it
    /// together with its own answer).
    fn check<S: Transport>(
        &self,
        conn: &mut Connection<S>,
        key: &[u8],
        response: &[u8],
        deadline: Deadline,
    ) -> Result<()> {
        verify(key, &self.message, response).inspect_err(|_| {
            let _ = conn.send_bytes_until(FAILURE, deadline);
        })
    }
}

/// The answer to a received challenge frame.
fn answer(key: &[u8], frame: &[u8]) -> Result<Vec<u8>> {
    let challenge = frame
        .strip_prefix(CHALLENGE)
        .ok_or_else(|| Error::Authentication("protocol error: expected a challenge".into()))?;
    if challenge.len() < LEGACY_LENGTHS[0] {
        return Err(Error::Authentication(format!(
            "challenge too short: {} bytes",
            challenge.len()
        )));
    }
    response_to(key, challenge)
}

/// Whether the peer's verdict on our answer is a welcome.
fn welcomed(frame: &[u8]) -> Result<()> {
    if frame == WELCOME {
        Ok(())
    } else {
        Err(Error::Authentication("digest sent was rejected".into()))
    }
}

/// The listener's side, as Python's `Listener.accept` does it: challenge
/// the client (`deliver_challenge`), then answer its challenge
/// (`answer_challenge`).
///
/// A client of this crate sends its challenge right behind its answer
/// (see [`client_handshake`]); when it is already here, the welcome and
/// our answer go out in one write.
///
/// It is a state machine that goes as far as the bytes already received
/// allow, so that one thread can run many handshakes at once
/// ([`Listener`](crate::Listener)) or one to its end
/// ([`run_to_end`](ServerHandshake::run_to_end)).
#[derive(Debug)]
pub(crate) struct ServerHandshake {
    ours: Challenge,
    step: ServerStep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerStep {
    /// Our challenge is still to be sent.
    Start,
    /// Waiting for the answer to our challenge.
    Response,
    /// Answer checked; looking for the client's challenge, which our
    /// clients pipeline behind their answer (`welcomed` once we have sent
    /// the welcome on its own).
    Challenge {
        welcomed: bool,
    },
    /// Waiting for the client's verdict on our answer.
    Verdict,
    Done,
}

impl ServerHandshake {
    pub(crate) fn new() -> Result<ServerHandshake> {
        Ok(ServerHandshake {
            ours: Challenge::new()?,
            step: ServerStep::Start,
        })
    }

    /// Goes as far as the bytes received so far allow, sending within
    /// `deadline` (every frame it sends is small enough for an empty socket
    /// buffer, so [`Deadline::Now`] only fails a peer whose buffer is
    /// full); true once the client is authenticated.
    pub(crate) fn advance<S: Transport>(
        &mut self,
        conn: &mut Connection<S>,
        key: &[u8],
        deadline: Deadline,
    ) -> Result<bool> {
        loop {
            self.step = match self.step {
                ServerStep::Start => {
                    conn.send_bytes_until(&self.ours.frame, deadline)?;
                    ServerStep::Response
                }
                ServerStep::Response => {
                    let Some(response) = handshake_try_recv(conn)? else {
                        return Ok(false);
                    };
                    self.ours.check(conn, key, &response, deadline)?;
                    ServerStep::Challenge { welcomed: false }
                }
                ServerStep::Challenge { welcomed } => match handshake_try_recv(conn)? {
                    Some(frame) if welcomed => {
                        conn.send_bytes_until(&answer(key, &frame)?, deadline)?;
                        ServerStep::Verdict
                    }
                    Some(frame) => {
                        let reply = answer(key, &frame)?;
                        conn.send_bytes_batch_until(&[WELCOME, &reply], deadline)?;
                        ServerStep::Verdict
                    }
                    None if welcomed => return Ok(false),
                    None => {
                        conn.send_bytes_until(WELCOME, deadline)?;
                        ServerStep::Challenge { welcomed: true }
                    }
                },
                ServerStep::Verdict => {
                    let Some(frame) = handshake_try_recv(conn)? else {
                        return Ok(false);
                    };
                    welcomed(&frame)?;
                    ServerStep::Done
                }
                ServerStep::Done => return Ok(true),
            }
        }
    }

    /// Runs the handshake to its end, waiting for the client's bytes until
    /// `deadline`.
    pub(crate) fn run_to_end<S: Transport>(
        mut self,
        conn: &mut Connection<S>,
        key: &[u8],
        deadline: Deadline,
    ) -> Result<()> {
        run_to_end(conn, deadline, |conn| self.advance(conn, key, deadline))
    }
}

/// Runs a handshake's `advance` until it is through, waiting for the
/// peer's bytes until `deadline` in between.
fn run_to_end<S: Transport>(
    conn: &mut Connection<S>,
    deadline: Deadline,
    mut advance: impl FnMut(&mut Connection<S>) -> Result<bool>,
) -> Result<()> {
    while !advance(conn)? {
        if !conn.get_ref().has_buffered_input() && !wait_readable(conn.get_ref().as_fd(), deadline)?
        {
            return handshake_result(Err(Error::Timeout)).map(drop);
        }
    }
    Ok(())
}

/// The client's side, as Python's `Client` does it: answer the listener's
/// challenge (`answer_challenge`), then challenge it (`deliver_challenge`).
///
/// Our challenge goes out in the same write as our answer instead of after
/// the listener's welcome, which saves one round trip of the three. Python's
/// listener reads exactly one message at a time, so it finds the challenge
/// where it expects it; a listener that rejects our answer closes the
/// connection with the challenge unread, and its failure message still
/// arrives first.
///
/// A state machine like [`ServerHandshake`], so that it can also be driven
/// by readiness instead of a blocked thread.
#[derive(Debug)]
pub(crate) struct ClientHandshake {
    ours: Challenge,
    step: ClientStep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientStep {
    /// Waiting for the listener's challenge.
    Challenge,
    /// Answer and our challenge sent; waiting for the listener's verdict.
    Verdict,
    /// Welcomed; waiting for the answer to our challenge.
    Response,
    Done,
}

impl ClientHandshake {
    pub(crate) fn new() -> Result<ClientHandshake> {
        Ok(ClientHandshake {
            ours: Challenge::new()?,
            step: ClientStep::Challenge,
        })
    }

    /// Goes as far as the bytes received so far allow, sending within
    /// `deadline` (as [`ServerHandshake::advance`]); true once both sides
    /// are authenticated.
    pub(crate) fn advance<S: Transport>(
        &mut self,
        conn: &mut Connection<S>,
        key: &[u8],
        deadline: Deadline,
    ) -> Result<bool> {
        loop {
            self.step = match self.step {
                ClientStep::Challenge => {
                    let Some(frame) = handshake_try_recv(conn)? else {
                        return Ok(false);
                    };
                    let response = answer(key, &frame)?;
                    conn.send_bytes_batch_until(&[&response, &self.ours.frame], deadline)?;
                    ClientStep::Verdict
                }
                ClientStep::Verdict => {
                    let Some(frame) = handshake_try_recv(conn)? else {
                        return Ok(false);
                    };
                    welcomed(&frame)?;
                    ClientStep::Response
                }
                ClientStep::Response => {
                    let Some(response) = handshake_try_recv(conn)? else {
                        return Ok(false);
                    };
                    self.ours.check(conn, key, &response, deadline)?;
                    conn.send_bytes_until(WELCOME, deadline)?;
                    ClientStep::Done
                }
                ClientStep::Done => return Ok(true),
            }
        }
    }
}

/// Everything a new connection goes through before it is handed out:
/// the TLS handshake when its stream has a session, then the authkey's
/// challenge–response when the options have a key. It goes as far as the
/// bytes received allow, so that a thread can run many at once
/// ([`Listener`](crate::Listener)), one to its end, or a task by readiness.
#[derive(Debug)]
pub(crate) struct ConnectionHandshake {
    auth: Option<AuthHandshake>,
}

/// The authkey handshake of one side.
#[derive(Debug)]
enum AuthHandshake {
    Server(ServerHandshake),
    #[cfg(feature = "tokio")]
    Client(ClientHandshake),
}

impl ConnectionHandshake {
    /// The listener's side, for a connection made with `options`.
    pub(crate) fn server(options: &crate::Options) -> Result<ConnectionHandshake> {
        Ok(ConnectionHandshake {
            auth: match options.authkey {
                Some(_) => Some(AuthHandshake::Server(ServerHandshake::new()?)),
                None => None,
            },
        })
    }

    /// The client's side, for a connection made with `options`.
    #[cfg(feature = "tokio")]
    pub(crate) fn client(options: &crate::Options) -> Result<ConnectionHandshake> {
        Ok(ConnectionHandshake {
            auth: match options.authkey {
                Some(_) => Some(AuthHandshake::Client(ClientHandshake::new()?)),
                None => None,
            },
        })
    }

    /// Goes as far as the bytes received so far allow, without waiting;
    /// true once the connection is through. `key` is the options' authkey.
    pub(crate) fn advance(
        &mut self,
        conn: &mut crate::SocketConnection,
        key: Option<&[u8]>,
    ) -> Result<bool> {
        if !conn.get_mut().continue_handshake()? {
            return Ok(false);
        }
        match (&mut self.auth, key) {
            (Some(AuthHandshake::Server(auth)), Some(key)) => {
                auth.advance(conn, key, Deadline::Now)
            }
            #[cfg(feature = "tokio")]
            (Some(AuthHandshake::Client(auth)), Some(key)) => {
                auth.advance(conn, key, Deadline::Now)
            }
            _ => Ok(true),
        }
    }
}

/// The client's handshake run to its end, waiting for the listener's bytes
/// until `deadline`.
pub(crate) fn client_handshake<S: Transport>(
    conn: &mut Connection<S>,
    key: &[u8],
    deadline: Deadline,
) -> Result<()> {
    let mut handshake = ClientHandshake::new()?;
    run_to_end(conn, deadline, |conn| {
        handshake.advance(conn, key, deadline)
    })
}

/// Whether `fd` becomes readable before `deadline`.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Deadline) -> Result<bool> {
    Ok(ipc_core::wait_fds(&[(fd, Interest::Read)], deadline)?[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn legacy_vectors_match_cpython_3_11() {
        let counting: Vec<u8> = (0..20).collect();
        assert_eq!(
            hex(&response_to(b"k", &counting).unwrap()),
            "b5b4bbed3ac433b774f3d4f6736f72fa"
        );
        assert_eq!(
            hex(&response_to(b"k", &[0; 20]).unwrap()),
            "78fb96309f5227cc2066ed10f41c367a"
        );
    }

    #[test]
    fn prefixed_vectors_match_cpython_3_12() {
        let mut challenge = b"{sha256}".to_vec();
        challenge.extend(0..40u8);
        let response = response_to(b"k", &challenge).unwrap();
        assert_eq!(&response[..8], b"{sha256}");
        assert_eq!(
            hex(&response[8..]),
            "e2d18d2266efaf3d644ed631dfa02c401ec26e092bef5993514fbbe8a5cd1f7e"
        );
        verify(b"k", &challenge, &response).unwrap();
        // A 3.11 peer answers a prefixed challenge with raw MD5 over all of it.
        let raw_md5 = Digest::Md5.mac(b"k", &challenge);
        assert_eq!(hex(&raw_md5), "2371b68a98c1c6c3e4b83ab05be865f2");
        verify(b"k", &challenge, &raw_md5).unwrap();
    }

    #[test]
    fn python_challenge_response_test_prefixes() {
        // ChallengeResponseTest.test_challengeresponse (3.12+).
        for prefix in ["", "{md5}", "{sha256}"] {
            let mut challenge = prefix.as_bytes().to_vec();
            challenge.extend_from_slice(b"is-twenty-bytes-long");
            let response = response_to(b"supersecret", &challenge).unwrap();
            assert!(response.starts_with(prefix.as_bytes()));
            verify(b"supersecret", &challenge, &response).unwrap();
        }
        assert_eq!(
            response_to(b"k", b"{md5}is-twenty-bytes-long")
                .unwrap()
                .len(),
            21
        );
    }

    #[test]
    fn wrong_keys_and_unknown_digests_are_refused() {
        let challenge = b"{sha256}0123456789012345678901234567890123456789";
        let response = response_to(b"right", challenge).unwrap();
        assert!(matches!(
            verify(b"wrong", challenge, &response),
            Err(Error::Authentication(_))
        ));
        for bad in [
            &b"{sha512}xxxxxxxxxxxxxxxxxxxxxxxx"[..],
            b"{sha1}xxxxxxxxxxxxxxxxxxxxxxx",
            b"no prefix at all, 29 bytes..",
            b"{",
        ] {
            assert!(
                matches!(response_to(b"k", bad), Err(Error::Authentication(_))),
                "{bad:?}"
            );
        }
        let truncated = &response[..response.len() - 1];
        assert!(
            matches!(verify(b"right", challenge, truncated), Err(Error::Authentication(m)) if m.contains("length"))
        );
    }
}
