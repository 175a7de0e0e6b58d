"""infra/deploy.sh (make deploy, azd's hooks) never hangs and takes the paths that work:

- every Azure CLI call is bounded (`bounded SECONDS az ...`), every curl has --max-time, every
  wait loop has a deadline; shown statically for every call and by running the script against a
  fake `az` that never answers, or answers but never finishes registering a provider;
- no `az functionapp deployment source config-zip`: on Flex it polls /admin/host/status in a loop
  that does not advance on 403 (azure-cli appservice/custom.py, check_flex_app_after_deployment),
  and on Linux Consumption it needs an AzureWebJobsStorage connection string (upload_zip_to_storage);
  the Flex package goes to the SCM site's one-deploy API and its status is polled here;
- Microsoft.App (and every other provider the template uses) is registered, bounded;
- the named value's stage is deployed only after the function key stage and a bounded wait for
  API Management's role assignment."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import INFRA, REPO

DEPLOY = INFRA / "deploy.sh"


def code_lines() -> list[str]:
    """deploy.sh without comments and without the embedded Python."""
    lines, in_python = [], False
    for line in DEPLOY.read_text().splitlines():
        if "<<'PYTHON'" in line:
            in_python = True
            lines.append(line)
            continue
        if in_python:
            in_python = line.strip() != "PYTHON"
            continue
        stripped = line.lstrip()
        if stripped.startswith("#"):
            continue
        lines.append(line)
    return lines


# `az` where a command starts: line start, after ;, &&, ||, |, (, $(, !, or a keyword.
COMMAND_AZ = re.compile(r"(?:^|[;&|(!]|\$\(|\b(?:if|then|do|until|while|else|elif|retry \S+)\s)\s*az\s")
BOUNDED_AZ = re.compile(r'bounded "?\$[A-Z_]+"? az\s|bounded \d+ az\s')


def test_every_az_call_is_bounded() -> None:
    calls, unbounded = 0, []
    for number, line in enumerate(code_lines(), 1):
        for match in re.finditer(r"(?<![\w.'-])az\s", line):
            before = line[: match.end()]
            if BOUNDED_AZ.search(before[-60:]):
                calls += 1
            elif COMMAND_AZ.search(before):
                unbounded.append(line.strip())
    assert not unbounded, "Azure CLI calls without `bounded SECONDS`:\n" + "\n".join(unbounded)
    assert calls >= 15, f"expected the script's az calls to be found ({calls})"
    assert 'timeout_bin" --kill-after=10 "$seconds" "$@"' in DEPLOY.read_text(), "bounded() runs coreutils timeout"


def test_every_curl_call_has_a_time_limit() -> None:
    curls = [line for line in code_lines() if re.search(r"\bcurl\s", line) and "command -v" not in line and "for tool" not in line]
    assert curls, "the Flex upload uses curl"
    for line in curls:
        assert "--max-time" in line, f"curl without --max-time: {line.strip()}"


def test_every_wait_loop_has_a_deadline() -> None:
    text = "\n".join(code_lines())
    loops = re.findall(r"\n(\s*)(until|while) (.*?)\n(.*?)\n\1done", text, re.S)
    assert loops, "the script waits in loops"
    for _indent, keyword, condition, body in loops:
        if keyword == "while" and condition.strip() == "read -r":
            continue
        assert re.search(r"deadline|attempt|API_ATTEMPTS", condition + body), (
            f"{keyword} {condition.strip()}: a wait loop needs a deadline or an attempt bound"
        )


def test_no_config_zip_and_flex_uses_one_deploy_with_its_own_polling() -> None:
    text = "\n".join(code_lines())
    assert "config-zip" not in text, "config-zip loops forever behind access restrictions on Flex"
    assert "/api/publish?RemoteBuild=false" in text
    assert re.search(r"/api/deployments/\$deployment_id", text), "the deployment's status is polled here"
    assert "PUBLISH_SECONDS" in text
    # The Entra token never appears on a command line.
    assert '-H "@$headers"' in text and "Authorization: Bearer %s" in text
    assert "--auth-mode login" in text, "Linux Consumption: upload with Entra ID, never account keys"


def test_microsoft_app_and_the_other_providers_are_registered() -> None:
    text = DEPLOY.read_text()
    providers = re.search(r"readonly PROVIDERS=\((.*?)\)", text, re.S).group(1).split()
    assert "Microsoft.App" in providers, "Flex's subnet delegation needs Microsoft.App registered"
    for namespace in ("Microsoft.Web", "Microsoft.ApiManagement", "Microsoft.KeyVault", "Microsoft.Storage", "Microsoft.Network"):
        assert namespace in providers
    assert "az provider register" in text and "az provider register --namespace \"$namespace\" --wait" not in text
    main = re.search(r"\n    all\)\n(.*?);;", text, re.S).group(1)
    assert main.index("preflight") < main.index("deploy_stage infrastructure"), "providers before the first deployment"


def test_stages_run_in_order_with_a_bounded_wait_for_the_role_assignment() -> None:
    text = DEPLOY.read_text()
    main = re.search(r"\n    all\)\n(.*?);;", text, re.S).group(1)
    order = [main.index(step) for step in ("deploy_stage infrastructure", "deploy_code", "publish")]
    assert order == sorted(order)
    publish = re.search(r"\npublish\(\) \{\n(.*?)\n\}\n", text, re.S).group(1)
    steps = ["deploy_stage functionKey", "az role assignment list", 'sleep "$ROLE_PROPAGATION_SECONDS"', "deploy_stage api", "keyVault.lastStatus.code"]
    positions = [publish.index(step) for step in steps]
    assert positions == sorted(positions), f"publish must run {steps} in this order"
    assert "ROLE_SECONDS" in publish and "API_ATTEMPTS" in publish


# --- Behaviour: the script against a fake Azure CLI ----------------------------------------------


def fake_az(directory: Path, script: str) -> dict[str, str]:
    az = directory / "az"
    az.write_text("#!/usr/bin/env bash\n" + script)
    az.chmod(az.stat().st_mode | stat.S_IXUSR)
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "RESOURCE_GROUP", "AZURE_RESOURCE_GROUP")}
    env.update(
        PATH=f"{directory}:{os.environ['PATH']}",
        RESOURCE_GROUP="rg-test",
        LOCATION="westeurope",
        APIM_PUBLISHER_EMAIL="ops@example.com",
        FUNCTION_APP_CLIENT_ID="00000000-0000-0000-0000-000000000001",
        IOTHUB_HOSTNAME="hub.azure-devices.net",
        DEPLOYER_PRINCIPAL_ID="00000000-0000-0000-0000-000000000002",
        AZ_SECONDS="2",
        PROVIDER_SECONDS="3",
        POLL_SECONDS="1",
    )
    return env


def run_deploy(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(["bash", str(DEPLOY), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    return done, time.monotonic() - started


def test_a_cli_that_never_answers_is_cut_off(tmp_path: Path) -> None:
    env = fake_az(tmp_path, "exec sleep 1000\n")
    done, seconds = run_deploy(env, "preflight")
    assert done.returncode != 0
    assert seconds < 30, f"took {seconds:.0f} s"
    assert "did not answer within 2 s" in done.stderr, done.stderr


def test_a_provider_that_never_registers_is_given_up_on(tmp_path: Path) -> None:
    env = fake_az(
        tmp_path,
        'case "$1 $2" in\n'
        '  "account show") echo 00000000-0000-0000-0000-000000000003 ;;\n'
        '  "provider show") echo Registering ;;\n'
        '  "provider register") exit 0 ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n",
    )
    done, seconds = run_deploy(env, "preflight")
    assert done.returncode != 0
    assert seconds < 45, f"took {seconds:.0f} s"
    assert "Microsoft.App did not register within 3 s" in done.stderr, done.stderr


def test_refuses_to_run_in_ci(tmp_path: Path) -> None:
    env = fake_az(tmp_path, "exit 0\n")
    env["CI"] = "true"
    done, _ = run_deploy(env, "preflight")
    assert done.returncode != 0 and "refusing to deploy from CI" in done.stderr


# --- The signing mode and the settings that go with it -------------------------------------------

AZ_THAT_WORKS = (
    'case "$1 $2" in\n'
    '  "account show") echo 00000000-0000-0000-0000-000000000003 ;;\n'
    '  "provider show") echo Registered ;;\n'
    "  *) exit 0 ;;\n"
    "esac\n"
)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"DPS_ID_SCOPE": "0ne00000A0A"}, "DPS_ID_SCOPE is only used with SIGNING_MODE=enrollment-group"),
        ({"SIGNING_MODE": "hub-policy", "ENROLLMENT_GROUP_KEY_SECRET": "k"}, "ENROLLMENT_GROUP_KEY_SECRET is only used"),
        ({"SIGNING_MODE": "enrollment-group", "IOTHUB_POLICY_NAME": "device"}, "IOTHUB_POLICY_NAME must be unset"),
        ({"SIGNING_MODE": "group"}, "SIGNING_MODE must be hub-policy or enrollment-group"),
        ({"DEVICE_SCOPES": "{not json"}, "DEVICE_SCOPES must be a non-empty JSON object"),
        ({"DEVICE_SCOPES": '["sensor-1"]'}, "DEVICE_SCOPES must be a non-empty JSON object"),
    ],
    ids=["dps-scope-in-hub-policy", "group-secret-in-hub-policy", "policy-in-enrollment-group", "unknown-mode", "scopes-not-json", "scopes-not-object"],
)
def test_settings_the_handler_would_refuse_are_refused_before_deploying(tmp_path: Path, settings: dict[str, str], named: str) -> None:
    env = fake_az(tmp_path, AZ_THAT_WORKS)
    for name in ("SIGNING_MODE", "DPS_ID_SCOPE", "ENROLLMENT_GROUP_KEY_SECRET", "IOTHUB_POLICY_NAME", "DEVICE_SCOPES"):
        env.pop(name, None)
    env.update(settings)
    for command in ("all", "publish"):
        done, _ = run_deploy(env, command)
        assert done.returncode != 0 and named in done.stderr, (command, done.stderr)
        assert "az deployment group create" not in done.stderr, "refused before anything is deployed"


def test_device_scopes_are_refused_at_azds_hooks(tmp_path: Path) -> None:
    env = fake_az(tmp_path, AZ_THAT_WORKS)
    env["DEVICE_SCOPES"] = '{"role:Fleet.A": ["fleet-a-*"]}'
    for command in ("preflight", "after-provision"):
        done, _ = run_deploy(env, command)
        assert done.returncode != 0 and "DEVICE_SCOPES cannot pass through azd's parameter file" in done.stderr, done.stderr


def recording_az(directory: Path) -> tuple[dict[str, str], Path]:
    """A fake az that answers the preflight, creates the group, records the parameter files of the
    first deployment and fails everything after it (so the script stops there, package or not)."""
    record = directory / "record"
    record.mkdir()
    script = (
        f'record="{record}"\n'
        'case "$1 $2 $3" in\n'
        '  "account show "*) echo 00000000-0000-0000-0000-000000000003 ;;\n'
        '  "provider show "*) echo Registered ;;\n'
        '  "group create "*) exit 0 ;;\n'
        '  "deployment group create")\n'
        '    [ ! -e "$record/done" ] || exit 1\n'
        '    n=0\n'
        '    for arg in "$@"; do\n'
        '      case $arg in @*) n=$((n + 1)); cp "${arg#@}" "$record/parameters-$n.json" ;; esac\n'
        "    done\n"
        '    touch "$record/done"\n'
        "    exit 0 ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    return fake_az(directory, script), record


def deployed_parameters(record: Path) -> dict[str, object]:
    merged: dict[str, object] = {}
    for path in sorted(record.glob("parameters-*.json")):  # later files win, as with the CLI
        for name, spec in json.loads(path.read_text())["parameters"].items():
            merged[name] = spec["value"]
    return merged


@pytest.mark.parametrize("mode", ["hub-policy", "enrollment-group"])
def test_the_deployment_gets_the_mode_and_its_settings(tmp_path: Path, mode: str) -> None:
    env, record = recording_az(tmp_path)
    for name in ("SIGNING_MODE", "DPS_ID_SCOPE", "ENROLLMENT_GROUP_KEY_SECRET", "IOTHUB_POLICY_NAME", "DEVICE_SCOPES"):
        env.pop(name, None)
    scopes = '{"role:Fleet.A": ["fleet-a-*"], "3f2504e0-4f89-41d3-9a0c-0305e82c3301": ["sensor-\\"17\\""]}'
    # Rules naming the gateway's identity and its roles: no caller fact forwarded (apimCallerKind none).
    env.update(SIGNING_MODE=mode, DEVICE_SCOPES=scopes, APIM_CALLER_KIND="none")
    if mode == "enrollment-group":
        env.update(DPS_ID_SCOPE="0ne00000A0A", ENROLLMENT_GROUP_KEY_SECRET="fleet-a-group-key")
    # The infrastructure stage is deployed; the next az call fails and stops the script.
    done, _ = run_deploy(env, "all")
    assert done.returncode != 0
    parameters = deployed_parameters(record)
    assert parameters, done.stderr
    assert parameters["deploymentStage"] == "infrastructure"
    assert parameters["signingMode"] == mode
    assert parameters["deviceScopes"] == scopes, "DEVICE_SCOPES reaches the template unchanged"
    assert parameters["apimCallerKind"] == "none"
    if mode == "enrollment-group":
        assert parameters["dpsIdScope"] == "0ne00000A0A"
        assert parameters["enrollmentGroupKeySecretName"] == "fleet-a-group-key"
    else:
        assert parameters["dpsIdScope"] == ""
        assert parameters["iotHubPolicyName"] == "device"
        assert parameters["enrollmentGroupKeySecretName"] == "dps-enrollment-group-key"


# --- The caller fact API Management forwards (issue 22) -----------------------------------------

CALLER_VARIABLES = ("APIM_CALLER_KIND", "APIM_CALLER_AUDIENCE", "APIM_CALLER_CLIENT_IDS", "APIM_CLIENT_CERT_THUMBPRINTS", "DEVICE_SCOPES")
SUBSCRIPTION_SCOPES = '{"subscription:backend-a": ["fleet-a-*"]}'
CLIENT_A = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
PIN_A = "A1B2C3D4E5F60718293A4B5C6D7E8F9001122334"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"APIM_CALLER_KIND": "apim"}, "APIM_CALLER_KIND must be subscription, certificate, entra or none"),
        ({"APIM_CALLER_KIND": "entra"}, "APIM_CALLER_KIND=entra does nothing without DEVICE_SCOPES"),
        ({"APIM_CALLER_AUDIENCE": "api://callers"}, "APIM_CALLER_AUDIENCE is only used with APIM_CALLER_KIND=entra"),
        ({"DEVICE_SCOPES": SUBSCRIPTION_SCOPES, "APIM_CLIENT_CERT_THUMBPRINTS": PIN_A}, "APIM_CLIENT_CERT_THUMBPRINTS is only used with APIM_CALLER_KIND=certificate"),
        ({"DEVICE_SCOPES": '{"caller:' + CLIENT_A + '": ["a"]}', "APIM_CALLER_KIND": "entra", "APIM_CALLER_CLIENT_IDS": CLIENT_A}, "APIM_CALLER_KIND=entra needs APIM_CALLER_AUDIENCE"),
        ({"DEVICE_SCOPES": '{"caller:' + CLIENT_A + '": ["a"]}', "APIM_CALLER_KIND": "entra", "APIM_CALLER_AUDIENCE": "api://callers", "APIM_CALLER_CLIENT_IDS": "app-a"}, "APIM_CALLER_CLIENT_IDS must be comma-separated client application ids"),
        ({"DEVICE_SCOPES": '{"caller:' + CLIENT_A + '": ["a"]}', "APIM_CALLER_KIND": "entra", "APIM_CALLER_AUDIENCE": "api://00000000-0000-0000-0000-000000000001", "APIM_CALLER_CLIENT_IDS": CLIENT_A}, "not the Function App's"),
        ({"DEVICE_SCOPES": '{"caller:' + CLIENT_A + '": ["a"]}', "APIM_CALLER_KIND": "entra", "APIM_CALLER_AUDIENCE": 'api://x"/><audience>y', "APIM_CALLER_CLIENT_IDS": CLIENT_A}, "APIM_CALLER_AUDIENCE must be one audience"),
        ({"DEVICE_SCOPES": '{"fwd-cert:' + "ab" * 32 + '": ["a"]}', "APIM_CALLER_KIND": "certificate"}, "APIM_CALLER_KIND=certificate needs APIM_CLIENT_CERT_THUMBPRINTS"),
        ({"DEVICE_SCOPES": '{"fwd-cert:' + "ab" * 32 + '": ["a"]}', "APIM_CALLER_KIND": "certificate", "APIM_CLIENT_CERT_THUMBPRINTS": "ab" * 32}, "40 hex digits"),
        ({"DEVICE_SCOPES": '{"3f2504e0-4f89-41d3-9a0c-0305e82c3301": ["a"]}'}, "DEVICE_SCOPES names no caller API Management forwards with APIM_CALLER_KIND=subscription"),
        ({"DEVICE_SCOPES": SUBSCRIPTION_SCOPES, "APIM_CALLER_KIND": "entra", "APIM_CALLER_AUDIENCE": "api://callers", "APIM_CALLER_CLIENT_IDS": CLIENT_A}, "use keys caller:... or caller-role:..."),
    ],
    ids=["unknown-kind", "kind-without-scopes", "audience-without-entra", "pins-with-subscription", "entra-without-audience",
         "client-ids-not-guids", "caller-audience-is-the-apps", "audience-breaking-out", "certificate-without-pins",
         "pins-not-sha1", "scopes-naming-apim", "scopes-of-another-kind"],
)
def test_caller_settings_that_cannot_work_are_refused_before_deploying(tmp_path: Path, settings: dict[str, str], named: str) -> None:
    env = fake_az(tmp_path, AZ_THAT_WORKS)
    for name in ("SIGNING_MODE", "DPS_ID_SCOPE", "ENROLLMENT_GROUP_KEY_SECRET", "IOTHUB_POLICY_NAME", *CALLER_VARIABLES):
        env.pop(name, None)
    env.update(settings)
    for command in ("all", "publish"):
        done, _ = run_deploy(env, command)
        assert done.returncode != 0 and named in done.stderr, (command, done.stderr)
        assert "az deployment group create" not in done.stderr, "refused before anything is deployed"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, {"apimCallerKind": "subscription", "apimCallerAudience": "", "apimCallerClientIds": "", "apimClientCertThumbprints": ""}),
        ({"DEVICE_SCOPES": SUBSCRIPTION_SCOPES}, {"apimCallerKind": "subscription", "deviceScopes": SUBSCRIPTION_SCOPES}),
        (
            {"DEVICE_SCOPES": '{"caller-role:Fleet.A": ["a"]}', "APIM_CALLER_KIND": "entra", "APIM_CALLER_AUDIENCE": "api://iothub-sas-callers",
             "APIM_CALLER_CLIENT_IDS": f"{CLIENT_A}, 9a1b2c3d-0000-4000-8000-00000000000a"},
            {"apimCallerKind": "entra", "apimCallerAudience": "api://iothub-sas-callers", "apimCallerClientIds": f"{CLIENT_A}, 9a1b2c3d-0000-4000-8000-00000000000a"},
        ),
        (
            {"DEVICE_SCOPES": '{"fwd-cert:' + "ab" * 32 + '": ["a"]}', "APIM_CALLER_KIND": "certificate", "APIM_CLIENT_CERT_THUMBPRINTS": f"{PIN_A},{PIN_A.lower()}"},
            {"apimCallerKind": "certificate", "apimClientCertThumbprints": f"{PIN_A},{PIN_A.lower()}"},
        ),
    ],
    ids=["default", "subscription", "entra", "certificate"],
)
def test_the_deployment_gets_the_caller_kind_and_its_lists(tmp_path: Path, settings: dict[str, str], expected: dict[str, str]) -> None:
    env, record = recording_az(tmp_path)
    for name in CALLER_VARIABLES:
        env.pop(name, None)
    env.update(settings)
    done, _ = run_deploy(env, "all")
    parameters = deployed_parameters(record)
    assert parameters, done.stderr
    for name, value in expected.items():
        assert parameters[name] == value, (name, parameters.get(name))
