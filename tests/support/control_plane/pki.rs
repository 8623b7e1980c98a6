//! The control plane's keys and certificates, made in Rust for each run: a CA, the API server's
//! serving certificate for 127.0.0.1, and the service-account signing key pair.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// PEM texts written next to the control plane's data.
pub struct Pki {
    /// The CA certificate clients trust.
    pub ca_pem: String,
}

/// Writes `ca.crt`, `apiserver.crt`, `apiserver.key`, `sa.key` and `sa.pub` into `dir`.
pub fn write(dir: &Path) -> Result<Pki, String> {
    let failed = |what: &str, error: rcgen::Error| format!("cannot make the {what}: {error}");
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA parameters", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "iothub-dynreg test CA");
    let ca_key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| failed("CA", e))?;

    let mut serving = CertificateParams::new(vec!["localhost".to_owned()])
        .map_err(|e| failed("serving certificate parameters", e))?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let serving_key = KeyPair::generate().map_err(|e| failed("serving key", e))?;
    let serving_cert = serving
        .signed_by(&serving_key, &ca)
        .map_err(|e| failed("serving certificate", e))?;

    // ECDSA P-256: kube-apiserver signs service-account tokens with it as with RSA.
    let account_key = KeyPair::generate().map_err(|e| failed("service-account key", e))?;

    let files = [
        ("ca.crt", ca.pem()),
        ("apiserver.crt", serving_cert.pem()),
        ("apiserver.key", serving_key.serialize_pem()),
        ("sa.key", account_key.serialize_pem()),
        ("sa.pub", account_key.public_key_pem()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(Pki { ca_pem: ca.pem() })
}
