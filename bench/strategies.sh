#!/usr/bin/env bash
# Aggregation strategies on the default 10-site Dirichlet(0.5) split of the
# demo (issue: strategies, robustness, privacy). Release build (make build).
#
#   bench/strategies.sh byzantine   # 2 of 10 sites send sign-flipped updates
#                                   # scaled x5, ROUNDS (20) generations
#   bench/strategies.sh honest      # no attacker, 30 generations, every
#                                   # strategy, a small server_lr sweep
#   bench/strategies.sh dp          # central DP at three noise levels (NOISES,
#                                   # "0.03 0.3 1"), 30 generations: accuracy
#                                   # against epsilon
#
# Each row is one run of examples/demo.sh; it prints the final accuracy and
# the lowest accuracy over the run's last 5 generations.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run() {  # run LABEL VAR=VALUE...
  local label=$1; shift
  local out
  out=$(env "$@" "$root/examples/demo.sh" 2>/dev/null)
  # A round whose merge wrote nothing prints "-" (every site's training
  # diverged on a wrecked model): it counts as accuracy 0 here.
  echo "$out" | awk -v label="$label" '$1 ~ /^[0-9]+$/ && $2 ~ /^g[0-9]+$/ {acc[++n] = ($4 == "-" ? 0 : $4); secs = $6}
    END {low = 1; for (i = (n > 5 ? n - 4 : 1); i <= n; i++) if (acc[i] + 0 < low) low = acc[i] + 0;
         printf "| %s | %.4f | %.4f | %d | %d |\n", label, acc[n], low, n, secs}'
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
  # The rules that step short on non-IID data, with another server_lr.
  run "median, server_lr 2" ATTACKERS=2 STRATEGY=median SERVER_LR=2
  run "trimmed-mean, server_lr 2" ATTACKERS=2 STRATEGY=trimmed-mean SERVER_LR=2
  run "krum (f 2), server_lr 0.5" ATTACKERS=2 STRATEGY=krum SERVER_LR=0.5
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
dp)
  # Update norms here are about 2 to 6 (L2, all tensors); clip at 2. With
  # 10 sites, sigma = z * 2 / 10 on each of 235,146 coordinates.
  export ROUNDS=${ROUNDS:-30}
  echo "| noise multiplier z (clip 2, 10 sites, delta 1e-5) | accuracy / epsilon at g5 | g10 | g20 | g30 |"
  echo "|---|---|---|---|---|"
  for z in ${NOISES:-0.03 0.3 1}; do
    env NOISE=$z DP_CLIP=2 "$root/examples/demo.sh" 2>/dev/null | awk -v z=$z '$1 ~ /^[0-9]+$/ && $2 ~ /^g[0-9]+$/ {a[$1] = $4; e[$1] = $7}
      END {printf "| %s | %s / %.3g | %s / %.3g | %s / %.3g | %s / %.3g |\n", z, a[5], e[5], a[10], e[10], a[20], e[20], a[30], e[30]}'
  done
  ;;
*) echo "usage: bench/strategies.sh byzantine|honest|dp" >&2; exit 2 ;;
esac
