"""A VAE written the way Pyro's own VAE tutorial writes one, used by ``pyro-vae`` as it is.

Nothing here knows about pyro_vae: an ``nn.Module`` whose ``model(x)`` and ``guide(x)`` methods
register the networks with ``pyro.module``, name their sites ``"latent"`` and ``"obs"``, take the
pixels flattened, and open ``pyro.plate("data", x.shape[0])`` without subsampling. pyro_vae learns
all of that by running the two methods on a few images (``pyro-vae inspect`` prints what it
found) and scales each minibatch to the data set itself::

    pyro-vae train --model examples/pyro_style_vae.py:VAE --epochs 100 --out runs/pyro-style
    pyro-vae inspect examples/pyro_style_vae.py:VAE
    pyro-vae compare --run runs/pyro-style --out runs/pyro-style-compare

The generative story::

    z ~ Normal(0, I)                          # "latent", z_dim numbers per image
    x ~ Bernoulli(logits=dec(z))              # "obs", the 784 pixels of a 28 x 28 image

``VAE(z_dim, hidden_dim, pixels)`` is called with ``--z-dim`` (the one argument of its
signature that pyro_vae knows); the others keep their defaults, so the file is for 28 x 28 images
as written (the networks here are the built-in VAE's default ones: 784-400-50 with softplus).
"""

import pyro
import pyro.distributions as dist
from torch import nn


class VAE(nn.Module):
    """Encoder and decoder networks, and the model and guide as methods that use them."""

    def __init__(self, z_dim=50, hidden_dim=400, pixels=784):
        super().__init__()
        self.z_dim, self.pixels = z_dim, pixels
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden_dim), nn.Softplus(), nn.Linear(hidden_dim, pixels)
        )
        self.encoder = nn.Sequential(
            nn.Linear(pixels, hidden_dim), nn.Softplus(), nn.Linear(hidden_dim, 2 * z_dim)
        )

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1)
            z = pyro.sample("latent", prior)
            logits = self.decoder(z)
            pixels = x.reshape(-1, self.pixels)
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=pixels)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x.reshape(-1, self.pixels)).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))
