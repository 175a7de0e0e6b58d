//! `SSL_CERT_FILE`: the trust roots of every https client the handler builds.
//!
//! **What it owns.** The start-up check of `SSL_CERT_FILE`. When it is set, the TLS stack loads
//! *only* that file's certificates (the system store is ignored: docs/azure-behaviour.md §7); a
//! file that is missing, unreadable or holds no certificate leaves no roots at all. The JWKS client
//! then fails to build and the Azure SDK's client panics while building, so the check runs at
//! start-up, whenever any https client is configured (Key Vault, the bearer layer), and names the
//! setting.
//!
//! **What it trusts.** Nothing in the file but its PEM structure; it does not judge the roots.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::settings::{Lookup, SettingError};

/// The setting.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// When `SSL_CERT_FILE` is set, it must be a readable file of PEM certificates, at least one.
pub fn check_from_lookup(settings: &Lookup<'_>) -> Result<(), SettingError> {
    let Some(path) = settings.get(SSL_CERT_FILE) else {
        return Ok(());
    };
    let problem = |text: &str| SettingError::new(SSL_CERT_FILE, text.to_owned());
    let path = std::path::Path::new(&path);
    if !path.is_file() {
        return Err(problem("is set but is not a readable file"));
    }
    let pem = std::fs::read(path).map_err(|_| problem("is set but is not a readable file"))?;
    let mut certificates = 0usize;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|_| problem("holds a malformed PEM certificate"))?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err(problem(
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`), so no https server could be trusted",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str) -> Result<(), SettingError> {
        let read = |name: &str| (name == SSL_CERT_FILE).then(|| path.to_owned());
        check_from_lookup(&Lookup::new(&read))
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("https-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        for (path, want) in [
            (
                "/nonexistent/roots.pem",
                "is set but is not a readable file",
            ),
            (empty.to_str().expect("utf-8"), "holds no PEM certificate"),
            (
                garbage.to_str().expect("utf-8"),
                "holds a malformed PEM certificate",
            ),
        ] {
            let error = check(path).expect_err("refused");
            assert_eq!(error.setting, SSL_CERT_FILE);
            assert!(error.problem.starts_with(want), "{path}: {}", error.problem);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unset_is_fine() {
        let read = |_: &str| None;
        assert_eq!(check_from_lookup(&Lookup::new(&read)), Ok(()));
    }
}
