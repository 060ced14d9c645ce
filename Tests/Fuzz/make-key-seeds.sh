#!/usr/bin/env bash
# Seeds of the `keys` and `verify` fuzz targets (make-seeds.sh runs this):
# public key blocks of every type fedbatch verifies in-process, exported by
# gpg, and for `verify` the same framed with a signature and the statement
# it signs: a big-endian u16 length and the key block, a u16 length and the
# signature, then the statement (FuzzTargets.swift, `verify`).
set -euo pipefail
cd "$(dirname "$0")"
out=corpus
mkdir -p $out/keys $out/verify
tmp=$(mktemp -d /tmp/fb-keyseeds-XXXXXX)
trap 'gpgconf --homedir "$tmp/g" --kill all 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -m 700 "$tmp/g"
g() { gpg --homedir "$tmp/g" --batch --no-tty --pinentry-mode loopback --passphrase '' "$@"; }
fpr() { g --with-colons --list-keys "$1" 2>/dev/null | awk -F: '/^fpr/{print $10}'; }
printf 'a statement fedbatch fuzzes\n' > "$tmp/statement"
for algo in ed25519 rsa2048 nistp256 brainpoolP384r1 secp256k1 dsa2048; do
  g --quick-gen-key "k-$algo <$algo@fedbatch.test>" "$algo" sign 0 2>/dev/null
done
# A certify-only key with a cross-certified ECDSA signing subkey.
g --quick-gen-key "k-sub <sub@fedbatch.test>" ed25519 cert 0 2>/dev/null
g --quick-add-key "$(fpr sub@fedbatch.test | head -1)" nistp256/ecdsa sign 0 2>/dev/null
for who in ed25519 rsa2048 nistp256 brainpoolP384r1 secp256k1 dsa2048 sub; do
  g --export "$who@fedbatch.test" > "$out/keys/$who.key"
  signer=$(fpr "$who@fedbatch.test" | tail -1)
  g -u "$signer!" --digest-algo SHA512 --detach-sign -o "$tmp/$who.sig" "$tmp/statement"
  python3 - "$out/keys/$who.key" "$tmp/$who.sig" "$tmp/statement" "$out/verify/$who.bin" <<'PY'
import struct, sys
key, sig, statement = (open(p, "rb").read() for p in sys.argv[1:4])
open(sys.argv[4], "wb").write(struct.pack(">H", len(key)) + key + struct.pack(">H", len(sig)) + sig + statement)
PY
done
g --armor --export ed25519@fedbatch.test > "$out/keys/ed25519.asc"
