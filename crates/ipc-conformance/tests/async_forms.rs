//! The conformance suite over the async forms (feature `tokio`): each end
//! awaits its sends and receives on a runtime of its own, so the suite's
//! blocking calls are `block_on` of the async ones, a "try" is one poll of
//! a receive that is then dropped (its cancel safety is part of what is
//! checked) followed by the non-waiting `try_recv`, and a timeout is
//! `tokio::time::timeout`. Async ends face each
//! other and blocking ends, over a duplex pipe, a one-way pipe, a queue,
//! and sockets (Unix, TCP with the authkey, TLS) that the async listener
//! and client connected.

use std::time::Duration;

use ipc_core::tokio::AsyncConnection;
use ipc_core::{ByteReceiver, ByteSender, Error, FdStream, Receiver, Result, Sender, Transport};
use ipc_socket::tokio::AsyncListener;
use ipc_socket::{Address, Client, Listener, Options, SocketStream};
use ipc_testkit::poll_once;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An async end driven by a runtime of its own.
struct AsyncEnd<S: Transport = FdStream> {
    runtime: tokio::runtime::Runtime,
    conn: AsyncConnection<S>,
}

impl<S: Transport> AsyncEnd<S> {
    fn new(conn: ipc_core::Connection<S>) -> AsyncEnd<S> {
        let runtime = ipc_testkit::runtime();
        let conn = {
            let _entered = runtime.enter();
            AsyncConnection::new(conn).expect("register the end")
        };
        AsyncEnd { runtime, conn }
    }
}

impl<S: Transport> ByteSender for AsyncEnd<S> {
    fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.runtime.block_on(self.conn.send_bytes(buf))
    }

    fn send_bytes_batch(&mut self, messages: &[&[u8]]) -> Result<()> {
        self.runtime.block_on(self.conn.send_bytes_batch(messages))
    }
}

impl<S: Transport> ByteReceiver for AsyncEnd<S> {
    fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.runtime.block_on(self.conn.recv_bytes())
    }

    fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let AsyncEnd { runtime, conn } = self;
        runtime
            .block_on(async { tokio::time::timeout(timeout, conn.recv_bytes()).await })
            .unwrap_or(Err(Error::Timeout))
    }

    fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        let _entered = self.runtime.enter();
        // A receive polled once and dropped (which must lose nothing), then
        // the non-waiting form, which sees what the reactor has not yet.
        poll_once(self.conn.recv_bytes()).unwrap_or_else(|| self.conn.try_recv_bytes())
    }

    fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.runtime.block_on(self.conn.recv_bytes_into(buf))
    }
}

impl<S: Transport, T: Serialize + ?Sized> Sender<T> for AsyncEnd<S> {
    fn send(&mut self, msg: &T) -> Result<()> {
        self.runtime.block_on(self.conn.send(msg))
    }
}

impl<S: Transport, T: DeserializeOwned> Receiver<T> for AsyncEnd<S> {
    fn recv(&mut self) -> Result<T> {
        self.runtime.block_on(self.conn.recv())
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        let AsyncEnd { runtime, conn } = self;
        runtime
            .block_on(async { tokio::time::timeout(timeout, conn.recv()).await })
            .unwrap_or(Err(Error::Timeout))
    }

    fn try_recv(&mut self) -> Result<T> {
        let _entered = self.runtime.enter();
        poll_once(self.conn.recv()).unwrap_or_else(|| self.conn.try_recv())
    }
}

#[test]
fn async_ends_of_a_duplex_pipe_conform() {
    ipc_conformance::run_all(|| {
        let (a, b) = ipc_pipe::duplex().expect("duplex pipe");
        (AsyncEnd::new(a), AsyncEnd::new(b))
    });
}

#[test]
fn an_async_sender_and_a_blocking_receiver_conform() {
    ipc_conformance::run_all(|| {
        let (a, b) = ipc_pipe::duplex().expect("duplex pipe");
        (AsyncEnd::new(a), b)
    });
}

#[test]
fn a_blocking_sender_and_an_async_receiver_of_a_one_way_pipe_conform() {
    ipc_conformance::run_all(|| {
        let (reader, writer) = ipc_pipe::one_way().expect("one-way pipe");
        (writer, AsyncEnd::new(reader))
    });
}

/// A (client, accepted) pair of async ends that the async client and the
/// async listener connected, each on its end's runtime: the listener's
/// runtime runs its handshakes while it awaits the accept, and the
/// client's connects on a thread of its own meanwhile.
fn async_sockets(
    address: Address,
    server: Options,
    client: Options,
) -> (AsyncEnd<SocketStream>, AsyncEnd<SocketStream>) {
    let server_runtime = ipc_testkit::runtime();
    let client_runtime = ipc_testkit::runtime();
    let listener = {
        let _entered = server_runtime.enter();
        AsyncListener::bind(address, server).expect("bind")
    };
    let (client, accepted) = std::thread::scope(|scope| {
        let connecting = scope.spawn(|| {
            client_runtime
                .block_on(Client::connect_async(listener.address(), client))
                .expect("connect")
        });
        let accepted = server_runtime.block_on(listener.accept()).expect("accept");
        (connecting.join().expect("client thread"), accepted)
    });
    drop(listener);
    let end = |runtime, conn| AsyncEnd { runtime, conn };
    (end(client_runtime, client), end(server_runtime, accepted))
}

#[test]
fn async_unix_sockets_conform() {
    ipc_conformance::run_all(|| {
        let path = ipc_testkit::temp_path("ipct_conf");
        async_sockets(Address::Unix(path), Options::new(), Options::new())
    });
}

#[test]
fn async_authenticated_tcp_conforms_both_ways() {
    let options = Options::new().authkey(b"conformance");
    let pair = || {
        async_sockets(
            "127.0.0.1:0".parse().unwrap(),
            options.clone(),
            options.clone(),
        )
    };
    ipc_conformance::run_all(pair);
    ipc_conformance::run_all(|| {
        let (client, server) = pair();
        (server, client)
    });
}

#[test]
fn async_tls_conforms() {
    let (server_tls, client_tls) = ipc_tests::self_signed_tls();
    ipc_conformance::run_all(|| {
        async_sockets(
            "127.0.0.1:0".parse().unwrap(),
            Options::new().authkey(b"k").tls_server(server_tls.clone()),
            Options::new().authkey(b"k").tls_client(client_tls.clone()),
        )
    });
}

#[test]
fn an_async_client_and_a_blocking_listener_conform() {
    ipc_conformance::run_all(|| {
        let options = Options::new().authkey(b"conformance");
        let listener = Listener::bind("127.0.0.1:0", options.clone()).expect("bind");
        let runtime = ipc_testkit::runtime();
        std::thread::scope(|scope| {
            let accepting = scope.spawn(|| listener.accept().expect("accept"));
            let client = runtime
                .block_on(Client::connect_async(listener.address(), options))
                .expect("connect");
            let accepted = accepting.join().expect("accept thread");
            (
                AsyncEnd {
                    runtime,
                    conn: client,
                },
                accepted,
            )
        })
    });
}

/// An async handle of a queue, driven by a runtime of its own, that closes
/// the queue when dropped (the suite's "the peer is gone"). Room for the
/// suite's 4 MiB message.
struct AsyncQueueEnd {
    runtime: tokio::runtime::Runtime,
    queue: ipc_queue::Queue<()>,
}

impl Drop for AsyncQueueEnd {
    fn drop(&mut self) {
        let _ = self.queue.close();
    }
}

impl AsyncQueueEnd {
    fn pair() -> (AsyncQueueEnd, AsyncQueueEnd) {
        let queue = ipc_queue::Queue::<()>::builder()
            .capacity(8 << 20)
            .anonymous()
            .expect("queue");
        let other = queue.try_clone().expect("a second handle");
        let end = |queue| AsyncQueueEnd {
            runtime: ipc_testkit::runtime(),
            queue,
        };
        (end(queue), end(other))
    }

    fn get(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        let AsyncQueueEnd { runtime, queue } = self;
        match timeout {
            None => runtime.block_on(queue.get_bytes_async()),
            Some(timeout) => runtime
                .block_on(async { tokio::time::timeout(timeout, queue.get_bytes_async()).await })
                .unwrap_or(Err(Error::Timeout)),
        }
    }
}

impl ByteSender for AsyncQueueEnd {
    fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.runtime.block_on(self.queue.put_bytes_async(buf))
    }
}

impl ByteReceiver for AsyncQueueEnd {
    fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.get(None)
    }

    fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.get(Some(timeout))
    }

    fn try_recv_bytes(&mut self) -> Result<Vec<u8>> {
        poll_once(self.queue.get_bytes_async()).unwrap_or(Err(Error::Empty))
    }

    fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.runtime.block_on(self.queue.get_bytes_into_async(buf))
    }
}

impl<T: Serialize + ?Sized> Sender<T> for AsyncQueueEnd {
    fn send(&mut self, msg: &T) -> Result<()> {
        let mut buf = Vec::new();
        ipc_core::codec::encode_into(msg, &mut buf)?;
        self.send_bytes(&buf)
    }
}

impl<T: DeserializeOwned> Receiver<T> for AsyncQueueEnd {
    fn recv(&mut self) -> Result<T> {
        ipc_core::codec::decode(&self.get(None)?)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        ipc_core::codec::decode(&self.get(Some(timeout))?)
    }

    fn try_recv(&mut self) -> Result<T> {
        ipc_core::codec::decode(&self.try_recv_bytes()?)
    }
}

#[test]
fn async_handles_of_a_queue_conform() {
    ipc_conformance::run_all(AsyncQueueEnd::pair);
}
