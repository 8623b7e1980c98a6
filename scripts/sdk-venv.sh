#!/usr/bin/env bash
# Creates target/sdk-venv with the official Tencent Cloud Python SDK (IoT Hub, IoT Explorer,
# IoT Video and their core, pinned with hashes in scripts/sdk-requirements.txt), which the
# interop test (tests/emulator_official_sdk.rs) uses to call the emulator. Safe to run again: a
# venv without every pinned service is made again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
check='import tencentcloud.iotcloud.v20210408, tencentcloud.iotexplorer.v20190423.models as m, tencentcloud.iotvideo.v20211125
assert hasattr(m, "ModifyProductDynamicRegisterRequest")'
if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    -r scripts/sdk-requirements.txt
fi
"$venv/bin/python" -c 'import tencentcloud, sys; print("official SDK ready in", sys.prefix)'
