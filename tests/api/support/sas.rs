//! SAS tokens as the tests read them: the percent-encoding rule every field follows, a token
//! taken apart into its fields, and a signature check with an HMAC-SHA256 (`hmac-sha256`)
//! independent of the RustCrypto one the handler signs with.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Bytes a SAS token leaves as they are: RFC 3986 unreserved. Everything else becomes `%XX`
/// with upper-case hex, which is what Python's `urllib.parse.quote(s, safe="")` does.
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes every byte outside `A–Z a–z 0–9 - . _ ~`, upper-case hex.
pub(crate) fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The fields, in order, of a token signed with a shared access policy's key.
pub(crate) const POLICY_TOKEN_FIELDS: [&str; 4] = ["sr", "sig", "se", "skn"];

/// The fields of a `SharedAccessSignature` token, still percent-encoded.
#[derive(Debug, Clone)]
pub(crate) struct SasToken {
    pub(crate) raw: String,
    pub(crate) sr: String,
    pub(crate) sig: String,
    pub(crate) se: u64,
    /// The policy name; `None` in a token signed with a device's own key.
    pub(crate) skn: Option<String>,
}

impl SasToken {
    /// A token signed with a shared access policy's key: `sr, sig, se, skn`, in that order.
    pub(crate) fn parse(token: &str) -> SasToken {
        SasToken::parse_fields(token, &POLICY_TOKEN_FIELDS)
    }

    /// Splits `SharedAccessSignature <name>=<value>&…`, asserting the names are exactly
    /// `fields`, in that order. A token signed with a device's own key carries no `skn`:
    /// `parse_fields(token, &["sr", "sig", "se"])`.
    pub(crate) fn parse_fields(token: &str, fields: &[&str]) -> SasToken {
        let rest = token
            .strip_prefix("SharedAccessSignature ")
            .unwrap_or_else(|| panic!("token lacks the `SharedAccessSignature ` prefix: {token}"));
        let pairs: Vec<(&str, &str)> = rest
            .split('&')
            .map(|pair| {
                pair.split_once('=')
                    .unwrap_or_else(|| panic!("token field without `=`: {pair} in {token}"))
            })
            .collect();
        let names: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            fields,
            "token fields must be {} in that order: {token}",
            fields.join(", ")
        );
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| (*value).to_owned())
        };
        let required =
            |name: &str| field(name).unwrap_or_else(|| panic!("token lacks `{name}`: {token}"));
        let se = required("se");
        SasToken {
            raw: token.to_owned(),
            sr: required("sr"),
            sig: required("sig"),
            se: se
                .parse()
                .unwrap_or_else(|_| panic!("se is not integer Unix seconds: {se} in {token}")),
            skn: field("skn"),
        }
    }

    /// Whether `sig` is HMAC-SHA256 over `sr + "\n" + se`, keyed with the base64 `key`.
    pub(crate) fn is_signed_with(&self, key: &str) -> bool {
        let key = BASE64.decode(key).expect("test keys are base64");
        let expected = BASE64.encode(hmac_sha256::HMAC::mac(
            format!("{}\n{}", self.sr, self.se),
            key,
        ));
        let actual = percent_decode_str(&self.sig)
            .decode_utf8()
            .expect("sig decodes to UTF-8");
        actual == expected
    }
}

/// `%2a` → `%2A`: Node's `azure-iot-common` writes lower-case hex for `!'()*`, everything else
/// (and Python, and the handler) upper-case.
pub(crate) fn upper_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_uppercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}
