#!/usr/bin/env bash
# bench-vs-aide.sh: kmsentry against AIDE, in one run, on one corpus.
#
# What is measured, and why
#   Both tools do the same job on the same tree: walk it, record type, mode, owner,
#   group, size, inode, link count, mtime, ctime, symlink target, POSIX ACLs and
#   xattrs, and a digest of every regular file (AIDE: SHA-256; kmsentry: BLAKE3, its
#   policy default, and in a second timed init SHA-256 too, `hash: [blake3, sha256]`,
#   the figure with both digests on every file), and compare all of them on verify (the kmsentry policy lists every attribute in
#   `compare`, since its default skips mtime, ctime, inode and nlink).
#   AIDE runs with rule sha256+p+i+n+u+g+s+m+c+acl+xattrs+ftype+l over /etc, /usr and
#   /opt of the corpus (root_prefix makes it record host-absolute paths, exactly like
#   `kmsentry --root`), an uncompressed database, and num_workers = nproc (AIDE 0.18's
#   default is 1 thread; kmsentry uses every core, so one thread would flatter
#   kmsentry). AIDE by default also hashes its own database with 11 digests after each
#   run; database_attrs=sha256 keeps one.
#
#   The corpus (scripts/make-corpus.py) is ~100,000 entries / ~1.3 GiB shaped like a
#   KMS host: many 1-4 KiB PEM/YAML/JSON files (per-file overhead dominates) plus a few
#   64-256 MiB files (hashing throughput dominates). Every timing is taken with a warm
#   page cache: the point is CPU and syscall cost, not the disk. Floors give scale:
#     read floor     every byte read once with cat (1 thread and nproc threads);
#     lstat floor    every entry lstat'ed once (find -printf of inode metadata);
#     sha256 floor   SHA-256 of every file on nproc threads (openssl dgst, which uses
#                    the CPU's SHA extensions; coreutils sha256sum if openssl is absent).
#   A tool cannot beat the read floor; the ratio to it says how much of the time is the
#   tool's own work (hashing, metadata, database).
#
#   Phases: `kmsentry baseline init` vs `aide --init`, then a deterministic tamper step
#   (10 content changes, 2 of them stealthy, 10 chmods, 5 deletions, 5 additions), then
#   `kmsentry verify --format json` vs `aide --check`. Runs of the two tools are
#   interleaved (ABBA order) so drift (page cache, CPU clock, neighbours) hits both
#   alike; each phase reports median/min/max of --runs runs, and peak RSS and CPU time
#   from /usr/bin/time -v. After the tamper both tools must report the same set of
#   (status, path): the script prints MATCH or a loud MISMATCH with the differences, and
#   checks both against the tamper step's own list.
#
#   Expect `aide --check` to be several times slower than `aide --init`: AIDE 0.18.3
#   spends most of a check parsing its own plain-text database (its flex scanner costs
#   ~0.4 ms per 230-byte entry here; `aide --compare` of a database with itself takes
#   twice as long again). That is AIDE's real cost, not a setting of this script.
#
# Usage
#   scripts/bench-vs-aide.sh [--quick] [--files N] [--runs R] [--seed S] [--work DIR] [--keep]
#     --quick     the regression guard to run before committing hot-path changes: a
#                 20,000-entry corpus in /var/tmp/kmsentry-bench-quick, 1 run, under a
#                 minute once the corpus exists; exits 1 when a ratio falls below its
#                 guard (QUICK_MIN_INIT, QUICK_MIN_VERIFY, QUICK_MAX_FLOOR below)
#     --files N   corpus entries (default 100000)
#     --runs R    timed runs per tool and phase (default 3, at least 1)
#     --seed S    corpus seed (default 1)
#     --work DIR  work directory (default /var/tmp/kmsentry-bench); the corpus in
#                 DIR/root is reused across runs while DIR/corpus.stamp matches
#     --keep      keep this run's databases, reports, configs and logs (DIR/run);
#                 without it they are removed at exit (the corpus is always kept:
#                 `rm -rf DIR` to reclaim its ~1.4 GiB)
#   Environment
#     SKIP_KMSENTRY=1   do not build or run kmsentry (AIDE and floors only)
#     KMSENTRY=PATH     use this kmsentry binary instead of `cargo build --release`
#     AIDE_WORKERS=N    AIDE num_workers (default: nproc)
#     AIDE_DB_ATTRS=X   AIDE database_attrs (default sha256; AIDE's own default is H)
#     NO_HYPERFINE=1    time the floors with the bash loop even if hyperfine exists
#     QUICK_MIN_INIT=X    --quick fails when AIDE init / kmsentry init is below X
#     QUICK_MIN_VERIFY=X  --quick fails when aide --check / kmsentry verify is below X
#     QUICK_MAX_FLOOR=X   --quick fails when kmsentry init / read floor is above X
#                       (defaults: the 20k figures measured in docs/performance.md less
#                       the run-to-run noise measured there)
#
# Output: machine facts, a Markdown table, the changed-set comparison, and a CSV of
# every raw timing in scripts/bench-runs/bench-<UTC timestamp>.csv.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
MAKE_CORPUS="$SCRIPT_DIR/make-corpus.py"

FILES=100000
RUNS=3
SEED=1
WORK=/var/tmp/kmsentry-bench
KEEP=0
QUICK=0
SKIP_KMSENTRY=${SKIP_KMSENTRY:-0}
NPROC=$(nproc)
AIDE_WORKERS=${AIDE_WORKERS:-$NPROC}
AIDE_DB_ATTRS=${AIDE_DB_ATTRS:-sha256}

usage() { sed -n '/^# Usage/,/^# Output/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench-vs-aide: error: $*" >&2; exit 2; }
log() { echo "==> $*" >&2; }

while (($#)); do
    case $1 in
        --files) FILES=${2:?--files needs a value}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --work) WORK=${2:?--work needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --quick) QUICK=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $FILES =~ ^[0-9]+$ && $RUNS =~ ^[0-9]+$ && $SEED =~ ^[0-9]+$ ]] ||
    die "--files, --runs and --seed take non-negative integers"
((RUNS >= 1)) || die "--runs must be at least 1"
if ((QUICK)); then
    # A corpus of its own: the 100k corpus in the default work directory stays intact.
    FILES=20000 RUNS=1 WORK=/var/tmp/kmsentry-bench-quick
fi

WORK=$(mkdir -p "$WORK" && cd "$WORK" && pwd)
ROOT=$WORK/root
RUN=$WORK/run
STAMP=$WORK/corpus.stamp
TS=$(date -u +%Y%m%dT%H%M%SZ)
HOST=$(uname -n)
[[ $ROOT != *[\'\"\ ]* ]] || die "the work directory path must not contain quotes or spaces"
CSV_DIR=$SCRIPT_DIR/bench-runs
CSV=$CSV_DIR/bench-$TS.csv

# ---------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------
ensure_tools() {
    local missing=()
    command -v aide >/dev/null || missing+=(aide)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v hyperfine >/dev/null || missing+=(hyperfine)
    command -v python3 >/dev/null || die "python3 is required"
    ((${#missing[@]})) || return 0
    if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
        if ! command -v aide >/dev/null || [[ ! -x /usr/bin/time ]]; then
            die "missing ${missing[*]}; install them (Debian: apt-get install aide time hyperfine)"
        fi
        return 0
    fi
    log "installing ${missing[*]} from Debian"
    apt-get update -qq
    local avail=() p
    for p in "${missing[@]}"; do
        # A package without a candidate version cannot be installed: skip it here and
        # let the checks below decide whether that is fatal (hyperfine is optional).
        if apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            avail+=("$p")
        else
            log "package $p is not available; skipping it"
        fi
    done
    ((${#avail[@]} == 0)) ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${avail[@]}" >/dev/null
    command -v aide >/dev/null || die "aide could not be installed"
    [[ -x /usr/bin/time ]] || die "/usr/bin/time (Debian package 'time') could not be installed"
}

build_kmsentry() {
    if [[ $SKIP_KMSENTRY == 1 ]]; then
        log "SKIP_KMSENTRY=1: kmsentry is neither built nor run"
        return 0
    fi
    if [[ -n ${KMSENTRY:-} ]]; then
        [[ -x $KMSENTRY ]] || die "KMSENTRY=$KMSENTRY is not an executable"
        return 0
    fi
    command -v cargo >/dev/null || die "cargo not found (set KMSENTRY=path or SKIP_KMSENTRY=1)"
    log "building kmsentry (release)"
    (cd "$REPO_DIR" && cargo build --release --locked)
    KMSENTRY=$REPO_DIR/target/release/kmsentry
}

# ---------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------
corpus_id() {
    echo "files=$FILES seed=$SEED generator=$(sha256sum "$MAKE_CORPUS" | cut -c1-16)"
}

corpus_state() {
    python3 "$MAKE_CORPUS" "$ROOT" --status 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null ||
        echo missing
}

ensure_corpus() {
    local want state avail_kib need_kib
    want=$(corpus_id)
    if [[ -f $STAMP && $(cat "$STAMP") == "$want" && -d $ROOT ]]; then
        state=$(corpus_state)
        case $state in
            clean) log "reusing corpus $ROOT ($want)"; return 0 ;;
            tampered | tampering)
                log "corpus was left tampered with; restoring it"
                python3 "$MAKE_CORPUS" "$ROOT" --restore && sync && return 0 ;;
        esac
    fi
    need_kib=$((FILES * 14 + 262144)) # ~1.4 GiB per 100k entries, plus slack
    avail_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
    ((avail_kib > need_kib)) ||
        die "$WORK has $((avail_kib / 1024)) MiB free; the corpus needs ~$((need_kib / 1024)) MiB"
    log "generating corpus in $ROOT ($want)"
    rm -f "$STAMP"
    python3 "$MAKE_CORPUS" "$ROOT" --files "$FILES" --seed "$SEED" --force
    log "syncing (so that writeback does not disturb the timings)"
    sync
    echo "$want" >"$STAMP"
}

# If the run dies between tamper and restore, put the corpus back; drop run artifacts
# unless --keep.
TAMPERED=0
cleanup() {
    local rc=$?
    if ((TAMPERED)); then
        python3 "$MAKE_CORPUS" "$ROOT" --restore >/dev/null 2>&1 || true
    fi
    if ((!KEEP)) && [[ -d $RUN ]]; then
        rm -rf "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------
# Configuration for both tools
# ---------------------------------------------------------------------------------
write_configs() {
    rm -rf "$RUN"
    mkdir -p "$RUN/logs"
    AIDE_CONF=$RUN/aide.conf
    AIDE_DB=$RUN/aide.db
    KMS_POLICY=$RUN/policy.yaml
    KMS_POLICY_BOTH=$RUN/policy-both.yaml
    KMS_DB=$RUN/kmsentry.db
    KMS_DB_BOTH=$RUN/kmsentry-both.db
    KMS_REPORT=$RUN/kmsentry-verify.json

    local attrs="sha256+p+i+n+u+g+s+m+c+ftype+l" opt
    # Add acl and xattrs only where this AIDE build has them compiled in.
    for opt in acl xattrs; do
        if aide --version 2>&1 | grep -Eq "^$opt: yes"; then attrs+="+$opt"; fi
    done
    AIDE_RULE=$attrs
    cat >"$AIDE_CONF" <<EOF
# Generated by bench-vs-aide.sh: the same work as the kmsentry policy next to it.
database_in=file:$AIDE_DB
database_out=file:$AIDE_DB.new
gzip_dbout=no
database_attrs=$AIDE_DB_ATTRS
root_prefix=$ROOT
num_workers=$AIDE_WORKERS
log_level=warning
report_level=changed_attributes
report_format=plain
report_grouped=yes
report_summarize_changes=yes
report_url=stdout
Bench = $attrs
/etc Bench
/usr Bench
/opt Bench
EOF
    aide --config-check -c "$AIDE_CONF" >"$RUN/logs/aide-config-check.log" 2>&1 ||
        { cat "$RUN/logs/aide-config-check.log" >&2; die "aide rejects $AIDE_CONF"; }

    cat >"$KMS_POLICY" <<'EOF'
# Generated by bench-vs-aide.sh: the whole corpus, every entry, one generic group.
# compare lists every attribute, as AIDE's rule does (p+i+n+u+g+s+m+c+sha256+acl+xattrs
# +ftype+l); kmsentry's default leaves out mtime, ctime, inode and nlink, and would then
# not report the directories whose mtime moved when an entry was added or removed.
version: 1
groups:
  - name: bench-all
    class: generic
    paths: [/etc, /usr, /opt]
    compare: [type, content, size, mode, owner, group, acl, xattr, link_target,
              mtime, ctime, inode, nlink]
EOF
    # The same with SHA-256 recorded beside BLAKE3 for every file (AIDE's digest).
    sed 's/^    class: generic$/    class: generic\n    hash: [blake3, sha256]/' "$KMS_POLICY" >"$KMS_POLICY_BOTH"
    grep -q 'hash: \[blake3, sha256\]' "$KMS_POLICY_BOTH" || die "could not write $KMS_POLICY_BOTH"
}

check_policy() {
    [[ $SKIP_KMSENTRY == 1 ]] && return 0
    local pol
    for pol in "$KMS_POLICY" "$KMS_POLICY_BOTH"; do
        "$KMSENTRY" policy check "$pol" --root "$ROOT" >"$RUN/logs/kmsentry-policy-check.log" 2>&1 ||
            { cat "$RUN/logs/kmsentry-policy-check.log" >&2; die "kmsentry rejects $pol"; }
    done
}

# ---------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------
# CSV rows: one per timed run.
csv_init() {
    mkdir -p "$CSV_DIR"
    echo "timestamp,host,label,phase,run,wall_s,user_s,sys_s,max_rss_kib,exit_code,files,seed" >"$CSV"
}
csv_row() { # label phase run wall user sys rss rc
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$TS" "$HOST" "$1" "$2" "$3" \
        "$4" "$5" "$6" "$7" "$8" "$FILES" "$SEED" >>"$CSV"
}

# timed LABEL PHASE RUN OK_CODES LOGFILE -- CMD...
# Runs CMD under /usr/bin/time -v, wall clock from date +%s%N; stdout to LOGFILE,
# stderr to LOGFILE.err. OK_CODES is a regex of acceptable exit codes (drift is not an
# error). A non-zero exit never stops the script: it is recorded, and a code outside
# OK_CODES is reported.
timed() {
    local label=$1 phase=$2 run=$3 ok=$4 out=$5
    shift 6
    local tv=$out.time t0 t1 rc=0 wall user sys rss
    t0=$(date +%s%N)
    /usr/bin/time -v -o "$tv" "$@" >"$out" 2>"$out.err" || rc=$?
    t1=$(date +%s%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    user=$(awk -F': ' '/User time \(seconds\)/ { print $2 }' "$tv")
    sys=$(awk -F': ' '/System time \(seconds\)/ { print $2 }' "$tv")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tv")
    csv_row "$label" "$phase" "$run" "$wall" "${user:-}" "${sys:-}" "${rss:-}" "$rc"
    if ! [[ $rc =~ ^($ok)$ ]]; then
        echo "bench-vs-aide: WARNING: $label ($phase run $run) exited $rc; see $out.err" >&2
        BAD_EXITS+=("$label/$phase/run$run=rc$rc")
    fi
    printf '    %-26s run %d: %7.3f s  (exit %d)\n' "$label" "$run" "$wall" "$rc" >&2
}
BAD_EXITS=()

# Floors, timed with hyperfine when available (its JSON gives every run), else the loop.
floor() { # label phase shell-command
    local label=$1 phase=$2 cmd=$3 r
    if [[ ${NO_HYPERFINE:-0} != 1 ]] && command -v hyperfine >/dev/null; then
        local json=$RUN/logs/$phase.hyperfine.json
        hyperfine --style none --runs "$RUNS" --warmup 1 --export-json "$json" "$cmd" \
            >"$RUN/logs/$phase.hyperfine.log" 2>&1 ||
            die "hyperfine failed for $label; see $RUN/logs/$phase.hyperfine.log"
        python3 -c '
import json, sys
for i, t in enumerate(json.load(open(sys.argv[1]))["results"][0]["times"], 1):
    print(f"{i} {t:.3f}")' "$json" >"$json.runs"
        local wall
        while read -r r wall; do
            csv_row "$label" "$phase" "$r" "$wall" "" "" "" 0
            printf '    %-26s run %d: %7.3f s  (hyperfine)\n' "$label" "$r" "$wall" >&2
        done <"$json.runs"
    else
        bash -c "$cmd" >/dev/null 2>&1 # warm-up
        for ((r = 1; r <= RUNS; r++)); do
            timed "$label" "$phase" "$r" 0 "$RUN/logs/$phase-$r.log" -- bash -c "$cmd"
        done
    fi
}

# ---------------------------------------------------------------------------------
# Changed-set comparison
# ---------------------------------------------------------------------------------
compare_sets() { # expected.tsv aide-report.txt kmsentry.json|"" -> prints, returns 1 on mismatch
    python3 - "$@" <<'EOF'
import json, re, sys

expected_tsv, aide_txt, kms_json = sys.argv[1], sys.argv[2], sys.argv[3]

def load_expected(path):
    exp, side = set(), set()
    for line in open(path):
        status, p, what = line.rstrip("\n").split("\t")
        exp.add((status, p))
        if what == "dir-side-effect":
            side.add((status, p))
    return exp, side

def load_aide(path):
    """Plain report: section headers 'Added entries:', 'Removed entries:',
    'Changed entries:', each followed by lines 'SUMMARY: /path' where SUMMARY is a
    fixed-width attribute string (f+++..., f---..., 'f = p.. .c...A.   ')."""
    sections = {"Added entries:": "added", "Removed entries:": "removed",
                "Changed entries:": "changed"}
    found, status = set(), None
    for line in open(path, errors="surrogateescape"):
        line = line.rstrip("\n")
        if line in sections:
            status = sections[line]
            continue
        if line.startswith("Detailed information about changes"):
            break
        if status and ": /" in line and not line.startswith((" ", "-")):
            found.add((status, "/" + line.split(": /", 1)[1]))
    return found

def load_kms(path):
    norm = {"added": "added", "new": "added", "removed": "removed", "missing": "removed",
            "deleted": "removed", "changed": "changed", "modified": "changed"}
    doc = json.load(open(path))
    out = set()
    for f in doc.get("findings", []):
        st = str(f.get("status", "?"))
        # Posture findings (expiring certificates, weak keys...) are judgement AIDE does
        # not make: not part of the changed set both tools must agree on.
        if st == "posture":
            continue
        out.add((norm.get(st, st), f["path"]))
    return out, doc.get("summary")

def show(title, s):
    for st, p in sorted(s, key=lambda x: (x[1], x[0])):
        print(f"      {title} {st:8} {p}")

expected, side = load_expected(expected_tsv)
aide = load_aide(aide_txt)
print(f"  expected (tamper step): {len(expected)} entries "
      f"({len(expected) - len(side)} direct + {len(side)} parent directories)")
print(f"  aide --check reported : {len(aide)}")
ok = True
if kms_json:
    kms, summary = load_kms(kms_json)
    print(f"  kmsentry verify       : {len(kms)}  (summary: {json.dumps(summary)})")
    if kms == aide:
        print("  changed set: MATCH (kmsentry == AIDE)")
    else:
        ok = False
        print("  changed set: *** MISMATCH *** kmsentry and AIDE disagree")
        show("only kmsentry:", kms - aide)
        show("only AIDE:    ", aide - kms)
        only_dirs = (kms ^ aide) <= side
        if only_dirs:
            print("  (every difference is a parent directory whose mtime/ctime moved "
                  "when an entry was added or removed)")
    for name, got in (("kmsentry", kms), ("AIDE", aide)):
        if got != expected:
            print(f"  {name} vs tamper list: differs")
            show("missed:  ", expected - got)
            show("extra:   ", got - expected)
else:
    print("  changed set: kmsentry skipped; AIDE vs tamper list only")
if aide == expected:
    print("  AIDE vs tamper list: MATCH")
else:
    ok = False
    print("  AIDE vs tamper list: *** MISMATCH ***")
    show("missed:  ", expected - aide)
    show("extra:   ", aide - expected)
sys.exit(0 if ok else 1)
EOF
}

# ---------------------------------------------------------------------------------
# Summary table
# ---------------------------------------------------------------------------------
print_table() {
    python3 - "$CSV" "$NPROC" "$AIDE_WORKERS" "$SHA256_CMD" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
nproc, workers, sha_cmd = sys.argv[2], sys.argv[3], sys.argv[4]
by = {}
for r in rows:
    by.setdefault((r["label"], r["phase"]), []).append(r)

def stats(key):
    rs = by.get(key)
    if not rs:
        return None
    w = [float(r["wall_s"]) for r in rs]
    rss = [int(r["max_rss_kib"]) for r in rs if r["max_rss_kib"]]
    cpu = [float(r["user_s"]) + float(r["sys_s"]) for r in rs if r["user_s"] and r["sys_s"]]
    return {"med": statistics.median(w), "min": min(w), "max": max(w), "n": len(w),
            "rss": max(rss) if rss else None,
            "cpu": statistics.median(cpu) if cpu else None}

floor_key = ("read floor", "floor-read-par")
floor = stats(floor_key)
lines = [
    ("read floor", "floor-read-1", "find | xargs -0 cat (1 thread)", None),
    ("read floor", "floor-read-par", f"find | xargs -0 -P{nproc} cat", None),
    ("lstat floor", "floor-lstat", "find -printf (metadata of every entry)", None),
    ("sha256 floor", "floor-sha256", f"find | xargs -0 -P{nproc} {sha_cmd}", None),
    ("kmsentry", "init", "baseline init --force (hash: [blake3], the default)", ("aide", "init")),
    ("kmsentry-both", "init", "baseline init --force (hash: [blake3, sha256])", ("aide", "init")),
    ("aide", "init", f"aide --init ({workers} workers)", None),
    ("kmsentry", "check", "verify --format json", ("aide", "check")),
    ("aide", "check", f"aide --check ({workers} workers)", None),
]
print("| tool | command | median s | min s | max s | vs AIDE | vs read floor | CPU s | peak RSS MiB |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for label, phase, cmd, ref in lines:
    s = stats((label, phase))
    if s is None:
        continue
    vs_aide = "—"
    if label == "aide":
        vs_aide = "1.00"
    elif ref and stats(ref):
        vs_aide = f"{s['med'] / stats(ref)['med']:.2f}"
    vs_floor = f"{s['med'] / floor['med']:.2f}" if floor and floor["med"] > 0 else "—"
    cpu = f"{s['cpu']:.2f}" if s["cpu"] is not None else "—"
    rss = f"{s['rss'] / 1024:.0f}" if s["rss"] is not None else "—"
    cmd = cmd.replace("|", "\\|")  # a bare | would split the Markdown cell
    print(f"| {label} | `{cmd}` | {s['med']:.3f} | {s['min']:.3f} | {s['max']:.3f} "
          f"| {vs_aide} | {vs_floor} | {cpu} | {rss} |")
print()
print(f"Medians of {max(s['n'] for s in map(stats, by))} runs, warm page cache. "
      f"'vs read floor' divides by the {nproc}-thread cat median; 'vs AIDE' by the "
      "same phase of AIDE. CPU = user+sys (median); peak RSS = max over runs.")
EOF
}

# Share of CPU time that other processes used while this script slept: a noisy
# neighbour (a compile, an indexer) makes every number below suspect.
background_busy() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 3
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; idle = y[2] - x[2];
        printf "%.0f", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}

# ---------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------
ensure_tools
build_kmsentry
ensure_corpus
write_configs
check_policy
csv_init

n_files=$(find "$ROOT"/etc "$ROOT"/usr "$ROOT"/opt -type f | wc -l)
n_links=$(find "$ROOT"/etc "$ROOT"/usr "$ROOT"/opt -type l | wc -l)
n_dirs=$(find "$ROOT"/etc "$ROOT"/usr "$ROOT"/opt -type d | wc -l)
bytes=$(du -sb --apparent-size "$ROOT"/etc "$ROOT"/usr "$ROOT"/opt | awk '{ s += $1 } END { print s }')

echo
echo "## Machine"
echo
echo "- host: $HOST; nproc: $NPROC; CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "- CPU hash extensions: $(grep -m1 -o -w -E 'sha_ni|avx2|avx512f' /proc/cpuinfo | sort -u | paste -sd' ' - || echo none)"
echo "- memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); kernel: $(uname -r)"
echo "- work dir: $WORK ($(stat -f -c %T "$WORK"), $(findmnt -n -o SOURCE --target "$WORK" 2>/dev/null || echo '?'))"
echo "- aide: $(aide --version 2>&1 | head -1); rule: $AIDE_RULE; num_workers=$AIDE_WORKERS; database_attrs=$AIDE_DB_ATTRS"
if [[ $SKIP_KMSENTRY != 1 ]]; then
    echo "- kmsentry: $("$KMSENTRY" --version 2>&1 | head -1) ($KMSENTRY)"
fi
echo "- hyperfine: $(hyperfine --version 2>/dev/null || echo 'not installed (bash timing loop)')"
echo "- background CPU load before the timings: $(background_busy)% of all CPUs busy over 3 s (should be ~0)"
echo "- corpus: $n_files regular files, $n_links symlinks, $n_dirs directories, $((bytes / 1048576)) MiB (files=$FILES seed=$SEED)"
echo

log "warming the page cache"
find "$ROOT"/etc "$ROOT"/usr "$ROOT"/opt -type f -print0 | xargs -0 -P"$NPROC" cat >/dev/null

log "floors"
# OpenSSL's SHA-256 uses the CPU's SHA extensions; Debian's coreutils sha256sum does
# not (about 7x slower on a SHA-NI CPU), so it would be no floor at all.
if command -v openssl >/dev/null; then SHA256_CMD="openssl dgst -sha256"; else SHA256_CMD=sha256sum; fi
dirs="'$ROOT/etc' '$ROOT/usr' '$ROOT/opt'"
floor "read floor" floor-read-1 "find $dirs -type f -print0 | xargs -0 cat >/dev/null"
floor "read floor" floor-read-par "find $dirs -type f -print0 | xargs -0 -P$NPROC -n 500 cat >/dev/null"
floor "lstat floor" floor-lstat "find $dirs -printf '%m %U %G %s %i %n %T@ %C@\n' >/dev/null"
floor "sha256 floor" floor-sha256 "find $dirs -type f -print0 | xargs -0 -P$NPROC -n 500 $SHA256_CMD >/dev/null"

# Interleaved ABBA: odd rounds kmsentry first, even rounds AIDE first.
run_pair() { # phase round
    local phase=$1 r=$2 order
    if [[ $SKIP_KMSENTRY == 1 ]]; then
        order=(aide)
    elif [[ $phase == init ]] && ((r % 2)); then
        order=(kmsentry kmsentry-both aide)
    elif [[ $phase == init ]]; then
        order=(aide kmsentry-both kmsentry)
    elif ((r % 2)); then
        order=(kmsentry aide)
    else
        order=(aide kmsentry)
    fi
    local tool
    for tool in "${order[@]}"; do
        case $tool:$phase in
            kmsentry:init)
                timed kmsentry init "$r" 0 "$RUN/logs/kmsentry-init-$r.log" -- \
                    "$KMSENTRY" baseline init --policy "$KMS_POLICY" --db "$KMS_DB" \
                    --root "$ROOT" --force ;;
            kmsentry-both:init)
                timed kmsentry-both init "$r" 0 "$RUN/logs/kmsentry-both-init-$r.log" -- \
                    "$KMSENTRY" baseline init --policy "$KMS_POLICY_BOTH" --db "$KMS_DB_BOTH" \
                    --root "$ROOT" --force ;;
            aide:init)
                timed aide init "$r" 0 "$RUN/logs/aide-init-$r.log" -- \
                    aide --init -c "$AIDE_CONF" ;;
            kmsentry:check)
                timed kmsentry check "$r" '0|1' "$RUN/logs/kmsentry-verify-$r.log" -- \
                    "$KMSENTRY" verify --policy "$KMS_POLICY" --db "$KMS_DB" \
                    --root "$ROOT" --format json --output "$KMS_REPORT" ;;
            aide:check)
                # AIDE's exit code is a bitmask: 1 added, 2 removed, 4 changed; 14+ errors.
                timed aide check "$r" '[0-7]' "$RUN/logs/aide-check-$r.log" -- \
                    aide --check -c "$AIDE_CONF" ;;
        esac
    done
}

log "baseline: kmsentry baseline init vs aide --init ($RUNS runs each, interleaved)"
for ((r = 1; r <= RUNS; r++)); do run_pair init "$r"; done
[[ -s $AIDE_DB.new ]] || die "aide --init wrote no database; see $RUN/logs/aide-init-*.log.err"
mv -f "$AIDE_DB.new" "$AIDE_DB"
aide_entries=$(awk -F':[ \t]*' '/^Number of entries/ { print $2 }' "$RUN/logs/aide-init-$RUNS.log")

log "tampering with the corpus"
TAMPERED=1
python3 "$MAKE_CORPUS" "$ROOT" --tamper >"$RUN/tamper.tsv"
sync

log "verify: kmsentry verify vs aide --check ($RUNS runs each, interleaved)"
for ((r = 1; r <= RUNS; r++)); do run_pair check "$r"; done

echo
echo "## Changed set after tamper"
echo
echo "- AIDE database: ${aide_entries:-?} entries, $(stat -c %s "$AIDE_DB") bytes"
if [[ $SKIP_KMSENTRY != 1 && -f $KMS_DB ]]; then
    echo "- kmsentry database: $(stat -c %s "$KMS_DB") bytes"
fi
set_rc=0
if [[ $SKIP_KMSENTRY == 1 ]]; then
    compare_sets "$RUN/tamper.tsv" "$RUN/logs/aide-check-$RUNS.log" "" || set_rc=$?
elif [[ -s $KMS_REPORT ]]; then
    compare_sets "$RUN/tamper.tsv" "$RUN/logs/aide-check-$RUNS.log" "$KMS_REPORT" || set_rc=$?
else
    echo "  *** MISMATCH *** kmsentry wrote no JSON report ($KMS_REPORT); see $RUN/logs"
    set_rc=1
fi

log "restoring the corpus"
python3 "$MAKE_CORPUS" "$ROOT" --restore
TAMPERED=0

echo
echo "## Timings"
echo
print_table
echo
echo "Raw timings: ${CSV#"$REPO_DIR"/}"
if ((KEEP)); then echo "Run artifacts kept in $RUN"; fi
if ((${#BAD_EXITS[@]})); then
    echo
    echo "WARNING: unexpected exit codes: ${BAD_EXITS[*]}"
fi
guard_rc=0
if ((QUICK)) && [[ $SKIP_KMSENTRY != 1 ]]; then
    echo
    echo "## Regression guard (--quick)"
    echo
    python3 - "$CSV" "${QUICK_MIN_INIT:-}" "${QUICK_MIN_VERIFY:-}" "${QUICK_MAX_FLOOR:-}" <<'EOF' || guard_rc=1
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(label, phase):
    w = [float(r["wall_s"]) for r in rows if r["label"] == label and r["phase"] == phase]
    return statistics.median(w) if w else None
# Defaults: the 20k figures of docs/performance.md ("Regression guard") less the
# run-to-run noise measured there.
min_init = float(sys.argv[2] or 2.6)
min_verify = float(sys.argv[3] or 10.0)
max_floor = float(sys.argv[4] or 1.6)
init, aide_init = med("kmsentry", "init"), med("aide", "init")
check, aide_check = med("kmsentry", "check"), med("aide", "check")
floor = med("read floor", "floor-read-par")
checks = [
    ("init: aide --init / kmsentry init", aide_init / init, ">=", min_init),
    ("verify: aide --check / kmsentry verify", aide_check / check, ">=", min_verify),
    ("init: kmsentry init / read floor", init / floor, "<=", max_floor),
]
bad = 0
for what, got, op, lim in checks:
    ok = got >= lim if op == ">=" else got <= lim
    bad += not ok
    print(f"- {what}: {got:.2f} (guard {op} {lim:.2f}) {'ok' if ok else '*** BELOW GUARD ***'}")
sys.exit(1 if bad else 0)
EOF
fi
if ((set_rc || guard_rc || ${#BAD_EXITS[@]})); then exit 1; fi
