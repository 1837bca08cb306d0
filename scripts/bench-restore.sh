#!/usr/bin/env bash
# bench-restore.sh: `kmsentry restore` of N tampered files against `cp -a` from a backup
# copy, in one run, on one tree.
#
# What is measured, and why
#   An image root holds N files (default 1,000) in 20 directories under /etc/kms, shaped
#   like KMS client material: 1-4 KiB PEM/YAML files, 0600/0640/0644 modes. A baseline is
#   recorded with `baseline init --store` (every group restores) and a backup is taken
#   with `cp -a`. Before every timed run, every file is tampered with (content rewritten,
#   mode changed). Then either
#     kmsentry   `kmsentry restore --root R` (walk to each parent with openat/O_NOFOLLOW,
#                re-hash the store object while copying it to a temp file, set owner,
#                ACLs, xattrs and mode on the fd, fsync, RENAME_EXCHANGE, move the
#                tampered file to quarantine with a JSON record, fsync the directory,
#                inspect the result), or
#     cp -a      `cp -a backup/. R/` (overwrites in place: no verification, no fsync, no
#                quarantine, and it follows a symlinked parent an attacker planted).
#   Both leave the tree equal to the baseline (checked after each tool: `kmsentry verify`
#   must exit 0). The ratio says what safety costs; the fsync cost is shown separately by
#   a third row, `cp -a` followed by `sync -f` of the tree's file system.
#   Runs are interleaved by hyperfine's --prepare (the tamper step runs before every timed
#   run, outside the timing). Warm page cache.
#
# Usage
#   scripts/bench-restore.sh [--files N] [--runs R] [--work DIR] [--keep]
#   KMSENTRY=PATH to use a given binary (default: cargo build --release)
#
# Output: machine facts and a Markdown table (median, min, max, ratio to cp -a); raw
# hyperfine JSON in scripts/bench-runs/restore-<UTC timestamp>.json.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
FILES=1000
RUNS=10
WORK=/var/tmp/kmsentry-bench-restore
KEEP=0

die() { echo "bench-restore: error: $*" >&2; exit 2; }
log() { echo "==> $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '/^# Usage/,/^# Output/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ "$FILES" -ge 1 ] && [ "$FILES" -le 1000000 ] || die "--files must be 1..1000000"
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 1000 ] || die "--runs must be 1..1000"
command -v hyperfine >/dev/null || die "hyperfine is required (apt-get install hyperfine)"
[ "$(id -u)" = 0 ] || die "run as root (restore sets owners; the store is root-only)"

if [ -z "${KMSENTRY:-}" ]; then
  log "building kmsentry (release)"
  (cd "$REPO_DIR" && cargo build --release --quiet)
  KMSENTRY="$REPO_DIR/target/release/kmsentry"
fi
[ -x "$KMSENTRY" ] || die "no kmsentry binary at $KMSENTRY"

rm -rf "$WORK"
mkdir -p "$WORK"
cleanup() { [ "$KEEP" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
ROOT=$WORK/root
BACKUP=$WORK/backup
STORE=$WORK/store
DB=$WORK/baseline.db
POLICY=$WORK/policy.yaml

log "building $FILES files under $ROOT/etc/kms"
python3 - "$ROOT" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
modes = [0o600, 0o640, 0o644]
for i in range(n):
    d = os.path.join(root, "etc/kms", f"d{i % 20:02d}")
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(1024, 4096)
    body = (f"-----BEGIN CERTIFICATE {i}-----\n").encode() + bytes(
        rnd.getrandbits(8) for _ in range(size)).hex().encode()[:size] + b"\n"
    p = os.path.join(d, f"f{i:06d}.pem")
    with open(p, "wb") as f:
        f.write(body)
    os.chmod(p, modes[i % 3])
EOF
cat > "$POLICY" <<'EOF'
version: 1
groups:
  - name: kms
    class: kms-config
    paths: [/etc/kms]
    on_change: [alert, restore]
EOF
"$KMSENTRY" -q baseline init --policy "$POLICY" --db "$DB" --root "$ROOT" --store "$STORE"
cp -a "$ROOT" "$BACKUP"

# The tamper step: rewrite every file and widen its mode (bounded: one pass over FILES).
cat > "$WORK/tamper.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
find "$ROOT/etc/kms" -type f -name '*.pem' -print0 | xargs -0 -n 200 sh -c 'for f; do printf "tampered %s\n" "\$f" > "\$f"; chmod 0666 "\$f"; done' sh
# Keep the quarantine from growing across runs (it is not part of what is timed).
rm -rf "$STORE/quarantine"
EOF
chmod +x "$WORK/tamper.sh"

check() {
  "$KMSENTRY" -q verify --policy "$POLICY" --db "$DB" --root "$ROOT" --format json >/dev/null \
    || die "$1 left the tree different from the baseline"
}
"$WORK/tamper.sh"
"$KMSENTRY" -q restore --policy "$POLICY" --db "$DB" --root "$ROOT" --store "$STORE" >/dev/null
check "kmsentry restore"
"$WORK/tamper.sh"
cp -a "$BACKUP/." "$ROOT/"
check "cp -a"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$SCRIPT_DIR/bench-runs/restore-$STAMP.json"
mkdir -p "$SCRIPT_DIR/bench-runs"
log "timing ($RUNS runs each)"
hyperfine --style basic --runs "$RUNS" --export-json "$OUT" \
  --prepare "$WORK/tamper.sh" \
  -n "kmsentry restore" "$KMSENTRY -q restore --policy $POLICY --db $DB --root $ROOT --store $STORE" \
  -n "cp -a" "cp -a $BACKUP/. $ROOT/" \
  -n "cp -a + sync -f" "cp -a $BACKUP/. $ROOT/ && sync -f $ROOT" >&2
check "the last timed run"

echo
echo "Machine: $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(df -T "$WORK" | awk 'NR==2{print $2}')"
echo "Files: $FILES tampered (content and mode), restored each run; runs: $RUNS"
echo
python3 - "$OUT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = next(x for x in r if x["command"] == "cp -a")["median"]
print("| command | median s | min s | max s | vs cp -a |")
print("|---|---:|---:|---:|---:|")
for x in r:
    print(f"| {x['command']} | {x['median']:.3f} | {x['min']:.3f} | {x['max']:.3f} | {x['median']/base:.2f} |")
EOF
echo
echo "raw: ${OUT#$REPO_DIR/}"
