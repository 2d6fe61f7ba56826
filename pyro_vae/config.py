"""The run configuration: one plain dataclass, checked at the door, and the builder it feeds."""

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from . import registry
from .data import BINARIZATIONS, is_dataset_name, labelled_repeats
from .discrete import STRATEGIES
from .errors import ConfigError, ModelFileError, shown
from .families import FAMILIES
from .guides import FamilyGuide, LocalGuide
from .likelihoods import LIKELIHOODS
from .nets import ACTIVATIONS, NETS
from .objectives import IWAE
from .program import Condition, Program
from .traced import STEPS

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO, "iwae": IWAE}
#: What ``model`` names: the built-in models (:data:`pyro_vae.registry.MODELS`) or a model file.
MODELS = (*registry.MODELS, "FILE.py[:NAME]")
#: The built-in models with a class latent ``y`` (:attr:`pyro_vae.registry.ModelEntry.class_latent`).
CLASS_MODELS = tuple(name for name, e in registry.MODELS.items() if e.class_latent)
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
    Recipe(
        "--model hierarchical",
        {"model": "hierarchical"},
        {"elbo": "trace"},
        "its z depends on z1, so the mean-field ELBO's analytic KL does not apply",
    ),
)


def recipe_defaults(settings):
    """The defaults that :data:`RECIPES` give a run of ``settings`` (a dict of the settings a
    user gave; the others are :class:`Config`'s)."""
    defaults = {k: v for r in RECIPES if r.applies(settings) for k, v in r.settings.items()}
    if registry.is_model_file(settings.get("model")):
        # a model file's constructor or factory keeps its own sizes unless they are given
        defaults.update(PROGRAM_SIZES)
    return defaults


#: The sizes a model file's constructor keeps as its own when a run leaves them unset (``None``:
#: not passed to it, so its signature's defaults hold).
PROGRAM_SIZES = {"z_dim": None, "hidden_dims": None}


@dataclass
class Config:
    """Everything that defines a run. Saved as ``config.json`` in the run directory.

    The defaults are the ``pyro-vae demo`` recipe (see the README for what it measures) and the
    textbook models; :meth:`recipe` fills the settings left unset from each built-in model's
    measured recipe (:data:`RECIPES`), as ``pyro-vae train`` does.
    """

    dataset: str = "mnist-small"
    binarize: str = "dynamic"
    # None (a model file only): the program's own, its constructor's default.
    z_dim: Optional[int] = 50
    hidden_dims: Optional[tuple] = (400,)
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
        self._check_names()
        entry = registry.entry(self.model)
        self._check_labels(entry)
        self._check_counts(entry)
        self._check_numbers()
        self._check_model(entry)

    def _check_names(self):
        """The dataset and every setting chosen from a list."""
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

    def _check_labels(self, entry):
        """The semi-supervised settings: labels, alpha, labelled_share."""
        if self.labels is not None and self.condition != "none" and "condition" in entry.reads:
            raise ConfigError(
                f"--labels and --condition {self.condition} would both pass the program's second "
                "argument (ys): labels for some images, or a condition for every image; choose one"
            )
        if self.labels is not None:
            _check_positive_int("labels", self.labels)
        if (entry.needs_labels and self.labels is None) or (
            self.labels is not None and not entry.needs_labels and not entry.user_code
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

    def _check_counts(self, entry):
        """Sizes and counts."""
        if self.discrete is not None and (
            not isinstance(self.discrete, str) or self.discrete not in STRATEGIES
        ):
            raise ConfigError(
                f"unknown discrete {shown(self.discrete)}; choose one of {', '.join(STRATEGIES)}"
            )
        for name, value in PROGRAM_SIZES.items():
            if getattr(self, name) is value and not entry.user_code:
                raise ConfigError(
                    f"{name} None (the program's own) is for a model file; --model "
                    f"{entry.name} needs a number"
                )
        for name in (
            *(("z_dim",) if self.z_dim is not None else ()),
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
        if hidden is not None and (
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

    def _check_numbers(self):
        """Rates, weights, limits and the seed."""
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

    def _check_model(self, entry):
        """What the model reads, and the settings that depend on each other."""
        if self.sigma is not None and self.likelihood != "gaussian":
            raise ConfigError(
                f"sigma fixes the scale of a gaussian likelihood, not of {self.likelihood}"
            )
        _check_reads(entry, self)
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
        d["hidden_dims"] = None if self.hidden_dims is None else list(self.hidden_dims)
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

    def entry(self):
        """The registry entry of the model this config names (:func:`pyro_vae.registry.entry`)."""
        return registry.entry(self.model)

    def observes_images(self):
        """Whether the model's ``y`` is an image: the observed part of each image (completion)."""
        return self.condition.startswith("quadrants:")

    def observes_labels_of_some(self):
        """Whether the run passes labels for some images and "no label" (-1) for the others: a
        class model (M2 and the mixture, the latter with no labels at all) or a model file
        with ``--labels``."""
        return self.entry().class_latent or self.labels is not None

    def uses_likelihood(self, name):
        """Whether the model's likelihood is the built-in ``name`` (a model file's is its own)."""
        return "likelihood" in self.entry().reads and self.likelihood == name

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


_is_model_file = registry.is_model_file


def _check_reads(entry, config):
    """Refuse a family setting that ``entry``'s model does not read, naming the models that do."""
    unread = entry.unread(config)
    if not unread:
        return
    if entry.user_code:
        raise ModelFileError(
            f"{', '.join(unread)} {'configures' if len(unread) == 1 else 'configure'} the "
            "built-in models; a model file defines its own (--z-dim and --hidden-dims reach its "
            "constructor, --condition its constructor and its second argument, --beta and "
            "--kl-warmup weigh its latent sites)"
        )
    name = unread[0]
    readers = [e.name for e in registry.MODELS.values() if name in e.reads]
    raise ConfigError(
        f"{name} is a setting of --model {' and '.join(readers)}; --model {entry.name} does not "
        "read it"
    )


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
    _check_positive_int("num_classes", num_classes)
    entry = registry.entry(config.model)
    owner = None
    if entry.user_code:
        from .modelfile import load_program

        options = entry.options(config)
        model, guide, owner = load_program(
            config.model, x_shape, config.z_dim, config.hidden_dims, num_classes, **options
        )
    else:
        from .resources import check_sizes

        check_sizes(config, x_shape, num_classes)  # before anything is allocated, from Python too
        model, guide = make_built_in(config, x_shape, num_classes, train_size)
    x, y = example_batch(config, x_shape, num_classes, x=x, y=y)
    labelled = config.labels is not None and entry.user_code
    program = Program(
        model,
        guide,
        x,
        y,
        owner=owner,
        train_size=train_size,
        labelled=labelled,
        alpha=classification_weight(config, train_size) if labelled else 0.0,
        condition=run_condition(config, x_shape, num_classes),
    )
    classes = program.structure.y.num_classes
    if labelled and classes != num_classes:
        raise ModelFileError(
            f"the program's class site {program.structure.y.site!r} has {classes} values, but "
            f"the data have {num_classes} classes; make it take num_classes (a class or factory "
            "is given it where its signature has that parameter)"
        )
    program.latent_scale = config.beta  # every latent site's KL weight (kl_warmup changes it)
    family = {"family": config.guide_family, "flow_layers": config.flow_layers}
    if program.guide is None:  # a model alone: variational EM with a q of the family per image
        size = train_size or x.shape[0]
        guide = LocalGuide(size, structure=program.structure, **family)
        guide.z_scale = config.beta
        return program.model, guide
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
    if registry.entry(config.model).class_latent:  # as evaluation sees them: no label given
        return x, (torch.full((n,), -1) if y is None else y)
    if config.condition == "label":
        return x, (torch.randint(0, num_classes, (n,), generator=generator) if y is None else y)
    return x, None


def run_condition(config, x_shape, num_classes=10):
    """What a run of ``config`` conditions its images on, for the door to find in the program
    (:class:`~pyro_vae.program.Program`'s ``condition``): the labels, or the image to complete
    with the pixels of its observed quadrants given; ``None`` for an unconditional run."""
    if config.condition == "label":
        return Condition("labels", num_classes=num_classes, observed=True)
    if config.observes_images():
        from .models import ObservedQuadrants

        given = ObservedQuadrants(x_shape, int(config.condition.split(":")[1])).observed
        return Condition("image", observed=True, given=given)
    return None


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


def make_built_in(config, x_shape, num_classes=10, train_size=None):
    """The built-in model and guide ``config`` names (before the door), made by its registry
    entry (:data:`pyro_vae.registry.MODELS`) from the settings it reads; a class model's
    ``alpha`` is :func:`classification_weight`'s."""
    entry = registry.entry(config.model)
    options = entry.options(config)
    if entry.class_latent:
        options["alpha"] = classification_weight(config, train_size)
    return entry.make(tuple(x_shape), config.z_dim, config.hidden_dims, num_classes, **options)


def build_class_vae(config, x_shape, num_classes=10, train_size=None):
    """The M2 or Gaussian-mixture model and its guide (:func:`pyro_vae.registry.make_class_vae`),
    before the door. ``alpha="kingma"`` is Kingma et al.'s weight 0.1 N on the *mean* of
    log q(y|x) over the labelled images (their eq. 9), that is ``0.1 * train_size / labels`` on
    each labelled image's term."""
    return make_built_in(config, x_shape, num_classes, train_size)


def build_vae(config, x_shape, num_classes=10):
    """The built-in model and amortized guide ``config`` describes (before the door)."""
    return make_built_in(config, x_shape, num_classes)
