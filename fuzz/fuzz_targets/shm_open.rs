//! Fuzz target: opening a named shared-memory segment whose bytes another
//! process wrote, as every ipc-shm object (`Value<u64>`, `Array<u32>`,
//! `Lock`, `Semaphore`, `Event`, `Barrier`) and as an ipc-queue `Queue`
//! and `JoinableQueue`, then, when an open succeeds, one non-blocking
//! operation of each kind (a try-lock, a nowait put and get, ...). Every
//! outcome must be a value or an error value: no panic, no crash, no hang.
//!
//! The first byte picks the segment's starting bytes: nothing (the
//! segment is the fuzzer's bytes), or a valid object of one of the eight
//! kinds made through the public API in this process, so that the opens
//! get past the header checks to the control words (lock words, semaphore
//! counts, a queue's head and tail, its records). The second byte sets the
//! segment's size (0: the natural size, else that many 8-byte units); the
//! rest is raw bytes, or edits `[offset: u16 LE][length: u8][bytes]` to a
//! valid object. Segments are named `ipcfuzz_<pid>_<n>` and unlinked after
//! each input; nothing is left in /dev/shm unless the target crashes.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ipc_fuzz::unique_name;
use ipc_queue::{JoinableQueue, Queue};
use ipc_shm::{Array, Barrier, Event, Lock, LockError, Semaphore, SharedMemory, Value};
use libfuzzer_sys::fuzz_target;

/// The item type of the queues.
type Item = Vec<u8>;

/// Valid objects of each kind, as bytes.
const TEMPLATES: usize = 8;

/// Where the state word sits (ipc-shm's header `state`, ipc-queue's
/// `init`): 0 means "the creator is still initialising", which an opener
/// waits out for 2 s by design, so the target never leaves it 0.
const STATE: usize = 8;
/// Where an ipc-shm header keeps the element count.
const LEN: usize = 40;
/// Where an ipc-shm object's robust mutex keeps its lock word.
const LOCK_WORD: usize = 128;
/// The thread-id bits of a lock word.
const TID_MASK: u32 = 0x3fff_ffff;

/// The bytes of a freshly made object of kind `kind`, made with the
/// public API under a name of this process and removed again.
fn template(kind: usize) -> Vec<u8> {
    let name = unique_name("ipcfuzz_template");
    let bytes = || SharedMemory::open(&name).unwrap().to_vec();
    match kind {
        0 => {
            let _value = Value::<u64>::create(&name, 7).unwrap();
            bytes()
        }
        1 => {
            let _array = Array::<u32>::create(&name, &[1, 2, 3, 4]).unwrap();
            bytes()
        }
        2 => {
            let _lock = Lock::create(&name).unwrap();
            bytes()
        }
        3 => {
            let _semaphore = Semaphore::create(&name, 1).unwrap();
            bytes()
        }
        4 => {
            let event = Event::create(&name).unwrap();
            event.set();
            bytes()
        }
        5 => {
            let _barrier = Barrier::create(&name, 2).unwrap();
            bytes()
        }
        6 => {
            let queue = Queue::<Item>::builder().capacity(64).create(&name).unwrap();
            queue.put(b"first".to_vec()).unwrap();
            bytes()
        }
        _ => {
            // Items put and taken, so the ring's offsets and counts have
            // moved and a record sits across the middle.
            let queue = JoinableQueue::<Item>::builder()
                .capacity(128)
                .maxsize(4)
                .create(&name)
                .unwrap();
            for item in [&b"one"[..], b"two", b"three"] {
                queue.put(item.to_vec()).unwrap();
            }
            queue.get().unwrap();
            queue.task_done().unwrap();
            bytes()
        }
    }
}

fn templates() -> &'static [Vec<u8>] {
    static MADE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    MADE.get_or_init(|| (0..TEMPLATES).map(template).collect())
}

/// The segment's bytes as the input describes them.
fn contents(data: &[u8]) -> Vec<u8> {
    let pick = usize::from(data.first().copied().unwrap_or(0)) % (TEMPLATES + 1);
    let size = usize::from(data.get(1).copied().unwrap_or(0)) * 8;
    let rest = data.get(2..).unwrap_or_default();
    let mut bytes = match pick {
        0 => rest.to_vec(),
        n => templates()[n - 1].clone(),
    };
    if size > 0 {
        bytes.resize(size, 0);
    }
    if pick > 0 && !bytes.is_empty() {
        let mut edits = rest;
        while let [lo, hi, n, after @ ..] = edits {
            let n = usize::from(*n).min(after.len());
            let at = usize::from(u16::from_le_bytes([*lo, *hi])) % bytes.len();
            let end = (at + n).min(bytes.len());
            bytes[at..end].copy_from_slice(&after[..end - at]);
            edits = &after[n..];
        }
    }
    if bytes.is_empty() {
        bytes.push(0);
    }
    if bytes.len() >= STATE + 4 && bytes[STATE..STATE + 4] == [0; 4] {
        bytes[STATE] = 1;
    }
    bytes
}

fn word_at<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

fn open_everything(name: &str, bytes: &[u8]) {
    if let Ok(value) = Value::<u64>::open(name) {
        match value.try_lock() {
            Ok(mut guard) => *guard = guard.wrapping_add(1),
            Err(e) => {
                if let Some(guard) = e.into_guard() {
                    guard.mark_consistent();
                }
            }
        }
    }
    let stored_len = word_at::<8>(bytes, LEN).map_or(0, u64::from_le_bytes);
    if let Ok(array) = Array::<u32>::open(name, stored_len as usize) {
        if let Ok(mut guard) = array.try_lock() {
            if let Some(first) = guard.first_mut() {
                *first ^= 1;
            }
        }
    }
    if let Ok(lock) = Lock::open(name) {
        match lock.try_lock() {
            Ok(guard) => drop(guard),
            Err(e) => drop(e.into_guard()),
        }
        match lock.try_acquire() {
            Ok(()) | Err(LockError::OwnerDied(_)) => {
                lock.mark_consistent();
                lock.release().expect("releasing a lock this thread took");
            }
            Err(_) => {}
        }
    }
    if let Ok(semaphore) = Semaphore::open(name) {
        let _ = semaphore.value();
        if semaphore.try_acquire() {
            let _ = semaphore.release();
        }
    }
    if let Ok(event) = Event::open(name) {
        let was = event.is_set();
        event.set();
        assert!(event.wait_timeout(Duration::ZERO));
        if !was {
            event.clear();
        }
    }
    if let Ok(barrier) = Barrier::open(name) {
        let _ = (barrier.parties(), barrier.n_waiting(), barrier.is_broken());
        // Barrier calls wait for the barrier's lock without a deadline, so
        // they are made only when no thread id holds it (a word naming a
        // thread that does not exist would be a lock held for ever).
        let word = |at| word_at::<4>(bytes, at).map_or(0, u32::from_le_bytes);
        if word(LOCK_WORD) & TID_MASK == 0 {
            let _ = barrier.wait_timeout(Duration::ZERO);
            let _ = barrier.reset();
        }
    }
    if let Ok(queue) = Queue::<Item>::builder().open(name) {
        let _ = (queue.qsize(), queue.is_closed());
        let _ = queue.used_bytes();
        let _ = queue.put_nowait(b"fuzz".to_vec());
        let _ = queue.get_nowait();
        let _ = queue.get_bytes_nowait();
        let mut small = [0u8; 4];
        let _ = queue.get_bytes_into_nowait(&mut small);
    }
    if let Ok(queue) = JoinableQueue::<Item>::builder().open(name) {
        let _ = queue.unfinished_tasks();
        let _ = queue.put_bytes_nowait(b"fuzz");
        let _ = queue.get_nowait();
        let _ = queue.task_done();
        let _ = queue.join_timeout(Duration::ZERO);
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = contents(data);
    let name = unique_name("ipcfuzz");
    let segment = SharedMemory::create(&name, bytes.len()).unwrap();
    segment.write_at(0, &bytes).unwrap();
    open_everything(&name, &bytes);
    // The creator's drop unlinks the name.
    drop(segment);
});
