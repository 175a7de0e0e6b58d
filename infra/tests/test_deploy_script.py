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
import subprocess
import time
from pathlib import Path

import pytest

import fake_az
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
    steps = ["deploy_stage_retried functionKey", "az role assignment list", 'sleep "$ROLE_PROPAGATION_SECONDS"', "deploy_stage_retried api", "keyVault.lastStatus.code"]
    positions = [publish.index(step) for step in steps]
    assert positions == sorted(positions), f"publish must run {steps} in this order"
    assert "ROLE_SECONDS" in publish and "API_ATTEMPTS" in publish


# --- Behaviour: the script against a fake Azure CLI ----------------------------------------------
#
# infra/tests/fake_az.py answers as Azure Resource Manager would (its queries applied with
# JMESPath, its tsv written as the CLI writes it) and records every call.

SUBSCRIPTION = fake_az.SUBSCRIPTION
OTHER_SUBSCRIPTION = "99999999-8888-7777-6666-555555555555"
GROUP = "rg-azd-env"
FLEX_OUTPUTS = {
    "functionAppName": "iothubsas-func-abc12345",
    "hostingPlan": "FlexConsumption",
    "storageAccountName": "stiothubsasabc12345",
    "packageContainerName": "app-package",
    "keyVaultName": "kv-iothubsas-abc12345",
    "functionKeySecretName": "iothub-sas-function-key",
    "apimPrincipalId": "aaaaaaaa-0000-0000-0000-000000000001",
    "apimName": "iothubsas-apim-abc12345",
    "apiUrl": "https://iothubsas-apim-abc12345.azure-api.net/iothub-sas",
    "ipLayer": "on",
    "signingMode": "hub-policy",
    "signingKeySecretName": "iothub-device-policy",
}
# Calls that name no subscription by design: the CLI's own login (what is compared with it),
# Microsoft Graph (the signed-in user), and the local Bicep CLI.
NOT_ARM = ("account show", "ad signed-in-user", "bicep ")
QUICK = {
    "AZ_SECONDS": "5",
    "PROVIDER_SECONDS": "3",
    "POLL_SECONDS": "0",
    "RETRY_SECONDS": "0",
    "STAGE_PAUSE_SECONDS": "0",
    "HOST_RETRY_SECONDS": "0",
    "ROLE_PROPAGATION_SECONDS": "0",
}


def base_env(directory: Path, package: Path | None = None) -> dict[str, str]:
    """The environment of an operator's shell (or azd's hooks, with azd_env) with `directory`'s
    fake az and curl first on PATH; nothing from the test runner's own Azure settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AZURE_", "VERIFY_")) and key not in (
            "CI", "RESOURCE_GROUP", "LOCATION", "SIGNING_MODE", "DPS_ID_SCOPE", "ENROLLMENT_GROUP_KEY_SECRET",
            "IOTHUB_POLICY_NAME", "DEVICE_SCOPES", "KEYVAULT_ALLOWED_IP_RANGES", "NAME_SALT", "NAME_PREFIX",
            "STORAGE_SKU", "DEPLOYER_PRINCIPAL_ID", "HOSTING_PLAN")
    }
    if package is None:
        package = directory / "handler.zip"
        package.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    env.update(
        PATH=f"{directory}:{os.environ['PATH']}",
        APIM_PUBLISHER_EMAIL="ops@example.com",
        FUNCTION_APP_CLIENT_ID="00000000-0000-0000-0000-000000000001",
        IOTHUB_HOSTNAME="hub.azure-devices.net",
        DEPLOYER_PRINCIPAL_ID="00000000-0000-0000-0000-000000000002",
        PACKAGE=str(package),
        **QUICK,
    )
    return env


def azd_env(directory: Path) -> dict[str, str]:
    """What azd hands its hooks after `azd up` asked for the subscription, region and group."""
    env = base_env(directory)
    env.update(
        AZURE_ENV_NAME="iothub-sas",
        AZURE_SUBSCRIPTION_ID=SUBSCRIPTION,
        AZURE_RESOURCE_GROUP=GROUP,
        AZURE_LOCATION="westeurope",
    )
    return env


def with_fake(directory: Path, **changes: object) -> dict[str, object]:
    state = fake_az.default_state()
    state.update(changes)
    fake_az.install(directory, state)
    return state


def run_deploy(env: dict[str, str], *args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(["bash", str(DEPLOY), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return done, time.monotonic() - started


def az_calls(directory: Path) -> list[list[str]]:
    return [call["argv"] for call in fake_az.calls(directory) if call["tool"] == "az"]


def joined(argv: list[str]) -> str:
    return " ".join(argv)


def deployment_calls(directory: Path) -> list[str]:
    return [joined(argv) for argv in az_calls(directory) if argv[:3] == ["deployment", "group", "create"]]


def deployed_parameters(directory: Path) -> list[dict[str, object]]:
    """The parameters of each deployment, in order (the fake keeps the files deploy.sh passed)."""
    files = sorted(directory.glob("parameters-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [{name: spec["value"] for name, spec in json.loads(f.read_text()).items()} for f in files]


def assert_where(directory: Path, subscription: str, group: str) -> None:
    """Every call names `subscription` (as --subscription or in the resource id it calls) and
    every group it names is `group`."""
    seen = az_calls(directory)
    assert seen, "the script called az"
    for argv in seen:
        text = joined(argv)
        if text.startswith(NOT_ARM):
            continue
        uri = fake_az.option(argv, "--uri") or ""
        named = fake_az.option(argv, "--subscription") or (uri.split("/subscriptions/")[1].split("/")[0] if "/subscriptions/" in uri else None)
        assert named == subscription, f"`az {text}` does not name subscription {subscription}"
        for flag in ("--resource-group", "-g"):
            if flag in argv:
                assert fake_az.option(argv, flag) == group, f"`az {text}` names another group than {group}"
        if "/resourceGroups/" in uri:
            assert uri.split("/resourceGroups/")[1].split("/")[0] == group, f"`az {text}` calls another group than {group}"


def test_a_cli_that_never_answers_is_cut_off(tmp_path: Path) -> None:
    with_fake(tmp_path, hang=True)
    env = base_env(tmp_path)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", AZ_SECONDS="2")
    done, seconds = run_deploy(env, "all")
    assert done.returncode != 0
    assert seconds < 30, f"took {seconds:.0f} s"
    assert "did not answer within 2 s" in done.stderr, done.stderr


def test_a_provider_that_never_registers_is_given_up_on(tmp_path: Path) -> None:
    with_fake(tmp_path, provider_state="Registering")
    env = base_env(tmp_path)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", POLL_SECONDS="1")
    done, seconds = run_deploy(env, "all")
    assert done.returncode != 0
    assert seconds < 45, f"took {seconds:.0f} s"
    assert "Microsoft.App did not register within 3 s" in done.stderr, done.stderr
    assert not deployment_calls(tmp_path)


def test_a_provider_that_cannot_be_registered_names_the_subscription_role(tmp_path: Path) -> None:
    """Owner on the resource group is not enough to register a provider: the message says what is."""
    with_fake(tmp_path, provider_state="NotRegistered", provider_register_fails=True)
    env = base_env(tmp_path)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope")
    done, _ = run_deploy(env, "all")
    assert done.returncode != 0
    assert "takes a role on the subscription" in done.stderr and "az provider register --subscription" in done.stderr, done.stderr


def test_refuses_to_run_in_ci(tmp_path: Path) -> None:
    with_fake(tmp_path)
    env = base_env(tmp_path)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", CI="true")
    done, _ = run_deploy(env, "preflight")
    assert done.returncode != 0 and "refusing to deploy from CI" in done.stderr


# --- azd's hook sequence: preprovision, azd's own provisioning, postprovision ---------------------


def azd_provisioned(directory: Path, state: dict[str, object], outputs: dict[str, str]) -> None:
    """What `azd provision` leaves between the hooks: the group and azd's deployment of the
    infrastructure stage, with its outputs."""
    state["groups"] = {GROUP: f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"}
    state["azd_deployment"] = {"name": "iothub-sas-1765000000"}
    state["outputs"] = outputs
    fake_az.install(directory, state)


@pytest.mark.parametrize("plan", ["FlexConsumption", "Consumption"])
def test_azds_hooks_act_on_azds_subscription_and_group(tmp_path: Path, plan: str) -> None:
    """preprovision then postprovision, as `azd up` runs them: every call names azd's subscription
    and group; Flex opens the SCM site for the upload and closes it; Linux Consumption restarts
    and syncs triggers; the stages run in order; DEVICE_SCOPES from the azd environment reaches
    every stage as an object (azd parses object parameters as JSON: azure-dev #6694); on Flex the
    closing lines name the vault's firewall, which lets no address in."""
    state = with_fake(tmp_path)
    env = azd_env(tmp_path)
    env["DEVICE_SCOPES"] = '{"role:Fleet.A": ["fleet-a-*"]}'
    # Rules naming API Management's own roles: no caller fact forwarded.
    env["APIM_CALLER_KIND"] = "none"
    done, _ = run_deploy(env, "preflight")
    assert done.returncode == 0, done.stderr
    assert not deployment_calls(tmp_path), "the preprovision hook deploys nothing"
    preflight = [joined(argv) for argv in az_calls(tmp_path)]
    assert any(call.startswith("bicep build --file infra/main.bicep") for call in preflight)
    assert any(call.startswith("keyvault list-deleted") for call in preflight)
    assert any(call.startswith("apim deletedservice list") for call in preflight)

    outputs = dict(FLEX_OUTPUTS, hostingPlan=plan)
    azd_provisioned(tmp_path, state, outputs)
    done, _ = run_deploy(env, "after-provision")
    assert done.returncode == 0, done.stderr
    assert_where(tmp_path, SUBSCRIPTION, GROUP)
    calls = [joined(argv) for argv in az_calls(tmp_path)]
    stages = [parameters["deploymentStage"] for parameters in deployed_parameters(tmp_path)]
    assert stages == ["functionKey", "api"], stages
    for parameters in deployed_parameters(tmp_path):
        assert parameters["deviceScopes"] == {"role:Fleet.A": ["fleet-a-*"]}
        assert parameters["location"] == "westeurope"
    firewall = "firewall denies every address" in done.stderr
    assert firewall == (plan == "FlexConsumption"), done.stderr
    app = outputs["functionAppName"]
    web_config = f"https://management.azure.com/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Web/sites/{app}/config/web"
    scm = [call for call in calls if call.startswith("rest --method patch") and web_config in call]
    if plan == "FlexConsumption":
        assert len(scm) == 2 and '"Allow"' in scm[0] and '"Deny"' in scm[1], scm
        curl = [call["argv"] for call in fake_az.calls(tmp_path) if call["tool"] == "curl"]
        assert any(f"https://{app}.scm.azurewebsites.net/api/publish?RemoteBuild=false&Deployer=iothub-sas-deploy" in argv for argv in curl)
        order = [i for i, call in enumerate(fake_az.calls(tmp_path)) if call["tool"] == "curl" or (call["tool"] == "az" and joined(call["argv"]).startswith("rest --method patch"))]
        assert [fake_az.calls(tmp_path)[i]["tool"] for i in order][0] == "az" and [fake_az.calls(tmp_path)[i]["tool"] for i in order][-1] == "az", "opened before the upload, closed after it"
    else:
        assert not scm, "Linux Consumption never opens the SCM site"
        upload = next(i for i, call in enumerate(calls) if call.startswith("storage blob upload"))
        restart = next(i for i, call in enumerate(calls) if call.startswith("functionapp restart"))
        sync = next(i for i, call in enumerate(calls) if "/syncfunctiontriggers" in call)
        assert upload < restart < sync, "upload, restart, then sync triggers"
    assert "--parameters" in deployment_calls(tmp_path)[0]


def test_a_mismatched_cli_subscription_stops_the_hooks(tmp_path: Path) -> None:
    with_fake(tmp_path, cli_subscription=OTHER_SUBSCRIPTION)
    env = azd_env(tmp_path)
    for command in ("preflight", "after-provision"):
        done, _ = run_deploy(env, command)
        assert done.returncode != 0
        message = done.stderr.strip().splitlines()[-1]
        assert "AZURE_SUBSCRIPTION_ID" in message and OTHER_SUBSCRIPTION in message and "az account set --subscription" in message, done.stderr
    assert all(joined(argv).startswith(NOT_ARM) for argv in az_calls(tmp_path)), "nothing but the login was asked"


@pytest.mark.parametrize(
    ("exported", "named"),
    [({"RESOURCE_GROUP": "rg-from-my-shell"}, "RESOURCE_GROUP"), ({"LOCATION": "northeurope"}, "LOCATION")],
)
def test_an_exported_group_or_region_that_disagrees_with_azd_stops_the_hooks(tmp_path: Path, exported: dict[str, str], named: str) -> None:
    with_fake(tmp_path)
    env = azd_env(tmp_path)
    env.update(exported)
    done, _ = run_deploy(env, "preflight")
    assert done.returncode != 0
    assert f"{named} is '{exported[named]}' but azd's AZURE_" in done.stderr, done.stderr
    assert not az_calls(tmp_path)


def test_a_hook_without_azds_location_names_it(tmp_path: Path) -> None:
    with_fake(tmp_path)
    env = azd_env(tmp_path)
    del env["AZURE_LOCATION"]
    done, _ = run_deploy(env, "preflight")
    assert done.returncode != 0 and "AZURE_LOCATION is not set" in done.stderr, done.stderr


def vault_and_apim(group_id: str, salt: str = "") -> dict[str, str]:
    import names

    return names.soft_deletable_names(group_id, "iothubsas", salt)


def test_a_soft_deleted_vault_stops_preflight_before_any_deployment(tmp_path: Path) -> None:
    group_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
    vault = vault_and_apim(group_id)["keyVault"]
    with_fake(tmp_path, deleted_vaults=[{
        "id": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/{vault}",
        "name": vault, "type": "Microsoft.KeyVault/deletedVaults",
        "properties": {"vaultId": f"{group_id}/providers/Microsoft.KeyVault/vaults/{vault}", "location": "westeurope",
                       "deletionDate": "2026-12-01T10:00:00Z", "scheduledPurgeDate": "2027-03-01T10:00:00Z",
                       "purgeProtectionEnabled": True, "tags": {}},
    }])
    env = azd_env(tmp_path)
    done, _ = run_deploy(env, "preflight")
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert f"Key Vault {vault}" in message and f"az keyvault recover --subscription {SUBSCRIPTION} --name {vault}" in message, done.stderr
    assert "2027-03-01T10:00:00Z" in message and "NAME_SALT" in message and "purge it" not in message, "purge protection: no purge"
    assert not deployment_calls(tmp_path)
    assert not any(joined(argv).startswith("provider register") for argv in az_calls(tmp_path))

    # The same vault no longer collides once the names are salted.
    env["NAME_SALT"] = "2"
    done, _ = run_deploy(env, "preflight")
    assert done.returncode == 0, done.stderr


def test_a_soft_deleted_api_management_stops_preflight_with_the_purge_command(tmp_path: Path) -> None:
    group_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
    apim = vault_and_apim(group_id)["apim"]
    with_fake(tmp_path, groups={GROUP: group_id}, deleted_apim=[{
        "id": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ApiManagement/locations/westeurope/deletedservices/{apim}",
        "name": apim, "type": "Microsoft.ApiManagement/deletedservices", "location": "West Europe",
        "serviceId": f"{group_id}/providers/Microsoft.ApiManagement/service/{apim}",
        "scheduledPurgeDate": "2026-12-07T10:00:00Z", "deletionDate": "2026-12-05T10:00:00Z",
    }])
    done, _ = run_deploy(azd_env(tmp_path), "preflight")
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert f"az apim deletedservice purge --subscription {SUBSCRIPTION} --service-name {apim} --location \"West Europe\"" in message, done.stderr
    assert not deployment_calls(tmp_path)


def test_a_failing_bicep_build_stops_preflight(tmp_path: Path) -> None:
    with_fake(tmp_path, bicep_build_error="main.bicep(12,3) : Error BCP018: Expected the \"}\" character at this location.")
    done, _ = run_deploy(azd_env(tmp_path), "preflight")
    assert done.returncode != 0
    assert "BCP018" in done.stderr and "the Bicep compiler refused infra/main.bicep" in done.stderr, done.stderr
    assert not deployment_calls(tmp_path)
    assert not any(joined(argv).startswith(("provider", "keyvault", "apim")) for argv in az_calls(tmp_path)), "compiled first"


def test_a_missing_bicep_cli_is_installed_the_way_az_does(tmp_path: Path) -> None:
    with_fake(tmp_path, bicep_installed=False)
    done, _ = run_deploy(azd_env(tmp_path), "preflight")
    assert done.returncode == 0, done.stderr
    calls = [joined(argv) for argv in az_calls(tmp_path)]
    assert calls.index("bicep install --only-show-errors") < next(i for i, c in enumerate(calls) if c.startswith("bicep build"))


def test_the_function_key_stage_is_retried(tmp_path: Path) -> None:
    state = with_fake(tmp_path, fail_stage={"functionKey": 2})
    azd_provisioned(tmp_path, state, FLEX_OUTPUTS)
    done, _ = run_deploy(azd_env(tmp_path), "after-provision")
    assert done.returncode == 0, done.stderr
    stages = [parameters["deploymentStage"] for parameters in deployed_parameters(tmp_path)]
    assert stages == ["functionKey", "functionKey", "functionKey", "api"], stages
    assert "attempt 2 of 4" in done.stderr and "attempt 3 of 4" in done.stderr

    # And it gives up, bounded, naming the stage.
    state = with_fake(tmp_path / "again", fail_stage={"functionKey": 9})
    azd_provisioned(tmp_path / "again", state, FLEX_OUTPUTS)
    done, _ = run_deploy(azd_env(tmp_path / "again"), "after-provision")
    assert done.returncode != 0 and "the functionKey stage failed 4 times" in done.stderr, done.stderr
    assert not any(p["deploymentStage"] == "api" for p in deployed_parameters(tmp_path / "again"))


def test_linux_consumption_restarts_the_app_while_its_host_does_not_answer(tmp_path: Path) -> None:
    state = with_fake(tmp_path, keys_list_failures=2)
    azd_provisioned(tmp_path, state, dict(FLEX_OUTPUTS, hostingPlan="Consumption"))
    done, _ = run_deploy(azd_env(tmp_path), "after-provision")
    assert done.returncode == 0, done.stderr
    calls = [joined(argv) for argv in az_calls(tmp_path)]
    restarts = [i for i, call in enumerate(calls) if call.startswith("functionapp restart")]
    syncs = [i for i, call in enumerate(calls) if "/syncfunctiontriggers" in call]
    assert len(restarts) == 3 and len(syncs) == 3, "after the upload, and after each failed look at the host"
    keys = [i for i, call in enumerate(calls) if call.startswith("functionapp keys list")]
    assert len(keys) == 3 and restarts[1] > keys[0] and restarts[2] > keys[1]


def test_the_closing_lines_leave_out_the_firewall_when_an_address_is_let_in(tmp_path: Path) -> None:
    state = with_fake(tmp_path)
    azd_provisioned(tmp_path, state, FLEX_OUTPUTS)
    env = azd_env(tmp_path)
    env["KEYVAULT_ALLOWED_IP_RANGES"] = '["203.0.113.7/32"]'
    done, _ = run_deploy(env, "after-provision")
    assert done.returncode == 0 and "firewall denies" not in done.stderr, done.stderr


# --- The signing mode and the settings that go with it -------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"DPS_ID_SCOPE": "0ne00000A0A"}, "DPS_ID_SCOPE is only used with SIGNING_MODE=enrollment-group"),
        ({"SIGNING_MODE": "hub-policy", "ENROLLMENT_GROUP_KEY_SECRET": "k"}, "ENROLLMENT_GROUP_KEY_SECRET is only used"),
        ({"SIGNING_MODE": "enrollment-group", "IOTHUB_POLICY_NAME": "device"}, "IOTHUB_POLICY_NAME must be unset"),
        ({"SIGNING_MODE": "group"}, "SIGNING_MODE must be hub-policy or enrollment-group"),
        ({"DEVICE_SCOPES": "{not json"}, "DEVICE_SCOPES must be a JSON object, each caller once"),
        ({"DEVICE_SCOPES": '["sensor-1"]'}, "DEVICE_SCOPES must be a JSON object, each caller once"),
        ({"DEVICE_SCOPES": '{"role:A": ["a-*"], "role:A": ["b-*"]}'}, "DEVICE_SCOPES must be a JSON object, each caller once"),
        ({"KEYVAULT_ALLOWED_IP_RANGES": '["203.0.113.7/32", 7]'}, "KEYVAULT_ALLOWED_IP_RANGES must be CIDRs"),
    ],
    ids=["dps-scope-in-hub-policy", "group-secret-in-hub-policy", "policy-in-enrollment-group", "unknown-mode",
         "scopes-not-json", "scopes-not-object", "scopes-key-twice", "ranges-not-strings"],
)
def test_settings_the_handler_would_refuse_are_refused_before_deploying(tmp_path: Path, settings: dict[str, str], named: str) -> None:
    with_fake(tmp_path)
    env = base_env(tmp_path)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", **settings)
    for command in ("all", "publish"):
        done, _ = run_deploy(env, command)
        assert done.returncode != 0 and named in done.stderr, (command, done.stderr)
        assert not deployment_calls(tmp_path), "refused before anything is deployed"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"DEVICE_SCOPES": ""}, "DEVICE_SCOPES is set but empty, which azd refuses as JSON"),
        ({"KEYVAULT_ALLOWED_IP_RANGES": "203.0.113.7/32"}, "KEYVAULT_ALLOWED_IP_RANGES must be a JSON array under azd"),
    ],
    ids=["empty-scopes", "comma-ranges"],
)
def test_values_azd_would_refuse_as_json_stop_its_hooks_first(tmp_path: Path, settings: dict[str, str], named: str) -> None:
    with_fake(tmp_path)
    env = azd_env(tmp_path)
    env.update(settings)
    done, _ = run_deploy(env, "preflight")
    assert done.returncode != 0 and named in done.stderr, done.stderr


@pytest.mark.parametrize("mode", ["hub-policy", "enrollment-group"])
def test_the_deployment_gets_the_mode_and_its_settings(tmp_path: Path, mode: str) -> None:
    """make deploy: the infrastructure stage gets the parameters file filled as azd fills it,
    DEVICE_SCOPES as the object it is (quotes and all), the vault's ranges as an array, the
    region from LOCATION, in the CLI's subscription."""
    state = with_fake(tmp_path)
    # Everything after the infrastructure stage fails: the script stops there.
    state["fail_stage"] = {"functionKey": 99}
    fake_az.install(tmp_path, state)
    env = base_env(tmp_path)
    scopes = '{"role:Fleet.A": ["fleet-a-*"], "3f2504e0-4f89-41d3-9a0c-0305e82c3301": ["sensor-\\"17\\""]}'
    # Rules naming the gateway's identity and its roles: no caller fact forwarded (apimCallerKind none).
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", SIGNING_MODE=mode, DEVICE_SCOPES=scopes,
               KEYVAULT_ALLOWED_IP_RANGES="203.0.113.7/32, 198.51.100.0/24", FUNCTION_KEY_ATTEMPTS="1",
               APIM_CALLER_KIND="none")
    if mode == "enrollment-group":
        env.update(DPS_ID_SCOPE="0ne00000A0A", ENROLLMENT_GROUP_KEY_SECRET="fleet-a-group-key")
    state["outputs"] = dict(FLEX_OUTPUTS)
    fake_az.install(tmp_path, state)
    done, _ = run_deploy(env, "all")
    assert done.returncode != 0 and "the functionKey stage failed 1 times" in done.stderr, done.stderr
    parameters = deployed_parameters(tmp_path)[0]
    assert parameters["deploymentStage"] == "infrastructure"
    assert parameters["location"] == "westeurope"
    assert parameters["signingMode"] == mode
    assert parameters["deviceScopes"] == json.loads(scopes), "DEVICE_SCOPES reaches the template as the object it is"
    assert parameters["keyVaultAllowedIpRanges"] == ["203.0.113.7/32", "198.51.100.0/24"]
    assert parameters["storageSku"] == "", "unset: the template decides by the region's zones"
    assert parameters["apimCallerKind"] == "none"
    if mode == "enrollment-group":
        assert parameters["dpsIdScope"] == "0ne00000A0A"
        assert parameters["enrollmentGroupKeySecretName"] == "fleet-a-group-key"
    else:
        assert parameters["dpsIdScope"] == ""
        assert parameters["iotHubPolicyName"] == "device"
        assert parameters["enrollmentGroupKeySecretName"] == "dps-enrollment-group-key"
    assert_where(tmp_path, SUBSCRIPTION, "rg-test")


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
    with_fake(tmp_path)
    env = base_env(tmp_path)
    for name in CALLER_VARIABLES:
        env.pop(name, None)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", **settings)
    for command in ("all", "publish"):
        done, _ = run_deploy(env, command)
        assert done.returncode != 0 and named in done.stderr, (command, done.stderr)
        assert not deployment_calls(tmp_path), "refused before anything is deployed"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, {"apimCallerKind": "subscription", "apimCallerAudience": "", "apimCallerClientIds": "", "apimClientCertThumbprints": ""}),
        ({"DEVICE_SCOPES": SUBSCRIPTION_SCOPES}, {"apimCallerKind": "subscription", "deviceScopes": json.loads(SUBSCRIPTION_SCOPES)}),
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
def test_the_deployment_gets_the_caller_kind_and_its_lists(tmp_path: Path, settings: dict[str, str], expected: dict[str, object]) -> None:
    state = with_fake(tmp_path)
    # Only the infrastructure stage is looked at: the stages after it fail.
    state["fail_stage"] = {"functionKey": 99}
    state["outputs"] = dict(FLEX_OUTPUTS)
    fake_az.install(tmp_path, state)
    env = base_env(tmp_path)
    for name in CALLER_VARIABLES:
        env.pop(name, None)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", FUNCTION_KEY_ATTEMPTS="1", **settings)
    done, _ = run_deploy(env, "all")
    deployed = deployed_parameters(tmp_path)
    assert deployed, done.stderr
    parameters = deployed[0]
    for name, value in expected.items():
        assert parameters[name] == value, (name, parameters.get(name))


# --- Several hubs (issue 23) ---------------------------------------------------------------------

HUBS = "contoso-eu.azure-devices.net,contoso-us.device.azure-devices.net"
SECRETS = '{"contoso-eu.azure-devices.net": "iothub-eu-policy", "contoso-us.azure-devices.net": "iothub-us-policy"}'


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"IOTHUB_HOSTNAME": "contoso-eu.azure-devices.net", "IOTHUB_HOSTNAMES": HUBS}, "not both"),
        ({}, "IOTHUB_HOSTNAME is required (or IOTHUB_HOSTNAMES for several hubs)"),
        ({"IOTHUB_HOSTNAMES": HUBS}, "IOTHUB_POLICY_KEY_SECRETS is required with several hubs in hub-policy mode"),
        ({"IOTHUB_HOSTNAMES": HUBS, "IOTHUB_POLICY_KEY_SECRETS": "iothub-policy"}, "must be a JSON object, hub -> secret name"),
        ({"IOTHUB_HOSTNAMES": HUBS, "IOTHUB_POLICY_KEY_SECRETS": '{"contoso-eu.azure-devices.net": "iothub-eu-policy"}'},
         "must name exactly the hubs of IOTHUB_HOSTNAMES"),
        ({"IOTHUB_HOSTNAMES": HUBS, "SIGNING_MODE": "enrollment-group", "IOTHUB_POLICY_KEY_SECRETS": SECRETS},
         "IOTHUB_POLICY_KEY_SECRETS is only used with SIGNING_MODE=hub-policy"),
    ],
    ids=["both-hub-settings", "no-hub", "several-hubs-one-secret", "secrets-not-json", "secrets-missing-a-hub",
         "secrets-in-enrollment-group"],
)
def test_hub_settings_that_cannot_work_are_refused_before_deploying(tmp_path: Path, settings: dict[str, str], named: str) -> None:
    with_fake(tmp_path)
    env = base_env(tmp_path)
    env.pop("IOTHUB_HOSTNAME", None)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", **settings)
    done, _ = run_deploy(env, "all")
    assert done.returncode != 0 and named in done.stderr, done.stderr
    assert not deployment_calls(tmp_path), "refused before anything is deployed"


@pytest.mark.parametrize("mode", ["hub-policy", "enrollment-group"])
def test_several_hubs_and_their_secrets_reach_the_deployment(tmp_path: Path, mode: str) -> None:
    state = with_fake(tmp_path)
    state["fail_stage"] = {"functionKey": 99}
    state["outputs"] = dict(FLEX_OUTPUTS)
    fake_az.install(tmp_path, state)
    env = base_env(tmp_path)
    env.pop("IOTHUB_HOSTNAME", None)
    env.update(RESOURCE_GROUP="rg-test", LOCATION="westeurope", SIGNING_MODE=mode, IOTHUB_HOSTNAMES=HUBS,
               FUNCTION_KEY_ATTEMPTS="1")
    if mode == "hub-policy":
        env["IOTHUB_POLICY_KEY_SECRETS"] = SECRETS
    run_deploy(env, "all")
    deployed = deployed_parameters(tmp_path)
    assert deployed, "the infrastructure stage ran"
    parameters = deployed[0]
    assert parameters["iotHubHostnames"] == HUBS and parameters["iotHubHostName"] == ""
    if mode == "hub-policy":
        assert parameters["iotHubKeySecretNames"] == json.loads(SECRETS), "an object, as azd parses it"
    else:
        assert "iotHubKeySecretNames" not in parameters, "unset: left out, as azd leaves it out"
