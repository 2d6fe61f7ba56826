"""Benchmark: how good a model the default recipe trains on Fashion-MNIST in a fixed time, against
Pyro's own VAE example trained in the same run for the same time.

Both train on the 60,000 Fashion-MNIST training images, binarized afresh in every minibatch, for
the same wall-clock budget (whole epochs, none started that would end after the budget, judged
by the mean epoch time so far):

- pyro_vae: the default recipe (``pyro_vae.Config()``: 784-400-50 MLP, TraceMeanField_ELBO, Adam,
  batch 128) through :func:`pyro_vae.fit` (``time_limit=``);
- the peer: Pyro's VAE example (``_peer.py``: 784-400-50, batch 256, ``pyro.optim.Adam`` at lr
  1e-3, ``SVI`` with ``Trace_ELBO``), its minibatches drawn the same way.

Then the same first 1,000 test images (binarized once with the data set's fixed seed) are scored
under both models by the same code (the peer goes through the program door like any model
file): the importance-sampled log p(x) with K=1000, in nats per image, and the paired
difference per image with its standard error.

Target (issue 18): pyro_vae at least 5 nats above the peer.

Usage: ``python benchmarks/quality_at_budget.py [SECONDS]`` (default 150). Prints one JSON object.
With ``CI`` set (the test suite's smoke run): mnist-small, a 3-second budget, K=10.
"""

import json
import math
import os
import sys
import time

import _peer
import torch
from _machine import machine

import pyro_vae
from pyro_vae import evaluate
from pyro_vae.program import Program

smoke_test = "CI" in os.environ
DATASET = "mnist-small" if smoke_test else "fashion-mnist"
BUDGET = 3.0 if smoke_test else float(sys.argv[1]) if len(sys.argv) > 1 else 150.0
TEST_IMAGES, K = (100, 10) if smoke_test else (1000, 1000)
TARGET_NATS = 5.0


def train_ours(data, config):
    torch.manual_seed(0)
    model, guide = pyro_vae.build(config, data.x_shape)
    start = time.perf_counter()
    history = pyro_vae.fit(
        model,
        guide,
        data,
        config.make_elbo(),
        epochs=10_000,
        batch_size=config.batch_size,
        lr=config.lr,
        test_samples=0,
        quiet=True,
        time_limit=BUDGET,
    )
    return model, guide, len(history.epoch), time.perf_counter() - start


def train_peer(data):
    """Pyro's example's loop: ``svi.step`` on each minibatch, epoch after epoch, under the same
    time rule as ``fit(time_limit=...)``."""
    torch.manual_seed(0)
    vae = _peer.PeerVAE(x_dim=math.prod(data.x_shape))
    svi = _peer.peer_svi(vae)
    generator = torch.Generator().manual_seed(0)
    n, epochs = data.train_x.shape[0], 0
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if epochs and elapsed + elapsed / epochs > BUDGET:
            break
        order = torch.randperm(n, generator=generator)
        for x, _, _ in data.batches(_peer.BATCH_SIZE, generator, order=order):
            svi.step(x)
        epochs += 1
    seconds = time.perf_counter() - start
    # Through the program door, so the same evaluation code scores it.
    program = Program(vae.model, vae.guide, data.test_x[:4], owner=vae)
    return program.model, program.guide, epochs, seconds


def score(model, guide, x):
    model.eval(), guide.eval()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        return evaluate.log_px(model, guide, x, num_samples=K)


def main():
    try:
        data = pyro_vae.load_dataset(DATASET, binarize="dynamic")
    except pyro_vae.PyroVAEError as e:
        sys.exit(f"quality_at_budget benchmark: {e}")
    config = pyro_vae.Config()
    x = data.test_x[:TEST_IMAGES]
    ours = train_ours(data, config)
    load_ours = os.getloadavg()[0]
    peer = train_peer(data)
    load_peer = os.getloadavg()[0]
    ours_lp, peer_lp = score(*ours[:2], x), score(*peer[:2], x)
    diff = ours_lp - peer_lp
    gap = diff.mean().item()
    stderr = diff.std().item() / math.sqrt(x.shape[0])

    def summary(epochs, seconds, lp):
        return {
            "epochs": epochs,
            "train_seconds": round(seconds, 1),
            "test_log_px": round(lp.mean().item(), 2),
            "test_log_px_stderr": round(lp.std().item() / math.sqrt(x.shape[0]), 2),
        }

    result = {
        "benchmark": "quality_at_budget",
        "dataset": DATASET,
        "budget_seconds": BUDGET,
        "test_images": x.shape[0],
        "log_px_samples": K,
        "pyro_vae": {
            "recipe": {
                "net": config.net,
                "hidden_dims": list(config.hidden_dims),
                "z_dim": config.z_dim,
                "elbo": config.elbo,
                "batch_size": config.batch_size,
                "lr": config.lr,
            },
            **summary(ours[2], ours[3], ours_lp),
            "load_average": round(load_ours, 2),
        },
        "peer": {
            "recipe": "Pyro's VAE example: 784-400-50, Trace_ELBO, pyro.optim.Adam lr 1e-3, "
            f"batch {_peer.BATCH_SIZE}",
            **summary(peer[2], peer[3], peer_lp),
            "load_average": round(load_peer, 2),
        },
        "log_px_difference": round(gap, 2),
        "log_px_difference_stderr": round(stderr, 2),
        "target": {"log_px_difference_min": TARGET_NATS},
        "target_met": gap >= TARGET_NATS,
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
