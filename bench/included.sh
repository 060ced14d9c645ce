#!/usr/bin/env bash
# A generation naming 10^5 bundles, built as fedbatch-merge(1) builds one
# in a hierarchical federation: a root merges the partial aggregates of 100
# regions of 1000 bundles each (forged from fedbatch-bundle(5) by
# bench/forge_partials.py and signed by each region's key, since the root
# never sees a partial's bundles). Then a site verifies the chain to it and
# logs it, timed and measured (peak RSS) against the floor of reading the
# file: zstd -dc and sha256 of the same generation.
#
#   REGIONS=100 PER_REGION=1000 ARCH=mlp:784-32-10 bench/included.sh
#   PROFILE=1 bench/included.sh      (also records the root's merge with perf into /tmp/included-merge.perf)
set -euo pipefail
regions=${REGIONS:-100}
per=${PER_REGION:-1000}
arch=${ARCH:-mlp:784-32-10}
bench_name=included
. "$(dirname "$0")/common.sh"
collector_with_base "$arch"
col=$work/col
list=""
specs=()
for r in $(seq -w 1 "$regions"); do
  fpr=$(key "region-$r")
  gpg --armor --export "$fpr" > "$work/region-$r.asc"
  "$fb" keys add --home "$col" --site "region-$r" "$work/region-$r.asc" -q
  list="$list${list:+, }\"region-$r\""
  specs+=("region-$r=$fpr")
done
"$py" - "$col/fedbatch.toml" "$list" <<'PY'
import sys
path, regions = sys.argv[1], sys.argv[2]
lines = open(path).read().split("\n")
start = lines.index("[merge]")
end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
settings = {"regions": "[%s]" % regions, "max_staleness": "0", "staleness": '"constant"', "weight_cap": "1000000",
            "min_bundles": "1", "settle_seconds": "0"}
body = [l for l in lines[start + 1:end] if not any(l.startswith((k + " = ", "# " + k + " = ")) for k in settings)]
lines[start + 1:end] = ["%s = %s" % kv for kv in settings.items()] + body
open(path, "w").write("\n".join(lines))
PY
mkdir -p "$work/partials"
"$py" "$root/bench/forge_partials.py" "$work/base.safetensors" "$col/generations/g000000.fbg" "$work/partials" \
  "$per" "$arch" "${specs[@]}"
# Which sites each region serves: keys/sites/<site>.region, as keys add --region writes it.
"$py" - "$work/partials" "$col/keys/sites" <<'PY'
import glob, os, sys
for f in glob.glob(sys.argv[1] + "/*.sites"):
    region = os.path.basename(f)[:-6]
    for s in open(f).read().split():
        open("%s/%s.region" % (sys.argv[2], s), "w").write(region)
PY
cp "$work"/partials/*.fbp "$col/inbox/"
t0=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/merge.rss" ${PROFILE:+perf record -F 499 -g -o /tmp/included-merge.perf} "$fb" merge --home "$col" -q
t1=$(date +%s.%N)
g1=$col/generations/g000001.fbg
"$fb" init site --home "$work/site" --site-id region-001-s0 --key "$(key site)" \
  --collector-key "$col/keys/collector.asc" --model-id m -q
cp "$col"/generations/g00000[01].fbg "$work/site/generations/"
sync
t2=$(date +%s.%N)
zstd -qdc "$g1" > /dev/null; openssl dgst -sha256 "$g1" > /dev/null
t3=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/verify.rss" "$fb" verify --home "$work/site" 1 -q
t4=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/log.rss" "$fb" log --home "$work/site" --json > "$work/log.json"
t5=$(date +%s.%N)
named=$("$py" -c 'import json,sys; print(max(g["accepted"] for g in json.load(open(sys.argv[1]))["generations"]))' "$work/log.json")
listed=$(zstd -qdc "$g1" | tar -xOf - included.jsonl | wc -c)
size0=$(stat -c %s "$col/generations/g000000.fbg")
size1=$(stat -c %s "$g1")
echo "| bundles named | root merge s (peak MB) | floor s (zstd -dc + sha256) | site verify s (peak MB) | site log s (peak MB) | included.jsonl MB | bytes/bundle in the file |"
echo "|---|---|---|---|---|---|---|"
awk -v n="$named" -v m="$(echo "$t1 - $t0" | bc)" -v mr="$(cat "$work/merge.rss")" \
  -v f="$(echo "$t3 - $t2" | bc)" -v v="$(echo "$t4 - $t3" | bc)" -v vr="$(cat "$work/verify.rss")" \
  -v l="$(echo "$t5 - $t4" | bc)" -v lr="$(cat "$work/log.rss")" -v li="$listed" -v s0="$size0" -v s1="$size1" \
  'BEGIN { printf "| %d | %.1f (%.0f) | %.2f | %.2f (%.0f) | %.2f (%.0f) | %.1f | %.0f |\n", n, m, mr/1024, f, v, vr/1024, l, lr/1024, li/1048576, (s1-s0)/n }'
