# The shared-memory scenario of the original article: a child process sets a
# shared Value and negates every element of a shared Array.
from multiprocessing import Process, Value, Array


def update_shared_memory(n, a):
    n.value = 3.1415926
    for i in range(len(a)):
        a[i] = -a[i]


if __name__ == "__main__":
    num = Value('d', 0.0)
    arr = Array('i', range(5))
    p = Process(target=update_shared_memory, args=(num, arr))
    p.start()
    p.join()
    print("Shared value:", num.value)
    print("Shared array:", arr[:])
