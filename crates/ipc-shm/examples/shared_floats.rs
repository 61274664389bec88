//! An `f64` array shared by name with Python: Rust writes squares into a
//! `SharedMemory` segment, Python (when `python3` is installed) reads them
//! through `memoryview(shm.buf).cast('d')` and halves each one in place,
//! and Rust reads the halves back.
//!
//! ```text
//! python saw [0.0, 1.0, 4.0, 9.0, 16.0]
//! rust sees  [0.0, 0.5, 2.0, 4.5, 8.0]
//! ```
//!
//! Run with `cargo run -p ipc-shm --example shared_floats`.

use std::process::Command;

use ipc_shm::SharedMemory;

/// Python's side. Up to 3.12 its resource tracker would unlink a segment
/// it merely attached to when it exits; `unregister` (or 3.13's
/// `track=False`) leaves that to the creator.
const PYTHON: &str = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
if sys.version_info >= (3, 13):
    shm = shared_memory.SharedMemory(name=sys.argv[1], track=False)
else:
    shm = shared_memory.SharedMemory(name=sys.argv[1])
    resource_tracker.unregister(shm._name, "shared_memory")
xs = shm.buf.cast('d')
print("python saw", xs.tolist())
for i in range(len(xs)):
    xs[i] /= 2
xs.release()
shm.close()
"#;

fn main() -> ipc_core::Result<()> {
    let name = format!("shared_floats_{}", std::process::id());
    let shm = SharedMemory::create(&name, 5 * 8)?;
    let xs = shm.slice::<f64>();
    for i in 0..xs.len() {
        xs.set(i, (i * i) as f64);
    }
    match Command::new("python3").args(["-c", PYTHON, &name]).status() {
        Ok(status) if status.success() => {}
        _ => {
            println!("python3 is not here; halving in Rust instead");
            for i in 0..xs.len() {
                xs.set(i, xs.get(i).unwrap_or(0.0) / 2.0);
            }
        }
    }
    println!("rust sees  {:?}", xs.to_vec());
    shm.unlink()
}
