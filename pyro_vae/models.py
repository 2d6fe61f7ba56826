"""Generative models p(z) p(x|z), written as Pyro programs.

Every model and guide in pyro_vae shares one calling convention, so any guide can be swapped in
without touching the model or the ELBO::

    model(x=None, y=None, idx=None, size=None)

``x`` is a minibatch of images ``(batch, *x_shape)`` (``None`` to generate), ``y`` the minibatch's
labels ``(batch,)`` or another conditioning input (unconditional models ignore it), ``idx`` the
minibatch's positions in a dataset of ``size`` images. With ``idx`` the ``"data"`` plate
subsamples, so log-densities are scaled by ``size / len(idx)`` and the ELBO is an unbiased estimate
of the whole dataset's ELBO; per-datapoint guides use ``idx`` to pick their parameters. Sample
sites are ``"z"`` (the latent code next to the image), ``"x"`` (the image) and, in the hierarchical
model, ``"z1"`` (the top latent layer).

The model family is one class, :class:`VAE`, composed of parts: a likelihood
(:mod:`pyro_vae.likelihoods`), a prior (:class:`StandardNormalPrior`, :class:`ConditionalPrior`,
:class:`HierarchicalPrior`), a condition that turns ``y`` into network input
(:class:`LabelCondition`, :class:`ObservedQuadrants`) and the decoder network.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule

from .errors import DataError
from .likelihoods import Bernoulli
from .nets import join, loc_scale


def data_plate(x=None, idx=None, size=None):
    """The ``"data"`` plate (dim -1) shared by models and guides.

    :param x: the minibatch, or ``None`` when generating.
    :param idx: positions of the minibatch in the dataset, or ``None``.
    :param int size: the dataset size when ``idx`` is given, else the number of images to generate
        when ``x`` is ``None``.
    """
    if idx is not None:
        return pyro.plate("data", size, subsample=idx, dim=-1)
    if x is not None:
        return pyro.plate("data", x.shape[0], dim=-1)
    if size is None:
        raise ValueError("data_plate needs x, idx or size")
    return pyro.plate("data", size, dim=-1)


def check_binary(x):
    """Raise :class:`DataError` unless every pixel of ``x`` is 0 or 1."""
    if not torch.all((x == 0) | (x == 1)):
        raise DataError(
            "the Bernoulli likelihood needs binary pixels (0 or 1), but the data has other values; "
            "binarize it (--binarize dynamic or --binarize static) or choose a continuous "
            "--likelihood"
        )


class LabelCondition(torch.nn.Module):
    """Turns integer labels ``(batch,)`` into one-hot network input ``(batch, num_classes)``."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.dim = num_classes

    def forward(self, y):
        # One-hot by comparison, as F.one_hot without its check of the largest label, which
        # reads a tensor's value and so stops a captured loss (pyro_vae.traced.CompiledLoss);
        # the labels were checked when the data were loaded.
        classes = torch.arange(self.num_classes, device=y.device)
        return (y.long().unsqueeze(-1) == classes).float()


class ObservedQuadrants(torch.nn.Module):
    """Image completion (Sohn, Lee & Yan 2015): ``y`` is the image, of which the networks see only
    the first ``observed`` quadrants (top left, top right, bottom left), flattened with the hidden
    pixels set to zero. ``hidden`` marks the pixels the model must generate.

    :param tuple x_shape: ``(C, H, W)``.
    :param int observed: 1, 2 or 3 quadrants.
    """

    def __init__(self, x_shape, observed):
        super().__init__()
        if len(x_shape) != 3 or not 1 <= observed <= 3:
            raise ValueError("ObservedQuadrants needs (C, H, W) images and 1 to 3 quadrants")
        _, h, w = x_shape
        seen = torch.zeros(x_shape, dtype=torch.bool)
        for q in range(observed):
            rows = slice(0, h // 2) if q in (0, 1) else slice(h // 2, h)
            cols = slice(0, w // 2) if q in (0, 2) else slice(w // 2, w)
            seen[:, rows, cols] = True
        self.register_buffer("observed", seen)
        self.register_buffer("hidden", ~seen)
        self.dim = int(seen.numel())

    def forward(self, y):
        return (y * self.observed).flatten(-3)


def features(condition, y):
    """The network input ``condition`` makes of ``y``; ``None`` for an unconditional model."""
    if condition is None:
        return None
    if y is None:
        raise DataError("this model is conditional; pass y (labels or observed images)")
    return condition(y)


class StandardNormalPrior(PyroModule):
    """``z ~ Normal(0, I)``, whatever the condition."""

    def __init__(self, z_dim):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self, c=None):
        return dist.Normal(self.loc, self.scale).to_event(1)


class ConditionalPrior(PyroModule):
    """A learned conditional prior ``z ~ Normal(loc(c), scale(c))`` (Sohn et al. 2015's prior network).

    :param net: a network mapping the condition ``(..., c_dim)`` to ``(..., 2 * z_dim)``.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, c):
        return dist.Normal(*loc_scale(self.net(c))).to_event(1)


class HierarchicalPrior(PyroModule):
    """Two stochastic layers, as in the IWAE paper's two-layer model (Burda et al. 2016)::

        z1 ~ Normal(0, I)                  # top layer, sample site "z1"
        z  ~ Normal(loc(z1), scale(z1))    # the layer the decoder reads

    :param int z1_dim: width of the top layer.
    :param net: a network mapping ``(..., z1_dim [+ c_dim])`` to ``(..., 2 * z_dim)``.
    """

    def __init__(self, z1_dim, net):
        super().__init__()
        self.top = StandardNormalPrior(z1_dim)
        self.net = net

    def forward(self, c=None):
        z1 = pyro.sample("z1", self.top())
        return dist.Normal(*loc_scale(self.net(join(z1, c)))).to_event(1)


class VAE(PyroModule):
    """The variational autoencoder's generative model (Kingma & Welling 2014)::

        z ~ p(z | y)                   # Normal(0, I), or a learned prior, or two layers z1 -> z
        x ~ likelihood(dec(z, y))      # Bernoulli, continuous Bernoulli or Gaussian, per pixel

    With the defaults it is the plain VAE ``z ~ Normal(0, I); x ~ Bernoulli(logits=dec(z))``. With a
    ``condition`` it is a conditional VAE (Sohn, Lee & Yan 2015): ``y`` reaches the decoder (and
    the prior, if learned) as extra input. The ``"z"`` site is scaled by ``z_scale`` (the beta of a
    beta-VAE, Higgins et al. 2017, or a KL warm-up factor, Bowman et al. 2016); the guide scales its
    latents by the same factor, and evaluation ignores scales.

    :param decoder: a network ``decoder(z, c)`` mapping ``(..., z_dim)`` to the likelihood's raw
        outputs ``(..., likelihood.outputs * C, H, W)``.
    :param int z_dim: latent dimension.
    :param tuple x_shape: shape of one image, e.g. ``(1, 28, 28)``.
    :param likelihood: a likelihood from :mod:`pyro_vae.likelihoods` (default Bernoulli).
    :param prior: a module ``prior(c)`` returning the distribution of ``"z"`` (default
        :class:`StandardNormalPrior`).
    :param condition: a module turning ``y`` into flat network input, or ``None``.
    :param torch.Tensor hidden: for image completion, the pixels the likelihood scores (the rest
        are given, not generated); ``None`` scores them all.
    """

    def __init__(
        self,
        decoder,
        z_dim,
        x_shape,
        likelihood=None,
        prior=None,
        condition=None,
        hidden=None,
    ):
        super().__init__()
        self.decoder = decoder
        self.z_dim = z_dim
        self.x_shape = tuple(x_shape)
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.prior = prior if prior is not None else StandardNormalPrior(z_dim)
        self.condition = condition
        self.register_buffer("hidden", hidden)
        self.z_scale = 1.0

    def features(self, y):
        return features(self.condition, y)

    def z_dist(self, y=None):
        return self.prior(self.features(y))

    def x_dist(self, z, y=None):
        fn = self.likelihood(self.decoder(z, self.features(y)))
        if self.hidden is not None:
            fn = fn.mask(self.hidden)
        return fn.to_event(len(self.x_shape))

    def forward(self, x=None, y=None, idx=None, size=None):
        if x is not None and self.likelihood.binary and dist.is_validation_enabled():
            check_binary(x)
        if x is None and size is None and self.condition is not None and y is not None:
            size = y.shape[0]
        with data_plate(x, idx, size):
            with poutine.scale(scale=self.z_scale):
                z = pyro.sample("z", self.z_dist(y))
            return pyro.sample("x", self.x_dist(z, y), obs=x)


class ClassVAE(PyroModule):
    """A VAE with a discrete class latent: the semi-supervised M2 of Kingma, Rezende, Mohamed &
    Welling (2014), and with ``mixture=True`` the Gaussian-mixture VAE (Dilokthanakul et al. 2016;
    Jiang et al. 2017), whose cluster is never observed::

        y ~ OneHotCategorical(1/K)      # the class; observed for labelled images
        z ~ Normal(0, I)                # M2: the style, independent of the class
          | Normal(loc[y], scale[y])    # mixture: one Gaussian bump per cluster
        x ~ likelihood(dec(z, y))       # M2: the decoder reads both
          | likelihood(dec(z))          # mixture: the cluster reaches x only through z

    ``y`` is the minibatch's labels with ``-1`` for an unlabelled image (``None``: all
    unlabelled). ``y`` is a latent site for every image; a labelled image's guide puts its mass on
    the label (:class:`~pyro_vae.guides.ClassGuide`), so its ELBO is the labelled bound
    ``L(x, y)`` and an unlabelled image's the bound ``U(x)`` with ``y`` summed or sampled
    (:mod:`pyro_vae.discrete`). With ``alpha > 0`` a labelled image adds Kingma et al.'s
    classification term ``alpha * log q(y|x)``, a factor in the model so that q(y|x) learns
    from the labels directly. ``alpha`` weighs each labelled image; Kingma et al.'s alpha = 0.1 N
    weighs the labelled images' mean, which is ``0.1 N / N_labelled`` here
    (:func:`pyro_vae.config.kingma_alpha`).

    :param decoder: a network ``decoder(z, c)`` as :class:`VAE`'s (``c``: the one-hot class for
        M2, ``None`` for the mixture).
    :param int z_dim: latent dimension.
    :param tuple x_shape: shape of one image.
    :param int num_classes: K.
    :param likelihood: a likelihood from :mod:`pyro_vae.likelihoods`.
    :param classifier: q(y|x)'s network (shared with the guide) for the ``alpha`` term.
    :param float alpha: weight of each labelled image's classification term (0: none).
    :param bool mixture: the Gaussian-mixture prior instead of M2's.
    """

    def __init__(
        self,
        decoder,
        z_dim,
        x_shape,
        num_classes,
        likelihood=None,
        classifier=None,
        alpha=0.0,
        mixture=False,
    ):
        super().__init__()
        self.decoder = decoder
        self.z_dim, self.x_shape, self.num_classes = z_dim, tuple(x_shape), num_classes
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.classifier = classifier
        self.alpha, self.mixture = alpha, mixture
        if mixture:
            # The bumps start close together (0.1 randn), near the encoder's first codes, and
            # separate as the data pull them apart. Started far apart (2 randn: norms near 8 at
            # z_dim 16) the bump nearest the first codes took every image and the others none
            # (mnist-small, 8 epochs: cluster accuracy 0.100 against 0.332; docs/guide/discrete.md).
            g = torch.Generator().manual_seed(0)
            self.locs = torch.nn.Parameter(0.1 * torch.randn(num_classes, z_dim, generator=g))
            self.log_scales = torch.nn.Parameter(torch.zeros(num_classes, z_dim))
        self.register_buffer("logits", torch.zeros(num_classes))

    def y_dist(self):
        return dist.OneHotCategorical(logits=self.logits)

    def z_dist(self, y):
        if self.mixture:
            return dist.Normal(y @ self.locs, (y @ self.log_scales).exp()).to_event(1)
        loc = self.logits.new_zeros(self.z_dim)
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def x_dist(self, z, y):
        fn = self.likelihood(self.decoder(z, None if self.mixture else y))
        return fn.to_event(len(self.x_shape))

    def forward(self, x=None, y=None, idx=None, size=None):
        if x is not None and self.likelihood.binary and dist.is_validation_enabled():
            check_binary(x)
        with data_plate(x, idx, size):
            c = pyro.sample("y", self.y_dist())
            z = pyro.sample("z", self.z_dist(c))
            out = pyro.sample("x", self.x_dist(z, c), obs=x)
            # every minibatch with labels given (-1: none) the same operations, whether or not
            # it holds a labelled image, so that a recording of one holds for all of them
            if self.alpha and x is not None and y is not None:
                labelled = y >= 0
                log_q = self.classifier(x).log_softmax(-1)
                log_q = log_q.gather(-1, y.clamp(min=0).long()[:, None]).squeeze(-1)
                pyro.factor("classify", self.alpha * log_q * labelled)
            return out
