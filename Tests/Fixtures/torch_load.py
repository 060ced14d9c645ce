"""Loads a fedbatch export into the matching torch nn.Sequential.

    torch_load.py WEIGHTS ARCH

ARCH is fedbatch's spec (mlp:4-3-2). Builds nn.Sequential(Linear, ReLU, ...,
Linear), calls load_state_dict(strict=True), and prints JSON with the
state_dict's names, shapes and a checksum of the values, and the output of
the model on a fixed input.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

# The same spec-to-nn.Sequential mapping the PyTorch example ships.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pytorch"))
from train import build  # noqa: E402

model = build(sys.argv[2])
width = int(sys.argv[2].split(":")[1].split("-")[0])
result = model.load_state_dict(load_file(sys.argv[1]), strict=True)
state = model.state_dict()
x = torch.linspace(-1, 1, width).unsqueeze(0)
print(json.dumps({
    "missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
    "names": list(state.keys()), "shapes": [list(v.shape) for v in state.values()],
    "sum": float(sum(v.double().sum() for v in state.values())),
    "output": model(x).detach().double().tolist()[0],
}))
