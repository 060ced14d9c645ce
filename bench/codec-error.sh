#!/usr/bin/env bash
# How far each codec's merge lands from an exact fp32 FedAvg: SITES sites
# train the same way (same data, seeds) and pack with fp32, fp16, bf16, int8
# and topk (TOPK fraction); each codec gets its own collector from the same
# generation 0; the merged generations are compared with the fp32 one.
#
#   bench/codec-error.sh                 (3 sites, mlp:784-64-10, 3000 examples each)
set -euo pipefail
sites=${SITES:-3} arch=${ARCH:-mlp:784-64-10} limit=${LIMIT:-3000} topk=${TOPK:-0.1}
bench_name=codec-error
. "$(dirname "$0")/common.sh"
ck=$(key collector)
for s in $(seq 1 "$sites"); do key "site-$s" > "$work/k$s"; gpg --armor --export "$(cat "$work/k$s")" > "$work/s$s.asc"; done
for c in fp32 fp16 bf16 int8 topk; do
  "$fb" init collector --home "$work/col-$c" --model-id m --arch "$arch" --key "$ck" --seed 1 -q
  for s in $(seq 1 "$sites"); do
    "$fb" keys add --home "$work/col-$c" --site "site-$s" "$work/s$s.asc" -q
    "$fb" init site --home "$work/site-$c-$s" --site-id "site-$s" --key "$(cat "$work/k$s")" \
      --collector-key "$work/col-$c/keys/collector.asc" --model-id m -q
    cp "$work/col-$c/generations/g000000.fbg" "$work/site-$c-$s/generations/"
    "$fb" train --home "$work/site-$c-$s" --data /usr/share/datasets/fashion-mnist --limit "$limit" --seed "$s" \
      --codec "$c" --topk-fraction "$topk" -q
    mv "$work/site-$c-$s"/outbox/*.fbu "$work/col-$c/inbox/"
  done
  "$fb" merge --home "$work/col-$c" --settle 0 --min-bundles "$sites" -q
  "$fb" export --home "$work/col-$c" "$work/col-$c/generations/g000001.fbg" --out "$work/g1-$c.safetensors" -q
done
"$fb" export --home "$work/col-fp32" "$work/col-fp32/generations/g000000.fbg" --out "$work/g0.safetensors" -q
"$py" - "$work" "$topk" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
w, topk = sys.argv[1], sys.argv[2]
g0, ref = load_file(f"{w}/g0.safetensors"), load_file(f"{w}/g1-fp32.safetensors")
delta = np.concatenate([(ref[k] - g0[k]).ravel() for k in ref])
rms_delta = np.sqrt((delta ** 2).mean())
print("| codec | max abs error | RMS error | RMS error / RMS delta |")
print("|---|---|---|---|")
for c in ["fp16", "bf16", "int8", "topk"]:
    g = load_file(f"{w}/g1-{c}.safetensors")
    e = np.concatenate([(g[k] - ref[k]).ravel() for k in ref])
    rms = np.sqrt((e ** 2).mean())
    name = f"topk ({topk})" if c == "topk" else c
    print(f"| {name} | {np.abs(e).max():.2e} | {rms:.2e} | {100 * rms / rms_delta:.2f}% |")
PY
