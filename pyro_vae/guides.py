"""Guides q(z|x): variational families for the models in :mod:`pyro_vae.models`.

A guide takes the same arguments as the model and samples the same latent sites, so swapping
one guide for another changes neither the model nor the ELBO.
"""

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule

from .models import data_plate


class AmortizedGuide(PyroModule):
    """Amortized inference: one encoder network serves every image::

        loc, scale = enc(x)
        z ~ Normal(loc, scale)         # diagonal Gaussian, per image

    :param encoder: a network mapping images to ``(loc, scale)`` of shape ``(..., z_dim)``.
    """

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def z_dist(self, x):
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            return pyro.sample("z", self.z_dist(x))
