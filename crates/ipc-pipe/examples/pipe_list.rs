//! The Pipe scenario of the second article (`examples/python/pipe_list.py`):
//! a list sent through a pipe. The children are fresh execs of this program
//! (the dependable start method), each rebuilding its end of the pipe from
//! the handle it was passed.

use std::process::Command;

use ipc_core::process::{inherited, Process};
use ipc_pipe::Connection;

fn main() -> ipc_pipe::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("sender") => {
            let mut conn: Connection = inherited("conn")?;
            conn.send(&vec!["hello", "IPC"])?;
        }
        Some("receiver") => {
            let mut conn: Connection = inherited("conn")?;
            let list: Vec<String> = conn.recv()?;
            // Printed as Python prints a list of str.
            let items: Vec<String> = list.iter().map(|item| format!("'{item}'")).collect();
            println!("[{}]", items.join(", "));
        }
        _ => {
            let (parent_conn, child_conn) = ipc_pipe::duplex()?;
            let role = |name: &str| -> std::io::Result<Command> {
                let mut command = Command::new(std::env::current_exe()?);
                command.arg(name);
                Ok(command)
            };
            let mut p1 = Process::new()
                .pass("conn", &child_conn)?
                .exec(role("sender")?)?;
            let mut p2 = Process::new()
                .pass("conn", &parent_conn)?
                .exec(role("receiver")?)?;
            assert!(
                p1.join()?.success() && p2.join()?.success(),
                "a child failed"
            );
        }
    }
    Ok(())
}
