//! The pool across real worker processes: map and apply, imap in and out of
//! order, apply_async, an initializer, a task limit per worker, a worker
//! killed in the middle of a task (that task alone fails, with the worker
//! and the signal; every other task completes and the pool keeps working),
//! one killed while idle, one that sends garbage (or a notice with nothing
//! in its mailbox), a task that panics, terminate, and a parent with other
//! threads; pieces sent while every worker is busy (the dispatcher asleep
//! for closes only), and pieces sent as the dispatcher closes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ipc_core::spawn::{batch, ChildFailure, StartMethod};
use ipc_core::Error;
use ipc_pool::Pool;
use ipc_testkit::{LONG, PATIENCE};

ipc_core::spawn_harness!();

fn square(x: u64) -> u64 {
    x * x
}

/// Squares, except that 13 kills its worker with SIGKILL and 14 aborts.
fn square_or_die(x: u64) -> u64 {
    match x {
        13 => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            unreachable!("SIGKILL ends the process");
        }
        14 => std::process::abort(),
        _ => x * x,
    }
}

fn square_or_panic(x: u64) -> u64 {
    assert!(x != 5, "five is not welcome");
    x * x
}

#[test]
fn map_and_apply_run_in_the_workers() {
    // Another thread in the parent is no obstacle: workers are spawned.
    let beside = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(100)));
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.processes(), 2);
    let squares = pool.map(ipc_core::entry!(square), 0..100u64).unwrap();
    assert_eq!(squares, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(pool.apply(ipc_core::entry!(square), &12).unwrap(), 144);
    assert!(pool
        .map(ipc_core::entry!(square), Vec::<u64>::new())
        .unwrap()
        .is_empty());
    pool.close().unwrap();
    pool.join().unwrap();
    beside.join().unwrap();
}

/// A type named as a marker of `entry!`'s once was: the macro's own names
/// must not hide the names in the path it is given.
struct Loop;

impl Loop {
    fn twice(x: u32) -> u32 {
        x * 2
    }
}

#[test]
fn an_entry_given_by_any_path_maps() {
    let pool = Pool::new(1).unwrap();
    let doubled = pool
        .map(ipc_core::entry!(Loop::twice), [3u32, 400])
        .unwrap();
    assert_eq!(doubled, [6, 800]);
    pool.close().unwrap();
    pool.join().unwrap();
}

/// A pool of two workers started by `method`. libtest runs each test on a
/// thread of its own, beside its parked main thread: the hazard a pool on
/// fork must accept.
fn pool_on(method: StartMethod) -> Pool {
    let builder = Pool::builder().processes(2).start_method(method);
    match method {
        StartMethod::Fork => builder.allow_threads(),
        _ => builder,
    }
    .build()
    .unwrap()
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_alone() {
    for method in [
        StartMethod::Spawn,
        StartMethod::Forkserver,
        StartMethod::Fork,
    ] {
        a_worker_killed_mid_task_fails_that_task_alone_on(pool_on(method));
    }
}

#[test]
fn a_pool_on_fork_must_accept_the_threads_hazard() {
    let refused = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Fork)
        .build();
    assert!(matches!(refused, Err(Error::InvalidArgument(_))));
}

fn a_worker_killed_mid_task_fails_that_task_alone_on(pool: Pool) {
    // Python's chunks (5 tasks), then one task a chunk, where the task
    // after the dying one is a chunk of its own, which must run elsewhere,
    // not fail.
    for chunksize in [None, Some(1)] {
        let results = match chunksize {
            None => pool.map_each(ipc_core::entry!(square_or_die), 0..40u64),
            Some(size) => pool
                .chunksize(size)
                .map_each(ipc_core::entry!(square_or_die), 0..40u64),
        };
        check_only_the_dying_tasks_failed(&results.unwrap());
    }
    // Replacements took the dead workers' places.
    assert_eq!(pool.processes(), 2);
    assert_eq!(pool.map(ipc_core::entry!(square), 0..10u64).unwrap()[9], 81);
    // `map` reports the first failure in item order.
    assert!(matches!(
        pool.map(ipc_core::entry!(square_or_die), 10..15u64),
        Err(Error::Child(_))
    ));
}

/// Checks the outcomes of `square_or_die` over `0..n`: 13 and 14 failed
/// with the signals that ended their workers, every other task has its
/// square.
fn check_only_the_dying_tasks_failed(results: &[ipc_core::Result<u64>]) {
    for (x, result) in results.iter().enumerate() {
        let x = x as u64;
        match (x, result) {
            (13, Err(Error::Child(f))) => assert!(
                matches!(
                    **f,
                    ChildFailure::WorkerDied {
                        signal: Some(9),
                        ..
                    }
                ),
                "{f}"
            ),
            (14, Err(Error::Child(f))) => assert!(
                matches!(
                    **f,
                    ChildFailure::WorkerDied {
                        signal: Some(6),
                        ..
                    }
                ),
                "{f}"
            ),
            (_, Ok(y)) => assert_eq!(*y, x * x),
            (_, other) => panic!("task {x}: {other:?}"),
        }
    }
}

#[test]
fn a_panicking_task_fails_alone_with_its_message() {
    let pool = Pool::new(2).unwrap();
    let results = pool
        .map_each(ipc_core::entry!(square_or_panic), 0..10u64)
        .unwrap();
    for (x, result) in results.into_iter().enumerate() {
        match result {
            Ok(y) => assert_eq!(y, (x * x) as u64),
            Err(Error::Child(f)) => {
                assert_eq!(x, 5);
                assert!(matches!(*f, ChildFailure::Panicked(ref m) if m == "five is not welcome"));
            }
            Err(e) => panic!("{x}: {e}"),
        }
    }
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
}

fn worker_pid(_: u64) -> u32 {
    std::process::id()
}

/// Waits for the event named in the task to be set, then returns `x`: lets
/// a test hold a task in a worker until it chooses.
fn held(task: (u64, String)) -> u64 {
    let release = ipc_shm::Event::open(&task.1).unwrap();
    assert!(
        release.wait_timeout(Duration::from_secs(20)),
        "never released"
    );
    task.0
}

#[test]
fn imap_yields_in_order_and_imap_unordered_as_ready() {
    let pool = Pool::new(2).unwrap();
    let squares: Vec<u64> = pool
        .imap(ipc_core::entry!(square), 0..50u64)
        .collect::<ipc_core::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    // Unordered: the same results, as they come.
    let mut any: Vec<u64> = pool
        .chunksize(7)
        .imap_unordered(ipc_core::entry!(square), 0..50u64)
        .collect::<ipc_core::Result<_>>()
        .unwrap();
    any.sort_unstable();
    assert_eq!(any, squares);
    // Lazy: an endless input is taken only as far as it is read.
    let mut endless = pool.imap(ipc_core::entry!(square), 0u64..);
    assert_eq!(endless.nth(99).unwrap().unwrap(), 99 * 99);
    drop(endless);
    // A task that panics is an error in its place; the rest go on.
    let results: Vec<_> = pool
        .imap(ipc_core::entry!(square_or_panic), 3..8u64)
        .collect();
    assert!(
        matches!(&results[2], Err(Error::Child(f)) if matches!(**f, ChildFailure::Panicked(_)))
    );
    assert_eq!(results[3].as_ref().unwrap(), &36);
}

fn noop(x: u64) -> u64 {
    x
}

/// Waits, at most 20 s, for the event `name` to be set; whether it was.
fn wait_for_event(name: String) -> bool {
    ipc_shm::Event::open(&name).is_ok_and(|event| event.wait_timeout(Duration::from_secs(20)))
}

fn set_event(name: String) -> bool {
    ipc_shm::Event::open(&name).map(|event| event.set()).is_ok()
}

/// A task that takes `ms` milliseconds of the worker's time.
fn take_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn a_task_another_waits_for_is_not_held_up_behind_it() {
    let pool = Pool::new(2).unwrap();
    // Quick maps first, as a busy pool would have run: a pool that sent
    // such workers their next task early would have to take it back here.
    for _ in 0..5 {
        pool.chunksize(1)
            .map(ipc_core::entry!(noop), 0..50u64)
            .unwrap();
    }
    let name = ipc_testkit::name();
    let event = ipc_shm::Event::create(&name).unwrap();
    let waiter = pool
        .apply_async(ipc_core::entry!(wait_for_event), &name)
        .unwrap();
    let busy = pool.apply_async(ipc_core::entry!(take_ms), &200).unwrap();
    // Whichever worker it was meant for, it must run on the other one
    // once that is free, and end the wait.
    let setter = pool
        .apply_async(ipc_core::entry!(set_event), &name)
        .unwrap();
    assert!(setter.get().unwrap());
    assert!(
        waiter.get().unwrap(),
        "the waiter's event was set while it waited"
    );
    assert!(event.is_set());
    assert_eq!(busy.get().unwrap(), 200);
}

#[test]
fn apply_async_is_ready_when_its_task_is_done() {
    let pool = Pool::new(2).unwrap();
    let name = ipc_testkit::name();
    let release = ipc_shm::Event::create(&name).unwrap();
    let mut pending = pool
        .apply_async(ipc_core::entry!(held), &(7, name.clone()))
        .unwrap();
    assert!(!pending.ready());
    assert!(matches!(
        pending.get_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    // The other worker is free meanwhile.
    assert_eq!(pool.apply(ipc_core::entry!(square), &9).unwrap(), 81);
    release.set();
    assert_eq!(pending.get_timeout(Duration::from_secs(20)).unwrap(), 7);
    assert!(pending.ready());
    // A task still pending when the pool is terminated fails at once.
    release.clear();
    let orphan = pool
        .apply_async(ipc_core::entry!(held), &(1, name))
        .unwrap();
    pool.terminate();
    assert!(matches!(orphan.get(), Err(Error::Closed)));
}

static SETTING: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn set_up(value: u64) {
    SETTING.set(value).unwrap();
}

fn add_setting(x: u64) -> u64 {
    x + SETTING.get().expect("the initializer ran first")
}

fn refuse_setup(_: u64) {
    panic!("no database here");
}

#[test]
fn an_initializer_runs_once_in_each_worker() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(ipc_core::entry!(set_up), &1000)
        .build()
        .unwrap();
    assert_eq!(
        pool.map(ipc_core::entry!(add_setting), 0..20u64).unwrap()[19],
        1019
    );
    // One that panics fails the tasks with its message, and no task hangs.
    let pool = Pool::builder()
        .processes(1)
        .initializer(ipc_core::entry!(refuse_setup), &0)
        .build()
        .unwrap();
    let results = pool.map_each(ipc_core::entry!(square), 0..3u64).unwrap();
    for result in results {
        assert!(
            matches!(&result, Err(Error::Child(f)) if f.to_string().contains("no database here")),
            "{result:?}"
        );
    }
}

/// Sets the event `name`, then fails: an initializer that never works.
fn announce_and_refuse(name: String) {
    ipc_shm::Event::open(&name).unwrap().set();
    panic!("no database here");
}

#[test]
fn a_worker_whose_initializer_fails_is_not_started_again_while_idle() {
    let name = ipc_testkit::name();
    let started = ipc_shm::Event::create(&name).unwrap();
    let pool = Pool::builder()
        .processes(1)
        .initializer(ipc_core::entry!(announce_and_refuse), &name)
        .build()
        .unwrap();
    assert!(started.wait_timeout(PATIENCE), "the first worker started");
    started.clear();
    // Nothing to do: its death is seen, and no other worker is started
    // (a pool that started one would start them without end).
    assert!(
        !started.wait_timeout(Duration::from_millis(300)),
        "a worker started with no work to do"
    );
    // Work starts one, whose failure fails the work.
    let result = pool.apply(ipc_core::entry!(square), &3);
    assert!(
        matches!(&result, Err(Error::Child(f)) if f.to_string().contains("no database here")),
        "{result:?}"
    );
}

#[test]
fn a_worker_retires_after_its_task_limit() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids = pool.map(ipc_core::entry!(worker_pid), 0..30u64).unwrap();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert!(distinct.len() >= 10, "30 tasks, 3 per worker: {distinct:?}");
    for pid in &distinct {
        let ran = pids.iter().filter(|p| *p == pid).count();
        assert!(ran <= 3, "worker {pid} ran {ran} tasks: {pids:?}");
    }
    assert!(matches!(
        Pool::builder().max_tasks_per_child(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn an_idle_worker_killed_is_replaced() {
    let pool = Pool::new(1).unwrap();
    let pid = pool.apply(ipc_core::entry!(worker_pid), &0).unwrap();
    kill(pid);
    let next = pool.apply(ipc_core::entry!(worker_pid), &0).unwrap();
    assert_ne!(next, pid);
}

/// Writes `bytes` on every socket this worker has.
fn write_on_sockets(bytes: &[u8]) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    for fd in 3..64 {
        let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if is_socket {
            // SAFETY: the descriptor is open (its /proc link exists); ManuallyDrop
            // keeps it open for its owner.
            let mut socket = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
            let _ = socket.write_all(bytes);
        }
    }
}

/// Writes a frame of garbage on every socket this worker has: the pool
/// must take it for a broken worker.
fn babble(x: u64) -> u64 {
    write_on_sockets(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]);
    x
}

/// Writes the start of a frame (a header announcing 100 bytes, and one of
/// them) on every socket this worker has, then is [`held_started`].
fn stall_mid_frame(task: (u64, String, String)) -> u64 {
    write_on_sockets(&[0, 0, 0, 100, 7]);
    held_started(task)
}

#[test]
fn a_worker_stalled_mid_frame_holds_up_neither_the_pool_nor_its_end() {
    let pool = Pool::new(2).unwrap();
    let hold = Hold::new();
    let mut stalled = pool
        .apply_async(ipc_core::entry!(stall_mid_frame), &hold.task(1))
        .unwrap();
    hold.wait_started();
    let nine = bounded("a task beside a worker stalled mid-frame", move || {
        let nine = pool
            .apply(ipc_core::entry!(square), &3)
            .map_err(|e| e.to_string());
        pool.terminate();
        nine
    });
    assert_eq!(nine, Ok(9));
    assert!(matches!(stalled.get_timeout(PATIENCE), Err(Error::Closed)));
}

#[test]
fn a_worker_that_sends_garbage_fails_its_task_and_is_replaced() {
    let pool = Pool::new(1).unwrap();
    let results = pool
        .chunksize(1)
        .map_each(ipc_core::entry!(babble), 0..1u64)
        .unwrap();
    assert!(
        matches!(&results[0], Err(Error::Child(f)) if matches!(**f, ChildFailure::Codec(_))),
        "{results:?}"
    );
    assert_eq!(
        pool.map(ipc_core::entry!(square), 0..5u64).unwrap(),
        [0, 1, 4, 9, 16]
    );
}

/// Says it started, then sends an empty frame, a worker's notice that its
/// outcomes are in its mailbox, with nothing put there, and is [`held`].
/// In that order: the pool kills a broken worker, so it may not live to
/// say anything after the notice.
fn notice_with_empty_mailbox(task: (u64, String, String)) -> u64 {
    ipc_shm::Event::open(&task.1).unwrap().set();
    write_on_sockets(&[0, 0, 0, 0]);
    held((task.0, task.2))
}

#[test]
fn a_worker_whose_notice_finds_its_mailbox_empty_fails_its_task_and_is_replaced() {
    let pool = Pool::new(1).unwrap();
    // Its mailbox held outcomes once: a notice must not read them again.
    assert_eq!(pool.apply(ipc_core::entry!(square), &2).unwrap(), 4);
    let hold = Hold::new();
    let mut noticed = pool
        .apply_async(ipc_core::entry!(notice_with_empty_mailbox), &hold.task(1))
        .unwrap();
    hold.wait_started();
    let failure = noticed.get_timeout(PATIENCE);
    assert!(
        matches!(&failure, Err(Error::Child(f))
            if matches!(&**f, ChildFailure::Codec(why) if why.contains("mailbox"))),
        "{failure:?}"
    );
    assert_eq!(pool.apply(ipc_core::entry!(square), &3).unwrap(), 9);
}

#[test]
fn a_tokio_runtime_beside_the_pool_is_no_hazard() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let (squares, one) = runtime.block_on({
        let pool = pool.clone();
        async move {
            let mapped = tokio::task::spawn_blocking({
                let pool = pool.clone();
                move || pool.map(ipc_core::entry!(square), 0..1000u64)
            });
            let applied =
                tokio::task::spawn_blocking(move || pool.apply(ipc_core::entry!(square), &7));
            (mapped.await.unwrap(), applied.await.unwrap())
        }
    });
    assert_eq!(squares.unwrap()[999], 999 * 999);
    assert_eq!(one.unwrap(), 49);
    // A worker that dies is replaced from the pool's own thread, beside
    // the runtime's.
    let died = pool
        .map_each(ipc_core::entry!(square_or_die), 12..15u64)
        .unwrap();
    assert!(matches!(&died[1], Err(Error::Child(_))));
    assert_eq!(pool.apply(ipc_core::entry!(square), &3).unwrap(), 9);
}

#[test]
fn map_and_apply_async_are_awaited_without_a_blocked_thread() {
    // One thread for the runtime and every task: an await that blocked
    // would stop them all.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pool = Pool::new(2).unwrap();
    runtime.block_on(async {
        let pending = pool.apply_async(ipc_core::entry!(square), &11).unwrap();
        let (mapped, applied) = tokio::join!(
            pool.map_async(ipc_core::entry!(square), 0..1000u64),
            pending
        );
        assert_eq!(mapped.unwrap()[999], 999 * 999);
        assert_eq!(applied.unwrap(), 121);
        // A killed worker fails its task alone, awaited as well.
        let failed = pool
            .map_async(ipc_core::entry!(square_or_die), 12..15u64)
            .await;
        assert!(matches!(failed, Err(Error::Child(_))), "{failed:?}");
        // A map dropped after its first poll leaves the pool as it was.
        // Its tasks wait for an event, so it cannot finish at its first
        // poll; released afterwards, they finish and their results go.
        let name = ipc_testkit::name();
        let release = ipc_shm::Event::create(&name).unwrap();
        let held_tasks = (0..20u64).map(|i| (i, name.clone()));
        let mut dropped = Box::pin(pool.map_async(ipc_core::entry!(held), held_tasks));
        assert!(ipc_testkit::poll_once(dropped.as_mut()).is_none());
        drop(dropped);
        release.set();
        let timed =
            tokio::time::timeout(PATIENCE, pool.map_async(ipc_core::entry!(square), 0..10u64))
                .await
                .expect("a map after a dropped one");
        assert_eq!(timed.unwrap()[9], 81);
    });
}

/// A task held in a worker: it says it started, then waits to be released.
struct Hold {
    started: ipc_shm::Event,
    release: ipc_shm::Event,
    names: (String, String),
}

impl Hold {
    fn new() -> Hold {
        let names = (ipc_testkit::name(), ipc_testkit::name());
        Hold {
            started: ipc_shm::Event::create(&names.0).unwrap(),
            release: ipc_shm::Event::create(&names.1).unwrap(),
            names,
        }
    }

    /// The argument of [`held_started`] for a task that gives `x`.
    fn task(&self, x: u64) -> (u64, String, String) {
        (x, self.names.0.clone(), self.names.1.clone())
    }

    fn wait_started(&self) {
        assert!(
            self.started.wait_timeout(PATIENCE),
            "the task never started"
        );
    }
}

/// Sets the event `task.1`, then is [`held`] until `task.2` is set.
fn held_started(task: (u64, String, String)) -> u64 {
    ipc_shm::Event::open(&task.1).unwrap().set();
    held((task.0, task.2))
}

/// [`held_started`], then [`babble`].
fn held_babbling(task: (u64, String, String)) -> u64 {
    babble(held_started(task))
}

/// Waits (bounded) until the dispatcher thread (named `ipc-pool`) sleeps:
/// with every worker running a piece, it sleeps for closes only. If the
/// kernel does not say where it sleeps, a sleep anywhere will do.
fn wait_dispatcher_asleep() {
    let task = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "ipc-pool")
        })
        .expect("a dispatcher thread");
    let start = Instant::now();
    loop {
        let wchan = std::fs::read_to_string(task.join("wchan")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        let in_poll = wchan.contains("poll") || wchan.is_empty() || wchan == "0";
        if state == Some('S') && in_poll {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "the dispatcher never slept");
        std::thread::yield_now();
    }
}

/// Starts a task of `entry` that gives 5 on `pool`'s one worker and holds
/// it there, then waits until the dispatcher sleeps: the worker is busy.
fn hold_the_worker(
    pool: &Pool,
    entry: ipc_core::spawn::Entry<(u64, String, String), u64>,
) -> (Hold, ipc_pool::AsyncResult<u64>) {
    let hold = Hold::new();
    let first = pool.apply_async(entry, &hold.task(5)).unwrap();
    hold.wait_started();
    wait_dispatcher_asleep();
    (hold, first)
}

#[test]
fn a_piece_sent_while_every_worker_is_busy_runs_after_the_next_worker_event() {
    // The worker dies.
    let pool = Pool::new(1).unwrap();
    let pid = pool.apply(ipc_core::entry!(worker_pid), &0).unwrap();
    let (_hold, mut victim) = hold_the_worker(&pool, ipc_core::entry!(held_started));
    let mut after = pool.apply_async(ipc_core::entry!(square), &3).unwrap();
    kill(pid);
    assert!(matches!(
        victim.get_timeout(PATIENCE),
        Err(Error::Child(f)) if matches!(*f, ChildFailure::WorkerDied { .. })
    ));
    assert_eq!(after.get_timeout(PATIENCE).unwrap(), 9);

    // The worker retires after its task limit.
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let (hold, mut first) = hold_the_worker(&pool, ipc_core::entry!(held_started));
    let mut after = pool.apply_async(ipc_core::entry!(square), &3).unwrap();
    // One that was cancelled does not hold up the next.
    drop(pool.apply_async(ipc_core::entry!(square), &2).unwrap());
    let mut last = pool.apply_async(ipc_core::entry!(square), &4).unwrap();
    hold.release.set();
    assert_eq!(first.get_timeout(PATIENCE).unwrap(), 5);
    assert_eq!(after.get_timeout(PATIENCE).unwrap(), 9);
    assert_eq!(last.get_timeout(PATIENCE).unwrap(), 16);

    // The worker sends garbage.
    let pool = Pool::new(1).unwrap();
    let (hold, mut first) = hold_the_worker(&pool, ipc_core::entry!(held_babbling));
    let mut after = pool.apply_async(ipc_core::entry!(square), &3).unwrap();
    hold.release.set();
    assert!(matches!(first.get_timeout(PATIENCE), Err(Error::Child(_))));
    assert_eq!(after.get_timeout(PATIENCE).unwrap(), 9);
}

/// Runs `f` on a thread and waits for it, bounded.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    bounded_for(PATIENCE, what, f)
}

/// Runs `f` on a thread and waits for it, at most `patience`.
fn bounded_for<T: Send + 'static>(
    patience: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || tx.send(f()).unwrap());
    let value = rx
        .recv_timeout(patience)
        .unwrap_or_else(|_| panic!("{what} never ended"));
    thread.join().unwrap();
    value
}

#[test]
fn pieces_waiting_while_every_worker_is_busy_run_before_a_close_and_fail_on_terminate() {
    let pool = Pool::new(1).unwrap();
    let (hold, mut first) = hold_the_worker(&pool, ipc_core::entry!(held_started));
    let mut after: Vec<_> = (0..3)
        .map(|x| pool.apply_async(ipc_core::entry!(square), &x).unwrap())
        .collect();
    pool.close().unwrap();
    hold.release.set();
    bounded("join", move || pool.join()).unwrap();
    assert_eq!(first.get_timeout(PATIENCE).unwrap(), 5);
    for (x, result) in (0u64..).zip(&mut after) {
        assert_eq!(result.get_timeout(PATIENCE).unwrap(), x * x);
    }

    let pool = Pool::new(1).unwrap();
    let (_hold, mut first) = hold_the_worker(&pool, ipc_core::entry!(held_started));
    let mut after = pool.apply_async(ipc_core::entry!(square), &3).unwrap();
    bounded("terminate", move || pool.terminate());
    assert!(matches!(first.get_timeout(PATIENCE), Err(Error::Closed)));
    assert!(matches!(after.get_timeout(PATIENCE), Err(Error::Closed)));
}

#[test]
fn a_close_as_the_dispatcher_first_sleeps_then_join_ends() {
    for _ in 0..100 {
        let pool = Pool::new(1).unwrap();
        pool.close().unwrap();
        bounded("join", move || pool.join()).unwrap();
    }
}

static EXIT_EVENTS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// At the worker's exit: sets the first event of [`EXIT_EVENTS`], then
/// waits (bounded) for the second.
extern "C" fn hold_exit() {
    let (exiting, release) = EXIT_EVENTS.get().unwrap();
    ipc_shm::Event::open(exiting).unwrap().set();
    let _ = ipc_shm::Event::open(release)
        .unwrap()
        .wait_timeout(Duration::from_secs(20));
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// In a worker: holds its exit (see [`hold_exit`]) on events `names`.
fn hold_my_exit(names: (String, String)) -> bool {
    EXIT_EVENTS.set(names).unwrap();
    // SAFETY: registers a plain `extern "C"` function with no arguments,
    // which atexit calls once as the process exits.
    unsafe { atexit(hold_exit) == 0 }
}

#[test]
fn an_imap_piece_sent_while_the_dispatcher_exits_is_answered() {
    let pool = Pool::new(1).unwrap();
    let names = (ipc_testkit::name(), ipc_testkit::name());
    let exiting = ipc_shm::Event::create(&names.0).unwrap();
    let release = ipc_shm::Event::create(&names.1).unwrap();
    assert!(pool.apply(ipc_core::entry!(hold_my_exit), &names).unwrap());
    // An imap sends its pieces as its results are taken, so one begun
    // before a close goes on sending after it.
    let mut squares = pool.chunksize(1).imap(ipc_core::entry!(square), 0..10u64);
    assert_eq!(squares.next().unwrap().unwrap(), 0);
    pool.close().unwrap();
    // The dispatcher has taken its last look at the commands and lets the
    // worker exit, which it holds: pieces sent now come too late to run.
    assert!(
        exiting.wait_timeout(PATIENCE),
        "the worker never began to exit"
    );
    for x in 1..10u64 {
        // Each one is answered, by its result or as closed; none is left
        // waiting for ever.
        match squares.next_timeout(PATIENCE) {
            Some(Ok(square)) => assert_eq!(square, x * x),
            Some(Err(Error::Closed)) => {}
            other => {
                release.set();
                panic!("task {x}: {other:?}");
            }
        }
    }
    release.set();
    drop(squares);
    bounded("join", move || pool.join()).unwrap();
}

/// The length of a text.
fn length(text: String) -> usize {
    text.len()
}

/// A text of `n` bytes.
fn text_of(n: usize) -> String {
    "x".repeat(n)
}

/// The longest text a task may take or give: its record is the text and
/// a varint of its length, at most five bytes.
fn longest_text() -> usize {
    batch::MAX_RECORD_BYTES as usize - 5
}

#[test]
fn the_largest_argument_fits_in_a_chunk_nearly_full_before_it() {
    let pool = Pool::new(1).unwrap();
    // Just under the chunk's budget, so the next argument joins the chunk.
    let first = batch::RUN_BYTES - 64;
    // Hundreds of megabytes through a debug build: more time than most.
    let lengths = bounded_for(LONG, "a chunk ending in the largest argument", move || {
        pool.chunksize(2)
            .map(
                ipc_core::entry!(length),
                [text_of(first), text_of(longest_text())],
            )
            .map_err(|e| e.to_string())
    });
    assert_eq!(lengths.unwrap(), [first, longest_text()]);
}

#[test]
fn the_largest_result_after_others_comes_back_whole() {
    let pool = Pool::new(1).unwrap();
    // Just under the outcomes' budget, so the next task runs before they
    // are sent.
    let first = batch::FLUSH_BYTES - 64;
    let lengths = bounded_for(LONG, "a run ending in the largest result", move || {
        let texts = pool
            .chunksize(2)
            .map_each(ipc_core::entry!(text_of), [first, longest_text()])
            .unwrap();
        texts
            .into_iter()
            .map(|text| text.map(|t| t.len()).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    });
    assert_eq!(lengths, [Ok(first), Ok(longest_text())]);
}

#[test]
fn a_chunk_answered_by_a_frame_through_the_socket_then_one_through_the_mailbox() {
    let pool = Pool::new(1).unwrap();
    // The first result fills a frame past the flush, which goes whole
    // through the socket; the second is the chunk's last frame, small
    // enough for the mailbox.
    let first = batch::FLUSH_BYTES;
    let lengths = bounded("a chunk answered by two kinds of frame", move || {
        let lengths = pool
            .chunksize(2)
            .map(ipc_core::entry!(text_of), [first, 10, first, 20])
            .map(|texts| texts.iter().map(String::len).collect::<Vec<_>>());
        (lengths, pool.map(ipc_core::entry!(square), 0..4u64))
    });
    assert_eq!(lengths.0.unwrap(), [first, 10, first, 20]);
    assert_eq!(lengths.1.unwrap(), [0, 1, 4, 9]);
}

/// A process stopped with SIGSTOP, sent SIGCONT when dropped, so that a
/// test that fails does not leave it stopped.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[test]
fn a_worker_that_stops_reading_its_tasks_is_replaced_after_a_bounded_wait() {
    let pool = Pool::new(1).unwrap();
    let stopped = pool.apply(ipc_core::entry!(worker_pid), &0).unwrap();
    // Idle, and so reading its socket, until stopped.
    let _stopped = Stopped::new(stopped);
    // Larger than its mailbox and its socket's buffer: the send to the
    // stopped worker cannot finish, and must not hold the pool for ever.
    let text = 4 << 20;
    let (lengths, replacement) = bounded_for(LONG, "a chunk sent to a stopped worker", move || {
        let lengths = pool
            .chunksize(1)
            .map(ipc_core::entry!(length), [text_of(text)])
            .map_err(|e| e.to_string());
        (
            lengths,
            pool.apply(ipc_core::entry!(worker_pid), &0).unwrap(),
        )
    });
    assert_eq!(lengths, Ok(vec![text]));
    assert_ne!(replacement, stopped);
}

/// Gives `x`; the task of 0 first waits to be released ([`held`]).
fn first_held(task: (u64, String)) -> u64 {
    if task.0 == 0 {
        held(task)
    } else {
        task.0
    }
}

#[test]
fn imap_does_not_read_ahead_while_its_first_task_is_slow() {
    const AHEAD: usize = 8;
    let pool = Pool::new(2).unwrap();
    let name = ipc_testkit::name();
    let release = ipc_shm::Event::create(&name).unwrap();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (too_many, told) = std::sync::mpsc::channel();
    // The first task is released once the imap has read too far ahead,
    // or after a while if it never does.
    let releaser = std::thread::spawn(move || {
        let _ = told.recv_timeout(Duration::from_millis(500));
        release.set();
    });
    let counted = taken.clone();
    let items = (0u64..).map(|x| (x, name.clone())).inspect(move |_| {
        if counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == AHEAD {
            let _ = too_many.send(());
        }
    });
    let mut results = pool.imap(ipc_core::entry!(first_held), items);
    assert_eq!(results.next().transpose().unwrap(), Some(0));
    let read_ahead = taken.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read_ahead <= AHEAD,
        "{read_ahead} items taken for one result"
    );
    assert_eq!(results.next().transpose().unwrap(), Some(1));
    releaser.join().unwrap();
}

#[test]
fn an_imap_on_a_closed_pool_gives_one_error_and_ends() {
    let pool = Pool::new(1).unwrap();
    pool.close().unwrap();
    let results: Vec<_> = pool.imap(ipc_core::entry!(square), 0..5u64).collect();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(matches!(results[0], Err(Error::InvalidArgument(_))));
    pool.join().unwrap();
}
