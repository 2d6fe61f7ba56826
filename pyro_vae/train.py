"""One trainer for every model and guide: stochastic variational inference on minibatches.

Nothing here knows what the model is. :func:`fit` turns a Pyro ELBO into a loss module
(``elbo(model, guide)``), optimizes the parameters of model and guide with Adam, and records the
ELBO per epoch in nats per data point (:class:`History`). Its loop is :class:`Training`, with
callbacks around it (:class:`Callback`: the time limit, checkpoints, the progress bar).

Each step samples a minibatch ``(x, y, idx)`` (``y``: the labels, or whatever the data says the
model conditions on, see :meth:`pyro_vae.data.Data.batches`) and evaluates the ELBO on
``(x, y, idx, n)`` with the data plate subsampled, so the loss is an unbiased estimate of the
whole training set's negative ELBO; then one Adam step on every parameter of model and guide
that requires gradients (freeze the model with ``model.requires_grad_(False)`` to fit only the
guide: the E-step of :func:`pyro_vae.inference.e_step`). With ``e_steps > 0`` the schedule
alternates instead, as in classical variational EM: ``e_steps`` steps on the guide's parameters
with the model held fixed (E), then one on the model's with the guide held fixed (M)
(:class:`Schedule`).

A program trained with labels for some of its images (``Program(..., labelled=True)``,
``--labels N`` with a model file) is called once on each minibatch's labelled images, with their
``ys``, and once on the others, with ``ys=None``, each scaled so the sum stays an unbiased
estimate, plus the classification term weighed by the program's ``alpha``
(:class:`pyro_vae.semi.SemiSupervisedLoss`).

Each step's loss is a recording of the ELBO's tensor operations, replayed on every minibatch
(:class:`~pyro_vae.traced.TracedLoss`: the same losses and gradients as Pyro's eager step, bit
for bit, without its per-step Python); where that cannot apply, the eager Pyro step runs, with a
one-line notice saying why.

A non-finite loss or parameter stops training with a :class:`~pyro_vae.errors.DivergenceError`
naming the epoch and step: the loss is checked every step, the parameters whenever the loss is
not finite, at every checkpoint and at the end of every epoch. No checkpoint is taken after it,
so the last one stays good. With ``clip_grad``, or on the eager step, the gradient is checked
every step too, before the update.

Training can stop at any point and continue exactly: :func:`fit` hands a ``checkpoint`` callback
everything the rest of the run depends on (parameters, optimizer state, position in the epoch's
permutation, every random number generator; :func:`training_state`), and ``resume_from`` takes
it back.
"""

import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO

from . import evaluate
from .discrete import objective
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    ProgramError,
    PyroVAEError,
    first_line,
    program_error_line,
)
from .guides import LocalGuide, per_image
from .program import as_program
from .progress import Progress
from .resources import is_out_of_memory
from .traced import STEPS, NotTraceable, lean_loss

# What a training state holds besides the model's and guide's state_dicts.
STATE_KEYS = (
    "optimizer",
    "epoch",
    "step",
    "order",
    "epoch_total",
    "history",
    "seconds",
    "rng",
    "generator",
    "train_size",
    "batch_size",
)


@dataclass
class History:
    """What :func:`fit` records, one entry per epoch."""

    epoch: list = field(default_factory=list)
    train_elbo: list = field(default_factory=list)
    test_elbo: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def as_dict(self):
        return asdict(self)


@dataclass
class TrainingState:
    """Where a fit stands: what its checkpoints save and where a resumed fit goes on from.

    ``epoch`` epochs are done, and ``step`` steps of the next one, whose permutation of the
    training set is ``order`` and whose loss so far is ``total`` (``None`` and 0 between
    epochs); ``seconds`` is the training time when the state was taken.
    """

    history: History = field(default_factory=History)
    epoch: int = 0
    step: int = 0
    order: Optional[torch.Tensor] = None
    total: float = 0.0
    seconds: float = 0.0

    @classmethod
    def of(cls, checkpoint):
        """The state a checkpoint's dict holds (the history copied, not the caller's lists)."""
        history = History(**{k: list(v) for k, v in checkpoint["history"].items()})
        return cls(
            history,
            checkpoint["epoch"],
            checkpoint["step"],
            checkpoint["order"],
            checkpoint["epoch_total"],
            checkpoint["seconds"],
        )

    def end_epoch(self, train_elbo, seconds):
        """Record the epoch just trained (the next one starts from its first step)."""
        self.epoch += 1
        self.step, self.order, self.total = 0, None, 0.0
        self.history.epoch.append(self.epoch)
        self.history.train_elbo.append(train_elbo)
        self.history.seconds.append(seconds)


class Callback:
    """What :class:`Training` calls around its loop; each does nothing unless overridden."""

    def stop(self, training):
        """Before an epoch starts: whether to stop instead."""
        return False

    def step_end(self, training, value):
        """After each step, with its loss."""

    def epoch_end(self, training):
        """After each epoch, its history recorded."""


class TimeLimit(Callback):
    """No epoch is started that would end after ``seconds`` (:func:`out_of_time`), judged by
    the training time at the last end of an epoch, so a resumed run stops where the
    uninterrupted one did."""

    def __init__(self, seconds):
        self.seconds = seconds

    def stop(self, training):
        state = training.state
        return state.step == 0 and out_of_time(
            self.seconds, state.seconds, len(state.history.epoch)
        )


class Checkpoints(Callback):
    """``checkpoint(training.checkpoint())`` at the end of every epoch and, with ``every``,
    every ``every`` steps within one."""

    def __init__(self, checkpoint, every=None):
        self.checkpoint, self.every = checkpoint, every

    def step_end(self, training, value):
        if self.every and training.done % self.every == 0 and training.state.step < training.steps:
            self.checkpoint(training.checkpoint())

    def epoch_end(self, training):
        self.checkpoint(training.checkpoint())


class ProgressBar(Callback):
    """The ELBO on :class:`~pyro_vae.progress.Progress`: every step, and the train and test
    ELBO of every epoch."""

    def __init__(self, bar):
        self.bar = bar

    def step_end(self, training, value):
        epoch, step, n = training.state.epoch + 1, training.state.step, training.n
        self.bar.step(epoch, -value / n)
        if step % 10 == 0 or step == training.steps:
            self.bar.set_postfix(epoch=epoch, elbo=f"{-value / n:.2f}", refresh=False)

    def epoch_end(self, training):
        history = training.state.history
        if history.test_elbo and history.test_elbo[-1] is not None:
            self.bar.set_postfix(
                epoch=history.epoch[-1],
                train=f"{history.train_elbo[-1]:.2f}",
                test=f"{history.test_elbo[-1]:.2f}",
            )


class Training:
    """One fit's loop, step by step: :meth:`run` trains from :attr:`state` for ``epochs``
    epochs, calling the callbacks (:class:`Callback`) around it. Nothing here knows the model:
    ``schedule`` takes the optimizer steps, ``hooks`` are called before each epoch (``on_epoch``
    of :func:`fit`, a discrete strategy's schedule)."""

    def __init__(self, model, guide, data, schedule, batch_size, epochs, hooks=(), traced=None):
        self.model, self.guide, self.data, self.schedule = model, guide, data, schedule
        self.n, self.batch_size, self.epochs = data.train_x.shape[0], batch_size, epochs
        self.steps = math.ceil(self.n / batch_size)  # per epoch
        self.hooks, self.traced = [h for h in hooks if h is not None], traced
        self.generator = torch.Generator()
        self.state = TrainingState()
        self.test_samples = 1
        self._start = None

    @property
    def done(self):
        """Steps done in all."""
        return self.state.epoch * self.steps + self.state.step

    def start(self, seed=0, resume_from=None):
        """Seed every generator, or take a checkpoint's state (:func:`_restore`)."""
        if resume_from is None:
            pyro.set_rng_seed(seed)
            self.generator.manual_seed(seed)
        else:
            _restore(resume_from, self.model, self.guide, self.schedule, self.generator, self.n,
                     self.batch_size, self.epochs)  # fmt: skip
            self.state = TrainingState.of(resume_from)
        self._start = time.perf_counter() - self.state.seconds

    def seconds(self):
        return time.perf_counter() - self._start

    def run(self, callbacks=()):
        for epoch in range(self.state.epoch + 1, self.epochs + 1):
            if any(c.stop(self) for c in callbacks):
                break
            self.begin_epoch(epoch)
            batches = self.data.batches(
                self.batch_size, self.generator, order=self.state.order, start=self.state.step
            )
            for x, y, idx in batches:
                value = self.schedule(x, y, idx, self.n, epoch, self.state.step + 1)
                self.state.step += 1
                self.state.total += value * len(idx) / self.n
                for c in callbacks:
                    c.step_end(self, value)
            self.end_epoch(epoch)
            for c in callbacks:
                c.epoch_end(self)
        return self.state.history

    def begin_epoch(self, epoch):
        """The hooks, then the epoch's permutation (unless resumed inside the epoch)."""
        for hook in self.hooks:
            hook(epoch)
        if self.traced is not None and any(
            not getattr(h, "z_scale_only", False) for h in self.hooks
        ):
            self.traced.reset()  # the hooks may change what the program computes
        self.model.train(), self.guide.train()
        if self.state.step == 0:
            self.state.order = torch.randperm(self.n, generator=self.generator)
            self.state.total = 0.0

    def end_epoch(self, epoch):
        """Check the parameters, decay the learning rate, record the epoch and its test ELBO."""
        self.schedule.check_parameters(epoch, self.steps)
        self.schedule.end_epoch()
        self.state.end_epoch(-self.state.total / self.n, self.seconds())
        self.model.eval(), self.guide.eval()
        history = self.state.history
        if self.test_samples and (epoch == self.epochs or not per_image(self.guide)):
            history.test_elbo.append(
                mean_test_elbo(self.model, self.guide, self.data, self.test_samples)
            )
        elif self.test_samples:  # a per-image guide's test ELBO needs an E-step: at the end only
            history.test_elbo.append(None)
        # after the test ELBO, which draws from the global generator too
        self.state.seconds = self.seconds()

    def checkpoint(self):
        """The training state as a checkpoint holds it (:func:`training_state`), now."""
        state = self.state
        if state.step:  # inside an epoch
            state = replace(state, seconds=self.seconds())
        return training_state(
            self.model, self.guide, self.schedule, state, self.generator, self.n, self.batch_size
        )


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
    clip_grad=None,
    resume_from=None,
    checkpoint=None,
    checkpoint_every=None,
    on_epoch=None,
    e_steps=0,
    lr_decay=1.0,
    time_limit=None,
    discrete=None,
    step="recorded",
):
    """Fit ``model`` and ``guide`` to ``data.train_x`` by SVI; return the per-epoch :class:`History`.

    What each step computes, and how training stops and resumes, is said in this module's
    docstring. Resuming::

        states = []
        fit(model, guide, data, epochs=5, checkpoint=lambda s: states.append(copy.deepcopy(s)))
        fit(model2, guide2, data, epochs=5, resume_from=states[2])  # same result, bit for bit

    :param model: a Pyro model, through the door or not (:func:`~pyro_vae.program.as_program`).
    :param guide: its guide (``None``: variational EM with a Gaussian per training image).
    :param data: a :class:`pyro_vae.data.Data`.
    :param elbo: a Pyro ELBO instance (default ``Trace_ELBO()``).
    :param int epochs: passes over the training set; ``batch_size`` images per step.
    :param float lr: Adam's learning rate, multiplied by ``lr_decay`` after every epoch.
    :param int seed: seeds Pyro, torch and the minibatch order (unused when resuming).
    :param bool quiet: no progress bar and no notices.
    :param int test_samples: latent samples per image for the per-epoch test ELBO; 0 skips it.
    :param float clip_grad: rescale the gradient to at most this norm (default: no clipping).
    :param dict resume_from: a state that ``checkpoint`` received, from a run with the same
        model, data and settings; training continues exactly as if never interrupted.
    :param callable checkpoint: called as ``checkpoint(state)`` at the end of every epoch and every
        ``checkpoint_every`` steps; ``state`` (:func:`training_state`) is live: save or copy it.
    :param on_epoch: a hook called as ``on_epoch(epoch)`` before each epoch (from 1), e.g.
        :func:`pyro_vae.objectives.kl_warmup`.
    :param int e_steps: guide-only steps before each model step (0: joint steps on both).
    :param float time_limit: a wall-clock budget in seconds (:class:`TimeLimit`).
    :param str discrete: how to train discrete latent sites, a name in
        :data:`pyro_vae.discrete.STRATEGIES`; default: enumerate where the supports are finite
        and small. ``elbo`` then only gives the number of particles (and IWAE's bound).
    :param str step: ``"recorded"``, ``"compiled"`` or ``"eager"`` (:data:`pyro_vae.traced.STEPS`).
    """
    n = check_fit_arguments(data, epochs, batch_size, lr, clip_grad, e_steps, lr_decay, time_limit)
    if step not in STEPS:
        raise ConfigError(f"step must be one of {', '.join(STEPS)}, got {step!r}")
    model, guide = as_program(model, guide, *data.example_batch(), n)
    if guide is None:  # a model alone: variational EM with a Gaussian per training image
        guide = LocalGuide(n, structure=model.structure)
    elbo = objective(model.structure, discrete, elbo if elbo is not None else Trace_ELBO())
    loss_fn = elbo(model, guide)
    traced = lean_loss(loss_fn, model, data, notify=None if quiet else _notify, step=step,
                       batch_size=batch_size, announce=None if quiet else _announce)  # fmt: skip
    schedule = Schedule(loss_fn, lr, lr_decay, clip_grad, e_steps, traced=traced)
    hooks = (on_epoch, getattr(elbo, "start_epoch", None))  # the user's, a discrete schedule's
    training = Training(model, guide, data, schedule, batch_size, epochs, hooks, traced)
    training.test_samples = test_samples
    training.start(seed, resume_from)
    callbacks = [TimeLimit(time_limit)] if time_limit is not None else []
    if checkpoint is not None:
        callbacks.append(Checkpoints(checkpoint, checkpoint_every))
    with Progress(epochs * training.steps, training.done, epochs, quiet) as bar:
        return training.run([*callbacks[:1], ProgressBar(bar), *callbacks[1:]])


def out_of_time(time_limit, seconds, epochs_done):
    """Whether :func:`fit` with ``time_limit`` stops after ``epochs_done`` epochs that took
    ``seconds``: when one more epoch of their mean length would end after the limit. A run
    always trains at least one epoch."""
    if time_limit is None or not epochs_done:
        return False
    return seconds + seconds / epochs_done > time_limit


def _users(guide):
    """The user's guide inside the one :func:`fit` got back from the program door."""
    return getattr(guide, "fn", guide)


#: Adam steps of the E-step that fits a per-image guide's q to the test images.
TEST_E_STEPS = 300


def mean_test_elbo(model, guide, data, num_samples=1, device=None):
    """The mean ELBO per test image (nats) that :func:`fit` records after each epoch.

    A per-image guide (:func:`per_image`) has parameters for the training images only; scoring the
    test images with them would pair each test image with some training image's q. Its test ELBO
    is that of a fresh :class:`~pyro_vae.guides.LocalGuide` fitted to the test images with the
    model fixed (:func:`~pyro_vae.inference.e_step`, ``TEST_E_STEPS`` steps from the prior), so
    :func:`fit` computes it after the last epoch only.
    """
    x, labels = data.split("test")
    y = data.model_y(x, labels)
    x, y = x.to(device), None if y is None else y.to(device)
    if per_image(guide):
        from .guides import DeltaGuide, LocalGuide
        from .inference import e_step

        inner = _users(guide)
        structure = getattr(model, "structure", None)
        n = x.shape[0]
        local = getattr(inner, "guide", inner)
        fresh = local.fresh(n).to(x.device)
        guide = fresh if isinstance(inner, LocalGuide) else DeltaGuide(fresh)
        conditional = getattr(structure, "conditional", False)
        with torch.random.fork_rng():
            e_step(model, guide, x, steps=TEST_E_STEPS, y=y if conditional else None)
    return evaluate.elbo(model, guide, x, y, num_samples).mean().item()


def check_fit_arguments(
    data, epochs, batch_size, lr, clip_grad=None, e_steps=0, lr_decay=1.0, time_limit=None
):
    """Refuse what :func:`fit` cannot train with; return the training set's size."""
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
    if clip_grad is not None and not (math.isfinite(clip_grad) and clip_grad > 0):
        raise ConfigError(f"clip_grad must be a positive number, got {clip_grad!r}")
    if time_limit is not None and not (
        isinstance(time_limit, (int, float)) and math.isfinite(time_limit) and time_limit > 0
    ):
        raise ConfigError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    n = data.train_x.shape[0]
    if n == 0:
        raise DataError("the training set is empty")
    return n


def training_state(model, guide, schedule, state, generator, train_size, batch_size):
    """What a ``checkpoint`` callback of :func:`fit` receives: the parameters, the optimizer's
    state, where training stands (a :class:`TrainingState`) and every random number generator,
    as a dict of tensors and plain values (``torch.save`` it, loadable with
    ``weights_only=True``). A parameter that overflowed in the last step raises
    :class:`DivergenceError` instead, so it never replaces the last good checkpoint.
    """
    last = math.ceil(train_size / batch_size)  # an epoch's last step
    schedule.check_parameters(
        *((state.epoch + 1, state.step) if state.step else (state.epoch, last))
    )
    checkpoint = {
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "optimizer": schedule.state_dict(),  # one entry per optimizer
        "epoch": state.epoch,  # completed epochs
        "step": state.step,  # completed steps of the next epoch
        "order": state.order,  # that epoch's permutation of the training set
        "epoch_total": state.total,
        "history": state.history.as_dict(),
        "seconds": state.seconds,
        "rng": rng_state(),
        "generator": generator.get_state(),
        "train_size": train_size,
        "batch_size": batch_size,
    }
    baseline = getattr(schedule.loss_fn, "baseline", None)
    if baseline is not None:  # a score-function baseline learned with the run
        checkpoint["baseline"] = baseline.state_dict()
    return checkpoint


class Schedule:
    """The optimizer steps that :func:`fit` takes on each minibatch.

    With ``e_steps=0``, one joint step on every trainable parameter of model and guide; otherwise
    ``e_steps`` steps on the guide's (E), then one on the model's (M), each half with its own
    Adam, so neither half's state sees the other's updates. ``backward(loss)`` computes the
    gradients (default ``loss.backward()``; :mod:`pyro_vae.distributed` passes Lightning's, which
    averages them over the processes).

    :param loss_fn: the ELBO as a loss module, ``elbo(model, guide)``.
    :param traced: its recording (a :class:`~pyro_vae.traced.TracedLoss`), or ``None`` for the
        eager Pyro step.
    """

    def __init__(
        self, loss_fn, lr, lr_decay=1.0, clip_grad=None, e_steps=0, backward=None, traced=None
    ):
        max_norm = float("inf") if clip_grad is None else float(clip_grad)

        def step(module):
            params = [p for p in module.parameters() if p.requires_grad]
            return _Step(loss_fn, params, lr, lr_decay, max_norm, backward, traced)

        self.e_steps = e_steps
        self.loss_fn = loss_fn
        if e_steps:
            self.e_step, self.step = step(loss_fn.guide), step(loss_fn.model)
            self.steppers = (self.step, self.e_step)
        else:
            self.step = step(loss_fn)
            self.steppers = (self.step,)
        self.params = [p for stepper in self.steppers for p in stepper.params]

    def __call__(self, x, y, idx, n, epoch, step):
        """Train on the minibatch ``(x, y, idx)`` of a training set of ``n``; return the loss of
        the last step (the joint or M step)."""
        for _ in range(self.e_steps):
            self.e_step(x, y, idx, n, epoch, step)
        return self.step(x, y, idx, n, epoch, step)

    def check_parameters(self, epoch, step):
        """Refuse non-finite parameters (a non-finite gradient makes them so)."""
        check_parameters(self.params, epoch, step)

    def end_epoch(self):
        """Decay the learning rates."""
        for stepper in self.steppers:
            stepper.scheduler.step()

    def state_dict(self):
        return [stepper.state_dict() for stepper in self.steppers]

    def load_state_dict(self, states):
        if len(states) != len(self.steppers):
            raise ValueError("the checkpoint's optimizers do not match this training schedule")
        for stepper, state in zip(self.steppers, states):
            stepper.load_state_dict(state)


class _Step:
    """One Adam step on ``params`` against ``loss_fn``; returns the loss, refuses non-finite ones.

    The learning rate decays by ``lr_decay`` each time ``scheduler.step()`` is called (per epoch);
    the gradient is clipped to ``max_norm`` (``inf``: only checked for being finite).
    ``backward`` replaces ``loss.backward()`` with a collective one (see :class:`Schedule`).
    ``traced`` is the loss's recording (:class:`~pyro_vae.traced.TracedLoss`), used until it
    says it cannot apply. With it, only the loss is checked every step (and the parameters when
    it is not finite); the gradient only when it is clipped anyway, since its norm costs as much
    as a tenth of a small network's step.
    """

    def __init__(
        self,
        loss_fn,
        params,
        lr,
        lr_decay=1.0,
        max_norm=float("inf"),
        backward=None,
        traced=None,
    ):
        self.loss_fn, self.params, self.max_norm = loss_fn, params, max_norm
        self.traced = traced
        self.collective = backward is not None
        self.backward = backward if backward is not None else torch.Tensor.backward
        # Every parameter's gradient is cleared, so a frozen half never accumulates any.
        self.all_params = list(loss_fn.parameters())
        self.optimizer = adam(params, lr)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, lr_decay)

    def __call__(self, x, y, idx, n, epoch, step):
        lean = self.traced is not None and self.traced.failed is None
        try:
            loss = self._loss(x, y, idx, n) if lean else self.loss_fn(x, y, idx, n)
            lean = lean and self.traced.failed is None
        except PyroVAEError:
            raise
        except Exception as e:
            if is_out_of_memory(e):  # the sizes', not the program's fault: the caller names them
                raise
            # Pyro's validation rejects NaN parameters of a distribution before any loss.
            if isinstance(e, ValueError):
                check_parameters(self.params, epoch, step)
            raise ProgramError(
                f"the model or guide failed at epoch {epoch}, step {step} (a batch of "
                f"{x.shape[0]} images): {program_error_line(e)}"
            ) from None
        value = loss.item()
        if not math.isfinite(value) and lean:  # Pyro's validation would name the parameters
            check_parameters(self.params, epoch, step)
        if not math.isfinite(value) and not self.collective:
            _diverged("the ELBO", value, epoch, step)
        for p in self.all_params:
            p.grad = None
        self.backward(loss)
        if not math.isfinite(value):
            # Only now under data parallelism: every process must reach the backward pass, whose
            # all-reduce the others wait on; their averaged gradient is non-finite, so all stop.
            _diverged("the ELBO", value, epoch, step)
        if not lean or math.isfinite(self.max_norm):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
            if not torch.isfinite(grad_norm):
                _diverged("the gradient norm", grad_norm.item(), epoch, step)
        self.optimizer.step()
        return value

    def _loss(self, x, y, idx, n):
        """The recorded loss, or the eager one from the first minibatch it cannot apply to."""
        try:
            return self.traced(x, y, idx, n)
        except NotTraceable as e:
            self.traced.give_up(str(e))
            return self.loss_fn(x, y, idx, n)

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def adam(params, lr):
    """torch's Adam over ``params``, fused into one kernel where torch has one for their device.

    The fused update gives the same steps as the loop over parameters up to rounding, several
    times faster: on a 784-400-50 VAE it is 0.9 ms per step against 2.2 ms on one CPU core
    (``benchmarks/step_overhead.py`` times whole steps).
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def _notify(line):
    print(f"pyro_vae: training with the eager Pyro step: {line}", file=sys.stderr, flush=True)


def _announce(line):
    print(f"pyro_vae: {line}", file=sys.stderr, flush=True)


def check_parameters(params, epoch, step):
    """Refuse non-finite ``params`` with a :class:`~pyro_vae.errors.DivergenceError`."""
    if not all(torch.isfinite(p).all() for p in params):
        _diverged("the parameters", "non-finite", epoch, step)


def _diverged(what, value, epoch, step):
    raise DivergenceError(
        f"{what} became {value} at epoch {epoch}, step {step}; try a lower learning rate (--lr), "
        "gradient clipping (--clip-grad) or a KL warm-up"
    )


def rng_state():
    """The states of torch's, Python's and NumPy's global generators (all that Pyro draws from),
    as tensors and plain values."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
    }


def set_rng_state(state):
    """Restore what :func:`rng_state` returned."""
    name, key, pos, has_gauss, gauss = state["numpy"]
    pyro.util.set_rng_state(
        {
            "torch": state["torch"],
            "random": state["random"],
            "numpy": (name, key.numpy().astype(np.uint32), pos, has_gauss, gauss),
        }
    )


def _restore(state, model, guide, schedule, generator, n, batch_size, epochs):
    """Load a training state into the modules, optimizer and generators, or say why it won't fit."""
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"the checkpoint holds no training state to resume from (no {missing[0]!r})"
        )
    for name, value, expected in (
        ("training set size", state["train_size"], n),
        ("batch_size", state["batch_size"], batch_size),
    ):
        if value != expected:
            raise CheckpointError(f"the checkpoint was taken with {name} {value}, not {expected}")
    if state["epoch"] > epochs:
        raise CheckpointError(
            f"the checkpoint has trained {state['epoch']} epochs already, more than epochs={epochs}"
        )
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
        schedule.load_state_dict(state["optimizer"])
        baseline = getattr(schedule.loss_fn, "baseline", None)
        if baseline is not None:
            baseline.load_state_dict(state["baseline"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"the checkpoint does not fit this model ({first_line(e)})") from None
    set_rng_state(state["rng"])
    generator.set_state(state["generator"])
