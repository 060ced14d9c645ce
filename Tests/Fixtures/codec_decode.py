"""An independent decoder for fedbatch's update codecs, written from
fedbatch-bundle(5), section CODECS, with numpy only (and a safetensors
reader of its own, since numpy has no bfloat16).

usage: codec_decode.py CODEC SHAPES.json STORED.safetensors OUT.f32
SHAPES.json is [[name, [dims...]], ...] in the model's order. Writes every
decoded tensor's float32 values, little-endian, one after another, or exits
1 with the rule the stored tensors break.
"""
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        out[name] = (t["dtype"], list(t["shape"]), body[start:end])
    return out


def array(entry, dtype, shape):
    got_dtype, got_shape, raw = entry
    if got_dtype != dtype or got_shape != shape:
        raise SystemExit(f"expected {dtype} {shape}, found {got_dtype} {got_shape}")
    if dtype == "BF16":
        # bfloat16 is the top half of a float32.
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4")
    return np.frombuffer(raw, {"F32": "<f4", "F16": "<f2", "I8": "i1", "I32": "<i4"}[dtype])


def decode(codec, shapes, stored):
    expected = set()
    for name, shape in shapes:
        count = int(np.prod(shape)) if shape else 1
        if codec in ("fp32", "fp16", "bf16"):
            expected.add(name)
            x = array(stored[name], {"fp32": "F32", "fp16": "F16", "bf16": "BF16"}[codec], shape).astype(np.float32)
        elif codec == "int8":
            expected |= {name, name + "#scale"}
            q = array(stored[name], "I8", shape)
            blocks = (count + 255) // 256
            s = array(stored[name + "#scale"], "F32", [blocks])
            if not np.all(np.isfinite(s)) or np.any(s < 0):
                raise SystemExit(f"{name}: a scale is not finite or negative")
            if np.any(q == -128):
                raise SystemExit(f"{name}: -128")
            x = q.astype(np.float32) * np.repeat(s, 256)[:count]
        elif codec == "topk":
            expected |= {name + "#indices", name + "#values"}
            k = stored[name + "#indices"][1][0]
            i = array(stored[name + "#indices"], "I32", [k]).astype(np.int64)
            v = array(stored[name + "#values"], "F16", [k]).astype(np.float32)
            if not (1 <= k <= count) or np.any(np.diff(i) <= 0) or i[0] < 0 or i[-1] >= count:
                raise SystemExit(f"{name}: indices out of order or range")
            x = np.zeros(count, np.float32)
            x[i] = v
        else:
            raise SystemExit(f"unknown codec {codec}")
        if not np.all(np.isfinite(x)):
            raise SystemExit(f"{name}: not finite")
        yield x.astype("<f4").tobytes()
    if set(stored) != expected:
        raise SystemExit(f"stored tensors {sorted(stored)} are not {sorted(expected)}")


def main():
    codec, shapes, stored_path, out = sys.argv[1:5]
    shapes = json.load(open(shapes))
    stored = read_safetensors(stored_path)
    data = b"".join(decode(codec, shapes, stored))
    open(out, "wb").write(data)


if __name__ == "__main__":
    main()
