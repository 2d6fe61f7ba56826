"""Guides q(z|x): variational families for the models in :mod:`pyro_vae.models`.

A guide takes the same arguments as the model and samples the same latent sites, so swapping
one guide for another changes neither the model nor the ELBO. Each guide's ``z_dist(x, y, idx)``
returns q(z|x) for the images ``x`` at dataset positions ``idx``, so guides compose: a
:class:`DeltaGuide` wraps any of the others.

- :class:`AmortizedGuide`: one encoder network for every image (Kingma & Welling 2014).
- :class:`LocalGuide`: free ``loc`` and ``scale`` per image, the variational EM of classical
  latent variable models; fitted to new images by an E-step (:func:`pyro_vae.inference.e_step`).
  Started from an encoder's output it is the semi-amortized guide (Kim et al. 2018).
- :class:`DeltaGuide`: zero posterior variance, the autoencoder / MAP limit.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn

from .errors import DataError
from .models import data_plate, features
from .nets import loc_scale


class Guide(PyroModule):
    """Base of the guides below: sample ``"z"`` from ``self.z_dist(x, y, idx)`` in the data plate.

    ``z_scale`` scales the site's log-density (beta-VAE, KL warm-up; set by
    :func:`pyro_vae.objectives.kl_warmup` together with the model's).
    """

    z_scale = 1.0

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size), poutine.scale(scale=self.z_scale):
            return pyro.sample("z", self.z_dist(x, y, idx))


class AmortizedGuide(Guide):
    """Amortized inference: one encoder network serves every image::

        loc, scale = enc(x, y)
        z  ~ Normal(loc, scale)          # diagonal Gaussian, per image
        z1 ~ Normal(top(z))              # only for the hierarchical model: q(z1 | z)

    The hierarchical guide runs bottom-up, as the IWAE paper's recognition model does:
    q(z, z1 | x) = q(z | x) q(z1 | z). With a ``condition`` (a conditional VAE) the encoder also
    reads ``y``, through the same condition module as the model's.

    :param encoder: a network ``encoder(x, c)`` returning ``(loc, scale)`` of shape ``(..., z_dim)``.
    :param condition: the model's condition module, or ``None``.
    :param top: a network mapping ``(..., z_dim)`` to ``(..., 2 * z1_dim)`` for the top layer of a
        hierarchical model, or ``None``.
    """

    def __init__(self, encoder, condition=None, top=None):
        super().__init__()
        self.encoder = encoder
        self.condition = condition
        self.top = top

    def z_dist(self, x, y=None, idx=None):
        return dist.Normal(*self.encoder(x, features(self.condition, y))).to_event(1)

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size), poutine.scale(scale=self.z_scale):
            z = pyro.sample("z", self.z_dist(x, y, idx))
            if self.top is not None:
                pyro.sample("z1", dist.Normal(*loc_scale(self.top(z))).to_event(1))
            return z


class LocalGuide(Guide):
    """Per-datapoint variational parameters: one free diagonal Gaussian per image::

        z_i ~ Normal(loc[i], scale[i])   # i = the image's position in the dataset (idx)

    This is variational EM's E-step family: ``size`` sets of parameters, nothing shared, so its
    optimum per image is the q* of Cremer, Li & Duvenaud (2018) against which the amortization
    gap is measured. Minibatches pick their rows through the ``"data"`` plate's ``subsample=idx``;
    called without ``idx``, the guide needs all ``size`` images in order.

    Trained by :func:`~pyro_vae.train.fit`, each image's parameters take one Adam step per epoch
    (when its minibatch comes), so ``fit``'s default ``lr=1e-3`` moves them by about 1e-3 per epoch
    and leaves q near the prior: train them with a learning rate of 0.01-0.1 (the tests train
    decoder and locals together with 0.03), or fit them with
    :func:`~pyro_vae.inference.e_step` (every image every step, ``lr=0.1``). ``fit``'s test ELBO
    for this guide comes from an E-step on the test images after the last epoch
    (:func:`~pyro_vae.train.mean_test_elbo`).

    :param int size: number of images (rows of ``loc`` and ``scale``).
    :param int z_dim: latent dimension.
    :param torch.Tensor loc: initial locations ``(size, z_dim)``; default zeros (the prior's mean).
    :param torch.Tensor scale: initial scales ``(size, z_dim)``; default ones (the prior's scale).
    """

    def __init__(self, size, z_dim, loc=None, scale=None):
        super().__init__()
        self.size, self.z_dim = size, z_dim
        loc = torch.zeros(size, z_dim) if loc is None else loc.detach().clone()
        scale = torch.ones(size, z_dim) if scale is None else scale.detach().clone()
        if loc.shape != (size, z_dim) or scale.shape != (size, z_dim):
            raise DataError(
                f"LocalGuide needs loc and scale of shape ({size}, {z_dim}), "
                f"got {tuple(loc.shape)} and {tuple(scale.shape)}"
            )
        self.loc = nn.Parameter(loc)
        self.scale = PyroParam(scale, constraint=constraints.positive)

    @classmethod
    @torch.no_grad()
    def from_guide(cls, guide, x, y=None):
        """A local guide for the images ``x`` (with condition ``y``) that starts where ``guide``
        stands on them.

        Refining it with a few E-steps is semi-amortized inference (Kim et al. 2018); with none,
        it is ``guide`` itself, image for image.
        """
        q = guide.z_dist(x, y).base_dist
        return cls(x.shape[0], q.loc.shape[-1], q.loc, q.scale)

    def z_dist(self, x, y=None, idx=None):
        if idx is None:
            if x.shape[0] != self.size:
                raise DataError(
                    f"this local guide holds parameters for {self.size} images, got "
                    f"{x.shape[0]}; pass their positions idx, or fit a guide for these images"
                )
            return dist.Normal(self.loc, self.scale).to_event(1)
        return dist.Normal(self.loc[idx], self.scale[idx]).to_event(1)


class DeltaGuide(Guide):
    """The zero-variance limit of another guide: a point mass at its mean::

        z = mean of guide's q(z|x)
        z ~ Delta(z)                   # no posterior uncertainty

    Trained jointly with the decoder this is a (regularized) autoencoder; with the decoder held
    fixed and a :class:`LocalGuide` inside, its E-step finds each image's MAP latent.

    Its "ELBO" is ``log p(x, z)`` at one point, because a Delta's density term is taken as 0.
    That is **not** a lower bound on log p(x): the entropy of a point mass is minus infinity, so
    the true ELBO of a Delta guide is minus infinity, and ``log p(x, z)`` is a density in z whose
    value changes when z is rescaled (it can exceed log p(x)). For the same reason a Delta guide
    cannot serve as an importance sampling proposal. Report its reconstruction error instead.

    :param guide: any pyro_vae guide with ``z_dist(x, y, idx)``.
    """

    def __init__(self, guide):
        super().__init__()
        self.guide = guide

    def z_dist(self, x, y=None, idx=None):
        return dist.Delta(self.guide.z_dist(x, y, idx).mean, event_dim=1)
