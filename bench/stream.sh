#!/usr/bin/env bash
# A streaming merge of a model far larger than its memory: by default the
# largest fedbatch-bundle(5)'s caps allow (three 16384×16384 layers, 805M
# parameters, 3.2 GB of float32 weights; a member is at most 4 GiB), with
# int8 bundles from a few sites. It reports the peak RSS against the
# model's size, and the time against the floor (zstd -dc and sha256 of the
# bundles, plus zstd -3 and sha256 of one model-size file for the output).
# No merge in memory is run beside it: it would hold about 28 bytes a
# parameter, 22 GB here.
#
#   BUNDLES=3 ARCH=mlp:16384-16384-16384-16384-10 CODEC=int8 bench/stream.sh
set -euo pipefail
n=${BUNDLES:-3}
arch=${ARCH:-mlp:16384-16384-16384-16384-10}
codec=${CODEC:-int8}
bench_name=stream
. "$(dirname "$0")/common.sh"
collector_with_base "$arch"
trained_weights "$work/base.safetensors" "$work/trained.safetensors"
for i in $(seq 1 "$n"); do
  site_bundle "$work/col" "site-$i" "$work/trained.safetensors" $((1000 + i)) "$codec"
done
rm -f "$work/trained.safetensors"
bundles=("$work"/col/inbox/*.fbu)
size=$(du -cb "${bundles[@]}" | tail -1 | cut -f1)
weights=$(stat -c %s "$work/base.safetensors")
sync

t0=$(date +%s.%N)
for f in "${bundles[@]}"; do zstd -qdc "$f" > /dev/null; openssl dgst -sha256 "$f" > /dev/null; done
t1=$(date +%s.%N)
zstd -q -3 -c "$work/base.safetensors" | openssl dgst -sha256 > /dev/null
t2=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/fb.rss" "$fb" merge --home "$work/col" --settle 0 --json > "$work/merge.json"
t3=$(date +%s.%N)
# The summary is the last line (status lines come before it).
streamed=$(tail -1 "$work/merge.json" | "$py" -c 'import json,sys; print("yes" if json.load(sys.stdin)["streamed"] else "no")')
# The generation written verifies as a site would check it.
"$fb" verify --home "$work/col" "$work/col/generations/g000001.fbg" -q

floor=$(echo "$t1 - $t0" | bc); output=$(echo "$t2 - $t1" | bc); fedbatch=$(echo "$t3 - $t2" | bc)
echo "| bundles | parameters | codec | MB in | weights MB | floor with output s | fedbatch s | fedbatch/floor with output | peak RSS MB | streamed |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '| %d | %s | %s | %d | %d | %.2f | %.2f | %.2f | %d | %s |\n' "$n" "$arch" "$codec" $((size / 1000000)) \
  $((weights / 1000000)) "$(echo "$floor + $output" | bc)" "$fedbatch" "$(echo "$fedbatch / ($floor + $output)" | bc -l)" \
  $(( $(tail -1 "$work/fb.rss") / 1024 )) "$streamed"
