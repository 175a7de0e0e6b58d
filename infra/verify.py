#!/usr/bin/env python3
"""`make verify`: checks a deployment from the outside, one line per layer, and exits non-zero if
any layer is open.

Probes (each one HTTP request, each bounded by VERIFY_TIMEOUT seconds):

  gateway   no subscription key               must be 401 (API Management)
  gateway   subscription key                  must be 200 with a token whose sr, se and skn are right
                                              (hub-policy: skn = the policy; enrollment-group: no
                                              skn, a device-key token)
  gateway   module token                      hub-policy: 200, sr = hub/devices/id/modules/mid, skn
                                              the policy; enrollment-group: 404 module-tokens-unavailable
  gateway   registration token                enrollment-group with a DPS ID scope: 200, sr =
                                              scope/registrations/id, skn=registration; otherwise
                                              404 (the route is not served)
  gateway   repeated ?deviceid                must be 400 (API Management: behind it the Functions
                                              host would merge the values into deviceid=a,b)
  function  direct, no function key           must be refused by the outermost layer that should
                                              refuse it: the access restriction (IP layer on), else
                                              App Service Authentication, else the function key
  function  direct, function key, forged      must be refused by the access restriction (IP layer
            X-Forwarded-For: API Management   on), else App Service Authentication, else ALLOWED_IPS,
                                              else the bearer layer; which one answered is printed
  gateway   forged X-Forwarded-For            must change nothing: the same 200 and token claims
  gateway   forged X-Caller-* headers         must change nothing: the same 200 and token claims (API
                                              Management deletes what a client sends under those
                                              names; the handler refuses any it did not get from a
                                              gateway, or of another kind than the gateway's)
  gateway   each hub, each host name          `hub` naming each of the deployment's hubs (output
                                              iotHubHostnames), classic host name and, where the hub
                                              has one, its TLS 1.3 device host name: 200 with sr and
                                              hostName that host name; a hub not served: 400 unknown-hub
  gateway   caller A -> caller B's device     with per-caller scoping (output apimCallerKind not
            caller B -> its device            none): 403, 200 with B's token, 403 -- API Management
            caller B -> caller A's device     forwards who calls, and each caller gets only the
                                              devices its DEVICE_SCOPES rules name

A refusal by a layer further in than the one that should have refused means the outer layer is
open, and says so ("FAIL access restriction: ... refused only by ALLOWED_IPS (handler)").

A layer behind the one that refuses a direct call cannot be seen refusing anything from outside
(on a classic tier the access restriction's 403 hides App Service Authentication, the function
key, ALLOWED_IPS and the bearer layer). So verify also reads the deployed configuration through
Azure Resource Manager — the site's access restrictions (config/web), App Service Authentication
(config/authsettingsV2), the app settings that switch the handler's layers on (ALLOWED_IPS,
XFF_DEPTH, AUTH_*), and each function's authLevel — and ends with one table: for every layer,
whether it was probed (seen refusing), configured (read and right), or both, and PASS or FAIL.
A layer neither probed nor read fails. Without a deployment to read (every VERIFY_* value given
and no resource group, as in the tests against stand-ins) the configured column says so.

Configuration: everything comes from the deployment (outputs of `az deployment group show
-g $RESOURCE_GROUP -n ${DEPLOYMENT_NAME:-iothub-sas}`) and from `az` (the API Management
subscription key, the Function App's function key), unless set in the environment, which is how
the tests run it against a local topology (tests/api/deployment_verify.rs). Where: the resource
group is RESOURCE_GROUP or AZURE_RESOURCE_GROUP (both set and different: an error), else the
azd environment's (.azure/<default environment>/.env, as `azd up` left it); the subscription is
AZURE_SUBSCRIPTION_ID (or the azd environment's), which must be the Azure CLI's, else the CLI's;
every az call names it.

  VERIFY_API_URL            API base URL on the gateway (output apiUrl)
  VERIFY_SUBSCRIPTION_KEY   an API Management subscription key (az rest .../subscriptions/
                            ${VERIFY_APIM_SUBSCRIPTION:-master}/listSecrets)
  VERIFY_FUNCTION_URL       the Function App's /api base URL (https://<output functionAppHostName>/api)
  VERIFY_FUNCTION_KEY       a function key (az functionapp keys list: functionKeys.default)
  VERIFY_IOTHUB_HOSTNAME    expected in sr (output iotHubHostName)
  VERIFY_SIGNING_MODE       hub-policy | enrollment-group (output signingMode)
  VERIFY_POLICY_NAME        expected skn, hub-policy mode (output iotHubPolicyName)
  VERIFY_DPS_ID_SCOPE       enrollment-group mode: expected in a registration token's sr; empty:
                            the registration route must answer 404 (output dpsIdScope)
  VERIFY_IP_LAYER           on | off (output ipLayer)
  VERIFY_APIM_ADDRESSES     API Management's outbound addresses, comma-separated (output apimOutboundIps)
  VERIFY_APP_SERVICE_AUTH   on (default: the template always turns it on) | off
  VERIFY_BEARER             on (default: the template always sets AUTH_*) | off
  VERIFY_DEVICE_ID          device (and registration) id to ask tokens for (default verify-device;
                            in enrollment-group mode it must be a valid, lower-case registration id)
  VERIFY_MODULE_ID          module id to ask a module token for (default verify-module)
  VERIFY_TTL                ttl to ask for (default 300)
  VERIFY_TIMEOUT            seconds per request (default 15); VERIFY_AZ_TIMEOUT per az call (60)

Per-caller scoping (README, "Giving each caller its scope"): caller A is the one every probe above
uses, caller B a second one whose rules name VERIFY_OTHER_DEVICE_ID and not VERIFY_DEVICE_ID
(and A's not B's device). With scoping, API Management refuses subscriptions outside its product,
so VERIFY_APIM_SUBSCRIPTION must name a subscription to the product, not `master`.

  VERIFY_CALLER_KIND        none | subscription | certificate | entra (output apimCallerKind)
  VERIFY_OTHER_DEVICE_ID    a device caller B may get tokens for and caller A may not
  VERIFY_OTHER_SUBSCRIPTION_KEY  caller B's subscription key (else az reads the subscription
                            named VERIFY_OTHER_APIM_SUBSCRIPTION; entra and certificate: default
                            caller A's key, the token or certificate tells the callers apart)
  VERIFY_CALLER_TOKEN, VERIFY_OTHER_CALLER_TOKEN  entra: A's and B's own access tokens for the
                            caller audience (az account get-access-token --resource <audience>,
                            signed in as each caller)
  VERIFY_CLIENT_CERT, VERIFY_OTHER_CLIENT_CERT    certificate: PEM files, each holding a caller's
                            client certificate and its private key

Several hubs (README, "Several hubs"):

  VERIFY_IOTHUB_HOSTNAMES   the hubs, comma-separated (output iotHubHostnames; default: the one
                            hub); each is asked for by name, the first must also be the default
  VERIFY_DEVICE_HOST_NAMES  hubs that also answer under their TLS 1.3 device host name
                            ({hub}.device.azure-devices.net), comma-separated; default: those
                            listed in that form, and those `az iot hub show` reports a
                            deviceHostName for (when the deployment's subscription holds them)

Letter case (opt-in; hub-policy mode; docs/security.md "Several hubs and letter case"): does the
hub compare the device id in a policy token's sr with case? With VERIFY_CASE_CHECK=1 verify
registers two devices whose ids differ only in letter case (VERIFY_CASE_DEVICE_ID, default
verify-case-<random>, and its upper-case twin) in the default hub (`az iot hub device-identity
create`, azure-iot extension, needs the right to write the hub's registry), asks the gateway for a
token for the lower-case one, sends one telemetry message with it as that device (the control) and
one as the other (IoT Hub's HTTPS device API, POST /devices/{id}/messages/events), deletes both
devices whatever happened, and says which answer the hub gave and what to do. The caller verify
uses must be allowed the lower-case id by DEVICE_SCOPES. VERIFY_CASE_HUB_URL replaces
https://{hub} (tests).

Telemetry (opt-in, docs/operations.md "Proving the join on a live deployment"): with
VERIFY_TELEMETRY=on, one more gateway probe carries a `traceparent` with a trace id made up here;
verify then queries Application Insights (az monitor app-insights query: read access to the
component and the CLI's application-insights extension) every VERIFY_TELEMETRY_POLL seconds (30)
for at most VERIFY_TELEMETRY_WAIT seconds (300: ingestion takes minutes) until it finds the
handler's request line with that trace_id, the Functions host's request with the line's
invocation_id (customDimensions.InvocationId) and API Management's request with that operation
id, and reports whether the three share the ids. It needs a deployment to read (RESOURCE_GROUP).

  VERIFY_TELEMETRY          off (default) | on
  VERIFY_APP_INSIGHTS       the component's name (output appInsightsName)
  VERIFY_TELEMETRY_WAIT, VERIFY_TELEMETRY_POLL   seconds (300, 30)

Nothing secret is printed: not the keys, not the callers' tokens, not the token's signature.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

API_VERSION_APIM = "2024-05-01"

HUB_POLICY = "hub-policy"
ENROLLMENT_GROUP = "enrollment-group"

# Who answered a refused request, outermost first (the order a direct call meets them).
ACCESS_RESTRICTION = "access restriction"
APP_SERVICE_AUTH = "App Service Authentication"
FUNCTION_KEY = "function key"
ALLOWED_IPS = "ALLOWED_IPS"
BEARER = "bearer"
DIRECT_ORDER = [ACCESS_RESTRICTION, APP_SERVICE_AUTH, FUNCTION_KEY, ALLOWED_IPS, BEARER]

WHERE = {
    ACCESS_RESTRICTION: "the front end's access restriction",
    APP_SERVICE_AUTH: "App Service Authentication",
    FUNCTION_KEY: "the Functions host's function-key check",
    ALLOWED_IPS: "the handler's ALLOWED_IPS",
    BEARER: "the handler's bearer-token layer",
}


class ConfigError(Exception):
    """A value verify needs could not be read."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    error: str = ""

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def problem(self) -> dict:
        if self.media_type != "application/problem+json":
            return {}
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def describe(self) -> str:
        if self.error:
            return f"no answer ({self.error})"
        problem = self.problem()
        if problem:
            return f"{self.status} {problem.get('type', '')}"
        return f"{self.status} {self.media_type or 'no content type'}"


def refused_by(answer: Answer) -> str | None:
    """Which layer refused a direct call, from the shape of its answer; None if it was served."""
    if answer.error:
        return "no answer"
    if 200 <= answer.status < 300:
        return None
    problem_type = answer.problem().get("type", "")
    if problem_type == "urn:iothub-sas:problem:caller-not-allowed":
        return ALLOWED_IPS
    if problem_type in ("urn:iothub-sas:problem:token-missing", "urn:iothub-sas:problem:token-invalid"):
        return BEARER
    if answer.status == 403 and not problem_type:
        return ACCESS_RESTRICTION  # App Service's own 403 page ("Ip Forbidden")
    if answer.status == 401 and not problem_type:
        # App Service Authentication challenges (WWW-Authenticate: Bearer realm=...); the
        # Functions host answers a missing or wrong key with an empty 401.
        return APP_SERVICE_AUTH if "www-authenticate" in answer.headers else FUNCTION_KEY
    return f"unexpected answer {answer.describe()}"


@dataclass
class Config:
    api_url: str
    subscription_key: str
    function_url: str
    function_key: str
    hub: str
    mode: str
    policy: str
    id_scope: str
    ip_layer: bool
    apim_addresses: list[str]
    app_service_auth: bool
    bearer: bool
    device: str
    module: str
    ttl: int
    timeout: float
    # Who calls through API Management, and a second caller for the scoping probe.
    callers: Callers | None = None
    # The deployment's hubs (the first is the default) and those with a device host name.
    hubs: list[str] = field(default_factory=list)
    device_host_names: list[str] = field(default_factory=list)
    # The opt-in telemetry join check (VERIFY_TELEMETRY=on).
    telemetry: Telemetry | None = None


def azd_environment(root: str) -> dict[str, str]:
    """The default azd environment's values (.azure/config.json names it; .azure/<name>/.env holds
    KEY="value" lines), or nothing when there is none."""
    try:
        with open(os.path.join(root, ".azure", "config.json"), encoding="utf-8") as f:
            name = json.load(f).get("defaultEnvironment", "")
        with open(os.path.join(root, ".azure", name, ".env"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, ValueError, AttributeError):
        return {}
    values = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[key.strip()] = value
    return values


class Deployment:
    """Outputs and credentials read with the Azure CLI, each call bounded and naming the
    subscription; read only when needed."""

    def __init__(self, environ: dict[str, str] | None = None, root: str | None = None) -> None:
        environ = dict(os.environ) if environ is None else environ
        ours, azds = environ.get("RESOURCE_GROUP", ""), environ.get("AZURE_RESOURCE_GROUP", "")
        if ours and azds and ours.lower() != azds.lower():
            raise ConfigError(f"RESOURCE_GROUP is {ours!r} but AZURE_RESOURCE_GROUP is {azds!r}: unset one of them")
        self.resource_group = ours or azds
        self.wanted_subscription = environ.get("AZURE_SUBSCRIPTION_ID", "")
        if not self.resource_group and not environ.get("VERIFY_API_URL"):
            # After `azd up`, from the azd environment it used.
            azd = azd_environment(root or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            self.resource_group = azd.get("AZURE_RESOURCE_GROUP", "")
            self.wanted_subscription = self.wanted_subscription or azd.get("AZURE_SUBSCRIPTION_ID", "")
        self.name = environ.get("DEPLOYMENT_NAME", "iothub-sas")
        self.az_timeout = float(environ.get("VERIFY_AZ_TIMEOUT", "60"))
        self._outputs: dict | None = None
        self._subscription = ""

    @property
    def readable(self) -> bool:
        """Whether there is a deployment to read (a resource group is known)."""
        return bool(self.resource_group)

    @property
    def subscription(self) -> str:
        """AZURE_SUBSCRIPTION_ID, which must be the Azure CLI's, else the CLI's."""
        if not self._subscription:
            cli = self.run("account", "show", "--query", "id", "-o", "tsv")
            if self.wanted_subscription and self.wanted_subscription.lower() != cli.lower():
                raise ConfigError(f"AZURE_SUBSCRIPTION_ID is {self.wanted_subscription} but the Azure CLI's subscription is {cli}: "
                                  f"run 'az account set --subscription {self.wanted_subscription}'")
            self._subscription = self.wanted_subscription or cli
        return self._subscription

    def az(self, *args: str) -> str:
        """`az ARGS --subscription <the subscription>` (az rest names it in its URI instead)."""
        if args[0] == "rest":
            return self.run(*args)
        return self.run(*args, "--subscription", self.subscription)

    def run(self, *args: str) -> str:
        if not self.resource_group:
            raise ConfigError("set RESOURCE_GROUP (or every VERIFY_* value) so verify can read the deployment")
        # `az rest` is named by its method and path (never its query string), the rest by their
        # first two words.
        what = f"az rest {args[2]} {args[4].split('?')[0]}" if args[0] == "rest" else f"az {args[0]} {args[1]}"
        try:
            done = subprocess.run(
                ["az", *args, "--only-show-errors"],
                capture_output=True,
                text=True,
                timeout=self.az_timeout,
                check=False,
            )
        except FileNotFoundError as e:
            raise ConfigError("the Azure CLI (az) is required to read the deployment") from e
        except subprocess.TimeoutExpired as e:
            raise ConfigError(f"{what} did not answer within {self.az_timeout:.0f} s") from e
        if done.returncode != 0:
            raise ConfigError(f"{what} failed: {done.stderr.strip()[:300]}")
        return done.stdout.strip()

    def output(self, name: str) -> object:
        if self._outputs is None:
            text = self.az("deployment", "group", "show", "-g", self.resource_group, "-n", self.name,
                           "--query", "properties.outputs", "-o", "json")
            self._outputs = json.loads(text or "{}")
        if name not in self._outputs:
            raise ConfigError(f"deployment {self.name} has no output {name}: deploy with make deploy first")
        return self._outputs[name]["value"]


def setting(name: str, lookup: Callable[[], object]) -> str:
    value = os.environ.get(name)
    if value is not None and value != "":
        return value
    found = lookup()
    if isinstance(found, list):
        return ",".join(str(item) for item in found)
    return str(found)


def switch(name: str, value: str) -> bool:
    if value not in ("on", "off"):
        raise ConfigError(f"{name} must be on or off, not {value!r}")
    return value == "on"


def output(deployment: Deployment, name: str) -> Callable[[], object]:
    return lambda: deployment.output(name)


def signing_mode(value: str) -> str:
    if value not in (HUB_POLICY, ENROLLMENT_GROUP):
        raise ConfigError(f"VERIFY_SIGNING_MODE must be {HUB_POLICY} or {ENROLLMENT_GROUP}, not {value!r}")
    return value


def configure(deployment: Deployment | None = None) -> Config:
    deployment = deployment or Deployment()

    def subscription_key() -> str:
        apim = deployment.output("apimName")
        apim_id = deployment.az("apim", "show", "-g", deployment.resource_group, "-n", str(apim), "--query", "id", "-o", "tsv")
        name = os.environ.get("VERIFY_APIM_SUBSCRIPTION", "master")
        return deployment.az("rest", "--method", "post", "--uri",
                             f"https://management.azure.com{apim_id}/subscriptions/{name}/listSecrets?api-version={API_VERSION_APIM}",
                             "--query", "primaryKey", "-o", "tsv")

    def function_key() -> str:
        app = deployment.output("functionAppName")
        return deployment.az("functionapp", "keys", "list", "-g", deployment.resource_group, "-n", str(app),
                             "--query", "functionKeys.default", "-o", "tsv")

    mode = signing_mode(setting("VERIFY_SIGNING_MODE", output(deployment, "signingMode")))
    group = mode == ENROLLMENT_GROUP
    config = Config(
        api_url=setting("VERIFY_API_URL", output(deployment, "apiUrl")).rstrip("/"),
        subscription_key=setting("VERIFY_SUBSCRIPTION_KEY", subscription_key),
        function_url=setting("VERIFY_FUNCTION_URL", lambda: f"https://{deployment.output('functionAppHostName')}/api").rstrip("/"),
        function_key=setting("VERIFY_FUNCTION_KEY", function_key),
        hub=setting("VERIFY_IOTHUB_HOSTNAME", output(deployment, "iotHubHostName")),
        mode=mode,
        # Each is read only in the mode that uses it.
        policy="" if group else setting("VERIFY_POLICY_NAME", output(deployment, "iotHubPolicyName")),
        id_scope=setting("VERIFY_DPS_ID_SCOPE", output(deployment, "dpsIdScope")) if group else "",
        ip_layer=switch("VERIFY_IP_LAYER", setting("VERIFY_IP_LAYER", output(deployment, "ipLayer"))),
        apim_addresses=[a for a in setting("VERIFY_APIM_ADDRESSES", output(deployment, "apimOutboundIps")).split(",") if a],
        app_service_auth=switch("VERIFY_APP_SERVICE_AUTH", os.environ.get("VERIFY_APP_SERVICE_AUTH", "on")),
        bearer=switch("VERIFY_BEARER", os.environ.get("VERIFY_BEARER", "on")),
        device=os.environ.get("VERIFY_DEVICE_ID", "verify-device"),
        module=os.environ.get("VERIFY_MODULE_ID", "verify-module"),
        ttl=int(os.environ.get("VERIFY_TTL", "300")),
        timeout=float(os.environ.get("VERIFY_TIMEOUT", "15")),
    )
    for name, value in (("subscription key", config.subscription_key), ("function key", config.function_key)):
        if not value:
            raise ConfigError(f"no {name} could be read")
    if not group and not config.policy:
        raise ConfigError("hub-policy mode needs the policy name (VERIFY_POLICY_NAME, output iotHubPolicyName)")
    config.callers = configure_callers(deployment, config.subscription_key)
    config.hubs, config.device_host_names = configure_hubs(deployment, config.hub)
    config.telemetry = configure_telemetry(deployment)
    return config


def configure_hubs(deployment: Deployment, default_hub: str) -> tuple[list[str], list[str]]:
    """The hubs (lower case, the default first) and which of them answer under a device host
    name: VERIFY_IOTHUB_HOSTNAMES / VERIFY_DEVICE_HOST_NAMES, else the deployment's output and the
    hubs' own description (`az iot hub show`), else the one hub."""
    def optional_output() -> object:
        try:
            return deployment.output("iotHubHostnames") if deployment.readable else ""
        except ConfigError:
            return ""  # a deployment from before several hubs: the one hub
    listed = [h.strip().lower() for h in setting("VERIFY_IOTHUB_HOSTNAMES", optional_output).split(",") if h.strip()]
    hubs = [classic_host(h) for h in listed] or [classic_host(default_hub.lower())]
    given = os.environ.get("VERIFY_DEVICE_HOST_NAMES")
    if given is not None:
        device = [classic_host(h.strip().lower()) for h in given.split(",") if h.strip()]
    else:
        device = [classic_host(h) for h in listed if ".device." in h]
        if deployment.readable:
            for hub in hubs:
                try:
                    name = hub.split(".", 1)[0]
                    if deployment.az("iot", "hub", "show", "-n", name, "--query", "properties.deviceHostName", "-o", "tsv"):
                        device.append(hub)
                except ConfigError:
                    pass  # not in this subscription, or no right to read it: only what is listed
    return hubs, sorted(set(device) & set(hubs), key=hubs.index)


def classic_host(host: str) -> str:
    """A hub's classic host name from either of its host names."""
    name, _, rest = host.partition(".")
    return f"{name}.{rest[len('device.'):]}" if rest.startswith("device.") else host


def device_host(host: str) -> str:
    """A hub's TLS 1.3 device host name."""
    name, _, rest = classic_host(host).partition(".")
    return f"{name}.device.{rest}"


def get(url: str, headers: dict[str, str], timeout: float, tls: ssl.SSLContext | None = None) -> Answer:
    """One GET, no proxy, no redirects followed, bounded by `timeout`. Over https with `tls`, else
    with the client certificate presented to that host (CLIENT_CERTIFICATES), else none."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        context = tls or CLIENT_CERTIFICATES.get(parts.netloc) or ssl.create_default_context()
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    except (OSError, http.client.HTTPException) as e:
        return Answer(0, {}, b"", error=str(e) or type(e).__name__)
    finally:
        connection.close()


@dataclass
class Token:
    sr: str
    se: int
    skn: str | None
    ids: dict[str, str]


def sas_token(answer: Answer, id_fields: tuple[str, ...] = ("deviceId",)) -> Token | str:
    """The token's public fields and the body's ids, or why the answer holds no well-formed token."""
    try:
        body = json.loads(answer.body)
        text = body["sastoken"]
        ids = {name: str(body[name]) for name in id_fields}
    except (ValueError, KeyError, TypeError):
        return f"the body is not {{sastoken, {', '.join(id_fields)}, ...}}"
    prefix = "SharedAccessSignature "
    if not isinstance(text, str) or not text.startswith(prefix):
        return "sastoken is not a SharedAccessSignature"
    fields = dict(pair.split("=", 1) for pair in text[len(prefix):].split("&") if "=" in pair)
    if not {"sr", "sig", "se"} <= set(fields) <= {"sr", "sig", "se", "skn"} or not fields["se"].isdigit():
        return "sastoken lacks sr, sig or an integer se, or has fields besides skn"
    return Token(fields["sr"], int(fields["se"]), fields.get("skn"), ids)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Layers seen refusing (or, for the gateway's own checks and the tokens, proven) by a probe.
    probed: set[str] = field(default_factory=set)

    def passed(self, layer: str, proof: str) -> None:
        self.lines.append(f"PASS {layer}: {proof}")
        self.probed.add(layer)

    def skipped(self, layer: str, why: str) -> None:
        self.lines.append(f"SKIP {layer}: {why}")

    def noted(self, layer: str, finding: str) -> None:
        """A finding about the platform, not about a layer of this deployment: never a failure."""
        self.lines.append(f"NOTE {layer}: {finding}")

    def fail(self, layer: str, why: str) -> None:
        self.lines.append(f"FAIL {layer}: {why}")
        if layer not in self.failed:
            self.failed.append(layer)


def expected_token(config: Config, before: float, after: float, token: Token,
                   resource: str, skn: str | None, ids: dict[str, str]) -> list[str]:
    """What is wrong with `token`: its sr (the percent-encoding of `resource`), se (now + ttl), skn
    (None: a device-key token has none) and the ids in the body."""
    problems = []
    sr = urllib.parse.quote(resource, safe="")
    if token.sr != sr:
        problems.append(f"sr is {token.sr}, expected {sr}")
    # The handler's clock and this machine's may differ a little.
    low, high = int(before) + config.ttl - 60, int(after) + config.ttl + 60
    if not low <= token.se <= high:
        problems.append(f"se is {token.se}, expected now+{config.ttl} s ({int(before) + config.ttl})")
    if token.skn != skn:
        got = "no skn" if token.skn is None else f"skn {token.skn}"
        wanted = "no skn (a device-key token)" if skn is None else skn
        problems.append(f"{got}, expected {wanted}")
    for name, value in ids.items():
        if token.ids.get(name) != value:
            problems.append(f"{name} is {token.ids.get(name)}, expected {value}")
    return problems


def describe_token(token: Token, before: float) -> str:
    skn = "no skn (a device-key token)" if token.skn is None else f"skn={token.skn}"
    return f"sr={token.sr}, se=now+{token.se - int(before)} s, {skn} (signature not shown)"


def check_token(config: Config, report: Report, layer: str, label: str, path: str, key: dict[str, str],
                resource: str, skn: str | None, ids: dict[str, str]) -> None:
    """One token through the gateway: 200 and the right fields."""
    before = time.time()
    answer = get(config.api_url + path, key, config.timeout)
    after = time.time()
    if answer.status != 200:
        report.fail(layer, f"{label} -> {answer.describe()}, expected 200")
        return
    parsed = sas_token(answer, tuple(ids))
    if isinstance(parsed, str):
        report.fail(layer, f"{label} -> 200 but {parsed}")
        return
    problems = expected_token(config, before, after, parsed, resource, skn, ids)
    if problems:
        report.fail(layer, f"{label} -> 200 but " + "; ".join(problems))
    else:
        report.passed(layer, f"{label} -> 200; {describe_token(parsed, before)}")


def check_not_served(config: Config, report: Report, layer: str, label: str, path: str,
                     key: dict[str, str], problem_type: str, why: str) -> None:
    """A route this mode does not serve: 404 problem+json of `problem_type` through the gateway."""
    answer = get(config.api_url + path, key, config.timeout)
    if answer.status == 404 and answer.problem().get("type") == problem_type:
        report.passed(layer, f"{label} -> 404 {problem_type}: {why}")
    else:
        report.fail(layer, f"{label} -> {answer.describe()}, expected 404 {problem_type} ({why})")


def check_modes(config: Config, report: Report, key: dict[str, str]) -> None:
    """The module and registration operations, as the signing mode says they answer."""
    device = urllib.parse.quote(config.device, safe="")
    module = urllib.parse.quote(config.module, safe="")
    ttl = f"?ttl={config.ttl}"
    module_path = f"/devices/{device}/modules/{module}/sas-token{ttl}"
    registration_path = f"/registrations/{device}/sas-token{ttl}"
    if config.mode == HUB_POLICY:
        check_token(config, report, "module token", "gateway, a module token", module_path, key,
                    f"{config.hub}/devices/{config.device}/modules/{config.module}", config.policy,
                    {"deviceId": config.device, "moduleId": config.module})
        check_not_served(config, report, "registration token", "gateway, a registration token", registration_path, key,
                         "about:blank", "hub-policy mode signs no DPS registration tokens")
        return
    check_not_served(config, report, "module token", "gateway, a module token", module_path, key,
                     "urn:iothub-sas:problem:module-tokens-unavailable",
                     "enrollment-group mode holds no key that signs for modules")
    if config.id_scope:
        check_token(config, report, "registration token", "gateway, a registration token", registration_path, key,
                    f"{config.id_scope}/registrations/{config.device}", "registration",
                    {"registrationId": config.device})
    else:
        check_not_served(config, report, "registration token", "gateway, a registration token", registration_path, key,
                         "about:blank", "no DPS ID scope is set")


def check_gateway(config: Config, report: Report) -> Token | None:
    token_path = f"/devices/{urllib.parse.quote(config.device, safe='')}/sas-token?ttl={config.ttl}"
    key = config.callers.first.headers() if config.callers else {"Ocp-Apim-Subscription-Key": config.subscription_key}

    anonymous = get(config.api_url + token_path, {}, config.timeout)
    if anonymous.status == 401:
        report.passed("subscription key", "gateway without a subscription key -> 401: API Management refuses anonymous callers")
    else:
        report.fail("subscription key", f"gateway without a subscription key -> {anonymous.describe()}, expected 401")

    before = time.time()
    served = get(config.api_url + token_path, key, config.timeout)
    after = time.time()
    token = None
    served_token = None
    if served.status == 200:
        parsed = sas_token(served)
        served_token = parsed if isinstance(parsed, Token) else None
        if isinstance(parsed, str):
            report.fail("token", f"gateway with a subscription key -> 200 but {parsed}")
        else:
            skn = config.policy if config.mode == HUB_POLICY else None
            problems = expected_token(config, before, after, parsed, f"{config.hub}/devices/{config.device}",
                                      skn, {"deviceId": config.device})
            if problems:
                report.fail("token", f"gateway with a subscription key ({config.mode} mode) -> 200 but " + "; ".join(problems))
            else:
                token = parsed
                report.passed("token", f"gateway with a subscription key ({config.mode} mode) -> 200; {describe_token(parsed, before)}")
    else:
        layer = refused_by(served)
        if layer == BEARER:
            report.fail(BEARER, f"through API Management -> {served.describe()}: the handler refused API Management's token (AUTH_* or the named value iothub-sas-audience)")
        elif layer == ALLOWED_IPS:
            report.fail("X-Forwarded-For", f"through API Management -> {served.describe()}: the handler's ALLOWED_IPS did not find API Management's address "
                        "in the X-Forwarded-For entry it reads: the chain is not what XFF_DEPTH assumes (front end not appending, or ALLOWED_IPS wrong)")
        elif layer == FUNCTION_KEY:
            report.fail(FUNCTION_KEY, f"through API Management -> {served.describe()}: the host refused API Management's function key (named value iothub-sas-function-key)")
        else:
            report.fail("token", f"gateway with a subscription key -> {served.describe()}, expected 200")

    device_a, device_b = config.device, config.device + "-b"
    repeated = get(
        f"{config.api_url}/getSASTokenByDeviceID?deviceid={urllib.parse.quote(device_a, safe='')}&deviceid={urllib.parse.quote(device_b, safe='')}",
        key, config.timeout)
    if repeated.status == 400 and repeated.media_type == "application/problem+json":
        report.passed("repeated query keys", "gateway with ?deviceid=a&deviceid=b -> 400 problem+json: a repeated key never reaches the host, which would merge it into deviceid=a,b")
    elif repeated.status == 200:
        parsed = sas_token(repeated)
        issued = parsed.ids.get("deviceId") if isinstance(parsed, Token) else "?"
        report.fail("repeated query keys", f"gateway with ?deviceid=a&deviceid=b -> 200, a token for device {issued!r}: the gateway let the repetition through")
    else:
        report.fail("repeated query keys", f"gateway with ?deviceid=a&deviceid=b -> {repeated.describe()}, expected 400 problem+json")

    forged_addresses = ["192.0.2.1"] + config.apim_addresses[:1]
    if served_token is None:
        report.skipped("X-Forwarded-For", "a forged X-Forwarded-For through API Management: not shown, the gateway does not serve (above)")
        report.skipped("signing mode", "the module and registration operations: not shown, the gateway does not serve (above)")
        return token
    check_modes(config, report, key)
    check_hubs(config, report, key)
    changed = []
    for forged in forged_addresses:
        answer = get(config.api_url + token_path, {**key, "X-Forwarded-For": forged}, config.timeout)
        parsed = sas_token(answer) if answer.status == 200 else None
        same = answer.status == 200 and isinstance(parsed, Token) and (parsed.sr, parsed.skn, parsed.ids) == (served_token.sr, served_token.skn, served_token.ids)
        if not same:
            changed.append(f"X-Forwarded-For: {forged} -> {answer.describe()} (without: {served.describe()})")
    if changed:
        report.fail("X-Forwarded-For", "a forged X-Forwarded-For through API Management changed the answer: " + "; ".join(changed))
    else:
        report.passed("X-Forwarded-For", f"gateway with forged X-Forwarded-For ({', '.join(forged_addresses)}) -> the same 200 and token: "
                      "the handler reads the entry the front end appended, not the caller's")
    return token


def check_hubs(config: Config, report: Report, key: dict[str, str]) -> None:
    """`hub` naming each hub by each of its host names gives a token for that host name, and a hub
    the deployment does not serve is refused."""
    device = urllib.parse.quote(config.device, safe="")
    asked = []
    for hub in config.hubs:
        forms = [hub] + ([device_host(hub)] if hub in config.device_host_names else [])
        for host in forms:
            path = f"/devices/{device}/sas-token?ttl={config.ttl}&hub={urllib.parse.quote(host, safe='')}"
            answer = get(config.api_url + path, key, config.timeout)
            parsed = sas_token(answer) if answer.status == 200 else None
            host_name = None
            if answer.status == 200:
                try:
                    host_name = json.loads(answer.body).get("hostName")
                except ValueError:
                    pass
            want_sr = urllib.parse.quote(f"{host}/devices/{config.device}", safe="")
            if not isinstance(parsed, Token) or parsed.sr != want_sr or host_name != host:
                got = answer.describe() if not isinstance(parsed, Token) else f"sr {parsed.sr}, hostName {host_name!r}"
                report.fail("hubs", f"gateway, hub={host} -> {got}; expected 200 with sr {want_sr} and hostName {host}")
                return
            asked.append(host)
    unknown = "verify-no-such-hub." + config.hubs[0].split(".", 1)[1]
    answer = get(config.api_url + f"/devices/{device}/sas-token?hub={unknown}", key, config.timeout)
    if answer.status != 400 or answer.problem().get("type") != "urn:iothub-sas:problem:unknown-hub":
        report.fail("hubs", f"gateway, hub={unknown} (not served) -> {answer.describe()}, expected 400 unknown-hub")
        return
    report.passed("hubs", f"gateway, hub= each of {', '.join(asked)} -> 200, sr and hostName that host name; "
                          f"hub={unknown} -> 400 unknown-hub")


def check_direct(config: Config, report: Report, label: str, headers: dict[str, str], expected: list[str], subject: str) -> None:
    """A direct call to the function: `expected` are the layers that should refuse it, outermost
    first; the first of them must be the one that answers."""
    path = f"/devices/{urllib.parse.quote(config.device, safe='')}/sas-token"
    answer = get(config.function_url + path, headers, config.timeout)
    layer = refused_by(answer)
    first = expected[0]
    if layer is None:
        for open_layer in expected:
            report.fail(open_layer, f"{label} -> {answer.status}: served; nothing refused it")
        return
    if layer not in DIRECT_ORDER:
        report.fail(subject, f"{label} -> {layer}; expected a refusal by {WHERE[first]}")
        return
    passed_through = [name for name in expected if DIRECT_ORDER.index(name) < DIRECT_ORDER.index(layer)]
    if passed_through:
        for open_layer in passed_through:
            report.fail(open_layer, f"{label} -> {answer.describe()}: refused only by {WHERE[layer]}; {WHERE[open_layer]} let it through")
        return
    note = "" if layer == first else f" (expected {WHERE[first]} first)"
    report.passed(subject, f"{label} -> {answer.status}, refused by {WHERE[layer]}{note}")
    # The line is the subject's; the layer seen refusing is `layer`.
    report.probed.discard(subject)
    report.probed.add(layer)


# --- Callers behind API Management (per-caller scoping, issue 22) --------------------------------

CALLER_KINDS = ("none", "subscription", "certificate", "entra")
# The headers API Management sets for the caller it speaks for, after deleting any a client sent.
CALLER_HEADERS = ("X-Caller-Subscription", "X-Caller-Certificate-Thumbprint", "X-Caller-Authorization")
# The client certificate presented to a host (netloc), for every request to it without its own.
CLIENT_CERTIFICATES: dict[str, ssl.SSLContext] = {}


@dataclass
class GatewayCaller:
    """A caller behind API Management: its subscription key and, by the kind API Management
    forwards, its own Entra ID token or its client certificate (a PEM file with the key)."""

    subscription_key: str
    token: str = ""
    certificate: str = ""

    def headers(self) -> dict[str, str]:
        headers = {"Ocp-Apim-Subscription-Key": self.subscription_key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def tls(self) -> ssl.SSLContext | None:
        if not self.certificate:
            return None
        context = ssl.create_default_context()
        try:
            context.load_cert_chain(self.certificate)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot read the client certificate and key in {self.certificate}: {e}") from e
        return context


@dataclass
class Callers:
    """The kind of caller fact API Management forwards, caller A (every gateway probe's), and
    caller B with a device of its own, or which VERIFY_* values B lacks."""

    kind: str
    first: GatewayCaller
    other: GatewayCaller | None
    other_device: str
    missing: list[str]


def configure_callers(deployment: Deployment, subscription_key: str) -> Callers:
    kind = setting("VERIFY_CALLER_KIND", output(deployment, "apimCallerKind"))
    if kind not in CALLER_KINDS:
        raise ConfigError(f"VERIFY_CALLER_KIND must be one of {', '.join(CALLER_KINDS)}, not {kind!r}")
    env = os.environ.get
    first = GatewayCaller(subscription_key)
    if kind == "entra":
        first.token = env("VERIFY_CALLER_TOKEN", "")
        if not first.token:
            raise ConfigError("API Management forwards callers' own Entra ID tokens (apimCallerKind entra): "
                              "set VERIFY_CALLER_TOKEN to a caller's access token for the caller audience")
    if kind == "certificate":
        first.certificate = env("VERIFY_CLIENT_CERT", "")
        if not first.certificate:
            raise ConfigError("API Management forwards client certificates (apimCallerKind certificate): "
                              "set VERIFY_CLIENT_CERT to a PEM file with a caller's certificate and key")
        first.tls()  # readable, or a configuration error now
    other_device = env("VERIFY_OTHER_DEVICE_ID", "")
    missing = [] if other_device else ["VERIFY_OTHER_DEVICE_ID"]
    other_key = env("VERIFY_OTHER_SUBSCRIPTION_KEY", "")
    if not other_key and env("VERIFY_OTHER_APIM_SUBSCRIPTION") and kind != "none":
        other_key = subscription_key_of(deployment, env("VERIFY_OTHER_APIM_SUBSCRIPTION", ""))
    other = GatewayCaller(other_key or (subscription_key if kind in ("entra", "certificate") else ""))
    if not other.subscription_key:
        missing.append("VERIFY_OTHER_SUBSCRIPTION_KEY (or VERIFY_OTHER_APIM_SUBSCRIPTION)")
    if kind == "entra":
        other.token = env("VERIFY_OTHER_CALLER_TOKEN", "")
        missing += [] if other.token else ["VERIFY_OTHER_CALLER_TOKEN"]
    if kind == "certificate":
        other.certificate = env("VERIFY_OTHER_CLIENT_CERT", "")
        missing += [] if other.certificate else ["VERIFY_OTHER_CLIENT_CERT"]
        if other.certificate:
            other.tls()
    return Callers(kind, first, None if missing else other, other_device, missing)


def subscription_key_of(deployment: Deployment, name: str) -> str:
    """The primary key of API Management subscription `name`, read with az."""
    apim = deployment.output("apimName")
    apim_id = deployment.az("apim", "show", "-g", deployment.resource_group, "-n", str(apim), "--query", "id", "-o", "tsv")
    return deployment.az("rest", "--method", "post", "--uri",
                         f"https://management.azure.com{apim_id}/subscriptions/{name}/listSecrets?api-version={API_VERSION_APIM}",
                         "--query", "primaryKey", "-o", "tsv")


def token_path(device: str, ttl: int) -> str:
    return f"/devices/{urllib.parse.quote(device, safe='')}/sas-token?ttl={ttl}"


def check_callers(config: Config, report: Report, served: Token | None) -> None:
    """A client's X-Caller-* headers never reach the handler; with per-caller scoping, one caller is
    refused another's device and gets its own."""
    callers = config.callers
    assert callers is not None
    scoping = callers.kind != "none"
    if served is None:
        report.skipped("caller headers", "forged X-Caller-* headers through API Management: not shown, the gateway does not serve (above)")
        if scoping:
            report.skipped("caller scoping", "one caller refused another's device: not shown, the gateway does not serve (above)")
        return

    forged = {
        "X-Caller-Subscription": "verify-forged-subscription",
        "X-Caller-Certificate-Thumbprint": "00" * 32,
        "X-Caller-Authorization": "Bearer verify.forged.token",
    }
    answer = get(config.api_url + token_path(config.device, config.ttl), {**callers.first.headers(), **forged}, config.timeout)
    parsed = sas_token(answer) if answer.status == 200 else None
    if isinstance(parsed, Token) and (parsed.sr, parsed.skn, parsed.ids) == (served.sr, served.skn, served.ids):
        report.passed("caller headers", f"gateway with forged {', '.join(CALLER_HEADERS)} -> the same 200 and token: "
                      "API Management deletes what a client sends under those names")
    else:
        report.fail("caller headers", f"gateway with forged {', '.join(CALLER_HEADERS)} -> {answer.describe()} (without: 200): "
                    "a client's caller headers reach the handler, which refuses them (the policy must delete them first)")

    if not scoping:
        return
    if callers.other is None:
        report.fail("caller scoping", f"not shown: API Management forwards {callers.kind} callers; set {', '.join(callers.missing)} "
                    "(infra/verify.py) for a second caller, so that verify can show one caller refused another's device")
        return
    other, other_device = callers.other, callers.other_device
    other_tls = other.tls()
    a_to_b = get(config.api_url + token_path(other_device, config.ttl), callers.first.headers(), config.timeout)
    before = time.time()
    b_to_b = get(config.api_url + token_path(other_device, config.ttl), other.headers(), config.timeout, other_tls)
    after = time.time()
    b_to_a = get(config.api_url + token_path(config.device, config.ttl), other.headers(), config.timeout, other_tls)

    def refused(answer: Answer) -> bool:
        return answer.status == 403 and answer.problem().get("type") == "urn:iothub-sas:problem:caller-not-allowed"

    problems = []
    if not refused(a_to_b):
        got = "a token" if a_to_b.status == 200 else a_to_b.describe()
        problems.append(f"caller A asked for caller B's device {other_device} -> {got}, expected the handler's 403")
    issued = sas_token(b_to_b, ("deviceId",)) if b_to_b.status == 200 else b_to_b.describe()
    if isinstance(issued, Token):
        skn = config.policy if config.mode == HUB_POLICY else None
        wrong = expected_token(config, before, after, issued, f"{config.hub}/devices/{other_device}", skn, {"deviceId": other_device})
        if wrong:
            problems.append(f"caller B asked for its device {other_device} -> 200 but " + "; ".join(wrong))
    else:
        problems.append(f"caller B asked for its device {other_device} -> {issued}, expected 200 (its rules must name it)")
    if not refused(b_to_a):
        got = "a token" if b_to_a.status == 200 else b_to_a.describe()
        problems.append(f"caller B asked for caller A's device {config.device} -> {got}, expected the handler's 403")
    if problems:
        report.fail("caller scoping", "; ".join(problems))
    else:
        report.passed("caller scoping", f"{callers.kind} callers: A -> B's device {other_device} 403, B -> it 200, B -> A's device "
                      f"{config.device} 403: API Management forwards who calls, and each caller gets only its own devices")


def verify(config: Config) -> Report:
    report = Report()
    if config.callers and config.callers.first.certificate:
        CLIENT_CERTIFICATES[urllib.parse.urlsplit(config.api_url).netloc] = config.callers.first.tls()
    served = check_gateway(config, report)
    if config.callers:
        check_callers(config, report, served)

    outer = ([ACCESS_RESTRICTION] if config.ip_layer else []) + ([APP_SERVICE_AUTH] if config.app_service_auth else [])
    inner = ([ALLOWED_IPS] if config.ip_layer else []) + ([BEARER] if config.bearer else [])
    check_direct(config, report, "function directly, without a function key", {},
                 outer + [FUNCTION_KEY] + inner, FUNCTION_KEY)
    forged = config.apim_addresses[0] if config.apim_addresses else "192.0.2.1"
    with_key = outer + inner
    if with_key:
        check_direct(config, report,
                     f"function directly, with the function key and X-Forwarded-For: {forged}",
                     {"x-functions-key": config.function_key, "X-Forwarded-For": forged},
                     with_key, with_key[0])
    else:
        report.fail("layers", "with the IP layer, App Service Authentication and the bearer layer all off, only the function key guards the function")
    return report


# --- Letter case: does the hub compare a policy token's sr with case? (opt-in) -------------------

IOTHUB_API_VERSION = "2021-04-12"


def post(url: str, headers: dict[str, str], body: bytes, timeout: float) -> Answer:
    parts = urllib.parse.urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.netloc, timeout=timeout)
    try:
        connection.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                           headers={**headers, "Content-Type": "application/json"})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    except (OSError, http.client.HTTPException) as e:
        return Answer(0, {}, b"", error=str(e) or type(e).__name__)
    finally:
        connection.close()


def check_letter_case(config: Config, deployment: Deployment, report: Report) -> None:
    """Two devices whose ids differ only in case; a policy token for one, presented as the other
    over IoT Hub's HTTPS device API. Both devices are deleted whatever happens."""
    layer = "letter case"
    if config.mode != HUB_POLICY:
        report.skipped(layer, "enrollment-group mode: a device-key token is checked against that device's own key, so case cannot widen it")
        return
    hub = config.hubs[0] if config.hubs else config.hub
    name = hub.split(".", 1)[0]
    lower = os.environ.get("VERIFY_CASE_DEVICE_ID") or f"verify-case-{secrets.token_hex(4)}"
    lower = lower.lower()
    upper = lower.upper()
    if lower == upper:
        raise ConfigError("VERIFY_CASE_DEVICE_ID must contain a letter (its upper-case twin must differ)")
    base = os.environ.get("VERIFY_CASE_HUB_URL", f"https://{hub}").rstrip("/")
    created = []
    try:
        for device in (lower, upper):
            deployment.az("iot", "hub", "device-identity", "create", "-n", name, "-d", device, "-o", "none")
            created.append(device)
        key = config.callers.first.headers() if config.callers else {"Ocp-Apim-Subscription-Key": config.subscription_key}
        answer = get(config.api_url + f"/devices/{urllib.parse.quote(lower, safe='')}/sas-token?ttl={config.ttl}", key, config.timeout)
        parsed = sas_token(answer) if answer.status == 200 else None
        if not isinstance(parsed, Token):
            report.fail(layer, f"gateway, a token for {lower} -> {answer.describe()}: the case check needs one (DEVICE_SCOPES must allow "
                               "the verify caller VERIFY_CASE_DEVICE_ID)")
            return
        token = json.loads(answer.body)["sastoken"]

        def send(device: str) -> Answer:
            url = f"{base}/devices/{urllib.parse.quote(device, safe='')}/messages/events?api-version={IOTHUB_API_VERSION}"
            return post(url, {"Authorization": token}, b'{"verify": "letter case"}', config.timeout)

        control = send(lower)
        if control.status not in (200, 204):
            report.fail(layer, f"the token for {lower} sent as {lower} -> {control.describe()}: the hub did not accept the token for its own "
                               "device, so the case check says nothing (is the policy's key the one in Key Vault?)")
            return
        twin = send(upper)
        if twin.status in (401, 403):
            report.noted(layer, f"{hub} refused {lower}'s policy token for {upper} ({twin.status}) after accepting it for {lower}: the hub "
                                "compares the device id in sr WITH letter case, so a token opens only the device it names. The start-up "
                                "warning about DEVICE_SCOPES rules that differ only in case can be ignored on this hub")
        elif twin.status in (200, 204):
            report.noted(layer, f"{hub} ACCEPTED {lower}'s policy token for {upper}: the hub compares the device id in sr WITHOUT letter "
                                "case, so a hub-policy token for one id also opens every device whose id differs only in case. Rename "
                                "devices so no two differ only in case, act on each start-up warning about DEVICE_SCOPES rules that do, "
                                "or move to enrollment-group mode, whose device-key tokens are checked against each device's own key")
        else:
            report.fail(layer, f"the token for {lower} sent as {upper} -> {twin.describe()}: neither accepted nor refused; run it again")
    except ConfigError as e:
        report.fail(layer, f"cannot run the case check: {e}")
    finally:
        for device in created:
            try:
                deployment.az("iot", "hub", "device-identity", "delete", "-n", name, "-d", device)
            except ConfigError as e:
                report.fail(layer, f"could not delete the test device {device} from {name}: {e} -- delete it by hand "
                                   f"(az iot hub device-identity delete -n {name} -d {device})")


# --- Telemetry: the handler's line, the host's request and the gateway's share the ids ------------

TELEMETRY = "telemetry join"


@dataclass
class Telemetry:
    """Where and how long to look for the probe's records."""
    app: str
    wait: float
    poll: float


def configure_telemetry(deployment: Deployment, environ: dict[str, str] | None = None) -> Telemetry | None:
    environ = dict(os.environ) if environ is None else environ
    if not switch("VERIFY_TELEMETRY", environ.get("VERIFY_TELEMETRY", "off")):
        return None
    if not deployment.readable:
        raise ConfigError("VERIFY_TELEMETRY=on queries Application Insights with az: set RESOURCE_GROUP")
    app = environ.get("VERIFY_APP_INSIGHTS") or str(deployment.output("appInsightsName"))
    wait, poll = (float(environ.get(name, default)) for name, default in
                  (("VERIFY_TELEMETRY_WAIT", "300"), ("VERIFY_TELEMETRY_POLL", "30")))
    if wait < 0 or poll <= 0:
        raise ConfigError("VERIFY_TELEMETRY_WAIT must be at least 0 and VERIFY_TELEMETRY_POLL more than 0")
    return Telemetry(app, wait, poll)


def telemetry_query(trace_id: str) -> str:
    """The probe's three records, in Application Insights' schema (docs/operations.md): the
    handler's line with the trace id, the host's request with the line's invocation id, and the
    gateway's request (one without an InvocationId) with the trace id as its operation id."""
    return f"""let t = "{trace_id}";
let lines = traces
    | where timestamp > ago(1h)
    | where customDimensions.Category == "Host.Function.Console" and message has t
    | extend line = parse_json(message)
    | where tostring(line.trace_id) == t
    | project kind = "line", invocation_id = tostring(line.invocation_id), operation_id = tostring(line.trace_id);
let invocation = toscalar(lines | project invocation_id | take 1);
union lines,
    (requests
        | where timestamp > ago(1h)
        | where isnotempty(invocation) and tostring(customDimensions.InvocationId) == invocation
        | project kind = "host", invocation_id = tostring(customDimensions.InvocationId), operation_id = operation_Id),
    (requests
        | where timestamp > ago(1h)
        | where operation_Id == t and isempty(tostring(customDimensions.InvocationId))
        | project kind = "gateway", invocation_id = "", operation_id = operation_Id)"""


def query_records(deployment: Deployment, app: str, trace_id: str) -> dict[str, dict[str, str]]:
    """kind -> the first record of that kind (its invocation_id and operation_id)."""
    text = deployment.az("monitor", "app-insights", "query", "--app", app, "-g", deployment.resource_group,
                         "--analytics-query", telemetry_query(trace_id), "--offset", "1h", "-o", "json")
    try:
        table = (json.loads(text or "{}").get("tables") or [{}])[0]
        names = [column["name"] for column in table.get("columns") or []]
        rows = [dict(zip(names, row)) for row in table.get("rows") or []]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"az monitor app-insights query answered something else than a result table: {e}") from e
    records: dict[str, dict[str, str]] = {}
    for row in rows:
        records.setdefault(str(row.get("kind")), {k: str(v or "") for k, v in row.items()})
    return records


def check_telemetry(config: Config, report: Report, deployment: Deployment, telemetry: Telemetry, *,
                    send: Callable[..., Answer] = get, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep, trace_id: str = "") -> None:
    """One probe with a known trace id, then its records, polled for at most telemetry.wait
    seconds; PASS when the line, the host's request and the gateway's request share the ids."""
    trace_id = trace_id or secrets.token_hex(16)
    key = config.callers.first.headers() if config.callers else {"Ocp-Apim-Subscription-Key": config.subscription_key}
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    answer = send(config.api_url + token_path(config.device, config.ttl), {**key, "traceparent": traceparent},
                  config.timeout)
    if answer.status != 200:
        report.fail(TELEMETRY, f"the probe with traceparent {traceparent} answered {answer.describe()}, expected 200")
        return
    deadline = clock() + telemetry.wait
    queries = 0
    while True:
        try:
            records = query_records(deployment, telemetry.app, trace_id)
        except ConfigError as e:
            report.fail(TELEMETRY, f"cannot query Application Insights {telemetry.app}: {e}")
            return
        queries += 1
        if {"line", "host", "gateway"} <= records.keys() or clock() >= deadline:
            break
        sleep(max(0.0, min(telemetry.poll, deadline - clock())))
    waited = f"after {queries} quer{'y' if queries == 1 else 'ies'} within {telemetry.wait:.0f} s"
    line, host, gateway = records.get("line"), records.get("host"), records.get("gateway")
    if not line:
        report.fail(TELEMETRY, f"no handler line with trace_id {trace_id} {waited} ("
                    + ("API Management's request with that operation id is there: the line did not reach Application "
                       "Insights, or the handler did not get the gateway's traceparent" if gateway else
                       "nor API Management's request: is its logger sending (W3C diagnostics), does it continue the "
                       "caller's traceparent, and are the handler's lines reaching the component?") + ")")
        return
    invocation = line.get("invocation_id", "")
    problems = []
    if not invocation:
        problems.append("the line has no invocation_id (no X-Azure-Functions-InvocationId reached the handler)")
    elif not host:
        problems.append(f"no host request with InvocationId {invocation}")
    if not gateway:
        problems.append(f"no API Management request with operation id {trace_id}")
    if problems:
        report.fail(TELEMETRY, f"the line (trace_id {trace_id}, invocation_id {invocation or '-'}) is there, but "
                    f"{'; '.join(problems)} {waited}")
        return
    note = "" if host.get("operation_id") == trace_id else (
        f"; the host's request has its own operation id {host.get('operation_id') or '-'}: it joins by invocation_id only")
    report.passed(TELEMETRY, f"the line (invocation_id {invocation}, trace_id {trace_id}), the host's request "
                  f"(InvocationId {invocation}) and API Management's request (operation id {trace_id}) share the ids{note}")


# --- The deployed configuration, read through Azure Resource Manager -----------------------------

API_VERSION_WEB = "2024-04-01"
CONFIGURATION = "configuration"

# The table's rows, in the order a request meets them; each is probed, configured, or both.
LAYERS = ["subscription key", "repeated query keys", ACCESS_RESTRICTION, APP_SERVICE_AUTH, FUNCTION_KEY,
          ALLOWED_IPS, BEARER, "X-Forwarded-For", "token"]
# Layers verify can read from the deployed configuration, and what it reads for each.
READ = {
    ACCESS_RESTRICTION: "config/web ipSecurityRestrictions",
    APP_SERVICE_AUTH: "config/authsettingsV2",
    FUNCTION_KEY: "each function's authLevel",
    ALLOWED_IPS: "app settings ALLOWED_IPS, XFF_DEPTH",
    BEARER: "app settings AUTH_*",
}


@dataclass
class Deployed:
    """The configuration ARM holds for the Function App (each part as ARM returns it)."""
    web: dict
    auth: dict
    settings: dict[str, str]
    functions: list[dict]


def read_deployed(deployment: Deployment) -> Deployed:
    """config/web, config/authsettingsV2 (without secrets), the app settings and the functions of
    the deployment's Function App, through `az rest` (bounded, like every az call here)."""
    site = (f"https://management.azure.com/subscriptions/{deployment.subscription}/resourceGroups/"
            f"{deployment.resource_group}/providers/Microsoft.Web/sites/{deployment.output('functionAppName')}")

    def call(method: str, path: str) -> dict:
        text = deployment.az("rest", "--method", method, "--uri", f"{site}{path}?api-version={API_VERSION_WEB}", "-o", "json")
        value = json.loads(text or "{}")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: ARM answered {type(value).__name__}, not an object")
        return value

    settings = call("post", "/config/appsettings/list").get("properties") or {}
    return Deployed(
        web=call("get", "/config/web").get("properties") or {},
        auth=call("get", "/config/authsettingsV2").get("properties") or {},
        settings={str(k): str(v) for k, v in settings.items()},
        functions=call("get", "/functions").get("value") or [],
    )


def address(rule: str) -> str:
    """An access-restriction rule's or ALLOWED_IPS entry's address without a host-length prefix."""
    rule = rule.strip()
    for host in ("/32", "/128"):
        if rule.endswith(host):
            return rule[: -len(host)]
    return rule


def configured_layers(deployed: Deployed, config: Config, apim_principal: str) -> dict[str, str | None]:
    """For each layer verify can read: None when the configuration turns it on as the template
    does, else what is wrong (a layer the IP layer's absence switches off by design is not here)."""
    wrong: dict[str, str | None] = {}
    apim = set(config.apim_addresses)

    if config.ip_layer:
        default = deployed.web.get("ipSecurityRestrictionsDefaultAction")
        rules = [r for r in deployed.web.get("ipSecurityRestrictions") or []
                 if str(r.get("ipAddress", "")).lower() != "any"]
        allowed = {address(str(r.get("ipAddress") or r.get("tag") or r.get("vnetSubnetResourceId") or "?"))
                   for r in rules if str(r.get("action", "Allow")).lower() == "allow"}
        problems = []
        if default != "Deny":
            problems.append(f"default action is {default!r}, not Deny")
        if allowed - apim:
            problems.append(f"it also admits {', '.join(sorted(allowed - apim))}")
        if apim - allowed:
            problems.append(f"API Management's {', '.join(sorted(apim - allowed))} is not admitted")
        wrong[ACCESS_RESTRICTION] = "; ".join(problems) or None

    auth = deployed.auth
    aad = (auth.get("identityProviders") or {}).get("azureActiveDirectory") or {}
    validation = aad.get("validation") or {}
    principals = (((validation.get("defaultAuthorizationPolicy") or {}).get("allowedPrincipals") or {}).get("identities")) or []
    problems = []
    if not (auth.get("platform") or {}).get("enabled"):
        problems.append("platform.enabled is not true")
    if not (auth.get("globalValidation") or {}).get("requireAuthentication"):
        problems.append("requireAuthentication is not true")
    if (auth.get("globalValidation") or {}).get("unauthenticatedClientAction") not in ("Return401", "Return403"):
        problems.append("unauthenticated callers are not refused (unauthenticatedClientAction)")
    if aad.get("enabled") is False or not aad:
        problems.append("the Microsoft Entra provider is off")
    if not validation.get("allowedAudiences"):
        problems.append("no allowedAudiences")
    if {p.lower() for p in principals} != {apim_principal.lower()}:
        problems.append(f"allowedPrincipals.identities is {principals}, not API Management's identity only")
    wrong[APP_SERVICE_AUTH] = "; ".join(problems) or None

    levels = {}
    for function in deployed.functions:
        name = str(function.get("name", "?")).split("/")[-1]
        for binding in ((function.get("properties") or {}).get("config") or {}).get("bindings") or []:
            if str(binding.get("type", "")).lower() == "httptrigger":
                levels[name] = str(binding.get("authLevel", "")).lower()
    if not levels:
        wrong[FUNCTION_KEY] = "the host lists no HTTP functions (is the package running?)"
    else:
        open_ = sorted(name for name, level in levels.items() if level not in ("function", "admin"))
        wrong[FUNCTION_KEY] = f"authLevel is not function for {', '.join(open_)}" if open_ else None

    settings = deployed.settings
    if config.ip_layer:
        listed = {address(a) for a in settings.get("ALLOWED_IPS", "").split(",") if a.strip()}
        problems = []
        if listed != apim:
            problems.append(f"ALLOWED_IPS is {settings.get('ALLOWED_IPS', '(unset)')!r}, not API Management's addresses")
        if settings.get("XFF_DEPTH") != "1":
            problems.append(f"XFF_DEPTH is {settings.get('XFF_DEPTH', '(unset)')!r}, not 1")
        wrong[ALLOWED_IPS] = "; ".join(problems) or None

    callers = {c.strip().lower() for c in settings.get("AUTH_ALLOWED_CALLERS", "").split(",") if c.strip()}
    problems = [f"{name} is unset" for name in ("AUTH_TENANT_ID", "AUTH_AUDIENCE") if not settings.get(name, "").strip()]
    if callers != {apim_principal.lower()}:
        problems.append(f"AUTH_ALLOWED_CALLERS is {settings.get('AUTH_ALLOWED_CALLERS', '(unset)')!r}, not API Management's identity only")
    if settings.get("AUTH_ALLOW_DELEGATED", "").strip().lower() == "true":
        problems.append("AUTH_ALLOW_DELEGATED is true")
    wrong[BEARER] = "; ".join(problems) or None
    return wrong


def check_configuration(deployment: Deployment, config: Config, report: Report) -> dict[str, str] | str:
    """Reads the deployed configuration and reports each readable layer: PASS (configured) or
    FAIL naming what is wrong. Returns how each layer was read, or why nothing could be."""
    if not deployment.readable:
        return "not read: every VERIFY_* value was given and no resource group names a deployment"
    try:
        deployed = read_deployed(deployment)
        wrong = configured_layers(deployed, config, str(deployment.output("apimPrincipalId")))
    except (ConfigError, ValueError) as e:
        report.fail(CONFIGURATION, f"cannot read the deployed configuration through Azure Resource Manager: {e}")
        return {}
    read = {}
    for layer, problem in wrong.items():
        if problem is None:
            report.lines.append(f"PASS {layer} (configured): {READ[layer]} as the template sets it")
            read[layer] = "configured"
        else:
            report.fail(layer, f"configured: {READ[layer]}: {problem}")
            read[layer] = "configured wrong"
    return read


def table(config: Config, report: Report, read: dict[str, str] | str) -> list[str]:
    """One row per layer: how it was shown (probed, configured, both) and its result. A layer
    neither probed nor read fails when the configuration was read."""
    rows = [f"{'layer':<27} {'shown by':<21} result"]
    for layer in LAYERS:
        off = layer in (ACCESS_RESTRICTION, ALLOWED_IPS) and not config.ip_layer
        how = [word for word, yes in (("probed", layer in report.probed),
                                      ("configured", isinstance(read, dict) and layer in read)) if yes]
        if layer in report.failed:
            result = "FAIL"
        elif off:
            result, how = "off (the tier has no stable outbound address)", how or ["-"]
        elif how:
            result = "PASS"
        elif isinstance(read, dict):
            result = "FAIL"
            report.fail(layer, "neither probed nor read from the configuration")
        else:
            result, how = f"not shown ({read})", ["-"]
        rows.append(f"{layer:<27} {' + '.join(how) or '-':<21} {result}")
    return rows


def main() -> int:
    try:
        deployment = Deployment()
        config = configure(deployment)
    except (ConfigError, ValueError) as e:
        print(f"verify: error: {e}", file=sys.stderr)
        return 2
    callers = config.callers.kind if config.callers else "none"
    print(f"verify: gateway {config.api_url}, function {config.function_url}, IP layer {'on' if config.ip_layer else 'off'}, {config.mode} mode, "
          f"caller fact {callers}")
    report = verify(config)
    if os.environ.get("VERIFY_CASE_CHECK", "") in ("1", "on", "true"):
        check_letter_case(config, deployment, report)
    if config.telemetry:
        check_telemetry(config, report, deployment, config.telemetry)
    read = check_configuration(deployment, config, report)
    rows = table(config, report, read)
    for line in report.lines:
        print(f"verify: {line}")
    for row in rows:
        print(f"verify: | {row}")
    if report.failed:
        print(f"verify: FAILED: open or misconfigured: {', '.join(report.failed)}")
        return 1
    print("verify: every layer refused what it should; the chain serves through API Management only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
