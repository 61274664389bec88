#!/usr/bin/env python3
"""Throughput of Python's queue between machines: a `queue.Queue` served by
`multiprocessing.managers.BaseManager` with an authkey, which producers and
consumers reach through proxies, each put and get one round trip to the
manager's server process. Two managers run, one on a Unix socket and one on
TCP 127.0.0.1, as ipc-bench's broker benchmarks go over either.

- 1 producer / 1 consumer: the parent puts COUNT bytes objects on `data`
  through its proxy; worker 0, a client of the same manager, gets them all
  and puts b"" on `back` (a local multiprocessing.Queue, not measured).
- 4 / 4: the parent and workers 4 to 6 each put a quarter of the items
  and then a b"" sentinel; workers 0 to 3 get items until a sentinel and
  say so on `back`; timed from just before the producers are told to start
  to the fourth acknowledgement.

    python3 broker_bench.py --serve     used by ipc-bench: one command a line on
                                        stdin, one JSON line per answer on stdout

Commands in --serve mode:
    throughput TRANSPORT SIZE COUNT PRODUCERS   TRANSPORT unix or tcp; PRODUCERS 1 or 4
    quit
"""

import json
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from multiprocessing.managers import BaseManager

from pipe_bench import Workers, consume, produce, serve_commands, throughput_sample

AUTHKEY = b"ipc-bench"
DATA = queue.Queue()


def data_queue():
    return DATA


class QueueManager(BaseManager):
    pass


QueueManager.register("data", callable=data_queue)

WORKERS = 7
CONSUMERS = 4


def connect(address):
    manager = QueueManager(address=address, authkey=AUTHKEY)
    manager.connect()
    return manager.data()


def worker(cmd, addresses, back):
    """A worker: a client of both managers, obeying commands sent over its
    own pipe, untimed."""
    queues = {name: connect(address) for name, address in addresses.items()}
    while True:
        words = cmd.recv_bytes().decode().split()
        if words[0] == "quit":
            return
        data = queues[words[1]]
        size = int(words[2])
        if words[0] == "consume1":
            consume(data.get, size, int(words[3]))
            back.put(0)
        elif words[0] == "consume":
            consume(data.get, size)
            back.put(1)
        elif words[0] == "produce":
            produce(data.put, size, int(words[3]))


class Bench:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ipc-bench-manager-")
        self.managers = {
            "unix": QueueManager(
                address=os.path.join(self.dir, "manager.sock"), authkey=AUTHKEY
            ),
            "tcp": QueueManager(address=("127.0.0.1", 0), authkey=AUTHKEY),
        }
        for manager in self.managers.values():
            manager.start()
        addresses = {name: m.address for name, m in self.managers.items()}
        self.queues = {name: m.data() for name, m in self.managers.items()}
        self.back = multiprocessing.Queue()
        self.workers = Workers(WORKERS, worker, (addresses, self.back))
        self.tell = self.workers.tell

    def stop(self):
        self.workers.stop()
        for manager in self.managers.values():
            manager.shutdown()
        os.rmdir(self.dir)

    def throughput(self, transport, size, count, producers):
        msg = b"\xa5" * size
        put = self.queues[transport].put
        clock = time.perf_counter_ns
        if producers == 1:
            self.tell(0, f"consume1 {transport} {size} {count}")
            start = clock()
            for _ in range(count):
                put(msg)
            self.back.get()
        else:
            share = count // 4
            for i in range(CONSUMERS):
                self.tell(i, f"consume {transport} {size}")
            start = clock()
            for i in range(CONSUMERS, WORKERS):
                self.tell(i, f"produce {transport} {size} {share}")
            for _ in range(count - 3 * share):
                put(msg)
            put(b"")
            for _ in range(CONSUMERS):
                self.back.get()
        return throughput_sample(count, size, clock() - start)


def serve():
    bench = Bench()
    try:
        serve_commands({"throughput": bench.throughput})
    finally:
        # The managers and their socket directory go, whatever happened.
        bench.stop()


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        bench = Bench()
        for transport in ("unix", "tcp"):
            for producers in (1, 4):
                print(json.dumps(bench.throughput(transport, 64, 2000, producers)))
        bench.stop()
