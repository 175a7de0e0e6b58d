// Test oracle: SAS tokens as the official Azure IoT common SDK for Node makes them.
//
// The Rust integration tests (tests/api/tokens.rs) run this once per test with a batch of
// cases as JSON on stdin and read one JSON document from stdout. Signing, encoding and
// parsing all go through azure-iot-common (pinned in package.json), never a re-implementation.
//
// azure-iot-common's SharedAccessSignature.create(resourceUri, keyName, key, expiry) does
// NOT encode resourceUri: it signs it as given. The device SDK encodes it first with
// encodeUriComponentStrict(host + '/devices/' + id) (lower-case hex for !'()*), which is
// what `sdk_token` below does. `sig_over_token_sr` hands the handler's already-encoded sr to
// create(), so the SDK signs exactly the bytes the handler signed.
//
// stdin:
//   {"key": "<base64 policy key>", "policy": "<policy name>",
//    "cases": [{"hostname": "...", "device_id": "...", "se": 1700000000,
//               "token": "<the handler's token, optional>"}]}
//   A case may name another kind of token ("kind", default "device"): "module" (module_id: a
//   policy token for hostname/devices/device_id/modules/module_id, the URI encoded as the device
//   SDK encodes it) or "device_key" (group_key: a token without skn for hostname/devices/device_id,
//   signed with the key derived from group_key and device_id as DPS derives it).
// stdout:
//   {"results": [{"sdk_token": "...", "sdk_fields": {"sr","sig","skn","se"},
//                 "parsed": {...} | {"error": "..."},      // only with "token"
//                 "sig_over_token_sr": "..."}]}            // only with "token"
//
// Usage: node tests/oracles/node/sas_oracle.js < cases.json
//        node tests/oracles/node/sas_oracle.js --self-test
'use strict';

const crypto = require('crypto');
const { SharedAccessSignature, encodeUriComponentStrict } = require('azure-iot-common');

function derive(groupKey, registrationId) {
  return crypto
    .createHmac('sha256', Buffer.from(groupKey, 'base64'))
    .update(registrationId, 'utf8')
    .digest('base64');
}

function sdkToken(hostname, deviceId, policy, key, se, moduleId) {
  const uri = hostname + '/devices/' + deviceId + (moduleId ? '/modules/' + moduleId : '');
  const sr = encodeUriComponentStrict(uri);
  const sas = SharedAccessSignature.create(sr, policy, key, se);
  return {
    sdk_token: sas.toString(),
    sdk_fields: { sr: sas.sr, sig: sas.sig, skn: sas.skn, se: String(sas.se) },
  };
}

function inspectToken(token, policy, key) {
  let parsed;
  try {
    parsed = SharedAccessSignature.parse(token, policy ? ['sr', 'sig', 'se', 'skn'] : ['sr', 'sig', 'se']);
  } catch (e) {
    return { parsed: { error: `${e.name}: ${e.message}` } };
  }
  const fields = { sr: parsed.sr, sig: parsed.sig, se: parsed.se, skn: parsed.skn };
  // create() signs sr verbatim and encodes the signature with encodeUriComponentStrict.
  const resign = SharedAccessSignature.create(parsed.sr, policy, key, parsed.se);
  return { parsed: fields, sig_over_token_sr: resign.sig };
}

function run(request) {
  const { key, policy } = request;
  const results = request.cases.map((c) => {
    const kind = c.kind || 'device';
    let caseKey = key;
    let casePolicy = policy;
    if (kind === 'device_key') {
      caseKey = derive(c.group_key, c.device_id);
      casePolicy = undefined;
    } else if (kind !== 'device' && kind !== 'module') {
      throw new Error(`unknown kind ${kind}`);
    }
    const moduleId = kind === 'module' ? c.module_id : undefined;
    const result = sdkToken(c.hostname, c.device_id, casePolicy, caseKey, Number(c.se), moduleId);
    if (kind === 'device_key') {
      result.derived_key = caseKey;
    }
    if (c.token !== undefined && c.token !== null) {
      Object.assign(result, inspectToken(c.token, casePolicy, caseKey));
    }
    return result;
  });
  return { results };
}

function selfTest() {
  const assert = require('assert');
  const keyBytes = Buffer.from([...Array(32).keys()]);
  const key = keyBytes.toString('base64');
  const sr = 'h.azure-devices.net%2Fdevices%2Fdev%2a1';
  const sig = crypto.createHmac('sha256', keyBytes).update(sr + '\n1700003600').digest('base64');
  const encSig = encodeURIComponent(sig);
  const out = run({
    key,
    policy: 'device',
    cases: [{ hostname: 'h.azure-devices.net', device_id: 'dev*1', se: 1700003600,
      token: `SharedAccessSignature sr=${sr}&sig=${encSig}&se=1700003600&skn=device` }],
  }).results[0];
  assert.strictEqual(out.sdk_token,
    `SharedAccessSignature sr=${sr}&sig=${encSig}&skn=device&se=1700003600`);
  assert.deepStrictEqual(out.parsed, { sr, sig: encSig, se: '1700003600', skn: 'device' });
  assert.strictEqual(out.sig_over_token_sr, encSig);
  const groupKey = '8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==';
  assert.strictEqual(derive(groupKey, 'sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6'),
    'Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=');
  const deviceKey = run({ key, policy: 'device', cases: [{ kind: 'device_key',
    hostname: 'h.azure-devices.net', device_id: 'dev-1', group_key: groupKey, se: 1700003600 }] })
    .results[0];
  assert.strictEqual(deviceKey.sdk_fields.skn, undefined, 'a device-key token has no skn');
  const module = run({ key, policy: 'device', cases: [{ kind: 'module',
    hostname: 'h.azure-devices.net', device_id: 'd', module_id: 'm', se: 1700003600 }] }).results[0];
  assert.strictEqual(module.sdk_fields.sr, 'h.azure-devices.net%2Fdevices%2Fd%2Fmodules%2Fm');
  console.log('node oracle self-test ok');
}

if (process.argv[2] === '--self-test') {
  selfTest();
} else {
  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => { input += chunk; });
  process.stdin.on('end', () => {
    process.stdout.write(JSON.stringify(run(JSON.parse(input))) + '\n');
  });
}
