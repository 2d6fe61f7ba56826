"""A VAE with a count latent of no finite support: ``n ~ Poisson(3)`` per image next to the code
``z``, the decoder reading both. Evaluation cannot sum ``n`` out (it samples it from the guide),
Pyro's MCMC cannot enumerate it, and a per-image guide has no categorical q for it::

    n ~ Poisson(3)                       # "n", a count
    z ~ Normal(0, I)                     # "z"
    x ~ Bernoulli(dec(z, n / 3))         # "x", the pixels flattened
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class PoissonCount(nn.Module):
    def __init__(self, x_dim, z_dim=2, hidden=8):
        super().__init__()
        self.z_dim = z_dim
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + 1, hidden), nn.Softplus(), nn.Linear(hidden, x_dim)
        )
        self.rate = nn.Linear(x_dim, 1)
        self.encoder = nn.Linear(x_dim, 2 * z_dim)

    def model(self, x):
        pyro.module("poisson_count", self)
        pixels = x.reshape(x.shape[0], -1)
        with pyro.plate("data", x.shape[0]):
            n = pyro.sample("n", dist.Poisson(torch.full((x.shape[0],), 3.0)))
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            h = torch.cat([z, (n / 3.0).unsqueeze(-1).expand(*z.shape[:-1], 1)], -1)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(h)).to_event(1), obs=pixels)

    def guide(self, x):
        pixels = x.reshape(x.shape[0], -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("n", dist.Poisson(nn.functional.softplus(self.rate(pixels)).squeeze(-1)))
            loc, log_scale = self.encoder(pixels).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def make(x_shape, z_dim, hidden_dims, num_classes):
    return PoissonCount(math.prod(x_shape), z_dim, hidden_dims[0])
