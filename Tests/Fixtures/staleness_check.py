"""Checks a staleness-aware FedAvg merge against numpy.

usage: staleness_check.py CASE.json
CASE.json: {"base": B.safetensors, "result": R.safetensors, "a": float,
            "function": "polynomial"|"hinge"|"constant", "b": float,
            "updates": [{"delta": D.safetensors, "examples": n, "staleness": s}, ...]}

The rule of fedbatch-merge(1): new = base + sum(n_i * w(s_i) * c_i * delta_i) / sum(n_i),
in float64, rounded to float32 once; c_i = min(1, clip_norm / |delta_i|) when
the case gives "clip_norm" (the L2 norm over all tensors), else 1. Prints the largest relative error and
exits 1 if any element is off by more than 1e-6 relative.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file

case = json.load(open(sys.argv[1]))
a, b, kind = case["a"], case.get("b", 0.0), case["function"]


def w(s):
    if kind == "constant":
        return 1.0
    if kind == "polynomial":
        return (1.0 + s) ** (-a)
    return 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)


base = load_file(case["base"])
result = load_file(case["result"])
clip = case.get("clip_norm")


def clip_factor(d):
    if clip is None:
        return 1.0
    norm = np.sqrt(sum(float(np.sum(t.astype(np.float64) ** 2)) for t in d.values()))
    return min(1.0, clip / norm) if norm > 0 else 1.0


deltas = []
for u in case["updates"]:
    d = load_file(u["delta"])
    deltas.append((d, u["examples"], w(u["staleness"]) * clip_factor(d)))
total = sum(n for _, n, _ in deltas)
worst = 0.0
for name, t in base.items():
    acc = np.zeros(t.shape, dtype=np.float64)
    for d, n, factor in deltas:
        acc += n * factor * d[name].astype(np.float64)
    expected = (t.astype(np.float64) + acc / total).astype(np.float32)
    got = result[name]
    rel = np.abs(got.astype(np.float64) - expected) / np.maximum(np.abs(expected), 1e-12)
    worst = max(worst, float(rel.max()))
print(f"max relative error {worst:.3e}")
sys.exit(0 if worst <= 1e-6 else 1)
