"""Epsilon from Google's dp-accounting for composed Gaussian mechanisms.

usage: dp_accounting_oracle.py CASES.json
CASES.json: [{"noise_multipliers": [z1, z2, ...], "delta": d}, ...]: each
case composes one Gaussian mechanism per listed multiplier, without
subsampling (every site takes part in every generation). Prints a JSON list
of epsilons, one per case, computed by dp_accounting.rdp.RdpAccountant with
its default orders.
"""
import json
import sys

import dp_accounting

out = []
for case in json.load(open(sys.argv[1])):
    accountant = dp_accounting.rdp.RdpAccountant()
    for z in case["noise_multipliers"]:
        accountant.compose(dp_accounting.GaussianDpEvent(z))
    out.append(accountant.get_epsilon(case["delta"]))
print(json.dumps(out))
