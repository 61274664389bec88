# Large frames through a Queue: a producer process puts three frames of
# 1 MiB, each filled with its number, then an end marker (None); a consumer
# process prints each frame's size and what it holds. Each frame is pickled
# into the queue's pipe and copied out again. The Rust twin,
# crates/ipc-queue/examples/large_frames.rs, writes each frame where it
# lies in the queue's ring and reads it there.
import os
import sys

# queue.py beside this file would shadow the standard library's `queue`
# module that multiprocessing imports: drop this folder from the path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from multiprocessing import Process, Queue  # noqa: E402

FRAME = 1 << 20


def producer(queue):
    for n in range(3):
        queue.put(bytes([n]) * FRAME)
    queue.put(None)


def consumer(queue):
    while True:
        frame = queue.get()
        if frame is None:
            break
        uniform = "yes" if frame.count(frame[0]) == len(frame) else "no"
        print(f"frame of {len(frame)} bytes, all {frame[0]}: {uniform}")


if __name__ == "__main__":
    queue = Queue()
    p1 = Process(target=producer, args=(queue,))
    p2 = Process(target=consumer, args=(queue,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
