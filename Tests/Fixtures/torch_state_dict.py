"""A small PyTorch CNN with BatchNorm for the any-model tests.

usage: torch_state_dict.py make DIR
         writes DIR/init.safetensors and DIR/site{0,1,2}.safetensors: the
         initial state_dict, and three sites' state_dicts after a few steps
         of training on random data (different seeds, so different weights,
         BatchNorm running statistics and num_batches_tracked counts), and
         DIR/site0-f16.safetensors with one weight in float16
       torch_state_dict.py check DIR RESULT N0 N1 N2
         checks RESULT (a merged generation, exported) against numpy FedAvg
         of the sites with example counts N0..N2: every floating tensor to
         1e-6 relative, every integer tensor = the largest site value (the
         rule of fedbatch-merge(1)), dtypes kept; then loads it into the
         model with load_state_dict(strict=True).
"""
import sys

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10))


def state(m):
    return {k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}


if sys.argv[1] == "make":
    out = sys.argv[2]
    m = model()
    save_file(state(m), f"{out}/init.safetensors")
    for site, steps in enumerate([3, 5, 4]):
        s = model()
        torch.manual_seed(100 + site)
        opt = torch.optim.SGD(s.parameters(), lr=0.1)
        for _ in range(steps):
            x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
            loss = torch.nn.functional.cross_entropy(s(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sd = state(s)
        save_file(sd, f"{out}/site{site}.safetensors")
        if site == 0:
            bad = dict(sd)
            bad["0.weight"] = bad["0.weight"].half()
            save_file(bad, f"{out}/site0-f16.safetensors")
    sys.exit(0)

out, result = sys.argv[2], sys.argv[3]
counts = [int(n) for n in sys.argv[4:7]]
base = load_file(f"{out}/init.safetensors")
sites = [load_file(f"{out}/site{i}.safetensors") for i in range(3)]
got = load_file(result)
problems = []
if set(got) != set(base):
    problems.append(f"tensor names differ: {sorted(set(got) ^ set(base))}")
for name, b in base.items():
    g = got.get(name)
    if g is None:
        continue
    if g.dtype != b.dtype or g.shape != b.shape:
        problems.append(f"{name}: {g.dtype}{g.shape}, expected {b.dtype}{b.shape}")
        continue
    if np.issubdtype(b.dtype, np.integer):
        expected = np.max(np.stack([s[name] for s in sites]), axis=0)
        if not np.array_equal(g, expected):
            problems.append(f"{name}: {g.tolist()}, expected the largest site value {expected.tolist()}")
        continue
    acc = sum(n * (s[name].astype(np.float64) - b.astype(np.float64)) for n, s in zip(counts, sites))
    expected = (b.astype(np.float64) + acc / sum(counts)).astype(np.float32)
    if not np.allclose(g, expected, rtol=1e-6, atol=1e-7):
        problems.append(f"{name}: max difference {np.max(np.abs(g - expected)):.3e}")
m = model()
from safetensors.torch import load_file as torch_load
m.load_state_dict(torch_load(result), strict=True)
if m[1].num_batches_tracked.dtype != torch.int64:
    problems.append("num_batches_tracked is not int64 after loading")
for p in problems:
    print(p)
print(f"{len(base)} tensors checked")
sys.exit(1 if problems else 0)
