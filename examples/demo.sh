#!/usr/bin/env bash
# A whole federation on one machine: a collector and SITES sites with
# throw-away GnuPG keys, Fashion-MNIST split over the sites with a
# Dirichlet(ALPHA) label skew, then ROUNDS rounds of: every site verifies
# the newest generation and trains on its shard, its bundle is copied into
# the collector's inbox the way rsync does (a dotfile renamed into place),
# the collector merges, and the test accuracy of the new generation is
# printed. At the end `fedbatch log` verifies the whole chain.
#
#   make demo                      # defaults below, about 2 minutes on 2 idle cores
#   ROUNDS=60 EPOCHS=2 make demo   # the longer setting (see BENCHMARKS.md)
#   CODEC=int8 make demo           # sites store updates with another codec
#   KEEP=1 make demo               # keep the work directory, with report.html
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fb=${FEDBATCH:-$root/.build/release/fedbatch}
data=${DATA:-/usr/share/datasets/fashion-mnist}
SITES=${SITES:-10} ROUNDS=${ROUNDS:-30} ALPHA=${ALPHA:-0.5} EPOCHS=${EPOCHS:-1} LR=${LR:-0.05}
codec=(); [ -z "${CODEC:-}" ] || codec=(--codec "$CODEC")
work=${DEMO_DIR:-$(mktemp -d /tmp/fb-demo-XXXXXX)}
export GNUPGHOME="$work/gnupg"
mkdir -p -m 700 "$GNUPGHOME"
cleanup() { gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

key() {  # key NAME -> fingerprint of a new unprotected ed25519 signing key
  gpg --batch --passphrase '' --quick-gen-key "$1 <$1@demo.invalid>" ed25519 sign 0 2>/dev/null
  gpg --with-colons --list-keys "<$1@demo.invalid>" 2>/dev/null | awk -F: '/^fpr/{print $10; exit}'
}
deliver() {  # deliver FILE DIR: copy as rsync does, to a dotfile renamed into place
  cp "$1" "$2/.$(basename "$1").tmp" && mv "$2/.$(basename "$1").tmp" "$2/$(basename "$1")"
}

echo "fedbatch demo: $SITES sites, Dirichlet alpha=$ALPHA, $ROUNDS rounds of $EPOCHS local epoch(s), codec ${CODEC:-default}, in $work" >&2
col="$work/collector"
"$fb" init collector --home "$col" --model-id fmnist --arch mlp:784-256-128-10 --key "$(key collector)" --eval-data "$data" -q
"$fb" data split --data "$data" --sites "$SITES" --dirichlet "$ALPHA" --out "$work/shards" --seed 1 -q
sites=()
for shard in "$work"/shards/site-*.safetensors; do
  s=$(basename "$shard" .safetensors)
  sites+=("$s")
  fpr=$(key "$s")
  gpg --armor --export "$fpr" > "$work/$s.asc"
  "$fb" keys add --home "$col" --site "$s" "$work/$s.asc" -q
  "$fb" init site --home "$work/$s" --site-id "$s" --key "$fpr" --collector-key "$col/keys/collector.asc" --model-id fmnist -q
done

# Prints one field of a --json run's summary (its last line); see
# fedbatch-json(7).
summary() {
  python3 -c 'import json, sys
v = json.loads(sys.stdin.read().splitlines()[-1])
for k in sys.argv[1:]: v = v[k]
print("%.4f" % v if isinstance(v, float) else v)' "$@"
}

printf '%-6s %-11s %-9s %-9s %s\n' round generation bundles accuracy seconds
start=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
  newest=$(ls "$col/generations" | tail -1)
  for s in "${sites[@]}"; do
    deliver "$col/generations/$newest" "$work/$s/generations"
    bundle=$("$fb" train --home "$work/$s" --data "$work/shards/$s.safetensors" --epochs "$EPOCHS" --lr "$LR" "${codec[@]}" --json | summary bundle file)
    deliver "$bundle" "$col/inbox"
  done
  # Bundles arrive by rename, complete, so the merge need not wait for
  # them to settle (merge.settle_seconds guards plain copies).
  # The collector evaluates each generation it writes on its [eval] data
  # (--eval-data above): the test split.
  merged=$("$fb" merge --home "$col" --settle 0 --json)
  gen=$(ls "$col/generations" | tail -1)
  acc=$(echo "$merged" | summary evaluation accuracy)
  bundles=$(ls "$col/accepted" | wc -l)
  printf '%-6d %-11s %-9d %-9s %d\n' "$r" "${gen%.fbg}" "$bundles" "$acc" $(( $(date +%s) - start ))
done
echo "bundles: $(ls "$col/accepted" | wc -l) files, $(du -cb "$col/accepted" | tail -1 | cut -f1) bytes (mean $(( $(du -cb "$col/accepted" | tail -1 | cut -f1) / $(ls "$col/accepted" | wc -l) )) per bundle)"
echo >&2
"$fb" log --home "$col" | tail -4
"$fb" report --home "$col" --out "$work/report.html" -q
if [ -n "${KEEP:-}" ]; then echo "report: $work/report.html"; fi
