#!/usr/bin/env bash
# Scale (issue: transports and scale-out), release build, on a federation
# bench/sites.sh made once (FED, default /tmp/fb-scale/fed: 1000 sites, each
# with its own key and one signed fp32 bundle of mlp:1024-960-10, about 1M
# parameters):
#   1. a flat merge of all the bundles: time and peak RSS;
#   2. the same bundles as REGIONS (10) regional collectors of equal size:
#      each region's merge run one after another, then all at once, and the
#      root's merge of their partial aggregates; the root's weights are
#      compared with the flat merge's, byte for byte;
#   3. listing and pull throughput against a local S3 server (moto, in
#      .venv) for OBJECTS (1000) objects (SKIP_S3=1 skips it).
# Keys are pinned by copying the exported public keys into keys/sites/, as
# `fedbatch keys add` would write them (it would take minutes for 1000 sites).
set -euo pipefail
fed=${FED:-/tmp/fb-scale/fed}
regions=${REGIONS:-10}
objects=${OBJECTS:-1000}
bench_name=scale
. "$(dirname "$0")/common.sh"
py=${BENCH_PYTHON:-"$root/.venv/bin/python"}
[ -d "$fed/bundles" ] || { echo "make the federation first: bench/sites.sh $fed" >&2; exit 2; }
export GNUPGHOME="$fed/g"
sites=$(ls "$fed/bundles" | sed -n 's/\.fbu$//p')
n=$(echo "$sites" | wc -l)
arch=$(sed -n 's/^arch = "\(.*\)"/\1/p' "$fed/col/fedbatch.toml")
quick() { sed -i 's/^min_bundles = .*/min_bundles = 1/; s/^settle_seconds = .*/settle_seconds = 0/' "$1/fedbatch.toml"; }
# timed LABEL CMD...: runs CMD, appends "LABEL seconds peakRSS-MB" to $work/times.
timed() {
  local label=$1; shift
  local t0 t1; t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss.$label" "$@"
  t1=$(date +%s.%N)
  echo "$label $(echo "$t1 - $t0" | bc) $(( $(tail -1 "$work/rss.$label") / 1024 ))" >> "$work/times"
}
field() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$work/times"; }

# 1. Flat.
cp -a "$fed/col" "$work/flat"
quick "$work/flat"
for s in $sites; do cp "$fed/keys/$s.asc" "$work/flat/keys/sites/$s.asc"; ln "$fed/bundles/$s.fbu" "$work/flat/inbox/$s.fbu"; done
mb=$(du -cbL "$fed"/bundles/*.fbu | tail -1 | cut -f1)
sync
timed flat "$fb" merge --home "$work/flat" -q

# 2. Hierarchical: REGIONS regions of n/REGIONS sites, each with its own key.
cp -a "$fed/col" "$work/root"
quick "$work/root"
per=$(( (n + regions - 1) / regions ))
list=""
for r in $(seq -w 1 "$regions"); do
  id="region-$r"
  gpg --batch --passphrase '' --quick-gen-key "$id <$id@bench>" ed25519 sign 0 2>/dev/null || true
  fpr=$(gpg --with-colons --list-keys "<$id@bench>" | awk -F: '/^fpr/{print $10; exit}')
  gpg --armor --export "$fpr" > "$work/$id.asc"
  "$fb" init region --home "$work/template/$id" --region-id "$id" --key "$fpr" --collector-key "$fed/col/keys/collector.asc" \
    --model-id m --arch "$arch" -q
  quick "$work/template/$id"
  cp "$fed/col/generations/g000000.fbg" "$work/template/$id/generations/"
  "$fb" keys add --home "$work/root" --site "$id" "$work/$id.asc" -q
  list="$list${list:+, }\"$id\""
done
# (A home made by an older fedbatch has no commented regions line.)
sed -i "/^# regions = /d; /^\[merge\]/a regions = [$list]" "$work/root/fedbatch.toml"
i=0
for s in $sites; do
  id="region-$(printf '%0*d' ${#regions} $(( i / per + 1 )))"
  cp "$fed/keys/$s.asc" "$work/template/$id/keys/sites/$s.asc"
  ln "$fed/bundles/$s.fbu" "$work/template/$id/inbox/$s.fbu"
  # The root must know which region serves each site (what `keys add
  # --site S --region R` records; written directly here, the key being
  # pinned already, to spare 1000 gpg imports).
  echo "$id" > "$work/root/keys/sites/$s.region"
  i=$((i + 1))
done
cp -a "$work/template" "$work/seq" && cp -a "$work/template" "$work/par"
sync
t0=$(date +%s.%N)
for r in $(seq -w 1 "$regions"); do timed "seq-$r" "$fb" merge --home "$work/seq/region-$r" -q; done
t1=$(date +%s.%N)
sync
for r in $(seq -w 1 "$regions"); do timed "par-$r" "$fb" merge --home "$work/par/region-$r" -q & done
wait
t2=$(date +%s.%N)
cp "$work"/seq/region-*/outbox/*.fbp "$work/root/inbox/"
partial_mb=$(du -cb "$work"/root/inbox/*.fbp | tail -1 | cut -f1)
sync
timed root "$fb" merge --home "$work/root" -q
"$fb" export --home "$work/flat" "$work/flat/generations/g000001.fbg" --out "$work/flat.safetensors" -q
"$fb" export --home "$work/root" "$work/root/generations/g000001.fbg" --out "$work/root.safetensors" -q
same=$("$py" - "$work/flat.safetensors" "$work/root.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
print("yes" if a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a) else "NO")
PY
)
seq_max=0; seq_rss=0
for r in $(seq -w 1 "$regions"); do
  seq_max=$(echo "if ($(field "seq-$r" 2) > $seq_max) $(field "seq-$r" 2) else $seq_max" | bc)
  [ "$(field "seq-$r" 3)" -gt "$seq_rss" ] && seq_rss=$(field "seq-$r" 3)
done
echo "| merge | bundles | parameters | MB in | wall s | bundles/s | peak RSS MB (per process) |"
echo "|---|---|---|---|---|---|---|"
printf '| flat, one collector | %d | %s | %d | %.1f | %.0f | %d |\n' "$n" "$arch" $((mb / 1000000)) "$(field flat 2)" \
  "$(echo "$n / $(field flat 2)" | bc -l)" "$(field flat 3)"
printf '| %d regions of %d, one after another (sum) | %d | | %d | %.1f | %.0f | %d |\n' "$regions" "$per" "$n" $((mb / 1000000)) \
  "$(echo "$t1 - $t0" | bc)" "$(echo "$n / ($t1 - $t0)" | bc -l)" "$seq_rss"
printf '| the slowest region alone (a machine each) | %d | | | %.1f | | |\n' "$per" "$seq_max"
printf '| %d regions at once on these 2 cores | %d | | %d | %.1f | %.0f | |\n' "$regions" "$n" $((mb / 1000000)) \
  "$(echo "$t2 - $t1" | bc)" "$(echo "$n / ($t2 - $t1)" | bc -l)"
printf '| root: %d partial aggregates | %d | | %d | %.1f | | %d |\n' "$regions" "$n" $((partial_mb / 1000000)) "$(field root 2)" "$(field root 3)"
echo
echo "root weights equal to the flat merge's, byte for byte: $same"
[ -z "${SKIP_S3:-}" ] || exit 0

# 3. S3: OBJECTS bundles under one site's prefix, uploaded by curl, then
# listed and pulled by fedbatch.
coproc S3 { "$py" "$root/Tests/Fixtures/s3_server.py" 2>/dev/null; }
read -r info <&"${S3[0]}"
read -r endpoint access secret < <(echo "$info" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["endpoint"], d["access_key"], d["secret_key"])')
export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1 AWS_ENDPOINT_URL=$endpoint
cp -a "$fed/col" "$work/col2"
u0=$(date +%s.%N)
for s in $(echo "$sites" | head -n "$objects"); do
  curl -s -f --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access:$secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T "$fed/bundles/$s.fbu" \
    "$endpoint/fedbatch/scale/inbox/$s/$s.fbu" > /dev/null
done
u1=$(date +%s.%N)
l0=$(date +%s.%N)
"$fb" pull --home "$work/col2" --remote s3://fedbatch/scale --json > "$work/pull.json"
l1=$(date +%s.%N)
got=$(ls "$work/col2/inbox" | wc -l)
bytes=$(du -cb "$work"/col2/inbox/* | tail -1 | cut -f1)
kill -9 "$S3_PID" 2>/dev/null || true
echo
echo "| S3 (moto on 127.0.0.1) | objects | MB | seconds | objects/s | MB/s |"
echo "|---|---|---|---|---|---|"
printf '| upload (curl, one request each) | %d | %d | %.1f | %.0f | %.1f |\n' "$got" $((bytes / 1000000)) "$(echo "$u1 - $u0" | bc)" \
  "$(echo "$got / ($u1 - $u0)" | bc -l)" "$(echo "$bytes / 1000000 / ($u1 - $u0)" | bc -l)"
printf '| fedbatch pull: list, get, check, place, delete | %d | %d | %.1f | %.0f | %.1f |\n' "$got" $((bytes / 1000000)) "$(echo "$l1 - $l0" | bc)" \
  "$(echo "$got / ($l1 - $l0)" | bc -l)" "$(echo "$bytes / 1000000 / ($l1 - $l0)" | bc -l)"
