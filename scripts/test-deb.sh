#!/usr/bin/env bash
# Install, upgrade, remove and purge the kmsentry .deb in a fresh Debian 12 chroot
# (`debootstrap --variant=minbase bookworm`), checking what each step must leave, and that a
# purge leaves nothing behind: every path the package or the daemon created is gone, and no
# path outside dpkg's own records differs from the untouched chroot.
#
# Usage (root): scripts/test-deb.sh
#   KMSENTRY_DEB_PROFILE=dev packages the debug build the test suite already made (CI does
#   this to save a release build; the package's files and scripts are the same).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-deb: needs root (debootstrap, chroot)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=900 debootstrap >/dev/null
fi

work=$(mktemp -d /var/tmp/kmsentry-deb.XXXXXX)
root="$work/root"
cleanup() {
  for m in proc dev; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
step() { echo "== test-deb: $*"; }

# Two versions of the same build: revision 1 and revision 2 (an upgrade).
profile=${KMSENTRY_DEB_PROFILE:-release}
if [ "$profile" = release ]; then
  scripts/build-deb.sh --deb-revision 1 --output "$work/v1.deb" >/dev/null
else
  KMSENTRY_DEB_PROFILE=$profile scripts/build-deb.sh --deb-revision 1 --output "$work/v1.deb" >/dev/null
fi
# Revision 2: the same files and scripts under a higher version (repacked, so the binary is
# byte for byte the one of revision 1 and `verify` after the upgrade has nothing to report).
dpkg-deb -R "$work/v1.deb" "$work/v2"
v1=$(dpkg-deb -f "$work/v1.deb" Version)
sed -i "s/^Version: .*/Version: ${v1%-*}-2/" "$work/v2/DEBIAN/control"
dpkg-deb --root-owner-group -b "$work/v2" "$work/v2.deb" >/dev/null
dpkg-deb --info "$work/v1.deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$work/v1.deb" | awk '{print $1, $6}' > "$work/contents.txt"

step "debootstrap bookworm (minbase)"
debootstrap --variant=minbase bookworm "$root" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
cp "$work/v1.deb" "$work/v2.deb" "$root/tmp/"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
snapshot() {
  # Every path with its type and mode, minus dpkg's own records, the account tools' backup
  # copies (passwd-, shadow-, … are rewritten by every useradd/userdel) and what the test
  # brings; plus the content of the account databases themselves, which must come back
  # exactly as they were.
  (cd "$root" && find . -xdev \
      \( -path ./proc -o -path ./dev -o -path ./sys -o -path ./tmp -o -path ./run \
         -o -path ./var/lib/dpkg -o -path ./var/log/dpkg.log -o -path ./var/cache/debconf \
         -o -path ./var/log/apt -o -path ./var/cache/apt -o -path ./var/lib/apt \
         -o -path ./etc/passwd- -o -path ./etc/group- -o -path ./etc/shadow- \
         -o -path ./etc/gshadow- \) -prune \
      -o -printf '%y %m %p\n' | LC_ALL=C sort
   sha256sum etc/passwd etc/group etc/shadow etc/gshadow)
}
snapshot > "$work/before.txt"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"

step "install"
in_root dpkg -i /tmp/v1.deb >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i"; }
in_root kmsentry --version | grep -q '^kmsentry ' || fail "kmsentry --version"
[ "$(stat -c %a "$root/var/lib/kmsentry")" = 700 ] || fail "/var/lib/kmsentry is not 0700"
[ "$(stat -c %a "$root/var/log/kmsentry")" = 700 ] || fail "/var/log/kmsentry is not 0700"
in_root dpkg-query -W -f='${Conffiles}\n' kmsentry | grep -q '/etc/kmsentry/policy.yaml' \
  || fail "/etc/kmsentry/policy.yaml is not a conffile"
for f in /usr/share/kmsentry/policies/kms-client-host.yaml /usr/share/kmsentry/policies/golden-image.yaml \
         /usr/share/bash-completion/completions/kmsentry /usr/share/zsh/vendor-completions/_kmsentry \
         /usr/share/fish/vendor_completions.d/kmsentry.fish /usr/share/doc/kmsentry/README.md; do
  [ -f "$root$f" ] || fail "missing $f"
done
unit=$(ls "$root"/lib/systemd/system/kmsentry.service "$root"/usr/lib/systemd/system/kmsentry.service 2>/dev/null | head -1)
[ -n "$unit" ] || fail "no systemd unit"
pages=$(ls "$root/usr/share/man/man1/" | grep -c '^kmsentry.*\.1\.gz$')
[ "$pages" -ge 15 ] || fail "only $pages man pages"
zcat "$root/usr/share/man/man1/kmsentry-verify.1.gz" | grep -q 'EXIT STATUS' || fail "kmsentry-verify(1) has no EXIT STATUS"
[ -e "$root/etc/systemd/system/multi-user.target.wants/kmsentry.service" ] \
  && fail "the unit was enabled before a baseline exists"
in_root kmsentry policy check /etc/kmsentry/policy.yaml >/dev/null || fail "policy check of the shipped policy"
getent_root() { in_root getent "$@" >/dev/null; }
getent_root passwd kmsentry || fail "no kmsentry system user"
# The daemon's state as a host would have it: a log key, a baseline of the default policy.
in_root kmsentry key gen --out /etc/kmsentry/log.key >/dev/null 2>&1 || fail "key gen"
in_root kmsentry baseline init >/dev/null 2>&1 || fail "baseline init with the defaults"
[ -f "$root/var/lib/kmsentry/baseline.db" ] || fail "no default baseline"
check_verify() {
  in_root kmsentry verify >"$work/verify.out" 2>&1 || { cat "$work/verify.out"; fail "verify $1"; }
}
check_verify "right after init"
echo "x" > "$root/var/log/kmsentry/alerts.jsonl"

step "upgrade to revision 2"
in_root dpkg -i /tmp/v2.deb >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "upgrade"; }
[ "$(in_root dpkg-query -W -f='${Version}' kmsentry)" = "$(dpkg-deb -f "$work/v2.deb" Version)" ] || fail "version after upgrade"
[ -f "$root/var/lib/kmsentry/baseline.db" ] || fail "the upgrade lost the baseline"
check_verify "after the upgrade"
echo "# a local edit" >> "$root/etc/kmsentry/policy.yaml"

step "remove (keeps configuration and state)"
in_root dpkg -r kmsentry >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "remove"; }
[ ! -e "$root/usr/bin/kmsentry" ] || fail "binary left after remove"
[ -f "$root/etc/kmsentry/policy.yaml" ] || fail "remove deleted the conffile"
[ -f "$root/var/lib/kmsentry/baseline.db" ] || fail "remove deleted the state"

step "install again, then purge"
in_root dpkg -i /tmp/v2.deb >>"$work/install.log" 2>&1 || fail "reinstall"
grep -q '# a local edit' "$root/etc/kmsentry/policy.yaml" || fail "reinstalling overwrote the edited conffile"
in_root dpkg -P kmsentry >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "purge"; }
umount "$root/proc" "$root/dev"
in_root dpkg-query -W kmsentry >/dev/null 2>&1 && fail "package still known to dpkg after purge"
getent_root passwd kmsentry && fail "the kmsentry user is left after purge"
getent_root group kmsentry && fail "the kmsentry group is left after purge"
rm -f "$root/tmp/v1.deb" "$root/tmp/v2.deb"
snapshot > "$work/after.txt"
if ! diff -u "$work/before.txt" "$work/after.txt" > "$work/left.diff"; then
  cat "$work/left.diff"
  fail "the purge left the chroot different from before the install"
fi
n=$(wc -l < "$work/contents.txt")
echo "test-deb: ok: installed ($n paths), upgraded, removed, purged; nothing left behind"
