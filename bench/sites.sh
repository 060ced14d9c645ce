#!/usr/bin/env bash
# Make a reusable federation for the scale benchmarks, once:
#   bench/sites.sh DIR [N] [ARCH]
# DIR/g          GnuPG home with the collector's key (and, later, regional keys)
# DIR/col        a collector home at generation 0 that pins no site yet
# DIR/keys/      site-NNNN.asc, each site's public key
# DIR/bundles/   site-NNNN's signed fp32 bundle against generation 0
# DIR/trained.safetensors  the weights every site packs, generation 0 plus
#                          N(0, 1e-3) noise drawn per site (seeded by its number)
# Sites are made two at a time, each worker in its own GnuPG home, because key
# generation, site init and pack touch nothing the collector holds; pinning
# is left to the benchmark that uses DIR.
set -euo pipefail
dir=$1 n=${2:-1000} arch=${3:-mlp:1024-960-10}
root=$(cd "$(dirname "$0")/.." && pwd)
fb=${FEDBATCH:-"$root/.build/release/fedbatch"}
py=${BENCH_PYTHON:-"$root/.venv/bin/python"}
mkdir -p "$dir/keys" "$dir/bundles" "$dir/weights"
export GNUPGHOME="$dir/g"
if [ ! -d "$dir/col" ]; then
  mkdir -m 700 -p "$GNUPGHOME"
  gpg --batch --passphrase '' --quick-gen-key "collector <collector@bench>" ed25519 sign 0 2>/dev/null
  fpr=$(gpg --with-colons --list-keys "<collector@bench>" | awk -F: '/^fpr/{print $10; exit}')
  "$fb" init collector --home "$dir/col" --model-id m --arch "$arch" --key "$fpr" -q
  "$fb" export --home "$dir/col" "$dir/col/generations/g000000.fbg" --out "$dir/base.safetensors" -q
fi
"$py" - "$dir/base.safetensors" "$dir/weights" "$n" <<'PY'
import os, sys, numpy as np
from safetensors.numpy import load_file, save_file
w = load_file(sys.argv[1])
for i in range(1, int(sys.argv[3]) + 1):
    out = os.path.join(sys.argv[2], f"site-{i:04d}.safetensors")
    if os.path.exists(out): continue
    rng = np.random.default_rng(i)
    save_file({k: (v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3) for k, v in w.items()}, out)
PY
one() {
  local i=$1 s gh fpr
  s=$(printf 'site-%04d' "$i")
  [ -e "$dir/bundles/$s.fbu" ] && return 0
  gh="$dir/gw$(( i % 2 ))"; mkdir -m 700 -p "$gh"
  GNUPGHOME=$gh gpg --batch --passphrase '' --quick-gen-key "$s <$s@bench>" ed25519 sign 0 2>/dev/null
  fpr=$(GNUPGHOME=$gh gpg --with-colons --list-keys "<$s@bench>" 2>/dev/null | awk -F: '/^fpr/{print $10; exit}')
  GNUPGHOME=$gh gpg --armor --export "$fpr" > "$dir/keys/$s.asc"
  rm -rf "$dir/tmp-$s"
  GNUPGHOME=$gh "$fb" init site --home "$dir/tmp-$s" --site-id "$s" --key "$fpr" --collector-key "$dir/col/keys/collector.asc" --model-id m -q
  cp "$dir/col/generations/g000000.fbg" "$dir/tmp-$s/generations/"
  GNUPGHOME=$gh "$fb" pack --home "$dir/tmp-$s" --weights "$dir/weights/$s.safetensors" --num-examples $((1000 + i)) --codec fp32 > /dev/null
  mv "$dir/tmp-$s"/outbox/*.fbu "$dir/bundles/$s.fbu.tmp" && mv "$dir/bundles/$s.fbu.tmp" "$dir/bundles/$s.fbu"
  rm -rf "$dir/tmp-$s" "$dir/weights/$s.safetensors"
}
export -f one; export dir fb
seq 1 "$n" | xargs -P 2 -I{} bash -c 'one {}'
for h in "$dir"/gw*; do gpgconf --homedir "$h" --kill all 2>/dev/null || true; done
gpgconf --kill all 2>/dev/null || true
echo "$n sites in $dir"
