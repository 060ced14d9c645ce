"""Writes scikit-learn's breast-cancer table (569 patients, 30 numeric
features; it ships inside scikit-learn) the way a hospital's export looks:
every field quoted by Python's csv module, a patient id column, text labels,
and a few blank cells. 30% of the rows, stratified, are the collector's
held-out test table; the rest are split over the sites with a Dirichlet
label skew, each site keeping at least MIN_ROWS rows.

usage: prepare.py OUT_DIR SITES ALPHA SEED BLANK_FRACTION MIN_ROWS
writes OUT_DIR/test.csv and OUT_DIR/site-K.csv (K = 1..SITES), and prints
each site's rows and label counts.
"""
import csv
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

out, sites, alpha, seed, blanks, min_rows = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), \
    float(sys.argv[5]), int(sys.argv[6])
data = load_breast_cancer()
names = list(data.target_names)  # malignant, benign
x, y = data.data, data.target
ids = np.array([f"P-{i:04d}" for i in range(len(y))])
rng = np.random.default_rng(seed)
train, test = train_test_split(np.arange(len(y)), test_size=0.3, random_state=seed, stratify=y)


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(["patient id"] + list(data.feature_names) + ["diagnosis"])
        for i in rows:
            cells = ["" if rng.random() < blanks else repr(float(v)) for v in x[i]]
            w.writerow([ids[i]] + cells + [names[y[i]]])


write(f"{out}/test.csv", test)
# Dirichlet label skew: each class's rows are dealt to the sites in
# proportions drawn from Dir(alpha), redrawn until every site has MIN_ROWS.
for _ in range(1000):
    parts = [[] for _ in range(sites)]
    for c in np.unique(y[train]):
        rows = rng.permutation(train[y[train] == c])
        cuts = (np.cumsum(rng.dirichlet([alpha] * sites)) * len(rows)).astype(int)[:-1]
        for k, chunk in enumerate(np.split(rows, cuts)):
            parts[k] += list(chunk)
    if min(len(p) for p in parts) >= min_rows:
        break
else:
    sys.exit(f"no split with {min_rows} rows per site in 1000 draws; raise ALPHA")
for k, p in enumerate(parts, 1):
    write(f"{out}/site-{k}.csv", sorted(p))
    counts = {names[c]: int((y[p] == c).sum()) for c in (1, 0)}
    print(f"site-{k}: {len(p)} rows, {counts}")
