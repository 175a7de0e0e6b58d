"""What operators see in Application Insights, as the templates deploy it (docs/operations.md):
API Management's logger authenticates with its managed identity, which holds Monitoring Metrics
Publisher on the component (local authentication is off there); the API's diagnostics correlate
with W3C, log every failure, sample nothing and log no header or body; the action group e-mails
the alert address; each alert rule watches what its description says, wired to the action group.
(Which `line.<field>` the alert queries read is checked against the handler itself, by
src/operations_queries.rs.)"""

from __future__ import annotations

import json
import re
from typing import Any

from conftest import INFRA, MAIN, evaluate, parse

MODULES = INFRA / "modules"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
# A quoted property name, as pycep-parser keeps it.
ODATA_TYPE = "'odata.type'"


def accessor(*parts: str) -> dict[str, Any]:
    """`a.b.c` as pycep-parser writes it."""
    node: Any = parts[-1]
    for part in reversed(parts[:-1]):
        node = {"operator": {"type": "property_accessor", "operands": {"operand_1": part, "operand_2": node}}}
    return node


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's body, whether or not it has a condition or a loop."""
    config = resource["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def test_the_component_refuses_key_based_ingestion() -> None:
    """Why the logger needs managed-identity credentials at all."""
    component = parse(MODULES / "monitoring.bicep")["resources"]["appInsights"]["config"]["properties"]
    assert component["DisableLocalAuth"] is True


def test_api_managements_logger_uses_its_managed_identity_and_holds_the_publisher_role() -> None:
    tree = parse(MODULES / "apim-telemetry.bicep")
    resources = tree["resources"]
    assert tree["variables"]["monitoringMetricsPublisher"]["value"] == MONITORING_METRICS_PUBLISHER

    role = body(resources["publisherRole"])
    assert resources["publisherRole"]["type"] == "Microsoft.Authorization/roleAssignments"
    assert role["scope"] == "appInsights", "the role is on the component only"
    assert resources["appInsights"]["type"] == "Microsoft.Insights/components" and resources["appInsights"]["existing"]
    properties = role["properties"]
    assert properties["roleDefinitionId"]["function"]["parameters"]["resource_name_1"] == "monitoringMetricsPublisher"
    assert properties["principalId"] == accessor("apim", "identity", "principalId"), "API Management's own identity"
    assert properties["principalType"] == "ServicePrincipal"

    logger = body(resources["logger"])
    assert resources["logger"]["type"] == "Microsoft.ApiManagement/service/loggers"
    assert logger["parent"] == "apim"
    props = logger["properties"]
    assert props["loggerType"] == "applicationInsights"
    assert props["resourceId"] == accessor("appInsights", "id")
    assert props["credentials"] == {
        "connectionString": accessor("appInsights", "properties", "ConnectionString"),
        "identityClientId": "SystemAssigned",
    }, "connection string and the system-assigned identity; no instrumentation key"
    assert "publisherRole" in logger.get("dependsOn", []), "the role exists before the logger sends"


def test_the_apis_diagnostics_correlate_with_w3c_log_every_failure_and_no_secret() -> None:
    tree = parse(MODULES / "apim-telemetry.bicep")
    resource = tree["resources"]["apiDiagnostics"]
    assert resource["type"] == "Microsoft.ApiManagement/service/apis/diagnostics"
    config = resource["config"]
    assert evaluate(config["condition"]["operator"]["operands"]["bool_value"], tree, {"apiName": ""}) is True, (
        "deployed only once the API is (apiName given)"
    )
    diagnostics = body(resource)
    assert diagnostics["parent"] == "api" and diagnostics["name"] == "applicationinsights"
    props = diagnostics["properties"]
    assert props["loggerId"] == accessor("logger", "id")
    assert props["httpCorrelationProtocol"] == "W3C", "the gateway sends traceparent: the handler's trace_id"
    assert props["alwaysLog"] == "allErrors"
    assert props["sampling"] == {"samplingType": "fixed", "percentage": 100}
    nothing = tree["variables"]["nothingLogged"]["value"]
    for side in ("frontend", "backend"):
        assert props[side] == "nothingLogged", side
    for direction in ("request", "response"):
        assert nothing[direction] == {"headers": [], "body": {"bytes": 0}}, (
            "no header (subscription keys, function keys, tokens) and no body (tokens) is logged"
        )


def test_main_deploys_the_telemetry_and_the_alerts() -> None:
    main = parse(MAIN)
    telemetry = main["modules"]["apimTelemetry"]
    assert telemetry["detail"]["path"] == "modules/apim-telemetry.bicep"
    params = telemetry["config"]["params"]
    assert params["apimName"] == accessor("apim", "outputs", "name")
    assert params["appInsightsName"] == accessor("monitoring", "outputs", "appInsightsName")
    api = params["apiName"]["operator"]
    assert api["type"] == "conditional" and api["operands"]["condition"] == "publishApi"
    assert api["operands"]["true_value"] == accessor("apimApi", "outputs", "apiName")
    assert api["operands"]["false_value"] == ""

    alerts = main["modules"]["alerts"]
    assert alerts["detail"]["path"] == "modules/alerts.bicep"
    params = alerts["config"]["params"]
    assert params["appInsightsId"] == accessor("monitoring", "outputs", "appInsightsId")
    assert params["apimId"] == accessor("apim", "outputs", "id")
    for given, expected in (("", "publisher@example.com"), ("ops@example.com", "ops@example.com")):
        chosen = evaluate(params["alertEmail"], main, {"alertEmail": given, "apimPublisherEmail": "publisher@example.com"})
        assert chosen == expected, f"alertEmail {given!r}: e-mails {chosen}"
    assert "appInsightsName" in main["outputs"], "make verify's join check reads it"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["alertEmail"]["value"] == "${ALERT_EMAIL=}"


def alerts_tree() -> dict[str, Any]:
    return parse(MODULES / "alerts.bicep")


def log_alerts() -> dict[str, dict[str, Any]]:
    tree = alerts_tree()
    return {entry["name"]: entry for entry in tree["variables"]["logAlerts"]["value"]}


def query(entry: dict[str, Any]) -> str:
    return alerts_tree()["variables"][entry["query"]]["value"]


def test_the_action_group_emails_the_alert_address() -> None:
    tree = alerts_tree()
    group = body(tree["resources"]["actionGroup"])
    assert tree["resources"]["actionGroup"]["type"] == "Microsoft.Insights/actionGroups"
    props = group["properties"]
    assert props["enabled"] is True
    assert len(props["groupShortName"]) <= 12, "Azure Monitor's limit"
    assert [r["emailAddress"] for r in props["emailReceivers"]] == ["alertEmail"]


def test_each_log_alert_searches_the_component_and_reaches_the_action_group() -> None:
    tree = alerts_tree()
    resource = tree["resources"]["logAlert"]
    assert resource["type"] == "Microsoft.Insights/scheduledQueryRules"
    assert resource["config"]["loop_type"]["detail"] == {"item_name": "alert", "array_name": "logAlerts"}
    props = body(resource)["properties"]
    assert props["scopes"] == ["appInsightsId"]
    assert props["autoMitigate"] is True, "stateful: one e-mail when it fires, one when it resolves"
    assert props["actions"] == {"actionGroups": [accessor("actionGroup", "id")]}
    criterion = props["criteria"]["allOf"][0]
    for name, field in (("query", "query"), ("timeAggregation", "aggregation"), ("operator", "comparison"),
                        ("threshold", "threshold")):
        assert criterion[name] == accessor("alert", field), name
    assert criterion["dimensions"][0]["name"] == accessor("alert", "dimension")
    for prop, field in (("description", "description"), ("severity", "severity"), ("windowSize", "window")):
        assert props[prop] == accessor("alert", field), prop

    for name, entry in log_alerts().items():
        text = query(entry)
        assert 'customDimensions.Category == "Host.Function.Console"' in text and "line = parse_json(message)" in text, (
            f"{name}: reads the handler's lines as docs/operations.md does"
        )
        projected = re.search(r"\| project (.*)", text, re.S)
        assert projected and re.search(rf"\b{entry['dimension']}\s*=|\b{entry['dimension']}\b", projected.group(1)), (
            f"{name}: split by {entry['dimension']}, which the query must project"
        )
        if entry["measure"]:
            assert re.search(rf"\b{entry['measure']}\s*=", projected.group(1)), f"{name}: measures {entry['measure']}"
        assert len(entry["description"]) >= 120, f"{name}: the description says what to do"


def test_the_key_alerts_fire_once_per_change_and_after_consecutive_failures() -> None:
    alerts = log_alerts()
    withdrawn = alerts["key-withdrawn"]
    assert 'tostring(line.event) == "key_withdrawn"' in query(withdrawn)
    # At the default RUST_LOG only the withdrawal's start is an ERROR line; repeats are DEBUG.
    assert 'tostring(line.level) == "ERROR"' in query(withdrawn), "once per withdrawal, not once per read"
    too_old = alerts["key-too-old"]
    assert 'tostring(line.event) == "key_too_old"' in query(too_old), "written once each time a key ages out"
    for entry in (withdrawn, too_old):
        assert (entry["aggregation"], entry["comparison"], entry["threshold"]) == ("Count", "GreaterThan", 0)
        assert entry["window"] == "PT5M", "the window is the evaluation frequency: each line counted once"
        assert entry["severity"] == 1
    failures = alerts["key-read-failures"]
    assert 'tostring(line.event) == "key_read_failed"' in query(failures)
    assert (failures["aggregation"], failures["measure"], failures["comparison"], failures["threshold"]) == (
        "Maximum", "failures", "GreaterThanOrEqual", "keyReadFailuresToAlert")
    spec = alerts_tree()["parameters"]["keyReadFailuresToAlert"]
    assert spec["default"] == 2, "two reads in a row: the scheduled one and the retry after it"


def test_refusals_are_counted_by_layer_above_a_parameterised_rate() -> None:
    refusals = log_alerts()["refusals-by-layer"]
    text = query(refusals)
    assert 'tostring(line.target) == "request" and toint(line.status) >= 400' in text
    for layer in ("client certificate", "bearer token", "gateway caller", "DEVICE_SCOPES",
                  "ALLOWED_IPS / X-Forwarded-For", "key", "limits", "input"):
        assert f'"{layer}"' in text, layer
    assert (refusals["aggregation"], refusals["comparison"], refusals["threshold"], refusals["dimension"]) == (
        "Count", "GreaterThan", "refusalsToAlert", "layer")
    assert refusals["window"] == "PT15M"
    # The same derivation as docs/operations.md's query, so the alert and the query agree.
    operations = (INFRA.parent / "docs" / "operations.md").read_text()
    derivation = text[text.index("| extend identified"):text.index("| project timestamp, layer")].strip()
    assert " ".join(derivation.split()).replace("toint(line.status) in", "status in") in " ".join(operations.split()), (
        "docs/operations.md's refusals-by-layer query derives the layer the same way"
    )


def test_the_metric_alerts_watch_api_managements_requests() -> None:
    tree = alerts_tree()
    for name in ("backend5xx", "unusualRefusals"):
        resource = tree["resources"][name]
        assert resource["type"] == "Microsoft.Insights/metricAlerts"
        props = body(resource)["properties"]
        assert props["scopes"] == ["apimId"] and props["enabled"] is True and props["autoMitigate"] is True
        assert props["actions"] == [{"actionGroupId": accessor("actionGroup", "id")}]
        assert len(props["description"]) >= 120, f"{name}: the description says what to do"
        [criterion] = props["criteria"]["allOf"]
        assert (criterion["metricNamespace"], criterion["metricName"]) == ("Microsoft.ApiManagement/service", "Requests")
        assert criterion["timeAggregation"] == "Total"

    five = body(tree["resources"]["backend5xx"])["properties"]
    [criterion] = five["criteria"]["allOf"]
    assert five["criteria"][ODATA_TYPE] == "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
    assert criterion["criterionType"] == "StaticThresholdCriterion"
    assert criterion["dimensions"] == [{"name": "BackendResponseCodeCategory", "operator": "Include", "values": ["5xx"]}], (
        "the back end's answers: a dead or hung handler shows here even though it cannot log"
    )
    assert criterion["threshold"] == "backend5xxToAlert"

    unusual = body(tree["resources"]["unusualRefusals"])["properties"]
    [criterion] = unusual["criteria"]["allOf"]
    assert unusual["criteria"][ODATA_TYPE] == "Microsoft.Azure.Monitor.MultipleResourceMultipleMetricCriteria", (
        "dynamic thresholds need the multiple-criteria form"
    )
    assert criterion["criterionType"] == "DynamicThresholdCriterion"
    assert criterion["dimensions"] == [{"name": "GatewayResponseCode", "operator": "Include", "values": ["401", "403"]}]
    assert criterion["alertSensitivity"] in ("Low", "Medium", "High")
    periods = criterion["failingPeriods"]
    assert 1 <= periods["minFailingPeriodsToAlert"] <= periods["numberOfEvaluationPeriods"]
