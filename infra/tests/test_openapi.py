"""openapi/sas-token.yaml: a valid OpenAPI 3 document (openapi-spec-validator) that describes what
the handler really does: every route (device, module, DPS registration, the seed's query route),
the device-, module-, registration-id and ttl rules from src/params.rs, each route's 200 body
from src/issuance.rs, the error statuses and the problem+json shape from src/error.rs, what
happens to repeated query keys. (tests/api/openapi_schemathesis.rs runs schemathesis against the
real handler with it, in both signing modes.)

openapi/sas-token.apim.json, the copy API Management imports: exactly what infra/apim_openapi.py
makes of the source, valid too, and free of what API Management's import does not support."""

from __future__ import annotations

import re

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from conftest import INFRA, REPO

SPEC_PATH = REPO / "openapi" / "sas-token.yaml"
IMPORT_PATH = REPO / "openapi" / "sas-token.apim.json"


def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def schema(document: dict, node: dict) -> dict:
    """`node`, or the component schema it references."""
    ref = node.get("$ref")
    if ref:
        assert ref.startswith("#/components/schemas/"), ref
        return document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return node


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


DEVICE_ID_CHARACTERS = "-.%_*?!(),:=@$'"


def test_parameters_carry_the_handlers_rules() -> None:
    components = spec()["components"]
    params_rs = (REPO / "src" / "params.rs").read_text()
    # Device and module ids: IoT Hub's rules, the same character set as src/params.rs.
    assert f'b"{DEVICE_ID_CHARACTERS}"' in params_rs
    for name in ("DeviceId", "ModuleId"):
        rule = components["schemas"][name]
        assert (rule["minLength"], rule["maxLength"]) == (1, 128), name
        pattern = re.compile(rule["pattern"])
        assert pattern.fullmatch("A1" + DEVICE_ID_CHARACTERS), name
        for bad in ("", "a/b", "a b", "a+b", "a#b", "a&b", "dévice", "x" * 129):
            assert not pattern.fullmatch(bad), (name, bad)
    # Path segments cannot carry the dot-segments.
    for name, target in (("DeviceIdPathSegment", "DeviceId"), ("ModuleIdPathSegment", "ModuleId")):
        all_of = components["schemas"][name]["allOf"]
        assert {"$ref": f"#/components/schemas/{target}"} in all_of
        assert {"not": {"enum": [".", ".."]}} in all_of
    ttl = schema(spec(), components["parameters"]["Ttl"]["schema"])
    assert (ttl["type"], ttl["minimum"], ttl["maximum"]) == ("integer", 60, 86400)
    assert components["parameters"]["DeviceIdQuery"]["name"] == "deviceid"
    assert components["parameters"]["ModuleIdPath"]["schema"] == {"$ref": "#/components/schemas/ModuleIdPathSegment"}


# RegistrationId::parse in src/params.rs: lower-case ASCII letters, digits and - . _ :, ending in a
# letter, a digit or -, 1-128 characters. The cases of its unit test, and a few more.
REGISTRATION_IDS_ACCEPTED = ["sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", "a", "a.b_c:d-", "0", "-", "r" * 128]
REGISTRATION_IDS_REFUSED = [
    "", "r" * 129, "Sensor-1", "A", "a.", "a_", "a:", "a*b", "a/b", "a%2Fb", "dévice", "a b", ".", "..", "a\n",
]


def test_the_registration_id_rule_is_the_handlers() -> None:
    components = spec()["components"]
    rule = components["schemas"]["RegistrationId"]
    assert rule["pattern"] == "^[a-z0-9._:-]*[a-z0-9-]$"
    assert (rule["type"], rule["minLength"], rule["maxLength"]) == ("string", 1, 128)
    params_rs = (REPO / "src" / "params.rs").read_text()
    assert 'b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._:".contains(&b)' in params_rs
    assert "last.is_ascii_alphanumeric() || last == b'-'" in params_rs
    pattern = re.compile(rule["pattern"])

    def valid(text: str) -> bool:
        return bool(pattern.fullmatch(text)) and rule["minLength"] <= len(text) <= rule["maxLength"]

    for good in REGISTRATION_IDS_ACCEPTED:
        assert valid(good), good
    for bad in REGISTRATION_IDS_REFUSED:
        assert not valid(bad), bad
    parameter = components["parameters"]["RegistrationIdPath"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("registrationId", "path", True)
    assert parameter["schema"] == {"$ref": "#/components/schemas/RegistrationId"}


# Each route's operation, and the 200 body src/issuance.rs (TokenResponse) writes for it.
# Per operation: its id, its 200 body, and the members that body has besides EVERY_BODY_HAS — the
# ids, and where the token is for: `hostName` (the hub host in `sr`) for a device or module token,
# `idScope` and `provisioningHost` (DPS) for a registration token.
OPERATIONS = {
    "/devices/{deviceId}/sas-token": ("getSasToken", "DeviceToken", {"deviceId", "hostName"}),
    "/devices/{deviceId}/modules/{moduleId}/sas-token": ("getModuleSasToken", "ModuleToken", {"deviceId", "moduleId", "hostName"}),
    "/registrations/{registrationId}/sas-token": ("getRegistrationSasToken", "RegistrationToken", {"registrationId", "idScope", "provisioningHost"}),
    "/getSASTokenByDeviceID": ("getSasTokenByDeviceId", "DeviceToken", {"deviceId", "hostName"}),
}
# The operations whose token names a hub take `hub`; the registration route does not.
TAKES_HUB = {"getSasToken", "getModuleSasToken", "getSasTokenByDeviceId"}
EVERY_BODY_HAS = {"sastoken", "expiresOn", "expiresIn", "refreshIn"}


def test_each_operation_answers_its_own_token_body() -> None:
    document = spec()
    assert set(document["paths"]) == set(OPERATIONS)
    for path, (operation_id, body, ids) in OPERATIONS.items():
        operation = document["paths"][path]["get"]
        assert operation["operationId"] == operation_id, path
        response = operation["responses"]["200"]["$ref"].rsplit("/", 1)[1]
        content = document["components"]["responses"][response]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{body}"}, path
        token = document["components"]["schemas"][body]
        assert token["additionalProperties"] is False, body
        assert set(token["required"]) == set(token["properties"]) == EVERY_BODY_HAS | ids, body
        for field in ("expiresIn", "refreshIn"):
            assert schema(document, token["properties"][field])["type"] == "integer", (body, field)
    issuance = (REPO / "src" / "issuance.rs").read_text()
    for field in ("deviceId", "moduleId", "registrationId", "hostName", "idScope", "provisioningHost",
                  "expiresOn", "expiresIn", "refreshIn"):
        assert f'rename = "{field}"' in issuance, f"src/issuance.rs no longer writes {field}"
    for path, (operation_id, _, _) in OPERATIONS.items():
        parameters = {
            (document["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p)["name"]
            for p in document["paths"][path]["parameters"]
        }
        assert ("hub" in parameters) == (operation_id in TAKES_HUB), (path, parameters)
    # A device token has skn only in hub-policy mode; a module token always; a registration token
    # always skn=registration.
    patterns = {name: re.compile(document["components"]["schemas"][name]["properties"]["sastoken"]["pattern"])
                for name in ("DeviceToken", "ModuleToken", "RegistrationToken")}
    base = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc%3D&se=1795417200"
    assert patterns["DeviceToken"].fullmatch(base + "&skn=device") and patterns["DeviceToken"].fullmatch(base)
    assert patterns["ModuleToken"].fullmatch(base + "&skn=device") and not patterns["ModuleToken"].fullmatch(base)
    assert patterns["RegistrationToken"].fullmatch(base + "&skn=registration")
    assert not patterns["RegistrationToken"].fullmatch(base + "&skn=device")


def test_the_mode_dependent_404s_are_documented() -> None:
    document = spec()
    responses = document["components"]["responses"]
    module = document["paths"]["/devices/{deviceId}/modules/{moduleId}/sas-token"]["get"]["responses"]["404"]
    text = " ".join(responses[module["$ref"].rsplit("/", 1)[1]]["description"].split())
    assert "urn:iothub-sas:problem:module-tokens-unavailable" in text and "enrollment-group" in text
    registration = document["paths"]["/registrations/{registrationId}/sas-token"]["get"]["responses"]["404"]
    text = " ".join(responses[registration["$ref"].rsplit("/", 1)[1]]["description"].split())
    assert "DPS_ID_SCOPE" in text and "hub-policy" in text
    bad_request = " ".join(responses["BadRequest"]["description"].split())
    for problem in ("invalid-device-id", "invalid-module-id", "invalid-registration-id", "invalid-ttl", "invalid-query",
                    "unknown-hub", "hub-required"):
        assert f"`{problem}`" in bad_request, problem
    error_rs = (REPO / "src" / "error.rs").read_text()
    for problem in ("module-tokens-unavailable", "invalid-module-id", "invalid-registration-id", "unknown-hub",
                    "hub-required"):
        assert f'"urn:iothub-sas:problem:{problem}"' in error_rs, problem


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
        if "content" in response and name not in ("DeviceToken", "ModuleToken", "RegistrationToken")
    ]
    for name in error_responses:
        content = document["components"]["responses"][name]["content"]
        assert list(content) == ["application/problem+json"], name


def test_deployed_ttl_bounds_match_the_description() -> None:
    """The template's TOKEN_MAX_TTL_SECONDS / TOKEN_TTL_SECONDS defaults are what the description says."""
    import json

    from conftest import INFRA, MAIN, parse

    ttl = schema(spec(), spec()["components"]["parameters"]["Ttl"]["schema"])
    main = parse(MAIN)["parameters"]
    assert main["tokenMaxTtlSeconds"]["default"] == ttl["maximum"]
    assert main["tokenTtlSeconds"]["default"] == ttl["default"]
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["tokenMaxTtlSeconds"]["value"] == ttl["maximum"]
    assert values["tokenTtlSeconds"]["value"] == ttl["default"]


def test_repeated_query_keys_are_described_as_they_behave() -> None:
    """The Functions host merges ?deviceid=a&deviceid=b into deviceid=a,b (a legal device id), so
    the description must not promise the handler refuses it: API Management does."""
    document = spec()
    texts = {
        "info": document["info"]["description"],
        "DeviceIdQuery": document["components"]["parameters"]["DeviceIdQuery"]["description"],
        "Ttl": document["components"]["parameters"]["Ttl"]["description"],
        "legacy operation": document["paths"]["/getSASTokenByDeviceID"]["get"]["description"],
    }
    for where, text in texts.items():
        flat = " ".join(text.split())
        assert "API Management" in flat and "400" in flat, f"{where}: a repeated key is a 400 at API Management"
    for where in ("info", "legacy operation"):
        flat = " ".join(texts[where].split())
        assert "deviceid=a,b" in flat and "merge" in flat, f"{where}: say that the host merges the values into deviceid=a,b"


# --- The copy API Management imports -----------------------------------------------------------


def apim_openapi():
    import importlib.util

    loader = importlib.util.spec_from_file_location("apim_openapi", INFRA / "apim_openapi.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def import_document() -> dict:
    import json

    return json.loads(IMPORT_PATH.read_text())


def test_import_copy_is_generated_from_the_source() -> None:
    expected = apim_openapi().render(SPEC_PATH.read_text())
    assert IMPORT_PATH.read_text() == expected, (
        "openapi/sas-token.apim.json is stale: run .venv-infra/bin/python infra/apim_openapi.py"
    )
    validate(import_document())


# API Management's OpenAPI import ("API import restrictions and known issues",
# learn.microsoft.com/azure/api-management/api-management-api-import-restrictions, section
# OpenAPI version 3.x; MicrosoftDocs/azure-docs articles/api-management/api-management-api-import-restrictions.md).
UNSUPPORTED_COMPONENTS = {"responses", "parameters", "examples", "requestBodies", "headers", "securitySchemes", "links", "callbacks"}
UNSUPPORTED_PARAMETER_FIELDS = {"allowEmptyValue", "style", "explode", "allowReserved"}


def walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, path + (index,))


def test_import_copy_has_nothing_the_import_does_not_support() -> None:
    """Checked on the file apim-api.bicep loads (the old template loaded sas-token.yaml itself)."""
    import re

    bicep = (INFRA / "modules" / "apim-api.bicep").read_text()
    loaded = re.search(r"value: loadTextContent\('\.\./\.\./(openapi/[^']+)'\)", bicep).group(1)
    text = (REPO / loaded).read_text()
    document = yaml.safe_load(text)  # JSON is YAML too
    version = document["openapi"]
    assert version.startswith("3.0.") and int(version.split(".")[2]) <= 3, "OpenAPI 3.0.x up to 3.0.3"
    components = set(document.get("components", {}))
    assert not components & UNSUPPORTED_COMPONENTS, f"unsupported components: {components & UNSUPPORTED_COMPONENTS}"
    assert "externalDocs" not in document
    assert "servers" not in document, "no servers entry: the back end is the backends entity (a relative URL imports as an empty one)"
    assert "security" not in document, "security is ignored on import; subscriptionRequired does it"
    for path, node in walk(document["paths"]):
        if not isinstance(node, dict):
            continue
        where = "/".join(str(p) for p in path)
        assert "trace" not in node or len(path) != 1, f"{where}: trace operations are not supported"
        for field in ("servers", "security", "callbacks", "externalDocs"):
            assert field not in node or path[-1:] == ("properties",), f"{where}: {field} is not supported"
        ref = node.get("$ref")
        assert ref is None or ref.startswith("#/components/schemas/"), f"{where}: $ref {ref}"
        if node.get("in") in ("query", "path", "header", "cookie") and "name" in node:
            assert node["in"] != "cookie", f"{where}: cookie parameters are not supported"
            assert not UNSUPPORTED_PARAMETER_FIELDS & set(node), f"{where}: {UNSUPPORTED_PARAMETER_FIELDS & set(node)}"
            assert set(node["schema"]) == {"$ref"}, f"{where}: parameter schemas are component references"
    # Parameter names are unique within each operation's whole URL template, in any letter case.
    for route, item in document["paths"].items():
        names = [p["name"].lower() for p in item.get("parameters", [])]
        assert len(names) == len(set(names)), f"{route}: parameter names repeat: {names}"
