//! Waiting on everything at once in async code: a queue's get, a
//! connection's receive and a child's exit in one `tokio::select!`, each
//! from another process, each future cancel safe so the loop can drop the
//! ones that lose and poll them afresh.

use ipc_core::process::{inherited, Process};
use ipc_core::tokio::AsyncConnection;
use ipc_core::Connection;
use ipc_queue::Queue;
use ipc_testkit::runtime;
use ipc_tests::PATIENCE;

ipc_core::spawn_harness!();

/// Puts one item on the queue it was passed.
fn put_one(item: u32) -> bool {
    let q: Queue<u32> = inherited("q").expect("the passed queue");
    q.put(item).is_ok()
}

/// Sends one message on the connection it was passed.
fn say(words: String) -> bool {
    let mut conn: Connection = inherited("conn").expect("the passed connection");
    conn.send(&words).is_ok()
}

#[test]
fn one_select_waits_on_a_queue_a_connection_and_a_child() {
    runtime().block_on(async {
        let q = Queue::<u32>::new().unwrap();
        let (ours, theirs) = ipc_pipe::duplex().unwrap();
        let putter = Process::new()
            .pass("q", &q)
            .unwrap()
            .spawn(ipc_core::entry!(put_one), &7)
            .unwrap();
        let speaker = Process::new()
            .pass("conn", &theirs)
            .unwrap()
            .spawn(ipc_core::entry!(say), &"hello".to_owned())
            .unwrap();
        drop(theirs);
        // libtest's parked main thread is the hazard fork's opt-in accepts.
        let mut leaver = Process::new().allow_threads().fork(|| 5).unwrap();
        let mut conn = AsyncConnection::new(ours).unwrap();
        let (mut item, mut words, mut left) = (None, None, false);
        let deadline = tokio::time::sleep(PATIENCE);
        tokio::pin!(deadline);
        while item.is_none() || words.is_none() || !left {
            tokio::select! {
                got = q.get_async(), if item.is_none() => item = Some(got.unwrap()),
                said = conn.recv::<String>(), if words.is_none() => words = Some(said.unwrap()),
                exited = leaver.join_async(), if !left => {
                    assert_eq!(exited.unwrap().code(), Some(5));
                    left = true;
                }
                () = &mut deadline => panic!("not all three within the patience: {item:?} {words:?} {left}"),
            }
        }
        assert_eq!(item, Some(7));
        assert_eq!(words.as_deref(), Some("hello"));
        assert!(putter.join_async().await.unwrap());
        assert!(speaker.join_async().await.unwrap());
    });
}
