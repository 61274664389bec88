//! TLS between processes with a certificate generated at test time: a
//! round trip with the authkey handshake inside the encrypted channel, and
//! a clear error when only one end speaks TLS.

use ipc_core::process::Process;
use ipc_core::Error;
use ipc_socket::{Client, Listener, Options, TlsClient, TlsServer};

mod common;
use common::LONG;

fn certificate() -> (TlsServer, TlsClient) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let server = TlsServer::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let client = TlsClient::from_pem(cert.cert.pem().as_bytes(), "localhost").unwrap();
    (server, client)
}

#[test]
fn tls_carries_messages_with_the_authkey_handshake_inside() {
    let (server_tls, client_tls) = certificate();
    let listener = Listener::bind(
        "127.0.0.1:0",
        Options::new().authkey(b"k").tls_server(server_tls),
    )
    .unwrap();
    let address = listener.address().clone();
    let mut child = Process::new()
        .allow_threads()
        .fork(move || -> ipc_core::Result<()> {
            let mut conn = Client::connect(
                &address,
                Options::new().authkey(b"k").tls_client(client_tls),
            )?;
            assert!(conn.get_ref().is_tls());
            conn.send(&("over TLS", 7u8))?;
            let big = conn.recv_bytes_timeout(LONG)?;
            assert!(
                big.len() == 1 << 20 && big.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8)
            );
            // Many small messages: decrypted bytes left in the session must
            // be seen as ready without the socket becoming readable.
            for i in 0..1000u32 {
                assert_eq!(conn.recv_timeout::<u32>(LONG)?, i);
            }
            Ok(())
        })
        .unwrap();
    let mut conn = listener.accept_timeout(LONG).unwrap();
    assert!(conn.get_ref().is_tls());
    let (text, n): (String, u8) = conn.recv_timeout(LONG).unwrap();
    assert_eq!((text.as_str(), n), ("over TLS", 7));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    conn.send_bytes(&big).unwrap();
    for i in 0..1000u32 {
        conn.send(&i).unwrap();
    }
    assert!(child.join().unwrap().success());
}

#[test]
fn a_tls_client_against_a_plain_listener_fails_clearly() {
    let (_, client_tls) = certificate();
    let listener = Listener::bind("127.0.0.1:0", Options::new()).unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || {
        Client::connect(
            &address,
            Options::new()
                .tls_client(client_tls)
                .handshake_timeout(LONG),
        )
    });
    let mut server_side = listener.accept_timeout(LONG).unwrap();
    let heard = server_side.recv_bytes_timeout(LONG);
    assert!(
        matches!(&heard, Err(Error::Io(e)) if e.to_string().contains("speaks TLS")),
        "{heard:?}"
    );
    drop(server_side);
    let result = client.join().unwrap();
    assert!(
        matches!(&result, Err(Error::Authentication(m)) if m.contains("TLS")),
        "{result:?}"
    );
}

#[test]
fn a_plain_client_against_a_tls_listener_fails_clearly() {
    let (server_tls, _) = certificate();
    let listener = Listener::bind("127.0.0.1:0", Options::new().tls_server(server_tls)).unwrap();
    let mut client = Client::connect(listener.address(), Options::new()).unwrap();
    client.send_bytes(b"plain hello").unwrap();
    let accepted = listener.accept_timeout(LONG);
    assert!(
        matches!(&accepted, Err(Error::Authentication(m)) if m.contains("TLS")),
        "{accepted:?}"
    );
    let reply = client.recv_bytes_timeout(LONG);
    assert!(
        matches!(&reply, Err(Error::Closed) | Err(Error::Io(_))),
        "the plain client must get an error, got {reply:?}"
    );
    if let Err(Error::Io(e)) = &reply {
        assert!(e.to_string().contains("speaks TLS"), "{e}");
    }
}

/// The async forms over TLS with the authkey handshake inside: an async
/// listener with a blocking client in a child, then an async client with
/// a blocking listener in a child; many small messages check that
/// decrypted bytes left in the session are seen without the socket
/// becoming readable.
#[cfg(feature = "tokio")]
#[test]
fn tls_under_the_async_forms_both_ways() {
    use ipc_socket::tokio::AsyncListener;
    let (server_tls, client_tls) = certificate();
    let server_options = Options::new().authkey(b"k").tls_server(server_tls);
    let client_options = Options::new().authkey(b"k").tls_client(client_tls);
    ipc_testkit::runtime().block_on(async {
        let listener = AsyncListener::bind("127.0.0.1:0", server_options.clone()).unwrap();
        let mut child =
            common::blocking_client(listener.address(), client_options.clone(), |conn| {
                conn.send_bytes(&ipc_testkit::pattern(1, 1 << 20))?;
                for i in 0..1000u32 {
                    conn.send(&i)?;
                }
                assert_eq!(conn.recv_timeout::<String>(LONG)?, "done");
                Ok(())
            });
        let mut conn = listener.accept_timeout(LONG).await.unwrap();
        assert!(conn.get_ref().get_ref().is_tls());
        assert_eq!(
            conn.recv_bytes().await.unwrap(),
            ipc_testkit::pattern(1, 1 << 20)
        );
        for i in 0..1000u32 {
            assert_eq!(conn.recv::<u32>().await.unwrap(), i);
        }
        conn.send(&"done").await.unwrap();
        ipc_testkit::join_ok(&mut child);

        let listener = Listener::bind("127.0.0.1:0", server_options).unwrap();
        let address = listener.address().clone();
        let mut child = common::blocking_listener(&listener, |conn| {
            let n: u32 = conn.recv_timeout(LONG)?;
            for i in 0..n {
                conn.send(&i)?;
            }
            conn.send_bytes(&ipc_testkit::pattern(2, 1 << 20))
        });
        let mut conn = ipc_socket::Client::connect_async(&address, client_options)
            .await
            .unwrap();
        conn.send(&1000u32).await.unwrap();
        for i in 0..1000u32 {
            assert_eq!(conn.recv::<u32>().await.unwrap(), i);
        }
        assert_eq!(
            conn.recv_bytes().await.unwrap(),
            ipc_testkit::pattern(2, 1 << 20)
        );
        ipc_testkit::join_ok(&mut child);
    });
}
