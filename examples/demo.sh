#!/usr/bin/env bash
# A whole federation on one machine: a collector and SITES sites with
# throw-away GnuPG keys, Fashion-MNIST split over the sites with a
# Dirichlet(ALPHA) label skew, then ROUNDS rounds of: every site verifies
# the newest generation and trains on its shard, its bundle is copied into
# the collector's inbox the way rsync does (a dotfile renamed into place),
# the collector merges, and the test accuracy of the new generation is
# printed. At the end `fedbatch log` verifies the whole chain and `fedbatch
# audit` re-derives the newest generation from its inputs.
#
#   make demo                      # defaults below, about 2 minutes on 2 idle cores
#   ROUNDS=60 EPOCHS=2 make demo   # the longer setting (see BENCHMARKS.md)
#   CODEC=int8 make demo           # sites store updates with another codec
#   KEEP=1 make demo               # keep the work directory, with report.html
#
# Late sites (air-gapped, on a USB cycle): LATE=k makes the last k sites
# late. Each takes the newest generation only every LAG rounds and its
# bundle reaches the collector LAG rounds later, trained on a generation LAG
# behind. A round is one day of simulated time.
#   LATE=3 LAG=4 MAX_STALENESS=0 QUORUM=7 make demo   # (a) synchronous: late bundles refused as too stale
#   LATE=3 LAG=4 WAIT_ALL=1 make demo                 # (b) every generation waits for the slowest site
#   LATE=3 LAG=4 STALENESS=polynomial make demo       # (c) asynchronous, staleness-weighted
#   LATE=3 LAG=4 SITE_MEMORY=mifa make demo             # (d) asynchronous, the collector remembers
# LATE_EPOCHS lets a late site use its long cycle for more local epochs.
# SITE_MEMORY sets merge.memory (fedbatch-merge(1), MEMORY): every generation
# adds each pinned site's latest update, fresh or remembered, so a late
# site's data steers every generation; MEMORY_WINDOW (merge.memory_window)
# defaults to 2*LAG, so that a late update, already LAG behind when it
# arrives, is remembered until the next one.
# QUORUM (merge.min_bundles) defaults to the on-time sites, MAX_STALENESS to
# LAG, STALENESS to merge.staleness's default. At the end the accuracy on the
# two classes the late sites hold most is printed too.
#
# Byzantine sites: ATTACKERS=k makes the first k sites hostile. Each trains
# honestly, then replaces its update before signing it with its own pinned
# key (examples/attack.py): ATTACK=signflip (the default: the update
# negated and scaled by ATTACK_SCALE, 5), scaled (scaled up) or noise
# (Gaussian noise ATTACK_SCALE times the update's RMS). STRATEGY picks the
# collector's merge.strategy, BYZANTINE its f (default ATTACKERS), TRIM the
# trimmed mean's cut, SERVER_LR and MOMENTUM a server optimiser's.
#   ATTACKERS=2 STRATEGY=fedavg ROUNDS=20 make demo   # collapses
#   ATTACKERS=2 STRATEGY=krum ROUNDS=20 make demo     # holds
#
# Central differential privacy: NOISE=z adds a [privacy] table with
# noise_multiplier z, clip_norm DP_CLIP (1), expected_sites SITES, delta
# DP_DELTA (1e-5) and max_epsilon MAX_EPSILON (1e9), and the table gains
# the cumulative epsilon of each generation.
#   NOISE=0.1 DP_CLIP=0.5 make demo
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fb=${FEDBATCH:-$root/.build/release/fedbatch}
data=${DATA:-/usr/share/datasets/fashion-mnist}
SITES=${SITES:-10} ROUNDS=${ROUNDS:-30} ALPHA=${ALPHA:-0.5} EPOCHS=${EPOCHS:-1} LR=${LR:-0.05}
LATE=${LATE:-0} LAG=${LAG:-4} WAIT_ALL=${WAIT_ALL:-} LATE_EPOCHS=${LATE_EPOCHS:-$EPOCHS}
QUORUM=${QUORUM:-$((SITES - LATE))} MAX_STALENESS=${MAX_STALENESS:-$LAG}
ATTACKERS=${ATTACKERS:-0} ATTACK=${ATTACK:-signflip} ATTACK_SCALE=${ATTACK_SCALE:-5} BYZANTINE=${BYZANTINE:-${ATTACKERS:-0}}
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
# Every generation site $1 lacks, as `rsync` of generations/ (or `fedbatch
# pull`) brings them: a site trusts a generation only through those before
# it, since any of them may rotate the collector's key (fedbatch-keys(1)).
deliver_generations() {
  for g in "$col/generations"/*.fbg; do
    [ -e "$work/$1/generations/$(basename "$g")" ] || deliver "$g" "$work/$1/generations"
  done
}

echo "fedbatch demo: $SITES sites, Dirichlet alpha=$ALPHA, $ROUNDS rounds of $EPOCHS local epoch(s), codec ${CODEC:-default}, in $work" >&2
col="$work/collector"
"$fb" init collector --home "$col" --model-id fmnist --arch mlp:784-256-128-10 --key "$(key collector)" --eval-data "$data" -q
# The merge settings of this simulation, in the collector's fedbatch.toml.
setting() { sed -i "s|^$1 = .*|$1 = $2|" "$col/fedbatch.toml"; }
setting settle_seconds 0
setting min_bundles "$([ -n "$WAIT_ALL" ] && echo "$SITES" || echo "$QUORUM")"
setting max_staleness "$MAX_STALENESS"
[ -z "${STALENESS:-}" ] || setting staleness "\"$STALENESS\""
# A [merge] key, set or commented out (other tables have keys of the same name).
option() {
  sed -i "/^\[merge\]/,/^\[/{/^\(# \)\?$1 = /d}" "$col/fedbatch.toml"
  sed -i "/^\[merge\]/a $1 = $2" "$col/fedbatch.toml"
}
[ -z "${STRATEGY:-}" ] || option strategy "\"$STRATEGY\""
if [ -n "${SITE_MEMORY:-}" ]; then
  option memory "\"$SITE_MEMORY\""
  option memory_window "${MEMORY_WINDOW:-$((2 * LAG))}"
fi
[ "$BYZANTINE" -eq 0 ] || option byzantine "$BYZANTINE"
[ -z "${TRIM:-}" ] || option trim "$TRIM"
[ -z "${SERVER_LR:-}" ] || option server_lr "$SERVER_LR"
[ -z "${MOMENTUM:-}" ] || option momentum "$MOMENTUM"
if [ -n "${NOISE:-}" ]; then
  printf '\n[privacy]\nnoise_multiplier = %s\nclip_norm = %s\nexpected_sites = %s\ndelta = %s\nmax_epsilon = %s\n' \
    "$NOISE" "${DP_CLIP:-1}" "$SITES" "${DP_DELTA:-1e-5}" "${MAX_EPSILON:-1e9}" >> "$col/fedbatch.toml"
fi
"$fb" data split --data "$data" --sites "$SITES" --dirichlet "$ALPHA" --out "$work/shards" --seed 1 --json > "$work/split.json"
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
lines = sys.stdin.read().splitlines()
v = json.loads(lines[-1]) if lines else None
for k in sys.argv[1:]: v = v.get(k) if isinstance(v, dict) else None
print("-" if v is None else "%.4f" % v if isinstance(v, float) else v)' "$@"
}

late=("${sites[@]:$((SITES - LATE))}")
attackers=("${sites[@]:0:$ATTACKERS}")
is_attacker() { [[ " ${attackers[*]} " == *" $1 "* ]]; }
[ "$ATTACKERS" -eq 0 ] || echo "attackers: ${attackers[*]} ($ATTACK x$ATTACK_SCALE); strategy $(sed -n 's/^strategy = //p' "$col/fedbatch.toml")" >&2
# An attacker trains honestly in fp32, then swaps its update for a hostile
# one and signs that instead (`fedbatch pack`), the honest bundle discarded.
attack() {  # attack SITE BUNDLE-JSON -> the hostile bundle's path
  local s=$1 json=$2 honest n
  honest=$(echo "$json" | summary bundle file)
  n=$(echo "$json" | summary bundle num_examples)
  zstd -dcq "$honest" | tar -xO tensors.safetensors > "$work/$s/delta.safetensors"
  "$fb" export --home "$work/$s" latest --out "$work/$s/base.safetensors" -q
  python3 "$root/examples/attack.py" "$ATTACK" "$ATTACK_SCALE" "$r" "$work/$s/base.safetensors" "$work/$s/delta.safetensors" "$work/$s/hostile.safetensors"
  rm "$honest"
  "$fb" pack --home "$work/$s" --weights "$work/$s/hostile.safetensors" --num-examples "$n" --codec fp32 --force --json | summary bundle file
}
is_late() { [ -z "$WAIT_ALL" ] && [[ " ${late[*]} " == *" $1 "* ]]; }
# A round is a day; waiting for all sites, each generation takes LAG days.
day_step=$([ -n "$WAIT_ALL" ] && [ "$LATE" -gt 0 ] && echo "$LAG" || echo 1)

printf '%-6s %-11s %-9s %-9s %-5s %-7s %s\n' round generation bundles accuracy day seconds "${NOISE:+epsilon}"
start=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
  for s in "${sites[@]}"; do
    if is_late "$s"; then
      # A late site's bundle arrives LAG rounds after it trained; then it
      # takes the newest generation and trains again.
      if [ -f "$work/$s/due" ] && [ "$(cat "$work/$s/due")" -le "$r" ]; then
        for f in "$work/$s/outbox"/*.fbu; do deliver "$f" "$col/inbox" && rm "$f"; done
        rm "$work/$s/due"
      fi
      [ -f "$work/$s/due" ] && continue
      deliver_generations "$s"
      "$fb" train --home "$work/$s" --data "$work/shards/$s.safetensors" --epochs "$LATE_EPOCHS" --lr "$LR" "${codec[@]}" -q || [ $? -eq 5 ]
      echo $((r + LAG)) > "$work/$s/due"
      continue
    fi
    deliver_generations "$s"
    # A site whose training fails (a model wrecked by attackers makes the
    # loss diverge) sends nothing this round; the error goes to stderr.
    if is_attacker "$s"; then
      trained=$("$fb" train --home "$work/$s" --data "$work/shards/$s.safetensors" --epochs "$EPOCHS" --lr "$LR" --codec fp32 --json) || continue
      bundle=$(attack "$s" "$trained") || continue
    else
      trained=$("$fb" train --home "$work/$s" --data "$work/shards/$s.safetensors" --epochs "$EPOCHS" --lr "$LR" "${codec[@]}" --json) || continue
      bundle=$(echo "$trained" | summary bundle file)
    fi
    deliver "$bundle" "$col/inbox"
  done
  # Bundles arrive by rename, complete, so the merge need not wait for
  # them to settle (merge.settle_seconds guards plain copies).
  # The collector evaluates each generation it writes on its [eval] data
  # (--eval-data above): the test split.
  # Exit 5 (nothing merged: every site failed, or too few for the
  # strategy) prints "-" for the accuracy.
  # /usr/bin/time records each merge's wall time and peak RSS.
  merged=$(/usr/bin/time -f '%e %M' -a -o "$work/merge-times" "$fb" merge --home "$col" --settle 0 --json) ||
    [ $? -eq 5 ]
  gen=$(ls "$col/generations" | grep '\.fbg$' | tail -1)
  acc=$(echo "$merged" | summary evaluation accuracy)
  bundles=$(ls "$col/accepted" | wc -l)
  eps=$([ -z "${NOISE:-}" ] || echo "$merged" | summary privacy epsilon)
  printf '%-6d %-11s %-9d %-9s %-5d %-7d %s\n' "$r" "${gen%.fbg}" "$bundles" "$acc" $((r * day_step)) $(( $(date +%s) - start )) "$eps"
done
if [ "$LATE" -gt 0 ]; then
  # The two classes the late sites hold the largest share of, and the
  # final generation's accuracy on them.
  "$fb" eval --home "$col" latest --data "$data" --json > "$work/final-eval.json"
  python3 - "$work/split.json" "$work/final-eval.json" "$LATE" <<'PY'
import json, sys
shards = json.loads(open(sys.argv[1]).read().splitlines()[-1])["shards"]
late = shards[len(shards) - int(sys.argv[3]):]
share = [sum(s["label_counts"][c] for s in late) / max(1, sum(s["label_counts"][c] for s in shards)) for c in range(10)]
top = sorted(range(10), key=lambda c: -share[c])[:2]
ev = json.loads(open(sys.argv[2]).read().splitlines()[-1])
acc = [next(x["accuracy"] for x in ev["classes"] if x["label"] == c) for c in top]
print("late sites' classes %s (%.0f%%, %.0f%% of their examples at the late sites): accuracy %.4f; overall %.4f"
      % (top, 100 * share[top[0]], 100 * share[top[1]], sum(acc) / 2, ev["accuracy"]))
PY
  echo "quarantined: $(ls "$col/quarantine" | grep -vc '\.reason\.json$' || true) files ($(cat "$col"/quarantine/*.reason.json 2>/dev/null | python3 -c 'import sys,json,re; t=sys.stdin.read(); print(", ".join(sorted(set(re.findall(r"\"code\" : \"([a-z.-]+)\"", t)))) or "none")'))"
fi
awk '{t += $1; if ($2 > m) m = $2} END {printf "merges: %.1f s in total, %.2f s each, peak RSS %.0f MiB\n", t, t / NR, m / 1024}' \
  "$work/merge-times"
echo "bundles: $(ls "$col/accepted" | wc -l) files, $(du -cb "$col/accepted" | tail -1 | cut -f1) bytes (mean $(( $(du -cb "$col/accepted" | tail -1 | cut -f1) / $(ls "$col/accepted" | wc -l) )) per bundle)"
echo >&2
"$fb" log --home "$col" | tail -4
# Anyone holding the inputs can re-derive a generation bit for bit; the
# collector audits its own newest one (fedbatch-audit(1)).
"$fb" audit --home "$col" latest
"$fb" report --home "$col" --out "$work/report.html" -q
if [ -n "${KEEP:-}" ]; then echo "report: $work/report.html"; fi
