//! The locks of this crate link themselves into the kernel's robust futex
//! list of the locking thread, which they share with glibc's robust pthread
//! mutexes. These tests hold several of both, release them out of order,
//! and let the holder die (a process, a thread), then check that the kernel
//! marked exactly the ones still held, and that nothing broke on the way.

use std::ptr::NonNull;

use ipc_core::process::Process;
use ipc_shm::{Error, Lock, LockError, RLock};
use ipc_testkit::LONG;

/// A robust, process-shared glibc mutex in a shared anonymous mapping,
/// inherited by forked children. Drop it only when no thread of this
/// process holds it (its robust list would point into the mapping).
struct GlibcRobustMutex {
    mutex: NonNull<libc::pthread_mutex_t>,
}

impl GlibcRobustMutex {
    fn new() -> GlibcRobustMutex {
        let len = std::mem::size_of::<libc::pthread_mutex_t>();
        // SAFETY: a fresh anonymous shared mapping; no existing memory is
        // touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let mutex = NonNull::new(p.cast::<libc::pthread_mutex_t>()).unwrap();
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised by the first call before the setters
        // use it; `mutex` points at a mapping large enough for a mutex that
        // nothing else uses yet.
        unsafe {
            assert_eq!(libc::pthread_mutexattr_init(attr.as_mut_ptr()), 0);
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            assert_eq!(libc::pthread_mutex_init(mutex.as_ptr(), attr.as_ptr()), 0);
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        GlibcRobustMutex { mutex }
    }

    /// `pthread_mutex_lock`'s return code (0 or `EOWNERDEAD`).
    fn lock(&self) -> i32 {
        // SAFETY: an initialised robust mutex (see `new`) in a mapping that
        // lives as long as `self`.
        unsafe { libc::pthread_mutex_lock(self.mutex.as_ptr()) }
    }

    fn unlock(&self) -> i32 {
        // SAFETY: as in `lock`.
        unsafe { libc::pthread_mutex_unlock(self.mutex.as_ptr()) }
    }

    fn consistent(&self) -> i32 {
        // SAFETY: as in `lock`.
        unsafe { libc::pthread_mutex_consistent(self.mutex.as_ptr()) }
    }
}

/// The address of the first entry of the calling thread's robust list.
fn first_robust_entry() -> usize {
    let mut head: *const usize = std::ptr::null();
    let mut len: libc::size_t = 0;
    // SAFETY: the kernel writes a pointer and a size into the two
    // out-parameters.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut *const usize,
            &mut len as *mut libc::size_t,
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: the head glibc registered for this thread; its first word is
    // the list pointer.
    unsafe { head.read_volatile() & !1 }
}

impl Drop for GlibcRobustMutex {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that length, used by nothing
        // after this.
        unsafe {
            libc::munmap(
                self.mutex.as_ptr().cast(),
                std::mem::size_of::<libc::pthread_mutex_t>(),
            )
        };
    }
}

/// Maps an inaccessible page at `page` unless something is mapped there
/// (`MAP_FIXED_NOREPLACE`); the address, or `MAP_FAILED`.
fn reserve_page(page: usize) -> *mut libc::c_void {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it
    // fails with EEXIST if the page is mapped.
    unsafe {
        libc::mmap(
            page as *mut libc::c_void,
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    }
}

/// Locks and unlocks `other` and a glibc robust mutex in turn: both walk
/// and rewrite this thread's robust list.
fn use_the_robust_list(other: &Lock, glibc: &GlibcRobustMutex) -> ipc_shm::Result<()> {
    for _ in 0..3 {
        drop(other.lock()?);
        assert_eq!(glibc.lock(), 0);
        assert_eq!(glibc.unlock(), 0);
    }
    Ok(())
}

fn assert_owner_died(lock: &Lock, what: &str) {
    match lock.lock() {
        Err(LockError::OwnerDied(died)) => died.into_guard().mark_consistent(),
        other => panic!("{what}: expected OwnerDied, got {other:?}"),
    }
}

#[test]
fn a_holder_dying_with_interleaved_locks_marks_exactly_the_held_ones() {
    let locks: Vec<Lock> = (0..4).map(|_| Lock::new().unwrap()).collect();
    let glibc_held = GlibcRobustMutex::new();
    let glibc_released = GlibcRobustMutex::new();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            // The thread's list, front first, after each step:
            locks[0].acquire()?; // 0
            assert_eq!(glibc_released.lock(), 0); // g- 0
            locks[1].acquire()?; // 1 g- 0
            assert_eq!(glibc_held.lock(), 0); // g+ 1 g- 0
            locks[2].acquire()?; // 2 g+ 1 g- 0
            locks[3].acquire()?; // 3 2 g+ 1 g- 0
                                 // Out of order: from the middle, the back and the front, by
                                 // glibc and by us, each unlinking between the other's entries.
            locks[1].release()?; // 3 2 g+ g- 0
            assert_eq!(glibc_released.unlock(), 0); // 3 2 g+ 0
            locks[0].release()?; // 3 2 g+
            locks[3].release()?; // 2 g+
            locks[0].acquire()?; // 0 2 g+
                                 // Dies holding 0, 2 and glibc_held.
            std::process::exit(0)
        })
        .unwrap();
    assert!(child.join().unwrap().success());
    assert_owner_died(&locks[0], "lock 0");
    assert_owner_died(&locks[2], "lock 2");
    assert_eq!(glibc_held.lock(), libc::EOWNERDEAD);
    assert_eq!(glibc_held.consistent(), 0);
    assert_eq!(glibc_held.unlock(), 0);
    for i in [1, 3] {
        assert!(locks[i].lock().is_ok(), "lock {i} was released");
    }
    assert_eq!(glibc_released.lock(), 0);
    assert_eq!(glibc_released.unlock(), 0);
}

#[test]
fn a_thread_that_ends_holding_a_lock_is_a_dead_holder() {
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            lock.acquire().unwrap();
            rlock.acquire().unwrap();
            rlock.acquire().unwrap();
        });
    });
    assert_owner_died(&lock, "lock");
    match rlock.lock() {
        Err(LockError::OwnerDied(died)) => {
            let guard = died.into_guard();
            guard.mark_consistent();
            // Taken afresh: one release frees it, whatever the dead
            // thread's depth was.
            drop(guard);
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(rlock.try_lock().is_ok());
}

#[test]
fn a_forked_child_does_not_hold_what_its_parent_holds() {
    let lock = Lock::new().unwrap();
    lock.acquire().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            // The child's thread has a new id: the parent's lock is not its.
            assert!(matches!(lock.release(), Err(Error::InvalidArgument(_))));
            assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
            Ok(())
        })
        .unwrap();
    assert!(child.join_timeout(LONG).unwrap().unwrap().success());
    lock.release().unwrap();
    // Still a clean lock for the next child.
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            drop(lock.lock()?);
            Ok(())
        })
        .unwrap();
    assert!(child.join_timeout(LONG).unwrap().unwrap().success());
}

#[test]
fn dropping_a_lock_still_held_without_a_guard_leaves_the_thread_usable() {
    // In a child, so that the mapping kept alive does not outlive the test.
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            let glibc = GlibcRobustMutex::new();
            let forgotten = Lock::new()?;
            forgotten.acquire()?;
            drop(forgotten);
            // The thread's robust list still starts at the forgotten lock,
            // and linking in front of it writes into its mapping: the page
            // must still be mapped (so a new mapping cannot take its place).
            let page = first_robust_entry() & !4095;
            let p = reserve_page(page);
            assert_eq!(p, libc::MAP_FAILED, "the held lock's page was unmapped");
            use_the_robust_list(&Lock::new()?, &glibc)
        })
        .unwrap();
    assert!(child.join_timeout(LONG).unwrap().unwrap().success());
}

#[test]
fn a_forged_lock_word_does_not_make_this_thread_a_holder() {
    // The mutex sits right after the 128-byte header: its word first, its
    // robust list links 24 and 32 bytes in.
    const MUTEX: usize = 128;
    let name = ipc_testkit::name();
    let lock = Lock::create(&name).unwrap();
    drop(lock.lock().unwrap()); // this thread has locked before
    let segment = ipc_shm::SharedMemory::open(&name).unwrap();
    let mut clean = [0u8; 40];
    segment.read_at(MUTEX, &mut clean).unwrap();

    // Another process writes this thread's id into the word and links that
    // point at nothing: neither a release nor a lock may follow them.
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    segment.write_at(MUTEX, &tid.to_ne_bytes()).unwrap();
    segment
        .write_at(MUTEX + 24, &0x10usize.to_ne_bytes())
        .unwrap();
    segment
        .write_at(MUTEX + 32, &0x20usize.to_ne_bytes())
        .unwrap();
    assert!(matches!(lock.release(), Err(Error::InvalidArgument(_))));
    assert!(matches!(lock.try_lock(), Err(LockError::Failed(_))));
    assert!(matches!(
        lock.lock_timeout(std::time::Duration::from_millis(1)),
        Err(LockError::Failed(_))
    ));

    segment.write_at(MUTEX, &clean).unwrap();
    drop(lock.lock().unwrap());
    drop((segment, lock));
    ipc_testkit::assert_no_leftovers();
}

#[test]
fn a_lock_word_rewritten_while_held_leaves_the_robust_list_consistent() {
    // In a child: before the fix, the next lock after unmapping the forged
    // lock's segment wrote through the stale list entry and died of SIGSEGV.
    let mut child = Process::new()
        .allow_threads()
        .fork(|| -> ipc_shm::Result<()> {
            const MUTEX: usize = 128;
            let name = ipc_testkit::name();
            let lock = Lock::create(&name)?;
            let segment = ipc_shm::SharedMemory::open(&name)?;
            let guard = lock.lock()?;
            let page = first_robust_entry() & !4095;
            // Another process takes the word over while we hold the lock.
            segment.write_at(MUTEX, &1u32.to_ne_bytes())?;
            assert!(matches!(guard.unlock(), Err(Error::Io(_))));
            drop((segment, lock)); // unmapped: nobody here holds it now
                                   // Whatever comes to that page next must not be written through
                                   // the list: make any access to it fault.
            let p = reserve_page(page);
            assert_eq!(p as usize, page, "the segment's page is free again");
            let glibc = GlibcRobustMutex::new();
            use_the_robust_list(&Lock::new()?, &glibc)
        })
        .unwrap();
    let status = child.join_timeout(LONG).unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    ipc_testkit::assert_no_leftovers();
}

#[test]
fn a_lock_word_naming_a_thread_that_does_not_exist_is_taken_over_as_a_dead_holder() {
    const MUTEX: usize = 128;
    // A thread id that no thread has now: a child's, after it is reaped.
    let mut child = Process::new().allow_threads().fork(|| 0).unwrap();
    let gone = child.pid();
    child.join().unwrap();
    let name = ipc_testkit::name();
    let lock = Lock::create(&name).unwrap();
    let segment = ipc_shm::SharedMemory::open(&name).unwrap();
    // Another process writes that id into the free lock's word, as if it
    // held the lock; the kernel will never mark it, as nobody dies.
    segment.write_at(MUTEX, &gone.to_ne_bytes()).unwrap();
    let started = std::time::Instant::now();
    match lock.lock_timeout(LONG) {
        Err(LockError::OwnerDied(died)) => died.into_guard().mark_consistent(),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // Noticed at the first nap, not at the timeout.
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert!(lock.try_lock().is_ok());
    drop((segment, lock));
    ipc_testkit::assert_no_leftovers();
}
