//! The Pool scenario: four worker processes square the numbers 0 to 9, as
//! Python's `with Pool(4) as p: print(p.map(square, range(10)))`
//! (examples/python/pool.py) does.
//!
//! ```text
//! [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
//! ```
//!
//! Run with `cargo run -p ipc-pool --example pool`.

use ipc_pool::Pool;

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> ipc_core::Result<()> {
    // A worker is a fresh run of this program: it starts here.
    ipc_core::spawn::init();
    let pool = Pool::new(4)?;
    println!("{:?}", pool.map(ipc_core::entry!(square), 0..10)?);
    pool.close()
}
