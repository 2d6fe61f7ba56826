"""Benchmark: what each guide family costs per training step and per test image.

For every family of :data:`pyro_vae.families.FAMILIES` (``diag``, ``fullcov``, ``flow``) and a
2-D and a 50-D latent, with the default networks (MLP, 400 hidden units) on binarized digits:

- **training step**: the step :func:`pyro_vae.fit` takes (the ELBO's recorded loss,
  :class:`~pyro_vae.traced.TracedLoss`, where it applies; the eager Pyro step where it does not,
  which the JSON says), on a minibatch of 128 scaled to 60,000 images;
- **amortized q per test image**: one encoder pass that draws z from q(z|x) and scores
  log q(z|x) for a batch of test images (what a one-sample ELBO of a test image adds to the
  decoder);
- **q\\* per test image**: the E-step that ``pyro-vae compare`` runs from the encoder's q
  (:meth:`~pyro_vae.guides.LocalGuide.from_guide` in the family, then
  :func:`~pyro_vae.inference.e_step` on all the images at once): seconds per step per image,
  and times the 300 steps of ``compare``'s default ``--e-steps``.

The families run in turn within each round, over several rounds in one process, so a change of
machine load hits all alike; each figure is the median over rounds, and each family's ratio to
``diag`` the median of the per-round ratios. Untrained networks: the cost of a step does not
depend on the weights. Prints one JSON object.
"""

import json
import os
import statistics
import time

import pyro
import torch
from _machine import machine
from pyro import poutine

import pyro_vae
from pyro_vae.families import FAMILIES
from pyro_vae.guides import LocalGuide
from pyro_vae.inference import REFINE_LR, e_step
from pyro_vae.traced import NotTraceable, TracedLoss
from pyro_vae.train import Schedule

# With CI set (the test suite's smoke run) the sizes are tiny: the numbers then mean nothing.
smoke_test = "CI" in os.environ
ROUNDS, TRAIN_STEPS, E_STEPS = (2, 2, 2) if smoke_test else (7, 40, 10)
TEST_IMAGES = 50 if smoke_test else 1000
Z_DIMS = (2,) if smoke_test else (2, 50)
BATCH = 128
N = 60_000  # the training set size the ELBO is scaled to, as for Fashion-MNIST
COMPARE_E_STEPS = 300  # pyro-vae compare's default --e-steps


def images(n):
    """``n`` binarized digits from mnist-small (repeated when more are asked for)."""
    data = pyro_vae.load_dataset("mnist-small", binarize="none")
    x = torch.cat([data.train_x, data.test_x])
    x = x.repeat(n // x.shape[0] + 1, 1, 1, 1)[:n]
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(0))


def training_step(model, guide, config, x):
    """One optimizer step as :func:`pyro_vae.fit` takes it, and whether it is recorded."""
    loss_fn = config.make_elbo()(model, guide)
    try:
        traced = TracedLoss(loss_fn)
    except NotTraceable:
        traced = None
    schedule = Schedule(loss_fn, config.lr, traced=traced)
    idx = torch.arange(x.shape[0])
    return (lambda: schedule(x, None, idx, N, 1, 1)), traced is not None


@torch.no_grad()
def amortized_q(guide, x):
    """A draw from q(z|x) for each image and its log-density."""
    trace = poutine.trace(guide).get_trace(x, None, None, None)
    trace.log_prob_sum()


def q_star_steps(model, guide, family, x, steps):
    """``steps`` E-step steps from the encoder's q within ``family``, as compare takes them."""
    q = LocalGuide.from_guide(guide, x, family=family)
    e_step(model, q, x, steps=steps, lr=REFINE_LR)


def timed(fn, repeat=1):
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def case(z_dim, batch, test_x):
    parts, recorded = {}, {}
    for family in FAMILIES:
        pyro.set_rng_seed(0)
        config = pyro_vae.Config(z_dim=z_dim, guide_family=family)
        model, guide = pyro_vae.build(config, batch.shape[1:])
        step, recorded[family] = training_step(model, guide, config, batch)
        parts[family] = (model, guide, step)
    measures = {
        "train_step": lambda m, g, s, f: timed(s, TRAIN_STEPS),
        "amortized_q_per_image": lambda m, g, s, f: (
            timed(lambda: amortized_q(g, test_x), 3) / len(test_x)
        ),
        "e_step_step_per_image": lambda m, g, s, f: (
            timed(lambda: q_star_steps(m, g, f, test_x, E_STEPS)) / (E_STEPS * len(test_x))
        ),
    }
    rounds = []
    for _ in range(ROUNDS + 1):  # the first round warms up: recording, allocator, caches
        rounds.append(
            {
                (family, name): measure(*parts[family], family)
                for name, measure in measures.items()
                for family in FAMILIES
            }
        )
    rounds = rounds[1:]
    out = {}
    for family in FAMILIES:
        row = {"training_step_recorded": recorded[family]}
        for name in measures:
            row[f"{name}_seconds"] = float(
                f"{statistics.median(r[family, name] for r in rounds):.4g}"
            )
            ratios = [r[family, name] / r["diag", name] for r in rounds]
            row[f"{name}_ratio_to_diag"] = round(statistics.median(ratios), 3)
        row["q_star_seconds_per_image"] = float(
            f"{row['e_step_step_per_image_seconds'] * COMPARE_E_STEPS:.4g}"
        )
        out[family] = row
    return out


def main():
    batch, test_x = images(BATCH), images(TEST_IMAGES)
    result = {
        "benchmark": "families",
        "model": {"net": "mlp", "hidden_dims": [400], "batch_size": BATCH, "train_size": N},
        "rounds": ROUNDS,
        "train_steps_per_round": TRAIN_STEPS,
        "test_images": TEST_IMAGES,
        "e_steps_per_round": E_STEPS,
        "q_star_e_steps": COMPARE_E_STEPS,
        "cases": {f"z_dim={z}": case(z, batch, test_x) for z in Z_DIMS},
        "units": "seconds (median over rounds); ratios: the family's over diag's, per round",
        "machine": {**machine(), "load_average": os.getloadavg()[0]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
