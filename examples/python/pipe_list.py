# The Pipe scenario of the second article: a list sent through a pipe.
from multiprocessing import Process, Pipe


def sender(conn):
    conn.send(['hello', 'IPC'])
    conn.close()


def receiver(conn):
    print(conn.recv())
    conn.close()


if __name__ == '__main__':
    parent_conn, child_conn = Pipe()
    p1 = Process(target=sender, args=(child_conn,))
    p2 = Process(target=receiver, args=(parent_conn,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
