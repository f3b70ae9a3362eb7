#!/usr/bin/env bash
# Installs every Debian package that building, testing, benchmarking and the demo need.
# Idempotent: when everything is already installed it only checks and exits (no network).
set -euo pipefail

PACKAGES=(
  build-essential cmake make git pkg-config clang-format
  # ThreadSanitizer builds of the stress tests (make test-tsan).
  clang-14 libclang-rt-14-dev libomp-14-dev
  # gRPC / protobuf / Abseil: Debian's single ABI (never vendor another copy).
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  # Numerics: Eigen for GEMM, FAISS for top-k, OpenBLAS so FAISS does not run on reference BLAS.
  libeigen3-dev libfaiss-dev libopenblas-dev libopenblas-openmp-dev
  # Service support; libssl-dev: SHA-256 and the CSPRNG of bearer tokens (OpenSSL::Crypto).
  prometheus-cpp-dev librocksdb-dev libssl-dev
  # Command lines of dotsctl and dots-bench (header only).
  libcli11-dev
  # Tests and benchmarks.
  libgtest-dev libgmock-dev libbenchmark-dev
  # Python reference tests and clients use /usr/bin/python3 with Debian's packages.
  python3 python3-numpy python3-grpcio python3-protobuf python3-pytest python3-matplotlib
)
# Observability and deployment checks (tests/deploy): promtool and a real Prometheus server,
# YAML for the manifest checks, flock; the openssl CLI makes the auth tests' certificates;
# python3-torch: examples/lm_grpo (make demo, its pytest), the PyTorch autograd check of the
# adapter's backward pass and the checkpoint converter (tools/convert_adapter.py); HAProxy: the
# router of a local cluster (scripts/cluster.sh and its test). Not needed to build: the container
# image's build stage sets DOTS_DEPS_BUILD_ONLY=1 and skips them.
TEST_PACKAGES=(prometheus python3-yaml util-linux openssl python3-torch haproxy)
if [ "${DOTS_DEPS_BUILD_ONLY:-0}" != "1" ]; then
  PACKAGES+=("${TEST_PACKAGES[@]}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# npm installs the offline Kubernetes schema validator and the Dockerfile linter into
# tools/node_modules (tests/deploy/node_tools.sh). Checked by command, not by package: a
# NodeSource nodejs bundles npm and conflicts with Debian's npm package.
if [ "${DOTS_DEPS_BUILD_ONLY:-0}" != "1" ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
