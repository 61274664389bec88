//! Fuzz target: the client's side of the authkey handshake
//! (`ipc_socket::Client::connect` with an authkey) against a raw Unix
//! listener that plays a script read from the fuzzer's bytes. It must end
//! in `Ok` or an error value, never a panic, and never later than its
//! handshake deadline (plus slack for a loaded machine).
//!
//! The script (see `ipc_fuzz::Script`) makes the listener play some steps
//! right, computed with the key, so the fuzzer's bytes reach every frame:
//!
//! - stage 0: the fuzzer's bytes are all the listener says; the client
//!   must not get in.
//! - stage 1: a well-formed challenge (legacy 20 bytes or
//!   `{digest}`-prefixed); the client's answer must be what CPython would
//!   send; then the fuzzer's bytes where the verdict and the answer to the
//!   client's challenge go.
//! - stage 2: the same challenge, then `#WELCOME#`, then the fuzzer's
//!   bytes as the answer to the client's challenge.
//! - stage 3: a challenge message chosen by the fuzzer, then `#WELCOME#`
//!   and an answer to the client's challenge in one of the digest forms,
//!   right or with a wrong key: the client must answer as CPython would
//!   (or refuse a message CPython refuses) and succeed exactly when the
//!   answer was right.
//!
//! With `IPC_FUZZ_TRACE` set, each input's script, outcome and what the
//! peer saw are printed, e.g. to see what a corpus reaches:
//! `IPC_FUZZ_TRACE=1 fuzz/target/*/release/TARGET -runs=0 fuzz/corpus/TARGET`.
#![no_main]

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipc_core::Error;
use ipc_fuzz::{
    answer_is_right, challenge_message, expected_answer, frame, is_our_challenge, play_out,
    read_frame, response, send_all, unique_name, Script, Seen, CHALLENGE, FAILURE, HASTY, KEY,
    PATIENT, SLACK, WELCOME,
};
use ipc_socket::{Client, Options};
use libfuzzer_sys::fuzz_target;

/// A raw listener on an abstract name of this process.
fn raw_listener() -> &'static (UnixListener, String) {
    static RAW: OnceLock<(UnixListener, String)> = OnceLock::new();
    RAW.get_or_init(|| {
        let name = unique_name("ipcfuzz-client");
        let addr = SocketAddr::from_abstract_name(&name).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        (listener, name)
    })
}

/// The next connection, or `None` if none comes within 10 s (the client
/// failed before connecting).
fn accept(listener: &UnixListener) -> Option<UnixStream> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                return Some(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

fn play(stream: &mut UnixStream, script: &Script, seen: &mut Seen) -> io::Result<()> {
    if script.stage == 0 {
        return send_all(stream, &script.wire(&script.tail));
    }
    let (message, rest) = if script.stage == 3 {
        script.split_record()
    } else {
        (challenge_message(script.challenge), script.tail.clone())
    };
    seen.ours = Some(message.clone());
    send_all(stream, &frame(&[CHALLENGE, &message].concat()))?;
    seen.answer = read_frame(stream)?;
    if seen.answer.is_none() {
        return Ok(());
    }
    let Some(theirs) = read_frame(stream)? else {
        return Ok(());
    };
    assert!(
        is_our_challenge(&theirs),
        "the client's challenge is malformed: {theirs:?}"
    );
    match script.stage {
        1 => send_all(stream, &script.wire(&rest)),
        2 => send_all(stream, &[frame(WELCOME), script.wire(&rest)].concat()),
        _ => {
            let answer = response(script.answer, &theirs[CHALLENGE.len()..]);
            let reply = [frame(WELCOME), frame(&answer), script.wire(&rest)].concat();
            send_all(stream, &reply)?;
            seen.verdict = read_frame(stream)?;
            Ok(())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let script = Script::parse(data);
    let (raw, name) = raw_listener();
    let deadline = if script.keep_open { HASTY } else { PATIENT };
    let peer = std::thread::spawn({
        let script = script.clone();
        move || accept(raw).map(|stream| play_out(stream, &script, play))
    });

    let options = Options::new()
        .authkey(KEY)
        .handshake_timeout(deadline)
        .connect_timeout(Duration::from_secs(5));
    let start = Instant::now();
    let outcome = Client::connect(format!("@{name}").as_str(), options).map(drop);
    let took = start.elapsed();
    let seen = peer.join().unwrap().expect("the client never connected");
    assert!(
        took <= deadline + SLACK,
        "the handshake took {took:?}, its deadline is {deadline:?}"
    );

    if std::env::var_os("IPC_FUZZ_TRACE").is_some() {
        eprintln!("{script:?}\n  -> {outcome:?} in {took:?}\n  saw {seen:?}");
    }
    if let Some(ours) = &seen.ours {
        let expected = expected_answer(KEY, ours);
        if let Some(answer) = &seen.answer {
            assert_eq!(
                Some(answer),
                expected.as_ref(),
                "the client answered {ours:?} unlike CPython"
            );
        }
        if expected.is_none() {
            assert!(
                matches!(outcome, Err(Error::Authentication(_))),
                "the client took a challenge CPython refuses ({ours:?}): {outcome:?}"
            );
        }
    }
    let right = answer_is_right(script.answer);
    match script.stage {
        0..=2 => assert!(outcome.is_err(), "a listener without the key got in"),
        _ if !right => {
            assert!(outcome.is_err(), "a wrong-key answer got in");
            if seen.answer.is_some() && !script.keep_open {
                assert_eq!(seen.verdict.as_deref(), Some(FAILURE));
            }
        }
        _ => {
            let acceptable = seen
                .ours
                .as_deref()
                .and_then(|ours| expected_answer(KEY, ours))
                .is_some();
            if acceptable && !script.keep_open {
                assert!(seen.answer.is_some(), "the client did not answer");
                assert!(outcome.is_ok(), "a right handshake failed: {outcome:?}");
                assert_eq!(seen.verdict.as_deref(), Some(WELCOME));
            }
        }
    }
});
