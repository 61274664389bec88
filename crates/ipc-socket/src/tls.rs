//! TLS for connections that leave the machine: rustls (with the ring
//! provider) under the framing, set up with [`TlsServer`] on a
//! [`Listener`](crate::Listener) and [`TlsClient`] on a
//! [`Client`](crate::Client). The authkey handshake, if any, runs inside
//! the encrypted channel.

use std::sync::Arc;

use ipc_core::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The server side of TLS: a certificate chain and its private key.
///
/// ```
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let tls = ipc_socket::TlsServer::from_pem(cert.cert.pem().as_bytes(), cert.signing_key.serialize_pem().as_bytes())?;
/// let options = ipc_socket::Options::new().tls_server(tls);
/// # let _ = options;
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TlsServer(pub(crate) Arc<rustls::ServerConfig>);

/// The client side of TLS: the roots to trust and the name the server's
/// certificate must carry.
#[derive(Clone, Debug)]
pub struct TlsClient {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Authentication(format!("TLS {context}: {e}"))
}

impl TlsServer {
    /// From a PEM certificate chain (leaf first) and a PEM private key.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsServer> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tls_error("certificate", e))?;
        if chain.is_empty() {
            return Err(Error::InvalidArgument("no certificate in the PEM data"));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls_error("private key", e))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("configuration", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls_error("certificate", e))?;
        Ok(TlsServer(Arc::new(config)))
    }

    /// From a rustls configuration built by the caller (client
    /// certificates, other providers).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> TlsServer {
        TlsServer(config)
    }
}

impl TlsClient {
    /// Trusting the PEM certificates in `roots_pem` (a CA, or the server's
    /// own self-signed certificate), for a server named `server_name`.
    pub fn from_pem(roots_pem: &[u8], server_name: &str) -> Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(roots_pem) {
            roots
                .add(cert.map_err(|e| tls_error("root certificate", e))?)
                .map_err(|e| tls_error("root certificate", e))?;
        }
        if roots.is_empty() {
            return Err(Error::InvalidArgument(
                "no root certificate in the PEM data",
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("configuration", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient::from_config(Arc::new(config), server_name)
    }

    /// From a rustls configuration built by the caller.
    pub fn from_config(config: Arc<rustls::ClientConfig>, server_name: &str) -> Result<TlsClient> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            Error::InvalidArgument("the TLS server name is not a valid DNS name or IP address")
        })?;
        Ok(TlsClient {
            config,
            server_name,
        })
    }
}
