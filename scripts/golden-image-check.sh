#!/usr/bin/env bash
# golden-image-check.sh: compare two filesystem images with kmsentry, for CI.
#
# Records a baseline of image A (the reviewed reference), exports it as a stable text manifest
# (commit it as baselines/<image>.txt so changes are reviewed), then verifies image B against it
# and writes JUnit, SARIF and JSON reports plus a human summary. Exits with verify's status:
#   0 clean, 1 drift found, 2 usage or policy error, 3 baseline/store/I/O integrity error.
# verify judges drift only: an expired or loose credential that is in both images does not fail
# the check. The posture of image B (`kmsentry audit`) is written beside the reports for review
# and counts only with --posture.
#
# Both images are directories: an unpacked root filesystem or a mounted disk image. Run as root
# (or with CAP_DAC_READ_SEARCH) so that files such as 0600 keys inside the images can be read.
# kmsentry reads the policy's host-absolute paths under each image root and never follows a
# symlink out of it.
#
# Docs: docs/ci-golden-image.md.

set -euo pipefail

prog=${0##*/}

usage() {
    cat <<EOF
Usage: $prog --policy POLICY --image-a DIR_A --image-b DIR_B [--out DIR] [--kmsentry BIN]
       [--posture] [--fail-on SEVERITY]

Baseline image A with kmsentry, verify image B against it, and write reports.

  --policy POLICY    kmsentry policy (e.g. policies/golden-image.yaml)
  --image-a DIR_A    root directory of the reference image (baselined)
  --image-b DIR_B    root directory of the image to check (verified)
  --out DIR          output directory (default: ./golden-image-check); it receives
                       baseline.db          baseline of image A
                       baseline.txt         'kmsentry baseline export' manifest, for git review
                       verify.junit.xml     JUnit report   (CI test results)
                       verify.sarif         SARIF 2.1.0    (code scanning)
                       verify.json          JSON report    (scripts)
                       verify.txt           human report   (also printed)
                       audit.json, audit.txt  posture of image B (kmsentry audit), for review
  --kmsentry BIN     kmsentry binary (default: \$KMSENTRY, else 'kmsentry' from PATH)
  --posture          also count image B's credential posture (expired or expiring
                     certificates, loose key modes, weak keys...) in verify's reports and status
  --fail-on SEV      fail only for findings at or above SEV: info, low, medium, high, critical
                     (default: any drift)
  -h, --help         show this help

Images must be directories. To check a disk image (raw, qcow2, ...), mount it read-only first
and pass the mount point, for example:
  qemu-nbd --read-only --connect=/dev/nbd0 image.qcow2
  mount -o ro,noload /dev/nbd0p1 /mnt/image-a      # noload: ext4 must not replay its journal
or, for a raw image:
  losetup --read-only --partscan --find --show image.raw      # prints /dev/loopN
  mount -o ro,noload /dev/loopNp1 /mnt/image-a
An OCI/Docker image can be unpacked with its owners, modes, ACLs and xattrs preserved, e.g.
  tar --numeric-owner --acls --xattrs --xattrs-include='*' -xpf rootfs.tar -C DIR

Exit status (verify's): 0 clean, 1 drift found, 2 usage or policy error,
3 baseline, store or I/O integrity error.
EOF
}

die_usage() {
    printf '%s: %s\n' "$prog" "$1" >&2
    printf "Try '%s --help'.\n" "$prog" >&2
    exit 2
}

policy=""
image_a=""
image_b=""
out="golden-image-check"
kmsentry="${KMSENTRY:-kmsentry}"
verify_opts=()

# need_value OPTION ARGC: the option at $1 needs a value.
need_value() {
    if [[ "$2" -lt 2 ]]; then
        die_usage "option $1 needs a value"
    fi
}

while [[ "$#" -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --posture)
            verify_opts+=(--posture)
            shift
            continue
            ;;
        --policy | --image-a | --image-b | --out | --kmsentry | --fail-on)
            need_value "$1" "$#"
            opt=$1
            val=$2
            shift 2
            ;;
        --policy=* | --image-a=* | --image-b=* | --out=* | --kmsentry=* | --fail-on=*)
            opt=${1%%=*}
            val=${1#*=}
            shift
            ;;
        --)
            shift
            if [[ "$#" -gt 0 ]]; then
                die_usage "unexpected argument: $1"
            fi
            break
            ;;
        *)
            die_usage "unknown argument: $1"
            ;;
    esac
    case "$opt" in
        --policy) policy=$val ;;
        --image-a) image_a=$val ;;
        --image-b) image_b=$val ;;
        --out) out=$val ;;
        --kmsentry) kmsentry=$val ;;
        --fail-on)
            case "$val" in
                info | low | medium | high | critical) verify_opts+=(--fail-on "$val") ;;
                *) die_usage "--fail-on must be one of info, low, medium, high, critical" ;;
            esac
            ;;
        *) die_usage "internal error: unhandled option $opt" ;;
    esac
done

[[ -n "$policy" ]] || die_usage "missing --policy"
[[ -n "$image_a" ]] || die_usage "missing --image-a"
[[ -n "$image_b" ]] || die_usage "missing --image-b"
[[ -n "$out" ]] || die_usage "--out must not be empty"

if [[ ! -f "$policy" ]] || [[ ! -r "$policy" ]]; then
    die_usage "policy is not a readable file: $policy"
fi

# check_image NAME DIR: DIR must be a directory; a disk image file gets a hint.
check_image() {
    if [[ -d "$2" ]]; then
        return 0
    fi
    if [[ -f "$2" ]]; then
        die_usage "$1 is a file, not a directory: $2 (mount a disk image read-only first; see --help)"
    fi
    die_usage "$1 is not a directory: $2"
}
check_image --image-a "$image_a"
check_image --image-b "$image_b"

if ! command -v -- "$kmsentry" >/dev/null 2>&1; then
    die_usage "kmsentry binary not found or not executable: $kmsentry (use --kmsentry or \$KMSENTRY)"
fi

out_created=false
if [[ ! -d "$out" ]]; then
    mkdir -p -- "$out"
    out_created=true
fi

# Physical absolute paths, to catch an output directory inside an image: the reports would
# change the image being checked, and show up in the next check of it.
abs_dir() { (cd -P -- "$1" && pwd -P); }
out_abs=$(abs_dir "$out")
for img in "$image_a" "$image_b"; do
    img_abs=$(abs_dir "$img")
    case "$out_abs/" in
        "$img_abs"/*)
            if [[ "$out_created" = true ]]; then
                rmdir -- "$out" 2>/dev/null || true
            fi
            die_usage "--out ($out) lies inside image $img; put it outside both images"
            ;;
        *) ;;
    esac
done

db="$out/baseline.db"
manifest="$out/baseline.txt"

log() { printf '%s: %s\n' "$prog" "$*" >&2; }

# log_cmd ARGS...: log a command, shell-quoted.
log_cmd() {
    local q
    printf -v q '%q ' "$@"
    log "+ ${q% }"
}

# run: log the command, run it, and leave its exit status in $rc (never aborts the script).
rc=0
run() {
    log_cmd "$@"
    rc=0
    "$@" || rc=$?
}

# Reports of an earlier run must not survive a run that fails before rewriting them: CI would
# publish stale results.
rm -f -- "$manifest" "$manifest.tmp" "$out/verify.junit.xml" "$out/verify.sarif" \
    "$out/verify.json" "$out/verify.txt" "$out/audit.json" "$out/audit.txt"

# 1. Baseline image A.
run "$kmsentry" baseline init --policy "$policy" --db "$db" --root "$image_a" --force
if [[ "$rc" -ne 0 ]]; then
    log "baseline init of image A failed (exit $rc)"
    exit "$rc"
fi

# 2. Export the manifest (written to a temporary file first, so a failed export leaves no
#    truncated manifest behind).
printf -v export_cmd '%q ' "$kmsentry" baseline export --db "$db"
printf -v export_to '%q' "$manifest"
log "+ ${export_cmd}> ${export_to}"
rc=0
"$kmsentry" baseline export --db "$db" >"$manifest.tmp" || rc=$?
if [[ "$rc" -ne 0 ]]; then
    rm -f -- "$manifest.tmp"
    log "baseline export failed (exit $rc)"
    exit "$rc"
fi
mv -f -- "$manifest.tmp" "$manifest"

# 3. Verify image B, once per report format. All runs read the same baseline and image; if
#    their statuses ever differ (image B changed during the check), the most severe one wins.
status=0
worst() {
    if [[ "$1" -gt "$status" ]]; then
        status=$1
    fi
}
verify_to() {
    run "$kmsentry" verify --policy "$policy" --db "$db" --root "$image_b" \
        --format "$1" --output "$2" ${verify_opts[@]+"${verify_opts[@]}"}
    case "$rc" in
        0 | 1 | 2 | 3) ;;
        *)
            log "kmsentry verify --format $1 exited $rc (unexpected); treating as an integrity error"
            rc=3
            ;;
    esac
    worst "$rc"
    codes+=("$1=$rc")
}
codes=()
verify_to junit "$out/verify.junit.xml"
verify_to sarif "$out/verify.sarif"
verify_to json "$out/verify.json"
verify_to human "$out/verify.txt"

# 3b. Posture of image B, for review: informational, never part of the status (verify judges
#     drift; pass --posture to count posture). Its exit 1 means "findings at medium or above".
run "$kmsentry" audit --policy "$policy" --root "$image_b" --format json --output "$out/audit.json"
audit_rc=$rc
run "$kmsentry" audit --policy "$policy" --root "$image_b" --format human --output "$out/audit.txt"
if [[ "$audit_rc" -gt 1 ]]; then
    log "kmsentry audit of image B exited $audit_rc (ignored: the posture report is informational)"
fi

# 4. Human summary.
printf '\n== kmsentry verify: %s against the baseline of %s ==\n' "$image_b" "$image_a"
if [[ -f "$out/verify.txt" ]]; then
    cat -- "$out/verify.txt"
fi
case "$status" in
    0) verdict="clean: image B matches the baseline of image A" ;;
    1) verdict="DRIFT: image B differs from the baseline of image A" ;;
    2) verdict="usage or policy error (see messages above)" ;;
    *) verdict="integrity or I/O error: some entries could not be checked (see messages above)" ;;
esac
printf '\nresult:   %s (exit %s)\n' "$verdict" "$status"
printf 'runs:     %s\n' "${codes[*]}"
printf 'manifest: %s\n' "$manifest"
printf 'reports:  %s %s %s %s\n' "$out/verify.junit.xml" "$out/verify.sarif" \
    "$out/verify.json" "$out/verify.txt"
if [[ -f "$out/audit.txt" ]]; then
    printf 'posture:  %s (%s)\n' "$(tail -n 1 -- "$out/audit.txt")" "$out/audit.txt"
fi

exit "$status"
