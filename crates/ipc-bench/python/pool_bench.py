#!/usr/bin/env python3
"""multiprocessing.Pool.map of trivial and of CPU-bound tasks.

A Pool(PROCESSES) (default start method) is made the first time a command
asks for that many processes, before its clock starts, and kept; one
measurement is COUNT calls of pool.map(f, range(TASKS)) with the default
chunksize, as ipc-bench's Rust pool contenders do:

- map-square: f(x) = x * x;
- map-busy: f spins until time.thread_time_ns() (the thread's CPU clock,
  CLOCK_THREAD_CPUTIME_ID, which the Rust task reads too) has advanced MS
  milliseconds, then returns x.

    python3 pool_bench.py [--quick]   run a fixed suite, print one JSON document
    python3 pool_bench.py --serve     used by ipc-bench: one command a line on
                                      stdin, one JSON line per answer on stdout

Commands in --serve mode:
    map-square PROCESSES TASKS COUNT
    map-busy PROCESSES TASKS MS COUNT
    quit
Answers have the fields of ipc-bench's Sample (a throughput sample:
messages is TASKS * COUNT, size 0, elapsed_ns the time of the COUNT maps).
"""

import functools
import json
import multiprocessing
import platform
import sys
import time

from pipe_bench import serve_commands


def square(x):
    return x * x


def busy(x, ns):
    clock = time.thread_time_ns
    end = clock() + ns
    while clock() < end:
        pass
    return x


class Pools:
    """The pools made so far, by number of processes."""

    def __init__(self):
        self.pools = {}

    def get(self, processes):
        if processes not in self.pools:
            self.pools[processes] = multiprocessing.Pool(processes)
        return self.pools[processes]

    def close(self):
        for pool in self.pools.values():
            pool.close()
            pool.join()


def maps(pool, f, expect, tasks, count):
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(count):
        results = pool.map(f, range(tasks))
    elapsed = clock() - start
    if len(results) != tasks or (tasks and results[-1] != expect(tasks - 1)):
        raise SystemExit("wrong map results")
    return {
        "kind": "throughput",
        "messages": tasks * count,
        "size": 0,
        "elapsed_ns": float(elapsed),
    }


def map_square(pools, processes, tasks, count):
    return maps(pools.get(processes), square, square, tasks, count)


def map_busy(pools, processes, tasks, ms, count):
    f = functools.partial(busy, ns=ms * 1_000_000)
    return maps(pools.get(processes), f, lambda x: x, tasks, count)


def serve():
    pools = Pools()
    serve_commands(
        {
            "map-square": lambda *args: map_square(pools, *args),
            "map-busy": lambda *args: map_busy(pools, *args),
        }
    )
    pools.close()


def suite(quick):
    pools = Pools()
    results = []
    # Warm-up: the workers' first tasks.
    map_square(pools, 2, 1000, 1)
    results.append({"bench": "map-square", **map_square(pools, 2, 100_000, 1 if quick else 5)})
    results.append({"bench": "map-busy", **map_busy(pools, 2, 200, 5, 1)})
    pools.close()
    print(json.dumps({"python": platform.python_version(), "results": results}, indent=1))


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        suite("--quick" in sys.argv[1:])
