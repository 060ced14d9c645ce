#!/usr/bin/env bash
# A whole federation of a PyTorch CNN (examples/pytorch/cnn.py) through
# fedbatch: the collector's model is defined by the CNN's initial weights
# alone, each round every site exports the newest generation, trains it in
# PyTorch on its Fashion-MNIST shard, and packs the result; the collector
# merges, and the new generation's test accuracy is measured in PyTorch.
#
#   examples/pytorch/federate-cnn.sh                 # 5 sites, 10 rounds
#   SITES=2 ROUNDS=1 LIMIT=300 TEST_LIMIT=500 ...     # a quick check
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
fb=${FEDBATCH:-$root/.build/release/fedbatch}
py=${PYTHON:-python3}
cnn="$root/examples/pytorch/cnn.py"
data=${DATA:-/usr/share/datasets/fashion-mnist}
SITES=${SITES:-5} ROUNDS=${ROUNDS:-10} ALPHA=${ALPHA:-0.5} EPOCHS=${EPOCHS:-1} LIMIT=${LIMIT:-0} TEST_LIMIT=${TEST_LIMIT:-0}
work=${DEMO_DIR:-$(mktemp -d /tmp/fb-cnn-XXXXXX)}
export GNUPGHOME="$work/gnupg"
mkdir -p -m 700 "$GNUPGHOME"
cleanup() { gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
key() {
  gpg --batch --passphrase '' --quick-gen-key "$1 <$1@demo.invalid>" ed25519 sign 0 2>/dev/null
  gpg --with-colons --list-keys "<$1@demo.invalid>" 2>/dev/null | awk -F: '/^fpr/{print $10; exit}'
}
field() { "$py" -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])[sys.argv[1]])' "$1"; }

col="$work/collector"
"$py" "$cnn" init --out "$work/init.safetensors"
"$fb" init collector --home "$col" --model-id fmnist-cnn --key "$(key collector)" --weights "$work/init.safetensors" -q
sed -i -e 's/^settle_seconds = .*/settle_seconds = 0/' -e "s/^min_bundles = .*/min_bundles = $SITES/" "$col/fedbatch.toml"
"$fb" data split --data "$data" --sites "$SITES" --dirichlet "$ALPHA" --out "$work/shards" --seed 1 -q
sites=()
for shard in "$work"/shards/site-*.safetensors; do
  s=$(basename "$shard" .safetensors); sites+=("$s")
  fpr=$(key "$s"); gpg --armor --export "$fpr" > "$work/$s.asc"
  "$fb" keys add --home "$col" --site "$s" "$work/$s.asc" -q
  "$fb" init site --home "$work/$s" --site-id "$s" --key "$fpr" --collector-key "$col/keys/collector.asc" --model-id fmnist-cnn -q
done

printf '%-6s %-11s %-9s %s\n' round generation accuracy seconds
start=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
  newest=$(ls "$col/generations" | grep '\.fbg$' | tail -1)
  for s in "${sites[@]}"; do
    cp "$col/generations/$newest" "$work/$s/generations/"
    "$fb" export --home "$work/$s" latest --out "$work/$s/start.safetensors" -q
    n=$("$py" "$cnn" train --start "$work/$s/start.safetensors" --data "$work/shards/$s.safetensors" --epochs "$EPOCHS" \
          --limit "$LIMIT" --seed "$r" --out "$work/$s/trained.safetensors" | field examples)
    "$fb" pack --home "$work/$s" --weights "$work/$s/trained.safetensors" --num-examples "$n" -q
    for f in "$work/$s"/outbox/*.fbu; do mv "$f" "$col/inbox/"; done
  done
  "$fb" merge --home "$col" -q
  gen=$(ls "$col/generations" | grep '\.fbg$' | tail -1)
  "$fb" export --home "$col" latest --out "$work/latest.safetensors" -q
  acc=$("$py" "$cnn" eval --weights "$work/latest.safetensors" --data "$data" --limit "$TEST_LIMIT" | field accuracy)
  printf '%-6d %-11s %-9.4f %d\n' "$r" "${gen%.fbg}" "$acc" $(( $(date +%s) - start ))
done
"$fb" log --home "$col" | tail -1
