#!/usr/bin/env python3
"""Ping-pong and one-way throughput over multiprocessing.Pipe().

The parent and a multiprocessing.Process child talk over one duplex Pipe
with send_bytes / recv_bytes, as the Rust contenders of ipc-bench do, and
round-trip a small dict with send / recv (pickled both ways).

    python3 pipe_bench.py [--quick]   run a fixed suite, print one JSON document
    python3 pipe_bench.py --serve     used by ipc-bench: one command a line on
                                      stdin, one JSON line per answer on stdout
    python3 pipe_bench.py --echo KEY  used by ipc-bench: the Python peer of a
                                      Rust parent; see echo()

Commands in --serve mode (CPU: pin both processes to it for the run, or -1):
    pingpong SIZE WARMUP COUNT CPU   WARMUP untimed round trips, then COUNT timed
    throughput SIZE COUNT CPU        COUNT messages back to back, then one ack
    pickle-dict WARMUP COUNT CPU     round trips of PICKLE_DICT with send / recv
    quit
Answers have the fields of ipc-bench's Sample (nanoseconds; percentiles by
the nearest-rank rule).
"""

import json
import math
import multiprocessing
import os
import platform
import sys
import time
from multiprocessing.connection import Connection

# The message of the dict round trip; ipc-bench's Rust side sends the same
# (contenders/pickle_dict.rs, Job::example).
PICKLE_DICT = {'job': 7, 'args': [1, 2, 3], 'name': 'square'}


class Pinned:
    """Pins this process to one CPU (unless it is -1) for a `with` block."""

    def __init__(self, cpu):
        self.cpu = cpu

    def __enter__(self):
        if self.cpu >= 0:
            self.before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})

    def __exit__(self, *exc):
        if self.cpu >= 0:
            os.sched_setaffinity(0, self.before)


def child(conn):
    """The peer: obeys commands sent over the pipe itself, untimed."""
    while True:
        words = conn.recv_bytes().decode().split()
        if words[0] == "quit":
            return
        size, count, cpu = int(words[1]), int(words[2]), int(words[3])
        serve_peer(conn, words[0], size, count, cpu)


def serve_peer(conn, kind, size, count, cpu):
    """The peer's side of one pingpong (echo COUNT messages), pickle-dict
    (echo COUNT objects) or throughput (take COUNT messages of SIZE bytes,
    then acknowledge) run on `conn`."""
    with Pinned(cpu):
        if kind == "pingpong":
            recv, send = conn.recv_bytes, conn.send_bytes
            for _ in range(count):
                send(recv())
        elif kind == "pickle-dict":
            recv, send = conn.recv, conn.send
            for _ in range(count):
                send(recv())
        elif kind == "throughput":
            recv = conn.recv_bytes
            for _ in range(count):
                if len(recv()) != size:
                    raise SystemExit("wrong message size")
            conn.send_bytes(b"")


def percentile(sorted_values, p):
    rank = math.ceil(p * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def pingpong(conn, size, warmup, count, cpu=-1):
    msg = b"\xa5" * size
    conn.send_bytes(f"pingpong {size} {warmup + count} {cpu}".encode())
    with Pinned(cpu):
        return pingpong_timed(conn, size, msg, warmup, count)


def pingpong_timed(conn, size, msg, warmup, count):
    send, recv = conn.send_bytes, conn.recv_bytes
    for _ in range(warmup):
        send(msg)
        recv()
    clock = time.perf_counter_ns
    rtts = [0] * count
    start = last = clock()
    for i in range(count):
        send(msg)
        got = recv()
        now = clock()
        rtts[i] = now - last
        last = now
        if len(got) != size:
            raise SystemExit("wrong reply size")
    return latency(rtts, start, last)


def pickle_dict(conn, warmup, count, cpu=-1):
    # The child's commands all carry a size; the dict has none.
    conn.send_bytes(f"pickle-dict 0 {warmup + count} {cpu}".encode())
    with Pinned(cpu):
        return pickle_dict_timed(conn, warmup, count)


def pickle_dict_timed(conn, warmup, count):
    # The loop of pingpong_timed, written out again rather than shared
    # through a callback: a call per round trip would slow the baseline.
    msg = PICKLE_DICT
    send, recv = conn.send, conn.recv
    for _ in range(warmup):
        send(msg)
        recv()
    clock = time.perf_counter_ns
    rtts = [0] * count
    start = last = clock()
    for i in range(count):
        send(msg)
        got = recv()
        now = clock()
        rtts[i] = now - last
        last = now
        # The Rust side checks what comes back too.
        if got != msg:
            raise SystemExit(f"the dict came back as {got!r}")
    return latency(rtts, start, last)


def latency(rtts, start, last):
    """A latency Sample of the round-trip times `rtts` (reordered), timed
    from `start` to `last`."""
    count = len(rtts)
    rtts.sort()
    return {
        "kind": "latency",
        "p50_ns": float(percentile(rtts, 0.50)),
        "p99_ns": float(percentile(rtts, 0.99)),
        "round_trips": count,
        "elapsed_ns": float(last - start),
    }


def throughput(conn, size, count, cpu=-1):
    msg = b"\xa5" * size
    conn.send_bytes(f"throughput {size} {count} {cpu}".encode())
    with Pinned(cpu):
        return throughput_timed(conn, size, msg, count)


def throughput_timed(conn, size, msg, count):
    send = conn.send_bytes
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(count):
        send(msg)
    ack = conn.recv_bytes()
    elapsed = clock() - start
    if ack != b"":
        raise SystemExit("wrong acknowledgement")
    return throughput_sample(count, size, elapsed)


def throughput_sample(count, size, elapsed_ns):
    """A throughput answer, in the form of ipc-bench's Sample."""
    return {
        "kind": "throughput",
        "messages": count,
        "size": size,
        "elapsed_ns": float(elapsed_ns),
    }


def consume(get, size, count=None):
    """A queue consumer's loop: gets `count` items (or, without a count,
    items until an empty sentinel), each of `size` bytes."""
    taken = 0
    while count is None or taken < count:
        item = get()
        if count is None and not item:
            return
        if len(item) != size:
            raise SystemExit("wrong item size")
        taken += 1


def produce(put, size, count):
    """A queue producer's loop: puts `count` items of `size` bytes, then an
    empty sentinel."""
    msg = b"\xa5" * size
    for _ in range(count):
        put(msg)
    put(b"")


class Workers:
    """Daemonic worker processes, each obeying commands sent over a pipe of
    its own (`target(cmd, *args)`; "quit" ends it): if the parent dies
    mid-command (ipc-bench killed), the workers go with it rather than
    keep it waiting at exit. `ctx` is the multiprocessing context that
    starts them (the default start method's unless given)."""

    def __init__(self, count, target, args, ctx=multiprocessing):
        self.workers = []
        for _ in range(count):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=target, args=(child_end, *args), daemon=True
            )
            proc.start()
            child_end.close()
            self.workers.append((parent_end, proc))

    def tell(self, i, command):
        self.workers[i][0].send_bytes(command.encode())

    def stop(self):
        for conn, _ in self.workers:
            conn.send_bytes(b"quit")
        for _, proc in self.workers:
            proc.join()


def serve_commands(commands):
    """The --serve loop of a benchmark script: says which Python it is,
    then answers each command line on stdin (its first word a key of
    `commands`, whose function takes the other words, as ints where they
    are numbers) with one JSON line, until `quit` or the end of stdin."""
    print(json.dumps({"python": platform.python_version()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] in commands:
            args = [int(w) if w.lstrip("-").isdigit() else w for w in words[1:]]
            result = commands[words[0]](*args)
        else:
            result = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps(result), flush=True)


def start():
    parent_conn, child_conn = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=child, args=(child_conn,))
    proc.start()
    child_conn.close()
    return parent_conn, proc


def stop(conn, proc):
    conn.send_bytes(b"quit")
    proc.join()


def serve():
    conn, proc = start()
    serve_commands(
        {
            "pingpong": lambda *args: pingpong(conn, *args),
            "throughput": lambda *args: throughput(conn, *args),
            "pickle-dict": lambda *args: pickle_dict(conn, *args),
        }
    )
    stop(conn, proc)


def suite(quick):
    scale = 10 if quick else 1
    # Ping-pong on one CPU, as ipc-bench does by default.
    cpu = max(os.sched_getaffinity(0))
    conn, proc = start()
    results = []
    for size in (8, 4096):
        count = 20000 // scale
        results.append(
            {"bench": "pingpong", "size": size, **pingpong(conn, size, count // 10, count, cpu)}
        )
    for size, count in ((64, 400000), (4096, 100000), (65536, 20000), (1 << 20, 1000)):
        results.append(
            {"bench": "throughput", "size": size, **throughput(conn, size, count // scale)}
        )
    count = 20000 // scale
    results.append({"bench": "pickle-dict", **pickle_dict(conn, count // 10, count, cpu)})
    stop(conn, proc)
    print(json.dumps({"python": platform.python_version(), "results": results}, indent=1))


def inherited_fd(key):
    """The descriptor ipc-core's Process::pass handed this process under
    `key`: IPC_HANDLES holds `key=FD.DEV.INO[,...]:TEXT` entries separated
    by `;`, and the descriptor must still be the file its parent passed."""
    for entry in os.environ.get("IPC_HANDLES", "").split(";"):
        name, _, rest = entry.partition("=")
        if name != key:
            continue
        fd, dev, ino = (int(n) for n in rest.partition(":")[0].split(",")[0].split("."))
        stat = os.fstat(fd)
        if (stat.st_dev, stat.st_ino) != (dev, ino):
            raise SystemExit(f"descriptor {fd} is not the one passed as {key!r}")
        return fd
    raise SystemExit(f"no handle {key!r} in IPC_HANDLES")


def echo(key):
    """The Python peer of a Rust parent (ipc-bench's dict round trip): says
    which Python it is, then sends back every object it receives with
    conn.send(conn.recv()) on a multiprocessing Connection over the
    inherited descriptor, until the parent closes its end. It is pinned
    from outside, having no other channel to be told where to run."""
    conn = Connection(inherited_fd(key))
    conn.send(platform.python_version())
    recv, send = conn.recv, conn.send
    try:
        while True:
            send(recv())
    except EOFError:
        pass


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    elif sys.argv[1:2] == ["--echo"] and len(sys.argv) == 3:
        echo(sys.argv[2])
    else:
        suite("--quick" in sys.argv[1:])
