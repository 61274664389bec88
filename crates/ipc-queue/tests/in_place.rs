//! In-place puts and gets: between real processes, mixed with the copying
//! forms, and with a producer or a consumer SIGKILLed while it holds a
//! reservation or a borrowed item.

use std::time::{Duration, Instant};

use ipc_core::process::{Child, Process};
use ipc_core::Error;
use ipc_queue::{JoinableQueue, Queue};
use ipc_shm::Event;
use ipc_testkit::{join, join_ok, pattern};
use serde::{Deserialize, Serialize};

/// How long a test waits for a child to reach the point it is killed at.
const PATIENCE: Duration = Duration::from_secs(10);

/// Forks a producer (or consumer) with `q`'s handle that runs `body`.
fn fork_with<Q: ipc_core::process::Inheritable>(
    q: &Q,
    body: impl FnOnce() -> ipc_core::Result<()>,
) -> Child {
    fork_with_events(q, &[], body)
}

/// [`fork_with`], passing `events` to the child too.
fn fork_with_events<Q: ipc_core::process::Inheritable>(
    q: &Q,
    events: &[&Event],
    body: impl FnOnce() -> ipc_core::Result<()>,
) -> Child {
    let mut process = Process::new().allow_threads().pass("q", q).unwrap();
    for (i, event) in events.iter().enumerate() {
        process = process.pass(&format!("event-{i}"), *event).unwrap();
    }
    process.fork(body).unwrap()
}

/// Forks a child that runs `hold` (which makes a reservation or borrows
/// an item), sets `holding` and then waits to be killed; kills it once it
/// holds and reaps it.
fn kill_while_holding(queue_handle: &impl ipc_core::process::Inheritable, hold: impl FnOnce()) {
    let holding = Event::new().unwrap();
    let mut child: Child = Process::new()
        .allow_threads()
        .pass("q", queue_handle)
        .unwrap()
        .pass("holding", &holding)
        .unwrap()
        .fork({
            let holding = &holding;
            move || -> () {
                hold();
                holding.set();
                // Killed here; parking is not a synchronisation, the
                // parent waits on the event.
                loop {
                    std::thread::park();
                }
            }
        })
        .unwrap();
    assert!(
        holding.wait_timeout(PATIENCE),
        "the child never held its item"
    );
    child.kill().unwrap();
    let status = join(&mut child);
    assert!(!status.success(), "killed, not exited: {status:?}");
}

#[test]
fn a_producer_killed_holding_a_reservation_leaves_no_item_and_no_space() {
    let q = Queue::<Vec<u8>>::builder()
        .capacity(64 << 10)
        .anonymous()
        .unwrap();
    q.put_bytes(b"before").unwrap();
    kill_while_holding(&q, || {
        let mut room = q.reserve(40 << 10).unwrap();
        room[..20 << 10].fill(0xAB);
        std::mem::forget(room); // never committed, never dropped
    });
    assert_eq!(q.qsize(), 1, "the reservation made no item");
    assert_eq!(q.get_bytes().unwrap(), b"before");
    // All of the ring is free again: an item that fits only an empty
    // ring goes in at once.
    let big = pattern(7, (64 << 10) - 64);
    q.put_bytes_nowait(&big).unwrap();
    assert_eq!(q.get_bytes_nowait().unwrap(), big);
    assert!(q.recoveries() >= 1, "the next producer saw the holder die");
    assert_eq!(q.used_bytes(), 0);
}

#[test]
fn a_consumer_killed_holding_a_borrowed_item_leaves_it_for_the_next_get() {
    let q = JoinableQueue::<Vec<u8>>::new().unwrap();
    let first = pattern(1, 3000);
    q.put_bytes(&first).unwrap();
    q.put_bytes(b"second").unwrap();
    kill_while_holding(&q, || {
        let item = q.get_in_place().unwrap();
        assert_eq!(&item[..], &first[..]);
        std::mem::forget(item);
    });
    // Delivered again: at least once for borrowed gets.
    let again = q.get_in_place_timeout(PATIENCE).unwrap();
    assert_eq!(&again[..], &first[..]);
    again.release().unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"second");
    assert_eq!(q.unfinished_tasks(), 2, "gets leave the count alone");
    q.task_done().unwrap();
    q.task_done().unwrap();
    q.join_timeout(PATIENCE).unwrap();
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Frame {
    seq: u32,
    name: String,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
}

/// A [`Frame`] read where it lies.
#[derive(Deserialize)]
struct FrameRef<'a> {
    seq: u32,
    name: &'a str,
    pixels: &'a [u8],
}

fn frame(seq: u32) -> Frame {
    let len = (seq as usize * 7919) % 20_000;
    Frame {
        seq,
        name: format!("frame {seq}"),
        pixels: pattern(u64::from(seq), len),
    }
}

#[test]
fn items_written_and_read_in_place_cross_processes_around_the_ring() {
    const ITEMS: u32 = 2000;
    // A small ring, so records wrap around it many times.
    let q = Queue::<Frame>::builder()
        .capacity(64 << 10)
        .anonymous()
        .unwrap();
    let mut producer = fork_with(&q, {
        let q = &q;
        move || -> ipc_core::Result<()> {
            for seq in 0..ITEMS {
                match seq % 3 {
                    0 => q.put_in_place(&frame(seq))?,
                    // Bytes written in place, as a typed getter reads them.
                    1 => {
                        let mut bytes = Vec::new();
                        ipc_core::codec::encode_into(&frame(seq), &mut bytes)?;
                        let mut room = q.reserve(bytes.len() + 100)?;
                        room[..bytes.len()].copy_from_slice(&bytes);
                        room.truncate(bytes.len());
                        room.commit()?;
                    }
                    _ => q.put(frame(seq)).map_err(|e| e.error)?,
                }
            }
            Ok(())
        }
    });
    for seq in 0..ITEMS {
        let want = frame(seq);
        if seq % 2 == 0 {
            let item = q.get_in_place_timeout(PATIENCE).unwrap();
            let got: FrameRef<'_> = item.decode().unwrap();
            assert_eq!(
                (got.seq, got.name, got.pixels),
                (want.seq, &want.name[..], &want.pixels[..])
            );
        } else {
            assert_eq!(q.get_timeout(PATIENCE).unwrap(), want);
        }
    }
    join_ok(&mut producer);
    assert!(q.empty());
}

#[test]
fn full_agrees_with_a_put_while_items_are_taken_behind_a_borrow() {
    let q = Queue::<u64>::builder()
        .maxsize(2)
        .capacity(4096)
        .anonymous()
        .unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert!(q.full());
    let first = q.get_in_place().unwrap();
    // Taken behind the borrow: no longer an item, but its record keeps its
    // place in the ring until the borrow before it ends.
    assert_eq!(q.get_nowait().unwrap(), 2);
    assert!(q.qsize() < q.maxsize());
    assert!(q.full());
    assert!(matches!(q.put_nowait(3), Err(e) if matches!(e.error, Error::Full)));
    first.release().unwrap();
    assert!(!q.full());
    q.put_nowait(3).unwrap();
    assert_eq!(q.get().unwrap(), 3);
}

#[test]
fn full_agrees_with_a_put_while_a_reservation_is_open() {
    let q = Queue::<u64>::builder()
        .maxsize(1)
        .capacity(4096)
        .anonymous()
        .unwrap();
    let reservation = q.reserve(8).unwrap();
    assert!(q.full());
    assert!(matches!(q.put_nowait(3), Err(e) if matches!(e.error, Error::Full)));
    drop(reservation);
    assert!(!q.full());
    q.put_nowait(3).unwrap();
}

#[test]
fn an_abandoned_reservation_and_a_restored_item_leave_the_queue_as_it_was() {
    let q = Queue::<u32>::new().unwrap();
    q.put(1).unwrap();
    drop(q.reserve(64).unwrap());
    assert_eq!(q.qsize(), 1);
    let item = q.get_in_place().unwrap();
    assert_eq!(item.decode::<u32>().unwrap(), 1);
    item.restore();
    assert_eq!(q.qsize(), 1);
    // A panic while the item is borrowed leaves it too.
    let panicked = std::panic::catch_unwind(|| {
        let _item = q.get_in_place().unwrap();
        panic!("while borrowed");
    });
    assert!(panicked.is_err());
    assert_eq!(q.get().unwrap(), 1);
    // An empty reservation is an empty item.
    q.reserve(0).unwrap().commit().unwrap();
    assert!(q.get_in_place().unwrap().is_empty());
}

#[test]
fn puts_behind_this_threads_reservation_go_in_and_come_after_it() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    let mut room = q.reserve(16).unwrap();
    // Other producers (here, this thread) go on: their items wait behind
    // the reservation, published once it is.
    q.put_bytes_nowait(b"x").unwrap();
    q.put_bytes(b"y").unwrap();
    assert_eq!(q.qsize(), 0, "nothing is published before the reservation");
    // A get that only this thread's reservation could end fails at once.
    let start = Instant::now();
    assert!(matches!(
        q.get_bytes_timeout(PATIENCE),
        Err(Error::InvalidArgument(_))
    ));
    assert!(start.elapsed() < PATIENCE / 2, "it did not wait for itself");
    room[..5].copy_from_slice(b"first");
    room.truncate(5);
    room.commit().unwrap();
    for expected in [&b"first"[..], b"x", b"y"] {
        assert_eq!(q.get_bytes_nowait().unwrap(), expected);
    }
    // Given up with items behind it, a reservation leaves a void the gets
    // step over; given up as the newest, it leaves nothing.
    let room = q.reserve(100).unwrap();
    q.put_bytes(b"after").unwrap();
    drop(room);
    drop(q.reserve(100).unwrap());
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get_bytes_nowait().unwrap(), b"after");
    assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
    assert_eq!(q.used_bytes(), 0);
}

#[test]
fn reservations_committed_out_of_order_publish_in_order() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    let (reserved, committed) = (Event::new().unwrap(), Event::new().unwrap());
    let mut first = q.reserve(8).unwrap();
    let mut other = fork_with_events(&q, &[&reserved, &committed], {
        let (q, reserved, committed) = (&q, &reserved, &committed);
        move || -> ipc_core::Result<()> {
            // A second reservation while the first is open, committed
            // first.
            let mut second = q.reserve_nowait(6)?;
            reserved.set();
            second.copy_from_slice(b"second");
            second.commit()?;
            committed.set();
            Ok(())
        }
    });
    assert!(reserved.wait_timeout(PATIENCE), "no second reservation");
    assert!(
        committed.wait_timeout(PATIENCE),
        "the second never committed"
    );
    join_ok(&mut other);
    assert!(
        matches!(q.get_bytes_nowait(), Err(Error::Empty)),
        "in order"
    );
    first.copy_from_slice(b"first...");
    first.commit().unwrap();
    assert_eq!(q.get_bytes_nowait().unwrap(), b"first...");
    assert_eq!(q.get_bytes_nowait().unwrap(), b"second");
}

#[test]
fn items_behind_a_producer_killed_holding_a_reservation_still_arrive() {
    let q = JoinableQueue::<Vec<u8>>::builder()
        .capacity(64 << 10)
        .anonymous()
        .unwrap();
    let holding = Event::new().unwrap();
    let mut holder = Process::new()
        .allow_threads()
        .pass("q", &q)
        .unwrap()
        .pass("holding", &holding)
        .unwrap()
        .fork({
            let (q, holding) = (&q, &holding);
            move || -> () {
                let mut room = q.reserve(20 << 10).unwrap();
                room[..10 << 10].fill(0xAB);
                holding.set();
                // Killed here; the parent waits on the event.
                loop {
                    std::thread::park();
                }
            }
        })
        .unwrap();
    assert!(holding.wait_timeout(PATIENCE), "no reservation");
    // An item put behind the reservation, then no producer any more: the
    // waiting consumer itself finds the claimant gone.
    q.put_bytes(b"after").unwrap();
    let got = std::thread::scope(|scope| {
        let consumer = scope.spawn(|| q.get_bytes_timeout(PATIENCE));
        holder.kill().unwrap();
        assert!(!join(&mut holder).success());
        consumer.join().unwrap()
    });
    assert_eq!(got.unwrap(), b"after");
    assert!(q.recoveries() >= 1, "the claimant's death was seen");
    // The void counts as no put: one item, one task_done, and join ends.
    assert_eq!(q.unfinished_tasks(), 1);
    q.task_done().unwrap();
    q.join_timeout(PATIENCE).unwrap();
    // The ring is whole again.
    let big = pattern(7, (64 << 10) - 64);
    q.put_bytes_nowait(&big).unwrap();
    assert_eq!(q.get_bytes_nowait().unwrap(), big);
}

#[test]
fn a_claimant_that_died_holds_up_neither_join_nor_a_get_that_may_not_wait() {
    let q = JoinableQueue::<Vec<u8>>::new().unwrap();
    kill_while_holding(&q, || std::mem::forget(q.reserve(100).unwrap()));
    // Found by join: the claim counted as unfinished until then.
    q.join_timeout(PATIENCE).unwrap();
    kill_while_holding(&q, || std::mem::forget(q.reserve(100).unwrap()));
    q.put_bytes(b"behind").unwrap();
    // Found by a get that may not wait, which then takes the item.
    assert_eq!(q.get_bytes_nowait().unwrap(), b"behind");
    q.task_done().unwrap();
    q.join_timeout(PATIENCE).unwrap();
    assert!(q.recoveries() >= 2);
}

#[test]
fn a_put_that_only_this_threads_reservation_could_let_in_fails_at_once() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    let _room = q.reserve(8).unwrap();
    // Every claim slot taken: the reservation and 15 puts behind it.
    for _ in 0..15 {
        q.put_bytes(b"x").unwrap();
    }
    let start = Instant::now();
    assert!(matches!(
        q.put_bytes_timeout(b"x", PATIENCE),
        Err(Error::InvalidArgument(_))
    ));
    assert!(start.elapsed() < PATIENCE / 2, "it did not wait for itself");
}

#[test]
fn a_closed_queue_is_drained_of_an_item_being_published() {
    // A getter that polls a closed queue while a reservation is committed
    // sees the item or an empty queue, never `Closed` before the item.
    for _ in 0..5000 {
        let q = Queue::<Vec<u8>>::new().unwrap();
        let mut room = q.reserve(4).unwrap();
        room.copy_from_slice(b"last");
        q.close().unwrap();
        std::thread::scope(|scope| {
            let getter = scope.spawn(|| loop {
                match q.get_bytes_nowait() {
                    Err(Error::Empty) => continue,
                    other => return other,
                }
            });
            room.commit().unwrap();
            assert_eq!(getter.join().unwrap().unwrap(), b"last");
        });
        assert!(matches!(q.get_bytes_nowait(), Err(Error::Closed)));
    }
}

#[test]
fn sizes_past_the_ring_and_commits_past_the_reservation_are_refused() {
    let q = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .anonymous()
        .unwrap();
    assert!(matches!(q.reserve(4096), Err(Error::TooLarge { .. })));
    assert!(matches!(
        q.reserve_nowait(5000),
        Err(Error::TooLarge { .. })
    ));
    let mut room = q.reserve(100).unwrap();
    room.truncate(1000); // never longer than reserved
    assert_eq!(room.len(), 100);
    room.commit().unwrap();
    assert_eq!(q.get_bytes().unwrap().len(), 100);
    assert!(matches!(q.get_in_place_nowait(), Err(Error::Empty)));
    q.close().unwrap();
    assert!(matches!(q.reserve(8), Err(Error::Closed)));
    assert!(matches!(q.get_in_place(), Err(Error::Closed)));
}

#[test]
fn an_open_reservation_holds_up_neither_producers_nor_consumers() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    q.put_bytes(b"queued").unwrap();
    let (reserved, checked) = (Event::new().unwrap(), Event::new().unwrap());
    let mut other = fork_with_events(&q, &[&reserved, &checked], {
        let (q, reserved, checked) = (&q, &reserved, &checked);
        move || -> ipc_core::Result<()> {
            assert!(reserved.wait_timeout(PATIENCE));
            // A consumer goes on while a producer holds its reservation,
            let start = Instant::now();
            assert_eq!(q.get_bytes_nowait()?, b"queued");
            // and so does another producer, whose item comes after the
            // reservation's.
            q.put_bytes_nowait(b"other")?;
            assert!(start.elapsed() < PATIENCE / 2);
            assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
            checked.set();
            Ok(())
        }
    });
    let mut room = q.reserve(5).unwrap();
    reserved.set();
    assert!(
        checked.wait_timeout(PATIENCE),
        "the other process never checked"
    );
    join_ok(&mut other);
    room.copy_from_slice(b"first");
    room.commit().unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"first");
    assert_eq!(q.get_bytes().unwrap(), b"other");
}

#[test]
fn large_items_go_back_to_the_start_of_the_ring_and_arrive_whole() {
    // Items of 1 to 2 MiB, which go at the start of the ring whenever it is
    // free (an empty ring moves back, a wrap comes early): between
    // processes, in order, intact, whatever the mix of gets.
    const ITEMS: u64 = 60;
    let len = |i: u64| (1 << 20) + (i as usize * 104_729) % (1 << 20);
    let q = Queue::<()>::builder()
        .capacity(7 << 20)
        .anonymous()
        .unwrap();
    let mut producer = fork_with(&q, {
        let q = &q;
        move || -> ipc_core::Result<()> {
            for i in 0..ITEMS {
                let item = pattern(i, len(i));
                if i % 2 == 0 {
                    let mut room = q.reserve_timeout(item.len(), PATIENCE)?;
                    room.copy_from_slice(&item);
                    room.commit()?;
                } else {
                    q.put_bytes_timeout(&item, PATIENCE)?;
                }
            }
            Ok(())
        }
    });
    for i in 0..ITEMS {
        let want = pattern(i, len(i));
        if i % 3 == 0 {
            assert_eq!(q.get_bytes_timeout(PATIENCE).unwrap(), want, "item {i}");
        } else {
            let item = q.get_in_place_timeout(PATIENCE).unwrap();
            assert!(item[..] == want[..], "item {i}");
        }
    }
    join_ok(&mut producer);
    assert!(q.empty());
}

#[test]
fn a_guard_copied_into_a_forked_child_does_not_touch_the_queue_there() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    let mut room = q.reserve(100).unwrap();
    room.fill(7);
    // The closure, and the reservation in it, is copied into the child;
    // the parent's copy is dropped when `fork` returns (no item).
    let mut child = Process::new()
        .allow_threads()
        .fork(move || match room.commit() {
            Err(Error::InvalidArgument(_)) => 0,
            _ => 1,
        })
        .unwrap();
    join_ok(&mut child);
    q.put_bytes(b"parent").unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"parent");
    assert!(q.empty(), "the child made no item");

    q.put_bytes(b"borrowed").unwrap();
    let item = q.get_in_place().unwrap();
    let mut child = Process::new()
        .allow_threads()
        .fork(move || {
            // Reading it in the child is refused: the parent goes on and
            // may reuse the bytes.
            let read = std::panic::catch_unwind(|| item.len());
            std::mem::forget(item);
            if read.is_err() {
                0
            } else {
                1
            }
        })
        .unwrap();
    join_ok(&mut child);
    assert!(
        q.empty(),
        "the parent's copy, dropped by fork, took the item"
    );
}

#[test]
fn a_wait_only_this_threads_own_guard_could_end_is_refused() {
    // Holding the only item of a full queue and putting: no other consumer
    // can make room while this thread holds the item at the head.
    let q = Queue::<Vec<u8>>::with_maxsize(1).unwrap();
    q.put_bytes(b"only").unwrap();
    let item = q.get_in_place().unwrap();
    let start = Instant::now();
    assert!(matches!(
        q.put_bytes_timeout(b"more", PATIENCE),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(q.put_bytes_nowait(b"more"), Err(Error::Full)));
    item.release().unwrap();
    q.put_bytes(b"more").unwrap();
    // Holding a reservation and getting from an empty queue: whatever
    // other producers put waits behind this thread's claim.
    let q = Queue::<Vec<u8>>::new().unwrap();
    let room = q.reserve(4).unwrap();
    assert!(matches!(
        q.get_bytes_timeout(PATIENCE),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
    drop(room);
    assert!(start.elapsed() < PATIENCE / 2, "nothing waited for itself");
}

#[test]
fn scoped_threads_read_one_borrowed_item_together() {
    let q = Queue::<()>::new().unwrap();
    let item = pattern(3, 64 << 10);
    q.put_bytes(&item).unwrap();
    let borrowed = q.get_in_place().unwrap();
    let halves: Vec<bool> = std::thread::scope(|s| {
        let borrowed = &borrowed;
        let (left, right) = item.split_at(item.len() / 2);
        let a = s.spawn(move || borrowed[..left.len()] == *left);
        let b = s.spawn(move || borrowed[left.len()..] == *right);
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(halves, [true, true]);
    borrowed.release().unwrap();
    assert!(q.empty());
}

#[test]
fn an_open_borrow_holds_up_neither_consumers_nor_producers() {
    let q = Queue::<Vec<u8>>::builder()
        .capacity(64 << 10)
        .anonymous()
        .unwrap();
    for k in 0..3 {
        q.put_bytes(&pattern(k, 1000)).unwrap();
    }
    let first = q.get_in_place().unwrap();
    let checked = Event::new().unwrap();
    let mut other = fork_with_events(&q, &[&checked], {
        let (q, checked) = (&q, &checked);
        move || -> ipc_core::Result<()> {
            // Other consumers go on past a borrowed item, in place and
            // copying, and so do producers.
            let second = q.get_in_place_nowait()?;
            assert_eq!(&second[..], &pattern(1, 1000)[..]);
            second.release()?;
            assert_eq!(q.get_bytes_nowait()?, pattern(2, 1000));
            q.put_bytes_nowait(b"later")?;
            assert_eq!(q.get_bytes_nowait()?, b"later");
            assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
            checked.set();
            Ok(())
        }
    });
    assert!(
        checked.wait_timeout(PATIENCE),
        "the other process never checked"
    );
    join_ok(&mut other);
    // The items after the borrowed one are gone, but their space comes
    // back only with it: the head moves in order.
    assert_eq!(q.qsize(), 1);
    assert_eq!(&first[..], &pattern(0, 1000)[..]);
    first.release().unwrap();
    assert_eq!((q.qsize(), q.used_bytes()), (0, 0));
}

#[test]
fn borrows_released_out_of_order_free_the_ring_in_order() {
    let q = JoinableQueue::<Vec<u8>>::new().unwrap();
    for k in 0..3 {
        q.put_bytes(&pattern(k, 500)).unwrap();
    }
    let used = q.used_bytes();
    let (a, b) = (q.get_in_place().unwrap(), q.get_in_place().unwrap());
    assert_eq!(&b[..], &pattern(1, 500)[..]);
    b.release().unwrap();
    assert_eq!(q.used_bytes(), used, "the first is still borrowed");
    // Given back, the first comes before the third.
    a.restore();
    assert_eq!(q.get_bytes().unwrap(), pattern(0, 500));
    assert_eq!(q.get_bytes().unwrap(), pattern(2, 500));
    assert_eq!((q.qsize(), q.used_bytes()), (0, 0));
    assert_eq!(q.unfinished_tasks(), 3);
}

#[test]
fn a_killed_borrower_behind_a_live_one_has_its_item_delivered_again() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    for k in 0..3 {
        q.put_bytes(&pattern(k, 800)).unwrap();
    }
    let first = q.get_in_place().unwrap();
    kill_while_holding(&q, || {
        let second = q.get_in_place().unwrap();
        assert_eq!(&second[..], &pattern(1, 800)[..]);
        std::mem::forget(second);
    });
    // Releasing the first finds the second's borrower dead: the next get
    // takes the second again, then the third.
    first.release().unwrap();
    assert_eq!(q.get_bytes_nowait().unwrap(), pattern(1, 800));
    assert_eq!(q.get_bytes_nowait().unwrap(), pattern(2, 800));
    assert_eq!((q.qsize(), q.used_bytes()), (0, 0));
    assert!(q.recoveries() >= 1, "the getter saw the borrower die");
}

#[test]
fn a_getter_of_a_closed_queue_waits_for_the_borrows_and_then_is_told() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    q.put_bytes(b"only").unwrap();
    q.close().unwrap();
    let item = q.get_in_place().unwrap();
    let waiting = Event::new().unwrap();
    let mut other = fork_with_events(&q, &[&waiting], {
        let (q, waiting) = (&q, &waiting);
        move || -> ipc_core::Result<()> {
            // A borrowed item may still come back: not `Closed` yet.
            assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
            waiting.set();
            let start = Instant::now();
            // Given back by the other consumer, it comes here; then the
            // queue is drained. Woken by the give-back, not by a timer.
            assert_eq!(q.get_bytes_timeout(PATIENCE)?, b"only");
            assert!(start.elapsed() < ipc_shm::raw::SAFETY_NET, "woken");
            assert!(matches!(q.get_bytes_nowait(), Err(Error::Closed)));
            Ok(())
        }
    });
    assert!(waiting.wait_timeout(PATIENCE), "the other never waited");
    item.restore();
    join_ok(&mut other);
    // This thread holds none now: drained.
    assert!(matches!(q.get_bytes_nowait(), Err(Error::Closed)));
}

#[test]
fn two_consumers_reading_in_place_take_every_item_once() {
    const ITEMS: u32 = 2000;
    let q = JoinableQueue::<Vec<u8>>::builder()
        .capacity(256 << 10)
        .anonymous()
        .unwrap();
    fn consume(q: &JoinableQueue<Vec<u8>>) -> impl FnOnce() -> ipc_core::Result<()> + '_ {
        move || loop {
            match q.get_in_place() {
                Ok(item) => {
                    let k = u32::from_le_bytes(item[..4].try_into().unwrap());
                    let len = 4 + (k as usize * 37) % 9000;
                    assert_eq!(item.len(), len);
                    assert_eq!(&item[4..], &pattern(u64::from(k), len - 4)[..]);
                    q.task_done_with(item)?;
                }
                Err(Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    let mut consumers = [fork_with(&q, consume(&q)), fork_with(&q, consume(&q))];
    for k in 0..ITEMS {
        let len = 4 + (k as usize * 37) % 9000;
        let mut room = q.reserve(len).unwrap();
        room[..4].copy_from_slice(&k.to_le_bytes());
        room[4..].copy_from_slice(&pattern(u64::from(k), len - 4));
        room.commit().unwrap();
    }
    // Every item taken once: a second delivery would be a task done more
    // times than there were items.
    q.join_timeout(PATIENCE).unwrap();
    q.close().unwrap();
    for consumer in &mut consumers {
        join_ok(consumer);
    }
    assert_eq!((q.qsize(), q.used_bytes(), q.unfinished_tasks()), (0, 0, 0));
}

#[test]
fn closed_is_not_said_while_another_process_holds_an_item_that_may_come_back() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    q.put_bytes(b"mine").unwrap();
    q.put_bytes(b"theirs").unwrap();
    let mine = q.get_in_place().unwrap();
    let (holding, give_back) = (Event::new().unwrap(), Event::new().unwrap());
    let mut other = fork_with_events(&q, &[&holding, &give_back], {
        let (q, holding, give_back) = (&q, &holding, &give_back);
        move || -> ipc_core::Result<()> {
            let theirs = q.get_in_place()?;
            assert_eq!(&theirs[..], b"theirs");
            holding.set();
            assert!(give_back.wait_timeout(PATIENCE));
            theirs.restore();
            Ok(())
        }
    });
    assert!(holding.wait_timeout(PATIENCE), "the other never borrowed");
    q.close().unwrap();
    // This thread holds an item, but so does the other process.
    assert!(matches!(q.get_bytes_nowait(), Err(Error::Empty)));
    give_back.set();
    assert_eq!(q.get_bytes_timeout(PATIENCE).unwrap(), b"theirs");
    join_ok(&mut other);
    assert!(matches!(q.get_bytes_nowait(), Err(Error::Closed)));
    mine.release().unwrap();
    assert!(matches!(q.get_bytes_nowait(), Err(Error::Closed)));
    assert_eq!(q.used_bytes(), 0);
}
