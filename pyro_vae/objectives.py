"""Training objectives beyond Pyro's stock ELBOs: the IWAE bound and KL warm-up.

Beta-VAE and KL warm-up need no new objective: the latent sites of the model and the guide are
scaled with ``poutine.scale``, as Pyro's ``examples/dmm.py`` anneals its KL, and :func:`kl_warmup`
changes that scale once per epoch. For any program behind the door the scale is the program's
(``model.z_scale``, :class:`pyro_vae.program.LatentScale` on every latent site); a built-in module
used on its own scales its sites by its own ``z_scale``.
"""

import math

import torch
from pyro.infer import RenyiELBO
from pyro.infer.util import get_dependent_plate_dims, torch_sum

from .errors import ConfigError


class IWAE(RenyiELBO):
    """The importance-weighted bound of Burda, Grosse & Salakhutdinov (2016),
    ``RenyiELBO(alpha=0)`` with vectorized particles, usable as a loss module (``IWAE()(model,
    guide)``) by :func:`pyro_vae.train.fit`::

        L_K(x) = E[ log 1/K sum_k p(x, z_k) / q(z_k | x) ],   z_k ~ q(z | x)

    per data point, summed over the data. Two things Pyro's ``RenyiELBO`` (1.9) does not do are
    added here: a ``differentiable_loss`` (it only has ``loss_and_grads``), and the right treatment
    of a subsampled ``"data"`` plate. ``RenyiELBO`` multiplies each log weight by the subsample
    scale ``N/B`` before the log-sum-exp, which sharpens the weights towards a max; here the scale
    multiplies the per-data-point bound after it, so a minibatch gives an unbiased estimate of the
    dataset's bound (pyro-ppl/pyro#2220; NumPyro's RenyiELBO factors the scale out the same way).
    With ``num_particles=1`` it is exactly ``Trace_ELBO``.

    :param int num_particles: K, latent samples per data point.
    :param int max_plate_nesting: plates the model nests (the particle plate goes to their left).
    """

    def __init__(self, num_particles=2, max_plate_nesting=1):
        super().__init__(
            alpha=0,
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )

    def differentiable_loss(self, model, guide, *args, **kwargs):
        log_weights = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sites = [s for s in model_trace.nodes.values() if s["type"] == "sample"]
            sum_dims = get_dependent_plate_dims(sites)
            log_w = 0.0
            for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                for site in trace.nodes.values():
                    if site["type"] != "sample":
                        continue
                    if sign < 0 and not site["fn"].has_rsample:
                        raise ConfigError(
                            f"IWAE training needs a reparameterizable guide, but site "
                            f"{site['name']!r} is not; use --elbo trace"
                        )
                    log_w = log_w + sign * torch_sum(site["log_prob"], sum_dims)
            log_weights.append(log_w)
        if self.vectorize_particles and self.num_particles > 1:
            log_w = log_weights[0]
        else:
            log_w = torch.stack(log_weights)
        scale = _common_subsample_scale(sites)
        bound = (log_w / scale).logsumexp(0) - math.log(self.num_particles)
        return -scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()


def _common_subsample_scale(sites):
    """``size / subsample_size`` of the subsampled plates every site is in (1 without them)."""
    common = set.intersection(*[set(s["cond_indep_stack"]) for s in sites])
    scale = 1.0
    for frame in common:
        if frame.full_size is not None:
            scale *= frame.full_size / frame.size
    return scale


def kl_warmup(modules, beta=1.0, epochs=0):
    """A per-epoch hook for :func:`pyro_vae.train.fit` that anneals the latent sites' scale.

    In epoch ``e`` (from 1) the ``z_scale`` of each module becomes ``beta * min(1, e / epochs)``:
    the KL term is switched on gradually, so the decoder learns to use z before the prior pulls
    the posteriors in (Bowman et al. 2016; Sønderby et al. 2016). With ``epochs=0`` the scale is
    ``beta`` from the start (a beta-VAE, Higgins et al. 2017).

    :param list modules: the model and the guide (programs behind the door, or modules that
        scale their latents by ``z_scale``).
    """

    def on_epoch(epoch):
        scale = beta * (min(1.0, epoch / epochs) if epochs else 1.0)
        for m in modules:
            m.z_scale = scale

    # It changes nothing but z_scale, which a recorded loss is keyed by (pyro_vae.traced), so
    # fit keeps the recordings across epochs instead of making them afresh after each call.
    on_epoch.z_scale_only = True
    return on_epoch
