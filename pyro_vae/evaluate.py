"""Evaluation in nats per data point (higher is better): the ELBO and importance-sampled log p(x).

For each image, ``num_samples`` latents are drawn from the guide at once, in a vectorized
``"particles"`` plate left of the model's own plates, and weighted by::

    log w_k = log p(x, z_k) - log q(z_k | x)

The ELBO is the mean of ``log w_k``; the importance-weighted estimate of log p(x) is
``logsumexp_k log w_k - log K``, a lower bound that tightens to log p(x) as K grows (the IWAE bound,
Burda, Grosse & Salakhutdinov 2015). Work is chunked over images and samples so memory stays
bounded by ``max_rows`` decoder evaluations at a time, whatever K is.

A finite discrete latent site (a class, a cluster) is summed out exactly instead of sampled: the
guide enumerates its values (in dims left of the particles) and draws the continuous latents
within each, so for one particle ``k``::

    log w_k = log sum_y p(x, y, z_k^y) / q(z_k^y | x, y)        (its mean over k is p(x))

and the ELBO is ``sum_y q(y|x) [log p(x, y, z^y) - log q(y|x) - log q(z^y | x, y)]``. However a
run was trained (:mod:`pyro_vae.discrete`), it is scored by the same numbers.

A program that cannot be enumerated (it reshapes its class sample to one per image, say) has its
discrete sites sampled from the guide instead, as the continuous ones are: the weights stay
importance weights with q(y|x) as the proposal, so the estimates stay valid, with more variance.
Evaluation finds it out once per model, and says so on stderr (:func:`sampled_instead`).

Log-densities are taken unscaled, so a model trained with its latent sites scaled (beta-VAE, KL
warm-up) is still scored by its true ELBO and log p(x).

Every function here takes a program as the door makes it or as its author wrote it (plain
functions, a built-in module): :func:`behind_the_door` passes it through the door first.
"""

import math
import sys
import weakref

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .discrete import enumerated, finite_sites, joint_values
from .guides import per_image
from .program import as_program
from .progress import Progress

DEFAULT_MAX_ROWS = 32768

#: model -> whether evaluation can sum its finite discrete sites out (:func:`_enumerates`).
_ENUMERABLE = weakref.WeakKeyDictionary()


def enumerates(model, guide, x, y=None):
    """Whether evaluation sums ``model``'s finite discrete sites out (``True`` without any), or,
    the program failing under enumeration, samples them from ``guide``: found once per model,
    from the images ``x`` (with ``y``), and said once on stderr where it fails."""
    model, guide = behind_the_door(model, guide, x, y)
    if not finite_sites(model.structure):
        return True
    if model not in _ENUMERABLE:
        log_weights(
            model, guide, x[:1], None if y is None else y[:1], idx=torch.arange(1), size=len(x)
        )
    return _ENUMERABLE.get(model, True)


def sampled_instead(model):
    """Whether evaluation samples ``model``'s discrete sites from the guide, having found that
    the program cannot be enumerated."""
    return _ENUMERABLE.get(model) is False


def _log_joint(trace, data_dim=-1):
    """The summed log-density of every sample site, one number per particle and image (dims
    right of the data plate's summed out)."""
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            total = total + _site_log_prob(site, data_dim)
    return total


def _site_log_prob(site, data_dim=-1):
    lp = site["fn"].log_prob(site["value"])
    if data_dim != -1 and torch.is_tensor(lp) and lp.dim() >= -data_dim:
        lp = lp.sum(tuple(range(lp.dim() + data_dim + 1, lp.dim())))
    return lp


def behind_the_door(model, guide, x, y=None):
    """``(model, guide)`` through the program door (:func:`pyro_vae.program.as_program`), the
    program discovered on the first images; a model from the door is returned as it is, so
    evaluation reads every program's :class:`~pyro_vae.program.Structure`, a user's plain
    functions and a built-in module alike."""
    y = None if y is None else y[:4]
    if per_image(guide):  # a guide with parameters per image is made for the program as it is
        return as_program(model, None, x[:4], y)[0], guide
    return as_program(model, guide, x[:4], y)


def structure_of(model):
    """The :class:`~pyro_vae.program.Structure` of a model from the program door."""
    return model.structure


@torch.no_grad()
def log_weights(
    model,
    guide,
    x,
    y=None,
    num_samples=1,
    max_plate_nesting=1,
    idx=None,
    size=None,
    discrete="sum",
):
    """Log importance weights ``log p(x, z) - log q(z|x)``, shape ``(num_samples, N)``.

    With finite discrete latent sites (summed out, see the module notes), ``discrete="sum"``
    gives ``log sum_y w_k^y`` (whose mean is p(x)) and ``"expect"`` the ELBO's
    ``sum_y q(y|x) log w_k^y``.

    :param model: a pyro_vae model (see :mod:`pyro_vae.models` for the calling convention).
    :param guide: a guide with the same signature.
    :param torch.Tensor x: images ``(N, *x_shape)``.
    :param y: an optional conditioning input passed to both.
    :param int num_samples: number of latent samples per image.
    :param int max_plate_nesting: the number of plates the model nests (the particles plate goes
        to their left).
    :param idx: the images' positions in a set of ``size`` images, for per-datapoint guides; the
        weights stay unscaled.
    """
    model, guide = behind_the_door(model, guide, x, y)
    structure = model.structure
    summed = finite_sites(structure)
    max_plate_nesting = max(max_plate_nesting, structure.max_plate_nesting)
    data_dim = structure.plate.dim
    if not structure.vectorized and num_samples > 1:
        # a program that cannot take particles in a batch dimension: one draw at a time
        return torch.cat(
            [
                log_weights(model, guide, x, y, 1, max_plate_nesting, idx, size, discrete)
                for _ in range(num_samples)
            ]
        )

    def run(summed, x, y, idx, size):
        q = guide
        if summed:
            names = frozenset(s.name for s in summed)
            q = poutine.enum(enumerated(guide, names), first_available_dim=-(max_plate_nesting + 2))
        guide_trace = poutine.trace(q).get_trace(x, y, idx, size)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            x, y, idx, size
        )
        log_w = _log_joint(model_trace, data_dim) - _log_joint(guide_trace, data_dim)
        if not summed:
            return log_w
        log_q = sum(_site_log_prob(guide_trace.nodes[s.name], data_dim) for s in summed)
        log_w, log_q = torch.broadcast_tensors(torch.as_tensor(log_w), log_q)
        dims = tuple(range(log_w.dim() - (max_plate_nesting + 1)))  # the enumeration dims
        if discrete == "expect":
            return (log_q.exp() * log_w).sum(dims)
        return (log_w + log_q).logsumexp(dims)

    def particles(summed, x=x, y=y, idx=idx, size=size, num_samples=num_samples):
        if not structure.vectorized:
            return torch.as_tensor(run(summed, x, y, idx, size)).expand(1, x.shape[0])
        with pyro.plate("particles", num_samples, dim=-(max_plate_nesting + 1)):
            log_w = run(summed, x, y, idx, size)
        return torch.as_tensor(log_w).expand(num_samples, x.shape[0])

    if summed and not _enumerates(model, summed, particles, x, y, idx, size):
        summed = ()
    return particles(summed)


def _enumerates(model, summed, particles, x, y, idx, size):
    """Whether evaluation can sum ``model``'s finite discrete sites out, found once per model
    on a probe: the first image repeated ``n`` times, ``n`` sharing no factor with any site's
    number of values, so a program that reshapes its class sample to one per image cannot pass
    by a coincidence of sizes (it does where the batch has as many images as the class has
    values). Where it fails and sampling works, say so once on stderr."""
    if model in _ENUMERABLE:
        return _ENUMERABLE[model]
    n = 2
    while any(math.gcd(n, s.cardinality) > 1 for s in summed):
        n += 1

    def probe(t):
        return None if t is None else t[:1].expand(n, *t.shape[1:])

    where = torch.zeros(n, dtype=torch.long) if idx is None else probe(idx)
    of = size if size is not None else x.shape[0]
    # the caller's random numbers are left as they were: the probe changes no estimate
    devices = [x.device.index or 0] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        try:
            particles(summed, probe(x), probe(y), where, of, 1)
            _ENUMERABLE[model] = True
            return True
        except Exception as e:  # the program's own error under enumeration, whatever its type
            failure = e
        particles((), probe(x), probe(y), where, of, 1)  # sampling fails too: its own error
    _ENUMERABLE[model] = False
    names = ", ".join(repr(s.name) for s in summed)
    print(
        f"pyro_vae: evaluation samples the discrete site(s) {names} from the guide: the program "
        f"cannot be enumerated ({type(failure).__name__}: {_first_line(failure)}); log p(x) "
        "stays an importance-sampled estimate with q(y|x) as the proposal",
        file=sys.stderr,
        flush=True,
    )
    return False


def _first_line(e):
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def _chunked(x, y, num_samples, max_rows):
    """Yield ``(x, y, idx, k)`` chunks: images in blocks with their positions ``idx`` (so
    per-datapoint guides find their parameters), samples in blocks of ``k`` per image."""
    per_image = max(1, max_rows // num_samples)
    k = min(num_samples, max_rows)
    for start in range(0, x.shape[0], per_image):
        yield (
            x[start : start + per_image],
            None if y is None else y[start : start + per_image],
            torch.arange(start, min(start + per_image, x.shape[0])),
            k,
        )


def _per_image(
    reduce, model, guide, x, y, num_samples, max_rows, max_plate_nesting, progress, discrete="sum"
):
    out = []
    model, guide = behind_the_door(model, guide, x, y)
    # each sample runs the decoder once per joint discrete value
    max_rows = max(1, max_rows // joint_values(model.structure))
    chunks = list(_chunked(x, y, num_samples, max_rows))
    if progress and not model.structure.vectorized and num_samples > 1:
        print(
            f"pyro_vae: the program does not take its samples in a batch dimension, so each of "
            f"the {num_samples} per image runs it once; the lines below say how long that takes",
            file=sys.stderr,
            flush=True,
        )
    # a bar on a terminal, a line every few seconds elsewhere (pyro_vae.progress)
    bar = Progress(len(chunks), quiet=not progress, desc="log p(x)", unit="chunk")
    for xc, yc, idx, k in chunks:
        blocks = [
            log_weights(
                model,
                guide,
                xc,
                yc,
                min(k, num_samples - s),
                max_plate_nesting,
                idx,
                x.shape[0],
                discrete,
            )
            for s in range(0, num_samples, k)
        ]
        out.append(reduce(blocks))
        bar.step()
    bar.close()
    return torch.cat(out)


def standard_error(values):
    """The standard error of the mean of per-image ``values``, or ``None`` for fewer than two."""
    if len(values) < 2:
        return None
    return round((values.std() / len(values) ** 0.5).item(), 3)


def elbo(
    model,
    guide,
    x,
    y=None,
    num_samples=1,
    max_rows=DEFAULT_MAX_ROWS,
    max_plate_nesting=1,
    progress=False,
):
    """Per-image ELBO estimates in nats, shape ``(N,)``: the mean of ``num_samples`` log weights."""
    return _per_image(
        lambda blocks: torch.cat(blocks).mean(0),
        model,
        guide,
        x,
        y,
        num_samples,
        max_rows,
        max_plate_nesting,
        progress,
        discrete="expect",
    )


def log_px(
    model,
    guide,
    x,
    y=None,
    num_samples=1000,
    max_rows=DEFAULT_MAX_ROWS,
    max_plate_nesting=1,
    progress=False,
):
    """Per-image importance-weighted estimates of log p(x) in nats, shape ``(N,)``.

    Uses the guide as the proposal: ``logsumexp_k log w_k - log K``. In expectation a lower bound
    on log p(x) that increases with ``num_samples`` (Burda et al. 2015).
    """
    return _per_image(
        lambda blocks: torch.cat(blocks).logsumexp(0) - math.log(num_samples),
        model,
        guide,
        x,
        y,
        num_samples,
        max_rows,
        max_plate_nesting,
        progress,
    )
