//! Client certificates as App Service forwards them to the handler: self-signed certificates
//! made with rcgen, their thumbprints (computed with aws-lc-rs, not with the hash crates the
//! handler uses), and the `X-ARR-ClientCert` header value (base64 of the DER).

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};

/// The header App Service forwards the client certificate in.
pub(crate) const CLIENT_CERT_HEADER: &str = "X-ARR-ClientCert";

/// A self-signed client certificate, DER, valid from `from` to `until` (year, month, day).
pub(crate) fn certificate(name: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> Vec<u8> {
    let key = KeyPair::generate().expect("a key pair generates");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = date_time_ymd(from.0, from.1, from.2);
    params.not_after = date_time_ymd(until.0, until.1, until.2);
    params
        .self_signed(&key)
        .expect("the certificate self-signs")
        .der()
        .to_vec()
}

/// A certificate valid from 2024 to 2049.
pub(crate) fn current(name: &str) -> Vec<u8> {
    certificate(name, (2024, 1, 1), (2049, 12, 31))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-1 thumbprint, lower-case hex (40 digits): what the portal shows, in lower case.
pub(crate) fn sha1(der: &[u8]) -> String {
    hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// The SHA-256 thumbprint, lower-case hex (64 digits).
pub(crate) fn sha256(der: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, der).as_ref())
}

/// The header value App Service would forward for `der`.
pub(crate) fn forwarded(der: &[u8]) -> String {
    STANDARD.encode(der)
}
