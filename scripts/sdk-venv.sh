#!/usr/bin/env bash
# Creates target/sdk-venv with the official Tencent Cloud Python SDK, which the interop test
# (tests/emulator_official_sdk.rs) uses to call the emulator. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
if ! "$venv/bin/python" -c 'import tencentcloud.iotcloud.v20210408' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'tencentcloud-sdk-python-common>=3.0.1400,<4' 'tencentcloud-sdk-python-iotcloud>=3.0.1400,<4'
fi
"$venv/bin/python" -c 'import tencentcloud, sys; print("official SDK ready in", sys.prefix)'
