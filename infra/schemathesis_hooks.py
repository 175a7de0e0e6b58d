"""Schemathesis hooks for the run against the real handler (tests/api/openapi_schemathesis.rs).

Schemathesis treats a generated path parameter as possibly already percent-encoded: it unquotes
the value, then quotes it (schemathesis/transport/serialization.py, "keep quoting idempotent").
A generated id that happens to contain a valid escape, such as `%41`, therefore reaches the
handler as another id (`A`), and the verdict on it is about that other id. The description keeps
`%` out of path-segment ids (such ids are asked for through the query route, where the Functions
host does not re-parse them), so only negative cases carry one; they are left out here. Ids with
`%` are covered on both routes by tests/api/tokens.rs, byte for byte against the official SDKs.

The `hub` query parameter names one of the handler's hubs: any host name fits its schema, but
only the hubs a deployment lists are served (others get 400 `unknown-hub`, which
tests/api/hubs.rs covers). Before the description is loaded, its `HostName` schema is narrowed to
the hubs the run's handler serves (`SCHEMATHESIS_HUBS`, comma-separated), in both host-name forms
and two letter cases — as a deployment's own copy of the description could list them — so every
phase (examples, coverage, fuzzing) generates hubs that are served, and values outside them are
negative cases that must be refused.
"""

import os

import schemathesis


@schemathesis.hook
def filter_path_parameters(context, path_parameters):
    return not any("%" in str(value) for value in (path_parameters or {}).values())


@schemathesis.hook
def before_load_schema(context, raw_schema):
    hubs = [hub for hub in os.environ.get("SCHEMATHESIS_HUBS", "").split(",") if hub]
    if not hubs:
        return
    served = []
    for hub in hubs:
        name, suffix = hub.split(".", 1)
        for host in (hub, f"{name}.device.{suffix}"):
            served += [host, host.upper()]
    raw_schema["components"]["schemas"]["HostName"] = {"type": "string", "enum": served}
