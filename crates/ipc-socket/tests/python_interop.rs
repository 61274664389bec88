//! Python's `multiprocessing.connection` on the other end: a Python
//! `Client` against our `Listener` and our `Client` against a Python
//! `Listener`, over a Unix path and TCP, with every Python found here
//! (3.11 speaks the legacy MD5 handshake, 3.12 and 3.13 the `{sha256}`
//! one). Skipped, with a note, where no python3 exists.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_core::Error;
use ipc_socket::{Address, Client, Listener, Options};
use ipc_testkit::temp_path;

const KEY: &[u8] = b"interop key";

/// Every Python interpreter on this machine, newest handshake forms too.
fn pythons() -> Vec<String> {
    let candidates = [
        "python3",
        "python3.12",
        "python3.13",
        "/root/.pyenv/versions/3.12.1/bin/python3.12",
        "/root/.pyenv/versions/3.13.0/bin/python3.13",
    ];
    let mut found: Vec<(String, String)> = Vec::new();
    for candidate in candidates {
        let Ok(out) = Command::new(candidate)
            .arg("-c")
            .arg("import sys; print(sys.version_info[:2])")
            .output()
        else {
            continue;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !found.iter().any(|(_, v)| *v == version) {
            found.push((candidate.to_owned(), version));
        }
    }
    if found.is_empty() {
        eprintln!("note: no python3 found; Python interop tests skipped");
    }
    found.into_iter().map(|(p, _)| p).collect()
}

fn python_address(address: &Address) -> String {
    match address {
        Address::Unix(path) => format!("{:?}", path.to_str().unwrap()),
        Address::Tcp(host, port) => format!("({host:?}, {port})"),
        Address::Abstract(_) => unreachable!("not used here"),
    }
}

const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
address, key = eval(sys.argv[1]), sys.argv[2].encode()
c = Client(address, authkey=key)
c.send_bytes(b"hello from python")
print(c.recv_bytes().decode())
c.send_bytes(b"")
c.send_bytes(b"0123456789", 2, 5)
print(len(c.recv_bytes()))
c.close()
"#;

fn rust_listener_serves_python_client(address: Address) {
    for python in pythons() {
        let listener = Listener::bind(&address, Options::new().authkey(KEY)).unwrap();
        let bound = listener.address().clone();
        let child = Command::new(&python)
            .args([
                "-c",
                PY_CLIENT,
                &python_address(&bound),
                std::str::from_utf8(KEY).unwrap(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            conn.recv_bytes_timeout(Duration::from_secs(10)).unwrap(),
            b"hello from python"
        );
        conn.send_bytes(b"Received: hello from python").unwrap();
        assert_eq!(
            conn.recv_bytes_timeout(Duration::from_secs(10)).unwrap(),
            b""
        );
        assert_eq!(
            conn.recv_bytes_timeout(Duration::from_secs(10)).unwrap(),
            b"23456"
        );
        conn.send_bytes(&vec![7u8; 100_000]).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{python} failed");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Received: hello from python\n100000\n",
            "{python}"
        );
    }
}

#[test]
fn python_client_to_rust_listener_over_unix() {
    let path = temp_path("ipct_sock");
    rust_listener_serves_python_client(Address::Unix(path.clone()));
    assert!(!path.exists(), "the listener left its socket file behind");
}

#[test]
fn python_client_to_rust_listener_over_tcp() {
    rust_listener_serves_python_client("127.0.0.1:0".parse().unwrap());
}

const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
address, key = eval(sys.argv[1]), sys.argv[2].encode()
with Listener(address, authkey=key) as listener:
    print(repr(listener.address), flush=True)
    try:
        with listener.accept() as conn:
            data = conn.recv_bytes()
            conn.send_bytes(b"Received: " + data)
            conn.send_bytes(conn.recv_bytes() * 2)
    except Exception as e:
        print(type(e).__name__, flush=True)
"#;

/// Starts a Python listener and returns it with the address it printed.
fn python_listener(
    python: &str,
    address: &str,
    key: &str,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    Address,
) {
    python_listener_running(python, PY_LISTENER, address, key)
}

/// Starts `script` (which prints its listener's address first) and
/// returns it with the address it printed.
fn python_listener_running(
    python: &str,
    script: &str,
    address: &str,
    key: &str,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    Address,
) {
    let mut child = Command::new(python)
        .args(["-c", script, address, key])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let line = line.trim();
    let address = if let Some(path) = line.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')) {
        Address::Unix(path.into())
    } else {
        let inner = line.trim_start_matches('(').trim_end_matches(')');
        let (host, port) = inner.split_once(", ").unwrap();
        Address::Tcp(host.trim_matches('\'').to_owned(), port.parse().unwrap())
    };
    (child, out, address)
}

fn rust_client_talks_to_python_listener(address: &str) {
    for python in pythons() {
        let (mut child, _out, bound) =
            python_listener(&python, address, std::str::from_utf8(KEY).unwrap());
        let mut conn = Client::connect(&bound, Options::new().authkey(KEY)).unwrap();
        conn.send_bytes(b"Hello, Server!").unwrap();
        assert_eq!(
            conn.recv_bytes_timeout(Duration::from_secs(10)).unwrap(),
            b"Received: Hello, Server!"
        );
        conn.send_bytes(b"ab").unwrap();
        assert_eq!(
            conn.recv_bytes_timeout(Duration::from_secs(10)).unwrap(),
            b"abab"
        );
        assert!(child.wait().unwrap().success(), "{python}");
    }
}

#[test]
fn rust_client_to_python_listener_over_unix() {
    let path = temp_path("ipct_sock");
    rust_client_talks_to_python_listener(&format!("{:?}", path.to_str().unwrap()));
    let _ = std::fs::remove_file(path);
}

#[test]
fn rust_client_to_python_listener_over_tcp() {
    rust_client_talks_to_python_listener("('127.0.0.1', 0)");
}

#[test]
fn wrong_key_fails_on_both_sides_with_python() {
    for python in pythons() {
        // Python client, wrong key, against our listener.
        let listener = Listener::bind("127.0.0.1:0", Options::new().authkey(KEY)).unwrap();
        let mut child = Command::new(&python)
            .args([
                "-c",
                PY_CLIENT,
                &python_address(listener.address()),
                "wrong key",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let result = listener.accept_timeout(Duration::from_secs(20));
        assert!(
            matches!(result, Err(Error::Authentication(_))),
            "{python}: {result:?}"
        );
        assert!(
            !child.wait().unwrap().success(),
            "{python}: the client should fail too"
        );

        // Our client, wrong key, against a Python listener.
        let (mut child, mut out, bound) = python_listener(&python, "('127.0.0.1', 0)", "right key");
        let result = Client::connect(&bound, Options::new().authkey(b"wrong key"));
        assert!(
            matches!(result, Err(Error::Authentication(_))),
            "{python}: {result:?}"
        );
        let mut verdict = String::new();
        out.read_line(&mut verdict).unwrap();
        assert_eq!(verdict.trim(), "AuthenticationError", "{python}");
        assert!(child.wait().unwrap().success());
    }
}

/// The async forms against every Python here: a Python client served by
/// an async listener, and an async client talking to a Python listener.
#[cfg(feature = "tokio")]
#[test]
fn python_talks_to_the_async_forms() {
    use ipc_socket::tokio::AsyncListener;
    let key = std::str::from_utf8(KEY).unwrap();
    ipc_testkit::runtime().block_on(async {
        for python in pythons() {
            let listener = AsyncListener::bind("127.0.0.1:0", Options::new().authkey(KEY)).unwrap();
            let child = Command::new(&python)
                .args(["-c", PY_CLIENT, &python_address(listener.address()), key])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut conn = listener
                .accept_timeout(Duration::from_secs(20))
                .await
                .unwrap();
            assert_eq!(conn.recv_bytes().await.unwrap(), b"hello from python");
            conn.send_bytes(b"Received: hello from python")
                .await
                .unwrap();
            assert_eq!(conn.recv_bytes().await.unwrap(), b"");
            assert_eq!(conn.recv_bytes().await.unwrap(), b"23456");
            conn.send_bytes(&vec![7u8; 100_000]).await.unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{python} failed");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "Received: hello from python\n100000\n",
                "{python}"
            );

            let (mut child, _out, bound) = python_listener(&python, "('127.0.0.1', 0)", key);
            let mut conn = ipc_socket::Client::connect_async(&bound, Options::new().authkey(KEY))
                .await
                .unwrap();
            conn.send_bytes(b"Hello, Server!").await.unwrap();
            assert_eq!(
                conn.recv_bytes().await.unwrap(),
                b"Received: Hello, Server!"
            );
            conn.send_bytes(b"ab").await.unwrap();
            assert_eq!(conn.recv_bytes().await.unwrap(), b"abab");
            assert!(child.wait().unwrap().success(), "{python}");
        }
    });
}

/// A Python client that sends objects with `conn.send` and prints what
/// `conn.recv()` gives back.
const PY_PICKLE_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
address, key = eval(sys.argv[1]), sys.argv[2].encode()
c = Client(address, authkey=key)
c.send({'job': 7, 'args': [1, 2], 'data': b'\x00\xff', 'note': None})
print(c.recv())
c.close()
"#;

/// A Python listener that answers one object with `{'got': obj}`.
const PY_PICKLE_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
address, key = eval(sys.argv[1]), sys.argv[2].encode()
with Listener(address, authkey=key) as listener:
    print(repr(listener.address), flush=True)
    with listener.accept() as conn:
        conn.send({'got': conn.recv()})
"#;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Job {
    job: u32,
    args: Vec<i64>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    note: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Echo {
    echo: Job,
    n: u32,
}

/// Python objects both ways over a listener and a client speaking pickle
/// (`Options::codec`), over a Unix path and TCP, with every Python here.
#[test]
fn pickled_objects_cross_listeners_and_clients_both_ways() {
    use ipc_core::Codec;
    let key = std::str::from_utf8(KEY).unwrap();
    let options = || Options::new().authkey(KEY).codec(Codec::Pickle);
    for python in pythons() {
        for address in [
            Address::Unix(temp_path("ipct_sock")),
            "127.0.0.1:0".parse().unwrap(),
        ] {
            // Python's Client → our Listener.
            let listener = Listener::bind(&address, options()).unwrap();
            let child = Command::new(&python)
                .args([
                    "-c",
                    PY_PICKLE_CLIENT,
                    &python_address(listener.address()),
                    key,
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut conn = listener.accept_timeout(Duration::from_secs(20)).unwrap();
            let job: Job = conn.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(job.args, [1, 2], "{python}");
            conn.send(&Echo { echo: job, n: 1 }).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{python}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "{'echo': {'job': 7, 'args': [1, 2], 'data': b'\\x00\\xff', 'note': None}, 'n': 1}\n",
                "{python}"
            );
            drop(listener);

            // Our Client → Python's Listener.
            let script_address = match &address {
                Address::Unix(_) => python_address(&Address::Unix(temp_path("ipct_sock"))),
                _ => "('127.0.0.1', 0)".to_owned(),
            };
            let (mut child, _out, bound) =
                python_listener_running(&python, PY_PICKLE_LISTENER, &script_address, key);
            let mut conn = Client::connect(&bound, options()).unwrap();
            let job = Job {
                job: 8,
                args: vec![-1],
                data: vec![],
                note: Some("from Rust".into()),
            };
            conn.send(&job).unwrap();
            #[derive(serde::Deserialize)]
            struct Got {
                got: Job,
            }
            let got: Got = conn.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got.got, job, "{python}");
            assert!(child.wait().unwrap().success(), "{python}");
        }
    }
}
