//! TLS on the router's TCP endpoint (a mesh on etcd): the router proves
//! who it is with a certificate that the mesh's own CA signed, and the
//! connection, the token preamble included, is encrypted.
//!
//! The router is given `--tls-cert` and `--tls-key` (PEM) and publishes
//! its endpoint as `tls:HOST:PORT`; a frontend is given `--tls-ca` (PEM:
//! the mesh CA's certificate, the only root it trusts) and checks the
//! router's certificate against the host it dials (a DNS name, or an IP
//! address in the certificate's subjectAltName). TLS 1.3 only: both ends
//! are polis. The token still decides who may call: TLS says who the
//! router is and keeps the token secret on the way.

use std::{io, path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;

/// The provider both ends use: ring's, TLS 1.3.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("cannot read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

/// The router's side: its certificate chain and key.
#[derive(Clone)]
pub struct ServerTls(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(…)")
    }
}

impl ServerTls {
    /// From PEM files: `cert` the router's certificate (then any
    /// intermediates), `key` its private key. The key file must be
    /// private to its owner, as the token file is.
    pub fn from_pem_files(cert: &Path, key_file: &Path) -> io::Result<Self> {
        crate::tcp::check_private(key_file, "TLS key")?;
        let chain = certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| bad(format!("cannot read a private key from {}: {e}", key_file.display())))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                bad(format!(
                    "{} and {} do not make a server identity: {e}",
                    cert.display(),
                    key_file.display()
                ))
            })?;
        Ok(Self(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    /// The handshake with a client that has just connected.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<tokio_rustls::TlsStream<TcpStream>> {
        Ok(self.0.accept(stream).await?.into())
    }
}

/// A frontend's side: the mesh CA it trusts.
#[derive(Clone)]
pub struct ClientTls(tokio_rustls::TlsConnector);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(…)")
    }
}

impl ClientTls {
    /// From the mesh CA's certificate(s), PEM: the only roots trusted.
    pub fn from_ca_file(ca: &Path) -> io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| bad(format!("{} is not a usable CA certificate: {e}", ca.display())))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }

    /// The handshake with the router at `addr` (`HOST:PORT`), whose
    /// certificate must name `HOST`.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::TlsStream<TcpStream>> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| bad(format!("{host:?} cannot name a TLS server: {e}")))?;
        self.0
            .connect(name, stream)
            .await
            .map(Into::into)
            .map_err(|e| io::Error::new(e.kind(), format!("TLS with the router at {addr} failed: {e}")))
    }
}
