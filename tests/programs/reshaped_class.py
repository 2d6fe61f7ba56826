"""A mixture VAE that cannot be enumerated: the model reshapes its class sample to
``(batch, K)`` before the decoder, as code written for one sample per image does, so the extra
dim Pyro's parallel enumeration gives the class breaks it. Trained with ``--discrete score``::

    y ~ OneHotCategorical(1/K)           # "y", the cluster
    z ~ Normal(0, I)                     # "z"
    x ~ Bernoulli(dec(z, y))             # "x", the pixels flattened
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class ReshapedClass(nn.Module):
    """``reshape=False`` gives the same program written for enumeration (its twin in tests)."""

    def __init__(self, x_dim, z_dim=2, hidden=32, num_classes=3, reshape=True):
        super().__init__()
        self.z_dim, self.num_classes, self.reshape = z_dim, num_classes, reshape
        self.decoder = nn.Sequential(
            nn.Linear(z_dim + num_classes, hidden), nn.Softplus(), nn.Linear(hidden, x_dim)
        )
        self.classifier = nn.Linear(x_dim, num_classes)
        self.encoder = nn.Linear(x_dim, 2 * z_dim)

    def model(self, x):
        pyro.module("reshaped_class", self)
        pixels = x.reshape(x.shape[0], -1)
        with pyro.plate("data", x.shape[0]):
            probs = torch.full((x.shape[0], self.num_classes), 1.0 / self.num_classes)
            y = pyro.sample("y", dist.OneHotCategorical(probs))
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            if self.reshape:
                y = y.reshape(x.shape[0], -1)  # one class per image: not so under enumeration
            logits = self.decoder(torch.cat(_aligned(z, y), -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=pixels)

    def guide(self, x):
        pixels = x.reshape(x.shape[0], -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(pixels)))
            loc, log_scale = self.encoder(pixels).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def _aligned(z, y):
    """``z`` and ``y`` broadcast in all but their last dims."""
    shape = torch.broadcast_shapes(z.shape[:-1], y.shape[:-1])
    return z.expand(*shape, z.shape[-1]), y.expand(*shape, y.shape[-1])


def make(x_shape, z_dim, hidden_dims, num_classes):
    return ReshapedClass(math.prod(x_shape), z_dim, hidden_dims[0])
