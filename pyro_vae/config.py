"""The run configuration: one plain dataclass, checked at the door, and the builder it feeds."""

import math
from dataclasses import asdict, dataclass, fields

from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from .data import BINARIZATIONS, DATASETS
from .errors import ConfigError
from .guides import AmortizedGuide
from .models import VAE
from .nets import MLPDecoder, MLPEncoder

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}


@dataclass
class Config:
    """Everything that defines a run. Saved as ``config.json`` in the run directory.

    The defaults are the ``pyro-vae demo`` recipe (see the README for what it measures).
    """

    dataset: str = "mnist-small"
    binarize: str = "dynamic"
    z_dim: int = 50
    hidden_dims: tuple = (400,)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    elbo: str = "meanfield"
    num_particles: int = 1
    seed: int = 0
    log_px_samples: int = 1000
    clip_grad: float = None  # max gradient norm; None: no clipping

    def __post_init__(self):
        if isinstance(self.hidden_dims, list):  # as JSON gives it back
            self.hidden_dims = tuple(self.hidden_dims)
        self.validate()

    def validate(self):
        """Raise :class:`~pyro_vae.errors.ConfigError` naming the first bad setting."""
        for name, choices in (
            ("dataset", DATASETS),
            ("binarize", BINARIZATIONS),
            ("elbo", tuple(ELBOS)),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}"
                )
        for name in ("z_dim", "epochs", "batch_size", "num_particles", "log_px_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        hidden = self.hidden_dims
        if (
            not isinstance(hidden, tuple)
            or not hidden
            or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)
        ):
            shown = list(hidden) if isinstance(hidden, tuple) else hidden
            raise ConfigError(f"hidden_dims must be one or more positive integers, got {shown!r}")
        if not _positive_number(self.lr):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.clip_grad is not None and not _positive_number(self.clip_grad):
            raise ConfigError(
                f"clip_grad must be a positive number or None, got {self.clip_grad!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    def as_dict(self):
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def make_elbo(self):
        kwargs = {"num_particles": self.num_particles}
        if self.num_particles > 1:
            kwargs["vectorize_particles"] = True
            kwargs["max_plate_nesting"] = 1
        return ELBOS[self.elbo](**kwargs)


def _positive_number(value):
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def build(config, x_shape):
    """The model and amortized guide that ``config`` describes, for images of ``x_shape``."""
    hidden = list(config.hidden_dims)
    encoder = MLPEncoder(x_shape, config.z_dim, hidden)
    decoder = MLPDecoder(x_shape, config.z_dim, hidden[::-1])
    return VAE(decoder, config.z_dim, x_shape), AmortizedGuide(encoder)
