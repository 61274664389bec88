//! An echo server that answers every message with `b"Received: " + data`,
//! for trying ipc-socket against Python's `multiprocessing.connection`:
//!
//! ```text
//! IPC_AUTHKEY=secret cargo run -p ipc-socket --example echo_server -- --address 127.0.0.1:6000
//! python3 -c "from multiprocessing.connection import Client
//! c = Client(('127.0.0.1', 6000), authkey=b'secret'); c.send_bytes(b'hi'); print(c.recv_bytes())"
//! ```
//!
//! With `--codec pickle` it speaks Python's `conn.send(obj)` /
//! `conn.recv()` instead: it answers every plain-data object with the dict
//! `{'echo': obj, 'n': <messages so far on this connection>}` (and an
//! object it refuses, such as one whose pickle would run code, with
//! `{'error': <why>, 'n': ...}`):
//!
//! ```text
//! IPC_AUTHKEY=secret cargo run -p ipc-socket --example echo_server -- --codec pickle
//! python3 -c "from multiprocessing.connection import Client
//! c = Client(('127.0.0.1', 6000), authkey=b'secret'); c.send({'job': 7}); print(c.recv())"
//! ```
//!
//! The authkey comes from the environment variable `IPC_AUTHKEY` (no
//! authentication when it is unset). `--once` serves one client and exits.

use std::collections::BTreeMap;

use ipc_core::pickle::{HashableValue, Value};
use ipc_socket::{Listener, Options, Server};

fn main() -> ipc_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let address = args
        .iter()
        .position(|a| a == "--address")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:6000", String::as_str);
    let once = args.iter().any(|a| a == "--once");
    let pickles = match args
        .iter()
        .position(|a| a == "--codec")
        .map(|i| args.get(i + 1))
    {
        None => false,
        Some(Some(codec)) if codec == "pickle" => true,
        Some(Some(codec)) if codec == "bytes" => false,
        Some(_) => {
            eprintln!("--codec takes `pickle` or `bytes`");
            std::process::exit(2);
        }
    };
    let echo: fn(&mut ipc_socket::SocketConnection) = if pickles { echo_pickles } else { echo };
    let mut options = Options::new();
    if let Some(key) = std::env::var_os("IPC_AUTHKEY") {
        options = options.authkey(key.as_encoded_bytes());
    }
    let listener = Listener::bind(address, options)?;
    eprintln!("echo_server listening on {}", listener.address());
    if once {
        let mut conn = listener.accept()?;
        echo(&mut conn);
        return Ok(());
    }
    let _server = Server::start(listener, move |mut conn| echo(&mut conn))?;
    // Serve until killed; the accept and connection threads do the work.
    loop {
        std::thread::park();
    }
}

/// Answers each pickled object with `{'echo': object, 'n': count}`. The
/// message is read as bytes and decoded as a whole value, so that even
/// integers beyond 64 bits come back as they were.
fn echo_pickles(conn: &mut ipc_socket::SocketConnection) {
    let key = |name: &str| HashableValue::String(name.to_owned());
    let mut n = 0;
    while let Ok(message) = conn.recv_bytes() {
        n += 1;
        let (field, value) = match ipc_core::pickle::decode_value(&message) {
            Ok(object) => ("echo", object),
            Err(refused) => ("error", Value::String(refused.to_string())),
        };
        let reply = Value::Dict(BTreeMap::from([
            (key(field), value),
            (key("n"), Value::I64(n)),
        ]));
        let mut bytes = Vec::new();
        if ipc_core::pickle::encode_value_into(&reply, &mut bytes).is_err()
            || conn.send_bytes(&bytes).is_err()
        {
            break;
        }
    }
}

fn echo(conn: &mut ipc_socket::SocketConnection) {
    while let Ok(data) = conn.recv_bytes() {
        let reply = [&b"Received: "[..], &data].concat();
        if conn.send_bytes(&reply).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use ipc_core::process::Process;
    use ipc_testkit::PATIENCE;

    use super::*;

    /// The README's Python client, and what it must get back.
    const CLIENT: &str = r#"
import datetime, sys
from multiprocessing.connection import Client
c = Client(sys.argv[1], authkey=b'secret')
c.send({'job': 7, 'args': [1, 2]})
assert c.recv() == {'echo': {'job': 7, 'args': [1, 2]}, 'n': 1}
c.send(2**70)
assert c.recv() == {'echo': 2**70, 'n': 2}
c.send(datetime.date(2024, 1, 2))
reply = c.recv()
assert reply['n'] == 3 and 'datetime.date' in reply['error'], reply
c.send(('still', 'here'))
assert c.recv() == {'echo': ('still', 'here'), 'n': 4}
c.close()
"#;

    #[test]
    fn a_python_client_gets_its_objects_echoed() {
        let path = ipc_testkit::temp_path("echo");
        let address = path.to_str().expect("a UTF-8 temp path");
        let listener = Listener::bind(address, Options::new().authkey(b"secret")).unwrap();
        let mut command = Command::new("python3");
        command.args(["-c", CLIENT, address]);
        let mut client = Process::new().exec(command).unwrap();
        let mut conn = listener.accept_timeout(PATIENCE).unwrap();
        conn.set_read_timeout(Some(PATIENCE));
        // Returns when the client hangs up.
        echo_pickles(&mut conn);
        ipc_testkit::join_ok(&mut client);
        drop(listener);
        assert!(!path.exists(), "the socket file is removed");
    }
}
