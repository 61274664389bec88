# The Queue scenario of the article: a producer process puts 1 to 5 and
# then an end marker (None) on a Queue; a consumer process prints each item
# until the marker. The Rust twin is crates/ipc-queue/examples/queue.rs.
import os
import sys

# This file is named queue.py, which would shadow the standard library's
# `queue` module that multiprocessing imports: drop this folder from the path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from multiprocessing import Process, Queue


def producer(queue, data_list):
    for data in data_list:
        queue.put(data)
    queue.put(None)


def consumer(queue):
    while True:
        data = queue.get()
        if data is None:
            break
        print("Consumed data:", data)


if __name__ == "__main__":
    queue = Queue()
    data_list = [1, 2, 3, 4, 5]
    p1 = Process(target=producer, args=(queue, data_list))
    p2 = Process(target=consumer, args=(queue,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
