#!/usr/bin/env python3
"""Locks, locked increments, shared-memory bandwidth and semaphore wake-ups
with CPython's multiprocessing, between a parent and one
multiprocessing.Process child (fork start method, so the child inherits the
lock, the Value, the semaphores and the mapping of the SharedMemory).

    python3 shm_bench.py --serve   used by ipc-bench: one command a line on
                                   stdin, one JSON line per answer on stdout

Commands:
    lock COUNT               COUNT multiprocessing.Lock() acquire + release,
                             in the parent alone
    increments PROCS COUNT CPU OTHER
                             `with v.get_lock(): v.value += 1` COUNT times on
                             a Value('Q', 0), in the parent (PROCS 1) or in the
                             parent and the child at once (PROCS 2); the parent
                             pinned to CPU, the child to OTHER (-1: unpinned)
    bandwidth SIZE COUNT     COUNT passes: the parent does shm.buf[:] = data,
                             the child bytes(shm.buf), on a SIZE-byte
                             SharedMemory(create=True) touched once before
    sem WARMUP COUNT CPU OTHER
                             WARMUP untimed, then COUNT timed round trips over
                             two Semaphore(0), `ping` and `pong`: the parent
                             does ping.release(); pong.acquire(), the child
                             ping.acquire(); pong.release(); the parent pinned
                             to CPU, the child to OTHER (-1: unpinned)
    quit
Answers have the fields of ipc-bench's throughput Sample (messages are
pairs, increments of all processes, or passes), or of its latency Sample
for sem (nanoseconds; percentiles by the nearest-rank rule).
"""

import json
import multiprocessing
import platform
import sys
import time
from multiprocessing.shared_memory import SharedMemory

from pipe_bench import Pinned, percentile

SIZE = 64 << 20


def increments(v, count):
    for _ in range(count):
        with v.get_lock():
            v.value += 1


def child(cmd, v, shm, ping, pong):
    while True:
        words = cmd.recv_bytes().decode().split()
        if words[0] == "quit":
            return
        if words[0] == "inc":
            with Pinned(int(words[2])):
                increments(v, int(words[1]))
            cmd.send_bytes(b"done")
        elif words[0] == "read":
            for _ in range(int(words[1])):
                cmd.recv_bytes()
                data = bytes(shm.buf)
                cmd.send_bytes(data[:1])
            del data
        elif words[0] == "sem":
            with Pinned(int(words[2])):
                acquire, release = ping.acquire, pong.release
                for _ in range(int(words[1])):
                    acquire()
                    release()


def sample(messages, size, elapsed):
    return {"kind": "throughput", "messages": messages, "size": size, "elapsed_ns": float(elapsed)}


def semaphore_ping_pong(cmd, ping, pong, warmup, count, cpu, other):
    """Round trips over the two semaphores, the child on `other`."""
    cmd.send_bytes(f"sem {warmup + count} {other}".encode())
    with Pinned(cpu):
        release, acquire = ping.release, pong.acquire
        for _ in range(warmup):
            release()
            acquire()
        clock = time.perf_counter_ns
        rtts = [0] * count
        start = last = clock()
        for i in range(count):
            release()
            acquire()
            now = clock()
            rtts[i] = now - last
            last = now
    rtts.sort()
    return {
        "kind": "latency",
        "p50_ns": float(percentile(rtts, 0.50)),
        "p99_ns": float(percentile(rtts, 0.99)),
        "round_trips": count,
        "elapsed_ns": float(last - start),
    }


def serve():
    shm = SharedMemory(create=True, size=SIZE)
    try:
        serve_with(shm)
    finally:
        # Unlink even when a command fails; Python's resource tracker covers
        # a killed process, as long as the tracker itself survives.
        shm.close()
        shm.unlink()


def serve_with(shm):
    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    v = ctx.Value("Q", 0)
    ping, pong = ctx.Semaphore(0), ctx.Semaphore(0)
    data = bytearray(b"\xa5" * SIZE)
    shm.buf[:] = data  # first touch of every page, before any timing
    cmd, cmd_child = ctx.Pipe()
    proc = ctx.Process(target=child, args=(cmd_child, v, shm, ping, pong))
    proc.start()
    cmd_child.close()
    clock = time.perf_counter_ns
    print(json.dumps({"python": platform.python_version()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "lock":
            count = int(words[1])
            acquire, release = lock.acquire, lock.release
            start = clock()
            for _ in range(count):
                acquire()
                release()
            result = sample(count, 0, clock() - start)
        elif words[0] == "increments":
            procs, count = int(words[1]), int(words[2])
            cpu, other = (int(w) for w in words[3:5]) if len(words) >= 5 else (-1, -1)
            if procs == 2:
                cmd.send_bytes(f"inc {count} {other}".encode())
            with Pinned(cpu):
                start = clock()
                increments(v, count)
                if procs == 2:
                    cmd.recv_bytes()
                result = sample(procs * count, 0, clock() - start)
        elif words[0] == "bandwidth":
            size, count = int(words[1]), int(words[2])
            cmd.send_bytes(f"read {count}".encode())
            start = clock()
            for i in range(count):
                data[0] = i & 0xFF
                shm.buf[:] = data
                cmd.send_bytes(b"go")
                if cmd.recv_bytes() != bytes([i & 0xFF]):
                    raise SystemExit("the child read something else")
            result = sample(count, size, clock() - start)
        elif words[0] == "sem":
            result = semaphore_ping_pong(cmd, ping, pong, *(int(w) for w in words[1:5]))
        else:
            result = {"error": f"unknown command {words[0]!r}"}
        print(json.dumps(result), flush=True)
    cmd.send_bytes(b"quit")
    proc.join()


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        sys.exit(__doc__)
