"""Runs Flower's server strategies on the same updates fedbatch merged, and
compares every generation.

usage: flower_oracle.py CASE.json
CASE.json: {"strategy": "fedavgm"|"fedadam"|"fedyogi"|"fedadagrad"
                        |"median"|"trimmed-mean"|"krum"|"multikrum"|"bulyan",
            "params": {"server_lr": ..., "momentum"|"beta1"|"beta2"|"tau"
                       |"trim"|"byzantine"|"keep": ...},
            "initial": g0.safetensors,
            "rounds": [{"updates": [{"delta": D.safetensors, "examples": n}, ...],
                        "result": gN.safetensors}, ...]}
Each round, every client's weights are Flower's current weights plus its
delta (the delta fedbatch's bundle carried); Flower's strategy class
aggregates them, in float64. The robust rules have no state, and run
through Flower's aggregate functions (aggregate_median, aggregate_trimmed_avg,
aggregate_krum, aggregate_bulyan) on the updates in the order given, which
is the order fedbatch summed them in (by digest): Krum breaks ties by it. Prints the largest relative error per round
and exits 1 if any element is off by more than 1e-6 relative plus 1e-8
absolute: fedbatch stores each generation in float32, whose rounding of a
weight near 0.1 alone is about 4e-9, which relative to a value that happens
to sit near zero is far above 1e-6.
"""
import json
import sys

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi
from flwr.server.strategy.aggregate import aggregate_bulyan, aggregate_krum, aggregate_median, aggregate_trimmed_avg
from safetensors.numpy import load_file

case = json.load(open(sys.argv[1]))
initial = load_file(case["initial"])
names = sorted(initial)
current = [initial[n].astype(np.float64) for n in names]
p = case["params"]
start = ndarrays_to_parameters(current)
name = case["strategy"]
if name == "fedavgm":
    strategy = FedAvgM(initial_parameters=start, server_learning_rate=p["server_lr"], server_momentum=p["momentum"])
elif name == "fedadam":
    strategy = FedAdam(initial_parameters=start, eta=p["server_lr"], beta_1=p["beta1"], beta_2=p["beta2"], tau=p["tau"])
elif name == "fedyogi":
    strategy = FedYogi(initial_parameters=start, eta=p["server_lr"], beta_1=p["beta1"], beta_2=p["beta2"], tau=p["tau"])
elif name == "fedadagrad":
    strategy = FedAdagrad(initial_parameters=start, eta=p["server_lr"], tau=p["tau"])
elif name in ("median", "trimmed-mean", "krum", "multikrum", "bulyan"):
    strategy = None
    f = int(p.get("byzantine", 0))
    if name == "median":
        rule = aggregate_median
    elif name == "trimmed-mean":
        rule = lambda results: aggregate_trimmed_avg(results, p.get("trim", 0.2))
    elif name == "krum":
        rule = lambda results: aggregate_krum(results, f, 0)
    elif name == "multikrum":
        rule = lambda results: aggregate_krum(results, f, int(p.get("keep", 0)) or len(results) - f)
    else:
        rule = lambda results: aggregate_bulyan(results, f, aggregate_krum, to_keep=0)
else:
    sys.exit(f"unknown strategy {name}")

worst_all = False
for r, rnd in enumerate(case["rounds"], start=1):
    results = []
    for u in rnd["updates"]:
        d = load_file(u["delta"])
        weights = [c + d[n].astype(np.float64) for c, n in zip(current, names)]
        results.append((None, FitRes(status=Status(code=Code.OK, message=""), parameters=ndarrays_to_parameters(weights),
                                     num_examples=u["examples"], metrics={})))
    if strategy is None:
        plain = [(parameters_to_ndarrays(fit.parameters), fit.num_examples) for _, fit in results]
        aggregated = rule(plain)
        lr = p.get("server_lr", 1.0)
        current = [c + lr * (a - c) for c, a in zip(current, aggregated)]
    else:
        aggregated, _ = strategy.aggregate_fit(r, results, [])
        current = parameters_to_ndarrays(aggregated)
    got = load_file(rnd["result"])
    worst, ok = 0.0, True
    for c, n in zip(current, names):
        diff = np.abs(got[n].astype(np.float64) - c)
        ok = ok and bool(np.all(diff <= 1e-6 * np.abs(c) + 1e-8))
        worst = max(worst, float((diff / np.maximum(np.abs(c), 1e-30)).max()))
    print(f"round {r}: max relative error {worst:.3e}, {'within' if ok else 'NOT within'} 1e-6 relative + 1e-8 absolute")
    worst_all = worst_all or not ok
sys.exit(1 if worst_all else 0)
