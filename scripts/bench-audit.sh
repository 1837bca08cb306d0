#!/usr/bin/env bash
# bench-audit.sh: `kmsentry audit` against the shell loop an operator writes today,
#   for f in certs/*; do openssl x509 -noout -enddate -in "$f"; done
# on one corpus, in one run.
#
# What is measured, and why
#   The corpus is N files (default 10,000) under /etc/kms of an image: half certificates
#   (client-cert group), half private keys (private-key group), made from a few hundred
#   distinct P-256 and RSA-2048 key pairs and CA-issued certificates, copied so generation
#   takes seconds, not an hour. The openssl loop answers one question (the expiry date) for
#   the certificates only; `kmsentry audit` answers all of its posture checks (permissions,
#   owner, expiry, weak keys and signatures, SPKI pairing of every certificate with every
#   key, CA constraints) for certificates AND keys. So the comparison favours openssl:
#   it does less work on half the files. A second kmsentry row audits the certificates
#   alone, the like-for-like file set. Warm page cache; hyperfine with warm-up runs.
#
# Usage
#   scripts/bench-audit.sh [--files N] [--distinct D] [--runs R] [--work DIR]
#     --files N     corpus files, certificates + keys (default 10000)
#     --distinct D  distinct key pairs generated with openssl (default 200)
#     --runs R      hyperfine runs per command (default 5; the openssl loop 2)
#     --work DIR    work directory (default /var/tmp/kmsentry-bench-audit); the corpus is
#                   reused while DIR/corpus.stamp matches N and D
#   Environment
#     KMSENTRY=PATH   use this binary instead of `cargo build --release`
#
# hyperfine discards the commands' stdout (its default), so no --output is needed.
# Output: machine facts, a Markdown table (mean ± stddev, ratio to kmsentry), and the raw
# hyperfine JSON in scripts/bench-runs/audit-<UTC timestamp>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

files=10000 distinct=200 runs=5 work=/var/tmp/kmsentry-bench-audit
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files=$2; shift 2 ;;
    --distinct) distinct=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$files" -ge 2 ] && [ "$distinct" -ge 1 ] && [ "$runs" -ge 1 ] || { echo "bad numbers" >&2; exit 2; }
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 2; }
command -v hyperfine >/dev/null || { echo "needs hyperfine" >&2; exit 2; }

if [ -z "${KMSENTRY:-}" ]; then
  cargo build --release --locked -q
  KMSENTRY=$PWD/target/release/kmsentry
fi

root=$work/root
stamp="files=$files distinct=$distinct v1"
if [ "$(cat "$work/corpus.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "== generating corpus ($files files from $distinct distinct pairs)"
  rm -rf "$work"
  mkdir -p "$work/gen" "$root/etc/kms/certs" "$root/etc/kms/keys"
  g=$work/gen
  printf '[req]\ndistinguished_name = dn\n[dn]\n' > "$g/openssl.cnf"
  export OPENSSL_CONF=$g/openssl.cnf
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$g/ca.key" 2>/dev/null
  openssl req -x509 -key "$g/ca.key" -days 3650 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -out "$g/ca.crt"
  for i in $(seq 1 "$distinct"); do
    # One in ten RSA-2048 (larger, slower to parse), the rest P-256.
    if [ $((i % 10)) -eq 0 ]; then
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$g/$i.key" 2>/dev/null
    else
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$g/$i.key" 2>/dev/null
    fi
    openssl req -new -key "$g/$i.key" -subj "/CN=client-$i" -out "$g/$i.csr"
    openssl x509 -req -in "$g/$i.csr" -CA "$g/ca.crt" -CAkey "$g/ca.key" \
      -days $((30 + i % 700)) -out "$g/$i.crt" 2>/dev/null
  done
  half=$((files / 2))
  for n in $(seq 1 "$half"); do
    i=$(( (n - 1) % distinct + 1 ))
    cp "$g/$i.crt" "$root/etc/kms/certs/c$n.crt"
    cp "$g/$i.key" "$root/etc/kms/keys/c$n.key"
  done
  chmod 0600 "$root"/etc/kms/keys/*
  echo "$stamp" > "$work/corpus.stamp"
fi
ncerts=$(find "$root/etc/kms/certs" -type f | wc -l)
nkeys=$(find "$root/etc/kms/keys" -type f | wc -l)

cat > "$work/all.yaml" <<'EOF'
version: 1
groups:
  - name: keys
    class: private-key
    paths: [/etc/kms/keys]
  - name: certs
    class: client-cert
    paths: [/etc/kms/certs]
EOF
cat > "$work/certs.yaml" <<'EOF'
version: 1
groups:
  - name: certs
    class: client-cert
    paths: [/etc/kms/certs]
EOF
cat > "$work/loop.sh" <<EOF
for f in $root/etc/kms/certs/*; do openssl x509 -noout -enddate -in "\$f"; done > /dev/null
EOF

# Correctness before speed: both see every certificate; kmsentry reads every file.
out=$("$KMSENTRY" audit --policy "$work/all.yaml" --root "$root" --format json || true)
checked=$(printf '%s' "$out" | grep -o '"checked": [0-9]*' | grep -o '[0-9]*$')
loop_lines=$(for f in "$root"/etc/kms/certs/*; do openssl x509 -noout -enddate -in "$f"; done | wc -l)
echo "kmsentry checked $checked entries (files + 2 directories); openssl printed $loop_lines enddates for $ncerts certificates"

stamp_utc=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p scripts/bench-runs
json=scripts/bench-runs/audit-$stamp_utc.json
loop_runs=$(( runs < 2 ? runs : 2 ))
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/k.json" \
  -n "kmsentry audit ($ncerts certs + $nkeys keys)" \
  "$KMSENTRY audit --policy $work/all.yaml --root $root --format json" \
  -n "kmsentry audit ($ncerts certs)" \
  "$KMSENTRY audit --policy $work/certs.yaml --root $root --format json" \
  -i >/dev/null
hyperfine --warmup 0 --runs "$loop_runs" --export-json "$work/o.json" \
  -n "openssl x509 -noout -enddate loop ($ncerts certs)" "bash $work/loop.sh" >/dev/null
python3 - "$work/k.json" "$work/o.json" "$json" <<'EOF'
import json, sys
k = json.load(open(sys.argv[1]))["results"]
o = json.load(open(sys.argv[2]))["results"]
json.dump({"kmsentry": k, "openssl": o}, open(sys.argv[3], "w"), indent=1)
base = k[0]["mean"]
print("| command | mean ± σ (s) | vs kmsentry (all files) |")
print("|---|---|---|")
for r in k + o:
    print(f"| {r['command']} | {r['mean']:.3f} ± {r['stddev'] or 0:.3f} | {r['mean']/base:.1f}× |")
loop = o[0]["mean"]
print(f"\nopenssl loop / kmsentry audit (all {len(k)} rows above): " +
      ", ".join(f"{loop / r['mean']:.0f}×" for r in k))
EOF
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(openssl version), kmsentry $("$KMSENTRY" --version | cut -d' ' -f2)"
echo "raw: $json"
