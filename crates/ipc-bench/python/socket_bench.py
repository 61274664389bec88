#!/usr/bin/env python3
"""Ping-pong, throughput and connect + authenticate over
multiprocessing.connection Listener / Client, on a Unix socket and TCP.

A multiprocessing.Process child owns three Listeners with an authkey (Unix
data, TCP 127.0.0.1 data, Unix for connect); the parent connects to the
two data listeners once, and to the third once per connect measured.

    python3 socket_bench.py --serve   used by ipc-bench: one command a line on
                                      stdin, one JSON line per answer on stdout

Commands (FAMILY is unix or tcp; CPU: pin both processes to it, or -1):
    pingpong FAMILY SIZE WARMUP COUNT CPU
    throughput FAMILY SIZE COUNT CPU
    connect WARMUP COUNT CPU          WARMUP + COUNT Client(address, authkey)
    quit
Answers have the fields of ipc-bench's Sample, as in pipe_bench.py.
"""

import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from multiprocessing.connection import Client, Listener

from pipe_bench import Pinned, percentile, pingpong_timed, serve_peer, throughput_timed

AUTHKEY = b"ipc-bench authkey"


def child(cmd, unix_path, connect_path):
    """The listeners; obeys commands sent over `cmd`, untimed."""
    unix = Listener(unix_path, "AF_UNIX", backlog=16, authkey=AUTHKEY)
    tcp = Listener(("127.0.0.1", 0), "AF_INET", backlog=16, authkey=AUTHKEY)
    connect = Listener(connect_path, "AF_UNIX", backlog=16, authkey=AUTHKEY)
    cmd.send((unix.address, tcp.address, connect.address))
    conns = {"unix": unix.accept(), "tcp": tcp.accept()}
    while True:
        words = cmd.recv_bytes().decode().split()
        if words[0] == "quit":
            break
        if words[0] == "connect":
            count, cpu = int(words[1]), int(words[2])
            with Pinned(cpu):
                for _ in range(count):
                    connect.accept().close()
            continue
        conn = conns[words[1]]
        size, count, cpu = int(words[2]), int(words[3]), int(words[4])
        serve_peer(conn, words[0], size, count, cpu)
    for listener in (unix, tcp, connect):
        listener.close()


def connect_timed(address, warmup, count):
    for _ in range(warmup):
        Client(address, authkey=AUTHKEY).close()
    clock = time.perf_counter_ns
    times = [0] * count
    start = last = clock()
    for i in range(count):
        Client(address, authkey=AUTHKEY).close()
        now = clock()
        times[i] = now - last
        last = now
    times.sort()
    return {
        "kind": "latency",
        "p50_ns": float(percentile(times, 0.50)),
        "p99_ns": float(percentile(times, 0.99)),
        "round_trips": count,
        "elapsed_ns": float(last - start),
    }


def serve():
    ctx = multiprocessing.get_context("fork")
    tmp = tempfile.mkdtemp(prefix="ipc-bench-py-")
    unix_path = os.path.join(tmp, "data.sock")
    connect_path = os.path.join(tmp, "connect.sock")
    cmd, cmd_child = ctx.Pipe()
    proc = ctx.Process(target=child, args=(cmd_child, unix_path, connect_path))
    proc.start()
    cmd_child.close()
    unix_addr, tcp_addr, connect_addr = cmd.recv()
    conns = {
        "unix": Client(unix_addr, authkey=AUTHKEY),
        "tcp": Client(tcp_addr, authkey=AUTHKEY),
    }
    print(json.dumps({"python": platform.python_version()}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            if words[0] == "pingpong":
                family = words[1]
                size, warmup, count, cpu = (int(w) for w in words[2:6])
                cmd.send_bytes(f"pingpong {family} {size} {warmup + count} {cpu}".encode())
                with Pinned(cpu):
                    result = pingpong_timed(conns[family], size, b"\xa5" * size, warmup, count)
            elif words[0] == "throughput":
                family = words[1]
                size, count, cpu = (int(w) for w in words[2:5])
                cmd.send_bytes(f"throughput {family} {size} {count} {cpu}".encode())
                with Pinned(cpu):
                    result = throughput_timed(conns[family], size, b"\xa5" * size, count)
            elif words[0] == "connect":
                warmup, count, cpu = (int(w) for w in words[1:4])
                cmd.send_bytes(f"connect {warmup + count} {cpu}".encode())
                with Pinned(cpu):
                    result = connect_timed(connect_addr, warmup, count)
            else:
                result = {"error": f"unknown command {words[0]!r}"}
        except Exception as e:  # reported to ipc-bench, which stops this contender
            result = {"error": repr(e)}
        print(json.dumps(result), flush=True)
    cmd.send_bytes(b"quit")
    for conn in conns.values():
        conn.close()
    proc.join()
    for path in (unix_path, connect_path):
        if os.path.exists(path):
            os.unlink(path)
    os.rmdir(tmp)


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        sys.exit(__doc__)
