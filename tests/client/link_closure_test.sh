#!/usr/bin/env bash
# What a program linked against the C++ client alone really carries: its shared libraries (ldd)
# must not include RocksDB, FAISS, a BLAS or OpenMP, and its own code must not define the
# engine's classes (core/: Run, Estimator, StateStore, ReplayStore, Selector, Pool). It must
# define dots::Client and load gRPC, so that the check cannot pass on a binary it failed to read.
#
#   tests/client/link_closure_test.sh PATH/TO/client_trainer_test
set -u
BINARY=${1:?usage: $0 BINARY}
status=0

libraries=$(ldd "$BINARY") || { echo "ldd $BINARY failed" >&2; exit 1; }
if ! grep -q 'libgrpc++' <<<"$libraries"; then
  echo "FAIL: $BINARY does not load libgrpc++ (is it the client program?)" >&2
  status=1
fi
engine=$(grep -E 'librocksdb|libfaiss|libopenblas|libblas|liblapack|libgomp|libomp|libprometheus' \
  <<<"$libraries")
if [[ -n "$engine" ]]; then
  echo "FAIL: $BINARY loads engine libraries:" >&2
  echo "$engine" >&2
  status=1
fi

symbols=$(nm -C --defined-only "$BINARY") || { echo "nm $BINARY failed" >&2; exit 1; }
if ! grep -q 'dots::Client::NextBatch' <<<"$symbols"; then
  echo "FAIL: $BINARY defines no dots::Client::NextBatch (is it the client program?)" >&2
  status=1
fi
core=$(grep -E 'dots::(Run|Estimator|StateStore|ReplayStore|Selector|Pool|RunRegistry)::' \
  <<<"$symbols" | head -5)
if [[ -n "$core" ]]; then
  echo "FAIL: $BINARY contains engine code, e.g.:" >&2
  echo "$core" >&2
  status=1
fi

[[ $status -eq 0 ]] && echo "client_link_closure: $(wc -l <<<"$libraries") shared libraries, none of the engine"
exit $status
