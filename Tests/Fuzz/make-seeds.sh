#!/usr/bin/env bash
# Writes the seed corpus of every fuzz target into Tests/Fuzz/corpus/: small,
# valid inputs made by real tools (Python's safetensors, gpg, zstd, tar),
# from which libFuzzer mutates. Run once; the seeds are checked in, and
# crashes the fuzzer finds are added beside them.
set -euo pipefail
cd "$(dirname "$0")"
out=corpus
py=${FEDBATCH_PYTHON:-../../.venv/bin/python}
# statistics/ holds statistics.json members of a real fedbatch stats run (a site's and a pin's).
mkdir -p $out/{safetensors,manifest,statement,signature,container,codec,idx,csv,included}
tmp=$(mktemp -d /tmp/fb-seeds-XXXXXX)
trap 'gpgconf --homedir "$tmp/g" --kill all 2>/dev/null || true; rm -rf "$tmp"' EXIT

"$py" - "$out" <<'PY'
import hashlib, io, json, struct, sys, tarfile, subprocess
import numpy as np
from safetensors.numpy import save
out = sys.argv[1]
t = {
  "f32": {"0.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "0.bias": np.zeros(3, np.float32)},
  "mixed": {"a": np.ones((2, 2), np.float16), "b": np.array([1, 2], np.int64), "c": np.array([7], np.uint8), "d": np.zeros(3, np.int32)},
  "empty": {"e": np.zeros((0, 5), np.float32)},
}
for name, tensors in t.items():
    open(f"{out}/safetensors/{name}.safetensors", "wb").write(save(tensors, metadata={"k": "v"} if name == "f32" else None))
tensors = save({"0.weight": np.full((3, 4), 0.01, np.float32), "0.bias": np.zeros(3, np.float32),
                "2.weight": np.zeros((2, 3), np.float32), "2.bias": np.zeros(2, np.float32)})
member = {"name": "tensors.safetensors", "length": len(tensors), "sha256": hashlib.sha256(tensors).hexdigest()}
update = {"format": "fedbatch", "version": 2, "kind": "update", "model": {"id": "demo", "arch": "mlp:4-3-2"},
          "base": {"number": 0, "digest": "ab" * 32}, "site": {"id": "site-1", "seq": 1}, "num_examples": 100,
          "created": "2026-01-01T00:00:00Z", "codec": "fp32", "fedbatch_version": "0.1.0", "metrics": {"loss": 0.5},
          "members": [member]}
generation = {"format": "fedbatch", "version": 2, "kind": "generation", "model": {"id": "demo", "arch": "mlp:4-3-2"},
              "generation": 1, "parent": {"number": 0, "digest": "cd" * 32}, "created": "2026-01-01T00:00:00Z",
              "codec": "fp32", "fedbatch_version": "0.1.0", "metrics": {"bundles": 1},
              "included": [{"digest": "ef" * 32, "site": "site-1", "signer": "A" * 40, "seq": 1, "num_examples": 100, "weight": 100}],
              "rejected": [{"digest": "01" * 32, "reason": "signature.bad"}],
              "strategy": {"name": "fedavg", "parameters": {"server_lr": 1, "weight_cap": 100000000}}, "members": [member]}
for name, m in (("update", update), ("generation", generation)):
    raw = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    open(f"{out}/manifest/{name}.json", "wb").write(raw)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n, d in (("manifest.json", raw), ("tensors.safetensors", tensors)):
            info = tarfile.TarInfo(n); info.size = len(d); tar.addfile(info, io.BytesIO(d))
    payload = subprocess.run(["zstd", "-q", "-19", "-c"], input=buf.getvalue(), stdout=subprocess.PIPE, check=True).stdout
    open(f"{out}/../payload-{name}.zst", "wb").write(payload)
# included.jsonl: a generation's list of bundles (fedbatch-bundle(5), INCLUDED BUNDLES), lines in digest order.
def line(i, **extra):
    e = {"digest": "%02x" % i * 32, "site": "site-%d" % i, "signer": "A" * 40, "seq": i, "num_examples": 100 * i,
         "weight": 100.0 * i, "base": 0, "staleness": 0, "staleness_weight": 1}
    e.update(extra)
    return json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n"
open(f"{out}/included/three.jsonl", "w").write("".join(line(i) for i in (1, 2, 3)))
open(f"{out}/included/partials.jsonl", "w").write(
    line(4, partial="ab" * 32, evaluation={"num_examples": 50, "metrics": {"accuracy": 0.5, "loss": 1.25}})
    + line(5, remembered=1, base=0, staleness=1))
# IDX: three 4x4 images and their labels; CSV: a header and rows.
open(f"{out}/idx/images.idx3", "wb").write(bytes([0, 0, 8, 3]) + struct.pack(">III", 3, 4, 4) + bytes(range(48)))
open(f"{out}/idx/labels.idx1", "wb").write(bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([0, 1, 2]))
open(f"{out}/csv/small.csv", "w").write("label,a,b,c\n0,0.5,1,2\n1,-1e3,0,7.25\n2,3,4,5\n")
open(f"{out}/csv/crlf.csv", "w").write("x,label\r\n1.5,1\r\n2.5,0\r\n")
PY

# Each payload's statement (fedbatch-bundle(5), STATEMENT), signatures over
# it by gpg, and containers sealed with them (and one unsigned).
for kind in update generation; do
  "$py" - corpus/../payload-$kind.zst $kind "$tmp/$kind.statement" <<'PY'
import hashlib, sys
p, kind = open(sys.argv[1], "rb").read(), sys.argv[2]
payload = '"payload":{"length":%d,"sha256":"%s"}' % (len(p), hashlib.sha256(p).hexdigest())
if kind == "update":
    s = '{"format":"fedbatch","kind":"update","model":"demo",%s,"site":{"id":"site-1","seq":1},"version":2}' % payload
else:
    s = '{"format":"fedbatch","generation":1,"kind":"generation","model":"demo",%s,"version":2}' % payload
open(sys.argv[3], "wb").write(s.encode())
PY
  cp "$tmp/$kind.statement" "$out/statement/$kind.json"
done
mkdir -m 700 "$tmp/g"
g() { gpg --homedir "$tmp/g" --batch --no-tty --pinentry-mode loopback --passphrase '' "$@"; }
g --quick-gen-key 'seed-ed <ed@fedbatch.test>' ed25519 sign 0 2>/dev/null
g --quick-gen-key 'seed-rsa <rsa@fedbatch.test>' rsa3072 sign 0 2>/dev/null
for who in ed rsa; do
  for kind in update generation; do
    p=corpus/../payload-$kind.zst
    g -u "$who@fedbatch.test" --detach-sign -o "$tmp/$who-$kind.sig" "$tmp/$kind.statement"
    cp "$tmp/$who-$kind.sig" "$out/signature/$who-$kind.sig"
    "$py" - "$p" "$tmp/$kind.statement" "$tmp/$who-$kind.sig" "$out/container/$who-$kind.fbu" <<'PY'
import struct, sys
payload, st, sig = (open(a, "rb").read() for a in sys.argv[1:4])
slot = struct.pack("<II", 0x184D2A5E, len(st) + len(sig) + 16) + st + sig + struct.pack("<II", len(st), len(sig)) + b"fbsig002"
open(sys.argv[4], "wb").write(payload + slot)
PY
  done
done
"$py" - corpus/../payload-update.zst "$tmp/update.statement" "$out/container/unsigned.fbu" <<'PY'
import struct, sys
payload, st = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
open(sys.argv[3], "wb").write(payload + struct.pack("<II", 0x184D2A5E, len(st) + 16) + st + struct.pack("<II", len(st), 0) + b"fbsig002")
PY
rm -f corpus/../payload-*.zst

# Codec seeds: the stored tensors of a real update to mlp:4-3-2 in every
# codec, packed by fedbatch itself and taken out of the bundle with tar.
fb=${FEDBATCH_BIN:-../../.build/debug/fedbatch}
fpr() { g --with-colons --list-keys "$1" 2>/dev/null | awk -F: '/^fpr/{print $10; exit}'; }
GNUPGHOME="$tmp/g" "$fb" init collector --home "$tmp/col" --model-id demo --arch mlp:4-3-2 --key "$(fpr ed@fedbatch.test)" -q
g --armor --export rsa@fedbatch.test > "$tmp/site.asc"
GNUPGHOME="$tmp/g" "$fb" keys add --home "$tmp/col" --site s "$tmp/site.asc" -q
GNUPGHOME="$tmp/g" "$fb" init site --home "$tmp/site" --site-id s --key "$(fpr rsa@fedbatch.test)" --collector-key "$tmp/col/keys/collector.asc" --model-id demo -q
cp "$tmp/col/generations/g000000.fbg" "$tmp/site/generations/"
"$py" - "$tmp/w.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(1)
save_file({"0.weight": rng.standard_normal((3, 4)).astype(np.float32), "0.bias": rng.standard_normal(3).astype(np.float32),
           "2.weight": rng.standard_normal((2, 3)).astype(np.float32), "2.bias": rng.standard_normal(2).astype(np.float32)}, sys.argv[1])
PY
for codec in fp32 fp16 bf16 int8 topk; do
  f=$(GNUPGHOME="$tmp/g" "$fb" pack --home "$tmp/site" --weights "$tmp/w.safetensors" --num-examples 1 --codec "$codec" --topk-fraction 0.5 --force)
  zstd -qdc "$f" | tar -xO tensors.safetensors > "$out/codec/$codec.safetensors"
done
./make-key-seeds.sh
find corpus -type f | sort | xargs ls -l | awk '{print $5, $9}'
