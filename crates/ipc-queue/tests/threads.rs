//! One handle shared by threads of one process: the handles are `Send` and
//! `Sync`, and every item still reaches exactly one getter.

use std::collections::HashSet;
use std::time::Duration;

use ipc_queue::{JoinableQueue, Queue, SimpleQueue};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    assert_send_sync::<Queue<String>>();
    assert_send_sync::<JoinableQueue<Vec<u8>>>();
    assert_send_sync::<SimpleQueue<(u8, String)>>();
}

#[test]
fn threads_share_one_handle() {
    let q = Queue::<(u8, u32)>::builder()
        .capacity(512)
        .maxsize(7)
        .anonymous()
        .unwrap();
    let got: Vec<Vec<(u8, u32)>> = std::thread::scope(|s| {
        let producers: Vec<_> = (0..3u8)
            .map(|p| {
                let q = &q;
                s.spawn(move || {
                    for i in 0..2000 {
                        q.put((p, i)).unwrap();
                    }
                })
            })
            .collect();
        let getters: Vec<_> = (0..3)
            .map(|_| {
                let q = &q;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        match q.get_timeout(Duration::from_secs(10)) {
                            Ok(item) => mine.push(item),
                            Err(ipc_core::Error::Closed) => return mine,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        q.close().unwrap();
        getters.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let mut all = HashSet::new();
    for mine in &got {
        let mut last = [None::<u32>; 3];
        for &(p, i) in mine {
            assert!(last[p as usize].is_none_or(|l| l < i), "out of order");
            last[p as usize] = Some(i);
            assert!(all.insert((p, i)), "{p} {i} twice");
        }
    }
    assert_eq!(all.len(), 6000);
}
