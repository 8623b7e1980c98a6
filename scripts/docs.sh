#!/usr/bin/env bash
# Builds the documentation site into target/site, strict (mkdocs.yml): a broken link, a missing
# anchor or a page left out of the navigation fails. `scripts/docs.sh serve` previews it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/docs-venv.sh >/dev/null
# mkdocs-material 9.7+ prints a notice about a future MkDocs 2.0 on every build.
export NO_MKDOCS_2_WARNING=1
if [[ "${1:-}" == serve ]]; then
  exec target/docs-venv/bin/mkdocs serve
fi
target/docs-venv/bin/mkdocs build --strict --clean
