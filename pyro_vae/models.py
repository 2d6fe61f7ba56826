"""Generative models p(z) p(x|z), written as Pyro programs.

Every model and guide in pyro_vae shares one calling convention, so any guide can be swapped in
without touching the model or the ELBO::

    model(x=None, y=None, idx=None, size=None)

``x`` is a minibatch of images ``(batch, *x_shape)`` (``None`` to generate), ``y`` an optional
conditioning input, ``idx`` the minibatch's positions in a dataset of ``size`` images. With ``idx``
the ``"data"`` plate subsamples, so log-densities are scaled by ``size / len(idx)`` and the ELBO is
an unbiased estimate of the whole dataset's ELBO; per-datapoint guides use ``idx`` to pick their
parameters. Sample sites are ``"z"`` (latent code) and ``"x"`` (image).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from .errors import DataError


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
            "binarize it (--binarize dynamic or --binarize static)"
        )


class VAE(PyroModule):
    """The variational autoencoder's generative model (Kingma & Welling 2014)::

        z ~ Normal(0, I)               # latent code, z_dim numbers per image
        x ~ Bernoulli(logits=dec(z))   # image, pixel by pixel

    :param decoder: a network mapping ``(..., z_dim)`` to per-pixel logits ``(..., *x_shape)``.
    :param int z_dim: latent dimension.
    :param tuple x_shape: shape of one image, e.g. ``(1, 28, 28)``.
    """

    def __init__(self, decoder, z_dim, x_shape):
        super().__init__()
        self.decoder = decoder
        self.z_dim = z_dim
        self.x_shape = tuple(x_shape)
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))

    def z_dist(self):
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def x_dist(self, z):
        return dist.Bernoulli(logits=self.decoder(z)).to_event(len(self.x_shape))

    def forward(self, x=None, y=None, idx=None, size=None):
        if x is not None and dist.is_validation_enabled():
            check_binary(x)
        with data_plate(x, idx, size):
            z = pyro.sample("z", self.z_dist())
            return pyro.sample("x", self.x_dist(z), obs=x)
