//! The pickle codec (feature `pickle`) against every Python here, over a
//! pipe: Python's `conn.send(obj)` received by a typed Rust `recv`, a Rust
//! `send(&value)` received by Python's `conn.recv()`, plain data of every
//! kind both ways (protocols 3, 4 and 5), and objects that would run code
//! refused by name, with the connection going on after each refusal. A
//! connection left on postcard says that a pickle arrived.

use std::process::Command;

use ipc_core::pickle::{HashableValue, Value};
use ipc_core::process::Process;
use ipc_core::{Codec, Error};
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

fn talk_to(candidates: &[&str]) {
    let Some(python) = python_or_skip(candidates) else {
        return;
    };
    let (mut conn, theirs) = ipc_pipe::duplex().unwrap();
    conn.set_codec(Codec::Pickle);
    conn.set_read_timeout(Some(PATIENCE));
    let mut command = Command::new(&python);
    command.args(["-c", &format!("{PY_HANDLE_FD}{SCRIPT}")]);
    let mut child = Process::new()
        .pass("conn", &theirs)
        .unwrap()
        .exec(command)
        .unwrap();
    drop(theirs);

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

#[test]
fn pickles_cross_a_pipe_with_python3() {
    talk_to(PYTHONS[0]);
}

#[test]
fn pickles_cross_a_pipe_with_python3_12() {
    talk_to(PYTHONS[1]);
}

#[test]
fn pickles_cross_a_pipe_with_python3_13() {
    talk_to(PYTHONS[2]);
}
