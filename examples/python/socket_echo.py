# The socket scenario of the first article: an echo server process and a
# client process. The article starts both at once, so its client can race
# the server's bind; here the listening socket is made first and inherited
# by the server process, and the client gets its port. What is printed is
# the same.
import socket
import multiprocessing


def server(s):
    with s:
        conn, addr = s.accept()
        with conn:
            print('Connected by', addr)
            while True:
                data = conn.recv(1024)
                if not data:
                    break
                conn.sendall(b'Received: ' + data)


def client(port, message):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect(('127.0.0.1', port))
        s.sendall(message.encode())
        data = s.recv(1024)
        print('Received', repr(data))


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    s.listen()
    p_server = multiprocessing.Process(target=server, args=(s,))
    p_client = multiprocessing.Process(target=client, args=(s.getsockname()[1], "Hello, Server!"))
    p_server.start()
    p_client.start()
    p_server.join()
    p_client.join()
