"""The gradient-variance lab: how noisy is each estimator of the ELBO's gradient?

For a fixed model, guide and minibatch, :func:`gradient_draws` draws many independent estimates of
the gradient of the loss (the negative ELBO per image) with respect to the guide's parameters (the
encoder) and the model's (the decoder). Every estimator has the same expectation, the true
gradient; they differ only in variance, which is what makes one train and another crawl.

Estimators (:data:`ESTIMATORS`), all from Pyro's ELBOs:

- ``reparam``: the reparameterization trick (pathwise gradient, Kingma & Welling 2014) with
  :class:`~pyro.infer.Trace_ELBO`; the KL term is estimated by Monte Carlo.
- ``reparam-analytic-kl``: the same with :class:`~pyro.infer.TraceMeanField_ELBO`, which uses the
  closed-form KL(q(z|x) || p(z)).
- ``score``: the score-function (REINFORCE) estimator (Williams 1992): the same guide with its
  distribution's ``has_rsample_(False)``, so z is not differentiated through, with
  :class:`~pyro.infer.TraceGraph_ELBO`.
- ``score-avg-baseline``: the same with a decaying average of the downstream cost as a baseline.
- ``score-nn-baseline``: the same with a learned baseline, a small network of x trained to predict
  the downstream cost (Mnih & Gregor 2014).

A program with discrete latent sites (M2's class, a mixture's cluster): the pathwise estimators
differentiate through the continuous sites only, so ``reparam`` sums every finite discrete site
out exactly (:class:`~pyro.infer.TraceEnum_ELBO`, as ``--discrete enumerate`` trains and as
evaluation scores), and the score-function estimators treat the discrete sites by the score
function too, each with the same baseline. ``reparam-analytic-kl`` does not apply there (Pyro's
closed-form KL needs every guide site reparameterized) and :func:`measure_stages` leaves it out,
saying so once; the discrete sites' own estimators are compared by
:func:`pyro_vae.discrete.gradient_draws`.

Usage::

    rows = gradient_variance(model, guide, x, particles=(1, 10), num_draws=200)
"""

import os
import sys

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from .discrete import discrete_sites, enumerated
from .errors import ConfigError
from .evaluate import behind_the_door, enumerates, log_weights, sampled_instead
from .nets import LearnedBaseline

#: name -> (the Pyro ELBO, the score-function baseline or None for a pathwise gradient)
ESTIMATORS = {
    "reparam": (Trace_ELBO, None),
    "reparam-analytic-kl": (TraceMeanField_ELBO, None),
    "score": (TraceGraph_ELBO, "none"),
    "score-avg-baseline": (TraceGraph_ELBO, "average"),
    "score-nn-baseline": (TraceGraph_ELBO, "learned"),
}


def not_applicable(model, estimator):
    """Why ``estimator`` cannot estimate the gradient for ``model`` (a program behind the door),
    or ``None`` where it can."""
    sites = discrete_sites(model.structure)
    if not sites or ESTIMATORS[estimator][1] is not None:
        return None
    if estimator == "reparam-analytic-kl":
        return (
            "Pyro's closed-form KL needs every guide site reparameterized, and "
            f"{_sites_named(sites)} discrete"
        )
    if sampled_instead(model):
        return "it sums the discrete sites out, and the program cannot be enumerated"
    infinite = [s for s in sites if s.cardinality is None]
    if infinite:
        return (
            f"it sums the discrete sites out, and {_sites_named(infinite)} without a finite support"
        )
    return None


def _sites_named(sites):
    names = ", ".join(repr(s.name) for s in sites)
    return f"site {names} is" if len(sites) == 1 else f"sites {names} are"


def _pathwise(elbo_class, model, guide):
    """The pathwise estimator's ELBO and guide: with discrete sites, every one summed out."""
    structure = model.structure
    sites = discrete_sites(structure)
    if not sites:
        return elbo_class(), guide
    names = frozenset(s.name for s in sites)
    return TraceEnum_ELBO(max_plate_nesting=structure.max_plate_nesting), enumerated(guide, names)


class ScoreFunction(Messenger):
    """Turn the guide's latent sites into score-function sites, optionally with a baseline.

    Sets ``has_rsample_(False)`` on each site's distribution before it is sampled, so no gradient
    flows through the sample and ELBOs fall back on the score function. ``baseline`` is ``None``,
    ``"average"`` (Pyro's decaying average of the downstream cost) or a tensor-valued callable
    returning one baseline per data point (trained by :class:`~pyro.infer.TraceGraph_ELBO`).

    :param tuple sites: the latent sites to treat (the program's
        :attr:`~pyro_vae.program.Structure.latent_names`; default: every latent site the guide
        samples).
    :param baseline: see above.
    :param float beta: the decay of the average baseline.
    """

    def __init__(self, sites=None, baseline=None, beta=0.9):
        super().__init__()
        self.sites = None if sites is None else tuple(sites)
        self.baseline = baseline
        self.beta = beta

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        if self.sites is not None and msg["name"] not in self.sites:
            return
        base = msg["fn"]
        while isinstance(base, torch.distributions.Independent):
            base = base.base_dist
        base.has_rsample_(False)
        if self.baseline == "average":
            options = {"use_decaying_avg_baseline": True, "baseline_beta": self.beta}
        elif callable(self.baseline):
            # Particle dims sit left of the data plate, so one value per image is broadcast.
            options = {"baseline_value": self.baseline().expand(msg["fn"].batch_shape)}
        else:
            return
        msg["infer"] = {**msg["infer"], "baseline": options}


#: The prefix of the names Pyro's TraceGraph_ELBO keeps its decaying average baselines under.
AVERAGE_BASELINE = "__baseline_avg_downstream_cost_"


def _drop(store, which):
    for name in [name for name in store.keys() if which(name)]:
        del store[name]


def _groups(model, guide):
    return {"encoder": list(guide.parameters()), "decoder": list(model.parameters())}


def _draw(elbo, model, guide, x, params):
    for p in params:
        p.grad = None
    elbo.loss_and_grads(model, guide, x)
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )


def gradient_draws(
    model,
    guide,
    x,
    estimator="reparam",
    num_draws=100,
    num_particles=1,
    warmup=20,
    baseline_steps=300,
    seed=0,
):
    """``num_draws`` independent estimates of the gradient of the per-image negative ELBO.

    The model and guide are not changed. Baselines are warmed up first: the average baseline over
    ``warmup`` draws, the learned one by ``baseline_steps`` Adam steps of least squares on ``x``. The minibatch is
    fixed, so both end up close to a per-image baseline: the best case for a baseline.

    :param model: a pyro_vae model.
    :param guide: a guide with the same signature (every latent site is treated).
    :param torch.Tensor x: the minibatch.
    :param str estimator: one of :data:`ESTIMATORS`.
    :param int num_draws: gradient estimates to draw.
    :param int num_particles: latent samples per image in each estimate.
    :returns: ``{"encoder": (num_draws, P_enc), "decoder": (num_draws, P_dec)}``
    :rtype: dict
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    for name, value in (("num_draws", num_draws), ("num_particles", num_particles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if num_draws < 2:
        raise ConfigError("num_draws must be at least 2 to estimate a variance")
    caller = (model, guide)
    model, guide = behind_the_door(model, guide, x)
    # the gradients in the order of the caller's modules' parameters where it passed modules
    # (the door's halves order theirs by use; the same tensors), else the halves'
    groups = _groups(
        *(c if isinstance(c, torch.nn.Module) else h for c, h in zip(caller, (model, guide)))
    )
    why = not_applicable(model, estimator)
    if why is not None:
        raise ConfigError(f"the {estimator} estimator does not apply to this model: {why}")
    elbo_class, baseline = ESTIMATORS[estimator]
    if baseline is None:
        elbo, pathwise_guide = _pathwise(elbo_class, model, guide)
    else:
        elbo = elbo_class()
    pyro.set_rng_seed(seed)
    if baseline == "learned":
        net = LearnedBaseline(x.shape[1:])
        _train_baseline(model, guide, x, net, baseline_steps)
    # k particles = each image k times in the batch: the same average of k independent latents
    # per image as an ELBO's num_particles, and it works for every baseline alike.
    x = x.repeat_interleave(num_particles, dim=0)
    params = groups["encoder"] + groups["decoder"]
    # The average baseline lives in the param store: it starts afresh, and the store is left as
    # it was. The program's own pyro.param values stay in it while the draws run.
    store = pyro.get_param_store()
    saved = store.get_state()
    _drop(store, lambda name: name.startswith(AVERAGE_BASELINE))
    modes = model.training, guide.training
    model.eval(), guide.eval()
    try:
        q = guide if baseline is not None else pathwise_guide
        sites = model.structure.latent_names
        if baseline == "learned":
            q = ScoreFunction(sites, baseline=lambda: net(x))(guide)
        elif baseline is not None:
            q = ScoreFunction(sites, baseline=None if baseline == "none" else baseline)(guide)
        skip = warmup if baseline == "average" else 0
        draws = [_draw(elbo, model, q, x, params) for _ in range(skip + num_draws)][skip:]
    finally:
        model.train(modes[0]), guide.train(modes[1])
        for p in params:
            p.grad = None
        _drop(store, lambda name: name not in saved["params"])
        store.set_state(saved)
    flat = torch.stack(draws) / x.shape[0]
    sizes = [sum(p.numel() for p in groups[k]) for k in ("encoder", "decoder")]
    encoder, decoder = flat.split(sizes, dim=1)
    return {"encoder": encoder, "decoder": decoder}


def _train_baseline(model, guide, x, net, steps, num_samples=32, lr=1e-2):
    """Fit the learned baseline by least squares to the downstream cost of ``z``, which for this
    model is the log weight log p(x, z) - log q(z|x): the regression TraceGraph_ELBO's baseline
    loss performs, done here on a batch of samples at once. Model and guide are not changed.
    """
    target = log_weights(model, guide, x, num_samples=num_samples).mean(0)
    net.shift.fill_(target.mean())
    net.scale.fill_(target.std() if len(target) > 1 else 1.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        (net(x) - target).pow(2).mean().backward()
        optimizer.step()
    net.requires_grad_(False)


def summarize(draws):
    """Per parameter group: the total variance (the trace of the gradient's covariance, summed
    over coordinates), the squared norm of the mean gradient, and the mean and variance of the
    gradient's norm.
    """
    out = {}
    for group, g in draws.items():
        norms = g.norm(dim=1)
        out[group] = {
            "variance": g.var(dim=0).sum().item(),
            "mean_sq_norm": g.mean(dim=0).pow(2).sum().item(),
            "norm_mean": norms.mean().item(),
            "norm_variance": norms.var().item(),
        }
    return out


def gradient_variance(
    model, guide, x, estimators=tuple(ESTIMATORS), particles=(1,), num_draws=100, seed=0, **kwargs
):
    """Summaries of :func:`gradient_draws` for every estimator and particle count.

    Each row holds ``estimator``, ``num_particles``, ``num_draws`` and, per group (``encoder``,
    ``decoder``), the :func:`summarize` numbers plus ``ratio``: the group's variance divided by
    that of ``reparam`` with the same particle count (when ``reparam`` is among the estimators).

    :rtype: list
    """
    model, guide = behind_the_door(model, guide, x)
    rows = []
    for k in particles:
        for name in estimators:
            draws = gradient_draws(
                model, guide, x, name, num_draws=num_draws, num_particles=k, seed=seed, **kwargs
            )
            rows.append({"estimator": name, "num_particles": k, "num_draws": num_draws})
            rows[-1].update(summarize(draws))
        reference = {r["estimator"]: r for r in rows if r["num_particles"] == k}.get("reparam")
        for r in rows:
            if reference is not None and r["num_particles"] == k:
                for group in ("encoder", "decoder"):
                    r[group]["ratio"] = r[group]["variance"] / reference[group]["variance"]
    return rows


def training_stages(config, data, epochs=(0,), quiet=True):
    """Yield ``(label, model, guide)`` along a training run: the model and guide that ``config``
    builds from its seed, trained with :func:`~pyro_vae.train.fit` to each of ``epochs`` in turn.

    Each stage resumes the previous one from its last checkpoint (Adam's state, the learning
    rate's decay, the random numbers), so the stages are those of one uninterrupted
    :func:`~pyro_vae.train.fit` with the config's recipe, bit for bit.
    """
    from .config import build
    from .train import fit

    pyro.set_rng_seed(config.seed)
    model, guide = build(config, data.x_shape)
    done, state = 0, None
    for target in sorted(set(epochs)):
        if target > done:
            states = []
            fit(
                model,
                guide,
                data,
                config.make_elbo(),
                quiet=quiet,
                resume_from=state,
                checkpoint=states.append,
                **{**config.fit_options(), "epochs": target},
            )
            done, state = target, states[-1]
        yield f"epoch {done}", model, guide


def measure_stages(stages, x, **kwargs):
    """:func:`gradient_variance` rows for each ``(label, model, guide)`` of ``stages``, each row
    tagged with its ``"stage"``. ``kwargs`` go to :func:`gradient_variance`.

    Pass :func:`training_stages` itself, not a list of it: it trains one model and guide in place,
    so each stage must be measured before the generator moves on.

    Estimators that do not apply to the model (:func:`not_applicable`) are left out, with one
    line on stderr saying which and why; if none applies, :class:`~pyro_vae.errors.ConfigError`.
    """
    rows, estimators = [], kwargs.pop("estimators", tuple(ESTIMATORS))
    for label, model, guide in stages:
        model, guide = behind_the_door(model, guide, x)
        if not rows:
            enumerates(model, guide, x)  # found out once, before the estimators are chosen
            estimators = _applicable(model, estimators)
        rows += [
            {"stage": label, **row}
            for row in gradient_variance(model, guide, x, estimators=estimators, **kwargs)
        ]
    return rows


def _applicable(model, estimators):
    skipped = {name: not_applicable(model, name) for name in estimators}
    skipped = {name: why for name, why in skipped.items() if why is not None}
    kept = tuple(name for name in estimators if name not in skipped)
    reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
    if not kept:
        raise ConfigError(
            f"none of the estimators asked for applies to this model ({reasons}); choose from "
            f"{', '.join(name for name in ESTIMATORS if not_applicable(model, name) is None)}"
        )
    if skipped:
        print(f"pyro_vae: gradvar leaves out {reasons}", file=sys.stderr, flush=True)
    return kept


def format_rows(rows):
    """The rows of :func:`measure_stages` as a plain-text table."""
    lines = [
        f"{'stage':22} {'estimator':20} {'K':>4} {'encoder var':>12} {'x reparam':>10} "
        f"{'decoder var':>12} {'x reparam':>10} {'var |g_enc|':>12}"
    ]
    for r in rows:
        e, d = r["encoder"], r["decoder"]
        lines.append(
            f"{r['stage']:22} {r['estimator']:20} {r['num_particles']:>4} {e['variance']:>12.4g} "
            f"{e.get('ratio', float('nan')):>10.3g} {d['variance']:>12.4g} "
            f"{d.get('ratio', float('nan')):>10.3g} {e['norm_variance']:>12.4g}"
        )
    return "\n".join(lines)


def study(run, data, out, overwrite=False, batch_size=128, epochs=(0,), quiet=True, **kwargs):
    """``pyro-vae gradvar``: the variance of each estimator's gradient on the first
    ``batch_size`` test images, for the run's model retrained to each of ``epochs`` and as
    trained (:func:`measure_stages`, ``kwargs`` its options); ``gradvar.json`` and
    ``gradvar.png`` in ``out``. Returns what the JSON holds."""
    import itertools

    from . import plots
    from .runs import prepare_run_dir, write_json

    prepare_run_dir(out, overwrite)
    x = data.test_x[:batch_size]
    trained = run.config.epochs
    # a generator, so each stage is measured before training moves on to the next
    stages = itertools.chain(
        training_stages(run.config, data, epochs, quiet=quiet),
        [(f"trained ({trained} epoch{'' if trained == 1 else 's'})", run.model, run.guide)],
    )
    rows = measure_stages(stages, x, **kwargs)
    result = {
        "run": os.path.abspath(run.path),
        "images": int(x.shape[0]),
        "gradient_of": "negative ELBO per image",
        "rows": rows,
    }
    write_json(os.path.join(out, "gradvar.json"), result)
    draws = kwargs.get("num_draws")
    plots.gradient_variance(
        rows,
        os.path.join(out, "gradvar.png"),
        title=f"{data.name}: variance of {draws} gradient estimates on {x.shape[0]} images",
    )
    return result
