#!/usr/bin/env bash
# Build the kmsentry .deb: release binary, man pages and completions generated from the clap
# definitions, shipped policies (and rule packs, when the tree has them), then `cargo deb`.
# Usage: scripts/build-deb.sh [cargo deb options, e.g. --deb-revision 2 --output F]
#   prints the path of the .deb. KMSENTRY_DEB_PROFILE=dev packages the debug build instead of
#   a release build (CI's install/upgrade/purge test; same files and scripts).
# Needs cargo-deb (installed here when missing, at the version this script was written for).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-deb: installing cargo-deb" >&2
  cargo install cargo-deb --version 3.8.0 --locked --quiet
fi

profile=${KMSENTRY_DEB_PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --release --locked --quiet
  bin=target/release/kmsentry
else
  cargo build --locked --quiet
  bin=target/debug/kmsentry
fi
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/share"
"$bin" generate man "$assets/man"
"$bin" generate completions "$assets/completions"
cp -r policies "$assets/share/policies"
if [ -d rules ]; then cp -r rules "$assets/share/rules"; fi

# cargo-deb warns that a dev profile is for testing only; that is what it is used for here.
cargo deb --no-build --locked --quiet --profile "$profile" "$@" 2>/dev/null | tail -n 1
