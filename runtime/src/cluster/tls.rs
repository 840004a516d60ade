//! TLS between nodes (feature `cluster`): mutual TLS with the certificates `[cluster]
//! tls_cert`, `tls_key` and `tls_ca` name. Each node presents its certificate and accepts
//! only peers whose certificate the cluster's authority (`tls_ca`) signed, in both
//! directions; the shared secret is still checked inside the encrypted session.
//!
//! The cryptography is rustls with the aws-lc-rs provider (the one ractor_cluster's
//! tokio-rustls already builds), chosen explicitly so that no process-wide default is needed.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// The acceptor of the node's listener and the connector of its dials.
#[derive(Clone)]
pub struct Tls {
    /// Accepts peers' connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Dials peers.
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

type Invalid = (&'static str, String);

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| (key, format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err((key, format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

/// Loads the node's certificate chain, its private key and the cluster's authority, and
/// builds both sides of mutual TLS.
///
/// # Errors
/// The configuration key and what is wrong: an unreadable file, no certificate, a key that
/// does not match the certificate, an authority that is not a valid CA certificate.
pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Tls, Invalid> {
    let chain = certificates("cluster.tls_cert", cert)?;
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("cluster.tls_key", format!("{}: {e}", key.display())))?;
    let mut roots = RootCertStore::empty();
    for c in certificates("cluster.tls_ca", ca)? {
        roots
            .add(c)
            .map_err(|e| ("cluster.tls_ca", format!("{}: {e}", ca.display())))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| ("cluster.tls_ca", e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cluster.tls_cert", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private.clone_key())
        .map_err(|e| {
            (
                "cluster.tls_key",
                format!("{} does not fit the certificate: {e}", key.display()),
            )
        })?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cluster.tls_cert", e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .map_err(|e| {
            (
                "cluster.tls_key",
                format!("{} does not fit the certificate: {e}", key.display()),
            )
        })?;
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}

/// The name a seed `host:port` must carry in its certificate (a DNS name or an IP address).
///
/// # Errors
/// The host is neither.
pub fn server_name(seed: &str) -> Result<ServerName<'static>, String> {
    let host = seed.rsplit_once(':').map_or(seed, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn the_test_certificates_load_and_bad_files_name_their_key() {
        let ok = load(
            &fixture("node.pem"),
            &fixture("node.key"),
            &fixture("cluster-ca.pem"),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let missing = load(
            &fixture("nope.pem"),
            &fixture("node.key"),
            &fixture("cluster-ca.pem"),
        );
        assert_eq!(missing.unwrap_err().0, "cluster.tls_cert");
        // A key that is not the certificate's.
        let mismatch = load(
            &fixture("node.pem"),
            &fixture("rogue-node.key"),
            &fixture("cluster-ca.pem"),
        );
        assert_eq!(mismatch.unwrap_err().0, "cluster.tls_key");
        // A key file where the authority should be.
        let no_ca = load(
            &fixture("node.pem"),
            &fixture("node.key"),
            &fixture("node.key"),
        );
        assert_eq!(no_ca.unwrap_err().0, "cluster.tls_ca");
    }

    #[test]
    fn a_seed_names_its_server_by_host() {
        assert!(server_name("127.0.0.1:7700").is_ok());
        assert!(server_name("aiosd-0.aiosd:7700").is_ok());
        assert!(server_name("[::1]:7700").is_ok());
        assert!(server_name("bad host:7700").is_err());
    }
}
