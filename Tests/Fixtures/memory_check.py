"""Checks a generation of a merge with memory (fedbatch-merge(1), MEMORY)
against numpy, bit for bit, by redoing the exact sums in Python integers.

usage: memory_check.py CASE.json
CASE.json: {"base": B.safetensors, "result": R.safetensors, "a": float,
            "updates": [{"delta": D.safetensors, "examples": n, "staleness": s}, ...]}

The rule, fresh and remembered updates alike: each term is the float64
product (n * w(s)) * delta with w(s) = (1 + s)^-a, truncated toward zero to
a count of 2^-63; the counts are added exactly; the sum is rounded to
float64 once, scaled by 1 / sum(n), added to the base in float64 and
rounded to float32. Prints the number of elements that differ and exits 1
if any does.
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file

case = json.load(open(sys.argv[1]))
a = case["a"]
base = load_file(case["base"])
result = load_file(case["result"])
updates = [(load_file(u["delta"]), u["examples"], u["staleness"]) for u in case["updates"]]
total = float(sum(n for _, n, _ in updates))
scale = 1.0 / total
differ = 0
for name, b in base.items():
    flat_b = b.astype(np.float64).ravel()
    sums = [0] * flat_b.size
    for d, n, s in updates:
        factor = float(n) * (1.0 if s == 0 else math.pow(1.0 + s, -a))
        terms = factor * d[name].astype(np.float64).ravel()
        for i, t in enumerate(terms):
            sums[i] += int(float(t) * 2.0**63)
    expected = np.array(
        [np.float32(flat_b[i] + scale * (sums[i] / 2**63)) for i in range(flat_b.size)], dtype=np.float32)
    got = result[name].ravel()
    differ += int(np.sum(expected.view(np.uint32) != got.view(np.uint32)))
print(f"{differ} elements differ")
sys.exit(1 if differ else 0)
