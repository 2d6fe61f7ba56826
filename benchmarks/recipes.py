"""Benchmark: which training recipe reaches the best test log p(x) in a fixed wall-clock time.

The search behind the default recipe, measured rather than guessed: each candidate (a change to
``pyro_vae.Config()``'s learning rate, its per-epoch decay, the batch size, the ELBO, the
networks, their activation or the training step) trains the VAE on the 60,000 Fashion-MNIST training images,
binarized afresh in every minibatch, through :func:`pyro_vae.fit` with the same ``time_limit``
(whole epochs, none started that would end after it), one after the other, and is then scored on
the same first 1,000 test images (binarized once with the data set's fixed seed) by the
importance-sampled log p(x) with K=1000, in nats per image, with the paired difference from the
first candidate (the default) and its standard error.

Candidates run one after another, so a change of the machine's load between them biases the
comparison: run it with nothing else running (``machine.load_average`` says what it was).

Usage: ``python benchmarks/recipes.py [SECONDS] [RECIPE ...]`` (default 150 s, as
``quality_at_budget.py``; the named recipes only, beside the default; all when none are named).
Prints one JSON object. With ``CI`` set (the test suite's smoke run): mnist-small, a 2-second
budget, 50 test images, K=10, two candidates.
"""

import json
import math
import os
import sys
import time

import torch
from _args import positive
from _machine import machine

import pyro_vae
from pyro_vae import evaluate

smoke_test = "CI" in os.environ
DATASET = "mnist-small" if smoke_test else "fashion-mnist"
BUDGET = 2.0 if smoke_test else positive("recipes", 150.0)
CHOSEN = sys.argv[2:]
TEST_IMAGES, K = (50, 10) if smoke_test else (1000, 1000)

#: Each candidate: its name and the Config fields it changes.
CANDIDATES = [
    ("default", {}),
    ("lr 2e-3, decay 0.96 per epoch", {"lr": 2e-3, "lr_decay": 0.96}),
    ("batch 256, lr 2e-3, decay 0.96", {"batch_size": 256, "lr": 2e-3, "lr_decay": 0.96}),
    ("batch 64", {"batch_size": 64}),
    ("IWAE, K=3", {"elbo": "iwae", "num_particles": 3}),
    ("hidden 1000", {"hidden_dims": (1000,)}),
    ("compiled step", {"step": "compiled"}),
    ("hidden 512,256", {"hidden_dims": (512, 256)}),
    ("lr 2e-3, decay 0.96, compiled", {"lr": 2e-3, "lr_decay": 0.96, "step": "compiled"}),
    ("lr 3e-3, decay 0.92, compiled", {"lr": 3e-3, "lr_decay": 0.92, "step": "compiled"}),
    ("lr 2e-3, decay 0.93, compiled", {"lr": 2e-3, "lr_decay": 0.93, "step": "compiled"}),
    ("relu", {"activation": "relu"}),
    ("elu", {"activation": "elu"}),
    ("leaky-relu", {"activation": "leaky-relu"}),
    ("leaky-relu, lr 2e-3, decay 0.96", {"activation": "leaky-relu", "lr": 2e-3, "lr_decay": 0.96}),
    ("silu, lr 2e-3, decay 0.96", {"activation": "silu", "lr": 2e-3, "lr_decay": 0.96}),
    (
        "leaky-relu, lr 2e-3, decay 0.96, compiled",
        {"activation": "leaky-relu", "lr": 2e-3, "lr_decay": 0.96, "step": "compiled"},
    ),
    (
        "leaky-relu, hidden 256, lr 2e-3, decay 0.96",
        {"activation": "leaky-relu", "hidden_dims": (256,), "lr": 2e-3, "lr_decay": 0.96},
    ),
    (
        "leaky-relu, batch 256, lr 3e-3, decay 0.96",
        {"activation": "leaky-relu", "batch_size": 256, "lr": 3e-3, "lr_decay": 0.96},
    ),
    (
        "leaky-relu, lr 3e-3, decay 0.95",
        {"activation": "leaky-relu", "lr": 3e-3, "lr_decay": 0.95},
    ),
    (
        "leaky-relu, lr 3e-3, decay 0.95, flow guide",
        {"activation": "leaky-relu", "lr": 3e-3, "lr_decay": 0.95, "guide_family": "flow"},
    ),
    (
        "leaky-relu, z 32, lr 3e-3, decay 0.95",
        {"activation": "leaky-relu", "z_dim": 32, "lr": 3e-3, "lr_decay": 0.95},
    ),
    (
        "leaky-relu, hidden 400,400, lr 3e-3, decay 0.95",
        {"activation": "leaky-relu", "hidden_dims": (400, 400), "lr": 3e-3, "lr_decay": 0.95},
    ),
    (
        "leaky-relu, z 32, batch 512, lr 5e-3, decay 0.95",
        {"activation": "leaky-relu", "z_dim": 32, "batch_size": 512, "lr": 5e-3, "lr_decay": 0.95},
    ),
    (
        "leaky-relu, z 32, hidden 600, lr 3e-3, decay 0.95",
        {
            "activation": "leaky-relu",
            "z_dim": 32,
            "hidden_dims": (600,),
            "lr": 3e-3,
            "lr_decay": 0.95,
        },
    ),
    (
        "leaky-relu, z 32, IWAE K=2, lr 3e-3, decay 0.95",
        {
            "activation": "leaky-relu",
            "z_dim": 32,
            "elbo": "iwae",
            "num_particles": 2,
            "lr": 3e-3,
            "lr_decay": 0.95,
        },
    ),
]
if smoke_test:
    CANDIDATES = CANDIDATES[:2]
elif CHOSEN:
    unknown = sorted(set(CHOSEN) - {name for name, _ in CANDIDATES})
    if unknown:
        sys.exit(f"recipes benchmark: no recipe {unknown[0]!r}")
    CANDIDATES = [c for i, c in enumerate(CANDIDATES) if i == 0 or c[0] in CHOSEN]


def run(data, x, changes):
    torch.manual_seed(0)
    config = pyro_vae.Config(**changes)
    model, guide = pyro_vae.build(config, data.x_shape)
    start = time.perf_counter()
    history = pyro_vae.fit(
        model,
        guide,
        data,
        config.make_elbo(),
        test_samples=0,
        quiet=True,
        **{**config.fit_options(), "epochs": 10_000, "time_limit": BUDGET},
    )
    seconds = time.perf_counter() - start
    model.eval(), guide.eval()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        lp = evaluate.log_px(model, guide, x, num_samples=K)
    return len(history.epoch), seconds, lp


def main():
    try:
        data = pyro_vae.load_dataset(DATASET, binarize="dynamic")
    except pyro_vae.PyroVAEError as e:
        sys.exit(f"recipes benchmark: {e}")
    x = data.test_x[:TEST_IMAGES]
    results, first = [], None
    for name, changes in CANDIDATES:
        epochs, seconds, lp = run(data, x, changes)
        first = lp if first is None else first
        diff = lp - first
        results.append(
            {
                "recipe": name,
                "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()},
                "epochs": epochs,
                "train_seconds": round(seconds, 1),
                "test_log_px": round(lp.mean().item(), 2),
                "difference_from_default": round(diff.mean().item(), 2),
                "difference_stderr": round(diff.std().item() / math.sqrt(len(diff)), 2),
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "recipes",
                "dataset": DATASET,
                "budget_seconds": BUDGET,
                "test_images": x.shape[0],
                "log_px_samples": K,
                "candidates": results,
                "machine": {**machine(), "load_average": round(os.getloadavg()[0], 2)},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
