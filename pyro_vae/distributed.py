"""Data-parallel training on PyTorch Lightning: the same model, guide and ELBO on many processes.

Needs the optional extra: ``pip install 'pyro_vae[distributed]'``.

The route is the one Pyro shows in ``examples/svi_lightning.py``: the ELBO becomes a loss module
(``elbo(model, guide)``), parameters live in the modules (importing pyro_vae turned on
``module_local_params``), and a plain torch optimizer steps them. Lightning's DDP strategy runs one
process per device and averages the gradients of all processes after every backward pass. Nothing
about the model changes::

    pyro-vae train --devices 4 --accelerator gpu --strategy ddp --out runs/big

Why the gradient is the single-process one. A global minibatch of ``B`` images is split over ``W``
processes; each draws its ``B / W`` images from its own shard of the training set (a
:class:`~torch.utils.data.DistributedSampler`, reshuffled every epoch) and evaluates the ELBO with
the ``"data"`` plate at the full training-set size ``N``. Its loss, ``N / (B / W)`` times the sum
over its images, is then on its own an unbiased estimate of the whole training set's loss, and the
average DDP takes is ``N / B`` times the sum over all ``B`` images: exactly what one process computes
on the concatenated minibatch.

Reference: S. Li et al., PyTorch Distributed: Experiences on Accelerating Data Parallel Training,
VLDB 2020.
"""

import functools
import logging
import time
import warnings
from contextlib import contextmanager

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import DataLoader, DistributedSampler

from .discrete import objective
from .errors import ConfigError, MissingDependencyError
from .guides import DeltaGuide, per_image
from .program import as_program
from .runs import _train, _training_data, default_run_dir, prepare_run_dir
from .train import (
    Schedule,
    TrainingState,
    check_fit_arguments,
    mean_test_elbo,
    training_state,
)

try:
    import lightning.pytorch as pl
    from lightning.fabric.utilities.exceptions import MisconfigurationException
except ImportError:
    raise MissingDependencyError(
        "data-parallel training (--devices, --num-nodes, --strategy, --accelerator) needs PyTorch "
        "Lightning; install it with: pip install 'pyro_vae[distributed]'"
    ) from None

STRATEGIES = ("ddp", "auto")
ACCELERATORS = ("cpu", "gpu", "auto")


class SVIModule(pl.LightningModule):
    """A Pyro model and guide trained by stochastic variational inference inside Lightning.

    Each process trains on its shard of the training set; see the module docstring for why the
    averaged gradient equals the single-process gradient of the global minibatch. The steps are
    :func:`~pyro_vae.train.fit`'s own (:class:`~pyro_vae.train.Schedule`: Adam, learning-rate
    decay, clipping, divergence checks, the E/M alternation), taken in Lightning's manual
    optimization with its backward pass, which averages the gradients over the processes. The
    process of global rank 0 records the per-epoch :class:`~pyro_vae.train.History` in
    ``history`` and hands the training state to ``checkpoint`` at the end of every epoch, in
    :func:`~pyro_vae.train.fit`'s format.

    :param model: a pyro_vae model (see :mod:`pyro_vae.models` for the calling convention).
    :param guide: a guide with the same signature.
    :param data: a :class:`pyro_vae.data.Data`.
    :param elbo: a Pyro ELBO instance (default :class:`~pyro.infer.Trace_ELBO`).
    :param int batch_size: images per step over all processes together, split evenly among them.
    :param float lr: Adam's learning rate.
    :param int seed: seeds the shuffling (the same in every process) and, offset by the rank, each
        process's Monte Carlo and binarization noise.
    :param int test_samples: latent samples per image for the per-epoch test ELBO; 0 skips it.
    :param float clip_grad: rescale the gradient to at most this norm (default: no clipping).
    :param callable checkpoint: called as ``checkpoint(state)`` by global rank 0 after every epoch.
    :param on_epoch: called as ``on_epoch(epoch)`` before each epoch (from 1) in every process,
        e.g. :func:`pyro_vae.objectives.kl_warmup`.
    :param int e_steps: guide-only steps before each model step (0: joint steps on both).
    :param float lr_decay: the learning rate is multiplied by this after every epoch.
    """

    automatic_optimization = False  # the Schedule steps, as in fit

    def __init__(
        self,
        model,
        guide,
        data,
        elbo=None,
        batch_size=128,
        lr=1e-3,
        seed=0,
        test_samples=1,
        clip_grad=None,
        checkpoint=None,
        on_epoch=None,
        e_steps=0,
        lr_decay=1.0,
    ):
        super().__init__()
        self.loss_fn = (elbo if elbo is not None else Trace_ELBO())(model, guide)
        self.data = data
        self.size = data.train_x.shape[0]
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.test_samples = test_samples
        self.clip_grad = clip_grad
        self.checkpoint = checkpoint
        self.on_epoch = on_epoch
        self.e_steps = e_steps
        self.lr_decay = lr_decay
        self.state = TrainingState()
        self.history = self.state.history
        self.generator = torch.Generator()

    @property
    def model(self):
        return self.loss_fn.model

    @property
    def guide(self):
        return self.loss_fn.guide

    def train_dataloader(self):
        world = self.trainer.world_size
        positions = range(self.size)
        sampler = DistributedSampler(
            positions, num_replicas=world, rank=self.trainer.global_rank, seed=self.seed
        )
        # Lightning calls sampler.set_epoch at every epoch, so each epoch reshuffles the shards.
        # The loader yields positions only; the images are sliced and binarized a minibatch at a
        # time, as in Data.batches.
        return DataLoader(
            positions, batch_size=self.batch_size // world, sampler=sampler, collate_fn=self._slice
        )

    def _slice(self, positions):
        return self.data.batch(torch.tensor(positions), self.generator)

    def configure_optimizers(self):
        self.schedule = Schedule(
            self.loss_fn, self.lr, self.lr_decay, self.clip_grad, self.e_steps, self.manual_backward
        )
        return [stepper.optimizer for stepper in self.schedule.steppers]

    def on_fit_start(self):
        # Step through Lightning's wrappers of the same optimizers, so that its hooks run and
        # its step count advances.
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for stepper, optimizer in zip(self.schedule.steppers, optimizers):
            stepper.optimizer = optimizer
        # DDP gives every process rank 0's initial weights; the noise should differ between ranks.
        pyro.set_rng_seed(self.seed + self.global_rank)
        self.generator.manual_seed(self.seed + self.global_rank)
        self._start = time.perf_counter()

    def on_train_epoch_start(self):
        if self.on_epoch is not None:
            self.on_epoch(self.current_epoch + 1)
        self._totals = torch.zeros(2, dtype=torch.float64)  # sum of per-image losses, images

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        self._step = batch_idx + 1
        # The gradient checks come after the all-reduce: every process holds the same gradient,
        # so a divergence on any one of them stops all of them at the same step instead of
        # leaving the others waiting.
        value = self.schedule(x, y, idx, self.size, self.current_epoch + 1, self._step)
        self._totals += torch.tensor([value * len(idx) / self.size, len(idx)], dtype=torch.float64)
        self.log("elbo", -value / self.size, prog_bar=True)

    def on_train_epoch_end(self):
        self.schedule.end_epoch()
        total, count = self.trainer.strategy.reduce(
            self._totals.to(self.device), reduce_op="sum"
        ).tolist()
        if not self.trainer.is_global_zero:
            return
        # the epoch's bookkeeping as fit's (pyro_vae.train.TrainingState)
        self.state.epoch = self.current_epoch
        self.state.end_epoch(-total / count, time.perf_counter() - self._start)
        logged = {"train": self.history.train_elbo[-1]}
        if self.test_samples:
            self.eval()
            self.history.test_elbo.append(
                mean_test_elbo(
                    self.model, self.guide, self.data, self.test_samples, device=self.device
                )
            )
            self.train()
            logged["test"] = self.history.test_elbo[-1]
        if self.checkpoint is not None:
            # The run directory's checkpoint, as fit writes it at an epoch's end: a single process
            # can continue it (pyro-vae train --resume), though not bit for bit as these would.
            self.state.seconds = self.history.seconds[-1]
            self.checkpoint(
                training_state(
                    self.model,
                    self.guide,
                    self.schedule,
                    self.state,
                    self.generator,
                    self.size,
                    self.batch_size,
                )
            )
        self.log_dict(logged, prog_bar=True, rank_zero_only=True)


def _in_turn(*hooks):
    """One ``on_epoch`` hook that calls each of ``hooks`` (those not ``None``) in turn."""

    def on_epoch(epoch):
        for hook in hooks:
            if hook is not None:
                hook(epoch)

    return on_epoch


def fit_distributed(
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
    devices=1,
    num_nodes=1,
    strategy="ddp",
    accelerator="auto",
    callbacks=(),
    discrete=None,
):
    """:func:`pyro_vae.train.fit` on ``devices`` processes on each of ``num_nodes`` machines.

    Takes the arguments of :func:`~pyro_vae.train.fit` (but ``time_limit``), with ``batch_size``
    the global minibatch, and returns the per-epoch :class:`~pyro_vae.train.History` in the process of global rank 0 and
    ``None`` in the others. Every process runs this function with the same arguments: Lightning
    starts the other processes of a machine itself, or finds them started by ``torchrun`` or a
    cluster launcher (SLURM and others Lightning knows). ``checkpoint`` receives the training state
    at the end of every epoch, in global rank 0; resuming (``resume_from``) and checkpoints within
    an epoch (``checkpoint_every``) are single-process features: a data-parallel run's checkpoint
    continues in one process (:func:`pyro_vae.runs.resume_run`).

    :param int devices: processes per machine, one per GPU (or CPU process).
    :param int num_nodes: machines.
    :param str strategy: Lightning's ``"ddp"`` (or ``"auto"`` to let Lightning choose).
    :param str accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"``.
    :param callbacks: extra Lightning callbacks.
    :param str discrete: how to train discrete latent sites, as for :func:`~pyro_vae.train.fit`.
    """
    n = check_fit_arguments(data, epochs, batch_size, lr, clip_grad, e_steps, lr_decay)
    model, guide = as_program(model, guide, *data.example_batch(), n)
    elbo = objective(model.structure, discrete, elbo if elbo is not None else Trace_ELBO())
    start_epoch = getattr(elbo, "start_epoch", None)  # a discrete strategy's schedule
    if start_epoch is not None:
        on_epoch = _in_turn(start_epoch, on_epoch)
    if resume_from is not None:
        raise ConfigError(
            "a data-parallel run cannot resume from a checkpoint; continue it in one process"
        )
    if checkpoint_every is not None:
        raise ConfigError(
            "data-parallel training checkpoints at the end of each epoch only; drop --checkpoint-every"
        )
    for name, value, choices in (
        ("strategy", strategy, STRATEGIES),
        ("accelerator", accelerator, ACCELERATORS),
    ):
        if value not in choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    world = devices * num_nodes
    if world > 1 and per_image(guide):
        raise ConfigError(
            f"data-parallel training supports only the amortized guide, not {_name(guide)}: a "
            "per-datapoint guide keeps parameters for every training image, and each process "
            "would have to hold and update its own shard of them; train it in one process"
        )
    if not any(p.requires_grad for m in (model, guide) for p in m.parameters()):
        raise ConfigError("the model and guide have no parameters to train")
    if batch_size % world:
        raise ConfigError(
            f"batch_size {batch_size} does not split evenly over {world} processes (--devices "
            f"times --num-nodes); choose a multiple of {world}"
        )
    module = SVIModule(
        model,
        guide,
        data,
        elbo,
        batch_size,
        lr,
        seed,
        test_samples,
        clip_grad,
        checkpoint,
        on_epoch,
        e_steps,
        lr_decay,
    )
    with _lightning_quiet(quiet):
        try:
            trainer = pl.Trainer(
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy=strategy,
                max_epochs=epochs,
                use_distributed_sampler=False,  # SVIModule shards the data itself
                logger=False,
                enable_checkpointing=False,  # the run directory's checkpoint is written by runs.py
                enable_model_summary=False,
                enable_progress_bar=not quiet,
                callbacks=list(callbacks),
            )
        except MisconfigurationException as e:
            raise ConfigError(
                f"cannot train with --accelerator {accelerator} --devices {devices}: "
                f"{str(e).strip().splitlines()[0]}"
            ) from None
        trainer.fit(module)
    model.cpu(), guide.cpu()
    return module.history if trainer.is_global_zero else None


def train_run_distributed(
    config,
    out,
    overwrite=False,
    quiet=False,
    devices=1,
    num_nodes=1,
    strategy="ddp",
    accelerator="auto",
    callbacks=(),
    checkpoint_every=None,
):
    """:func:`pyro_vae.runs.train_run` through :func:`fit_distributed` (see it for the options).

    Every process must name the same run directory ``out``; the process of global rank 0 writes it,
    in the same format as a single-process run (its checkpoint at the end of every epoch), and the
    others return ``(None, None)``.
    """
    if config.time_limit is not None:
        raise ConfigError(
            "--time-limit stops a run in one process; a data-parallel run trains for --epochs"
        )
    if config.step != "recorded":
        raise ConfigError(
            f"--step {config.step} chooses the training step of a run in one process; a "
            "data-parallel run takes Lightning's steps"
        )
    if not out and devices * num_nodes > 1:
        raise ConfigError(
            "a data-parallel run needs --out: every process must write to the same run directory"
        )
    out = out or default_run_dir(config.dataset)
    data = _training_data(config)
    # The directory stays empty until the processes have met and rank 0's first checkpoint brings
    # config.json: every process passes through here first, and must not find it taken.
    prepare_run_dir(out, overwrite)
    fit = functools.partial(
        fit_distributed,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        accelerator=accelerator,
        callbacks=callbacks,
    )
    return _train(config, data, out, None, quiet, checkpoint_every, fit=fit)


def _name(guide):
    """``LocalGuide``, ``DeltaGuide(LocalGuide)``, ...: what the refusal names."""
    return (
        f"DeltaGuide({_name(guide.guide)})"
        if isinstance(guide, DeltaGuide)
        else type(guide).__name__
    )


@contextmanager
def _lightning_quiet(quiet):
    """Silence Lightning's device report under ``quiet``, and advice that does not apply here."""
    loggers = [logging.getLogger(name) for name in LIGHTNING]
    levels = [log.level for log in loggers]
    # Lightning logs an advertisement for its cloud logger whenever no LitLogger is in use.
    advertising = [logging.getLogger(f"{name}.utilities.rank_zero") for name in LIGHTNING]
    for log in advertising:
        log.addFilter(_no_advert)
    with warnings.catch_warnings():
        # The images are in memory and a minibatch is one slice: loader workers would only copy.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # The epoch's numbers that SVIModule logs are reduced over the processes already.
        warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
        # Lightning's own use of a torch API that newer torch deprecates.
        warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
        if quiet:
            for log in loggers:
                log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)
            for log in advertising:
                log.removeFilter(_no_advert)


LIGHTNING = ("lightning.pytorch", "lightning.fabric")


def _no_advert(record):
    """A logging filter that drops Lightning's "Tip: ... litlogger" message."""
    return "litlogger" not in record.getMessage().lower()
