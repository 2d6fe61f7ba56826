"""Image completion (Sohn, Lee & Yan 2015, as in Pyro's ``examples/cvae``): generate the hidden
quadrants of an image from the observed ones, against a deterministic baseline.

The completion CVAE is the one :class:`~pyro_vae.models.VAE` with an
:class:`~pyro_vae.models.ObservedQuadrants` condition, a learned prior p(z | observed part) and a
likelihood that scores only the hidden pixels (``--condition quadrants:N``). Its test
``log_px`` is the importance-sampled conditional log-likelihood log p(hidden | observed).

The baseline is the same model with its latent pinned to zero (``z ~ Delta(0)`` in model and guide):
a deterministic network from the observed to the hidden pixels, trained by the same trainer on the
same masked Bernoulli likelihood. With nothing latent its ELBO *is* log p(hidden | observed), so the
two numbers are the same quantity in the same units.

A model file trained with ``--condition quadrants:N`` (in either form of
:data:`pyro_vae.program.IMAGE_FORMS`) is scored and drawn the same way, from what the door
learned (:attr:`pyro_vae.program.Structure.hidden`), beside the built-in model's baseline at the
run's ``--z-dim`` and ``--hidden-dims``.
"""

import os
from dataclasses import replace

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.nn import PyroModule

from . import evaluate, plots
from .models import data_plate
from .train import fit


class PointPrior(PyroModule):
    """``z ~ Delta(0)``: no randomness left in the model."""

    def __init__(self, z_dim):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self, c=None):
        return dist.Delta(self.loc, event_dim=1)


class PointGuide(PyroModule):
    """The guide of a model with :class:`PointPrior`: ``z = 0`` for every image."""

    def __init__(self, z_dim):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            return pyro.sample("z", dist.Delta(self.loc.expand(x.shape[0], -1), event_dim=1))


def train_baseline(config, data, quiet=True):
    """The deterministic baseline for the completion run ``config``, trained like the CVAE: the
    built-in model's, whatever program the run trains."""
    from .config import build_vae

    config = _built_in(config)
    pyro.set_rng_seed(config.seed)
    model, _ = build_vae(config, data.x_shape)
    model.prior = PointPrior(config.z_dim)
    guide = PointGuide(config.z_dim)
    fit(
        model,
        guide,
        data,
        Trace_ELBO(),
        quiet=quiet,
        **config.fit_options(),
    )
    return model.eval(), guide.eval()


def _built_in(config):
    """``config`` with the built-in model in place of a model file, at the same sizes."""
    if not config.entry().user_code:
        return config
    sizes = {"z_dim": config.z_dim or 50, "hidden_dims": config.hidden_dims or (400,)}
    return replace(config, model="vae", **sizes)


def composite(x, predicted, observed):
    """The observed pixels of ``x`` with the ``predicted`` ones in the hidden part."""
    return torch.where(observed, x, predicted)


@torch.no_grad()
def inpainting_figure(run, x, path, baseline=None, samples=3, seed=0):
    """Masked inputs, CVAE completions for ``samples`` draws of z ~ p(z | observed part), the
    baseline's prediction and the truth, one column per image of ``x``."""
    observed = run.structure.y.given
    rows = [("input", composite(x, torch.full_like(x, 0.5), observed))]
    for s in range(samples):
        rows.append(
            (f"CVAE {s + 1}", composite(x, run.sample(len(x), seed=seed + s, y=x), observed))
        )
    if baseline is not None:
        zeros = torch.zeros(len(x), baseline.z_dim)
        rows.append(("baseline", composite(x, baseline.x_dist(zeros, x).mean, observed)))
    rows.append(("truth", x))
    labels, images = zip(*rows)
    plots.image_rows(
        list(images),
        list(labels),
        path,
        title="completing test images from their observed quadrants\n(grey: the hidden part; "
        "completions are decoder means for z ~ p(z | observed))",
    )


def report(run, data, quiet=True):
    """Train the baseline, score it on the test split, write ``inpainting.png``; return metrics."""
    model, guide = train_baseline(run.config, data, quiet)
    log_px = evaluate.log_px(model, guide, data.test_x, data.test_x, num_samples=1)
    inpainting_figure(run, data.test_x[:12], os.path.join(run.path, "inpainting.png"), model)
    return {
        "baseline_test_log_px": round(log_px.mean().item(), 3),
        "baseline_test_log_px_stderr": evaluate.standard_error(log_px),
    }
