#!/usr/bin/env bash
# Bundle size and site cost per codec: `fedbatch pack` of the same trained
# weights with each codec, on the demo's model and on the 25.2M-parameter
# one, and the signing cost against `gpg --detach-sign` of the whole fp32
# bundle (what format 1 had gpg hash). Accuracy per codec comes from
# `CODEC=... make demo` (BENCHMARKS.md).
#
#   bench/codecs.sh                       (both models)
#   ARCHS=mlp:784-256-128-10 bench/codecs.sh
set -euo pipefail
archs=${ARCHS:-"mlp:784-256-128-10 mlp:4096-4096-2048-10"}
bench_name=codecs
. "$(dirname "$0")/common.sh"
now() { date +%s.%N; }
ck=$(key collector); sk=$(key site)
echo "| parameters | codec | bundle bytes | vs fp32 | pack s | vs fp32 pack |"
echo "|---|---|---|---|---|---|"
for arch in $archs; do
  d="$work/$arch"; mkdir -p "$d"
  "$fb" init collector --home "$d/col" --model-id m --arch "$arch" --key "$ck" -q
  gpg --armor --export "$sk" > "$d/site.asc"
  "$fb" keys add --home "$d/col" --site s "$d/site.asc" -q
  "$fb" init site --home "$d/site" --site-id s --key "$sk" --collector-key "$d/col/keys/collector.asc" --model-id m -q
  cp "$d/col/generations/g000000.fbg" "$d/site/generations/"
  "$fb" export --home "$d/col" "$d/col/generations/g000000.fbg" --out "$d/base.safetensors" -q
  # A trained model: the base plus a delta of the size one round of SGD gives.
  "$py" - "$d/base.safetensors" "$d/trained.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
w = load_file(sys.argv[1]); rng = np.random.default_rng(0)
save_file({k: (v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3) for k, v in w.items()}, sys.argv[2])
PY
  fp32_bytes=0; fp32_time=0
  for codec in fp32 fp16 bf16 int8 topk; do
    rm -f "$d/site/residual.safetensors"
    t0=$(now)
    f=$("$fb" pack --home "$d/site" --weights "$d/trained.safetensors" --num-examples 100 --codec "$codec" --force)
    t1=$(now)
    bytes=$(stat -c %s "$f"); secs=$(echo "$t1 - $t0" | bc)
    if [ "$codec" = fp32 ]; then fp32_bytes=$bytes; fp32_time=$secs; fp32_file=$f; fi
    printf '| %s | %s | %d | %.3f | %.2f | %.2f |\n' "$arch" "$codec" "$bytes" "$(echo "$bytes / $fp32_bytes" | bc -l)" "$secs" "$(echo "$secs / $fp32_time" | bc -l)"
  done
  # What signing cost before format 2: gpg hashing the whole file.
  t0=$(now); gpg --batch --yes -u "$sk" --detach-sign -o "$d/whole.sig" "$fp32_file"; t1=$(now)
  printf '\n%s: gpg --detach-sign of the whole fp32 bundle %.2f s; fedbatch pack (fp32, everything included) %.2f s\n\n' "$arch" "$(echo "$t1 - $t0" | bc)" "$fp32_time"
done
