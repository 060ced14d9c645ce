#!/usr/bin/env bash
# fedbatch's in-process signature verification against gpg's, at full
# size: the differential test (Tests/FedBatchTests/SignatureDifferentialTests.swift)
# with FEDBATCH_SIGNATURE_CASES=full, which signs with every key type, hash
# and time gpg can make (about 780 signatures), alters each 17 ways, and
# requires both verifiers to give the same verdict and reason code on every
# one of more than 10,000. `make test` runs about 800 of them.
#
#   bench/signatures.sh
#   FEDBATCH_SIGNATURE_SEED=N bench/signatures.sh   (replays the bit flips of a run)
set -euo pipefail
cd "$(dirname "$0")/.."
export FEDBATCH_PYTHON=${FEDBATCH_PYTHON:-$PWD/.venv/bin/python}
swift build --build-tests -q 2>&1 | grep -v warning || true
start=$(date +%s.%N)
set +e
out=$(FEDBATCH_SIGNATURE_CASES=full swift test --disable-xctest --skip-build \
  --filter 'SignatureDifferentialTests/differential' 2>&1)
rc=$?
set -e
seconds=$(echo "$(date +%s.%N) - $start" | bc)
line=$(grep -o 'signature differential (seed [0-9]*): .*' <<<"$out" || true)
if [ $rc -ne 0 ] || [ -z "$line" ]; then
  grep -E 'disagreements|Expectation|error' <<<"$out" | head -40 >&2
  echo "bench/signatures.sh: the differential failed" >&2
  exit 1
fi
seed=$(sed -E 's/.*seed ([0-9]+).*/\1/' <<<"$line")
total=$(sed -E 's/.*\): ([0-9]+) signatures.*/\1/' <<<"$line")
made=$(sed -E 's/.* from ([0-9]+) made by gpg.*/\1/' <<<"$line")
reasons=$(sed -E 's/.*accepted; //' <<<"$line")
printf '| signatures compared | made by gpg | disagreements | seed | seconds |\n|---|---|---|---|---|\n'
printf '| %s | %s | 0 | %s | %.0f |\n\nVerdicts: %s\n' "$total" "$made" "$seed" "$seconds" "$reasons"
