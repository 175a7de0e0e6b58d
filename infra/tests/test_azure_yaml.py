"""azure.yaml: valid against the Azure Developer CLI's published schema (vendored in
schemas/azure.yaml.json, draft 2019-09, validated with jsonschema.Draft201909Validator as
schemas/README.md says), provisioning infra/main.bicep with the parameters file infra/deploy.sh
uses too, and deploying through the same script as `make deploy`."""

from __future__ import annotations

import json
import re

import jsonschema
import yaml

from conftest import INFRA, REPO

AZURE_YAML = REPO / "azure.yaml"
SCHEMA = REPO / "schemas" / "azure.yaml.json"


def document() -> dict:
    return yaml.safe_load(AZURE_YAML.read_text())


def test_azure_yaml_validates_against_the_azd_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(document()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_validator_rejects_a_broken_azure_yaml() -> None:
    """The check is worth something only if it can fail."""
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    broken = document()
    broken["hooks"]["postprovision"]["shell"] = "cmd"
    assert list(validator.iter_errors(broken)), "an unknown hook shell must be refused"
    del broken["name"]
    assert list(validator.iter_errors(broken)), "name is required"


def test_azd_provisions_infra_and_its_hooks_run_the_make_deploy_script() -> None:
    doc = document()
    infra = doc["infra"]
    assert (infra.get("provider", "bicep"), infra.get("path", "infra"), infra.get("module", "main")) == ("bicep", "infra", "main")
    assert (INFRA / "main.bicep").is_file() and (INFRA / "main.parameters.json").is_file()
    hooks = doc["hooks"]
    assert re.fullmatch(r"make package && infra/deploy\.sh preflight", hooks["preprovision"]["run"])
    assert hooks["postprovision"]["run"] == "infra/deploy.sh after-provision"
    deploy = (INFRA / "deploy.sh").read_text()
    for command in ("preflight", "after-provision"):
        assert re.search(rf"\n    {re.escape(command)}\)", deploy), f"infra/deploy.sh handles `{command}`"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"\ndeploy: package.*\n\t@infra/deploy\.sh\n", makefile), "make deploy runs the same script"
