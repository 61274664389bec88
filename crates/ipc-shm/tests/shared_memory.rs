//! SharedMemory segments across real processes: create, open, sizes,
//! permissions, who unlinks, errors for missing names and short segments,
//! anonymous segments handed to forked and exec'd children (Python's
//! `_TestSharedMemory` rows).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use ipc_core::process::{has_inherited_handles, inherited, Process};
use ipc_shm::{Array, Error, SharedMemory, Value};
use ipc_testkit::{assert_no_leftovers, exists, name};

#[test]
fn create_open_read_write_and_unlink_on_drop() {
    let n = name();
    let owner = SharedMemory::create(&n, 4097).unwrap();
    assert_eq!(owner.name(), Some(n.as_str()));
    assert_eq!(owner.size(), 4097);
    assert!(owner.is_owner());
    let meta = std::fs::metadata(format!("/dev/shm/{n}")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 4097);
    assert!(owner.to_vec().iter().all(|&b| b == 0));

    owner.write_at(4092, b"howdy").unwrap();
    let other = SharedMemory::open(&n).unwrap();
    assert!(!other.is_owner());
    assert_eq!(other.size(), 4097);
    let mut buf = [0u8; 5];
    other.read_at(4092, &mut buf).unwrap();
    assert_eq!(&buf, b"howdy");
    assert!(matches!(
        other.write_at(4093, b"howdy"),
        Err(Error::InvalidArgument(_))
    ));
    // SAFETY: nothing writes the segment while the slice is alive.
    let bytes = unsafe { other.as_slice() };
    assert_eq!(&bytes[4092..], b"howdy");

    drop(other); // an opener never unlinks
    assert!(exists(&n));
    drop(owner);
    assert!(!exists(&n));
    assert_no_leftovers();
}

#[test]
fn missing_names_existing_names_and_bad_sizes_are_clear_errors() {
    let n = name();
    match SharedMemory::open(&n) {
        Err(Error::NotFound(what)) => assert!(what.contains(&n), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let shm = SharedMemory::create(&n, 100).unwrap();
    match SharedMemory::create(&n, 100) {
        Err(Error::AlreadyExists(what)) => assert!(what.contains(&n), "{what}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match SharedMemory::open_at_least(&n, 101) {
        Err(Error::Incompatible(m)) => assert_eq!(m.property, ipc_core::Property::Size),
        other => panic!("expected a size error, got {other:?}"),
    }
    assert_eq!(SharedMemory::open_at_least(&n, 100).unwrap().size(), 100);
    assert!(matches!(
        SharedMemory::create(&name(), 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        SharedMemory::create("a/b", 10),
        Err(Error::InvalidArgument(_))
    ));

    shm.unlink().unwrap();
    assert!(matches!(shm.unlink(), Err(Error::NotFound(_))));
    assert!(matches!(SharedMemory::open(&n), Err(Error::NotFound(_))));
    drop(shm);
    assert_no_leftovers();
}

#[test]
fn open_or_create_says_which_happened() {
    let n = name();
    let first = SharedMemory::open_or_create(&n, 64).unwrap();
    assert!(first.is_owner());
    let second = SharedMemory::open_or_create(&n, 32).unwrap();
    assert!(!second.is_owner());
    assert_eq!(second.size(), 64);
    assert!(SharedMemory::open_or_create(&n, 65).is_err());
    drop(second);
    drop(first);
    assert_no_leftovers();
}

#[test]
fn auto_names_look_like_pythons_and_are_removed() {
    let shm = SharedMemory::new(10).unwrap();
    let n = shm.name().unwrap().to_owned();
    assert_eq!(n.len(), 12, "{n}");
    assert!(n.starts_with("psm_"));
    assert!(n[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(exists(&n));
    drop(shm);
    assert!(!exists(&n));
}

#[test]
fn keeping_a_segment_and_a_forked_child_dropping_the_owner() {
    let n = name();
    let mut kept = SharedMemory::create(&n, 16).unwrap();
    // A forked child that drops its copy of the owner's handle must not
    // unlink: only the creating process does.
    let mut child = Process::new()
        .allow_threads()
        .fork({
            let kept = &kept;
            move || kept.write_at(0, b"child")
        })
        .unwrap();
    assert!(child.join().unwrap().success());
    assert!(exists(&n));
    kept.set_unlink_on_drop(false);
    drop(kept);
    assert!(exists(&n));
    let reopened = SharedMemory::open(&n).unwrap();
    let mut buf = [0u8; 5];
    reopened.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
    reopened.unlink().unwrap();
    assert_no_leftovers();
}

#[test]
fn anonymous_segments_leave_nothing_in_dev_shm() {
    let shm = SharedMemory::anonymous(1 << 20).unwrap();
    assert_eq!(shm.name(), None);
    assert!(matches!(shm.unlink(), Err(Error::Unsupported(_))));
    shm.fill(0, 1 << 20, 0xab).unwrap();
    let mut child = Process::new()
        .allow_threads()
        .pass("shm", &shm)
        .unwrap()
        .fork({
            let shm = &shm;
            move || {
                let mut b = [0u8; 1];
                shm.read_at((1 << 20) - 1, &mut b)?;
                assert_eq!(b[0], 0xab);
                shm.write_at(0, b"anon")
            }
        })
        .unwrap();
    assert!(child.join().unwrap().success());
    let mut buf = [0u8; 4];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"anon");
    assert_no_leftovers();
}

#[test]
fn a_segment_excluded_from_forks_is_not_mapped_in_a_forked_child() {
    let shm = SharedMemory::anonymous(4096).unwrap();
    shm.exclude_from_forks().unwrap();
    // The parent's mapping is not in the child: touching it is a fault.
    let mut child = Process::new()
        .allow_threads()
        .fork({
            let shm = &shm;
            move || shm.write_at(0, b"reached")
        })
        .unwrap();
    let status = child.join().unwrap();
    let segfault = nix::sys::signal::Signal::SIGSEGV as i32;
    assert_eq!(status.signal(), Some(segfault), "{status:?}");
    let mut buf = [0u8; 7];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 7]);
    assert_no_leftovers();
}

/// The exec'd half of `exec_children_rebuild_inherited_objects`: does
/// nothing unless started by it.
#[test]
fn exec_child_entry() {
    if !has_inherited_handles() {
        return;
    }
    let shm: SharedMemory = inherited("shm").unwrap();
    let named: SharedMemory = inherited("named").unwrap();
    let value: Value<f64> = inherited("value").unwrap();
    let array: Array<i32> = inherited("array").unwrap();
    shm.write_at(0, b"exec").unwrap();
    named.write_at(0, b"name").unwrap();
    value.set(2.5).unwrap();
    for x in array.lock().unwrap().iter_mut() {
        *x *= 10;
    }
}

#[test]
fn exec_children_rebuild_inherited_objects() {
    let shm = SharedMemory::anonymous(8).unwrap();
    let n = name();
    let named = SharedMemory::create(&n, 8).unwrap();
    let value = Value::new(0.0f64).unwrap();
    let array = Array::from_slice(&[1i32, 2, 3]).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        "exec_child_entry",
        "--nocapture",
        "--test-threads=1",
    ]);
    let mut child = Process::new()
        .pass("shm", &shm)
        .unwrap()
        .pass("named", &named)
        .unwrap()
        .pass("value", &value)
        .unwrap()
        .pass("array", &array)
        .unwrap()
        .exec(command)
        .unwrap();
    assert!(child.join().unwrap().success());
    let mut buf = [0u8; 4];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"exec");
    named.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"name");
    assert_eq!(value.get().unwrap(), 2.5);
    assert_eq!(array.to_vec().unwrap(), [10, 20, 30]);
    assert!(exists(&n), "the exec'd opener did not unlink");
    drop(named);
    assert_no_leftovers();
}

#[test]
fn a_64_mib_segment_round_trips() {
    let size = 64 << 20;
    let shm = SharedMemory::anonymous(size).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    shm.write_at(0, &data).unwrap();
    assert!(shm.to_vec() == data);
}
