"""An unconditional VAE with Pyro's two-argument signature, ``model(xs, ys=None)``, whose
``ys`` is never used: it must be trained as the plain VAE it is::

    z ~ Normal(0, I)                  # "latent"
    x ~ Bernoulli(dec(z))             # "obs", the pixels flattened
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class VAE(nn.Module):
    def __init__(self, x_shape=(1, 28, 28), z_dim=10, hidden_dims=(64,)):
        super().__init__()
        self.z_dim, self.pixels, hidden = z_dim, math.prod(x_shape), hidden_dims[-1]
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, self.pixels)
        )
        self.encoder = nn.Sequential(
            nn.Linear(self.pixels, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim)
        )

    def model(self, xs, ys=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", xs.shape[0]):
            prior = dist.Normal(torch.zeros(xs.shape[0], self.z_dim), 1.0).to_event(1)
            z = pyro.sample("latent", prior)
            pixels = xs.reshape(-1, self.pixels)
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=pixels)

    def guide(self, xs, ys=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", xs.shape[0]):
            loc, log_scale = self.encoder(xs.reshape(-1, self.pixels)).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))
