"""Likelihoods p(x | z): what the decoder's raw numbers mean for the pixels.

A likelihood is a small object the model composes: ``likelihood(h)`` turns the decoder output ``h``
into a distribution over every pixel (the model adds ``.to_event``). The decoder makes
``likelihood.outputs`` numbers per pixel, so a likelihood with a learned variance gets both a
location and a scale from the same network.

- ``bernoulli``: binary pixels, ``Bernoulli(logits=h)``; refuses grey pixels (binarize them).
- ``continuous-bernoulli``: grey pixels in [0, 1], ``ContinuousBernoulli(logits=h)``, the
  normalized version of the cross-entropy that VAEs on grey images often use unnormalized
  (Loaiza-Ganem & Cunningham, NeurIPS 2019).
- ``gaussian``: ``Normal(sigmoid(h1), softplus(h2) + min_scale)`` with a learned per-pixel scale, or
  with ``sigma`` a fixed scale for every pixel, which is the squared error in disguise::

      log N(x; mu, sigma^2 I) = -||x - mu||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2)

  for D pixels: minimizing the summed MSE is maximizing this likelihood with the scale fixed, and the
  constant D/2 log(2 pi sigma^2) is what makes the number a density in nats.

Log-densities of continuous pixels are densities (nats per image with respect to the Lebesgue
measure on [0, 1]^D); they can be positive, and they are not comparable with Bernoulli numbers,
which are log-probabilities of binary images.
"""

import math

import pyro.distributions as dist
from torch.nn import functional as F

from .errors import ConfigError

LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")


class Bernoulli:
    """Binary pixels: ``x ~ Bernoulli(logits=h)``."""

    outputs = 1
    binary = True

    def __call__(self, h):
        return dist.Bernoulli(logits=h)


class ContinuousBernoulli:
    """Grey pixels in [0, 1]: ``x ~ ContinuousBernoulli(logits=h)`` (Loaiza-Ganem & Cunningham 2019)."""

    outputs = 1
    binary = False

    def __call__(self, h):
        return dist.ContinuousBernoulli(logits=h)


class Gaussian:
    """Real pixels: ``x ~ Normal(sigmoid(h_loc), scale)``.

    The location goes through a sigmoid because pixel intensities live in [0, 1].

    :param float sigma: a fixed scale for every pixel (the MSE loss up to its constant), or ``None``
        for a per-pixel scale output by the decoder, ``softplus(h_scale) + min_scale``.
    :param int channel_dim: the channel dimension of ``h``, counted from the right (the learned
        scale's outputs follow the location's along it).
    :param float min_scale: the floor of a learned scale. On images whose pixels are exactly
        constant (MNIST's black background) the maximum-likelihood scale is zero, so the density
        would grow without bound; the floor caps each pixel's log-density at
        ``-log(min_scale * sqrt(2 pi))``.
    """

    binary = False

    def __init__(self, sigma=None, channel_dim=-3, min_scale=1e-2):
        if sigma is not None and not (isinstance(sigma, (int, float)) and 0 < sigma < math.inf):
            raise ConfigError(f"sigma must be a positive number, got {sigma!r}")
        self.sigma = sigma
        self.channel_dim = channel_dim
        self.min_scale = min_scale
        self.outputs = 1 if sigma is not None else 2

    def __call__(self, h):
        if self.sigma is not None:
            return dist.Normal(h.sigmoid(), self.sigma)
        loc, raw_scale = h.chunk(2, dim=self.channel_dim)
        return dist.Normal(loc.sigmoid(), F.softplus(raw_scale) + self.min_scale)


def make_likelihood(name, x_shape, sigma=None):
    """The likelihood called ``name`` (one of :data:`LIKELIHOODS`) for images of ``x_shape``.

    :param float sigma: the fixed scale of a ``gaussian``; ``None`` learns it per pixel.
    """
    if name not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
    if sigma is not None and name != "gaussian":
        raise ConfigError(f"sigma fixes the scale of a gaussian likelihood, not of {name}")
    if name == "gaussian":
        return Gaussian(sigma, channel_dim=-len(x_shape))
    return {"bernoulli": Bernoulli, "continuous-bernoulli": ContinuousBernoulli}[name]()
