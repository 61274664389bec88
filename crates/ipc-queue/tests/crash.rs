//! Crash safety: producers and consumers killed with SIGKILL at random
//! moments, over 200 rounds. Each child either blocks in `put`/`get` or
//! retries `put_nowait`/`get_nowait` without sleeping (so that more kills
//! land while it holds one of the queue's locks). Every item whose put
//! returned `Ok` must be delivered exactly once, except at most one per
//! killed consumer (the item it had taken off when it died); each
//! producer's items arrive in order; the queue never deadlocks.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ipc_core::process::{Child, Process};
use ipc_core::Error;
use ipc_queue::Queue;
use ipc_shm::RawArray;
use ipc_testkit::Rng;

const ROUNDS: usize = 200;
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
const ITEMS: u32 = 200;
const ROUND_LIMIT: Duration = Duration::from_secs(10);

/// An item on the wire (the bytes API): producer, sequence number, and a
/// padding of 0 to 3000 bytes that depends on both, so items vary in size
/// (long copies under the lock, records that wrap) and a torn or mixed-up
/// item is noticed.
type Item = (u8, u32);

fn padding_len(p: u8, seq: u32) -> usize {
    ((u64::from(seq) * 2_654_435_761 + u64::from(p) * 40_503) % 3001) as usize
}

fn wire((p, seq): Item) -> Vec<u8> {
    let mut bytes = vec![p];
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.resize(5 + padding_len(p, seq), (seq as u8) ^ p);
    bytes
}

/// The item, if its bytes are intact.
fn check(bytes: Vec<u8>) -> Option<Item> {
    let p = *bytes.first()?;
    let seq = u32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?);
    let pad = &bytes[5..];
    (usize::from(p) < PRODUCERS
        && pad.len() == padding_len(p, seq)
        && pad.iter().all(|&b| b == (seq as u8) ^ p))
    .then_some((p, seq))
}

fn code((p, seq): Item) -> u64 {
    (u64::from(p) + 1) << 32 | (u64::from(seq) + 1)
}

fn decode(code: u64) -> Item {
    (((code >> 32) - 1) as u8, ((code & 0xffff_ffff) - 1) as u32)
}

/// Kills `child`, preferably at a moment when it is on a CPU (state `R`
/// in `/proc/<pid>/stat`), where it may be holding the queue's lock; gives
/// up waiting for that after a millisecond.
fn kill_while_running(child: &mut Child) {
    let path = format!("/proc/{}/stat", child.pid());
    let until = Instant::now() + Duration::from_millis(1);
    while Instant::now() < until {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('R'))
        {
            break;
        }
    }
    child.kill().unwrap();
}

/// Checks that each producer's items appear in increasing order in `seen`.
fn assert_in_order(seen: &[Item], who: &str, seed: u64) {
    let mut last = [None::<u32>; PRODUCERS];
    for &(p, seq) in seen {
        if let Some(prev) = last[p as usize] {
            assert!(
                seq > prev,
                "seed {seed:#x}: {who} got producer {p}'s item {seq} after {prev}"
            );
        }
        last[p as usize] = Some(seq);
    }
}

/// Runs one round; returns how often the queue recovered a dead holder's
/// lock.
fn round(seed: u64) -> u32 {
    let mut rng = Rng::new(seed | 1);
    let start = Instant::now();
    let capacity = 3100 + 8 * rng.below(1024) as usize;
    let maxsize = [0, 1, 3, 16][rng.below(4) as usize];
    let q = Queue::<()>::builder()
        .capacity(capacity)
        .maxsize(maxsize)
        .anonymous()
        .unwrap();
    let acked = RawArray::<u64>::zeroed(PRODUCERS).unwrap();
    let log_len = PRODUCERS * ITEMS as usize;
    let logs = RawArray::<u64>::zeroed(CONSUMERS * log_len).unwrap();

    let mut children: Vec<Child> = Vec::new();
    for p in 0..PRODUCERS {
        let busy = rng.below(2) == 0;
        let child = Process::new()
            .allow_threads()
            .pass("q", &q)
            .unwrap()
            .pass("acked", &acked)
            .unwrap()
            .fork({
                let (q, acked) = (&q, &acked);
                move || -> ipc_core::Result<()> {
                    for seq in 0..ITEMS {
                        let item = wire((p as u8, seq));
                        if busy {
                            // Never sleeps: more of its time is spent
                            // holding the lock, where a kill hurts most.
                            loop {
                                match q.put_bytes_nowait(&item) {
                                    Ok(()) => break,
                                    Err(Error::Full) => std::thread::yield_now(),
                                    Err(e) => return Err(e),
                                }
                            }
                        } else {
                            q.put_bytes_timeout(&item, ROUND_LIMIT)?;
                        }
                        acked.set(p, u64::from(seq) + 1)?;
                    }
                    Ok(())
                }
            })
            .unwrap();
        children.push(child);
    }
    for c in 0..CONSUMERS {
        let busy = rng.below(2) == 0;
        let child = Process::new()
            .allow_threads()
            .pass("q", &q)
            .unwrap()
            .pass("logs", &logs)
            .unwrap()
            .fork({
                let (q, logs) = (&q, &logs);
                move || -> ipc_core::Result<()> {
                    let mut k = 0;
                    loop {
                        let got = if busy {
                            match q.get_bytes_nowait() {
                                Err(Error::Empty) => {
                                    std::thread::yield_now();
                                    continue;
                                }
                                other => other,
                            }
                        } else {
                            q.get_bytes_timeout(ROUND_LIMIT)
                        };
                        match got {
                            Ok(item) => {
                                let Some(item) = check(item) else {
                                    return Err(Error::InvalidArgument("a torn item"));
                                };
                                logs.set(c * log_len + k, code(item))?;
                                k += 1;
                            }
                            Err(Error::Closed) => return Ok(()),
                            Err(e) => return Err(e),
                        }
                    }
                }
            })
            .unwrap();
        children.push(child);
    }

    // Which children die, and after how many puts in all.
    let mut kill_at: Vec<Option<u64>> = (0..children.len())
        .map(|_| (rng.below(2) == 0).then(|| rng.below(u64::from(ITEMS) * 2)))
        .collect();
    let killed: Vec<bool> = kill_at.iter().map(Option::is_some).collect();
    let killed_consumers = killed[PRODUCERS..].iter().filter(|k| **k).count();

    let mut mine: Vec<Item> = Vec::new();
    loop {
        assert!(
            start.elapsed() < ROUND_LIMIT,
            "seed {seed:#x}: round too slow"
        );
        // Progress: items acknowledged to the producers so far.
        let progress = (0..PRODUCERS).map(|p| acked.get(p).unwrap()).sum::<u64>();
        for (i, at) in kill_at.iter_mut().enumerate() {
            if at.is_some_and(|at| at <= progress) {
                kill_while_running(&mut children[i]);
                *at = None;
            }
        }
        if kill_at.iter().all(Option::is_none) {
            break;
        }
        // Take an item now and then (the consumers may be dead), without
        // sleeping, so the kills follow the progress closely.
        match q.get_bytes_nowait() {
            Ok(item) => mine.push(check(item).expect("a torn item")),
            Err(Error::Empty) => {
                let producers_done = children[..PRODUCERS]
                    .iter_mut()
                    .all(|c| c.try_join().unwrap().is_some());
                if producers_done {
                    // Nothing more will come: kill the rest now.
                    for at in kill_at.iter_mut().filter(|a| a.is_some()) {
                        *at = Some(0);
                    }
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("seed {seed:#x}: parent get: {e:?}"),
        }
    }
    // Keep taking items (the consumers may all be dead) until every
    // producer has finished or died.
    while !children[..PRODUCERS]
        .iter_mut()
        .all(|c| c.try_join().unwrap().is_some())
    {
        assert!(
            start.elapsed() < ROUND_LIMIT,
            "seed {seed:#x}: producers hang"
        );
        match q.get_bytes_timeout(Duration::from_millis(20)) {
            Ok(item) => mine.push(check(item).expect("a torn item")),
            Err(Error::Timeout) => {}
            Err(e) => panic!("seed {seed:#x}: parent get: {e:?}"),
        }
    }
    for (i, child) in children[..PRODUCERS].iter_mut().enumerate() {
        let status = child
            .join_timeout(ROUND_LIMIT)
            .unwrap()
            .unwrap_or_else(|| panic!("seed {seed:#x}: producer {i} hangs"));
        assert!(
            killed[i] || status.success(),
            "seed {seed:#x}: producer {i} failed: {status:?}"
        );
    }
    q.close().unwrap();
    loop {
        match q.get_bytes_timeout(ROUND_LIMIT) {
            Ok(item) => mine.push(check(item).expect("a torn item")),
            Err(Error::Closed) => break,
            Err(e) => panic!("seed {seed:#x}: draining: {e:?}"),
        }
    }
    for (i, child) in children.iter_mut().enumerate().skip(PRODUCERS) {
        let status = child
            .join_timeout(ROUND_LIMIT)
            .unwrap()
            .unwrap_or_else(|| panic!("seed {seed:#x}: consumer {i} hangs"));
        assert!(
            killed[i] || status.success(),
            "seed {seed:#x}: consumer {i} failed: {status:?}"
        );
    }

    // Exactly once, in order, nothing acknowledged lost beyond what the
    // killed consumers may have taken with them.
    assert_in_order(&mine, "the parent", seed);
    let mut delivered: HashSet<Item> = HashSet::new();
    for item in &mine {
        assert!(delivered.insert(*item), "seed {seed:#x}: {item:?} twice");
    }
    let logs = logs.to_vec();
    for c in 0..CONSUMERS {
        let got: Vec<Item> = logs[c * log_len..(c + 1) * log_len]
            .iter()
            .take_while(|&&x| x != 0)
            .map(|&x| decode(x))
            .collect();
        assert_in_order(&got, &format!("consumer {c}"), seed);
        for item in got {
            assert!(delivered.insert(item), "seed {seed:#x}: {item:?} twice");
        }
    }
    let mut missing = 0;
    for (p, &producer_killed) in killed[..PRODUCERS].iter().enumerate() {
        let acked = acked.get(p).unwrap();
        if !producer_killed {
            assert_eq!(acked, u64::from(ITEMS), "seed {seed:#x}");
        }
        for seq in 0..ITEMS {
            let there = delivered.contains(&(p as u8, seq));
            if u64::from(seq) < acked {
                missing += usize::from(!there);
            } else {
                // Only the one put a killed producer was in could have
                // gone through without being acknowledged.
                assert!(
                    !there || u64::from(seq) == acked,
                    "seed {seed:#x}: producer {p}'s item {seq} delivered but never put"
                );
            }
        }
    }
    assert!(
        missing <= killed_consumers,
        "seed {seed:#x}: {missing} acknowledged items lost, {killed_consumers} consumers killed"
    );
    q.recoveries()
}

#[test]
fn random_kills_lose_nothing_acknowledged() {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    eprintln!("base seed {base:#x}");
    let mut recoveries = 0;
    for i in 0..ROUNDS as u64 {
        recoveries += round(base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    }
    eprintln!("{recoveries} kills landed while the victim held the queue's lock");
}
