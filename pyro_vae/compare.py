"""One model, several inference strategies, and the gaps between them (Cremer, Li & Duvenaud 2018).

The decoder of a trained VAE is held fixed; each strategy gives its own q(z|x) for the same
images, and every q is scored by the same code (:mod:`pyro_vae.evaluate`):

========================  ====================================================================
``amortized``             the encoder trained with the decoder (one forward pass per image)
``local``                 variational EM's E-step: a free Gaussian per image, fitted from the
                          prior by :func:`~pyro_vae.inference.e_step`
``semi-amortized``        the encoder's output refined by ``refine_steps`` E-step steps
``delta``                 a point mass per image at the MAP latent (the autoencoder limit)
``mcmc``                  NUTS on z for a few images: the reference posterior
========================  ====================================================================

On a run with discrete latents (M2's class, a mixture's cluster) the per-image strategies hold a
free categorical q per image for each discrete site next to the continuous sites' q: mean field,
q(y) q(z), where M2's encoder has q(z | x, y), so there q* is the best such pair. Every ELBO and
log p(x) sums the discrete sites out exactly, and NUTS samples the continuous latents with them
summed out (Pyro's enumeration).

The gaps on the test images, per image and then averaged::

    approximation gap = log p(x) - L[q*]              (the Gaussian family's limit)
    amortization gap  = L[q*] - L[q_amortized]        (the price of sharing one encoder)

q* is the best q per image within the encoder's guide family (:mod:`pyro_vae.families`), as found
by ``e_steps`` E-step steps started from the encoder's q (so it is never the encoder's q made worse
by too few steps from the prior, which the ``local`` row can be on harder data). log p(x) is the
importance-sampled estimate with a q* as the proposal (the family whose estimate is highest), or,
for a 2-D latent, the exact value from :func:`~pyro_vae.inference.grid_posterior`.

By family: q* is found within each of ``families`` (``diag``, ``fullcov``, ``flow``) the same way,
so the approximation gap splits into what a full covariance recovers (correlations between the
latent numbers) and what a flow recovers beyond it (a non-Gaussian posterior), as in Cremer, Li &
Duvenaud (2018, Table 2); :func:`family_table` sets models trained with different families side
by side in their layout.
"""

import math
import os
import sys
import time

import pyro
import torch
from torch.distributions import biject_to

from . import evaluate, program
from .errors import ConfigError
from .families import FAMILIES, check_family
from .guides import DeltaGuide, LocalGuide, categorical_q
from .guides import per_image as per_image_guide
from .inference import (
    E_STEP_LR,
    E_STEP_PARTICLES,
    REFINE_LR,
    GridPosterior,
    e_step,
    grid_posterior,
    nuts_posterior,
)
from .program import site_moments

STRATEGIES = ("amortized", "local", "semi-amortized", "delta", "mcmc")


def local_guide(model, n):
    """A per-image guide over every latent site of ``model`` (a program, through the door) for
    ``n`` images, at the prior."""
    return LocalGuide(n, structure=model.structure)


def _fit(strategy, model, guide, x, e_steps, refine_steps, lr, seed, refine_lr=REFINE_LR):
    """A guide for the images ``x`` under ``strategy``, its E-step history and the seconds taken.

    The E-step from the prior runs at ``lr``; refinements from the encoder's answer, which start
    near their optimum, at the smaller ``refine_lr`` (Adam's first steps are about ``lr`` long
    whatever the gradient, so a large one first throws a good start away)."""
    start = time.perf_counter()
    history = None
    if strategy == "amortized":
        site_moments(guide, x)  # what test-time inference costs: one encoder pass
        q = guide
    elif strategy == "local":
        q = local_guide(model, x.shape[0])
        history = e_step(model, q, x, steps=e_steps, lr=lr, seed=seed)
    elif strategy == "semi-amortized":
        q = LocalGuide.from_guide(guide, x)
        if refine_steps:
            history = e_step(model, q, x, steps=refine_steps, lr=refine_lr, seed=seed)
    elif strategy == "delta":
        # A Delta has no analytic KL; TraceMeanField_ELBO falls back to log p(z) - log q(z) = log p(z).
        # A point mass draws nothing, so one particle is exact.
        q = DeltaGuide(
            LocalGuide.from_guide(guide, x) if guide is not None else local_guide(model, len(x))
        )
        history = e_step(model, q, x, steps=e_steps, lr=refine_lr, seed=seed, num_particles=1)
    else:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return q, history, time.perf_counter() - start


def _num_params(strategy, guide, q):
    encoder = sum(p.numel() for p in guide.parameters()) if guide is not None else 0
    local = q.guide if isinstance(q, DeltaGuide) else q
    per_image = 0
    if strategy != "amortized":  # a location (or a discrete site's logits) per number
        per_image = sum(p.numel() for p in local.locs.values())
    if strategy in ("local", "semi-amortized"):  # and a scale per continuous number
        per_image += sum(p.numel() for p in local.log_scales.values())
    return {
        "amortized": encoder,
        "local": per_image,
        "semi-amortized": encoder + per_image,
        "delta": per_image,
    }[strategy]


@torch.no_grad()
def reconstruction_nats(model, q, x):
    """``-log p(x | z)`` at the mean of q(z|x) (every latent site), per image: the
    reconstruction error in nats."""
    return -program.log_likelihood_at(model, program.site_values(q, x), x)


def _mean_stderr(values):
    stderr = (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else None
    return values.mean().item(), stderr


def compare(
    model,
    guide,
    data,
    strategies=STRATEGIES,
    num_images=1000,
    e_steps=300,
    refine_steps=20,
    lr=E_STEP_LR,
    refine_lr=REFINE_LR,
    elbo_samples=100,
    log_px_samples=1000,
    mcmc_images=3,
    mcmc_samples=200,
    mcmc_warmup=200,
    grid_points=200,
    grid_lim=5.0,
    seed=0,
    train_seconds=None,
    families=None,
):
    """Fit each strategy's q on the first ``num_images`` train and test images; measure all.

    :param model: a trained pyro_vae model (held fixed).
    :param guide: its amortized guide (the encoder the other strategies start from).
    :param data: the :class:`~pyro_vae.data.Data` the model was trained on.
    :param strategies: names from :data:`STRATEGIES`.
    :param int num_images: images per split (fewer if the split is smaller).
    :param int e_steps: E-step steps for ``local`` and ``delta``.
    :param int refine_steps: E-step steps for ``semi-amortized`` (K; 0 gives the encoder's q).
    :param float lr: the E-step's Adam learning rate from the prior (``local``).
    :param float refine_lr: its learning rate from the encoder's answer (``semi-amortized``,
        ``delta`` and q*).
    :param int elbo_samples: latent samples per image for each ELBO.
    :param int log_px_samples: importance samples per image for log p(x).
    :param int mcmc_images: test images NUTS samples (the first ones).
    :param int grid_points: grid points per axis for the exact 2-D posterior.
    :param float grid_lim: the grid covers ``[-grid_lim, grid_lim]^2``; widen it when the report
        says a posterior has mass on the grid's edge.
    :param float train_seconds: how long training the model and encoder took, if known.
    :param families: guide families to find q* in (names from
        :data:`pyro_vae.families.FAMILIES`); default every family the latent sites allow. The
        encoder's own family is always among them.
    :returns: a dict with ``rows`` (one per strategy), ``gaps``, ``families`` (the gaps by
        family), ``mcmc``, ``grid`` and ``curves``;
        :func:`pyro_vae.report.write_comparison` writes it out.
    """
    strategies = list(dict.fromkeys(strategies))
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(
            f"unknown strategies {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(STRATEGIES)}"
        )
    if families is not None:
        families = [check_family(f) for f in families]
    variational = [s for s in strategies if s != "mcmc"]
    x4 = data.test_x[:4]
    model, guide = program.as_program(model, guide, x4, data.model_y(x4, data.test_y[:4]))
    if guide is None or per_image_guide(guide):
        # a model trained without an encoder: nothing amortized to compare or start from
        guide = None
        variational = [s for s in variational if s not in ("amortized", "semi-amortized")]
        if not variational and "mcmc" not in strategies:
            raise ConfigError(
                "this model has no encoder (it was trained by variational EM), so only the "
                "local, delta and mcmc strategies apply"
            )
    elif "amortized" not in variational and "local" in variational:
        variational.insert(0, "amortized")  # the gaps need both
    model.eval()
    if guide is not None:
        guide.eval()
    structure = getattr(model, "structure", None)
    strategies = _without_nuts(strategies, variational, model, guide, x4)
    variational = _without_local_if_not_categorical(variational, structure, strategies)
    splits = {
        "train": data.split("train")[0][:num_images],
        "test": data.test_x[:num_images],
    }
    rows, per_image, curves, guides = {}, {}, {}, {}
    for strategy in variational:
        row = {"strategy": strategy}
        for split, x in splits.items():
            q, history, seconds = _fit(
                strategy, model, guide, x, e_steps, refine_steps, lr, seed, refine_lr
            )
            pyro.set_rng_seed(seed)
            elbo = evaluate.elbo(model, q, x, num_samples=elbo_samples)
            row[f"{split}_elbo"], row[f"{split}_elbo_stderr"] = _mean_stderr(elbo)
            row[f"{split}_fit_seconds"] = seconds
            if split == "train":
                continue
            guides[strategy] = q
            per_image[strategy] = elbo
            recon = reconstruction_nats(model, q, x)
            row["test_reconstruction_nats"] = recon.mean().item()
            row["test_seconds_per_image"] = seconds / len(x)
            row["parameters"] = _num_params(strategy, guide, q)
            row["parameter_bytes"] = 4 * row["parameters"]
            if history is not None:
                curves[strategy] = history.train_elbo
            if strategy != "delta":
                pyro.set_rng_seed(seed)
                log_px = evaluate.log_px(model, q, x, num_samples=log_px_samples)
                row["test_log_px"], row["test_log_px_stderr"] = _mean_stderr(log_px)
                per_image[f"{strategy}:log_px"] = log_px
            else:
                row["test_log_px"] = row["test_log_px_stderr"] = None
        if strategy == "amortized" and train_seconds is not None:
            row["trained_with_decoder_seconds"] = train_seconds  # the encoder's own fitting
        rows[strategy] = row

    own = getattr(guide, "family", "diag")
    families = _families(families, structure, own)
    q_stars, family_seconds = {}, {}
    if "local" in variational and guide is not None:
        # q*, the per-image optimum the gaps are measured against, within each family: the
        # E-step started from the encoder's q, with as many steps as the local strategy takes
        # from the prior.
        x = splits["test"]
        for family in families:
            start = time.perf_counter()
            q_stars[family] = q = LocalGuide.from_guide(guide, x, family=family)
            e_step(model, q, x, steps=e_steps, lr=refine_lr, seed=seed)
            family_seconds[family] = time.perf_counter() - start
            pyro.set_rng_seed(seed)
            per_image[f"q*:{family}"] = evaluate.elbo(model, q, x, num_samples=elbo_samples)
            pyro.set_rng_seed(seed)
            per_image[f"q*:{family}:log_px"] = evaluate.log_px(
                model, q, x, num_samples=log_px_samples
            )
        per_image["q*"] = per_image[f"q*:{own}"]
        best = max(families, key=lambda f: per_image[f"q*:{f}:log_px"].mean().item())
        per_image["q*:log_px"] = per_image[f"q*:{best}:log_px"]
        per_image["q*:proposal"] = best

    result = {
        "strategies": strategies,
        "rows": [rows[s] for s in variational],
        "settings": {
            "num_images": {k: len(v) for k, v in splits.items()},
            "e_steps": e_steps,
            "refine_steps": refine_steps,
            "lr": lr,
            "refine_lr": refine_lr,
            "elbo_samples": elbo_samples,
            "log_px_samples": log_px_samples,
            "seed": seed,
        },
        "curves": curves,
        "discrete_sites": [
            site.name for site in getattr(structure, "latents", ()) if site.discrete
        ],
        "units": "nats per image (higher is better), seconds",
    }
    x_test = splits["test"]
    if _grid_applies(structure):
        start = time.perf_counter()
        grid, lim, points = holding_grid(model, x_test, grid_lim, grid_points)
        result["grid"] = {
            "points": points,
            "lim": lim,
            "asked_lim": grid_lim,
            "test_log_px": grid.log_px.mean().item(),
            "quadrature_error_max": grid.error.max().item(),
            "edge_mass_max": grid.edge_mass.max().item(),
            "seconds": time.perf_counter() - start,
        }
        for strategy in variational:
            if f"{strategy}:log_px" in per_image:
                diff = per_image[f"{strategy}:log_px"] - grid.log_px
                result["grid"][f"is_minus_grid_{strategy}"] = _mean_stderr(diff)
        per_image["exact"] = grid.log_px
        result["_grid"] = grid
    result["gaps"] = _gaps(per_image, len(x_test), elbo_samples, log_px_samples)
    if result["gaps"] is not None:
        result["gaps"]["family"] = own
        result["families"] = _family_gaps(per_image, families, own, family_seconds, len(x_test))
        result["_q_stars"] = q_stars
    if "mcmc" in strategies:
        result["mcmc"] = _mcmc(
            model,
            guides,
            x_test[:mcmc_images],
            mcmc_samples,
            mcmc_warmup,
            seed,
            result.get("_grid"),
        )
    result["_guides"] = guides
    result["_x"] = x_test
    return result


def _without_local_if_not_categorical(variational, structure, strategies):
    """``variational`` without the per-image strategies where a discrete site has no per-image
    categorical q (:class:`~pyro_vae.guides.LocalGuide`: one-hot, Boolean or 0..K-1 sites),
    said once; the amortized q still runs."""
    per_image = ("local", "semi-amortized", "delta")
    if not any(s in variational for s in per_image):
        return variational
    try:
        for site in structure.latents:
            if site.discrete:
                categorical_q(site)
    except ConfigError as e:
        kept = [s for s in variational if s not in per_image and s in strategies]
        if not kept and "mcmc" not in strategies:
            asked = ", ".join(s for s in strategies if s in per_image)
            raise ConfigError(f"compare cannot run {asked} on this model: {e}") from None
        print(f"pyro_vae: compare leaves out {', '.join(per_image)}: {e}", file=sys.stderr)
        return kept
    return variational


def _without_nuts(strategies, variational, model, guide, x):
    """``strategies`` without ``mcmc`` where NUTS cannot sample the model's latents, said once:
    it moves the continuous ones in unconstrained space (torch must map onto their supports)
    and Pyro's MCMC sums the discrete ones out (they must be finite and the program
    enumerable)."""
    if "mcmc" not in strategies:
        return strategies
    why = _why_not_nuts(model, guide, x)
    if why is None:
        return strategies
    if not variational:
        raise ConfigError(f"compare cannot run mcmc on this model: {why}; choose other strategies")
    print(f"pyro_vae: compare leaves out mcmc: {why}", file=sys.stderr, flush=True)
    return [s for s in strategies if s != "mcmc"]


def _why_not_nuts(model, guide, x):
    latents = getattr(getattr(model, "structure", None), "latents", ())
    for site in latents:
        if site.discrete and not site.cardinality:
            return (
                "NUTS samples the continuous latents with the discrete sites summed out, and "
                f"site {site.name!r} has no finite set of values"
            )
        if not site.discrete:
            try:
                biject_to(site.support)
            except NotImplementedError:
                return (
                    "NUTS moves each continuous latent in unconstrained space, and torch has no "
                    f"map onto site {site.name!r}'s support ({type(site.support).__name__}, a "
                    "mixture prior's, say)"
                )
    if any(site.discrete for site in latents) and guide is not None:
        if not evaluate.enumerates(model, guide, x):
            return (
                "NUTS samples the continuous latents with the discrete sites summed out, and "
                "this program cannot be enumerated"
            )
    return None


#: The largest posterior mass an image may have on the exact grid's edge before it is widened.
EDGE_MASS = 1e-3


def holding_grid(model, x, lim=5.0, points=200, widest=4.0):
    """:func:`~pyro_vae.inference.grid_posterior`, widened at the same spacing (1.5 times the
    side each time, up to ``widest`` times ``lim``) until no image has more than
    :data:`EDGE_MASS` of its posterior on the grid's edge: a trained 2-D decoder can put some
    images' posteriors out where the prior has little mass. Returns the grid, its ``lim`` and
    ``points``."""
    first = lim
    while True:
        grid = grid_posterior(model, x, lim=lim, points=points)
        if grid.edge_mass.max() <= EDGE_MASS or lim * 1.5 > widest * first:
            return grid, lim, points
        lim, points = lim * 1.5, int(round(points * 1.5))


def _grid_applies(structure):
    """Whether the exact grid posterior applies: one unconditional 2-D latent site."""
    return (
        len(structure.latents) == 1
        and structure.code.numel == 2
        and not structure.conditional
        and not structure.reads_x  # the grid scores each image under one decoder output
    )


def _moments(q, x):
    """Mean and sd of q at the code site for the first ``len(x)`` images it was fitted to."""
    n = x.shape[0]
    size = getattr(q, "size", None) or getattr(getattr(q, "guide", None), "size", None) or n
    idx = torch.arange(n) if size != n else None
    mean, sd = site_moments(q, x, idx=idx, size=size if idx is not None else None)
    if isinstance(q, DeltaGuide):
        sd = torch.zeros_like(mean)
    return mean.detach(), sd.detach()


def _families(families, structure, own):
    """The families to find q* in: those asked (the encoder's own added), or every family the
    latent sites allow (a flow needs sites of two numbers or more)."""
    if families is None:
        sizes = [s.numel for s in structure.latents if not s.discrete]
        families = [f for f in FAMILIES if f != "flow" or min(sizes, default=2) >= 2]
    families = [check_family(f) for f in families]
    return [f for f in FAMILIES if f in families or f == own]


def _family_gaps(per_image, families, own, seconds, n):
    """The approximation gap of each family's q*, and how much of diag's each closes (paired
    standard errors)."""
    exact = "exact" in per_image
    log_px = per_image["exact"] if exact else per_image["q*:log_px"]
    rows = []
    for family in families:
        elbo = per_image[f"q*:{family}"]
        row = {
            "family": family,
            "encoder": family == own,
            "q_star_test_elbo": _mean_stderr(elbo),
            "approximation_gap": _mean_stderr(log_px - elbo),
            "e_step_seconds": seconds[family],
            "e_step_seconds_per_image": seconds[family] / n,
        }
        if "q*:diag" in per_image:
            row["recovered_from_diag"] = _mean_stderr(elbo - per_image["q*:diag"])
        rows.append(row)
    return {
        "rows": rows,
        "log_px": _mean_stderr(log_px),
        "log_px_source": "exact (grid quadrature)"
        if exact
        else f"importance sampling with q*_{per_image['q*:proposal']} as proposal",
        "amortized_family": own,
        "amortized_test_elbo": _mean_stderr(per_image["amortized"]),
        "amortized_gap": _mean_stderr(log_px - per_image["amortized"]),
    }


def _gaps(per_image, n, elbo_samples, log_px_samples):
    """Mean gaps with standard errors of the per-image differences (paired, so image-to-image
    variation cancels)."""
    if "q*" not in per_image or "amortized" not in per_image:
        return None
    exact = "exact" in per_image
    log_px = per_image["exact"] if exact else per_image["q*:log_px"]
    approximation = _mean_stderr(log_px - per_image["q*"])
    amortization = _mean_stderr(per_image["q*"] - per_image["amortized"])
    return {
        "q_star_test_elbo": _mean_stderr(per_image["q*"]),
        "approximation_gap": approximation[0],
        "approximation_gap_stderr": approximation[1],
        "amortization_gap": amortization[0],
        "amortization_gap_stderr": amortization[1],
        "log_px": "exact (grid quadrature)"
        if exact
        else f"importance sampling with q*_{per_image['q*:proposal']} as proposal",
        "images": n,
        "elbo_samples": elbo_samples,
        "log_px_samples": None if exact else log_px_samples,
    }


def _mcmc(model, guides, x, num_samples, warmup, seed, grid=None):
    """NUTS on a few images, and how far each variational q is from it (in posterior sds)."""
    nuts = nuts_posterior(model, x, num_samples=num_samples, warmup_steps=warmup, seed=seed)
    mean, std = nuts.mean, nuts.std
    out = {
        "images": x.shape[0],
        "num_samples": num_samples,
        "warmup_steps": warmup,
        "seconds": nuts.seconds,
        "seconds_per_image": nuts.seconds / x.shape[0],
        "mean": mean.tolist(),
        "std": std.tolist(),
        "moved": bool((std > 0).all()),
        "strategies": {},
    }
    for name, q in guides.items():
        q_mean, q_std = _moments(q, x)
        out["strategies"][name] = {
            "mean_error_in_sds": ((q_mean - mean).abs() / std).mean().item(),
            "std_ratio": (q_std / std).mean().item(),
        }
    if grid is not None:
        g_mean, g_std = grid.moments()
        out["grid_vs_mcmc"] = {
            "mean_error_in_sds": ((mean - g_mean[: x.shape[0]]).abs() / g_std[: x.shape[0]])
            .mean()
            .item(),
            "std_ratio": (std / g_std[: x.shape[0]]).mean().item(),
        }
    out["_samples"] = nuts.samples
    return out


def _public(obj):
    """``obj`` without the tensors kept for figures (keys starting with ``_``)."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_public(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    return obj


def _fmt(value, stderr=None, digits=2):
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    return text if stderr is None else f"{text} ± {stderr:.{digits}f}"


def markdown(result):
    """The comparison as tables a person reads: one row per strategy, NUTS included, with every
    note once under the table."""
    s = result["settings"]
    mcmc = result.get("mcmc")
    notes = []
    header = (
        "| strategy | train ELBO | test ELBO | test log p(x) | reconstruction (nats) "
        "| fit on train (s) | test-time s/image | parameters (test set) | memory |"
    )
    rule = "|---|---|---|---|---|---|---|---|---|"
    if mcmc:
        header += " mean − NUTS mean (NUTS sds) | sd / NUTS sd |"
        rule += "---|---|"
    lines = [
        f"# Inference strategies on one model: {result.get('dataset', 'data')}",
        "",
        f"Decoder held fixed; {s['num_images']['train']} train and {s['num_images']['test']} test "
        f"images. ELBO: {s['elbo_samples']} samples per image; log p(x): importance sampling "
        f"with the strategy's q, K = {s['log_px_samples']}. Nats per image, higher is better; "
        "± one standard error over images.",
        "",
        header,
        rule,
    ]
    for r in result["rows"]:
        fit = _fmt(r["train_fit_seconds"], digits=1)
        if r.get("trained_with_decoder_seconds") is not None:
            fit += f" (+ {r['trained_with_decoder_seconds']:.1f} training with the decoder)"
        line = (
            f"| {r['strategy']} | {_fmt(r['train_elbo'], r['train_elbo_stderr'])} "
            f"| {_fmt(r['test_elbo'], r['test_elbo_stderr'])} "
            f"| {_fmt(r['test_log_px'], r['test_log_px_stderr'])} "
            f"| {_fmt(r['test_reconstruction_nats'])} | {fit} "
            f"| {r['test_seconds_per_image']:.2e} | {r['parameters']:,} "
            f"| {r['parameter_bytes'] / 2**20:.2f} MiB |"
        )
        if mcmc:
            m = mcmc["strategies"].get(r["strategy"])
            line += (
                f" {_fmt(m['mean_error_in_sds'], digits=3)} | {_fmt(m['std_ratio'], digits=3)} |"
                if m
                else " | |"
            )
        lines.append(line)
    if mcmc:
        lines.append(_nuts_row(mcmc, result.get("z_dim")))
        notes.append(
            f"mcmc is NUTS on the first {mcmc['images']} test images ({mcmc['num_samples']} "
            f"samples after {mcmc['warmup_steps']} warm-up steps): samples, not a density, so it "
            "has no ELBO and cannot be an importance sampling proposal (n/a); its test-time "
            "s/image is per image as for the others; its parameters are none, the samples take "
            "the memory shown. The last two columns compare each q with NUTS on those images"
            + (
                " (NUTS's own row: NUTS against the exact grid posterior)."
                if "grid_vs_mcmc" in mcmc
                else "."
            )
        )
        if not mcmc["moved"]:
            notes.append(
                "NUTS did not move in some dimension (a standard deviation of 0): give it more "
                "warm-up steps (--mcmc-warmup) before reading its columns."
            )
    if any(r["strategy"] == "delta" for r in result["rows"]):
        notes.append(
            "delta's ELBO column is log p(x, z_MAP): a Delta guide has no entropy term, so this is "
            "not a lower bound on log p(x) (the true ELBO of a point mass is −∞), and a point mass "
            "cannot be an importance sampling proposal, so its log p(x) is n/a. Its reconstruction "
            "error is the autoencoder's measure."
        )
    discrete = ", ".join(repr(name) for name in result.get("discrete_sites", ()))
    per_image = {"local", "semi-amortized", "delta"} & {r["strategy"] for r in result["rows"]}
    if discrete and per_image:
        notes.append(
            f"discrete site(s) {discrete}: the per-image strategies hold a categorical q per image "
            "for each, next to the continuous sites' q (mean field, q(y) q(z), where an encoder "
            "may read the class for z); every ELBO and log p(x) sums them out exactly where the "
            "program can be enumerated, and delta's point mass is on the continuous sites only, "
            "its ELBO column E_q(y)[log p(x, y, z_MAP) − log q(y)]."
        )
    lines += [""] + [f"- {note}" for note in dict.fromkeys(notes)]  # each note once
    gaps = result.get("gaps")
    if gaps:
        samples = "" if gaps["log_px_samples"] is None else f", K = {gaps['log_px_samples']}"
        lines += [
            "",
            "## Gaps (Cremer, Li & Duvenaud 2018), test images",
            "",
            "| gap | nats per image |",
            "|---|---|",
            "| approximation: log p(x) − L[q*] "
            f"| {_fmt(gaps['approximation_gap'], gaps['approximation_gap_stderr'])} |",
            "| amortization: L[q*] − L[q_amortized] "
            f"| {_fmt(gaps['amortization_gap'], gaps['amortization_gap_stderr'])} |",
            "",
            f"q* is the best q of the encoder's family ({gaps.get('family', 'diag')}) per image "
            f"found by {result['settings']['e_steps']} E-steps started from the encoder's q (test "
            "ELBO "
            f"{_fmt(*gaps['q_star_test_elbo'])}); log p(x) is {gaps['log_px']}{samples}; "
            f"{gaps['images']} images, {gaps['elbo_samples']} samples per ELBO; standard errors "
            "of the per-image differences.",
        ]
    if result.get("families"):
        lines += [""] + family_markdown(result["families"], result["settings"]["e_steps"])
    if "grid" in result:
        g = result["grid"]
        lines += [
            "",
            f"Exact log p(x) by quadrature on a {g['points']}×{g['points']} grid over "
            f"[−{g['lim']}, {g['lim']}]²: {g['test_log_px']:.3f} (quadrature error below "
            f"{g['quadrature_error_max']:.1e} nats). Importance sampling minus grid: "
            + ", ".join(
                f"{k[len('is_minus_grid_') :]} {_fmt(*v, digits=3)}"
                for k, v in g.items()
                if k.startswith("is_minus_grid_")
            )
            + f". Largest posterior mass on the grid's edge: {g['edge_mass_max']:.1e}"
            + (
                f" (widened from [−{g['asked_lim']}, {g['asked_lim']}]², which left more than "
                f"{EDGE_MASS:g} there)"
                if g.get("asked_lim", g["lim"]) != g["lim"]
                else ""
            )
            + (
                " (the grid is still too small for some images: widen it with --grid-lim)"
                if g["edge_mass_max"] > EDGE_MASS
                else ""
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def family_markdown(families, e_steps):
    """The gaps-by-family section of :func:`markdown`: each family's q* against log p(x), and how
    much of the diagonal family's approximation gap the others close."""
    rows = {r["family"]: r for r in families["rows"]}
    lines = [
        "## Gaps by guide family, test images",
        "",
        "| q | L[q] | gap to log p(x) | closed from diag's q* | E-step s/image |",
        "|---|---|---|---|---|",
    ]
    for family, r in rows.items():
        closed = r.get("recovered_from_diag")
        lines.append(
            f"| q*_{family}{' (encoder family)' if r['encoder'] else ''} "
            f"| {_fmt(*r['q_star_test_elbo'])} | {_fmt(*r['approximation_gap'])} "
            f"| {_fmt(*closed) if closed and family != 'diag' else '—'} "
            f"| {r['e_step_seconds_per_image']:.2e} |"
        )
    lines.append(
        f"| q (amortized, {families['amortized_family']}) "
        f"| {_fmt(*families['amortized_test_elbo'])} | {_fmt(*families['amortized_gap'])} | — | — |"
    )
    lines += [
        "",
        f"log p(x) = {_fmt(*families['log_px'])}, {families['log_px_source']}. Each q* is the "
        f"best q of its family per image, {e_steps} E-steps from the encoder's q; the gap to "
        "log p(x) of q*_F is family F's approximation gap.",
    ]
    if "diag" in rows and len(rows) > 1:
        total = rows["diag"]["approximation_gap"][0]
        parts = [
            f"{family} closes {rows[family]['recovered_from_diag'][0]:.2f}"
            for family in ("fullcov", "flow")
            if family in rows
        ]
        lines.append(
            f"Of diag's approximation gap ({total:.2f} nats), " + ", ".join(parts) + " (fullcov: "
            "the correlations between latent numbers; flow: those and a non-Gaussian shape)."
        )
    return lines


def family_table(results):
    """Cremer, Li & Duvenaud (2018)'s Table 2 for models trained with different guide families:
    ``results`` maps the family a model was trained with to its :func:`compare` result. Rows:
    the training family; columns: log p(x), L[q*] in each family, L[q] (the encoder), the
    approximation gap (log p(x) - L[q*] in the encoder's family) and the amortization gap
    (L[q*] - L[q]); markdown lines."""
    families = [
        f
        for f in FAMILIES
        if any(r["family"] == f for res in results.values() for r in res["families"]["rows"])
    ]
    header = "| trained with | log p(x) | " + " | ".join(f"L[q*_{f}]" for f in families[::-1])
    header += " | L[q] | approximation gap | amortization gap |"
    lines = [header, "|---" * (len(families) + 5) + "|"]
    for trained, res in results.items():
        fam = res["families"]
        rows = {r["family"]: r for r in fam["rows"]}
        gaps = res["gaps"]
        cells = [
            f"{_fmt(*rows[f]['q_star_test_elbo'])}" if f in rows else "—" for f in families[::-1]
        ]
        lines.append(
            f"| {trained} | {_fmt(*fam['log_px'])} | "
            + " | ".join(cells)
            + f" | {_fmt(*fam['amortized_test_elbo'])} "
            f"| {_fmt(gaps['approximation_gap'], gaps['approximation_gap_stderr'])} "
            f"| {_fmt(gaps['amortization_gap'], gaps['amortization_gap_stderr'])} |"
        )
    return lines


def training_table(training, batch_size):
    """Markdown lines: for each family a model was trained with, its test log p(x) and its cost
    (``training`` maps the family to the run's ``metrics.json`` plus ``train_size``)."""
    lines = [
        "| trained with | epochs | training s | s/step | test ELBO | test log p(x) (K) |",
        "|---|---|---|---|---|---|",
    ]
    for family, m in training.items():
        steps = m["epochs"] * math.ceil(m["train_size"] / batch_size)
        lines.append(
            f"| {family} | {m['epochs']} | {m['seconds']:.1f} | {m['seconds'] / steps:.2e} "
            f"| {_fmt(m['test_elbo'])} "
            f"| {_fmt(m['test_log_px'], m.get('test_log_px_stderr'))} ({m['log_px_samples']}) |"
        )
    return lines


def _nuts_row(mcmc, z_dim=None):
    """The NUTS row of :func:`markdown`'s table: only the columns whose numbers mean the same."""
    samples = mcmc["images"] * mcmc["num_samples"] * (z_dim or len(mcmc["mean"][0]))
    versus = mcmc.get("grid_vs_mcmc")
    agreement = (
        f" {_fmt(versus['mean_error_in_sds'], digits=3)} | {_fmt(versus['std_ratio'], digits=3)} |"
        if versus
        else " 0 (reference) | 1 (reference) |"
    )
    return (
        f"| mcmc (NUTS) | n/a | n/a | n/a | n/a | — | {mcmc['seconds_per_image']:.2e} | 0 "
        f"| {4 * samples / 2**20:.2f} MiB (samples) |" + agreement
    )


def write_comparison(result, out, title=None):
    """Write ``comparison.json``, ``comparison.md`` and the figures into the directory ``out``."""
    from . import plots
    from .checkpoints import write_json, write_text

    write_json(os.path.join(out, "comparison.json"), _public(result))
    write_text(os.path.join(out, "comparison.md"), markdown(result))
    name = title or result.get("dataset", "")
    rows = result["rows"]
    by_name = {r["strategy"]: r for r in rows}
    grid = result.get("_grid")
    plots.strategy_bars(
        rows,
        os.path.join(out, "strategies.png"),
        log_px_line=None if grid is None else grid.log_px.mean().item(),
        title=f"{name} test images",
    )
    if result["curves"]:
        plots.e_step_curves(
            result["curves"],
            os.path.join(out, "e-step.png"),
            amortized_elbo=by_name.get("amortized", {}).get("test_elbo"),
            title=f"{name}: E-step on {result['settings']['num_images']['test']} test images "
            f"(each step's estimate, {E_STEP_PARTICLES} draws per image)",
        )
    mcmc = result.get("mcmc")
    n = mcmc["images"] if mcmc else min(4, len(result["_x"]))
    qs = {}
    for strategy, q in result["_guides"].items():
        mean, sd = _moments(q, result["_x"][:n])
        qs[strategy] = (mean.reshape(n, -1), None if strategy == "delta" else sd.reshape(n, -1))
    samples = mcmc["_samples"] if mcmc else None
    if grid is not None:
        sub = GridPosterior(
            grid.z1, grid.z2, grid.log_post[:n], grid.log_px[:n], grid.error[:n], grid.edge_mass[:n]
        )
        densities = {
            family: _grid_log_density(q, grid, result["_x"][:n])
            for family, q in result.get("_q_stars", {}).items()
        }
        plots.posteriors_2d(
            sub, qs, result["_x"][:n], os.path.join(out, "posteriors.png"), samples, densities
        )
    elif mcmc:
        plots.posterior_dims(
            samples.mean(0), samples.std(0), qs, os.path.join(out, "posteriors.png")
        )


@torch.no_grad()
def _grid_log_density(q, grid, x):
    """log q(z | x_i) of a per-image guide fitted to (at least) the images ``x``, at every point
    of ``grid``: ``(N, P, P)`` laid out as ``grid.log_post``."""
    n, p = x.shape[0], len(grid.z1)
    z = torch.cartesian_prod(grid.z1, grid.z2)  # z1 varies slowest, as on the grid
    fn = next(iter(q.site_dists(x, idx=torch.arange(n)).values()))
    # a flow's context has the images' batch shape: the points are expanded to it
    log_q = torch.cat([fn.log_prob(zc[:, None].expand(-1, n, 2)) for zc in z.split(8192)])
    return log_q.T.reshape(n, p, p)


def compare_run(run, data, out, overwrite=False, quiet=True, **kwargs):
    """Compare the strategies on a trained :class:`~pyro_vae.runs.Run`; write ``out``.

    :param run: the run whose model (decoder) and amortized guide are compared.
    :param data: its dataset.
    :param str out: the output directory (refused if it exists and is not empty, unless
        ``overwrite``).
    :param kwargs: passed to :func:`compare`.
    :returns: the comparison dict (as in ``comparison.json``, plus tensors for figures).
    """
    from .runs import prepare_run_dir

    prepare_run_dir(out, overwrite)
    start = time.perf_counter()
    result = compare(run.model, run.guide if run.amortized else None, data, **kwargs)
    result["dataset"] = data.name
    result["run"] = run.path
    result["z_dim"] = run.structure.code.numel
    result["seconds"] = time.perf_counter() - start
    write_comparison(result, out)
    return result


def families_study(config, data, out, trained, overwrite=False, quiet=True, log=print, **kwargs):
    """``compare --train-families``: one model trained per guide family in ``trained``, each
    compared (:func:`compare_run`, ``kwargs`` its options), and the models side by side in
    Cremer et al.'s Table 2 layout: ``families.md`` and ``families.json`` in ``out``, with
    ``run-FAMILY/`` and ``compare-FAMILY/`` for each. Returns the markdown."""
    from dataclasses import replace

    from .checkpoints import write_json, write_text
    from .runs import prepare_run_dir, train_run

    prepare_run_dir(out, overwrite)
    results, training = {}, {}
    for family in trained:
        run_dir = os.path.join(out, f"run-{family}")
        log(f"training with the {family} guide family: {run_dir}")
        run, metrics = train_run(
            replace(config, guide_family=family), run_dir, overwrite=True, quiet=quiet
        )
        training[family] = dict(metrics, train_size=int(data.train_x.shape[0]))
        results[family] = compare_run(
            run,
            data,
            os.path.join(out, f"compare-{family}"),
            overwrite=True,
            quiet=quiet,
            train_seconds=metrics["seconds"],
            **kwargs,
        )
    lines = [f"# Models trained with each guide family: {config.dataset}", ""]
    if config.time_limit is not None:
        lines += [
            f"Equal wall time: each family trained within {config.time_limit:g} s (no epoch "
            f"started that would end after it; at most {config.epochs} epochs).",
            "",
        ]
    lines += training_table(training, config.batch_size) + [""] + family_table(results)
    text = "\n".join(lines) + "\n"
    write_text(os.path.join(out, "families.md"), text)
    write_json(
        os.path.join(out, "families.json"),
        {
            "training": training,
            "families": {k: v["families"] for k, v in results.items()},
            "gaps": {k: v["gaps"] for k, v in results.items()},
        },
    )
    return text
