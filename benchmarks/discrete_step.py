"""Benchmark: one training step of a model with a discrete class, in pyro_vae and written by hand.

The models are the built-in M2 (``--model m2``: y ~ Cat(1/K), z ~ N(0, I), x ~ p(x | y, z)) and
the Gaussian-mixture VAE (``--model gmvae``: z ~ p(z | y)), trained with the class summed out
(``--discrete enumerate``, Pyro's ``TraceEnum_ELBO``), at the recipe's sizes (z 16, hidden 256,
batch 128) on mnist-small digits. pyro_vae's steps are the one :func:`pyro_vae.fit` takes (the
loss recorded and replayed, :mod:`pyro_vae.traced`) and Pyro's eager step (what it took before
the recording covered enumeration). The reference is the same step as a person would write it
in PyTorch: the identical networks (copies, same initial weights), the sum over the K classes
written out (every class's z drawn and decoded at once, weighed by q(y | x)), M2's classification
term, the same ``N / batch`` scale and the same Adam settings. M2 is timed on a minibatch
without labels and on one whose images are all labelled (the sum over classes still runs, as
enumeration runs it, q(y | x) then a point mass). The steps alternate over several rounds in one
process; each figure is the median of the per-round ratios.

Target (issue "Speed, round 2"): at most 1.2x for enumerated M2 (both minibatch kinds) and the
mixture. Prints one JSON object.
"""

import copy
import json
import math
import os
import statistics
import time

import pyro
import torch
from _machine import machine
from torch.nn import functional as F

import pyro_vae
from pyro_vae.discrete import objective
from pyro_vae.guides import LABEL_LOGIT
from pyro_vae.traced import TracedLoss
from pyro_vae.train import Schedule, adam

smoke_test = "CI" in os.environ
ROUNDS, STEPS = (2, 2) if smoke_test else (7, 30)
BATCH, K = 128, 10
N = 3000  # mnist-small's training set, which the ELBO is scaled to
ALPHA = 46.0  # the M2 recipe's weight of the classification term


def images_and_labels(size):
    data = pyro_vae.load_dataset("mnist-small", binarize="none")
    x = torch.bernoulli(data.train_x[:size], generator=torch.Generator().manual_seed(0))
    return x, data.train_y[:size]


def pyro_vae_step(config, x, y, recorded=True):
    """pyro_vae's step as :func:`pyro_vae.fit` builds it: the enumerated objective as a loss
    module, recorded (or Pyro's eager step), the trainer's Adam step."""
    model, guide = pyro_vae.build(config, x.shape[1:], num_classes=K, train_size=N)
    loss_fn = objective(model.structure, "enumerate", config.make_elbo())(model, guide)
    schedule = Schedule(loss_fn, config.lr, traced=TracedLoss(loss_fn) if recorded else None)
    idx = torch.arange(x.shape[0])
    schedule(x, y, idx, N, 1, 1)  # records
    return (lambda: schedule(x, y, idx, N, 1, 1)), model, guide


def _class_values():
    return torch.eye(K)[:, None, :]  # (K, 1, K): every class, broadcast over the images


def _log_normal(value, loc, scale):
    return (-((value - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )


def hand_written_m2_loss(classifier, encoder, decoder, x, y):
    """Minus the minibatch's ELBO with the class summed out, scaled to N images, and M2's
    classification term ``alpha * log q(y | x)`` on its labelled images."""
    logits = classifier(x)
    if y is not None:  # q(y | x) is the point mass on a given label (as ClassGuide makes it)
        labelled = (y >= 0)[:, None]
        onehot = F.one_hot(y.clamp(min=0), K).to(logits)
        logits = torch.where(labelled, LABEL_LOGIT * (1 - onehot), logits)
    log_q_y = logits.log_softmax(-1).T  # (K, B)
    c = _class_values()
    loc, scale = encoder(x, c)  # (K, B, z)
    z = loc + scale * torch.randn_like(loc)
    x_logits = decoder(z, c).reshape(K, x.shape[0], -1)
    log_px = -F.binary_cross_entropy_with_logits(
        x_logits, x.reshape(1, x.shape[0], -1).expand_as(x_logits), reduction="none"
    ).sum(-1)
    zeros, ones = torch.zeros_like(z), torch.ones_like(z)
    per_class = log_px + _log_normal(z, zeros, ones) - _log_normal(z, loc, scale)
    elbo = (log_q_y.exp() * (per_class - math.log(K) - log_q_y)).sum(0)
    loss = -N / x.shape[0] * elbo.sum()
    if y is not None:
        labelled = y >= 0
        log_q = classifier(x).log_softmax(-1).gather(-1, y.clamp(min=0)[:, None]).squeeze(-1)
        loss = loss - N / x.shape[0] * (ALPHA * log_q * labelled).sum()
    return loss


def hand_written_mixture_loss(classifier, encoder, decoder, locs, log_scales, x):
    """Minus the minibatch's ELBO of the mixture VAE, the cluster summed out: one z ~ q(z | x)
    per image, scored under every cluster's bump."""
    log_q_y = classifier(x).log_softmax(-1)  # (B, K)
    loc, scale = encoder(x)
    z = loc + scale * torch.randn_like(loc)
    x_logits = decoder(z).reshape(x.shape[0], -1)
    log_px = -F.binary_cross_entropy_with_logits(x_logits, x.reshape(x.shape[0], -1)).sum(-1)
    log_px = log_px * x[0].numel()  # the mean above, back to a sum over pixels
    log_pz = _log_normal(z[:, None, :], locs, log_scales.exp())  # (B, K)
    q_y = log_q_y.exp()
    elbo = log_px - _log_normal(z, loc, scale) + (q_y * (log_pz - math.log(K) - log_q_y)).sum(-1)
    return -N / x.shape[0] * elbo.sum()


def hand_written_step(loss, modules, lr):
    params = [p for m in modules for p in (m.parameters() if hasattr(m, "parameters") else [m])]
    optimizer = adam(params, lr)

    def step():
        value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        return value.item()

    return step


def seconds_per_step(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def alternate(steps):
    for step in steps.values():
        seconds_per_step(step, 3)
    return [
        {name: seconds_per_step(step, STEPS) for name, step in steps.items()} for _ in range(ROUNDS)
    ]


def summary(rounds, name, reference="hand_written"):
    ratios = [r[name] / r[reference] for r in rounds]
    return {
        "ms": round(1e3 * statistics.median(r[name] for r in rounds), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }


def m2_case(labelled):
    config = pyro_vae.Config(
        model="m2", labels=100, alpha=ALPHA, z_dim=16, hidden_dims=(256,), elbo="trace"
    )
    x, labels = images_and_labels(BATCH)
    y = labels if labelled else torch.full((BATCH,), -1)
    ours, model, guide = pyro_vae_step(config, x, y)
    eager = pyro_vae_step(config, x, y, recorded=False)[0]
    classifier, encoder = copy.deepcopy(guide.classifier), copy.deepcopy(guide.encoder)
    decoder = copy.deepcopy(model.decoder)
    hand = hand_written_step(
        lambda: hand_written_m2_loss(classifier, encoder, decoder, x, y),
        [classifier, encoder, decoder],
        config.lr,
    )
    return timed(
        f"m2, {'labelled' if labelled else 'unlabelled'} minibatch of {BATCH}", hand, ours, eager
    )


def timed(case, hand, recorded, eager):
    """The three steps of ``case`` in alternating rounds, against the hand-written one."""
    rounds = alternate({"hand_written": hand, "recorded": recorded, "eager": eager})
    return {
        "case": case,
        "hand_written_ms": summary(rounds, "hand_written")["ms"],
        "pyro_vae_recorded": summary(rounds, "recorded"),
        "pyro_vae_eager": summary(rounds, "eager"),
    }


def mixture_case():
    config = pyro_vae.Config(model="gmvae", z_dim=16, hidden_dims=(256,), elbo="trace")
    x, _ = images_and_labels(BATCH)
    y = torch.full((BATCH,), -1)
    ours, model, guide = pyro_vae_step(config, x, y)
    eager = pyro_vae_step(config, x, y, recorded=False)[0]
    classifier, encoder = copy.deepcopy(guide.classifier), copy.deepcopy(guide.encoder)
    decoder = copy.deepcopy(model.decoder)
    locs = model.locs.detach().clone().requires_grad_()
    log_scales = model.log_scales.detach().clone().requires_grad_()
    hand = hand_written_step(
        lambda: hand_written_mixture_loss(classifier, encoder, decoder, locs, log_scales, x),
        [classifier, encoder, decoder, locs, log_scales],
        config.lr,
    )
    return timed(f"gmvae, minibatch of {BATCH}", hand, ours, eager)


def main():
    torch.manual_seed(0)
    cases = [m2_case(False), m2_case(True), mixture_case()]
    print(
        json.dumps(
            {
                "benchmark": "discrete_step",
                "elbo": "TraceEnum_ELBO, the class summed out (pyro_vae) vs the sum over classes "
                "written out (hand-written)",
                "torch_version": torch.__version__,
                "pyro_version": pyro.__version__,
                "rounds": ROUNDS,
                "steps_per_round": STEPS,
                "cases": cases,
                "target": {"ratio_max": 1.2},
                "target_met": all(c["pyro_vae_recorded"]["ratio"] <= 1.2 for c in cases),
                "machine": {**machine(), "load_average": round(os.getloadavg()[0], 2)},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
