#!/usr/bin/env bash
# bench-watch.sh: the cost of `kmsentry watch` on the permission path and its latency, side
# by side in one run with no listener and with fapolicyd (Debian's, --permissive).
#
# What is measured
#   open+close µs (median of rounds of N opens by one process, examples/open_loop.rs):
#     none/unwatched   no listener, a file in the watched directory that no group claims
#     none/enforced    no listener, the enforced key file
#     kms/unwatched    kmsentry watch running; the unwatched file (target <= 1.1x none)
#     kms/enforced     kmsentry watch running; the key file opened by its allowed exe
#                      (a permission event per open: read /proc, decide, answer)
#     fapo/enforced    fapolicyd --permissive (mount marks, OPEN_PERM on everything) with
#                      a rule naming the same exe and file; the same open
#     fapo/unwatched   fapolicyd; the unwatched file (it decides on every open)
#   modification -> alert latency: 300 appends (write + close) to a watched config; latency
#     = the alert's `ts` minus the writer's clock before write(2); p50/p99.
#   100k entries: daemon start on the bench corpus (scripts/make-corpus.py) with its
#     baseline: time from exec to the `started` record (marks + full reconcile, every file
#     hashed), and RSS afterwards (from `kmsentry status`).
#
# fapolicyd needs root and changes host state while it runs: this script backs up
# /etc/fapolicyd/fapolicyd.conf, runs it as root (uid/gid = root: dropping to its own user
# fails in some sandboxes), and restores the file at exit. It is skipped if it cannot be
# installed (apt) or started.
#
#   --compare BIN: also run another kmsentry build (e.g. main's) on the same key in the same
#     run, for an A/B of a change: rows "other build", and the ratio of this build to it.
#
# Usage: scripts/bench-watch.sh [--work DIR] [--opens N] [--rounds R] [--no-corpus] [--compare BIN]
# Output: a Markdown table on stdout and a CSV in scripts/bench-runs/watch-<UTC>.csv.
set -euo pipefail

WORK=/var/tmp/kmsentry-watchbench
OPENS=20000
ROUNDS=7
CORPUS=1
COMPARE=
while [ $# -gt 0 ]; do
    case "$1" in
        --compare) COMPARE=$(readlink -f "$2"); shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --opens) OPENS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --no-corpus) CORPUS=0; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench-watch.sh needs root (fanotify)" >&2; exit 2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
cargo build --release --locked --quiet --bin kmsentry --example open_loop
K=$REPO/target/release/kmsentry
OL=$(readlink -f "$REPO/target/release/examples/open_loop")

rm -rf "$WORK"
mkdir -p "$WORK/t/keys" "$WORK/t/conf"
printf -- '-----BEGIN PRIVATE KEY-----\nbench\n-----END PRIVATE KEY-----\n' > "$WORK/t/keys/client.key"
chmod 600 "$WORK/t/keys/client.key"
echo "not watched" > "$WORK/t/keys/unwatched.txt"
echo "endpoint: https://kms.example" > "$WORK/t/conf/kms.yaml"
cat > "$WORK/policy.yaml" <<EOF
version: 1
groups:
  - name: keys
    class: private-key
    paths: [$WORK/t/keys/client.key]
    access:
      mode: enforce
      allow:
        - exe: $OL
  - name: conf
    class: kms-config
    paths: [$WORK/t/conf]
EOF
"$K" -q baseline init --force --policy "$WORK/policy.yaml" --db "$WORK/b.db"

FAPO_CONF=/etc/fapolicyd/fapolicyd.conf
FAPO_RULES=/etc/fapolicyd/rules.d/10-kmsentry-bench.rules
DAEMON=
FPID=
cleanup() {
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null || true
    # Only the fapolicyd this script started, by its pid: another may be someone else's.
    [ -n "$FPID" ] && kill "$FPID" 2>/dev/null || true
    if [ -f "$WORK/fapolicyd.conf.orig" ]; then
        cp "$WORK/fapolicyd.conf.orig" "$FAPO_CONF"
        rm -f "$FAPO_RULES"
        fagenrules >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

ol() { "$OL" "$1" "$OPENS" "$ROUNDS"; }

start_kms() { # policy db alerts [binary]
    rm -f "$3"
    "${4:-$K}" -q watch --policy "$1" --db "$2" --alerts "$3" --status-socket "$WORK/status.sock" \
        --run-for 3600 --no-audit &
    DAEMON=$!
    local t0=$SECONDS
    until grep -q '"kind":"started"' "$3" 2>/dev/null; do
        sleep 0.01
        [ $((SECONDS - t0)) -lt 600 ] || { echo "daemon did not start" >&2; exit 1; }
    done
}
stop_kms() { kill "$DAEMON"; wait "$DAEMON" || true; DAEMON=; }

declare -A R
R[none_unwatched]=$(ol "$WORK/t/keys/unwatched.txt")
R[none_enforced]=$(ol "$WORK/t/keys/client.key")
start_kms "$WORK/policy.yaml" "$WORK/b.db" "$WORK/alerts.jsonl"
R[kms_unwatched]=$(ol "$WORK/t/keys/unwatched.txt")
R[kms_enforced]=$(ol "$WORK/t/keys/client.key")

# Modification -> alert latency.
python3 - "$WORK/t/conf/kms.yaml" "$WORK/alerts.jsonl" > "$WORK/latency.txt" <<'PY'
import json, os, sys, time, datetime
path, alerts = sys.argv[1], sys.argv[2]
starts = []
for i in range(300):
    t0 = time.time_ns()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"x%d\n" % i)
    os.close(fd)
    starts.append(t0)
    time.sleep(0.01)
time.sleep(1.0)
mods = []
for line in open(alerts):
    a = json.loads(line)
    if a["kind"] == "modified" and a.get("path") == path:
        ts = datetime.datetime.fromisoformat(a["ts"].replace("Z", "+00:00"))
        mods.append(int(ts.timestamp() * 1e6))
lat = []
j = 0
for t0 in starts:
    t0us = t0 // 1000
    while j < len(mods) and mods[j] < t0us:
        j += 1
    if j < len(mods):
        lat.append(mods[j] - t0us)
        j += 1
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else -1
print(len(lat), pick(0.5), pick(0.99), lat[-1] if lat else -1)
PY
read -r LAT_N LAT_P50 LAT_P99 LAT_MAX < "$WORK/latency.txt"
stop_kms

# The other build, same policy and baseline, same run; then this build again, so that a
# drift of the machine's load over the run shows as a difference between the two rows of
# this build rather than as a difference between the builds.
if [ -n "$COMPARE" ]; then
    start_kms "$WORK/policy.yaml" "$WORK/b.db" "$WORK/alerts-other.jsonl" "$COMPARE"
    R[other_unwatched]=$(ol "$WORK/t/keys/unwatched.txt")
    R[other_enforced]=$(ol "$WORK/t/keys/client.key")
    stop_kms
    start_kms "$WORK/policy.yaml" "$WORK/b.db" "$WORK/alerts-again.jsonl"
    R[kms_enforced_again]=$(ol "$WORK/t/keys/client.key")
    stop_kms
fi

# fapolicyd, permissive, with a rule about the same exe and file.
FAPO=0
if ! command -v fapolicyd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fapolicyd >/dev/null 2>&1 || true
fi
if command -v fapolicyd >/dev/null; then
    cp "$FAPO_CONF" "$WORK/fapolicyd.conf.orig"
    sed -i 's/^uid = .*/uid = root/; s/^gid = .*/gid = root/' "$FAPO_CONF"
    chown -R root:root /var/lib/fapolicyd 2>/dev/null || true
    printf 'allow perm=open exe=%s : path=%s\ndeny_audit perm=open all : path=%s\n' \
        "$OL" "$WORK/t/keys/client.key" "$WORK/t/keys/client.key" > "$FAPO_RULES"
    fagenrules >/dev/null 2>&1 || true
    fapolicyd --permissive --debug-deny > "$WORK/fapolicyd.log" 2>&1 &
    FPID=$!
    for _ in $(seq 1 200); do
        grep -q "Starting to listen for events" "$WORK/fapolicyd.log" 2>/dev/null && break
        sleep 0.05
    done
    if grep -q "Starting to listen for events" "$WORK/fapolicyd.log"; then
        FAPO=1
        ol "$WORK/t/keys/client.key" >/dev/null # warm its caches
        R[fapo_enforced]=$(ol "$WORK/t/keys/client.key")
        R[fapo_unwatched]=$(ol "$WORK/t/keys/unwatched.txt")
    fi
    kill "$FPID" 2>/dev/null || true
    wait "$FPID" 2>/dev/null || true
    FPID=
fi

# 100k entries: start (marks + reconcile) and RSS.
START_S=- RSS_MIB=- ENTRIES=-
if [ "$CORPUS" = 1 ]; then
    CROOT=/var/tmp/kmsentry-bench/root
    if [ ! -d "$CROOT/etc" ]; then
        python3 scripts/make-corpus.py "$CROOT" --files 100000 --seed 1 >/dev/null
    fi
    cat > "$WORK/corpus.yaml" <<EOF
version: 1
groups:
  - name: corpus
    class: generic
    paths: [$CROOT/etc, $CROOT/usr, $CROOT/opt]
EOF
    "$K" -q baseline init --force --policy "$WORK/corpus.yaml" --db "$WORK/corpus.db"
    ENTRIES=$(sqlite3 "$WORK/corpus.db" 'select count(*) from entries' 2>/dev/null || echo '?')
    cat "$CROOT"/etc/* >/dev/null 2>&1 || true
    T0=$(date +%s.%N)
    start_kms "$WORK/corpus.yaml" "$WORK/corpus.db" "$WORK/corpus-alerts.jsonl"
    T1=$(date +%s.%N)
    START_S=$(python3 -c "print(f'{$T1-$T0:.2f}')")
    sleep 1
    RSS_MIB=$("$K" status --socket "$WORK/status.sock" --format json |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.1f" % (d["rss_kib"]/1024))')
    stop_kms
fi

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
added() { python3 -c "print(f'{$1-$2:.2f}')"; }
echo
echo "## kmsentry watch: permission path and latency ($(date -u +%FT%TZ), $(nproc) CPUs, $(uname -r))"
echo
echo "| measurement | µs per open+close | vs no listener |"
echo "|---|---|---|"
echo "| no listener, unwatched file | ${R[none_unwatched]} | 1.00 |"
echo "| no listener, enforced key file | ${R[none_enforced]} | 1.00 |"
echo "| kmsentry, unwatched file in a watched dir | ${R[kms_unwatched]} | $(ratio "${R[kms_unwatched]}" "${R[none_unwatched]}") |"
echo "| kmsentry, enforced key, allowed exe | ${R[kms_enforced]} | $(ratio "${R[kms_enforced]}" "${R[none_enforced]}") (+$(added "${R[kms_enforced]}" "${R[none_enforced]}") µs) |"
if [ -n "$COMPARE" ]; then
    echo "| kmsentry, enforced key, allowed exe (again, after the other build) | ${R[kms_enforced_again]} | $(ratio "${R[kms_enforced_again]}" "${R[none_enforced]}") (+$(added "${R[kms_enforced_again]}" "${R[none_enforced]}") µs) |"
    echo "| other build ($COMPARE), unwatched file | ${R[other_unwatched]} | $(ratio "${R[other_unwatched]}" "${R[none_unwatched]}") |"
    echo "| other build, enforced key, allowed exe | ${R[other_enforced]} | $(ratio "${R[other_enforced]}" "${R[none_enforced]}") (+$(added "${R[other_enforced]}" "${R[none_enforced]}") µs) |"
fi
if [ "$FAPO" = 1 ]; then
    echo "| fapolicyd --permissive, same key, same exe | ${R[fapo_enforced]} | $(ratio "${R[fapo_enforced]}" "${R[none_enforced]}") (+$(added "${R[fapo_enforced]}" "${R[none_enforced]}") µs) |"
    echo "| fapolicyd --permissive, unwatched file | ${R[fapo_unwatched]} | $(ratio "${R[fapo_unwatched]}" "${R[none_unwatched]}") |"
    echo
    echo "kmsentry's enforced open costs $(ratio "${R[kms_enforced]}" "${R[fapo_enforced]}")x fapolicyd's for the same open."
else
    echo "| fapolicyd | not available | |"
fi
if [ -n "$COMPARE" ]; then
    echo
    echo "this build / other build, enforced open: $(ratio "${R[kms_enforced]}" "${R[other_enforced]}") (first run), $(ratio "${R[kms_enforced_again]}" "${R[other_enforced]}") (second run)"
fi
echo
echo "modification -> alert latency ($LAT_N of 300 appends): p50 ${LAT_P50} µs, p99 ${LAT_P99} µs, max ${LAT_MAX} µs"
echo "100k-entry start (marks + reconcile, $ENTRIES entries): ${START_S} s; daemon RSS after start: ${RSS_MIB} MiB"

mkdir -p scripts/bench-runs
CSV=scripts/bench-runs/watch-$(date -u +%Y%m%dT%H%M%SZ).csv
{
    echo "metric,value"
    for k in "${!R[@]}"; do echo "$k,${R[$k]}"; done
    echo "latency_p50_us,$LAT_P50"
    echo "latency_p99_us,$LAT_P99"
    echo "latency_max_us,$LAT_MAX"
    echo "start_100k_s,$START_S"
    echo "rss_100k_mib,$RSS_MIB"
} > "$CSV"
echo "raw: $CSV"
