"""Test oracle: SAS tokens as the official Azure IoT device SDK for Python makes them.

The Rust integration tests (tests/api/tokens.rs) run this once per test with a batch of
cases as JSON on stdin and read one JSON document from stdout. Everything signed or parsed
here goes through the SDK's own code (azure-iot-device, pinned in requirements.txt), never
through a re-implementation, so agreement means "the SDK would produce / accept this".

stdin:
    {"key": "<base64 policy key>", "policy": "<policy name>",
     "cases": [{"hostname": "...", "device_id": "...", "se": 1700000000, "ttl": 3600,
                "token": "<the handler's token, optional>"}]}

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
    }]}

Usage: .venv/bin/python tests/oracles/python/sas_oracle.py < cases.json
       .venv/bin/python tests/oracles/python/sas_oracle.py --self-test
"""

import json
import sys
import urllib.parse

from azure.iot.device.common.auth import sastoken as sdk_sastoken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from azure.iot.device.iothub.abstract_clients import _form_sas_uri


class _PinnedClock:
    """Stands in for the `time` module inside the SDK's sastoken module only.

    RenewableSasToken computes `int(time.time() + ttl)`; answering `se - ttl` makes the SDK
    produce exactly the expiry the handler chose, without touching the real `time` module.
    """

    def __init__(self, now):
        self._now = float(now)

    def time(self):
        return self._now


def sdk_token(hostname, device_id, policy, key, se, ttl):
    uri = _form_sas_uri(hostname, device_id)
    real_time = sdk_sastoken.time
    sdk_sastoken.time = _PinnedClock(se - ttl)
    try:
        token = sdk_sastoken.RenewableSasToken(
            uri, SymmetricKeySigningMechanism(key), key_name=policy, ttl=ttl
        )
    finally:
        sdk_sastoken.time = real_time
    if token.expiry_time != se:
        raise AssertionError(f"pinned clock did not give se={se}: {token.expiry_time}")
    return uri, str(token)


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
        uri, token = sdk_token(
            case["hostname"], case["device_id"], policy, key, int(case["se"]), int(case["ttl"])
        )
        result = {"sdk_token": token, "resource_uri": uri}
        if case.get("token") is not None:
            result.update(inspect_token(case["token"], key))
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
    print("python oracle self-test ok")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    else:
        json.dump(run(json.load(sys.stdin)), sys.stdout)
        sys.stdout.write("\n")
