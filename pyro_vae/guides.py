"""Guides q(z|x): variational families for the models in :mod:`pyro_vae.models`.

A guide takes the same arguments as the model and samples the same latent sites, so swapping
one guide for another changes neither the model nor the ELBO.
"""

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.nn import PyroModule

from .models import data_plate, features
from .nets import loc_scale


class AmortizedGuide(PyroModule):
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
        self.z_scale = 1.0

    def z_dist(self, x, y=None):
        return dist.Normal(*self.encoder(x, features(self.condition, y))).to_event(1)

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size), poutine.scale(scale=self.z_scale):
            z = pyro.sample("z", self.z_dist(x, y))
            if self.top is not None:
                pyro.sample("z1", dist.Normal(*loc_scale(self.top(z))).to_event(1))
            return z
