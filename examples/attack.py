#!/usr/bin/env python3
"""A Byzantine site for the demo: turns an honest update into a hostile one.

usage: attack.py MODE SCALE SEED BASE.safetensors DELTA.safetensors OUT.safetensors

BASE is the generation the site trained on (`fedbatch export`), DELTA the
fp32 delta of its honest bundle (the bundle's tensors.safetensors member).
OUT is the full model the attacker packs and signs with its own, pinned key
(`fedbatch pack`): fedbatch's signatures prove who sent an update, not that
it is honest, which is what the robust strategies are for.

  signflip  base - SCALE * delta     (gradient ascent: pulls the model back)
  scaled    base + SCALE * delta     (one site shouting over the others)
  noise     base + Gaussian noise of SCALE times the delta's RMS

Standard library only, so the demo needs nothing beyond Debian's python3.
"""
import array
import json
import math
import random
import struct
import sys


def load(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name} is {info['dtype']}; the demo's attacker handles F32 only")
        start, end = info["data_offsets"]
        values = array.array("f")
        values.frombytes(body[start:end])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = (info["shape"], values)
    return out


def save(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        blob = values.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


mode, scale, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
base, delta = load(sys.argv[4]), load(sys.argv[5])
rng = random.Random(seed)
count = sum(len(v) for _, v in delta.values())
rms = math.sqrt(sum(x * x for _, v in delta.values() for x in v) / max(1, count))
out = {}
for name, (shape, b) in base.items():
    d = delta[name][1]
    if mode == "signflip":
        values = [x - scale * y for x, y in zip(b, d)]
    elif mode == "scaled":
        values = [x + scale * y for x, y in zip(b, d)]
    elif mode == "noise":
        values = [x + rng.gauss(0.0, scale * rms) for x in b]
    else:
        sys.exit(f"unknown attack {mode}: signflip, scaled or noise")
    out[name] = (shape, array.array("f", values))
save(sys.argv[6], out)
