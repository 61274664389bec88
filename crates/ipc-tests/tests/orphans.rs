//! Creators killed with SIGKILL at random moments of create/drop loops
//! never make a name unusable: every kind of named object the workspace
//! makes is then either reclaimed by `open_or_create` within 100 ms or
//! removed through the public API (`remove_orphans` for the objects that
//! record their creator, `SharedMemory::unlink` for plain segments, whose
//! bytes are the user's and record nothing).

use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_queue::{JoinableQueue, Queue};
use ipc_shm::{Array, Lock, RawValue, Semaphore, SharedMemory, Value};
use ipc_testkit::{Rng, PATIENCE};

/// How long `open_or_create` may take on a name a killed creator left.
const RECLAIM_BOUND: Duration = Duration::from_millis(100);
/// Names per kind that the churning child cycles through.
const SLOTS: u64 = 3;
const ROUNDS: u32 = 40;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Segment,
    Value,
    Array,
    Lock,
    Semaphore,
    Queue,
    JoinableQueue,
}

const KINDS: [Kind; 7] = [
    Kind::Segment,
    Kind::Value,
    Kind::Array,
    Kind::Lock,
    Kind::Semaphore,
    Kind::Queue,
    Kind::JoinableQueue,
];

/// A live object of some kind, kept until dropped.
type Held = Box<dyn std::any::Any>;

impl Kind {
    fn create(self, name: &str) -> ipc_core::Result<Held> {
        Ok(match self {
            Kind::Segment => Box::new(SharedMemory::create(name, 4096)?),
            Kind::Value => Box::new(Value::create(name, 7u64)?),
            Kind::Array => Box::new(Array::create(name, &[1u32; 64])?),
            Kind::Lock => Box::new(Lock::create(name)?),
            Kind::Semaphore => Box::new(Semaphore::create(name, 2)?),
            Kind::Queue => Box::new(Queue::<u64>::builder().capacity(4096).create(name)?),
            Kind::JoinableQueue => Box::new(
                JoinableQueue::<u64>::builder()
                    .capacity(4096)
                    .create(name)?,
            ),
        })
    }

    /// Opens or creates `name`; whether this handle now owns it (and so
    /// removes it on drop).
    fn open_or_create(self, name: &str) -> ipc_core::Result<(Held, bool)> {
        Ok(match self {
            Kind::Segment => {
                let s = SharedMemory::open_or_create(name, 4096)?;
                let owner = s.is_owner();
                (Box::new(s), owner)
            }
            Kind::Value => {
                let v = Value::open_or_create(name, 7u64)?;
                assert_eq!(v.get()?, 7, "a reclaimed or adopted value");
                let owner = v.is_owner();
                (Box::new(v), owner)
            }
            Kind::Array => {
                let a = Array::open_or_create(name, &[1u32; 64])?;
                assert_eq!(a.to_vec()?, [1u32; 64]);
                let owner = a.is_owner();
                (Box::new(a), owner)
            }
            Kind::Lock => {
                let l = Lock::open_or_create(name)?;
                let owner = l.is_owner();
                (Box::new(l), owner)
            }
            Kind::Semaphore => {
                let s = Semaphore::open_or_create(name, 2)?;
                let owner = s.is_owner();
                (Box::new(s), owner)
            }
            Kind::Queue => {
                let q = Queue::<u64>::builder()
                    .capacity(4096)
                    .open_or_create(name)?;
                q.put_nowait(1).map_err(ipc_core::Error::from)?;
                assert_eq!(q.get_nowait()?, 1);
                let owner = q.is_owner();
                (Box::new(q), owner)
            }
            Kind::JoinableQueue => {
                let q = JoinableQueue::<u64>::builder()
                    .capacity(4096)
                    .open_or_create(name)?;
                let owner = q.is_owner();
                (Box::new(q), owner)
            }
        })
    }
}

fn names(prefix: &str) -> Vec<(Kind, String)> {
    KINDS
        .iter()
        .flat_map(|&kind| (0..SLOTS).map(move |slot| (kind, format!("{prefix}{kind:?}_{slot}"))))
        .collect()
}

/// Names in /dev/shm that start with `prefix`.
fn leftovers(prefix: &str) -> Vec<String> {
    ipc_testkit::leftovers()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Runs a child that creates and drops every kind of object over and
/// over, counting its steps in `steps`, and SIGKILLs it once it has made
/// `kill_after` steps: somewhere inside a create or a drop.
fn churn_and_kill(prefix: &str, steps: &RawValue<u64>, kill_after: u64) {
    steps.set(0);
    let names = names(prefix);
    let mut child = Process::new()
        .allow_threads()
        .fork(move || -> ipc_core::Result<()> {
            let mut round = 0u64;
            loop {
                for (kind, name) in &names {
                    if !name.ends_with(&format!("_{}", round % SLOTS)) {
                        continue;
                    }
                    let held = kind.create(name)?;
                    steps.set(steps.get() + 1);
                    drop(held);
                    steps.set(steps.get() + 1);
                }
                round += 1;
            }
        })
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while steps.get() < kill_after {
        assert!(Instant::now() < deadline, "the churning child stalled");
        std::thread::yield_now();
    }
    child.kill().unwrap();
    let status = child.join_timeout(PATIENCE).unwrap().expect("reaped");
    assert!(!status.success(), "the child ran until killed: {status:?}");
}

#[test]
fn names_left_by_killed_creators_are_reclaimed_or_removed() {
    let mut rng = Rng::from_env_or_clock();
    let prefix = format!("ipct_{}_orphan_", std::process::id());
    let steps = RawValue::new(0u64).unwrap();
    let (mut left_by_kills, mut unfinished_by_kills) = (0, 0);
    for round in 0..ROUNDS {
        let per_round = 2 * KINDS.len() as u64;
        churn_and_kill(&prefix, &steps, 1 + rng.below(3 * per_round));
        for name in leftovers(&prefix) {
            left_by_kills += 1;
            let unfinished = match SharedMemory::open(&name) {
                Err(ipc_core::Error::Abandoned(_)) => true,
                Ok(shm) => shm.to_vec().starts_with(b"ipcobj\0\0"),
                Err(e) => panic!("{name}: {e}"),
            };
            unfinished_by_kills += usize::from(unfinished);
        }
        if round % 2 == 0 {
            // Every name is usable again at once.
            for (kind, name) in names(&prefix) {
                let started = Instant::now();
                let (held, owner) = kind
                    .open_or_create(&name)
                    .unwrap_or_else(|e| panic!("round {round}: {name}: {e}"));
                let took = started.elapsed();
                assert!(took < RECLAIM_BOUND, "round {round}: {name} took {took:?}");
                drop(held);
                if !owner {
                    // A plain segment records no creator: its user removes it.
                    assert!(matches!(kind, Kind::Segment), "{name} was not adopted");
                    SharedMemory::open(&name).unwrap().unlink().unwrap();
                }
            }
        } else {
            // Every leftover is removable through the public API: objects
            // by prefix (an empty one only once it is old enough that its
            // creator cannot still be about to lock it), plain segments by
            // their users.
            let deadline = Instant::now() + PATIENCE;
            loop {
                ipc_shm::remove_orphans(&prefix).unwrap();
                let objects: Vec<String> = leftovers(&prefix)
                    .into_iter()
                    .filter(|n| {
                        !n.contains("Segment_")
                            || SharedMemory::open(n)
                                .is_err_and(|e| matches!(e, ipc_core::Error::Abandoned(_)))
                    })
                    .collect();
                if objects.is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: {objects:?} stay");
                std::thread::yield_now();
            }
            for name in leftovers(&prefix) {
                SharedMemory::open(&name).unwrap().unlink().unwrap();
            }
        }
        assert_eq!(leftovers(&prefix), Vec::<String>::new(), "round {round}");
    }
    eprintln!(
        "{ROUNDS} kills left {left_by_kills} names behind, {unfinished_by_kills} of them unfinished"
    );
    assert!(
        left_by_kills > 0,
        "no kill left anything: the test proves nothing"
    );
}

#[test]
fn remove_orphans_spares_live_creators_and_foreign_segments() {
    let prefix = format!("ipct_{}_live_", std::process::id());
    let value = Value::create(&format!("{prefix}value"), 1u32).unwrap();
    let plain = SharedMemory::create(&format!("{prefix}plain"), 64).unwrap();
    // A child that creates an object and waits to be told to go: alive
    // while we look, dead after.
    let (mut parent_end, mut child_end) = ipc_pipe::duplex().unwrap();
    let name = format!("{prefix}child");
    let mut child = Process::new()
        .allow_threads()
        .pass("conn", &child_end)
        .unwrap()
        .fork({
            let name = name.clone();
            move || -> ipc_core::Result<()> {
                let lock = Lock::create(&name)?;
                child_end.send_bytes(b"made")?;
                child_end.recv_bytes()?;
                std::mem::forget(lock); // as if killed: nothing unlinks it
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(parent_end.recv_bytes_timeout(PATIENCE).unwrap(), b"made");
    assert_eq!(
        ipc_shm::remove_orphans(&prefix).unwrap(),
        Vec::<String>::new()
    );
    parent_end.send_bytes(b"go").unwrap();
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
    assert_eq!(ipc_shm::remove_orphans(&prefix).unwrap(), vec![name]);
    assert_eq!(
        leftovers(&prefix),
        [format!("{prefix}plain"), format!("{prefix}value")]
    );
    drop((value, plain));
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}
