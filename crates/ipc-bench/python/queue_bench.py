#!/usr/bin/env python3
"""Throughput and put->get round trips over multiprocessing.Queue().

The parent and three multiprocessing.Process workers share two queues,
`data` (towards the consumers) and `back`, and put / get bytes objects, as
the Rust queue contenders of ipc-bench do:

- throughput, 1 producer / 1 consumer: the parent puts COUNT items on
  `data`, worker 0 gets them all and puts b"" on `back`;
- throughput, 2 / 2: the parent and worker 1 each put half the items and
  then a b"" sentinel; workers 0 and 2 get items until a sentinel, then put
  b"" on `back`; timed from just before worker 1 is told to start to the
  second acknowledgement;
- ping-pong: the parent puts an item on `data`, worker 0 (waiting in get)
  puts it on `back`; the full round trip is reported.

    python3 queue_bench.py [--quick]   run a fixed suite, print one JSON document
    python3 queue_bench.py --serve     used by ipc-bench: one command a line on
                                       stdin, one JSON line per answer on stdout

Commands in --serve mode:
    throughput SIZE COUNT PRODUCERS         PRODUCERS is 1 (1/1) or 2 (2/2)
    pingpong SIZE WARMUP COUNT CPU OTHER    the parent pinned to CPU, worker 0
                                            to OTHER (-1: not pinned)
    quit
Answers have the fields of ipc-bench's Sample (nanoseconds; percentiles by
the nearest-rank rule).
"""

import json
import multiprocessing
import os
import platform
import sys
import time

from pipe_bench import Pinned, Workers, consume, percentile, produce, serve_commands


def worker(cmd, data, back):
    """A worker: obeys commands sent over its own pipe, untimed."""
    while True:
        words = cmd.recv_bytes().decode().split()
        if words[0] == "quit":
            return
        size = int(words[1])
        if words[0] == "pingpong":
            count, cpu = int(words[2]), int(words[3])
            with Pinned(cpu):
                get, put = data.get, back.put
                for _ in range(count):
                    put(get())
        elif words[0] == "consume1":
            consume(data.get, size, int(words[2]))
            back.put(b"")
        elif words[0] == "consume":
            consume(data.get, size)
            back.put(b"")
        elif words[0] == "produce":
            produce(data.put, size, int(words[2]))


class Bench:
    def __init__(self):
        self.data = multiprocessing.Queue()
        self.back = multiprocessing.Queue()
        self.workers = Workers(3, worker, (self.data, self.back))
        self.tell = self.workers.tell
        self.stop = self.workers.stop

    def throughput(self, size, count, producers):
        msg = b"\xa5" * size
        put, get = self.data.put, self.back.get
        clock = time.perf_counter_ns
        if producers == 1:
            self.tell(0, f"consume1 {size} {count}")
            start = clock()
            for _ in range(count):
                put(msg)
            acks = [get()]
        else:
            theirs = count // 2
            self.tell(0, f"consume {size}")
            self.tell(2, f"consume {size}")
            start = clock()
            self.tell(1, f"produce {size} {theirs}")
            for _ in range(count - theirs):
                put(msg)
            put(b"")
            acks = [get(), get()]
        elapsed = clock() - start
        if any(ack != b"" for ack in acks):
            raise SystemExit("wrong acknowledgement")
        return {
            "kind": "throughput",
            "messages": count,
            "size": size,
            "elapsed_ns": float(elapsed),
        }

    def pingpong(self, size, warmup, count, cpu=-1, other=-1):
        msg = b"\xa5" * size
        self.tell(0, f"pingpong {size} {warmup + count} {other}")
        with Pinned(cpu):
            put, get = self.data.put, self.back.get
            for _ in range(warmup):
                put(msg)
                get()
            clock = time.perf_counter_ns
            rtts = [0] * count
            start = last = clock()
            for i in range(count):
                put(msg)
                got = get()
                now = clock()
                rtts[i] = now - last
                last = now
                if len(got) != size:
                    raise SystemExit("wrong reply size")
        rtts.sort()
        return {
            "kind": "latency",
            "p50_ns": float(percentile(rtts, 0.50)),
            "p99_ns": float(percentile(rtts, 0.99)),
            "round_trips": count,
            "elapsed_ns": float(last - start),
        }


def serve():
    bench = Bench()
    serve_commands({"throughput": bench.throughput, "pingpong": bench.pingpong})
    bench.stop()


def suite(quick):
    scale = 10 if quick else 1
    cpus = sorted(os.sched_getaffinity(0))
    cpu, other = cpus[-1], (cpus[0] if len(cpus) > 1 else -1)
    bench = Bench()
    results = []
    for producers in (1, 2):
        for size in (64, 4096):
            results.append(
                {
                    "bench": f"throughput {producers}/{producers}",
                    "size": size,
                    **bench.throughput(size, 100000 // scale, producers),
                }
            )
    count = 20000 // scale
    results.append(
        {"bench": "pingpong", "size": 64, **bench.pingpong(64, count // 10, count, cpu, other)}
    )
    bench.stop()
    print(json.dumps({"python": platform.python_version(), "results": results}, indent=1))


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        suite("--quick" in sys.argv[1:])
