#!/usr/bin/env bash
# make fuzz: builds the libFuzzer targets (address sanitizer on) and runs
# each for FUZZ_SECONDS, or until FUZZ_RUNS executions, starting from the
# checked-in seeds. Findings go to .build-fuzz/artifacts/; add each to
# Tests/Fuzz/corpus/<target>/ once fixed, where `make test` replays it.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-120}
runs=${FUZZ_RUNS:--1}
targets=${FUZZ_TARGETS:-safetensors manifest statement signature container codec idx csv numbers statistics included keys verify}
bin=.build-fuzz/debug/fedbatch-fuzz
swift build --build-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
  -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld --product fedbatch-fuzz
mkdir -p .build-fuzz/artifacts
printf '| target | seconds | executions | executions/s | result |\n|---|---|---|---|---|\n'
status=0
for t in $targets; do
  work=.build-fuzz/corpus/$t
  mkdir -p "$work"
  log=.build-fuzz/$t.log
  set +e
  FEDBATCH_FUZZ_TARGET=$t "$bin" "$work" "Tests/Fuzz/corpus/$t" -max_total_time="$seconds" -runs="$runs" \
    -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix=".build-fuzz/artifacts/$t-" > "$log" 2>&1
  rc=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  time=$(awk '/Done [0-9]+ runs in/ {print $5}' "$log")
  result=$([ $rc = 0 ] && echo "no finding" || echo "FINDING (see $log)")
  [ $rc = 0 ] || status=1
  printf '| %s | %s | %s | %s | %s |\n' "$t" "${time:-?}" "${execs:-?}" "${rate:-?}" "$result"
done
exit $status
