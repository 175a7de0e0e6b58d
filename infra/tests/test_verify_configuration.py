"""`make verify` (infra/verify.py) reads what it cannot probe: against a fake Azure CLI answering
with the Function App's configuration in ARM's shapes (fake_az.deployed_site), every layer ends in
the table as probed or configured, and a layer switched off in that configuration fails naming
it. And verify reads the subscription and group azd used, names the subscription in every call,
and stops when the CLI is on another subscription. (tests/api/deployment_verify.rs runs the whole
verify.py against nginx stand-ins of the topology, with and without this fake.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fake_az
import verify

SUBSCRIPTION = fake_az.SUBSCRIPTION
GROUP = "rg-iothub-sas"
APP = "iothubsas-func-abc12345"
APIM_PRINCIPAL = "aaaaaaaa-0000-0000-0000-000000000001"
APIM_ADDRESSES = ["20.50.2.1"]
OUTPUTS = {"functionAppName": APP, "apimPrincipalId": APIM_PRINCIPAL}
# What the probes of a deployment with every layer on leave behind: the gateway's own checks and
# the tokens, and the outermost layer that refuses a direct call.
GATEWAY_PROBED = {"subscription key", "repeated query keys", "token", "X-Forwarded-For"}


def config(ip_layer: bool) -> verify.Config:
    return verify.Config(
        api_url="https://apim.example/iothub-sas", subscription_key="k", function_url="https://app.example/api",
        function_key="f", hub="hub.azure-devices.net", mode=verify.HUB_POLICY, policy="device", id_scope="",
        ip_layer=ip_layer, apim_addresses=APIM_ADDRESSES if ip_layer else [], app_service_auth=True, bearer=True,
        device="verify-device", module="verify-module", ttl=300, timeout=5)


def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ip_layer: bool, off: tuple[str, ...] = (), **state: object) -> None:
    answers = fake_az.default_state()
    answers.update(outputs=OUTPUTS, rest=fake_az.deployed_site(SUBSCRIPTION, GROUP, APP, APIM_PRINCIPAL,
                                                                APIM_ADDRESSES if ip_layer else [], ip_layer, off))
    answers.update(state)
    fake_az.install(tmp_path, answers)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")


def run(ip_layer: bool, environ: dict[str, str] | None = None) -> tuple[verify.Report, list[str]]:
    report = verify.Report()
    report.probed |= GATEWAY_PROBED | {verify.ACCESS_RESTRICTION if ip_layer else verify.APP_SERVICE_AUTH}
    deployment = verify.Deployment(environ if environ is not None else {"RESOURCE_GROUP": GROUP, "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION})
    chosen = config(ip_layer)
    read = verify.check_configuration(deployment, chosen, report)
    return report, verify.table(chosen, report, read)


def rows(table: list[str]) -> dict[str, tuple[str, str]]:
    """layer -> (shown by, result), from the table's rows."""
    parsed = {}
    for row in table[1:]:
        layer, shown, result = row[:27].strip(), row[28:49].strip(), row[50:].strip()
        parsed[layer] = (shown, result)
    return parsed


@pytest.mark.parametrize("ip_layer", [True, False], ids=["classic tier", "consumption or v2 tier"])
def test_every_layer_is_probed_or_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ip_layer: bool) -> None:
    fake(tmp_path, monkeypatch, ip_layer)
    report, table = run(ip_layer)
    assert not report.failed, "\n".join(report.lines)
    shown = rows(table)
    assert set(shown) == set(verify.LAYERS), table
    for layer, (how, result) in shown.items():
        if not ip_layer and layer in (verify.ACCESS_RESTRICTION, verify.ALLOWED_IPS):
            assert result.startswith("off"), (layer, how, result)
            continue
        assert result == "PASS" and how in ("probed", "configured", "probed + configured"), (layer, how, result)
    if ip_layer:
        assert shown[verify.ACCESS_RESTRICTION][0] == "probed + configured"
        for hidden in (verify.APP_SERVICE_AUTH, verify.FUNCTION_KEY, verify.ALLOWED_IPS, verify.BEARER):
            assert shown[hidden][0] == "configured", "behind the access restriction's 403 only the configuration shows it"
    else:
        assert shown[verify.APP_SERVICE_AUTH][0] == "probed + configured"


CASES = [(switch, ip_layer) for switch in fake_az.SWITCHES for ip_layer in (True, False)
         if ip_layer or switch not in ("access restriction", "ALLOWED_IPS")]


@pytest.mark.parametrize(("switch", "ip_layer"), CASES, ids=[f"{s}-{'ip' if i else 'no-ip'}" for s, i in CASES])
def test_a_layer_switched_off_in_the_configuration_fails_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str, ip_layer: bool) -> None:
    fake(tmp_path, monkeypatch, ip_layer, off=(switch,))
    report, table = run(ip_layer)
    assert report.failed == [switch], "\n".join(report.lines)
    assert rows(table)[switch][1] == "FAIL"
    failure = next(line for line in report.lines if line.startswith(f"FAIL {switch}:"))
    assert "configured:" in failure


def test_a_configuration_that_cannot_be_read_fails_every_hidden_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(tmp_path, monkeypatch, True, rest={"get /x": {}}, rest_strict=True)
    report, table = run(True)
    assert verify.CONFIGURATION in report.failed
    shown = rows(table)
    for hidden in (verify.APP_SERVICE_AUTH, verify.FUNCTION_KEY, verify.ALLOWED_IPS, verify.BEARER):
        assert shown[hidden] == ("-", "FAIL"), shown[hidden]
        assert f"FAIL {hidden}: neither probed nor read from the configuration" in report.lines
    assert shown[verify.ACCESS_RESTRICTION] == ("probed", "PASS")


def test_without_a_deployment_to_read_the_table_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = verify.Report()
    report.probed |= GATEWAY_PROBED | {verify.ACCESS_RESTRICTION}
    deployment = verify.Deployment({"VERIFY_API_URL": "http://127.0.0.1:1/iothub-sas"})
    read = verify.check_configuration(deployment, config(True), report)
    shown = rows(verify.table(config(True), report, read))
    assert not report.failed
    assert shown[verify.BEARER][1].startswith("not shown (not read: every VERIFY_* value was given")


def test_every_call_names_the_subscription(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(tmp_path, monkeypatch, True)
    run(True)
    calls = [call["argv"] for call in fake_az.calls(tmp_path)]
    assert calls
    for argv in calls:
        if argv[:2] == ["account", "show"]:
            continue
        uri = fake_az.option(argv, "--uri") or ""
        assert fake_az.option(argv, "--subscription") == SUBSCRIPTION or f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/" in uri, argv
        if "-g" in argv:
            assert fake_az.option(argv, "-g") == GROUP


def test_a_cli_on_another_subscription_stops_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake(tmp_path, monkeypatch, True, cli_subscription="99999999-8888-7777-6666-555555555555")
    report, _ = run(True)
    failure = next(line for line in report.lines if line.startswith("FAIL configuration:"))
    assert "AZURE_SUBSCRIPTION_ID is" in failure and "az account set --subscription" in failure
    assert [call["argv"][:2] for call in fake_az.calls(tmp_path)] == [["account", "show"]], "nothing read from the other subscription"


def test_a_resource_group_that_disagrees_with_azds_is_refused() -> None:
    with pytest.raises(verify.ConfigError, match="RESOURCE_GROUP is 'rg-a' but AZURE_RESOURCE_GROUP is 'rg-b'"):
        verify.Deployment({"RESOURCE_GROUP": "rg-a", "AZURE_RESOURCE_GROUP": "rg-b"})


def test_after_azd_up_the_azd_environment_names_group_and_subscription(tmp_path: Path) -> None:
    azure = tmp_path / ".azure"
    (azure / "iothub-sas").mkdir(parents=True)
    (azure / "config.json").write_text(json.dumps({"version": 1, "defaultEnvironment": "iothub-sas"}))
    (azure / "iothub-sas" / ".env").write_text(
        f'AZURE_ENV_NAME="iothub-sas"\nAZURE_LOCATION="westeurope"\nAZURE_RESOURCE_GROUP="{GROUP}"\n'
        f'AZURE_SUBSCRIPTION_ID="{SUBSCRIPTION}"\nDEVICE_SCOPES=\'{{"role:A": ["a-*"]}}\'\n')
    deployment = verify.Deployment({}, root=str(tmp_path))
    assert (deployment.resource_group, deployment.wanted_subscription) == (GROUP, SUBSCRIPTION)
    # What the shell says wins over the file; given stand-ins (VERIFY_API_URL) the file is not read.
    assert verify.Deployment({"RESOURCE_GROUP": "rg-other"}, root=str(tmp_path)).resource_group == "rg-other"
    assert verify.Deployment({"VERIFY_API_URL": "http://x"}, root=str(tmp_path)).resource_group == ""
