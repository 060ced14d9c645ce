"""Trains the same model with PyTorch, as a reference for fedbatch's trainer.

    torch_reference.py ARCH START DATA OUT OPTIONS_JSON

START: initial weights (safetensors, PyTorch names); DATA: a shard with x
(F32 [N, D]) and y (I64 [N]); OPTIONS_JSON: {"optimizer": "sgd"|"adam",
"lr", "momentum", "weight_decay", "epochs", "prox_mu"}. Full-batch steps,
so the example order does not matter. Writes the trained weights to OUT.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pytorch"))
from train import build  # noqa: E402

arch, start, data, out, options = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
model = build(arch)
model.load_state_dict(load_file(start), strict=True)
anchor = [p.detach().clone() for p in model.parameters()]
d = load_file(data)
x, y = d["x"], d["y"]
if options["optimizer"] == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"])
else:
    opt = torch.optim.Adam(model.parameters(), lr=options["lr"], weight_decay=options["weight_decay"])
for _ in range(options["epochs"]):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if options.get("prox_mu", 0) > 0:
        loss = loss + options["prox_mu"] / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
    loss.backward()
    opt.step()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
