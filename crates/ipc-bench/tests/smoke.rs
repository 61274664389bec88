//! Runs the whole harness once, briefly, across real processes: every
//! contender must start its peer, answer every kind of benchmark it runs
//! (pipe, Unix and TCP messages, connect, locks, increments, shared-memory
//! bandwidth, queues 1/1 and 2/2 and their ping-pong, the batched pipe
//! sender, the pickled pipe and the dict round trip with Rust and Python
//! peers, the async ping-pong and async queue on tokio, the wake-up
//! ping-pong over blocking and awaited semaphores, process starts by every
//! method, the trivial pool map) and stop,
//! and the three reports must be written. (The 200 × 5 ms pool map runs
//! the same contenders as the trivial one, for seconds: it is left out.)

use std::process::Command;

#[test]
fn every_contender_runs_and_reports() {
    let out = std::env::temp_dir().join(format!("ipc-bench-smoke-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_ipc-bench"))
        .args([
            "--quick",
            "--rounds",
            "1",
            "--bench",
            "ping-pong-8B,throughput-64KiB,connect,shm,throughput-64B,queue-ping-pong,\
             async,start,pool-map-100k,pickle-dict",
        ])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("ipc-bench starts");
    assert!(status.success(), "ipc-bench failed: {status}");
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let svg = std::fs::read_to_string(out.join("chart.svg")).expect("chart.svg");
    let _ = std::fs::remove_dir_all(&out);
    for name in [
        "raw socketpair",
        "ipc-pipe bytes",
        "ipc-pipe typed",
        "ipc-pipe pickle",
        "ipc-pipe pickle (Rust peer)",
        "ipc-pipe pickle (Python peer)",
        "python Pipe",
        "ipc-channel",
        "raw socket",
        "ipc-socket",
        "python Listener/Client",
        "std Mutex (in-process)",
        "memcpy (in-process)",
        "ipc-shm Lock / Value<u64>",
        "ipc-shm SharedMemory",
        "ipc-shm Array<u8>",
        "python shm",
        "ipc-pipe bytes (batched)",
        "POSIX mq",
        "ipc-queue bytes",
        "python Queue",
        "tokio UnixStream",
        "ipc-core AsyncConnection",
        "ipc-shm-queue async",
        "ipc-shm Semaphore",
        "ipc-shm Semaphore async",
        "std Command (exec)",
        "ipc-core Process",
        "python Process",
        "std threads (in-process)",
        "ipc-pool Pool",
        "python Pool",
    ] {
        assert!(md.contains(&format!("| {name} |")), "{name} missing:\n{md}");
    }
    assert!(!md.contains("failed in"), "a contender failed:\n{md}");
    assert!(
        md.contains("- ipc-pipe pickle vs ipc-pipe typed: "),
        "no pickle / postcard ratio:\n{md}"
    );
    assert!(
        md.contains("- ipc-shm Semaphore async: ") && md.contains(" per awaited wake-up ("),
        "no cost per awaited wake-up:\n{md}"
    );
    for id in [
        "throughput-64KiB",
        "tcp-ping-pong-8B",
        "unix-throughput-64KiB",
        "unix-connect",
        "shm-lock-unlock",
        "shm-increments-1p",
        "shm-increments-2p",
        "shm-write-read-64MiB",
        "throughput-64B",
        "queue-throughput-64B",
        "queue2x2-throughput-64B",
        "queue-ping-pong-64B",
        "async-ping-pong-8B",
        "async-queue-throughput-64B",
        "async-queue-ping-pong-64B",
        "async-wake-ping-pong-0B",
        "spawn-start",
        "forkserver-start",
        "fork-start",
        "pool-map-100k-trivial",
        "pickle-dict-ping-pong",
    ] {
        assert!(json.contains(&format!("\"{id}\"")), "{id} missing");
    }
    assert!(svg.starts_with("<svg"));
    // The async queue round trip's goal is a tokio UnixStream round trip in
    // the same run; its floor, leading the table, stays the blocking queue.
    let report: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let queue_round_trip = report["benchmarks"]
        .as_array()
        .expect("benchmarks")
        .iter()
        .find(|b| b["id"] == "async-queue-ping-pong-64B")
        .expect("async-queue-ping-pong-64B");
    let rows: Vec<&str> = queue_round_trip["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["contender"].as_str().expect("a name"))
        .collect();
    assert_eq!(rows.first(), Some(&"ipc-queue bytes"), "{rows:?}");
    assert!(rows.contains(&"tokio UnixStream"), "{rows:?}");
}
