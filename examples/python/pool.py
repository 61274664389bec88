# The Pool scenario: four worker processes square the numbers 0 to 9. The
# Rust twin is crates/ipc-pool/examples/pool.rs.
import os
import sys

# queue.py beside this file would shadow the standard library's `queue`
# module that multiprocessing imports: drop this folder from the path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from multiprocessing import Pool


def square(x):
    return x * x


if __name__ == "__main__":
    with Pool(4) as p:
        print(p.map(square, range(10)))
