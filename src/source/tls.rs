//! An HTTP source's TLS (`tls`): rustls (ring) serving the certificate of `cert_file` with the
//! key of `key_file`, HTTP/1.1 by ALPN, and, with `client_ca_file`, refusing in the handshake
//! a client without a certificate one of those CAs signed. The files are read when the source
//! starts and on every reload; the listener is kept across reloads, so a renewed certificate is
//! taken up by SIGHUP without refusing a connection.

use crate::config::TlsSection;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

/// The server config of `tls`, or the key at fault (`cert_file`, `key_file`,
/// `client_ca_file`) and why.
pub fn server_config(tls: &TlsSection) -> Result<Arc<ServerConfig>, (&'static str, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = crate::pem::certs(&tls.cert_file).map_err(|e| ("cert_file", e))?;
    let path = &tls.key_file;
    let key = crate::pem::private_key(path).map_err(|e| ("key_file", e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cert_file", e.to_string()))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::pem::certs(path).map_err(|e| ("client_ca_file", e))? {
                roots
                    .add(cert)
                    .map_err(|e| ("client_ca_file", format!("{}: {e}", path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| ("client_ca_file", format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let why = format!(
            "{} is not the key of cert_file's certificate: {e}",
            path.display()
        );
        ("key_file", why)
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
