"""Reference for `make bench`: PyTorch CPU training of the same MLP.

    pytorch_train.py DATA_DIR EPOCHS [THREADS]

Trains nn.Sequential(784-256-128-10 with ReLU) on the Fashion-MNIST training
set from Debian's IDX files, batch 64, SGD lr 0.05 momentum 0.9, shuffled
each epoch, and prints one JSON line per epoch with samples/s, the training
loss and the test accuracy.
"""
import gzip
import json
import sys
import time

import numpy as np
import torch


def idx(path):
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(directory, split):
    prefix = "train" if split == "train" else "t10k"
    x = idx(f"{directory}/{prefix}-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    y = idx(f"{directory}/{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def main():
    directory, epochs = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    xtr, ytr = load(directory, "train")
    xte, yte = load(directory, "test")
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = xtr.shape[0]
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n)
        start = time.perf_counter()
        total = 0.0
        for i in range(0, n, 64):
            idx_ = perm[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx_]), ytr[idx_])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx_)
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(json.dumps({"epoch": epoch, "samples_per_s": n / elapsed, "seconds": elapsed,
                          "loss": total / n, "test_accuracy": acc, "torch": torch.__version__, "threads": threads}), flush=True)


if __name__ == "__main__":
    main()
