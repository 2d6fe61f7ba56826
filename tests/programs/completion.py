"""Image completion in pyro_vae's own form, our own program: ``model(x, y)`` with ``y`` the
whole image, of which the networks read the observed quadrants (the factory is given
``--condition``, ``"quadrants:N"``), and ``x`` observed in full at the image site (the door
scores its hidden pixels alone)::

    z ~ Normal(prior(y * observed))            # "z"
    x ~ Bernoulli(dec(z, y * observed))        # "x", the pixels flattened

``make`` builds it for the sizes pyro_vae passes; ``Peeking`` reads the whole of ``y``, the part
it must complete too, and is refused.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models import ObservedQuadrants


def cat(*tensors):
    """Concatenate along the last dim, broadcasting the others (particles left of the batch)."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], -1)


class Completion(nn.Module):
    def __init__(self, x_shape, z_dim, hidden_dims, condition):
        super().__init__()
        pixels, hidden = math.prod(x_shape), hidden_dims[-1]
        self.z_dim, self.pixels = z_dim, pixels
        self.observed = ObservedQuadrants(x_shape, int(condition.split(":")[1]))
        self.prior = nn.Sequential(
            nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim)
        )
        self.encoder = nn.Sequential(
            nn.Linear(2 * pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + pixels, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )

    def part(self, y):
        return self.observed(y)

    def model(self, x, y):
        pyro.module("completion", self)
        c = self.part(y)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.prior(c).chunk(2, -1)
            z = pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
            logits = self.decoder(cat(z, c))
            pyro.sample(
                "x", dist.Bernoulli(logits=logits).to_event(1), obs=x.reshape(-1, self.pixels)
            )

    def guide(self, x, y):
        c = self.part(y)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(cat(x.reshape(-1, self.pixels), c)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


class Peeking(Completion):
    def part(self, y):
        return y.flatten(-3)


def make(x_shape, z_dim, hidden_dims, condition):
    return Completion(x_shape, z_dim, hidden_dims, condition)


def make_peeking(x_shape, z_dim, hidden_dims, condition):
    return Peeking(x_shape, z_dim, hidden_dims, condition)
