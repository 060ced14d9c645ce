#!/usr/bin/env bash
# A tabular federation on one machine, as three hospitals would run it:
# scikit-learn's breast-cancer table written the way exports look (quoted
# fields, a patient id, text labels, a few blanks; prepare.py), split over
# SITES sites by a Dirichlet(ALPHA) label skew, the collector holding 30% of
# the patients as its [eval] table. The federation starts with no
# normalisation: each site sends statistics of its table (fedbatch stats),
# the collector combines and pins them (stats --pin), then ROUNDS rounds of
# training and merging. Prints the collector's test accuracy each round.
#
#   examples/tabular/federation.sh             # defaults below, under a minute
#   PIN=0 examples/tabular/federation.sh       # no normalisation: raw features (and, with
#                                              # no means to impute, no blank cells)
#   KEEP=1 examples/tabular/federation.sh      # keep the work directory
#
# Exits 1 when the final accuracy is below MIN_ACCURACY (0.95).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
fb=${FEDBATCH:-$root/.build/release/fedbatch}
py=${PYTHON:-$root/.venv/bin/python}
SITES=${SITES:-3} ALPHA=${ALPHA:-0.5} ROUNDS=${ROUNDS:-20} EPOCHS=${EPOCHS:-5} LR=${LR:-0.05}
PIN=${PIN:-1} BATCH=${BATCH:-16} ARCH=${ARCH:-mlp:30-16-2} SEED=${SEED:-1}
BLANKS=${BLANKS:-$([ "$PIN" = 1 ] && echo 0.01 || echo 0)}
MIN_ACCURACY=${MIN_ACCURACY:-0.95}
work=${TABULAR_DIR:-$(mktemp -d /tmp/fb-tab-XXXXXX)}
export GNUPGHOME="$work/gnupg"
mkdir -p -m 700 "$GNUPGHOME"
cleanup() { gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

key() {  # key NAME -> fingerprint of a new unprotected ed25519 signing key
  gpg --batch --passphrase '' --quick-gen-key "$1 <$1@tabular.invalid>" ed25519 sign 0 2>/dev/null
  gpg --with-colons --list-keys "<$1@tabular.invalid>" 2>/dev/null | awk -F: '/^fpr/{print $10; exit}'
}
deliver() {  # deliver FILE DIR: as rsync does, a dotfile renamed into place
  cp "$1" "$2/.$(basename "$1").part" && mv "$2/.$(basename "$1").part" "$2/$(basename "$1")"
}

"$py" "$root/examples/tabular/prepare.py" "$work" "$SITES" "$ALPHA" "$SEED" "$BLANKS" 40
col="$work/collector"
# The collector's own table fixes the columns; blanks take the pinned mean.
"$fb" init collector --home "$col" --model-id breast-cancer --arch "$ARCH" --key "$(key collector)" \
  --schema-from "$work/test.csv" --label diagnosis --labels benign,malignant --drop "patient id" \
  $([ "$PIN" = 1 ] && echo --missing mean) --eval-data "$work/test.csv" -q
for k in $(seq 1 "$SITES"); do
  s="site-$k"
  fpr=$(key "$s")
  gpg --armor --export "$fpr" > "$work/$s.asc"
  "$fb" keys add --home "$col" --site "$s" "$work/$s.asc" -q
  "$fb" init site --home "$work/$s" --site-id "$s" --key "$fpr" --collector-key "$col/keys/collector.asc" \
    --model-id breast-cancer -q
  # The site's table, as cron would find it: [training] data.
  sed -i "/^\[training\]/a data = \"$work/$s.csv\"" "$work/$s/fedbatch.toml"
done
publish() { for k in $(seq 1 "$SITES"); do cp -n "$col"/generations/*.fbg "$work/site-$k/generations/"; done; }
publish

if [ "$PIN" = 1 ]; then
  # Federated statistics: no site's rows leave it, only counts and moments.
  for k in $(seq 1 "$SITES"); do
    "$fb" stats --home "$work/site-$k" -q
    deliver "$(ls "$work/site-$k"/outbox/*.fbs)" "$col/inbox"
  done
  "$fb" stats --home "$col" --pin --settle 0
  publish
fi

accuracy=
for r in $(seq 1 "$ROUNDS"); do
  for k in $(seq 1 "$SITES"); do
    out=$("$fb" train --home "$work/site-$k" --epochs "$EPOCHS" --lr "$LR" --batch-size "$BATCH" --json | tail -n 1)
    deliver "$(printf '%s' "$out" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["bundle"]["file"])')" \
      "$col/inbox"
  done
  summary=$("$fb" merge --home "$col" --settle 0 --min-bundles "$SITES" --json | tail -n 1)
  accuracy=$(printf '%s' "$summary" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["evaluation"]["accuracy"])')
  printf 'round %2d  generation %s  test accuracy %.4f\n' "$r" \
    "$(printf '%s' "$summary" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["generation"])')" "$accuracy"
  publish
done
"$fb" log --home "$col" -q
printf 'final test accuracy %.4f (pinned federated normalisation: %s)\n' "$accuracy" "$([ "$PIN" = 1 ] && echo yes || echo no)"
"$py" -c "import sys; sys.exit(0 if $accuracy >= $MIN_ACCURACY else 1)"
