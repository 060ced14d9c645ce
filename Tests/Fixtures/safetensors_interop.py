"""Safetensors interop checks driven by the Swift tests.

write DIR   write one file per dtype with numpy + safetensors, plus a JSON
            index of each tensor's dtype, shape and raw little-endian bytes
read FILE   load FILE with safetensors.numpy and print the same JSON index
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

DTYPES = {
    "F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8,
    "I32": np.int32, "I64": np.int64,
}


def index(tensors):
    out = {}
    for name, arr in tensors.items():
        if arr.dtype.name == "bfloat16" or str(arr.dtype) == "bfloat16":
            dtype = "BF16"
        else:
            dtype = {np.dtype(v): k for k, v in DTYPES.items()}[arr.dtype]
        out[name] = {"dtype": dtype, "shape": list(arr.shape),
                     "hex": np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes().hex()}
    return out


def write(directory):
    rng = np.random.default_rng(7)
    files = {}
    for code, dt in DTYPES.items():
        if np.issubdtype(dt, np.floating):
            a = (rng.standard_normal((3, 5)) * 100).astype(dt)
            a[0, 0] = -0.0
            a[0, 1] = np.finfo(dt).max
            a[0, 2] = np.finfo(dt).tiny  # smallest normal
        else:
            info = np.iinfo(dt)
            a = rng.integers(info.min, info.max, size=(3, 5), dtype=dt, endpoint=True)
            a[0, 0], a[0, 1] = info.min, info.max
        tensors = {"weight": a, "bias": a[1].copy(), "scalar": np.array(a[2, 3]), "empty": np.zeros((0, 4), dtype=dt)}
        path = f"{directory}/{code}.safetensors"
        save_file(tensors, path, metadata={"dtype": code})
        files[code] = {"path": path, "tensors": index(tensors)}
    # BF16: numpy has no bfloat16, so build the raw file with torch-free bytes:
    # bfloat16 values are the top 16 bits of float32 values.
    f32 = (rng.standard_normal(12) * 10).astype(np.float32)
    bf16_bits = (f32.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"x": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 24]}}).encode()
    header += b" " * (-(8 + len(header)) % 8)
    path = f"{directory}/BF16.safetensors"
    with open(path, "wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header + bf16_bits.astype("<u2").tobytes())
    files["BF16"] = {"path": path, "tensors": {"x": {"dtype": "BF16", "shape": [3, 4], "hex": bf16_bits.astype("<u2").tobytes().hex()}}}
    print(json.dumps(files))


def read(path):
    # safetensors.numpy cannot materialise BF16; read it through safe_open's raw bytes.
    from safetensors import safe_open
    out = {}
    with safe_open(path, framework="numpy") as fh:
        meta = fh.metadata() or {}
        for name in fh.keys():
            try:
                out.update(index({name: fh.get_tensor(name)}))
            except (TypeError, ValueError):
                # numpy has no bfloat16: safe_open accepted the header, so take
                # the raw bytes at the offsets it validated.
                sl = fh.get_slice(name)
                with open(path, "rb") as raw:
                    n = int.from_bytes(raw.read(8), "little")
                    begin, end = json.loads(raw.read(n))[name]["data_offsets"]
                    raw.seek(8 + n + begin)
                    data = raw.read(end - begin)
                out[name] = {"dtype": sl.get_dtype(), "shape": list(sl.get_shape()), "hex": data.hex()}
    print(json.dumps({"metadata": meta, "tensors": out}))


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](sys.argv[2])
