"""M2 as Pyro's semi-supervised VAE example writes it, with its auxiliary classification pair:
a copy of ``ss_vae.py`` whose class also defines ``model_classify(xs, ys)``, which observes
``ys`` under the guide's classifier scaled by ``aux_loss_multiplier``, and an empty
``guide_classify``. pyro_vae finds the pair by name and adds it, weighted by ``--alpha``, on the
labelled images (:class:`pyro_vae.semi.SemiSupervisedLoss`). ``calls`` records what each
``model_classify`` call received (the number of images, and the shape of ``ys``).
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


def mlp(sizes, last=None):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


def cat(*tensors):
    """Concatenate along the last dim, broadcasting the others, as the MLPs of Pyro's example
    do: under enumeration the class has a dim of its own left of the batch."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*shape, t.shape[-1]) for t in tensors], -1)


class SSVAE(nn.Module):
    """The class one-hot: ``ys`` is ``(B, K)``."""

    def __init__(self, output_size=10, input_size=784, z_dim=50, hidden_layers=(500,)):
        super().__init__()
        self.output_size, self.input_size, self.z_dim = output_size, input_size, z_dim
        hidden = list(hidden_layers)
        self.encoder_y = mlp([input_size, *hidden, output_size], nn.Softmax(dim=-1))
        self.encoder_z = mlp([input_size + output_size, *hidden, 2 * z_dim])
        self.decoder = mlp([z_dim + output_size, *hidden, input_size], nn.Sigmoid())
        self.calls = []

    def one_hot(self, ys):
        return ys

    def class_dist(self, probs):
        return dist.OneHotCategorical(probs)

    def model(self, xs, ys=None):
        pyro.module("ss_vae", self)
        batch_size = xs.size(0)
        options = dict(dtype=xs.dtype, device=xs.device)
        with pyro.plate("data"):
            prior_loc = torch.zeros(batch_size, self.z_dim, **options)
            prior_scale = torch.ones(batch_size, self.z_dim, **options)
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            alpha_prior = torch.ones(batch_size, self.output_size, **options) / self.output_size
            ys = pyro.sample("y", self.class_dist(alpha_prior), obs=ys)
            probs = self.decoder(cat(zs, self.one_hot(ys)))
            pyro.sample("x", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data"):
            if ys is None:
                alpha = self.encoder_y(xs)
                ys = pyro.sample("y", self.class_dist(alpha))
            hidden = self.encoder_z(cat(xs, self.one_hot(ys)))
            loc, log_scale = hidden.chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    aux_loss_multiplier = 1.0

    def model_classify(self, xs, ys=None):
        pyro.module("ss_vae", self)
        self.calls.append((xs.shape[0], None if ys is None else tuple(ys.shape)))
        with pyro.plate("data"):
            if ys is not None:
                alpha = self.encoder_y(xs)
                with pyro.poutine.scale(scale=self.aux_loss_multiplier):
                    pyro.sample("y_aux", self.class_dist(alpha), obs=ys)

    def guide_classify(self, xs, ys=None):
        pass


class SSVAEIndices(SSVAE):
    """The class as an index: ``ys`` is ``(B,)``, a ``Categorical`` site."""

    def one_hot(self, ys):
        return nn.functional.one_hot(ys.long(), self.output_size).to(torch.get_default_dtype())

    def class_dist(self, probs):
        return dist.Categorical(probs)


def make(x_shape, z_dim, hidden_dims, num_classes):
    return SSVAE(num_classes, math.prod(x_shape), z_dim, hidden_dims)


def make_indices(x_shape, z_dim, hidden_dims, num_classes):
    return SSVAEIndices(num_classes, math.prod(x_shape), z_dim, hidden_dims)
