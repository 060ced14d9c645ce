#!/bin/sh
# Read a fedbatch container (.fbu or .fbg) with standard tools only, in the
# order fedbatch-bundle(5) gives: print its signed statement, check that the
# payload is the one the statement names, check the statement's signature if
# the signer's key is in your keyring, and only then list the archive and
# print its manifest.
#
#   sh examples/standard-tools.sh bundle.fbu
set -eu
f=${1:?usage: standard-tools.sh FILE}

# The last 16 bytes are the trailer: u32le statement length S, u32le
# signature length L, "fbsig002". Before them: the statement, then the
# signature, after an 8-byte skippable-frame header; the payload is the rest.
[ "$(tail -c 8 "$f")" = fbsig002 ] || { echo "not a format-2 fedbatch container" >&2; exit 1; }
size=$(stat -c %s "$f")
S=$(tail -c 16 "$f" | head -c 4 | od -An -tu4 | tr -d ' ')
L=$(tail -c 12 "$f" | head -c 4 | od -An -tu4 | tr -d ' ')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c $((size - 8 - S - L - 16)) "$f" > "$work/payload.zst"
tail -c $((S + L + 16)) "$f" | head -c "$S" > "$work/statement.json"
tail -c $((L + 16)) "$f" | head -c "$L" > "$work/statement.sig"

echo "== statement"
cat "$work/statement.json"
echo
echo "== payload (SHA-256 and length, as the statement must name them)"
digest=$(sha256sum "$work/payload.zst" | cut -d' ' -f1)
length=$(stat -c %s "$work/payload.zst")
echo "$digest $length"
grep -q "\"payload\":{\"length\":$length,\"sha256\":\"$digest\"}" "$work/statement.json" ||
    { echo "the payload does NOT match the statement" >&2; exit 1; }
echo "matches the statement"

if [ "$L" -eq 0 ]; then
    echo "== signature: none (unsigned file)"
else
    echo "== signature over the statement ($L bytes)"
    gpg --verify "$work/statement.sig" "$work/statement.json"
fi

# Only now, with the payload proven, is anything decompressed.
echo "== members"
zstd -dc "$f" | tar -tv

echo "== manifest.json"
zstd -dc "$f" | tar -xO manifest.json
echo

