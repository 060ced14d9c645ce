#!/usr/bin/env bash
# Training throughput and accuracy: fedbatch against PyTorch, in one run.
#
# A one-site federation (collector + site with throw-away keys) trains the
# MLP 784-256-128-10 on the Fashion-MNIST training set, batch 64, SGD lr 0.05
# momentum 0.9, evaluating on the test set after every epoch; PyTorch trains
# the same model the same way with 2 threads. Prints a Markdown report.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fb="$root/.build/release/fedbatch"
py="$root/.venv-bench/bin/python"
data=/usr/share/datasets/fashion-mnist
epochs=${EPOCHS:-10}
work=$(mktemp -d /tmp/fb-bench-XXXXXX)
export GNUPGHOME="$work/g"
mkdir -m 700 "$GNUPGHOME"
trap 'gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null || true; rm -rf "$work"' EXIT

gpg --batch --passphrase '' --quick-gen-key 'collector <c@bench>' ed25519 sign 0 2>/dev/null
gpg --batch --passphrase '' --quick-gen-key 'site-1 <s@bench>' ed25519 sign 0 2>/dev/null
fpr() { gpg --with-colons --list-keys "$1" | awk -F: '/^fpr/{print $10; exit}'; }
"$fb" init collector --home "$work/col" --model-id fmnist --arch mlp:784-256-128-10 --key "$(fpr c@bench)" -q
"$fb" init site --home "$work/site" --site-id site-1 --key "$(fpr s@bench)" \
    --collector-key "$work/col/keys/collector.asc" --model-id fmnist -q
cp "$work/col/generations/g000000.fbg" "$work/site/generations/"

"$fb" train --home "$work/site" --data "$data" --epochs "$epochs" --eval-data "$data" --json > "$work/fedbatch.json"
"$py" "$root/bench/pytorch_train.py" "$data" "$epochs" 2 > "$work/torch.jsonl"

"$py" - "$work/fedbatch.json" "$work/torch.jsonl" <<'PY'
import json, sys, statistics
fb = json.loads(open(sys.argv[1]).read().splitlines()[-1])  # the summary line (fedbatch-json(7))
pt = [json.loads(l) for l in open(sys.argv[2])]
fbs = [e["examples_per_second"] for e in fb["epochs"]]
pts = [e["samples_per_s"] for e in pt]
print(f"backend: {fb['backend']}; reference: torch {pt[0]['torch']}, {pt[0]['threads']} threads\n")
print("| epoch | fedbatch samples/s | PyTorch samples/s | fedbatch test acc | PyTorch test acc |")
print("|---|---|---|---|---|")
for a, b in zip(fb["epochs"], pt):
    print(f"| {a['epoch']} | {a['examples_per_second']:.0f} | {b['samples_per_s']:.0f} | {a['eval_accuracy']:.4f} | {b['test_accuracy']:.4f} |")
print(f"\nmedian throughput: fedbatch {statistics.median(fbs):.0f}/s, PyTorch {statistics.median(pts):.0f}/s, ratio {statistics.median(fbs)/statistics.median(pts):.2f}x")
best = max(e["eval_accuracy"] for e in fb["epochs"])
first = next(e["epoch"] for e in fb["epochs"] if e["eval_accuracy"] >= 0.87) if best >= 0.87 else None
print(f"fedbatch best test accuracy {best:.4f}; first epoch at >= 0.87: {first}")
PY
