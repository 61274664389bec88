//! The shared-memory scenario of the original article
//! (`examples/python/value_array.py`): a child process sets a shared
//! `Value` of type double and negates every element of a shared `Array` of
//! ints, and the parent prints both. The child is forked, as Python's
//! default start method on Linux does.

use ipc_core::process::Process;
use ipc_shm::{Array, Value};

// The article's number, printed as written: not meant to be π.
#[allow(clippy::approx_constant)]
fn update_shared_memory(n: &Value<f64>, a: &Array<i32>) -> ipc_shm::Result<()> {
    n.set(3.1415926)?;
    for i in 0..a.len() {
        a.set(i, -a.get(i)?)?;
    }
    Ok(())
}

fn main() -> ipc_shm::Result<()> {
    let num = Value::new(0.0f64)?; // Value('d', 0.0)
    let arr = Array::from_slice(&(0..5).collect::<Vec<i32>>())?; // Array('i', range(5))
    let mut p = Process::new()
        .pass("num", &num)?
        .pass("arr", &arr)?
        .fork(|| update_shared_memory(&num, &arr))?;
    assert!(p.join()?.success(), "the child failed");
    println!("Shared value: {}", num.get()?);
    println!("Shared array: {:?}", arr.to_vec()?);
    Ok(())
}
