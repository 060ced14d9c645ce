#!/usr/bin/env bash
# Merge throughput: fedbatch merge against the floor (zstd -dc and openssl
# dgst over every bundle) and a Python pipeline, on the same bundles, plus
# peak RSS as the number of bundles grows.
#
#   BUNDLES=20 ARCH=mlp:4096-4096-2048-10 bench/merge.sh   (25.2M parameters, ~100 MB each)
#   CODEC=int8 bench/merge.sh                              (the sites' codec; default fp32)
#   COMPARE_WITH=/path/to/other/fedbatch bench/merge.sh    (also time another build's merge of the same bundles)
set -euo pipefail
n=${BUNDLES:-20}
codec=${CODEC:-fp32}
arch=${ARCH:-mlp:4096-4096-2048-10}
bench_name=merge
. "$(dirname "$0")/common.sh"
collector_with_base "$arch"
# Trained weights: the base plus noise, written once and packed by every site.
trained_weights "$work/base.safetensors" "$work/trained.safetensors"
for i in $(seq -w 1 "$n"); do
  site_bundle "$work/col" "site-$i" "$work/trained.safetensors" $((1000 + 10#$i)) "$codec"
done
bundles=("$work"/col/inbox/*.fbu)
mkdir -p "$work/saved" && cp "${bundles[@]}" "$work/saved/"   # for reruns (KEEP=1)
size=$(du -cb "${bundles[@]}" | tail -1 | cut -f1)
[ -z "${COMPARE_WITH:-}" ] || cp -a "$work/col" "$work/col-ref"
# The same merge held in memory ([merge] stream = "never"), for its time,
# its memory and its bytes, which must be the streamed merge's.
cp -a "$work/col" "$work/col-memory"
sed -i 's/^stream = .*/stream = "never"/' "$work/col-memory/fedbatch.toml"
sync

t0=$(date +%s.%N)
for f in "${bundles[@]}"; do zstd -qdc "$f" > /dev/null; openssl dgst -sha256 "$f" > /dev/null; done
t1=$(date +%s.%N)
# What writing the output costs at least: one model-size file compressed at
# fedbatch's level (zstd 3) and hashed.
zstd -q -3 -c "$work/base.safetensors" > "$work/out.zst"; openssl dgst -sha256 "$work/out.zst" > /dev/null
t1b=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/py.rss" "$py" "$root/bench/python_merge.py" "$GNUPGHOME" "$work/base.safetensors" "$work/py.safetensors" "${bundles[@]}"
t2=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/fb.rss" "$fb" merge --home "$work/col" --settle 0 --json > "$work/fb.json"
t3=$(date +%s.%N)
# The summary is the last line (status lines come before it).
streamed=$(tail -1 "$work/fb.json" | "$py" -c 'import json,sys; print("yes" if json.load(sys.stdin)["streamed"] else "no")')

sync
t6=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/mem.rss" "$fb" merge --home "$work/col-memory" --settle 0 -q
t7=$(date +%s.%N)
# zstd skips the signature's skippable frame: what it prints is the payload.
same=$(cmp -s <(zstd -qdc "$work/col/generations/g000001.fbg" | sha256sum) \
              <(zstd -qdc "$work/col-memory/generations/g000001.fbg" | sha256sum) && echo yes || echo NO)

floor=$(echo "$t1 - $t0" | bc); output=$(echo "$t1b - $t1" | bc); python=$(echo "$t2 - $t1b" | bc); fedbatch=$(echo "$t3 - $t2" | bc)
# Then: the floor with the output written (zstd -3 and sha256 of one
# model-size file), and fedbatch against it; whether fedbatch streamed
# ([merge] stream = "auto"), and the same merge held in memory
# (stream = "never"): its time, its peak RSS, and whether it wrote the same
# payload.
echo "| bundles | parameters | codec | MB in | floor s | Python s | fedbatch s | fedbatch/floor | Python/fedbatch | fedbatch peak RSS MB | Python peak RSS MB | floor with output s | fedbatch/floor with output | streamed | in memory s | in memory peak RSS MB | same bytes |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '| %d | %s | %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %d | %.2f | %.2f | %s | %.2f | %d | %s |\n' "$n" "$arch" "$codec" $((size / 1000000)) "$floor" "$python" "$fedbatch" \
  "$(echo "$fedbatch / $floor" | bc -l)" "$(echo "$python / $fedbatch" | bc -l)" $(( $(tail -1 "$work/fb.rss") / 1024 )) $(( $(tail -1 "$work/py.rss") / 1024 )) \
  "$(echo "$floor + $output" | bc)" "$(echo "$fedbatch / ($floor + $output)" | bc -l)" \
  "$streamed" "$(echo "$t7 - $t6" | bc)" $(( $(tail -1 "$work/mem.rss") / 1024 )) "$same"
if [ -n "${COMPARE_WITH:-}" ]; then
  sync
  t4=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/ref.rss" "$COMPARE_WITH" merge --home "$work/col-ref" --settle 0 -q
  t5=$(date +%s.%N)
  printf '\nthe same merge by %s: %.2f s, peak RSS %d MB (this build / that one: %.2f)\n' "$COMPARE_WITH" "$(echo "$t5 - $t4" | bc)" \
    $(( $(tail -1 "$work/ref.rss") / 1024 )) "$(echo "$fedbatch / ($t5 - $t4)" | bc -l)"
fi
