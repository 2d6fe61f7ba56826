"""Memory and the file system: one place where running out of either becomes a one-line error.

Two things are done here and nowhere else:

- sizes are checked at the door: :func:`check_fits` compares what a setting asks for (the
  networks' parameters, a minibatch, the images of a dataset) with the memory this process may
  use, and names the setting when it does not fit;
- errors that escape the door become package errors: :func:`translate` turns an ``OSError`` into a
  :class:`~pyro_vae.errors.RunDirError` naming the file and the fix, and an allocator's failure
  (``MemoryError``, torch's "can't allocate memory", CUDA's out of memory) into a
  :class:`~pyro_vae.errors.ResourceError`. :func:`guarded` applies it to a function, the CLI to
  every command.
"""

import contextlib
import errno
import functools
import math
import os
import re
import resource

from .errors import PyroVAEError, ResourceError, RunDirError

# What the door leaves for everything else (the interpreter, torch, the data) when it decides
# whether a request fits: a request must fit in this fraction of the available memory.
HEADROOM = 0.8

_FIXES = {
    errno.EROFS: "the file system is read-only; choose a writable --out",
    errno.EACCES: "permission denied; choose a folder you can write to (--out)",
    errno.EPERM: "permission denied; choose a folder you can write to (--out)",
    errno.ENOSPC: "the disk is full; free some space",
    errno.EDQUOT: "the disk quota is used up; free some space",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
    errno.EEXIST: "it exists and is not a folder; choose another path",
    errno.ENOENT: "its folder does not exist; create it first or choose another path",
    errno.EISDIR: "it is a folder; name a file",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
}
_ALLOC = re.compile(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]i?B)", re.IGNORECASE)
_UNITS = {"bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def human(nbytes):
    """``nbytes`` as a short string: ``"512 B"``, ``"3.1 GB"``."""
    value = float(nbytes)
    if not math.isfinite(value):
        return "more than any machine holds"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000


def available_memory():
    """Bytes this process may still allocate: the machine's memory, or less under an
    ``RLIMIT_AS``/``RLIMIT_DATA`` limit (``ulimit -v``), less what the process holds already."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    used = _status_kb()
    for limit, key in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(0, soft - used.get(key, 0) * 1024))
    return min(limits) if limits else float("inf")


def _status_kb():
    try:
        with open("/proc/self/status") as f:
            fields = (line.split(":", 1) for line in f if line.startswith("Vm"))
            return {k: int(v.split()[0]) for k, v in fields}
    except (OSError, ValueError):
        return {}


def check_fits(nbytes, what, fix):
    """Raise :class:`ResourceError` when ``nbytes`` (asked for by ``what``, e.g. ``"z_dim 10**9
    asks for the networks' parameters"``) cannot fit in memory; ``fix`` says what to change."""
    available = available_memory()
    if nbytes > HEADROOM * available:
        raise ResourceError(
            f"{what}: {human(nbytes)}, but this process can allocate about {human(available)}; "
            f"{fix}"
        )


def is_out_of_memory(error):
    """Whether ``error`` is an allocator's failure: Python's, torch's on the CPU or on CUDA."""
    if isinstance(error, MemoryError) and not isinstance(error, PyroVAEError):
        return True
    oom = getattr(__import__("torch"), "OutOfMemoryError", ())
    if oom and isinstance(error, oom):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text
        or "out of memory" in text.lower()
        or "not enough memory" in text.lower()
    )


def _allocation(error):
    match = _ALLOC.search(str(error))
    if not match:
        return ""
    number, unit = match.groups()
    scale = _UNITS.get(
        unit.lower(), {"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}.get(unit.lower())
    )
    return f" (an allocation of {human(float(number) * (scale or 1))})"


def os_error_message(error, fix=None):
    """One line for an ``OSError``: the path, the system's reason, and what to do."""
    path = error.filename if error.filename is not None else "a file"
    reason = error.strerror or type(error).__name__
    advice = _FIXES.get(error.errno, "check the path and try again")
    return f"{path}: {reason}; {advice}" + (f"; {fix}" if fix else "")


def translate(error, doing=None, fix=None):
    """The package error for ``error``, or ``None`` when it is not a file-system or memory error.

    :param str doing: what ran out of memory, with the settings that size it ("training with
        batch_size 128 and num_particles 1").
    :param str fix: what the user can do afterwards, added to the message (e.g. how to resume).
    """
    if isinstance(error, PyroVAEError):
        return None
    if is_out_of_memory(error):
        what = f" while {doing}" if doing else ""
        advice = "choose smaller sizes"
        return ResourceError(
            f"out of memory{_allocation(error)}{what}; {advice}" + (f"; {fix}" if fix else "")
        )
    if isinstance(error, OSError):
        return RunDirError(os_error_message(error, fix))
    return None


@contextlib.contextmanager
def faults(doing=None, fix=None):
    """Turn file-system and memory errors raised inside into package errors (see
    :func:`translate`); ``doing`` and ``fix`` may be callables, evaluated when an error comes."""
    try:
        yield
    except Exception as e:
        resolve = lambda v: v() if callable(v) else v  # noqa: E731
        translated = translate(e, resolve(doing), resolve(fix))
        if translated is None:
            raise
        raise translated from None


def guarded(doing=None):
    """Decorate a public function so that its file-system and memory errors are package errors."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with faults(doing):
                return fn(*args, **kwargs)

        return inner

    return wrap


# Bytes per parameter while training: the weight, its gradient and Adam's two moments (float32).
TRAINING_BYTES_PER_PARAMETER = 16
# Floats kept per image and pixel during a training step (input, logits, their gradients, ...):
# a floor, so that the door refuses only what cannot possibly fit.
FLOATS_PER_PIXEL = 4
SIZE_SETTINGS = {"z_dim": 2, "hidden_dims": (8,), "z1_dim": 1}


def parameter_count(config, x_shape, num_classes=10):
    """The number of parameters of the built-in model and guide ``config`` describes, counted on
    torch's ``meta`` device (nothing is allocated); ``None`` for a model file."""
    import torch

    from .config import make_built_in

    if config.entry().user_code:
        return None
    try:
        with torch.device("meta"):  # the networks only: nothing is run, so the door is not needed
            model, guide = make_built_in(config, x_shape, num_classes)
    except RuntimeError as e:  # a layer whose size torch cannot even count
        if "overflow" in str(e).lower():
            return math.inf
        raise
    params = {id(p): p for m in (model, guide) for p in m.parameters()}
    return sum(p.numel() for p in params.values())


def _blame(config, x_shape, num_classes, total):
    """The size setting that accounts for most of ``total`` parameters: the one whose reduction
    to a small value removes the most."""
    from dataclasses import replace

    best, best_saved = None, 0
    for name, small in SIZE_SETTINGS.items():
        value = getattr(config, name)
        if value is None:
            continue
        if name == "hidden_dims":
            small = tuple(min(h, 8) for h in value)
            if config.net == "conv":
                small = tuple(8 * (i + 1) for i in range(len(value)))
        try:
            rest = parameter_count(replace(config, **{name: small}), x_shape, num_classes)
        except Exception:  # a combination the builder refuses: not this setting, then
            continue
        saved = math.inf if rest < total == math.inf else total - rest
        if saved > best_saved:
            best, best_saved = name, saved
    return best


def check_sizes(config, x_shape, num_classes=10):
    """Refuse, before anything is allocated, a built-in model whose parameters (with their
    gradients and Adam's state) or whose training minibatch cannot fit in memory; name the
    setting that asks for it."""
    shape = "x".join(map(str, x_shape))
    count = parameter_count(config, x_shape, num_classes)
    if count is not None:
        nbytes = count * TRAINING_BYTES_PER_PARAMETER
        if nbytes > HEADROOM * available_memory():
            name = _blame(config, x_shape, num_classes, count)
            setting = (
                f"{name} {getattr(config, name)!r}"
                if name
                else f"the images' size {shape} with hidden_dims {list(config.hidden_dims)}"
            )
            amount = f"{count:,}" if count < math.inf else "too many"
            check_fits(
                nbytes,
                f"{setting} asks for {amount} parameters (with gradients and Adam's state)",
                f"choose a smaller {name or 'image_size'}",
            )
    pixels = 1
    for d in x_shape:
        pixels *= d
    check_fits(
        config.batch_size * config.num_particles * pixels * FLOATS_PER_PIXEL * 4,
        f"a training step on batch_size {config.batch_size} x num_particles "
        f"{config.num_particles} images of {shape} takes at least",
        "choose a smaller batch_size or num_particles",
    )
