//! An async server on tokio: an `AsyncServer` serves many clients at
//! once, on one thread, and hands each request to a `Pool` of worker
//! processes, awaiting the result instead of blocking a thread.
//!
//! Eight clients (tasks here, each on a socket of its own; they could as
//! well be Python's `multiprocessing.connection.Client`) send numbers;
//! the workers square them; every client checks its answers.
//!
//! ```text
//! 8 clients, 50 requests each: 400 answers, all right, all computed in worker processes
//! ```
//!
//! Run with `cargo run -p ipc-pool --example tokio_server`.

use std::collections::BTreeSet;
use std::sync::Arc;

use ipc_pool::Pool;
use ipc_socket::tokio::{AsyncListener, AsyncServer};
use ipc_socket::{Client, Options};

const CLIENTS: u64 = 8;
const REQUESTS: u64 = 50;

/// The work: run in a worker process.
fn square(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

fn main() -> ipc_core::Result<()> {
    // A worker is a fresh run of this program: it starts here, before any
    // runtime or thread.
    ipc_core::spawn::init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve_and_ask())
}

async fn serve_and_ask() -> ipc_core::Result<()> {
    let pool = Arc::new(Pool::new(4)?);
    let options = Options::new().authkey(b"tokio example");
    let listener = AsyncListener::bind("127.0.0.1:0", options.clone())?;
    let address = listener.address().clone();
    let server = AsyncServer::start(listener, {
        let pool = Arc::clone(&pool);
        move |mut conn| {
            let pool = Arc::clone(&pool);
            async move {
                // Each request goes to the pool; the handler awaits its
                // result while the other connections carry on.
                while let Ok(n) = conn.recv::<u64>().await {
                    let answer = match pool.apply_async(ipc_core::entry!(square), &n) {
                        Ok(pending) => pending.await,
                        Err(e) => Err(e),
                    };
                    let Ok(answer) = answer else { break };
                    if conn.send(&answer).await.is_err() {
                        break;
                    }
                }
            }
        }
    });

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (address, options) = (address.clone(), options.clone());
            tokio::spawn(async move {
                let mut conn = Client::connect_async(&address, options).await?;
                let mut workers = BTreeSet::new();
                for i in 0..REQUESTS {
                    let n = c * 1000 + i;
                    conn.send(&n).await?;
                    let (square, worker): (u64, u32) = conn.recv().await?;
                    assert_eq!(square, n * n);
                    workers.insert(worker);
                }
                Ok::<_, ipc_core::Error>(workers)
            })
        })
        .collect();
    let mut workers = BTreeSet::new();
    for client in clients {
        let seen = client.await.expect("client task")?;
        workers.extend(seen);
    }
    server.shutdown().await;
    assert!(!workers.contains(&std::process::id()));
    println!(
        "{CLIENTS} clients, {REQUESTS} requests each: {} answers, all right, all computed in worker processes",
        CLIENTS * REQUESTS,
    );
    match Arc::try_unwrap(pool) {
        Ok(pool) => pool.close(),
        Err(_) => Ok(()),
    }
}
