//! The IoT hubs tokens are signed for, and the choice of one per request.
//!
//! **What it owns.** What a hub is: a name in a DNS suffix, which a hub on IoT Hub's TLS 1.3
//! gateway answers under two host names — classic `{name}.{suffix}` and device
//! `{name}.device.{suffix}` (docs/azure-behaviour.md §12) — parsed once into a [`HubHost`]. Both
//! forms of one hub are the same hub: its **canonical name**, the classic host, is what keys,
//! scopes, case checks and the audit line use; the form is kept only for the token's `sr` and the
//! answer's `hostName`. It owns `IOTHUB_HOSTNAMES` (a comma-separated list; the first hub is the
//! default) and the one-hub `IOTHUB_HOSTNAME` (the seed's `iothubhostname`) — [`HubList`] — and
//! suffix entries (`*.azure-devices.net`: any hub in the suffix, for IoT Central and other hubs
//! that cannot be listed; whether the mode allows them is the key source's decision). At start the
//! list becomes [`Hubs`], a lookup prepared once; [`Hubs::choose`] turns a request's `hub`
//! parameter (matched without regard to ASCII case), or its absence, into the hub and form its
//! token names.
//!
//! **What it trusts.** Nothing: settings and the `hub` parameter are parsed; host names are
//! lower-cased; a list that names one hub twice (in either form), an empty element or a name that
//! is not a host name is refused.
//!
//! **How fast.** A request that names no hub reads the default from memory; one that names a
//! listed hub is compared, without regard to ASCII case, with both host names of every listed hub,
//! lengths first — for the handful of hubs a deployment lists, cheaper than hashing the name
//! (`bench/profile.sh` counts it). Only a hub found through a suffix entry is lower-cased and has
//! its host name built per request.

use std::borrow::Cow;
use std::sync::Arc;

use crate::settings::{Lookup, Name, SettingError};

/// `IOTHUB_HOSTNAMES`: the hubs, comma-separated.
pub const IOTHUB_HOSTNAMES: &str = "IOTHUB_HOSTNAMES";
/// `IOTHUB_HOSTNAME`, the seed's `iothubhostname`: one hub.
pub const IOTHUB_HOSTNAME: Name = Name::with_seed("IOTHUB_HOSTNAME", "iothubhostname");

/// The longest DNS name.
const MAX_HOST_LEN: usize = 253;

/// Which of a hub's host names a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostForm {
    /// `{name}.{suffix}`, e.g. `contoso.azure-devices.net`.
    Classic,
    /// `{name}.device.{suffix}`, e.g. `contoso.device.azure-devices.net`: the TLS 1.3 gateway's
    /// device host name.
    Device,
}

impl HostForm {
    /// The audit line's `hub_form`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Device => "device",
        }
    }
}

/// One host name of an IoT hub, parsed: lower case, the hub's name, its form and its suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubHost {
    /// The whole host name, lower case.
    host: String,
    /// The first label: the hub's name.
    name_len: usize,
    form: HostForm,
}

/// Why a host name is not a hub's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HubNameError {
    /// Not a DNS name in a suffix.
    #[error(
        "must be a hub's host name like contoso.azure-devices.net or contoso.device.azure-devices.net (no scheme, port or path)"
    )]
    NotAHostName,
    /// `{name}.service.{suffix}`: the service host name signs no device tokens.
    #[error(
        "is a service host name ({{hub}}.service.…): give the hub's classic or device host name"
    )]
    ServiceHostName,
}

impl HubHost {
    /// Parse a host name, lower-casing it: labels of 1–63 letters, digits and inner dashes,
    /// at most 253 characters, a name and at least one suffix label. `{name}.device.{suffix}` is
    /// the device form; a `service` host name is refused.
    pub fn parse(text: &str) -> Result<Self, HubNameError> {
        if text.len() > MAX_HOST_LEN || !text.is_ascii() {
            return Err(HubNameError::NotAHostName);
        }
        let host = text.to_ascii_lowercase();
        let is_label = |label: &str| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !host.split('.').all(is_label) {
            return Err(HubNameError::NotAHostName);
        }
        let labels: Vec<&str> = host.split('.').collect();
        let form = match labels.as_slice() {
            [_, "service", _, ..] => return Err(HubNameError::ServiceHostName),
            [_, "device", _, ..] => HostForm::Device,
            [_, _, ..] => HostForm::Classic,
            _ => return Err(HubNameError::NotAHostName),
        };
        let name_len = labels[0].len();
        Ok(Self {
            host,
            name_len,
            form,
        })
    }

    /// The host name as given (lower case).
    pub fn as_str(&self) -> &str {
        &self.host
    }

    /// The hub's name: the first label.
    pub fn name(&self) -> &str {
        &self.host[..self.name_len]
    }

    /// Which form this host name is.
    pub fn form(&self) -> HostForm {
        self.form
    }

    /// The DNS suffix after the name (and after `device.` in the device form).
    pub fn suffix(&self) -> &str {
        let after_name = &self.host[self.name_len + 1..];
        match self.form {
            HostForm::Classic => after_name,
            HostForm::Device => &after_name["device.".len()..],
        }
    }

    /// The hub's host name in `form`.
    pub fn in_form(&self, form: HostForm) -> String {
        match form {
            HostForm::Classic => format!("{}.{}", self.name(), self.suffix()),
            HostForm::Device => format!("{}.device.{}", self.name(), self.suffix()),
        }
    }

    /// The hub's canonical name: its classic host name. Both forms of one hub share it.
    pub fn canonical(&self) -> Cow<'_, str> {
        match self.form {
            HostForm::Classic => Cow::Borrowed(&self.host),
            HostForm::Device => Cow::Owned(self.in_form(HostForm::Classic)),
        }
    }

    /// Whether `other` names the same hub (in either form).
    pub fn same_hub(&self, other: &HubHost) -> bool {
        self.name() == other.name() && self.suffix() == other.suffix()
    }
}

/// The hubs a deployment signs for, as its settings list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubList {
    /// The hubs named, in order, each in the form given; the first is the default.
    pub hubs: Vec<HubHost>,
    /// Suffix entries (`*.azure-devices.net`): the suffix, lower case.
    pub suffixes: Vec<String>,
    /// The setting that named them (`IOTHUB_HOSTNAMES`, `IOTHUB_HOSTNAME` or `iothubhostname`).
    pub setting: &'static str,
}

impl HubList {
    /// `IOTHUB_HOSTNAMES` or `IOTHUB_HOSTNAME` (never both); `None` when neither is set.
    pub fn from_lookup(settings: &Lookup<'_>) -> Result<Option<Self>, SettingError> {
        let list = settings.get(IOTHUB_HOSTNAMES);
        let one = settings.optional(&IOTHUB_HOSTNAME);
        match (list, one) {
            (Some(_), Some((setting, _))) => Err(SettingError::new(
                setting,
                "must be unset when IOTHUB_HOSTNAMES is set (IOTHUB_HOSTNAMES lists every hub)",
            )),
            (Some(text), None) => Self::parse(&text, IOTHUB_HOSTNAMES)
                .map(Some)
                .map_err(|problem| SettingError::new(IOTHUB_HOSTNAMES, problem)),
            (None, Some((setting, text))) => {
                let hub = HubHost::parse(text.trim())
                    .map_err(|e| SettingError::new(setting, e.to_string()))?;
                Ok(Some(Self {
                    hubs: vec![hub],
                    suffixes: Vec::new(),
                    setting,
                }))
            }
            (None, None) => Ok(None),
        }
    }

    /// Parse a comma-separated list of hub host names and suffix entries.
    pub fn parse(text: &str, setting: &'static str) -> Result<Self, String> {
        let mut list = Self {
            hubs: Vec::new(),
            suffixes: Vec::new(),
            setting,
        };
        for (position, item) in text.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                return Err(format!("entry {} is empty (a stray comma?)", position + 1));
            }
            if let Some(suffix) = item.strip_prefix("*.") {
                let suffix = parse_suffix(suffix).ok_or_else(|| {
                    format!("`{item}` is not a suffix entry like *.azure-devices.net")
                })?;
                if list.suffixes.contains(&suffix) {
                    return Err(format!("`{item}` names the suffix {suffix} twice"));
                }
                list.suffixes.push(suffix);
                continue;
            }
            let hub = HubHost::parse(item).map_err(|e| format!("`{item}` {e}"))?;
            if let Some(earlier) = list.hubs.iter().find(|earlier| earlier.same_hub(&hub)) {
                return Err(format!(
                    "`{}` and `{}` are the same hub (list each hub once, in one form)",
                    earlier.as_str(),
                    hub.as_str()
                ));
            }
            list.hubs.push(hub);
        }
        Ok(list)
    }

    /// Whether `hub` is listed (in either form) or in a suffix entry's suffix.
    pub fn covers(&self, hub: &HubHost) -> bool {
        self.hubs.iter().any(|listed| listed.same_hub(hub))
            || self.suffixes.iter().any(|suffix| suffix == hub.suffix())
    }

    /// Whether tokens may be for more than one hub: several listed, or any suffix entry.
    pub fn is_several(&self) -> bool {
        self.hubs.len() + self.suffixes.len() * 2 > 1
    }

    /// The listed hub `hub` names (in either form), by its position in the list.
    pub fn position(&self, hub: &HubHost) -> Option<usize> {
        self.hubs.iter().position(|listed| listed.same_hub(hub))
    }
}

/// A suffix entry's suffix (`azure-devices.net`; `device.azure-devices.net` counts as the same),
/// lower case; `None` unless it is a DNS name of at least two labels.
fn parse_suffix(text: &str) -> Option<String> {
    let suffix = text.to_ascii_lowercase();
    let suffix = suffix.strip_prefix("device.").unwrap_or(&suffix).to_owned();
    let probe = HubHost::parse(&format!("x.{suffix}")).ok()?;
    (probe.form() == HostForm::Classic && suffix.contains('.')).then_some(suffix)
}

/// One listed hub, prepared: its canonical name and both host names.
#[derive(Debug)]
struct Hub {
    canonical: Arc<str>,
    classic: Arc<str>,
    device: Arc<str>,
    /// The form the list gave: the default hub's form when a request names none.
    configured: HostForm,
}

impl Hub {
    fn new(host: &HubHost) -> Self {
        let classic: Arc<str> = Arc::from(host.in_form(HostForm::Classic));
        Self {
            canonical: Arc::clone(&classic),
            classic,
            device: Arc::from(host.in_form(HostForm::Device)),
            configured: host.form(),
        }
    }

    fn host(&self, form: HostForm) -> &Arc<str> {
        match form {
            HostForm::Classic => &self.classic,
            HostForm::Device => &self.device,
        }
    }
}

/// The hubs, prepared for choosing one per request.
#[derive(Debug, Default)]
pub struct Hubs {
    listed: Vec<Hub>,
    /// Both host names of every listed hub, with its position and that name's form.
    by_host: Vec<(Box<str>, usize, HostForm)>,
    suffixes: Vec<Box<str>>,
}

/// The hub and form a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenHub {
    /// The listed hub's position in the list (its key, in hub-policy mode); `None` for a hub found
    /// through a suffix entry.
    pub position: Option<usize>,
    /// The form the token names.
    pub form: HostForm,
    /// The host name the token's `sr` and the answer's `hostName` carry.
    pub host: Arc<str>,
    /// The hub's canonical name (its classic host name).
    pub canonical: Arc<str>,
}

/// Why a request's hub cannot be served; the text is safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HubChoiceError {
    /// `hub` names no hub this function signs for.
    #[error("the hub is not one this function issues tokens for")]
    Unknown,
    /// No `hub`, and no default hub (only suffix entries are configured).
    #[error(
        "a hub is required: this function signs for hubs it cannot list, so pass the device's assigned hub as `hub`"
    )]
    Required,
}

impl Hubs {
    /// Prepare `list` for choosing. The default hub is the first hub it names.
    pub fn new(list: &HubList) -> Self {
        let mut by_host = Vec::new();
        let listed: Vec<Hub> = list.hubs.iter().map(Hub::new).collect();
        for (position, hub) in listed.iter().enumerate() {
            for form in [HostForm::Classic, HostForm::Device] {
                by_host.push((Box::from(&**hub.host(form)), position, form));
            }
        }
        Self {
            listed,
            by_host,
            suffixes: list
                .suffixes
                .iter()
                .map(|s| Box::from(s.as_str()))
                .collect(),
        }
    }

    /// One hub, as a connection string named it.
    pub fn only(hub: &HubHost) -> Self {
        Self::new(&HubList {
            hubs: vec![hub.clone()],
            suffixes: Vec::new(),
            setting: IOTHUB_HOSTNAMES,
        })
    }

    /// The hub a request's `hub` parameter names (any ASCII case, either form), or the default hub
    /// in its listed form when the request names none.
    pub fn choose(&self, requested: Option<&str>) -> Result<ChosenHub, HubChoiceError> {
        let Some(requested) = requested else {
            let hub = self.listed.first().ok_or(HubChoiceError::Required)?;
            return Ok(ChosenHub {
                position: Some(0),
                form: hub.configured,
                host: Arc::clone(hub.host(hub.configured)),
                canonical: Arc::clone(&hub.canonical),
            });
        };
        let listed = self.by_host.iter().find(|(host, _, _)| {
            host.len() == requested.len() && host.eq_ignore_ascii_case(requested)
        });
        if let Some(&(_, position, form)) = listed {
            let hub = &self.listed[position];
            return Ok(ChosenHub {
                position: Some(position),
                form,
                host: Arc::clone(hub.host(form)),
                canonical: Arc::clone(&hub.canonical),
            });
        }
        if self.suffixes.is_empty() {
            return Err(HubChoiceError::Unknown);
        }
        let hub = HubHost::parse(requested).map_err(|_| HubChoiceError::Unknown)?;
        if !self.suffixes.iter().any(|suffix| **suffix == *hub.suffix()) {
            return Err(HubChoiceError::Unknown);
        }
        Ok(ChosenHub {
            position: None,
            form: hub.form(),
            canonical: Arc::from(hub.in_form(HostForm::Classic)),
            host: Arc::from(hub.host),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> HubHost {
        HubHost::parse(text).expect("a hub host name")
    }

    #[test]
    fn a_host_name_is_a_hub_name_a_form_and_a_suffix() {
        let classic = host("Contoso-EU.Azure-Devices.net");
        assert_eq!(classic.as_str(), "contoso-eu.azure-devices.net");
        assert_eq!(classic.name(), "contoso-eu");
        assert_eq!(classic.suffix(), "azure-devices.net");
        assert_eq!(classic.form(), HostForm::Classic);
        let device = host("contoso-eu.device.azure-devices.net");
        assert_eq!(device.form(), HostForm::Device);
        assert_eq!(device.suffix(), "azure-devices.net");
        assert!(device.same_hub(&classic));
        assert_eq!(device.canonical(), "contoso-eu.azure-devices.net");
        assert_eq!(
            classic.in_form(HostForm::Device),
            "contoso-eu.device.azure-devices.net"
        );
        assert!(!host("contoso-us.azure-devices.net").same_hub(&classic));
        assert!(!host("contoso-eu.azure-devices.cn").same_hub(&classic));
        assert_eq!(host("h.example").suffix(), "example");
    }

    #[test]
    fn what_is_not_a_hub_host_name_is_refused() {
        for bad in [
            "",
            "contoso",
            "https://contoso.azure-devices.net",
            "contoso.azure-devices.net:443",
            "contoso.azure-devices.net/",
            "-a.azure-devices.net",
            "a..azure-devices.net",
            "a.azure-devices.net.",
            "é.azure-devices.net",
            "a,b.azure-devices.net",
            &format!("{}.net", "a".repeat(64)),
            &format!("{}.net", "a.".repeat(126)),
        ] {
            assert_eq!(
                HubHost::parse(bad),
                Err(HubNameError::NotAHostName),
                "{bad:?}"
            );
        }
        assert_eq!(
            HubHost::parse("contoso.service.azure-devices.net"),
            Err(HubNameError::ServiceHostName)
        );
    }

    #[test]
    fn a_list_names_each_hub_once_in_one_form() {
        let list = HubList::parse(
            "contoso-eu.azure-devices.net, CONTOSO-US.device.azure-devices.net,*.azure-devices.cn",
            IOTHUB_HOSTNAMES,
        )
        .expect("a valid list");
        assert_eq!(list.hubs.len(), 2);
        assert_eq!(list.suffixes, ["azure-devices.cn"]);
        assert!(list.covers(&host("contoso-us.azure-devices.net")));
        assert!(list.covers(&host("anything.device.azure-devices.cn")));
        assert!(!list.covers(&host("other.azure-devices.net")));
        for (bad, want) in [
            (
                "a.azure-devices.net,,b.azure-devices.net",
                "entry 2 is empty",
            ),
            ("a.azure-devices.net,", "entry 2 is empty"),
            (
                "a.azure-devices.net,a.device.azure-devices.net",
                "are the same hub",
            ),
            (
                "a.azure-devices.net,A.azure-devices.net",
                "are the same hub",
            ),
            ("*.azure-devices.net,*.device.azure-devices.net", "twice"),
            ("*.net", "is not a suffix entry"),
            ("*.", "is not a suffix entry"),
            ("https://a.azure-devices.net", "must be a hub's host name"),
            ("a.service.azure-devices.net", "service host name"),
        ] {
            let error = HubList::parse(bad, IOTHUB_HOSTNAMES).expect_err(bad);
            assert!(error.contains(want), "{bad}: {error}");
        }
    }

    #[test]
    fn a_request_chooses_a_listed_hub_in_either_form_and_any_case() {
        let hubs = Hubs::new(
            &HubList::parse(
                "eu.device.azure-devices.net,us.azure-devices.net",
                IOTHUB_HOSTNAMES,
            )
            .expect("a valid list"),
        );
        let default = hubs.choose(None).expect("a default hub");
        assert_eq!(
            (default.position, default.form, &*default.host),
            (Some(0), HostForm::Device, "eu.device.azure-devices.net"),
            "the first hub, in its listed form"
        );
        assert_eq!(&*default.canonical, "eu.azure-devices.net");
        let us_device = hubs
            .choose(Some("US.Device.Azure-Devices.NET"))
            .expect("a listed hub");
        assert_eq!(
            (us_device.position, us_device.form, &*us_device.host),
            (Some(1), HostForm::Device, "us.device.azure-devices.net")
        );
        assert_eq!(&*us_device.canonical, "us.azure-devices.net");
        let eu_classic = hubs.choose(Some("eu.azure-devices.net")).expect("listed");
        assert_eq!(eu_classic.form, HostForm::Classic);
        for unknown in [
            "other.azure-devices.net",
            "eu.azure-devices.cn",
            "eu",
            "eu.azure-devices.net,us.azure-devices.net",
            &"a".repeat(300),
            "",
        ] {
            assert_eq!(
                hubs.choose(Some(unknown)),
                Err(HubChoiceError::Unknown),
                "{unknown:?}"
            );
        }
    }

    #[test]
    fn a_suffix_entry_accepts_any_hub_in_its_suffix_and_needs_a_hub_without_a_default() {
        let hubs = Hubs::new(&HubList::parse("*.azure-devices.net", IOTHUB_HOSTNAMES).expect("ok"));
        assert_eq!(hubs.choose(None), Err(HubChoiceError::Required));
        let central = hubs
            .choose(Some("IOTC-1234.azure-devices.net"))
            .expect("in the suffix");
        assert_eq!(central.position, None);
        assert_eq!(&*central.host, "iotc-1234.azure-devices.net");
        let device_form = hubs
            .choose(Some("iotc-1234.device.azure-devices.net"))
            .expect("in the suffix");
        assert_eq!(&*device_form.canonical, "iotc-1234.azure-devices.net");
        assert_eq!(device_form.form, HostForm::Device);
        assert_eq!(
            hubs.choose(Some("x.azure-devices.cn")),
            Err(HubChoiceError::Unknown)
        );
        assert_eq!(
            hubs.choose(Some("x.service.azure-devices.net")),
            Err(HubChoiceError::Unknown)
        );
    }
}
