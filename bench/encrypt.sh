#!/usr/bin/env bash
# The cost of encryption to the collector, per GB of bundles, release build:
# the same BUNDLES (250, about 1 GB) bundles of the bench/sites.sh federation
# (FED) merged plain and merged encrypted (each encrypted by gpg to the
# collector key's encryption subkey, as push --encrypt does), with
# `gpg --decrypt` of the encrypted files as the reference for the
# decryption itself.
set -euo pipefail
fed=${FED:-/tmp/fb-scale/fed}
n=${BUNDLES:-250}
bench_name=encrypt
. "$(dirname "$0")/common.sh"
[ -d "$fed/bundles" ] || { echo "make the federation first: bench/sites.sh $fed" >&2; exit 2; }
export GNUPGHOME="$fed/g"
collector=$(sed -n 's/^key = "\(.*\)"/\1/p' "$fed/col/fedbatch.toml")
# The collector key needs an encryption subkey (once).
if ! gpg --with-colons --list-keys "$collector" | grep -q '^sub:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*e'; then
  gpg --batch --passphrase '' --quick-add-key "$collector" cv25519 encr 0
fi
sites=$(ls "$fed/bundles" | sed -n 's/\.fbu$//p' | head -n "$n")
for mode in plain sealed; do
  cp -a "$fed/col" "$work/$mode"
  sed -i 's/^min_bundles = .*/min_bundles = 1/; s/^settle_seconds = .*/settle_seconds = 0/' "$work/$mode/fedbatch.toml"
  for s in $sites; do cp "$fed/keys/$s.asc" "$work/$mode/keys/sites/$s.asc"; done
done
for s in $sites; do
  ln "$fed/bundles/$s.fbu" "$work/plain/inbox/$s.fbu"
  gpg --batch --trust-model always --compress-level 0 --recipient "$collector" --output "$work/sealed/inbox/$s.fbu.gpg" --encrypt "$fed/bundles/$s.fbu"
done
plain_bytes=$(du -cbL "$work"/plain/inbox/* | tail -1 | cut -f1)
sealed_bytes=$(du -cb "$work"/sealed/inbox/* | tail -1 | cut -f1)
sync
d0=$(date +%s.%N)
for f in "$work"/sealed/inbox/*.gpg; do gpg --batch --quiet --decrypt "$f" > /dev/null; done
d1=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/plain.rss" "$fb" merge --home "$work/plain" -q
d2=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$work/sealed.rss" "$fb" merge --home "$work/sealed" -q
d3=$(date +%s.%N)
digest() { "$fb" inspect "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])'; }
[ "$(digest "$work/plain/generations/g000001.fbg")" = "$(digest "$work/sealed/generations/g000001.fbg")" ] && same=yes || same=no
gb=$(echo "$plain_bytes / 1000000000" | bc -l)
gpg_s=$(echo "$d1 - $d0" | bc); plain_s=$(echo "$d2 - $d1" | bc); sealed_s=$(echo "$d3 - $d2" | bc)
echo "| $n bundles, $((plain_bytes / 1000000)) MB plain, $((sealed_bytes / 1000000)) MB encrypted | seconds | s per GB | peak RSS MB |"
echo "|---|---|---|---|"
printf '| gpg --decrypt of each file, to /dev/null (reference) | %.1f | %.1f | |\n' "$gpg_s" "$(echo "$gpg_s / $gb" | bc -l)"
printf '| fedbatch merge, plain bundles | %.1f | %.1f | %d |\n' "$plain_s" "$(echo "$plain_s / $gb" | bc -l)" $(( $(tail -1 "$work/plain.rss") / 1024 ))
printf '| fedbatch merge, encrypted bundles | %.1f | %.1f | %d |\n' "$sealed_s" "$(echo "$sealed_s / $gb" | bc -l)" $(( $(tail -1 "$work/sealed.rss") / 1024 ))
printf '| encryption'"'"'s cost in the merge (difference) | %.1f | %.1f | |\n' "$(echo "$sealed_s - $plain_s" | bc)" "$(echo "($sealed_s - $plain_s) / $gb" | bc -l)"
echo
echo "the two generations have the same payload digest: $same"
