"""Typed errors. Every message is one line a user can act on; the CLI prints it without a traceback."""


class PyroVAEError(Exception):
    """Base class of every error pyro_vae raises on purpose."""


class ConfigError(PyroVAEError, ValueError):
    """A setting is out of range or unknown (a size, a name, a count)."""


class DataError(PyroVAEError, ValueError):
    """Data that cannot be used as given: wrong shape, values out of range, non-binary pixels."""


class DatasetUnavailableError(PyroVAEError, FileNotFoundError):
    """A dataset that is neither on disk nor downloadable from here."""


class RunDirError(PyroVAEError, OSError):
    """A run directory that is missing, incomplete, or would be overwritten."""


class CheckpointError(PyroVAEError, ValueError):
    """A checkpoint that is missing, truncated, corrupt, or not a pyro_vae checkpoint."""


class DivergenceError(PyroVAEError, FloatingPointError):
    """Training produced a non-finite loss or gradient."""


class ResourceError(PyroVAEError, MemoryError):
    """A setting asks for more memory than this process can have; the message names it."""


class ProgramError(PyroVAEError, RuntimeError):
    """A model or guide raised an error while it ran (during training, say): the message names
    where, and the first line of what it raised."""


class MissingDependencyError(PyroVAEError, ImportError):
    """A feature needs an optional extra that is not installed; the message says how to install it."""


def shown(value, limit=80):
    """``repr(value)`` on one line, shortened: how a bad value is quoted in a message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def program_error_line(error):
    """What went wrong inside a user's program, in one line: Pyro's "... at site 'x':" context
    (when it gave one) and the first line of the error itself, without Pyro's trace dump."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    lines = (
        [line for line in lines[: lines.index("Trace Shapes:")]]
        if "Trace Shapes:" in lines
        else lines
    )
    context = next((line.rstrip(":") for line in lines if " at site " in line), None)
    message = next((line for line in lines if " at site " not in line), type(error).__name__)
    text = f"{type(error).__name__}: {message[:200]}"
    return f"{context}: {text}" if context else text


def first_line(error, limit=200):
    """The first line of an exception's message (its type if it has none), for one-line errors.

    ``torch.load(..., weights_only=True)`` refusing a pickle gets a reason of our own: torch's
    suggests loading the file again with ``weights_only=False``, which would run what it holds.
    """
    text = str(error).strip()
    if text.startswith("Weights only load failed"):
        # A global that torch would not import: a class, a function (os.system, a __reduce__
        # payload). torch words it several ways ("Unsupported global: GLOBAL eval", "unsupported
        # GLOBAL posix.system whose module posix is blocked").
        if "GLOBAL" in text or "Unsupported global" in text:
            return (
                "it holds Python objects other than tensors and plain values "
                "(refused: loading it could run code)"
            )
        reason = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler" in text else ""
        reason = [line for line in reason.strip().splitlines() if line.strip()]
        return f"it is damaged or not a torch file ({reason[0] if reason else 'unreadable'})"
    return text.splitlines()[0][:limit] if text else type(error).__name__


class ModelFileError(ConfigError):
    """A user's model file that cannot be loaded or does not follow the model/guide protocol."""
