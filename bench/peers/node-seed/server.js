// Benchmark peer: the seed function `getSASTokenByDeviceID-Secured-wACL` (index.js of the article
// this project grew from), run the way its users run it today: one Node.js process, the function
// body called once per request with a Functions-style `context` and `req`, tokens from the
// `azure-iothub` package's `SharedAccessSignature.create`.
//
// `node server.js PORT`, settings from the seed's app settings: `iothubhostname`, `keyname`,
// `keyvalue`, `allowedip`. Routes: the seed's `GET /api/getSASTokenByDeviceID?deviceid=ID`, and
// `GET /api/devices/{deviceId}/sas-token` mapped onto the same function so the benchmark can hit the
// handler's routes on every server. Anything else: 404. Prints `listening on ADDR` when bound.
//
// The function body below is the seed's, kept as written (loose `!=`, `split(':')[0]`, the
// fractional `se`, the per-call `require`); only the denial branch, cut off in the article, is
// filled in with the obvious 403.
'use strict';

const http = require('node:http');

const getClientAddress = function (req) {
  return (req.headers['x-forwarded-for'] || '').split(':')[0]
    || req.connection.remoteAddress;
};

function seedFunction(context, req) {
  var keyName = process.env.keyname;
  var keyValue = process.env.keyvalue;
  var deviceId = req.query.deviceid;
  var iothubHost = process.env.iothubhostname + "/devices/" + deviceId;
  var ip_info = getClientAddress(req);
  var allowedIP = process.env.allowedip;
  if (allowedIP != ip_info) {
    context.log("IP Address not allowed!");
    context.res = { status: 403, body: "IP Address not allowed!" };
    context.done();
    return;
  }

  var serviceSas = require('azure-iothub').SharedAccessSignature;
  var expiresInMins = 60;
  var expires = (Date.now() / 1000) + expiresInMins * 60;
  var sasTokenDevice = serviceSas.create(iothubHost, keyName, keyValue, expires);
  var sasTokenDeviceString = sasTokenDevice.toString();
  context.res = {
    body: { sastoken: sasTokenDeviceString }
  };
  context.done();
}

// What the Functions Node worker does around the function: build `req` (headers, query object),
// call it, and write `context.res` as the HTTP response (objects as JSON).
const REST_ROUTE = /^\/api\/devices\/([^/]+)\/sas-token$/;

const server = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://127.0.0.1');
  const query = Object.fromEntries(url.searchParams);
  let matched = url.pathname === '/api/getSASTokenByDeviceID';
  const rest = REST_ROUTE.exec(url.pathname);
  if (rest) {
    matched = true;
    query.deviceid = decodeURIComponent(rest[1]);
  }
  if (!matched || request.method !== 'GET') {
    response.writeHead(404).end();
    return;
  }
  const req = { method: request.method, headers: request.headers, query, connection: request.socket };
  const context = {
    res: undefined,
    log: (...args) => console.log(...args),
    done: () => {
      const res = context.res || {};
      const json = typeof res.body === 'object';
      const body = json ? JSON.stringify(res.body) : String(res.body ?? '');
      response.writeHead(res.status || 200, {
        'Content-Type': json ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
      });
      response.end(body);
    },
  };
  seedFunction(context, req);
});

const port = Number(process.argv[2] || process.env.FUNCTIONS_CUSTOMHANDLER_PORT || 8080);
server.listen(port, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
