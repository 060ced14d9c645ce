#!/usr/bin/env bash
# Aggregation strategies on the default 10-site Dirichlet(0.5) split of the
# demo (issue: strategies, robustness, privacy). Release build (make build).
#
#   bench/strategies.sh byzantine   # 2 of 10 sites send sign-flipped updates
#                                   # scaled x5, ROUNDS (20) generations
#   bench/strategies.sh honest      # no attacker, 30 generations, every
#                                   # strategy, a small server_lr sweep
#
# Each row is one run of examples/demo.sh; it prints the final accuracy and
# the lowest accuracy over the run's last 5 generations.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run() {  # run LABEL VAR=VALUE...
  local label=$1; shift
  local out
  out=$(env "$@" "$root/examples/demo.sh" 2>/dev/null)
  echo "$out" | awk -v label="$label" '$1 ~ /^[0-9]+$/ && $2 ~ /^g[0-9]+$/ {acc[++n] = $4; secs = $6}
    END {low = 1; for (i = (n > 5 ? n - 4 : 1); i <= n; i++) if (acc[i] < low) low = acc[i];
         printf "| %s | %s | %s | %d | %d |\n", label, acc[n], low, n, secs}'
}
header() { echo "| $1 | final accuracy | lowest of last 5 | generations | seconds |"; echo "|---|---|---|---|---|"; }
case "${1:-byzantine}" in
byzantine)
  ROUNDS=${ROUNDS:-20} ATTACK=${ATTACK:-signflip}
  export ROUNDS ATTACK
  header "strategy, 2 attackers ($ATTACK x5)"
  run "fedavg" ATTACKERS=2 STRATEGY=fedavg
  run "median" ATTACKERS=2 STRATEGY=median
  run "trimmed-mean (trim 0.2)" ATTACKERS=2 STRATEGY=trimmed-mean
  run "krum (f 2)" ATTACKERS=2 STRATEGY=krum
  run "multikrum (f 2, keep n-f)" ATTACKERS=2 STRATEGY=multikrum
  # Bulyan with f = 2 needs 11 sites; with 10 it can assume only f = 1.
  run "bulyan (f 1, below the 2 attackers)" ATTACKERS=2 STRATEGY=bulyan BYZANTINE=1
  ;;
honest)
  export ROUNDS=${ROUNDS:-30}
  header "strategy, no attacker"
  run "fedavg" STRATEGY=fedavg
  for lr in 1 0.3; do run "fedavgm (momentum 0.9, server_lr $lr)" STRATEGY=fedavgm MOMENTUM=0.9 SERVER_LR=$lr; done
  for lr in 0.01 0.003; do run "fedadam (server_lr $lr)" STRATEGY=fedadam SERVER_LR=$lr; done
  for lr in 0.01 0.003; do run "fedyogi (server_lr $lr)" STRATEGY=fedyogi SERVER_LR=$lr; done
  for lr in 0.1 0.03; do run "fedadagrad (server_lr $lr)" STRATEGY=fedadagrad SERVER_LR=$lr; done
  for lr in 0.7 1; do run "diloco (server_lr $lr, momentum 0.9)" STRATEGY=diloco SERVER_LR=$lr; done
  run "median" STRATEGY=median
  run "trimmed-mean (trim 0.2)" STRATEGY=trimmed-mean
  run "krum (f 2)" STRATEGY=krum BYZANTINE=2
  run "multikrum (f 2)" STRATEGY=multikrum BYZANTINE=2
  run "bulyan (f 1)" STRATEGY=bulyan BYZANTINE=1
  ;;
*) echo "usage: bench/strategies.sh byzantine|honest" >&2; exit 2 ;;
esac
