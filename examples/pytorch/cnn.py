#!/usr/bin/env python3
"""A two-convolution CNN with BatchNorm on Fashion-MNIST, federated by fedbatch.

fedbatch knows nothing of this model: `fedbatch init collector --weights
init.safetensors` (without --arch) pins its tensors (names, dtypes, shapes),
sites train it here in PyTorch and hand the result to `fedbatch pack`, and the
collector averages the floating tensors and takes the largest BatchNorm
counter (fedbatch-merge(1)). See federate-cnn.sh for a whole federation.

    cnn.py init  --out init.safetensors [--seed 0]
    cnn.py train --start g.safetensors --data shard.safetensors --out trained.safetensors [--epochs 1]
    cnn.py eval  --weights g.safetensors [--data /usr/share/datasets/fashion-mnist] [--limit N]

As a command trainer (`[training] command = "python3 cnn.py train"`), the
FEDBATCH_START, FEDBATCH_OUT, FEDBATCH_DATA and FEDBATCH_SEED variables that
`fedbatch train` sets stand in for --start, --out, --data and --seed, and
the result goes to FEDBATCH_RESULT as well as to standard output.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def build():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 10))


def state(model):
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def images(x):
    x = x.float()
    if x.max() > 1.5:  # uint8 pixels
        x = x / 255.0
    return x.reshape(-1, 1, 28, 28)


def idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["init", "train", "eval"])
    env = os.environ.get
    p.add_argument("--out", default=env("FEDBATCH_OUT"))
    p.add_argument("--start", default=env("FEDBATCH_START"))
    p.add_argument("--weights")
    p.add_argument("--data", default=env("FEDBATCH_DATA", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--limit", type=int, default=0, help="use only the first N examples")
    p.add_argument("--seed", type=int, default=int(env("FEDBATCH_SEED", "0")))
    p.add_argument("--result", default=env("FEDBATCH_RESULT"), help="where fedbatch train reads the result")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    model = build()

    if a.command == "init":
        save_file(state(model), a.out)
        return
    if a.command == "train":
        model.load_state_dict(load_file(a.start), strict=True)
        shard = load_file(a.data)
        x, y = images(shard["x"]), shard["y"].long()
        if a.limit:
            x, y = x[:a.limit], y[:a.limit]
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
        model.train()
        for _ in range(a.epochs):
            order = torch.randperm(len(y))
            for i in range(0, len(y), a.batch_size):
                batch = order[i:i + a.batch_size]
                loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        # Keep the start file's fedbatch_generation and fedbatch_digest, so
        # that `fedbatch pack` diffs against the generation training began on.
        with safe_open(a.start, framework="pt") as f:
            metadata = f.metadata() or {}
        save_file(state(model), a.out, metadata=metadata)
        print(json.dumps({"examples": len(y), "loss": float(loss)}))
        if a.result:
            with open(a.result, "w") as f:
                json.dump({"num_examples": len(y), "metrics": {"loss": float(loss)}}, f)
        return
    model.load_state_dict(load_file(a.weights), strict=True)
    model.eval()
    x = torch.from_numpy(idx(f"{a.data}/t10k-images-idx3-ubyte.gz").copy())
    y = torch.from_numpy(idx(f"{a.data}/t10k-labels-idx1-ubyte.gz").copy()).long()
    if a.limit:
        x, y = x[:a.limit], y[:a.limit]
    with torch.no_grad():
        correct = sum(int((model(images(x[i:i + 1000])).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    print(json.dumps({"examples": len(y), "accuracy": correct / len(y)}))


if __name__ == "__main__":
    sys.exit(main())
