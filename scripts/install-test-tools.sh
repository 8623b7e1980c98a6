#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests need and the machine lacks (as root, or
# through sudo): python3-venv (the official SDK's venv, Helm's download), etcd-server (the real
# control plane; kube-apiserver and kube-controller-manager come from ../shared/kube/bin),
# podman and runc (the image test), promtool from prometheus without the daemons it recommends
# (the alerts and metrics tests). Does nothing when all is there. scripts/test.sh runs it.
set -euo pipefail
missing=()
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
need_promtool=""
command -v promtool >/dev/null 2>&1 || need_promtool=yes
if [ ${#missing[@]} -gt 0 ] || [ -n "$need_promtool" ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "test.sh: installing ${missing[*]} ${need_promtool:+prometheus (for promtool)}" >&2
  "${as_root[@]}" apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  if [ -n "$need_promtool" ]; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends prometheus
  fi
fi

