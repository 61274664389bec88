#!/usr/bin/env python3
"""Throughput of Python's queue between machines: a `queue.Queue` served by
`multiprocessing.managers.BaseManager` (here on a Unix socket, with an
authkey), which producers and consumers reach through proxies, each put and
get one round trip to the manager's server process.

- throughput, 1 producer / 1 consumer: the parent puts COUNT bytes objects
  on `data` through its proxy; a worker process, a client of the same
  manager, gets them all and puts b"" on `back`.

    python3 broker_bench.py --serve     used by ipc-bench: one command a line on
                                        stdin, one JSON line per answer on stdout

Commands in --serve mode:
    throughput SIZE COUNT
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

from pipe_bench import serve_commands, throughput_sample

AUTHKEY = b"ipc-bench"
DATA = queue.Queue()
BACK = queue.Queue()


def data_queue():
    return DATA


def back_queue():
    return BACK


class QueueManager(BaseManager):
    pass


QueueManager.register("data", callable=data_queue)
QueueManager.register("back", callable=back_queue)


def worker(cmd, address):
    """The consumer: a client of the manager, obeying commands sent over
    its own pipe, untimed."""
    manager = QueueManager(address=address, authkey=AUTHKEY)
    manager.connect()
    data, back = manager.data(), manager.back()
    while True:
        words = cmd.recv_bytes().decode().split()
        if words[0] == "quit":
            return
        size, count = int(words[1]), int(words[2])
        get = data.get
        for _ in range(count):
            if len(get()) != size:
                raise SystemExit("wrong item size")
        back.put(b"")


class Bench:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ipc-bench-manager-")
        address = os.path.join(self.dir, "manager.sock")
        self.manager = QueueManager(address=address, authkey=AUTHKEY)
        self.manager.start()
        self.data, self.back = self.manager.data(), self.manager.back()
        parent_end, child_end = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(
            target=worker, args=(child_end, address), daemon=True
        )
        self.proc.start()
        child_end.close()
        self.cmd = parent_end

    def stop(self):
        self.cmd.send_bytes(b"quit")
        self.proc.join()
        self.manager.shutdown()
        os.rmdir(self.dir)

    def throughput(self, size, count):
        msg = b"\xa5" * size
        put = self.data.put
        self.cmd.send_bytes(f"consume {size} {count}".encode())
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(count):
            put(msg)
        ack = self.back.get()
        elapsed = clock() - start
        if ack != b"":
            raise SystemExit("wrong acknowledgement")
        return throughput_sample(count, size, elapsed)


def serve():
    bench = Bench()
    serve_commands({"throughput": bench.throughput})
    bench.stop()


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        bench = Bench()
        print(json.dumps(bench.throughput(64, 2000)))
        bench.stop()
