"""The Python reference pipeline for the merge benchmark.

    python_merge.py GNUPGHOME BASE.safetensors OUT.safetensors BUNDLE...

What a careful Python collector would do with the same files: for each
bundle, split off fedbatch's slot (fedbatch-bundle(5), format 2), verify the
statement's detached signature with python-gnupg, check the payload's
SHA-256 against the statement with hashlib, decompress with zstandard, read
the tar, check each member's SHA-256 against the manifest, load the tensors
with safetensors, and accumulate the FedAvg sum in float64 with numpy; then
write the result. (It checks fewer rules than fedbatch: no strict statement
or manifest parsing, no caps, no finite-result check before writing.)
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
    assert data[-8:] == b"fbsig002"
    slen, length = struct.unpack("<II", data[-16:-8])
    start = len(data) - 16 - length - slen - 8
    body = data[start + 8:len(data) - 16]
    return data[:start], body[:slen], body[slen:]


def main():
    home, base_path, out, bundles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    gpg = gnupg.GPG(gnupghome=home)
    base = load_file(base_path)
    sums = {k: np.zeros(v.shape, np.float64) for k, v in base.items()}
    total = 0.0
    for path in sorted(bundles):
        with open(path, "rb") as fh:
            data = fh.read()
        payload, statement, sig = split(data)
        with tempfile.NamedTemporaryFile(delete=False) as s:
            s.write(sig)
        verified = gpg.verify_data(s.name, statement)
        os.unlink(s.name)
        assert verified.valid, f"{path}: {verified.status}"
        named = json.loads(statement)["payload"]
        assert named["length"] == len(payload) and named["sha256"] == hashlib.sha256(payload).hexdigest(), path
        tar = tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 32)))
        manifest = json.loads(tar.extractfile("manifest.json").read())
        members = {m["name"]: m for m in manifest["members"]}
        tensors = tar.extractfile("tensors.safetensors").read()
        assert hashlib.sha256(tensors).hexdigest() == members["tensors.safetensors"]["sha256"]
        weight = float(manifest["num_examples"])
        stored = load(tensors)
        for k in base:
            if manifest["codec"] == "int8":  # fedbatch-bundle(5), CODECS
                scale = np.repeat(stored[k + "#scale"], 256)[:base[k].size].reshape(base[k].shape)
                v = stored[k].astype(np.float32) * scale
            else:
                v = stored[k]
            assert np.isfinite(v).all()
            sums[k] += weight * v.astype(np.float64)
        total += weight
    save_file({k: (base[k].astype(np.float64) + sums[k] / total).astype(np.float32) for k in base}, out)


if __name__ == "__main__":
    main()
