#!/usr/bin/env bash
# deploy/k8s: renders the kustomize base and validates every object offline
# (tests/deploy/validate_k8s.js: Kubernetes OpenAPI schemas via npm kubernetes-models, CRDs
# structurally, plus the conventions of the issue).
# Rendering uses `kubectl kustomize` when kubectl >= 1.24 (kustomize v4.5+, which knows the
# `labels:` field) is installed; otherwise tests/deploy/render_kustomize.js, which implements the
# subset this base uses (resources, labels). It says which one ran. DOTS_K8S_RENDERER=fallback
# forces the fallback (to test it where kubectl exists).
# The validator also checks the router's ConfigMap against deploy/haproxy/make-config.sh's output
# for as many replicas as the StatefulSet has, and runs `haproxy -c` on it when HAProxy is
# installed. With kubectl, an overlay made as deploy/README.md says (another namespace, 4
# replicas, the ConfigMap from deploy/haproxy/make-k8s-configmap.sh) is rendered and validated too.
# Usage: k8s_test.sh SOURCE_DIR
set -euo pipefail
src=${1:?usage: k8s_test.sh SOURCE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
modules=$(bash "$here/node_tools.sh" "$src")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

use_kubectl=0
if [ "${DOTS_K8S_RENDERER:-}" != fallback ] && command -v kubectl >/dev/null 2>&1; then
  minor=$(kubectl version --client -o json 2>/dev/null |
          /usr/bin/python3 -c 'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["clientVersion"]["minor"] if c.isdigit())))' \
          2>/dev/null || echo 0)
  if [ "$minor" -ge 24 ]; then use_kubectl=1; fi
fi
if [ "$use_kubectl" = 1 ]; then
  echo "k8s_test: rendering with $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
  kubectl kustomize "$src/deploy/k8s" > "$work/rendered.yaml"
  # The fallback renderer must agree with kustomize where both exist, so that machines without
  # kubectl test the same objects.
  NODE_PATH="$modules" node "$here/render_kustomize.js" "$src/deploy/k8s" > "$work/fallback.yaml"
  NODE_PATH="$modules" node "$here/validate_k8s.js" --compare "$work/rendered.yaml" \
    "$work/fallback.yaml"
else
  echo "k8s_test: rendering with tests/deploy/render_kustomize.js (no kubectl >= 1.24, or DOTS_K8S_RENDERER=fallback)"
  NODE_PATH="$modules" node "$here/render_kustomize.js" "$src/deploy/k8s" > "$work/rendered.yaml"
fi
NODE_PATH="$modules" node "$here/validate_k8s.js" "$work/rendered.yaml" "$src"

if [ "$use_kubectl" = 1 ]; then
  overlay="$work/overlay"
  mkdir -p "$overlay"
  base=$(/usr/bin/python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
         "$(cd "$src/deploy/k8s" && pwd)" "$overlay")
  bash "$src/deploy/haproxy/make-k8s-configmap.sh" 4 rl-jobs > "$overlay/router-configmap.yaml"
  cat > "$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: rl-jobs
resources:
  - $base
replicas:
  - name: dots
    count: 4
patches:
  - path: router-configmap.yaml
YAML
  kubectl kustomize "$overlay" > "$work/overlay.yaml"
  grep -q 'dots-3.dots-headless.rl-jobs.svc.cluster.local:50051' "$work/overlay.yaml" ||
    { echo "k8s_test: the overlay's router config does not list dots-3 in rl-jobs" >&2; exit 1; }
  echo "k8s_test: an overlay with 4 replicas in namespace rl-jobs:"
  NODE_PATH="$modules" node "$here/validate_k8s.js" "$work/overlay.yaml" "$src"
fi
echo "k8s_test: OK"
