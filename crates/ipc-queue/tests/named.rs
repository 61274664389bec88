//! Named queues: create / open / open_or_create, owner-only permissions,
//! removal by the owner, a child that opens a queue by name, and segments
//! that are refused on open (garbage, another version, type, kind or
//! size). Every test checks that it leaves nothing in `/dev/shm`.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use ipc_core::process::Process;
use ipc_core::{Error, Property};
use ipc_queue::{JoinableQueue, Queue, SimpleQueue};
use ipc_shm::SharedMemory;
use ipc_testkit::{assert_no_leftovers, name, own_leftovers, PATIENCE};

/// The error of a call that must fail.
fn refused<T: std::fmt::Debug>(result: ipc_core::Result<T>) -> Error {
    match result {
        Ok(q) => panic!("opened {q:?}, expected an error"),
        Err(e) => e,
    }
}

/// Whether `e` says the segment is not the object asked for, in `property`.
fn incompatible(e: &Error, property: Property) -> bool {
    matches!(e, Error::Incompatible(m) if m.property == property)
}

#[test]
fn create_open_and_owner_removal() {
    let n = name();
    {
        let owner = Queue::<String>::builder().maxsize(3).create(&n).unwrap();
        assert!(owner.is_owner());
        let mode = std::fs::metadata(format!("/dev/shm/{n}"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only permissions");
        let e = refused(Queue::<String>::builder().create(&n));
        assert!(matches!(e, Error::AlreadyExists(_)), "{e:?}");

        let other = Queue::<String>::builder().open(&n).unwrap();
        assert!(!other.is_owner());
        assert_eq!(other.maxsize(), 3, "the creator's maxsize");
        let third = Queue::<String>::builder().open_or_create(&n).unwrap();
        assert!(!third.is_owner());
        owner.put("one".to_owned()).unwrap();
        assert_eq!(other.get().unwrap(), "one");
        drop(other);
        drop(third);
        assert_eq!(
            own_leftovers(),
            std::slice::from_ref(&n),
            "only the owner removes it"
        );
    }
    assert_no_leftovers();
    assert!(matches!(
        Queue::<String>::builder().open(&n),
        Err(Error::NotFound(_))
    ));
    let created = Queue::<String>::builder().open_or_create(&n).unwrap();
    assert!(created.is_owner());
    created.unlink().unwrap();
    assert_no_leftovers();
}

#[test]
fn a_child_opens_the_queue_by_name() {
    let n = name();
    let q = JoinableQueue::<(u32, String)>::builder()
        .create(&n)
        .unwrap();
    let child_name = n.clone();
    let mut child = Process::new()
        .allow_threads()
        .fork(move || -> ipc_core::Result<()> {
            let q = JoinableQueue::<(u32, String)>::builder().open(&child_name)?;
            for i in 0..100 {
                q.put((i, format!("item {i}")))?;
            }
            Ok(())
        })
        .unwrap();
    for i in 0..100 {
        assert_eq!(q.get_timeout(PATIENCE).unwrap(), (i, format!("item {i}")));
        q.task_done().unwrap();
    }
    q.join_timeout(PATIENCE).unwrap();
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
    drop(q);
    assert_no_leftovers();
}

#[test]
fn wrong_type_kind_version_size_and_garbage_are_refused() {
    let n = name();
    let q = Queue::<u64>::builder().capacity(4096).create(&n).unwrap();
    let e = refused(Queue::<i64>::builder().open(&n));
    assert!(incompatible(&e, Property::ItemType), "{e:?}");
    let e = refused(JoinableQueue::<u64>::builder().open(&n));
    assert!(incompatible(&e, Property::Kind), "{e:?}");
    let e = refused(SimpleQueue::<u64>::builder().open(&n));
    assert!(incompatible(&e, Property::Kind), "{e:?}");
    // Another layout version.
    let raw = SharedMemory::open(&n).unwrap();
    let mut version = [0u8; 4];
    raw.read_at(12, &mut version).unwrap();
    raw.write_at(12, &99u32.to_ne_bytes()).unwrap();
    let e = refused(Queue::<u64>::builder().open(&n));
    assert!(incompatible(&e, Property::Version), "{e:?}");
    raw.write_at(12, &version).unwrap();
    Queue::<u64>::builder().open(&n).unwrap();
    // A header that describes more bytes than the segment has.
    let small = name();
    // (Big enough for the smallest queue: the header, the control words
    // and a 64-byte ring.)
    let copy = SharedMemory::create(&small, 1024).unwrap();
    let mut header = vec![0u8; 512];
    raw.read_at(0, &mut header).unwrap();
    copy.write_at(0, &header).unwrap();
    let e = refused(Queue::<u64>::builder().open(&small));
    assert!(
        matches!(&e, Error::Corrupt(m) if m.property == Property::Size),
        "{e:?}"
    );
    drop(copy);
    drop(raw);
    drop(q);
    // Garbage, and a segment too small to hold any queue.
    let garbage = SharedMemory::create(&n, 8192).unwrap();
    garbage.fill(0, 8192, 0xab).unwrap();
    let e = refused(Queue::<u64>::builder().open(&n));
    assert!(incompatible(&e, Property::Magic), "{e:?}");
    garbage.fill(0, 8192, 0).unwrap();
    garbage.write_at(8, &1u32.to_ne_bytes()).unwrap();
    let e = refused(Queue::<u64>::builder().open(&n));
    assert!(incompatible(&e, Property::Magic), "{e:?}");
    drop(garbage);
    let tiny = SharedMemory::create(&n, 16).unwrap();
    let e = refused(Queue::<u64>::builder().open(&n));
    assert!(incompatible(&e, Property::Size), "{e:?}");
    drop(tiny);
    // A creator that died before publishing (the magic creators write
    // first, nobody holding the creator's lock): refused at once.
    let unpublished = SharedMemory::create(&n, 8192).unwrap();
    unpublished.write_at(0, b"ipcobj\0\0").unwrap();
    let start = Instant::now();
    let e = refused(Queue::<u64>::builder().open(&n));
    assert!(matches!(&e, Error::Abandoned(_)), "{e:?}");
    assert!(start.elapsed() < Duration::from_millis(100));
    drop(unpublished);
    assert_no_leftovers();
}

/// Five processes race to `open_or_create` one name: exactly one creates
/// it, and all five use the same queue.
#[test]
fn open_or_create_races_end_in_one_queue() {
    let n = name();
    let barrier = ipc_shm::Barrier::new(5).unwrap();
    let mut children: Vec<_> = (0..4u32)
        .map(|i| {
            let n = n.clone();
            Process::new()
                .allow_threads()
                .pass("barrier", &barrier)
                .unwrap()
                .fork({
                    let barrier = &barrier;
                    move || -> ipc_core::Result<()> {
                        let q = Queue::<(u32, bool)>::builder().open_or_create(&n)?;
                        q.put((i, q.is_owner()))?;
                        barrier.wait_timeout(PATIENCE).expect("barrier");
                        Ok(())
                    }
                })
                .unwrap()
        })
        .collect();
    let q = Queue::<(u32, bool)>::builder().open_or_create(&n).unwrap();
    let parent_owns = q.is_owner();
    barrier.wait_timeout(PATIENCE).expect("barrier");
    let mut got: Vec<(u32, bool)> = (0..4).map(|_| q.get_timeout(PATIENCE).unwrap()).collect();
    got.sort();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let owners = got.iter().filter(|g| g.1).count() + usize::from(parent_owns);
    assert_eq!(owners, 1, "exactly one creator");
    for child in &mut children {
        assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
    }
    drop(q);
    assert_no_leftovers();
}

#[test]
fn too_large_items_fail_at_once() {
    let q = Queue::<Vec<u8>>::builder()
        .capacity(1024)
        .anonymous()
        .unwrap();
    let start = Instant::now();
    assert!(matches!(
        q.put_bytes(&[0u8; 1024]),
        Err(Error::TooLarge {
            size: 1024,
            limit: 1016
        })
    ));
    let err = q.put(vec![0u8; 2000]).unwrap_err();
    assert!(matches!(err.error, Error::TooLarge { .. }), "{err:?}");
    assert_eq!(err.item.len(), 2000);
    assert!(start.elapsed() < Duration::from_secs(1));
    // The largest item that fits, even behind a wrap.
    q.put_bytes(&[1u8; 100]).unwrap();
    q.get_bytes().unwrap();
    q.put_bytes(&[2u8; 1016]).unwrap();
    assert_eq!(q.get_bytes().unwrap(), [2u8; 1016]);
}

/// A full queue in bytes (not items) blocks the putter until a getter
/// makes room; a getter blocked on an empty queue uses no CPU.
#[test]
fn blocking_on_bytes_and_no_cpu_while_blocked() {
    let q = Queue::<Vec<u8>>::builder()
        .capacity(256)
        .anonymous()
        .unwrap();
    let nothing = Queue::<Vec<u8>>::new().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("q", &q)
        .unwrap()
        .pass("nothing", &nothing)
        .unwrap()
        .fork({
            let (q, nothing) = (&q, &nothing);
            move || -> ipc_core::Result<()> {
                for i in 0..50u8 {
                    q.put_bytes(&[i; 100])?;
                }
                // Then block on an empty queue for 300 ms.
                match nothing.get_bytes_timeout(Duration::from_millis(300)) {
                    Err(Error::Timeout) => Ok(()),
                    other => panic!("{other:?}"),
                }
            }
        })
        .unwrap();
    for i in 0..50u8 {
        assert_eq!(q.get_bytes_timeout(PATIENCE).unwrap(), [i; 100]);
    }
    assert!(child.join_timeout(PATIENCE).unwrap().unwrap().success());
    let usage =
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    let cpu = Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()));
    assert!(
        cpu < Duration::from_millis(150),
        "the child used {cpu:?} of CPU"
    );
}
