"""Loads a fedbatch export into the matching torch nn.Sequential.

    torch_load.py WEIGHTS ARCH

ARCH is fedbatch's spec (mlp:4-3-2). Builds nn.Sequential(Linear, ReLU, ...,
Linear), calls load_state_dict(strict=True), and prints JSON with the
state_dict's names, shapes and a checksum of the values, and the output of
the model on a fixed input.
"""
import json
import sys

import torch
from safetensors.torch import load_file


def build(spec):
    kind, widths = spec.split(":")
    widths = [int(w) for w in widths.split("-")]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers), widths[0]


model, width = build(sys.argv[2])
result = model.load_state_dict(load_file(sys.argv[1]), strict=True)
state = model.state_dict()
x = torch.linspace(-1, 1, width).unsqueeze(0)
print(json.dumps({
    "missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
    "names": list(state.keys()), "shapes": [list(v.shape) for v in state.values()],
    "sum": float(sum(v.double().sum() for v in state.values())),
    "output": model(x).detach().double().tolist()[0],
}))
