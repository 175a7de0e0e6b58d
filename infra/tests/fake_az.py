"""A stand-in for the Azure CLI (`az`) and `curl`, for driving infra/deploy.sh and infra/verify.py
without Azure: it records every call it gets (argv and the working directory's view of it) and
answers from a JSON state file shaped like Azure Resource Manager's own answers, applying the
call's `--query` with JMESPath (the CLI's query language, the `jmespath` package the CLI itself
uses) and writing `-o tsv` / `-o json` / `-o none` the way the CLI's output layer (knack) does. So
the scripts' queries run against realistic data, and a query that would read the wrong shape in
Azure reads it wrong here too.

`install(directory, state)` writes `az` and `curl` into `directory` (to put first on PATH) and the
state next to them; `calls(directory)` returns what was called, in order. The state's keys are
documented in `default_state`."""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path
from typing import Any

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"


def default_state() -> dict[str, Any]:
    return {
        # az account show: the CLI's current subscription.
        "cli_subscription": SUBSCRIPTION,
        # Every call sleeps forever (a CLI that never answers).
        "hang": False,
        # az provider show: every namespace's registrationState; register fails when set.
        "provider_state": "Registered",
        "provider_register_fails": False,
        # az bicep version / build.
        "bicep_installed": True,
        "bicep_build_error": None,
        # az group show: existing groups by name (lower case) -> id.
        "groups": {},
        # az keyvault list-deleted / az apim deletedservice list: ARM's DeletedVault and
        # DeletedServiceContract shapes.
        "deleted_vaults": [],
        "deleted_apim": [],
        # az deployment group create: how many times each stage fails before it succeeds.
        "fail_stage": {},
        # az deployment group show/list: the outputs of the deployment (name -> value); the
        # deployment azd made, listed by `az deployment group list`.
        "outputs": {},
        "azd_deployment": None,
        # az functionapp keys list: how many calls fail before one succeeds.
        "keys_list_failures": 0,
        # az rest: answers by method and URI path (without the query string); a missing entry
        # answers {} (or fails when `rest_strict` is set).
        "rest": {},
        "rest_strict": False,
        # az monitor app-insights query: the rows (kind, invocation_id, operation_id) of each call
        # in turn, the last repeated; "{trace}" stands for the trace id the query names. An
        # error instead, when set (the extension missing, no read access).
        "app_insights_rows": [[]],
        "app_insights_error": None,
        "app_insights_calls": 0,
        # curl (the Flex one-deploy API): the deployment id /api/publish returns.
        "publish_id": "8f7c2a41-0d1e-4b5f-9a6b-3c2d1e0f9a8b",
        # az iot hub show: hubs by name -> IotHubDescription properties; az iot hub
        # device-identity create/delete: the device ids registered, by hub name.
        "iot_hubs": {},
        "iot_devices": {},
    }


# Layers `deployed_site` can switch off in the configuration it answers with (infra/verify.py's
# layer names).
SWITCHES = ("access restriction", "App Service Authentication", "function key", "ALLOWED_IPS", "bearer")
FUNCTIONS = ("GetSasToken", "GetModuleSasToken", "GetRegistrationSasToken", "getSASTokenByDeviceID")


def deployed_site(subscription: str, group: str, app: str, apim_principal: str, apim_addresses: list[str],
                  ip_layer: bool, off: tuple[str, ...] = ()) -> dict[str, Any]:
    """`rest` answers (method and path -> body) for the Function App infra/main.bicep deploys, in
    the shapes ARM returns them (SiteConfigResource, SiteAuthSettingsV2, StringDictionary,
    FunctionEnvelope collection), with the layers named in `off` switched off."""
    unknown = set(off) - set(SWITCHES)
    assert not unknown, f"cannot switch off {unknown}"
    site = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Web/sites/{app}"
    restricted = ip_layer and "access restriction" not in off
    rules = [{"ipAddress": f"{a}/32", "action": "Allow", "tag": "Default", "priority": 100 + i, "name": f"apim-{i}",
              "description": "API Management outbound address"} for i, a in enumerate(apim_addresses)] if restricted else []
    rules.append({"ipAddress": "Any", "action": "Deny" if restricted else "Allow", "priority": 2147483647,
                  "name": "Deny all" if restricted else "Allow all",
                  "description": "Deny all access" if restricted else "Allow all access"})
    web = {"id": f"{site}/config/web", "name": "web", "type": "Microsoft.Web/sites/config", "properties": {
        "ipSecurityRestrictions": rules,
        "ipSecurityRestrictionsDefaultAction": "Deny" if restricted else "Allow",
        "scmIpSecurityRestrictions": [{"ipAddress": "Any", "action": "Deny", "priority": 2147483647, "name": "Deny all"}],
        "scmIpSecurityRestrictionsDefaultAction": "Deny",
        "scmIpSecurityRestrictionsUseMain": False,
        "minTlsVersion": "1.2", "ftpsState": "Disabled", "http20Enabled": True}}
    auth = {"id": f"{site}/config/authsettingsV2", "name": "authsettingsV2", "properties": {
        "platform": {"enabled": "App Service Authentication" not in off, "runtimeVersion": "~1"},
        "globalValidation": {"requireAuthentication": True, "unauthenticatedClientAction": "Return401"},
        "identityProviders": {"azureActiveDirectory": {
            "enabled": True,
            "registration": {"clientId": "00000000-0000-0000-0000-000000000001", "openIdIssuer": "https://sts.windows.net/tenant/"},
            "validation": {"allowedAudiences": ["api://00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000001"],
                           "defaultAuthorizationPolicy": {"allowedPrincipals": {"identities": [apim_principal]}}}}},
        "login": {"tokenStore": {"enabled": False}},
        "httpSettings": {"requireHttps": True, "forwardProxy": {"convention": "NoProxy"}}}}
    settings = {
        "AzureWebJobsStorage__accountName": "stiothubsas", "AzureWebJobsStorage__credential": "managedidentity",
        "ALLOWED_IPS": ",".join(apim_addresses) if ip_layer and "ALLOWED_IPS" not in off else "*",
        "XFF_DEPTH": "1", "IOTHUB_HOSTNAME": "hub.azure-devices.net", "SIGNING_MODE": "hub-policy",
        "KEYVAULT_URI": "https://kv.vault.azure.net/", "AUTH_TENANT_ID": "tenant",
        "AUTH_AUDIENCE": "api://00000000-0000-0000-0000-000000000001,00000000-0000-0000-0000-000000000001",
        "AUTH_ALLOWED_CALLERS": apim_principal, "AUTH_REQUIRED_ROLE": "",
    }
    if "bearer" in off:
        del settings["AUTH_ALLOWED_CALLERS"]
    level = "anonymous" if "function key" in off else "function"
    functions = {"value": [{"id": f"{site}/functions/{name}", "name": f"{app}/{name}", "type": "Microsoft.Web/sites/functions",
                            "properties": {"name": name, "language": "custom", "isDisabled": False, "config": {"bindings": [
                                {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": level, "methods": ["get"]},
                                {"type": "http", "direction": "out", "name": "res"}]}}} for name in FUNCTIONS]}
    return {
        f"get {site}/config/web": web,
        f"get {site}/config/authsettingsV2": auth,
        f"post {site}/config/appsettings/list": {"id": f"{site}/config/appsettings", "name": "appsettings", "properties": settings},
        f"get {site}/functions": functions,
    }


def install(directory: Path, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fake-az-state.json").write_text(json.dumps(state))
    for name in ("az", "curl"):
        tool = directory / name
        tool.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                        f"import fake_az\nsys.exit(fake_az.main({name!r}, sys.argv[1:]))\n")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def calls(directory: Path) -> list[dict[str, Any]]:
    log = directory / "fake-az-calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def option(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg in names and index + 1 < len(argv):
            return argv[index + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def options(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name and i + 1 < len(argv)]


class Fail(Exception):
    """The call fails: message to stderr, exit 1."""


def tsv(value: Any) -> str:
    """knack's TsvOutput: each item of a top-level list is a row; a row that is a list or an
    object is its values joined by tabs; None is empty; other scalars are str()."""
    def cell(item: Any) -> str:
        if item is None:
            return ""
        if isinstance(item, list):
            return str(len(item))
        if isinstance(item, dict):
            return ""
        return item if isinstance(item, str) else str(item)

    def row(item: Any) -> str:
        if isinstance(item, dict):
            return "\t".join(cell(v) for v in item.values())
        if isinstance(item, list):
            return "\t".join(cell(v) for v in item)
        return cell(item)

    rows = value if isinstance(value, list) else [value]
    return "".join(row(item) + "\n" for item in rows)


class Az:
    def __init__(self, directory: Path, state: dict[str, Any]) -> None:
        self.directory = directory
        self.state = state

    def save(self) -> None:
        (self.directory / "fake-az-state.json").write_text(json.dumps(self.state))

    def answer(self, argv: list[str]) -> Any:
        words = [arg for arg in argv if not arg.startswith("-")]
        command = " ".join(words[:3])
        state = self.state
        if command.startswith("account show"):
            return {"id": state["cli_subscription"], "tenantId": "tenant"}
        if command.startswith("account get-access-token"):
            return {"accessToken": "fake-management-token", "tokenType": "Bearer"}
        if command.startswith("ad signed-in-user"):
            return {"id": "99999999-0000-0000-0000-000000000001"}
        if command.startswith("bicep version"):
            if not state["bicep_installed"]:
                raise Fail("Bicep CLI not found. Install it now by running \"az bicep install\".")
            return "Bicep CLI version 0.39.26"
        if command.startswith("bicep install"):
            state["bicep_installed"] = True
            self.save()
            return None
        if command.startswith("bicep build"):
            if state["bicep_build_error"]:
                raise Fail(state["bicep_build_error"])
            return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"}
        if command.startswith("provider show"):
            return {"namespace": option(argv, "--namespace", "-n"), "registrationState": state["provider_state"]}
        if command.startswith("provider register"):
            if state["provider_register_fails"]:
                raise Fail("(AuthorizationFailed) does not have authorization to perform action "
                           "'Microsoft.Resources/subscriptions/providers/register/action'")
            return None
        if command.startswith("group show"):
            name = (option(argv, "--name", "-n") or "").lower()
            if name not in state["groups"]:
                raise Fail(f"(ResourceGroupNotFound) Resource group '{name}' could not be found.")
            return {"id": state["groups"][name], "name": name}
        if command.startswith("group create"):
            name = option(argv, "--name", "-n") or ""
            subscription = option(argv, "--subscription") or state["cli_subscription"]
            state["groups"][name.lower()] = f"/subscriptions/{subscription}/resourceGroups/{name}"
            self.save()
            return None
        if command.startswith("keyvault list-deleted"):
            return state["deleted_vaults"]
        if command.startswith("apim deletedservice list"):
            return state["deleted_apim"]
        if command.startswith("deployment group create"):
            stage = "?"
            for spec in options(argv, "--parameters"):
                if spec.startswith("@"):
                    parameters = json.loads(Path(spec[1:]).read_text())["parameters"]
                    stage = parameters.get("deploymentStage", {}).get("value", stage)
                    (self.directory / f"parameters-{len(calls(self.directory))}.json").write_text(json.dumps(parameters))
            failures = state["fail_stage"].get(stage, 0)
            if failures:
                state["fail_stage"][stage] = failures - 1
                self.save()
                raise Fail(f"(DeploymentFailed) stage {stage}: Encountered an error (ServiceUnavailable) from host runtime.")
            return None
        if command.startswith("deployment group show"):
            name = option(argv, "--name", "-n")
            if name != "iothub-sas" and name != (state["azd_deployment"] or {}).get("name"):
                raise Fail(f"(DeploymentNotFound) Deployment '{name}' could not be found.")
            return {"name": name, "properties": {"provisioningState": "Succeeded",
                                                 "outputs": {k: {"type": "String", "value": v} for k, v in state["outputs"].items()}}}
        if command.startswith("deployment group list"):
            deployment = state["azd_deployment"]
            if not deployment:
                return []
            return [{"name": deployment["name"], "properties": {
                "provisioningState": "Succeeded", "timestamp": "2026-12-05T10:00:00Z",
                "outputs": {k: {"type": "String", "value": v} for k, v in state["outputs"].items()}}}]
        if command.startswith("functionapp show"):
            app = option(argv, "--name", "-n")
            return {"name": app, "hostNameSslStates": [
                {"name": f"{app}.azurewebsites.net", "hostType": "Standard"},
                {"name": f"{app}.scm.azurewebsites.net", "hostType": "Repository"}]}
        if command.startswith("functionapp keys list"):
            if state["keys_list_failures"]:
                state["keys_list_failures"] -= 1
                self.save()
                raise Fail("Encountered an error (ServiceUnavailable) from host runtime.")
            return {"functionKeys": {"default": "fake-function-key"}, "masterKey": "fake-master"}
        if command.startswith(("functionapp restart", "storage blob upload")):
            return None
        if command.startswith("keyvault show"):
            group = option(argv, "--resource-group", "-g") or "?"
            subscription = option(argv, "--subscription") or state["cli_subscription"]
            return {"id": f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.KeyVault/vaults/{option(argv, '--name', '-n')}"}
        if command.startswith("role assignment list"):
            return [{"principalId": option(argv, "--assignee"), "scope": option(argv, "--scope")}]
        if command.startswith("apim show"):
            group = option(argv, "--resource-group", "-g") or "?"
            subscription = option(argv, "--subscription") or state["cli_subscription"]
            return {"id": f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.ApiManagement/service/{option(argv, '--name', '-n')}"}
        if command.startswith("iot hub show"):
            name = option(argv, "--name", "-n") or ""
            if name not in state["iot_hubs"]:
                raise Fail(f"(ResourceNotFound) IotHub '{name}' could not be found.")
            return {"name": name, "properties": state["iot_hubs"][name]}
        if command.startswith("iot hub device-identity"):
            hub = option(argv, "--hub-name", "-n") or ""
            device = option(argv, "--device-id", "-d") or ""
            registered = state["iot_devices"].setdefault(hub, [])
            if words[3:4] == ["create"]:
                if device in registered:
                    raise Fail(f"(DeviceAlreadyExists) A device with ID '{device}' is already registered.")
                registered.append(device)
                self.save()
                return {"deviceId": device, "status": "enabled"}
            if words[3:4] == ["delete"]:
                if device not in registered:
                    raise Fail(f"(DeviceNotFound) Device {device} not registered")
                registered.remove(device)
                self.save()
                return None
        if command.startswith("monitor app-insights query"):
            if state["app_insights_error"]:
                raise Fail(state["app_insights_error"])
            query = option(argv, "--analytics-query") or ""
            named = re.search(r'let t = "([0-9a-f]{32})"', query)
            if not named:
                raise Fail("fake az: the query names no trace id")
            answers = state["app_insights_rows"]
            rows = answers[min(state["app_insights_calls"], len(answers) - 1)]
            state["app_insights_calls"] += 1
            self.save()
            rows = json.loads(json.dumps(rows).replace("{trace}", named.group(1)))
            # The Application Insights query API's answer, as the CLI prints it.
            return {"tables": [{"name": "PrimaryResult", "columns": [
                {"name": "kind", "type": "string"}, {"name": "invocation_id", "type": "string"},
                {"name": "operation_id", "type": "string"}], "rows": rows}]}
        if command.startswith("rest"):
            method = (option(argv, "--method", "-m") or "get").lower()
            uri = (option(argv, "--uri", "--url", "-u") or "").split("?")[0].replace("https://management.azure.com", "")
            key = f"{method} {uri}"
            if key in state["rest"]:
                answer = state["rest"][key]
                if isinstance(answer, dict) and answer.get("fail"):
                    raise Fail(answer["fail"])
                return answer
            if uri.endswith("/namedValues/iothub-sas-function-key") and method == "get":
                return {"properties": {"keyVault": {"lastStatus": {"code": "Success"}}}}
            if state["rest_strict"]:
                raise Fail(f"(ResourceNotFound) {key}")
            return {}
        raise Fail(f"fake az: no answer for `az {' '.join(argv)}`")

    def run(self, argv: list[str]) -> int:
        try:
            result = self.answer(argv)
        except Fail as failure:
            print(f"ERROR: {failure}", file=sys.stderr)
            return 1
        query = option(argv, "--query")
        if query:
            import jmespath

            result = jmespath.search(query, result)
        output = option(argv, "--output", "-o") or "json"
        if output == "none" or (result is None and output == "json" and not query):
            return 0
        if output == "tsv":
            sys.stdout.write(tsv(result))
        else:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0


def curl(directory: Path, state: dict[str, Any], argv: list[str]) -> int:
    """The Flex one-deploy API: POST .../api/publish answers the quoted deployment id, GET
    .../api/deployments/<id> answers status 4 (success)."""
    url = next((arg for arg in argv if arg.startswith("https://")), "")
    if "/api/publish" in url:
        sys.stdout.write(json.dumps(state["publish_id"]))
        return 0
    if "/api/deployments/" in url:
        sys.stdout.write(json.dumps({"id": state["publish_id"], "status": 4, "status_text": ""}))
        return 0
    print(f"fake curl: no answer for {url}", file=sys.stderr)
    return 22


def main(tool: str, argv: list[str]) -> int:
    # The directory `install` wrote this tool (and its state) into.
    directory = Path(sys.argv[0]).resolve().parent
    state = json.loads((directory / "fake-az-state.json").read_text())
    with (directory / "fake-az-calls.jsonl").open("a") as log:
        log.write(json.dumps({"tool": tool, "argv": argv}) + "\n")
    if state.get("hang"):
        import time

        time.sleep(1000)
    if tool == "curl":
        return curl(directory, state, argv)
    return Az(directory, state).run(argv)


def cli(arguments: list[str]) -> int:
    """`fake_az.py install DIRECTORY SCENARIO`: installs the fake into DIRECTORY with the default
    state updated by SCENARIO (JSON: {"state": {...}, "site": {deployed_site's arguments}}), for
    tests outside Python (tests/api/deployment_verify.rs)."""
    if len(arguments) != 3 or arguments[0] != "install":
        print("usage: fake_az.py install DIRECTORY SCENARIO_JSON", file=sys.stderr)
        return 2
    scenario = json.loads(arguments[2])
    state = default_state()
    state.update(scenario.get("state", {}))
    if "site" in scenario:
        site = dict(scenario["site"])
        site["off"] = tuple(site.get("off", ()))
        state["rest"] = {**state["rest"], **deployed_site(**site)}
    install(Path(arguments[1]), state)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
