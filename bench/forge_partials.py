"""Partial aggregates for bench/included.sh, written from fedbatch-bundle(5)
(INCLUDED BUNDLES, partial aggregates, STATEMENT, FILE LAYOUT): one per
region, each naming PER bundles of sites region-R-sN (their sums zero, as
the root never sees a partial's bundles), signed with the region's key by
gpg.

    forge_partials.py BASE.safetensors G0.fbg OUTDIR PER ARCH REGION=FPR...

The root checks a partial's list (sites it serves, weights, sequence
numbers) but not the bundles themselves, so a list of made-up digests
measures exactly what a list of real ones would.
"""
import hashlib
import io
import json
import struct
import subprocess
import sys
import tarfile

import numpy as np
from safetensors.numpy import load_file, save


def canonical(o):
    return json.dumps(o, sort_keys=True, separators=(",", ":")).encode()


def payload_digest(path):
    data = open(path, "rb").read()
    s, l = struct.unpack("<II", data[-16:-8])
    return hashlib.sha256(data[: len(data) - (8 + s + l + 16)]).hexdigest()


def tar_zstd(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return subprocess.run(["zstd", "-q", "-3", "-c"], input=buf.getvalue(), stdout=subprocess.PIPE, check=True).stdout


def main(base, g0, out, per, arch, regions):
    weights = load_file(base)
    tensors = save({k: np.zeros(v.shape + (2,), np.int64) for k, v in weights.items()})
    g0_digest = payload_digest(g0)
    for spec in regions:
        region, fpr = spec.split("=")
        entries = sorted(
            ({"base": 0, "digest": hashlib.sha256(("%s %d" % (region, i)).encode()).hexdigest(),
              "num_examples": 10, "seq": 1, "signer": hashlib.sha1(("%s-s%d" % (region, i)).encode()).hexdigest().upper(),
              "site": "%s-s%d" % (region, i),
              "staleness": 0, "staleness_weight": 1, "weight": 10.0} for i in range(per)),
            key=lambda e: e["digest"])
        listed = b"".join(canonical(e) + b"\n" for e in entries)
        manifest = canonical({
            "format": "fedbatch", "version": 3, "kind": "partial", "model": {"id": "m", "arch": arch},
            "created": "2026-01-02T00:00:00Z", "codec": "exact-sum", "fedbatch_version": "bench",
            "base": {"number": 0, "digest": g0_digest}, "site": {"id": region, "seq": 1},
            "num_examples": 10 * per, "included_count": per,
            "metrics": {"bundles": per, "examples": 10 * per, "weight": 10.0 * per},
            "strategy": {"name": "exact-sum", "parameters": {"max_staleness": 0, "weight_cap": 1000000}},
            "members": [{"name": n, "length": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                        for n, d in (("tensors.safetensors", tensors), ("included.jsonl", listed))],
        })
        payload = tar_zstd([("manifest.json", manifest), ("tensors.safetensors", tensors), ("included.jsonl", listed)])
        statement = ('{"format":"fedbatch","kind":"partial","model":"m","payload":{"length":%d,"sha256":"%s"},'
                     '"site":{"id":"%s","seq":1},"version":2}'
                     % (len(payload), hashlib.sha256(payload).hexdigest(), region)).encode()
        sig = subprocess.run(["gpg", "--batch", "-u", fpr, "--detach-sign", "-o", "-"], input=statement,
                             stdout=subprocess.PIPE, check=True).stdout
        slot = struct.pack("<II", 0x184D2A5E, len(statement) + len(sig) + 16) + statement + sig
        slot += struct.pack("<II", len(statement), len(sig)) + b"fbsig002"
        open("%s/m-g000001-%s.fbp" % (out, region), "wb").write(payload + slot)
        with open("%s/%s.sites" % (out, region), "w") as f:
            f.write("".join("%s-s%d\n" % (region, i) for i in range(per)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:])
