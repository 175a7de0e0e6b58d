//! The request's inputs, parsed once into types that cannot hold an invalid value.
//!
//! **What it owns.** [`DeviceId`] and [`ModuleId`] (IoT Hub's identity rules),
//! [`RegistrationId`] (DPS's rules, lower case only — see its doc), [`Ttl`] (an integer number of
//! seconds within the configured bounds, [`TokenLifetimes`]: `TOKEN_TTL_SECONDS`,
//! `TOKEN_MAX_TTL_SECONDS`) and [`RawQuery`] (the query string: the seed function's `?deviceid=`,
//! `ttl`, and `hub`, the hub a token is for). A handler holding a `DeviceId` never checks it again.
//!
//! **What it trusts.** Nothing: every byte here comes from the caller. Query keys are matched
//! case-insensitively (the Functions host's query collection is case-insensitive and merges repeated
//! keys into one comma-joined value, so a repeated key seen here means the request did not come
//! through the host as expected); a repeated key is refused rather than resolved by a guess.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::settings::{Lookup, SettingError};

/// Longest device id IoT Hub accepts.
pub const DEVICE_ID_MAX_LEN: usize = 128;

/// A device id IoT Hub accepts: 1–128 ASCII characters, alphanumerics plus
/// `- . % _ * ? ! ( ) , : = @ $ '` (Azure IoT Hub identity registry documentation).
///
/// `/` is not allowed, so a token's resource can never widen to another path; an empty id is not
/// allowed, so it can never shrink to `…/devices` (which would cover every device); and an id of
/// dots only (`.`, `..`) is not allowed, so the resource can never read as a relative path
/// (`…/devices/..` is the hub itself to anything that normalises paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId(String);

/// Why a device id was refused; the text is safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// No id, or an empty one.
    #[error("a device id is required")]
    Missing,
    /// Longer than 128 characters.
    #[error("the device id is longer than 128 characters")]
    TooLong,
    /// A character outside IoT Hub's set.
    #[error(
        "the device id may contain only ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '"
    )]
    BadCharacter,
    /// Only dots: `.`, `..`, ….
    #[error("the device id may not consist of dots only")]
    DotsOnly,
}

impl DeviceId {
    /// Validate an already percent-decoded id.
    pub fn parse(id: &str) -> Result<Self, DeviceIdError> {
        if id.is_empty() {
            return Err(DeviceIdError::Missing);
        }
        if id.len() > DEVICE_ID_MAX_LEN {
            return Err(DeviceIdError::TooLong);
        }
        if !id.bytes().all(is_device_id_byte) {
            return Err(DeviceIdError::BadCharacter);
        }
        if id.bytes().all(|b| b == b'.') {
            return Err(DeviceIdError::DotsOnly);
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The punctuation IoT Hub allows in device and module ids, besides ASCII letters and digits
/// (docs/azure-behaviour.md §8). The one definition: ids here and `DEVICE_SCOPES` patterns
/// ([`crate::scope`]) are checked against it.
pub const DEVICE_ID_PUNCTUATION: &[u8] = b"-.%_*?!(),:=@$'";

/// Whether `b` may appear in a device or module id.
pub fn is_device_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || DEVICE_ID_PUNCTUATION.contains(&b)
}

/// A module id IoT Hub accepts: the same rules as a device id (1–128 ASCII characters,
/// alphanumerics plus `- . % _ * ? ! ( ) , : = @ $ '`). IoT Hub's table also lists `+` and `#` for
/// modules, but the device SDKs do not support them, so neither does this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleId(String);

/// Why a module id was refused; the text is safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModuleIdError {
    /// An empty id.
    #[error("a module id is required")]
    Missing,
    /// Longer than 128 characters.
    #[error("the module id is longer than 128 characters")]
    TooLong,
    /// A character outside IoT Hub's set.
    #[error(
        "the module id may contain only ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '"
    )]
    BadCharacter,
    /// Only dots: `.`, `..`, ….
    #[error("the module id may not consist of dots only")]
    DotsOnly,
}

impl ModuleId {
    /// Validate an already percent-decoded id.
    pub fn parse(id: &str) -> Result<Self, ModuleIdError> {
        match DeviceId::parse(id) {
            Ok(DeviceId(id)) => Ok(Self(id)),
            Err(DeviceIdError::Missing) => Err(ModuleIdError::Missing),
            Err(DeviceIdError::TooLong) => Err(ModuleIdError::TooLong),
            Err(DeviceIdError::BadCharacter) => Err(ModuleIdError::BadCharacter),
            Err(DeviceIdError::DotsOnly) => Err(ModuleIdError::DotsOnly),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A DPS registration id: 1–128 characters of lower-case ASCII letters, digits and `- . _ :`,
/// ending in a letter, a digit or `-`.
///
/// **Why lower case only.** DPS documents registration ids as case-insensitive, but the service
/// has been reported to refuse upper-case ones ("Invalid RegistrationId", azure-docs#52813,
/// azure-iot-sdk-c#405) and the Python provisioning SDK documents them as lower-case. A device's
/// key in an enrollment group is an HMAC of the id's exact bytes, so `Sensor-1` and `sensor-1`
/// would get different keys for what DPS may treat as one registration: one id must have one
/// spelling, and the one DPS is known to accept is lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationId(String);

/// Why a registration id was refused; the text is safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationIdError {
    /// An empty id.
    #[error("a registration id is required")]
    Missing,
    /// Longer than 128 characters.
    #[error("the registration id is longer than 128 characters")]
    TooLong,
    /// A character outside DPS's set, an upper-case letter, or a bad last character.
    #[error(
        "the registration id may contain only lower-case ASCII letters, digits and - . _ : and must end in a letter, a digit or -"
    )]
    BadCharacter,
}

impl RegistrationId {
    /// Validate an already percent-decoded id.
    pub fn parse(id: &str) -> Result<Self, RegistrationIdError> {
        let Some(&last) = id.as_bytes().last() else {
            return Err(RegistrationIdError::Missing);
        };
        if id.len() > DEVICE_ID_MAX_LEN {
            return Err(RegistrationIdError::TooLong);
        }
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._:".contains(&b);
        if !id.bytes().all(allowed) || !(last.is_ascii_alphanumeric() || last == b'-') {
            return Err(RegistrationIdError::BadCharacter);
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A token lifetime in seconds, within `[Ttl::MIN, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(u32);

/// Why a `ttl` was refused; the text is safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Not a plain decimal integer.
    #[error("ttl must be a whole number of seconds")]
    NotAnInteger,
    /// Below the minimum.
    #[error("ttl must be at least 60 seconds")]
    TooShort,
    /// Above `TOKEN_MAX_TTL_SECONDS`.
    #[error("ttl must be at most {max} seconds")]
    TooLong {
        /// The configured maximum.
        max: u32,
    },
}

impl Ttl {
    /// The shortest lifetime we issue: shorter tokens expire inside IoT Hub's clock-skew window.
    pub const MIN: u32 = 60;

    /// Parse a decimal number of seconds (digits only: no sign, space or fraction) within
    /// `[MIN, max]`.
    pub fn parse(text: &str, max: Ttl) -> Result<Self, TtlError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TtlError::NotAnInteger);
        }
        // All digits: the only way to fail is overflow, which is simply too long.
        match text.parse::<u32>() {
            Ok(seconds) => Self::new(seconds, max),
            Err(_) => Err(TtlError::TooLong { max: max.0 }),
        }
    }

    /// A lifetime within `[MIN, max]`.
    pub fn new(seconds: u32, max: Ttl) -> Result<Self, TtlError> {
        if seconds < Self::MIN {
            Err(TtlError::TooShort)
        } else if seconds > max.0 {
            Err(TtlError::TooLong { max: max.0 })
        } else {
            Ok(Self(seconds))
        }
    }

    /// A bound read from configuration; `None` when below the minimum.
    pub fn bound(seconds: u32) -> Option<Self> {
        (seconds >= Self::MIN).then_some(Self(seconds))
    }

    /// The lifetime in seconds.
    pub fn seconds(self) -> u32 {
        self.0
    }
}

/// How long tokens live: the default, and the longest a request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetimes {
    /// `TOKEN_TTL_SECONDS`: the lifetime when the request names none.
    pub default: Ttl,
    /// `TOKEN_MAX_TTL_SECONDS`: the longest lifetime a request may ask for.
    pub max: Ttl,
}

impl TokenLifetimes {
    /// Default `TOKEN_TTL_SECONDS`: an hour, as the device SDKs use.
    const DEFAULT_SECONDS: u32 = 3_600;
    /// Default `TOKEN_MAX_TTL_SECONDS`: a day.
    const DEFAULT_MAX_SECONDS: u32 = 86_400;
    /// The longest `TOKEN_MAX_TTL_SECONDS` accepted: a year. Device credentials should be
    /// short-lived; SDKs misbehave with very long expiries.
    const MAX_MAX_SECONDS: u32 = 31_536_000;

    /// `TOKEN_MAX_TTL_SECONDS` (60 … a year) and `TOKEN_TTL_SECONDS` (60 … that maximum).
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Self, SettingError> {
        let max = settings.number(
            "TOKEN_MAX_TTL_SECONDS",
            Self::DEFAULT_MAX_SECONDS,
            Ttl::MIN,
            Self::MAX_MAX_SECONDS,
        )?;
        let default = settings.number("TOKEN_TTL_SECONDS", Self::DEFAULT_SECONDS, Ttl::MIN, max)?;
        Ok(Self {
            default: Ttl::bound(default).expect("bounded below by Ttl::MIN"),
            max: Ttl::bound(max).expect("bounded below by Ttl::MIN"),
        })
    }

    /// The lifetime a request asked for (`ttl`, unparsed), or the default.
    pub fn choose(&self, requested: Option<&str>) -> Result<Ttl, TtlError> {
        match requested {
            Some(text) => Ttl::parse(text, self.max),
            None => Ok(self.default),
        }
    }
}

/// The recognised parameters of a query string, still unvalidated.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RawQuery<'a> {
    /// `deviceid` (any letter case), percent-decoded.
    pub device_id: Option<Cow<'a, str>>,
    /// `ttl` (any letter case), percent-decoded.
    pub ttl: Option<Cow<'a, str>>,
    /// `hub` (any letter case), percent-decoded: the hub host name the token is for.
    pub hub: Option<Cow<'a, str>>,
}

/// Why a query string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `deviceid`, `ttl` or `hub` appears more than once.
    #[error("the query parameter `{0}` appears more than once")]
    Repeated(&'static str),
    /// A recognised value is not valid UTF-8 once percent-decoded.
    #[error("the query parameter `{0}` is not valid UTF-8")]
    NotUtf8(&'static str),
}

impl<'a> RawQuery<'a> {
    /// Pick `deviceid`, `ttl` and `hub` out of a raw query string (`a=b&c=d`, form encoding: `+` is a
    /// space). Other keys — `code`, `subscription-key`, anything — are skipped without decoding.
    pub fn parse(query: &'a str) -> Result<Self, QueryError> {
        let mut parsed = Self::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (slot, name) = if key.eq_ignore_ascii_case("deviceid") {
                (&mut parsed.device_id, "deviceid")
            } else if key.eq_ignore_ascii_case("ttl") {
                (&mut parsed.ttl, "ttl")
            } else if key.eq_ignore_ascii_case("hub") {
                (&mut parsed.hub, "hub")
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(QueryError::Repeated(name));
            }
            *slot = Some(form_decode(value).ok_or(QueryError::NotUtf8(name))?);
        }
        Ok(parsed)
    }
}

/// Decode one `application/x-www-form-urlencoded` value; `None` when the bytes are not UTF-8.
fn form_decode(value: &str) -> Option<Cow<'_, str>> {
    // Most values have nothing to decode: one pass over the bytes, and the text is borrowed as it
    // is (it is already UTF-8).
    if !value.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(value));
    }
    if value.contains('+') {
        let spaced = value.replace('+', " ");
        let decoded = percent_decode_str(&spaced).decode_utf8().ok()?;
        return Some(Cow::Owned(decoded.into_owned()));
    }
    percent_decode_str(value).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 400's text lists the characters the parser allows, and only those.
    #[test]
    fn refusals_name_exactly_the_allowed_punctuation() {
        for message in [
            DeviceIdError::BadCharacter.to_string(),
            ModuleIdError::BadCharacter.to_string(),
        ] {
            let listed: Vec<u8> = message
                .split_once("digits and ")
                .map(|(_, list)| list.split(' ').flat_map(str::bytes).collect())
                .unwrap_or_default();
            assert_eq!(listed, DEVICE_ID_PUNCTUATION, "{message}");
        }
    }

    #[test]
    fn device_ids_follow_iot_hub_rules() {
        for ok in ["a", "dev-1.a_b", "A1%*?!(),:=@$'", &"x".repeat(128)] {
            assert!(DeviceId::parse(ok).is_ok(), "id {ok:?} should be accepted");
        }
        let cases = [
            ("", DeviceIdError::Missing),
            (&*"x".repeat(129), DeviceIdError::TooLong),
            ("a/b", DeviceIdError::BadCharacter),
            ("a b", DeviceIdError::BadCharacter),
            ("a+b", DeviceIdError::BadCharacter),
            ("a#b", DeviceIdError::BadCharacter),
            ("a&b", DeviceIdError::BadCharacter),
            ("a\nb", DeviceIdError::BadCharacter),
            ("a\0b", DeviceIdError::BadCharacter),
            ("dévice", DeviceIdError::BadCharacter),
            (".", DeviceIdError::DotsOnly),
            ("..", DeviceIdError::DotsOnly),
            ("...", DeviceIdError::DotsOnly),
        ];
        for (id, want) in cases {
            assert_eq!(DeviceId::parse(id), Err(want), "id {id:?}");
        }
        assert!(
            DeviceId::parse(".a.").is_ok(),
            "dots among other characters"
        );
    }

    #[test]
    fn module_ids_follow_the_device_id_rules() {
        assert_eq!(
            ModuleId::parse("edge-agent.1").map(|m| m.as_str().to_owned()),
            Ok("edge-agent.1".to_owned())
        );
        assert_eq!(ModuleId::parse(""), Err(ModuleIdError::Missing));
        assert_eq!(ModuleId::parse(".."), Err(ModuleIdError::DotsOnly));
        assert_eq!(
            ModuleId::parse(&"m".repeat(129)),
            Err(ModuleIdError::TooLong)
        );
        for bad in ["a/b", "a+b", "a#b", "a b"] {
            assert_eq!(
                ModuleId::parse(bad),
                Err(ModuleIdError::BadCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn registration_ids_follow_dps_rules_in_lower_case() {
        for ok in [
            "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
            "a",
            "a.b_c:d-",
            &"r".repeat(128),
        ] {
            assert!(
                RegistrationId::parse(ok).is_ok(),
                "{ok:?} should be accepted"
            );
        }
        let cases = [
            ("", RegistrationIdError::Missing),
            (&*"r".repeat(129), RegistrationIdError::TooLong),
            ("Sensor-1", RegistrationIdError::BadCharacter),
            ("a.", RegistrationIdError::BadCharacter),
            ("a_", RegistrationIdError::BadCharacter),
            ("a:", RegistrationIdError::BadCharacter),
            ("a*b", RegistrationIdError::BadCharacter),
            ("a/b", RegistrationIdError::BadCharacter),
            ("a%2Fb", RegistrationIdError::BadCharacter),
            ("dévice", RegistrationIdError::BadCharacter),
        ];
        for (id, want) in cases {
            assert_eq!(RegistrationId::parse(id), Err(want), "id {id:?}");
        }
    }

    #[test]
    fn ttl_is_a_bounded_whole_number() {
        let max = Ttl::bound(86_400).expect("86400 is a valid bound");
        assert_eq!(Ttl::parse("60", max).map(Ttl::seconds), Ok(60));
        assert_eq!(Ttl::parse("0086400", max).map(Ttl::seconds), Ok(86_400));
        let cases = [
            ("", TtlError::NotAnInteger),
            ("abc", TtlError::NotAnInteger),
            ("-5", TtlError::NotAnInteger),
            ("+60", TtlError::NotAnInteger),
            ("1.5", TtlError::NotAnInteger),
            (" 60", TtlError::NotAnInteger),
            ("59", TtlError::TooShort),
            ("86401", TtlError::TooLong { max: 86_400 }),
            ("99999999999999999999", TtlError::TooLong { max: 86_400 }),
        ];
        for (text, want) in cases {
            assert_eq!(Ttl::parse(text, max), Err(want), "ttl {text:?}");
        }
        // Overflow is too long even at the widest bound, never saturated into range.
        let widest = Ttl::bound(u32::MAX).expect("u32::MAX is a valid bound");
        assert_eq!(
            Ttl::parse("99999999999999999999", widest),
            Err(TtlError::TooLong { max: u32::MAX })
        );
    }

    #[test]
    fn query_picks_known_keys_in_any_case_and_decodes_them() {
        let q = RawQuery::parse("code=secret&DeviceId=a%2Ab+c&TTL=120&x&Hub=h.example")
            .expect("valid query");
        assert_eq!(q.device_id.as_deref(), Some("a*b c"));
        assert_eq!(q.ttl.as_deref(), Some("120"));
        assert_eq!(q.hub.as_deref(), Some("h.example"));
        assert_eq!(RawQuery::parse(""), Ok(RawQuery::default()));
    }

    #[test]
    fn repeated_or_undecodable_keys_are_refused() {
        assert_eq!(
            RawQuery::parse("deviceid=a&deviceID=b"),
            Err(QueryError::Repeated("deviceid"))
        );
        assert_eq!(
            RawQuery::parse("ttl=60&ttl=70"),
            Err(QueryError::Repeated("ttl"))
        );
        assert_eq!(
            RawQuery::parse("hub=a&HUB=b"),
            Err(QueryError::Repeated("hub"))
        );
        assert_eq!(
            RawQuery::parse("deviceid=%FF"),
            Err(QueryError::NotUtf8("deviceid"))
        );
        // Undecodable values of keys we ignore do not matter.
        assert!(RawQuery::parse("deviceid=a&other=%FF").is_ok());
    }
}
