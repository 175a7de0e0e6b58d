//! The client certificate layer: `X-ARR-ClientCert` must carry a certificate, valid now, whose
//! thumbprint is in `CLIENT_CERT_THUMBPRINTS`.
//!
//! **What it trusts.** App Service forwards the TLS client certificate as base64 DER in
//! `X-ARR-ClientCert` and does no validation of its own (chain, expiry and thumbprint are the
//! app's job). Whether App Service strips a client-supplied header of that name when no certificate
//! was presented is undocumented, so this layer is a pin on *which* certificate, not proof of
//! possession: pair it with the platform's client-certificate mode `Required`.
//!
//! **What it owns.** `CLIENT_CERT_THUMBPRINTS` ([`Thumbprints::from_lookup`]) and the check. A
//! certificate that passes is returned as its [`CertificateThumbprints`], for the layers after
//! this one.
//!
//! **How it fails.** Closed: missing, unparsable, outside its validity period or unknown → denied.
//! More than one `X-ARR-ClientCert` value is denied too, as two `Authorization` lines are: the
//! platform writes one, so a second came from someone else, and no rule could say which to trust.
//! Thumbprints are compared in constant time.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use crate::settings::{Lookup, SettingError};

/// The accepted thumbprints (SHA-1 or SHA-256 of the DER certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbprints {
    sha1: Vec<[u8; 20]>,
    sha256: Vec<[u8; 32]>,
}

/// The SHA-1 and SHA-256 thumbprints of a certificate the layer accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateThumbprints {
    /// SHA-1 of the DER certificate (what the Azure portal shows).
    pub sha1: [u8; 20],
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
}

impl CertificateThumbprints {
    /// The thumbprints of the DER certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        Self {
            sha1: Sha1::digest(der).into(),
            sha256: Sha256::digest(der).into(),
        }
    }
}

/// Why `CLIENT_CERT_THUMBPRINTS` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbprintError {
    /// No entries.
    #[error("no thumbprints given")]
    Empty,
    /// Not 40 (SHA-1) or 64 (SHA-256) hex digits.
    #[error("`{0}` is not a 40- or 64-digit hex thumbprint")]
    Malformed(String),
}

/// Why a request's certificate was refused; the log says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRejection {
    /// No `X-ARR-ClientCert` header.
    Missing,
    /// Not base64 DER X.509.
    Unparsable,
    /// More than one `X-ARR-ClientCert` header line.
    Repeated,
    /// Past its `notAfter`.
    Expired,
    /// Before its `notBefore`.
    NotYetValid,
    /// Valid, but not one of ours.
    UnknownThumbprint,
}

impl CertRejection {
    /// The value of the log line's `client_cert` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unparsable => "unparsable",
            Self::Repeated => "repeated",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::UnknownThumbprint => "unknown_thumbprint",
        }
    }
}

/// One thumbprint, as an operator writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thumbprint {
    /// 40 hex digits.
    Sha1([u8; 20]),
    /// 64 hex digits.
    Sha256([u8; 32]),
}

impl Thumbprint {
    /// 40 (SHA-1) or 64 (SHA-256) hex digits in any case; spaces and colons inside, as some tools
    /// print them, are ignored.
    pub fn parse(text: &str) -> Option<Self> {
        let hex: String = text.chars().filter(|c| *c != ':' && *c != ' ').collect();
        let bytes = decode_hex(&hex)?;
        match bytes.len() {
            20 => bytes.try_into().ok().map(Self::Sha1),
            32 => bytes.try_into().ok().map(Self::Sha256),
            _ => None,
        }
    }
}

impl Thumbprints {
    /// `CLIENT_CERT_THUMBPRINTS`: the layer is on when it is set.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Option<Self>, SettingError> {
        settings
            .get("CLIENT_CERT_THUMBPRINTS")
            .map(|text| {
                Self::parse(&text)
                    .map_err(|e| SettingError::new("CLIENT_CERT_THUMBPRINTS", e.to_string()))
            })
            .transpose()
    }

    /// Parse comma-separated hex thumbprints (case-insensitive; spaces and colons inside a
    /// thumbprint, as some tools print them, are ignored).
    pub fn parse(text: &str) -> Result<Self, ThumbprintError> {
        let mut thumbprints = Self {
            sha1: Vec::new(),
            sha256: Vec::new(),
        };
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match Thumbprint::parse(entry) {
                Some(Thumbprint::Sha1(sha1)) => thumbprints.sha1.push(sha1),
                Some(Thumbprint::Sha256(sha256)) => thumbprints.sha256.push(sha256),
                None => return Err(ThumbprintError::Malformed(entry.to_owned())),
            }
        }
        if thumbprints.sha1.is_empty() && thumbprints.sha256.is_empty() {
            return Err(ThumbprintError::Empty);
        }
        Ok(thumbprints)
    }

    /// Whether `thumbprint` is one of the pins, in its own form (a SHA-1 pin for a SHA-1
    /// thumbprint, a SHA-256 pin for a SHA-256 one).
    pub fn contains(&self, thumbprint: Thumbprint) -> bool {
        match thumbprint {
            Thumbprint::Sha1(sha1) => self.sha1.contains(&sha1),
            Thumbprint::Sha256(sha256) => self.sha256.contains(&sha256),
        }
    }

    /// Check the forwarded certificate — every `X-ARR-ClientCert` line of the request — at time
    /// `now`; the accepted certificate's thumbprints.
    pub fn check<'h>(
        &self,
        header_lines: impl IntoIterator<Item = &'h HeaderValue>,
        now: SystemTime,
    ) -> Result<CertificateThumbprints, CertRejection> {
        let mut lines = header_lines.into_iter();
        let header = lines.next().ok_or(CertRejection::Missing)?;
        if lines.next().is_some() {
            return Err(CertRejection::Repeated);
        }
        let der = BASE64
            .decode(header.as_bytes().trim_ascii())
            .map_err(|_| CertRejection::Unparsable)?;
        let (rest, certificate) =
            X509Certificate::from_der(&der).map_err(|_| CertRejection::Unparsable)?;
        if !rest.is_empty() {
            return Err(CertRejection::Unparsable);
        }
        let seconds = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let now = ASN1Time::from_timestamp(seconds).map_err(|_| CertRejection::Expired)?;
        let validity = certificate.validity();
        if now < validity.not_before {
            return Err(CertRejection::NotYetValid);
        }
        if now > validity.not_after {
            return Err(CertRejection::Expired);
        }
        let presented = CertificateThumbprints::of(&der);
        if self.matches(&presented) {
            Ok(presented)
        } else {
            Err(CertRejection::UnknownThumbprint)
        }
    }

    /// Whether `presented` is one of the thumbprints; every entry is compared, in constant time.
    fn matches(&self, presented: &CertificateThumbprints) -> bool {
        let mut found = subtle::Choice::from(0);
        for candidate in &self.sha1 {
            found |= candidate.ct_eq(&presented.sha1);
        }
        for candidate in &self.sha256 {
            found |= candidate.ct_eq(&presented.sha256);
        }
        found.into()
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_in_both_lengths_and_any_case() {
        let sha1 = "A1B2C3D4E5F60718293A4B5C6D7E8F9001122334";
        let sha256 = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let parsed = Thumbprints::parse(&format!("{sha1}, {sha256}")).expect("valid thumbprints");
        assert_eq!((parsed.sha1.len(), parsed.sha256.len()), (1, 1));
        assert!(
            Thumbprints::parse("a1:b2:c3:d4:e5:f6:07:18:29:3a:4b:5c:6d:7e:8f:90:01:12:23:34")
                .is_ok()
        );
    }

    #[test]
    fn malformed_thumbprints_are_refused() {
        assert_eq!(Thumbprints::parse(" , "), Err(ThumbprintError::Empty));
        for bad in [
            "abc",
            "zz".repeat(20).as_str(),
            &"ab".repeat(21),
            &"ab".repeat(31),
        ] {
            assert!(
                matches!(Thumbprints::parse(bad), Err(ThumbprintError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_or_garbage_certificates_are_rejected() {
        let pins = Thumbprints::parse(&"ab".repeat(20)).expect("valid thumbprint");
        let now = SystemTime::now();
        assert_eq!(pins.check([], now), Err(CertRejection::Missing));
        let garbage = HeaderValue::from_static("bm90IGEgY2VydGlmaWNhdGU=");
        assert_eq!(pins.check([&garbage], now), Err(CertRejection::Unparsable));
        let not_base64 = HeaderValue::from_static("%%%");
        assert_eq!(
            pins.check([&not_base64], now),
            Err(CertRejection::Unparsable)
        );
        assert_eq!(
            pins.check([&garbage, &not_base64], now),
            Err(CertRejection::Repeated),
            "two lines are refused before either is read"
        );
    }
}
