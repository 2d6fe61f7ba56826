"""Tools for looking at the latent space of a trained VAE.

Every function takes a :class:`pyro_vae.runs.Run` (a trained model and guide; build one with
``Run(config, model, guide, x_shape)`` after :func:`pyro_vae.fit`, or load one with
:func:`pyro_vae.load_run`) and returns image tensors ``(N, C, H, W)``: decoder means, ready for
:func:`pyro_vae.plots.image_grid` or :func:`pyro_vae.plots.image_rows`.

Usage::

    run = pyro_vae.load_run("runs/my-run")
    images = interpolate(run, x[0], x[1], steps=10, method="slerp")
"""

import torch

from .errors import ConfigError, DataError
from .program import prior_moments

INTERPOLATIONS = ("linear", "slerp")


def lerp(z0, z1, steps):
    """``steps`` points on the straight line from ``z0`` to ``z1`` (both ends included)."""
    t = torch.linspace(0, 1, steps).unsqueeze(-1)
    return (1 - t) * z0 + t * z1


def slerp(z0, z1, steps):
    """``steps`` points on the great circle from ``z0`` to ``z1``, with the norm interpolated too.

    Under a standard normal prior in d dimensions almost all the mass lies near the sphere of
    radius sqrt(d); the midpoint of a straight line between two codes is shorter than either and
    falls where the prior, and so the decoder's training, has seen few codes (White 2016,
    "Sampling generative networks").
    """
    t = torch.linspace(0, 1, steps).unsqueeze(-1)
    cos = torch.dot(z0 / z0.norm(), z1 / z1.norm()).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:  # (nearly) parallel: the circle is the line
        return lerp(z0, z1, steps)
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def _code(run, x):
    loc, _ = run.encode(x)
    if loc.shape[0] != 1:
        raise DataError(f"expected one image, got {loc.shape[0]}")
    return loc[0]


def interpolate(run, x0, x1, steps=10, method="slerp"):
    """Decoded points between the posterior means of two images.

    :param run: a trained :class:`~pyro_vae.runs.Run`.
    :param x0: the first image (one image, in the run's format); ``x1`` the second.
    :param int steps: images in the row, both ends included.
    :param str method: ``"linear"`` or ``"slerp"``.
    """
    if method not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {method!r}; choose linear or slerp")
    if not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps must be an integer >= 2, got {steps!r}")
    path = {"linear": lerp, "slerp": slerp}[method](_code(run, x0), _code(run, x1), steps)
    return run.decode(path)


def manifold_grid(run, n=20, span=0.95):
    """The 2-D latent manifold: decoder means on an ``n x n`` grid (Kingma & Welling 2014, fig. 4).

    The grid is evenly spaced in probability, not in z: the normal quantiles of ``n`` points
    spread over the central ``span`` of each axis, so every image stands for an equal share of
    the prior. Row ``i``, column ``j`` decodes ``z = (q_j, q_{n-1-i})``: z[0] grows to the right,
    z[1] upwards, as in a scatter plot.
    """
    code = run.structure.code
    if code.numel != 2:
        raise ConfigError(
            f"the manifold grid needs a 2-D latent, this model's site {code.name!r} has "
            f"{code.numel} numbers"
        )
    if not 0 < span < 1:
        raise ConfigError(f"span must lie strictly between 0 and 1, got {span!r}")
    q = grid_axis(n, span)
    z0, z1 = torch.meshgrid(q, q.flip(0), indexing="xy")
    z = torch.stack([z0.reshape(-1), z1.reshape(-1)], -1)
    loc, scale = _prior(run)
    return run.decode(z * scale + loc)


def _prior(run):
    """``loc`` and ``scale`` of the (unconditioned) prior p(z) of ``run``'s model."""
    return prior_moments(run.model)


def grid_axis(n=20, span=0.95):
    """The z values along each axis of :func:`manifold_grid` (for tick labels)."""
    p = torch.linspace((1 - span) / 2, (1 + span) / 2, n)
    return torch.distributions.Normal(0.0, 1.0).icdf(p)


def traversals(run, x, dims=None, values=None):
    """One row per latent dimension: the image's code with that dimension swept over ``values``.

    :param x: one image; its posterior mean is the starting code.
    :param dims: which dimensions (default all, at most 10).
    :param values: the values to set, in prior standard deviations (default -3..3 in 9 steps).
    :returns: images ``(len(dims) * len(values), C, H, W)``, row by row.
    """
    z = _code(run, x)
    dims = list(range(min(10, z.shape[0]))) if dims is None else list(dims)
    bad = [d for d in dims if not 0 <= d < z.shape[0]]
    if bad:
        raise ConfigError(f"dimension {bad[0]} does not exist; z_dim is {z.shape[0]}")
    values = torch.linspace(-3, 3, 9) if values is None else torch.as_tensor(values).float()
    codes = z.repeat(len(dims), len(values), 1)
    loc, scale = _prior(run)
    for row, d in enumerate(dims):
        codes[row, :, d] = values * scale[d] + loc[d]
    return run.decode(codes.reshape(-1, z.shape[0]))


def flip_pixels(x, p=0.1, seed=0):
    """Binary images with each pixel flipped with probability ``p`` (salt-and-pepper noise)."""
    g = torch.Generator().manual_seed(seed)
    flips = torch.bernoulli(torch.full_like(x, p), generator=g)
    return (x - flips).abs()


def occlude(x, top=None, height=None, value=0.0):
    """Images with ``height`` rows from row ``top`` on set to ``value`` (default: the lower half)."""
    rows = x.shape[-2]
    height = rows // 2 if height is None else height
    top = rows - height if top is None else top
    out = x.clone()
    out[..., top : top + height, :] = value
    return out


def denoise(run, x):
    """Reconstruct corrupted images: decode each image's posterior mean.

    The encoder never saw corrupted images; what comes back is the decoder's idea of the nearest
    clean image, a projection onto what the model can generate.
    """
    loc, _ = run.encode(x)
    return run.decode(loc)
