"""`VERIFY_TELEMETRY=on make verify` (infra/verify.py check_telemetry): one gateway probe with a
traceparent, then Application Insights queried through the Azure CLI — here a fake `az`
(fake_az.py) answering `az monitor app-insights query` in the query API's shape — at most for
the configured wait, on a clock the test drives. It passes only when the handler's line, the
host's request and the gateway's request share the ids, and names what is missing otherwise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import fake_az
import verify

GROUP = "rg-iothub-sas"
APP_INSIGHTS = "iothubsas-appi-abc12345"
INVOCATION = "0f8fad5b-d9cb-469f-a165-70867728950e"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
LINE = ["line", INVOCATION, "{trace}"]
HOST = ["host", INVOCATION, "{trace}"]
GATEWAY = ["gateway", "", "{trace}"]


def config() -> verify.Config:
    return verify.Config(
        api_url="https://apim.example/iothub-sas", subscription_key="k", function_url="https://app.example/api",
        function_key="f", hub="hub.azure-devices.net", mode=verify.HUB_POLICY, policy="device", id_scope="",
        ip_layer=True, apim_addresses=["20.50.2.1"], app_service_auth=True, bearer=True,
        device="verify-device", module="verify-module", ttl=300, timeout=5)


class Clock:
    """Time that passes only when the check sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Gateway:
    """The probe's answer, and what was sent."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.sent: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, headers: dict[str, str], timeout: float) -> verify.Answer:
        self.sent.append((url, headers))
        return verify.Answer(self.status, {"content-type": "application/json"}, b"{}")


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[list[list[str]]], *, wait: float = 300,
        status: int = 200, **state: object) -> tuple[verify.Report, Clock, Gateway, list[dict]]:
    answers = fake_az.default_state()
    answers.update(app_insights_rows=rows, **state)
    fake_az.install(tmp_path, answers)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    deployment = verify.Deployment({"RESOURCE_GROUP": GROUP, "AZURE_SUBSCRIPTION_ID": fake_az.SUBSCRIPTION})
    report, clock, gateway = verify.Report(), Clock(), Gateway(status)
    verify.check_telemetry(config(), report, deployment, verify.Telemetry(APP_INSIGHTS, wait, 30),
                           send=gateway, clock=clock, sleep=clock.sleep, trace_id=TRACE)
    queries = [c["argv"] for c in fake_az.calls(tmp_path) if c["argv"][:3] == ["monitor", "app-insights", "query"]]
    return report, clock, gateway, queries


def test_the_probe_carries_the_trace_id_and_the_join_passes_once_all_three_records_arrive(tmp_path, monkeypatch) -> None:
    # Ingestion takes minutes: the first two queries find nothing, then the line alone, then all.
    report, clock, gateway, queries = run(tmp_path, monkeypatch, [[], [], [LINE], [LINE, HOST, GATEWAY]])
    assert report.failed == [], report.lines
    [passed] = report.lines
    assert passed.startswith(f"PASS {verify.TELEMETRY}:") and INVOCATION in passed and TRACE in passed, passed
    assert "own operation id" not in passed
    [(url, headers)] = gateway.sent
    assert url == "https://apim.example/iothub-sas/devices/verify-device/sas-token?ttl=300"
    version, trace, parent, flags = headers["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TRACE, "01") and len(parent) == 16 and int(parent, 16) != 0
    assert headers["Ocp-Apim-Subscription-Key"] == "k"
    assert len(queries) == 4 and clock.slept == [30, 30, 30]
    for argv in queries:
        assert fake_az.option(argv, "--app") == APP_INSIGHTS and fake_az.option(argv, "-g") == GROUP
        assert fake_az.option(argv, "--subscription") == fake_az.SUBSCRIPTION, "every az call names the subscription"
        assert f'let t = "{TRACE}"' in fake_az.option(argv, "--analytics-query")


def test_a_missing_gateway_request_fails_naming_it_after_the_bounded_wait(tmp_path, monkeypatch) -> None:
    report, clock, _, queries = run(tmp_path, monkeypatch, [[LINE, HOST]], wait=100)
    assert report.failed == [verify.TELEMETRY]
    [failed] = report.lines
    assert f"no API Management request with operation id {TRACE}" in failed, failed
    assert clock.now == 100 and clock.slept == [30, 30, 30, 10], "never waits past the bound"
    assert len(queries) == 5


def test_a_missing_line_says_whether_the_gateway_saw_the_probe(tmp_path, monkeypatch) -> None:
    report, _, _, _ = run(tmp_path, monkeypatch, [[GATEWAY]], wait=0)
    assert report.failed == [verify.TELEMETRY]
    assert f"no handler line with trace_id {TRACE}" in report.lines[0]
    assert "the handler did not get the gateway's traceparent" in report.lines[0], report.lines[0]
    report, _, _, queries = run(tmp_path / "nothing", monkeypatch, [[]], wait=0)
    assert "nor API Management's request" in report.lines[0], report.lines[0]
    assert len(queries) == 1, "a wait of 0: one query"


def test_a_line_without_the_hosts_request_or_invocation_id_fails(tmp_path, monkeypatch) -> None:
    report, _, _, _ = run(tmp_path, monkeypatch, [[LINE, GATEWAY]], wait=0)
    assert f"no host request with InvocationId {INVOCATION}" in report.lines[0], report.lines[0]
    report, _, _, _ = run(tmp_path / "no-id", monkeypatch, [[["line", "", "{trace}"], GATEWAY]], wait=0)
    assert "the line has no invocation_id" in report.lines[0], report.lines[0]


def test_a_host_request_in_a_trace_of_its_own_still_joins_by_invocation_id(tmp_path, monkeypatch) -> None:
    report, _, _, _ = run(tmp_path, monkeypatch, [[LINE, ["host", INVOCATION, "f" * 32], GATEWAY]])
    assert report.failed == [], report.lines
    assert f"own operation id {'f' * 32}" in report.lines[0], report.lines[0]


def test_a_refused_probe_or_an_unreadable_component_fails_without_waiting(tmp_path, monkeypatch) -> None:
    report, clock, _, queries = run(tmp_path, monkeypatch, [[LINE, HOST, GATEWAY]], status=401)
    assert report.failed == [verify.TELEMETRY] and "answered 401" in report.lines[0]
    assert queries == [] and clock.slept == []
    report, clock, _, _ = run(tmp_path / "no-extension", monkeypatch, [[]],
                              app_insights_error="'app-insights' is misspelled or not recognized by the system.")
    assert report.failed == [verify.TELEMETRY] and "cannot query Application Insights" in report.lines[0]
    assert clock.slept == []


def test_the_check_is_opt_in_and_needs_a_deployment(tmp_path, monkeypatch) -> None:
    readable = verify.Deployment({"RESOURCE_GROUP": GROUP})
    assert verify.configure_telemetry(readable, {}) is None
    assert verify.configure_telemetry(readable, {"VERIFY_TELEMETRY": "off"}) is None
    chosen = verify.configure_telemetry(readable, {"VERIFY_TELEMETRY": "on", "VERIFY_APP_INSIGHTS": APP_INSIGHTS,
                                                   "VERIFY_TELEMETRY_WAIT": "60"})
    assert chosen == verify.Telemetry(APP_INSIGHTS, 60, 30)
    unreadable = verify.Deployment({"VERIFY_API_URL": "https://apim.example"})
    with pytest.raises(verify.ConfigError, match="RESOURCE_GROUP"):
        verify.configure_telemetry(unreadable, {"VERIFY_TELEMETRY": "on"})
    with pytest.raises(verify.ConfigError, match="on or off"):
        verify.configure_telemetry(readable, {"VERIFY_TELEMETRY": "yes"})
    # The component's name comes from the deployment's outputs when not given.
    answers = fake_az.default_state()
    answers.update(outputs={"appInsightsName": APP_INSIGHTS})
    fake_az.install(tmp_path, answers)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    deployment = verify.Deployment({"RESOURCE_GROUP": GROUP, "AZURE_SUBSCRIPTION_ID": fake_az.SUBSCRIPTION})
    assert verify.configure_telemetry(deployment, {"VERIFY_TELEMETRY": "on"}).app == APP_INSIGHTS


def test_the_query_reads_the_records_as_docs_operations_md_describes_them() -> None:
    text = verify.telemetry_query(TRACE)
    assert 'customDimensions.Category == "Host.Function.Console"' in text and "line = parse_json(message)" in text
    assert "tostring(line.trace_id) == t" in text, "the line, by its trace_id"
    assert "tostring(customDimensions.InvocationId) == invocation" in text, "the host's request, by InvocationId"
    assert "operation_Id == t and isempty(tostring(customDimensions.InvocationId))" in text, "the gateway's request"
    json.dumps(text)  # one string, passed as one argument
