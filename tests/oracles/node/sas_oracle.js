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

function sdkToken(hostname, deviceId, policy, key, se) {
  const sr = encodeUriComponentStrict(hostname + '/devices/' + deviceId);
  const sas = SharedAccessSignature.create(sr, policy, key, se);
  return {
    sdk_token: sas.toString(),
    sdk_fields: { sr: sas.sr, sig: sas.sig, skn: sas.skn, se: String(sas.se) },
  };
}

function inspectToken(token, policy, key) {
  let parsed;
  try {
    parsed = SharedAccessSignature.parse(token, ['sr', 'sig', 'se', 'skn']);
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
    const result = sdkToken(c.hostname, c.device_id, policy, key, Number(c.se));
    if (c.token !== undefined && c.token !== null) {
      Object.assign(result, inspectToken(c.token, policy, key));
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
