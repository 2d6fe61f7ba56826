"""Tools for looking at the latent space of a trained VAE.

Every function takes a :class:`pyro_vae.runs.Run` (a trained model and guide; build one with
``Run(config, model, guide, x_shape)`` after :func:`pyro_vae.fit`, or load one with
:func:`pyro_vae.load_run`) and returns image tensors ``(N, C, H, W)``: decoder means, ready for
:func:`pyro_vae.plots.image_grid` or :func:`pyro_vae.plots.image_rows`.

Usage::

    run = pyro_vae.load_run("runs/my-run")
    images = interpolate(run, x[0], x[1], steps=10, method="slerp")
"""

import pyro.distributions as dist
import torch

from .data import as_images
from .errors import ConfigError, DataError
from .program import prior_moments

#: The ways :func:`interpolate` goes from one code to another: a straight line, or along the
#: sphere (:func:`slerp`), which keeps a Gaussian code's length typical.
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
            f"the manifold grid needs a 2-D latent (z_dim = 2); this model's site {code.name!r} has "
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
    out = x.clone()
    out[~visible(x, top, height)] = value
    return out


def visible(x, top=None, height=None):
    """The mask of the pixels :func:`occlude` leaves alone: ``True`` where the image is seen."""
    rows = x.shape[-2]
    height = rows // 2 if height is None else height
    top = rows - height if top is None else top
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[..., top : top + height, :] = False
    return mask


def pixel_error(images, truth):
    """The fraction of pixels where ``images`` (probabilities, thresholded at 0.5) differ from the
    binary ``truth``: the damage of :func:`flip_pixels` at rate ``p`` has an error of about ``p``."""
    return ((images >= 0.5) != (truth >= 0.5)).float().mean().item()


OUTPUT_DRAWS = 16


def _encoder(run, x, flip, observed, **kwargs):
    return run.decode(run.encode(x)[0])


def _fit(run, x, flip, observed, steps=100, lr=0.05, samples=1, seed=0):
    loc, scale = _fit_q(run, _evidence(run, x, flip, observed), x, steps, lr, samples, seed)
    with torch.no_grad():
        # The restored pixel averages over the fitted q: OUTPUT_DRAWS codes, one decoder pass.
        z = loc + scale * torch.randn((OUTPUT_DRAWS, *loc.shape), generator=_generator(seed + 1))
        mean = run.model.x_dist(z).mean
        if flip:  # P(clean pixel = 1 | seen pixel, z), by Bayes' rule for the flip noise
            on = mean * (1 - flip) / (mean * (1 - flip) + (1 - mean) * flip)
            off = mean * flip / (mean * flip + (1 - mean) * (1 - flip))
            seen = torch.where(x >= 0.5, on, off)
        else:
            seen = x.expand_as(mean)
        if observed is not None:
            seen = torch.where(observed, seen, mean)
        return seen.mean(0)


def _evidence(run, x, flip, observed):
    """log p(damaged x | z) per image: the decoder's pixels seen through the damage."""

    def log_likelihood(z):
        fn = run.model.x_dist(z).base_dist
        if flip:  # a pixel reads 1 if it is 1 and not flipped, or 0 and flipped
            mean = fn.mean * (1 - flip) + (1 - fn.mean) * flip
            fn = torch.distributions.Bernoulli(probs=mean.clamp(1e-6, 1 - 1e-6))
        log_p = fn.log_prob(x)
        if observed is not None:
            log_p = log_p * observed
        return log_p.reshape(*log_p.shape[: z.dim() - 1], -1).sum(-1)

    return log_likelihood


def _fit_q(run, log_likelihood, x, steps, lr, samples, seed):
    """A Gaussian q(z) per image, started at the encoder and fitted by Adam to maximise
    E_q[log_likelihood(z)] - KL(q || p(z)) with the decoder fixed (an E-step)."""
    loc, scale = run.encode(x)
    loc, log_scale = loc.clone().requires_grad_(), scale.log().requires_grad_()
    prior = run.model.z_dist()
    optim = torch.optim.Adam([loc, log_scale], lr=lr)
    g = _generator(seed)
    for _ in range(steps):
        q = dist.Normal(loc, log_scale.exp())
        z = loc + log_scale.exp() * torch.randn((samples, *loc.shape), generator=g)
        elbo = log_likelihood(z).mean(0) - torch.distributions.kl_divergence(q.to_event(1), prior)
        optim.zero_grad()
        loc.grad, log_scale.grad = torch.autograd.grad(-elbo.sum(), [loc, log_scale])
        optim.step()
    return loc.detach(), log_scale.detach().exp()


def _generator(seed):
    return torch.Generator().manual_seed(seed)


#: How :func:`denoise` restores an image: name -> (function, description).
DENOISERS = {
    "fit": (
        _fit,
        "fit q(z) to what the damage left (the seen pixels, through the flip noise), then give "
        "each pixel its posterior probability of being on",
    ),
    "encoder": (
        _encoder,
        "decode the encoder's posterior mean of the damaged image (the encoder never saw damage)",
    ),
}


def denoise(run, x, flip=0.0, observed=None, method="fit", **kwargs):
    """Restore damaged binary images: the probability that each clean pixel is on.

    ``method="fit"`` (the default) treats the damage as part of the model: each pixel of ``x`` is
    the clean pixel flipped with probability ``flip``, and only the pixels where ``observed`` is
    ``True`` were seen. A Gaussian q(z) per image is started at the encoder's and fitted by
    ``steps`` Adam steps to the ELBO of what was seen (the decoder fixed, as in an E-step); then a
    seen pixel keeps its value unless the model is sure enough to overrule the noise (Bayes' rule
    with prior ``flip``), and a hidden one gets the decoder's mean. ``method="encoder"`` decodes the
    encoder's posterior mean of ``x``, which is the weakest restoration: the encoder was never
    shown damaged images, and its reconstruction loses detail that the damage had left intact.

    :param run: a trained :class:`~pyro_vae.runs.Run` (unconditional; Bernoulli if ``flip``).
    :param x: damaged images, e.g. :func:`flip_pixels` or :func:`occlude` of test images.
    :param float flip: the rate at which pixels were flipped (0: none).
    :param observed: a boolean mask like ``x``, ``True`` where the pixel was seen (e.g.
        :func:`visible`); ``None``: all were.
    :param str method: a key of :data:`DENOISERS`.
    :param kwargs: ``steps`` (100), ``lr`` (0.05), ``samples`` (draws of z per step, 1) and
        ``seed`` for ``"fit"``.
    """
    if method not in DENOISERS:
        raise ConfigError(f"unknown denoising method {method!r}; choose one of {list(DENOISERS)}")
    if not 0 <= flip < 0.5:
        raise ConfigError(f"flip must be a rate in [0, 0.5), got {flip!r}")
    if flip and not run.binary:
        raise ConfigError("flip noise needs a model of binary pixels (the Bernoulli likelihood)")
    x = as_images(x, run.x_shape, binary=run.binary)
    if observed is not None:
        observed = torch.as_tensor(observed, dtype=torch.bool).reshape(x.shape)
    return DENOISERS[method][0](run, x, flip, observed, **kwargs)
