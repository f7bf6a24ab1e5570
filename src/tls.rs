//! Optional TLS (rustls) for both listeners: `[tls] cert_file` and `key_file` (PEM; the
//! chain first, then any intermediates) turn gRPC into `https` and `/metrics` into HTTPS.
//! Without them both are plain, for a trusted network or a TLS-terminating sidecar.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use crate::config::tls::TlsConfig;

/// A certificate chain and its key, as PEM bytes.
pub type Pem = (Vec<u8>, Vec<u8>);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read tls.{field} {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.{field} {path} holds no {what} in PEM")]
    Pem {
        field: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("the certificate and key do not make a TLS server config: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// The PEM files' bytes, when TLS is on.
    pub fn read(&self) -> Result<Option<Pem>, TlsError> {
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let read = |field, path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                field,
                path: path.clone(),
                source,
            })
        };
        Ok(Some((read("cert_file", cert)?, read("key_file", key)?)))
    }

    /// What forwarded calls check the other replicas with (Kafka mode), when TLS is on: the
    /// CA of `ca_file`, else of `cert_file`, and `server_name` when set.
    pub fn client(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let (field, path) = match &self.ca_file {
            Some(ca) => ("ca_file", ca),
            None => ("cert_file", self.cert_file.as_ref().expect("enabled")),
        };
        let ca = std::fs::read(path).map_err(|source| TlsError::Read {
            field,
            path: path.clone(),
            source,
        })?;
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }

    /// The rustls server config for `/metrics`.
    pub fn acceptor(&self, cert: &[u8], key: &[u8]) -> Result<TlsAcceptor, TlsError> {
        let path = |p: &Option<PathBuf>| p.clone().unwrap_or_default();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::Pem {
                field: "cert_file",
                path: path(&self.cert_file),
                what: "certificate",
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::Pem {
            field: "key_file",
            path: path(&self.key_file),
            what: "private key",
        })?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A listener whose connections are TLS: handshakes run on their own tasks (a slow client
/// does not hold up the others) and give up after 10 s.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task never ends on its own.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
