"""Run directories: train one, write it atomically, load it back.

A run directory holds::

    config.json            the Config that reproduces the run
    checkpoint.pt          plain tensors and primitives only (loaded with weights_only=True)
    metrics.json           ELBO and log p(x) in nats per image, and what they were measured with
    history.json           per-epoch train and test ELBO
    samples.png  reconstructions.png  latent.png  training-curve.png
"""

import json
import os
import platform
import tempfile
import time
import warnings

import pyro
import torch
import torchvision

from . import evaluate, plots
from .config import Config, build
from .data import as_images, load_dataset
from .errors import CheckpointError, ConfigError, DataError, PyroVAEError, RunDirError
from .train import fit

CHECKPOINT = "checkpoint.pt"
FORMAT = "pyro_vae.checkpoint"
FORMAT_VERSION = 1


def versions():
    return {
        "pyro_vae": "0.1.0",
        "pyro": str(pyro.__version__),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def _atomic_write(path, write):
    """Write through ``write(file)`` to a temporary file beside ``path``, fsync, then replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def prepare_run_dir(path, overwrite=False):
    """Create ``path``; refuse one that exists and is not empty unless ``overwrite``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise RunDirError(
            f"{path} exists and is not empty; pass --overwrite or choose another --out"
        )
    os.makedirs(path, exist_ok=True)


def default_run_dir(dataset):
    return os.path.join("runs", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")


class Run:
    """A trained model and guide with the config that made them.

    ``x`` arguments are image tensors shaped like the dataset's, ``(N, C, H, W)`` or ``(N, H, W)``
    for one channel, with values in [0, 1]; binarize them yourself (e.g. ``torch.bernoulli(x)``)
    when the model has a Bernoulli likelihood. Results are in nats.
    """

    def __init__(self, config, model, guide, x_shape, path=None):
        self.config = config
        self.model = model.eval()
        self.guide = guide.eval()
        self.x_shape = tuple(x_shape)
        self.path = path

    def _images(self, x):
        return as_images(x, self.x_shape, binary=True)

    def elbo(self, x, num_samples=1):
        """Per-image ELBO estimates, shape ``(N,)``."""
        _check_count("num_samples", num_samples)
        return evaluate.elbo(self.model, self.guide, self._images(x), num_samples=num_samples)

    def log_px(self, x, num_samples=1000, progress=False):
        """Per-image importance-sampled log p(x) with ``num_samples`` samples, shape ``(N,)``."""
        _check_count("num_samples", num_samples)
        return evaluate.log_px(
            self.model, self.guide, self._images(x), num_samples=num_samples, progress=progress
        )

    @torch.no_grad()
    def encode(self, x):
        """The guide's ``loc`` and ``scale`` for each image, each ``(N, z_dim)``."""
        fn = self.guide.z_dist(self._images(x)).base_dist
        return fn.loc, fn.scale

    @torch.no_grad()
    def decode(self, z):
        """The mean image of p(x|z) for each latent ``z`` ``(N, z_dim)``."""
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() != 2 or z.shape[1] != self.config.z_dim:
            raise PyroVAEError(
                f"latents of shape {tuple(z.shape)} do not fit this model, which expects "
                f"(N, {self.config.z_dim})"
            )
        return self.model.x_dist(z).mean

    @torch.no_grad()
    def sample(self, n, seed=None):
        """``n`` images: decoder means for latents drawn from the prior, ``(n, *x_shape)``."""
        _check_count("n", n)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.z_dim, generator=generator)
        return self.decode(z * self.model.prior_scale + self.model.prior_loc)

    def state(self):
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.as_dict(),
            "x_shape": list(self.x_shape),
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
            "versions": versions(),
        }

    def save(self, path):
        _atomic_write(os.path.join(path, CHECKPOINT), lambda f: torch.save(self.state(), f))


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def load_run(path):
    """Load a run directory (or a ``checkpoint.pt`` inside one) written by pyro_vae.

    :rtype: Run
    """
    file = path if os.path.isfile(path) else os.path.join(path, CHECKPOINT)
    if not os.path.exists(file):
        raise CheckpointError(f"no checkpoint at {file}; is {path} a pyro_vae run directory?")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols; we refuse anyway
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or a pickle with non-tensor objects
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {file}: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a pyro_vae checkpoint")
    config = Config.from_dict(state["config"])
    model, guide = build(config, state["x_shape"])
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{file} does not match its own config ({str(e).splitlines()[0][:200]})"
        ) from None
    return Run(config, model, guide, state["x_shape"], path=os.path.dirname(os.path.abspath(file)))


def train_run(config, out=None, overwrite=False, quiet=False, fit=fit):
    """Train the run ``config`` describes and write its run directory.

    Returns the :class:`Run` and its metrics, or ``(None, None)`` in a process that leaves the writing
    to another (a data-parallel process other than global rank 0).

    :param Config config: what to train.
    :param str out: the run directory (default ``runs/DATASET-TIMESTAMP``).
    :param bool overwrite: allow writing into a non-empty directory.
    :param bool quiet: no progress bars.
    :param fit: the trainer, :func:`pyro_vae.train.fit` or one with its signature that returns
        ``None`` in the processes that must not write, such as
        :func:`pyro_vae.distributed.fit_distributed`.
    """
    out = out or default_run_dir(config.dataset)
    start = time.perf_counter()
    data = load_dataset(config.dataset, config.binarize)
    if not data.binary:
        raise DataError(
            f"{config.dataset} with --binarize none has grayscale pixels, but the Bernoulli "
            "likelihood needs binary ones; use --binarize dynamic or --binarize static"
        )
    if data.train_x.shape[0] < config.batch_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the training set "
            f"({data.train_x.shape[0]} images)"
        )
    # The directory stays empty until training ends: data-parallel processes learn their rank only
    # once they have met, and every one of them passes through here first.
    prepare_run_dir(out, overwrite)
    pyro.set_rng_seed(config.seed)  # the networks' initial weights come from the seed too
    model, guide = build(config, data.x_shape)
    history = fit(
        model,
        guide,
        data,
        elbo=config.make_elbo(),
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        quiet=quiet,
    )
    if history is None:
        return None, None
    write_json(os.path.join(out, "config.json"), config.as_dict())
    train_seconds = history.seconds[-1]
    run = Run(config, model, guide, data.x_shape, path=out)
    run.save(out)
    write_json(os.path.join(out, "history.json"), history.as_dict())

    metrics = evaluate_run(run, data, num_samples=config.log_px_samples, quiet=quiet)
    metrics.update(epochs=config.epochs, seconds=round(train_seconds, 2))
    write_figures(run, data, history.as_dict(), metrics["test_log_px"])
    metrics["total_seconds"] = round(time.perf_counter() - start, 2)
    write_json(os.path.join(out, "metrics.json"), metrics)
    return run, metrics


def evaluate_run(run, data, num_samples=1000, elbo_samples=1, quiet=True):
    """ELBO on both splits and importance-sampled log p(x) on the test split, nats per image."""
    pyro.set_rng_seed(0)
    train_x, _ = data.split("train")
    started = time.perf_counter()
    log_px = run.log_px(data.test_x, num_samples=num_samples, progress=not quiet)
    return {
        "dataset": data.name,
        "binarize": data.binarize,
        "train_elbo": round(run.elbo(train_x, elbo_samples).mean().item(), 3),
        "test_elbo": round(run.elbo(data.test_x, elbo_samples).mean().item(), 3),
        "test_log_px": round(log_px.mean().item(), 3),
        "test_log_px_stderr": round((log_px.std() / len(log_px) ** 0.5).item(), 3),
        "log_px_samples": num_samples,
        "elbo_samples": elbo_samples,
        "test_images": int(data.test_x.shape[0]),
        "log_px_seconds": round(time.perf_counter() - started, 2),
        "units": "nats per image (higher is better)",
    }


def write_figures(run, data, history, log_px=None):
    out = run.path
    name = data.name
    plots.image_grid(
        run.sample(100, seed=0),
        os.path.join(out, "samples.png"),
        title=f"{name}: decoder means for z ~ p(z)",
    )
    originals = data.test_x[:30]
    loc, _ = run.encode(originals)
    plots.reconstructions(
        originals,
        run.decode(loc),
        os.path.join(out, "reconstructions.png"),
        title=f"{name}: test images (upper rows) and reconstructions at the posterior mean",
    )
    n = min(2000, data.test_x.shape[0])
    codes, _ = run.encode(data.test_x[:n])
    plots.latent_scatter(
        codes,
        data.test_y[:n],
        os.path.join(out, "latent.png"),
        title=f"{name}: posterior means of {n} test images",
    )
    plots.training_curve(history, os.path.join(out, "training-curve.png"), log_px=log_px)
