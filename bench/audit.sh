#!/usr/bin/env bash
# What an audit costs against the merge it re-derives, on the same bundles
# in one run, and what a witness spends per generation (audit + cosignature).
#
#   BUNDLES=20 ARCH=mlp:1024-1024-10 bench/audit.sh     (the defaults: 1.06M parameters, ~4 MB a bundle)
#   STRATEGY=fedadam bench/audit.sh                     (a server optimiser: its state is re-derived too)
set -euo pipefail
n=${BUNDLES:-20}
arch=${ARCH:-mlp:1024-1024-10}
strategy=${STRATEGY:-fedavg}
bench_name=audit
. "$(dirname "$0")/common.sh"
collector_with_base "$arch"
trained_weights "$work/base.safetensors" "$work/trained.safetensors"
for i in $(seq -w 1 "$n"); do
  site_bundle "$work/col" "site-$i" "$work/trained.safetensors" $((1000 + 10#$i))
done
# A witness pinning the same sites, with the generation and its inputs
# copied over (what pull does with [remote] publish_bundles).
"$fb" init witness --home "$work/wit" --witness-id w1 --key "$(key witness)" \
  --collector-key "$work/col/keys/collector.asc" --model-id m -q
cp "$work"/col/keys/sites/*.asc "$work/wit/keys/sites/"
sync

t0=$(date +%s.%N)
for f in "$work"/col/inbox/*.fbu; do zstd -qdc "$f" > /dev/null; openssl dgst -sha256 "$f" > /dev/null; done
t1=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/merge.rss" "$fb" merge --home "$work/col" --settle 0 --strategy "$strategy" -q
t2=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/audit.rss" "$fb" audit --home "$work/col" latest -q
t3=$(date +%s.%N)
cp "$work"/col/generations/g00000[01].fbg "$work/wit/generations/"
cp "$work"/col/accepted/* "$work/wit/inputs/"
sync
t4=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/witness.rss" "$fb" witness --home "$work/wit" 0 -q
t5=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/witness1.rss" "$fb" witness --home "$work/wit" 1 -q
t6=$(date +%s.%N)

floor=$(echo "$t1 - $t0" | bc); merge=$(echo "$t2 - $t1" | bc); audit=$(echo "$t3 - $t2" | bc)
witness=$(echo "$t6 - $t5" | bc); root_cosign=$(echo "$t5 - $t4" | bc)
echo "| bundles | parameters | strategy | floor s | merge s | audit s | audit/merge | witness s (gen 1) | witness/merge | witness s (gen 0, no inputs) | merge RSS MB | audit RSS MB | witness RSS MB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '| %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %d | %d |\n' "$n" "$arch" "$strategy" "$floor" "$merge" "$audit" \
  "$(echo "$audit / $merge" | bc -l)" "$witness" "$(echo "$witness / $merge" | bc -l)" "$root_cosign" \
  $(( $(tail -1 "$work/merge.rss") / 1024 )) $(( $(tail -1 "$work/audit.rss") / 1024 )) $(( $(tail -1 "$work/witness1.rss") / 1024 ))
