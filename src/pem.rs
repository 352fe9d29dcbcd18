//! Reading PEM files: certificate chains and private keys, for every TLS config flagtail makes
//! (a webhook's `ca_file`, `cert_file`, `key_file`; an HTTP source's `tls`). Errors name the
//! file and what is wrong with it; the caller names the key.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// The certificates (PEM) in `path`: at least one.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The private key (PEM: PKCS#8, PKCS#1 or SEC1) in `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => "holds no private key".to_string(),
            e => format!("is not a PEM private key: {e}"),
        };
        format!("{} {why}", path.display())
    })
}
