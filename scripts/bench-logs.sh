#!/usr/bin/env bash
# `kmsentry logs scan` throughput over a generated mixed log (sshd syslog, PostgreSQL+pgaudit,
# Vault audit JSON) with every shipped rule (rules/), beside:
#   floor: `grep -E -c -f PATTERNS` with the rules' literal patterns (no parsing, no fields);
#   peer:  rsigma-eval's own engine (examples/rsigma_peer.rs: serde_json per line, then
#          CorrelationEngine::process_event, no kmsentry code) over the Vault JSON part with
#          the Vault pack; the rsigma CLI (`cargo install rsigma`) is too heavy to build here.
# Usage: scripts/bench-logs.sh [MB] (default 1024: a 1 GiB corpus, generated once into
# target/bench-logs/MB/, outside the repository). Results: scripts/bench-runs/logs-*.json.
# The run also judges the corpus with the literal prefilter off (KMSENTRY_LOGS_PREFILTER=off)
# and fails unless both findings JSON documents are byte-identical.
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-1024}"
W="$PWD/target/bench-logs/$MB"
mkdir -p "$W"
cargo build --release --locked -q
cargo build --release --locked -q --example rsigma_peer
K=target/release/kmsentry

[ -s "$W/vault.log" ] || python3 - "$W" "$MB" <<'PY'
import json, random, sys
w, mb = sys.argv[1], int(sys.argv[2])
random.seed(1)
per = mb * 1024 * 1024 // 3
def gen(path, mk):
    n = 0; i = 0
    with open(path, 'w') as f:
        while n < per:
            l = mk(i) + '\n'; f.write(l); n += len(l); i += 1
def sshd(i):
    s = i % 86400
    t = f"2026-12-02T{s//3600:02d}:{s//60%60:02d}:{s%60:02d}.{i%1000000:06d}+00:00"
    r = random.random()
    if r < 0.02: m = f"Failed password for invalid user u{i%97} from 203.0.113.{i%250} port {1024+i%60000} ssh2"
    elif r < 0.05: m = f"Accepted publickey for deploy from 10.0.{i%250}.{i%200} port {1024+i%60000} ssh2: ED25519 SHA256:abc{i}"
    else: m = f"Connection closed by 10.0.{i%250}.{i%200} port {1024+i%60000} [preauth]"
    return f"{t} kms{i%4} sshd[{1000+i%3000}]: {m}"
def pg(i):
    s = i % 86400
    t = f"2026-12-02 {s//3600:02d}:{s//60%60:02d}:{s%60:02d}.{i%1000:03d} UTC"
    r = random.random()
    if r < 0.001: st = f"ALTER ROLE app{i%50} WITH PASSWORD 'pw{i}'"; c, cmd = 'ROLE', 'ALTER ROLE'
    elif r < 0.01: st = f"CREATE TABLE t{i} (id int)"; c, cmd = 'DDL', 'CREATE TABLE'
    else: st = f"SELECT id, name FROM accounts WHERE id = {i}"; c, cmd = 'READ', 'SELECT'
    return f'{t} [{4000+i%500}] LOG:  AUDIT: SESSION,{i},1,{c},{cmd},,,"{st}",<not logged>'
def vault(i):
    s = i % 86400
    t = f"2026-12-02T{s//3600:02d}:{s//60%60:02d}:{s%60:02d}.{i%1000000:06d}Z"
    r = random.random()
    path = "transit/export/encryption-key/k1" if r < 0.0005 else ("sys/policies/acl/p" if r < 0.001 else f"transit/decrypt/k{i%20}")
    d = {"time": t, "type": "response", "auth": {"client_token": "hmac-sha256:5f0c", "display_name": f"app{i%30}", "policies": ["default", "app"]},
         "request": {"id": f"id-{i}", "operation": "update", "path": path, "remote_address": f"10.1.{i%250}.{i%200}"}, "response": {"mount_type": "transit"}}
    if r > 0.995: d["error"] = "permission denied"
    return json.dumps(d)
gen(f"{w}/sshd.log", sshd); gen(f"{w}/pg.log", pg); gen(f"{w}/vault.log", vault)
PY

cat >"$W/policy.yaml" <<Y
version: 1
groups:
  - name: g
    paths: [/etc/kms]
logs:
  - name: sshd
    source: {file: $W/sshd.log}
    format: syslog
    logsource: {product: linux, service: sshd}
  - name: pg
    source: {file: $W/pg.log}
    format: pgaudit
    logsource: {product: postgresql, service: pgaudit}
  - name: vault
    source: {file: $W/vault.log}
    format: json
    logsource: {product: vault, service: audit}
rules: [$PWD/rules]
Y
# The rules' literal patterns (contains/startswith/keywords and the literal parts of equality
# matches) as fixed-ish strings for grep.
python3 - "$W" <<'PY' >"$W/patterns"
import re, sys, glob, yaml
pats = set()
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == 'condition': continue
            walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
    elif isinstance(v, str) and len(v) >= 4 and not any(c in v for c in '\\^$()[]|?'):
        pats.add(re.escape(v.replace('*', '')))
for f in glob.glob('rules/**/*.yml', recursive=True):
    for d in yaml.safe_load_all(open(f)):
        if d and 'detection' in d: walk(d['detection'])
print('\n'.join(sorted(pats)))
PY
bytes=$(cat "$W"/*.log | wc -c)
mb=$(python3 -c "print(round($bytes/1048576,1))")
t() { local s e; s=$(date +%s.%N); "$@" >"$W/out" 2>"$W/err" || true; e=$(date +%s.%N); python3 -c "print(round($e-$s,3))"; }
cat "$W"/*.log >/dev/null
best() { local b=999999 x; for _ in 1 2 3; do x=$(t "$@"); b=$(python3 -c "print(min($b,$x))"); done; echo "$b"; }
k_s=$(best $K logs scan --policy "$W/policy.yaml" --format json -o "$W/k.json")
k_findings=$(python3 -c "import json;print(json.load(open('$W/k.json'))['summary']['findings'])")
# The old path (every line evaluated) must find exactly the same, byte for byte.
old_s=$(t env KMSENTRY_LOGS_PREFILTER=off $K logs scan --policy "$W/policy.yaml" --format json -o "$W/k-old.json")
k_sha=$(sha256sum <"$W/k.json" | cut -c1-16)
old_sha=$(sha256sum <"$W/k-old.json" | cut -c1-16)
if [ "$k_sha" != "$old_sha" ]; then echo "findings differ with the prefilter off: $k_sha vs $old_sha" >&2; exit 1; fi
g_s=$(best grep -E -c -f "$W/patterns" "$W/sshd.log" "$W/pg.log" "$W/vault.log")
vault_bytes=$(wc -c <"$W/vault.log")
kv_s=$(best $K logs scan --policy "$W/policy.yaml" --source vault --format json -o "$W/kv.json")
kv_findings=$(python3 -c "import json;print(json.load(open('$W/kv.json'))['summary']['findings'])")
p_s=$(best sh -c "target/release/examples/rsigma_peer rules/kms-audit/vault.yml < \"$W/vault.log\" > \"$W/p.out\"")
p_findings=$(cat "$W/p.out")
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 - <<PY | tee "scripts/bench-runs/logs-$stamp.json"
import json
b=$bytes; vb=$vault_bytes
r={"corpus_mb":$mb,"cores_used":1,"findings_sha256_16":"$k_sha","same_findings_prefilter_off":True,
   "kmsentry_prefilter_off_s":$old_s,"kmsentry_prefilter_off_mb_s":round(b/1048576/$old_s,1),"rules_dir":"rules/","kmsentry_s":$k_s,"kmsentry_mb_s":round(b/1048576/$k_s,1),
   "kmsentry_findings":$k_findings,"grep_floor_s":$g_s,"grep_mb_s":round(b/1048576/$g_s,1),
   "ratio_vs_grep":round($k_s/$g_s,2),"vault_mb":round(vb/1048576,1),"kmsentry_vault_s":$kv_s,
   "kmsentry_vault_findings":$kv_findings,"rsigma_vault_s":$p_s,"rsigma_vault_results":$p_findings}
if r["rsigma_vault_s"]: r["ratio_vs_rsigma_vault"]=round($kv_s/$p_s,2)
print(json.dumps(r))
PY
