#!/usr/bin/env bash
# Scale (issue: transports and scale-out), release build:
#   1. a flat merge of BUNDLES (1000) bundles of ARCH (mlp:1024-960-10,
#      about 1M parameters), fp32, with its time and peak RSS;
#   2. listing and pull throughput against a local S3 server (moto, in
#      .venv) for OBJECTS (1000) bundles of that model.
# S3_ONLY=1 skips the merge: one bundle is made and stored OBJECTS times
# under different names (a pull does not verify, so this measures transport).
set -euo pipefail
n=${BUNDLES:-1000}
objects=${OBJECTS:-1000}
arch=${ARCH:-mlp:1024-960-10}
bench_name=scale
. "$(dirname "$0")/common.sh"
fb=${FEDBATCH:-$fb}
py=${BENCH_PYTHON:-"$root/.venv/bin/python"}
"$fb" init collector --home "$work/col" --model-id m --arch "$arch" --key "$(key collector)" -q
"$fb" export --home "$work/col" "$work/col/generations/g000000.fbg" --out "$work/base.safetensors" -q
"$fb" merge --home "$work/col" --settle 0 -q || [ $? -eq 5 ]
sed -i 's/^min_bundles = .*/min_bundles = 1/' "$work/col/fedbatch.toml"
"$py" - "$work/base.safetensors" "$work/trained.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
w = load_file(sys.argv[1]); rng = np.random.default_rng(0)
save_file({k: (v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3) for k, v in w.items()}, sys.argv[2])
PY
[ -z "${S3_ONLY:-}" ] || n=1
t0=$(date +%s)
for i in $(seq -w 1 "$n"); do
  site_bundle "$work/col" "site-$i" "$work/trained.safetensors" $((1000 + 10#$i))
done
t1=$(date +%s)
mkdir -p "$work/copy" && cp "$work"/col/inbox/*.fbu "$work/copy/"
if [ -n "${S3_ONLY:-}" ]; then
  one=$(ls "$work"/copy/*.fbu | head -1)
  for i in $(seq -w 2 "$objects"); do ln "$one" "$work/copy/copy-$i.fbu"; done
else
  size=$(du -cb "$work"/col/inbox/*.fbu | tail -1 | cut -f1)
  sync
  m0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$fb" merge --home "$work/col" --settle 0 -q
  m1=$(date +%s.%N)
  echo "| flat merge | bundles | parameters | MB in | merge s | MB/s | peak RSS MB | making the bundles s |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '| fedavg | %d | %s | %d | %.1f | %.0f | %d | %d |\n' "$n" "$arch" $((size / 1000000)) "$(echo "$m1 - $m0" | bc)" \
    "$(echo "$size / 1000000 / ($m1 - $m0)" | bc -l)" $(( $(tail -1 "$work/rss") / 1024 )) $((t1 - t0))
fi

# S3: the same bundles pushed by one site-shaped prefix, then listed and pulled.
coproc S3 { "$py" "$root/Tests/Fixtures/s3_server.py" 2>/dev/null; }
read -r info <&"${S3[0]}"
read -r endpoint access secret < <(echo "$info" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["endpoint"], d["access_key"], d["secret_key"])')
export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1 AWS_ENDPOINT_URL=$endpoint
"$fb" init collector --home "$work/col2" --model-id m --arch "$arch" --key "$(key collector2)" -q
mkdir -p "$work/stage/inbox/site-0001"
ls "$work"/copy/*.fbu | head -n "$objects" | while read -r f; do ln "$f" "$work/stage/inbox/site-0001/"; done
# Upload with fedbatch's own client: publish-shaped puts through a directory remote are not S3, so use curl's SigV4 here.
u0=$(date +%s.%N)
for f in "$work"/stage/inbox/site-0001/*.fbu; do
  curl -s -f --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access:$secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T "$f" \
    "$endpoint/fedbatch/scale/inbox/site-0001/$(basename "$f")" > /dev/null
done
u1=$(date +%s.%N)
l0=$(date +%s.%N)
"$fb" pull --home "$work/col2" --remote s3://fedbatch/scale --json > "$work/pull.json"
l1=$(date +%s.%N)
got=$(ls "$work/col2/inbox" | wc -l)
bytes=$(du -cb "$work"/col2/inbox/* | tail -1 | cut -f1)
echo
echo "| S3 (moto on 127.0.0.1) | objects | MB | seconds | objects/s | MB/s |"
echo "|---|---|---|---|---|---|"
printf '| upload (curl, one request each) | %d | %d | %.1f | %.0f | %.1f |\n' "$objects" $((bytes / 1000000)) "$(echo "$u1 - $u0" | bc)" \
  "$(echo "$objects / ($u1 - $u0)" | bc -l)" "$(echo "$bytes / 1000000 / ($u1 - $u0)" | bc -l)"
printf '| fedbatch pull: list, get, check, place, delete | %d | %d | %.1f | %.0f | %.1f |\n' "$got" $((bytes / 1000000)) "$(echo "$l1 - $l0" | bc)" \
  "$(echo "$got / ($l1 - $l0)" | bc -l)" "$(echo "$bytes / 1000000 / ($l1 - $l0)" | bc -l)"
