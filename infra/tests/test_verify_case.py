"""`make verify`'s opt-in letter-case check (VERIFY_CASE_CHECK=1, infra/verify.py
check_letter_case) against stand-ins: a fake Azure CLI that keeps the hub's device registry
(fake_az.py), and one local HTTP server playing the two endpoints the check talks to — the
gateway's token route, which signs hub-policy tokens in the handler's format (README, "API"), and
IoT Hub's HTTPS device API (POST /devices/{id}/messages/events), which accepts a message only with
a SAS token whose signature verifies under the policy key, whose `se` is in the future, and whose
`sr` names the device in the path — compared with or without letter case, as the scenario says.
The check must tell the two hubs apart, delete both test devices whatever happened, and never
print the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import fake_az
import verify

SUBSCRIPTION = fake_az.SUBSCRIPTION
GROUP = "rg-iothub-sas"
HUB = "contoso-eu.azure-devices.net"
POLICY = "device"
KEY = base64.b64encode(bytes(range(32))).decode()


def sign(resource: str, expiry: int) -> str:
    sr = urllib.parse.quote(resource, safe="")
    digest = hmac.new(base64.b64decode(KEY), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={POLICY}"


class Stand(http.server.BaseHTTPRequestHandler):
    """The gateway's token route and IoT Hub's device-to-cloud message route."""

    ignore_case = False
    registered: callable = None  # the device ids the hub's registry holds now
    sent: list = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def answer(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # the gateway: /api/devices/{id}/sas-token
        path = urllib.parse.urlsplit(self.path).path
        parts = path.split("/")
        if len(parts) == 5 and parts[2] == "devices" and parts[4] == "sas-token":
            device = urllib.parse.unquote(parts[3])
            self.answer(200, {"sastoken": sign(f"{HUB}/devices/{device}", int(time.time()) + 300),
                              "deviceId": device, "hostName": HUB})
        else:
            self.answer(404, {"type": "about:blank"})

    def do_POST(self) -> None:  # IoT Hub: /devices/{id}/messages/events
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        device = urllib.parse.unquote(parts[2])
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        token = self.headers.get("Authorization", "")
        fields = dict(f.split("=", 1) for f in token.removeprefix("SharedAccessSignature ").split("&") if "=" in f)
        sr, se = fields.get("sr", ""), fields.get("se", "0")
        want = base64.b64encode(hmac.new(base64.b64decode(KEY), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
        named = urllib.parse.unquote(sr)
        resource = f"{HUB}/devices/{device}"
        same = named.lower() == resource.lower() if self.ignore_case else named == resource
        ok = (hmac.compare_digest(urllib.parse.unquote(fields.get("sig", "")), want) and int(se) > time.time()
              and same and device in type(self).registered())
        type(self).sent.append((device, ok))
        self.answer(204 if ok else 401, None if ok else {"Message": "ErrorCode:IotHubUnauthorizedAccess;Unauthorized"})


@pytest.fixture
def stand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = fake_az.default_state()
    fake_az.install(tmp_path, state)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")

    def registered() -> list[str]:
        return json.loads((tmp_path / "fake-az-state.json").read_text())["iot_devices"].get("contoso-eu", [])

    handler = type("Handler", (Stand,), {"registered": staticmethod(registered), "sent": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("VERIFY_CASE_HUB_URL", base)
    monkeypatch.setenv("VERIFY_CASE_DEVICE_ID", "verify-case-t1")
    yield handler, base, tmp_path
    server.shutdown()


def run(base: str, mode: str = verify.HUB_POLICY) -> verify.Report:
    config = verify.Config(
        api_url=f"{base}/api", subscription_key="subscription-key", function_url=f"{base}/api", function_key="f",
        hub=HUB, mode=mode, policy=POLICY, id_scope="", ip_layer=False, apim_addresses=[], app_service_auth=True,
        bearer=True, device="verify-device", module="verify-module", ttl=300, timeout=5, hubs=[HUB])
    deployment = verify.Deployment({"RESOURCE_GROUP": GROUP, "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION})
    report = verify.Report()
    verify.check_letter_case(config, deployment, report)
    return report


def device_calls(directory: Path) -> list[str]:
    return [" ".join(c["argv"][:4] + [fake_az.option(c["argv"], "-d") or ""]) for c in fake_az.calls(directory)
            if c["argv"][:3] == ["iot", "hub", "device-identity"]]


@pytest.mark.parametrize("ignore_case", [False, True], ids=["with-case", "without-case"])
def test_the_check_tells_a_hub_that_compares_with_case_from_one_that_does_not(stand, ignore_case: bool) -> None:
    handler, base, directory = stand
    handler.ignore_case = ignore_case
    report = run(base)
    notes = [line for line in report.lines if line.startswith("NOTE letter case: ")]
    assert len(notes) == 1 and not report.failed, report.lines
    if ignore_case:
        assert "WITHOUT letter case" in notes[0] and "enrollment-group mode" in notes[0], notes
    else:
        assert "WITH letter case" in notes[0], notes
    assert handler.sent == [("verify-case-t1", True), ("VERIFY-CASE-T1", ignore_case)], "the control, then the twin"
    assert device_calls(directory) == [
        "iot hub device-identity create verify-case-t1", "iot hub device-identity create VERIFY-CASE-T1",
        "iot hub device-identity delete verify-case-t1", "iot hub device-identity delete VERIFY-CASE-T1",
    ]
    for call in fake_az.calls(directory):
        if call["argv"][:2] != ["account", "show"]:
            assert "--subscription" in call["argv"], call
    assert not any("SharedAccessSignature" in line or "sig=" in line for line in report.lines), "never the token"


def test_the_devices_are_deleted_when_the_hub_refuses_the_token_for_its_own_device(stand) -> None:
    handler, base, directory = stand
    handler.registered = staticmethod(lambda: [])  # the hub knows neither device: the control fails
    report = run(base)
    assert report.failed == ["letter case"] and "says nothing" in report.lines[-1], report.lines
    assert [c.split()[3] for c in device_calls(directory)] == ["create", "create", "delete", "delete"]


def test_a_second_device_that_cannot_be_created_still_deletes_the_first(stand) -> None:
    _, base, directory = stand
    state = json.loads((directory / "fake-az-state.json").read_text())
    state["iot_devices"] = {"contoso-eu": ["VERIFY-CASE-T1"]}  # left over: the second create fails
    (directory / "fake-az-state.json").write_text(json.dumps(state))
    report = run(base)
    assert report.failed == ["letter case"] and "DeviceAlreadyExists" in " ".join(report.lines), report.lines
    assert device_calls(directory)[-1] == "iot hub device-identity delete verify-case-t1", device_calls(directory)


def test_enrollment_group_mode_skips_the_check_without_touching_the_registry(stand) -> None:
    _, base, directory = stand
    report = run(base, verify.ENROLLMENT_GROUP)
    assert report.lines and report.lines[0].startswith("SKIP letter case"), report.lines
    assert not device_calls(directory)
