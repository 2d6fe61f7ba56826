"""The models ``--model`` names: one table, in which a model file is one more entry.

Each built-in model is made the way a model file's factory is: ``make(x_shape, z_dim,
hidden_dims, num_classes, **options)`` returns ``(model, guide)``, two Pyro programs, and the door
(:class:`pyro_vae.program.Program`) learns everything else about them by running them. An entry
also says which settings of :class:`~pyro_vae.config.Config` beyond the sizes it reads (the
config refuses the others for it; ``--beta`` and ``--kl-warmup`` apply to every program, through
the door's :class:`~pyro_vae.program.LatentScale`), describes itself in one line (``--help``, the docs' table,
the tests' parameters), and may add numbers and figures to a trained run's report.

=============  ==================================================================================
entry          the program
=============  ==================================================================================
vae            z ~ N(0, I), x ~ p(x | z): Kingma & Welling's VAE (with ``--condition``, a CVAE)
hierarchical   z1 ~ N(0, I), z ~ p(z | z1), x ~ p(x | z): two latent layers
m2             y ~ Cat(1/K), z ~ N(0, I), x ~ p(x | y, z): Kingma et al.'s semi-supervised VAE
gmvae          y ~ Cat(1/K), z ~ p(z | y), x ~ p(x | z): a Gaussian-mixture prior
FILE.py        your own Pyro program (:mod:`pyro_vae.modelfile`)
=============  ==================================================================================

Adding a built-in model is adding an entry to :data:`MODELS`: a maker, the settings it reads,
a line of description.
"""

import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import ConfigError, shown

#: The settings that shape a built-in model's networks and likelihood, with the value each has
#: when unset: an entry that does not read one refuses any other value of it.
FAMILY_SETTINGS = {
    "likelihood": "bernoulli",
    "sigma": None,
    "net": "mlp",
    "activation": "softplus",
    "condition": "none",
    "learned_prior": False,
    "z1_dim": None,
}


@dataclass(frozen=True)
class ModelEntry:
    """One model ``--model`` can name.

    :param str name: the name ``--model`` takes (for a model file: ``FILE.py[:NAME]``).
    :param make: ``make(x_shape, z_dim, hidden_dims, num_classes, **options)`` returning
        ``(model, guide)`` (the guide may be ``None``: variational EM), the options being the
        ``reads`` settings of the config; a model file's factory has the same signature.
    :param tuple reads: the :data:`FAMILY_SETTINGS` it reads.
    :param str description: one line, for ``--help`` and the docs.
    :param report: ``report(run, data)``, a dict of numbers a trained run adds to its metrics
        (writing its figures into the run directory), or ``None``.
    :param bool class_latent: the program has a class site ``y`` that the run's labels observe
        where they are given (``-1``: no label), so a run passes it the labels it has.
    :param bool needs_labels: a run must give ``--labels``.
    :param bool user_code: ``make`` runs a user's file (so nothing is made just to count).
    """

    name: str
    make: Callable
    reads: tuple
    description: str
    report: Optional[Callable] = None
    class_latent: bool = False
    needs_labels: bool = False
    user_code: bool = False

    def options(self, config):
        """The keyword options ``make`` takes from ``config``."""
        return {name: getattr(config, name) for name in self.reads}

    def unread(self, config):
        """The family settings ``config`` changes that this entry does not read."""
        return [
            k for k, v in FAMILY_SETTINGS.items() if k not in self.reads and getattr(config, k) != v
        ]


def make_vae(
    x_shape,
    z_dim,
    hidden_dims,
    num_classes=10,
    likelihood="bernoulli",
    sigma=None,
    net="mlp",
    activation="softplus",
    condition="none",
    learned_prior=False,
    z1_dim=None,
    hierarchical=False,
):
    """The VAE (:class:`~pyro_vae.models.VAE`) and its encoder (:class:`~pyro_vae.guides.
    AmortizedGuide`), composed of the parts the options name: with ``condition`` ``"label"`` or
    ``"quadrants:K"`` a conditional VAE, with ``hierarchical`` a top layer ``z1`` of ``z1_dim``
    numbers (default: half of ``z_dim``)."""
    from .guides import AmortizedGuide
    from .likelihoods import make_likelihood
    from .models import VAE, ConditionalPrior, HierarchicalPrior, LabelCondition, ObservedQuadrants
    from .nets import ACTIVATIONS, make_fc, make_networks

    x_shape = tuple(x_shape)
    likelihood = make_likelihood(likelihood, x_shape, sigma)
    hidden, cond = None, None
    if condition == "label":
        cond = LabelCondition(num_classes)
    elif condition.startswith("quadrants:"):
        cond = ObservedQuadrants(x_shape, int(condition.split(":")[1]))
        hidden = cond.hidden
    c_dim = cond.dim if cond is not None else 0
    encoder, decoder = make_networks(
        net, x_shape, z_dim, hidden_dims, c_dim, likelihood.outputs, activation
    )
    width = hidden_dims[-1] if net == "mlp" else 2 * z_dim
    act = ACTIVATIONS[activation]
    prior, top = None, None
    if hierarchical:
        z1_dim = z1_dim or max(1, z_dim // 2)
        prior = HierarchicalPrior(z1_dim, make_fc([z1_dim + c_dim, width, 2 * z_dim], act))
        top = make_fc([z_dim, width, 2 * z1_dim], act)
    elif learned_prior or hidden is not None:
        # Image completion always learns p(z | observed part), as Sohn et al. do.
        prior = ConditionalPrior(make_fc([c_dim, width, 2 * z_dim], act))
    model = VAE(decoder, z_dim, x_shape, likelihood, prior, cond, hidden)
    return model, AmortizedGuide(encoder, cond, top)


def make_hierarchical(x_shape, z_dim, hidden_dims, num_classes=10, **options):
    """:func:`make_vae` with its top layer ``z1 -> z``."""
    return make_vae(x_shape, z_dim, hidden_dims, num_classes, hierarchical=True, **options)


def make_class_vae(
    x_shape,
    z_dim,
    hidden_dims,
    num_classes=10,
    likelihood="bernoulli",
    sigma=None,
    net="mlp",
    activation="softplus",
    alpha=0.0,
    mixture=False,
):
    """M2 (or with ``mixture`` the Gaussian-mixture VAE) and its guide
    (:class:`~pyro_vae.models.ClassVAE`, :class:`~pyro_vae.guides.ClassGuide`); ``alpha`` is
    the weight of log q(y|x) on each labelled image."""
    import torch

    from .guides import ClassGuide
    from .likelihoods import make_likelihood
    from .models import ClassVAE
    from .nets import ACTIVATIONS, make_fc, make_networks

    x_shape = tuple(x_shape)
    likelihood = make_likelihood(likelihood, x_shape, sigma)
    # M2's encoder and decoder read the class; the mixture's read the image and z alone (an
    # encoder q(z | x, y) could move z into whichever bump y names, and every cluster would then
    # explain every image equally well)
    c_dim = 0 if mixture else num_classes
    encoder, decoder = make_networks(
        net, x_shape, z_dim, hidden_dims, c_dim, likelihood.outputs, activation
    )
    classifier = torch.nn.Sequential(
        torch.nn.Flatten(-len(x_shape)),
        make_fc([math.prod(x_shape), *hidden_dims, num_classes], ACTIVATIONS[activation]),
    )
    model = ClassVAE(decoder, z_dim, x_shape, num_classes, likelihood, classifier, alpha, mixture)
    return model, ClassGuide(classifier, encoder, num_classes, z_reads_y=not mixture)


def make_mixture(x_shape, z_dim, hidden_dims, num_classes=10, **options):
    """:func:`make_class_vae` with the mixture prior p(z | y)."""
    return make_class_vae(x_shape, z_dim, hidden_dims, num_classes, mixture=True, **options)


def _class_report(run, data):
    from . import class_latent

    return class_latent.report(run, data)


def _cluster_report(run, data):
    from . import class_latent

    return class_latent.cluster_report(run, data)


def _file_report(run, data):
    """A model file trained with ``--labels`` is scored as M2 is."""
    return _class_report(run, data) if run.structure.y.partial else {}


_NETWORKS = ("likelihood", "sigma", "net", "activation")

#: The built-in models, by name.
MODELS = {
    e.name: e
    for e in (
        ModelEntry(
            "vae",
            make_vae,
            _NETWORKS + ("condition", "learned_prior"),
            "z ~ N(0, I), x ~ p(x | z); with --condition a conditional VAE",
        ),
        ModelEntry(
            "hierarchical",
            make_hierarchical,
            _NETWORKS + ("condition", "learned_prior", "z1_dim"),
            "two latent layers z1 -> z -> x",
        ),
        ModelEntry(
            "m2",
            make_class_vae,
            _NETWORKS,
            "the semi-supervised VAE, with --labels; its defaults are its measured recipe",
            report=_class_report,
            class_latent=True,
            needs_labels=True,
        ),
        ModelEntry(
            "gmvae",
            make_mixture,
            _NETWORKS,
            "a Gaussian mixture prior, one bump per class",
            report=_cluster_report,
            class_latent=True,
        ),
    )
}

#: How ``--model`` names a model file.
FILE_FORMS = ("FILE.py", "FILE.py:NAME", "FILE.py:MODEL,GUIDE")


def is_model_file(name):
    """``FILE.py``, ``FILE.py:NAME`` or ``FILE.py:MODEL,GUIDE``."""
    if not isinstance(name, str):
        return False
    if name.endswith(".py"):
        return True
    path, _, names = name.rpartition(":")
    return path.endswith(".py") and all(n.isidentifier() for n in names.split(","))


def model_file_entry(spec):
    """The entry of the model file ``spec``: its factory (a class, a factory function, or the
    file's ``model`` and ``guide``) called with the sizes its signature takes."""

    def make(x_shape, z_dim, hidden_dims, num_classes=10, **options):
        from .modelfile import load_program

        return load_program(spec, x_shape, z_dim, hidden_dims, num_classes, **options)

    return ModelEntry(
        spec,
        make,
        ("condition",),
        "your own Pyro program: " + ", ".join(FILE_FORMS),
        report=_file_report,
        user_code=True,
    )


def absolute(spec):
    """A model file's ``spec`` with its path made absolute (a run loads it from anywhere);
    any other name as it is."""
    if not is_model_file(spec):
        return spec
    path, names = (spec, "") if spec.endswith(".py") else spec.rpartition(":")[::2]
    return os.path.abspath(path) + (f":{names}" if names else "")


def entry(name):
    """The entry ``--model name`` names, or a :class:`~pyro_vae.errors.ConfigError`."""
    if isinstance(name, str) and name in MODELS:
        return MODELS[name]
    if is_model_file(name):
        return model_file_entry(name)
    raise ConfigError(
        f"unknown model {shown(name)}; choose {', '.join(MODELS)}, {', '.join(FILE_FORMS[:-1])} "
        f"or {FILE_FORMS[-1]}"
    )


def help_text():
    """``--model``'s help: one line per entry."""
    built_in = "; ".join(f"{e.name} ({e.description})" for e in MODELS.values())
    return (
        f"{built_in}; or your own Pyro model file: FILE.py (its functions model and guide), "
        "FILE.py:NAME (a class or factory), FILE.py:MODEL,GUIDE"
    )
