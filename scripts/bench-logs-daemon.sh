#!/usr/bin/env bash
# The daemon's log room: log line written -> `log` alert in the alert log (latency p50/p99
# over N lines, one at a time, each waited for), then the memory of 100k distinct
# correlation keys (RSS from the status socket before and after 100k lines, each a new
# group-by value of an event_count correlation that never fires).
# Floor: `tail -F -n0 FILE` (GNU tail, inotify) over the same kind of lines, write -> line on
# its stdout, measured the same way: no parsing, no rules, no alert log, no fsync.
# Memory: the daemon's RSS with its log room idle is the baseline of the 100k-key delta.
# Usage (root): scripts/bench-logs-daemon.sh [N=1000] [KEYS=100000]
#   PROFILE=debug uses target/debug (default: release, built here).
# Results: scripts/bench-runs/logs-daemon-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
KEYS="${2:-100000}"
PROFILE="${PROFILE:-release}"
[ "$(id -u)" = 0 ] || { echo "needs root (fanotify)"; exit 2; }
if [ "$PROFILE" = release ]; then cargo build --release --locked -q; else cargo build --locked -q; fi
K="$PWD/target/$PROFILE/kmsentry"
W="$(mktemp -d /tmp/kmsentry-bench-logd.XXXXXX)"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/cfg" "$W/logs" "$W/rules"
echo "server = kms" > "$W/cfg/client.conf"
: > "$W/logs/app.log"
cat > "$W/rules/bench.yml" <<'R'
title: Bench export
id: bench-export
status: test
level: high
logsource: {product: bench, service: audit}
detection:
  sel: {action: export}
  condition: sel
---
title: Bench key use
id: bench-use
status: test
level: low
logsource: {product: bench, service: audit}
detection:
  sel: {action: use}
  condition: sel
---
title: Bench key use burst (never fires at this rate)
id: bench-use-burst
status: test
level: high
correlation:
  type: event_count
  rules: [bench-use]
  group-by: [user]
  timespan: 1h
  condition: {gte: 1000000}
R
cat > "$W/policy.yaml" <<P
version: 1
groups:
  - name: cfg
    class: kms-config
    paths: [$W/cfg]
logs:
  - name: app
    source: {file: "$W/logs/app.log"}
    format: json
    logsource: {product: bench, service: audit}
rules: [$W/rules]
P
"$K" baseline init --policy "$W/policy.yaml" --db "$W/b.db" >/dev/null
"$K" watch --policy "$W/policy.yaml" --db "$W/b.db" --alerts "$W/alerts.jsonl" \
  --status-socket "$W/s.sock" --run-for 1800 2>"$W/watch.err" &
PID=$!
python3 - "$W" "$K" "$N" "$KEYS" "$PROFILE" <<'PY'
import json, os, subprocess, sys, time
w, k, n, keys, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
alerts = f"{w}/alerts.jsonl"
def status():
    r = subprocess.run([k, "status", "--format", "json", "--socket", f"{w}/s.sock"], capture_output=True, text=True)
    return json.loads(r.stdout)
t0 = time.time()
while True:
    try:
        if any(json.loads(l).get("kind") == "started" for l in open(alerts)): break
    except FileNotFoundError: pass
    if time.time() - t0 > 60: sys.exit("no started")
    time.sleep(0.01)
rss0 = status()["rss_kib"]
af = open(alerts); af.seek(0, 2)
buf = ""
lat = []
log = open(f"{w}/logs/app.log", "a")
ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
for i in range(n):
    line = json.dumps({"time": ts, "action": "export", "user": "alice", "n": i}) + "\n"
    t = time.perf_counter()
    log.write(line); log.flush()
    while True:
        chunk = af.read()
        if chunk:
            buf += chunk
            done = False
            while "\n" in buf:
                l, buf = buf.split("\n", 1)
                a = json.loads(l)
                if a.get("kind") == "log" and a.get("fields", {}).get("n") == i: done = True
            if done: break
        time.sleep(0.0002)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
rss1 = status()["rss_kib"]
# 100k distinct correlation keys, one line each.
t = time.perf_counter()
step = 10000
for s in range(0, keys, step):
    log.write("".join(json.dumps({"time": ts, "action": "use", "user": f"u{j}"}) + "\n" for j in range(s, min(keys, s + step))))
    log.flush()
want = status()["logs"]["counts"]["lines"] + 0
while status()["logs"]["counts"]["lines"] < n + keys:
    if time.perf_counter() - t > 600: sys.exit("log room did not catch up")
    time.sleep(0.2)
secs = time.perf_counter() - t
rss2 = status()["rss_kib"]
# The floor: tail -F.
open(f"{w}/tail.log", "w").close()
tp = subprocess.Popen(["tail", "-F", "-n0", f"{w}/tail.log"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
time.sleep(0.5)
tl = open(f"{w}/tail.log", "a")
tlat = []
for i in range(n):
    line = json.dumps({"time": ts, "action": "export", "user": "alice", "n": i}) + "\n"
    t = time.perf_counter()
    tl.write(line); tl.flush()
    tp.stdout.readline()
    tlat.append((time.perf_counter() - t) * 1000)
tp.kill()
tlat.sort()
tq = lambda q: tlat[min(len(tlat) - 1, int(q * len(tlat)))]
res = {"profile": profile, "lines": n, "latency_ms": {"p50": round(p(0.5), 2), "p90": round(p(0.9), 2), "p99": round(p(0.99), 2), "max": round(lat[-1], 2)},
       "floor_tail_F_ms": {"p50": round(tq(0.5), 3), "p99": round(tq(0.99), 3)},
       "keys": keys, "rss_kib": {"start": rss0, "after_latency": rss1, "after_keys": rss2, "keys_delta": rss2 - rss1},
       "keys_lines_per_s": round(keys / secs)}
print(json.dumps(res, indent=1))
os.makedirs("scripts/bench-runs", exist_ok=True)
open(f"scripts/bench-runs/logs-daemon-{time.strftime('%Y%m%dT%H%M%S')}.json", "w").write(json.dumps(res, indent=1) + "\n")
PY
"$K" log verify "$W/alerts.jsonl" >/dev/null && echo "alert log chain intact"
