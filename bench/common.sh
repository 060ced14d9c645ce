# Sourced by the benchmark scripts: the paths they share, a throw-away work
# directory with its own GnuPG home (removed on exit unless KEEP is set),
# and key NAME, which makes an unprotected Ed25519 signing key and prints
# its fingerprint.
root=$(cd "$(dirname "$0")/.." && pwd)
fb=${FEDBATCH:-"$root/.build/release/fedbatch"}
py=${BENCH_PYTHON:-"$root/.venv-bench/bin/python"}
work=$(mktemp -d "/tmp/fb-${bench_name:-bench}-XXXXXX")
export GNUPGHOME="$work/g"
mkdir -m 700 "$GNUPGHOME"
trap 'gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
key() {
  gpg --batch --passphrase '' --quick-gen-key "$1 <$1@bench>" ed25519 sign 0 2>/dev/null
  gpg --with-colons --list-keys "<$1@bench>" 2>/dev/null | awk -F: '/^fpr/{print $10; exit}'
}
# site_bundle COLLECTOR SITE WEIGHTS NUM_EXAMPLES [CODEC]: a site with a new
# key, pinned by the collector, packs WEIGHTS against generation 0 into the
# collector's inbox; the site home is removed again.
site_bundle() {
  local col=$1 s=$2 weights=$3 examples=$4 codec=${5:-fp32} fpr
  fpr=$(key "$s")
  gpg --armor --export "$fpr" > "$work/$s.asc"
  "$fb" keys add --home "$col" --site "$s" "$work/$s.asc" -q
  "$fb" init site --home "$work/$s" --site-id "$s" --key "$fpr" --collector-key "$col/keys/collector.asc" --model-id m -q
  cp "$col/generations/g000000.fbg" "$work/$s/generations/"
  cp "$("$fb" pack --home "$work/$s" --weights "$weights" --num-examples "$examples" --codec "$codec")" "$col/inbox/"
  rm -rf "${work:?}/$s" "$work/$s.asc"
}
# trained_weights BASE OUT: BASE plus a little seeded noise, as one site's
# training would leave it; every site packs the same file.
trained_weights() {
  "$py" - "$1" "$2" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
w = load_file(sys.argv[1]); rng = np.random.default_rng(0)
save_file({k: (v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3) for k, v in w.items()}, sys.argv[2])
PY
}
# collector_with_base ARCH: a collector home in $work/col, with state.db built
# by a first merge on the empty inbox (as a collector in service has it, so
# a timed merge after it is a steady-state one), and its generation 0
# exported to $work/base.safetensors.
collector_with_base() {
  "$fb" init collector --home "$work/col" --model-id m --arch "$1" --key "$(key collector)" -q
  "$fb" export --home "$work/col" "$work/col/generations/g000000.fbg" --out "$work/base.safetensors" -q
  "$fb" merge --home "$work/col" --settle 0 -q || [ $? -eq 5 ]
}
