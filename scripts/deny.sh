#!/usr/bin/env bash
# cargo-deny's checks that work offline (deny.toml): every dependency's licence, one version of
# each crate unless a reason is written, crates from crates.io only. Installs cargo-deny, pinned,
# once into target/tools from crates.io (cargo checks each crate against the index's checksum;
# --locked builds it with the lock file it ships). `cargo fetch` first downloads the crates of
# every platform, whose manifests `cargo metadata` reads.
#
#   scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
deny=target/tools/bin/cargo-deny
if [ ! -x "$deny" ] || [ "$("$deny" --version)" != "cargo-deny $version" ]; then
  echo "deny.sh: installing cargo-deny $version into target/tools" >&2
  cargo install --locked --quiet "cargo-deny@$version" --root target/tools
fi
cargo fetch --locked --quiet
"$deny" --offline check licenses bans sources
