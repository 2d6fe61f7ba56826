"""Benchmark: one epoch of Fashion-MNIST (60,000 images) end to end, data loading included.

Loads the data set as ``pyro-vae train --dataset fashion-mnist --binarize dynamic`` does (the
images stay in memory as one tensor; each minibatch is gathered by index and binarized on the fly),
then trains one epoch of the default recipe with :func:`pyro_vae.fit`. To show that data loading
does not dominate, it also times one pass over the minibatches alone (gather + binarize, no model).

Prints one JSON object. Needs Fashion-MNIST: torchvision downloads it, or Debian's
``dataset-fashion-mnist`` package provides it offline (``.ci/run`` installs it).
With ``CI`` set (the test suite's smoke run) it uses the embedded mnist-small instead.
"""

import json
import os
import sys
import time

import torch
from _machine import machine

import pyro_vae

smoke_test = "CI" in os.environ
DATASET = "mnist-small" if smoke_test else "fashion-mnist"
BATCH_SIZE = 128


def main():
    start = time.perf_counter()
    try:
        data = pyro_vae.load_dataset(DATASET, binarize="dynamic")
    except pyro_vae.PyroVAEError as e:
        sys.exit(f"epoch benchmark: {e}")
    load_seconds = time.perf_counter() - start
    n = data.train_x.shape[0]

    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in data.batches(BATCH_SIZE, generator):
        pass
    batch_seconds = time.perf_counter() - start

    config = pyro_vae.Config(batch_size=BATCH_SIZE)
    model, guide = pyro_vae.build(config, data.x_shape)
    start = time.perf_counter()
    pyro_vae.fit(
        model,
        guide,
        data,
        config.make_elbo(),
        epochs=1,
        batch_size=BATCH_SIZE,
        test_samples=0,
        quiet=True,
    )
    epoch_seconds = time.perf_counter() - start
    result = {
        "benchmark": "epoch",
        "dataset": DATASET,
        "train_images": n,
        "batch_size": BATCH_SIZE,
        "model": {
            "net": config.net,
            "hidden_dims": list(config.hidden_dims),
            "z_dim": config.z_dim,
        },
        "load_seconds": round(load_seconds, 2),
        "epoch_seconds": round(epoch_seconds, 2),
        "images_per_second": round(n / epoch_seconds),
        "batching_seconds": round(batch_seconds, 3),
        "batching_share_of_epoch": round(batch_seconds / epoch_seconds, 4),
        "machine": {**machine(), "load_average": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
