//! Fuzz target: the listener's side of the authkey handshake
//! (`ipc_socket::Listener::accept_timeout` with an authkey) against a
//! client that plays a script read from the fuzzer's bytes. It must end in
//! `Ok` or an error value, never a panic, and never later than its
//! handshake deadline (plus slack for a loaded machine).
//!
//! The script (see `ipc_fuzz::Script`) makes the client play some steps
//! right, computed with the key, so the fuzzer's bytes reach every frame:
//!
//! - stage 0: the fuzzer's bytes are all the client says; the listener
//!   must refuse it.
//! - stage 1: a right (or, by the answer form, wrong-key) answer to the
//!   listener's challenge in any of the digest forms — legacy raw
//!   HMAC-MD5 or `{digest}`-prefixed — then the fuzzer's bytes where the
//!   client's challenge and verdict go.
//! - stage 2: a right answer and a well-formed challenge (legacy or
//!   prefixed); the listener's answer must be what CPython would send; the
//!   fuzzer's bytes are the verdict (framed: `Ok` exactly when the first
//!   frame is `#WELCOME#`).
//! - stage 3: a right answer, a challenge message chosen by the fuzzer,
//!   then `#WELCOME#`: the listener must answer as CPython would and
//!   succeed, or refuse a message CPython refuses.
//!
//! The client either sends its challenge with its answer (as ipc-socket's
//! client does) or waits for `#WELCOME#` first (as Python's does), and
//! either shuts down its side at the end or keeps the connection open,
//! which a listener with a short deadline must give up on.
//!
//! With `IPC_FUZZ_TRACE` set, each input's script, outcome and what the
//! peer saw are printed, e.g. to see what a corpus reaches:
//! `IPC_FUZZ_TRACE=1 fuzz/target/*/release/TARGET -runs=0 fuzz/corpus/TARGET`.
#![no_main]

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipc_core::Error;
use ipc_fuzz::{
    answer_is_right, challenge_message, expected_answer, frame, is_our_challenge, play_out,
    read_frame, response, send_all, unique_name, Script, Seen, CHALLENGE, FAILURE, HASTY, KEY,
    PATIENT, SLACK, WELCOME,
};
use ipc_socket::{Listener, Options};
use libfuzzer_sys::fuzz_target;

struct Bound {
    listener: Listener,
    name: String,
    deadline: Duration,
}

/// Two listeners on abstract names of this process, one per deadline.
fn listeners() -> &'static [Bound; 2] {
    static BOUND: OnceLock<[Bound; 2]> = OnceLock::new();
    BOUND.get_or_init(|| {
        [PATIENT, HASTY].map(|deadline| {
            let name = unique_name("ipcfuzz-listener");
            let options = Options::new().authkey(KEY).handshake_timeout(deadline);
            let listener = Listener::bind(format!("@{name}").as_str(), options).unwrap();
            Bound {
                listener,
                name,
                deadline,
            }
        })
    })
}

fn play(stream: &mut UnixStream, script: &Script, seen: &mut Seen) -> io::Result<()> {
    if script.stage == 0 {
        return send_all(stream, &script.wire(&script.tail));
    }
    let challenge = read_frame(stream)?.expect("the listener closed without challenging");
    assert!(
        is_our_challenge(&challenge),
        "the listener's challenge is malformed: {challenge:?}"
    );
    let answer = frame(&response(script.answer, &challenge[CHALLENGE.len()..]));
    if script.stage == 1 {
        return send_all(stream, &[answer, script.wire(&script.tail)].concat());
    }
    let (message, rest) = if script.stage == 2 {
        (challenge_message(script.challenge), script.tail.clone())
    } else {
        script.split_record()
    };
    seen.ours = Some(message.clone());
    let ours = frame(&[CHALLENGE, &message].concat());
    if script.python_order {
        send_all(stream, &answer)?;
        seen.verdict = read_frame(stream)?;
        if seen.verdict.as_deref() != Some(WELCOME) {
            return Ok(());
        }
        send_all(stream, &ours)?;
    } else {
        send_all(stream, &[answer, ours].concat())?;
        seen.verdict = read_frame(stream)?;
        if seen.verdict.as_deref() != Some(WELCOME) {
            return Ok(());
        }
    }
    seen.answer = read_frame(stream)?;
    if seen.answer.is_none() {
        return Ok(());
    }
    if script.stage == 2 {
        send_all(stream, &script.wire(&rest))
    } else {
        send_all(stream, &[frame(WELCOME), script.wire(&rest)].concat())
    }
}

fuzz_target!(|data: &[u8]| {
    let script = Script::parse(data);
    let bound = &listeners()[usize::from(script.keep_open)];
    let addr = SocketAddr::from_abstract_name(&bound.name).unwrap();
    let stream = UnixStream::connect_addr(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let peer = std::thread::spawn({
        let script = script.clone();
        move || play_out(stream, &script, play)
    });

    let start = Instant::now();
    let outcome = bound
        .listener
        .accept_timeout(Duration::from_secs(10))
        .map(drop);
    let took = start.elapsed();
    let seen = peer.join().unwrap();
    assert!(
        took <= bound.deadline + SLACK,
        "the handshake took {took:?}, its deadline is {:?}",
        bound.deadline
    );

    if std::env::var_os("IPC_FUZZ_TRACE").is_some() {
        eprintln!("{script:?}\n  -> {outcome:?} in {took:?}\n  saw {seen:?}");
    }
    let right = answer_is_right(script.answer);
    match script.stage {
        0 => assert!(outcome.is_err(), "a client without the key got in"),
        1 => assert!(right || outcome.is_err(), "a wrong-key answer got in"),
        _ if !right => {
            assert!(outcome.is_err(), "a wrong-key answer got in");
            if !script.keep_open {
                assert_eq!(seen.verdict.as_deref(), Some(FAILURE));
            }
        }
        stage => {
            let ours = seen.ours.as_deref().unwrap_or_default();
            let expected = expected_answer(KEY, ours);
            if let Some(answer) = &seen.answer {
                assert_eq!(
                    Some(answer),
                    expected.as_ref(),
                    "the listener answered {ours:?} unlike CPython"
                );
            }
            match expected {
                None => assert!(
                    matches!(outcome, Err(Error::Authentication(_))),
                    "the listener took a challenge CPython refuses ({ours:?}): {outcome:?}"
                ),
                Some(_) if !script.keep_open => {
                    assert_eq!(seen.verdict.as_deref(), Some(WELCOME));
                    assert!(seen.answer.is_some(), "no answer to {ours:?}");
                    if stage == 3 {
                        assert!(outcome.is_ok(), "a right handshake failed: {outcome:?}");
                    } else if let Some(verdict) = script.first_framed() {
                        assert_eq!(
                            outcome.is_ok(),
                            verdict == WELCOME,
                            "verdict {verdict:?} gave {outcome:?}"
                        );
                    }
                }
                Some(_) => {}
            }
        }
    }
});
