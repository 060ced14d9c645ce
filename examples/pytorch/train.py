#!/usr/bin/env python3
"""Train a fedbatch generation with PyTorch, then hand the weights to fedbatch.

fedbatch does the packaging, signing and aggregation; training happens here,
in ordinary PyTorch. One round at a site:

    fedbatch export generations/g000007.fbg --out start.safetensors
    python3 train.py --start start.safetensors --arch mlp:784-256-128-10 \\
        --data shard.safetensors --epochs 1 --out trained.safetensors --pack

--data is a safetensors file with x [N, D] (uint8 pixels or float32) and y
[N] (integer labels), as `fedbatch data split` writes. With --pack, the
script runs `fedbatch pack` itself (in the current fedbatch home, or
$FEDBATCH_HOME), which verifies the base generation again, checks the
weights' names and shapes, and writes the signed update to outbox/.

As a command trainer no glue is needed: with

    [training]
    data = "shard.safetensors"
    command = "python3 /path/to/train.py --epochs 1"

`fedbatch train` exports the generation, runs this script with
FEDBATCH_START, FEDBATCH_OUT, FEDBATCH_RESULT, FEDBATCH_DATA and
FEDBATCH_SEED set (they stand in for --start, --out, --data and --seed; the
architecture comes from the start file's metadata), and packs what it
leaves against the generation it exported. A site's cron line is then
`fedbatch train -q && fedbatch push -q`.
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def build(arch):
    """nn.Sequential for fedbatch's mlp:/softmax: specs, with PyTorch's names."""
    kind, widths = arch.split(":")
    widths = [int(w) for w in widths.split("-")]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    p.add_argument("--start", default=env("FEDBATCH_START"), help="weights exported by `fedbatch export`")
    p.add_argument("--arch", help="the generation's architecture, e.g. mlp:784-256-128-10 "
                   "(default: the start file's fedbatch_arch)")
    p.add_argument("--data", default=env("FEDBATCH_DATA"), help="safetensors shard with x and y")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=int(env("FEDBATCH_SEED", "0")))
    p.add_argument("--out", default=env("FEDBATCH_OUT"), help="where to save the trained weights")
    p.add_argument("--result", default=env("FEDBATCH_RESULT"),
                   help="where to write {\"num_examples\": N, \"metrics\": {...}} for fedbatch train")
    p.add_argument("--pack", action="store_true", help="run `fedbatch pack` on the result")
    p.add_argument("--fedbatch", default="fedbatch", help="the fedbatch binary")
    args = p.parse_args()
    for name in ("start", "data", "out"):
        if getattr(args, name) is None:
            p.error(f"--{name} is required (or run me from fedbatch train, which sets FEDBATCH_{name.upper()})")

    with safe_open(args.start, framework="pt") as f:
        metadata = f.metadata() or {}
    arch = args.arch or metadata.get("fedbatch_arch")
    if arch is None:
        p.error("--arch is required: the start file has no fedbatch_arch metadata")
    torch.manual_seed(args.seed)
    model = build(arch)
    model.load_state_dict(load_file(args.start), strict=True)
    data = load_file(args.data)
    x = data["x"].float()
    if data["x"].dtype == torch.uint8:
        x = x / 255.0
    y = data["y"].long()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    n = x.shape[0]
    for epoch in range(args.epochs):
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, args.batch_size):
            idx = perm[i:i + args.batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: loss {total / n:.4f}", file=sys.stderr)

    # state_dict() names match fedbatch's tensors: 0.weight, 0.bias, 2.weight, ...
    # The start file's metadata (fedbatch_generation, fedbatch_digest) is
    # kept: it tells `fedbatch pack` which generation training started
    # from, whatever generation has arrived since.
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out, metadata=metadata)
    if args.result:
        with open(args.result, "w") as f:
            json.dump({"num_examples": n, "metrics": {"loss": total / n}}, f)
    if args.pack:
        subprocess.run([args.fedbatch, "pack", "--weights", args.out, "--num-examples", str(n),
                        "--metric", f"loss={total / n}"], check=True)


if __name__ == "__main__":
    main()
