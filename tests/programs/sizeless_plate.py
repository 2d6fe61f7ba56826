"""A linear-Gaussian-code VAE as two plain functions with ``pyro.param`` parameters, inside
``pyro.plate("data")`` without a size (the batch comes from the sites' shapes), no second
argument at all::

    z ~ Normal(0, I)                  # "z", 2 numbers per image
    x ~ Bernoulli(logits=z W + b)     # "x", the pixels flattened
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

Z_DIM = 2


def model(x):
    pixels = x.reshape(x.shape[0], -1)
    w = pyro.param("w", lambda: 0.1 * torch.randn(Z_DIM, pixels.shape[-1]))
    b = pyro.param("b", lambda: torch.zeros(pixels.shape[-1]))
    with pyro.plate("data"):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], Z_DIM), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=z @ w + b).to_event(1), obs=pixels)


def guide(x):
    pixels = x.reshape(x.shape[0], -1)
    m = pyro.param("m", lambda: torch.zeros(pixels.shape[-1], Z_DIM))
    s = pyro.param("s", lambda: torch.ones(Z_DIM), constraint=constraints.positive)
    with pyro.plate("data"):
        pyro.sample("z", dist.Normal(pixels @ m, s).to_event(1))
