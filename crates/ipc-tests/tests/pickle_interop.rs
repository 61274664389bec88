//! The pickle codec (feature `pickle`) against every Python here, over a
//! pipe: Python's `conn.send(obj)` received by a typed Rust `recv`, a Rust
//! `send(&value)` received by Python's `conn.recv()`, plain data of every
//! kind both ways (protocols 3, 4 and 5), and objects that would run code
//! refused by name, with the connection going on after each refusal. A
//! connection left on postcard says that a pickle arrived. And Python as
//! the judge of the decoder: a corpus of plain data in every protocol
//! (0 to 5), decoded here into a `Value`, sent back pickled and compared
//! with the original there.

use std::process::Command;

use ipc_core::pickle::{HashableValue, Value};
use ipc_core::process::{Child, Process};
use ipc_core::{Codec, Connection, Error};
use ipc_tests::{join_ok, python_or_skip, PATIENCE, PYTHONS, PY_HANDLE_FD};
use serde::{Deserialize, Serialize};

/// The Python side: answers what Rust sends, then sends one of each
/// kind of object.
const SCRIPT: &str = r#"
import datetime, os, pickle
from multiprocessing.connection import Connection

c = Connection(handle_fd("conn"))
job = c.recv()
expected = {'job': 7, 'args': [1, 2], 'name': 'r\u00e9ponse', 'data': b'\x00\xff',
            'maybe': None, 'ratio': 0.5, 'pair': (3, 'x')}
assert job == expected, job
c.send({'echo': job, 'n': 1})
c.send({'a': [1, (2, 3)], 'b': b'\x00\x01', 'c': None, 'd': True, 'e': 1.5,
        's': {1, 2}, 'f': frozenset([3]), 'big': 2**70, 'neg': -5})
c.send_bytes(pickle.dumps([1, 'two', 3.0], protocol=5))
c.send(datetime.date(2024, 1, 2))
c.send(42)
class Evil:
    def __reduce__(self):
        return (os.system, ('true',))
c.send(Evil())
c.send('after the refusals')
c.send('to a postcard end')
assert c.recv() == ['bye', None], "Rust's last word"
"#;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Job {
    job: u32,
    args: Vec<i64>,
    name: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    maybe: Option<u32>,
    ratio: f64,
    pair: (u8, String),
}

#[derive(Deserialize, Debug)]
struct Echo {
    echo: Job,
    n: u32,
}

fn key(name: &str) -> HashableValue {
    HashableValue::String(name.to_owned())
}

/// `python` running `script` with the other end of a pipe as `conn`
/// (found with `handle_fd("conn")`); our end reads with a timeout.
fn python_on_a_pipe(python: &str, script: &str) -> (Connection, Child) {
    let (mut conn, theirs) = ipc_pipe::duplex().unwrap();
    conn.set_read_timeout(Some(PATIENCE));
    let mut command = Command::new(python);
    command.args(["-c", &format!("{PY_HANDLE_FD}{script}")]);
    let child = Process::new()
        .pass("conn", &theirs)
        .unwrap()
        .exec(command)
        .unwrap();
    (conn, child)
}

fn pickles_cross_a_pipe(candidates: &[&str]) {
    let Some(python) = python_or_skip(candidates) else {
        return;
    };
    let (mut conn, mut child) = python_on_a_pipe(&python, SCRIPT);
    conn.set_codec(Codec::Pickle);

    let job = Job {
        job: 7,
        args: vec![1, 2],
        name: "réponse".into(),
        data: vec![0, 255],
        maybe: None,
        ratio: 0.5,
        pair: (3, "x".into()),
    };
    conn.send(&job).unwrap();
    let echo: Echo = conn.recv().unwrap();
    assert_eq!((echo.echo, echo.n), (job, 1), "{python}");

    // With a 70-bit integer in it: read as a whole value.
    let kinds = ipc_core::pickle::decode_value(&conn.recv_bytes().unwrap()).unwrap();
    let Value::Dict(kinds) = kinds else {
        panic!("{python}: not a dict")
    };
    assert_eq!(kinds[&key("neg")], Value::I64(-5));
    assert_eq!(kinds[&key("b")], Value::Bytes(vec![0, 1]));
    assert_eq!(kinds[&key("c")], Value::None);
    assert_eq!(kinds[&key("d")], Value::Bool(true));
    assert_eq!(kinds[&key("e")], Value::F64(1.5));
    assert!(matches!(kinds[&key("big")], Value::Int(_)), "{python}");
    assert!(matches!(&kinds[&key("s")], Value::Set(s) if s.len() == 2));
    assert!(matches!(&kinds[&key("f")], Value::FrozenSet(s) if s.len() == 1));
    assert!(matches!(&kinds[&key("a")], Value::List(a) if a.len() == 2));

    let (one, two, three): (i64, String, f64) = conn.recv().unwrap();
    assert_eq!((one, two.as_str(), three), (1, "two", 3.0));

    let date = conn.recv::<Value>().unwrap_err();
    assert!(
        matches!(&date, Error::Pickle(why) if why.contains("datetime.date")),
        "{python}: {date}"
    );
    assert_eq!(conn.recv::<i64>().unwrap(), 42);
    let evil = conn.recv::<Value>().unwrap_err();
    assert!(
        matches!(&evil, Error::Pickle(why) if why.contains(".system`")),
        "{python}: {evil}"
    );
    assert_eq!(conn.recv::<String>().unwrap(), "after the refusals");

    conn.set_codec(Codec::Postcard);
    let postcard = conn.recv::<String>().unwrap_err();
    assert!(
        matches!(postcard, Error::LooksLikePickle { protocol: 4 | 5 }),
        "{python}: {postcard}"
    );
    assert!(postcard.to_string().contains("pickle codec"));
    conn.set_codec(Codec::Pickle);
    // A Vec arrives as a list (a tuple would arrive as a tuple).
    conn.send(&vec![Some("bye"), None]).unwrap();
    join_ok(&mut child);
}

/// The Python side of the corpus round trip: each object pickled with each
/// protocol goes to Rust, and what comes back must equal it.
const CORPUS_SCRIPT: &str = r#"
import pickle
from multiprocessing.connection import Connection

c = Connection(handle_fd("conn"))
corpus = [
    None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31,
    2**63 - 1, -2**63, 2**64, -2**64 - 1, 2**200, -(2**200),
    0.0, -0.0, 1.5, -2.25e-300, 1e300, float('inf'), float('-inf'), [float('nan')],
    '', 'a', 'r\u00e9ponse', 'line\nbreak', 'back\\slash \\u0041', 'tab\t', 'quote\'"',
    '\x00\x1a\r', '\u20ac\U0001f600', 'x' * 300,
    b'', b'\x00\xff', b"quote'\"\\", bytes(range(256)), b'y' * 70000,
    bytearray(b'ab'), bytearray(),
    (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3, []]]],
    {}, {'a': 1, 'b': [1, 2]}, {1: 'int key', (1, 'x'): 'tuple key', None: 'none', 'k': {}},
    set(), {1, 2, 3}, frozenset(), frozenset({'a', 'b'}), [{1}, {frozenset({2})}],
    # Floats and big ints, whose order in `Value` is not total.
    {(1e30 * (25 - i) if i % 2 else 2**70 + i) for i in range(25)},
    {(1e30 * (25 - i) if i % 2 else 2**70 + i): i for i in range(25)},
]
shared = [1, 2]
corpus.append([shared, shared, {'k': shared}])
pair = (1, 'x')
corpus.append([pair, pair, (pair, pair)])
text = 'shared string'
corpus.append({text: text, 'again': [text, text]})

checked = 0
for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
    for obj in corpus:
        c.send_bytes(pickle.dumps(obj, protocol=protocol))
        back = pickle.loads(c.recv_bytes())
        assert back == obj or repr(back) == repr(obj), (protocol, obj, back)
        checked += 1
c.send_bytes(b'')
c.send(checked)
"#;

/// Python's corpus decoded here and judged there.
fn python_judges_the_decoder(candidates: &[&str]) {
    let Some(python) = python_or_skip(candidates) else {
        return;
    };
    let (mut conn, mut child) = python_on_a_pipe(&python, CORPUS_SCRIPT);
    let mut decoded = 0;
    loop {
        let message = conn.recv_bytes().unwrap();
        if message.is_empty() {
            break;
        }
        let value = ipc_core::pickle::decode_value(&message)
            .unwrap_or_else(|e| panic!("{python}: {e}: {message:?}"));
        let mut back = Vec::new();
        ipc_core::pickle::encode_value_into(&value, &mut back).unwrap();
        conn.send_bytes(&back).unwrap();
        decoded += 1;
    }
    conn.set_codec(Codec::Pickle);
    assert_eq!(conn.recv::<u32>().unwrap(), decoded, "{python}");
    // Six protocols (five before 3.8 is not here) of the whole corpus.
    assert!(decoded >= 6 * 60, "{python}: {decoded}");
    join_ok(&mut child);
}

/// A test per Python of [`PYTHONS`] for each of `checks`: `check::python3`,
/// `check::python3_12`, `check::python3_13`.
macro_rules! per_python {
    ($($check:ident),*) => {$(
        mod $check {
            #[test]
            fn python3() {
                super::$check(super::PYTHONS[0]);
            }

            #[test]
            fn python3_12() {
                super::$check(super::PYTHONS[1]);
            }

            #[test]
            fn python3_13() {
                super::$check(super::PYTHONS[2]);
            }
        }
    )*};
}

per_python!(pickles_cross_a_pipe, python_judges_the_decoder);

ipc_core::spawn_harness!();

/// Answers, on the end it inherited, the number it receives, doubled.
fn doubles_in_its_inherited_codec(_: ()) -> String {
    let mut conn: Connection = ipc_core::process::inherited("conn").unwrap();
    let codec = format!("{:?}", conn.codec());
    let x: u64 = conn.recv_timeout(PATIENCE).unwrap();
    conn.send(&(x * 2)).unwrap();
    codec
}

/// A pipe made to speak pickle, and a child that inherits an end of it
/// speaks pickle too.
#[test]
fn an_inherited_end_keeps_its_codec() {
    let (mut ours, theirs) = ipc_pipe::Pipe::new().codec(Codec::Pickle).duplex().unwrap();
    let child = Process::new()
        .pass("conn", &theirs)
        .unwrap()
        .spawn(ipc_core::entry!(doubles_in_its_inherited_codec), &())
        .unwrap();
    drop(theirs);
    ours.send(&21u64).unwrap();
    // What the child sent is a pickle.
    let answer = ours.recv_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(ipc_core::pickle::decode::<u64>(&answer).unwrap(), 42);
    assert_eq!(child.join_timeout(PATIENCE).unwrap(), "Pickle");
}
