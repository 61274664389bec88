//! Every kind is made the same four ways through its builder: anonymous,
//! create, open, open_or_create; open checks the kind (and an array's
//! length), and open_or_create says through `is_owner` which happened.

use ipc_core::Error;
use ipc_shm::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, RawArray, RawValue, Semaphore,
    Value,
};
use ipc_testkit::{assert_no_leftovers, name};

/// Runs the four ways for one kind: `$builder` is an expression that makes
/// a fresh builder.
macro_rules! four_ways {
    ($builder:expr) => {{
        let anonymous = $builder.anonymous().unwrap();
        assert!(!anonymous.is_owner() && anonymous.name().is_none());
        let n = name();
        assert!(matches!($builder.open(&n), Err(Error::NotFound(_))));
        let created = $builder.open_or_create(&n).unwrap();
        assert!(created.is_owner());
        assert!(matches!($builder.create(&n), Err(Error::AlreadyExists(_))));
        let opened = $builder.open(&n).unwrap();
        assert!(!opened.is_owner());
        let again = $builder.open_or_create(&n).unwrap();
        assert!(!again.is_owner());
        drop((opened, again, created));
        let made = $builder.create(&n).unwrap();
        assert!(made.is_owner());
        drop(made);
    }};
}

#[test]
fn every_kind_is_built_the_same_four_ways() {
    four_ways!(Value::builder(1u64));
    four_ways!(RawValue::builder(1u16));
    four_ways!(Array::builder(&[1i32, 2, 3]));
    four_ways!(RawArray::<u8>::builder_zeroed(9));
    four_ways!(Lock::builder());
    four_ways!(RLock::builder());
    four_ways!(Semaphore::builder(2));
    four_ways!(BoundedSemaphore::builder(2));
    four_ways!(Event::builder());
    four_ways!(Condition::builder());
    four_ways!(Barrier::builder(3));
    assert_no_leftovers();
}

#[test]
fn builders_check_what_they_open() {
    let n = name();
    let array = Array::<u32>::builder_zeroed(4).create(&n).unwrap();
    assert_eq!(array.to_vec().unwrap(), [0u32; 4]);
    assert!(matches!(
        Array::<u32>::builder_zeroed(5).open(&n),
        Err(Error::Incompatible(_))
    ));
    assert!(matches!(
        Array::<u32>::builder(&[1, 2, 3, 4]).open_or_create(&n),
        Ok(a) if a.to_vec().unwrap() == [0; 4]
    ));
    assert!(matches!(
        Lock::builder().open(&n),
        Err(Error::Incompatible(_))
    ));
    assert!(matches!(
        Barrier::builder(0).anonymous(),
        Err(Error::InvalidArgument(_))
    ));
    drop(array);
    assert_no_leftovers();
}
