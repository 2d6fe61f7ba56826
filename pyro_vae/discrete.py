"""Discrete latent sites: three ways to train them, and how evaluation sums them out.

A program may sample discrete latents (a class ``y``, a cluster, a switch) next to its continuous
ones. Their gradient cannot flow through a sample, so the ELBO's gradient needs one of these
estimators (:data:`STRATEGIES`, ``--discrete``):

- ``enumerate``: Pyro's parallel enumeration (:class:`~pyro.infer.TraceEnum_ELBO`) over the
  guide's discrete sites: ``E_q(y|x)[...]`` is the exact sum over the values of ``y``, weighted by
  ``q(y|x)``, with one continuous sample per value. No variance from ``y`` at all; the cost grows
  with the number of values. The default wherever every discrete site has a finite support of at
  most :data:`MAX_ENUMERATE` joint values.
- ``score``: the score-function estimator (:class:`~pyro.infer.TraceGraph_ELBO`, Williams 1992;
  Ranganath et al. 2014) for the discrete sites, pathwise gradients for the rest.
- ``score-baseline``: the same with a learned baseline ``b(x)`` subtracted from the downstream
  cost (Mnih & Gregor 2014), trained by the same objective's baseline loss.
- ``relaxed``: the concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et al. 2017):
  each one-hot site of model and guide becomes a
  :class:`~pyro.distributions.RelaxedOneHotCategorical` at temperature ``tau``, annealed per
  epoch, and gradients are pathwise. **Its objective is a different one**: the ELBO of the
  relaxed model, not of the discrete one; only as ``tau -> 0`` do the two meet.

Evaluation does not use any of them: :func:`pyro_vae.evaluate.log_px` sums every finite
discrete site out exactly, ``log p(x) = log sum_y p(x, y)``, with the continuous latents
importance-sampled within each ``y`` (:func:`enumerated`), so runs trained every way are scored by
the same number.
"""

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.infer.elbo import ELBOModule
from pyro.poutine.messenger import Messenger

from .errors import ConfigError
from .nets import LearnedBaseline

#: The most joint values of the discrete sites that ``enumerate`` is the default for.
MAX_ENUMERATE = 1024

#: The relaxed estimator's temperature schedule: ``max(TAU_MIN, TAU_START * exp(-TAU_RATE *
#: (epoch - 1)))``, Jang et al.'s annealing (their r = 1e-4 per step, here per epoch).
TAU_START, TAU_MIN, TAU_RATE = 1.0, 0.5, 0.1


def discrete_sites(structure):
    """The structure's discrete latent sites."""
    return tuple(s for s in structure.latents if s.discrete)


def finite_sites(structure):
    """The discrete latent sites with a finite support (those evaluation enumerates)."""
    return tuple(s for s in discrete_sites(structure) if s.cardinality is not None)


def joint_values(structure):
    """The number of joint values of the finite discrete sites (1 without any)."""
    return math.prod(s.cardinality for s in finite_sites(structure))


def default_strategy(structure):
    """``"enumerate"`` where every discrete site is finite and the joint support small, else
    ``"score"``; ``None`` for a program without discrete latents."""
    sites = discrete_sites(structure)
    if not sites:
        return None
    small = len(finite_sites(structure)) == len(sites) and joint_values(structure) <= MAX_ENUMERATE
    return "enumerate" if small else "score"


def _names(structure):
    return frozenset(s.name for s in discrete_sites(structure))


def enumerated(fn, names):
    """``fn`` with the latent sites ``names`` marked for parallel enumeration."""

    def config(msg):
        if msg["name"] in names and not msg["is_observed"]:
            return {"enumerate": "parallel"}
        return {}

    return poutine.infer_config(fn, config)


class Relax(Messenger):
    """Replace each one-hot latent site ``names`` by its concrete relaxation at ``temperature``
    (:class:`~pyro.distributions.RelaxedOneHotCategorical` with the same logits and the same
    event dims). Applied to model and guide alike, so the model scores the guide's relaxed
    values with a relaxed prior (Maddison et al. 2017, section 3.3)."""

    def __init__(self, names, temperature):
        super().__init__()
        self.names, self.temperature = names, temperature

    def _pyro_sample(self, msg):
        if msg["name"] in self.names and not msg["is_observed"]:
            msg["fn"] = relaxed(msg["fn"], self.temperature, msg["name"])


def relaxed(fn, temperature, name="y"):
    """The concrete relaxation of a (possibly ``Independent``) ``OneHotCategorical``."""
    dims = 0
    base = fn
    while isinstance(base, dist.Independent):
        dims += base.reinterpreted_batch_ndims
        base = base.base_dist
    if not isinstance(base, torch.distributions.OneHotCategorical):
        raise ConfigError(
            f"--discrete relaxed relaxes one-hot sites, but site {name!r} is a "
            f"{type(base).__name__}; sample it from OneHotCategorical, or use --discrete "
            "enumerate or score"
        )
    tau = torch.as_tensor(temperature, dtype=base.logits.dtype, device=base.logits.device)
    out = Concrete(tau, logits=base.logits)
    return out.to_event(dims) if dims else out


class Concrete(dist.RelaxedOneHotCategorical):
    """``RelaxedOneHotCategorical`` whose samples stay off the simplex's faces: a confident
    ``q(y|x)`` at a low temperature puts values of ``exp(-hundreds)`` on the other classes, which
    underflow to 0 and make the log-density ``-inf``; they are clamped to the smallest normal
    float instead (a change far below anything the objective can resolve), and renormalized."""

    def rsample(self, sample_shape=()):
        value = super().rsample(sample_shape).clamp_min(torch.finfo(self.logits.dtype).tiny)
        return value / value.sum(-1, keepdim=True)  # exp(log-softmax) sums to 1 +- 2e-6 only

    def log_prob(self, value):
        return super().log_prob(value.clamp_min(torch.finfo(value.dtype).tiny))


class DiscreteLoss(ELBOModule):
    """The loss module of a strategy: ``loss(x, y, idx, size)`` is minus the strategy's ELBO
    estimate, and its gradient the strategy's estimate of the gradient. ``baseline`` (for
    ``score-baseline``) is trained with model and guide."""

    def __init__(self, model, guide, objective, baseline=None):
        super().__init__(model, guide, objective)
        self.baseline = baseline


@dataclass
class Strategy:
    """A registry entry: a name, the objective it builds, a one-line description."""

    name: str
    build: type
    description: str


class Objective:
    """What a strategy hands :func:`pyro_vae.train.fit` as its ``elbo``: called on ``(model,
    guide)`` it gives the loss module; ``start_epoch(epoch)`` is its per-epoch hook."""

    def __init__(self, structure, num_particles=1):
        self.names = _names(structure)
        self.nesting = structure.max_plate_nesting
        self.num_particles = num_particles
        self.x_shape = structure.x_shape
        self.labelled = structure.y.partial

    def _kwargs(self):
        kwargs = {"num_particles": self.num_particles, "max_plate_nesting": self.nesting}
        if self.num_particles > 1:
            kwargs["vectorize_particles"] = True
        return kwargs

    def __call__(self, model, guide):
        return self._split(DiscreteLoss(model, guide, self), model)

    def _split(self, loss, model):
        """``loss``, or for a program trained with labels for some of its images its
        :class:`~pyro_vae.semi.SemiSupervisedLoss` (labelled and unlabelled images in calls of
        their own, and the classification term the program's ``alpha`` weighs), so every
        trainer that takes this objective splits them."""
        if not self.labelled:
            return loss
        from .semi import SemiSupervisedLoss  # here: only labelled programs need it

        return SemiSupervisedLoss(loss, model.program.alpha)

    def start_epoch(self, epoch):
        pass


class Enumerate(Objective):
    """Exact sums over the discrete sites' values: :class:`~pyro.infer.TraceEnum_ELBO`."""

    def __init__(self, structure, num_particles=1):
        super().__init__(structure, num_particles)
        infinite = [s.name for s in discrete_sites(structure) if s.cardinality is None]
        if infinite:
            raise ConfigError(
                f"--discrete enumerate needs finite supports, but site(s) {', '.join(infinite)} "
                "have infinitely many values; use --discrete score"
            )
        self.elbo = TraceEnum_ELBO(**self._kwargs())

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.elbo.differentiable_loss(model, enumerated(guide, self.names), *args, **kwargs)


class Score(Objective):
    """Score-function gradients for the discrete sites: :class:`~pyro.infer.TraceGraph_ELBO`.

    ``TraceGraph_ELBO`` forms a surrogate loss whose gradient is the estimator; the loss returned
    here has the surrogate's gradient and the ELBO estimate's value."""

    learned_baseline = False

    def __init__(self, structure, num_particles=1):
        super().__init__(structure, num_particles)
        self.elbo = TraceGraph_ELBO(**self._kwargs())
        self.baseline = None

    def __call__(self, model, guide):
        if self.learned_baseline:
            self.baseline = LearnedBaseline(self.x_shape)
        return self._split(DiscreteLoss(model, guide, self, self.baseline), model)

    def differentiable_loss(self, model, guide, x, *args, **kwargs):
        if self.baseline is not None:
            guide = self._with_baseline(guide, x)
        elbo, surrogate = self.elbo._loss_and_surrogate_loss(model, guide, (x, *args), kwargs)
        if self.baseline is not None and not self.baseline.shift:
            # Costs are hundreds of nats times the minibatch scale: start b(x) at this
            # minibatch's mean cost, so it predicts the part that varies from the first steps.
            shift = elbo.item() / x.shape[0]  # new tensors: the old ones are in the graph
            self.baseline.shift = torch.tensor(shift)
            self.baseline.scale = torch.tensor(max(1.0, abs(shift) / 10))
        return surrogate + (-elbo - surrogate).detach()

    def _with_baseline(self, guide, x):
        options = {"nn_baseline": self.baseline, "nn_baseline_input": x}

        def config(msg):
            if msg["name"] in self.names and not msg["is_observed"]:
                return {"baseline": options}
            return {}

        return poutine.infer_config(guide, config)


class ScoreBaseline(Score):
    """:class:`Score` with a learned baseline ``b(x)`` (:class:`pyro_vae.nets.LearnedBaseline`)."""

    learned_baseline = True


class Relaxed(Objective):
    """The concrete relaxation of the one-hot sites, annealed per epoch (see the module notes:
    a different objective from the discrete model's ELBO)."""

    def __init__(self, structure, num_particles=1):
        super().__init__(structure, num_particles)
        self.temperature = TAU_START
        self.elbo = Trace_ELBO(**self._kwargs())

    def start_epoch(self, epoch):
        self.temperature = temperature(epoch)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        relax = Relax(self.names, self.temperature)
        return self.elbo.differentiable_loss(relax(model), relax(guide), *args, **kwargs)


def temperature(epoch):
    """The relaxed estimator's temperature in ``epoch`` (from 1)."""
    return max(TAU_MIN, TAU_START * math.exp(-TAU_RATE * (epoch - 1)))


#: name -> :class:`Strategy`; the CLI's ``--discrete`` choices, the docs' table and the tests
#: read this table.
STRATEGIES = {
    s.name: s
    for s in (
        Strategy("enumerate", Enumerate, "exact sum over the values (TraceEnum_ELBO)"),
        Strategy("score", Score, "score-function estimator (TraceGraph_ELBO), no baseline"),
        Strategy(
            "score-baseline",
            ScoreBaseline,
            "score-function estimator with a learned baseline b(x) (Mnih & Gregor 2014)",
        ),
        Strategy(
            "relaxed",
            Relaxed,
            "Gumbel-softmax relaxation with an annealed temperature: a different objective",
        ),
    )
}


def objective(structure, discrete=None, elbo=None):
    """The ``elbo`` :func:`pyro_vae.train.fit` trains a program of ``structure`` with.

    A program without discrete latents keeps ``elbo`` (``discrete`` must then be ``None``); one
    with them gets the objective of the strategy ``discrete`` (default
    :func:`default_strategy`), with ``elbo``'s number of particles.
    """
    if discrete is not None and discrete not in STRATEGIES:
        raise ConfigError(
            f"unknown discrete strategy {discrete!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if not discrete_sites(structure):
        if discrete is not None:
            raise ConfigError(
                f"--discrete {discrete} trains discrete latent sites, but this model has none"
            )
        return elbo
    if isinstance(elbo, Objective):
        return elbo
    name = discrete or default_strategy(structure)
    num_particles = getattr(elbo, "num_particles", 1)
    built = STRATEGIES[name].build(structure, num_particles)
    from .objectives import IWAE

    if isinstance(elbo, IWAE):  # the importance-weighted bound needs pathwise gradients
        if name != "relaxed":
            raise ConfigError(
                "the IWAE bound needs reparameterized latents; with discrete sites use "
                f"--discrete relaxed, or --elbo trace with --discrete {name}"
            )
        built.elbo = elbo
    return built


def gradient_draws(model, guide, x, strategy, num_draws=100, y=None, seed=0):
    """``num_draws`` independent estimates of the gradient of the per-image negative ELBO by the
    strategy ``strategy`` (a name in :data:`STRATEGIES`), for the programs' parameters, as
    :func:`pyro_vae.gradvar.gradient_draws` returns them: ``{"encoder": (num_draws, P_enc),
    "decoder": (num_draws, P_dec)}`` (:func:`pyro_vae.gradvar.summarize` reads them). The
    gradient-variance lab for the discrete sites: ``enumerate`` draws vary through the continuous
    latents only. The parameters are not changed (a learned baseline starts untrained).
    """
    torch.manual_seed(seed)
    loss_fn = objective(model.structure, strategy)(model, guide)
    groups = {"encoder": list(guide.parameters()), "decoder": list(model.parameters())}
    params = groups["encoder"] + groups["decoder"]
    draws = []
    for _ in range(num_draws):
        for p in params:
            p.grad = None
        (loss_fn(x, y) / x.shape[0]).backward()
        draws.append(
            torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in params
                ]
            )
        )
    for p in params:
        p.grad = None
    flat = torch.stack(draws)
    sizes = [sum(p.numel() for p in groups[k]) for k in ("encoder", "decoder")]
    encoder, decoder = flat.split(sizes, dim=1)
    return {"encoder": encoder, "decoder": decoder}
