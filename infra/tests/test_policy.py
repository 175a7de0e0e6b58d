"""The API Management policy: every variant in infra/policies/ is exactly what infra/apim_policies.py
writes from the one source (infra/policies/source/sas-token-api.xml), and each holds what it must:

- well-formed XML with its sections in order; the subscription check first; the repeated-query-key
  refusal (400 problem+json) before the credentials; the key, `code` and caller-sent credentials
  stripped; the function key and API Management's managed-identity token added; error answers that
  never carry context.LastError.Message (which can name the backend);
- the two tiers' variants of a kind equal but for the rate limit (rate-limit-by-key / rate-limit);
- caller facts (issue 22): every variant deletes every X-Caller-* header the handler reads before
  anything sets one; exactly the configured kind's header is set (none for `none`); a kind that
  forwards a fact refuses subscriptions outside the product; the caller's own token is validated
  and copied before authentication-managed-identity replaces Authorization (entra); the client
  certificate is validated against pinned thumbprints before its SHA-256 is forwarded
  (certificate); the lists apim-api.bicep fills in land where the policy expects them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import INFRA, LoadedText, bicep_files, evaluate, parse

POLICIES = INFRA / "policies"
SOURCE = POLICIES / "source" / "sas-token-api.xml"
APIM_API = INFRA / "modules" / "apim-api.bicep"

KINDS = ("none", "subscription", "certificate", "entra")
TIERS = ("dedicated", "consumption")
# The headers the handler reads a caller fact from, by kind (the contract of issue 22).
CALLER_HEADERS = {
    "subscription": "X-Caller-Subscription",
    "certificate": "X-Caller-Certificate-Thumbprint",
    "entra": "X-Caller-Authorization",
}
PRODUCT = "iothub-sas"


def generator():
    spec = importlib.util.spec_from_file_location("apim_policies", INFRA / "apim_policies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variant_path(kind: str, tier: str) -> Path:
    return POLICIES / (f"sas-token-api.{kind}.xml" if tier == "dedicated" else f"sas-token-api.{kind}.consumption.xml")


VARIANTS = [(kind, tier) for kind in KINDS for tier in TIERS]
ALL = [variant_path(kind, tier) for kind, tier in VARIANTS]


def load(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # raises on anything not well-formed


def section(root: ET.Element, name: str) -> ET.Element:
    found = root.findall(name)
    assert len(found) == 1, f"exactly one <{name}> section"
    return found[0]


def inbound_of(kind: str, tier: str) -> ET.Element:
    return section(load(variant_path(kind, tier)), "inbound")


def tags(element: ET.Element) -> list[str]:
    return [child.tag for child in element]


def header_actions(inbound: ET.Element, name: str) -> list[tuple[int, str]]:
    """(position in <inbound>, exists-action) of each top-level set-header for `name`."""
    return [
        (i, element.get("exists-action", "override"))
        for i, element in enumerate(inbound)
        if element.tag == "set-header" and element.get("name", "").lower() == name.lower()
    ]


def position(inbound: ET.Element, tag: str) -> int:
    found = [i for i, element in enumerate(inbound) if element.tag == tag]
    assert len(found) == 1, f"exactly one top-level <{tag}> in <inbound>, found {len(found)}"
    return found[0]


# --- One source ------------------------------------------------------------------------------


def test_every_variant_is_generated_from_the_one_source() -> None:
    module = generator()
    expected = module.variants()
    assert set(expected) == set(ALL), "the generator writes one file per kind and tier"
    on_disk = set(POLICIES.glob("*.xml"))
    assert on_disk == set(ALL), f"policy files nobody generates: {sorted(p.name for p in on_disk - set(ALL))}"
    for path, text in expected.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run python3 infra/apim_policies.py (edit {SOURCE.relative_to(INFRA.parent)}, not the variants)"
        )
        assert "<!--#" not in text, f"{path.name}: a marker was left in"


def test_the_source_is_a_well_formed_policy_holding_every_variant() -> None:
    root = load(SOURCE)
    assert root.tag == "policies" and tags(root) == ["inbound", "backend", "outbound", "on-error"]


def test_the_generator_keeps_exactly_the_lines_of_its_variant() -> None:
    render = generator().render
    source = (
        "<policies>\n<!--\nVARIANT\n-->\n"
        "<!--#if kind != none-->\nA\n<!--#if tier == consumption-->\nB\n<!--#else-->\nC\n<!--#endif-->\n<!--#endif-->\n"
        "<!--#if kind == entra|certificate-->\nD\n<!--#endif-->\n</policies>\n"
    )
    kept = {(k, t): [line for line in render(source, k, t).splitlines() if len(line) == 1] for k in KINDS for t in TIERS}
    assert kept[("none", "dedicated")] == [] and kept[("none", "consumption")] == []
    assert kept[("subscription", "consumption")] == ["A", "B"]
    assert kept[("subscription", "dedicated")] == ["A", "C"]
    assert kept[("entra", "dedicated")] == ["A", "C", "D"]
    assert kept[("certificate", "consumption")] == ["A", "B", "D"]
    for broken in (
        "<!--#if kind == entra-->\nA\n",  # never closed
        "A\n<!--#endif-->\n",  # closes nothing
        "<!--#if kind == nobody-->\n<!--#endif-->\n",  # an unknown kind
        "<!--#if kind == entra-->\n<!--#else-->\n<!--#else-->\n<!--#endif-->\n",
        "<!--#if kind = entra-->\n<!--#endif-->\n",  # malformed
    ):
        with pytest.raises(ValueError):
            render("<!--\nVARIANT\n-->\n" + broken, "entra", "dedicated")


# --- What every variant holds ----------------------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_policy_is_well_formed_with_all_sections(path: Path) -> None:
    root = load(path)
    assert root.tag == "policies"
    assert tags(root) == ["inbound", "backend", "outbound", "on-error"]
    for name in ("inbound", "backend", "outbound", "on-error"):
        assert tags(section(root, name))[0] == "base", f"<{name}> starts with <base />"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_inbound_requires_subscription_and_strips_it(path: Path) -> None:
    inbound = section(load(path), "inbound")
    # A request without a subscription is answered 401 before anything else happens.
    guard = inbound.find("choose/when")
    assert guard is not None and "context.Subscription == null" in guard.get("condition", "")
    status = guard.find("return-response/set-status")
    assert status is not None and status.get("code") == "401"

    deleted_headers = {h.get("name").lower() for h in inbound.findall("set-header") if h.get("exists-action") == "delete"}
    deleted_queries = {q.get("name") for q in inbound.findall("set-query-parameter") if q.get("exists-action") == "delete"}
    assert "ocp-apim-subscription-key" in deleted_headers
    assert "subscription-key" in deleted_queries
    assert "code" in deleted_queries, "a caller-supplied function key (?code=) never reaches the host"
    assert "x-arr-clientcert" in deleted_headers


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_inbound_authenticates_to_the_function(path: Path) -> None:
    inbound = section(load(path), "inbound")
    order = tags(inbound)
    mi = inbound.findall("authentication-managed-identity")
    assert len(mi) == 1 and mi[0].get("resource") == "{{iothub-sas-audience}}"
    assert mi[0].get("client-id") is None, "the system-assigned identity (the one the function trusts)"
    assert mi[0].get("ignore-error") in (None, "false")
    assert mi[0].get("output-token-variable-name") is None, "the token replaces Authorization"
    key = [h for h in inbound.findall("set-header") if h.get("name").lower() == "x-functions-key"]
    assert len(key) == 1 and key[0].get("exists-action") == "override"
    assert key[0].findtext("value") == "{{iothub-sas-function-key}}"
    # Stripping happens before the credentials are added, so nothing can delete them afterwards.
    last_strip = max(i for i, t in enumerate(order) if t in ("set-query-parameter",))
    assert order.index("authentication-managed-identity") > last_strip
    assert order.index("authentication-managed-identity") < order.index("set-backend-service")


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limit_per_subscription_by_tier(kind: str) -> None:
    main = inbound_of(kind, "dedicated")
    by_key = main.findall("rate-limit-by-key")
    assert len(by_key) == 1 and by_key[0].get("counter-key") == "@(context.Subscription.Id)"
    assert int(by_key[0].get("renewal-period")) <= 300 and int(by_key[0].get("calls")) > 0
    assert not main.findall("rate-limit")

    consumption = inbound_of(kind, "consumption")
    assert not consumption.findall("rate-limit-by-key"), "rate-limit-by-key is not available on Consumption"
    limit = consumption.findall("rate-limit")
    assert len(limit) == 1 and int(limit[0].get("renewal-period")) <= 300
    assert (limit[0].get("calls"), limit[0].get("renewal-period")) == (by_key[0].get("calls"), by_key[0].get("renewal-period"))


def strip_rate_limits(root: ET.Element) -> ET.Element:
    root = copy.deepcopy(root)
    inbound = section(root, "inbound")
    for element in list(inbound):
        if element.tag in ("rate-limit", "rate-limit-by-key"):
            inbound.remove(element)
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_the_consumption_variant_differs_only_in_the_rate_limit(kind: str) -> None:
    # Comments are dropped by the parser; element text and attributes must match exactly.
    main = ET.tostring(strip_rate_limits(load(variant_path(kind, "dedicated"))))
    consumption = ET.tostring(strip_rate_limits(load(variant_path(kind, "consumption"))))
    assert main == consumption


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_errors_never_leak_the_backend(path: Path) -> None:
    # The parsed document (comments dropped: they may mention what the policy avoids).
    text = ET.tostring(load(path), encoding="unicode")
    assert "LastError.Message" not in text, "LastError.Message can carry the backend URL"
    assert "azurewebsites.net" not in text and "Backend.ServiceUrl" not in text
    on_error = section(load(path), "on-error")
    body = on_error.find("set-body")
    assert body is not None and "application/problem+json" in "".join(
        h.findtext("value", "") for h in on_error.findall("set-header")
    )
    for field in ('"type"', '"title"', '"status"', '"detail"'):
        assert field in (body.text or ""), f"problem body has {field}"
    assert on_error.find("set-status") is not None
    # A caller credential that fails validation at the gateway is a 401 / 403, not a 500.
    status = next(v.get("value") for v in on_error.findall("set-variable") if v.get("name") == "problemStatus")
    assert 'source == "validate-azure-ad-token") { return 401; }' in status
    assert 'source == "validate-client-certificate") { return 403; }' in status
    # Nothing the gateway forwards for a caller ever appears in an answer.
    assert "X-Caller" not in ET.tostring(on_error, encoding="unicode")


def declared_named_values() -> set[str]:
    return set(re.findall(r"displayName: '([^']+)'", APIM_API.read_text()))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_named_values_exist_in_the_template(path: Path) -> None:
    used = set(re.findall(r"\{\{([^}]+)\}\}", path.read_text()))
    assert used and used <= declared_named_values(), f"named values used but not created: {used - declared_named_values()}"


def test_the_callers_named_values_are_created_exactly_for_the_entra_variants() -> None:
    tree = parse(APIM_API)
    entra_only = {"iothub-sas-caller-tenant", "iothub-sas-caller-audience"}
    for symbol, resource in tree["resources"].items():
        config = resource["config"]
        body = config.get("config", config)
        if resource["type"] != "Microsoft.ApiManagement/service/namedValues":
            continue
        name = body["properties"]["displayName"]
        for kind in KINDS:
            created = "condition" not in config or evaluate(config["condition"], tree, {"callerKind": kind})
            used = any(f"{{{{{name}}}}}" in variant_path(kind, tier).read_text() for tier in TIERS)
            if name in entra_only:
                assert created == (kind == "entra") and used == (kind == "entra"), (symbol, kind)
            else:
                assert created, f"{name} exists for every kind"


# The condition, exactly: any query parameter name (compared in lower case, as the Functions
# host's case-insensitive query collection does) that carries more than one value. Behind the
# gateway the host would merge them (?deviceid=a&deviceid=b -> deviceid=a,b, a legal device id).
REPEATED_KEY_CONDITION = (
    "@(context.Request.Url.Query.GroupBy(p => p.Key.ToLowerInvariant())"
    ".Any(g => g.Sum(p => p.Value.Length) > 1))"
)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_inbound_refuses_repeated_query_keys_with_a_problem(path: Path) -> None:
    inbound = section(load(path), "inbound")
    guards = [
        when
        for choose in inbound.findall("choose")
        for when in choose.findall("when")
        if when.get("condition") == REPEATED_KEY_CONDITION
    ]
    assert len(guards) == 1, f"{path.name}: one <when condition='{REPEATED_KEY_CONDITION}'>"
    response = guards[0].find("return-response")
    assert response is not None
    assert response.find("set-status").get("code") == "400"
    headers = {h.get("name").lower(): h.findtext("value") for h in response.findall("set-header")}
    assert headers.get("content-type") == "application/problem+json"
    assert headers.get("cache-control") == "no-store"
    body = json.loads(response.findtext("set-body"))
    assert body["status"] == 400 and body["type"] == "urn:iothub-sas:problem:invalid-query", (
        "the same problem type the handler uses for a repeated key (src/error.rs InvalidQuery)"
    )
    assert set(body) == {"type", "title", "status", "detail"}
    # Refused before anything is added for the back end, and after the subscription check.
    order = list(inbound)
    place = next(i for i, e in enumerate(order) if e.tag == "choose" and e.find("when") is guards[0])
    first_choose = next(i for i, e in enumerate(order) if e.tag == "choose")
    assert first_choose < place, "the subscription check comes first"
    later = ["authentication-managed-identity", "set-backend-service", "validate-azure-ad-token", "validate-client-certificate"]
    for i, element in enumerate(order):
        if element.tag in later or (element.tag == "set-header" and element.get("name", "").startswith("X-Caller-")):
            assert place < i, f"repeated keys are refused before <{element.tag}>"


# --- Caller facts (issue 22) -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "tier"), VARIANTS)
def test_every_caller_header_is_deleted_before_any_is_set(kind: str, tier: str) -> None:
    inbound = inbound_of(kind, tier)
    mi = position(inbound, "authentication-managed-identity")
    for name in CALLER_HEADERS.values():
        actions = header_actions(inbound, name)
        deletes = [i for i, action in actions if action == "delete"]
        sets = [i for i, action in actions if action != "delete"]
        assert len(deletes) == 1, f"{kind}/{tier}: {name} deleted exactly once"
        assert all(deletes[0] < i for i in sets), f"{kind}/{tier}: {name} is deleted before it is set"
        assert deletes[0] < mi, f"{kind}/{tier}: {name} deleted before the credentials are added"
    # Nothing below inbound may touch a caller header (or re-add one after the deletion).
    root = load(variant_path(kind, tier))
    for name in ("backend", "outbound", "on-error"):
        assert "X-Caller-" not in ET.tostring(section(root, name), encoding="unicode")
    # And nowhere nested either: every set-header for X-Caller-* is a direct child of <inbound>.
    nested = [e for e in inbound.iter("set-header") if e.get("name", "").startswith("X-Caller-")]
    direct = [e for e in inbound if e.tag == "set-header" and e.get("name", "").startswith("X-Caller-")]
    assert len(nested) == len(direct)


@pytest.mark.parametrize(("kind", "tier"), VARIANTS)
def test_only_the_configured_kinds_header_is_set(kind: str, tier: str) -> None:
    inbound = inbound_of(kind, tier)
    for header_kind, name in CALLER_HEADERS.items():
        sets = [(i, action) for i, action in header_actions(inbound, name) if action != "delete"]
        if header_kind == kind:
            assert [action for _, action in sets] == ["override"], f"{kind}/{tier}: sets {name} once, overriding"
        else:
            assert not sets, f"{kind}/{tier}: must not set {name} (one fact per gateway, of its kind)"
    validators = {tag for tag in ("validate-azure-ad-token", "validate-client-certificate") if inbound.find(tag) is not None}
    expected = {"entra": {"validate-azure-ad-token"}, "certificate": {"validate-client-certificate"}}.get(kind, set())
    assert validators == expected, f"{kind}/{tier}: validates {validators}"
    assert not list(inbound.iter("validate-jwt")), "callers' Entra ID tokens are validated with validate-azure-ad-token"


def header_value(inbound: ET.Element, name: str) -> str:
    element = next(e for e in inbound if e.tag == "set-header" and e.get("name") == name and e.get("exists-action") == "override")
    return element.findtext("value")


@pytest.mark.parametrize("tier", TIERS)
def test_the_subscription_is_forwarded_by_its_escaped_id(tier: str) -> None:
    value = header_value(inbound_of("subscription", tier), "X-Caller-Subscription")
    assert value == "@(Uri.EscapeDataString(context.Subscription.Id))"
    assert ".Key" not in value and ".Name" not in value, "never the caller's secret or a changeable display name"


@pytest.mark.parametrize("tier", TIERS)
def test_the_callers_token_is_validated_then_copied_before_the_gateways_token_replaces_it(tier: str) -> None:
    inbound = inbound_of("entra", tier)
    validate = inbound.find("validate-azure-ad-token")
    assert validate.get("tenant-id") == "{{iothub-sas-caller-tenant}}"
    assert validate.get("header-name") == "Authorization" and validate.get("failed-validation-httpcode") == "401"
    # The policy reference's element order; an explicit client list and the caller audience.
    assert tags(validate) == ["client-application-ids", "audiences"]
    assert [e.text for e in validate.find("client-application-ids")] == ["CALLER-CLIENT-APPLICATION-IDS"]
    assert [e.text for e in validate.find("audiences")] == ["{{iothub-sas-caller-audience}}"]
    copy_at = next(i for i, action in header_actions(inbound, "X-Caller-Authorization") if action == "override")
    assert position(inbound, "validate-azure-ad-token") < copy_at < position(inbound, "authentication-managed-identity"), (
        "validate, then copy the caller's Authorization, then let authentication-managed-identity replace it"
    )
    assert header_value(inbound, "X-Caller-Authorization") == '@(context.Request.Headers.GetValueOrDefault("Authorization", ""))'


@pytest.mark.parametrize("tier", TIERS)
def test_the_client_certificate_is_pinned_then_forwarded_by_its_sha256(tier: str) -> None:
    inbound = inbound_of("certificate", tier)
    validate = inbound.find("validate-client-certificate")
    # The pin decides: no chain to a CA (Consumption and v2 cannot hold CA certificates), no
    # revocation list to reach (a pinned private certificate is revoked by removing its pin);
    # validity dates checked; a failure goes to on-error (403).
    assert validate.attrib == {
        "validate-revocation": "false",
        "validate-trust": "false",
        "validate-not-before": "true",
        "validate-not-after": "true",
        "ignore-error": "false",
    }
    identities = validate.findall("identities/identity")
    assert [i.attrib for i in identities] == [{"thumbprint": "CALLER-CERTIFICATE-THUMBPRINTS"}]
    forward_at = next(i for i, action in header_actions(inbound, "X-Caller-Certificate-Thumbprint") if action == "override")
    assert position(inbound, "validate-client-certificate") < forward_at < position(inbound, "authentication-managed-identity")
    value = header_value(inbound, "X-Caller-Certificate-Thumbprint")
    assert value == (
        '@(BitConverter.ToString(System.Security.Cryptography.SHA256.Create()'
        '.ComputeHash(context.Request.Certificate.RawData)).Replace("-", ""))'
    ), "SHA-256 over the certificate's DER bytes, hex (Certificate.Thumbprint would be SHA-1)"


@pytest.mark.parametrize(("kind", "tier"), VARIANTS)
def test_a_kind_that_speaks_for_callers_refuses_subscriptions_outside_its_product(kind: str, tier: str) -> None:
    inbound = inbound_of(kind, tier)
    condition = f'@(context.Product == null || context.Product.Id != "{PRODUCT}")'
    guards = [w for c in inbound.findall("choose") for w in c.findall("when") if w.get("condition") == condition]
    if kind == "none":
        assert not guards, "without a caller fact the API keeps today's subscription rules"
        return
    assert len(guards) == 1
    response = guards[0].find("return-response")
    assert response.find("set-status").get("code") == "403"
    body = json.loads(response.findtext("set-body"))
    assert body["status"] == 403 and set(body) == {"type", "title", "status", "detail"}
    order = list(inbound)
    place = next(i for i, e in enumerate(order) if e.tag == "choose" and e.find("when") is guards[0])
    assert 1 < place < position(inbound, "authentication-managed-identity"), "after the subscription check, before any credential"
    # The product the template creates has that name.
    assert parse(APIM_API)["resources"]["product"]["config"]["name"] == PRODUCT


# --- What apim-api.bicep deploys -------------------------------------------------------------


def deployed_variant(kind: str, sku: str) -> Path:
    tree = parse(APIM_API)
    loaded = evaluate(tree["variables"]["policyVariant"]["value"], tree, {"callerKind": kind, "apimSku": sku})
    assert isinstance(loaded, LoadedText)
    return (APIM_API.parent / loaded).resolve()


@pytest.mark.parametrize("sku", ["Consumption", "Developer", "Premium", "BasicV2", "StandardV2"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_template_deploys_the_variant_of_its_kind_and_tier(kind: str, sku: str) -> None:
    assert deployed_variant(kind, sku) == variant_path(kind, "consumption" if sku == "Consumption" else "dedicated")


# apim-api.bicep fills the lists in with these expressions, emulated below (ids and thumbprints
# are checked by infra/deploy.sh: GUIDs, hex).
CLIENT_ID_ELEMENTS = "<application-id>${replace(replace(callerClientIds, ' ', ''), ',', '</application-id><application-id>')}</application-id>"
THUMBPRINT_ELEMENTS = "<identity thumbprint=\"${replace(toUpper(replace(clientCertThumbprints, ' ', '')), ',', '\" /><identity thumbprint=\"')}\" />"


def filled(text: str, client_ids: str, thumbprints: str) -> str:
    """The policy apim-api.bicep deploys: `policy`, emulated for these parameters."""
    tree = parse(APIM_API)
    variables = tree["variables"]
    assert variables["clientIdElements"]["value"] == CLIENT_ID_ELEMENTS
    assert variables["thumbprintElements"]["value"] == THUMBPRINT_ELEMENTS
    replace = variables["policy"]["value"]["function"]
    inner = replace["parameters"]["original_string"]["function"]["parameters"]
    assert (inner["original_string"], inner["old_string"], inner["new_string"]) == ("policyVariant", "clientIdPlaceholder", "clientIdElements")
    outer = replace["parameters"]
    assert (outer["old_string"], outer["new_string"]) == ("thumbprintPlaceholder", "thumbprintElements")
    ids = client_ids.replace(" ", "").replace(",", "</application-id><application-id>")
    pins = thumbprints.replace(" ", "").upper().replace(",", '" /><identity thumbprint="')
    text = text.replace(variables["clientIdPlaceholder"]["value"], f"<application-id>{ids}</application-id>")
    return text.replace(variables["thumbprintPlaceholder"]["value"], f'<identity thumbprint="{pins}" />')


CLIENTS = "3f2504e0-4f89-41d3-9a0c-0305e82c3301, 9a1b2c3d-0000-4000-8000-00000000000a"
PINS = "a1b2c3d4e5f60718293a4b5c6d7e8f9001122334,00112233445566778899AABBCCDDEEFF00112233"


@pytest.mark.parametrize(("kind", "tier"), VARIANTS)
def test_the_lists_land_where_the_variant_expects_them(kind: str, tier: str) -> None:
    text = variant_path(kind, tier).read_text()
    deployed = filled(text, CLIENTS, PINS)
    root = ET.fromstring(deployed)
    inbound = section(root, "inbound")
    assert "CALLER-CLIENT-APPLICATION-IDS" not in deployed and "CALLER-CERTIFICATE-THUMBPRINTS" not in deployed
    ids = [e.text for e in inbound.iter("application-id")]
    pins = [e.get("thumbprint") for e in inbound.iter("identity")]
    assert ids == (["3f2504e0-4f89-41d3-9a0c-0305e82c3301", "9a1b2c3d-0000-4000-8000-00000000000a"] if kind == "entra" else [])
    assert pins == (["A1B2C3D4E5F60718293A4B5C6D7E8F9001122334", "00112233445566778899AABBCCDDEEFF00112233"] if kind == "certificate" else [])
    # The v2 tiers document a 16 KiB limit on a policy document; this one stays well inside it
    # even with ten clients and ten pins.
    many = filled(text, ",".join([CLIENTS.split(",")[0]] * 10), ",".join([PINS.split(",")[0]] * 10))
    assert len(many.encode()) < 16 * 1024, f"{len(many.encode())} bytes"


def test_the_callers_token_stays_out_of_diagnostic_logs() -> None:
    """X-Caller-Authorization (and Authorization) never appear in an API Management diagnostic's
    header lists (service- or API-scope `diagnostics`: frontend/backend request headers). The
    template creates none today; one added later must leave the token out."""
    for path in bicep_files():
        for symbol, resource in (parse(path).get("resources") or {}).items():
            if not resource["type"].startswith("Microsoft.ApiManagement/service") or not resource["type"].endswith("/diagnostics"):
                continue
            body = json.dumps(resource["config"]).lower()
            assert "x-caller-authorization" not in body and '"authorization"' not in body, f"{path.name}: {symbol} logs a token"
