//! `[tls]`: the certificate and key for both listeners (see `crate::tls`).
use std::path::PathBuf;

use serde::Deserialize;

/// `[tls]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Kafka mode: the CA (PEM) other replicas' certificates are checked against when a call
    /// is forwarded to them over https. Default: `cert_file` itself (replicas sharing one
    /// certificate).
    pub ca_file: Option<PathBuf>,
    /// The name forwarded calls expect in the other replicas' certificates. Default: the
    /// host of the owner's `kafka.advertise_addr`.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// Both files or neither; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err((
                "tls.key_file".into(),
                "is missing; TLS needs the certificate's private key too".into(),
            )),
            (None, Some(_)) => Err((
                "tls.cert_file".into(),
                "is missing; TLS needs the certificate chain too".into(),
            )),
            _ => Ok(()),
        }
    }
}
