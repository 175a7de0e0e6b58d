#!/usr/bin/env bash
# Where a request's user-space time goes: the handler and the floor under valgrind's callgrind,
# counting instructions, which (unlike seconds) do not depend on what else the machine is doing.
# This machine's VM exposes no hardware counters (`perf stat -e instructions` is "not supported"),
# so callgrind is the profiler.
#
#   bench/profile.sh            # ~4 min: builds with line tables into target/prof, then profiles
#                               # the floor, the handler with one hub, and with three hubs
#
# Each server is run twice under callgrind, answering N1 and N2 sequential keep-alive requests;
# the difference divided by N2 - N1 is the cost of one request without start-up. Prints the
# instructions and allocator calls per request and the handler's costliest parts. Kernel work
# (socket calls, loopback TCP) is not counted; the CPU-seconds in docs/benchmarks.md include it.
# Under valgrind, SHA-256 runs in software (valgrind hides the CPU's SHA extensions), so signing
# counts several times what it costs natively; `cargo bench --bench core` has the native figure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

LOG_PREFIX=profile
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

command -v valgrind >/dev/null 2>&1 || apt_install valgrind

export CARGO_TARGET_DIR="$root/target/prof" CARGO_PROFILE_RELEASE_STRIP=false \
  CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
cargo build --locked --release --quiet --bin handler
(cd bench/floor && cargo build --locked --release --quiet)

exec python3 - "$root/target/prof/release" "$root/target/prof/callgrind" <<'PY'
"""Run each server under callgrind for N1 and N2 requests; report the per-request difference."""
import collections, http.client, os, re, signal, socket, subprocess, sys, time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, "bench")
import measure  # the benchmark's request, settings and helpers

bins, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
N1, N2 = 500, 2500
# name -> (argv, environment, request): the floor; the handler with one hub, as the load
# benchmark runs it; and with three hubs, the request naming the third by its device host name
# (make bench's three-hub row), so the cost of choosing a hub is counted, not timed.
SERVERS = {
    "floor": (lambda port: [str(bins / "bench-floor"), str(port), "235", "current"],
              measure.handler_env, measure.PATH),
    "handler": (lambda port: [str(bins / "handler")], measure.handler_env, measure.PATH),
    "3hubs": (lambda port: [str(bins / "handler")], measure.three_hub_env, measure.THREE_HUB_PATH),
}


def run(name, n, port):
    data = out / f"{name}.{n}.callgrind"
    argv, environment, path = SERVERS[name]
    env = {**os.environ, **environment(port)}
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={data}", *argv(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(3000):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(n):
            conn.request("GET", path, headers={"X-Forwarded-For": measure.XFF})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
        conn.close()
    finally:
        # The handler drains and exits on SIGTERM; the floor dies of it. Either way callgrind
        # writes its file.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return data


def parse(path):
    """Self cost per function, inclusive cost per function, calls into the allocator."""
    text = path.read_text().splitlines()
    names, self_cost, calls = {}, collections.Counter(), collections.Counter()
    fn = cfn = None
    total = 0
    pending_call = False
    for line in text:
        if line.startswith("fn="):
            m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
            if m.group(2):
                names[m.group(1)] = m.group(2)
            fn, pending_call = names[m.group(1)], False
        elif line.startswith("cfn="):
            m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line)
            if m.group(2):
                names[m.group(1)] = m.group(2)
            cfn = names[m.group(1)]
        elif line.startswith("calls="):
            pending_call = True
            calls[cfn] += int(line.split()[0][6:])
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            cost = int(line.split()[1]) if len(line.split()) > 1 else 0
            if pending_call:
                pending_call = False  # inclusive cost of a call: not self cost
            else:
                self_cost[fn] += cost
        elif line.startswith("totals:") or line.startswith("summary:"):
            total = int(line.split()[1])
    return total, self_cost, calls


def inclusive(path):
    """Inclusive cost per function, from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                         capture_output=True, text=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(?:[^:]*:)?(.*?)(?: \[.*\])?$", line)
        if m:
            costs[m.group(2)] = max(costs.get(m.group(2), 0), int(m.group(1).replace(",", "")))
    return costs


ALLOC = ("malloc", "free", "realloc", "calloc")
PARTS = [
    ("request log line (request_log::write, with its write to stdout)",
     r"^iothub_sas_handler::request_log::write$"),
    ("Signer::sign (software SHA-256 here)", r"^iothub_sas_handler::sas::Signer::sign$"),
    ("response body (serde_json::to_writer)", r"^serde_json::ser::to_writer$"),
    ("expiresOn (humantime)", r"Rfc3339Timestamp as core::fmt::Display>::fmt$"),
    ("query string (RawQuery::parse)", r"RawQuery.*::parse$"),
    ("caller (client_ip::caller_ip)", r"^iothub_sas_handler::client_ip::caller_ip$"),
]
port = 19400
results = {}
for name in SERVERS:
    files = []
    for n in (N1, N2):
        port += 1
        files.append(run(name, n, port))
    (t1, s1, c1), (t2, s2, c2) = parse(files[0]), parse(files[1])
    per = lambda a, b: (b - a) / (N2 - N1)
    allocs = sum(per(c1[k], c2[k]) for k in ALLOC)
    alloc_self = sum(per(s1[k], s2[k]) for k in s2
                     if k in ALLOC or k.startswith(("_int_", "malloc_", "unlink_chunk", "tcache")))
    results[name] = (per(t1, t2), allocs, alloc_self)
    print(f"{name:8} {per(t1, t2):9,.0f} instructions/request, {allocs:5.1f} malloc/realloc/free "
          f"calls/request ({alloc_self:,.0f} instructions in the allocator)")
    if name == "handler":
        i1, i2 = inclusive(files[0]), inclusive(files[1])
        for label, pattern in PARTS:
            key = next((k for k in sorted(i2, key=lambda k: -i2[k]) if re.search(pattern, k)), None)
            if key:
                print(f"           {per(i1.get(key, 0), i2[key]):9,.0f}  {label}")
f, h, t = results["floor"][0], results["handler"][0], results["3hubs"][0]
print(f"handler / floor: {h / f:.1f}× the user-space instructions per request")
print(f"three hubs (hub = the third) / one hub: {t / h:.3f}× the user-space instructions per request")
PY
