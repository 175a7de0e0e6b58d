//! SAS tokens as the tests read them: the percent-encoding rule every field follows, and a
//! token taken apart into its fields.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

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

/// The four fields of a `SharedAccessSignature` token, still percent-encoded.
#[derive(Debug, Clone)]
pub(crate) struct SasToken {
    pub(crate) raw: String,
    pub(crate) sr: String,
    pub(crate) sig: String,
    pub(crate) se: u64,
    pub(crate) skn: String,
}

impl SasToken {
    /// Splits `SharedAccessSignature sr=..&sig=..&se=..&skn=..`, asserting that exact order.
    pub(crate) fn parse(token: &str) -> SasToken {
        let rest = token
            .strip_prefix("SharedAccessSignature ")
            .unwrap_or_else(|| panic!("token lacks the `SharedAccessSignature ` prefix: {token}"));
        let fields: Vec<(&str, &str)> = rest
            .split('&')
            .map(|pair| {
                pair.split_once('=')
                    .unwrap_or_else(|| panic!("token field without `=`: {pair} in {token}"))
            })
            .collect();
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["sr", "sig", "se", "skn"],
            "token fields must be sr, sig, se, skn in that order: {token}"
        );
        let se = fields[2].1;
        SasToken {
            raw: token.to_owned(),
            sr: fields[0].1.to_owned(),
            sig: fields[1].1.to_owned(),
            se: se
                .parse()
                .unwrap_or_else(|_| panic!("se is not integer Unix seconds: {se} in {token}")),
            skn: fields[3].1.to_owned(),
        }
    }
}
