"""The Python reference pipeline for the merge benchmark.

    python_merge.py GNUPGHOME BASE.safetensors OUT.safetensors BUNDLE...

What a careful Python collector would do with the same files: for each
bundle, split off fedbatch's signature slot, verify the detached signature
with python-gnupg, decompress with zstandard, read the tar, check each
member's SHA-256 against the manifest, load the tensors with safetensors,
and accumulate the FedAvg sum in float64 with numpy; then write the result.
"""
import hashlib
import io
import json
import struct
import sys
import tarfile
import tempfile
import os

import gnupg
import numpy as np
import zstandard
from safetensors.numpy import load, load_file, save_file


def split(data):
    length = struct.unpack("<I", data[-16:-12])[0]
    start = len(data) - 16 - length - 8
    return data[:start], data[start + 8:start + 8 + length]


def main():
    home, base_path, out, bundles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    gpg = gnupg.GPG(gnupghome=home)
    base = load_file(base_path)
    sums = {k: np.zeros(v.shape, np.float64) for k, v in base.items()}
    total = 0.0
    for path in sorted(bundles):
        with open(path, "rb") as fh:
            data = fh.read()
        payload, sig = split(data)
        with tempfile.NamedTemporaryFile(delete=False) as s:
            s.write(sig)
        verified = gpg.verify_data(s.name, payload)
        os.unlink(s.name)
        assert verified.valid, f"{path}: {verified.status}"
        tar = tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 32)))
        manifest = json.loads(tar.extractfile("manifest.json").read())
        members = {m["name"]: m for m in manifest["members"]}
        tensors = tar.extractfile("tensors.safetensors").read()
        assert hashlib.sha256(tensors).hexdigest() == members["tensors.safetensors"]["sha256"]
        weight = float(manifest["num_examples"])
        for k, v in load(tensors).items():
            assert np.isfinite(v).all()
            sums[k] += weight * v.astype(np.float64)
        total += weight
    save_file({k: (base[k].astype(np.float64) + sums[k] / total).astype(np.float32) for k in base}, out)


if __name__ == "__main__":
    main()
