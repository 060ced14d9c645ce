"""Checks fedbatch's diloco generations against PyTorch's own outer optimiser.

usage: diloco_oracle.py CASE.json   (the CASE of flower_oracle.py)
DiLoCo's outer step is torch.optim.SGD(lr, momentum, nesterov=True) on the
outer gradient, the old weights minus the FedAvg of the sites' weights.
Each round this sets p.grad = -(sum n_i delta_i / sum n_i) and steps, then
compares with fedbatch's generation: 1e-6 relative plus 1e-8 absolute.
"""
import json
import sys

import torch
from safetensors.torch import load_file

case = json.load(open(sys.argv[1]))
p = case["params"]
initial = load_file(case["initial"])
names = sorted(initial)
params = [torch.nn.Parameter(initial[n].double().clone()) for n in names]
opt = torch.optim.SGD(params, lr=p["server_lr"], momentum=p["momentum"], nesterov=True)
bad = False
for r, rnd in enumerate(case["rounds"], start=1):
    total = sum(u["examples"] for u in rnd["updates"])
    deltas = [(load_file(u["delta"]), u["examples"]) for u in rnd["updates"]]
    for param, n in zip(params, names):
        param.grad = -sum(d[n].double() * k for d, k in deltas) / total
    opt.step()
    got = load_file(rnd["result"])
    worst, ok = 0.0, True
    for param, n in zip(params, names):
        want = param.detach()
        diff = (got[n].double() - want).abs()
        ok = ok and bool((diff <= 1e-6 * want.abs() + 1e-8).all())
        worst = max(worst, float((diff / want.abs().clamp_min(1e-30)).max()))
    print(f"round {r}: max relative error {worst:.3e}, {'within' if ok else 'NOT within'} 1e-6 relative + 1e-8 absolute")
    bad = bad or not ok
sys.exit(1 if bad else 0)
