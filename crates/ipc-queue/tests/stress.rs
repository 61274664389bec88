//! Four producer and four consumer processes move 1,000,000 items through
//! one queue: every item arrives exactly once (counts and checksums per
//! producer) and each producer's items arrive in order.

use std::time::Duration;

use ipc_core::process::{Child, Process};
use ipc_core::Error;
use ipc_queue::Queue;
use ipc_shm::RawArray;

const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;
const TOTAL: u64 = 1_000_000;
const PER_PRODUCER: u64 = TOTAL / PRODUCERS as u64;
const LIMIT: Duration = Duration::from_secs(600);

/// Per consumer and producer: count, sum, sum of squares, out-of-order
/// arrivals.
const FIELDS: usize = 4;

fn slot(c: usize, p: usize, field: usize) -> usize {
    (c * PRODUCERS + p) * FIELDS + field
}

#[test]
fn four_by_four_move_a_million_items_exactly_once_in_order() {
    let q = Queue::<(u8, u64)>::builder()
        .capacity(64 << 10)
        .anonymous()
        .unwrap();
    let stats = RawArray::<u64>::zeroed(CONSUMERS * PRODUCERS * FIELDS).unwrap();
    let mut producers: Vec<Child> = (0..PRODUCERS)
        .map(|p| {
            Process::new()
                .allow_threads()
                .pass("q", &q)
                .unwrap()
                .fork({
                    let q = &q;
                    move || -> ipc_core::Result<()> {
                        for seq in 0..PER_PRODUCER {
                            q.put((p as u8, seq))?;
                        }
                        Ok(())
                    }
                })
                .unwrap()
        })
        .collect();
    let mut consumers: Vec<Child> = (0..CONSUMERS)
        .map(|c| {
            Process::new()
                .allow_threads()
                .pass("q", &q)
                .unwrap()
                .pass("stats", &stats)
                .unwrap()
                .fork({
                    let (q, stats) = (&q, &stats);
                    move || -> ipc_core::Result<()> {
                        let mut mine = [[0u64; FIELDS]; PRODUCERS];
                        let mut last = [None::<u64>; PRODUCERS];
                        loop {
                            match q.get_timeout(LIMIT) {
                                Ok((p, seq)) => {
                                    let p = p as usize;
                                    let m = &mut mine[p];
                                    m[0] += 1;
                                    m[1] = m[1].wrapping_add(seq);
                                    m[2] = m[2].wrapping_add(seq.wrapping_mul(seq));
                                    if last[p].is_some_and(|l| l >= seq) {
                                        m[3] += 1;
                                    }
                                    last[p] = Some(seq);
                                }
                                Err(Error::Closed) => break,
                                Err(e) => return Err(e),
                            }
                        }
                        for (p, m) in mine.iter().enumerate() {
                            for (f, v) in m.iter().enumerate() {
                                stats.set(slot(c, p, f), *v)?;
                            }
                        }
                        Ok(())
                    }
                })
                .unwrap()
        })
        .collect();
    for child in &mut producers {
        let status = child.join_timeout(LIMIT).unwrap().expect("producer hangs");
        assert!(status.success(), "producer failed: {status:?}");
    }
    q.close().unwrap();
    for child in &mut consumers {
        let status = child.join_timeout(LIMIT).unwrap().expect("consumer hangs");
        assert!(status.success(), "consumer failed: {status:?}");
    }
    let n = PER_PRODUCER;
    let sum = n * (n - 1) / 2;
    let squares = (0..n).fold(0u64, |a, s| a.wrapping_add(s.wrapping_mul(s)));
    let mut total = 0;
    for p in 0..PRODUCERS {
        let field = |f| -> u64 {
            (0..CONSUMERS)
                .map(|c| stats.get(slot(c, p, f)).unwrap())
                .fold(0, u64::wrapping_add)
        };
        assert_eq!(field(0), n, "producer {p}: count");
        assert_eq!(field(1), sum, "producer {p}: sum");
        assert_eq!(field(2), squares, "producer {p}: sum of squares");
        assert_eq!(field(3), 0, "producer {p}: items out of order");
        total += field(0);
    }
    assert_eq!(total, TOTAL);
    assert!(q.empty());
}
