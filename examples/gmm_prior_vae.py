"""A VAE with a learned Gaussian-mixture prior: an example model file for ``pyro-vae``.

Not built into the package; train it like any built-in model::

    pyro-vae train --model examples/gmm_prior_vae.py:GMMPriorVAE --z-dim 10 --epochs 30
    pyro-vae inspect examples/gmm_prior_vae.py:GMMPriorVAE

The generative story (cf. Dilokthanakul et al. 2016, "Deep unsupervised clustering with Gaussian
mixture VAEs", without their extra latent variables)::

    z ~ sum_k pi_k Normal(mu_k, diag(sigma_k^2))   # a prior with K learned bumps
    x ~ Bernoulli(logits=dec(z))                     # image, pixel by pixel

The mixture has no closed-form KL against the Normal guide, so the mean-field ELBO falls back to
a Monte Carlo estimate of it; ``--elbo trace`` says so explicitly.

The file follows the protocol in ``pyro_vae.modelfile``: ``GMMPriorVAE(x_shape, z_dim,
hidden_dims)`` has a ``model`` and a ``guide``, both PyroModules with the signature
``(x=None, y=None, idx=None, size=None)``, sites ``"z"`` and ``"x"`` in ``pyro_vae.data_plate``.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam

from pyro_vae import AmortizedGuide, MLPDecoder, MLPEncoder, data_plate


class GMMPriorModel(PyroModule):
    """z ~ a K-component Gaussian mixture; x ~ Bernoulli(logits=dec(z))."""

    def __init__(self, x_shape, z_dim, hidden_dims, components=10):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.decoder = MLPDecoder(x_shape, z_dim, list(hidden_dims)[::-1])
        # spread the bumps out so they do not all start on top of each other
        self.locs = PyroParam(2.0 * torch.randn(components, z_dim))
        self.scales = PyroParam(torch.ones(components, z_dim), dist.constraints.positive)
        self.logits = PyroParam(torch.zeros(components))

    def z_dist(self, y=None):
        bumps = dist.Normal(self.locs, self.scales).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), bumps)

    def x_dist(self, z, y=None):
        return dist.Bernoulli(logits=self.decoder(z)).to_event(len(self.x_shape))

    def forward(self, x=None, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            z = pyro.sample("z", self.z_dist())
            return pyro.sample("x", self.x_dist(z), obs=x)


class GMMPriorVAE:
    """The model above with pyro_vae's amortized Normal guide."""

    def __init__(self, x_shape, z_dim, hidden_dims):
        self.model = GMMPriorModel(x_shape, z_dim, hidden_dims)
        self.guide = AmortizedGuide(MLPEncoder(x_shape, z_dim, list(hidden_dims)))
