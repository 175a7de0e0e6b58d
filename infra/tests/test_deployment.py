"""What issue 12 fixed in the templates, each checked so that the old template fails it:

- Flex Consumption is the default plan (Linux Consumption a parameter), with the runtime, memory
  sizes and instance counts Flex accepts for the `custom` runtime;
- API Management: no SKU the resource's API version does not have (PremiumV2 with 2024-05-01),
  the back end is a `backends` entity the policy selects, required query parameters stay query
  parameters on import, and the import gets the generated description;
- the first deployment succeeds: the Key Vault-backed named value is never created in the same
  deployment as the role assignment that lets API Management read its secret;
- redeploying after deleting the resource group: a name salt changes every generated name;
- the outputs `make verify` and infra/deploy.sh read exist (the signing mode among them: in
  enrollment-group mode a device token has no skn).

Sources are cited next to each table; infra/README.md lists them too."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import INFRA, MAIN, REPO, bicep_files, evaluate, parse

FUNCTION_APP = INFRA / "modules" / "function-app.bicep"
APIM = INFRA / "modules" / "apim.bicep"
APIM_API = INFRA / "modules" / "apim-api.bicep"
FUNCTION_KEY = INFRA / "modules" / "function-key.bicep"
POLICIES = sorted((INFRA / "policies").glob("*.xml"))

# SKU names of Microsoft.ApiManagement/service by API version, from bicep-types-az
# (github.com/Azure/bicep-types-az at 1f896de2db966ad91e8f7d7d981e11d32e4f5d8d,
# generated/apimanagement/microsoft.apimanagement/<version>/types.md, ApiManagementServiceSkuProperties).
APIM_SKUS = {
    "2024-05-01": {"Basic", "BasicV2", "Consumption", "Developer", "Isolated", "Premium", "Standard", "StandardV2"},
    "2024-06-01-preview": {"Basic", "BasicV2", "Consumption", "Developer", "Isolated", "Premium", "Standard", "StandardV2"},
    "2024-10-01-preview": {"Basic", "BasicV2", "Consumption", "Developer", "Isolated", "Premium", "Standard", "StandardV2"},
    "2025-03-01-preview": {"Basic", "BasicV2", "Consumption", "Developer", "Isolated", "Premium", "PremiumV2", "Standard", "StandardV2"},
    "2025-09-01-preview": {"Basic", "BasicV2", "Consumption", "Developer", "Isolated", "Premium", "PremiumV2", "Standard", "StandardV2"},
}

# What Flex Consumption accepts for the custom handler runtime: the functionAppStacks entry for
# `custom`, SKU FC1 (github.com/Azure/azure-powershell, src/Functions/Functions.Autorest/custom/
# FunctionsStackFlexData/EastAsia/custom.json at cf675e13fc739b0b8adda827031ba75d50253a5b:
# functionAppConfigProperties.runtime {name: custom, version: "1.0"}, instanceMemoryMB 512/2048/4096,
# maximumInstanceCount 40..1000); `custom` is in the FunctionsRuntime name enum of
# Microsoft.Web/sites@2024-04-01 (bicep-types-az, generated/web/microsoft.web/2024-04-01/types.md).
FLEX_CUSTOM_RUNTIME = {"name": "custom", "version": "1.0"}
FLEX_MEMORY_MB = {512, 2048, 4096}
FLEX_INSTANCES = (40, 1000)


def decorator(spec: dict[str, Any], kind: str) -> Any:
    for item in spec.get("decorators", []):
        if item.get("type") == kind:
            return item.get("argument")
    return None


def allowed(path: Path, param: str) -> list[Any]:
    values = decorator(parse(path)["parameters"][param], "allowed")
    assert values, f"{path.name}: parameter {param} needs @allowed"
    return values


# --- Flex Consumption -------------------------------------------------------------------------


def test_flex_consumption_is_the_default_plan() -> None:
    main = parse(MAIN)["parameters"]["hostingPlan"]
    assert main["default"] == "FlexConsumption", "main.bicep: hostingPlan defaults to FlexConsumption"
    assert set(allowed(MAIN, "hostingPlan")) == {"FlexConsumption", "Consumption"}, (
        "Linux Consumption stays available as a parameter until it retires (30 Sep 2028)"
    )
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["hostingPlan"]["value"] == "${HOSTING_PLAN=FlexConsumption}", (
        "main.parameters.json (read by azd and infra/deploy.sh) defaults to FlexConsumption"
    )


def test_flex_runtime_and_scale_are_what_flex_accepts_for_custom() -> None:
    tree = parse(FUNCTION_APP)
    flex = tree["variables"]["flexConfig"]["value"]
    assert flex["runtime"] == FLEX_CUSTOM_RUNTIME
    memory = tree["parameters"]["flexInstanceMemoryMB"]
    assert set(decorator(memory, "allowed")) <= FLEX_MEMORY_MB and memory["default"] in FLEX_MEMORY_MB
    instances = tree["parameters"]["flexMaximumInstanceCount"]
    low, high = decorator(instances, "min_value"), decorator(instances, "max_value")
    assert FLEX_INSTANCES[0] <= low <= instances["default"] <= high <= FLEX_INSTANCES[1]


# --- API Management ---------------------------------------------------------------------------


def apim_service_versions() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in bicep_files():
        for resource in (parse(path).get("resources") or {}).values():
            if resource["type"] == "Microsoft.ApiManagement/service" and not resource.get("existing"):
                found.append((path, resource["api_version"], resource))
    return found


def test_every_offered_apim_sku_exists_in_the_api_version_used() -> None:
    services = apim_service_versions()
    assert services, "a Microsoft.ApiManagement/service resource"
    for path, version, resource in services:
        assert version in APIM_SKUS, f"{path.name}: API version {version} not in the table (add it from bicep-types-az)"
        sku = resource["config"]["sku"]["name"]
        offered = set(allowed(path, sku))
        missing = offered - APIM_SKUS[version]
        assert not missing, f"{path.name}: Microsoft.ApiManagement/service@{version} has no SKU {sorted(missing)}"
    assert set(allowed(MAIN, "apimSku")) <= set(allowed(APIM, "sku"))


def test_the_function_app_is_a_backend_entity_the_policy_selects() -> None:
    tree = parse(APIM_API)
    backends = [r for r in tree["resources"].values() if r["type"] == "Microsoft.ApiManagement/service/backends"]
    assert len(backends) == 1, "one backends resource for the Function App"
    backend = backends[0]["config"]
    name = backend["name"]
    name = tree["variables"][name]["value"] if name in tree.get("variables", {}) else name
    props = backend["properties"]
    assert props["url"] == "https://${functionHostName}/api", "absolute https URL with the /api route prefix"
    assert props["protocol"] == "http" and props.get("type", "Single") == "Single"
    assert props["tls"] == {"validateCertificateChain": True, "validateCertificateName": True}
    api = tree["resources"]["api"]["config"]["properties"]
    assert "serviceUrl" not in api, "the back end comes from the backends entity only, not a serviceUrl"
    for path in POLICIES:
        text = path.read_text()
        assert re.findall(r'<set-backend-service\s+backend-id="([^"]+)"\s*/>', text) == [name], (
            f"{path.name}: <set-backend-service backend-id=\"{name}\" /> exactly once"
        )


def test_required_query_parameters_stay_query_parameters_on_import() -> None:
    api = parse(APIM_API)["resources"]["api"]["config"]["properties"]
    assert api.get("translateRequiredQueryParameters") == "query", (
        "without it the import turns the legacy route's required deviceid into a URL template parameter"
    )


def test_the_api_imports_the_generated_description() -> None:
    api = parse(APIM_API)["resources"]["api"]["config"]["properties"]
    assert api["format"] == "openapi+json"
    loaded = api["value"]["function"]
    assert loaded["type"] == "load_text_content"
    assert loaded["parameters"]["file_path"] == "../../openapi/sas-token.apim.json"


def function_routes() -> set[str]:
    routes = set()
    for folder in (REPO / "function-apps").iterdir():
        function = json.loads((folder / "function.json").read_text())
        routes.add("/" + function["bindings"][0]["route"])
    return routes


def test_every_function_route_is_an_operation_under_the_api_scope_policy() -> None:
    """API Management gets one operation per function route (device, module, DPS registration,
    the seed's query route) from the import copy, and every operation runs the one API-scope
    policy: subscription check, rate limit, repeated-key refusal, credentials, back end."""
    document = json.loads((REPO / "openapi" / "sas-token.apim.json").read_text())
    assert set(document["paths"]) == function_routes(), "the import copy lacks a function route"
    operation_ids = [item["get"]["operationId"] for item in document["paths"].values()]
    assert len(set(operation_ids)) == len(operation_ids) == len(function_routes()), operation_ids
    for path, item in document["paths"].items():
        assert set(item) <= {"get", "parameters"}, f"{path}: GET only (the function.json methods)"
        template = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert template == set(re.findall(r"\{([^}]+)\}", path)), f"{path}: a template parameter per {{segment}}"
    tree = parse(APIM_API)
    kinds = [r["type"] for r in tree["resources"].values()]
    assert kinds.count("Microsoft.ApiManagement/service/apis/policies") == 1
    assert not [k for k in kinds if k.startswith("Microsoft.ApiManagement/service/apis/operations")], (
        "no operation-scope resources: an operation policy could replace the API-scope one"
    )
    policy = tree["resources"]["apiPolicy"]["config"]
    assert policy["parent"] == "api" and policy["name"] == "policy"


# --- First deployment: the named value after its role assignment has applied --------------------


def module_deployed(tree: dict[str, Any], symbol: str, bindings: dict[str, Any]) -> bool:
    config = tree["modules"][symbol]["config"]
    if "condition" not in config:
        return True
    return bool(evaluate(config["condition"], tree, bindings))


def test_the_named_value_is_never_created_with_its_role_assignment() -> None:
    tree = parse(MAIN)
    # Where the two resources live.
    key_module = parse(FUNCTION_KEY)["resources"]
    assert any(r["type"] == "Microsoft.Authorization/roleAssignments" for r in key_module.values())
    api_module = parse(APIM_API)["resources"]
    assert api_module["functionKey"]["config"]["properties"]["keyVault"]["secretIdentifier"] == "functionKeySecretUri"
    assert "deploymentStage" in tree["parameters"], (
        "a stage parameter must let one deployment create the role assignment and a later one the named value"
    )
    stages = allowed(MAIN, "deploymentStage")
    deployed = {
        stage: (
            module_deployed(tree, "functionKey", {"deploymentStage": stage}),
            module_deployed(tree, "apimApi", {"deploymentStage": stage}),
        )
        for stage in stages
    }
    assert all(key for key, api in deployed.values() if api), "the API needs the function key"
    assert any(key and not api for key, api in deployed.values()), (
        "a stage must create the secret and API Management's role assignment without the named value, "
        f"so that a later deployment creates the named value once the assignment applies: {deployed}"
    )
    api_module_config = tree["modules"]["apimApi"]["config"]["config"]
    assert "functionKey" in api_module_config.get("dependsOn", []), "apimApi explicitly after functionKey"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["deploymentStage"]["value"] == "${DEPLOYMENT_STAGE=infrastructure}", (
        "azd provision (and an unstaged deployment of the parameters file) stops before the function key"
    )


# --- Redeploying after deleting the resource group --------------------------------------------


def mentions(node: Any, name: str) -> bool:
    if isinstance(node, str):
        return node == name or f"${{{name}}}" in node
    if isinstance(node, dict):
        return any(mentions(v, name) for v in node.values())
    if isinstance(node, list):
        return any(mentions(v, name) for v in node)
    return False


def test_a_name_salt_changes_every_generated_name() -> None:
    tree = parse(MAIN)
    assert "nameSalt" in tree["parameters"] and tree["parameters"]["nameSalt"]["default"] == ""
    assert mentions(tree["variables"]["suffix"]["value"], "nameSalt"), "the unique suffix must depend on nameSalt"
    # Key Vault and API Management, the two that stay soft-deleted under their names, take the suffix.
    for symbol in ("keyVault", "apim", "functionApp", "storage"):
        params = tree["modules"][symbol]["config"]["params"]
        assert mentions(params["name"], "suffix"), f"module {symbol}: its name must carry the salted suffix"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["nameSalt"]["value"] == "${NAME_SALT=}"


# --- What make verify and deploy.sh read --------------------------------------------------------


def test_outputs_read_by_the_scripts_exist() -> None:
    outputs = set(parse(MAIN)["outputs"].keys())
    deploy = (INFRA / "deploy.sh").read_text()
    read = set(re.findall(r'\$\(output ([A-Za-z]+)\)', deploy))
    verify = (INFRA / "verify.py").read_text()
    # deployment.output("name"), and the lazily read output(deployment, "name").
    from_verify = set(re.findall(r'output\((?:deployment, )?["\']([A-Za-z]+)["\']\)', verify))
    assert {"apiUrl", "ipLayer", "iotHubHostName", "iotHubPolicyName", "signingMode", "dpsIdScope"} <= from_verify, (
        f"verify.py reads what it checks tokens against, the signing mode among them: {from_verify}"
    )
    assert {"signingMode", "signingKeySecretName"} <= read, "deploy.sh names the key to store for the mode"
    read |= from_verify
    assert read, "the scripts read deployment outputs"
    missing = read - outputs
    assert not missing, f"outputs the scripts read but main.bicep does not declare: {sorted(missing)}"
