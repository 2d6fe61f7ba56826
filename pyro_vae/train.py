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
):
    """Fit ``model`` and ``guide`` to ``data.train_x`` by SVI; return the per-epoch :class:`History`.

    Each step samples a minibatch, evaluates ``elbo`` (default :class:`~pyro.infer.Trace_ELBO`)
    with the ``"data"`` plate subsampled, so the loss is an unbiased estimate of the full training
    set's negative ELBO, and takes one Adam step on all parameters of model and guide.

    :param model: a pyro_vae model (see :mod:`pyro_vae.models`).
    :param guide: a guide with the same signature.
    :param data: a :class:`pyro_vae.data.Data`.
    :param elbo: a Pyro ELBO instance, e.g. ``TraceMeanField_ELBO()`` for an analytic KL.
    :param int epochs: passes over the training set.
    :param int batch_size: images per step.
    :param float lr: Adam's learning rate.
    :param int seed: seeds Pyro, torch and the minibatch order.
    :param bool quiet: no progress bar.
    :param int test_samples: latent samples per image for the per-epoch test ELBO.
    """
    n = check_fit_arguments(data, epochs, batch_size, lr)
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    elbo = elbo if elbo is not None else Trace_ELBO()
    history = History()
    steps_per_epoch = math.ceil(n / batch_size)
    start = time.perf_counter()

    loss_fn = elbo(model, guide)
    params = list(loss_fn.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    with tqdm(total=epochs * steps_per_epoch, disable=quiet, unit="step", desc="train") as bar:
        for epoch in range(1, epochs + 1):
            model.train(), guide.train()
            total = 0.0
            for step, (x, idx) in enumerate(data.batches(batch_size, generator), 1):
                loss = elbo_loss(loss_fn, params, x, idx, n, epoch, step)
                value = loss.item()
                if not math.isfinite(value):
                    _diverged("the ELBO", value, epoch, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                check_gradient(params, epoch, step)
                optimizer.step()
                total += value * len(idx) / n
                bar.update()
                if step % 10 == 0 or step == steps_per_epoch:
                    bar.set_postfix(epoch=epoch, elbo=f"{-value / n:.2f}", refresh=False)
            history.epoch.append(epoch)
            history.train_elbo.append(-total / n)
            history.seconds.append(time.perf_counter() - start)
            model.eval(), guide.eval()
            test_elbo = evaluate.elbo(model, guide, data.test_x, num_samples=test_samples)
            history.test_elbo.append(test_elbo.mean().item())
            bar.set_postfix(
                epoch=epoch,
                train=f"{history.train_elbo[-1]:.2f}",
                test=f"{history.test_elbo[-1]:.2f}",
            )
    return history


def check_fit_arguments(data, epochs, batch_size, lr):
    """Refuse what :func:`fit` cannot train with; return the training set's size."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"the learning rate must be a positive number, got {lr!r}")
    n = data.train_x.shape[0]
    if n == 0:
        raise DataError("the training set is empty")
    return n


def elbo_loss(loss_fn, params, x, idx, size, epoch, step):
    """``loss_fn(x, None, idx, size)``: the minibatch's estimate of the negative ELBO of all ``size``
    training images; non-finite parameters become a :class:`DivergenceError` naming the step."""
    try:
        return loss_fn(x, None, idx, size)
    except ValueError:
        # Pyro's validation rejects NaN parameters of a distribution before any loss.
        if all(torch.isfinite(p).all() for p in params):
            raise
        _diverged("the parameters", "non-finite", epoch, step)


def check_gradient(params, epoch, step):
    """Raise :class:`DivergenceError` when the gradient of ``params`` is not finite."""
    grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
    if not torch.isfinite(grad_norm):
        _diverged("the gradient norm", grad_norm.item(), epoch, step)


def _diverged(what, value, epoch, step):
    raise DivergenceError(
        f"{what} became {value} at epoch {epoch}, step {step}; try a lower learning rate (--lr), "
        "gradient clipping or a KL warm-up"
    )
