# The Pipe scenario of the first article: a sender process and a receiver
# process share the two ends of one Pipe.
from multiprocessing import Process, Pipe


def sender(conn, data):
    conn.send(data)
    conn.close()


def receiver(conn):
    data = conn.recv()
    print("Received data:", data)
    conn.close()


if __name__ == "__main__":
    parent_conn, child_conn = Pipe()
    data = "Hello from parent!"
    p1 = Process(target=sender, args=(child_conn, data))
    p2 = Process(target=receiver, args=(parent_conn,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
