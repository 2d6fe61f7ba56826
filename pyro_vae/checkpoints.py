"""Checkpoint files: written atomically, read without running anything they might hold.

A checkpoint is a ``torch.save`` of a dict of tensors and plain Python values only: the format and
its version, the :class:`~pyro_vae.config.Config`, the image shape, the library versions, the model's
and guide's ``state_dict`` and, from :func:`pyro_vae.train.fit`, the training state to resume from.
It is read back with ``torch.load(..., weights_only=True)``, which refuses any pickle that would
build other objects, so a malicious file is rejected before its payload can run.
"""

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import stat
import sys
import tempfile
import time
import warnings

import pyro
import torch

from ._version import __version__
from .config import MAX_COUNT, Config, check_x_shape
from .errors import CheckpointError, ConfigError, first_line, shown

CHECKPOINT = "checkpoint.pt"
FORMAT = "pyro_vae.checkpoint"
# 3 added the digest of the contents; 2 the training state (optimizer, position, generators);
# 1 held the model and guide only. Every version is read.
FORMAT_VERSION = 3
#: The key of a checkpoint's digest: SHA-256 of everything else in it (:func:`digest`).
DIGEST = "sha256"
TMP_SUFFIX = ".tmp"
_writes = {}  # per file name, for the testing hook in _fault_point


def versions():
    return {
        "pyro_vae": __version__,
        "pyro": str(pyro.__version__),
        "torch": str(torch.__version__),
        # From its metadata: importing torchvision only to read this costs seconds per command.
        "torchvision": importlib.metadata.version("torchvision"),
        "python": platform.python_version(),
    }


def _atomic_write(path, write):
    """Write through ``write(file)`` to a temporary file beside ``path``, fsync, then replace.

    A reader, or a process killed at any moment, sees the old file or the new one, never half of
    one; a write that fails leaves the old file and no temporary one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, _mode(path))  # mkstemp's is 0600: keep the file's, or follow the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            _fault_point(path, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            # A write to an open file (a full disk) names no file, a failed rename names the
            # temporary one: the error names the file the user asked for.
            e.filename, e.filename2 = path, None
        raise


def _mode(path):
    """The permissions a rewritten ``path`` gets: its own, or for a new file 0666 less the umask,
    as ``open`` would give it."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fault_point(path, f):
    """Testing hook for the kill-and-resume tests: with ``PYRO_VAE_TEST_PAUSE_IN_WRITE=NAME:K``
    in the environment, the K-th write of a file named NAME stops halfway (temporary file written,
    not yet in place), says so on stderr and sleeps, so that a test can SIGKILL the process there."""
    spec = os.environ.get("PYRO_VAE_TEST_PAUSE_IN_WRITE")
    if not spec:
        return
    name, _, count = spec.rpartition(":")
    if not count.isdigit():  # not the hook's NAME:K: not ours to act on, nor to fail on
        return
    if os.path.basename(path) == name:
        _writes[name] = _writes.get(name, 0) + 1
        if _writes[name] == int(count):
            f.flush()
            print(f"pyro_vae: paused in write {count} of {name}", file=sys.stderr, flush=True)
            time.sleep(600)


def remove_stray_temporaries(folder):
    """Delete temporary files that a killed process left behind in ``folder``."""
    for name in os.listdir(folder):
        if name.startswith(".") and name.endswith(TMP_SUFFIX):
            os.unlink(os.path.join(folder, name))


def to_json(obj):
    """``obj`` as JSON text; a NaN or infinite number, which JSON cannot hold, becomes ``null``."""

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(obj), indent=2, allow_nan=False)


def write_json(path, obj):
    _atomic_write(path, lambda f: f.write((to_json(obj) + "\n").encode()))


def write_text(path, text):
    """``text`` into ``path`` through the same atomic write as every other file."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def checkpoint_header(config, x_shape, num_classes=10):
    """What every checkpoint holds besides the states: format, config, image shape, the number of
    labels (for label-conditioned models), versions."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.as_dict(),
        "x_shape": list(x_shape),
        "num_classes": int(num_classes),
        "versions": versions(),
    }


# The first bytes of files that users mistake for checkpoints, and what to call them.
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x93NUMPY": "a NumPy array (.npy)",
    b"\x1f\x8b": "a gzip file",
    b"{": "a JSON file",
}
# Pickle opcodes that build arbitrary Python objects (what a malicious file uses to run code).
_BUILDING_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _not_a_torch_file(file):
    """Why ``file`` cannot be something ``torch.save`` wrote, from its first bytes, or ``None``.

    ``torch.save`` writes a zip archive (or, in its old format, a pickle); other files get a
    name ("a PNG image", "a text file") instead of an unpickler's complaint. A pickle that builds
    Python objects is called what it is: loading it could run code."""
    with open(file, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK\x03\x04"):
        return None
    if not head:
        return "it is empty"
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return f"it is {name}, not a file torch.save wrote"
    if head.startswith(b"\x80"):
        import pickletools

        try:
            with open(file, "rb") as f:
                ops = {op.name for op, _, _ in pickletools.genops(f)}
        except Exception:  # truncated or damaged: let torch say how
            return None
        if ops & _BUILDING_OPCODES:
            return (
                "it holds Python objects other than tensors and plain values "
                "(refused: loading it could run code)"
            )
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not a file torch.save wrote"
    return "it is a text file, not a file torch.save wrote"


def load_plain(file):
    """``torch.load`` that builds tensors and plain values only, never other Python objects."""
    foreign = _not_a_torch_file(file) if isinstance(file, (str, os.PathLike)) else None
    if foreign:
        raise ValueError(foreign)
    with warnings.catch_warnings():  # torch warns about odd pickle protocols; we refuse anyway
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(file, map_location="cpu", weights_only=True)


def digest(state):
    """SHA-256 of a checkpoint's contents (every entry but the digest itself), tensor by tensor
    in a fixed order: written with the checkpoint and checked when it is read, so a flipped byte
    anywhere (an optimizer moment, a generator state) is found instead of resumed from."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != DIGEST})
    return h.hexdigest()


def _feed(h, value):
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(value.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(b"D%d:" % len(value))
        for key in sorted(value, key=repr):
            h.update(repr(key).encode() + b"=")
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(b"L%d:" % len(value))
        for item in value:
            _feed(h, item)
    else:
        h.update(repr(value).encode() + b";")


def save_checkpoint(state, f):
    """``torch.save`` ``state`` (a header from :func:`checkpoint_header` and the states) to the
    open file ``f``, with its :func:`digest`."""
    torch.save({**state, DIGEST: digest(state)}, f)


def read_checkpoint(file):
    """The dict in a pyro_vae checkpoint file, loaded without running any code it might hold.

    Raises :class:`~pyro_vae.errors.CheckpointError` for a missing, truncated, corrupt or foreign
    file, and for a pickle that would build anything but tensors and plain values.
    """
    if not os.path.isfile(file):
        raise CheckpointError(f"no checkpoint at {file}; is it a pyro_vae run directory?")
    try:
        state = load_plain(file)
    except Exception as e:  # truncated, corrupt, or a pickle with non-tensor objects
        raise CheckpointError(f"cannot read checkpoint {file}: {first_line(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a pyro_vae checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has checkpoint format {version!r}, newer than this pyro_vae reads "
            f"({FORMAT_VERSION}); upgrade pyro_vae"
        )
    damaged = f"{file} is damaged"
    if version >= 3 and state.get(DIGEST) != digest(state):
        raise CheckpointError(
            f"{damaged}: its contents do not match the checksum written with it; put back a "
            "good copy, or start the run again"
        )
    problem = _bad_values(state)
    if problem:
        raise CheckpointError(f"{damaged}: {problem}; put back a good copy, or start again")
    try:
        state["config"] = Config.from_dict(state["config"])
        # Its values too, not only its format: they size what is built from it.
        state["x_shape"] = list(check_x_shape(state["x_shape"]))
        num_classes = state.get("num_classes", 10)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ConfigError(f"num_classes must be an integer, got {shown(num_classes)}")
        if not 1 <= num_classes <= MAX_COUNT:
            raise ConfigError(f"num_classes must be from 1 to {MAX_COUNT}, got {num_classes}")
        for key in ("epoch", "step"):
            value = state.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key} must be a whole number, got {shown(value)}")
    except (ConfigError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{file} holds a bad config ({first_line(e)})") from None
    return state


def _bad_values(state):
    """What is wrong with the weights and generator states of ``state``, or ``None``: checked
    before anything is built from them (NaN weights met Pyro's constraint checks with a tensor
    dump; a generator state of the wrong size, a RuntimeError on ``--resume``)."""
    for part in ("model", "guide", "baseline"):
        weights = state.get(part, {})
        if not isinstance(weights, dict):
            return f"its {part} state is not a dict of tensors"
        for name, value in weights.items():
            if not isinstance(value, torch.Tensor):
                return f"{part} entry {shown(name)} is not a tensor"
            if value.is_floating_point() and not torch.isfinite(value).all():
                return f"{part} weight {shown(name)} holds non-finite values"
    expected = torch.get_rng_state()
    rng = state.get("rng")
    if rng is not None and not isinstance(rng, dict):
        return "its generator states are not a dict"
    generators = {}  # a checkpoint of a finished model (Run.save) holds none
    if "generator" in state:
        generators["the minibatch generator"] = state["generator"]
    if rng is not None:
        generators["torch's generator"] = rng.get("torch")
    for what, value in generators.items():
        if (
            not isinstance(value, torch.Tensor)
            or value.dtype != expected.dtype
            or value.shape != expected.shape
        ):
            return f"the state of {what} is not one torch can restore"
    if isinstance(rng, dict):
        numpy = rng.get("numpy")
        ok = (
            isinstance(numpy, (list, tuple))
            and len(numpy) == 5
            and isinstance(numpy[1], torch.Tensor)
            and numpy[1].shape == (624,)
        )
        random_state = rng.get("random")
        ok = ok and isinstance(random_state, (list, tuple)) and len(random_state) == 3
        ok = ok and isinstance(random_state[1], (list, tuple)) and len(random_state[1]) == 625
        if not ok:
            return "the state of NumPy's or Python's generator is not one they can restore"
    return None
