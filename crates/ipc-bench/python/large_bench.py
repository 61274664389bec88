#!/usr/bin/env python3
"""Throughput of large items the way Python moves them between processes:
multiprocessing.shared_memory.SharedMemory blocks written in place, whose
indices travel on multiprocessing.Queue()s (pickling a 16 MiB bytes object
through a Queue is what this idiom avoids).

Each item size has a ring of its own: IN_FLIGHT blocks of that size (as
ipc-bench's queue of large items holds 16 items), a `free` queue holding the
indices of the blocks nobody uses, and a `data` queue. A producer gets a free
index, writes the payload into that block (`buf[:size] = payload`, from a
bytes object made beforehand whose first and last 8 bytes are STAMP) and puts
the index on `data`; a consumer gets the index, looks at the block as every
ipc-bench consumer looks at an item (its length, the stamps at its ends) and
puts the index back on `free`. The blocks are the items' size, so a block's
length is the item's.

The parent makes the blocks before it forks three multiprocessing.Process
workers (the fork start method, whatever the default is), so they inherit
the mappings, and unlinks them when it stops, whatever happened: a worker
dies with the parent even when the parent is killed outright, and Python's
resource tracker then unlinks what the parent could not.

- 1 producer / 1 consumer: the parent produces COUNT items, worker 0
  consumes them all and puts b"" on `back`;
- 2 / 2: the parent and worker 1 each produce half the items and then a -1
  sentinel; workers 0 and 2 consume until a sentinel, then put b"" on
  `back`; timed from just before worker 1 is told to start to the second
  acknowledgement.

    python3 large_bench.py [--quick]   run a fixed suite, print one JSON document
    python3 large_bench.py --serve     used by ipc-bench: one command a line on
                                       stdin, one JSON line per answer on stdout

Commands in --serve mode:
    throughput SIZE COUNT PRODUCERS    SIZE one of SIZES; PRODUCERS 1 or 2
    quit
Answers have the fields of ipc-bench's throughput Sample (nanoseconds).
"""

import ctypes
import json
import multiprocessing
import os
import platform
import signal
import sys
import time
from multiprocessing.shared_memory import SharedMemory

from pipe_bench import Workers, serve_commands, throughput_sample

# The item sizes of ipc-bench's large-item benchmarks (contenders/in_place.rs).
SIZES = (64 << 10, 1 << 20, 16 << 20)
# Blocks per ring: the items ipc-bench's queue of large items holds.
IN_FLIGHT = 16
# What a producer writes at both ends of an item, as in_place.rs does.
STAMP = b"in-place"
# What a producer puts on `data` when it is done, in place of an index.
SENTINEL = -1
# prctl's option of <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def stamped(size):
    """A payload of `size` bytes whose first and last 8 bytes are STAMP."""
    payload = bytearray(b"\xa5" * size)
    payload[:8] = STAMP
    payload[-8:] = STAMP
    return bytes(payload)


# The workers inherit the blocks' mappings and know their parent's pid.
FORK = multiprocessing.get_context("fork")


class Ring:
    """The blocks of one item size, with their `free` and `data` queues."""

    def __init__(self, size):
        self.size = size
        self.payload = stamped(size)
        self.blocks = []
        try:
            for _ in range(IN_FLIGHT):
                self.blocks.append(SharedMemory(create=True, size=size))
        except BaseException:
            self.unlink()
            raise
        self.free = FORK.Queue()
        self.data = FORK.Queue()

    def fill(self):
        """Marks every block free. Called once the workers are started:
        the first put starts the queue's feeder thread, and a process with
        threads should not fork."""
        for i in range(IN_FLIGHT):
            self.free.put(i)

    def unlink(self):
        for block in self.blocks:
            block.close()
            block.unlink()
        self.blocks = []

    def produce(self, count):
        """Writes `count` items into free blocks and puts their indices on
        `data`."""
        bufs = [block.buf for block in self.blocks]
        payload, size = self.payload, self.size
        get_free, put = self.free.get, self.data.put
        for _ in range(count):
            i = get_free()
            bufs[i][:size] = payload
            put(i)

    def consume(self, count=None):
        """Gets `count` items (or, without a count, items until a sentinel),
        looks at each where it lies and frees its block."""
        bufs = [block.buf for block in self.blocks]
        size = self.size
        get, put_free = self.data.get, self.free.put
        taken = 0
        while count is None or taken < count:
            i = get()
            if i == SENTINEL:
                if count is None:
                    return
                raise SystemExit("a sentinel before the last item")
            buf = bufs[i]
            if len(buf) != size or buf[:8] != STAMP or buf[size - 8 :] != STAMP:
                raise SystemExit("an item without its stamps")
            put_free(i)
            taken += 1


def die_with(parent):
    """Has the kernel kill this process when `parent` (the process that
    started it) dies, even killed outright: the other workers keep the
    command pipes open, so no end of file would tell it, and while any
    worker lives Python's resource tracker keeps the blocks, which it
    unlinks only once every process that shared them is gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    # The parent may have died before the call.
    if os.getppid() != parent:
        os._exit(1)


def worker(cmd, parent, rings, back):
    """A worker: obeys commands sent over its own pipe, untimed."""
    die_with(parent)
    while True:
        words = cmd.recv_bytes().decode().split()
        if words[0] == "quit":
            return
        ring = rings[int(words[1])]
        if words[0] == "consume1":
            ring.consume(int(words[2]))
            back.put(b"")
        elif words[0] == "consume":
            ring.consume()
            back.put(b"")
        elif words[0] == "produce":
            ring.produce(int(words[2]))
            ring.data.put(SENTINEL)


class Bench:
    def __init__(self):
        self.rings = {}
        try:
            for size in SIZES:
                self.rings[size] = Ring(size)
            self.back = FORK.Queue()
            self.workers = Workers(3, worker, (os.getpid(), self.rings, self.back), FORK)
            for ring in self.rings.values():
                ring.fill()
        except BaseException:
            self.unlink()
            raise
        self.tell = self.workers.tell

    def unlink(self):
        for ring in self.rings.values():
            ring.unlink()

    def stop(self):
        """Stops the workers, then unlinks the blocks, even if stopping
        failed."""
        try:
            self.workers.stop()
        finally:
            self.unlink()

    def throughput(self, size, count, producers):
        ring = self.rings[size]
        get = self.back.get
        clock = time.perf_counter_ns
        if producers == 1:
            self.tell(0, f"consume1 {size} {count}")
            start = clock()
            ring.produce(count)
            acks = [get()]
        else:
            theirs = count // 2
            self.tell(0, f"consume {size}")
            self.tell(2, f"consume {size}")
            start = clock()
            self.tell(1, f"produce {size} {theirs}")
            ring.produce(count - theirs)
            ring.data.put(SENTINEL)
            acks = [get(), get()]
        elapsed = clock() - start
        if any(ack != b"" for ack in acks):
            raise SystemExit("wrong acknowledgement")
        return throughput_sample(count, size, elapsed)


def serve():
    bench = Bench()
    try:
        serve_commands({"throughput": bench.throughput})
    finally:
        bench.stop()


def suite(quick):
    scale = 10 if quick else 1
    bench = Bench()
    results = []
    try:
        for producers in (1, 2):
            for size, count in ((64 << 10, 20000), (1 << 20, 2000), (16 << 20, 100)):
                results.append(
                    {
                        "bench": f"throughput {producers}/{producers}",
                        "size": size,
                        **bench.throughput(size, max(count // scale, 2), producers),
                    }
                )
    finally:
        bench.stop()
    print(json.dumps({"python": platform.python_version(), "results": results}, indent=1))


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        suite("--quick" in sys.argv[1:])
