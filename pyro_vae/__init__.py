"""pyro_vae: variational autoencoders as Pyro model/guide pairs.

Importing pyro_vae turns on Pyro's ``module_local_params`` setting: the parameters of every
``PyroModule`` live in the module (like any torch module) rather than in Pyro's global param store,
so nothing leaks between runs, tests or models, and a plain torch optimizer can train them.

Data-parallel training on PyTorch Lightning lives in :mod:`pyro_vae.distributed`, which needs the
optional extra (``pip install 'pyro_vae[distributed]'``) and so is not imported here.
"""

import pyro

pyro.settings.set(module_local_params=True)

from ._version import __version__  # noqa: E402, F401  (the metadata's, see _version.py)
from .anomaly import anomaly_scores, auroc  # noqa: E402
from .checkpoints import read_checkpoint  # noqa: E402
from .compare import compare, compare_run  # noqa: E402
from .config import Config, build  # noqa: E402
from .data import Data, load_dataset, load_images  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    DatasetUnavailableError,
    DivergenceError,
    MissingDependencyError,
    ModelFileError,
    ProgramError,
    PyroVAEError,
    ResourceError,
    RunDirError,
)
from .evaluate import elbo, log_px, log_weights  # noqa: E402
from .gradvar import ScoreFunction, gradient_draws, gradient_variance  # noqa: E402
from .guides import AmortizedGuide, ClassGuide, DeltaGuide, FamilyGuide, LocalGuide  # noqa: E402
from .inference import e_step, grid_posterior, nuts_posterior  # noqa: E402
from .likelihoods import Bernoulli, ContinuousBernoulli, Gaussian, make_likelihood  # noqa: E402
from .modelfile import check_protocol  # noqa: E402
from .models import (  # noqa: E402
    VAE,
    ClassVAE,
    ConditionalPrior,
    HierarchicalPrior,
    LabelCondition,
    ObservedQuadrants,
    StandardNormalPrior,
    data_plate,
)
from .nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, make_fc  # noqa: E402
from .objectives import IWAE, kl_warmup  # noqa: E402
from .program import Program, Structure, as_program  # noqa: E402
from .runs import Run, load_run, resume_run, train_run  # noqa: E402
from .train import History, fit  # noqa: E402

__all__ = [
    "AmortizedGuide",
    "Bernoulli",
    "CheckpointError",
    "ClassGuide",
    "ClassVAE",
    "ConditionalPrior",
    "Config",
    "ConfigError",
    "ContinuousBernoulli",
    "ConvDecoder",
    "ConvEncoder",
    "Data",
    "DataError",
    "DatasetUnavailableError",
    "DeltaGuide",
    "DivergenceError",
    "FamilyGuide",
    "Gaussian",
    "HierarchicalPrior",
    "History",
    "IWAE",
    "LabelCondition",
    "LocalGuide",
    "MLPDecoder",
    "MLPEncoder",
    "MissingDependencyError",
    "ModelFileError",
    "ObservedQuadrants",
    "Program",
    "ProgramError",
    "PyroVAEError",
    "ResourceError",
    "Run",
    "RunDirError",
    "ScoreFunction",
    "StandardNormalPrior",
    "Structure",
    "VAE",
    "anomaly_scores",
    "as_program",
    "auroc",
    "build",
    "check_protocol",
    "compare",
    "compare_run",
    "data_plate",
    "e_step",
    "elbo",
    "fit",
    "gradient_draws",
    "gradient_variance",
    "grid_posterior",
    "kl_warmup",
    "load_dataset",
    "load_images",
    "load_run",
    "log_px",
    "log_weights",
    "make_fc",
    "make_likelihood",
    "nuts_posterior",
    "read_checkpoint",
    "resume_run",
    "train_run",
]
