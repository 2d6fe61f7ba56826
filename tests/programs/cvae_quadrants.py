"""Image completion in the idiom of Pyro's CVAE example (``examples/cvae``), our own program:
one ``nn.Module`` whose ``model(xs, ys=None)`` and ``guide(xs, ys=None)`` register it with
``pyro.module`` and open ``pyro.plate("data")`` without a size. ``xs`` is the image with its
hidden quadrants set to -1, ``ys`` the image with its observed quadrants set to -1; the model
observes the hidden pixels alone::

    z ~ Normal(prior_net(xs))                          # "z", from the observed part
    ys[xs == -1] ~ Bernoulli(generation_net(z)[xs == -1])   # "y", the hidden pixels

The guide reads ``(xs, ys)`` through a recognition network when ``ys`` is given, else it is the
prior network (Pyro's example also feeds a pretrained baseline's guess to the prior network;
this one reads ``xs`` alone). Like the example, the model indexes with the mask of each batch,
so it does not take particles in a batch dimension.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class Encoder(nn.Module):
    """``(loc, scale)`` of z from the observed part ``xs``, with the hidden part filled in from
    ``ys`` where it is given (the recognition network)."""

    def __init__(self, pixels, hidden, z_dim):
        super().__init__()
        self.fc1 = nn.Linear(pixels, hidden)
        self.fc21 = nn.Linear(hidden, z_dim)
        self.fc22 = nn.Linear(hidden, z_dim)

    def forward(self, xs, ys=None):
        xc = xs.clone()
        if ys is not None:
            xc[xs == -1] = ys[xs == -1]
        h = torch.relu(self.fc1(xc.reshape(xc.shape[0], -1)))
        return self.fc21(h), torch.exp(self.fc22(h))


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden, pixels):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, pixels))

    def forward(self, z):
        return torch.sigmoid(self.net(z))


class CVAE(nn.Module):
    def __init__(self, x_shape=(1, 28, 28), z_dim=20, hidden_dims=(200,)):
        super().__init__()
        pixels, hidden = math.prod(x_shape), hidden_dims[-1]
        self.prior_net = Encoder(pixels, hidden, z_dim)
        self.recognition_net = Encoder(pixels, hidden, z_dim)
        self.generation_net = Decoder(z_dim, hidden, pixels)

    def model(self, xs, ys=None):
        pyro.module("cvae", self)
        batch_size = xs.shape[0]
        with pyro.plate("data"):
            prior_loc, prior_scale = self.prior_net(xs)
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            loc = self.generation_net(zs)
            if ys is not None:
                mask_loc = loc[(xs == -1).reshape(batch_size, -1)].reshape(batch_size, -1)
                mask_ys = ys[xs == -1].reshape(batch_size, -1)
                pyro.sample(
                    "y", dist.Bernoulli(mask_loc, validate_args=False).to_event(1), obs=mask_ys
                )
            else:
                pyro.deterministic("y", loc.detach())
            return loc

    def guide(self, xs, ys=None):
        with pyro.plate("data"):
            if ys is None:
                loc, scale = self.prior_net(xs)
            else:
                loc, scale = self.recognition_net(xs, ys)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class PriorGuide(CVAE):
    """The same model with the prior network as its guide whether or not ``ys`` is given: q = p,
    so the ELBO of each image is an unbiased estimate of p(hidden | observed) in expectation of
    its exponent, and its importance-sampled estimate with one sample equals the ELBO."""

    def guide(self, xs, ys=None):
        return super().guide(xs, None)
