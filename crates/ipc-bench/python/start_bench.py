#!/usr/bin/env python3
"""Process start latency of multiprocessing's start methods.

For a start method M (spawn, forkserver or fork), ctx = get_context(M);
one start is: a, b = ctx.Pipe() (untimed), then timed from
ctx.Process(target=hello, args=(b,)).start() to a.recv_bytes() of the one
byte the child sends; then join() (untimed). As ipc-bench's Rust start
contenders do.

    python3 start_bench.py [--quick]   run a fixed suite, print one JSON document
    python3 start_bench.py --serve     used by ipc-bench: one command a line on
                                       stdin, one JSON line per answer on stdout

Commands in --serve mode:
    start METHOD WARMUP COUNT   WARMUP untimed starts, then COUNT timed ones
    quit
Answers have the fields of ipc-bench's Sample (a latency sample: nanoseconds,
percentiles by the nearest-rank rule; elapsed_ns is the wall time of the
whole run, joins included).

The forkserver's server process is started by the first forkserver start
and kept: ipc-bench's calibration runs make that first start, so the
measurements are of the steady per-start cost. A spawned child imports
this script as its main module, so the top level imports only what the
child needs too.
"""

import math
import multiprocessing
import sys
import time


def hello(conn):
    """The child: one message to the parent."""
    conn.send_bytes(b"x")


def percentile(sorted_values, p):
    rank = math.ceil(p * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def start_one(ctx):
    """One start; returns the nanoseconds from the call to the message."""
    parent, child = ctx.Pipe()
    clock = time.perf_counter_ns
    begin = clock()
    proc = ctx.Process(target=hello, args=(child,))
    proc.start()
    msg = parent.recv_bytes()
    took = clock() - begin
    proc.join()
    child.close()
    parent.close()
    if msg != b"x" or proc.exitcode != 0:
        raise SystemExit(f"the child sent {msg!r} and exited with {proc.exitcode}")
    return took


def starts(method, warmup, count):
    ctx = multiprocessing.get_context(method)
    clock = time.perf_counter_ns
    begin = clock()
    for _ in range(warmup):
        start_one(ctx)
    times = sorted(start_one(ctx) for _ in range(count))
    elapsed = clock() - begin
    return {
        "kind": "latency",
        "p50_ns": float(percentile(times, 0.50)),
        "p99_ns": float(percentile(times, 0.99)),
        "round_trips": count,
        "elapsed_ns": float(elapsed),
    }


def serve():
    from pipe_bench import serve_commands

    serve_commands({"start": starts})


def suite(quick):
    import json
    import platform

    count = 5 if quick else 20
    results = []
    for method in ("spawn", "forkserver", "fork"):
        # One untimed run first: it starts the forkserver.
        starts(method, 1, 1)
        results.append({"bench": "start", "method": method, **starts(method, 1, count)})
    print(json.dumps({"python": platform.python_version(), "results": results}, indent=1))


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        suite("--quick" in sys.argv[1:])
