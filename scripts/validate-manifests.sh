#!/usr/bin/env bash
# Validates every Kubernetes manifest of the repository against the Kubernetes schemas
# (PyPI kubernetes-validate, in target/validate-venv), and the DynamicRegistration examples
# against the CRD's own schema. Also checks that each kustomization lists only files that exist.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/validate-venv
if ! "$venv/bin/python" -c 'import kubernetes_validate, jsonschema' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate>=1.33' jsonschema pyyaml
fi
kubernetes_version=1.35.0

manifests=()
while IFS= read -r file; do manifests+=("$file"); done < <(
  find deploy crds examples overlays install.yaml -name '*.yaml' ! -name kustomization.yaml | sort)

# Built-in kinds (and the CRD object itself) against the Kubernetes schemas; the custom
# resources are checked against the CRD below, so their "no schema" warning is expected.
"$venv/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "${manifests[@]}"

"$venv/bin/python" - "${manifests[@]}" <<'PY'
import sys, yaml, jsonschema, pathlib

crd = yaml.safe_load(open("crds/iothub.dynreg.io_dynamicregistrations.yaml"))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

def drop_openapi_only(node):
    """OpenAPI's `nullable` is not JSON Schema: let null through where it is set."""
    if isinstance(node, dict):
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        for value in node.values():
            drop_openapi_only(value)
    elif isinstance(node, list):
        for value in node:
            drop_openapi_only(value)

drop_openapi_only(schema)
validator = jsonschema.Draft7Validator(schema)
checked = 0
for path in sys.argv[1:]:
    for document in yaml.safe_load_all(open(path)):
        if not document or document.get("kind") != crd["spec"]["names"]["kind"]:
            continue
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        for error in errors:
            print(f"{path}: {'/'.join(map(str, error.path))}: {error.message}")
        if errors:
            sys.exit(1)
        checked += 1
print(f"{checked} DynamicRegistration manifest(s) valid against the CRD schema")

for kustomization in pathlib.Path(".").glob("*/kustomization.yaml"):
    for resource in yaml.safe_load(open(kustomization)).get("resources", []):
        target = kustomization.parent / resource
        if not target.exists():
            sys.exit(f"{kustomization}: resource {resource} does not exist")
        if target.is_dir() and not (target / "kustomization.yaml").exists():
            sys.exit(f"{kustomization}: {resource} is a directory without kustomization.yaml")
print("kustomizations reference existing files")
PY
echo "manifests valid: ${#manifests[@]} files against Kubernetes $kubernetes_version"
