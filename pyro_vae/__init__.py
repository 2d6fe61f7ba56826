"""pyro_vae: variational autoencoders as Pyro model/guide pairs.

Importing pyro_vae turns on Pyro's ``module_local_params`` setting: the parameters of every
``PyroModule`` live in the module (like any torch module) rather than in Pyro's global param store,
so nothing leaks between runs, tests or models, and a plain torch optimizer can train them.

Data-parallel training on PyTorch Lightning lives in :mod:`pyro_vae.distributed`, which needs the
optional extra (``pip install 'pyro_vae[distributed]'``) and so is not imported here.
"""

import pyro

pyro.settings.set(module_local_params=True)

from .checkpoints import read_checkpoint  # noqa: E402
from .config import Config, build  # noqa: E402
from .data import Data, load_dataset, load_images  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    DatasetUnavailableError,
    DivergenceError,
    MissingDependencyError,
    PyroVAEError,
    RunDirError,
)
from .evaluate import elbo, log_px, log_weights  # noqa: E402
from .guides import AmortizedGuide  # noqa: E402
from .models import VAE, data_plate  # noqa: E402
from .nets import MLPDecoder, MLPEncoder, make_fc  # noqa: E402
from .runs import Run, load_run, resume_run, train_run  # noqa: E402
from .train import History, fit  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AmortizedGuide",
    "CheckpointError",
    "Config",
    "ConfigError",
    "Data",
    "DataError",
    "DatasetUnavailableError",
    "DivergenceError",
    "History",
    "MLPDecoder",
    "MLPEncoder",
    "MissingDependencyError",
    "PyroVAEError",
    "Run",
    "RunDirError",
    "VAE",
    "build",
    "data_plate",
    "elbo",
    "fit",
    "load_dataset",
    "load_images",
    "load_run",
    "log_px",
    "log_weights",
    "make_fc",
    "read_checkpoint",
    "resume_run",
    "train_run",
]
