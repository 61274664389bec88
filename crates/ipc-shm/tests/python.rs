//! Interoperability with Python's `multiprocessing.shared_memory` on every
//! interpreter found (python3 on the PATH, and the pyenv 3.12 and 3.13
//! builds if present): Python attaches to a segment created here and reads
//! what Rust wrote; Rust opens a segment Python created and reads what
//! Python wrote. Also pins down the resource-tracker hazard that the docs
//! warn about. Each test prints a note and passes if no Python is found.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_shm::{Error, SharedMemory};
use ipc_testkit::{assert_no_leftovers, exists, name};

/// `(interpreter, (major, minor))` for every Python 3 found.
fn pythons() -> Vec<(String, (u32, u32))> {
    let candidates = [
        "python3",
        "/root/.pyenv/versions/3.12.1/bin/python3.12",
        "/root/.pyenv/versions/3.13.0/bin/python3.13",
    ];
    let found: Vec<_> = candidates
        .iter()
        .filter_map(|py| {
            let out = Command::new(py)
                .args(["-c", "import sys; print(*sys.version_info[:2])"])
                .output()
                .ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            let mut parts = text.split_whitespace().map(|p| p.parse::<u32>());
            match (parts.next()?.ok()?, parts.next()?.ok()?) {
                (3, minor) if minor >= 8 => Some((py.to_string(), (3, minor))),
                _ => None,
            }
        })
        .collect();
    if found.is_empty() {
        println!("note: no python3 >= 3.8 found; skipping the Python interop checks");
    }
    found
}

/// How to attach without Python's resource tracker unlinking the segment
/// at exit: `track=False` on 3.13+, `resource_tracker.unregister` before.
const ATTACH: &str = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
name = sys.argv[1]
if sys.version_info >= (3, 13):
    shm = shared_memory.SharedMemory(name=name, track=False)
else:
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")
print(bytes(shm.buf[:15]).decode(), shm.size)
shm.buf[16:32] = b"python was here!"
shm.close()
"#;

#[test]
fn python_attaches_to_a_rust_segment_and_leaves_it_alone() {
    for (python, version) in pythons() {
        let n = name();
        let shm = SharedMemory::create(&n, 4096).unwrap();
        shm.write_at(0, b"hello from rust").unwrap();
        let out = Command::new(&python)
            .args(["-c", ATTACH, &n])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{python}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from rust 4096\n"
        );
        let mut buf = [0u8; 16];
        shm.read_at(16, &mut buf).unwrap();
        assert_eq!(&buf, b"python was here!", "{python}");
        // The tracker of a Python that attached the documented way does not
        // remove the segment: it is still there after Python exited, and
        // only our unlink removes it.
        assert!(
            exists(&n),
            "{python} {version:?} unlinked a segment it did not own"
        );
        shm.unlink().unwrap();
        drop(shm);
        assert_no_leftovers();
    }
}

const CREATE: &str = r#"
import sys
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=int(sys.argv[2]))
shm.buf[:11] = b"from python"
print("ready", shm.size, flush=True)
sys.stdin.readline()
data = bytes(shm.buf[11:20])
shm.close()
shm.unlink()
print(data.decode(), flush=True)
"#;

#[test]
fn rust_opens_a_python_segment_and_reads_what_python_wrote() {
    for (python, _) in pythons() {
        let n = name();
        let mut child = Command::new(&python)
            .args(["-c", CREATE, &n, "1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready 1000\n", "{python}");

        let shm = SharedMemory::open(&n).unwrap();
        assert!(!shm.is_owner());
        assert_eq!(shm.size(), 1000);
        let mut buf = [0u8; 11];
        shm.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"from python");
        shm.write_at(11, b"from rust").unwrap();

        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "from rust\n", "{python}");
        assert!(child.wait().unwrap().success());
        // Python, the owner, unlinked it; our handle still maps the memory.
        assert!(!exists(&n));
        shm.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"from python");
        drop(shm);
        assert_no_leftovers();
    }
}

/// The hazard the docs describe, asserted as it is: Python up to 3.12
/// attaching with a plain `SharedMemory(name=...)` registers the segment
/// with its resource tracker, which unlinks it when that Python exits.
#[test]
fn a_plain_python_attach_up_to_3_12_destroys_the_segment() {
    for (python, version) in pythons() {
        if version >= (3, 13) {
            continue;
        }
        let n = name();
        let shm = SharedMemory::create(&n, 64).unwrap();
        let out = Command::new(&python)
            .args([
                "-c",
                "import sys\nfrom multiprocessing import shared_memory\nshared_memory.SharedMemory(name=sys.argv[1]).close()",
                &n,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{python}");
        // The tracker process unlinks after Python has exited; wait for the
        // name to go (bounded).
        let deadline = Instant::now() + Duration::from_secs(20);
        while exists(&n) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !exists(&n),
            "{python} {version:?}: expected the tracker to unlink it"
        );
        assert!(matches!(shm.unlink(), Err(Error::NotFound(_))));
        drop(shm);
        assert_no_leftovers();
    }
}

/// Python's side of a shared `f64` array: checks what Rust wrote through
/// `memoryview.cast('d')` (and numpy, where installed), writes its own
/// numbers, and, given "create", makes the segment itself first.
const FLOATS: &str = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
name, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "create":
    shm = shared_memory.SharedMemory(name=name, create=True, size=8 * n)
    mv = shm.buf.cast('d')
    for i in range(n):
        mv[i] = i * 1.5
    print("ready", flush=True)
    sys.stdin.readline()
    assert [mv[i] for i in range(n)] == [-i for i in range(n)], "Rust's numbers"
    mv.release()
    shm.close()
    shm.unlink()
    print("done", flush=True)
    sys.exit(0)
if sys.version_info >= (3, 13):
    shm = shared_memory.SharedMemory(name=name, track=False)
else:
    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")
mv = shm.buf.cast('d')
assert len(mv) == n, len(mv)
assert [mv[i] for i in range(n)] == [i * 0.5 for i in range(n)], "Rust's numbers"
try:
    import numpy as np
    a = np.ndarray(n, dtype='f8', buffer=shm.buf)
    assert a.sum() == sum(i * 0.5 for i in range(n)), "numpy's view"
    del a
    print("numpy agrees", flush=True)
except ImportError:
    print("no numpy here", flush=True)
for i in range(n):
    mv[i] = -float(i)
mv.release()
shm.close()
"#;

#[test]
fn python_and_rust_share_an_f64_array_by_name_both_ways() {
    const N: usize = 1000;
    for (python, _) in pythons() {
        // Rust makes it and writes; Python reads through a cast view (and
        // numpy), then writes back.
        let n = name();
        let shm = SharedMemory::create(&n, 8 * N).unwrap();
        let xs = shm.slice::<f64>();
        assert_eq!(xs.len(), N);
        for i in 0..N {
            xs.set(i, i as f64 * 0.5);
        }
        let out = Command::new(&python)
            .args(["-c", FLOATS, &n, &N.to_string(), "attach"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{python}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{python}: {}", String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(xs.to_vec(), (0..N).map(|i| -(i as f64)).collect::<Vec<_>>());
        shm.unlink().unwrap();
        drop(shm);

        // Python makes it and writes; Rust reads, then writes back.
        let n = name();
        let mut child = Command::new(&python)
            .args(["-c", FLOATS, &n, &N.to_string(), "create"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "{python}");
        let shm = SharedMemory::open(&n).unwrap();
        let mut copy = vec![0f64; N];
        shm.read_slice(0, &mut copy).unwrap();
        assert_eq!(copy, (0..N).map(|i| i as f64 * 1.5).collect::<Vec<_>>());
        shm.slice::<f64>()
            .copy_from_slice(&(0..N).map(|i| -(i as f64)).collect::<Vec<_>>());
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "done\n", "{python}");
        assert!(child.wait().unwrap().success(), "{python}");
        drop(shm);
        assert_no_leftovers();
    }
}
