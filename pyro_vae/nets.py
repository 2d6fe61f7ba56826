"""Networks: one fully connected builder and the MLP encoder/decoder built from it.

The networks accept any number of leading batch dimensions, so a decoder can be called on
``(num_particles, batch, z_dim)`` latents inside a vectorized particle plate.
"""

import math

from torch import nn
from torch.nn import functional as F


def make_fc(dims, activation=nn.Softplus):
    """A fully connected network ``dims[0] -> dims[1] -> ... -> dims[-1]``.

    Hidden layers are followed by ``activation()``; the last layer is linear.

    :param list dims: layer widths, input first, output last.
    :param activation: a ``torch.nn`` module class for the hidden layers.
    """
    dims = [int(d) for d in dims]
    layers = []
    for in_dim, out_dim in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(in_dim, out_dim), activation()]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Maps images ``(..., *x_shape)`` to the ``loc`` and ``scale`` of a diagonal Normal over z.

    The scale goes through softplus with a small floor, so it never collapses to zero.

    :param tuple x_shape: the shape of one image, e.g. ``(1, 28, 28)``.
    :param int z_dim: latent dimension.
    :param list hidden_dims: widths of the hidden layers.
    :param float min_scale: the floor added to the softplus scale.
    """

    def __init__(self, x_shape, z_dim, hidden_dims, min_scale=1e-3):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.z_dim = z_dim
        self.min_scale = min_scale
        self.fc = make_fc([math.prod(self.x_shape), *hidden_dims, 2 * z_dim])

    def forward(self, x):
        batch_shape = x.shape[: x.dim() - len(self.x_shape)]
        h = self.fc(x.reshape(*batch_shape, -1))
        loc, raw_scale = h.split(self.z_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale


class MLPDecoder(nn.Module):
    """Maps latents ``(..., z_dim)`` to one unconstrained output per pixel, shaped ``(..., *x_shape)``.

    The likelihood decides what the output means (logits for a Bernoulli).

    :param tuple x_shape: the shape of one image, e.g. ``(1, 28, 28)``.
    :param int z_dim: latent dimension.
    :param list hidden_dims: widths of the hidden layers, from z towards x.
    """

    def __init__(self, x_shape, z_dim, hidden_dims):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.z_dim = z_dim
        self.fc = make_fc([z_dim, *hidden_dims, math.prod(self.x_shape)])

    def forward(self, z):
        return self.fc(z).reshape(*z.shape[:-1], *self.x_shape)
