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
    exclude_classes: tuple = ()

    def __post_init__(self):
        self.hidden_dims = tuple(self.hidden_dims)
        self.exclude_classes = tuple(self.exclude_classes)
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
        if not self.hidden_dims or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden_dims
        ):
            raise ConfigError(
                f"hidden_dims must be one or more positive integers, got {list(self.hidden_dims)!r}"
            )
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.exclude_classes
        ):
            raise ConfigError(
                f"exclude_classes must be class labels (integers >= 0), got {list(self.exclude_classes)!r}"
            )

    def as_dict(self):
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["exclude_classes"] = list(self.exclude_classes)
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


def build(config, x_shape):
    """The model and amortized guide that ``config`` describes, for images of ``x_shape``."""
    hidden = list(config.hidden_dims)
    encoder = MLPEncoder(x_shape, config.z_dim, hidden)
    decoder = MLPDecoder(x_shape, config.z_dim, hidden[::-1])
    return VAE(decoder, config.z_dim, x_shape), AmortizedGuide(encoder)
