"""Test oracle: SAS tokens as the official Azure IoT device SDK for Python makes them.

The Rust integration tests (tests/api/tokens.rs) run this once per test with a batch of
cases as JSON on stdin and read one JSON document from stdout. Everything signed or parsed
here goes through the SDK's own code (azure-iot-device, pinned in requirements.txt), never
through a re-implementation, so agreement means "the SDK would produce / accept this".

stdin:
    {"key": "<base64 policy key>", "policy": "<policy name>",
     "cases": [{"hostname": "...", "device_id": "...", "se": 1700000000, "ttl": 3600,
                "token": "<the handler's token, optional>"}]}

    A case may also name another kind of token ("kind", default "device"):
      "module":       a policy token for hostname/devices/device_id/modules/module_id;
      "device_key":   a device-key token (no skn) for hostname/devices/device_id, signed with the
                      key derived from "group_key" (base64) and device_id as DPS derives it;
      "registration": a DPS registration token for id_scope/registrations/registration_id,
                      signed with the key derived from "group_key" and registration_id.

stdout, one result per case, in order:
    {"results": [{
        "sdk_token":   SDK RenewableSasToken for hostname/devices/device_id with the given
                       policy, expiring at se (the SDK clock is pinned to se - ttl),
        "resource_uri": the SDK's _form_sas_uri(hostname, device_id),
        # present only when "token" was given:
        "parsed":      {"sr", "sig", "se", "skn"} as the SDK's token parser split the token
                       (fields are not decoded), or {"error": "..."} if the SDK rejects it,
        "parsed_resource_uri": the SDK's percent-decoded resource URI of the token,
        "parsed_expiry": the SDK's expiry_time of the token,
        "sig_over_token_sr": url-encoded SymmetricKeySigningMechanism(key).sign(sr + "\\n" + se)
                       over the token's own sr and se, exactly as RenewableSasToken signs
        # kinds device, module, device_key, when "token" was given:
        "accepted":    {"device_id", "module_id", "hostname"} as IoTHubDeviceClient (or, for a
                       module token, IoTHubModuleClient).create_from_sastoken read the token, or
                       {"error": "..."} if the SDK refused it
        # when the case also gives "update_with" (another token, e.g. the same device's on
        # another hub): what the client made from "token" says to update_sastoken(update_with):
        "updated":     "ok", or {"error": "..."} if the SDK refused the new token. The client
                       never connected, so its reauthorization (the step after the SDK's checks)
                       is answered at once instead of dialling a hub
        # kinds device_key and registration:
        "derived_key": base64(HMAC-SHA256(b64decode(group_key), id)), with Python's hmac module
        # kind registration:
        "client_token": the token ProvisioningDeviceClient.create_from_symmetric_key itself
                       builds (it sends no skn); "sdk_token" is the same SDK token class with
                       key_name="registration", as DPS's REST docs ask for
    }]}

Usage: .venv/bin/python tests/oracles/python/sas_oracle.py < cases.json
       .venv/bin/python tests/oracles/python/sas_oracle.py --self-test
"""

import json
import sys
import urllib.parse

import base64
import hashlib
import hmac

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, ProvisioningDeviceClient
from azure.iot.device.common.auth import sastoken as sdk_sastoken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from azure.iot.device.iothub.abstract_clients import _form_sas_uri
from azure.iot.device.provisioning.abstract_provisioning_device_client import (
    _form_sas_uri as _form_registration_uri,
)


class _PinnedClock:
    """Stands in for the `time` module inside the SDK's sastoken module only.

    RenewableSasToken computes `int(time.time() + ttl)`; answering `se - ttl` makes the SDK
    produce exactly the expiry the handler chose, without touching the real `time` module.
    """

    def __init__(self, now):
        self._now = float(now)

    def time(self):
        return self._now


class _pinned:
    """Pins the SDK's sastoken clock to `now` for the duration of a `with` block."""

    def __init__(self, now):
        self._clock = _PinnedClock(now)

    def __enter__(self):
        self._real = sdk_sastoken.time
        sdk_sastoken.time = self._clock

    def __exit__(self, *_):
        sdk_sastoken.time = self._real


def renewable(uri, key, key_name, se, ttl):
    with _pinned(se - ttl):
        token = sdk_sastoken.RenewableSasToken(
            uri, SymmetricKeySigningMechanism(key), key_name=key_name, ttl=ttl
        )
    if token.expiry_time != se:
        raise AssertionError(f"pinned clock did not give se={se}: {token.expiry_time}")
    return str(token)


def sdk_token(hostname, device_id, policy, key, se, ttl, module_id=None):
    uri = _form_sas_uri(hostname, device_id, module_id)
    return uri, renewable(uri, key, policy, se, ttl)


def derive(group_key, registration_id):
    """DPS's derivation, as Microsoft's docs write it out: HMAC-SHA256 with the decoded group key."""
    digest = hmac.new(
        base64.b64decode(group_key), registration_id.encode("utf-8"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def client_registration_token(id_scope, registration_id, device_key, se, ttl):
    """The token the SDK's provisioning client builds for itself (it connects only on register)."""
    with _pinned(se - ttl):
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host="global.azure-devices-provisioning.net",
            registration_id=registration_id,
            id_scope=id_scope,
            symmetric_key=device_key,
            sastoken_ttl=ttl,
        )
    return str(client._pipeline._nucleus.pipeline_configuration.sastoken)


def accepted_by_client(token, module, update_with=None):
    """What create_from_sastoken read from `token`; with `update_with`, also what the client's
    update_sastoken said of it."""
    client_class = IoTHubModuleClient if module else IoTHubDeviceClient
    try:
        client = client_class.create_from_sastoken(token)
    except Exception as e:  # refusing the token is an answer, not a crash
        return {"error": f"{type(e).__name__}: {e}"}, None
    config = client._mqtt_pipeline._nucleus.pipeline_configuration
    accepted = {
        "device_id": config.device_id,
        "module_id": config.module_id,
        "hostname": config.hostname,
    }
    if update_with is None:
        return accepted, None
    # update_sastoken checks the new token, stores it, then reauthorizes the connection; there is
    # no connection (and no hub to dial) here, so the reauthorization completes at once.
    client._mqtt_pipeline.reauthorize_connection = lambda callback: callback()
    try:
        client.update_sastoken(update_with)
    except Exception as e:  # refusing the token is an answer, not a crash
        return accepted, {"error": f"{type(e).__name__}: {e}"}
    return accepted, "ok"


def inspect_token(token, key):
    out = {}
    try:
        info = sdk_sastoken.get_sastoken_info_from_string(token)
        parsed = sdk_sastoken.NonRenewableSasToken(token)
        out["parsed"] = info
        out["parsed_resource_uri"] = parsed.resource_uri
        out["parsed_expiry"] = parsed.expiry_time
    except Exception as e:  # the SDK rejecting the token is an answer, not a crash
        out["parsed"] = {"error": f"{type(e).__name__}: {e}"}
        return out
    signature = SymmetricKeySigningMechanism(key).sign(info["sr"] + "\n" + info["se"])
    out["sig_over_token_sr"] = urllib.parse.quote(signature, safe="")
    return out


def run(request):
    key, policy = request["key"], request["policy"]
    results = []
    for case in request["cases"]:
        kind = case.get("kind", "device")
        se, ttl = int(case["se"]), int(case["ttl"])
        token = case.get("token")
        if kind in ("device", "module"):
            module_id = case["module_id"] if kind == "module" else None
            uri, sdk = sdk_token(
                case["hostname"], case["device_id"], policy, key, se, ttl, module_id
            )
            result = {"sdk_token": sdk, "resource_uri": uri}
            signing_key = key
        elif kind == "device_key":
            signing_key = derive(case["group_key"], case["device_id"])
            uri = _form_sas_uri(case["hostname"], case["device_id"])
            result = {
                "sdk_token": renewable(uri, signing_key, None, se, ttl),
                "resource_uri": uri,
                "derived_key": signing_key,
            }
        elif kind == "registration":
            signing_key = derive(case["group_key"], case["registration_id"])
            uri = _form_registration_uri(case["id_scope"], case["registration_id"])
            result = {
                "sdk_token": renewable(uri, signing_key, "registration", se, ttl),
                "client_token": client_registration_token(
                    case["id_scope"], case["registration_id"], signing_key, se, ttl
                ),
                "resource_uri": uri,
                "derived_key": signing_key,
            }
        else:
            raise ValueError(f"unknown kind {kind!r}")
        if token is not None:
            result.update(inspect_token(token, signing_key))
            if kind != "registration":
                accepted, updated = accepted_by_client(
                    token, kind == "module", case.get("update_with")
                )
                result["accepted"] = accepted
                if updated is not None:
                    result["updated"] = updated
        results.append(result)
    return {"results": results}


def self_test():
    """Known values computed independently (hashlib/hmac by hand, see below)."""
    import base64
    import hashlib
    import hmac

    key = base64.b64encode(bytes(range(32))).decode()
    sr = urllib.parse.quote("h.azure-devices.net/devices/dev-1", safe="")
    assert sr == "h.azure-devices.net%2Fdevices%2Fdev-1", sr
    expected_sig = base64.b64encode(
        hmac.new(bytes(range(32)), (sr + "\n1700003600").encode(), hashlib.sha256).digest()
    ).decode()
    expected = (
        f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(expected_sig, safe='')}"
        "&se=1700003600&skn=device"
    )
    out = run(
        {
            "key": key,
            "policy": "device",
            "cases": [
                {
                    "hostname": "h.azure-devices.net",
                    "device_id": "dev-1",
                    "se": 1700003600,
                    "ttl": 3600,
                    "token": expected,
                }
            ],
        }
    )["results"][0]
    assert out["sdk_token"] == expected, (out["sdk_token"], expected)
    assert out["parsed_resource_uri"] == "h.azure-devices.net/devices/dev-1", out
    assert out["parsed_expiry"] == 1700003600, out
    assert out["sig_over_token_sr"] == urllib.parse.quote(expected_sig, safe=""), out
    # The derivation against the published example (DPS symmetric key attestation docs).
    group_key = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
    assert (
        derive(group_key, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6")
        == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
    )
    registration = run(
        {
            "key": key,
            "policy": "device",
            "cases": [
                {
                    "kind": "registration",
                    "id_scope": "0ne00000A0A",
                    "registration_id": "reg-1",
                    "group_key": group_key,
                    "se": 1700003600,
                    "ttl": 3600,
                }
            ],
        }
    )["results"][0]
    assert registration["sdk_token"] == registration["client_token"] + "&skn=registration", registration
    print("python oracle self-test ok")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    else:
        json.dump(run(json.load(sys.stdin)), sys.stdout)
        sys.stdout.write("\n")
