//! Value, Array and their raw forms across real processes (Python's
//! `_TestValue` and `_TestArray` rows), the layout checks on open (wrong
//! type, length, kind, version, size, garbage), and four processes doing a
//! million locked increments each.

use bytemuck::{Pod, Zeroable};
use ipc_core::process::Process;
use ipc_core::Property;
use ipc_shm::{Array, Error, LockError, RawArray, RawValue, SharedMemory, Value};
use ipc_testkit::{assert_no_leftovers, name};

/// The property an `Incompatible` error is about, or a panic.
fn incompatible<T: std::fmt::Debug>(r: ipc_shm::Result<T>) -> Property {
    match r {
        Err(Error::Incompatible(m)) => m.property,
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

/// The property a `Corrupt` error is about, or a panic.
fn corrupt<T: std::fmt::Debug>(r: ipc_shm::Result<T>) -> Property {
    match r {
        Err(Error::Corrupt(m)) => m.property,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn values_of_several_types_set_by_a_child_are_seen_by_the_parent() {
    let d = Value::new(0.0f64).unwrap();
    let i = Value::new(0i32).unwrap();
    let h = Value::new(0i16).unwrap();
    let q = Value::new(0i64).unwrap();
    let c = Value::new(b'x').unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            d.set(1.25)?;
            i.set(-7)?;
            h.set(3)?;
            q.set(1 << 40)?;
            c.set(b'c')
        })
        .unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(d.get().unwrap(), 1.25);
    assert_eq!(i.get().unwrap(), -7);
    assert_eq!(h.get().unwrap(), 3);
    assert_eq!(q.get().unwrap(), 1 << 40);
    assert_eq!(c.get().unwrap(), b'c');
}

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
    tag: u32,
    _pad: u32,
}

#[test]
fn named_values_hold_structs_and_are_removed_by_their_creator() {
    let n = name();
    let p = Point {
        x: 1.0,
        y: 2.0,
        tag: 7,
        _pad: 0,
    };
    let owner = Value::create(&n, p).unwrap();
    let other = Value::<Point>::open(&n).unwrap();
    assert_eq!(other.get().unwrap(), p);
    other.lock().unwrap().tag = 8;
    assert_eq!(owner.get().unwrap().tag, 8);
    let same = Value::open_or_create(&n, Point::zeroed()).unwrap();
    assert!(!same.is_owner());
    assert_eq!(same.get().unwrap().tag, 8);
    drop((other, same));
    drop(owner);
    assert_no_leftovers();
}

#[test]
fn arrays_index_slice_and_are_updated_by_a_child() {
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>()).unwrap();
    assert_eq!(arr.len(), 10);
    assert_eq!(arr.get(3).unwrap(), 3);
    assert!(matches!(arr.get(10), Err(Error::InvalidArgument(_))));
    assert!(matches!(arr.set(10, 0), Err(Error::InvalidArgument(_))));
    assert!(arr.copy_from_slice(&[1, 2]).is_err());
    // The child computes prefix sums in place, as in Python's test.
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            let mut guard = arr.lock()?;
            for i in 1..guard.len() {
                guard[i] += guard[i - 1];
            }
            Ok(())
        })
        .unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(arr.to_vec().unwrap(), [0, 1, 3, 6, 10, 15, 21, 28, 36, 45]);
    arr.copy_from_slice(&[9; 10]).unwrap();
    assert_eq!(arr.to_vec().unwrap(), [9; 10]);
    for _ in 0..3 {
        let zeroed = Array::<i32>::zeroed(10).unwrap();
        assert_eq!(zeroed.to_vec().unwrap(), [0; 10]);
    }
    assert!(Array::<u8>::zeroed(0).unwrap().is_empty());
}

#[test]
fn raw_values_and_arrays_have_no_lock() {
    let n = name();
    let v = RawValue::create(&n, 1.5f32).unwrap();
    let a = RawArray::from_slice(&[1u64, 2, 3]).unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            v.set(v.get() * 2.0);
            a.set(2, 30)?;
            a.copy_from_slice(&[a.get(0)? * 10, a.get(1)? * 10, a.get(2)? * 10])
        })
        .unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(RawValue::<f32>::open(&n).unwrap().get(), 3.0);
    assert_eq!(a.to_vec(), [10, 20, 300]);
    let mut out = [0u64; 3];
    a.copy_to_slice(&mut out).unwrap();
    assert_eq!(out, [10, 20, 300]);
    // SAFETY: no other process or handle touches the array meanwhile.
    unsafe { a.as_mut_slice()[0] = 1 };
    // SAFETY: as above.
    assert_eq!(unsafe { a.as_slice() }, [1, 20, 300]);
    drop(v);
    assert_no_leftovers();
}

#[test]
fn opening_with_another_type_length_or_kind_is_refused() {
    let n = name();
    let _v = Value::create(&n, 5u64).unwrap();
    assert_eq!(incompatible(Value::<f64>::open(&n)), Property::ItemType);
    assert_eq!(incompatible(Value::<u32>::open(&n)), Property::ItemType);
    assert_eq!(incompatible(RawValue::<u64>::open(&n)), Property::Kind);
    assert_eq!(incompatible(Array::<u64>::open(&n, 1)), Property::Kind);
    assert_eq!(incompatible(ipc_shm::Lock::open(&n)), Property::Kind);

    let a = name();
    let _arr = Array::create(&a, &[1i32, 2, 3]).unwrap();
    assert_eq!(
        Array::<i32>::open(&a, 3).unwrap().to_vec().unwrap(),
        [1, 2, 3]
    );
    assert_eq!(incompatible(Array::<i32>::open(&a, 4)), Property::Length);
    assert_eq!(incompatible(RawArray::<i32>::open(&a, 3)), Property::Kind);
    assert!(matches!(
        Value::<u64>::open(&name()),
        Err(Error::NotFound(_))
    ));
    drop((_v, _arr));
    assert_no_leftovers();
}

#[test]
fn garbage_short_and_foreign_version_segments_are_refused() {
    // A segment full of garbage.
    let g = name();
    let garbage = SharedMemory::create(&g, 4096).unwrap();
    garbage
        .write_at(0, &(0..4096).map(|i| (i * 7 + 3) as u8).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(incompatible(Value::<u64>::open(&g)), Property::Magic);

    // Too small to hold a header.
    let s = name();
    let _small = SharedMemory::create(&s, 64).unwrap();
    assert_eq!(incompatible(Value::<u64>::open(&s)), Property::Size);

    // A valid header with another layout version.
    let v = name();
    let value = Value::create(&v, 1u64).unwrap();
    let raw = SharedMemory::open(&v).unwrap();
    let version = raw.to_vec()[12..16].to_vec();
    raw.write_at(12, &99u32.to_ne_bytes()).unwrap();
    assert_eq!(incompatible(Value::<u64>::open(&v)), Property::Version);
    raw.write_at(12, &version).unwrap();
    assert_eq!(Value::<u64>::open(&v).unwrap().get().unwrap(), 1);

    // A header that describes more data than the segment holds (the
    // first 200 bytes of a 100-element array).
    let a = name();
    let array = Array::<u64>::create_zeroed(&a, 100).unwrap();
    let t = name();
    let copy = SharedMemory::create(&t, 200).unwrap();
    copy.write_at(0, &SharedMemory::open(&a).unwrap().to_vec()[..200])
        .unwrap();
    assert_eq!(corrupt(Array::<u64>::open(&t, 100)), Property::Size);
    // ... or with a length field that disagrees with the rest.
    copy.write_at(40, &1000u64.to_ne_bytes()).unwrap();
    assert_eq!(incompatible(Array::<u64>::open(&t, 100)), Property::Length);
    copy.write_at(64, &0u64.to_ne_bytes()).unwrap();
    assert_eq!(corrupt(Array::<u64>::open(&t, 1000)), Property::Header);

    drop((garbage, _small, value, raw, array, copy));
    assert_no_leftovers();
}

/// The bytes of a complete, published `Value<u64>` holding `value`, as a
/// creator leaves them (the value itself is removed again).
fn complete_value_bytes(value: u64) -> Vec<u8> {
    let v = name();
    let complete = Value::create(&v, value).unwrap();
    let bytes = SharedMemory::open(&v).unwrap().to_vec();
    drop(complete);
    bytes
}

#[test]
fn a_zeroed_segment_is_no_object_and_an_unpublished_one_is_abandoned() {
    // Zeros: not an object of this workspace at all, refused at once.
    let n = name();
    let zeros = SharedMemory::create(&n, 4096).unwrap();
    assert_eq!(incompatible(Value::<u64>::open(&n)), Property::Magic);

    // A header its creator began (the magic creators write first) and never
    // published, with nobody holding the creator's lock: the creator died.
    let header = SharedMemory::open(&{
        let bytes = complete_value_bytes(7);
        let copy = name();
        SharedMemory::create(&copy, bytes.len())
            .unwrap()
            .set_unlink_on_drop(false);
        let shm = SharedMemory::open(&copy).unwrap();
        shm.write_at(0, &bytes).unwrap();
        copy
    })
    .unwrap();
    let unfinished = header.name().unwrap().to_owned();
    header.write_at(0, b"ipcobj\0\0").unwrap(); // the creator's magic
    header.write_at(8, &0u32.to_ne_bytes()).unwrap(); // not ready
    let started = std::time::Instant::now();
    assert!(matches!(
        Value::<u64>::open(&unfinished),
        Err(Error::Abandoned(what)) if what.contains(&unfinished)
    ));
    assert!(started.elapsed() < std::time::Duration::from_millis(100));
    // open_or_create reclaims the name and makes a fresh value.
    let reclaimed = Value::open_or_create(&unfinished, 9u64).unwrap();
    assert!(reclaimed.is_owner());
    assert_eq!(reclaimed.get().unwrap(), 9);
    drop((zeros, header, reclaimed));
    assert_no_leftovers();
}

#[test]
fn four_processes_do_a_million_locked_increments_each() {
    let counter = Value::new(0u64).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Process::new()
                .allow_threads()
                .pass("counter", &counter)
                .unwrap()
                .fork(|| -> ipc_shm::Result<()> {
                    for _ in 0..1_000_000 {
                        *counter.lock()? += 1;
                    }
                    Ok(())
                })
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.join().unwrap().success());
    }
    assert_eq!(counter.get().unwrap(), 4_000_000);
}

#[test]
fn a_value_lock_times_out_while_another_process_holds_it() {
    let v = Value::new(0u32).unwrap();
    let held = ipc_shm::Event::new().unwrap();
    let release = ipc_shm::Event::new().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            let _guard = v.lock()?;
            held.set();
            release.wait();
            Ok(())
        })
        .unwrap();
    assert!(held.wait_timeout(ipc_testkit::LONG));
    let started = std::time::Instant::now();
    assert!(matches!(
        v.lock_timeout(std::time::Duration::from_millis(100)),
        Err(LockError::Timeout)
    ));
    assert!(started.elapsed() >= std::time::Duration::from_millis(100));
    assert!(matches!(v.try_lock(), Err(LockError::WouldBlock)));
    release.set();
    assert!(child.join().unwrap().success());
    assert!(v.try_lock().is_ok());
}

/// Makes `/dev/shm/<name>` empty and owner-only, as a creator killed
/// between `shm_open` and sizing leaves it.
fn empty_leftover(name: &str) {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    drop(
        nix::sys::mman::shm_open(
            format!("/{name}").as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .unwrap(),
    );
}

#[test]
fn an_empty_leftover_is_abandoned_once_old_enough_and_reclaimed() {
    // `open` waits out the moment a live creator may still be in, then
    // says the creator is gone.
    let n = name();
    empty_leftover(&n);
    let started = std::time::Instant::now();
    assert!(matches!(Value::<u64>::open(&n), Err(Error::Abandoned(_))));
    assert!(started.elapsed() < std::time::Duration::from_millis(100));
    // `open_or_create` reclaims it, whatever its age.
    let v = Value::open_or_create(&n, 5u64).unwrap();
    assert!(v.is_owner());
    assert_eq!(v.get().unwrap(), 5);
    drop(v);
    // `remove_if_orphaned` spares a young one and removes it once old.
    let m = name();
    empty_leftover(&m);
    let deadline = std::time::Instant::now() + ipc_testkit::PATIENCE;
    let mut spared_while_young = false;
    loop {
        if ipc_shm::remove_if_orphaned(&m).unwrap() {
            break;
        }
        spared_while_young = true;
        assert!(std::time::Instant::now() < deadline, "never removed");
        std::thread::yield_now();
    }
    assert!(
        spared_while_young,
        "removed at once: young leftovers must be spared"
    );
    assert_no_leftovers();
}

#[test]
fn a_creator_killed_between_the_magic_and_the_state_left_an_abandoned_object() {
    // `publish` stores the published magic, then the state word: a creator
    // can die between the two. Made here from a complete value's bytes with
    // the state word back at 0, under a lock-free name.
    let bytes = complete_value_bytes(7);
    let n = name();
    let mut copy = SharedMemory::create(&n, bytes.len()).unwrap();
    copy.set_unlink_on_drop(false);
    copy.write_at(0, &bytes).unwrap();
    copy.write_at(8, &0u32.to_ne_bytes()).unwrap(); // the state, not yet ready
    assert!(matches!(Value::<u64>::open(&n), Err(Error::Abandoned(_))));
    let reclaimed = Value::open_or_create(&n, 9u64).unwrap();
    assert!(reclaimed.is_owner());
    assert_eq!(reclaimed.get().unwrap(), 9);
    drop((copy, reclaimed));
    assert_no_leftovers();
}

#[test]
fn an_opener_that_looked_before_the_creator_sized_the_segment_sees_it_whole() {
    use std::os::fd::AsFd;
    // The bytes of a complete value, and its header as a creator writes it
    // first (the initialising magic, state 0).
    let bytes = complete_value_bytes(7);
    let mut header = bytes[..128].to_vec();
    header[..8].copy_from_slice(b"ipcobj\0\0");
    header[8..12].copy_from_slice(&0u32.to_ne_bytes());

    // A creator at work: the name made, locked, the header written, not
    // yet sized.
    let n = name();
    let fd = nix::sys::mman::shm_open(
        format!("/{n}").as_str(),
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let creating = nix::fcntl::Flock::lock(fd, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    nix::sys::uio::pwrite(creating.as_fd(), &header, 0).unwrap();

    let opened = std::thread::scope(|s| {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let n = &n;
        let opener = s.spawn(move || {
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            let tid: u32 = me.file_name().unwrap().to_str().unwrap().parse().unwrap();
            tid_tx.send(tid).unwrap();
            Value::<u64>::open(n).map(|v| v.get())
        });
        // Once the opener waits for the creator (it has mapped the header),
        // the creator sizes, fills and publishes the segment, then lets go.
        ipc_testkit::wait_until_asleep(tid_rx.recv().unwrap());
        nix::unistd::ftruncate(creating.as_fd(), bytes.len() as i64).unwrap();
        let mut published = bytes.clone();
        published[8..12].copy_from_slice(&0u32.to_ne_bytes());
        nix::sys::uio::pwrite(creating.as_fd(), &published, 0).unwrap();
        nix::sys::uio::pwrite(creating.as_fd(), &1u32.to_ne_bytes(), 8).unwrap();
        drop(creating);
        opener.join().unwrap()
    });
    assert_eq!(opened.unwrap().unwrap(), 7);
    SharedMemory::open(&n).unwrap().unlink().unwrap();
    assert_no_leftovers();
}
