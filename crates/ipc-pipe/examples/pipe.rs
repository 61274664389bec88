//! The Pipe scenario of the first article (`examples/python/pipe.py`): a
//! sender process and a receiver process share the two ends of one pipe.
//! The children are forked, as Python's default start method on Linux does.

use ipc_core::process::Process;
use ipc_pipe::Connection;

fn sender(mut conn: Connection, data: &str) -> ipc_pipe::Result<()> {
    conn.send(data)?;
    conn.close();
    Ok(())
}

fn receiver(mut conn: Connection) -> ipc_pipe::Result<()> {
    let data: String = conn.recv()?;
    println!("Received data: {data}");
    conn.close();
    Ok(())
}

fn main() -> ipc_pipe::Result<()> {
    let (parent_conn, child_conn) = ipc_pipe::duplex()?;
    let data = "Hello from parent!";
    let mut p1 = Process::new()
        .pass("conn", &child_conn)?
        .fork(move || sender(child_conn, data))?;
    let mut p2 = Process::new()
        .pass("conn", &parent_conn)?
        .fork(move || receiver(parent_conn))?;
    assert!(
        p1.join()?.success() && p2.join()?.success(),
        "a child failed"
    );
    Ok(())
}
