"""Anomaly and out-of-distribution detection with a trained VAE.

Three scores per image, each higher for images the model finds less typical:

- ``"elbo"``: the negative ELBO, −E_q[log p(x, z) − log q(z|x)];
- ``"kl"``: KL(q(z|x) || p(z)), how far the encoder moves the code from the prior (analytic, or
  estimated from ``num_samples`` draws of q where torch has no closed form, e.g. a mixture prior);
- ``"log_px"``: the negative importance-sampled log p(x) (the IWAE estimate, Burda et al. 2016).

:func:`auroc` measures how well a score separates in-distribution images from others: the
probability that a random outlier scores higher than a random inlier (ties count one half).

A known failure: likelihood is not typicality. Models trained on one image set can give *higher*
likelihood to a simpler set (Nalisnick et al., "Do deep generative models know what they don't
know?", ICLR 2019): images with few "on" pixels are cheap to encode, whatever they depict.
"""

import os

import torch
from pyro import poutine

from .errors import DataError
from .program import kl_to_prior

#: score name -> what it is, for tables and figure labels
SCORES = {
    "elbo": "−ELBO",
    "kl": "KL(q(z|x) || p(z))",
    "log_px": "−log p(x) (IS)",
}


@torch.no_grad()
def anomaly_scores(run, x, num_samples=100, scores=tuple(SCORES), progress=False):
    """Per-image anomaly scores in nats, each a tensor ``(N,)``; higher is more anomalous.

    :param run: a :class:`pyro_vae.runs.Run`.
    :param torch.Tensor x: images in the run's format (binary for a Bernoulli model).
    :param int num_samples: importance samples per image for ``"log_px"``.
    :param tuple scores: which of :data:`SCORES` to compute.
    :param bool progress: a progress bar for log p(x) (shown on a terminal only).
    :rtype: dict
    """
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise DataError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    images = run._images(x)
    out = {}
    if "elbo" in scores:
        out["elbo"] = -run.elbo(images)
    if "kl" in scores:
        guide = run.guide_for(images)
        if run.structure.vectorized:
            out["kl"] = kl_to_prior(run.model, guide, images, num_samples=num_samples)
        else:
            out["kl"] = _kl_draw_by_draw(run.model, guide, images, num_samples)
    if "log_px" in scores:
        out["log_px"] = -run.log_px(images, num_samples=num_samples, progress=progress)
    return out


def _kl_draw_by_draw(model, guide, x, num_samples):
    """KL(q(latents | x) || p(latents)) per image from ``num_samples`` draws of q taken one at a
    time, for a program that cannot take a dim of particles."""
    names = model.structure.latent_names
    total = torch.zeros(x.shape[0])
    for _ in range(num_samples):
        g = poutine.trace(guide).get_trace(x)
        m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x)
        for name in names:
            value = g.nodes[name]["value"]
            log_ratio = g.nodes[name]["fn"].log_prob(value) - m.nodes[name]["fn"].log_prob(value)
            total += log_ratio.reshape(x.shape[0], -1).sum(-1)
    return total / num_samples


def auroc(scores_in, scores_out):
    """Area under the ROC curve for telling ``scores_out`` (positives) from ``scores_in``.

    The Mann–Whitney form: P(s_out > s_in) + ½ P(s_out = s_in), computed from average ranks, so
    tied scores are handled exactly. 1 is perfect detection, 0.5 chance, below 0.5 the score points
    the wrong way.
    """
    a = torch.as_tensor(scores_in, dtype=torch.float64).flatten()
    b = torch.as_tensor(scores_out, dtype=torch.float64).flatten()
    if a.numel() == 0 or b.numel() == 0:
        raise DataError("AUROC needs at least one score on each side")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise DataError("AUROC needs finite scores")
    values, inverse, counts = torch.unique(
        torch.cat([a, b]), return_inverse=True, return_counts=True
    )
    last = counts.cumsum(0).double()
    ranks = ((last - counts + 1 + last) / 2)[inverse]  # 1-based, ties share their mean rank
    n_in, n_out = a.numel(), b.numel()
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return (u / (n_in * n_out)).item()


def detection_table(scores_in, scores_out):
    """One row per score: its AUROC and the mean score inside and outside the distribution.

    :param dict scores_in: :func:`anomaly_scores` of in-distribution images.
    :param dict scores_out: the same for the images to detect.
    :rtype: list
    """
    return [
        {
            "score": name,
            "auroc": round(auroc(scores_in[name], scores_out[name]), 4),
            "mean_in": round(scores_in[name].mean().item(), 3),
            "mean_out": round(scores_out[name].mean().item(), 3),
        }
        for name in scores_in
        if name in scores_out
    ]


def detect(
    run,
    scores_in,
    x_out,
    num_samples=100,
    path=None,
    title="",
    names=("in", "out"),
    progress=False,
):
    """Score ``x_out``, compare with ``scores_in`` (:func:`detection_table`), and if ``path`` is
    given draw the histograms of both (:func:`pyro_vae.plots.score_histograms`).

    :returns: the table rows and the outsiders' scores.
    """
    scores_out = anomaly_scores(run, x_out, num_samples, tuple(scores_in), progress=progress)
    table = detection_table(scores_in, scores_out)
    if path is not None:
        from . import plots

        aurocs = {r["score"]: (SCORES[r["score"]], r["auroc"]) for r in table}
        plots.score_histograms(scores_in, scores_out, aurocs, path, title=title, names=names)
    return table, scores_out


def format_tables(tables):
    """``{outsiders' name: detection_table rows}`` as a plain-text table."""
    lines = [f"{'out-of-distribution':24} {'score':22} {'AUROC':>6} {'mean in':>9} {'mean out':>9}"]
    for name, rows in tables.items():
        for r in rows:
            lines.append(
                f"{name:24} {SCORES[r['score']]:22} {r['auroc']:>6.3f} {r['mean_in']:>9.2f} "
                f"{r['mean_out']:>9.2f}"
            )
    return "\n".join(lines)


def ood_sets(run, names, n):
    """name -> the first ``n`` images to detect: another dataset's test split (binarized as the
    run's), or ``"held-out"``, the test images of the classes the run was trained without."""
    from .data import load_dataset
    from .errors import ConfigError

    config, sets = run.config, {}
    for name in names:
        if name == "held-out":
            if not config.exclude_classes:
                raise ConfigError(
                    "--ood held-out needs a run trained with --exclude-classes; this one saw "
                    "every class"
                )
            held_out = load_dataset(config.dataset, config.binarize).select_classes(
                config.exclude_classes
            )
            sets[f"held-out {','.join(map(str, config.exclude_classes))}"] = held_out.test_x[:n]
        else:
            binarize = config.binarize if config.binarize != "none" else "static"
            sets[name] = load_dataset(name, binarize).test_x[:n]
    return sets


def study(run, data, out, names=None, n=1000, num_samples=100, overwrite=False, progress=False):
    """``pyro-vae anomaly``: the run's test images against each set of :func:`ood_sets`
    (default: its held-out classes, else Fashion-MNIST), a figure of the scores per set and
    ``anomaly.json`` in ``out``; returns what the JSON holds, and the tables by set."""
    from .runs import prepare_run_dir, write_json

    names = names or (["held-out"] if run.config.exclude_classes else ["fashion-mnist"])
    oods = ood_sets(run, names, n)
    prepare_run_dir(out, overwrite)
    x_in = data.test_x[:n]
    scores_in = anomaly_scores(run, x_in, num_samples=num_samples, progress=progress)
    tables = {}
    for name, x_out in oods.items():
        slug = "".join(c if c.isalnum() else "-" for c in name)
        tables[name], _ = detect(
            run,
            scores_in,
            x_out,
            num_samples=num_samples,
            path=os.path.join(out, f"scores-{slug}.png"),
            title=f"model trained on {data.name}: its test images vs {name}",
            names=(f"{data.name} (in)", f"{name} (out)"),
            progress=progress,
        )
    result = {
        "run": os.path.abspath(run.path),
        "in": data.name,
        "num_samples": num_samples,
        "images_in": int(x_in.shape[0]),
        "tables": {
            name: {"images_out": int(oods[name].shape[0]), "rows": rows}
            for name, rows in tables.items()
        },
    }
    write_json(os.path.join(out, "anomaly.json"), result)
    return result, tables
