"""One trainer for every model and guide: stochastic variational inference on minibatches.

Nothing here knows what the model is. :func:`fit` turns a Pyro ELBO into a loss module
(``elbo(model, guide)``), optimizes the parameters of model and guide together with one torch
optimizer, and records the ELBO per epoch in nats per data point.
"""

import math
import time
from dataclasses import asdict, dataclass, field

import pyro
import torch
from pyro.infer import Trace_ELBO
from tqdm.auto import tqdm

from . import evaluate
from .errors import ConfigError, DataError, DivergenceError


@dataclass
class History:
    """What :func:`fit` records, one entry per epoch."""

    epoch: list = field(default_factory=list)
    train_elbo: list = field(default_factory=list)
    test_elbo: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def as_dict(self):
        return asdict(self)


def fit(
    model,
    guide,
    data,
    elbo=None,
    epochs=10,
    batch_size=128,
    lr=1e-3,
    seed=0,
    quiet=False,
    test_samples=1,
    e_steps=0,
    lr_decay=1.0,
):
    """Fit ``model`` and ``guide`` to ``data.train_x`` by SVI; return the per-epoch :class:`History`.

    Each step samples a minibatch, evaluates ``elbo`` (default :class:`~pyro.infer.Trace_ELBO`)
    with the ``"data"`` plate subsampled, so the loss is an unbiased estimate of the full training
    set's negative ELBO, and takes one Adam step on all parameters of model and guide that require
    gradients (freeze the model with ``model.requires_grad_(False)`` to fit only the guide: that is
    the E-step of :func:`pyro_vae.inference.e_step`).

    With ``e_steps > 0`` the schedule alternates instead, as in classical variational EM: on each
    minibatch, ``e_steps`` steps on the guide's parameters with the model held fixed (E), then one
    step on the model's parameters with the guide held fixed (M).

    :param model: a pyro_vae model (see :mod:`pyro_vae.models`).
    :param guide: a guide with the same signature.
    :param data: a :class:`pyro_vae.data.Data`.
    :param elbo: a Pyro ELBO instance, e.g. ``TraceMeanField_ELBO()`` for an analytic KL.
    :param int epochs: passes over the training set.
    :param int batch_size: images per step.
    :param float lr: Adam's learning rate.
    :param int seed: seeds Pyro, torch and the minibatch order.
    :param bool quiet: no progress bar.
    :param int test_samples: latent samples per image for the per-epoch test ELBO; 0 skips it.
    :param int e_steps: guide-only steps before each model step (0: joint steps on both).
    :param float lr_decay: the learning rate is multiplied by this after every epoch; below 1 it
        lets Adam settle into an optimum instead of jittering around it with step size ``lr``.
    """
    for name, value, least in (
        ("epochs", epochs, 1),
        ("batch_size", batch_size, 1),
        ("e_steps", e_steps, 0),
    ):
        if not isinstance(value, int) or value < least:
            kind = "a positive" if least else "a non-negative"
            raise ConfigError(f"{name} must be {kind} integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"the learning rate must be a positive number, got {lr!r}")
    if not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
        raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
    n = data.train_x.shape[0]
    if n == 0:
        raise DataError("the training set is empty")

    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    elbo = elbo if elbo is not None else Trace_ELBO()
    history = History()
    steps_per_epoch = math.ceil(n / batch_size)
    start = time.perf_counter()

    loss_fn = elbo(model, guide)

    def trainable(module):
        return [p for p in module.parameters() if p.requires_grad]

    if e_steps:
        # Separate optimizers, so neither half's Adam state sees the other's updates.
        params = trainable(model)
        e_step = _Step(loss_fn, trainable(guide), lr, lr_decay)
    else:
        params = trainable(loss_fn)
    step_fn = _Step(loss_fn, params, lr, lr_decay)
    with tqdm(total=epochs * steps_per_epoch, disable=quiet, unit="step", desc="train") as bar:
        for epoch in range(1, epochs + 1):
            model.train(), guide.train()
            total = 0.0
            for step, (x, idx) in enumerate(data.batches(batch_size, generator), 1):
                for _ in range(e_steps):
                    e_step(x, idx, n, epoch, step)
                value = step_fn(x, idx, n, epoch, step)
                total += value * len(idx) / n
                bar.update()
                if step % 10 == 0 or step == steps_per_epoch:
                    bar.set_postfix(epoch=epoch, elbo=f"{-value / n:.2f}", refresh=False)
            for stepper in (step_fn, e_step) if e_steps else (step_fn,):
                stepper.scheduler.step()
            history.epoch.append(epoch)
            history.train_elbo.append(-total / n)
            history.seconds.append(time.perf_counter() - start)
            model.eval(), guide.eval()
            if test_samples:
                test_elbo = evaluate.elbo(model, guide, data.test_x, num_samples=test_samples)
                history.test_elbo.append(test_elbo.mean().item())
                bar.set_postfix(
                    epoch=epoch,
                    train=f"{history.train_elbo[-1]:.2f}",
                    test=f"{history.test_elbo[-1]:.2f}",
                )
    return history


class _Step:
    """One Adam step on ``params`` against ``loss_fn``; returns the loss, refuses non-finite ones."""

    def __init__(self, loss_fn, params, lr, lr_decay=1.0):
        self.loss_fn, self.params = loss_fn, params
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, lr_decay)

    def __call__(self, x, idx, n, epoch, step):
        try:
            loss = self.loss_fn(x, None, idx, n)
        except ValueError:
            # Pyro's validation rejects NaN parameters of a distribution before any loss.
            if all(torch.isfinite(p).all() for p in self.params):
                raise
            _diverged("the parameters", "non-finite", epoch, step)
        value = loss.item()
        if not math.isfinite(value):
            _diverged("the ELBO", value, epoch, step)
        # Gradients of every parameter are cleared, so a frozen half never accumulates any.
        for p in self.loss_fn.parameters():
            p.grad = None
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        if not torch.isfinite(grad_norm):
            _diverged("the gradient norm", grad_norm.item(), epoch, step)
        self.optimizer.step()
        return value


def _diverged(what, value, epoch, step):
    raise DivergenceError(
        f"{what} became {value} at epoch {epoch}, step {step}; try a lower learning rate (--lr), "
        "gradient clipping or a KL warm-up"
    )
