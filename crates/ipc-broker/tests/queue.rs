//! The broker queues against a private redis-server (started per test on a
//! Unix socket, stopped by its pid), between real processes: spawned runs
//! of this test binary that open the queue by URL and name, as a program
//! on another machine would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ipc_broker::{Broker, JoinableQueue, Queue};
use ipc_core::process::{inherited, Process};
use ipc_core::{Connection, Error, FdStream};
use ipc_testkit::{assert_waited, RedisServer, LONG, PATIENCE, SHORT};

ipc_core::spawn_harness!();

/// A private server and a broker on it; `None` where redis-server is not
/// installed (outside CI).
fn server() -> Option<(RedisServer, Broker)> {
    let server = RedisServer::start()?;
    let broker = Broker::new(&server.url()).unwrap();
    Some((server, broker))
}

/// A plain connection to `server`, to look at or write keys the way
/// another program would.
fn admin(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// What a spawned producer or consumer is told: where the queue is.
type Where = (String, String);

/// Puts `count` strings `"<tag> <i>"` on the queue, one put each.
fn produce((url, name, tag, count): (String, String, String, u32)) -> u32 {
    let broker = Broker::new(&url).unwrap();
    let q = Queue::<String>::builder().open(&broker, &name).unwrap();
    for i in 0..count {
        q.put(format!("{tag} {i}")).unwrap();
    }
    count
}

#[test]
fn items_cross_processes_in_order() {
    let Some((server, broker)) = server() else {
        return;
    };
    let q = Queue::<String>::builder()
        .create(&broker, "greetings")
        .unwrap();
    let producer = Process::new()
        .spawn(
            ipc_core::entry!(produce),
            &(
                server.url(),
                "greetings".to_owned(),
                "hello".to_owned(),
                100,
            ),
        )
        .unwrap();
    for i in 0..100 {
        assert_eq!(q.get_timeout(PATIENCE).unwrap(), format!("hello {i}"));
    }
    assert_eq!(producer.join_timeout(PATIENCE).unwrap(), 100);

    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    let start = Instant::now();
    assert!(matches!(q.get_timeout(SHORT), Err(Error::Timeout)));
    assert_waited(start, SHORT);
    assert!(q.empty().unwrap());

    // The bytes forms and the typed forms read the same items.
    q.put_bytes(b"\x05bytes").unwrap();
    assert_eq!(q.qsize().unwrap(), 1);
    assert_eq!(q.get().unwrap(), "bytes");
    q.put_many(&["a".to_owned(), "b".to_owned()]).unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"\x01a");
    assert_eq!(q.get().unwrap(), "b");

    // Batches: one command each way, in order.
    let batch: Vec<String> = (0..10).map(|i| format!("batch {i}")).collect();
    q.put_many(&batch).unwrap();
    assert_eq!(q.get_many(4, Some(PATIENCE)).unwrap(), batch[..4]);
    assert_eq!(q.get_many(100, Some(PATIENCE)).unwrap(), batch[4..]);
    let start = Instant::now();
    assert!(matches!(q.get_many(3, Some(SHORT)), Err(Error::Timeout)));
    assert_waited(start, SHORT);

    // Closed: puts fail, gets drain then say so.
    q.put("last".to_owned()).unwrap();
    q.close().unwrap();
    assert!(q.is_closed().unwrap());
    let refused = q.put("late".to_owned()).unwrap_err();
    assert!(matches!(refused.error, Error::Closed));
    assert_eq!(refused.into_inner(), "late");
    assert_eq!(q.get().unwrap(), "last");
    assert!(matches!(q.get(), Err(Error::Closed)));
    q.unlink().unwrap();
}

#[test]
fn names_kinds_and_bad_urls_are_clear_errors() {
    let Some((_server, broker)) = server() else {
        return;
    };
    Queue::<u32>::builder().create(&broker, "once").unwrap();
    assert!(matches!(
        Queue::<u32>::builder().create(&broker, "once"),
        Err(Error::AlreadyExists(name)) if name == "once"
    ));
    assert!(matches!(
        Queue::<u32>::builder().open(&broker, "missing"),
        Err(Error::NotFound(name)) if name == "missing"
    ));
    JoinableQueue::<u32>::builder()
        .create(&broker, "tasks")
        .unwrap();
    let wrong = Queue::<u32>::builder().open(&broker, "tasks").unwrap_err();
    assert!(
        matches!(&wrong, Error::Broker(why) if why.contains("not a queue")),
        "{wrong}"
    );
    // A queue deleted under a handle.
    let q = Queue::<u32>::builder().open(&broker, "once").unwrap();
    let other = q.try_clone().unwrap();
    q.unlink().unwrap();
    assert!(matches!(
        other.put(1).map_err(Error::from),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        Broker::new("postgres://nope"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Queue::<u32>::builder().create(&broker, ""),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        JoinableQueue::<u32>::builder()
            .visibility_timeout(Duration::ZERO)
            .create(&broker, "instant"),
        Err(Error::InvalidArgument(_))
    ));
}

/// Puts `count` numbers `base + i`, one put each, on a bounded queue.
fn produce_numbers((url, name, base, count): (String, String, u64, u64)) -> u64 {
    let broker = Broker::new(&url).unwrap();
    let q = Queue::<u64>::builder().open(&broker, &name).unwrap();
    for i in 0..count {
        q.put(base + i).unwrap();
    }
    count
}

#[test]
fn a_bound_is_never_passed_by_concurrent_producers() {
    const BOUND: usize = 5;
    const EACH: u64 = 200;
    let Some((server, broker)) = server() else {
        return;
    };
    let q = Queue::<u64>::builder()
        .maxsize(BOUND)
        .create(&broker, "bounded")
        .unwrap();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            Process::new()
                .spawn(
                    ipc_core::entry!(produce_numbers),
                    &(server.url(), "bounded".to_owned(), p * 1_000_000, EACH),
                )
                .unwrap()
        })
        .collect();
    let mut got = BTreeSet::new();
    let mut most = 0;
    for _ in 0..4 * EACH {
        let waiting = q.qsize().unwrap();
        assert!(
            waiting <= BOUND,
            "{waiting} items wait in a queue bounded at {BOUND}"
        );
        most = most.max(waiting);
        got.insert(q.get_timeout(PATIENCE).unwrap());
    }
    for producer in producers {
        assert_eq!(producer.join_timeout(PATIENCE).unwrap(), EACH);
    }
    let expected: BTreeSet<u64> = (0..4u64)
        .flat_map(|p| (0..EACH).map(move |i| p * 1_000_000 + i))
        .collect();
    assert_eq!(got, expected, "every item once");
    assert!(most > 0, "the producers were ahead at some point");

    // At the bound, a put that may not wait is refused and hands the item
    // back; a put that may wait a little times out.
    for i in 0..BOUND as u64 {
        q.put_nowait(i).unwrap();
    }
    assert!(q.full().unwrap());
    let refused = q.put_nowait(99).unwrap_err();
    assert!(matches!(refused.error, Error::Full));
    assert_eq!(refused.into_inner(), 99);
    let start = Instant::now();
    assert!(matches!(
        q.put_timeout(99, SHORT).map_err(Error::from),
        Err(Error::Timeout)
    ));
    assert_waited(start, SHORT);
    // More items at once than the bound could ever hold.
    assert!(matches!(
        q.put_many(&[1, 2, 3, 4, 5, 6]),
        Err(Error::InvalidArgument(_))
    ));
    // A blocked put goes through once a get frees a place.
    let other = q.try_clone().unwrap();
    let blocked = std::thread::spawn(move || other.put_timeout(100, PATIENCE).map_err(Error::from));
    assert_eq!(q.get_timeout(PATIENCE).unwrap(), 0);
    blocked.join().unwrap().unwrap();
    assert_eq!(q.qsize().unwrap(), BOUND);
}

/// Takes three items of a joinable queue without marking them done, says
/// so on the connection it was passed, then waits to be killed.
fn take_three_and_hang((url, name): Where) -> u32 {
    let broker = Broker::new(&url).unwrap();
    let q = JoinableQueue::<u32>::builder()
        .open(&broker, &name)
        .unwrap();
    for _ in 0..3 {
        q.get_timeout(PATIENCE).unwrap();
    }
    let mut conn: Connection<FdStream> = inherited("conn").unwrap();
    conn.send(&"took three").unwrap();
    // The parent kills this process; the read never returns before.
    let _ = conn.recv_bytes();
    0
}

#[test]
fn items_of_a_killed_consumer_are_done_by_another() {
    let Some((server, broker)) = server() else {
        return;
    };
    let visibility = Duration::from_millis(300);
    let q = JoinableQueue::<u32>::builder()
        .visibility_timeout(visibility)
        .create(&broker, "tasks")
        .unwrap();
    for i in 0..5 {
        q.put(i).unwrap();
    }
    let (mut ours, theirs) = ipc_pipe::duplex().unwrap();
    let mut consumer = Process::new()
        .pass("conn", &theirs)
        .unwrap()
        .spawn(
            ipc_core::entry!(take_three_and_hang),
            &(server.url(), "tasks".to_owned()),
        )
        .unwrap();
    drop(theirs);
    assert_eq!(ours.recv_timeout::<String>(PATIENCE).unwrap(), "took three");
    consumer.kill().unwrap();
    assert!(consumer.join_timeout(PATIENCE).is_err(), "it was killed");

    assert_eq!(q.unfinished().unwrap(), 5);
    // Two items wait; three come back once the visibility timeout passed.
    let mut seen = BTreeMap::new();
    for _ in 0..5 {
        let item = q.get_item(Some(PATIENCE)).unwrap();
        seen.insert(item.value, item.deliveries);
        assert!(q.done(&item.id).unwrap(), "done once");
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(seen.values().filter(|&&n| n == 2).count(), 3, "{seen:?}");
    q.join_timeout(PATIENCE).unwrap();
    assert_eq!(q.unfinished().unwrap(), 0);
    // task_done without an item taken is refused, as in Python.
    assert!(matches!(q.task_done(), Err(Error::InvalidArgument(_))));
}

/// A consumer of many: takes items until the queue is closed and drained,
/// marking each done; returns `(id, value)` of each delivery.
fn consume_all((url, name): Where) -> Vec<(String, u64)> {
    let broker = Broker::new(&url).unwrap();
    let q = JoinableQueue::<u64>::builder()
        .open(&broker, &name)
        .unwrap();
    let mut got = Vec::new();
    loop {
        match q.get_item(Some(LONG)) {
            Ok(item) => {
                q.done(&item.id).unwrap();
                got.push((item.id, item.value));
            }
            Err(Error::Closed) => return got,
            Err(e) => panic!("consumer: {e}"),
        }
    }
}

/// A producer of many: puts `base..base + count`, one put each.
fn produce_joinable((url, name, base, count): (String, String, u64, u64)) -> u64 {
    let broker = Broker::new(&url).unwrap();
    let q = JoinableQueue::<u64>::builder()
        .open(&broker, &name)
        .unwrap();
    for i in 0..count {
        q.put(base + i).unwrap();
    }
    count
}

/// Four producers and four consumers, processes all, on one joinable
/// queue: every item arrives, and is done exactly once once deliveries
/// are told apart by id.
fn many_to_many(server: &RedisServer, broker: &Broker, total: u64) {
    let q = JoinableQueue::<u64>::builder()
        .visibility_timeout(LONG)
        .create(broker, "many")
        .unwrap();
    let each = total / 4;
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            Process::new()
                .spawn(
                    ipc_core::entry!(consume_all),
                    &(server.url(), "many".to_owned()),
                )
                .unwrap()
        })
        .collect();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            Process::new()
                .spawn(
                    ipc_core::entry!(produce_joinable),
                    &(server.url(), "many".to_owned(), p * each, each),
                )
                .unwrap()
        })
        .collect();
    for producer in producers {
        assert_eq!(producer.join_timeout(LONG * 4).unwrap(), each);
    }
    q.join_timeout(LONG * 4).unwrap();
    q.close().unwrap();
    let mut done: BTreeMap<String, u64> = BTreeMap::new();
    for consumer in consumers {
        for (id, value) in consumer.join_timeout(LONG).unwrap() {
            if let Some(before) = done.insert(id, value) {
                assert_eq!(before, value, "one id, one item");
            }
        }
    }
    let values: BTreeSet<u64> = done.values().copied().collect();
    assert_eq!(done.len() as u64, total, "each item done once by id");
    assert_eq!(values, (0..total).collect::<BTreeSet<_>>(), "none lost");
}

#[test]
fn four_producers_and_four_consumers_lose_nothing() {
    let Some((server, broker)) = server() else {
        return;
    };
    many_to_many(&server, &broker, 100_000);
}

/// Puts `count` numbers one at a time on a joinable queue, telling the
/// parent on the connection it was passed after the first `signal_after`;
/// returns how many puts were acknowledged.
fn produce_through_restart((url, name, count, signal_after): (String, String, u64, u64)) -> u64 {
    let broker = Broker::new(&url).unwrap();
    let q = JoinableQueue::<u64>::builder()
        .open(&broker, &name)
        .unwrap();
    let mut conn: Connection<FdStream> = inherited("conn").unwrap();
    for i in 0..count {
        q.put(i).unwrap();
        if i + 1 == signal_after {
            conn.send(&i).unwrap();
        }
    }
    count
}

#[test]
fn a_server_restart_mid_run_loses_no_acknowledged_put() {
    const COUNT: u64 = 2000;
    let Some(mut server) = RedisServer::start_with_aof() else {
        return;
    };
    let broker = Broker::new(&server.url()).unwrap();
    let q = JoinableQueue::<u64>::builder()
        .create(&broker, "durable")
        .unwrap();
    // Some taken and done before the restart.
    let (mut ours, theirs) = ipc_pipe::duplex().unwrap();
    let producer = Process::new()
        .pass("conn", &theirs)
        .unwrap()
        .spawn(
            ipc_core::entry!(produce_through_restart),
            &(server.url(), "durable".to_owned(), COUNT, 500),
        )
        .unwrap();
    drop(theirs);
    let mut done = BTreeSet::new();
    for _ in 0..100 {
        let item = q.get_item(Some(PATIENCE)).unwrap();
        q.done(&item.id).unwrap();
        done.insert(item.value);
    }
    assert_eq!(ours.recv_timeout::<u64>(PATIENCE).unwrap(), 499);
    // The producer goes on putting while the server dies and comes back.
    server.restart();
    assert_eq!(producer.join_timeout(LONG).unwrap(), COUNT);
    while done.len() < COUNT as usize {
        let item = q.get_item(Some(PATIENCE)).unwrap();
        q.done(&item.id).unwrap();
        done.insert(item.value);
    }
    assert_eq!(done, (0..COUNT).collect::<BTreeSet<_>>());
    q.join_timeout(PATIENCE).unwrap();
}

#[test]
fn foreign_entries_and_items_of_another_type_are_errors_for_that_item() {
    let Some((server, broker)) = server() else {
        return;
    };
    let q = Queue::<String>::builder().create(&broker, "mixed").unwrap();
    let mut admin = admin(&server);
    let _: String = redis::cmd("XADD")
        .arg("ipc:{mixed}:items")
        .arg("*")
        .arg("job")
        .arg("not ours")
        .query(&mut admin)
        .unwrap();
    q.put_bytes(&[0xff, 0xff, 0xff]).unwrap();
    q.put("fine".to_owned()).unwrap();
    let foreign = q.get_nowait().unwrap_err();
    assert!(
        matches!(&foreign, Error::Broker(why) if why.contains("not written by ipc-broker")),
        "{foreign}"
    );
    assert!(matches!(q.get_nowait(), Err(Error::Decode(_))));
    assert_eq!(q.get_nowait().unwrap(), "fine");
    // Among good items, a foreign entry is dropped and the good ones come.
    q.put("one".to_owned()).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("ipc:{mixed}:items")
        .arg("*")
        .arg("job")
        .arg("not ours")
        .query(&mut admin)
        .unwrap();
    q.put("two".to_owned()).unwrap();
    assert_eq!(q.get_many(10, Some(PATIENCE)).unwrap(), ["one", "two"]);
    q.put_many(&[]).unwrap();
    assert!(q.empty().unwrap());

    // The same for a joinable queue, whose foreign entry is done with
    // rather than delivered again.
    let j = JoinableQueue::<String>::builder()
        .visibility_timeout(Duration::from_millis(1))
        .create(&broker, "mixed2")
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("ipc:{mixed2}:items")
        .arg("*")
        .arg("d")
        .arg("one field")
        .arg("e")
        .arg("and another")
        .query(&mut admin)
        .unwrap();
    assert!(matches!(j.get_nowait(), Err(Error::Broker(_))));
    assert!(matches!(j.get_nowait(), Err(Error::Empty)));
    assert_eq!(j.unfinished().unwrap(), 0);
}

#[test]
fn a_put_held_back_adds_nothing_and_leaves_the_stream_where_it_was() {
    let Some((server, broker)) = server() else {
        return;
    };
    let mut admin = admin(&server);
    let exists = |admin: &mut redis::Connection, key: &str| -> bool {
        redis::cmd("EXISTS").arg(key).query::<i64>(admin).unwrap() == 1
    };
    // Full: the third put is held back, the first two stay, in order.
    let q = Queue::<u32>::builder()
        .maxsize(2)
        .create(&broker, "gated")
        .unwrap();
    q.put_many(&[1, 2]).unwrap();
    assert!(matches!(q.put_nowait(3), Err(e) if matches!(e.error, Error::Full)));
    assert!(matches!(
        q.put_many(&[3, 4, 5]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(exists(&mut admin, "ipc:{gated}:items") && !exists(&mut admin, "ipc:{gated}:held"));
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.get_many(5, Some(PATIENCE)).unwrap(), [1, 2]);

    // A server that forgot every script (as after a restart) still checks
    // each put before its items go in: a closed queue takes nothing.
    q.put(6).unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut admin).unwrap();
    q.close().unwrap();
    assert!(matches!(q.put(7), Err(e) if matches!(e.error, Error::Closed)));
    assert!(exists(&mut admin, "ipc:{gated}:items") && !exists(&mut admin, "ipc:{gated}:held"));
    assert_eq!(q.get().unwrap(), 6);
    assert!(matches!(q.get_nowait(), Err(Error::Closed)));

    // A queue that is gone is not made again by a put.
    q.unlink().unwrap();
    assert!(matches!(q.put(8), Err(e) if matches!(e.error, Error::NotFound(_))));
    assert!(!exists(&mut admin, "ipc:{gated}:items") && !exists(&mut admin, "ipc:{gated}:held"));

    // A take that reclaims an item holds the read after it back: it gives
    // the reclaimed item alone, and the stream is where it was.
    let j = JoinableQueue::<u32>::builder()
        .visibility_timeout(Duration::from_millis(1))
        .create(&broker, "reclaimed")
        .unwrap();
    j.put_many(&[1, 2]).unwrap();
    let both = j.get_items(5, Some(PATIENCE)).unwrap();
    let firsts: Vec<(u32, u64)> = both.iter().map(|i| (i.value, i.deliveries)).collect();
    assert_eq!(firsts, [(1, 1), (2, 1)]);
    // Nothing new: the next take waits until 1 or 2 passes its visibility
    // timeout, and reclaims it.
    let again = j.get_item(Some(PATIENCE)).unwrap();
    assert!(again.value <= 2 && again.deliveries == 2, "{again:?}");
    assert!(
        exists(&mut admin, "ipc:{reclaimed}:items") && !exists(&mut admin, "ipc:{reclaimed}:held")
    );
    j.put(3).unwrap();
    while j.get_item(Some(PATIENCE)).unwrap().value != 3 {}
}

#[test]
fn keys_written_by_others_never_let_a_put_half_in_or_strand_items() {
    let Some((server, broker)) = server() else {
        return;
    };
    let mut admin = admin(&server);
    let mut run = |args: &[&str]| -> redis::Value {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut admin).unwrap()
    };
    // A `held` key someone else left: takes still deliver every item.
    let j = JoinableQueue::<u32>::builder()
        .create(&broker, "j")
        .unwrap();
    j.put_many(&[1, 2, 3]).unwrap();
    run(&["SET", "ipc:{j}:held", "x"]);
    let values: Vec<u32> = j
        .get_items(5, Some(PATIENCE))
        .unwrap()
        .iter()
        .map(|i| i.value)
        .collect();
    assert_eq!(values, [1, 2, 3]);

    // ... and a put to a queue that is gone does not bring it back.
    let q = Queue::<u32>::builder().create(&broker, "r").unwrap();
    q.put(1).unwrap();
    run(&["COPY", "ipc:{r}:items", "ipc:{r}:held"]);
    q.unlink().unwrap();
    assert!(matches!(q.put(2), Err(e) if matches!(e.error, Error::NotFound(_))));
    assert_eq!(
        run(&["EXISTS", "ipc:{r}:items", "ipc:{r}:held"]),
        redis::Value::Int(0)
    );

    // A stream that can take no more ids: the put is an error, not an
    // acknowledged put that added nothing.
    let q = Queue::<u32>::builder().create(&broker, "full-ids").unwrap();
    let last = "18446744073709551615-18446744073709551615";
    run(&["XADD", "ipc:{full-ids}:items", last, "x", "y"]);
    run(&["XDEL", "ipc:{full-ids}:items", last]);
    let refused = q.put(7).unwrap_err();
    assert!(
        matches!(&refused.error, Error::Broker(why) if why.contains("refused")),
        "{refused:?}"
    );

    // A key of the wrong type where the gate looks: held back, and the
    // stream is where it was.
    let q = Queue::<u32>::builder().create(&broker, "g").unwrap();
    q.put(1).unwrap();
    run(&["SET", "ipc:{g}:producers", "x"]);
    let refused = q.put(2).unwrap_err();
    assert!(
        matches!(&refused.error, Error::Broker(why) if why.contains("held back")),
        "{refused:?}"
    );
    assert_eq!(run(&["XLEN", "ipc:{g}:items"]), redis::Value::Int(1));
    assert_eq!(run(&["EXISTS", "ipc:{g}:held"]), redis::Value::Int(0));
    assert_eq!(q.get().unwrap(), 1);
}

#[test]
fn a_server_that_is_down_is_an_error_naming_it_within_the_deadline() {
    let Some((mut server, _)) = server() else {
        return;
    };
    let broker = Broker::new(&server.url())
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(300));
    let q = Queue::<u32>::builder().create(&broker, "gone").unwrap();
    server.stop();
    let start = Instant::now();
    let down = q.get_timeout(SHORT).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let Error::Io(e) = &down else {
        panic!("expected an I/O error, got {down}")
    };
    assert!(
        e.to_string().contains(server.socket().to_str().unwrap()),
        "{e}"
    );
}

/// Adds the ACL user `worker`, password `s3cret`, allowed the queues' keys,
/// to the server at `url`.
fn add_worker_user(url: &str) {
    let mut admin = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("worker")
        .arg("on")
        .arg(">s3cret")
        .arg("~ipc:*")
        .arg("+@all")
        .query(&mut admin)
        .unwrap();
}

#[test]
fn an_acl_user_logs_in_by_url_and_a_wrong_password_is_refused() {
    let Some((server, _)) = server() else {
        return;
    };
    add_worker_user(&server.url());
    let socket = server.socket();
    let socket = socket.to_str().unwrap();
    let broker = Broker::new(&format!("redis+unix://{socket}?user=worker&pass=s3cret")).unwrap();
    let q = Queue::<u8>::builder().create(&broker, "acl").unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    let wrong = Broker::new(&format!("redis+unix://{socket}?user=worker&pass=nope")).unwrap();
    let refused = Queue::<u8>::builder().open(&wrong, "acl").unwrap_err();
    assert!(matches!(refused, Error::Authentication(_)), "{refused}");
    assert!(
        !format!("{wrong:?}").contains("nope"),
        "the password stays out of Debug"
    );

    // A user who may not run transactions is refused when the queue is
    // opened, before any put could go in half-checked.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("worker")
        .arg("-@transaction")
        .query(&mut admin(&server))
        .unwrap();
    let refused = Queue::<u8>::builder().open(&broker, "acl").unwrap_err();
    assert!(
        matches!(&refused, Error::Authentication(why) if why.contains("MULTI")),
        "{refused}"
    );
}

/// Puts `count` numbers over TLS, trusting the certificate `pem`.
#[cfg(feature = "tls")]
fn produce_over_tls((url, pem, name, count): (String, String, String, u64)) -> u64 {
    let broker = Broker::new(&url)
        .unwrap()
        .root_certificate(pem.as_bytes())
        .unwrap();
    let q = Queue::<u64>::builder().open(&broker, &name).unwrap();
    for i in 0..count {
        q.put(i).unwrap();
    }
    count
}

#[cfg(feature = "tls")]
#[test]
fn items_cross_tls_and_an_untrusted_certificate_is_refused() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let Some(server) = RedisServer::start_tls(&cert_pem, &key_pem) else {
        return;
    };
    let url = server.tls_url().unwrap();
    let broker = Broker::new(&url)
        .unwrap()
        .root_certificate(cert_pem.as_bytes())
        .unwrap();
    let q = Queue::<u64>::builder().create(&broker, "sealed").unwrap();
    let producer = Process::new()
        .spawn(
            ipc_core::entry!(produce_over_tls),
            &(url.clone(), cert_pem.clone(), "sealed".to_owned(), 50),
        )
        .unwrap();
    for i in 0..50 {
        assert_eq!(q.get_timeout(PATIENCE).unwrap(), i);
    }
    assert_eq!(producer.join_timeout(PATIENCE).unwrap(), 50);
    // The system's roots do not vouch for this certificate.
    let untrusting = Broker::new(&url)
        .unwrap()
        .connect_timeout(Duration::from_millis(300));
    let refused = Queue::<u64>::builder()
        .open(&untrusting, "sealed")
        .unwrap_err();
    assert!(matches!(refused, Error::Io(_)), "{refused}");
}

#[test]
fn items_cross_tcp_with_an_acl_user_in_the_url() {
    let Some(server) = RedisServer::start_tcp() else {
        return;
    };
    let url = server.tcp_url().unwrap();
    add_worker_user(&url);
    let user_url = url.replace("redis://", "redis://worker:s3cret@");
    let broker = Broker::new(&user_url).unwrap();
    assert!(
        broker.address().starts_with("127.0.0.1:"),
        "{}",
        broker.address()
    );
    Queue::<String>::builder().create(&broker, "tcp").unwrap();
    let producer = Process::new()
        .spawn(
            ipc_core::entry!(produce),
            &(
                user_url.clone(),
                "tcp".to_owned(),
                "over tcp".to_owned(),
                20,
            ),
        )
        .unwrap();
    let q = Queue::<String>::builder().open(&broker, "tcp").unwrap();
    for i in 0..20 {
        assert_eq!(q.get_timeout(PATIENCE).unwrap(), format!("over tcp {i}"));
    }
    assert_eq!(producer.join_timeout(PATIENCE).unwrap(), 20);
}

#[test]
fn handles_that_go_away_leave_no_trace_on_the_server() {
    let Some((server, broker)) = server() else {
        return;
    };
    let mut admin = admin(&server);
    let mut count = |command: &str, key: &str| -> usize {
        let mut cmd = redis::cmd(command);
        match command {
            "XINFO" => cmd.arg("CONSUMERS").arg(key).arg("ipc"),
            _ => cmd.arg(key),
        };
        let value: redis::Value = cmd.query(&mut admin).unwrap();
        match value {
            redis::Value::Int(n) => n as usize,
            redis::Value::Array(items) => items.len(),
            other => panic!("{other:?}"),
        }
    };
    let q = Queue::<u32>::builder().create(&broker, "tidy").unwrap();
    let other = q.try_clone().unwrap();
    other.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(count("HLEN", "ipc:{tidy}:producers"), 1);
    assert_eq!(count("XINFO", "ipc:{tidy}:items"), 1);
    drop(other);
    assert_eq!(count("HLEN", "ipc:{tidy}:producers"), 0);
    drop(q);
    assert_eq!(count("XINFO", "ipc:{tidy}:items"), 0);
    // An item pending with a joinable handle keeps its consumer, for
    // another to reclaim it.
    let j = JoinableQueue::<u32>::builder()
        .create(&broker, "kept")
        .unwrap();
    j.put(7).unwrap();
    assert_eq!(j.get().unwrap(), 7);
    drop(j);
    assert_eq!(count("XINFO", "ipc:{kept}:items"), 1);
}

#[test]
fn threads_sharing_a_handle_keep_their_own_deadlines() {
    let Some((_server, broker)) = server() else {
        return;
    };
    let q = std::sync::Arc::new(Queue::<u32>::builder().create(&broker, "shared").unwrap());
    let waiting = std::sync::Arc::clone(&q);
    let long = std::thread::spawn(move || waiting.get_timeout(PATIENCE));
    // Whether or not the other thread's wait has begun, this one's
    // deadline holds.
    let start = Instant::now();
    assert!(matches!(q.get_timeout(SHORT), Err(Error::Timeout)));
    assert_waited(start, SHORT);
    q.put(5).unwrap();
    assert_eq!(long.join().unwrap().unwrap(), 5);
}

#[test]
fn a_waiting_get_takes_a_new_item_over_resp3_too() {
    let Some(server) = RedisServer::start_tcp() else {
        return;
    };
    let url = format!("{}?protocol=resp3", server.tcp_url().unwrap());
    let broker = Broker::new(&url).unwrap();
    let q = Queue::<u32>::builder().create(&broker, "resp3").unwrap();
    let other = q.try_clone().unwrap();
    let getter = std::thread::spawn(move || other.get_timeout(PATIENCE));
    q.put(3).unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), 3);
    assert_eq!(q.qsize().unwrap(), 0);
}

/// Waits until the server lists a client blocked in `command` (lower
/// case, as `CLIENT LIST` names it), for at most [`PATIENCE`].
fn wait_until_blocked_in(admin: &mut redis::Connection, command: &str) {
    let start = Instant::now();
    loop {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
        let blocked = clients.lines().any(|client| {
            let field = |name: &str| {
                client
                    .split(' ')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            field("cmd") == Some(command) && field("flags").is_some_and(|f| f.contains('b'))
        });
        if blocked {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "no client blocked in {command}");
        std::thread::yield_now();
    }
}

/// A get of `q` (through a handle of its own) on another thread, once the
/// server lists it as waiting in its read.
fn get_waiting_on_the_server(
    q: &Queue<u32>,
    admin: &mut redis::Connection,
    timeout: Duration,
) -> std::thread::JoinHandle<ipc_core::Result<u32>> {
    let other = q.try_clone().unwrap();
    let getter = std::thread::spawn(move || other.get_timeout(timeout));
    wait_until_blocked_in(admin, "xreadgroup");
    getter
}

#[test]
fn a_get_waiting_on_the_server_takes_a_put_and_sees_a_close() {
    let Some((server, broker)) = server() else {
        return;
    };
    let mut admin = admin(&server);
    let q = Queue::<u32>::builder().create(&broker, "waiting").unwrap();

    // A get that waits on the server takes the item put while it waits.
    let getter = get_waiting_on_the_server(&q, &mut admin, PATIENCE);
    q.put(5).unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), 5);
    assert_eq!(q.qsize().unwrap(), 0);

    // Closed while a get waits, then a put held back (the stream is moved
    // aside and back under the waiting read): the get says `Closed`.
    let getter = get_waiting_on_the_server(&q, &mut admin, PATIENCE);
    q.close().unwrap();
    assert!(matches!(q.put(6), Err(e) if matches!(e.error, Error::Closed)));
    assert!(matches!(getter.join().unwrap(), Err(Error::Closed)));

    // Deleted while a get waits: the get says so.
    let q = Queue::<u32>::builder().create(&broker, "deleted").unwrap();
    let getter = get_waiting_on_the_server(&q, &mut admin, PATIENCE);
    q.unlink().unwrap();
    assert!(matches!(getter.join().unwrap(), Err(Error::NotFound(_))));
}

#[test]
fn a_get_waiting_through_a_restart_waits_while_the_server_loads() {
    let Some(mut server) = RedisServer::start_with_aof() else {
        return;
    };
    let broker = Broker::new(&server.url()).unwrap();
    let mut admin = admin(&server);
    // Enough keys that the restarted server answers LOADING for a while
    // (fsync left to the system: a restart by signal keeps what was
    // written).
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("no")
        .arg("auto-aof-rewrite-percentage")
        .arg("0")
        .exec(&mut admin)
        .unwrap();
    for chunk in 0..5 {
        redis::cmd("EVAL")
            .arg("for i = 1, 200000 do redis.call('SET', 'pad:' .. ARGV[1] .. ':' .. i, 'x') end")
            .arg(0)
            .arg(chunk)
            .exec(&mut admin)
            .unwrap();
    }
    let q = Queue::<u32>::builder().create(&broker, "reloaded").unwrap();
    let getter = get_waiting_on_the_server(&q, &mut admin, LONG);
    server.restart();
    q.put(7).unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), 7);
}

/// How many times `INFO commandstats` says `command` was called, refused
/// or failed.
fn times_sent(admin: &mut redis::Connection, command: &str) -> u64 {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = stats.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else {
        return 0;
    };
    let count = |name: &str| -> u64 {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    count("calls") + count("rejected_calls") + count("failed_calls")
}

#[test]
fn a_get_waiting_when_its_server_turns_read_only_fails_at_once() {
    let Some((server, broker)) = server() else {
        return;
    };
    let mut admin = admin(&server);
    let q = Queue::<u32>::builder().create(&broker, "demoted").unwrap();
    let getter = get_waiting_on_the_server(&q, &mut admin, LONG);
    // A master that nothing listens on: the server keeps its data and
    // serves it read-only, as an old master does after a failover.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut admin)
        .unwrap();
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .exec(&mut admin)
        .unwrap();
    let got = getter.join().unwrap();
    let reads = times_sent(&mut admin, "xreadgroup");
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut admin)
        .unwrap();
    // Refused, said once: not a look again at once, until the deadline.
    assert!(
        matches!(&got, Err(Error::Broker(e)) if e.contains("read only")),
        "{got:?}"
    );
    assert!(reads < 5, "{reads} reads");
}

#[test]
fn a_get_of_a_queue_whose_stream_went_away_says_it_is_gone() {
    let Some((server, broker)) = server() else {
        return;
    };
    let mut admin = admin(&server);
    let q = Queue::<u32>::builder().create(&broker, "evicted").unwrap();
    // The stream alone goes away (evicted, or deleted by hand); `meta`
    // stays.
    redis::cmd("DEL")
        .arg("ipc:{evicted}:items")
        .exec(&mut admin)
        .unwrap();
    assert!(matches!(q.get_timeout(PATIENCE), Err(Error::NotFound(_))));
}
