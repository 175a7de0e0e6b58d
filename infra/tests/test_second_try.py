"""What the second outside review found in the template (issue 19), each checked so that the
template before the fix fails it. The script's side (azd's variables, the preflight's compile and
soft-delete checks, the retried function-key stage, trigger syncs) is driven with a fake Azure CLI
in test_deploy_script.py, make verify's configuration reading in test_verify_configuration.py.

- `azd up` gets past its first hook: azd asks for, and stores, AZURE_LOCATION only for a
  parameter mapped to ${AZURE_LOCATION} in main.parameters.json that has no default in the
  template (azure-dev bicep_provider.go ensureParameters: "If this parameter has a default, then
  there is no need for us to configure it"; prompt.go stores it with env.SetLocation);
- regions without availability zones: the storage SKU follows the region (pickZones), or a
  parameter;
- the deployer's Blob Data Contributor role only where it is used (Linux Consumption);
- the SCM site closed on both plans (deploy.sh opens it on Flex for an upload);
- no extension bundle for HTTP-only functions;
- azure.yaml says why the package goes through hooks rather than `language: custom`."""

from __future__ import annotations

import json
from typing import Any

import yaml

from conftest import INFRA, MAIN, REPO, parse

FUNCTION_APP = INFRA / "modules" / "function-app.bicep"
STORAGE = INFRA / "modules" / "storage.bicep"


def parameters_file() -> dict[str, Any]:
    return json.loads((INFRA / "main.parameters.json").read_text())["parameters"]


def allowed(spec: dict[str, Any]) -> list[Any] | None:
    return next((d["argument"] for d in spec.get("decorators", []) if d["type"] == "allowed"), None)


def test_location_is_azds_location_parameter() -> None:
    location = parse(MAIN)["parameters"]["location"]
    assert location.get("default") is None, "with a default azd never asks for the region, nor stores AZURE_LOCATION"
    assert parameters_file()["location"]["value"] == "${AZURE_LOCATION}"


def test_the_storage_sku_follows_the_regions_zones() -> None:
    tree = parse(MAIN)
    sku = tree["parameters"]["storageSku"]
    assert sku["default"] == ""
    assert set(allowed(sku)) == {"", *allowed(parse(STORAGE)["parameters"]["skuName"])}
    assert parameters_file()["storageSku"]["value"] == "${STORAGE_SKU=}"
    zones = tree["variables"]["regionHasZones"]["value"]
    call = zones["operator"]["operands"]["bool_value"]["function"]["parameters"]["item_to_test"]["function"]
    assert call["type"] == "pick_zones"
    assert (call["parameters"]["provider_namespace"], call["parameters"]["resource_type"], call["parameters"]["location"]) == (
        "Microsoft.Storage", "storageAccounts", "location")
    chosen = tree["variables"]["storageSkuName"]["value"]["operator"]["operands"]
    assert chosen["condition"]["function"]["parameters"]["item_to_test"] == "storageSku"
    by_zones = chosen["true_value"]["operator"]["operands"]
    assert (by_zones["condition"], by_zones["true_value"], by_zones["false_value"]) == ("regionHasZones", "Standard_ZRS", "Standard_LRS")
    assert tree["modules"]["storage"]["config"]["params"]["skuName"] == "storageSkuName", "main.bicep passes it to the account"


def test_the_deployer_gets_blob_data_contributor_only_on_linux_consumption() -> None:
    passed = parse(MAIN)["modules"]["storage"]["config"]["params"]["deployerPrincipalId"]
    operands = passed["operator"]["operands"]
    assert (operands["condition"], operands["true_value"], operands["false_value"]) == ("isFlex", "", "deployerPrincipalId"), (
        "Flex deploys through the SCM site with the app's identity: the deployer's role would be unused"
    )
    role = parse(STORAGE)["resources"]["deployerCanUpload"]["config"]
    assert "condition" in role, "an empty principal means no assignment"


def test_the_scm_site_is_closed_on_both_plans() -> None:
    site = parse(FUNCTION_APP)["resources"]["site"]["config"]["properties"]["siteConfig"]
    assert site["scmIpSecurityRestrictionsDefaultAction"] == "Deny"
    assert site["scmIpSecurityRestrictionsUseMain"] is False
    assert "scmIpSecurityRestrictions" not in site, "no standing allow rule: deploy.sh opens it for an upload only"
    deploy = (INFRA / "deploy.sh").read_text()
    flex = deploy[deploy.index("deploy_flex() {"):]
    flex = flex[: flex.index("\n}\n")]
    assert flex.index("scm_access \"$app\" Allow") < flex.index("/api/publish") < flex.index("close_scm")
    assert "trap close_scm EXIT" in deploy, "closed again however the script ends"


def test_host_json_has_no_extension_bundle_for_http_only_functions() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert "extensionBundle" not in host
    for function in sorted((REPO / "function-apps").glob("*/function.json")):
        kinds = {binding["type"] for binding in json.loads(function.read_text())["bindings"]}
        assert kinds == {"httpTrigger", "http"}, f"{function.parent.name}: {kinds} needs an extension (bundle)"


def test_azure_yaml_says_where_and_why_hooks() -> None:
    text = (REPO / "azure.yaml").read_text()
    header = text[: text.index("\nname:")]
    for needed in ("AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "DEVICE_SCOPES",
                   "language: custom", "#5771", "soft-deleted"):
        assert needed in header, f"azure.yaml's header: {needed}"
    assert "cannot go through azd" not in header
    assert yaml.safe_load(text)["hooks"]["preprovision"]["run"].endswith("infra/deploy.sh preflight")
