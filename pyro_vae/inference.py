"""Inference on a fixed model: the E-step, exact posteriors on a grid, and NUTS.

Each routine takes a trained model (typically the decoder of a VAE) and leaves it unchanged:

- :func:`e_step` fits a guide's parameters for a batch of images with the model frozen, all
  images at once. With a :class:`~pyro_vae.guides.LocalGuide` this is variational EM's E-step and
  finds q*, the best diagonal Gaussian per image (Cremer, Li & Duvenaud 2018); started from an
  encoder's output it is semi-amortized inference (Kim et al. 2018).
- :func:`grid_posterior` computes p(z|x) and log p(x) exactly (up to quadrature error) for a 2-D
  latent, on a grid over the prior's mass.
- :func:`nuts_posterior` samples p(z|x) with NUTS (Hoffman & Gelman 2014) through Pyro's ``MCMC``.
"""

import contextlib
import math
import time
import warnings
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, TraceMeanField_ELBO
from pyro.infer.autoguide.initialization import init_to_value

from .data import Data
from .errors import ConfigError
from .evaluate import behind_the_door, enumerates
from .train import fit

E_STEP_LR = 0.2  # from the prior
REFINE_LR = 0.1  # from an encoder's answer, near the optimum
E_STEP_PARTICLES = 4


def e_step(
    model,
    guide,
    x,
    steps=300,
    lr=E_STEP_LR,
    final_lr=None,
    elbo=None,
    seed=0,
    quiet=True,
    y=None,
    num_particles=E_STEP_PARTICLES,
):
    """Fit ``guide`` to the images ``x`` with ``model`` frozen; return the per-step ELBO history.

    Every step is one Adam step on all of ``x`` at once (the ``"data"`` plate is not subsampled),
    so the cost per step is one batched forward and backward pass through the model and guide.
    This is :func:`pyro_vae.train.fit` with the model's parameters frozen; they are restored to
    trainable afterwards.

    :param model: a pyro_vae model.
    :param guide: a guide for exactly these images, e.g. ``LocalGuide(len(x), z_dim)``.
    :param torch.Tensor x: images ``(N, *x_shape)``, binarized if the likelihood needs it.
    :param int steps: Adam steps.
    :param float lr: Adam's initial learning rate.
    :param float final_lr: the learning rate decays exponentially to this at the last step
        (default ``lr / 100``): Adam's steps stay about ``lr`` long however small the gradient, so
        without the decay the parameters would jitter around the optimum rather than reach it.
    :param elbo: a Pyro ELBO (default ``TraceMeanField_ELBO`` with ``num_particles``, analytic
        KL where one exists).
    :param int seed: seeds the Monte Carlo draws.
    :param bool quiet: no progress bar.
    :param y: the images' condition for a conditional model (labels, or images to complete).
    :param int num_particles: Monte Carlo draws per image and step for the default ELBO. With one
        draw the gradient of each scale is too noisy for Adam to shrink it in 300 steps (on a 2-D
        latent, q's standard deviations ended 1.27 times the posterior's; with four draws and
        ``lr=0.2``, 0.91 times: docs/guide/compare.md).
    :rtype: pyro_vae.train.History
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"the E-step needs a positive number of steps, got {steps!r}")
    model, guide = behind_the_door(model, guide, x, y)
    n = x.shape[0]
    labels = y if y is not None and y.dim() == 1 else torch.zeros(n, dtype=torch.long)
    images = Data("e-step", "static", x, labels, x[:0], labels[:0])
    images.y_is_x = y is not None and y.dim() > 1
    if y is None:  # no labels: every image "no label" (-1), not class 0
        images.labelled = torch.zeros(n, dtype=torch.bool)
    # a program that cannot be enumerated trains its discrete sites by the score function
    discrete = None if enumerates(model, guide, x, y) else "score"
    # gradients even where the caller turned them off (a figure's torch.no_grad() that fits a
    # per-image guide to the images it draws)
    with frozen(model), torch.enable_grad():
        return fit(
            model,
            guide,
            images,
            elbo if elbo is not None else _e_step_elbo(model, num_particles),
            epochs=steps,
            batch_size=n,
            lr=lr,
            lr_decay=(final_lr / lr if final_lr else 1 / 100) ** (1 / steps),
            seed=seed,
            quiet=quiet,
            test_samples=0,
            discrete=discrete,
        )


@contextlib.contextmanager
def frozen(model):
    """The block with ``model``'s trainable parameters frozen (``requires_grad`` off, back on
    afterwards) and without the warning ``pyro.module`` gives of each frozen parameter of a
    module in training mode: freezing the model is the point of the E-step and of NUTS."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*not registered in the param store because")
            yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _e_step_elbo(model, num_particles):
    """The E-step's default ELBO: analytic KL, ``num_particles`` draws, vectorized where the
    program allows it."""
    structure = model.structure
    if num_particles == 1 or (
        not structure.vectorized and any(s.discrete for s in structure.latents)
    ):
        # a discrete strategy vectorizes its particles whatever the program: one draw a step
        return TraceMeanField_ELBO()
    if not structure.vectorized:
        return TraceMeanField_ELBO(num_particles=num_particles)
    nesting = structure.max_plate_nesting
    return TraceMeanField_ELBO(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=nesting
    )


@dataclass
class GridPosterior:
    """p(z|x) on a square grid for a 2-D latent, from :func:`grid_posterior`.

    ``log_px`` ``(N,)`` is the quadrature estimate of log p(x); ``log_post`` ``(N, P, P)`` the
    log posterior density at the grid points ``z1[i], z2[j]``; ``error`` ``(N,)`` the change in
    log p(x) when every other grid point is dropped, an estimate of the quadrature error;
    ``edge_mass`` ``(N,)`` the posterior mass in the outermost ring of cells: well above 0, the
    posterior reaches past the grid and log p(x) is underestimated.
    """

    z1: torch.Tensor
    z2: torch.Tensor
    log_post: torch.Tensor
    log_px: torch.Tensor
    error: torch.Tensor
    edge_mass: torch.Tensor

    def moments(self):
        """Posterior mean ``(N, 2)`` and standard deviation ``(N, 2)`` on the grid."""
        p = self.log_post.exp() * (self.z1[1] - self.z1[0]) * (self.z2[1] - self.z2[0])
        p1, p2 = p.sum(2), p.sum(1)  # marginals of z1 and z2
        mean = torch.stack([(p1 * self.z1).sum(1), (p2 * self.z2).sum(1)], -1)
        second = torch.stack([(p1 * self.z1**2).sum(1), (p2 * self.z2**2).sum(1)], -1)
        return mean, (second - mean**2).clamp(min=0).sqrt()


def _at(model, z):
    """The image site's distribution and the code site's prior log-density at latents ``z``
    ``(G, 2)`` (a model with one 2-D latent site)."""
    structure = model.structure
    name = structure.code.name
    trace = poutine.trace(poutine.condition(model, data={name: z})).get_trace(
        None, None, None, len(z)
    )
    return trace.nodes[structure.image]["fn"], trace.nodes[name]["fn"].log_prob(z)


@torch.no_grad()
def log_likelihood_grid(model, x, z, max_rows=4096):
    """``log p(x_n | z_g)`` for every image and grid point, shape ``(N, G)``.

    A Bernoulli decoder's log-likelihood is linear in x, ``x . logits - sum softplus(logits)``,
    so all images are scored against all grid points by one matrix product; other likelihoods
    are evaluated by broadcasting, in chunks of grid points.
    """
    model = behind_the_door(model, None, x)[0]
    structure = model.structure
    out = []
    for zc in z.split(max_rows):
        fn, _ = _at(model, zc)
        base = fn.base_dist if isinstance(fn, dist.Independent) else fn
        if isinstance(base, dist.Bernoulli):
            logits = base.logits.reshape(len(zc), -1)
            softplus = torch.nn.functional.softplus(logits).sum(-1)
            out.append(x.reshape(len(x), -1) @ logits.T - softplus)
        else:
            shaped = structure.to_model(x)
            out.append(torch.stack([fn.log_prob(xi.expand(len(zc), *xi.shape)) for xi in shaped]))
    return torch.cat(out, 1)


@torch.no_grad()
def grid_posterior(model, x, lim=5.0, points=200):
    """Exact posterior p(z|x) and log p(x) of a model with a 2-D latent, by quadrature.

    The joint log p(x, z) = log p(z) + log p(x|z) is evaluated on a ``points`` x ``points`` grid of
    cell centres covering ``[-lim, lim]^2`` (the standard Normal prior puts all but about 1e-6 of
    its mass inside ``lim=5``); log p(x) is the log of the midpoint-rule sum. The rule is compared
    with the one on every other point, which bounds how much the result depends on the grid.

    :param model: a model with one latent site of two numbers (and no condition).
    :param torch.Tensor x: images ``(N, *x_shape)``.
    :rtype: GridPosterior
    """
    model = behind_the_door(model, None, x)[0]
    structure = model.structure
    sizes = [s.numel for s in structure.latents]
    if sizes != [2] or structure.conditional:
        raise ConfigError(
            "the exact grid posterior needs one unconditional 2-D latent site; this model "
            f"has latent sites {', '.join(structure.latent_names)} of sizes {sizes}"
        )
    h = 2 * lim / points
    axis = torch.linspace(-lim + h / 2, lim - h / 2, points)
    z = torch.cartesian_prod(axis, axis)  # (P*P, 2), z1 varies slowest
    prior = torch.cat([_at(model, zc)[1] for zc in z.split(4096)])
    log_joint = log_likelihood_grid(model, x, z) + prior
    log_px = torch.logsumexp(log_joint, 1) + 2 * math.log(h)
    coarse = log_joint.reshape(len(x), points, points)[:, ::2, ::2].reshape(len(x), -1)
    log_px_coarse = torch.logsumexp(coarse, 1) + 2 * math.log(2 * h)
    log_post = (log_joint - log_px[:, None]).reshape(len(x), points, points)
    mass = log_post.exp() * h**2
    edge_mass = mass.sum((1, 2)) - mass[:, 1:-1, 1:-1].sum((1, 2))
    return GridPosterior(axis, axis, log_post, log_px, (log_px - log_px_coarse).abs(), edge_mass)


def _discrete_options(model, n):
    """NUTS's options for a model with discrete latent sites, which Pyro's MCMC sums out by
    enumeration: the plates to leave of the enumeration dims, and a start for each continuous
    site at 0 in its own shape (the prior's draw, Pyro's default start, would carry a copy per
    enumerated value, and the chain would then sample the wrong target)."""
    structure = model.structure
    if not any(s.discrete for s in structure.latents):
        return {}
    start = {
        s.name: torch.zeros(n, *s.shape)
        for s in structure.latents
        if not s.discrete and _real(s.support)
    }
    return {
        "max_plate_nesting": structure.max_plate_nesting,
        "init_strategy": init_to_value(values=start),
    }


def _real(support):
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return type(support) is type(dist.constraints.real)


@dataclass
class NUTSPosterior:
    """Samples of p(z|x) from :func:`nuts_posterior`: ``samples`` ``(S, N, *shape)`` of the code
    site, ``sites`` those of every latent site."""

    samples: torch.Tensor
    seconds: float
    num_warmup: int
    sites: dict = None

    @property
    def mean(self):
        return self.samples.mean(0)

    @property
    def std(self):
        return self.samples.std(0)


def nuts_posterior(model, x, num_samples=200, warmup_steps=200, seed=0, quiet=True, y=None):
    """Sample the posterior p(z|x) of each image in ``x`` with NUTS, the model held fixed.

    The images' latents are independent given the model, so one chain samples all of them
    jointly (every latent site of every image); keep ``N`` small. The model's parameters are
    constants of the target: only the latents move.

    :param model: a pyro_vae model.
    :param torch.Tensor x: a few images ``(N, *x_shape)``.
    :param int num_samples: samples kept after warm-up.
    :param int warmup_steps: adaptation steps (step size and diagonal mass matrix).
    :rtype: NUTSPosterior
    """
    for name, value in (("num_samples", num_samples), ("warmup_steps", warmup_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"NUTS {name} must be a positive integer, got {value!r}")
    model = behind_the_door(model, None, x, y)[0]
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    with frozen(model):
        mcmc = MCMC(
            NUTS(model, jit_compile=False, **_discrete_options(model, x.shape[0])),
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            disable_progbar=quiet,
        )
        try:
            mcmc.run(x, y)
        except NotImplementedError as e:
            if "Cannot transform" not in str(e):
                raise
            # NUTS moves in unconstrained space; torch has no map onto, e.g., a mixture's support.
            raise ConfigError(
                f"NUTS cannot sample this model's latents: {str(e).splitlines()[0]} (a "
                "MixtureSameFamily prior, say); leave mcmc out of the strategies"
            ) from None
    sites = {k: v.detach() for k, v in mcmc.get_samples().items()}
    code = model.structure.code.name
    return NUTSPosterior(sites[code], time.perf_counter() - start, warmup_steps, sites)
