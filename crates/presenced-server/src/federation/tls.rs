//! The certificate and key our HTTPS listeners present
//! (`tls_certificate_path`, `tls_private_key_path`): rustls with the ring
//! provider, PEM parsing by rustls-pki-types. (The client's trust settings
//! are in `client`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate and key together.
    #[error("TLS certificate and key: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The server configuration for `tls: true` listeners: the certificate
/// chain and private key from PEM files; HTTP/1.1 only (hyper's auto
/// builder would take HTTP/2 too, but federation peers speak 1.1).
pub fn server_config(
    certificate: &Path,
    private_key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| file_error(certificate, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(certificate, e))?;
    if chain.is_empty() {
        return Err(file_error(certificate, "no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| file_error(private_key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
