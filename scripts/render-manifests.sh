#!/usr/bin/env bash
# One source of truth for installing: the Helm chart. This renders from it
#   - deploy/ (the kustomize base: namespace, service account, RBAC, the controller's
#     Deployment, metrics Service and PodDisruptionBudget), with the chart's defaults, plain
#     labels, and the optional Secret tencent-default-credentials,
#   - install.yaml, the same objects after the CRDs, for `kubectl apply --server-side -f`,
#   - overlays/two-shards/shard-2.yaml, the second shard's Deployment, Service and
#     PodDisruptionBudget (the chart with sharding on and one shard, shard-2),
#   - deploy/components/monitoring/monitoring.yaml, the optional kustomize component: the
#     ServiceMonitor, the PrometheusRule and the Grafana dashboard's ConfigMap,
# and copies crds/ into the chart. With --check it changes nothing and fails when any of them
# differs from what the chart and crds/ give (CI runs that).
#
#   scripts/render-manifests.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
[ "${1:-}" = "--check" ] && check=true
helm="$(scripts/helm.sh)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

plain=(--namespace iothub-dynreg --set namespace.create=true --set helmLabels=false
  --set defaultCredentials.existingSecret=tencent-default-credentials
  --set defaultCredentials.optional=true)
"$helm" template iothub-dynreg charts/iothub-dynreg "${plain[@]}" > "$out/rendered.yaml"
"$helm" template iothub-dynreg charts/iothub-dynreg "${plain[@]}" \
  --set sharding.enabled=true --set 'sharding.shards={shard-2}' > "$out/sharded.yaml"
"$helm" template iothub-dynreg charts/iothub-dynreg "${plain[@]}" \
  --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true \
  --set metrics.grafanaDashboard.enabled=true > "$out/monitored.yaml"

python3 - "$out" <<'PY'
import pathlib, re, sys

out = pathlib.Path(sys.argv[1])
header = "# Generated from charts/iothub-dynreg by scripts/render-manifests.sh: edit the chart.\n"
files = {
    "Namespace": "deploy/namespace.yaml",
    "ServiceAccount": "deploy/serviceaccount.yaml",
    "ClusterRole": "deploy/rbac.yaml",
    "ClusterRoleBinding": "deploy/rbac.yaml",
    "Role": "deploy/rbac.yaml",
    "RoleBinding": "deploy/rbac.yaml",
    "Deployment": "deploy/controller/deployment.yaml",
    "Service": "deploy/controller/service.yaml",
    "PodDisruptionBudget": "deploy/controller/poddisruptionbudget.yaml",
}
order = ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
         "RoleBinding", "Service", "PodDisruptionBudget", "Deployment"]

def documents_of(name):
    """(kind, name, text) of each document of a rendering."""
    found = []
    for text in (out / name).read_text().split("\n---\n"):
        text = re.sub(r"^(---\n)?# Source: .*\n", "", text.strip("\n") + "\n")
        kind = re.search(r"^kind: (\S+)$", text, re.M)
        if kind:
            found.append((kind.group(1), re.search(r"^  name: (\S+)$", text, re.M).group(1), text))
    return found


documents = [(kind, text) for kind, _, text in documents_of("rendered.yaml")]
monitoring_kinds = ("ServiceMonitor", "PrometheusRule", "ConfigMap")
monitoring = [text for kind, _, text in documents_of("monitored.yaml") if kind in monitoring_kinds]
(out / "deploy/components/monitoring").mkdir(parents=True)
(out / "deploy/components/monitoring/monitoring.yaml").write_text(header + "---\n".join(monitoring))
shard = [text for _, name, text in documents_of("sharded.yaml") if name.startswith("iothub-dynreg-shard-2")]
(out / "overlays/two-shards").mkdir(parents=True)
(out / "overlays/two-shards/shard-2.yaml").write_text(header + "---\n".join(shard))
unknown = [kind for kind, _ in documents if kind not in files]
if unknown:
    sys.exit(f"render-manifests: no file for {unknown}")
by_file = {}
for kind, text in documents:
    by_file.setdefault(files[kind], []).append(text)
for name, texts in by_file.items():
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "---\n".join(texts))
documents.sort(key=lambda document: order.index(document[0]))
crds = pathlib.Path("deploy/crd.yaml").read_text()
bundle = (
    "# kubectl apply --server-side -f install.yaml\n"
    "# The CRDs and the controller with the chart's defaults, in one file; generated from\n"
    "# charts/iothub-dynreg by scripts/render-manifests.sh.\n"
    + crds + "---\n" + "---\n".join(text for _, text in documents)
)
(out / "install.yaml").write_text(bundle)
for crd in pathlib.Path("crds").glob("*.yaml"):
    target = out / "charts/iothub-dynreg/crds" / crd.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(crd.read_text())
PY

rendered=(deploy/namespace.yaml deploy/serviceaccount.yaml deploy/rbac.yaml
  deploy/controller/deployment.yaml deploy/controller/service.yaml
  deploy/controller/poddisruptionbudget.yaml install.yaml overlays/two-shards/shard-2.yaml
  deploy/components/monitoring/monitoring.yaml)
for crd in crds/*.yaml; do rendered+=("charts/iothub-dynreg/crds/$(basename "$crd")"); done
stale=()
for file in "${rendered[@]}"; do
  if $check; then
    cmp -s "$out/$file" "$file" || stale+=("$file")
  else
    mkdir -p "$(dirname "$file")"
    cp "$out/$file" "$file"
  fi
done
if [ ${#stale[@]} -gt 0 ]; then
  echo "render-manifests: stale, run scripts/render-manifests.sh: ${stale[*]}" >&2
  exit 1
fi
$check && echo "rendered manifests match the chart" || echo "rendered: ${rendered[*]}"
