"""A VAE with a discrete cluster latent: an example model file for ``pyro-vae``.

Train it like any model, choosing how the discrete site is trained::

    pyro-vae train --model examples/cluster_vae.py:ClusterVAE --discrete enumerate
    pyro-vae train --model examples/cluster_vae.py:ClusterVAE --discrete score
    pyro-vae train --model examples/cluster_vae.py:ClusterVAE --discrete relaxed

The generative story::

    c ~ OneHotCategorical(uniform over K)       # the cluster, never observed
    z ~ Normal(0, I)                            # the style within it
    x ~ Bernoulli(logits=dec(z, c))             # image, pixel by pixel

and the guide ``q(c | x) q(z | x, c)``. The networks broadcast ``c`` against the images
(``pyro_vae.nets.join``), so the guide runs with ``c`` enumerated in a dimension of its own.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from pyro_vae import MLPDecoder, MLPEncoder, data_plate, make_fc


class ClusterModel(PyroModule):
    """c ~ OneHotCategorical(1/K); z ~ Normal(0, I); x ~ Bernoulli(logits=dec(z, c))."""

    def __init__(self, x_shape, z_dim, hidden_dims, clusters=3):
        super().__init__()
        self.x_shape, self.z_dim, self.clusters = tuple(x_shape), z_dim, clusters
        self.decoder = MLPDecoder(x_shape, z_dim, list(hidden_dims)[::-1], c_dim=clusters)

    def forward(self, x=None, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            c = pyro.sample("c", dist.OneHotCategorical(logits=torch.zeros(self.clusters)))
            z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
            logits = self.decoder(z, c)
            return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)


class ClusterGuide(PyroModule):
    """c ~ OneHotCategorical(softmax(cls(x))); z ~ Normal(enc(x, c))."""

    def __init__(self, x_shape, z_dim, hidden_dims, clusters=3):
        super().__init__()
        flat = int(torch.Size(x_shape).numel())
        self.classify = nn.Sequential(nn.Flatten(-3), make_fc([flat, *hidden_dims, clusters]))
        self.encoder = MLPEncoder(x_shape, z_dim, list(hidden_dims), c_dim=clusters)

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            c = pyro.sample("c", dist.OneHotCategorical(logits=self.classify(x)))
            pyro.sample("z", dist.Normal(*self.encoder(x, c)).to_event(1))


class ClusterVAE:
    """The model and guide above, K = 3 clusters."""

    def __init__(self, x_shape, z_dim, hidden_dims):
        self.model = ClusterModel(x_shape, z_dim, hidden_dims)
        self.guide = ClusterGuide(x_shape, z_dim, hidden_dims)
