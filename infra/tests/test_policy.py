"""The API Management policy files: well-formed XML with the elements issue 7 requires, in the
right sections and order; the Consumption variant equal to the main one but for the rate limit;
and error answers that never carry context.LastError.Message (which can name the backend)."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import INFRA

POLICIES = INFRA / "policies"
MAIN_POLICY = POLICIES / "sas-token-api.xml"
CONSUMPTION_POLICY = POLICIES / "sas-token-api.consumption.xml"
BOTH = [MAIN_POLICY, CONSUMPTION_POLICY]


def load(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # raises on anything not well-formed


def section(root: ET.Element, name: str) -> ET.Element:
    found = root.findall(name)
    assert len(found) == 1, f"exactly one <{name}> section"
    return found[0]


def tags(element: ET.Element) -> list[str]:
    return [child.tag for child in element]


@pytest.mark.parametrize("path", BOTH, ids=lambda p: p.name)
def test_policy_is_well_formed_with_all_sections(path: Path) -> None:
    root = load(path)
    assert root.tag == "policies"
    assert [t for t in tags(root)] == ["inbound", "backend", "outbound", "on-error"]
    for name in ("inbound", "backend", "outbound", "on-error"):
        assert tags(section(root, name))[0] == "base", f"<{name}> starts with <base />"


@pytest.mark.parametrize("path", BOTH, ids=lambda p: p.name)
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


@pytest.mark.parametrize("path", BOTH, ids=lambda p: p.name)
def test_inbound_authenticates_to_the_function(path: Path) -> None:
    inbound = section(load(path), "inbound")
    order = tags(inbound)
    mi = inbound.findall("authentication-managed-identity")
    assert len(mi) == 1 and mi[0].get("resource") == "{{iothub-sas-audience}}"
    assert mi[0].get("client-id") is None, "the system-assigned identity (the one the function trusts)"
    assert mi[0].get("ignore-error") in (None, "false")
    key = [h for h in inbound.findall("set-header") if h.get("name").lower() == "x-functions-key"]
    assert len(key) == 1 and key[0].get("exists-action") == "override"
    assert key[0].findtext("value") == "{{iothub-sas-function-key}}"
    # Stripping happens before the credentials are added, so nothing can delete them afterwards.
    last_strip = max(i for i, t in enumerate(order) if t in ("set-query-parameter",))
    assert order.index("authentication-managed-identity") > last_strip


def test_rate_limit_per_subscription_by_tier() -> None:
    main = section(load(MAIN_POLICY), "inbound")
    by_key = main.findall("rate-limit-by-key")
    assert len(by_key) == 1 and by_key[0].get("counter-key") == "@(context.Subscription.Id)"
    assert int(by_key[0].get("renewal-period")) <= 300 and int(by_key[0].get("calls")) > 0
    assert not main.findall("rate-limit")

    consumption = section(load(CONSUMPTION_POLICY), "inbound")
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


def test_consumption_variant_differs_only_in_the_rate_limit() -> None:
    # Comments are dropped by the parser; element text and attributes must match exactly.
    main = ET.tostring(strip_rate_limits(load(MAIN_POLICY)))
    consumption = ET.tostring(strip_rate_limits(load(CONSUMPTION_POLICY)))
    assert main == consumption


@pytest.mark.parametrize("path", BOTH, ids=lambda p: p.name)
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


@pytest.mark.parametrize("path", BOTH, ids=lambda p: p.name)
def test_named_values_exist_in_the_template(path: Path) -> None:
    used = set(re.findall(r"\{\{([^}]+)\}\}", path.read_text()))
    bicep = (INFRA / "modules" / "apim-api.bicep").read_text()
    declared = set(re.findall(r"displayName: '([^']+)'", bicep))
    assert used and used <= declared, f"named values used but not created: {used - declared}"


# The condition, exactly: any query parameter name (compared in lower case, as the Functions
# host's case-insensitive query collection does) that carries more than one value. Behind the
# gateway the host would merge them (?deviceid=a&deviceid=b -> deviceid=a,b, a legal device id).
REPEATED_KEY_CONDITION = (
    "@(context.Request.Url.Query.GroupBy(p => p.Key.ToLowerInvariant())"
    ".Any(g => g.Sum(p => p.Value.Length) > 1))"
)


@pytest.mark.parametrize("path", BOTH, ids=lambda p: p.name)
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
    position = next(i for i, e in enumerate(order) if e.tag == "choose" and e.find("when") is guards[0])
    first_choose = next(i for i, e in enumerate(order) if e.tag == "choose")
    assert first_choose < position, "the subscription check comes first"
    for tag in ("authentication-managed-identity", "set-backend-service"):
        assert position < [e.tag for e in order].index(tag), f"repeated keys are refused before <{tag}>"
