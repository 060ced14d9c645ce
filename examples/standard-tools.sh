#!/bin/sh
# Read a fedbatch container (.fbu or .fbg) with standard tools only, as
# fedbatch-bundle(5) describes: list it, print its manifest, compute its
# digest, and, if the signer's key is in your keyring, check the signature.
#
#   sh examples/standard-tools.sh bundle.fbu
set -eu
f=${1:?usage: standard-tools.sh FILE}

echo "== members"
zstd -dc "$f" | tar -tv

echo "== manifest.json"
zstd -dc "$f" | tar -xO manifest.json
echo

# The last 16 bytes are the trailer: u32le signature length, u32le 0, "fbsig001".
size=$(stat -c %s "$f")
L=$(tail -c 16 "$f" | head -c 4 | od -An -tu4 | tr -d ' ')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c $((size - L - 24)) "$f" > "$work/payload.zst"
echo "== digest (SHA-256 of the signed bytes)"
sha256sum "$work/payload.zst" | cut -d' ' -f1

if [ "$L" -eq 0 ]; then
    echo "== signature: none (unsigned file)"
    exit 0
fi
tail -c $((L + 16)) "$f" | head -c "$L" > "$work/payload.sig"
echo "== signature ($L bytes)"
gpg --verify "$work/payload.sig" "$work/payload.zst"
