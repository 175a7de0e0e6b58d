"""openapi/sas-token.yaml: a valid OpenAPI 3 document (openapi-spec-validator) that describes what
the handler really does: both routes, the device-id and ttl rules from src/params.rs, the error
statuses and the problem+json shape from src/error.rs. (infra/check.sh then runs schemathesis
against the real handler with it.)"""

from __future__ import annotations

import re

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from conftest import REPO

SPEC_PATH = REPO / "openapi" / "sas-token.yaml"


def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def test_spec_validates() -> None:
    document, _ = read_from_filename(str(SPEC_PATH))
    validate(document)
    assert document["openapi"].startswith("3.")


def test_routes_and_base_path_match_the_function_routes() -> None:
    document = spec()
    assert [server["url"] for server in document["servers"]] == ["/api"]
    routes = set()
    for folder in (REPO / "function-apps").iterdir():
        function = (folder / "function.json").read_text()
        routes.add("/" + re.search(r'"route"\s*:\s*"([^"]+)"', function).group(1))
    assert set(document["paths"].keys()) == routes


def test_parameters_carry_the_handlers_rules() -> None:
    components = spec()["components"]
    device_id = components["schemas"]["DeviceId"]
    assert (device_id["minLength"], device_id["maxLength"]) == (1, 128)
    pattern = re.compile(device_id["pattern"])
    allowed = "-.%_*?!(),:=@$'"
    assert pattern.fullmatch("A1" + allowed)
    for bad in ("", "a/b", "a b", "a+b", "a#b", "a&b", "dévice", "x" * 129):
        assert not pattern.fullmatch(bad), bad
    # The same character set as src/params.rs.
    params_rs = (REPO / "src" / "params.rs").read_text()
    assert f'b"{allowed}"' in params_rs
    ttl = components["parameters"]["Ttl"]["schema"]
    assert (ttl["type"], ttl["minimum"], ttl["maximum"]) == ("integer", 60, 86400)
    assert components["parameters"]["DeviceIdQuery"]["name"] == "deviceid"


def test_every_operation_documents_the_error_statuses() -> None:
    document = spec()
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    wanted = {"200", "400", "401", "403", "404", "405", "413", "414", "503"}
    for path, item in document["paths"].items():
        responses = item["get"]["responses"]
        assert wanted <= set(responses), f"{path}: missing {wanted - set(responses)}"
    error_responses = [
        name
        for name, response in document["components"]["responses"].items()
        if "content" in response and name != "Token"
    ]
    for name in error_responses:
        content = document["components"]["responses"][name]["content"]
        assert list(content) == ["application/problem+json"], name


def test_deployed_ttl_bounds_match_the_description() -> None:
    """The template's TOKEN_MAX_TTL_SECONDS / TOKEN_TTL_SECONDS defaults are what the description says."""
    import json

    from conftest import INFRA, MAIN, parse

    ttl = spec()["components"]["parameters"]["Ttl"]["schema"]
    main = parse(MAIN)["parameters"]
    assert main["tokenMaxTtlSeconds"]["default"] == ttl["maximum"]
    assert main["tokenTtlSeconds"]["default"] == ttl["default"]
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["tokenMaxTtlSeconds"]["value"] == ttl["maximum"]
    assert values["tokenTtlSeconds"]["value"] == ttl["default"]
