#!/usr/bin/env bash
# Speed and memory of the robust strategies against FedAvg, on the same
# bundles in the same run: BUNDLES (20) fp32 bundles of ARCH (the 25.2M
# model, about 100 MB each). Each strategy merges its own copy of the
# collector (hard links for the bundles, a real copy of state.db), timed
# with its peak RSS.
#
#   bench/robust-merge.sh
#   BUNDLES=20 CHUNK_MB=16 bench/robust-merge.sh   (a smaller merge.chunk_mb)
set -euo pipefail
n=${BUNDLES:-20}
arch=${ARCH:-mlp:4096-4096-2048-10}
bench_name=robust
. "$(dirname "$0")/common.sh"
fb=${FEDBATCH:-$fb}
py=${BENCH_PYTHON:-"$root/.venv/bin/python"}
collector_with_base "$arch"
# Each site's weights: the base plus its own noise (Krum's distances must
# differ from site to site).
for i in $(seq -w 1 "$n"); do
  "$py" - "$work/base.safetensors" "$work/trained.safetensors" "$i" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
w = load_file(sys.argv[1]); rng = np.random.default_rng(int(sys.argv[3]))
save_file({k: (v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3) for k, v in w.items()}, sys.argv[2])
PY
  site_bundle "$work/col" "site-$i" "$work/trained.safetensors" $((1000 + 10#$i))
done
size=$(du -cb "$work"/col/inbox/*.fbu | tail -1 | cut -f1)
echo "| strategy | bundles | parameters | MB in | merge s | vs fedavg | peak RSS MB | vs fedavg |"
echo "|---|---|---|---|---|---|---|---|"
base_t= base_m=
for spec in fedavg median trimmed-mean krum:2 multikrum:2 bulyan:4; do
  strategy=${spec%%:*}; f=${spec#*:}; [ "$f" = "$spec" ] && f=0
  home="$work/col-$strategy"
  cp -al "$work/col" "$home" && rm -f "$home"/state.db* && cp "$work/col"/state.db* "$home/"
  sed -i "/^\[merge\]/a byzantine = $f" "$home/fedbatch.toml"
  [ -z "${CHUNK_MB:-}" ] || sed -i "/^\[merge\]/a chunk_mb = $CHUNK_MB" "$home/fedbatch.toml"
  sync
  t0=$(date +%s.%N)
  if ! /usr/bin/time -f "%M" -o "$work/rss" "$fb" merge --home "$home" --settle 0 --strategy "$strategy" -q; then
    echo "| $strategy (f $f) | $n | $arch | refused: too few bundles for f | | | | |"; rm -rf "$home"; continue
  fi
  t1=$(date +%s.%N)
  t=$(echo "$t1 - $t0" | bc); m=$(( $(tail -1 "$work/rss") / 1024 ))
  [ -n "$base_t" ] || { base_t=$t; base_m=$m; }
  printf '| %s%s | %d | %s | %d | %.2f | %.2f | %d | %.2f |\n' "$strategy" "$([ "$f" = 0 ] || echo " (f $f)")" "$n" "$arch" $((size / 1000000)) "$t" \
    "$(echo "$t / $base_t" | bc -l)" "$m" "$(echo "$m / $base_m" | bc -l)"
  rm -rf "$home"
done
