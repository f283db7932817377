//! TLS with rustls (ADR 0011): the server's certificate and key, the CA
//! that signs client certificates when mutual TLS is on, and the CA and
//! client certificate that clients present. Every file is read once, at
//! start: replacing a certificate takes a restart. Key files are secrets:
//! errors name their path, never their contents, and nothing here logs them.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ClientTlsFiles, ServerTlsFiles};
use crate::{Error, Result};

/// Longest a TLS handshake may take: a client that opens a connection and
/// never finishes the handshake must not hold it forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes ring the process's rustls crypto provider. Other dependencies
/// (object_store's HTTP client) enable aws-lc-rs in rustls too, and rustls
/// refuses to guess when two providers are compiled in; the first call wins,
/// later calls (and a provider already installed) are fine.
pub fn install_crypto_provider() {
    // An Err only says a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server's TLS settings, or `None` when no certificate is configured
/// (plaintext, the default).
pub fn server_tls(files: &ServerTlsFiles) -> Result<Option<ServerTlsConfig>> {
    let (cert, key) = match (&files.tls_cert, &files.tls_key) {
        (None, None) if files.tls_client_ca.is_none() => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(Error::TlsIncomplete {
                problem: "--tls-cert and --tls-key go together, and --tls-client-ca needs both",
            });
        }
    };
    install_crypto_provider();
    let identity = Identity::from_pem(read_pem("certificate", cert)?, read_pem("key", key)?);
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &files.tls_client_ca {
        // Mutual TLS: a client without a certificate signed by this CA is
        // refused during the handshake, before any call is read.
        config = config.client_ca_root(Certificate::from_pem(read_pem("client CA", ca)?));
    }
    Ok(Some(config))
}

/// The clients' TLS settings, or `None` when none is configured: then
/// `https://` addresses are verified against the system's roots and
/// everything else is plaintext.
pub fn client_tls(files: &ClientTlsFiles) -> Result<Option<ClientTlsConfig>> {
    let identity = match (&files.tls_client_cert, &files.tls_client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(Identity::from_pem(
            read_pem("client certificate", cert)?,
            read_pem("client key", key)?,
        )),
        _ => {
            return Err(Error::TlsIncomplete {
                problem: "--tls-client-cert and --tls-client-key go together",
            });
        }
    };
    if files.tls_ca.is_none() && identity.is_none() {
        return Ok(None);
    }
    install_crypto_provider();
    let mut config = ClientTlsConfig::new();
    config = match &files.tls_ca {
        // Only this CA: a private CA should not be widened to every public one.
        Some(ca) => config.ca_certificate(Certificate::from_pem(read_pem("CA", ca)?)),
        None => config.with_native_roots(),
    };
    if let Some(identity) = identity {
        config = config.identity(identity);
    }
    Ok(Some(config))
}

/// Reads a PEM file; the error names the file, never what it holds.
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(|source| Error::ReadTlsFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn no_files_is_plaintext() {
        assert!(
            server_tls(&ServerTlsFiles::default())
                .expect("ok")
                .is_none()
        );
        assert!(
            client_tls(&ClientTlsFiles::default())
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let files = ServerTlsFiles {
            tls_cert: Some(PathBuf::from("/nonexistent/cert.pem")),
            ..ServerTlsFiles::default()
        };
        assert!(matches!(
            server_tls(&files),
            Err(Error::TlsIncomplete { .. })
        ));
    }

    #[test]
    fn a_file_that_is_not_pem_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "secret-key-material").expect("write");
        let files = ServerTlsFiles {
            tls_cert: Some(key.clone()),
            tls_key: Some(key),
            tls_client_ca: None,
        };
        let error = server_tls(&files).expect_err("not PEM");
        assert!(matches!(error, Error::NotPem { .. }), "{error}");
        assert!(!error.to_string().contains("secret-key-material"));
    }
}
