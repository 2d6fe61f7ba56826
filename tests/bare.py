"""Programs that have not been through the program door, for the tests that every library entry
point takes them through it (:func:`pyro_vae.program.as_program`): Pyro's plain functions are
:func:`tests.linear_gaussian.plain_functions`; here, the built-in model and guide made by hand
from the library's classes, as a user of them writes it."""

import pyro
import torch

from pyro_vae.guides import AmortizedGuide
from pyro_vae.models import VAE
from pyro_vae.nets import MLPDecoder, MLPEncoder

X_SHAPE = (1, 6, 5)


def bare_vae(z_dim=2, hidden_dims=(16,), n=16, seed=0):
    """``VAE(...)`` and ``AmortizedGuide(...)``, never through the door, and ``n`` binary images
    for them. The decoder's last layer is scaled up so that it cares about z: the posterior is
    not the prior."""
    pyro.set_rng_seed(seed)
    model = VAE(MLPDecoder(X_SHAPE, z_dim, list(hidden_dims)), z_dim, X_SHAPE)
    guide = AmortizedGuide(MLPEncoder(X_SHAPE, z_dim, list(hidden_dims)))
    with torch.no_grad():
        model.decoder.fc[-1].weight.mul_(6.0)
    return model, guide, torch.bernoulli(torch.full((n, *X_SHAPE), 0.5))
