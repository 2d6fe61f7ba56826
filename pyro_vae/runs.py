"""Run directories: train one, write it atomically, load it back.

A run directory holds::

    config.json            the Config that reproduces the run
    checkpoint.pt          plain tensors and primitives only (loaded with weights_only=True):
                           the model and guide, and the training state to resume from
    metrics.json           ELBO and log p(x) in nats per image, and what they were measured with
    history.json           per-epoch train and test ELBO
    samples.png  reconstructions.png  latent.png  training-curve.png
"""

import json
import math
import os
import time

import pyro
import torch

from . import evaluate, plots, program
from .checkpoints import (
    CHECKPOINT,
    _atomic_write,
    checkpoint_header,
    read_checkpoint,
    remove_stray_temporaries,
    save_checkpoint,
    write_json,
)
from .config import MAX_COUNT, Config, build, check_seed
from .data import as_images, as_numbers, balanced_labels, load_dataset, repeat_labelled
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergenceError,
    ProgramError,
    PyroVAEError,
    RunDirError,
    first_line,
    program_error_line,
    shown,
)
from .guides import per_image
from .lock import writing
from .objectives import kl_warmup
from .resources import check_fits, check_sizes, faults, guarded, is_out_of_memory
from .train import fit, out_of_time

CONFIG = "config.json"


def prepare_run_dir(path, overwrite=False):
    """Create ``path``; refuse one that exists and is not empty unless ``overwrite``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise RunDirError(
            f"{path} exists and is not empty; pass --overwrite or choose another --out"
        )
    with faults():
        os.makedirs(path, exist_ok=True)


def default_run_dir(dataset):
    if dataset.startswith("folder:"):  # name the run after the folder, not its path
        dataset = os.path.basename(os.path.normpath(dataset[len("folder:") :])) or "folder"
    return os.path.join("runs", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")


class Run:
    """A trained model and guide with the config that made them.

    ``x`` arguments are image tensors shaped like the dataset's, ``(N, C, H, W)`` or ``(N, H, W)``
    for one channel, with values in [0, 1]; binarize them yourself (e.g. ``torch.bernoulli(x)``)
    when the model has a Bernoulli likelihood. Results are in nats: log-probabilities for binary
    images, log-densities for a continuous likelihood. ``y`` is what a conditional model is
    conditioned on: integer labels ``(N,)`` (or one label for all) for ``condition="label"``;
    for image completion the images whose observed quadrants are given (default: ``x`` itself, so
    ``log_px(x)`` is log p(hidden part | observed part)). Unconditional models ignore ``y``.
    """

    def __init__(self, config, model, guide, x_shape, path=None, num_classes=10):
        self.config = config
        self.model = model.eval()
        self.guide = guide.eval()
        self.x_shape = tuple(x_shape)
        self.path = path
        self.num_classes = num_classes

    @property
    def structure(self):
        """What the program door learned about the model (:class:`~pyro_vae.program.Structure`)."""
        return self.model.structure

    @property
    def binary(self):
        return self.structure.discrete_images

    @property
    def amortized(self):
        """Whether the guide infers q for any image (an encoder), rather than holding
        parameters per training image (a model file without a guide, trained by variational EM)."""
        return not per_image(self.guide)

    @property
    def conditioned_on(self):
        """``"label"``, ``"image"`` (completion) or ``None``: what this model's images are
        conditioned on (:attr:`pyro_vae.program.Structure.conditional`, :attr:`~pyro_vae.
        program.Condition.kind`)."""
        if not self.structure.conditional:
            return None
        return "image" if self.structure.y.kind == "image" else "label"

    def _images(self, x):
        return as_images(x, self.x_shape, binary=self.binary)

    def _inputs(self, x, y=None):
        x = self._images(x)
        return x, self._condition(y, x.shape[0], default=x)

    def _condition(self, y, n, default=None, kind=None):
        kind = kind or self.conditioned_on
        if kind is None:
            return None
        if kind == "image":
            if y is None and default is not None:
                return default
            y = self._images(y) if y is not None else None
        elif y is not None:
            y = as_numbers(y, "labels y")
            if y.dim() == 0:
                y = y.expand(n)
            if (
                y.is_floating_point()
                or y.dim() != 1
                or not ((y >= 0) & (y < self.num_classes)).all()
            ):
                raise DataError(
                    f"labels must be integers from 0 to {self.num_classes - 1}, one per image"
                )
        if y is None or y.shape[0] != n:
            what = "labels" if kind == "label" else "images with the observed quadrants"
            raise DataError(f"this model is conditional: pass y, {n} {what}")
        return y

    def guide_for(self, x, y=None, steps=300):
        """The guide that scores the images ``x``: the run's own if it is amortized; otherwise
        a per-image guide fitted to ``x`` by an E-step of ``steps`` steps (the decoder fixed)."""
        if self.amortized:
            return self.guide
        from .inference import e_step

        q = self.guide.fresh(x.shape[0])
        e_step(self.model, q, x, steps=steps, y=y)
        return q.eval()

    def elbo(self, x, num_samples=1, y=None):
        """Per-image ELBO estimates, shape ``(N,)``."""
        _check_count("num_samples", num_samples)
        x, y = self._inputs(x, y)
        return evaluate.elbo(self.model, self.guide_for(x, y), x, y, num_samples=num_samples)

    def log_px(self, x, num_samples=1000, progress=False, y=None):
        """Per-image importance-sampled log p(x) with ``num_samples`` samples, shape ``(N,)``."""
        _check_count("num_samples", num_samples)
        x, y = self._inputs(x, y)
        return evaluate.log_px(
            self.model, self.guide_for(x, y), x, y, num_samples=num_samples, progress=progress
        )

    @torch.no_grad()
    def encode(self, x, y=None):
        """The mean and standard deviation of q at the code site (:attr:`Structure.code`, ``"z"``
        for the built-in models) for each image, each ``(N, *shape)``."""
        x, y = self._inputs(x, y)
        return program.site_moments(self.guide_for(x, y), x, y, self.structure.code.name)

    @torch.no_grad()
    def decode(self, z, y=None, x=None):
        """The mean image of p(x|z) for each latent ``z`` ``(N, *shape)`` of the code site.

        ``x``: ``N`` images, for a program whose image distribution reads the images beyond
        observing them (:attr:`~pyro_vae.program.Structure.reads_x`: a Multinomial whose
        ``total_count`` is taken from them); it is refused without them, and they are unused
        by any other program."""
        code = self.structure.code
        z = as_numbers(z, "latents z").float()
        if z.dim() != 1 + len(code.shape) or tuple(z.shape[1:]) != code.shape or not len(z):
            raise DataError(
                f"latents of shape {tuple(z.shape)} do not fit this model, which expects "
                f"(N, {', '.join(map(str, code.shape))}) with N >= 1 at its site {shown(code.name)}"
            )
        if not torch.isfinite(z).all():
            raise DataError("the latents contain NaN or infinite values")
        x = self._images(x) if x is not None else None
        return program.decode(self.model, z, self._condition(y, z.shape[0]), x=x)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """The image site's mean at the mean of q for every latent site, ``(N, *x_shape)``: the
        model run on the images ``x`` where its image distribution reads them."""
        x, y = self._inputs(x, y)
        point = program.site_values(self.guide_for(x, y), x, y)
        return program.decode(self.model, point, y, x=x)

    @torch.no_grad()
    def sample(self, n, seed=None, y=None, x=None):
        """``n`` images: the image site's mean for latents drawn from the prior,
        ``(n, *x_shape)``. A program whose image distribution reads the images
        (:attr:`~pyro_vae.program.Structure.reads_x`, a Multinomial's total count) draws given
        ``n`` images ``x`` (:func:`pyro_vae.program.generate`).

        For a conditional model ``y`` is the label(s) to generate, or the images to complete. A run
        trained with labels whose program samples the class (M2, a model file with ``--labels``)
        generates class ``y`` by fixing its class site to it. A ``y`` outside the run's classes,
        or given to a run whose model does not read one, is refused.
        """
        _check_count("n", n)
        # M2 and a model file trained with labels: the class is a latent site of the program
        by_class_site = self.conditioned_on is None and self.config.labels is not None
        if y is not None and self.conditioned_on is None and not by_class_site:
            raise DataError(
                "this run's model does not read y, so it cannot generate a given class; sample "
                "without y, or train a run that does (--condition label, or --model m2 --labels N)"
            )
        if seed is not None:
            check_seed(seed)
        check_fits(
            n * math.prod(self.x_shape) * 4 * 3,
            f"n {n} asks for images of {'x'.join(map(str, self.x_shape))} and their decoder "
            "outputs",
            "ask for fewer images at a time",
        )
        if by_class_site and y is not None:
            labels = self._condition(y, n, kind="label")
            fixed = {self.structure.y.site: program.class_value(self.structure, labels)}
        else:
            y = self._condition(y, n)
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed)
            if by_class_site and y is not None:
                return program.decode(self.model, fixed)
            return program.generate(self.model, n, y, x=None if x is None else self._images(x))

    def state(self):
        return {
            **checkpoint_header(self.config, self.x_shape, self.num_classes),
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
        }

    def save(self, path):
        _atomic_write(os.path.join(path, CHECKPOINT), lambda f: save_checkpoint(self.state(), f))


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise ConfigError(
            f"{name} must be a positive integer up to {MAX_COUNT} (2**31 - 1), got {shown(value)}"
        )


def _check_path(path, what="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise RunDirError(f"{what} must be a path (a str), got {type(path).__name__}")
    return os.fspath(path)


def _check_outside_data(out, dataset):
    """Refuse a run directory inside the folder of a ``folder:`` data set: its figures are images
    too, and would join the data set the next time it is read."""
    if not dataset.startswith("folder:"):
        return
    folder = os.path.realpath(dataset[len("folder:") :])
    where = os.path.realpath(out)
    if where == folder or where.startswith(folder.rstrip(os.sep) + os.sep):
        raise RunDirError(
            f"{out} is inside the data set's folder {dataset[len('folder:') :]}: the run's "
            "figures would join the data set; choose an --out outside it"
        )


@guarded()
def load_run(path):
    """Load a run directory (or a ``checkpoint.pt`` inside one) written by pyro_vae.

    :rtype: Run
    """
    path = _check_path(path)
    file = path if os.path.isfile(path) else os.path.join(path, CHECKPOINT)
    state = read_checkpoint(file)
    config = state["config"]
    num_classes = int(state.get("num_classes", 10))
    model, guide = build(config, state["x_shape"], num_classes, train_size=state.get("train_size"))
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{file} does not match its own config ({str(e).splitlines()[0][:200]})"
        ) from None
    path = os.path.dirname(os.path.abspath(file))
    run = Run(config, model, guide, state["x_shape"], path=path, num_classes=num_classes)
    run.progress = (state.get("epoch", config.epochs), state.get("step", 0))  # how far it trained
    # whether training stopped at its time limit (then an epoch short of config.epochs is the end)
    run.out_of_time = not run.progress[1] and out_of_time(
        config.time_limit, state.get("seconds", 0.0), run.progress[0]
    )
    return run


@guarded()
def train_run(config, out=None, overwrite=False, quiet=False, checkpoint_every=None, started=None):
    """Train the run ``config`` describes and write its run directory; return the :class:`Run`.

    ``checkpoint.pt`` is rewritten atomically at the end of every epoch (and every
    ``checkpoint_every`` steps), so a run killed at any moment continues with :func:`resume_run`.

    :param Config config: what to train.
    :param str out: the run directory (default ``runs/DATASET-TIMESTAMP``).
    :param bool overwrite: allow writing into a non-empty directory.
    :param bool quiet: no progress bars.
    :param int checkpoint_every: steps between checkpoints within an epoch (default: none).
    :param callable started: called as ``started(out)`` once the run directory is taken, before
        the data and the networks are made (the command line names the directory there).
    """
    if not isinstance(config, Config):
        raise ConfigError(f"config must be a pyro_vae.Config, got {type(config).__name__}")
    out = _check_path(out, "out") if out is not None else default_run_dir(config.dataset)
    _check_outside_data(out, config.dataset)
    data = _training_data(config)
    check_sizes(config, data.x_shape, data.num_classes)
    with writing(out, overwrite):
        write_json(os.path.join(out, CONFIG), config.as_dict())
        if started is not None:
            started(out)
        return _train(config, data, out, None, quiet, checkpoint_every)


@guarded()
def resume_run(path, quiet=False, checkpoint_every=None, started=None):
    """Continue the run in ``path`` from its last checkpoint; return what :func:`train_run` does.

    The result is the same, parameter for parameter, as that of the run never interrupted. A run
    killed before its first checkpoint starts again from its ``config.json``; a finished one is
    evaluated again.

    :param str path: a run directory written by :func:`train_run` or ``pyro-vae train``.
    :param callable started: as for :func:`train_run`.
    """
    path = _check_path(path)
    config = read_config(os.path.join(path, CONFIG))
    with writing(path, resume=True, command="train --resume"):
        return _resume(config, path, quiet, checkpoint_every, started)


def _resume(config, path, quiet, checkpoint_every, started=None):
    file = os.path.join(path, CHECKPOINT)
    state = read_checkpoint(file) if os.path.exists(file) else None
    if state is not None and state["config"] != config:
        key, ours, theirs = config.first_difference(state["config"])
        raise CheckpointError(
            f"{file} comes from a different configuration than {CONFIG} ({key} {shown(theirs)} "
            f"there, {shown(ours)} here); put back the run's own checkpoint or start a new run"
        )
    data = _training_data(config)
    check_sizes(config, data.x_shape, data.num_classes)
    if state is not None and tuple(state["x_shape"]) != data.x_shape:
        raise CheckpointError(
            f"{file} was trained on images of shape {tuple(state['x_shape'])}, but {config.dataset} "
            f"has {data.x_shape}"
        )
    remove_stray_temporaries(path)
    if started is not None:  # once the checkpoint is found good
        started(path)
    return _train(config, data, path, state, quiet, checkpoint_every)


def read_config(file):
    """The :class:`Config` saved in ``file`` (a ``config.json``), checked like any other."""
    if not os.path.isfile(file):
        raise RunDirError(f"no config file at {file}")
    try:
        with open(file) as f:
            d = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, or huge numbers
        raise ConfigError(f"cannot read {file}: {first_line(e)}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{file} does not hold a JSON object of settings")
    return Config.from_dict(d)


def _training_data(config):
    data = load_run_data(config)
    if config.uses_likelihood("bernoulli") and not data.binary:
        raise DataError(
            f"{config.dataset} with --binarize none has grayscale pixels, but the Bernoulli "
            "likelihood needs binary ones; use --binarize dynamic or --binarize static, or a "
            "continuous --likelihood"
        )
    if data.train_x.shape[0] < config.batch_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the training set "
            f"({data.train_x.shape[0]} images)"
        )
    return data


def _train(config, data, out, state, quiet, checkpoint_every, fit=fit):
    """Fit (from ``state`` if given), checkpointing into ``out``, then evaluate and draw.

    ``fit`` is :func:`pyro_vae.train.fit` or a trainer with its signature that returns ``None`` in
    the processes that must not write (:func:`pyro_vae.distributed.fit_distributed` in those other
    than global rank 0); there ``_train`` returns ``(None, None)``. Only the writing process calls
    ``checkpoint``, and it writes ``config.json`` first if it is not there yet.
    """
    file = os.path.join(out, CHECKPOINT)
    shape = "x".join(map(str, data.x_shape))
    sizes = [
        f"{name} {value if not isinstance(value, tuple) else list(value)}"
        for name, value in (("z_dim", config.z_dim), ("hidden_dims", config.hidden_dims))
        if value is not None  # None: the model file's own
    ]
    phase = {"doing": f"building the networks ({', '.join([*sizes, f'images of {shape}'])})"}

    def resume_hint():
        if os.path.exists(file):
            return f"the last checkpoint stays; pyro-vae train --resume {out} continues from it"
        return None

    with faults(doing=lambda: phase["doing"], fix=resume_hint):
        return _train_steps(config, data, out, state, quiet, checkpoint_every, fit, phase)


def _train_steps(config, data, out, state, quiet, checkpoint_every, fit, phase):
    start = time.perf_counter()
    file = os.path.join(out, CHECKPOINT)
    header = checkpoint_header(config, data.x_shape, data.num_classes)
    saved = {}

    def checkpoint(train_state):
        try:
            if not os.path.exists(os.path.join(out, CONFIG)):
                write_json(os.path.join(out, CONFIG), config.as_dict())
            _atomic_write(file, lambda f: save_checkpoint({**header, **train_state}, f))
        except OSError as e:  # a full disk, say: stop cleanly, keeping the last good checkpoint
            raise RunDirError(
                f"cannot write {file} ({e.strerror or e}); the last checkpoint, if any, stays and "
                f"pyro-vae train --resume {out} continues from it"
            ) from None
        saved.update(epoch=train_state["epoch"], step=train_state["step"])

    pyro.set_rng_seed(config.seed)  # the networks' initial weights come from the seed too
    examples = data.test_x[:4] if len(data.test_x) else data.train_x[:4]
    labels = data.test_y[:4] if len(data.test_x) else data.train_y[:4]
    model, guide = build(
        config,
        data.x_shape,
        data.num_classes,
        x=examples,
        y=data.model_y(examples, labels),
        train_size=data.train_x.shape[0],
    )
    phase["doing"] = (
        f"training with batch_size {config.batch_size} and num_particles {config.num_particles}"
    )
    try:
        history = fit(
            model,
            guide,
            data,
            elbo=config.make_elbo(model.structure.max_plate_nesting),
            quiet=quiet,
            resume_from=state,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            on_epoch=kl_warmup([model, guide], config.beta, config.kl_warmup),
            **config.fit_options(),
        )
    except Exception as e:
        e = _program_failure(e, f"on the end-of-epoch test ELBO ({len(data.test_x)} test images)")
        last = saved or (state and {"epoch": state["epoch"], "step": state["step"]})
        if not last:
            raise type(e)(f"{e}; no checkpoint was written") from None
        where = (
            f"epoch {last['epoch'] + 1}, step {last['step']}"
            if last["step"]
            else f"the end of epoch {last['epoch']}"
        )
        raise type(e)(f"{e}; the last good checkpoint, from {where}, stays in {file}") from None
    if history is None:
        return None, None
    run = Run(config, model, guide, data.x_shape, path=out, num_classes=data.num_classes)
    write_json(os.path.join(out, "history.json"), history.as_dict())

    phase["doing"] = f"evaluating with log_px_samples {config.log_px_samples}"
    try:
        metrics = _report(run, data, config, history, quiet, phase)
    except Exception as e:
        e = _program_failure(e, f"while evaluating the trained run ({phase['doing']})")
        raise type(e)(
            f"{e}; training finished, and its checkpoint stays in {file}: pyro-vae train "
            f"--resume {out} evaluates it again"
        ) from None
    metrics["total_seconds"] = round(time.perf_counter() - start, 2)
    write_json(os.path.join(out, "metrics.json"), metrics)
    return run, metrics


def _program_failure(error, where):
    """``error`` as a one-line :class:`ProgramError` when it is the program's (a model that
    raises, or gives NaN to Pyro's checks, outside a training step); errors of the file system
    and of memory, and the package's own, are re-raised as they are."""
    if isinstance(error, PyroVAEError):
        if isinstance(error, (DivergenceError, ProgramError)):
            return error
        raise error
    if isinstance(error, OSError) or is_out_of_memory(error):
        raise error
    return ProgramError(f"the model or guide failed {where}: {program_error_line(error)}")


def _report(run, data, config, history, quiet, phase):
    """The trained run's numbers (metrics.json without its total time) and its figures;
    ``phase["doing"]`` says which step is running."""
    out = run.path
    train_seconds = history.seconds[-1]
    metrics = evaluate_run(run, data, num_samples=config.log_px_samples, quiet=quiet)
    # with a time limit, the epochs trained may be fewer than config.epochs
    metrics.update(epochs=history.epoch[-1], seconds=round(train_seconds, 2))
    if config.time_limit is not None:
        metrics["time_limit"] = config.time_limit
    phase["doing"] = "drawing the figures"
    write_figures(run, data, history.as_dict(), metrics["test_log_px"])
    metrics["figures"] = sorted(n for n in os.listdir(out) if n.endswith(".png"))
    if run.conditioned_on == "label":
        from .classifier import label_effect

        metrics["label_effect"] = round(label_effect(run), 3)
    if run.conditioned_on == "image":
        from . import completion

        metrics.update(completion.report(run, data, quiet))
        metrics["figures"].append("inpainting.png")
    report = config.entry().report
    if report is not None:  # the model's own numbers (M2's accuracy, the mixture's clusters)
        metrics.update(report(run, data))
        metrics["figures"] = sorted(n for n in os.listdir(out) if n.endswith(".png"))
    return metrics


def evaluate_run(run, data, num_samples=1000, elbo_samples=1, quiet=True):
    """ELBO on both splits and importance-sampled log p(x) on the test split, nats per image."""
    pyro.set_rng_seed(0)
    train_x, train_y = data.split("train")
    train_y = data.model_y(train_x, train_y)
    test_y = data.model_y(data.test_x, data.test_y)
    started = time.perf_counter()
    log_px = run.log_px(data.test_x, num_samples=num_samples, progress=not quiet, y=test_y)
    return {
        "dataset": data.name,
        "binarize": data.binarize,
        "train_elbo": round(run.elbo(train_x, elbo_samples, y=train_y).mean().item(), 3),
        "test_elbo": round(run.elbo(data.test_x, elbo_samples, y=test_y).mean().item(), 3),
        "test_log_px": round(log_px.mean().item(), 3),
        "test_log_px_stderr": evaluate.standard_error(log_px),
        "log_px_samples": num_samples,
        "elbo_samples": elbo_samples,
        "test_images": int(data.test_x.shape[0]),
        "log_px_seconds": round(time.perf_counter() - started, 2),
        "units": "nats per image (higher is better)",
        "measures": _what_log_px_measures(
            run, data.test_x[:1], None if test_y is None else test_y[:1]
        ),
    }


def _what_log_px_measures(run, x, y=None):
    discrete = run.binary
    if run.conditioned_on == "image":
        return "log p(hidden quadrants | observed quadrants), binary pixels"
    if run.conditioned_on == "label":
        return "log p(x | label)" + ("" if discrete else ", a density")
    return program.measures(run.structure)


def load_run_data(config):
    """The dataset a run with ``config`` trains and is evaluated on."""
    data = load_dataset(
        config.dataset,
        config.binarize,
        image_size=config.image_size,
        exclude_classes=config.exclude_classes,
    )
    data.y_is_x = config.observes_images()
    # M2, and a model file with --labels, see the labels of a chosen few; the mixture, none
    if config.observes_labels_of_some():
        data.labelled = (
            balanced_labels(data.train_y, config.labels, config.seed)
            if config.labels is not None
            else torch.zeros(len(data.train_y), dtype=torch.bool)
        )
        if config.labelled_share is not None:
            data = repeat_labelled(data, config.labelled_share)
    return data


def class_samples(run, per_class=10, seed=0):
    """Images generated for each label of a run that generates per class (a label-conditioned
    run, M2, a model file trained with labels), one row of ``per_class`` each."""
    labels = torch.arange(run.num_classes).repeat_interleave(per_class)
    return run.sample(len(labels), seed=seed, y=labels)


def write_figures(run, data, history, log_px=None):
    out = run.path
    name = data.name
    if run.conditioned_on == "label":
        plots.image_grid(
            class_samples(run),
            os.path.join(out, "samples.png"),
            title=f"{name}: decoder means for z ~ p(z|y), one row per label y = 0, 1, ...",
        )
    elif run.conditioned_on is None and run.structure.reads_x:
        # its image distribution reads the images (a Multinomial's total count): drawn given
        # test images' counts, and titled so
        given = data.test_x[:100]
        with torch.random.fork_rng():
            torch.manual_seed(0)
            images = program.generate(run.model, given.shape[0], x=given)
        dist = run.structure.image_dist
        read = "the on-pixel counts of" if dist == "Multinomial" else "what the model reads from"
        plots.image_grid(
            images,
            os.path.join(out, "samples.png"),
            title=f"{name}: {dist} means for z ~ p(z), given {read} {given.shape[0]} test images",
        )
    elif run.conditioned_on is None:
        plots.image_grid(
            run.sample(100, seed=0),
            os.path.join(out, "samples.png"),
            title=f"{name}: decoder means for z ~ p(z)",
        )
    weighted = run.config.beta != 1 or run.config.kl_warmup
    plots.training_curve(
        history,
        os.path.join(out, "training-curve.png"),
        log_px=log_px,
        train_label=(
            f"train objective: ELBO with the KL weighted by beta = {run.config.beta:g}"
            + (f", warmed up over {run.config.kl_warmup} epochs" if run.config.kl_warmup else "")
            if weighted
            else "train ELBO (minibatch average)"
        ),
    )
    originals = data.test_x[:30]
    y = data.model_y(originals, data.test_y[:30])
    reconstructed = run.reconstruct(originals, y)
    title = f"{name}: test images (upper rows) and reconstructions at the posterior mean"
    if run.conditioned_on == "image":
        # The decoder models only the hidden quadrants; its output elsewhere was never trained.
        from .completion import composite

        reconstructed = composite(originals, reconstructed, run.structure.y.given)
        title += "\n(observed quadrants as given, hidden ones decoded)"
    elif run.structure.reads_x:
        title += f"\n({run.structure.image_dist} means, the model run on each test image)"
    plots.reconstructions(
        originals, reconstructed, os.path.join(out, "reconstructions.png"), title=title
    )
    n = min(2000, data.test_x.shape[0])
    codes, _ = run.encode(data.test_x[:n], data.model_y(data.test_x[:n], data.test_y[:n]))
    site = run.structure.code.name
    plots.latent_scatter(
        codes.reshape(n, -1),
        data.test_y[:n],
        os.path.join(out, "latent.png"),
        title=f"{name}: posterior means of {n} test images"
        + ("" if site == "z" else f" (latent site {shown(site)})"),
        names=data.class_names,
    )
