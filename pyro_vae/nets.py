"""Networks: one fully connected builder, the MLP encoder/decoder and the convolutional family.

Every network accepts any number of leading batch dimensions, so a decoder can be called on
``(num_particles, batch, z_dim)`` latents inside a vectorized particle plate. An optional condition
``c`` (a flat feature vector per image: a one-hot label, the observed part of an image) is
concatenated wherever a network is fully connected: at the MLP's input, at the end of the conv
encoder, at the start of the conv decoder.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError

NETS = ("mlp", "conv")

#: The MLP encoder's and decoder's hidden nonlinearity (``--activation``; M2's classifier takes it
#: too): name -> ``torch.nn`` module class. ``softplus`` is Pyro's VAE example's; the conv
#: networks keep their LeakyReLU.
ACTIVATIONS = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "leaky-relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


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


def join(h, c):
    """``h`` with the condition ``c`` concatenated on its last dimension (``c=None``: ``h``).

    Their batch shapes broadcast: ``c`` may have the batch shape of the data and ``h`` extra
    leading (particle) dimensions, or ``c`` the enumerated values of a discrete latent in a
    dimension left of the data's (Pyro's parallel enumeration).
    """
    if c is None:
        return h
    shape = torch.broadcast_shapes(h.shape[:-1], c.shape[:-1])
    return torch.cat([h.expand(*shape, h.shape[-1]), c.expand(*shape, c.shape[-1])], dim=-1)


def linear_join(layer, h, c):
    """``layer(join(h, c))`` for a ``nn.Linear`` ``layer``, without building the joined tensor.

    The weight is split into the columns that read ``h`` and those that read ``c``, so an input
    that broadcasts is multiplied once: under parallel enumeration an image meets each of the K
    values of a class, and the image's columns are the bulk of the work.
    """
    if c is None:
        return layer(h)
    d = h.shape[-1]
    return F.linear(h, layer.weight[:, :d], layer.bias) + F.linear(c, layer.weight[:, d:])


def loc_scale(h, min_scale=1e-3):
    """Split ``h`` in halves on its last dimension into a Normal's ``loc`` and ``scale``.

    The scale goes through softplus with a small floor, so it never collapses to zero.
    """
    loc, raw_scale = h.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + min_scale


class MLPEncoder(nn.Module):
    """Maps images ``(..., *x_shape)`` to the ``loc`` and ``scale`` of a diagonal Normal over z.

    :param tuple x_shape: the shape of one image, e.g. ``(1, 28, 28)``.
    :param int z_dim: latent dimension.
    :param list hidden_dims: widths of the hidden layers.
    :param int c_dim: width of the condition concatenated to the flattened image (0: none).
    :param float min_scale: the floor added to the softplus scale.
    :param activation: the hidden layers' ``torch.nn`` module class.
    """

    def __init__(
        self, x_shape, z_dim, hidden_dims, c_dim=0, min_scale=1e-3, activation=nn.Softplus
    ):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.z_dim = z_dim
        self.min_scale = min_scale
        self.fc = make_fc([math.prod(self.x_shape) + c_dim, *hidden_dims, 2 * z_dim], activation)

    def forward(self, x, c=None):
        batch_shape = x.shape[: x.dim() - len(self.x_shape)]
        h = linear_join(self.fc[0], x.reshape(*batch_shape, -1), c)
        return loc_scale(self.fc[1:](h), self.min_scale)


class MLPDecoder(nn.Module):
    """Maps latents ``(..., z_dim)`` to unconstrained outputs shaped ``(..., *out_shape)``.

    The likelihood decides what the outputs mean (logits for a Bernoulli; a location and a scale
    per pixel for a Gaussian with a learned variance, stacked on the channel dimension).

    :param tuple out_shape: the output shape for one latent, e.g. ``(1, 28, 28)``.
    :param int z_dim: latent dimension.
    :param list hidden_dims: widths of the hidden layers, from z towards x.
    :param int c_dim: width of the condition concatenated to z (0: none).
    :param activation: the hidden layers' ``torch.nn`` module class.
    """

    def __init__(self, out_shape, z_dim, hidden_dims, c_dim=0, activation=nn.Softplus):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.z_dim = z_dim
        self.fc = make_fc([z_dim + c_dim, *hidden_dims, math.prod(self.out_shape)], activation)

    def forward(self, z, c=None):
        h = self.fc[1:](linear_join(self.fc[0], z, c))
        return h.reshape(*h.shape[:-1], *self.out_shape)


def _check_conv_shape(x_shape, channels):
    if len(x_shape) != 3:
        raise ConfigError(f"the conv networks need images (C, H, W), got shape {tuple(x_shape)}")
    stride = 2 ** len(channels)
    if x_shape[1] % stride or x_shape[2] % stride:
        raise ConfigError(
            f"{len(channels)} strided conv layers halve the image {len(channels)} times, so its "
            f"height and width must be divisible by {stride}, got {x_shape[1]}x{x_shape[2]}; "
            "use fewer --hidden-dims or another --image-size"
        )


def _flat_batch(net, x, event_dims):
    """Apply ``net`` to ``x`` with its leading dimensions flattened into one batch dimension.

    Batch norm and convolutions want exactly one batch dimension; evaluation and vectorized
    particles call the networks on ``(K, B, ...)``.
    """
    batch_shape = x.shape[: x.dim() - event_dims]
    out = net(x.reshape(-1, *x.shape[x.dim() - event_dims :]))
    return out.reshape(*batch_shape, *out.shape[1:])


def _conv_block(conv):
    return [conv, nn.BatchNorm2d(conv.out_channels), nn.LeakyReLU(0.2)]


class ConvEncoder(nn.Module):
    """Strided convolutions down (each halves height and width), batch norm and LeakyReLU, then a
    linear layer to the ``loc`` and ``scale`` of a diagonal Normal over z (the DCGAN-style design
    of Radford, Metz & Chintala 2016).

    :param tuple x_shape: ``(C, H, W)`` with H and W divisible by ``2 ** len(channels)``.
    :param int z_dim: latent dimension.
    :param list channels: output channels of the strided conv layers, e.g. ``[32, 64]``.
    :param int c_dim: width of the condition concatenated before the linear layer (0: none).
    """

    def __init__(self, x_shape, z_dim, channels, c_dim=0, min_scale=1e-3):
        super().__init__()
        _check_conv_shape(x_shape, channels)
        self.x_shape = tuple(x_shape)
        self.min_scale = min_scale
        layers = []
        for c_in, c_out in zip([x_shape[0], *channels[:-1]], channels):
            layers += _conv_block(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
        self.conv = nn.Sequential(*layers, nn.Flatten())
        stride = 2 ** len(channels)
        features = channels[-1] * (x_shape[1] // stride) * (x_shape[2] // stride)
        self.fc = nn.Linear(features + c_dim, 2 * z_dim)

    def forward(self, x, c=None):
        h = _flat_batch(self.conv, x, 3)
        return loc_scale(self.fc(join(h, c)), self.min_scale)


class ConvDecoder(nn.Module):
    """A linear layer from z to a small feature map, then transposed convolutions up (each doubles
    height and width) with batch norm and LeakyReLU; the last layer is linear.

    :param tuple out_shape: ``(C_out, H, W)``, H and W divisible by ``2 ** len(channels)``.
    :param int z_dim: latent dimension.
    :param list channels: channels of the feature maps from z towards x, e.g. ``[64, 32]``.
    :param int c_dim: width of the condition concatenated to z (0: none).
    """

    def __init__(self, out_shape, z_dim, channels, c_dim=0):
        super().__init__()
        _check_conv_shape(out_shape, channels)
        self.out_shape = tuple(out_shape)
        stride = 2 ** len(channels)
        self.start_shape = (channels[0], out_shape[1] // stride, out_shape[2] // stride)
        self.fc = nn.Sequential(
            nn.Linear(z_dim + c_dim, math.prod(self.start_shape)), nn.LeakyReLU(0.2)
        )
        layers = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += _conv_block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        layers.append(nn.ConvTranspose2d(channels[-1], out_shape[0], 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z, c=None):
        h = self.fc(join(z, c))
        return _flat_batch(lambda h: self.deconv(h.reshape(-1, *self.start_shape)), h, 1)


def make_networks(net, x_shape, z_dim, hidden_dims, c_dim=0, outputs=1, activation="softplus"):
    """The encoder and decoder of kind ``net`` (``"mlp"`` or ``"conv"``).

    ``hidden_dims`` are the MLP's hidden widths or the conv layers' channels, encoder first; the
    decoder mirrors them. The decoder makes ``outputs`` numbers per pixel (stacked as channels).
    ``activation`` (a name in :data:`ACTIVATIONS`) is the MLPs' hidden nonlinearity.
    """
    if net not in NETS:
        raise ConfigError(f"unknown net {net!r}; choose one of {', '.join(NETS)}")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    x_shape = tuple(x_shape)
    out_shape = (outputs * x_shape[0], *x_shape[1:])
    hidden = list(hidden_dims)
    if net == "mlp":
        act = ACTIVATIONS[activation]
        return (
            MLPEncoder(x_shape, z_dim, hidden, c_dim, activation=act),
            MLPDecoder(out_shape, z_dim, hidden[::-1], c_dim, activation=act),
        )
    if activation != "softplus":
        raise ConfigError(
            f"--activation {activation} sets the MLPs' hidden nonlinearity; the conv networks "
            "use LeakyReLU"
        )
    return ConvEncoder(x_shape, z_dim, hidden, c_dim), ConvDecoder(
        out_shape, z_dim, hidden[::-1], c_dim
    )


class LearnedBaseline(nn.Module):
    """A baseline b(x) for the score-function estimator: a small MLP from an image to a number.

    :param tuple x_shape: the shape of one image.
    :param int hidden_dim: width of the hidden layer.
    """

    def __init__(self, x_shape, hidden_dim=64):
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.fc = make_fc([math.prod(self.x_shape), hidden_dim, 1])
        # The network predicts standardized costs; costs of hundreds of nats would take Adam
        # thousands of steps to reach from an output near zero.
        self.register_buffer("shift", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, x):
        return self.shift + self.scale * self.fc(x.reshape(x.shape[0], -1)).squeeze(-1)
