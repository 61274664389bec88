//! Python interop: a real CPython `multiprocessing.connection.Connection`
//! on the other end of our pipes, exchanging `send_bytes`/`recv_bytes` both
//! ways (empty, 100 KB and 16 MiB messages, offset/size, `recv_bytes_into`
//! at an offset), and one-way pipes with Python as the reader and as the
//! writer.
//!
//! The Python child is started with `Process::exec`, the fd passed as an
//! inherited handle that the script finds in `IPC_HANDLES`. Each test runs
//! against `python3` and, when present, `python3.12` and `python3.13`; an
//! interpreter that is missing is reported and skipped, not failed.

use std::process::Command;

use ipc_core::process::Process;
use ipc_pipe::{Connection, Error};
use ipc_tests::{join_ok, python_or_skip as python, PATIENCE, PYTHONS, PY_HANDLE_FD};

/// The Python side. `sys.argv[1]` is the scenario.
const SCRIPT: &str = r#"
import os, sys
from multiprocessing.connection import Connection

def pattern(n):
    return bytes(i % 251 for i in range(n))

BIG = bytes(range(256)) * 65536   # 16 MiB

mode = sys.argv[1]
fd = handle_fd("conn")
if mode == "duplex":
    c = Connection(fd)
    assert c.readable and c.writable
    assert c.poll(30), "nothing from Rust"
    got = []
    while True:
        m = c.recv_bytes()
        if m == b"END":
            break
        got.append(m)
    expected = [b"hello", b"", pattern(100_000), b"3456", BIG]
    assert got == expected, [len(m) for m in got]
    for m in got:
        c.send_bytes(m)
    c.send_bytes(b"")
    c.send_bytes(pattern(100_000))
    c.send_bytes(b"0123456789", 2, 5)
    c.send_bytes(b"0123456789", 7)
    c.send_bytes(BIG)
    buf = bytearray(b"." * 16)
    n = c.recv_bytes_into(buf, 4)
    c.send_bytes(bytes([n]) + bytes(buf))
    c.close()
elif mode == "reader":
    c = Connection(fd, writable=False)
    assert c.recv_bytes() == b""
    assert c.recv_bytes() == pattern(100_000)
    assert c.recv_bytes() == b"cde"
    assert c.recv_bytes() == BIG
    try:
        c.recv_bytes()
    except EOFError:
        pass
    else:
        raise AssertionError("no EOF after the writer closed")
elif mode == "writer":
    c = Connection(fd, readable=False)
    c.send_bytes(b"")
    c.send_bytes(pattern(100_000))
    c.send_bytes(b"abcdefgh", 2, 3)
    c.send_bytes(BIG)
    c.close()
else:
    raise SystemExit("unknown mode " + mode)
"#;

/// The same patterns as the script's `pattern` and `BIG`.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn big() -> Vec<u8> {
    (0..16 << 20).map(|i| i as u8).collect()
}

const PYTHON3: &[&str] = PYTHONS[0];
const PYTHON312: &[&str] = PYTHONS[1];
const PYTHON313: &[&str] = PYTHONS[2];

/// Starts the script in `mode` under `python` with `end` as its `conn`.
fn start(python: &str, mode: &str, end: &Connection) -> ipc_core::process::Child {
    let mut command = Command::new(python);
    command.args(["-c", &format!("{PY_HANDLE_FD}{SCRIPT}"), mode]);
    Process::new()
        .pass("conn", end)
        .unwrap()
        .exec(command)
        .unwrap()
}

fn recv(conn: &mut Connection, what: &str) -> Vec<u8> {
    conn.recv_bytes_timeout(PATIENCE).unwrap_or_else(|e| {
        panic!("receiving {what} from Python: {e:?} (see Python's stderr above)")
    })
}

fn duplex_with(candidates: &[&str]) {
    let Some(python) = python(candidates) else {
        return;
    };
    let (mut conn, child_end) = ipc_pipe::duplex().unwrap();
    let mut child = start(&python, "duplex", &child_end);
    drop(child_end);
    let sent: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        vec![],
        pattern(100_000),
        b"3456".to_vec(),
        big(),
    ];
    conn.send_bytes(&sent[0]).unwrap();
    conn.send_bytes(&sent[1]).unwrap();
    conn.send_bytes(&sent[2]).unwrap();
    conn.send_bytes_range(b"0123456789", 3, Some(4)).unwrap();
    conn.send_bytes(&sent[4]).unwrap();
    conn.send_bytes(b"END").unwrap();
    for (i, expected) in sent.iter().enumerate() {
        let got = recv(&mut conn, &format!("echo {i}"));
        assert!(
            got == *expected,
            "echo {i}: {} bytes back for {}",
            got.len(),
            expected.len()
        );
    }
    assert_eq!(recv(&mut conn, "an empty message"), b"");
    assert!(
        recv(&mut conn, "100 KB") == pattern(100_000),
        "the 100 KB message differs"
    );
    assert_eq!(recv(&mut conn, "send_bytes(msg, 2, 5)"), b"23456");
    assert_eq!(recv(&mut conn, "send_bytes(msg, 7)"), b"789");
    assert!(
        recv(&mut conn, "16 MiB") == big(),
        "the 16 MiB message differs"
    );
    conn.send_bytes(b"into").unwrap();
    assert_eq!(
        recv(&mut conn, "the recv_bytes_into result"),
        b"\x04....into........"
    );
    assert!(matches!(
        conn.recv_bytes_timeout(PATIENCE),
        Err(Error::Closed)
    ));
    join_ok(&mut child);
}

fn python_reads_one_way(candidates: &[&str]) {
    let Some(python) = python(candidates) else {
        return;
    };
    let (reader, mut writer) = ipc_pipe::one_way().unwrap();
    let mut child = start(&python, "reader", &reader);
    drop(reader);
    writer.send_bytes(b"").unwrap();
    writer.send_bytes(&pattern(100_000)).unwrap();
    writer.send_bytes_range(b"abcdefgh", 2, Some(3)).unwrap();
    writer.send_bytes(&big()).unwrap();
    drop(writer);
    join_ok(&mut child);
}

fn python_writes_one_way(candidates: &[&str]) {
    let Some(python) = python(candidates) else {
        return;
    };
    let (mut reader, writer) = ipc_pipe::one_way().unwrap();
    let mut child = start(&python, "writer", &writer);
    drop(writer);
    assert_eq!(recv(&mut reader, "an empty message"), b"");
    assert!(
        recv(&mut reader, "100 KB") == pattern(100_000),
        "the 100 KB message differs"
    );
    assert_eq!(recv(&mut reader, "send_bytes(msg, 2, 3)"), b"cde");
    assert!(
        recv(&mut reader, "16 MiB") == big(),
        "the 16 MiB message differs"
    );
    assert!(matches!(
        reader.recv_bytes_timeout(PATIENCE),
        Err(Error::Closed)
    ));
    join_ok(&mut child);
}

#[test]
fn python3_duplex() {
    duplex_with(PYTHON3);
}

#[test]
fn python3_reads_a_one_way_pipe() {
    python_reads_one_way(PYTHON3);
}

#[test]
fn python3_writes_a_one_way_pipe() {
    python_writes_one_way(PYTHON3);
}

#[test]
fn python312_duplex() {
    duplex_with(PYTHON312);
}

#[test]
fn python312_reads_a_one_way_pipe() {
    python_reads_one_way(PYTHON312);
}

#[test]
fn python312_writes_a_one_way_pipe() {
    python_writes_one_way(PYTHON312);
}

#[test]
fn python313_duplex() {
    duplex_with(PYTHON313);
}

#[test]
fn python313_reads_a_one_way_pipe() {
    python_reads_one_way(PYTHON313);
}

#[test]
fn python313_writes_a_one_way_pipe() {
    python_writes_one_way(PYTHON313);
}
