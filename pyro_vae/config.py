"""The run configuration: one plain dataclass, checked at the door, and the builder it feeds."""

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from .data import BINARIZATIONS, is_dataset_name, labelled_repeats
from .discrete import STRATEGIES
from .errors import ConfigError, ModelFileError, shown
from .families import FAMILIES
from .guides import AmortizedGuide, ClassGuide, FamilyGuide, LocalGuide
from .likelihoods import LIKELIHOODS, make_likelihood
from .models import (
    VAE,
    ClassVAE,
    ConditionalPrior,
    HierarchicalPrior,
    LabelCondition,
    ObservedQuadrants,
)
from .nets import ACTIVATIONS, NETS, make_fc, make_networks
from .objectives import IWAE
from .program import Program
from .traced import STEPS

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO, "iwae": IWAE}
MODELS = ("vae", "hierarchical", "m2", "gmvae", "FILE.py[:NAME]")
#: The built-in models with a discrete class latent (:class:`~pyro_vae.models.ClassVAE`).
CLASS_MODELS = ("m2", "gmvae")
MAX_SEED = 2**32 - 1
# The largest size or count a setting takes: torch indexes with 64-bit integers, but no size
# beyond this fits any machine, and a count beyond it never ends.
MAX_COUNT = 2**31 - 1
#: The most steps a flow guide takes: each is a network of its own, built one by one, so a count
#: far beyond any use would be minutes of building before the memory check could weigh it.
MAX_FLOW_LAYERS = 1000
CONDITIONS = ("none", "label", "quadrants:1", "quadrants:2", "quadrants:3")


@dataclass(frozen=True)
class Recipe:
    """A built-in model's measured best settings at the default budget: the values ``pyro-vae
    train`` and :meth:`Config.recipe` give the settings a user leaves unset.

    :param str name: what the recipe is for, as ``--help`` shows it.
    :param dict when: the settings that select it (every one must match).
    :param dict settings: its defaults.
    :param str why: one line: what it measured, and where.
    """

    name: str
    when: dict
    settings: dict
    why: str

    def applies(self, settings):
        return all(
            settings.get(k, Config.__dataclass_fields__[k].default) == v
            for k, v in self.when.items()
        )


#: The built-in recipes (docs/guide/discrete.md, docs/guide/model-family.md). :class:`Config`'s
#: own defaults are the textbook models; a recipe replaces them only where a user sets nothing.
RECIPES = (
    Recipe(
        "--model m2",
        {"model": "m2", "net": "mlp"},
        {"alpha": 46.0, "labelled_share": 0.34, "z_dim": 16, "hidden_dims": (256,), "epochs": 8},
        "mnist-small, 100 labels, 5 seeds: test accuracy 0.752 +- 0.021 (0.762 on seed 0, "
        "0.639 trained 100 epochs: the classifier overfits its labels; 0.193 for the textbook "
        "M2, alpha 0 and each image once, at the same sizes and budget)",
    ),
    Recipe(
        "--condition label",
        {"model": "vae", "condition": "label"},
        {"learned_prior": True},
        "mnist-small, 100 epochs: samples of the asked-for digit 90.6 % of the time against "
        "61.1 % with the N(0, I) prior, test log p(x | y) -97.22 against -100.31",
    ),
)


def recipe_defaults(settings):
    """The defaults that :data:`RECIPES` give a run of ``settings`` (a dict of the settings a
    user gave; the others are :class:`Config`'s)."""
    return {k: v for r in RECIPES if r.applies(settings) for k, v in r.settings.items()}


@dataclass
class Config:
    """Everything that defines a run. Saved as ``config.json`` in the run directory.

    The defaults are the ``pyro-vae demo`` recipe (see the README for what it measures) and the
    textbook models; :meth:`recipe` fills the settings left unset from each built-in model's
    measured recipe (:data:`RECIPES`), as ``pyro-vae train`` does.
    """

    dataset: str = "mnist-small"
    binarize: str = "dynamic"
    z_dim: int = 50
    hidden_dims: tuple = (400,)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    # The learning rate is multiplied by this after every epoch (1: constant).
    lr_decay: float = 1.0
    elbo: str = "meanfield"
    num_particles: int = 1
    seed: int = 0
    log_px_samples: int = 1000
    clip_grad: float = None  # max gradient norm; None: no clipping
    # The model family (see README "Model family"): structure, likelihood, networks, condition,
    # objective. The defaults are the plain VAE above.
    model: str = "vae"
    likelihood: str = "bernoulli"
    sigma: Optional[float] = None
    net: str = "mlp"
    # The MLPs' hidden nonlinearity (pyro_vae.nets.ACTIVATIONS).
    activation: str = "softplus"
    condition: str = "none"
    learned_prior: bool = False
    z1_dim: Optional[int] = None
    beta: float = 1.0
    kl_warmup: int = 0
    image_size: Optional[int] = None
    exclude_classes: tuple = ()  # labels left out of both splits (anomaly detection)
    # The guide's family (pyro_vae.families): diag, fullcov or flow, with flow_layers steps.
    guide_family: str = "diag"
    flow_layers: int = 2
    # How discrete latent sites are trained (pyro_vae.discrete.STRATEGIES); None: enumerate
    # where their supports are finite and small, score otherwise.
    discrete: Optional[str] = None
    # The semi-supervised M2: labelled training images (balanced over the classes, chosen by the
    # seed) and the weight of its classification term (Kingma et al.'s alpha; 0: none).
    labels: Optional[int] = None
    alpha: float = 0.0
    # A wall-clock budget for training in seconds (pyro_vae.train.fit's time_limit): no epoch is
    # started that would end after it, so --epochs is then an upper bound. None: no budget.
    time_limit: Optional[float] = None
    # How each training step computes the loss (pyro_vae.traced.STEPS): recorded, compiled, eager.
    step: str = "recorded"
    # The share of each epoch's images that is labelled, the labelled images repeated to reach it
    # (pyro_vae.data.repeat_labelled; None: each image once).
    labelled_share: Optional[float] = None

    def __post_init__(self):
        if isinstance(self.hidden_dims, list):  # as JSON gives it back
            self.hidden_dims = tuple(self.hidden_dims)
        if isinstance(self.exclude_classes, list):
            self.exclude_classes = tuple(self.exclude_classes)
        self.validate()

    def validate(self):
        """Raise :class:`~pyro_vae.errors.ConfigError` naming the first bad setting."""
        if not is_dataset_name(self.dataset):
            raise ConfigError(
                f"unknown dataset {shown(self.dataset)}; choose one of mnist-small, mnist, "
                "fashion-mnist, cifar10, folder:PATH"
            )
        for name, choices in (
            ("binarize", BINARIZATIONS),
            ("elbo", tuple(ELBOS)),
            ("likelihood", LIKELIHOODS),
            ("net", NETS),
            ("activation", tuple(ACTIVATIONS)),
            ("condition", CONDITIONS),
            ("guide_family", tuple(FAMILIES)),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"unknown {name} {shown(getattr(self, name))}; choose one of {', '.join(choices)}"
                )
        if self.labels is not None:
            _check_positive_int("labels", self.labels)
        if (self.model == "m2" and self.labels is None) or (
            self.labels is not None and self.model != "m2" and not _is_model_file(self.model)
        ):
            raise ConfigError(
                "--labels N is the number of labelled images of --model m2 (the semi-supervised "
                "VAE), which needs it, or of a model file whose program observes a class site"
            )
        if self.alpha == "kingma":  # Kingma et al.'s 0.1 N on the mean over labelled images
            pass
        elif not _positive_number(self.alpha) and self.alpha != 0:
            raise ConfigError(f"alpha must be a number >= 0, got {shown(self.alpha)}")
        if self.labelled_share is not None:
            if not (isinstance(self.labelled_share, (int, float)) and 0 < self.labelled_share < 1):
                raise ConfigError(
                    f"labelled_share must be a fraction between 0 and 1, got "
                    f"{shown(self.labelled_share)}"
                )
            if self.labels is None:
                raise ConfigError(
                    "labelled_share is the labelled images' share of --model m2 or of a model "
                    "file with --labels"
                )
        if self.alpha and self.labels is None:
            raise ConfigError(
                "alpha weighs the classification term of --model m2 or of a model file with "
                "--labels"
            )
        if self.discrete is not None and (
            not isinstance(self.discrete, str) or self.discrete not in STRATEGIES
        ):
            raise ConfigError(
                f"unknown discrete {shown(self.discrete)}; choose one of {', '.join(STRATEGIES)}"
            )
        if self.model not in MODELS[:-1] and not _is_model_file(self.model):
            raise ConfigError(
                f"unknown model {shown(self.model)}; choose vae, hierarchical, m2, gmvae, FILE.py, "
                "FILE.py:NAME or "
                "FILE.py:MODEL,GUIDE"
            )
        for name in (
            "z_dim",
            "epochs",
            "batch_size",
            "num_particles",
            "log_px_samples",
            "flow_layers",
        ):
            _check_positive_int(name, getattr(self, name))
        if self.flow_layers > MAX_FLOW_LAYERS:
            raise ConfigError(
                f"flow_layers must be at most {MAX_FLOW_LAYERS}, got {self.flow_layers}"
            )
        for name in ("z1_dim", "image_size"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if (
            isinstance(self.kl_warmup, bool)
            or not isinstance(self.kl_warmup, int)
            or self.kl_warmup < 0
        ):
            raise ConfigError(
                f"kl_warmup must be a whole number of epochs, got {shown(self.kl_warmup)}"
            )
        hidden = self.hidden_dims
        if (
            not isinstance(hidden, tuple)
            or not hidden
            or any(
                isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_COUNT
                for h in hidden
            )
        ):
            value = list(hidden) if isinstance(hidden, tuple) else hidden
            raise ConfigError(
                f"hidden_dims must be one or more positive integers, got {shown(value)}"
            )
        for name in ("lr", "beta") + (("sigma",) if self.sigma is not None else ()):
            if not _positive_number(getattr(self, name)):
                raise ConfigError(
                    f"{name} must be a positive number, got {shown(getattr(self, name))}"
                )
        if self.activation != "softplus" and self.net != "mlp":
            raise ConfigError(
                f"activation {self.activation} sets the MLPs' hidden nonlinearity; the {self.net} "
                "networks use LeakyReLU"
            )
        if not (_positive_number(self.lr_decay) and self.lr_decay <= 1):
            raise ConfigError(
                f"lr_decay must be a number in (0, 1], the learning rate's factor per epoch, got "
                f"{shown(self.lr_decay)}"
            )
        if not isinstance(self.step, str) or self.step not in STEPS:
            raise ConfigError(f"unknown step {shown(self.step)}; choose one of {', '.join(STEPS)}")
        if self.time_limit is not None and not _positive_number(self.time_limit):
            raise ConfigError(
                f"time_limit must be a positive number of seconds or None, got "
                f"{shown(self.time_limit)}"
            )
        if self.clip_grad is not None and not _positive_number(self.clip_grad):
            raise ConfigError(
                f"clip_grad must be a positive number or None, got {shown(self.clip_grad)}"
            )
        check_seed(self.seed)
        if self.sigma is not None and self.likelihood != "gaussian":
            raise ConfigError(
                f"sigma fixes the scale of a gaussian likelihood, not of {self.likelihood}"
            )
        if self.z1_dim is not None and self.model != "hierarchical":
            raise ConfigError(
                "z1_dim is the top layer of the hierarchical model; use --model hierarchical"
            )
        if self.model == "hierarchical" and self.elbo == "meanfield":
            raise ConfigError(
                "the mean-field ELBO's analytic KL needs latents that are independent given x, but "
                "the hierarchical model's z depends on z1; use --elbo trace or --elbo iwae"
            )
        if self.learned_prior and self.condition == "none":
            raise ConfigError("a learned prior p(z|y) needs a condition; add --condition label")
        if not isinstance(self.exclude_classes, tuple) or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.exclude_classes
        ):
            value = self.exclude_classes
            value = list(value) if isinstance(value, tuple) else value
            raise ConfigError(
                f"exclude_classes must be a list of class labels (integers >= 0), got {shown(value)}"
            )
        if not isinstance(self.learned_prior, bool):
            raise ConfigError(
                f"learned_prior must be true or false, got {shown(self.learned_prior)}"
            )

    def as_dict(self):
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        d["exclude_classes"] = list(self.exclude_classes)
        return d

    def first_difference(self, other):
        """The first setting in which ``other`` differs from this config, as ``(name, this
        value, other value)`` of :meth:`as_dict`; ``None`` where the two are equal."""
        ours, theirs = self.as_dict(), other.as_dict()
        return next(((k, ours[k], theirs.get(k)) for k in ours if theirs.get(k) != ours[k]), None)

    @classmethod
    def recipe(cls, **settings):
        """The config of ``settings`` with every setting they leave out taken from the built-in
        model's recipe (:data:`RECIPES`), then from the plain defaults: what ``pyro-vae train``
        runs. ``Config(...)`` itself keeps the textbook defaults.

        ``Config.recipe(model="m2", labels=100)`` is M2 with alpha 46, a labelled share of 0.34,
        z_dim 16 and hidden_dims (256,)."""
        return cls(**{**recipe_defaults(settings), **settings})

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def make_elbo(self, max_plate_nesting=1):
        """The Pyro ELBO the config names, for a model nesting ``max_plate_nesting`` plates."""
        if self.elbo == "iwae":
            return IWAE(num_particles=self.num_particles, max_plate_nesting=max_plate_nesting)
        kwargs = {"num_particles": self.num_particles}
        if self.num_particles > 1:
            kwargs["vectorize_particles"] = True
            kwargs["max_plate_nesting"] = max_plate_nesting
        return ELBOS[self.elbo](**kwargs)

    def fit_options(self):
        """The keyword arguments of :func:`pyro_vae.fit` that the config's training recipe sets
        (the ELBO aside: :meth:`make_elbo`). ``step`` and ``time_limit`` appear only when they
        differ from ``fit``'s defaults, so the dict also suits a trainer without them."""
        options = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "lr_decay": self.lr_decay,
            "clip_grad": self.clip_grad,
            "seed": self.seed,
            "discrete": self.discrete,
        }
        if self.step != "recorded":
            options["step"] = self.step
        if self.time_limit is not None:
            options["time_limit"] = self.time_limit
        return options


def check_seed(seed, name="seed"):
    """Seeds go to Python's, NumPy's and torch's generators; NumPy's takes 0 to 2**32 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"{name} must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {shown(seed)}"
        )


def _positive_number(value):
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {shown(value)}")
    if value > MAX_COUNT:
        raise ConfigError(f"{name} must be at most {MAX_COUNT} (2**31 - 1), got {shown(value)}")


def check_x_shape(x_shape):
    """``x_shape`` as a tuple ``(C, H, W)`` of positive integers, or a :class:`ConfigError`."""
    try:
        shape = tuple(int(d) for d in x_shape)
        exact = all(not isinstance(d, bool) and d == int(d) for d in x_shape)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        shape, exact = (), False
    if not exact or len(shape) != 3 or min(shape) < 1 or max(shape) > MAX_COUNT:
        raise ConfigError(
            f"x_shape must be three positive integers (C, H, W), got {shown(x_shape)}"
        )
    return shape


def _is_model_file(name):
    """``FILE.py``, ``FILE.py:NAME`` or ``FILE.py:MODEL,GUIDE``."""
    if not isinstance(name, str):
        return False
    if name.endswith(".py"):
        return True
    path, _, names = name.rpartition(":")
    return path.endswith(".py") and all(n.isidentifier() for n in names.split(","))


def build(config, x_shape, num_classes=10, x=None, y=None, train_size=None):
    """The model and guide that ``config`` describes, for images of ``x_shape``, through the
    program door (:class:`~pyro_vae.program.Program`): both are called as
    ``(x, y=None, idx=None, size=None)`` and ``model.structure`` says what they are.

    The built-in variants are the one :class:`~pyro_vae.models.VAE` and
    :class:`~pyro_vae.guides.AmortizedGuide`, composed of the parts the config names; a model
    file (``config.model = "FILE.py[:NAME]"``) is loaded by :mod:`pyro_vae.modelfile`. A guide
    family other than ``diag`` wraps the guide in a :class:`~pyro_vae.guides.FamilyGuide` (or
    gives a model without a guide a per-image guide of that family).

    :param int num_classes: the number of labels, for a label-conditioned model.
    :param x: a few images to discover the program's structure on (default: random binary
        images of ``x_shape``); ``y`` their condition.
    :param int train_size: training images, for the per-image guide of a model without one.
    """
    if not isinstance(config, Config):
        raise ConfigError(f"config must be a pyro_vae.Config, got {type(config).__name__}")
    x_shape = check_x_shape(x_shape)
    if config.condition == "label":
        _check_positive_int("num_classes", num_classes)
    owner = None
    if config.model in CLASS_MODELS:
        _check_positive_int("num_classes", num_classes)
        model, guide = build_class_vae(config, x_shape, num_classes, train_size)
    elif _is_model_file(config.model):
        from .modelfile import build_from_file

        model, guide, owner = build_from_file(config, x_shape, num_classes)
    else:
        from .resources import check_sizes

        check_sizes(config, x_shape, num_classes)  # before anything is allocated, from Python too
        model, guide = build_vae(config, x_shape, num_classes)
    x, y = example_batch(config, x_shape, num_classes, x=x, y=y)
    labelled = config.labels is not None and _is_model_file(config.model)
    program = Program(
        model,
        guide,
        x,
        y,
        owner=owner,
        train_size=train_size,
        labelled=labelled,
        alpha=classification_weight(config, train_size) if labelled else 0.0,
    )
    classes = program.structure.y.num_classes
    if labelled and classes != num_classes:
        raise ModelFileError(
            f"the program's class site {program.structure.y.site!r} has {classes} values, but "
            f"the data have {num_classes} classes; make it take num_classes (a class or factory "
            "is given it where its signature has that parameter)"
        )
    family = {"family": config.guide_family, "flow_layers": config.flow_layers}
    if program.guide is None:  # a model alone: variational EM with a q of the family per image
        size = train_size or x.shape[0]
        return program.model, LocalGuide(size, structure=program.structure, **family)
    if config.guide_family != "diag":
        return program.model, FamilyGuide(program.guide, structure=program.structure, **family)
    return program.model, program.guide


def example_batch(config, x_shape, num_classes=10, n=4, x=None, y=None):
    """A few images to discover a program's structure on, and what a run of ``config`` observes
    as their second argument ``y``: the images themselves for image completion, labels for a
    label-conditioned model, "no label" (-1) for the class models when none are given, and
    ``None`` for every other model (Pyro's "not observed": the program is then always called
    with ``y=None``; its own labels are never invented).

    :param x: the images (default: ``n`` random binary images of ``x_shape``, drawn without
        touching the global random state).
    :param y: their condition, where the run observes one (default: as above, random labels for
        a label-conditioned model).
    """
    generator = torch.Generator().manual_seed(0)
    if x is None:
        x = torch.bernoulli(torch.full((n, *x_shape), 0.5), generator=generator)
    n = x.shape[0]
    if config.condition.startswith("quadrants:"):
        return x, (x if y is None else y)
    if config.model in CLASS_MODELS:  # as evaluation sees them: no label given
        return x, (torch.full((n,), -1) if y is None else y)
    if config.condition == "label":
        return x, (torch.randint(0, num_classes, (n,), generator=generator) if y is None else y)
    return x, None


def kingma_alpha(train_size, labels):
    """Kingma et al.'s (2014) classification weight as :class:`~pyro_vae.models.ClassVAE` takes
    it, per labelled image: their alpha = 0.1 N multiplies the mean over the ``labels``
    labelled images, so each image's log q(y|x) gets ``0.1 * train_size / labels``."""
    return 0.1 * train_size / labels


def classification_weight(config, train_size=None):
    """The weight of the classification term on each labelled image that ``config.alpha``
    names: the number itself, or for ``"kingma"`` Kingma et al.'s 0.1 N on the labelled images'
    mean (:func:`kingma_alpha`, counting the copies ``labelled_share`` adds)."""
    if config.alpha == "kingma":
        return kingma_alpha(*_labelled_copies(config, train_size or 1))
    return config.alpha


def _labelled_copies(config, train_size):
    """``(train_size, labelled images)`` counting the copies that ``config.labelled_share`` adds
    (:func:`pyro_vae.data.repeat_labelled`): M2 trains on that set, so Kingma et al.'s alpha is
    0.1 N on the mean over all of its labelled images."""
    labels = config.labels or 1
    if config.labelled_share is None:
        return train_size, labels
    for r in range(1, train_size // labels + 1):  # the r with train_size = N + (r - 1) labels
        if labelled_repeats(config.labelled_share, train_size - (r - 1) * labels, labels) == r:
            return train_size, r * labels
    return train_size, labels


def _networks(config, x_shape, c_dim, outputs):
    """The encoder and decoder ``config`` names, reading a condition of width ``c_dim``."""
    return make_networks(
        config.net, x_shape, config.z_dim, config.hidden_dims, c_dim, outputs, config.activation
    )


def build_class_vae(config, x_shape, num_classes=10, train_size=None):
    """The M2 or Gaussian-mixture model and its guide (:class:`~pyro_vae.models.ClassVAE`,
    :class:`~pyro_vae.guides.ClassGuide`), before the door. ``alpha="kingma"`` is Kingma et
    al.'s weight 0.1 N on the *mean* of log q(y|x) over the labelled images (their eq. 9), that
    is ``0.1 * train_size / labels`` on each labelled image's term."""
    x_shape = tuple(x_shape)
    alpha = classification_weight(config, train_size)
    mixture = config.model == "gmvae"
    likelihood = make_likelihood(config.likelihood, x_shape, config.sigma)
    # M2's encoder and decoder read the class; the mixture's read the image and z alone (an
    # encoder q(z | x, y) could move z into whichever bump y names, and every cluster would then
    # explain every image equally well)
    c_dim = 0 if mixture else num_classes
    encoder, decoder = _networks(config, x_shape, c_dim, likelihood.outputs)
    classifier = torch.nn.Sequential(
        torch.nn.Flatten(-len(x_shape)),
        make_fc(
            [math.prod(x_shape), *config.hidden_dims, num_classes], ACTIVATIONS[config.activation]
        ),
    )
    model = ClassVAE(
        decoder, config.z_dim, x_shape, num_classes, likelihood, classifier, alpha, mixture
    )
    return model, ClassGuide(classifier, encoder, num_classes, z_reads_y=not mixture)


def build_vae(config, x_shape, num_classes=10):
    """The built-in model and amortized guide ``config`` describes (before the door)."""
    x_shape = tuple(x_shape)
    likelihood = make_likelihood(config.likelihood, x_shape, config.sigma)
    hidden = None
    condition = None
    if config.condition == "label":
        condition = LabelCondition(num_classes)
    elif config.condition.startswith("quadrants:"):
        condition = ObservedQuadrants(x_shape, int(config.condition.split(":")[1]))
        hidden = condition.hidden
    c_dim = condition.dim if condition is not None else 0
    encoder, decoder = _networks(config, x_shape, c_dim, likelihood.outputs)
    width = config.hidden_dims[-1] if config.net == "mlp" else 2 * config.z_dim
    activation = ACTIVATIONS[config.activation]
    prior, top = None, None
    if config.model == "hierarchical":
        z1_dim = config.z1_dim or max(1, config.z_dim // 2)
        prior = HierarchicalPrior(
            z1_dim, make_fc([z1_dim + c_dim, width, 2 * config.z_dim], activation)
        )
        top = make_fc([config.z_dim, width, 2 * z1_dim], activation)
    elif config.learned_prior or hidden is not None:
        # Image completion always learns p(z | observed part), as Sohn et al. do.
        prior = ConditionalPrior(make_fc([c_dim, width, 2 * config.z_dim], activation))
    model = VAE(decoder, config.z_dim, x_shape, likelihood, prior, condition, hidden)
    guide = AmortizedGuide(encoder, condition, top)
    model.z_scale = guide.z_scale = config.beta
    return model, guide
