#!/usr/bin/env bash
# Late sites on the default 10-site Dirichlet split (issue: any late site;
# issue: late sites that count): the last LATE sites deliver every bundle
# LAG generations late, as a weekly USB cycle would, over ROUNDS
# generations, at each label skew in ALPHAS. Runs
#   (a) synchronous: late bundles refused as too stale (MAX_STALENESS=0);
#   (b) wait-for-all: each generation waits for the slowest site (LAG days);
#   (c) asynchronous with each staleness function, and once with the late
#       sites training LAG epochs per cycle;
#   (d) asynchronous with merge.memory = "mifa": the collector adds every
#       site's latest update to each generation;
# and prints final accuracy, accuracy on the two classes the late sites hold
# most, the simulated days it took, and the merges' total time and peak RSS.
# SET=memory runs only (a), (b), (c) polynomial and (d); SET=mifa only (d).
# Release build
# (make build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
LATE=${LATE:-3} LAG=${LAG:-4} ROUNDS=${ROUNDS:-30} ALPHAS=${ALPHAS:-0.5 0.1} SET=${SET:-full}
export LATE LAG ROUNDS
run() {  # run LABEL VAR=VALUE...
  local label=$1; shift
  local out
  out=$(env "$@" "$root/examples/demo.sh" 2>/dev/null)
  local day late merges
  day=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ && $2 ~ /^g[0-9]+$/ {d=$5} END {print d}')
  late=$(echo "$out" | sed -n "s/^late sites' classes \(.*\) (.*accuracy \([0-9.]*\); overall \([0-9.]*\)$/\1 \2 \3/p")
  merges=$(echo "$out" | sed -n 's/^merges: \([0-9.]*\) s in total, \([0-9.]*\) s each, peak RSS \([0-9]*\) MiB$/\2 s | \3 MiB/p')
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$ALPHA" "$(echo "$late" | awk '{print $NF}')" \
    "$(echo "$late" | awk '{print $(NF-1)}')" "$(echo "$late" | awk '{print $1, $2}')" "$day" "$merges"
}
echo "| run ($ROUNDS generations, LATE=$LATE LAG=$LAG) | alpha | accuracy | late sites' classes | classes | simulated days | merge (mean) | merge peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
for ALPHA in $ALPHAS; do
  export ALPHA
  if [ "$SET" != mifa ]; then
    run "(a) synchronous, late bundles refused" MAX_STALENESS=0
    run "(b) wait for all sites" WAIT_ALL=1
  fi
  if [ "$SET" = mifa ]; then
    :
  elif [ "$SET" = memory ]; then
    run "(c) asynchronous, polynomial" STALENESS=polynomial
  else
    for f in constant polynomial hinge; do
      run "(c) asynchronous, $f" STALENESS=$f
    done
    # A late site has LAG days per cycle: let it train LAG epochs in them.
    run "(c) asynchronous, constant, late sites $LAG epochs per cycle" STALENESS=constant LATE_EPOCHS=$LAG
  fi
  run "(d) asynchronous, polynomial, memory = mifa" STALENESS=polynomial SITE_MEMORY=mifa
  # MIFA as published: every site's latest update counts the same, however old.
  run "(d) asynchronous, constant, memory = mifa" STALENESS=constant SITE_MEMORY=mifa
  run "(d) asynchronous, constant, memory = mifa, late sites $LAG epochs per cycle" STALENESS=constant \
    SITE_MEMORY=mifa LATE_EPOCHS=$LAG
done
