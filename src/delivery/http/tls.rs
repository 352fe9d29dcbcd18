//! What a sink's TLS trusts and presents: rustls (ring provider) trusting the webpki roots plus
//! the sink's `ca_file`, and, for receivers that require mutual TLS, the client certificate of
//! `cert_file` with its key from `key_file`. Files are read when the sink is built (at start and
//! on every reload), so a renewed certificate is taken up by SIGHUP; an error names the key.

use crate::sink::ClientCert;
use rustls::client::WantsClientCert;
use rustls::{ClientConfig, ConfigBuilder};
use std::path::Path;
use std::sync::Arc;

/// A client config trusting the webpki roots and `ca_file`, presenting `client`'s certificate
/// when a server asks for one; an error names the key at fault (`ca_file`, `cert_file` or `key_file`).
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<&ClientCert>,
) -> Result<ClientConfig, (&'static str, String)> {
    let builder = trusting(ca_file).map_err(|e| ("ca_file", e))?;
    let Some(client) = client else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = crate::pem::certs(&client.cert_file).map_err(|e| ("cert_file", e))?;
    let path = &client.key_file;
    let key = crate::pem::private_key(path).map_err(|e| ("key_file", e))?;
    builder.with_client_auth_cert(chain, key).map_err(|e| {
        let why = format!(
            "{} cannot sign for cert_file's certificate: {e}",
            path.display()
        );
        ("key_file", why)
    })
}

/// A config builder trusting the webpki roots and the certificates in `ca_file`.
fn trusting(
    ca_file: Option<&Path>,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in crate::pem::certs(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
    Ok(builder.with_root_certificates(roots))
}
