#!/usr/bin/env bash
# Parallel transfers (`[remote] parallel`): a collector's pull of OBJECTS
# (1000) bundles from a local S3 server (moto's S3 application behind
# cheroot, signatures enforced, connections kept open as S3 keeps them),
# with parallel = 1, 4 and 8, in one run, each against the same objects
# (put again between pulls). Each object is a copy of one real signed
# bundle of ARCH (mlp:1024-960-10, about 1M parameters, 3.5 MB): pull checks
# each download's statement, hashes it, fsyncs it, renames it into inbox/
# and deletes the object.
#
#   OBJECTS=1000 bench/transfers.sh
set -euo pipefail
objects=${OBJECTS:-1000}
arch=${ARCH:-mlp:1024-960-10}
bench_name=transfers
. "$(dirname "$0")/common.sh"
py=${BENCH_PYTHON:-"$root/.venv/bin/python"}
collector_with_base "$arch"
trained_weights "$work/base.safetensors" "$work/trained.safetensors"
site_bundle "$work/col" site-1 "$work/trained.safetensors" 100
body=$(ls "$work"/col/inbox/*.fbu)
mv "$body" "$work/bundle.fbu"
sed -i 's/^settle_seconds = .*/settle_seconds = 0/' "$work/col/fedbatch.toml"

coproc S3 { "$py" "$root/Tests/Fixtures/s3_server.py" 2>/dev/null; }
trap 'kill -9 "$S3_PID" 2>/dev/null || true; gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
read -r info <&"${S3[0]}"
read -r endpoint access secret < <(echo "$info" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["endpoint"], d["access_key"], d["secret_key"])')
export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1 AWS_ENDPOINT_URL=$endpoint
size=$(stat -c %s "$work/bundle.fbu")

echo "| pull from S3 (moto behind cheroot, 127.0.0.1) | objects | MB | seconds | objects/s | vs parallel = 1 | fedbatch CPU s (user + sys) |"
echo "|---|---|---|---|---|---|---|"
base=""
for p in 1 4 8; do
  echo "populate transfers/inbox/site-1/b- $objects $work/bundle.fbu" >&"${S3[1]}"
  read -r ok <&"${S3[0]}"
  rm -rf "$work/col-$p" && cp -a "$work/col" "$work/col-$p"
  sed -i "s/^parallel = .*/parallel = $p/" "$work/col-$p/fedbatch.toml"
  sync
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/cpu" "$fb" pull --home "$work/col-$p" --remote s3://fedbatch/transfers -q
  t1=$(date +%s.%N)
  read -r user sys < "$work/cpu"
  got=$(ls "$work/col-$p/inbox" | wc -l)
  [ "$got" -eq "$objects" ] || { echo "pull with parallel = $p placed $got of $objects" >&2; exit 1; }
  rate=$(echo "$objects / ($t1 - $t0)" | bc -l)
  [ -n "$base" ] || base=$rate
  printf '| parallel = %d | %d | %d | %.1f | %.0f | %.2f× | %.1f + %.1f |\n' "$p" "$objects" $((objects * size / 1000000)) \
    "$(echo "$t1 - $t0" | bc)" "$rate" "$(echo "$rate / $base" | bc -l)" "$user" "$sys"
  rm -rf "$work/col-$p"
done
# The server's own ceiling: curl GETs the same objects to /dev/null, 4 at a
# time, one connection each (no hashing, no fsync, no deletion).
echo "populate transfers/inbox/site-1/b- $objects $work/bundle.fbu" >&"${S3[1]}"
read -r ok <&"${S3[0]}"
t0=$(date +%s.%N)
seq -f "%05g" 0 $((objects - 1)) | xargs -P 4 -I{} curl -s -f -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" \
  --user "$access:$secret" -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  "$endpoint/fedbatch/transfers/inbox/site-1/b-{}"
t1=$(date +%s.%N)
# And to files on the same disk as the inbox, then one sync: what writing
# the bytes durably costs, without fedbatch's checks.
echo "populate transfers/inbox/site-1/b- $objects $work/bundle.fbu" >&"${S3[1]}"
read -r ok <&"${S3[0]}"
mkdir -p "$work/curl"
t2=$(date +%s.%N)
seq -f "%05g" 0 $((objects - 1)) | xargs -P 4 -I{} curl -s -f -o "$work/curl/b-{}" --aws-sigv4 "aws:amz:us-east-1:s3" \
  --user "$access:$secret" -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
  "$endpoint/fedbatch/transfers/inbox/site-1/b-{}"
sync
t3=$(date +%s.%N)
printf '| reference: curl GET to files, 4 at a time, then sync | %d | %d | %.1f | %.0f | %.2f× | |\n' "$objects" \
  $((objects * size / 1000000)) "$(echo "$t3 - $t2" | bc)" "$(echo "$objects / ($t3 - $t2)" | bc -l)" \
  "$(echo "$objects / ($t3 - $t2) / $base" | bc -l)"
printf '| reference: curl GET to /dev/null, 4 at a time | %d | %d | %.1f | %.0f | %.2f× | |\n' "$objects" \
  $((objects * size / 1000000)) "$(echo "$t1 - $t0" | bc)" "$(echo "$objects / ($t1 - $t0)" | bc -l)" \
  "$(echo "$objects / ($t1 - $t0) / $base" | bc -l)"
