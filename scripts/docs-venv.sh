#!/usr/bin/env bash
# Creates target/docs-venv with the documentation site's tools (mkdocs, mkdocs-material), each
# pinned with its hashes in scripts/docs-requirements.txt. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/docs-venv
if ! "$venv/bin/mkdocs" --version 2>/dev/null | grep -q ' 1.6.1 '; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    -r scripts/docs-requirements.txt
fi
"$venv/bin/mkdocs" --version
